//! `floor`: the floor under a logon's CPU, as the relay is for chat. A server that answers the
//! lines of an MSN 1.0 logon (`VER`, `INF`, `USR MD5 I` and `S` with the profile `MSG`, `SYN`,
//! `CHG`) with fixed replies and keeps nothing: no store, no hub, no presence, no checks. What
//! it costs per logon is what the kernel's loopback TCP and the tokio runtime take for the
//! logon's round trips, on this machine, on the same runtime as msngate (docs/PERFORMANCE.md,
//! "The floor under a logon"). It runs as its own process, so that its CPU is its own:
//!
//! ```text
//! target/release/msngate-load floor --listen 127.0.0.1:18630 & FLOOR=$!
//! target/release/msngate-load --ns 127.0.0.1:18630 --server-pid $FLOOR logon --contacts 0
//! ```

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Serves until killed.
pub fn serve(address: SocketAddr) -> std::io::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind(address).await?;
            println!("floor: listening on {}", listener.local_addr()?);
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::spawn(answer(stream));
            }
        })
}

/// Answers one client's logon lines until it hangs up.
async fn answer(stream: TcpStream) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let mut handle = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (command, trid) = match words.as_slice() {
            [command, trid, ..] => (*command, *trid),
            _ => continue,
        };
        let reply = match (command, &words[2..]) {
            ("VER", _) => format!("VER {trid} MSNP2\r\n"),
            ("INF", _) => format!("INF {trid} MD5\r\n"),
            ("USR", ["MD5", "I", who]) => {
                handle = (*who).to_owned();
                format!("USR {trid} MD5 S 1013928519.693957190\r\n")
            }
            ("USR", ["MD5", "S", _]) => {
                let profile = "MIME-Version: 1.0\r\nContent-Type: text/x-msmsgsprofile; \
                               charset=UTF-8\r\n\r\n";
                format!(
                    "USR {trid} OK {handle} {handle}\r\nMSG Hotmail Hotmail {}\r\n{profile}",
                    profile.len()
                )
            }
            ("SYN", _) => format!("SYN {trid} 0\r\n"),
            ("CHG", [state, ..]) => format!("CHG {trid} {state}\r\n"),
            ("OUT", _) => return Ok(()),
            _ => format!("500 {trid}\r\n"),
        };
        stream.get_mut().write_all(reply.as_bytes()).await?;
    }
}
