//! The DigitalOcean API token.
//!
//! [`Token`] never prints its text: `Debug` and `Display` both render `Token(***)`.
//! The only way to read the secret is [`Token::expose`], which the client uses to
//! build the `Authorization` header. Anything that needs to name a token in logs,
//! metrics or map keys uses [`Token::fingerprint`], a short SHA-256 prefix that
//! cannot be turned back into the token.

use std::fmt;
use std::sync::Arc;

/// A DigitalOcean bearer token (`dop_v1_…`, `doo_v1_…`). Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    secret: Arc<str>,
    fingerprint: Arc<str>,
}

impl Token {
    /// Wraps a token. Leading and trailing whitespace (a trailing newline from a
    /// Secret file, say) is trimmed.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret: String = secret.into();
        let trimmed = secret.trim();
        let fingerprint = fingerprint_of(trimmed);
        Self {
            secret: Arc::from(trimmed),
            fingerprint: Arc::from(fingerprint),
        }
    }

    /// The token text. Only for building the `Authorization` header; never log it.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// A short, stable, non-reversible identifier (first 12 hex digits of the
    /// SHA-256 of the token). Safe to log and to use as a map key or metric label.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.to_string()
    }

    /// Whether the token text is empty (a misconfigured Secret).
    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// SHA-256 through the `ring` provider that rustls already links (no extra crate).
fn fingerprint_of(secret: &str) -> String {
    use rustls::SupportedCipherSuite;
    let hex = |bytes: &[u8]| -> String {
        bytes
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256 {
        SupportedCipherSuite::Tls13(suite) => {
            let digest = suite.common.hash_provider.hash(secret.as_bytes());
            hex(digest.as_ref())
        }
        // Unreachable for a TLS 1.3 suite constant; fall back to std's SipHash.
        #[allow(unreachable_patterns)]
        _ => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            secret.hash(&mut h);
            format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let t = Token::new("dop_v1_supersecret");
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert_eq!(format!("{t}"), "Token(***)");
        assert_eq!(format!("{t:#?}"), "Token(***)");
        assert!(!t.fingerprint().contains("supersecret"));
    }

    #[test]
    fn fingerprint_is_stable_short_and_distinct() {
        let a = Token::new("dop_v1_a");
        let a2 = Token::new("dop_v1_a\n");
        let b = Token::new("dop_v1_b");
        assert_eq!(a.fingerprint(), a2.fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 12);
        // SHA-256("abc") starts with ba7816bf8f01.
        assert_eq!(Token::new("abc").fingerprint(), "ba7816bf8f01");
        assert_eq!(a2.expose(), "dop_v1_a");
    }
}
