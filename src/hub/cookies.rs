//! Switchboard cookies: unguessable, single-use tickets bound to one handle, that expire.
//!
//! `XFR SB` issues a cookie for starting a new session; `CAL` issues one for joining an
//! existing session (sent to the callee in `RNG`). The switchboard accepts each cookie once,
//! from the handle it was issued to, before it expires.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::UserHandle;

/// The most outstanding cookies (issued, not used, not expired); past that, new ones are
/// refused.
const MAX_COOKIES: usize = 100_000;
/// The most cookies for new sessions (`XFR SB`) one handle may hold unused: a client opens a
/// session with each as soon as it has it, and one that asks for many and uses none can't use up
/// the node's cookies for everyone else.
const MAX_NEW_SESSIONS_PER_HANDLE: u32 = 64;
/// Used cookies wait in the expiry queue until their time; once they outnumber the outstanding
/// ones by this many, the queue is compacted.
const COMPACT_SLACK: usize = 1024;

/// A cookie as the server keeps it: its 128 bits (clients see them as 32 hex digits).
type Key = [u8; 16];

/// What a cookie lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieGrant {
    /// Start a new switchboard session (from `XFR SB`).
    NewSession { handle: UserHandle },
    /// Join the session with this id (from a `RNG`).
    Invite { handle: UserHandle, session_id: u32 },
}

/// The outstanding cookies.
pub struct Cookies {
    lifetime: Duration,
    issued: Mutex<Issued>,
}

/// The cookies that can still be used, and the cookies issued within one lifetime in the order
/// they were issued, which is the order they expire in: each issue drops the expired ones from
/// the front, so issuing costs the same however many are outstanding. The used ones among them
/// are dropped in one pass once they outnumber the outstanding ones (by [`COMPACT_SLACK`]), so
/// that pass, too, costs a constant per issue on average.
#[derive(Default)]
struct Issued {
    grants: HashMap<Key, CookieGrant>,
    expiring: VecDeque<(Instant, Key)>,
    /// How many of `grants` are for new sessions, per handle (handles with none left out).
    new_sessions: HashMap<UserHandle, u32>,
}

impl Issued {
    /// Drops the cookies that expired by `now`, used or not.
    fn sweep(&mut self, now: Instant) {
        while let Some(&(expires, key)) = self.expiring.front() {
            if expires > now {
                break;
            }
            self.expiring.pop_front();
            self.remove(&key);
        }
    }

    /// Takes a cookie out of the outstanding ones.
    fn remove(&mut self, key: &Key) {
        let Some(CookieGrant::NewSession { handle }) = self.grants.remove(key) else {
            return;
        };
        if let Some(count) = self.new_sessions.get_mut(&handle) {
            *count -= 1;
            if *count == 0 {
                self.new_sessions.remove(&handle);
            }
        }
    }
}

impl Cookies {
    pub fn new(lifetime: Duration) -> Cookies {
        Cookies {
            lifetime,
            issued: Mutex::new(Issued::default()),
        }
    }

    /// Issues a cookie: 128 random bits in hex. `None` when too many are outstanding, on the
    /// node or, for new sessions, for the handle.
    pub fn issue(&self, grant: CookieGrant) -> Option<String> {
        let key: Key = rand::random();
        let now = Instant::now();
        let mut issued = self.lock();
        issued.sweep(now);
        if issued.grants.len() >= MAX_COOKIES {
            return None;
        }
        if let CookieGrant::NewSession { handle } = &grant {
            match issued.new_sessions.get_mut(handle) {
                Some(count) if *count >= MAX_NEW_SESSIONS_PER_HANDLE => return None,
                Some(count) => *count += 1,
                None => {
                    issued.new_sessions.insert(handle.clone(), 1);
                }
            }
        }
        let Issued {
            grants, expiring, ..
        } = &mut *issued;
        if expiring.len() > 2 * grants.len() + COMPACT_SLACK {
            expiring.retain(|(_, key)| grants.contains_key(key));
        }
        issued.grants.insert(key, grant);
        issued.expiring.push_back((now + self.lifetime, key));
        Some(hex::encode(key))
    }

    /// Takes a cookie presented for `wanted` (a handle starting a session, or a handle joining
    /// a given session). It is used up only when it was issued for exactly that and has not
    /// expired, so a mistaken or hostile attempt can't spoil a cookie for its owner.
    pub fn redeem(&self, cookie: &str, wanted: &CookieGrant) -> bool {
        let mut key: Key = [0; 16];
        if hex::decode_to_slice(cookie, &mut key).is_err() {
            return false;
        }
        let mut issued = self.lock();
        issued.sweep(Instant::now());
        if issued.grants.get(&key) != Some(wanted) {
            return false;
        }
        issued.remove(&key);
        true
    }

