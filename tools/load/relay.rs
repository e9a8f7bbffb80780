//! The floor for `chat`: a bare TCP relay in this process. Each pair's two connections say
//! which pair and side they are (`PAIR id S|R`); the relay then frames what the sender writes
//! with the server's own framer, writes each `MSG` to the receiver as a switchboard would
//! (`MSG handle name length` and the payload) and answers the sender with `ACK TrID`. No
//! sessions, accounts, checks or queues: what the same client reaches with the least a relay
//! can do on this machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use msngate::protocol::decode;

use crate::chat::Pair;
use crate::client::Conn;

/// Both sides of a pair, once they have said who they are.
type Waiting = Arc<Mutex<HashMap<u32, (Option<TcpStream>, Option<TcpStream>)>>>;

/// Starts the relay on a free loopback port; it runs until the tool exits.
pub async fn start() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let waiting: Waiting = Arc::default();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(introduce(stream, waiting.clone()));
        }
    });
    Ok(address)
}

/// Reads `PAIR id S|R\r\n` byte by byte (nothing else is sent before the answer) and starts
/// relaying once both sides of the pair are there.
async fn introduce(mut stream: TcpStream, waiting: Waiting) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.push(stream.read_u8().await?);
        if line.len() > 64 {
            bail!("relay: no introduction");
        }
    }
    let text = String::from_utf8_lossy(&line);
    let mut words = text.split_whitespace();
    let (Some("PAIR"), Some(id), Some(side)) = (words.next(), words.next(), words.next()) else {
        bail!("relay: bad introduction {text:?}");
    };
    let id: u32 = id.parse()?;
    let both = {
        let mut waiting = waiting.lock().expect("not poisoned");
        let slot = waiting.entry(id).or_default();
        match side {
            "S" => slot.0 = Some(stream),
            _ => slot.1 = Some(stream),
        }
        match slot {
            (Some(_), Some(_)) => waiting.remove(&id),
            _ => None,
        }
    };
    if let Some((Some(sender), Some(receiver))) = both {
        relay(sender, receiver).await?;
    }
    Ok(())
}

/// Copies the sender's messages to the receiver and acknowledges each to the sender; every
/// read is answered with one write to each side.
async fn relay(sender: TcpStream, receiver: TcpStream) -> Result<()> {
    let (mut from, mut ack_to) = sender.into_split();
    let (mut drain, mut to) = receiver.into_split();
    // The receiver sends nothing; reading keeps its side's close visible.
    tokio::spawn(async move {
        let mut sink = [0u8; 256];
        while matches!(drain.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (mut acks, mut out) = (Vec::new(), Vec::new());
    loop {
        if from.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        while let Some(frame) = decode(&mut buf).map_err(|e| anyhow!("relay: {e}"))? {
            let line = String::from_utf8_lossy(&frame.line);
            let trid = line.split(' ').nth(1).unwrap_or("0");
            acks.extend_from_slice(format!("ACK {trid}\r\n").as_bytes());
            let payload = frame.payload.unwrap_or_default();
            out.extend_from_slice(
                format!("MSG relay@load.test relay {}\r\n", payload.len()).as_bytes(),
            );
            out.extend_from_slice(&payload);
        }
        to.write_all(&out).await?;
        ack_to.write_all(&acks).await?;
        out.clear();
        acks.clear();
    }
}

/// Connects `n` pairs to the relay.
pub async fn pairs(relay: SocketAddr, n: usize) -> Result<Vec<Pair>> {
    let mut tasks = JoinSet::new();
    for id in 0..n {
        tasks.spawn(async move {
            let mut sender = Conn::connect(relay).await?;
            sender
                .writer
                .write_all(format!("PAIR {id} S\r\n").as_bytes())
                .await?;
            let mut receiver = Conn::connect(relay).await?;
            receiver
                .writer
                .write_all(format!("PAIR {id} R\r\n").as_bytes())
                .await?;
            Ok::<_, anyhow::Error>(Pair {
                keep: Vec::new(),
                sender,
                receiver,
            })
        });
    }
    let mut ready = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        ready.push(r??);
    }
    Ok(ready)
}
