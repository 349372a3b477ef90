//! The `/_sim/` introspection API (no auth, no rate limit, not logged).
//!
//! - `GET /_sim/requests`: every `/v2` request received ([`RequestRecord`]s).
//! - `GET /_sim/posts?droplet_id=N`: actions initiated by POSTs for a droplet
//!   ([`super::PostRecord`]s); all droplets without `droplet_id`.
//! - `GET /_sim/state`: `{droplets, actions, images}`.
//! - `GET /_sim/faults`, `PUT /_sim/faults`: read or replace the [`Faults`] (JSON;
//!   every field optional, `latency` is written `latency_ms`).
//! - `POST /_sim/reset-log`: clears the request log and the post records.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::faults::{FaultState, Faults};
use super::server::Shared;

/// One `/v2` request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Arrival order (1-based).
    pub seq: u64,
    pub time: Timestamp,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub droplet_id: Option<i64>,
    /// The `type` of an action POST body.
    pub action_type: Option<String>,
    /// An action POST that created at least one action.
    pub applied: bool,
    pub action_ids: Vec<i64>,
    /// `server_error`, `burst_429`, `rate_limited` or `dropped_after_apply`.
    pub fault: Option<String>,
    pub request_id: String,
    #[serde(skip)]
    pub at: Option<Instant>,
}

#[derive(Debug, Deserialize)]
struct PostsQuery {
    droplet_id: Option<i64>,
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/requests", get(requests))
        .route("/_sim/posts", get(posts))
        .route("/_sim/state", get(state))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/reset-log", post(reset_log))
}

async fn requests(AxState(sh): AxState<Arc<Shared>>) -> Response {
    Json(json!({ "requests": sh.lock().log })).into_response()
}

async fn posts(AxState(sh): AxState<Arc<Shared>>, Query(q): Query<PostsQuery>) -> Response {
    let g = sh.lock();
    let posts = match q.droplet_id {
        Some(id) => g.state.posts_for(id),
        None => g.state.all_posts(),
    };
    Json(json!({ "posts": posts })).into_response()
}

async fn state(AxState(sh): AxState<Arc<Shared>>) -> Response {
    let g = sh.lock();
    Json(json!({
        "droplets": g.state.all_droplets(),
        "actions": g.state.all_actions(),
        "images": g.state.all_images(),
    }))
    .into_response()
}

async fn get_faults(AxState(sh): AxState<Arc<Shared>>) -> Response {
    Json(json!(sh.lock().faults.faults)).into_response()
}

async fn put_faults(AxState(sh): AxState<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            sh.lock().faults = FaultState::new(f.clone());
            Json(json!(f)).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"id": "bad_request", "message": e.to_string()})),
        )
            .into_response(),
    }
}

async fn reset_log(AxState(sh): AxState<Arc<Shared>>) -> StatusCode {
    let mut g = sh.lock();
    g.log.clear();
    g.state.clear_posts();
    StatusCode::NO_CONTENT
}
