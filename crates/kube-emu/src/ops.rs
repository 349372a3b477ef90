//! Object operations (create, update, patch, apply, delete, list) with the API server's rules:
//! optimistic concurrency, generation, status subresource, finalizers, managedFields, admission.

use std::sync::{Arc, MutexGuard};

use serde_json::{Value, json};

use super::{
    apply::{self, Scope},
    events,
    resource::ResourceInfo,
    selector::{FieldSelector, LabelSelector},
    server::Emu,
    status::ApiError,
    store::StoreInner,
};

/// Options common to writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    /// `fieldManager` (or one derived from the User-Agent).
    pub manager: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldValidation=Strict`.
    pub strict: bool,
    /// `Some("status")` for status writes.
    pub subresource: Option<String>,
}

/// A successful write.
#[derive(Debug)]
pub struct Outcome {
    /// 200 or 201.
    pub code: u16,
    /// The object as served.
    pub object: Value,
    /// Admission warnings.
    pub warnings: Vec<String>,
}

enum Managed {
    Update(Option<String>),
    Apply(String),
    Precomputed,
}

/// Current time as `metav1.Time`.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The form field selectors evaluate: the stored object itself unless the view renames fields.
pub fn selectable<'a>(res: &ResourceInfo, stored: &'a Value) -> std::borrow::Cow<'a, Value> {
    if res.group == "events.k8s.io" && res.plural == "events" {
        std::borrow::Cow::Owned(events::core_to_events_v1(stored))
    } else {
        std::borrow::Cow::Borrowed(stored)
    }
}

/// Storage form → served form.
pub fn to_view(res: &ResourceInfo, stored: &Value) -> Value {
    if res.group == "events.k8s.io" && res.plural == "events" {
        return events::core_to_events_v1(stored);
    }
    let mut v = stored.clone();
    if res.custom {
        v["apiVersion"] = json!(res.api_version());
    }
    v
}

fn from_view(res: &ResourceInfo, v: Value) -> Value {
    if res.group == "events.k8s.io" && res.plural == "events" {
        return events::events_v1_to_core(&v);
    }
    v
}

fn meta_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get("metadata")
        .and_then(|m| m.get(k))
        .and_then(Value::as_str)
}

fn scope_of(res: &ResourceInfo, sub: Option<&str>) -> Scope {
    if !res.status_subresource {
        Scope::All
    } else if sub == Some("status") {
        Scope::StatusOnly
    } else {
        Scope::NoStatus
    }
}

/// What `metadata.generation` tracks: everything but metadata, and but status when the type has
/// a status subresource (like the real CR strategy: without one, status changes bump it too).
fn spec_part(res: &ResourceInfo, v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if res.status_subresource || !res.custom {
            m.remove("status");
        }
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn without_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(mf) = v
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for e in mf {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    v
}

/// What the real server does for built-in kinds on every write: Secret `stringData` is folded into
/// `data` and `type` defaults to `Opaque`.
fn normalize_builtin(res: &ResourceInfo, obj: &mut Value) {
    if res.custom || !res.group.is_empty() || res.plural != "secrets" {
        return;
    }
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let text = v.as_str().unwrap_or_default().to_string();
            obj["data"][k] = json!(super::protobuf::base64(text.as_bytes()));
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
}

const GENERATE_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn parse_rv(s: &str) -> Option<u64> {
    s.parse().ok()
}

fn admission_error(
    res: &ResourceInfo,
    name: &str,
    errs: Vec<super::admission::FieldError>,
) -> ApiError {
    // With fieldValidation=Strict the real server rejects unknown fields while decoding, before any schema
    // validation: 400 BadRequest "strict decoding error: unknown field ...", not 422 (checked against
    // kube-apiserver 1.37 in tests/real_k8s.rs).
    let unknown: Vec<&str> = errs
        .iter()
        .filter(|e| e.detail.starts_with("unknown field \""))
        .map(|e| e.detail.as_str())
        .collect();
    if !unknown.is_empty() {
        return ApiError::new(
            400,
            "BadRequest",
            format!("strict decoding error: {}", unknown.join(", ")),
            None,
        );
    }
    ApiError::invalid(res, name, &errs)
}

impl Emu {
    pub(crate) fn lock(&self) -> MutexGuard<'_, StoreInner> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// GET one object.
    pub fn get(&self, res: &ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        st.get(&res.store_key, ns, name)
            .map(|o| to_view(res, &o))
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// POST.
    pub fn create(
        &self,
        res: &ResourceInfo,
        ns: &str,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Outcome, ApiError> {
        let mut st = self.lock();
        self.create_locked(
            &mut st,
            res,
            ns,
            obj,
            opts,
            Managed::Update(opts.manager.clone()),
        )
    }

    fn create_locked(
        &self,
        st: &mut StoreInner,
        res: &ResourceInfo,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
        managed: Managed,
    ) -> Result<Outcome, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_type(res, &obj)?;
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName")
                .unwrap_or_default()
                .to_string();
            if prefix.is_empty() {
                let errs = vec![super::admission::FieldError::new(
                    "metadata.name",
                    super::admission::FieldErrorReason::Required,
                    "Required value: name or generateName is required",
                )];
                return Err(admission_error(res, "", errs));
            }
            use rand::Rng;
            let mut rng = rand::rng();
            loop {
                let suffix: String = (0..5)
                    .map(|_| GENERATE_CHARS[rng.random_range(0..GENERATE_CHARS.len())] as char)
                    .collect();
                name = format!("{prefix}{suffix}");
                if st.get(&res.store_key, ns, &name).is_none() {
                    break;
                }
            }
            obj["metadata"]["name"] = json!(name);
        }
        if res.namespaced {
            if let Some(body_ns) = meta_str(&obj, "namespace")
                && !body_ns.is_empty()
                && body_ns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            obj["metadata"]["namespace"] = json!(ns);
            if st.get("namespaces", "", ns).is_none() {
                return Err(ApiError::namespace_not_found(ns));
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(k);
            }
            if !matches!(managed, Managed::Precomputed) {
                m.remove("managedFields");
            }
        }
        if res.status_subresource
            && res.custom
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        check_meta(&obj)?;
        check_name_and_note(res, &obj, &name)?;
        if res.plural == "namespaces" && res.group.is_empty() {
            obj["status"] = json!({"phase": "Active"});
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        if st.get(&res.store_key, ns, &name).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        normalize_builtin(res, &mut obj);
        let ts = now();
        let scope = scope_of(res, None);
        match managed {
            Managed::Update(m) => apply::record_update(
                &json!({}),
                &mut obj,
                Vec::new(),
                m.as_deref(),
                &res.api_version(),
                "",
                scope,
                res.schema.as_ref(),
                &ts,
            ),
            Managed::Apply(m) => {
                let fields = apply::leaves(&obj, scope, res.schema.as_ref());
                apply::set_managers(
                    &mut obj,
                    &[apply::Manager {
                        manager: m,
                        operation: "Apply".into(),
                        api_version: res.api_version(),
                        time: ts.clone(),
                        subresource: String::new(),
                        fields,
                    }],
                );
            }
            Managed::Precomputed => {}
        }
        let warnings = self
            .admission
            .admit(res, None, &mut obj, None, opts.strict)
            .map_err(|e| admission_error(res, &name, e))?;
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(ts));
        if res.tracks_generation() {
            meta.insert("generation".into(), json!(1));
        }
        let stored = from_view(res, obj);
        if opts.dry_run {
            let mut v = to_view(res, &stored);
            v["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            return Ok(Outcome {
                code: 201,
                object: v,
                warnings,
            });
        }
        let rv = st.next_rv();
        let mut stored = stored;
        stored["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = st.put(&res.store_key, ns, &name, stored, rv);
        Ok(Outcome {
            code: 201,
            object: to_view(res, &stored),
            warnings,
        })
    }

    /// PUT (main resource or status).
    pub fn replace(
        &self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Outcome, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_type(res, &body)?;
        if let Some(n) = meta_str(&body, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut st = self.lock();
        let Some(old) = st.get(&res.store_key, ns, name) else {
            return Err(ApiError::not_found(res, name));
        };
        if res.custom && meta_str(&body, "resourceVersion").is_none_or(str::is_empty) {
            let errs = vec![super::admission::FieldError::new(
                "metadata.resourceVersion",
                super::admission::FieldErrorReason::Invalid,
                "Invalid value: 0x0: must be specified for an update",
            )];
            return Err(admission_error(res, name, errs));
        }
        self.commit_update(
            &mut st,
            res,
            ns,
            name,
            &old,
            body,
            opts,
            Managed::Update(opts.manager.clone()),
        )
    }

    /// PATCH with any supported content type.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        opts: &WriteOpts,
        force: bool,
    ) -> Result<Outcome, ApiError> {
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        enum Kind {
            Merge(Value),
            Json(json_patch::Patch),
        }
        let kind = match ct {
            "application/apply-patch+yaml" => return self.apply(res, ns, name, body, opts, force),
            "application/merge-patch+json" => Kind::Merge(parse_json(body)?),
            "application/strategic-merge-patch+json" => {
                if res.custom {
                    return Err(unsupported_patch());
                }
                let mut p = parse_json(body)?;
                strip_directives(&mut p);
                Kind::Merge(p)
            }
            "application/json-patch+json" => Kind::Json(
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
            ),
            _ => return Err(unsupported_patch()),
        };
        let mut st = self.lock();
        let Some(old) = st.get(&res.store_key, ns, name) else {
            return Err(ApiError::not_found(res, name));
        };
        let mut doc = to_view(res, &old);
        match kind {
            Kind::Merge(p) => {
                if !p.is_object() {
                    return Err(ApiError::bad_request(
                        "error decoding patch: merge patch must be an object",
                    ));
                }
                json_patch::merge(&mut doc, &p)
            }
            Kind::Json(p) => json_patch_like_apiserver(&mut doc, &p)?,
        }
        if !doc.is_object() {
            return Err(ApiError::bad_request("patched object is not an object"));
        }
        self.commit_update(
            &mut st,
            res,
            ns,
            name,
            &old,
            doc,
            opts,
            Managed::Update(opts.manager.clone()),
        )
    }

    fn apply(
        &self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        body: &[u8],
        opts: &WriteOpts,
        force: bool,
    ) -> Result<Outcome, ApiError> {
        let Some(manager) = opts.manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::bad_request(
                "PATCH /apply requests require a fieldManager",
            ));
        };
        let mut applied: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                let text =
                    std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
                serde_saphyr::from_str(text)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            }
        };
        if !applied.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration must be an object",
            ));
        }
        if applied.get("apiVersion").and_then(Value::as_str).is_none()
            || applied.get("kind").and_then(Value::as_str).is_none()
        {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an apply configuration",
            ));
        }
        check_type(res, &applied)?;
        if !applied.get("metadata").is_some_and(Value::is_object) {
            applied["metadata"] = json!({});
        }
        match meta_str(&applied, "name") {
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None => {
                applied["metadata"]["name"] = json!(name);
            }
        }
        if let Some(body_ns) = meta_str(&applied, "namespace")
            && res.namespaced
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut st = self.lock();
        let sub = opts.subresource.clone().unwrap_or_default();
        let Some(old) = st.get(&res.store_key, ns, name) else {
            if !sub.is_empty() {
                return Err(ApiError::not_found(res, name));
            }
            return self
                .create_locked(&mut st, res, ns, applied, opts, Managed::Apply(manager))
                .map(|mut o| {
                    o.code = 201;
                    o
                });
        };
        let live = to_view(res, &old);
        let scope = scope_of(res, opts.subresource.as_deref());
        let ts = now();
        let mut result = apply::apply(
            &live,
            &applied,
            &manager,
            &res.api_version(),
            &sub,
            scope,
            res.schema.as_ref(),
            force,
            &ts,
        );
        if let Err(conflicts) = &result {
            // Like the real server's lastAppliedManager: `kubectl apply --server-side` takes over
            // fields from client-side apply when every conflict is in last-applied-configuration.
            if manager == "kubectl" && last_applied_covers(&live, scope, res, conflicts) {
                result = apply::apply(
                    &live,
                    &applied,
                    &manager,
                    &res.api_version(),
                    &sub,
                    scope,
                    res.schema.as_ref(),
                    true,
                    &ts,
                );
            }
        }
        let new = result
            .map_err(|conflicts| {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.path}))
                    .collect();
                ApiError::new(409, "Conflict", apply::conflict_message(&conflicts), Some(json!({"causes": causes})))
            })?;
        self.commit_update(
            &mut st,
            res,
            ns,
            name,
            &old,
            new,
            opts,
            Managed::Precomputed,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &self,
        st: &mut StoreInner,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        old_stored: &Arc<Value>,
        mut new: Value,
        opts: &WriteOpts,
        managed: Managed,
    ) -> Result<Outcome, ApiError> {
        let old = to_view(res, old_stored);
        let old_rv = meta_str(&old, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && !rv.is_empty()
            && rv != old_rv
        {
            return Err(ApiError::conflict(res, name));
        }
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        {
            let nm = new["metadata"].as_object_mut().expect("metadata");
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
                "selfLink",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => {
                        nm.insert(k.into(), v.clone());
                    }
                    None => {
                        nm.remove(k);
                    }
                }
            }
        }
        check_meta(&new)?;
        check_name_and_note(res, &new, name)?;
        normalize_builtin(res, &mut new);
        let sub = opts.subresource.as_deref();
        if sub == Some("status") && !res.status_subresource {
            return Err(ApiError::not_found(res, name));
        }
        let scope = scope_of(res, sub);
        let base_managers = {
            let provided = new
                .pointer("/metadata/managedFields")
                .filter(|m| m.as_array().is_some_and(|a| !a.is_empty()));
            if provided.is_some() && provided != old.pointer("/metadata/managedFields") {
                apply::managers_of(&new)
            } else {
                apply::managers_of(&old)
            }
        };
        if res.status_subresource {
            if sub == Some("status") {
                let status = new.get("status").cloned();
                let mf = new.pointer("/metadata/managedFields").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
                if matches!(managed, Managed::Precomputed) {
                    match mf {
                        Some(mf) => new["metadata"]["managedFields"] = mf,
                        None => {
                            new["metadata"]
                                .as_object_mut()
                                .expect("metadata")
                                .remove("managedFields");
                        }
                    }
                }
            } else {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
            }
        }
        if res.tracks_generation() && spec_part(res, &new) != spec_part(res, &old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let ts = now();
        match managed {
            Managed::Update(m) => apply::record_update(
                &old,
                &mut new,
                base_managers,
                m.as_deref(),
                &res.api_version(),
                sub.unwrap_or_default(),
                scope,
                res.schema.as_ref(),
                &ts,
            ),
            Managed::Apply(_) | Managed::Precomputed => {}
        }
        let warnings = self
            .admission
            .admit(res, sub, &mut new, Some(&old), opts.strict)
            .map_err(|e| admission_error(res, name, e))?;
        if without_times(&new) == without_times(&old) {
            return Ok(Outcome {
                code: 200,
                object: old,
                warnings,
            });
        }
        let finalizers_done = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if opts.dry_run {
            return Ok(Outcome {
                code: 200,
                object: new,
                warnings,
            });
        }
        let rv = st.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = from_view(res, new);
        let stored = if finalizers_done {
            st.remove(&res.store_key, ns, name, stored, rv)
        } else {
            st.put(&res.store_key, ns, name, stored, rv)
        };
        Ok(Outcome {
            code: 200,
            object: to_view(res, &stored),
            warnings,
        })
    }

    /// DELETE: with finalizers, only marks deletionTimestamp.
    pub fn delete(
        &self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        dry_run: bool,
        preconditions: &Value,
    ) -> Result<Outcome, ApiError> {
        let mut st = self.lock();
        let Some(old) = st.get(&res.store_key, ns, name) else {
            return Err(ApiError::not_found(res, name));
        };
        if let Some(uid) = preconditions.get("uid").and_then(Value::as_str)
            && meta_str(&old, "uid") != Some(uid)
        {
            return Err(ApiError::conflict_msg(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = preconditions.get("resourceVersion").and_then(Value::as_str)
            && meta_str(&old, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::conflict_msg(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        let mut obj = (*old).clone();
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if has_finalizers {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(Outcome {
                    code: 200,
                    object: to_view(res, &obj),
                    warnings: vec![],
                });
            }
            obj["metadata"]["deletionTimestamp"] = json!(now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(g) = obj.pointer("/metadata/generation").and_then(Value::as_i64) {
                obj["metadata"]["generation"] = json!(g + 1);
            }
            if dry_run {
                return Ok(Outcome {
                    code: 200,
                    object: to_view(res, &obj),
                    warnings: vec![],
                });
            }
            let rv = st.next_rv();
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            let stored = st.put(&res.store_key, ns, name, obj, rv);
            return Ok(Outcome {
                code: 200,
                object: to_view(res, &stored),
                warnings: vec![],
            });
        }
        if dry_run {
            return Ok(Outcome {
                code: 200,
                object: to_view(res, &obj),
                warnings: vec![],
            });
        }
        let rv = st.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = st.remove(&res.store_key, ns, name, obj, rv);
        Ok(Outcome {
            code: 200,
            object: to_view(res, &stored),
            warnings: vec![],
        })
    }

    /// LIST with selectors and pagination. Returns (items, list RV, continue token).
    pub fn list(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<(Vec<Value>, u64, Option<String>), ApiError> {
        let st = self.lock();
        let mut list_rv = st.rv;
        let mut after: Option<(String, String)> = None;
        if let Some(c) = q.continue_token.as_deref().filter(|c| !c.is_empty()) {
            let (rv, key) = decode_continue(c)
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: invalid token"))?;
            if rv < st.history_floor {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            list_rv = rv;
            after = Some(key);
        } else if let Some(rv) = q
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty() && *r != "0")
        {
            let n = parse_rv(rv)
                .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if q.resource_version_match.as_deref() == Some("Exact") && n < st.history_floor {
                return Err(ApiError::expired(format!(
                    "too old resource version: {n} ({})",
                    st.history_floor + 1
                )));
            }
        }
        let limit = q.limit.filter(|l| *l > 0).map(|l| l as usize);
        let mut items = Vec::new();
        let mut cont = None;
        let mut last_key: Option<(String, String)> = None;
        for (key, obj) in st.range(&res.store_key, ns, after.as_ref()) {
            if !q.labels.is_empty() && !q.labels.matches(obj) {
                continue;
            }
            if !q.fields.is_empty() && !q.fields.matches(&selectable(res, obj)) {
                continue;
            }
            let view = to_view(res, obj);
            if let Some(l) = limit
                && items.len() == l
            {
                if let Some(k) = &last_key {
                    cont = Some(encode_continue(list_rv, k));
                }
                break;
            }
            items.push(view);
            last_key = Some(key.clone());
        }
        Ok((items, list_rv, cont))
    }
}

/// Parsed list query.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// `limit`.
    pub limit: Option<i64>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Opaque continue token: hex of `{"rv":N,"ns":..,"name":..}`.
pub fn encode_continue(rv: u64, key: &(String, String)) -> String {
    hex(&json!({"rv": rv, "ns": key.0, "name": key.1}).to_string())
}

fn decode_continue(s: &str) -> Option<(u64, (String, String))> {
    let v: Value = serde_json::from_str(&unhex(s)?).ok()?;
    Some((
        v["rv"].as_u64()?,
        (
            v["ns"].as_str()?.to_string(),
            v["name"].as_str()?.to_string(),
        ),
    ))
}

fn last_applied_covers(
    live: &Value,
    scope: Scope,
    res: &ResourceInfo,
    conflicts: &[apply::Conflict],
) -> bool {
    let Some(text) = live
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
    else {
        return false;
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let allowed: std::collections::BTreeSet<String> =
        apply::leaves(&last, scope, res.schema.as_ref())
            .iter()
            .map(apply::path_string)
            .collect();
    conflicts.iter().all(|c| allowed.contains(&c.path))
}

/// RFC 6902 with the apiserver's (evanphx/json-patch) quirk: `test` of `null` against a missing
/// path succeeds; kube's finalizer helper relies on it (`test /metadata/finalizers null`).
fn json_patch_like_apiserver(doc: &mut Value, patch: &json_patch::Patch) -> Result<(), ApiError> {
    for op in &patch.0 {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op)).map_err(|e| {
            let msg = match e.kind {
                json_patch::PatchErrorKind::TestFailed => {
                    format!("testing value {} failed: test failed", e.path)
                }
                _ => e.to_string(),
            };
            ApiError::new(422, "Invalid", msg, None)
        })?;
    }
    Ok(())
}

/// Rejects metadata the real server could not even decode (labels that are not a string map...).
fn check_meta(obj: &Value) -> Result<(), ApiError> {
    let meta = &obj["metadata"];
    for k in ["labels", "annotations"] {
        match meta.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "metadata.{k}: must be a map of strings"
                )));
            }
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "metadata.finalizers: must be a list of strings",
        )),
    }
}

/// The longest object name the API server accepts (a DNS subdomain, RFC 1123).
pub const MAX_NAME_BYTES: usize = 253;
/// The longest event note (events.k8s.io/v1 `note`, core/v1 `message`) the API server accepts, in bytes.
pub const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// Like the API server: names longer than a DNS subdomain are rejected (422), and so are event notes over
/// 1 KiB (counted in bytes, Go `len`, not characters), reported on the field `message` as kube-apiserver 1.37's
/// `ValidateEventCreate` does (checked in tests/real_k8s.rs).
fn check_name_and_note(res: &ResourceInfo, obj: &Value, name: &str) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    if name.len() > MAX_NAME_BYTES {
        errs.push(super::admission::FieldError::new(
            "metadata.name",
            super::admission::FieldErrorReason::Invalid,
            format!("Invalid value: {name:?}: must be no more than {MAX_NAME_BYTES} characters"),
        ));
    }
    if res.plural == "events" {
        // Stored in the core/v1 form (`message`); accept either spelling.
        for field in ["message", "note"] {
            if let Some(note) = obj.get(field).and_then(Value::as_str)
                && note.len() > MAX_EVENT_NOTE_BYTES
            {
                // kube-apiserver reports events.k8s.io's `note` on its internal field name `message`.
                errs.push(super::admission::FieldError::new(
                    "message",
                    super::admission::FieldErrorReason::Invalid,
                    format!(
                        "Invalid value: \"\": can have at most {MAX_EVENT_NOTE_BYTES} characters"
                    ),
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(admission_error(res, name, errs))
    }
}

/// Drops strategic-merge-patch directives (`$patch`, `$setElementOrder/...`, `$retainKeys`,
/// `$deleteFromPrimitiveList/...`): for the built-in kinds served here (maps and scalars) the
/// rest of the patch means the same as a JSON merge patch.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

fn unsupported_patch() -> ApiError {
    ApiError::unsupported_media_type(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    )
}

fn check_type(res: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            obj.get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            res.api_version()
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != res.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    Ok(())
}
