//! The admission hook the emulator calls before persisting any write.

use super::resource::ResourceInfo;

/// Why a field was rejected; mirrors `k8s.io/apimachinery/pkg/util/validation/field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorReason {
    /// `FieldValueRequired`
    Required,
    /// `FieldValueInvalid`
    Invalid,
    /// `FieldValueNotSupported`
    NotSupported,
    /// `FieldValueForbidden`
    Forbidden,
    /// `FieldValueTypeInvalid`
    TypeInvalid,
    /// `FieldValueTooLong`
    TooLong,
    /// `FieldValueTooMany`
    TooMany,
    /// `FieldValueDuplicate`
    Duplicate,
}

impl FieldErrorReason {
    /// The `reason` string of a Status cause, e.g. `FieldValueRequired`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Duplicate => "FieldValueDuplicate",
        }
    }
}

/// One rejected field, rendered as `<field>: <detail>` in the Status message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.backupPolicy.hour`.
    pub field: String,
    /// The error type.
    pub reason: FieldErrorReason,
    /// The text after the field, e.g. `Required value` or `Invalid value: "object": exactly one of ...`.
    pub detail: String,
}

impl FieldError {
    /// Convenience constructor.
    pub fn new(
        field: impl Into<String>,
        reason: FieldErrorReason,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.detail)
        } else {
            write!(f, "{}: {}", self.field, self.detail)
        }
    }
}

/// Validates (and may mutate: defaults, pruning) every object before it is persisted.
pub trait Admission: Send + Sync + 'static {
    /// `resource` identifies group/version/plural/kind; `subresource` is `Some("status")` for
    /// status writes. `old` is `None` on create. `strict` is true for `fieldValidation=Strict`.
    /// Returns warnings (sent as `Warning: 299 - "..."` headers) or the field errors (422 Invalid).
    fn admit(
        &self,
        resource: &ResourceInfo,
        subresource: Option<&str>,
        new: &mut serde_json::Value,
        old: Option<&serde_json::Value>,
        strict: bool,
    ) -> Result<Vec<String>, Vec<FieldError>>;
}

/// Accepts everything unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAdmission;

impl Admission for NoAdmission {
    fn admit(
        &self,
        _resource: &ResourceInfo,
        _subresource: Option<&str>,
        _new: &mut serde_json::Value,
        _old: Option<&serde_json::Value>,
        _strict: bool,
    ) -> Result<Vec<String>, Vec<FieldError>> {
        Ok(Vec::new())
    }
}
