//! Errors from the DigitalOcean API, classified into stable kinds.
//!
//! DigitalOcean answers errors with `{"id": "...", "message": "...", "request_id": "..."}`.
//! [`DoError`] keeps DigitalOcean's own words ([`DoError::message`]) and adds a stable
//! [`ErrorKind`] that a reconciler can branch on and put in a condition `reason`.
//!
//! For POSTs (which start actions and are *not* idempotent) a [`PostError`] also says
//! whether the action may have been applied: [`Applied::Ambiguous`] means the caller
//! must look (list the droplet's actions) before trying again.
//!
//! No error ever contains the token: messages are scrubbed of the token text and of
//! anything that looks like a bearer credential before they are stored.

use std::fmt;
use std::time::Duration;

/// Stable classification of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 401: the token is wrong, expired or revoked.
    Unauthorized,
    /// 403: the token lacks a scope (see [`DoError::scope_hint`]).
    Forbidden,
    /// 404: the droplet, action or tag does not exist (or is not visible to the token).
    NotFound,
    /// 422 "pending event" / "blocking events": the droplet is busy with another action.
    DropletBusy,
    /// Other 422, 400 and other 4xx: the request itself is wrong; retrying will not help.
    Invalid,
    /// 429, or the local budget would have been exceeded.
    RateLimited,
    /// 5xx.
    Server,
    /// Network failure: connect, TLS, timeout, connection reset.
    Transport,
    /// A success status whose body could not be decoded.
    Decode,
}

impl ErrorKind {
    /// Stable CamelCase name, suitable for a condition `reason` or a metric label.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::DropletBusy => "DropletBusy",
            ErrorKind::Invalid => "Invalid",
            ErrorKind::RateLimited => "RateLimited",
            ErrorKind::Server => "ServerError",
            ErrorKind::Transport => "Transport",
            ErrorKind::Decode => "Decode",
        }
    }

    /// Whether waiting and trying again may succeed without any change by the user.
    /// `DropletBusy` counts: the blocking action finishes on its own.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Server
                | ErrorKind::Transport
                | ErrorKind::DropletBusy
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A failed DigitalOcean call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct DoError {
    kind: ErrorKind,
    status: Option<u16>,
    api_id: Option<String>,
    message: String,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    scope_hint: Option<&'static str>,
}

/// The longest message kept from a response body (HTML error pages can be large).
const MAX_MESSAGE: usize = 512;

