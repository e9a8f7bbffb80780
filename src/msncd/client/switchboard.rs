//! One chat with one contact: its switchboard connection, called or answered, and the
//! messages both ways.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::message::incoming_message;
use super::wire::{into_result, send_line, send_message, unexpected, LineReader};
use super::{lock, ClientError, Event, Link, JOIN_TIMEOUT, REPLY_TIMEOUT};
use crate::protocol::{ServerCommand, TrId, UserHandle};

/// How a chat begins: we call someone, or we answer a ring.
pub(super) enum Start {
    Call(UserHandle),
    Answer {
        session_id: u32,
        cookie: String,
        caller: UserHandle,
    },
}

/// One chat with one contact on its own switchboard connection.
pub(super) async fn run_switchboard(
    link: Arc<Link>,
    start: Start,
    sender: mpsc::Sender<Bytes>,
    mut messages: mpsc::Receiver<Bytes>,
) {
    let peer = match &start {
        Start::Call(h) => h.clone(),
        Start::Answer { caller, .. } => caller.clone(),
    };
    let result = tokio::select! {
        r = switchboard_session(&link, start, &peer, &mut messages) => r,
        _ = link.done.cancelled() => Ok(()),
    };
    let mut shared = lock(&link.shared);
    if shared
        .sessions
        .get(&peer)
        .is_some_and(|s| s.same_channel(&sender))
    {
        shared.sessions.remove(&peer);
    }
    messages.close();
    let mut discarded = 0;
    while messages.try_recv().is_ok() {
        discarded += 1;
    }
    if link.done.is_cancelled() {
        return;
    }
    if let Err(e) = result {
        let text = e.to_string();
        let (code, description) = text.split_once(' ').unwrap_or(("0", &text));
        shared.events.push(Event::Error {
            code: code.parse().unwrap_or(0),
            description: format!("chat with {peer}: {description}"),
        });
    }
    shared.events.push(Event::ClosedUser {
        handle: peer,
        discarded,
    });
}

async fn switchboard_session(
    link: &Arc<Link>,
    start: Start,
    peer: &UserHandle,
    messages: &mut mpsc::Receiver<Bytes>,
) -> Result<(), ClientError> {
    let me = &link.handle;
    // The XFR/RNG address carries the public host, which need not be reachable from here;
    // the switchboard's own bound address always is.
    let cookie_for_call = match &start {
        Start::Call(_) => match link.request("XFR", "SB".into()).await? {
            ServerCommand::XfrSb { cookie, .. } => Some(cookie),
            _ => return Err(unexpected("XFR SB")),
        },
        Start::Answer { .. } => None,
    };
    let connect = TcpStream::connect(link.switchboard);
    let stream = tokio::time::timeout(REPLY_TIMEOUT, connect)
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|_| ClientError::Disconnected)?;
    let _ = stream.set_nodelay(true);
    let (read, mut writer) = stream.into_split();
    let mut reader = LineReader::new(read);
    let mut participants: BTreeSet<UserHandle> = BTreeSet::new();
    match start {
        Start::Call(to) => {
            let cookie = cookie_for_call.unwrap_or_default();
            send_line(&mut writer, &format!("USR 1 {me} {cookie}")).await?;
            reader.reply(1).await?;
            send_line(&mut writer, &format!("CAL 2 {to}")).await?;
            reader.reply(2).await?;
            let join = async {
                loop {
                    let line = reader.next().await.ok_or(ClientError::Disconnected)?;
                    if let ServerCommand::Joi { handle, .. } = line {
                        let joined = handle == to;
                        participants.insert(handle);
                        if joined {
                            return Ok(());
                        }
                    }
                }
            };
            tokio::time::timeout(JOIN_TIMEOUT, join)
                .await
                .map_err(|_| ClientError::Failed(format!("{to} did not answer")))??;
        }
        Start::Answer {
            session_id,
            cookie,
            caller: _,
        } => {
            send_line(&mut writer, &format!("ANS 1 {me} {cookie} {session_id}")).await?;
            let answered = async {
                loop {
                    let line = reader.next().await.ok_or(ClientError::Disconnected)?;
                    if let ServerCommand::Iro { handle, .. } = line {
                        participants.insert(handle);
                    } else if line.trid() == Some(TrId(1)) {
                        return into_result(line).map(|_| ());
                    }
                }
            };
            tokio::time::timeout(REPLY_TIMEOUT, answered)
                .await
                .map_err(|_| ClientError::Timeout)??;
        }
    }

    let mut trid = 2;
    let mut flushed = 0;
    while let Ok(payload) = messages.try_recv() {
        trid += 1;
        send_message(&mut writer, trid, &payload).await?;
        flushed += 1;
    }
    if flushed > 0 {
        link.push(Event::Flushed(peer.clone()));
    }
    loop {
        tokio::select! {
            payload = messages.recv() => {
                let Some(payload) = payload else { return Ok(()) };
                trid += 1;
                send_message(&mut writer, trid, &payload).await?;
            }
            line = reader.next() => {
                let Some(line) = line else { return Ok(()) };
                match line {
                    ServerCommand::Msg { sender, payload, .. } => {
                        if let Ok(from) = sender.parse::<UserHandle>() {
                            if let Some(event) = incoming_message(from, &payload) {
                                link.push(event);
                            }
                        }
                    }
                    ServerCommand::Joi { handle, .. } => {
                        participants.insert(handle);
                    }
                    ServerCommand::Bye { handle } => {
                        participants.remove(&handle);
                        if participants.is_empty() {
                            let _ = send_line(&mut writer, "OUT").await;
                            return Ok(());
                        }
                    }
                    ServerCommand::Nak { .. } => link.push(Event::Error {
                        code: 0,
                        description: format!("a message to {peer} was not delivered"),
                    }),
                    _ => {}
                }
            }
        }
    }
}
