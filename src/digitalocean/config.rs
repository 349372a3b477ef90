//! Settings of the DigitalOcean client: base URL, timeouts, retry policies, rate limits, metrics hook.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use url::Url;

use super::ratelimit::{BudgetSnapshot, RateLimits};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Plain http to a non-loopback host.
    #[error(
        "refusing plain http to {0}: use https (http is allowed only for 127.0.0.0/8, ::1 and localhost)"
    )]
    InsecureUrl(String),
    /// Not an http(s) URL, or one that cannot carry a path.
    #[error("unsupported DigitalOcean API URL {0}: expected https://host[:port][/prefix]")]
    UnsupportedUrl(String),
    /// A limit or retry setting that cannot work.
    #[error("invalid client setting: {0}")]
    Invalid(&'static str),
    /// reqwest could not build the HTTP client.
    #[error("cannot build HTTP client: {0}")]
    Http(String),
}

/// Capped, jittered exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt (before jitter).
    pub base_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based): a random value in
    /// `[d/2, d]` where `d = min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let d = exp.min(self.max_delay);
        let half = d / 2;
        let nanos = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Metrics hook, called once per HTTP attempt (and once per request held back by the
/// local budget, with status class `"error"`).
pub trait RequestObserver: Send + Sync {
    /// `route` is a low-cardinality template like `"POST /v2/droplets/{id}/actions"`;
    /// `status_class` is `"2xx"`, `"3xx"`, `"4xx"`, `"5xx"` or `"error"`.
    fn on_response(&self, route: &'static str, status_class: &'static str, budget: &BudgetSnapshot);
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// `https://api.digitalocean.com` by default. Plain http only for loopback hosts.
    pub base_url: Url,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Retries for GETs (429, 5xx, transport).
    pub get_retry: RetryPolicy,
    /// Retries for POSTs, used only when nothing can have been applied (connect
    /// failure, 429). `max_attempts` counts the first attempt.
    pub post_retry: RetryPolicy,
    /// Per-token client-side limits.
    pub rate_limits: RateLimits,
    /// Longest the client waits for the rate budget (or a `retry-after`) inside one
    /// call; beyond that it returns `RateLimited` with `retry_after` set.
    pub max_budget_wait: Duration,
    /// Most pages fetched by the `list_all_*` helpers.
    pub max_list_pages: u32,
    /// Optional metrics hook.
    pub observer: Option<Arc<dyn RequestObserver>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            get_retry: RetryPolicy::default(),
            post_retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
            },
            rate_limits: RateLimits::default(),
            max_budget_wait: Duration::from_secs(60),
            max_list_pages: 100,
            observer: None,
        }
    }
}

fn default_base_url() -> Url {
    // A constant that always parses.
    Url::parse("https://api.digitalocean.com/")
        .unwrap_or_else(|e| unreachable!("constant DigitalOcean URL: {e}"))
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("get_retry", &self.get_retry)
            .field("post_retry", &self.post_retry)
            .field("rate_limits", &self.rate_limits)
            .field("max_budget_wait", &self.max_budget_wait)
            .field("max_list_pages", &self.max_list_pages)
            .field("observer", &self.observer.as_ref().map(|_| "<observer>"))
            .finish()
    }
}