impl DoError {
    /// Builds an error. `message` is scrubbed of `secret` and bearer-looking strings.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>, secret: &str) -> Self {
        Self {
            kind,
            status: None,
            api_id: None,
            message: scrub(&message.into(), secret),
            request_id: None,
            retry_after: None,
            scope_hint: None,
        }
    }

    /// Classifies a non-2xx HTTP response from its status and DigitalOcean's error body.
    pub(crate) fn from_response(
        status: u16,
        body: &[u8],
        header_request_id: Option<String>,
        retry_after: Option<Duration>,
        scope_hint: Option<&'static str>,
        secret: &str,
    ) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            id: Option<String>,
            message: Option<String>,
            request_id: Option<String>,
        }
        let parsed: Option<Body> = serde_json::from_slice(body).ok();
        let (api_id, message, body_request_id) = match parsed {
            Some(b) => (b.id, b.message, b.request_id),
            None => (None, None, None),
        };
        let message = message.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            }
        });
        let kind = classify(status, &message);
        Self {
            kind,
            status: Some(status),
            api_id: api_id.map(|s| scrub(&s, secret)),
            message: scrub(&message, secret),
            request_id: body_request_id
                .filter(|s| !s.is_empty())
                .or(header_request_id)
                .map(|s| scrub(&s, secret)),
            retry_after,
            scope_hint: if kind == ErrorKind::Forbidden {
                scope_hint
            } else {
                None
            },
        }
    }

    /// Builds an error from its parts, for fakes and simulators in tests of callers.
    /// Bearer-looking strings in `message` are still redacted.
    pub fn from_parts(
        kind: ErrorKind,
        http_status: Option<u16>,
        api_id: Option<&str>,
        message: &str,
        request_id: Option<&str>,
        retry_after: Option<Duration>,
    ) -> Self {
        Self {
            kind,
            status: http_status,
            api_id: api_id.map(str::to_string),
            message: scrub(message, ""),
            request_id: request_id.map(str::to_string),
            retry_after,
            scope_hint: None,
        }
    }

    pub(crate) fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn with_request_id(mut self, id: Option<String>) -> Self {
        if self.request_id.is_none() {
            self.request_id = id;
        }
        self
    }

    /// The stable classification.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Stable CamelCase name of the kind ("Unauthorized", …, "ServerError", …).
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// See [`ErrorKind::is_transient`].
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The HTTP status, if a response was received.
    pub fn http_status(&self) -> Option<u16> {
        self.status
    }

    /// DigitalOcean's error `id` (e.g. `unprocessable_entity`).
    pub fn api_id(&self) -> Option<&str> {
        self.api_id.as_deref()
    }

    /// DigitalOcean's own message (or a transport description). Never contains the token.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// DigitalOcean's request id (body `request_id`, else the `x-request-id` header).
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// How long to wait before the next request with this token (rate limiting).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// For `Forbidden`: the scope(s) the call most likely lacks, e.g. `droplet:admin`.
    pub fn scope_hint(&self) -> Option<&str> {
        self.scope_hint
    }

    fn render(&self) -> String {
        let mut s = format!("DigitalOcean {}", self.kind.reason());
        if let Some(st) = self.status {
            s.push_str(&format!(" (HTTP {st}"));
            if let Some(id) = &self.api_id {
                s.push_str(&format!(", {id}"));
            }
            s.push(')');
        }
        s.push_str(": ");
        s.push_str(&self.message);
        if let Some(hint) = self.scope_hint {
            s.push_str(&format!(" [the token may lack scope {hint}]"));
        }
        if let Some(ra) = self.retry_after {
            s.push_str(&format!(" [retry after {}s]", ra.as_secs_f64().ceil()));
        }
        if let Some(rid) = &self.request_id {
            s.push_str(&format!(" [request id {rid}]"));
        }
        s
    }
}

/// Whether a POST may have started an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applied {
    /// Certainly not applied: the request never reached DigitalOcean, or it was rejected (4xx).
    NotApplied,
    /// May have been applied: timeout or connection loss after sending, 5xx, or a 2xx
    /// whose body could not be read. Look before re-sending.
    Ambiguous,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Applied::NotApplied => "not applied",
            Applied::Ambiguous => "may have been applied",
        })
    }
}

/// A failed POST plus whether the action may have been applied.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (action {applied})")]
pub struct PostError {
    /// What went wrong.
    pub error: DoError,
    /// Whether DigitalOcean may have started the action anyway.
    pub applied: Applied,
}

impl PostError {
    /// Pairs an error with what it means for the action.
    pub fn new(error: DoError, applied: Applied) -> Self {
        Self { error, applied }
    }

    /// Certainly not applied.
    pub fn not_applied(error: DoError) -> Self {
        Self {
            error,
            applied: Applied::NotApplied,
        }
    }

    pub(crate) fn ambiguous(error: DoError) -> Self {
        Self {
            error,
            applied: Applied::Ambiguous,
        }
    }

    /// Shorthand for `self.error.kind()`.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

/// Maps a status (and, for 422, the message) to a kind.
pub(crate) fn classify(status: u16, message: &str) -> ErrorKind {
    match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        422 => {
            let m = message.to_ascii_lowercase();
            if m.contains("pending event") || m.contains("blocking events") {
                ErrorKind::DropletBusy
            } else {
                ErrorKind::Invalid
            }
        }
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::Invalid,
    }
}

