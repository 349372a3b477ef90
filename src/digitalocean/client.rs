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
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde::de::DeserializeOwned;
use url::Url;

pub use super::config::{ClientConfig, ConfigError, RequestObserver, RetryPolicy};
use super::error::{Applied, DoError, ErrorKind, PostError};
use super::ratelimit::{self, BudgetSnapshot, RateBudget};
use super::token::Token;
use super::types::{Links, Meta, Page, next_page_from};
use super::watermark::Watermarks;

/// DigitalOcean's largest page.
pub const MAX_PER_PAGE: u32 = 200;

/// A slot of a token's rate budget taken by [`DoClient::reserve_post`] for one POST. Dropping it unused wastes
/// the slot (the budget is a count of requests per window).
pub struct PostSlot {
    pub(super) auth: (HeaderValue, Instant),
    pub(super) fingerprint: String,
}

impl fmt::Debug for PostSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostSlot")
            .field("token", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Route templates (low-cardinality metric labels).
pub(super) mod route {
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
    marks: Watermarks,
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
pub(super) struct List<'a> {
    pub(super) route: &'static str,
    pub(super) segments: &'a [&'a str],
    pub(super) query: &'a [(&'a str, &'a str)],
    pub(super) key: &'static str,
    pub(super) scope_hint: &'static str,
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
                marks: Watermarks::default(),
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

    /// What this client knows of the newest action IDs (see the `watermark` module).
    pub(super) fn marks(&self) -> &Watermarks {
        &self.inner.marks
    }

    /// Records action IDs received for `token`; `current` when they include the account's newest action.
    pub(super) fn observe_actions(
        &self,
        token: &Token,
        ids: impl IntoIterator<Item = i64>,
        current: bool,
    ) {
        self.inner
            .marks
            .observe(&token.fingerprint(), ids, current, Instant::now());
    }

    /// Most pages a list call reads ([`ClientConfig::max_list_pages`]).
    pub(super) fn max_list_pages(&self) -> u32 {
        self.inner.cfg.max_list_pages
    }

    /// Total HTTP requests sent by this client (and its clones).
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    pub(super) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
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
    /// the `Authorization` header (marked sensitive, so it never shows in Debug) and the reservation's instant
    /// (for [`RateBudget::complete`]).
    pub(super) async fn reserve(
        &self,
        token: &Token,
        route: &'static str,
    ) -> Result<(HeaderValue, Instant), DoError> {
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
                Ok(reserved) => return Ok((auth, reserved)),
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
        (auth, reserved): (HeaderValue, Instant),
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
                self.inner.budget.complete(&fp, reserved);
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
                self.inner.budget.complete(&fp, reserved);
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
    pub(super) async fn idempotent_bytes(
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

    pub(super) async fn get_json<T: DeserializeOwned>(
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

    pub(super) async fn get_page<T: DeserializeOwned>(
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

    pub(super) async fn get_all<T: DeserializeOwned>(
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

    /// POST with the safety rule from the module docs. `slot`, when given, pays for the first attempt.
    pub(super) async fn post(
        &self,
        token: &Token,
        route: &'static str,
        url: Url,
        body: &serde_json::Value,
        scope_hint: &'static str,
        mut slot: Option<PostSlot>,
    ) -> Result<(Bytes, HeaderMap), PostError> {
        let policy = self.inner.cfg.post_retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= policy.max_attempts;
            let auth = match slot.take() {
                Some(s) if s.fingerprint == token.fingerprint() => s.auth,
                _ => self
                    .reserve(token, route)
                    .await
                    .map_err(PostError::not_applied)?,
            };
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
}

pub(super) fn decode_error(token: &Token, message: String, headers: &HeaderMap) -> DoError {
    let rid = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    DoError::new(ErrorKind::Decode, message, token.expose()).with_request_id(rid)
}

/// Decodes `{"<key>": T, ...}`.
pub(super) fn decode_key<T: DeserializeOwned>(body: &[u8], key: &str) -> Result<T, String> {
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
#[path = "client_tests.rs"]
mod tests;
