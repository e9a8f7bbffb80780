#!/usr/bin/env python3
"""Resource exhaustion figures for docs/SECURITY.md: what idle, slow and non-reading clients
cost a running server, whether other users are slowed meanwhile, and whether the server
recovers when they go away.

    cargo build --release --no-default-features --bin msngate
    python3 examples/exhaustion.py target/release/msngate

Phases (each on a fresh server with its own database in a temporary directory):
  idle      9,900 connections (max_connections is 10,000) that connect and send nothing (the login timeout's prey)
  fdlimit   the server started with 1,024 file descriptors, 2,000 clients connect
  trickle   500 clients sending a login line one byte a second
  noread    200 logged-in clients that pipeline 5,000 SYNs each and never read the answers
Meanwhile one ordinary client logs in and adds a contact, timed; the server's resident memory
is read from /proc before, during and after.
"""

import hashlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, users, nofile=None):
        self.dir = tempfile.mkdtemp(prefix="msngate-exhaustion")
        self.ns, self.sb, self.http = free_port(), free_port(), free_port()
        config = os.path.join(self.dir, "msngate.toml")
        with open(config, "w") as f:
            f.write(
                f'[server]\nnotification_listen = "127.0.0.1:{self.ns}"\n'
                f'switchboard_listen = "127.0.0.1:{self.sb}"\npublic_host = "127.0.0.1"\n'
                f'[storage]\ndatabase = "{self.dir}/msngate.db"\n'
                f'[secrets]\nkey_file = "{self.dir}/msngate.key"\n'
                f'[http]\nlisten = "127.0.0.1:{self.http}"\n'
            )
        for u in list(users) + ["other@example.com"]:
            subprocess.run(
                [binary, "--config", config, "user", "add", u, "--password", "pw"],
                check=True, stdout=subprocess.DEVNULL,
            )
        cmd = [binary, "--config", config, "serve"]
        if nofile:
            cmd = ["prlimit", f"--nofile={nofile}:{nofile}"] + cmd
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     env={**os.environ, "RUST_LOG": "warn"})
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ns)).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def metric(self, name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5).read()
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.split()[-1])
        return total

    def log_lines(self, needle):
        self.log.flush()
        with open(os.path.join(self.dir, "server.log")) as f:
            return sum(needle in line for line in f)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.s.makefile("rb")
        self.t = 0

    def send(self, line):
        self.s.sendall((line + "\r\n").encode())

    def cmd(self, verb, args=""):
        self.t += 1
        self.send(f"{verb} {self.t} {args}".rstrip())
        return str(self.t)

    def answer(self, t):
        while True:
            line = self.f.readline().decode().strip()
            if not line:
                raise EOFError("closed")
            if line.split(" ")[1:2] == [t] or line.startswith("MSG Hotmail"):
                if line.startswith("MSG Hotmail"):
                    self.f.read(int(line.split()[-1]))
                    continue
                return line

    def login(self, handle):
        self.answer(self.cmd("VER", "MSNP2 CVR0"))
        self.answer(self.cmd("INF"))
        challenge = self.answer(self.cmd("USR", f"MD5 I {handle}")).split()[-1]
        digest = hashlib.md5((challenge + "pw").encode()).hexdigest()
        reply = self.answer(self.cmd("USR", f"MD5 S {digest}"))
        assert " OK " in reply, reply
        return self

    def close(self):
        self.f.close()
        self.s.close()


