//! `metav1.Status` failures rendered like the real API server.

use serde_json::{Value, json};

use super::{admission::FieldError, resource::ResourceInfo};

/// A failed request: HTTP code plus the Status body.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The Status object.
    pub body: Value,
}

impl ApiError {
    /// A Status with the given code, reason, message and details.
    pub fn new(
        code: u16,
        reason: &str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message.into(),
            "reason": reason,
            "code": code,
        });
        if let Some(d) = details {
            body["details"] = d;
        }
        Self { code, body }
    }

    /// The message text.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// 404 `dropletactions.g "x" not found`.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.group_resource(), name),
            Some(json!({"name": name, "group": res.group, "kind": res.plural})),
        )
    }

    /// 404 for a missing namespace.
    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
            Some(json!({"name": ns, "kind": "namespaces"})),
        )
    }

    /// 404 for an unknown path.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", res.group_resource(), name),
            Some(json!({"name": name, "group": res.group, "kind": res.plural})),
        )
    }

    /// 409 Conflict with a custom detail text.
    pub fn conflict_msg(res: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                res.group_resource(),
                name,
                why
            ),
            Some(json!({"name": name, "group": res.group, "kind": res.plural})),
        )
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(res: &ResourceInfo, name: &str) -> Self {
        Self::conflict_msg(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid from field errors (single error: no brackets).
    pub fn invalid(res: &ResourceInfo, name: &str, errs: &[FieldError]) -> Self {
        let joined = if errs.len() == 1 {
            errs[0].to_string()
        } else {
            format!(
                "[{}]",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason.as_str(), "message": e.detail, "field": e.field}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}", res.group_kind(), name, joined),
            Some(json!({"name": name, "group": res.group, "kind": res.kind, "causes": causes})),
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg, None)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg, Some(json!({})))
    }

    /// 410 Expired.
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg, None)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(msg: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", msg, None)
    }

    /// 500 InternalError.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, "InternalError", msg, None)
    }
}
