//! The test resource of the emulator's tests (crates/kube-emu/tests) and of the kubectl tests (tests/kubectl.rs):
//! a namespaced `Widget` with a status, printer columns, a short name and a category, and an admission that
//! rejects `type: bad` the way a CEL rule would.
#![allow(dead_code)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kube_emu::{Admission, FieldError, FieldErrorReason, ResourceInfo};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A Widget is a test resource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "example.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd",
    category = "examples",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct WidgetSpec {
    /// The shape of the widget: round or square.
    #[serde(rename = "type")]
    pub type_: String,
    /// How big the widget is, in centimetres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Rejects `type: bad` the way a CEL rule would.
pub struct NoBadWidgets;

impl Admission for NoBadWidgets {
    fn admit(
        &self,
        resource: &ResourceInfo,
        _sub: Option<&str>,
        new: &mut Value,
        _old: Option<&Value>,
        _strict: bool,
    ) -> Result<Vec<String>, Vec<FieldError>> {
        if resource.kind == "Widget" && new.pointer("/spec/type") == Some(&json!("bad")) {
            return Err(vec![FieldError::new(
                "spec",
                FieldErrorReason::Invalid,
                "Invalid value: \"object\": type must be round or square",
            )]);
        }
        Ok(vec![])
    }
}

/// A Widget named `name` of type `ty`.
pub fn widget(name: &str, ty: &str) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            type_: ty.into(),
            size: None,
        },
    )
}