def timed_ordinary_user(server, n=5):
    """Milliseconds for a login plus an ADD FL and its reply, median of n."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        c = Client(server.ns).login("ordinary@example.com")
        reply = c.answer(c.cmd("ADD", "AL other@example.com other"))
        assert reply.split()[0] in ("ADD", "215"), reply
        times.append((time.perf_counter() - start) * 1000)
        c.close()
    times.sort()
    return times[len(times) // 2]


def report(name, **figures):
    print(name + ": " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)


def idle(binary, count=9_900):
    server = Server(binary, ["ordinary@example.com"])
    base_ms = timed_ordinary_user(server)
    before = server.rss_kib()
    socks = []
    for _ in range(count):
        socks.append(socket.create_connection(("127.0.0.1", server.ns)))
    time.sleep(1)
    during = server.rss_kib()
    open_now = server.metric("msngate_connections")
    during_ms = timed_ordinary_user(server)
    for s in socks:
        s.close()
    time.sleep(2)
    after = server.rss_kib()
    report("idle", connections=count, open_seen=int(open_now),
           rss_before_kib=before, rss_during_kib=during,
           per_connection_bytes=int((during - before) * 1024 / count),
           rss_after_kib=after, open_after=int(server.metric("msngate_connections")),
           ordinary_ms_before=round(base_ms, 2), ordinary_ms_during=round(during_ms, 2))
    server.stop()


def fdlimit(binary, count=2_000):
    server = Server(binary, ["ordinary@example.com"], nofile=1024)
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", server.ns))
        socks.append(s)
    time.sleep(3)
    alive = server.proc.poll() is None
    accept_errors = server.log_lines("accept failed")
    for s in socks:
        s.close()
    time.sleep(2)
    ms = timed_ordinary_user(server)
    report("fdlimit", nofile=1024, clients=count, server_alive=alive,
           accept_failed_log_lines_in_3s=accept_errors,
           ordinary_ms_after_they_left=round(ms, 2),
           open_after=int(server.metric("msngate_connections")))
    server.stop()


def trickle(binary, count=500, seconds=15):
    server = Server(binary, ["ordinary@example.com"])
    before = server.rss_kib()
    line = b"VER 1 MSNP2 CVR0\r\n"
    socks = [socket.create_connection(("127.0.0.1", server.ns)) for _ in range(count)]
    start = time.time()
    sent = 0
    while time.time() - start < seconds:
        for s in socks:
            s.send(line[sent % len(line):sent % len(line) + 1])
        sent += 1
        time.sleep(1)
    during = server.rss_kib()
    ms = timed_ordinary_user(server)
    for s in socks:
        s.close()
    time.sleep(2)
    report("trickle", clients=count, bytes_each=sent, rss_before_kib=before,
           rss_during_kib=during, ordinary_ms_during=round(ms, 2),
           rss_after_kib=server.rss_kib(),
           open_after=int(server.metric("msngate_connections")))
    server.stop()


def noread(binary, count=200, commands=5_000):
    users = [f"user{i}@example.com" for i in range(count)] + ["ordinary@example.com"]
    server = Server(binary, users)
    before = server.rss_kib()
    clients = [Client(server.ns).login(u) for u in users[:count]]
    for c in clients:
        c.s.setblocking(False)
        # Each SYN 0 of an empty list answers with a few lines; never read.
        burst = b"".join(b"SYN %d 0\r\n" % (i + 10) for i in range(commands))
        try:
            c.s.send(burst)
        except BlockingIOError:
            pass
    time.sleep(3)
    during = server.rss_kib()
    ms = timed_ordinary_user(server)
    kicked = server.metric("msngate_slow_clients_disconnected_total")
    for c in clients:
        c.close()
    closed = time.time()
    while server.metric("msngate_connections") > 0 and time.time() - closed < 60:
        time.sleep(0.1)
    report("noread", clients=count, commands_each=commands, rss_before_kib=before,
           rss_during_kib=during, disconnected_as_slow=int(kicked),
           ordinary_ms_during=round(ms, 2), rss_after_kib=server.rss_kib(),
           open_after=int(server.metric("msngate_connections")),
           seconds_until_all_closed=round(time.time() - closed, 1))
    server.stop()


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/msngate")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 30_000), hard))
    phases = sys.argv[2:] or ["idle", "fdlimit", "trickle", "noread"]
    for phase in phases:
        globals()[phase](binary)


if __name__ == "__main__":
    main()
