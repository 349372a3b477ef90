//! HTTP routing: parses Kubernetes API paths, dispatches to discovery, OpenAPI and object
//! operations, renders responses, and records every request.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    response::Response,
};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    admission::Admission,
    discovery, openapi,
    ops::{ListQuery, Outcome, WriteOpts},
    resource::{Registry, ResourceInfo},
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
    store::StoreInner,
    table::{self, As},
    watch::{self as watchmod, WatchQuery},
};

/// One served request, for tests (e.g. checking calls against RBAC rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmuRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Request Content-Type.
    pub content_type: String,
    /// Request Accept.
    pub accept: String,
    /// Request User-Agent.
    pub user_agent: String,
    /// Response status code.
    pub status: u16,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection
    /// (non-resource requests: the lowercase HTTP method).
    pub verb: String,
    /// API group ("" for core) of a resource request.
    pub group: Option<String>,
    /// API version of a resource request.
    pub version: Option<String>,
    /// Plural resource of a resource request.
    pub resource: Option<String>,
    /// Subresource (e.g. `status`).
    pub subresource: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
}

impl EmuRequest {
    /// For resource requests, what an RBAC rule must allow: `(verb, apiGroup, resource)` where
    /// resource is `plural` or `plural/subresource` (e.g. `("patch", "droplet-operator.dev",
    /// "dropletactions/status")`). None for discovery, OpenAPI, health and version requests.
    pub fn rbac(&self) -> Option<(String, String, String)> {
        let resource = self.resource.as_ref()?;
        let resource = match &self.subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.clone(),
        };
        Some((
            self.verb.clone(),
            self.group.clone().unwrap_or_default(),
            resource,
        ))
    }
}

/// Shared emulator state.
pub struct Emu {
    pub(crate) reg: Registry,
    pub(crate) store: Mutex<StoreInner>,
    pub(crate) admission: Arc<dyn Admission>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) requests: Mutex<std::collections::VecDeque<EmuRequest>>,
    pub(crate) request_limit: usize,
    pub(crate) shutdown_tx: watch::Sender<bool>,
    pub(crate) shutdown_rx: watch::Receiver<bool>,
    pub(crate) addr: SocketAddr,
    /// Delay before each live watch event (a lagging informer cache; see [`crate::EmuHandle::set_watch_delay`]).
    pub(crate) watch_delay: Mutex<std::collections::HashMap<String, Duration>>,
}

impl Emu {
    pub(crate) fn new(
        reg: Registry,
        admission: Arc<dyn Admission>,
        history: usize,
        bookmark_interval: Duration,
        addr: SocketAddr,
        request_limit: usize,
    ) -> Self {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        Self {
            reg,
            store: Mutex::new(StoreInner::new(history)),
            admission,
            bookmark_interval,
            requests: Mutex::new(std::collections::VecDeque::new()),
            request_limit,
            shutdown_tx,
            shutdown_rx,
            watch_delay: Mutex::new(std::collections::HashMap::new()),
            addr,
        }
    }
}

impl Emu {
    fn log(&self, rec: EmuRequest) {
        if self.request_limit == 0 {
            return;
        }
        let mut log = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        while log.len() >= self.request_limit {
            log.pop_front();
        }
        log.push_back(rec);
    }
}

