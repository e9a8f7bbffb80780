//! The notification connection's task: requests out with fresh TrIDs, replies routed back,
//! and presence, list changes and rings turned into events.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use super::switchboard::{run_switchboard, Start};
use super::wire::{send_line, LineReader};
use super::{lock, record, Event, Link, Request, SESSION_QUEUE};
use crate::protocol::{ListKind, ServerCommand, Status, TrId};

/// The notification connection's task: writes requests with fresh TrIDs, routes replies,
/// and turns presence, list changes and rings into events.
pub(super) async fn run_notification(
    link: Arc<Link>,
    mut reader: LineReader,
    mut writer: OwnedWriteHalf,
    mut inbox: mpsc::Receiver<Request>,
    mut trid: u32,
) {
    let mut pending: HashMap<u32, oneshot::Sender<ServerCommand>> = HashMap::new();
    loop {
        tokio::select! {
            _ = link.done.cancelled() => {
                let _ = send_line(&mut writer, "OUT").await;
                break;
            }
            request = inbox.recv() => {
                let Some(request) = request else { break };
                trid += 1;
                let line = if request.args.is_empty() {
                    format!("{} {trid}", request.verb)
                } else {
                    format!("{} {trid} {}", request.verb, request.args)
                };
                if send_line(&mut writer, &line).await.is_err() {
                    break;
                }
                pending.insert(trid, request.reply);
            }
            line = reader.next() => {
                let Some(line) = line else { break };
                if matches!(line, ServerCommand::Out { .. }) {
                    break;
                }
                on_notification_line(&link, line, &mut pending);
            }
        }
    }
    let mut shared = lock(&link.shared);
    shared.connected = false;
    shared.sessions.clear();
    if !link.done.is_cancelled() {
        shared.events.push(Event::ClosedMain);
    }
    drop(shared);
    link.done.cancel();
}

fn on_notification_line(
    link: &Arc<Link>,
    line: ServerCommand,
    pending: &mut HashMap<u32, oneshot::Sender<ServerCommand>>,
) {
    let mut shared = lock(&link.shared);
    match &line {
        ServerCommand::Nln {
            status,
            handle,
            name,
        }
        | ServerCommand::Iln {
            status,
            handle,
            name,
            ..
        } => {
            if let Some(c) = shared.contacts.get_mut(handle) {
                c.status = *status;
                c.name = name.clone();
            }
            shared.events.push(Event::StatusChange {
                handle: handle.clone(),
                status: *status,
            });
            return;
        }
        ServerCommand::Fln { handle } => {
            if let Some(c) = shared.contacts.get_mut(handle) {
                c.status = Status::Offline;
            }
            shared.events.push(Event::StatusChange {
                handle: handle.clone(),
                status: Status::Offline,
            });
            return;
        }
        ServerCommand::Add {
            trid,
            list,
            handle,
            name,
            ..
        } => {
            let h = handle.clone();
            record(&mut shared.contacts, h.clone(), *list, name.clone());
            match list {
                ListKind::Forward => shared.events.push(Event::ForwardAdded(h)),
                ListKind::Reverse if *trid == TrId(0) => shared.events.push(Event::AddedBy(h)),
                _ => {}
            }
        }
        ServerCommand::Rem {
            trid, list, handle, ..
        } => {
            let h = handle.clone();
            if let Some(c) = shared.contacts.get_mut(&h) {
                c.lists.remove(list);
                if c.lists.is_empty() {
                    shared.contacts.remove(&h);
                }
            }
            match list {
                ListKind::Forward => shared.events.push(Event::ForwardRemoved(h)),
                ListKind::Reverse if *trid == TrId(0) => shared.events.push(Event::RemovedBy(h)),
                _ => {}
            }
        }
        ServerCommand::Rea { handle, name, .. } if *handle == link.handle => {
            shared.own_name = name.clone();
        }
        ServerCommand::Rng {
            session_id,
            cookie,
            caller,
            ..
        } => {
            let (sender, receiver) = mpsc::channel(SESSION_QUEUE);
            shared.sessions.insert(caller.clone(), sender.clone());
            let start = Start::Answer {
                session_id: *session_id,
                cookie: cookie.clone(),
                caller: caller.clone(),
            };
            drop(shared);
            link.tracker
                .spawn(run_switchboard(link.clone(), start, sender, receiver));
            return;
        }
        _ => {}
    }
    drop(shared);
    if let Some(reply) = line.trid().and_then(|t| pending.remove(&t.0)) {
        let _ = reply.send(line);
    }
}
