//! The events an msncd connection keeps for its next POLL, in a bounded queue.

use std::collections::VecDeque;
use std::fmt::Write;

use crate::protocol::{Status, UserHandle};

/// Something that happened while the script was not looking, as POLL reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `MSG lines end_of_header email`: a text message, all its MIME lines; the body starts at
    /// line `end_of_header` (counting from 0), after the headers and the blank line.
    Message {
        from: UserHandle,
        lines: Vec<String>,
        end_of_header: usize,
    },
    /// `STCH email status`.
    StatusChange { handle: UserHandle, status: Status },
    /// `UADD email`: someone added us (our reverse list grew).
    AddedBy(UserHandle),
    /// `UDEL email`: someone removed us.
    RemovedBy(UserHandle),
    /// `ADDFL email`: a contact joined our forward list.
    ForwardAdded(UserHandle),
    /// `DELFL email`: a contact left our forward list.
    ForwardRemoved(UserHandle),
    /// `MFLUSH email`: messages held while a chat was being opened have been sent.
    Flushed(UserHandle),
    /// `TYPING email`.
    Typing(UserHandle),
    /// `SCLOSE MAIN`: the connection to the server closed; the script is logged off.
    ClosedMain,
    /// `SCLOSE USER email discarded`: a chat ended; `discarded` messages were never sent.
    ClosedUser {
        handle: UserHandle,
        discarded: usize,
    },
    /// `ERR code description`: something failed after its command was answered.
    Error { code: u16, description: String },
}

/// The word msncd uses for an MSN state (docs/msncd.md has the table).
pub fn status_word(status: Status) -> &'static str {
    match status {
        Status::Online => "online",
        Status::Away => "away",
        Status::Busy => "busy",
        Status::BeRightBack => "brb",
        Status::OnThePhone => "phone",
        Status::OutToLunch => "lunch",
        Status::Idle => "idle",
        Status::Hidden => "invisible",
        Status::Offline => "offline",
    }
}

/// The MSN state a `STATUS` word asks for. `offline` is appearing offline (HDN), since a
/// script that wants to leave says LOGOFF.
pub fn status_from_word(word: &str) -> Option<Status> {
    Some(match word.to_ascii_lowercase().as_str() {
        "online" => Status::Online,
        "away" => Status::Away,
        "busy" => Status::Busy,
        "brb" => Status::BeRightBack,
        "phone" => Status::OnThePhone,
        "lunch" => Status::OutToLunch,
        "idle" => Status::Idle,
        "invisible" | "offline" => Status::Hidden,
        _ => return None,
    })
}

impl Event {
    /// Appends the event's lines, each ended by `\n`.
    pub fn write_to(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = match self {
            Event::Message {
                from,
                lines,
                end_of_header,
            } => {
                let _ = writeln!(out, "MSG {} {end_of_header} {from}", lines.len());
                for line in lines {
                    out.push_str(line);
                    out.push('\n');
                }
                Ok(())
            }
            Event::StatusChange { handle, status } => {
                writeln!(out, "STCH {handle} {}", status_word(*status))
            }
            Event::AddedBy(h) => writeln!(out, "UADD {h}"),
            Event::RemovedBy(h) => writeln!(out, "UDEL {h}"),
            Event::ForwardAdded(h) => writeln!(out, "ADDFL {h}"),
            Event::ForwardRemoved(h) => writeln!(out, "DELFL {h}"),
            Event::Flushed(h) => writeln!(out, "MFLUSH {h}"),
            Event::Typing(h) => writeln!(out, "TYPING {h}"),
            Event::ClosedMain => writeln!(out, "SCLOSE MAIN"),
            Event::ClosedUser { handle, discarded } => {
                writeln!(out, "SCLOSE USER {handle} {discarded}")
            }
            Event::Error { code, description } => writeln!(out, "ERR {code} {description}"),
        };
    }
}

/// A FIFO of at most `limit` events. When full, the oldest is dropped and counted, and the
/// count is reported first by the next [`EventQueue::drain_to`].
#[derive(Debug)]
pub struct EventQueue {
    events: VecDeque<Event>,
    limit: usize,
    discarded: usize,
}

impl EventQueue {
    pub fn new(limit: usize) -> EventQueue {
        EventQueue {
            events: VecDeque::new(),
            limit: limit.max(1),
            discarded: 0,
        }
    }

    pub fn push(&mut self, event: Event) {
        if self.events.len() >= self.limit {
            self.events.pop_front();
            self.discarded += 1;
        }
        self.events.push_back(event);
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.discarded = 0;
    }

    /// Writes every queued event (after an `ERR 0 N events discarded` line if some were
    /// dropped) and empties the queue. `POLLEND` is the caller's.
    pub fn drain_to(&mut self, out: &mut String) {
        if self.discarded > 0 {
            let _ = writeln!(
                out,
                "ERR 0 {} events discarded: more than {} arrived between two POLLs",
                self.discarded, self.limit
            );
            self.discarded = 0;
        }
        for event in self.events.drain(..) {
            event.write_to(out);
        }
        self.events = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> UserHandle {
        s.parse().unwrap()
    }

    #[test]
    fn events_have_the_msncd_form() {
        let mut out = String::new();
        Event::Message {
            from: h("bob@example.com"),
            lines: vec!["Content-Type: text/plain".into(), "".into(), "hi".into()],
            end_of_header: 2,
        }
        .write_to(&mut out);
        Event::StatusChange {
            handle: h("bob@example.com"),
            status: Status::BeRightBack,
        }
        .write_to(&mut out);
        Event::ClosedUser {
            handle: h("bob@example.com"),
            discarded: 2,
        }
        .write_to(&mut out);
        assert_eq!(
            out,
            "MSG 3 2 bob@example.com\nContent-Type: text/plain\n\nhi\n\
             STCH bob@example.com brb\nSCLOSE USER bob@example.com 2\n"
        );
    }

    #[test]
    fn status_words_map_to_msn_states_and_back() {
        for status in Status::ALL {
            let word = status_word(status);
            let back = status_from_word(word).unwrap();
            if status == Status::Offline {
                assert_eq!(back, Status::Hidden);
            } else {
                assert_eq!(back, status);
            }
        }
        assert_eq!(status_from_word("AWAY"), Some(Status::Away));
        assert_eq!(status_from_word("sleeping"), None);
    }

    #[test]
    fn overflow_drops_the_oldest_and_says_so() {
        let mut q = EventQueue::new(2);
        for n in ["a@x.com", "b@x.com", "c@x.com"] {
            q.push(Event::Typing(h(n)));
        }
        let mut out = String::new();
        q.drain_to(&mut out);
        assert_eq!(
            out,
            "ERR 0 1 events discarded: more than 2 arrived between two POLLs\n\
             TYPING b@x.com\nTYPING c@x.com\n"
        );
        let mut again = String::new();
        q.drain_to(&mut again);
        assert_eq!(again, "");
    }
}
