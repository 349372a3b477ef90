//! Admission for custom resources: what a real kube-apiserver does with a CRD's `openAPIV3Schema` before it
//! persists an object — apply defaults, prune (or, with `fieldValidation=Strict`, reject) unknown fields,
//! validate the structural schema (types, enums, required, bounds, patterns, formats) and evaluate the CEL
//! rules (`x-kubernetes-validations`, including transition rules against the old object).
//!
//! Messages follow the apiserver's wording (`spec.type: Unsupported value: "x": supported values: ...`,
//! `spec: Invalid value: "object": <rule message>`), so the Kubernetes emulator answers kubectl the way a real
//! cluster does, and the CRD tests assert exactly what users will read.
//!
//! CEL evaluation uses kube's client-side validator (`kube::core::cel`, the `cel` feature). CEL rules run only
//! when the structural schema holds, as CEL cannot evaluate ill-typed values.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{RootContext, Validator, compile_schema};
use serde_json::Value;

/// The apiserver's `CauseType` vocabulary for field errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldReason {
    /// A required field is missing.
    Required,
    /// A value is invalid (bounds, pattern, format, CEL rule).
    Invalid,
    /// A value is not one of the enum values.
    NotSupported,
    /// A field is not allowed (unknown field in strict mode).
    Forbidden,
    /// A value has the wrong JSON type.
    TypeInvalid,
    /// A string or list is too long.
    TooLong,
}

impl FieldReason {
    /// The apiserver's cause `reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldReason::Required => "FieldValueRequired",
            FieldReason::Invalid => "FieldValueInvalid",
            FieldReason::NotSupported => "FieldValueNotSupported",
            FieldReason::Forbidden => "FieldValueForbidden",
            FieldReason::TypeInvalid => "FieldValueTypeInvalid",
            FieldReason::TooLong => "FieldValueTooLong",
        }
    }
}

/// One admission failure: the field path and the apiserver-style detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, for example `spec.backupPolicy.hour` (`spec` for rules on the spec).
    pub field: String,
    /// Category of the failure.
    pub reason: FieldReason,
    /// The text that follows the field in the apiserver's message, for example
    /// `Unsupported value: 5: supported values: "0", "4"`.
    pub detail: String,
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

/// Validates objects of one CRD version, as the apiserver would.
pub struct SchemaValidator {
    schema: Value,
    compiled: kube::core::cel::CompiledSchema,
    root: RootContext,
    cel: Validator,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaValidator")
            .field("kind", &self.root.kind)
            .finish()
    }
}

impl SchemaValidator {
    /// A validator for the storage version of `crd` (its first served version when none is marked storage).
    /// Returns None when the CRD has no schema.
    pub fn for_crd(crd: &CustomResourceDefinition) -> Option<SchemaValidator> {
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .or_else(|| crd.spec.versions.first())?;
        let schema = version.schema.as_ref()?.open_api_v3_schema.as_ref()?;
        let schema = serde_json::to_value(schema).ok()?;
        let root = RootContext {
            api_version: format!("{}/{}", crd.spec.group, version.name),
            api_group: crd.spec.group.clone(),
            kind: crd.spec.names.kind.clone(),
        };
        Some(SchemaValidator::new(schema, root))
    }

    /// A validator for an `openAPIV3Schema` value.
    pub fn new(schema: Value, root: RootContext) -> SchemaValidator {
        let compiled = compile_schema(&schema);
        SchemaValidator {
            schema,
            compiled,
            root,
            cel: Validator::new(),
        }
    }

