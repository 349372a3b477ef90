//! The resource types the emulator serves: built-in kinds plus every configured CRD version.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// One additionalPrinterColumn of a CRD version (or of a built-in table).
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// Optional OpenAPI format.
    pub format: String,
    /// Column description.
    pub description: String,
    /// 0 = shown by default; >0 only with `-o wide`.
    pub priority: i32,
    /// Simple JSONPath such as `.spec.type` or `.status.actions[0].id`.
    pub json_path: String,
}

/// A served group/version/resource.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// API group, empty for core.
    pub group: String,
    /// API version, e.g. `v1alpha1`.
    pub version: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced (true) or cluster-scoped.
    pub namespaced: bool,
    /// Short names (e.g. `da`).
    pub short_names: Vec<String>,
    /// Categories (e.g. `digitalocean`, `all`).
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status_subresource: bool,
    /// Printer columns for tables (Name is always added first).
    pub printer_columns: Vec<PrinterColumn>,
    /// The `openAPIV3Schema` of this version for CRDs.
    pub schema: Option<Value>,
    /// True for custom resources (CRD-backed).
    pub custom: bool,
    /// Objects of all views sharing this key live in one table (events: core and events.k8s.io).
    pub store_key: String,
}

impl ResourceInfo {
    /// `group/version` or `v1` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural` for core), as in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (or `Kind` for core), as in Invalid messages.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether `metadata.generation` is maintained (CRs, and built-ins that have a spec).
    pub fn tracks_generation(&self) -> bool {
        self.custom || self.plural == "leases"
    }

    fn builtin(
        group: &str,
        plural: &str,
        singular: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
    ) -> Self {
        Self {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            singular: singular.into(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            status_subresource: false,
            printer_columns: Vec::new(),
            schema: None,
            custom: false,
            store_key: plural.into(),
        }
    }
}

/// Errors in a configured CRD.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The CRD could not be read.
    #[error("invalid CustomResourceDefinition {0}: {1}")]
    Invalid(String, String),
}

/// All served resources.
#[derive(Debug, Default)]
pub struct Registry {
    /// Every served (group, version, plural).
    pub resources: Vec<Arc<ResourceInfo>>,
    by_gvr: BTreeMap<(String, String, String), Arc<ResourceInfo>>,
    /// The CRDs as given (JSON), for `apiextensions.k8s.io` reads.
    pub crds: Vec<Value>,
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Registry {
    /// Built-ins plus the given CRDs.
    pub fn new(crds: &[CustomResourceDefinition]) -> Result<Self, RegistryError> {
        let mut reg = Registry::default();
        let mut ns =
            ResourceInfo::builtin("", "namespaces", "namespace", "Namespace", false, &["ns"]);
        ns.status_subresource = true;
        ns.printer_columns = vec![
            col("Status", "string", ".status.phase"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ];
        reg.add(ns);
        let mut secret = ResourceInfo::builtin("", "secrets", "secret", "Secret", true, &[]);
        secret.printer_columns = vec![
            col("Type", "string", ".type"),
            col("Data", "integer", ".data"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ];
        reg.add(secret);
        let mut cm =
            ResourceInfo::builtin("", "configmaps", "configmap", "ConfigMap", true, &["cm"]);
        cm.printer_columns = vec![
            col("Data", "integer", ".data"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ];
        reg.add(cm);
        let mut ev = ResourceInfo::builtin("", "events", "event", "Event", true, &["ev"]);
        ev.printer_columns = vec![
            col("Last Seen", "date", ".lastTimestamp"),
            col("Type", "string", ".type"),
            col("Reason", "string", ".reason"),
            col("Object", "string", ".involvedObject"),
            col("Message", "string", ".message"),
        ];
        reg.add(ev);
        let mut ev2 = ResourceInfo::builtin("events.k8s.io", "events", "event", "Event", true, &[]);
        ev2.printer_columns = vec![
            col("Type", "string", ".type"),
            col("Reason", "string", ".reason"),
            col("Object", "string", ".regarding"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ];
        reg.add(ev2);
        let mut lease =
            ResourceInfo::builtin("coordination.k8s.io", "leases", "lease", "Lease", true, &[]);
        lease.printer_columns = vec![
            col("Holder", "string", ".spec.holderIdentity"),
            col("Age", "date", ".metadata.creationTimestamp"),
        ];
        reg.add(lease);

        let mut crd_res = ResourceInfo::builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
        );
        crd_res.categories = vec!["api-extensions".into()];
        crd_res.status_subresource = true;
        crd_res.printer_columns = vec![col("Created At", "string", ".metadata.creationTimestamp")];
        reg.add(crd_res);

        for crd in crds {
            let v = serde_json::to_value(crd)
                .map_err(|e| RegistryError::Invalid("?".into(), e.to_string()))?;
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let spec = v
                .get("spec")
                .ok_or_else(|| RegistryError::Invalid(name.clone(), "no spec".into()))?;
            let names = spec.get("names").cloned().unwrap_or_default();
            let group = s(spec, "group");
            let plural = s(&names, "plural");
            let kind = s(&names, "kind");
            if group.is_empty() || plural.is_empty() || kind.is_empty() {
                return Err(RegistryError::Invalid(
                    name,
                    "group, names.plural and names.kind are required".into(),
                ));
            }
            let mut singular = s(&names, "singular");
            if singular.is_empty() {
                singular = kind.to_lowercase();
            }
            let mut list_kind = s(&names, "listKind");
            if list_kind.is_empty() {
                list_kind = format!("{kind}List");
            }
            let namespaced = s(spec, "scope") != "Cluster";
            for ver in spec
                .get("versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if ver.get("served").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                let mut cols: Vec<PrinterColumn> = ver
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|c| PrinterColumn {
                        name: s(c, "name"),
                        type_: s(c, "type"),
                        format: s(c, "format"),
                        description: s(c, "description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0) as i32,
                        json_path: s(c, "jsonPath"),
                    })
                    .collect();
                if cols.is_empty() {
                    cols.push(col("Age", "date", ".metadata.creationTimestamp"));
                }
                reg.add(ResourceInfo {
                    group: group.clone(),
                    version: s(ver, "name"),
                    plural: plural.clone(),
                    singular: singular.clone(),
                    kind: kind.clone(),
                    list_kind: list_kind.clone(),
                    namespaced,
                    short_names: strings(names.get("shortNames")),
                    categories: strings(names.get("categories")),
                    status_subresource: ver.pointer("/subresources/status").is_some(),
                    printer_columns: cols,
                    schema: ver.pointer("/schema/openAPIV3Schema").cloned(),
                    custom: true,
                    store_key: format!("{plural}.{group}"),
                });
            }
            reg.crds.push(v);
        }
        Ok(reg)
    }

    fn add(&mut self, r: ResourceInfo) {
        let r = Arc::new(r);
        self.by_gvr.insert(
            (r.group.clone(), r.version.clone(), r.plural.clone()),
            r.clone(),
        );
        self.resources.push(r);
    }

    /// Look up a served resource.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.by_gvr
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Served group/versions in registration order: (group, [versions]).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Resources of one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .cloned()
            .collect()
    }
}

fn col(name: &str, type_: &str, path: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.into(),
    }
}
