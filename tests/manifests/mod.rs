//! The installation manifests as the real tools render them, shared by tests/deploy.rs (kustomize) and tests/helm.rs
//! (the Helm chart): rendering with `kubectl kustomize` and `helm template`, the CRDs of `crds/`, and RBAC as a set of
//! grants.
//!
//! For a dry run against a real API server: [`server_dry_run_inputs`] returns every installation variant as YAML,
//! ready for `kubectl apply --dry-run=server -f -`, with the namespaces that must exist first.
#![allow(dead_code)]

pub mod pss;
// The skip rule of tests/common (every test binary that uses `manifests` also has `mod common;`).
use crate::common::skip;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The chart, relative to the repository root.
pub const CHART: &str = "deploy/helm/droplet-operator";
/// The values file that sets every option of the chart.
pub const ALL_VALUES: &str = "deploy/helm/droplet-operator/ci/all-values.yaml";
/// Where the CRDs are copied to (kustomize and Helm cannot reference files outside their roots).
pub const CRD_COPIES: &[&str] = &["deploy/crds", "deploy/helm/droplet-operator/crds"];

pub fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

/// (kind, namespace, name) of every object, sorted.
pub fn identities(objs: &[Value]) -> Vec<(String, String, String)> {
    let mut ids: Vec<_> = objs
        .iter()
        .map(|o| {
            (
                s(o, "/kind").to_string(),
                s(o, "/metadata/namespace").to_string(),
                s(o, "/metadata/name").to_string(),
            )
        })
        .collect();
    ids.sort();
    ids
}

/// Parses a multi-document YAML stream, dropping empty documents.
pub fn parse_docs(text: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("rendered YAML of {what} does not parse: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// kustomize

/// `kubectl kustomize dir` as text. `None` (after printing why) when kubectl is absent.
pub fn kustomize_text(dir: &Path) -> Option<String> {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip::skip(&format!(
                "kubectl is not installed (needed to render {})",
                dir.display()
            ));
            return None;
        }
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("kustomize output is UTF-8"))
}

/// Renders the kustomization in `dir` with `kubectl kustomize`. `None` (after printing why) when kubectl is absent.
pub fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    kustomize_text(dir).map(|text| parse_docs(&text, &dir.display().to_string()))
}

// ---------------------------------------------------------------------------------------------------------------
// helm

fn helm_from_paths_env() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let file = Path::new(&home).join(".cache/droplet-operator/tools/paths.env");
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("HELM_BIN="))
        .map(|p| PathBuf::from(p.trim().trim_matches('"')))
        .filter(|p| p.is_file())
}

fn helm_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
}

/// The real `helm`: `$HELM_BIN`, else `HELM_BIN=` in `$HOME/.cache/droplet-operator/tools/paths.env` (written by
/// tests/k8s/build.sh, which builds helm from its Go module), else `helm` on PATH.
pub fn find_helm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HELM_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "HELM_BIN={} is not a file", p.display());
        return Some(p);
    }
    helm_from_paths_env().or_else(helm_on_path)
}

/// [`find_helm`], or: in CI (`CI=true`) a failure, elsewhere `None` after a visible `SKIPPED:` line.
pub fn helm_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(p) = find_helm() {
        return Some(p);
    }
    skip::skip(&format!(
        "{test}: helm not found: set HELM_BIN, or build it with tests/k8s/build.sh helm \
         (writes $HOME/.cache/droplet-operator/tools/paths.env), or put helm on PATH"
    ));
    None
}

