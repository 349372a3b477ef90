//! HTTP plumbing: the shared state, the middleware that every `/v2` request
//! goes through (latency, auth, rate limits, injected errors, headers, request
//! log) and the router.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use url::Url;

use super::conn::ConnHandle;
use super::faults::FaultState;
use super::handlers;
use super::introspect::{self, RequestRecord};
use super::ratelimit::{RateHeaders, RateLimiter};
use super::state::State;
use super::wire::ErrorBody;

/// Everything behind one lock (never held across an `.await`).
#[derive(Debug)]
pub(crate) struct Inner {
    pub state: State,
    pub faults: FaultState,
    pub limiter: RateLimiter,
    pub log: Vec<RequestRecord>,
    pub next_seq: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// token -> scopes (`None` = full access).
    pub tokens: HashMap<String, Option<Arc<Vec<String>>>>,
    pub base_url: Url,
    /// Set on shutdown: every connection fails its next read or write.
    pub closed: Arc<AtomicBool>,
    pub shutdown_tx: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub fn new(
        inner: Inner,
        tokens: HashMap<String, Option<Arc<Vec<String>>>>,
        base_url: Url,
    ) -> Self {
        Self {
            inner: Mutex::new(inner),
            tokens,
            base_url,
            closed: Arc::new(AtomicBool::new(false)),
            shutdown_tx: tokio::sync::watch::channel(false).0,
        }
    }

    /// Locks the state and completes due actions.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.state.tick(Instant::now());
        g
    }
}

// ---- errors and per-request context ------------------------------------------

/// A DigitalOcean error response; the middleware adds `request_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub id: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            id,
            message: message.into(),
        }
    }
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you requested could not be found.",
        )
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            message,
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "You are not authorized to perform this operation",
        )
    }
    fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::bad_request("error parsing request body"),
            404 => Self::not_found(),
            405 => Self::new(status, "method_not_allowed", "Method not allowed."),
            422 => Self::unprocessable("request payload validation failed"),
            s if s >= 500 => Self::new(status, "server_error", "Unexpected server-side error"),
            _ => Self::new(status, "bad_request", "The request could not be processed."),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = status;
        resp.extensions_mut().insert(self);
        resp
    }
}

/// What a handler learned about the request, for the log and the drop fault.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub droplet_id: Option<i64>,
    pub action_type: Option<String>,
    /// (droplet id, action id) of actions created by this request.
    pub applied: Vec<(i64, i64)>,
    /// The request is being applied late (fault).
    pub late: bool,
    /// Close the connection instead of answering (late-commit fault).
    pub force_drop: bool,
}

/// Request extension set by the middleware.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub scopes: Option<Arc<Vec<String>>>,
    pub seq: u64,
    outcome: Arc<Mutex<Outcome>>,
}

impl Ctx {
    pub fn has(&self, scope: &str) -> bool {
        let Some(scopes) = &self.scopes else {
            return true;
        };
        let resource = scope.split(':').next().unwrap_or(scope);
        scopes
            .iter()
            .any(|s| s == scope || s == "*" || s.strip_suffix(":*") == Some(resource))
    }

    pub fn require(&self, scopes: &[&str]) -> Result<(), ApiError> {
        if scopes.iter().all(|s| self.has(s)) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    fn outcome(&self) -> MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn note_droplet(&self, id: i64) {
        self.outcome().droplet_id = Some(id);
    }

    pub fn note_type(&self, type_: &str) {
        self.outcome().action_type = Some(type_.to_string());
    }

    pub fn note_applied(&self, droplet_id: i64, action_id: i64) {
        self.outcome().applied.push((droplet_id, action_id));
    }

    pub fn note_late(&self) {
        self.outcome().late = true;
    }

    pub fn force_drop(&self) {
        self.outcome().force_drop = true;
    }
}

impl Inner {
    /// Action lists show only actions created up to this moment (Unix ms):
    /// the lagging-list fault.
    pub fn list_cutoff_ms(&self) -> i64 {
        let lag = i64::try_from(self.faults.faults.list_lag.as_millis()).unwrap_or(i64::MAX);
        Timestamp::now().as_millisecond().saturating_sub(lag)
    }

    fn log_entry(&mut self, seq: u64) -> Option<&mut RequestRecord> {
        let i = self.log.binary_search_by_key(&seq, |r| r.seq).ok()?;
        self.log.get_mut(i)
    }

    /// A late-committed POST was applied: its log entry says so even when the
    /// client is long gone.
    pub fn mark_applied_late(&mut self, seq: u64, actions: &[crate::model::SimAction]) {
        if let Some(r) = self.log_entry(seq) {
            r.applied |= !actions.is_empty();
            r.action_ids.extend(actions.iter().map(|a| a.id));
            r.fault.get_or_insert_with(|| "late_commit".into());
        }
    }
}

/// Marks the log entry of a request whose client went away before the answer
/// (the handler future was dropped): status 499, as nginx logs it.
struct LogGuard {
    shared: Arc<Shared>,
    seq: u64,
    done: bool,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if !self.done {
            let mut g = self.shared.lock();
            if let Some(r) = g.log_entry(self.seq) {
                r.status = 499;
                r.fault.get_or_insert_with(|| "client_gone".into());
            }
        }
    }
}

// ---- middleware ------------------------------------------------------------------

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