fn json_response(code: u16, body: &Value, content_type: &str, warnings: &[String]) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    resp.headers_mut().insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, private"),
    );
    for w in warnings {
        let text: String = w
            .chars()
            .map(|c| {
                if c.is_ascii() && c != '"' && !c.is_ascii_control() {
                    c
                } else {
                    '\''
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn ok_json(body: &Value) -> Response {
    json_response(200, body, "application/json", &[])
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.body, "application/json", &[])
}

fn text(code: u16, body: &'static str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-droplet-operator-emulator",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// The axum fallback handler: everything goes through here.
pub async fn handle(State(emu): State<Arc<Emu>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let h = |k: header::HeaderName| {
        parts
            .headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut rec = EmuRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        content_type: h(header::CONTENT_TYPE),
        accept: h(header::ACCEPT),
        user_agent: h(header::USER_AGENT),
        verb: parts.method.as_str().to_lowercase(),
        ..Default::default()
    };
    let body = match axum::body::to_bytes(body, 256 << 20).await {
        Ok(b) => b,
        Err(e) => {
            let resp = error_response(&ApiError::bad_request(format!("reading body: {e}")));
            rec.status = 400;
            emu.log(rec);
            return resp;
        }
    };
    let resp = route(&emu, &parts.method, &body, &mut rec);
    rec.status = resp.status().as_u16();
    tracing::debug!(method = %rec.method, path = %rec.path, query = %rec.query, status = rec.status, "kube-emu request");
    emu.log(rec);
    resp
}

fn route(emu: &Arc<Emu>, method: &Method, body: &[u8], rec: &mut EmuRequest) -> Response {
    let accept = rec.accept.clone();
    let path = rec.path.trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => return ok_json(&version_info()),
        ["healthz" | "readyz" | "livez", ..] => return text(200, "ok"),
        ["openapi", "v2"] => return error_response(&ApiError::path_not_found()),
        ["openapi", "v3"] => return ok_json(&openapi::index(&emu.reg)),
        ["openapi", "v3", "api", v] => return openapi_doc(emu, "", v),
        ["openapi", "v3", "apis", g, v] => return openapi_doc(emu, g, v),
        ["api"] | ["apis"] => {
            let core = segs[0] == "api";
            if discovery::wants_aggregated(&accept) {
                return json_response(
                    200,
                    &discovery::aggregated(&emu.reg, core),
                    discovery::AGGREGATED_CT,
                    &[],
                );
            }
            return if core {
                ok_json(&discovery::api_versions(&emu.addr.to_string()))
            } else {
                ok_json(&discovery::api_group_list(&emu.reg))
            };
        }
        ["api", v] => return opt(discovery::resource_list(&emu.reg, "", v)),
        ["apis", g] => return opt(discovery::group(&emu.reg, g)),
        ["apis", g, v] => return opt(discovery::resource_list(&emu.reg, g, v)),
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return error_response(&ApiError::path_not_found()),
    };
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if emu
                .reg
                .get(group, version, plural)
                .is_some_and(|r| r.namespaced) =>
        {
            (
                Some(ns.to_string()),
                *plural,
                tail.first().copied(),
                tail.get(1..).unwrap_or_default(),
            )
        }
        [plural, tail @ ..] => (
            None,
            *plural,
            tail.first().copied(),
            tail.get(1..).unwrap_or_default(),
        ),
        [] => return error_response(&ApiError::path_not_found()),
    };
    let Some(res) = emu.reg.get(group, version, plural) else {
        return error_response(&ApiError::path_not_found());
    };
    let sub = match sub {
        [] => None,
        [s] => Some(s.to_string()),
        _ => return error_response(&ApiError::path_not_found()),
    };
    let q: HashMap<String, String> = url::form_urlencoded::parse(rec.query.as_bytes())
        .into_owned()
        .collect();
    rec.group = Some(group.to_string());
    rec.version = Some(version.to_string());
    rec.resource = Some(plural.to_string());
    rec.subresource = sub.clone();
    rec.namespace = ns.clone();
    rec.name = name.map(String::from);
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    rec.verb = match (method.as_str(), name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if is_watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
    .to_string();
    if let Some(s) = &sub
        && (s != "status" || !res.status_subresource)
    {
        return error_response(&ApiError::path_not_found());
    }
    if res.namespaced && name.is_some() && ns.is_none() {
        return error_response(&ApiError::path_not_found());
    }
    let ns_key = if res.namespaced {
        ns.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let repr = table::negotiate(&accept);
    let ua_manager = rec
        .user_agent
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(String::from);
    // Like the real server: without fieldManager, every write except apply (which requires one) is recorded under
    // the User-Agent's first segment, or "unknown" when there is none (kube-rs sends no User-Agent).
    let is_apply = rec.content_type.starts_with("application/apply-patch");
    let opts = WriteOpts {
        manager: q.get("fieldManager").cloned().or(if is_apply {
            None
        } else {
            Some(ua_manager.clone().unwrap_or_else(|| "unknown".into()))
        }),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
        subresource: sub.clone(),
    };
    let ct = rec.content_type.clone();
    let result: Result<Response, ApiError> = (|| match (method.as_str(), name) {
        ("GET", Some(name)) => {
            let obj = emu.get(&res, &ns_key, name)?;
            Ok(render_one(&res, obj, repr, q.get("includeObject")))
        }
        ("GET", None) => {
            let labels = LabelSelector::parse(
                q.get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
            let fields = FieldSelector::parse(
                q.get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
                &res,
            )
            .map_err(ApiError::bad_request)?;
            if is_watch {
                if let Some(rv) = q.get("resourceVersion").filter(|r| !r.is_empty())
                    && rv.parse::<u64>().is_err()
                {
                    return Err(ApiError::bad_request(format!(
                        "invalid resource version: {rv}"
                    )));
                }
                let wq = WatchQuery {
                    resource_version: q.get("resourceVersion").cloned(),
                    labels,
                    fields,
                    timeout: q.get("timeoutSeconds").and_then(|t| t.parse().ok()),
                    bookmarks: q
                        .get("allowWatchBookmarks")
                        .is_some_and(|b| b == "true" || b == "1"),
                    send_initial_events: q.get("sendInitialEvents").is_some_and(|b| b == "true"),
                };
                let rx = watchmod::start(emu.clone(), res.clone(), ns.clone(), wq, repr);
                let mut resp = Response::new(Body::from_stream(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                ));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp.headers_mut().insert(
                    "Cache-Control",
                    HeaderValue::from_static("no-cache, private"),
                );
                return Ok(resp);
            }
            let lq = ListQuery {
                limit: q.get("limit").and_then(|l| l.parse().ok()),
                continue_token: q.get("continue").cloned(),
                resource_version: q.get("resourceVersion").cloned(),
                resource_version_match: q.get("resourceVersionMatch").cloned(),
                labels,
                fields,
            };
            let (items, rv, cont) = emu.list(&res, ns.as_deref(), &lq)?;
            Ok(render_list(
                &res,
                items,
                rv,
                cont,
                repr,
                q.get("includeObject"),
            ))
        }
        ("POST", None) => {
            if res.group == "apiextensions.k8s.io" {
                return Err(ApiError::method_not_allowed(
                    "the emulator serves only the CustomResourceDefinitions it was started with (EmuConfig::crds)",
                ));
            }
            if res.namespaced && ns.is_none() {
                return Err(ApiError::path_not_found());
            }
            let obj = parse_body(body, &ct)?;
            let o = emu.create(&res, &ns_key, obj, &opts)?;
            Ok(render_outcome(o))
        }
        ("PUT", Some(name)) => {
            let obj = parse_body(body, &ct)?;
            Ok(render_outcome(
                emu.replace(&res, &ns_key, name, obj, &opts)?,
            ))
        }
        ("PATCH", Some(name)) => {
            let force = q.get("force").is_some_and(|f| f == "true");
            Ok(render_outcome(
                emu.patch(&res, &ns_key, name, &ct, body, &opts, force)?,
            ))
        }
        ("DELETE", Some(name)) => {
            let (dry, pre) = delete_options(body, opts.dry_run);
            Ok(render_outcome(emu.delete(&res, &ns_key, name, dry, &pre)?))
        }
        ("DELETE", None) => {
            let (dry, pre) = delete_options(body, opts.dry_run);
            let labels = LabelSelector::parse(
                q.get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
            .map_err(ApiError::bad_request)?;
            let fields = FieldSelector::parse(
                q.get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
                &res,
            )
            .map_err(ApiError::bad_request)?;
            let lq = ListQuery {
                labels,
                fields,
                ..Default::default()
            };
            let (items, _, _) = emu.list(&res, ns.as_deref(), &lq)?;
            let mut deleted = Vec::new();
            for it in items {
                let n = it
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ins = it
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Ok(o) = emu.delete(&res, ins, n, dry, &pre) {
                    deleted.push(o.object);
                }
            }
            let rv = emu.lock().rv;
            Ok(render_list(&res, deleted, rv, None, As::Object, None))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource".to_string(),
        )),
    })();
    match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn opt(v: Option<Value>) -> Response {
    match v {
        Some(v) => ok_json(&v),
        None => error_response(&ApiError::path_not_found()),
    }
}

fn openapi_doc(emu: &Emu, g: &str, v: &str) -> Response {
    if emu.reg.in_group_version(g, v).is_empty() {
        return error_response(&ApiError::path_not_found());
    }
    ok_json(&openapi::document(&emu.reg, g, v))
}

fn parse_body(body: &[u8], ct: &str) -> Result<Value, ApiError> {
    if ct.starts_with(super::protobuf::CONTENT_TYPE) {
        return super::protobuf::decode(body).ok_or_else(|| {
            ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (protobuf only for v1 Secrets, ConfigMaps and Namespaces, got {ct})"
            ))
        });
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
}

fn delete_options(body: &[u8], dry: bool) -> (bool, Value) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let dry = dry
        || v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    (dry, v.get("preconditions").cloned().unwrap_or(Value::Null))
}

fn render_outcome(o: Outcome) -> Response {
    json_response(o.code, &o.object, "application/json", &o.warnings)
}

const TABLE_CT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn render_one(res: &ResourceInfo, obj: Value, repr: As, include: Option<&String>) -> Response {
    match repr {
        As::Object => ok_json(&obj),
        As::Metadata => json_response(
            200,
            &table::partial(&obj),
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            &[],
        ),
        As::Table => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let t = table::table(
                res,
                &[&obj],
                &rv,
                None,
                include.map(String::as_str).unwrap_or("Metadata"),
            );
            json_response(200, &t, TABLE_CT, &[])
        }
    }
}

fn render_list(
    res: &ResourceInfo,
    items: Vec<Value>,
    rv: u64,
    cont: Option<String>,
    repr: As,
    include: Option<&String>,
) -> Response {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = &cont {
        meta["continue"] = json!(c);
    }
    match repr {
        As::Object => ok_json(
            &json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": meta, "items": items}),
        ),
        As::Metadata => {
            let items: Vec<Value> = items.iter().map(table::partial).collect();
            json_response(
                200,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
                &[],
            )
        }
        As::Table => {
            let refs: Vec<&Value> = items.iter().collect();
            let t = table::table(
                res,
                &refs,
                &rv.to_string(),
                cont.as_deref(),
                include.map(String::as_str).unwrap_or("Metadata"),
            );
            json_response(200, &t, TABLE_CT, &[])
        }
    }
}
