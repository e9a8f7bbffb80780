//! Messages per second per user: a token bucket per handle, shared by all of a user's
//! switchboard connections. A burst is let through; past it a flood is slowed (each MSG waits
//! for its token, which also holds back the sender's further commands); and a flood that goes
//! on being slowed for [`MAX_SLOWDOWN`], or would have to wait longer than that, is refused
//! (`713`, "user too active") without being relayed, until the bucket has a token again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::UserHandle;

/// How long a flood is slowed before it is refused, and the longest one MSG is held back.
pub const MAX_SLOWDOWN: Duration = Duration::from_secs(2);
/// The most users tracked; past it those with full buckets are forgotten first.
const MAX_TRACKED: usize = 65_536;

/// What to do with one MSG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it now.
    Go,
    /// Relay it after waiting this long.
    Wait(Duration),
    /// Refuse it: the user is flooding.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left at `at`; negative while MSGs are waiting for theirs.
    tokens: f64,
    at: Instant,
    /// Since when this user's MSGs have had to wait (none passed at once since).
    slowed_since: Option<Instant>,
}

/// The buckets of every user who sent a message recently.
#[derive(Debug)]
pub struct MessageRate {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserHandle, Bucket>>,
}

impl MessageRate {
    /// `per_second` messages a second on average, `burst` at once. A rate of 0 turns the limit
    /// off.
    pub fn new(per_second: u32, burst: u32) -> MessageRate {
        MessageRate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for one MSG of `handle`.
    pub fn take(&self, handle: &UserHandle) -> Verdict {
        self.take_at(handle, Instant::now())
    }

    fn take_at(&self, handle: &UserHandle, now: Instant) -> Verdict {
        if self.per_second <= 0.0 {
            return Verdict::Go;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(handle) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < burst);
        }
        let bucket = buckets.entry(handle.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            slowed_since: None,
        });
        let refill = self.per_second * now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.slowed_since = None;
            return Verdict::Go;
        }
        let since = *bucket.slowed_since.get_or_insert(now);
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second);
        if now.saturating_duration_since(since) >= MAX_SLOWDOWN || wait > MAX_SLOWDOWN {
            // A refused MSG costs no token.
            return Verdict::Refuse;
        }
        bucket.tokens -= 1.0;
        Verdict::Wait(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> UserHandle {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_passes_then_a_flood_is_slowed_then_refused() {
        let rate = MessageRate::new(10, 5);
        let (alice, t0) = (h("alice@example.com"), Instant::now());
        for _ in 0..5 {
            assert_eq!(rate.take_at(&alice, t0), Verdict::Go);
        }
        // The sixth waits a tenth of a second for its token, the next ones longer.
        let Verdict::Wait(first) = rate.take_at(&alice, t0) else {
            panic!("slowed");
        };
        assert!((first.as_secs_f64() - 0.1).abs() < 1e-6);
        let mut last = first;
        let verdict = loop {
            match rate.take_at(&alice, t0) {
                Verdict::Wait(w) => {
                    assert!(w > last && w <= MAX_SLOWDOWN);
                    last = w;
                }
                other => break other,
            }
        };
        assert_eq!(verdict, Verdict::Refuse);
        // Another user is not affected, and after a pause the burst is back.
        assert_eq!(rate.take_at(&h("bob@example.com"), t0), Verdict::Go);
        let later = t0 + Duration::from_secs(3);
        for _ in 0..5 {
            assert_eq!(rate.take_at(&alice, later), Verdict::Go);
        }
    }

    #[test]
    fn a_sender_who_waits_as_told_is_refused_after_two_seconds_of_flood() {
        let rate = MessageRate::new(5, 5);
        let alice = h("alice@example.com");
        let mut now = Instant::now();
        let (mut passed, mut slowed) = (0, Duration::ZERO);
        loop {
            match rate.take_at(&alice, now) {
                Verdict::Go => passed += 1,
                Verdict::Wait(w) => {
                    passed += 1;
                    slowed += w;
                    now += w;
                }
                Verdict::Refuse => break,
            }
        }
        // The burst, then about two seconds' worth at the rate.
        assert!((14..=16).contains(&passed), "{passed} passed");
        assert!(slowed >= MAX_SLOWDOWN - Duration::from_millis(250));
        // Refused until a token is back; then messages pass at once again.
        assert_eq!(rate.take_at(&alice, now), Verdict::Refuse);
        assert_eq!(
            rate.take_at(&alice, now + Duration::from_millis(250)),
            Verdict::Go
        );
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let rate = MessageRate::new(0, 1);
        for _ in 0..1000 {
            assert_eq!(rate.take(&h("a@b.c")), Verdict::Go);
        }
    }
}