    /// The `openAPIV3Schema` this validator checks against.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Full admission of `obj` (mutated in place: defaults applied, unknown fields pruned). `old` is the stored
    /// object on update. With `strict`, unknown fields are errors instead of being dropped.
    pub fn admit(
        &self,
        obj: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        prune(&self.schema, obj, "", strict, true, &mut errors);
        default_values(&self.schema, obj);
        validate_structure(&self.schema, obj, "", true, &mut errors);
        // As kube-apiserver (hasBlockingErr in the CRD strategy): type, enum, required and length violations stop
        // CEL evaluation and add a `<nil>` cause saying so; other schema errors (bounds, pattern, format) are
        // reported together with the CEL rule failures. Checked against 1.37.2 in tests/real_k8s.rs.
        let blocking = errors.iter().any(|e| {
            matches!(
                e.reason,
                FieldReason::NotSupported
                    | FieldReason::Required
                    | FieldReason::TooLong
                    | FieldReason::TypeInvalid
            )
        });
        if blocking {
            errors.push(FieldError {
                field: "<nil>".into(),
                reason: FieldReason::Invalid,
                detail: "Invalid value: null: some validation rules were not checked because the object was \
                         invalid; correct the existing errors to complete validation"
                    .into(),
            });
            return Err(errors);
        }
        if let Err(cel) = self.validate_cel(obj, old) {
            errors.extend(cel);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Only the CEL rules (the object must already be structurally valid).
    pub fn validate_cel(&self, obj: &Value, old: Option<&Value>) -> Result<(), Vec<FieldError>> {
        // Like the API server, a field set to `null` (kept because the schema says `nullable`) is absent for CEL:
        // `has(self.tagName)` is false for `tagName: null`.
        let obj = &without_nulls(obj);
        let old = old.map(without_nulls);
        match self.cel.validate_compiled_with_context(
            &self.compiled,
            obj,
            old.as_ref(),
            Some(&self.root),
        ) {
            Ok(()) => Ok(()),
            Err(errs) => Err(errs
                .into_vec()
                .into_iter()
                // kube-apiserver 1.37 omits the value in CEL failures: `spec: Invalid value: <message>` (older
                // releases printed the type name, `Invalid value: "object": <message>`).
                .map(|e| FieldError {
                    field: e.field_path.clone(),
                    reason: FieldReason::Invalid,
                    detail: format!("Invalid value: {}", e.message),
                })
                .collect()),
        }
    }
}

/// `v` without object members whose value is `null`, at every depth.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Fields the apiserver handles itself at the root of every object.
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn prune(
    schema: &Value,
    v: &mut Value,
    path: &str,
    strict: bool,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let unknown: Vec<String> = map
                    .keys()
                    .filter(|k| {
                        !(props.contains_key(*k) || (root && ROOT_FIELDS.contains(&k.as_str())))
                    })
                    .cloned()
                    .collect();
                if !preserves_unknown(schema) {
                    for k in unknown {
                        if strict {
                            errors.push(FieldError {
                                field: join(path, &k),
                                reason: FieldReason::Forbidden,
                                detail: format!("unknown field \"{}\"", join(path, &k)),
                            });
                        } else {
                            map.remove(&k);
                        }
                    }
                }
                for (k, child) in map.iter_mut() {
                    if let Some(s) = props.get(k) {
                        prune(s, child, &join(path, k), strict, false, errors);
                    }
                }
            } else if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (k, child) in map.iter_mut() {
                    prune(s, child, &join(path, k), strict, false, errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, child) in items.iter_mut().enumerate() {
                    prune(s, child, &format!("{path}[{i}]"), strict, false, errors);
                }
            }
        }
        _ => {}
    }
}

