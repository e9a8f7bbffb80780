//! Login throttling, and logging that an attacker can't turn into a flood.
//!
//! Failed logins are counted per (address, handle) and per address, over a sliding window. Past
//! the limit, further logins for that handle from that address (or, for the per-address limit,
//! any handle from it) are refused with `911` for a cool-down that doubles with each repeat,
//! without the password being checked. Another address is not affected, so an attacker can't
//! lock the real user out. Unknown handles are counted exactly like known ones. Each block is
//! logged once, with the count that caused it; failures in between are not logged one by one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::protocol::UserHandle;

pub use crate::config::ThrottleLimits;

/// The longest cool-down, however often an offender comes back.
const MAX_COOLDOWN: Duration = Duration::from_secs(3600);
/// The most offenders tracked; past it idle ones are forgotten first.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
struct Counter {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    /// How many times this offender was blocked (the cool-down doubles each time).
    strikes: u32,
    last_seen: Instant,
}

impl Counter {
    fn new(now: Instant) -> Counter {
        Counter {
            window_start: now,
            failures: 0,
            blocked_until: None,
            strikes: 0,
            last_seen: now,
        }
    }

    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Counts a failure; returns the new block's length when this one starts a block.
    fn fail(&mut self, now: Instant, limit: u32, limits: &ThrottleLimits) -> Option<Duration> {
        self.last_seen = now;
        if now.duration_since(self.window_start) > limits.window {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures < limit {
            return None;
        }
        let cooldown = limits
            .cooldown
            .saturating_mul(1 << self.strikes.min(16))
            .min(MAX_COOLDOWN);
        self.strikes += 1;
        self.failures = 0;
        self.blocked_until = Some(now + cooldown);
        Some(cooldown)
    }
}

/// The counters of failed logins.
pub struct LoginThrottle {
    limits: ThrottleLimits,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pairs: HashMap<(IpAddr, UserHandle), Counter>,
    addresses: HashMap<IpAddr, Counter>,
}

impl Inner {
    /// Forgets offenders idle for longer than any cool-down, when there are too many.
    fn prune(&mut self, now: Instant) {
        if self.pairs.len() + self.addresses.len() < MAX_TRACKED {
            return;
        }
        let idle = |c: &Counter| now.duration_since(c.last_seen) > MAX_COOLDOWN;
        self.pairs
            .retain(|_, c| !idle(c) || c.blocked(now).is_some());
        self.addresses
            .retain(|_, c| !idle(c) || c.blocked(now).is_some());
        if self.pairs.len() + self.addresses.len() >= MAX_TRACKED {
            // Still full: keep only who is blocked now.
            self.pairs.retain(|_, c| c.blocked(now).is_some());
            self.addresses.retain(|_, c| c.blocked(now).is_some());
        }
    }
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How much longer logins for `handle` from `address` are refused, if they are.
    pub fn blocked(&self, address: IpAddr, handle: &UserHandle) -> Option<Duration> {
        let now = Instant::now();
        let inner = self.lock();
        let pair = inner
            .pairs
            .get(&(address, handle.clone()))
            .and_then(|c| c.blocked(now));
        let whole = inner.addresses.get(&address).and_then(|c| c.blocked(now));
        pair.max(whole)
    }

    /// Counts a failed login (a wrong password, an unknown handle, or an attempt while blocked).
    pub fn failed(&self, address: IpAddr, handle: &UserHandle) {
        let now = Instant::now();
        let limits = self.limits;
        let mut inner = self.lock();
        inner.prune(now);
        let pair = inner
            .pairs
            .entry((address, handle.clone()))
            .or_insert_with(|| Counter::new(now));
        let first = pair.failures == 0 && pair.blocked(now).is_none();
        if let Some(cooldown) = pair.fail(now, limits.per_handle, &limits) {
            warn!(%address, %handle, failures = limits.per_handle, ?cooldown, "too many failed logins for this handle from this address; refusing them for a while");
        } else if first {
            warn!(%address, %handle, "login failed");
        } else {
            debug!(%address, %handle, "login failed");
        }
        let whole = inner
            .addresses
            .entry(address)
            .or_insert_with(|| Counter::new(now));
        if let Some(cooldown) = whole.fail(now, limits.per_address, &limits) {
            warn!(%address, failures = limits.per_address, ?cooldown, "too many failed logins from this address; refusing its logins for a while");
        }
    }

