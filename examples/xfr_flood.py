#!/usr/bin/env python3
"""What asking for switchboards and never using them costs (docs/PERFORMANCE.md, "Switchboard
cookies"): one logged-in client pipelines BATCH `XFR SB` at a time and reads the answers,
ROUNDS times on the same connection, so each round starts with the earlier rounds' cookies
outstanding. Prints the time per `XFR SB` and the first answer of each round.

    cargo build --release --no-default-features --bin msngate
    python3 examples/xfr_flood.py target/release/msngate [BATCH [ROUNDS]]
"""

import hashlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    with tempfile.TemporaryDirectory() as d:
        ns = free_port()
        config = Path(d, "msngate.toml")
        config.write_text(
            f'[server]\nnotification_listen = "127.0.0.1:{ns}"\n'
            f'switchboard_listen = "127.0.0.1:{free_port()}"\npublic_host = "127.0.0.1"\n'
            f'[storage]\ndatabase = "{d}/msngate.db"\n[secrets]\nkey_file = "{d}/key"\n'
        )
        msngate = [binary, "--config", str(config)]
        subprocess.run(msngate + ["user", "add", "flood@example.com", "--password", "pw"],
                       check=True, stdout=subprocess.DEVNULL)
        server = subprocess.Popen(msngate + ["serve"], stderr=subprocess.DEVNULL)
        try:
            flood(ns, batch, rounds)
        finally:
            server.terminate()
            server.wait()


def flood(port, batch, rounds):
    deadline = time.monotonic() + 20
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")

    def send(line):
        s.sendall((line + "\r\n").encode())

    def until(prefix):
        while True:
            line = f.readline().decode().rstrip("\r\n")
            if line.startswith(prefix):
                return line

    send("VER 1 MSNP2 CVR0")
    until("VER 1")
    send("USR 2 MD5 I flood@example.com")
    challenge = until("USR 2").split()[-1]
    send("USR 3 MD5 S " + hashlib.md5((challenge + "pw").encode()).hexdigest())
    until("USR 3 OK")
    send("SYN 4 0")
    send("CHG 5 NLN")
    until("CHG 5")
    for r in range(rounds):
        started = time.perf_counter()
        s.sendall(b"".join(f"XFR {i} SB\r\n".encode() for i in range(10, 10 + batch)))
        answers, first = 0, None
        while answers < batch:
            line = f.readline()
            if line.startswith(b"XFR") or line[:3].isdigit():
                answers += 1
                first = first or line.decode().strip()
        took = time.perf_counter() - started
        print(f"round {r}: {batch} XFR SB in {took * 1000:.0f} ms, "
              f"{took / batch * 1e6:.1f} us each; first answer: {first}", flush=True)


if __name__ == "__main__":
    main()
