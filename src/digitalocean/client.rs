//! The typed async DigitalOcean client.
//!
//! # POST safety
//!
//! Droplet actions are not idempotent and DigitalOcean has no idempotency key, so a
//! blindly retried POST can run an action twice (godo and azure-core do exactly that).
//! This client re-sends a POST only when it is *certain* the first attempt was not
//! applied: the connection was never established (connect refused, DNS, TLS), the
//! local rate budget held it back, or DigitalOcean answered 429. Everything else goes
//! back to the caller as a [`PostError`] whose [`Applied`] says whether the action may
//! have started: a timeout or connection loss after the request was written, a 5xx, or
//! a 2xx whose body cannot be read are [`Applied::Ambiguous`]; the caller must look at
//! the droplet's actions before trying again. Any 4xx is [`Applied::NotApplied`].
//!
//! GETs are safe to repeat and are retried on 429, 5xx and transport errors with capped,
//! jittered exponential backoff ([`RetryPolicy`]).
//!
//! # Rate budget
//!
//! Every request first reserves a slot in the shared [`RateBudget`] of its token (see
//! the `ratelimit` module). If the wait would exceed [`ClientConfig::max_budget_wait`]
//! the call fails fast with [`ErrorKind::RateLimited`] and a `retry_after`, so that a
//! reconciler requeues instead of holding a worker.
//!
//! Logs (`tracing` at debug) name the token only by its fingerprint.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use rand::Rng;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::{Applied, DoError, ErrorKind, PostError};
use super::ratelimit::{self, BudgetSnapshot, RateBudget, RateLimits};
use super::request::ActionRequest;
use super::token::Token;
use super::types::{Action, Droplet, Links, Meta, Page, Snapshot, next_page_from};

/// DigitalOcean's largest page.
pub const MAX_PER_PAGE: u32 = 200;

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

/// Route templates (low-cardinality metric labels).
mod route {
    pub const POST_DROPLET_ACTION: &str = "POST /v2/droplets/{id}/actions";
    pub const POST_TAG_ACTION: &str = "POST /v2/droplets/actions?tag_name={tag}";
    pub const GET_DROPLET_ACTION: &str = "GET /v2/droplets/{id}/actions/{action_id}";
    pub const LIST_DROPLET_ACTIONS: &str = "GET /v2/droplets/{id}/actions";
    pub const GET_ACTION: &str = "GET /v2/actions/{id}";
    pub const LIST_ACTIONS: &str = "GET /v2/actions";
    pub const LIST_DROPLETS_BY_TAG: &str = "GET /v2/droplets?tag_name={tag}";
    pub const GET_DROPLET: &str = "GET /v2/droplets/{id}";
    pub const LIST_DROPLET_SNAPSHOTS: &str = "GET /v2/droplets/{id}/snapshots";
    pub const DELETE_SNAPSHOT: &str = "DELETE /v2/snapshots/{id}";
}

/// The DigitalOcean API client. Clone freely: clones share the HTTP pool, the rate
/// budget and the request counter.
#[derive(Clone)]
pub struct DoClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    cfg: ClientConfig,
    budget: RateBudget,
    requests: AtomicU64,
}

impl fmt::Debug for DoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoClient")
            .field("base_url", &self.inner.base.as_str())
            .field("requests", &self.request_count())
            .finish()
    }
}

/// What a list endpoint looks like.
struct List<'a> {
    route: &'static str,
    segments: &'a [&'a str],
    query: &'a [(&'a str, &'a str)],
    key: &'static str,
    scope_hint: &'static str,
}

/// A received response (status, headers, body).
struct Raw {
    status: u16,
    headers: HeaderMap,
    body: Result<Bytes, reqwest::Error>,
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    }
}