    /// A login succeeded: the handle's count from that address starts again.
    pub fn succeeded(&self, address: IpAddr, handle: &UserHandle) {
        let mut inner = self.lock();
        if inner
            .pairs
            .get(&(address, handle.clone()))
            .is_some_and(|c| c.blocked_until.is_none())
        {
            inner.pairs.remove(&(address, handle.clone()));
        }
    }
}

/// Open connections, in all and per client address, against their limits. Loopback addresses
/// (local load tests, msncd's own connections) are not counted per address unless the
/// configuration says so; they count in the total.
pub struct ConnectionCounts {
    total_limit: usize,
    total: AtomicUsize,
    per_address: usize,
    count_loopback: bool,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Why [`ConnectionCounts::open`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node has `server.max_connections` open.
    Full,
    /// The client's address has `limits.max_connections_per_address` open.
    Address,
}

/// A connection [`ConnectionCounts::open`] counted, to be given back with
/// [`ConnectionCounts::close`]: the address when it was counted as well.
///
/// Copied into the connection's task rather than a guard holding the counts' `Arc`: every
/// session's task carries it (docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy)]
#[must_use = "a counted connection must be closed"]
pub struct Counted(Option<IpAddr>);

impl ConnectionCounts {
    pub fn new(total_limit: usize, per_address: usize, count_loopback: bool) -> ConnectionCounts {
        ConnectionCounts {
            total_limit,
            total: AtomicUsize::new(0),
            per_address,
            count_loopback,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `address`, unless the node or that address has its limit.
    pub fn open(&self, address: IpAddr) -> Result<Counted, Refused> {
        let limit = self.total_limit;
        self.total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Refused::Full)?;
        if address.is_loopback() && !self.count_loopback {
            return Ok(Counted(None));
        }
        let mut open = self.lock();
        let count = open.entry(address).or_insert(0);
        if *count >= self.per_address {
            if *count == 0 {
                open.remove(&address);
            }
            drop(open);
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::Address);
        }
        *count += 1;
        Ok(Counted(Some(address)))
    }

    /// Gives back what [`ConnectionCounts::open`] counted.
    pub fn close(&self, counted: Counted) {
        if let Some(address) = counted.0 {
            let mut open = self.lock();
            if let Some(count) = open.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&address);
                }
            }
        }
        self.total.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many connections from `address` are counted now.
    pub fn open_from(&self, address: IpAddr) -> usize {
        self.lock().get(&address).copied().unwrap_or(0)
    }