    pub fn outstanding(&self) -> usize {
        let mut issued = self.lock();
        issued.sweep(Instant::now());
        issued.grants.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Issued> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> UserHandle {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn single_use_bound_and_expiring() {
        let cookies = Cookies::new(Duration::from_secs(120));
        let alice = h("alice@x.com");
        let grant = CookieGrant::NewSession {
            handle: alice.clone(),
        };
        let c = cookies.issue(grant.clone()).unwrap();
        assert_eq!(c.len(), 32);
        assert!(!cookies.redeem("wrong", &grant));
        // Someone else presenting it gets nothing and does not use it up.
        assert!(!cookies.redeem(
            &c,
            &CookieGrant::NewSession {
                handle: h("mallory@x.com")
            }
        ));
        assert!(!cookies.redeem(
            &c,
            &CookieGrant::Invite {
                handle: alice.clone(),
                session_id: 1
            }
        ));
        assert!(cookies.redeem(&c, &grant));
        assert!(!cookies.redeem(&c, &grant));

        let invite = CookieGrant::Invite {
            handle: alice.clone(),
            session_id: 7,
        };
        let c = cookies.issue(invite.clone()).unwrap();
        assert!(!cookies.redeem(
            &c,
            &CookieGrant::Invite {
                handle: alice.clone(),
                session_id: 8
            }
        ));
        assert!(cookies.redeem(&c, &invite));

        let c = cookies.issue(grant.clone()).unwrap();
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(!cookies.redeem(&c, &grant));
        assert_eq!(cookies.outstanding(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_cookies_outstanding_each_place_freed_when_used_or_expired() {
        let cookies = Cookies::new(Duration::from_secs(120));
        let grant = CookieGrant::Invite {
            handle: h("alice@x.com"),
            session_id: 1,
        };
        let first = cookies.issue(grant.clone()).unwrap();
        for _ in 1..MAX_COOKIES {
            cookies.issue(grant.clone()).unwrap();
        }
        assert!(cookies.issue(grant.clone()).is_none());
        // Using a cookie frees its place.
        assert!(cookies.redeem(&first, &grant));
        let used = cookies.issue(grant.clone()).unwrap();
        assert!(cookies.issue(grant.clone()).is_none());
        assert!(cookies.redeem(&used, &grant));
        // Many used cookies waiting for their time don't change what is outstanding.
        for _ in 0..3 * COMPACT_SLACK {
            let c = cookies.issue(grant.clone()).unwrap();
            assert!(cookies.redeem(&c, &grant));
        }
        assert_eq!(cookies.outstanding(), MAX_COOKIES - 1);
        // They expire 120 s after they were issued, and the queue empties with them.
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(cookies.outstanding(), 0);
        assert!(cookies.lock().expiring.is_empty());
        let late = cookies.issue(grant.clone()).unwrap();
        assert!(cookies.redeem(&late, &grant));
        assert!(!cookies.redeem("not hex at all, but 32 long ....", &grant));
    }

    #[tokio::test(start_paused = true)]
    async fn used_cookies_do_not_pile_up_waiting_for_their_time() {
        let cookies = Cookies::new(Duration::from_secs(120));
        let grant = CookieGrant::NewSession {
            handle: h("alice@x.com"),
        };
        for _ in 0..10 * COMPACT_SLACK {
            let c = cookies.issue(grant.clone()).unwrap();
            assert!(cookies.redeem(&c, &grant));
        }
        assert_eq!(cookies.outstanding(), 0);
        assert!(cookies.lock().expiring.len() <= COMPACT_SLACK + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_handle_holds_at_most_64_unused_cookies_for_new_sessions() {
        let cookies = Cookies::new(Duration::from_secs(120));
        let mallory = CookieGrant::NewSession {
            handle: h("mallory@x.com"),
        };
        let first = cookies.issue(mallory.clone()).unwrap();
        for _ in 1..MAX_NEW_SESSIONS_PER_HANDLE {
            cookies.issue(mallory.clone()).unwrap();
        }
        assert!(cookies.issue(mallory.clone()).is_none());
        // Others still get theirs, and invitations for the same handle are not counted.
        let alice = CookieGrant::NewSession {
            handle: h("alice@x.com"),
        };
        assert!(cookies.issue(alice).is_some());
        let invited = CookieGrant::Invite {
            handle: h("mallory@x.com"),
            session_id: 9,
        };
        assert!(cookies.issue(invited).is_some());
        // Using one frees its place; so does expiry.
        assert!(cookies.redeem(&first, &mallory));
        assert!(cookies.issue(mallory.clone()).is_some());
        assert!(cookies.issue(mallory.clone()).is_none());
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(cookies.issue(mallory.clone()).is_some());
        assert_eq!(cookies.outstanding(), 1);
        assert_eq!(cookies.lock().new_sessions.len(), 1);
    }

    #[test]
    fn cookies_differ() {
        let cookies = Cookies::new(Duration::from_secs(1));
        let grant = CookieGrant::NewSession {
            handle: h("a@x.com"),
        };
        let a = cookies.issue(grant.clone()).unwrap();
        let b = cookies.issue(grant).unwrap();
        assert_ne!(a, b);
    }
}