fn default_values(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if !map.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in map.iter_mut() {
                    if let Some(s) = props.get(k) {
                        default_values(s, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|child| default_values(s, child));
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    match expected {
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn validate_structure(
    schema: &Value,
    v: &Value,
    path: &str,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    let field = path.to_string();
    let invalid = |detail: String| FieldError {
        field: field.clone(),
        reason: FieldReason::Invalid,
        detail,
    };
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
            errors.push(FieldError {
                field: field.clone(),
                reason: FieldReason::TypeInvalid,
                detail: format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema_type(schema)
                ),
            });
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    // An int-or-string of the right kind goes on to the value validations of whichever it is (maximum for the
    // integer, maxLength for the string).
    if int_or_string && !(v.is_i64() || v.is_u64() || v.is_string()) {
        errors.push(FieldError {
            field: field.clone(),
            reason: FieldReason::TypeInvalid,
            detail: format!(
                "Invalid value: \"{}\": {path} in body must be of type integer,string: \"{}\"",
                type_name(v),
                type_name(v)
            ),
        });
        return;
    }
    // A wrong type is reported together with an enum violation (kube-openapi runs both validators).
    let mut wrong_type = false;
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !int_or_string
        && !type_matches(expected, v)
    {
        errors.push(FieldError {
            field: field.clone(),
            reason: FieldReason::TypeInvalid,
            detail: format!(
                "Invalid value: \"{}\": {path} in body must be of type {expected}: \"{}\"",
                type_name(v),
                type_name(v)
            ),
        });
        wrong_type = true;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let supported: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => format!("\"{s}\""),
                other => format!("\"{other}\""),
            })
            .collect();
        errors.push(FieldError {
            field: field.clone(),
            reason: FieldReason::NotSupported,
            detail: format!(
                "Unsupported value: {v}: supported values: {}",
                supported.join(", ")
            ),
        });
        return;
    }
    if wrong_type {
        return;
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                errors.push(invalid(format!(
                    "Invalid value: {v}: {path} in body should be greater than or equal to {}",
                    fmt_bound(min)
                )));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                errors.push(invalid(format!(
                    "Invalid value: {v}: {path} in body should be less than or equal to {}",
                    fmt_bound(max)
                )));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            // Like kube-openapi's string validator: only the first failing of maxLength, minLength, pattern.
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(FieldError {
                    field: field.clone(),
                    reason: FieldReason::TooLong,
                    detail: format!("Too long: may not be more than {max} bytes"),
                });
            } else if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(invalid(format!(
                    "Invalid value: {v}: {path} in body should be at least {min} chars long"
                )));
            } else if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s))
            {
                errors.push(invalid(format!(
                    "Invalid value: {v}: {path} in body should match '{pattern}'"
                )));
            }
            // A format violation is a type error for kube-apiserver (and so blocks CEL).
            if schema.get("format").and_then(Value::as_str) == Some("date-time")
                && s.parse::<jiff::Timestamp>().is_err()
            {
                errors.push(FieldError {
                    field: field.clone(),
                    reason: FieldReason::TypeInvalid,
                    detail: format!(
                        "Invalid value: {v}: {path} in body must be of type date-time: {v}"
                    ),
                });
            }
        }
        Value::Object(map) => {
            let mut required: BTreeSet<&str> = BTreeSet::new();
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                required.extend(req.iter().filter_map(Value::as_str));
            }
            for key in required {
                if !map.contains_key(key) {
                    errors.push(FieldError {
                        field: join(path, key),
                        reason: FieldReason::Required,
                        detail: "Required value".into(),
                    });
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, child) in map {
                if root && ROOT_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    validate_structure(s, child, &join(path, k), false, errors);
                } else if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    validate_structure(s, child, &join(path, k), false, errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    validate_structure(s, child, &format!("{path}[{i}]"), false, errors);
                }
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<String> = keys
                        .iter()
                        .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                        .collect();
                    if !seen.insert(key.clone()) {
                        errors.push(FieldError {
                            field: format!("{path}[{i}]"),
                            reason: FieldReason::Invalid,
                            detail: format!("Duplicate value: {}", key.join(",")),
                        });
                    }
                }
            }
        }
        _ => {}
    }
}

fn schema_type(schema: &Value) -> &str {
    schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
}

fn fmt_bound(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Admission for the Kubernetes emulator: every served CRD is validated by its own schema and CEL rules, as a
/// real apiserver would; built-in resources are accepted as they are.
pub struct CrdAdmission {
    validators: Vec<(String, String, SchemaValidator)>,
}

impl CrdAdmission {
    /// Admission for these CRDs.
    pub fn new(crds: &[CustomResourceDefinition]) -> CrdAdmission {
        let validators = crds
            .iter()
            .filter_map(|crd| {
                SchemaValidator::for_crd(crd)
                    .map(|v| (crd.spec.group.clone(), crd.spec.names.plural.clone(), v))
            })
            .collect();
        CrdAdmission { validators }
    }
}

impl crate::Admission for CrdAdmission {
    fn admit(
        &self,
        resource: &crate::ResourceInfo,
        _subresource: Option<&str>,
        new: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<Vec<String>, Vec<crate::FieldError>> {
        let Some((_, _, validator)) = self
            .validators
            .iter()
            .find(|(g, p, _)| *g == resource.group && *p == resource.plural)
        else {
            return Ok(Vec::new());
        };
        validator
            .admit(new, old, strict)
            .map(|()| Vec::new())
            .map_err(|errs| {
                errs.into_iter()
                    .map(|e| {
                        use crate::FieldErrorReason as R;
                        let reason = match e.reason {
                            FieldReason::Required => R::Required,
                            FieldReason::Invalid => R::Invalid,
                            FieldReason::NotSupported => R::NotSupported,
                            FieldReason::Forbidden => R::Forbidden,
                            FieldReason::TypeInvalid => R::TypeInvalid,
                            FieldReason::TooLong => R::TooLong,
                        };
                        crate::FieldError::new(e.field, reason, e.detail)
                    })
                    .collect()
            })
    }
}