    /// How many connections are open in all.
    pub fn open_in_all(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// Logs a kind of failure (bad cookies, say) once per address and period, with how many
/// were not logged since the last line.
pub struct LogLimiter {
    period: Duration,
    inner: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LogLimiter {
    pub fn new(period: Duration) -> LogLimiter {
        LogLimiter {
            period,
            inner: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to log this failure from `address` now, and how many before it were not.
    pub fn should_log(&self, address: IpAddr) -> Option<u32> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.len() >= MAX_TRACKED {
            let period = self.period;
            inner.retain(|_, (at, _)| now.duration_since(*at) < period);
        }
        match inner.get_mut(&address) {
            Some((at, suppressed)) if now.duration_since(*at) < self.period => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let before = std::mem::take(suppressed);
                *at = now;
                Some(before)
            }
            None => {
                inner.insert(address, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            per_handle: 10,
            per_address: 30,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn ten_failures_block_the_handle_from_that_address_only_and_it_grows() {
        let t = LoginThrottle::new(limits());
        let alice: UserHandle = "alice@x.com".parse().unwrap();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..9 {
            t.failed(a, &alice);
        }
        assert_eq!(t.blocked(a, &alice), None);
        t.failed(a, &alice);
        assert_eq!(t.blocked(a, &alice), Some(Duration::from_secs(30)));
        assert_eq!(t.blocked(b, &alice), None);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(t.blocked(a, &alice), None);
        for _ in 0..10 {
            t.failed(a, &alice);
        }
        assert_eq!(t.blocked(a, &alice), Some(Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_over_time_do_not_block() {
        let t = LoginThrottle::new(limits());
        let alice: UserHandle = "alice@x.com".parse().unwrap();
        for _ in 0..30 {
            t.failed(ip("192.0.2.1"), &alice);
            tokio::time::advance(Duration::from_secs(7)).await;
        }
        assert_eq!(t.blocked(ip("192.0.2.1"), &alice), None);
    }

    #[tokio::test(start_paused = true)]
    async fn many_handles_from_one_address_block_the_address() {
        let t = LoginThrottle::new(limits());
        let a = ip("192.0.2.1");
        for i in 0..30 {
            t.failed(a, &format!("user{i}@x.com").parse().unwrap());
        }
        let fresh: UserHandle = "fresh@x.com".parse().unwrap();
        assert!(t.blocked(a, &fresh).is_some());
        assert_eq!(t.blocked(ip("192.0.2.9"), &fresh), None);
    }

    #[test]
    fn connections_per_address_are_limited_and_given_back_loopback_aside() {
        let counts = ConnectionCounts::new(100, 2, false);
        let a = ip("192.0.2.1");
        let first = counts.open(a).unwrap();
        let _second = counts.open(a).unwrap();
        assert_eq!(counts.open(a).unwrap_err(), Refused::Address);
        assert!(counts.open(ip("192.0.2.2")).is_ok());
        counts.close(first);
        assert_eq!(counts.open_from(a), 1);
        assert!(counts.open(a).is_ok());
        let local: Vec<_> = (0..10).map(|_| counts.open(ip("127.0.0.1"))).collect();
        assert!(local.iter().all(Result::is_ok));
        assert_eq!(counts.open_from(ip("127.0.0.1")), 0);
        // Two from a, one from b, ten from loopback.
        assert_eq!(counts.open_in_all(), 13);
    }

    #[test]
    fn the_node_refuses_connections_past_its_total_and_takes_them_again_when_some_close() {
        let counts = ConnectionCounts::new(3, 2, false);
        let opened: Vec<_> = ["192.0.2.1", "192.0.2.2", "127.0.0.1"]
            .iter()
            .map(|a| counts.open(ip(a)).unwrap())
            .collect();
        assert_eq!(counts.open(ip("192.0.2.3")).unwrap_err(), Refused::Full);
        assert_eq!(counts.open(ip("127.0.0.1")).unwrap_err(), Refused::Full);
        // A refusal for the total counts nothing for the address.
        assert_eq!(counts.open_from(ip("192.0.2.3")), 0);
        counts.close(opened[0]);
        assert_eq!(counts.open_from(ip("192.0.2.1")), 0);
        assert!(counts.open(ip("192.0.2.3")).is_ok());
        assert_eq!(counts.open_in_all(), 3);
    }

    #[test]
    fn a_refusal_for_the_address_gives_its_place_in_the_total_back() {
        let counts = ConnectionCounts::new(2, 1, false);
        let _a = counts.open(ip("192.0.2.1")).unwrap();
        assert_eq!(counts.open(ip("192.0.2.1")).unwrap_err(), Refused::Address);
        assert_eq!(counts.open_in_all(), 1);
        assert!(counts.open(ip("192.0.2.2")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_bad_cookies_is_logged_once_per_period_with_a_count() {
        let l = LogLimiter::new(Duration::from_secs(60));
        let a = ip("192.0.2.1");
        assert_eq!(l.should_log(a), Some(0));
        for _ in 0..999 {
            assert_eq!(l.should_log(a), None);
        }
        assert_eq!(l.should_log(ip("192.0.2.2")), Some(0));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(l.should_log(a), Some(999));
    }
}