/// Runs helm with `args`; Ok(stdout) or Err(stderr).
pub fn helm(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        // No repository config, cache or kubeconfig of the machine: rendering must not depend on them.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("droplet-operator-helm/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("droplet-operator-helm/cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("droplet-operator-helm/data"),
        )
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm output is UTF-8"))
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm template <release> <chart> -n <namespace> --include-crds [-f values]... [extra]...` as text.
pub fn helm_template_text(
    bin: &Path,
    release: &str,
    namespace: &str,
    values: &[&str],
    extra: &[&str],
) -> Result<String, String> {
    let chart = Path::new(ROOT).join(CHART);
    let chart = chart.to_str().expect("UTF-8 path");
    let mut args = vec![
        "template",
        release,
        chart,
        "-n",
        namespace,
        "--include-crds",
    ];
    let files: Vec<String> = values
        .iter()
        .map(|v| Path::new(ROOT).join(v).display().to_string())
        .collect();
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    args.extend(extra);
    helm(bin, &args)
}

/// [`helm_template_text`], parsed; panics when helm refuses.
pub fn helm_template(
    bin: &Path,
    release: &str,
    namespace: &str,
    values: &[&str],
    extra: &[&str],
) -> Vec<Value> {
    let text = helm_template_text(bin, release, namespace, values, extra)
        .unwrap_or_else(|e| panic!("helm template ({values:?} {extra:?}) failed:\n{e}"));
    parse_docs(&text, "the chart")
}

// ---------------------------------------------------------------------------------------------------------------
// CRDs

/// `(file name, bytes)` of every `*.yaml` in `dir` except `kustomization.yaml`, sorted by name.
pub fn yaml_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// The repository's CRDs (`crds/*.yaml`), as parsed objects by name.
pub fn repository_crds() -> BTreeMap<String, Value> {
    yaml_files(&Path::new(ROOT).join("crds"))
        .into_iter()
        .map(|(file, bytes)| {
            let text = String::from_utf8(bytes).expect("UTF-8 CRD");
            let v: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("crds/{file}: {e}"));
            assert_eq!(s(&v, "/kind"), "CustomResourceDefinition", "crds/{file}");
            (s(&v, "/metadata/name").to_string(), v)
        })
        .collect()
}

/// `v` with every integral number written as an integer: kustomize re-serialises `minimum: 1.0` as `minimum: 1`, the
/// same JSON number.
pub fn normalize_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            // Up to 2^53: every integer there is exact in an f64 (the CRD bounds IDs by 2^53 - 1).
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => {
                Value::from(f as i64)
            }
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(normalize_numbers).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), normalize_numbers(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The rendered CRDs are exactly those of `crds/`, object for object (renderers re-serialise YAML, so the bytes are
/// compared where they are copied: tests/deploy.rs `crd_copies_are_byte_identical_to_crds`).
pub fn assert_crds_are_the_repository_crds(objs: &[Value], what: &str) {
    let rendered: BTreeMap<String, Value> = objs
        .iter()
        .filter(|o| s(o, "/kind") == "CustomResourceDefinition")
        .map(|o| (s(o, "/metadata/name").to_string(), o.clone()))
        .collect();
    let expected = repository_crds();
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what} renders other CRDs than crds/ holds"
    );
    for (name, crd) in &expected {
        assert!(
            normalize_numbers(&rendered[name]) == normalize_numbers(crd),
            "{what}: CRD {name} differs from crds/ (refresh the copies: \
             DROPLET_OPERATOR_SYNC_CRDS=1 cargo test --test deploy crd_copies)"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// RBAC

/// One effective grant: where it applies (`None`: cluster-wide), apiGroup, resource, verb.
pub type Grant = (Option<String>, String, String, String);

/// Every (scope, apiGroup, resource, verb) granted to the operator's ServiceAccount (the one rendered
/// ServiceAccount, or `sa` = (namespace, name) when given) through a binding that resolves to a rendered role.
/// Panics on rules this table cannot express (resourceNames, nonResourceURLs, unknown keys), on bindings of other
/// subjects and on roles bound by nothing.
pub fn grants_to(objs: &[Value], sa: Option<(&str, &str)>) -> BTreeSet<Grant> {
    let (sa_ns, sa_name) = match sa {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => {
            let sa = objs
                .iter()
                .find(|o| s(o, "/kind") == "ServiceAccount")
                .expect("a ServiceAccount");
            (
                s(sa, "/metadata/namespace").to_string(),
                s(sa, "/metadata/name").to_string(),
            )
        }
    };
    let roles: BTreeMap<(String, String, String), &Value> = objs
        .iter()
        .filter(|o| matches!(s(o, "/kind"), "Role" | "ClusterRole"))
        .map(|o| {
            let key = (
                s(o, "/kind").to_string(),
                s(o, "/metadata/namespace").to_string(),
                s(o, "/metadata/name").to_string(),
            );
            (key, o)
        })
        .collect();
    let mut out = BTreeSet::new();
    let mut used = BTreeSet::new();
    for b in objs
        .iter()
        .filter(|o| matches!(s(o, "/kind"), "RoleBinding" | "ClusterRoleBinding"))
    {
        let name = s(b, "/metadata/name");
        let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
        assert!(!subjects.is_empty(), "binding {name} has no subjects");
        for subj in &subjects {
            assert_eq!(
                (s(subj, "/kind"), s(subj, "/name"), s(subj, "/namespace")),
                ("ServiceAccount", sa_name.as_str(), sa_ns.as_str()),
                "binding {name} must bind only the operator's ServiceAccount"
            );
        }
        let binding_ns = s(b, "/metadata/namespace").to_string();
        let ref_kind = s(b, "/roleRef/kind").to_string();
        let role_ns = if ref_kind == "Role" {
            binding_ns.clone()
        } else {
            String::new()
        };
        let key = (ref_kind, role_ns, s(b, "/roleRef/name").to_string());
        let role = roles
            .get(&key)
            .unwrap_or_else(|| panic!("binding {name} refers to {key:?}, which is not rendered"));
        used.insert(key.clone());
        let scope = match s(b, "/kind") {
            "ClusterRoleBinding" => None,
            _ => Some(binding_ns),
        };
        for rule in role["rules"].as_array().cloned().unwrap_or_default() {
            let keys: BTreeSet<&str> = rule
                .as_object()
                .expect("rule is a map")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["apiGroups", "resources", "verbs"]),
                "rule {rule} of {key:?}: only apiGroups/resources/verbs are expected"
            );
            let strings = |field: &str| -> Vec<String> {
                rule[field]
                    .as_array()
                    .unwrap_or_else(|| panic!("rule {rule}: {field} is a list"))
                    .iter()
                    .map(|v| v.as_str().expect("string").to_string())
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        out.insert((scope.clone(), group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    let unused: Vec<_> = roles.keys().filter(|k| !used.contains(*k)).collect();
    assert!(unused.is_empty(), "roles bound by nothing: {unused:?}");
    out
}

/// [`grants_to`] the one rendered ServiceAccount.
pub fn grants(objs: &[Value]) -> BTreeSet<Grant> {
    grants_to(objs, None)
}

/// The operator's permissions as a table: (apiGroup, resource, sorted verbs), sorted, whatever the scope.
pub fn granted_rules(objs: &[Value]) -> Vec<(String, String, Vec<String>)> {
    let mut table: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (_, group, resource, verb) in grants(objs) {
        table.entry((group, resource)).or_default().insert(verb);
    }
    table
        .into_iter()
        .map(|((g, r), verbs)| (g, r, verbs.into_iter().collect()))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// For a dry run against a real API server

/// One installation variant, rendered.
pub struct DryRunInput {
    /// What it is, for messages: `kustomize deploy/`, `helm (all values)`, ...
    pub name: String,
    /// Multi-document YAML for `kubectl apply --dry-run=server -f -` (CRDs included).
    pub yaml: String,
    /// Namespaces that must exist before the dry run (a dry run creates none, so objects in a namespace that the
    /// same input creates would be refused with "namespaces ... not found").
    pub namespaces: Vec<String>,
}

/// Every installation variant rendered by the real tools, for the real-API-server harness to check with
/// `kubectl apply --dry-run=server`: kustomize `deploy/` and `deploy/overlays/namespaced/`, the chart with default
/// values and with every option (ServiceMonitor left off: a bare API server has no monitoring.coreos.com CRDs).
/// `None` (after printing why) when kubectl or helm is missing outside CI; a failure when helm is missing in CI.
pub fn server_dry_run_inputs() -> Option<Vec<DryRunInput>> {
    let root = Path::new(ROOT);
    let mut inputs = Vec::new();
    for dir in ["deploy", "deploy/overlays/namespaced"] {
        inputs.push(DryRunInput {
            name: format!("kustomize {dir}/"),
            yaml: kustomize_text(&root.join(dir))?,
            namespaces: vec!["droplet-operator".into()],
        });
    }
    let bin = helm_or_skip("server_dry_run_inputs")?;
    let default = helm_template_text(&bin, "droplet-operator", "droplet-operator", &[], &[])
        .unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
    inputs.push(DryRunInput {
        name: "helm (default values)".into(),
        yaml: default,
        namespaces: vec!["droplet-operator".into()],
    });
    let all = helm_template_text(
        &bin,
        "droplet-operator",
        "ops",
        &[ALL_VALUES],
        &["--set", "metrics.serviceMonitor.enabled=false"],
    )
    .unwrap_or_else(|e| panic!("helm template -f {ALL_VALUES} failed:\n{e}"));
    inputs.push(DryRunInput {
        name: format!("helm (-f {ALL_VALUES})"),
        yaml: all,
        namespaces: vec!["ops".into(), "team-a".into(), "team-b".into()],
    });
    Some(inputs)
}
