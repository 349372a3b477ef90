//! Per-token request budget, shared by every reconcile that uses the same token.
//!
//! DigitalOcean allows 250 requests per minute and 5,000 per hour per token (sliding
//! windows). Once either is exhausted every request gets a 429 until the window moves.
//! [`RateBudget`] keeps, for each token *fingerprint* (never the token text):
//!
//! - the send times of the last hour (an in-flight request from its reservation, a finished one from its
//!   completion: [`RateBudget::complete`]), so the client never sends more than the configured per-minute and
//!   per-hour limits on its own, as counted by the server at arrival;
//! - what DigitalOcean last said in `ratelimit-limit`, `ratelimit-remaining` and
//!   `ratelimit-reset` (headers are matched case-insensitively); a remaining of 0
//!   blocks the token until the reset time;
//! - a block set by a 429 (`retry-after`, else the reset time, else a backoff delay):
//!   no request with that token is sent until it expires.
//!
//! [`RateBudget::snapshot`] exposes the remaining budget, for metrics and so that a
//! reconciler can poll more slowly before it hits the wall.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Client-side limits per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per sliding minute (DigitalOcean: 250).
    pub per_minute: u32,
    /// Requests per sliding hour (DigitalOcean: 5,000).
    pub per_hour: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_minute: 250,
            per_hour: 5000,
        }
    }
}

/// The budget of one token at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Requests still allowed in the current sliding minute.
    pub remaining_minute: u32,
    /// Requests still allowed in the current sliding hour (the smaller of the local
    /// count and DigitalOcean's `ratelimit-remaining`, adjusted for requests sent since).
    pub remaining_hour: u32,
    /// Per-minute limit.
    pub limit_minute: u32,
    /// Per-hour limit (DigitalOcean's `ratelimit-limit` once seen, else the configured one).
    pub limit_hour: u32,
    /// No request is sent with this token before this time (after a 429 or an empty budget).
    pub blocked_until: Option<SystemTime>,
    /// DigitalOcean's `ratelimit-reset`, when seen.
    pub server_reset: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct TokenState {
    sent: VecDeque<Instant>,
    server_limit: Option<u32>,
    server_remaining: Option<u32>,
    server_reset: Option<SystemTime>,
    blocked_until: Option<Instant>,
}

