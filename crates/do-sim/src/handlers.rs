//! `/v2` endpoint handlers. Authentication, rate limits, injected faults and
//! common headers are handled by the middleware in `server.rs`; handlers check
//! scopes, validate and act on the state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use url::Url;

use super::catalog;
use super::model::{BLOCKING_EVENTS, Initiation, PENDING_EVENT, SimAction, StateError};
use super::server::{ApiError, Ctx, Shared};
use super::validate::parse_action;
use super::wire::{self, Links, Meta};

type ApiResult = Result<Response, ApiError>;

/// Default and maximum `per_page`. Larger values are clamped to the maximum
/// (values below 1, or non-integers, are a 422).
pub const DEFAULT_PER_PAGE: usize = 20;
pub const MAX_PER_PAGE: usize = 200;

fn parse_query(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn query_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, Copy)]
struct Page {
    page: usize,
    per_page: usize,
}

impl Page {
    fn offset(&self) -> usize {
        (self.page - 1).saturating_mul(self.per_page)
    }
}

fn page_params(q: &[(String, String)]) -> Result<Page, ApiError> {
    let num = |key: &str, default: usize| -> Result<usize, ApiError> {
        match query_get(q, key) {
            None | Some("") => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(ApiError::unprocessable(format!(
                    "{key} must be an integer greater than or equal to 1"
                ))),
            },
        }
    };
    Ok(Page {
        page: num("page", 1)?,
        per_page: num("per_page", DEFAULT_PER_PAGE)?.min(MAX_PER_PAGE),
    })
}

/// `links.pages` with absolute URLs, only the relevant keys; empty when one
/// page holds everything.
fn links(base: &Url, path: &str, q: &[(String, String)], p: Page, total: usize) -> Links {
    let last = total.div_ceil(p.per_page).max(1);
    if last <= 1 && p.page <= 1 {
        return Links::default();
    }
    let url_for = |page: usize| {
        let mut u = base.clone();
        u.set_path(path);
        {
            let mut pairs = u.query_pairs_mut();
            for (k, v) in q.iter().filter(|(k, _)| k != "page" && k != "per_page") {
                pairs.append_pair(k, v);
            }
            pairs.append_pair("page", &page.to_string());
            pairs.append_pair("per_page", &p.per_page.to_string());
        }
        u.to_string()
    };
    let mut pages = BTreeMap::new();
    if p.page > 1 {
        pages.insert("first", url_for(1));
        pages.insert("prev", url_for((p.page - 1).min(last)));
    }
    if p.page < last {
        pages.insert("next", url_for(p.page + 1));
        pages.insert("last", url_for(last));
    }
    Links { pages: Some(pages) }
}

fn list_body(key: &str, items: Value, links: Links, total: usize) -> Response {
    let mut body = serde_json::Map::new();
    body.insert(key.to_string(), items);
    body.insert("links".into(), json!(links));
    body.insert("meta".into(), json!(Meta { total }));
    Json(Value::Object(body)).into_response()
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    match s.parse::<i64>() {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(ApiError::not_found()),
    }
}

fn state_err(e: StateError) -> ApiError {
    match e {
        StateError::NotFound => ApiError::not_found(),
        StateError::Unprocessable(m) => ApiError::unprocessable(m),
    }
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::bad_request("error parsing request body"))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn get_droplet(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    ctx.require(&["droplet:read"])?;
    let id = parse_id(&id)?;
    ctx.note_droplet(id);
    let g = sh.lock();
    let d = g.state.droplet(id).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "droplet": wire::droplet(&g.state, d) })).into_response())
}

pub async fn list_droplets(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    ctx.require(&["droplet:read"])?;
    let q = parse_query(&raw);
    let p = page_params(&q)?;
    let tag = query_get(&q, "tag_name").filter(|t| !t.is_empty());
    let name = query_get(&q, "name").filter(|t| !t.is_empty());
    if tag.is_some() {
        ctx.require(&["tag:read"])?;
        if name.is_some() {
            return Err(ApiError::unprocessable(
                "tag_name cannot be combined with name",
            ));
        }
    }
    let g = sh.lock();
    let st = &g.state;
    let (items, total) = match (tag, name) {
        (Some(tag), _) => (
            st.tagged_page(tag, p.offset(), p.per_page),
            st.tagged_count(tag),
        ),
        (None, Some(name)) => {
            let all = st.droplets_named(name);
            let total = all.len();
            (
                all.into_iter().skip(p.offset()).take(p.per_page).collect(),
                total,
            )
        }
        (None, None) => (st.droplets_page(p.offset(), p.per_page), st.droplet_count()),
    };
    let items: Vec<_> = items.into_iter().map(|d| wire::droplet(st, d)).collect();
    let links = links(&sh.base_url, "/v2/droplets", &q, p, total);
    Ok(list_body("droplets", json!(items), links, total))
}

