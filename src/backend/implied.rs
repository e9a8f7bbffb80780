//! List changes a backend makes by itself while doing what the client asked.
//!
//! A client's list command can make the backend change other lists of the same contact: on
//! Matrix, accepting a direct chat invitation (`ADD AL`, as MSN 1.0 answers an `ADD 0 RL`)
//! joins the chat, which puts the inviter on the FL too. MSN 1.0 then sends its own `ADD FL`,
//! which must be answered as an addition, not with `215`. So a change the backend reports for
//! a contact the client was changing in the last [`WINDOW`] is held back instead of being shown
//! as `ADD 0`/`REM 0`: the client's own command for it is then answered as the change (with
//! the current serial), and a held change the client never asks for is shown after the window.
//! The mirror in the store has every change at once either way, so SYN is always true.
//!
//! The event pump's store write and its decision to hold take one [`Implied::turn`], and so do
//! the client command's reading of the mirror and its taking of a held change: otherwise the
//! command could see the backend's change in the store before the pump held it, and answer
//! `215` after all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::{ListKind, UserHandle};
use crate::store::MirrorChange;

/// How long after a client's list command the backend's changes to that contact count as its
/// consequences.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Bounds, so that a client changing many contacts at once can't grow this without end.
const MAX_ASKED: usize = 256;
const MAX_HELD: usize = 256;

#[derive(Default)]
pub struct Implied {
    inner: Mutex<Inner>,
    turn: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Inner {
    /// When the client last asked to change each contact's lists.
    asked: HashMap<UserHandle, Instant>,
    /// Changes the backend made to those contacts meanwhile, not shown yet.
    held: Vec<(MirrorChange, Instant)>,
}

impl Implied {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while the mirror changes and its changes are held or shown, or while a client's
    /// command reads the mirror and takes what is held.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// The client is about to change `contact`'s lists.
    pub fn asked(&self, contact: &UserHandle) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.asked.retain(|_, at| now.duration_since(*at) < WINDOW);
        if inner.asked.len() < MAX_ASKED || inner.asked.contains_key(contact) {
            inner.asked.insert(contact.clone(), now);
        }
    }

    /// Holds a change the backend reported if it follows a client's command for the same
    /// contact (RL changes are always shown: only the other side makes them). True if held.
    pub fn hold(&self, change: &MirrorChange) -> bool {
        if change.list == ListKind::Reverse {
            return false;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let recent = inner
            .asked
            .get(&change.handle)
            .is_some_and(|at| now.duration_since(*at) < WINDOW);
        if !recent || inner.held.len() >= MAX_HELD {
            return false;
        }
        inner
            .held
            .retain(|(c, _)| !(c.handle == change.handle && c.list == change.list));
        inner.held.push((change.clone(), now));
        true
    }

    /// Takes a held change of `contact` on `list` in direction `added`, if there is one: the
    /// client's own command for it is answered as that change.
    pub fn take(&self, contact: &UserHandle, list: ListKind, added: bool) -> bool {
        let mut inner = self.lock();
        let before = inner.held.len();
        inner
            .held
            .retain(|(c, _)| !(c.handle == *contact && c.list == list && c.added == added));
        inner.held.len() != before
    }

    /// Forgets any held change of `contact` on `list`: the client's own command just made it.
    pub fn settled(&self, contact: &UserHandle, list: ListKind) {
        self.lock()
            .held
            .retain(|(c, _)| !(c.handle == *contact && c.list == list));
    }

    pub fn is_empty(&self) -> bool {
        self.lock().held.is_empty()
    }

    /// The held changes the client did not ask for within the window, to be shown now.
    pub fn expired(&self) -> Vec<MirrorChange> {
        let now = Instant::now();
        let mut inner = self.lock();
        let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.held)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= WINDOW);
        inner.held = kept;
        due.into_iter().map(|(c, _)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FriendlyName;

    fn change(list: ListKind, added: bool) -> MirrorChange {
        let handle: UserHandle = "bob@localhost".parse().unwrap();
        MirrorChange {
            name: FriendlyName::from_handle(&handle),
            handle,
            list,
            added,
            serial: 7,
        }
    }

    #[test]
    fn only_changes_to_a_contact_the_client_is_changing_are_held() {
        let implied = Implied::default();
        let bob: UserHandle = "bob@localhost".parse().unwrap();
        assert!(!implied.hold(&change(ListKind::Forward, true)));
        implied.asked(&bob);
        assert!(!implied.hold(&change(ListKind::Reverse, true)));
        assert!(implied.hold(&change(ListKind::Forward, true)));
        assert!(!implied.take(&bob, ListKind::Forward, false));
        assert!(implied.take(&bob, ListKind::Forward, true));
        assert!(!implied.take(&bob, ListKind::Forward, true));
        assert!(implied.is_empty());
    }

    #[test]
    fn held_changes_come_out_after_the_window() {
        let implied = Implied::default();
        let bob: UserHandle = "bob@localhost".parse().unwrap();
        implied.asked(&bob);
        assert!(implied.hold(&change(ListKind::Allow, true)));
        assert!(implied.expired().is_empty());
        implied.lock().held[0].1 -= WINDOW;
        let due = implied.expired();
        assert_eq!(due.len(), 1);
        assert!(implied.is_empty());
    }
}