impl TokenState {
    fn prune(&mut self, now: Instant) {
        while let Some(front) = self.sent.front() {
            if now.saturating_duration_since(*front) >= HOUR {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        if self.blocked_until.is_some_and(|b| b <= now) {
            self.blocked_until = None;
        }
        if self
            .server_reset
            .is_some_and(|r| r <= SystemTime::now() && self.server_remaining == Some(0))
        {
            // The oldest request expired: at least one slot is free again.
            self.server_remaining = None;
        }
    }

    fn minute_count(&self, now: Instant) -> usize {
        self.sent
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(**t) < MINUTE)
            .count()
    }

    /// How long until one more request may be sent, or zero.
    fn wait(&self, now: Instant, limits: RateLimits) -> Duration {
        let mut wait = Duration::ZERO;
        if let Some(b) = self.blocked_until {
            wait = wait.max(b.saturating_duration_since(now));
        }
        let in_minute = self.minute_count(now);
        if limits.per_minute > 0 && in_minute >= limits.per_minute as usize {
            let idx = self.sent.len() - in_minute;
            if let Some(oldest) = self.sent.get(idx) {
                wait = wait.max((*oldest + MINUTE).saturating_duration_since(now));
            }
        }
        if limits.per_hour > 0
            && self.sent.len() >= limits.per_hour as usize
            && let Some(oldest) = self.sent.front()
        {
            wait = wait.max((*oldest + HOUR).saturating_duration_since(now));
        }
        if self.server_remaining == Some(0)
            && let Some(reset) = self.server_reset
        {
            wait = wait.max(
                reset
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
        wait
    }
}

/// Shared, per-token rate budget. Cheap to clone (`Arc` inside).
#[derive(Debug, Clone)]
pub struct RateBudget {
    limits: RateLimits,
    tokens: Arc<Mutex<HashMap<String, Arc<Mutex<TokenState>>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RateBudget {
    /// A budget with these limits and no history.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    fn state(&self, fingerprint: &str) -> Arc<Mutex<TokenState>> {
        let mut map = lock(&self.tokens);
        map.entry(fingerprint.to_string()).or_default().clone()
    }

    /// Reserves one request now (returning the reservation's instant, for [`RateBudget::complete`]), or says how
    /// long to wait first.
    pub fn try_acquire(&self, fingerprint: &str) -> Result<Instant, Duration> {
        let state = self.state(fingerprint);
        let mut st = lock(&state);
        let now = Instant::now();
        st.prune(now);
        let wait = st.wait(now, self.limits);
        if wait > Duration::ZERO {
            return Err(wait);
        }
        st.sent.push_back(now);
        if let Some(r) = st.server_remaining.as_mut() {
            *r = r.saturating_sub(1);
        }
        Ok(now)
    }

    /// The request reserved at `reserved` got its response (or failed): from now on it counts as sent *now*.
    ///
    /// A request reaches DigitalOcean some time after its slot was reserved (connection set-up, a loaded machine),
    /// so counting it from the reservation lets DigitalOcean's sliding window see more than the limit: requests
    /// reserved just before a window starts arrive inside it. Counting each request from its completion, and an
    /// in-flight one from its reservation (which is before its completion, and requests time out long before a
    /// minute), bounds what arrives at DigitalOcean in any window by the limit.
    pub fn complete(&self, fingerprint: &str, reserved: Instant) {
        let state = self.state(fingerprint);
        let mut st = lock(&state);
        if let Some(i) = st.sent.iter().rposition(|t| *t == reserved) {
            st.sent.remove(i);
            // Every stamp is a past instant, so now keeps the queue in time order.
            st.sent.push_back(Instant::now());
        }
    }

    /// Learns from `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset`.
    pub fn observe(&self, fingerprint: &str, headers: &HeaderMap) {
        let limit = header_u64(headers, "ratelimit-limit");
        let remaining = header_u64(headers, "ratelimit-remaining");
        let reset = header_u64(headers, "ratelimit-reset");
        if limit.is_none() && remaining.is_none() && reset.is_none() {
            return;
        }
        let state = self.state(fingerprint);
        let mut st = lock(&state);
        if let Some(l) = limit {
            st.server_limit = Some(clamp_u32(l));
        }
        // A 429 from the burst limit (250/min) also says `ratelimit-remaining: 0`, but comes with `retry-after`;
        // its `ratelimit-reset` is about the hourly window (when the oldest request of the hour expires), so
        // waiting for it would stall the token for up to an hour. The caller blocks for `retry-after` instead.
        let burst = headers.contains_key("retry-after");
        if let Some(r) = remaining
            && !(burst && r == 0)
        {
            st.server_remaining = Some(clamp_u32(r));
        }
        if let Some(r) = reset {
            st.server_reset = Some(UNIX_EPOCH + Duration::from_secs(r));
        }
    }

    /// Blocks the token for `for_how_long` (after a 429). Never shortens a longer block.
    pub fn block(&self, fingerprint: &str, for_how_long: Duration) {
        let state = self.state(fingerprint);
        let mut st = lock(&state);
        let until = Instant::now() + for_how_long;
        if st.blocked_until.is_none_or(|b| b < until) {
            st.blocked_until = Some(until);
        }
    }

    /// How long DigitalOcean's reset header says to wait, if the budget is exhausted.
    pub fn until_reset(&self, fingerprint: &str) -> Option<Duration> {
        let state = self.state(fingerprint);
        let st = lock(&state);
        st.server_reset
            .and_then(|r| r.duration_since(SystemTime::now()).ok())
    }

    /// The remaining budget of a token.
    pub fn snapshot(&self, fingerprint: &str) -> BudgetSnapshot {
        let state = self.state(fingerprint);
        let mut st = lock(&state);
        let now = Instant::now();
        st.prune(now);
        let limit_hour = st.server_limit.unwrap_or(self.limits.per_hour);
        let local_hour = self
            .limits
            .per_hour
            .saturating_sub(clamp_u32(st.sent.len() as u64));
        let remaining_hour = match st.server_remaining {
            Some(r) => r.min(local_hour),
            None => local_hour,
        };
        let remaining_minute = self
            .limits
            .per_minute
            .saturating_sub(clamp_u32(st.minute_count(now) as u64));
        let blocked_until = st
            .blocked_until
            .map(|b| SystemTime::now() + b.saturating_duration_since(now));
        BudgetSnapshot {
            remaining_minute,
            remaining_hour,
            limit_minute: self.limits.per_minute,
            limit_hour,
            blocked_until,
            server_reset: st.server_reset,
        }
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A numeric header (HeaderMap lookups ignore case).
pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok()
}

/// `retry-after` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = raw.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = jiff::fmt::rfc2822::parse(raw).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    let d = now.duration_until(when);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn limits(m: u32, h: u32) -> RateLimits {
        RateLimits {
            per_minute: m,
            per_hour: h,
        }
    }

    #[test]
    fn a_completed_request_counts_from_its_completion() {
        let b = RateBudget::new(limits(2, 100));
        let first = b.try_acquire("fp").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let _second = b.try_acquire("fp").unwrap();
        let before = b.try_acquire("fp").unwrap_err();
        // The first request answers now: it counts from now, so the oldest stamp is the second's reservation.
        b.complete("fp", first);
        let after = b.try_acquire("fp").unwrap_err();
        assert!(
            after > before + Duration::from_millis(30),
            "{before:?} -> {after:?}"
        );
        assert_eq!(
            b.snapshot("fp").remaining_minute,
            0,
            "still two in the window"
        );
    }

    #[test]
    fn local_minute_limit_blocks() {
        let b = RateBudget::new(limits(2, 100));
        assert!(b.try_acquire("fp").is_ok());
        assert!(b.try_acquire("fp").is_ok());
        let wait = b.try_acquire("fp").unwrap_err();
        assert!(wait > Duration::from_secs(55) && wait <= MINUTE, "{wait:?}");
        assert!(b.try_acquire("other").is_ok(), "budgets are per token");
        let s = b.snapshot("fp");
        assert_eq!(s.remaining_minute, 0);
        assert_eq!(s.remaining_hour, 98);
    }

    #[test]
    fn local_hour_limit_blocks() {
        let b = RateBudget::new(limits(100, 1));
        assert!(b.try_acquire("fp").is_ok());
        let wait = b.try_acquire("fp").unwrap_err();
        assert!(wait > Duration::from_secs(3500), "{wait:?}");
    }

    #[test]
    fn learns_from_headers_any_case() {
        let b = RateBudget::new(RateLimits::default());
        let mut h = HeaderMap::new();
        h.insert("RateLimit-Limit", HeaderValue::from_static("4000"));
        h.insert("RATELIMIT-REMAINING", HeaderValue::from_static("17"));
        h.insert("ratelimit-reset", HeaderValue::from_static("4102444800"));
        b.observe("fp", &h);
        let s = b.snapshot("fp");
        assert_eq!(s.limit_hour, 4000);
        assert_eq!(s.remaining_hour, 17);
        assert!(s.server_reset.is_some());
        assert!(b.try_acquire("fp").is_ok());
        assert_eq!(b.snapshot("fp").remaining_hour, 16);
    }

    #[test]
    fn zero_remaining_waits_until_reset() {
        let b = RateBudget::new(RateLimits::default());
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", HeaderValue::from(reset));
        b.observe("fp", &h);
        let wait = b.try_acquire("fp").unwrap_err();
        assert!(wait > Duration::from_secs(25), "{wait:?}");
    }

    #[test]
    fn a_burst_429_waits_for_retry_after_not_the_hourly_reset() {
        let b = RateBudget::new(RateLimits::default());
        let in_an_hour = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3500;
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", HeaderValue::from(in_an_hour));
        h.insert("retry-after", HeaderValue::from_static("2"));
        b.observe("fp", &h);
        b.block("fp", Duration::from_secs(2));
        let wait = b.try_acquire("fp").unwrap_err();
        assert!(wait <= Duration::from_secs(2), "{wait:?}");
    }

    #[test]
    fn block_blocks_and_shows_in_snapshot() {
        let b = RateBudget::new(RateLimits::default());
        b.block("fp", Duration::from_secs(10));
        b.block("fp", Duration::from_secs(1));
        assert!(b.try_acquire("fp").unwrap_err() > Duration::from_secs(8));
        assert!(b.snapshot("fp").blocked_until.is_some());
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("Retry-After", HeaderValue::from_static("29"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(29)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