pub async fn post_action(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    ctx.require(&["droplet:update"])?;
    let id = parse_id(&id)?;
    ctx.note_droplet(id);
    let body = parse_json(&body)?;
    if let Some(t) = body.get("type").and_then(Value::as_str) {
        ctx.note_type(t);
    }
    if sh.lock().state.droplet(id).is_none() {
        return Err(ApiError::not_found());
    }
    let req = parse_action(&body, false).map_err(ApiError::unprocessable)?;
    ctx.require(catalog::extra_scopes(&req.type_))?;
    let seq = ctx.seq;
    // The lock is held in this block only (it must not live across an await).
    let late = {
        let mut g = sh.lock();
        g.state.check_action(id, &req).map_err(state_err)?;
        if g.state.is_pending(id) {
            return Err(ApiError::unprocessable(PENDING_EVENT));
        }
        let fate = g.faults.fate(id, &req.type_);
        match g.faults.late_commit() {
            Some(delay) => (delay, g.faults.late_commit_drops(), req, fate),
            None => {
                let action = g
                    .state
                    .create_action(id, req, Initiation::Single, fate, Some(seq), Instant::now())
                    .ok_or_else(ApiError::not_found)?;
                ctx.note_applied(id, action.id);
                return Ok((
                    StatusCode::CREATED,
                    Json(json!({ "action": wire::Action::from(&action) })),
                )
                    .into_response());
            }
        }
    };
    let (delay, drops, req, fate) = late;
    let applied = apply_late(&sh, &ctx, delay, move |st, now| {
        st.create_action(id, req, Initiation::Single, fate, Some(seq), now)
            .into_iter()
            .collect()
    })
    .await;
    late_response(&ctx, drops, applied, |a| json!({ "action": a[0] }))
}

/// The late-commit fault: `apply` runs `delay` from now in a task of its own,
/// so it happens whether or not the client is still waiting (a client that
/// timed out drops this handler, not the task). The task also marks the
/// request's log entry as applied. Returns the applied actions, once applied.
async fn apply_late(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    delay: Duration,
    apply: impl FnOnce(&mut crate::state::State, Instant) -> Vec<SimAction> + Send + 'static,
) -> Vec<SimAction> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sh = sh.clone();
    let seq = ctx.seq;
    ctx.note_late();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut g = sh.lock();
        let actions = apply(&mut g.state, Instant::now());
        g.mark_applied_late(seq, &actions);
        drop(g);
        let _ = tx.send(actions);
    });
    rx.await.unwrap_or_default()
}

/// The answer to a late-committed POST whose client is still there: the
/// response, or a dropped connection.
fn late_response(
    ctx: &Ctx,
    drops: bool,
    applied: Vec<SimAction>,
    body: impl FnOnce(&[wire::Action]) -> Value,
) -> ApiResult {
    if applied.is_empty() {
        return Err(ApiError::not_found());
    }
    for a in &applied {
        ctx.note_applied(a.droplet_id, a.id);
    }
    if drops {
        ctx.force_drop();
    }
    let wire: Vec<wire::Action> = applied.iter().map(wire::Action::from).collect();
    Ok((StatusCode::CREATED, Json(body(&wire))).into_response())
}

pub async fn post_by_tag(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    ctx.require(&["droplet:update", "tag:read"])?;
    let q = parse_query(&raw);
    let tag = query_get(&q, "tag_name")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unprocessable("tag_name is required"))?
        .to_string();
    let body = parse_json(&body)?;
    if let Some(t) = body.get("type").and_then(Value::as_str) {
        ctx.note_type(t);
    }
    let req = parse_action(&body, true).map_err(ApiError::unprocessable)?;
    ctx.require(catalog::extra_scopes(&req.type_))?;
    let seq = ctx.seq;
    // The lock is held in this block only (it must not live across an await).
    let (delay, drops, create) = {
        let mut g = sh.lock();
        let ids: Vec<i64> = g
            .state
            .tagged_page(&tag, 0, usize::MAX)
            .into_iter()
            .map(|d| d.id)
            .collect();
        if ids.iter().any(|id| g.state.is_pending(*id)) {
            return Err(ApiError::unprocessable(BLOCKING_EVENTS));
        }
        let any = !ids.is_empty();
        let fates: Vec<_> = ids
            .iter()
            .map(|id| (*id, g.faults.fate(*id, &req.type_)))
            .collect();
        let create = move |st: &mut crate::state::State, now: Instant| -> Vec<SimAction> {
            fates
                .into_iter()
                .filter_map(|(id, fate)| {
                    let initiated = Initiation::ByTag { tag: tag.clone() };
                    st.create_action(id, req.clone(), initiated, fate, Some(seq), now)
                })
                .collect()
        };
        match any.then(|| g.faults.late_commit()).flatten() {
            Some(delay) => (delay, g.faults.late_commit_drops(), create),
            None => {
                let applied = create(&mut g.state, Instant::now());
                for a in &applied {
                    ctx.note_applied(a.droplet_id, a.id);
                }
                let actions: Vec<wire::Action> = applied.iter().map(wire::Action::from).collect();
                return Ok(
                    (StatusCode::CREATED, Json(json!({ "actions": actions }))).into_response()
                );
            }
        }
    };
    let applied = apply_late(&sh, &ctx, delay, create).await;
    late_response(&ctx, drops, applied, |a| json!({ "actions": a }))
}

