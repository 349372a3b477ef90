//! Sliding-window rate limits per token (DigitalOcean: 250/min and 5000/h,
//! each request counting for one full window after it was made).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Header values for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
    /// Epoch seconds when the oldest request of the hour window expires.
    pub reset: i64,
}

/// A rate-limited request: the headers and `retry-after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub headers: RateHeaders,
    pub retry_after: u64,
}

#[derive(Debug, Default)]
struct Windows {
    minute: VecDeque<Instant>,
    hour: VecDeque<Instant>,
}

impl Windows {
    fn expire(&mut self, now: Instant) {
        while self
            .minute
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            self.minute.pop_front();
        }
        while self
            .hour
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            self.hour.pop_front();
        }
    }
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    windows: HashMap<String, Windows>,
}

fn secs_until(now: Instant, oldest: Option<&Instant>, window: Duration) -> Duration {
    oldest
        .map(|t| (*t + window).saturating_duration_since(now))
        .unwrap_or_default()
}

impl RateLimiter {
    pub fn new(per_minute: Option<u32>, per_hour: Option<u32>) -> Self {
        Self {
            per_minute,
            per_hour,
            windows: HashMap::new(),
        }
    }

    fn headers(&self, w: &Windows, now: Instant, wall_now: i64) -> RateHeaders {
        let limit = u64::from(self.per_hour.or(self.per_minute).unwrap_or(5000));
        let hour_left = limit.saturating_sub(w.hour.len() as u64);
        let minute_left = self.per_minute.map_or(u64::MAX, |m| {
            u64::from(m).saturating_sub(w.minute.len() as u64)
        });
        let reset_in = secs_until(now, w.hour.front(), HOUR);
        RateHeaders {
            limit,
            remaining: if minute_left == 0 { 0 } else { hour_left },
            reset: wall_now + reset_in.as_secs() as i64 + i64::from(reset_in.subsec_nanos() > 0),
        }
    }

    /// Counts a request of `token` at `now`, or refuses it (not counted).
    pub fn check(
        &mut self,
        token: &str,
        now: Instant,
        wall_now: i64,
    ) -> Result<RateHeaders, Limited> {
        let (per_minute, per_hour) = (self.per_minute, self.per_hour);
        let mut w = self.windows.remove(token).unwrap_or_default();
        w.expire(now);
        let minute_full = per_minute.is_some_and(|m| w.minute.len() >= m as usize);
        let hour_full = per_hour.is_some_and(|h| w.hour.len() >= h as usize);
        let result = if minute_full || hour_full {
            let wait = if hour_full {
                secs_until(now, w.hour.front(), HOUR)
            } else {
                secs_until(now, w.minute.front(), MINUTE)
            };
            let mut headers = self.headers(&w, now, wall_now);
            headers.remaining = 0;
            Err(Limited {
                headers,
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            })
        } else {
            w.minute.push_back(now);
            w.hour.push_back(now);
            Ok(self.headers(&w, now, wall_now))
        };
        self.windows.insert(token.to_string(), w);
        result
    }

    /// Headers without counting (for 429s injected by faults, 401s, ...).
    pub fn peek(&mut self, token: &str, now: Instant, wall_now: i64) -> RateHeaders {
        let mut w = self.windows.remove(token).unwrap_or_default();
        w.expire(now);
        let h = self.headers(&w, now, wall_now);
        self.windows.insert(token.to_string(), w);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_limit_refuses_and_reports_retry_after() {
        let mut rl = RateLimiter::new(Some(3), Some(100));
        let t0 = Instant::now();
        for i in 0..3 {
            let h = rl
                .check("t", t0 + Duration::from_secs(i), 1000)
                .expect("allowed");
            assert_eq!(h.limit, 100);
        }
        let err = rl
            .check("t", t0 + Duration::from_secs(10), 1000)
            .expect_err("limited");
        assert_eq!(err.headers.remaining, 0);
        assert_eq!(err.retry_after, 50);
        // Other tokens are independent.
        assert!(rl.check("u", t0 + Duration::from_secs(10), 1000).is_ok());
        // After the oldest request expires, one more is allowed.
        assert!(rl.check("t", t0 + Duration::from_secs(60), 1000).is_ok());
    }

    #[test]
    fn hour_limit_counts_remaining() {
        let mut rl = RateLimiter::new(None, Some(2));
        let t0 = Instant::now();
        assert_eq!(rl.check("t", t0, 0).map(|h| h.remaining), Ok(1));
        assert_eq!(rl.check("t", t0, 0).map(|h| h.remaining), Ok(0));
        let err = rl
            .check("t", t0 + Duration::from_secs(1), 0)
            .expect_err("limited");
        assert_eq!(err.retry_after, 3599);
        assert_eq!(err.headers.reset, 3599);
    }

    #[test]
    fn off_never_limits() {
        let mut rl = RateLimiter::new(None, None);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert!(rl.check("t", t0, 0).is_ok());
        }
    }
}
