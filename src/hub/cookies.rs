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
/// The most unused cookies one handle may have asked for, by `XFR SB` (its own, to open a
/// session) or by `CAL` (the callee's, to join): a client opens a session with each cookie as
/// soon as it has it, and a callee answers or not, so one user that asks for many, or rings
/// the same contact over and over, can't use up the node's cookies for everyone else.
const MAX_UNUSED_PER_ASKER: u32 = 64;
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
    grants: HashMap<Key, Outstanding>,
    expiring: VecDeque<(Instant, Key)>,
    /// How many of `grants` each handle asked for (handles with none left out).
    asked: HashMap<UserHandle, u32>,
}

/// An outstanding cookie: what it grants, and who asked for it (who it is counted against).
struct Outstanding {
    grant: CookieGrant,
    asker: UserHandle,
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
        let Some(Outstanding { asker, .. }) = self.grants.remove(key) else {
            return;
        };
        if let Some(count) = self.asked.get_mut(&asker) {
            *count -= 1;
            if *count == 0 {
                self.asked.remove(&asker);
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

    /// Issues a cookie for `grant`, asked for by `asker` (the handle opening a session, or the
    /// caller ringing someone in): 128 random bits in hex. `None` when too many are
    /// outstanding, on the node or asked for by `asker`.
    pub fn issue(&self, grant: CookieGrant, asker: &UserHandle) -> Option<String> {
        let key: Key = rand::random();
        let now = Instant::now();
        let mut issued = self.lock();
        issued.sweep(now);
        if issued.grants.len() >= MAX_COOKIES {
            return None;
        }
        match issued.asked.get_mut(asker) {
            Some(count) if *count >= MAX_UNUSED_PER_ASKER => return None,
            Some(count) => *count += 1,
            None => {
                issued.asked.insert(asker.clone(), 1);
            }
        }
        let Issued {
            grants, expiring, ..
        } = &mut *issued;
        if expiring.len() > 2 * grants.len() + COMPACT_SLACK {
            expiring.retain(|(_, key)| grants.contains_key(key));
        }
        let asker = asker.clone();
        issued.grants.insert(key, Outstanding { grant, asker });
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
        if issued.grants.get(&key).map(|o| &o.grant) != Some(wanted) {
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
        let c = cookies.issue(grant.clone(), &alice).unwrap();
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
        let c = cookies.issue(invite.clone(), &h("bob@x.com")).unwrap();
        assert!(!cookies.redeem(
            &c,
            &CookieGrant::Invite {
                handle: alice.clone(),
                session_id: 8
            }
        ));
        assert!(cookies.redeem(&c, &invite));

        let c = cookies.issue(grant.clone(), &alice).unwrap();
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
        // Asked for by many callers, each within its own bound.
        let mut callers = (0..).map(|i| h(&format!("caller{i}@x.com")));
        let mut issue = || cookies.issue(grant.clone(), &callers.next().unwrap());
        let first = issue().unwrap();
        for _ in 1..MAX_COOKIES {
            issue().unwrap();
        }
        assert!(issue().is_none());
        // Using a cookie frees its place.
        assert!(cookies.redeem(&first, &grant));
        let used = issue().unwrap();
        assert!(issue().is_none());
        assert!(cookies.redeem(&used, &grant));
        // Many used cookies waiting for their time don't change what is outstanding.
        for _ in 0..3 * COMPACT_SLACK {
            let c = issue().unwrap();
            assert!(cookies.redeem(&c, &grant));
        }
        assert_eq!(cookies.outstanding(), MAX_COOKIES - 1);
        // They expire 120 s after they were issued, and the queue empties with them.
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(cookies.outstanding(), 0);
        assert!(cookies.lock().expiring.is_empty());
        assert!(cookies.lock().asked.is_empty());
        let late = issue().unwrap();
        assert!(cookies.redeem(&late, &grant));
        assert!(!cookies.redeem("not hex at all, but 32 long ....", &grant));
    }

    #[tokio::test(start_paused = true)]
    async fn used_cookies_do_not_pile_up_waiting_for_their_time() {
        let cookies = Cookies::new(Duration::from_secs(120));
        let alice = h("alice@x.com");
        let grant = CookieGrant::NewSession {
            handle: alice.clone(),
        };
        for _ in 0..10 * COMPACT_SLACK {
            let c = cookies.issue(grant.clone(), &alice).unwrap();
            assert!(cookies.redeem(&c, &grant));
        }
        assert_eq!(cookies.outstanding(), 0);
        assert!(cookies.lock().expiring.len() <= COMPACT_SLACK + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_handle_holds_at_most_64_unused_cookies_it_asked_for() {
        let cookies = Cookies::new(Duration::from_secs(120));
        let mallory = h("mallory@x.com");
        let own = CookieGrant::NewSession {
            handle: mallory.clone(),
        };
        let first = cookies.issue(own.clone(), &mallory).unwrap();
        // Ringing the same callee over and over counts against the caller too.
        let ring = CookieGrant::Invite {
            handle: h("bob@x.com"),
            session_id: 9,
        };
        let rung = cookies.issue(ring.clone(), &mallory).unwrap();
        for _ in 2..MAX_UNUSED_PER_ASKER {
            cookies.issue(ring.clone(), &mallory).unwrap();
        }
        assert!(cookies.issue(own.clone(), &mallory).is_none());
        assert!(cookies.issue(ring.clone(), &mallory).is_none());
        // Others still get theirs, for themselves and to ring the same callee.
        let alice = h("alice@x.com");
        let alice_own = CookieGrant::NewSession {
            handle: alice.clone(),
        };
        assert!(cookies.issue(alice_own, &alice).is_some());
        assert!(cookies.issue(ring.clone(), &alice).is_some());
        // Using one frees its place, whoever uses it; so does expiry.
        assert!(cookies.redeem(&first, &own));
        assert!(cookies.issue(own.clone(), &mallory).is_some());
        assert!(cookies.issue(own.clone(), &mallory).is_none());
        assert!(cookies.redeem(&rung, &ring));
        assert!(cookies.issue(ring.clone(), &mallory).is_some());
        assert!(cookies.issue(ring.clone(), &mallory).is_none());
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(cookies.issue(own.clone(), &mallory).is_some());
        assert_eq!(cookies.outstanding(), 1);
        assert_eq!(cookies.lock().asked.len(), 1);
    }

    #[test]
    fn cookies_differ() {
        let cookies = Cookies::new(Duration::from_secs(1));
        let grant = CookieGrant::NewSession {
            handle: h("a@x.com"),
        };
        let a = cookies.issue(grant.clone(), &h("a@x.com")).unwrap();
        let b = cookies.issue(grant, &h("a@x.com")).unwrap();
        assert_ne!(a, b);
    }
}