/// Removes the token text and anything that looks like a bearer credential, and
/// bounds the length. Applied to every string an error keeps.
pub(crate) fn scrub(text: &str, secret: &str) -> String {
    let mut out = if secret.len() >= 4 {
        text.replace(secret, "***")
    } else {
        text.to_string()
    };
    // "Bearer <anything>" and DigitalOcean token prefixes, whatever the casing.
    for marker in ["bearer ", "dop_v1_", "doo_v1_", "dor_v1_"] {
        out = redact_after(&out, marker);
    }
    if out.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Replaces the word following each (ASCII case-insensitive) `marker` with `***`.
fn redact_after(text: &str, marker: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find(marker) {
        let start = pos + found;
        let value_start = if marker.ends_with(' ') {
            start + marker.len()
        } else {
            start
        };
        let value_end = text[value_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';'))
            .map(|i| value_start + i)
            .unwrap_or(text.len());
        out.push_str(&text[pos..value_start]);
        if value_end > value_start {
            out.push_str("***");
        }
        pos = value_end.max(value_start);
        if pos == start {
            // Defensive: never loop without progress.
            out.push_str(&text[start..start + marker.len()]);
            pos = start + marker.len();
        }
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_statuses() {
        assert_eq!(classify(401, ""), ErrorKind::Unauthorized);
        assert_eq!(classify(403, ""), ErrorKind::Forbidden);
        assert_eq!(classify(404, ""), ErrorKind::NotFound);
        assert_eq!(
            classify(422, "Droplet already has a Pending Event."),
            ErrorKind::DropletBusy
        );
        assert_eq!(
            classify(
                422,
                "there are currently BLOCKING EVENTS processing for one or more of the droplets"
            ),
            ErrorKind::DropletBusy
        );
        assert_eq!(
            classify(422, "Size is too large to fit on your droplet's server"),
            ErrorKind::Invalid
        );
        assert_eq!(classify(400, ""), ErrorKind::Invalid);
        assert_eq!(classify(409, ""), ErrorKind::Invalid);
        assert_eq!(classify(429, ""), ErrorKind::RateLimited);
        assert_eq!(classify(500, ""), ErrorKind::Server);
        assert_eq!(classify(503, ""), ErrorKind::Server);
    }

    #[test]
    fn parses_body_and_falls_back_to_header_request_id() {
        let e = DoError::from_response(
            404,
            br#"{"id":"not_found","message":"The resource you requested could not be found."}"#,
            Some("hdr-1".into()),
            None,
            Some("droplet:read"),
            "tok",
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.api_id(), Some("not_found"));
        assert_eq!(e.request_id(), Some("hdr-1"));
        assert_eq!(e.scope_hint(), None, "scope hints only for 403");
        let e = DoError::from_response(
            403,
            br#"{"id":"forbidden","message":"no","request_id":"body-1"}"#,
            Some("hdr-1".into()),
            None,
            Some("droplet:admin"),
            "tok",
        );
        assert_eq!(e.request_id(), Some("body-1"));
        assert_eq!(e.scope_hint(), Some("droplet:admin"));
        assert!(e.to_string().contains("droplet:admin"));
    }

    #[test]
    fn non_json_body_is_kept_bounded() {
        let body = "x".repeat(5000);
        let e = DoError::from_response(502, body.as_bytes(), None, None, None, "tok");
        assert_eq!(e.kind(), ErrorKind::Server);
        assert!(e.message().len() <= MAX_MESSAGE + 4);
    }

    #[test]
    fn scrub_removes_secret_and_bearer_values() {
        let s = scrub(
            "bad header Authorization: Bearer dop_v1_abc123; also dop_v1_zzz and raw s3cretvalue",
            "s3cretvalue",
        );
        assert!(!s.contains("abc123"), "{s}");
        assert!(!s.contains("zzz"), "{s}");
        assert!(!s.contains("s3cretvalue"), "{s}");
        assert!(s.contains("Authorization"));
        let s = scrub("BEARER xyz", "nothing");
        assert_eq!(s, "BEARER ***");
        assert_eq!(scrub("bearer ", "q"), "bearer ");
    }

    #[test]
    fn reasons_are_stable() {
        let all = [
            (ErrorKind::Unauthorized, "Unauthorized"),
            (ErrorKind::Forbidden, "Forbidden"),
            (ErrorKind::NotFound, "NotFound"),
            (ErrorKind::DropletBusy, "DropletBusy"),
            (ErrorKind::Invalid, "Invalid"),
            (ErrorKind::RateLimited, "RateLimited"),
            (ErrorKind::Server, "ServerError"),
            (ErrorKind::Transport, "Transport"),
            (ErrorKind::Decode, "Decode"),
        ];
        for (k, r) in all {
            assert_eq!(k.reason(), r);
        }
    }
}