enum Gate {
    Go(RateHeaders),
    /// Headers, error, `retry-after`, fault label for the log.
    Reject(RateHeaders, ApiError, Option<u64>, Option<&'static str>),
}

async fn api_layer(
    AxState(sh): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    mut req: Request,
    next: Next,
) -> Response {
    let arrived = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut record = RequestRecord {
        seq: 0,
        time: Timestamp::now(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        status: 0,
        droplet_id: None,
        action_type: None,
        applied: false,
        action_ids: vec![],
        fault: None,
        request_id: request_id.clone(),
        at: Some(arrived),
    };
    let latency = {
        let mut g = sh.lock();
        g.next_seq += 1;
        record.seq = g.next_seq;
        // Logged at arrival (status 0 while in flight), so that a request whose
        // client gives up is still in the log.
        g.log.push(record.clone());
        g.faults.faults.latency
    };
    let mut guard = LogGuard {
        shared: sh.clone(),
        seq: record.seq,
        done: false,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let token = bearer(req.headers());
    let scopes = token.as_ref().and_then(|t| sh.tokens.get(t).cloned());
    let wall = Timestamp::now().as_second();
    let gate = {
        let mut g = sh.lock();
        match (&token, scopes.clone()) {
            (Some(token), Some(_)) => {
                if let Some(retry) = g.faults.take_burst_429() {
                    let mut h = g.limiter.peek(token, Instant::now(), wall);
                    h.remaining = 0;
                    Gate::Reject(h, too_many(), Some(retry), Some("burst_429"))
                } else {
                    match g.limiter.check(token, Instant::now(), wall) {
                        Err(l) => Gate::Reject(
                            l.headers,
                            too_many(),
                            Some(l.retry_after),
                            Some("rate_limited"),
                        ),
                        Ok(h) if g.faults.server_error() => Gate::Reject(
                            h,
                            ApiError::for_status(StatusCode::INTERNAL_SERVER_ERROR),
                            None,
                            Some("server_error"),
                        ),
                        Ok(h) => Gate::Go(h),
                    }
                }
            }
            _ => {
                let h = g.limiter.peek("", Instant::now(), wall);
                let err = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Unable to authenticate you.",
                );
                Gate::Reject(h, err, None, None)
            }
        }
    };

    let (resp, rate, retry_after) = match gate {
        Gate::Reject(h, err, retry, fault) => {
            record.fault = fault.map(str::to_string);
            (err.into_response(), h, retry)
        }
        Gate::Go(h) => {
            let ctx = Ctx {
                scopes: scopes.flatten(),
                seq: record.seq,
                outcome: Arc::new(Mutex::new(Outcome::default())),
            };
            req.extensions_mut().insert(ctx.clone());
            let resp = next.run(req).await;
            let outcome = std::mem::take(&mut *ctx.outcome());
            record.droplet_id = outcome.droplet_id;
            record.action_type = outcome.action_type;
            record.applied = !outcome.applied.is_empty();
            record.action_ids = outcome.applied.iter().map(|(_, a)| *a).collect();
            if outcome.late {
                record.fault = Some("late_commit".into());
            }
            let mut resp = resp;
            if record.applied {
                let mut g = sh.lock();
                if outcome.force_drop || g.faults.drop_after_apply() {
                    for (d, a) in &outcome.applied {
                        g.state.mark_dropped(*d, *a);
                    }
                    record.fault = Some("dropped_after_apply".into());
                    conn.kill();
                } else if let Some(code) = g.faults.error_after_apply() {
                    let status =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    resp = ApiError::for_status(status).into_response();
                    record.fault = Some("error_after_apply".into());
                }
            }
            (resp, h, None)
        }
    };
    let resp = finish(resp, &request_id, rate, retry_after);
    record.status = resp.status().as_u16();
    guard.done = true;
    let mut g = sh.lock();
    if let Some(entry) = g.log_entry(record.seq) {
        // A late commit may have marked the entry already.
        record.applied |= entry.applied;
        for id in &entry.action_ids {
            if !record.action_ids.contains(id) {
                record.action_ids.push(*id);
            }
        }
        *entry = record;
    }
    drop(g);
    resp
}

fn too_many() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "API rate limit exceeded.",
    )
}

/// Renders error bodies (with `request_id`) and adds the common headers.
fn finish(
    mut resp: Response,
    request_id: &str,
    rate: RateHeaders,
    retry_after: Option<u64>,
) -> Response {
    let status = resp.status();
    let err = resp.extensions_mut().remove::<ApiError>().or_else(|| {
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        (status.as_u16() >= 400 && !is_json).then(|| ApiError::for_status(status))
    });
    if let Some(err) = err {
        let body = ErrorBody {
            id: err.id,
            message: &err.message,
            request_id,
        };
        let mut new = (status, axum::Json(body)).into_response();
        std::mem::swap(new.headers_mut(), resp.headers_mut());
        new.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        resp = new;
    }
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(rate.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(rate.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(rate.reset));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/v2/droplets", get(handlers::list_droplets))
        .route("/v2/droplets/actions", post(handlers::post_by_tag))
        .route("/v2/droplets/{id}", get(handlers::get_droplet))
        .route(
            "/v2/droplets/{id}/actions",
            post(handlers::post_action).get(handlers::list_droplet_actions),
        )
        .route(
            "/v2/droplets/{id}/actions/{action_id}",
            get(handlers::get_droplet_action),
        )
        .route("/v2/droplets/{id}/snapshots", get(handlers::list_snapshots))
        .route("/v2/droplets/{id}/backups", get(handlers::list_backups))
        .route(
            "/v2/snapshots/{id}",
            axum::routing::delete(handlers::delete_snapshot),
        )
        .route("/v2/actions", get(handlers::list_actions))
        .route("/v2/actions/{id}", get(handlers::get_action))
        .fallback(handlers::not_found)
        .layer(from_fn_with_state(shared.clone(), api_layer));
    introspect::router().merge(api).with_state(shared)
}
