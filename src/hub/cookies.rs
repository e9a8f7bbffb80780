//! Switchboard cookies: unguessable, single-use tickets bound to one handle, that expire.
//!
//! `XFR SB` issues a cookie for starting a new session; `CAL` issues one for joining an
//! existing session (sent to the callee in `RNG`). The switchboard accepts each cookie once,
//! from the handle it was issued to, before it expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::UserHandle;

/// How many cookies may be outstanding before expired ones are swept on the next issue.
const SWEEP_AT: usize = 4096;
/// The most outstanding cookies in all; past that, new ones are refused.
const MAX_COOKIES: usize = 100_000;

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
    issued: Mutex<HashMap<String, (CookieGrant, Instant)>>,
}

impl Cookies {
    pub fn new(lifetime: Duration) -> Cookies {
        Cookies {
            lifetime,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a cookie: 128 random bits in hex. `None` when too many are outstanding.
    pub fn issue(&self, grant: CookieGrant) -> Option<String> {
        let cookie = hex::encode(rand::random::<[u8; 16]>());
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if issued.len() >= SWEEP_AT {
            issued.retain(|_, (_, expires)| *expires > now);
        }
        if issued.len() >= MAX_COOKIES {
            return None;
        }
        issued.insert(cookie.clone(), (grant, now + self.lifetime));
        Some(cookie)
    }

    /// Takes a cookie presented for `wanted` (a handle starting a session, or a handle joining
    /// a given session). It is used up only when it was issued for exactly that and has not
    /// expired, so a mistaken or hostile attempt can't spoil a cookie for its owner.
    pub fn redeem(&self, cookie: &str, wanted: &CookieGrant) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let Some((grant, expires)) = issued.get(cookie) else {
            return false;
        };
        if *expires <= Instant::now() {
            issued.remove(cookie);
            return false;
        }
        if grant != wanted {
            return false;
        }
        issued.remove(cookie);
        true
    }

    pub fn outstanding(&self) -> usize {
        self.issued.lock().map(|m| m.len()).unwrap_or(0)
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
