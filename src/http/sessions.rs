//! The self-service page's sessions: a random token in a cookie names one, kept in memory
//! (a restart signs everyone out). Every visitor gets one with its CSRF token before signing
//! in, so that the sign-in form is protected like the others; signing in replaces it with a
//! new one (no fixation), signing out removes it.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use subtle::ConstantTimeEq;

use crate::protocol::UserHandle;

/// The most sessions kept; past it expired ones are dropped, then the new one is refused.
const MAX_SESSIONS: usize = 10_000;

/// How long a session lasts before signing in.
const ANONYMOUS_LIFETIME: Duration = Duration::from_secs(3600);

/// One browser's session.
#[derive(Clone)]
pub struct WebSession {
    /// Who signed in; `None` before signing in.
    pub handle: Option<UserHandle>,
    csrf: String,
    expires: Instant,
}

impl WebSession {
    /// The token every form of this session carries.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's token is this session's.
    pub fn csrf_matches(&self, given: &str) -> bool {
        !given.is_empty() && bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

pub struct Sessions {
    by_token: DashMap<String, WebSession>,
    lifetime: Duration,
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions {
            by_token: DashMap::new(),
            lifetime,
        }
    }

    /// How long a signed-in session lasts (the cookie's Max-Age).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The live session of a token, if any.
    pub fn get(&self, token: &str) -> Option<WebSession> {
        let session = self.by_token.get(token).map(|s| s.clone())?;
        if session.expires <= Instant::now() {
            self.by_token.remove(token);
            return None;
        }
        Some(session)
    }

    fn insert(
        &self,
        handle: Option<UserHandle>,
        lifetime: Duration,
    ) -> Option<(String, WebSession)> {
        if self.by_token.len() >= MAX_SESSIONS {
            let now = Instant::now();
            self.by_token.retain(|_, s| s.expires > now);
            if self.by_token.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let session = WebSession {
            handle,
            csrf: random_token(),
            expires: Instant::now() + lifetime,
        };
        let token = random_token();
        self.by_token.insert(token.clone(), session.clone());
        Some((token, session))
    }

    /// A new session for a visitor who has not signed in; `None` when too many exist.
    pub fn anonymous(&self) -> Option<(String, WebSession)> {
        self.insert(None, ANONYMOUS_LIFETIME)
    }

    /// Ends `old` and starts a signed-in session for `handle` under a new token.
    pub fn sign_in(&self, old: &str, handle: UserHandle) -> Option<(String, WebSession)> {
        self.by_token.remove(old);
        self.insert(Some(handle), self.lifetime)
    }

    pub fn remove(&self, token: &str) {
        self.by_token.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_in_replaces_the_token_and_csrf() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (anon, before) = sessions.anonymous().unwrap();
        assert!(before.csrf_matches(before.csrf()));
        assert!(!before.csrf_matches(""));
        let handle: UserHandle = "a@example.com".parse().unwrap();
        let (token, after) = sessions.sign_in(&anon, handle.clone()).unwrap();
        assert!(sessions.get(&anon).is_none());
        assert_ne!(token, anon);
        assert!(!after.csrf_matches(before.csrf()));
        assert_eq!(sessions.get(&token).unwrap().handle, Some(handle));
        sessions.remove(&token);
        assert!(sessions.get(&token).is_none());
    }

    #[test]
    fn sessions_expire() {
        let sessions = Sessions::new(Duration::from_millis(0));
        let (anon, _) = sessions.anonymous().unwrap();
        let (token, _) = sessions
            .sign_in(&anon, "a@example.com".parse().unwrap())
            .unwrap();
        assert!(sessions.get(&token).is_none());
    }
}