pub async fn list_droplet_actions(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    ctx.require(&["droplet:read"])?;
    let id = parse_id(&id)?;
    ctx.note_droplet(id);
    let q = parse_query(&raw);
    let p = page_params(&q)?;
    let g = sh.lock();
    if g.state.droplet(id).is_none() {
        return Err(ApiError::not_found());
    }
    let cutoff = g.list_cutoff_ms();
    let total = g.state.droplet_action_count(id, cutoff);
    let items: Vec<_> = g
        .state
        .droplet_actions_page(id, cutoff, p.offset(), p.per_page)
        .into_iter()
        .map(wire::Action::from)
        .collect();
    drop(g);
    let path = format!("/v2/droplets/{id}/actions");
    let links = links(&sh.base_url, &path, &q, p, total);
    Ok(list_body("actions", json!(items), links, total))
}

pub async fn get_droplet_action(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path((id, action_id)): Path<(String, String)>,
) -> ApiResult {
    ctx.require(&["droplet:read"])?;
    let id = parse_id(&id)?;
    ctx.note_droplet(id);
    let action_id = parse_id(&action_id)?;
    let g = sh.lock();
    let a = g
        .state
        .action(action_id)
        .filter(|a| a.droplet_id == id)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "action": wire::Action::from(a) })).into_response())
}

pub async fn list_actions(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    ctx.require(&["actions:read"])?;
    let q = parse_query(&raw);
    let p = page_params(&q)?;
    let g = sh.lock();
    let total = g.state.visible_action_count(g.list_cutoff_ms());
    let items: Vec<_> = g
        .state
        .actions_page(total, p.offset(), p.per_page)
        .into_iter()
        .map(wire::Action::from)
        .collect();
    drop(g);
    let links = links(&sh.base_url, "/v2/actions", &q, p, total);
    Ok(list_body("actions", json!(items), links, total))
}

pub async fn get_action(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    ctx.require(&["actions:read"])?;
    let id = parse_id(&id)?;
    let g = sh.lock();
    let a = g.state.action(id).ok_or_else(ApiError::not_found)?;
    ctx.note_droplet(a.droplet_id);
    Ok(Json(json!({ "action": wire::Action::from(a) })).into_response())
}

async fn list_images(
    sh: Arc<Shared>,
    ctx: Ctx,
    id: String,
    raw: Option<String>,
    snapshots: bool,
) -> ApiResult {
    ctx.require(&["droplet:read"])?;
    let id = parse_id(&id)?;
    ctx.note_droplet(id);
    let q = parse_query(&raw);
    let p = page_params(&q)?;
    let g = sh.lock();
    let d = g.state.droplet(id).ok_or_else(ApiError::not_found)?;
    let ids = if snapshots {
        &d.snapshot_ids
    } else {
        &d.backup_ids
    };
    let total = ids.len();
    let items: Vec<_> = ids
        .iter()
        .skip(p.offset())
        .take(p.per_page)
        .filter_map(|i| g.state.image(*i))
        .map(wire::Snapshot::from)
        .collect();
    drop(g);
    let (key, path) = if snapshots {
        ("snapshots", format!("/v2/droplets/{id}/snapshots"))
    } else {
        ("backups", format!("/v2/droplets/{id}/backups"))
    };
    let links = links(&sh.base_url, &path, &q, p, total);
    Ok(list_body(key, json!(items), links, total))
}

pub async fn list_snapshots(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    list_images(sh, ctx, id, raw, true).await
}

pub async fn list_backups(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    list_images(sh, ctx, id, raw, false).await
}

/// `DELETE /v2/snapshots/{id}`: 204, or 404 when there is no such snapshot. Scope `image:delete`.
pub async fn delete_snapshot(
    AxState(sh): AxState<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult {
    ctx.require(&["image:delete"])?;
    let id = parse_id(&id)?;
    let mut g = sh.lock();
    if g.state.delete_snapshot(id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found())
    }
}