/// Whether the base URL may use plain http.
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            d.eq_ignore_ascii_case("localhost")
        }
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters), so
/// `env:prod` becomes `env%3Aprod` and `a b` becomes `a%20b`.
pub(crate) fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn transport_message(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "request timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else if e.is_body() || e.is_decode() {
        "failed reading the response body".to_string()
    } else {
        "request failed".to_string()
    };
    // Add the underlying causes (no URL: `without_url` is not needed since only the
    // source chain is used, which never contains request headers).
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

impl DoClient {
    /// Builds a client. Installs rustls' `ring` crypto provider as the process default
    /// if none is installed yet (reqwest is built without a provider of its own).
    pub fn new(cfg: ClientConfig) -> Result<Self, ConfigError> {
        let url = cfg.base_url.clone();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&url) => {}
            "http" => return Err(ConfigError::InsecureUrl(url.to_string())),
            _ => return Err(ConfigError::UnsupportedUrl(url.to_string())),
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(ConfigError::UnsupportedUrl(url.to_string()));
        }
        if cfg.get_retry.max_attempts == 0 || cfg.post_retry.max_attempts == 0 {
            return Err(ConfigError::Invalid("max_attempts must be at least 1"));
        }
        if cfg.max_list_pages == 0 {
            return Err(ConfigError::Invalid("max_list_pages must be at least 1"));
        }
        let mut base = url;
        base.set_query(None);
        base.set_fragment(None);

        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another installer is fine: some provider is installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("droplet-operator/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            // Never follow redirects (a 30x on POST would turn into a GET) and never
            // let reqwest re-send anything on its own.
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                budget: RateBudget::new(cfg.rate_limits),
                cfg,
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// The shared rate budget (for metrics or tests).
    pub fn rate_budget(&self) -> &RateBudget {
        &self.inner.budget
    }

    /// The remaining budget of a token.
    pub fn budget(&self, token: &Token) -> BudgetSnapshot {
        self.inner.budget.snapshot(&token.fingerprint())
    }

    /// Total HTTP requests sent by this client (and its clones).
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let q = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&q));
        }
        url
    }

    fn observe(&self, route: &'static str, class: &'static str, token: &Token) {
        if let Some(obs) = &self.inner.cfg.observer {
            obs.on_response(route, class, &self.budget(token));
        }
    }

    /// Checks the token can be sent, then waits for a slot in the token's budget, or
    /// fails with `RateLimited` when the wait would exceed `max_budget_wait`. Returns
    /// the `Authorization` header (marked sensitive, so it never shows in Debug).
    async fn reserve(&self, token: &Token, route: &'static str) -> Result<HeaderValue, DoError> {
        let fp = token.fingerprint();
        let mut auth = match HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
            Ok(v) if !token.is_empty() => v,
            _ => {
                return Err(DoError::new(
                    ErrorKind::Unauthorized,
                    "the token is empty or has characters not allowed in an HTTP header; request not sent",
                    token.expose(),
                ));
            }
        };
        auth.set_sensitive(true);
        loop {
            match self.inner.budget.try_acquire(&fp) {
                Ok(()) => return Ok(auth),
                Err(wait) if wait > self.inner.cfg.max_budget_wait => {
                    tracing::debug!(route, token = %fp, wait_ms = wait.as_millis() as u64, "rate budget exhausted");
                    self.observe(route, "error", token);
                    return Err(DoError::new(
                        ErrorKind::RateLimited,
                        "client-side rate budget for this token is exhausted; request not sent",
                        token.expose(),
                    )
                    .with_retry_after(Some(wait)));
                }
                Err(wait) => {
                    tracing::debug!(route, token = %fp, wait_ms = wait.as_millis() as u64, "waiting for rate budget");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Sends one request (after the budget allowed it).
    async fn send(
        &self,
        token: &Token,
        auth: HeaderValue,
        route: &'static str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Raw, reqwest::Error> {
        let mut req = self
            .inner
            .http
            .request(method, url)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let fp = token.fingerprint();
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                self.inner.budget.observe(&fp, &headers);
                let body = resp.bytes().await;
                tracing::debug!(route, status, token = %fp, "DigitalOcean response");
                self.observe(route, status_class(status), token);
                Ok(Raw {
                    status,
                    headers,
                    body,
                })
            }
            Err(e) => {
                tracing::debug!(route, token = %fp, connect = e.is_connect(), timeout = e.is_timeout(), "DigitalOcean request failed");
                self.observe(route, "error", token);
                Err(e)
            }
        }
    }

    /// Turns a non-2xx response into a `DoError`, blocking the budget on 429.
    fn error_from(&self, token: &Token, raw: &Raw, scope_hint: &'static str) -> DoError {
        let fp = token.fingerprint();
        let body: &[u8] = match &raw.body {
            Ok(b) => b,
            Err(_) => &[],
        };
        let header_rid = raw
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut retry_after = None;
        if raw.status == 429 {
            let wait = ratelimit::retry_after(&raw.headers)
                .or_else(|| {
                    (ratelimit::header_u64(&raw.headers, "ratelimit-remaining") == Some(0))
                        .then(|| self.inner.budget.until_reset(&fp))
                        .flatten()
                })
                .unwrap_or_else(|| self.inner.cfg.get_retry.delay(1));
            self.inner.budget.block(&fp, wait);
            retry_after = Some(wait);
        }
        DoError::from_response(
            raw.status,
            body,
            header_rid,
            retry_after,
            Some(scope_hint),
            token.expose(),
        )
    }

    fn transport_error(token: &Token, e: &reqwest::Error) -> DoError {
        let err = DoError::new(ErrorKind::Transport, transport_message(e), token.expose());
        match e.status() {
            Some(s) => err.with_status(s.as_u16()),
            None => err,
        }
    }

    /// GET with retries on 429, 5xx and transport errors; returns the 2xx body.
    async fn get_bytes(
        &self,
        token: &Token,
        route: &'static str,
        url: Url,
        scope_hint: &'static str,
    ) -> Result<(Bytes, HeaderMap), DoError> {
        self.idempotent_bytes(token, route, Method::GET, url, scope_hint)
            .await
    }

    /// An idempotent request (GET, DELETE) with retries on 429, 5xx and transport errors; returns the 2xx body.
    async fn idempotent_bytes(
        &self,
        token: &Token,
        route: &'static str,
        method: Method,
        url: Url,
        scope_hint: &'static str,
    ) -> Result<(Bytes, HeaderMap), DoError> {
        let policy = self.inner.cfg.get_retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= policy.max_attempts;
            let auth = self.reserve(token, route).await?;
            let err = match self
                .send(token, auth, route, method.clone(), url.clone(), None)
                .await
            {
                Ok(raw) if (200..300).contains(&raw.status) => match raw.body {
                    Ok(b) => return Ok((b, raw.headers)),
                    Err(e) => Self::transport_error(token, &e).with_status(raw.status),
                },
                Ok(raw) => {
                    let err = self.error_from(token, &raw, scope_hint);
                    if err.kind() == ErrorKind::RateLimited {
                        let wait = err.retry_after().unwrap_or_default();
                        if last || wait > self.inner.cfg.max_budget_wait {
                            return Err(err);
                        }
                        // The budget is blocked until `wait`; `reserve` sleeps for it.
                        continue;
                    }
                    if err.kind() != ErrorKind::Server {
                        return Err(err);
                    }
                    err
                }
                Err(e) => Self::transport_error(token, &e),
            };
            if last {
                return Err(err);
            }
            let delay = policy.delay(attempt);
            tracing::debug!(
                route,
                attempt,
                delay_ms = delay.as_millis() as u64,
                kind = err.reason(),
                "retrying GET"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        token: &Token,
        route: &'static str,
        url: Url,
        key: &'static str,
        scope_hint: &'static str,
    ) -> Result<T, DoError> {
        let (body, headers) = self.get_bytes(token, route, url, scope_hint).await?;
        decode_key::<T>(&body, key).map_err(|m| decode_error(token, m, &headers))
    }

    async fn get_page<T: DeserializeOwned>(
        &self,
        token: &Token,
        list: &List<'_>,
        page: u32,
        per_page: u32,
    ) -> Result<Page<T>, DoError> {
        let page = page.max(1);
        let per_page = per_page.clamp(1, MAX_PER_PAGE);
        let page_s = page.to_string();
        let per_page_s = per_page.to_string();
        let mut query: Vec<(&str, &str)> = list.query.to_vec();
        query.push(("page", &page_s));
        query.push(("per_page", &per_page_s));
        let url = self.url(list.segments, &query);
        let (body, headers) = self
            .get_bytes(token, list.route, url, list.scope_hint)
            .await?;
        decode_page::<T>(&body, list.key, page).map_err(|m| decode_error(token, m, &headers))
    }

    async fn get_all<T: DeserializeOwned>(
        &self,
        token: &Token,
        list: &List<'_>,
        max_pages: u32,
    ) -> Result<Vec<T>, DoError> {
        let mut items = Vec::new();
        let mut page = 1;
        for _ in 0..max_pages.max(1) {
            let p: Page<T> = self.get_page(token, list, page, MAX_PER_PAGE).await?;
            let empty = p.items.is_empty();
            items.extend(p.items);
            match p.next_page {
                Some(n) if !empty => page = n,
                _ => return Ok(items),
            }
        }
        tracing::debug!(route = list.route, max_pages, "stopped paging at max_pages");
        Ok(items)
    }

    /// POST with the safety rule from the module docs.
    async fn post(
        &self,
        token: &Token,
        route: &'static str,
        url: Url,
        body: &serde_json::Value,
        scope_hint: &'static str,
    ) -> Result<(Bytes, HeaderMap), PostError> {
        let policy = self.inner.cfg.post_retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= policy.max_attempts;
            let auth = self
                .reserve(token, route)
                .await
                .map_err(PostError::not_applied)?;
            match self
                .send(token, auth, route, Method::POST, url.clone(), Some(body))
                .await
            {
                Ok(raw) if (200..300).contains(&raw.status) => match raw.body {
                    Ok(b) => return Ok((b, raw.headers)),
                    Err(e) => {
                        return Err(PostError::ambiguous(
                            Self::transport_error(token, &e).with_status(raw.status),
                        ));
                    }
                },
                Ok(raw) => {
                    let err = self.error_from(token, &raw, scope_hint);
                    if (400..500).contains(&raw.status) {
                        // DigitalOcean rejected it: certainly not applied. Only a 429
                        // is worth re-sending, after the wait it asked for.
                        let wait = err.retry_after().unwrap_or_default();
                        if err.kind() == ErrorKind::RateLimited
                            && !last
                            && wait <= self.inner.cfg.max_budget_wait
                        {
                            tracing::debug!(
                                route,
                                attempt,
                                "POST got 429; re-sending after retry-after"
                            );
                            continue;
                        }
                        return Err(PostError::not_applied(err));
                    }
                    // 5xx (or anything unexpected): the action may have started.
                    return Err(PostError::ambiguous(err));
                }
                Err(e) => {
                    let err = Self::transport_error(token, &e);
                    if !e.is_connect() {
                        // The request may have been written: never re-send.
                        return Err(PostError::ambiguous(err));
                    }
                    if last {
                        return Err(PostError::not_applied(err));
                    }
                    let delay = policy.delay(attempt);
                    tracing::debug!(
                        route,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "POST could not connect; re-sending"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn invalid_request(token: &Token, e: impl fmt::Display) -> PostError {
        PostError::not_applied(DoError::new(
            ErrorKind::Invalid,
            format!("request not sent: {e}"),
            token.expose(),
        ))
    }

    /// `POST /v2/droplets/{id}/actions`. See the module docs for the POST-safety rule.
    pub async fn post_droplet_action(
        &self,
        token: &Token,
        droplet_id: i64,
        req: &ActionRequest,
    ) -> Result<Action, PostError> {
        req.validate()
            .map_err(|e| Self::invalid_request(token, e))?;
        if droplet_id < 1 {
            return Err(Self::invalid_request(token, "droplet id must be >= 1"));
        }
        let id = droplet_id.to_string();
        let url = self.url(&["v2", "droplets", &id, "actions"], &[]);
        let (body, headers) = self
            .post(
                token,
                route::POST_DROPLET_ACTION,
                url,
                &req.body(),
                req.scope_hint(),
            )
            .await?;
        decode_key::<Action>(&body, "action")
            .map_err(|m| PostError::ambiguous(decode_error(token, m, &headers)))
    }

    /// `POST /v2/droplets/actions?tag_name=` (the tag is percent-encoded). Returns one
    /// action per tagged droplet.
    pub async fn post_tag_action(
        &self,
        token: &Token,
        tag: &str,
        req: &ActionRequest,
    ) -> Result<Vec<Action>, PostError> {
        let body = req
            .tag_body()
            .map_err(|e| Self::invalid_request(token, e))?;
        req.validate()
            .map_err(|e| Self::invalid_request(token, e))?;
        if tag.is_empty() {
            // Without tag_name the endpoint's behaviour is undocumented: never send it.
            return Err(Self::invalid_request(token, "tag must not be empty"));
        }
        let url = self.url(&["v2", "droplets", "actions"], &[("tag_name", tag)]);
        let (bytes, headers) = self
            .post(
                token,
                route::POST_TAG_ACTION,
                url,
                &body,
                req.tag_scope_hint(),
            )
            .await?;
        decode_key::<Vec<Action>>(&bytes, "actions")
            .map_err(|m| PostError::ambiguous(decode_error(token, m, &headers)))
    }

    /// `GET /v2/droplets/{id}/actions/{action_id}`.
    pub async fn get_droplet_action(
        &self,
        token: &Token,
        droplet_id: i64,
        action_id: i64,
    ) -> Result<Action, DoError> {
        let (d, a) = (droplet_id.to_string(), action_id.to_string());
        let url = self.url(&["v2", "droplets", &d, "actions", &a], &[]);
        self.get_json(
            token,
            route::GET_DROPLET_ACTION,
            url,
            "action",
            "droplet:read",
        )
        .await
    }

    /// `GET /v2/droplets/{id}/actions?page=&per_page=` (per_page clamped to 1..=200).
    pub async fn list_droplet_actions(
        &self,
        token: &Token,
        droplet_id: i64,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Action>, DoError> {
        let d = droplet_id.to_string();
        self.get_page(
            token,
            &List {
                route: route::LIST_DROPLET_ACTIONS,
                segments: &["v2", "droplets", &d, "actions"],
                query: &[],
                key: "actions",
                scope_hint: "droplet:read",
            },
            page,
            per_page,
        )
        .await
    }

    /// Every page of a droplet's actions (200 per page), at most `max_pages` pages.
    pub async fn list_all_droplet_actions(
        &self,
        token: &Token,
        droplet_id: i64,
        max_pages: u32,
    ) -> Result<Vec<Action>, DoError> {
        let d = droplet_id.to_string();
        self.get_all(
            token,
            &List {
                route: route::LIST_DROPLET_ACTIONS,
                segments: &["v2", "droplets", &d, "actions"],
                query: &[],
                key: "actions",
                scope_hint: "droplet:read",
            },
            max_pages,
        )
        .await
    }

    /// `GET /v2/actions/{id}` (needs `actions:read`).
    pub async fn get_action(&self, token: &Token, action_id: i64) -> Result<Action, DoError> {
        let a = action_id.to_string();
        let url = self.url(&["v2", "actions", &a], &[]);
        self.get_json(token, route::GET_ACTION, url, "action", "actions:read")
            .await
    }

    /// `GET /v2/actions?page=&per_page=` (needs `actions:read`).
    pub async fn list_actions(
        &self,
        token: &Token,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Action>, DoError> {
        self.get_page(
            token,
            &List {
                route: route::LIST_ACTIONS,
                segments: &["v2", "actions"],
                query: &[],
                key: "actions",
                scope_hint: "actions:read",
            },
            page,
            per_page,
        )
        .await
    }

    /// Every droplet with `tag` (all pages, 200 per page, at most `max_list_pages`).
    pub async fn list_droplets_by_tag(
        &self,
        token: &Token,
        tag: &str,
    ) -> Result<Vec<Droplet>, DoError> {
        if tag.is_empty() {
            return Err(DoError::new(
                ErrorKind::Invalid,
                "request not sent: tag must not be empty",
                token.expose(),
            ));
        }
        self.get_all(
            token,
            &List {
                route: route::LIST_DROPLETS_BY_TAG,
                segments: &["v2", "droplets"],
                query: &[("tag_name", tag)],
                key: "droplets",
                scope_hint: "tag:read",
            },
            self.inner.cfg.max_list_pages,
        )
        .await
    }

    /// One page of droplets with `tag`.
    pub async fn list_droplets_by_tag_page(
        &self,
        token: &Token,
        tag: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Droplet>, DoError> {
        self.get_page(
            token,
            &List {
                route: route::LIST_DROPLETS_BY_TAG,
                segments: &["v2", "droplets"],
                query: &[("tag_name", tag)],
                key: "droplets",
                scope_hint: "tag:read",
            },
            page,
            per_page,
        )
        .await
    }

    /// `GET /v2/droplets/{id}`.
    pub async fn get_droplet(&self, token: &Token, droplet_id: i64) -> Result<Droplet, DoError> {
        let d = droplet_id.to_string();
        let url = self.url(&["v2", "droplets", &d], &[]);
        self.get_json(token, route::GET_DROPLET, url, "droplet", "droplet:read")
            .await
    }

    /// `GET /v2/droplets/{id}/snapshots?page=&per_page=`: find a snapshot's image ID
    /// (match `created_at` with the snapshot action's `started_at`).
    pub async fn list_droplet_snapshots(
        &self,
        token: &Token,
        droplet_id: i64,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Snapshot>, DoError> {
        let d = droplet_id.to_string();
        self.get_page(
            token,
            &List {
                route: route::LIST_DROPLET_SNAPSHOTS,
                segments: &["v2", "droplets", &d, "snapshots"],
                query: &[],
                key: "snapshots",
                scope_hint: "image:read",
            },
            page,
            per_page,
        )
        .await
    }

    /// Every page of a droplet's snapshots, at most `max_pages` pages.
    pub async fn list_all_droplet_snapshots(
        &self,
        token: &Token,
        droplet_id: i64,
        max_pages: u32,
    ) -> Result<Vec<Snapshot>, DoError> {
        let d = droplet_id.to_string();
        self.get_all(
            token,
            &List {
                route: route::LIST_DROPLET_SNAPSHOTS,
                segments: &["v2", "droplets", &d, "snapshots"],
                query: &[],
                key: "snapshots",
                scope_hint: "image:read",
            },
            max_pages,
        )
        .await
    }
}

impl DoClient {
    /// `DELETE /v2/snapshots/{id}` (204; scope `image:delete`). A snapshot that is already gone (404) is
    /// `Ok(false)`: deleting is idempotent, so it is retried like a GET on 429, 5xx and network errors.
    pub async fn delete_snapshot(&self, token: &Token, snapshot_id: i64) -> Result<bool, DoError> {
        let id = snapshot_id.to_string();
        let url = self.url(&["v2", "snapshots", &id], &[]);
        match self
            .idempotent_bytes(
                token,
                route::DELETE_SNAPSHOT,
                Method::DELETE,
                url,
                "image:delete",
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn decode_error(token: &Token, message: String, headers: &HeaderMap) -> DoError {
    let rid = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    DoError::new(ErrorKind::Decode, message, token.expose()).with_request_id(rid)
}

/// Decodes `{"<key>": T, ...}`.
fn decode_key<T: DeserializeOwned>(body: &[u8], key: &str) -> Result<T, String> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| format!("response body is not a JSON object: {e}"))?;
    let inner = v
        .remove(key)
        .ok_or_else(|| format!("response body has no `{key}`"))?;
    serde_json::from_value(inner).map_err(|e| format!("cannot decode `{key}`: {e}"))
}

/// Decodes `{"<key>": [T], "links": {...}, "meta": {...}}`.
fn decode_page<T: DeserializeOwned>(body: &[u8], key: &str, page: u32) -> Result<Page<T>, String> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| format!("response body is not a JSON object: {e}"))?;
    let items = match v.remove(key) {
        Some(serde_json::Value::Null) => Vec::new(),
        Some(inner) => {
            serde_json::from_value(inner).map_err(|e| format!("cannot decode `{key}`: {e}"))?
        }
        None => return Err(format!("response body has no `{key}`")),
    };
    let links: Option<Links> = v
        .remove("links")
        .and_then(|l| serde_json::from_value(l).ok());
    let meta: Option<Meta> = v
        .remove("meta")
        .and_then(|m| serde_json::from_value(m).ok());
    Ok(Page {
        items,
        total: meta.and_then(|m| m.total),
        next_page: next_page_from(links.as_ref(), page),
    })
}

impl From<PostError> for DoError {
    fn from(e: PostError) -> Self {
        e.error
    }
}

impl PostError {
    /// Whether the action certainly did not start.
    pub fn is_not_applied(&self) -> bool {
        self.applied == Applied::NotApplied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> ClientConfig {
        ClientConfig {
            base_url: Url::parse(url).unwrap(),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn http_only_for_loopback() {
        for ok in [
            "https://api.digitalocean.com",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9000/",
            "http://localhost:1234/prefix/",
            "http://LOCALHOST",
        ] {
            assert!(DoClient::new(cfg(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.digitalocean.com",
            "http://10.0.0.1",
            "http://localhost.evil.com",
            "http://[::2]",
        ] {
            assert!(
                matches!(DoClient::new(cfg(bad)), Err(ConfigError::InsecureUrl(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            DoClient::new(cfg("ftp://example.com")),
            Err(ConfigError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn urls_keep_prefix_and_encode_tags() {
        let c = DoClient::new(cfg("http://127.0.0.1:1/proxy")).unwrap();
        assert_eq!(
            c.url(&["v2", "droplets", "5", "actions"], &[]).as_str(),
            "http://127.0.0.1:1/proxy/v2/droplets/5/actions"
        );
        let c = DoClient::new(ClientConfig::default()).unwrap();
        assert_eq!(
            c.url(
                &["v2", "droplets", "actions"],
                &[("tag_name", "env:prod a/b&c=d+")]
            )
            .as_str(),
            "https://api.digitalocean.com/v2/droplets/actions?tag_name=env%3Aprod%20a%2Fb%26c%3Dd%2B"
        );
    }

    #[test]
    fn retry_delay_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
        };
        for attempt in 1..12 {
            let d = p.delay(attempt);
            let full = (Duration::from_millis(100) * 2u32.pow((attempt - 1).min(20)))
                .min(Duration::from_millis(800));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn page_decoding() {
        let p: Page<Action> = decode_page(
            br#"{"actions":[{"id":1,"status":"completed","type":"reboot"}],"links":{},"meta":{"total":1}}"#,
            "actions",
            1,
        )
        .unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.total, Some(1));
        assert_eq!(p.next_page, None);
        assert!(decode_page::<Action>(b"{}", "actions", 1).is_err());
        assert!(decode_key::<Action>(b"not json", "action").is_err());
    }
}
