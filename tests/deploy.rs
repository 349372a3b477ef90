//! The installation manifests as `kubectl kustomize` renders them (deploy/, its namespaced overlay, a tenant overlay
//! of it, the ServiceMonitor component): exactly the expected objects, a Deployment that passes the *restricted* Pod
//! Security Standard (checked control by control), RBAC that grants exactly [`EXPECTED_RULES`], and flags and env
//! vars that `droplet-operator run` really accepts. Then the real binary runs against the sandbox's emulated API
//! server: every request it makes must be allowed by the rendered RBAC, and every metric it exposes documented.
//!
//! The tests that render need kubectl (>= 1.21 has kustomize built in): without it they fail in CI (`CI=true`) and
//! elsewhere print `SKIPPED: <test>: ...` (`common::skip`, shared with `manifests`).
//! [`granted_rules`] turns rendered RBAC into an `(apiGroup, resource, verbs)` table; [`rbac_attributes`] turns a
//! request into what RBAC checks.

mod common;
mod manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use serde_json::{Value, json};

use manifests::pss::restricted_violations;
use manifests::{
    CRD_COPIES, ROOT, assert_crds_are_the_repository_crds, granted_rules, grants, identities,
    kustomize, repository_crds, s, yaml_files,
};

const BIN: &str = env!("CARGO_BIN_EXE_droplet-operator");
const NS: &str = "droplet-operator";
const SA: &str = "droplet-operator";
const IMAGE: &str = "ghcr.io/droplet-operator/droplet-operator:0.1.0";

/// What the operator calls on the Kubernetes API: (apiGroup, resource, verbs), verbs sorted.
/// dropletactions: the controller's list+watch, get, delete for ttlSecondsAfterFinished and history limits, create for
/// schedule children, patch to consume the resend/adopt annotations; dropletactionschedules: list+watch; status (both): merge patches;
/// events: kube-runtime's Recorder (POST, then merge-PATCH of the series); secrets: spec.tokenSecretRef, by name;
/// leases: leader election.
const EXPECTED_RULES: &[(&str, &str, &[&str])] = &[
    ("", "secrets", &["get"]),
    (
        "coordination.k8s.io",
        "leases",
        &["create", "get", "patch", "update"],
    ),
    (
        "droplet-operator.dev",
        "dropletactions",
        &["create", "delete", "get", "list", "patch", "watch"],
    ),
    ("droplet-operator.dev", "dropletactions/status", &["patch"]),
    (
        "droplet-operator.dev",
        "dropletactionschedules",
        &["get", "list", "watch"],
    ),
    (
        "droplet-operator.dev",
        "dropletactionschedules/status",
        &["patch"],
    ),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// Resources granted only in the operator's own namespace, even by the cluster-wide installation.
const NAMESPACE_ONLY: &[&str] = &["leases"];

const WRITE_VERBS: &[&str] = &[
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "bind",
    "escalate",
    "impersonate",
    "approve",
    "sign",
];

// ---------------------------------------------------------------------------------------------------------------
// Rendering

fn render(rel: &str) -> Option<Vec<Value>> {
    kustomize(&Path::new(ROOT).join(rel))
}

/// `to` relative to `from` (kustomize refuses absolute paths in `resources:` and `components:`).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c.as_os_str());
    }
    rel
}

/// Renders a throw-away kustomization (`body` plus `resources`/`components` pointing into deploy/).
fn render_wrapper(resources: &[&str], components: &[&str], body: &str) -> Option<Vec<Value>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let here = dir.path().canonicalize().expect("canonical temp dir");
    let root = Path::new(ROOT)
        .canonicalize()
        .expect("canonical manifest dir");
    let list = |paths: &[&str]| -> String {
        paths
            .iter()
            .map(|p| format!("  - {}\n", relative(&here, &root.join(p)).display()))
            .collect()
    };
    let mut k = String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n");
    k.push_str(body);
    k.push_str(&format!("resources:\n{}", list(resources)));
    if !components.is_empty() {
        k.push_str(&format!("components:\n{}", list(components)));
    }
    std::fs::write(here.join("kustomization.yaml"), k).expect("write kustomization");
    kustomize(&here)
}

fn ids(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(k, ns, n)| (k.to_string(), ns.to_string(), n.to_string()))
        .collect();
    v.sort();
    v
}

/// (CustomResourceDefinition, "", name) of every CRD in crds/.
fn crd_identities() -> Vec<(String, String, String)> {
    repository_crds()
        .into_keys()
        .map(|name| ("CustomResourceDefinition".to_string(), String::new(), name))
        .collect()
}

/// What `kubectl apply -k deploy/` creates: the CRDs and the operator.
fn base_identities() -> Vec<(String, String, String)> {
    let mut v = crd_identities();
    v.extend(ids(&[
        ("Namespace", "", NS),
        ("ServiceAccount", NS, SA),
        ("ClusterRole", "", "droplet-operator"),
        ("ClusterRole", "", "droplet-operator-token-reader"),
        ("ClusterRoleBinding", "", "droplet-operator"),
        ("ClusterRoleBinding", "", "droplet-operator-token-reader"),
        ("Role", NS, "droplet-operator-leader-election"),
        ("RoleBinding", NS, "droplet-operator-leader-election"),
        ("Deployment", NS, "droplet-operator"),
        ("Service", NS, "droplet-operator-metrics"),
    ]));
    v.sort();
    v
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objs.iter().filter(|o| s(o, "/kind") == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn deployment(objs: &[Value]) -> Deployment {
    serde_json::from_value(one(objs, "Deployment").clone()).expect("Deployment parses")
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec
        .template
        .spec
        .as_ref()
        .expect("Deployment has a pod template spec")
}

fn container(d: &Deployment) -> &Container {
    let pod = pod_spec(d);
    assert_eq!(pod.containers.len(), 1, "one container");
    &pod.containers[0]
}

// ---------------------------------------------------------------------------------------------------------------
// RBAC

fn expected_rules() -> Vec<(String, String, Vec<String>)> {
    EXPECTED_RULES
        .iter()
        .map(|(g, r, verbs)| {
            (
                g.to_string(),
                r.to_string(),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

/// Checks common to every variant: the exact table, no wildcards, Secrets only by name.
fn assert_rbac(objs: &[Value]) {
    assert_eq!(granted_rules(objs), expected_rules());
    for (scope, group, resource, verb) in grants(objs) {
        for part in [&group, &resource, &verb] {
            assert!(
                !part.contains('*'),
                "wildcard in {scope:?} {group}/{resource} {verb}"
            );
        }
        if resource == "secrets" {
            assert_eq!(verb, "get", "Secrets: get by name only, never list/watch");
        }
        if NAMESPACE_ONLY.contains(&resource.as_str()) {
            assert_eq!(scope.as_deref(), Some(NS), "{resource} only in {NS}");
        }
    }
}

fn assert_restricted(d: &Deployment) {
    let annotations = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let violations = restricted_violations(pod_spec(d), &annotations);
    assert!(
        violations.is_empty(),
        "the Deployment violates the restricted Pod Security Standard: {violations:?}"
    );
}

/// The operator's own hardening on top of "restricted", and its resources.
fn assert_hardened(d: &Deployment) {
    let c = container(d);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let pod = pod_spec(d);
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_user, Some(65532), "distroless nonroot UID");
    assert_eq!(psc.run_as_non_root, Some(true));
    let r = c.resources.as_ref().expect("resources");
    let requests = r.requests.as_ref().expect("requests");
    let limits = r.limits.as_ref().expect("limits");
    for key in ["cpu", "memory"] {
        assert!(requests.contains_key(key), "requests.{key}");
    }
    assert!(limits.contains_key("memory"), "limits.memory");
    let mib = |q: &str| -> u64 {
        q.strip_suffix("Mi")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("memory quantity {q} in Mi"))
    };
    assert!(mib(&limits["memory"].0) >= mib(&requests["memory"].0));
}

fn env_value(c: &Container, name: &str) -> Option<Value> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .map(|e| serde_json::to_value(e).expect("env serialises"))
}

// ---------------------------------------------------------------------------------------------------------------
// Tests

#[test]
fn base_renders_exactly_the_expected_objects() {
    let Some(objs) = render("deploy") else { return };
    assert_eq!(identities(&objs), base_identities());
    let ns = one(&objs, "Namespace");
    assert_eq!(
        s(ns, "/metadata/labels/pod-security.kubernetes.io~1enforce"),
        "restricted",
        "the namespace enforces the restricted profile"
    );
}

/// The command that refreshes every copy of crds/ (named in each failure message).
const SYNC_CRDS: &str = "DROPLET_OPERATOR_SYNC_CRDS=1 cargo test --test deploy crd_copies";

/// `deploy/crds/kustomization.yaml` listing `files`.
fn crds_kustomization(files: &[String]) -> String {
    let mut k = String::from(
        "# The CustomResourceDefinitions, byte-identical copies of crds/ (kustomize cannot reference files outside its root).\n\
         # Do not edit here: after `cargo run -- crd > crds/...`, run\n\
         #   DROPLET_OPERATOR_SYNC_CRDS=1 cargo test --test deploy crd_copies\n\
         # which copies every crds/*.yaml here and into deploy/helm/droplet-operator/crds/ and rewrites this list\n\
         # (tests/deploy.rs fails while a copy or this list is stale).\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for f in files {
        k.push_str(&format!("  - {f}\n"));
    }
    k
}

/// Writes every copy from crds/ (removing copies of CRDs that are gone) and the kustomization listing them.
fn sync_crd_copies() {
    let root = Path::new(ROOT);
    let source = yaml_files(&root.join("crds"));
    for dir in CRD_COPIES {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).expect("create the copy directory");
        for (stale, _) in yaml_files(&dir) {
            std::fs::remove_file(dir.join(stale)).expect("remove a stale copy");
        }
        for (file, bytes) in &source {
            std::fs::write(dir.join(file), bytes).expect("write a copy");
        }
    }
    let files: Vec<String> = source.into_iter().map(|(f, _)| f).collect();
    std::fs::write(
        root.join("deploy/crds/kustomization.yaml"),
        crds_kustomization(&files),
    )
    .expect("write deploy/crds/kustomization.yaml");
}

/// kustomize and Helm cannot read files outside their roots, so deploy/crds/ and the chart's crds/ hold copies of
/// crds/: the same files, byte for byte, and deploy/crds/kustomization.yaml lists each of them (any number of CRDs).
#[test]
fn crd_copies_are_byte_identical_to_crds() {
    if std::env::var_os("DROPLET_OPERATOR_SYNC_CRDS").is_some() {
        sync_crd_copies();
    }
    let root = Path::new(ROOT);
    let source = yaml_files(&root.join("crds"));
    assert!(!source.is_empty(), "crds/ holds the CRDs");
    let names: Vec<&String> = source.iter().map(|(f, _)| f).collect();
    for dir in CRD_COPIES {
        let copies = yaml_files(&root.join(dir));
        let copy_names: Vec<&String> = copies.iter().map(|(f, _)| f).collect();
        assert_eq!(
            copy_names, names,
            "{dir}/ holds other files than crds/; run `{SYNC_CRDS}`"
        );
        for ((file, bytes), (_, copy)) in source.iter().zip(&copies) {
            assert!(
                bytes == copy,
                "{dir}/{file} differs from crds/{file}; run `{SYNC_CRDS}`"
            );
        }
    }
    let listed = std::fs::read_to_string(root.join("deploy/crds/kustomization.yaml"))
        .expect("deploy/crds/kustomization.yaml");
    let files: Vec<String> = names.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        listed,
        crds_kustomization(&files),
        "deploy/crds/kustomization.yaml does not list exactly crds/*.yaml; run `{SYNC_CRDS}`"
    );
}

/// `kubectl apply -k deploy/` and the namespaced overlay install the CRDs of crds/, unchanged.
#[test]
fn kustomizations_install_the_crds_of_crds_dir() {
    for dir in ["deploy", "deploy/overlays/namespaced"] {
        let Some(objs) = render(dir) else { return };
        assert_crds_are_the_repository_crds(&objs, dir);
        let crd_pos = objs
            .iter()
            .rposition(|o| s(o, "/kind") == "CustomResourceDefinition");
        let first_other = objs
            .iter()
            .position(|o| !matches!(s(o, "/kind"), "CustomResourceDefinition" | "Namespace"));
        assert!(
            crd_pos < first_other,
            "{dir}: the CRDs come before the objects that may use them"
        );
    }
}

#[test]
fn base_deployment_passes_restricted_pod_security_and_is_hardened() {
    let Some(objs) = render("deploy") else { return };
    let d = deployment(&objs);
    assert_restricted(&d);
    assert_hardened(&d);
    assert_eq!(d.spec.replicas, Some(1));
    let pod = pod_spec(&d);
    assert_eq!(pod.service_account_name.as_deref(), Some(SA));
    assert_eq!(pod.automount_service_account_token, Some(true));
    let c = container(&d);
    assert_eq!(c.image.as_deref(), Some(IMAGE));
}

#[test]
fn base_deployment_wiring_matches_the_binary() {
    let Some(objs) = render("deploy") else { return };
    let d = deployment(&objs);
    let c = container(&d);
    let pod = pod_spec(&d);
    let args = c.args.clone().unwrap_or_default();
    assert!(
        c.command.is_none(),
        "the image's ENTRYPOINT runs the binary"
    );
    assert_eq!(args.first().map(String::as_str), Some("run"));

    // Every flag and env var the manifest sets is one `droplet-operator run` accepts.
    let help = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("run the binary");
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap_or(arg);
        assert!(
            flag.starts_with("--")
                && help.lines().any(|l| l
                    .split_whitespace()
                    // `--leader-elect[=<LEADER_ELECT>]`: a flag with an optional value.
                    .any(|w| w.trim_end_matches(',').split('[').next() == Some(flag))),
            "{flag} is not a flag of `droplet-operator run`"
        );
    }
    for e in c.env.iter().flatten() {
        assert!(
            help.contains(&format!("[env: {}=", e.name)),
            "env {} is not read by `droplet-operator run`",
            e.name
        );
    }

    // The token: a file from Secret digitalocean-token key token, never an env var.
    let token_path = args
        .iter()
        .find_map(|a| a.strip_prefix("--token-file="))
        .expect("--token-file=PATH");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| token_path.starts_with(&format!("{}/", m.mount_path)))
        .expect("the token file lies in a mounted volume");
    assert_eq!(mount.read_only, Some(true));
    assert!(
        mount.sub_path.is_none(),
        "no subPath: rotated Secrets reach the file"
    );
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the mounted volume");
    let secret = vol.secret.as_ref().expect("a secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("digitalocean-token"));
    let file = &token_path[mount.mount_path.len() + 1..];
    assert!(
        secret
            .items
            .iter()
            .flatten()
            .any(|i| i.key == "token" && i.path == file),
        "key token is projected as {file}"
    );
    for e in c.env.iter().flatten() {
        assert!(!e.name.contains("TOKEN"), "no token env var ({})", e.name);
        let from_secret = e
            .value_from
            .as_ref()
            .is_some_and(|f| f.secret_key_ref.is_some());
        assert!(!from_secret, "no env var from a Secret ({})", e.name);
    }
    assert!(c.env_from.is_none(), "no envFrom");
    assert_eq!(
        env_value(c, "POD_NAME"),
        Some(
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        )
    );

    // Port 8080 named metrics is the binary's default --metrics-addr; probes use it.
    assert!(
        !args.iter().any(|a| a.starts_with("--metrics-addr"))
            && env_value(c, "METRICS_ADDR").is_none(),
        "the metrics address is left at its default"
    );
    assert!(
        help.contains("[default: 0.0.0.0:8080]"),
        "default --metrics-addr"
    );
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("port named metrics");
    assert_eq!(port.container_port, 8080);
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet probe");
        assert_eq!(
            serde_json::to_value(&get.port).expect("port"),
            json!("metrics")
        );
        get.path.clone().unwrap_or_default()
    };
    assert_eq!(probe_path(&c.liveness_probe), "/healthz");
    assert_eq!(probe_path(&c.readiness_probe), "/readyz");

    // SIGTERM lets an in-flight DigitalOcean request (default timeout 30 s) finish.
    assert!(
        help.contains("[default: 30]"),
        "default --do-timeout-seconds"
    );
    assert!(pod.termination_grace_period_seconds.unwrap_or(30) > 30);
}

#[test]
fn base_service_selects_the_pods_metrics_port() {
    let Some(objs) = render("deploy") else { return };
    let d = deployment(&objs);
    let svc: Service =
        serde_json::from_value(one(&objs, "Service").clone()).expect("Service parses");
    let spec = svc.spec.expect("spec");
    let pod_labels = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.expect("selector");
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "selector {k}={v} matches the pods"
        );
    }
    let ports = spec.ports.expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("metrics"));
    assert_eq!(
        serde_json::to_value(&ports[0].target_port).expect("port"),
        json!("metrics")
    );
}

#[test]
fn base_rbac_grants_exactly_what_the_operator_calls() {
    let Some(objs) = render("deploy") else { return };
    assert_rbac(&objs);
    // Cluster-wide, the only writes are these (everything else is read-only or confined to the namespace).
    let cluster_writes: BTreeSet<(String, String, String)> = grants(&objs)
        .into_iter()
        .filter(|(scope, _, _, verb)| scope.is_none() && WRITE_VERBS.contains(&verb.as_str()))
        .map(|(_, g, r, verb)| (g, r, verb))
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("droplet-operator.dev", "dropletactions", "create"),
        ("droplet-operator.dev", "dropletactions", "delete"),
        ("droplet-operator.dev", "dropletactions", "patch"),
        ("droplet-operator.dev", "dropletactions/status", "patch"),
        (
            "droplet-operator.dev",
            "dropletactionschedules/status",
            "patch",
        ),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(cluster_writes, expected);
    // The cluster-wide installation reads Secrets cluster-wide, by name (the documented trade-off).
    assert!(grants(&objs).contains(&(None, String::new(), "secrets".into(), "get".into())));
}

#[test]
fn namespaced_overlay_uses_roles_in_one_namespace_and_watches_it() {
    let Some(objs) = render("deploy/overlays/namespaced") else {
        return;
    };
    let mut expected = ids(&[
        ("Namespace", "", NS),
        ("ServiceAccount", NS, SA),
        ("Role", NS, "droplet-operator"),
        ("Role", NS, "droplet-operator-token-reader"),
        ("Role", NS, "droplet-operator-leader-election"),
        ("RoleBinding", NS, "droplet-operator"),
        ("RoleBinding", NS, "droplet-operator-token-reader"),
        ("RoleBinding", NS, "droplet-operator-leader-election"),
        ("Deployment", NS, "droplet-operator"),
        ("Service", NS, "droplet-operator-metrics"),
    ]);
    expected.extend(crd_identities());
    expected.sort();
    assert_eq!(identities(&objs), expected);
    assert_rbac(&objs);
    for (scope, group, resource, verb) in grants(&objs) {
        assert_eq!(
            scope.as_deref(),
            Some(NS),
            "{group}/{resource} {verb} must be granted in {NS} only"
        );
    }
    let d = deployment(&objs);
    assert_restricted(&d);
    assert_hardened(&d);
    assert_eq!(
        env_value(container(&d), "WATCH_NAMESPACES"),
        Some(
            json!({"name": "WATCH_NAMESPACES", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
        ),
        "watches the namespace it runs in"
    );
}

#[test]
fn namespaced_overlay_moves_to_a_tenant_namespace() {
    // What docs/operations.md tells a tenant to write: an overlay of overlays/namespaced.
    let body = "namespace: team-a\npatches:\n  - target:\n      kind: Namespace\n    patch: |-\n      $patch: delete\n      apiVersion: v1\n      kind: Namespace\n      metadata:\n        name: unused\n";
    let Some(objs) = render_wrapper(&["deploy/overlays/namespaced"], &[], body) else {
        return;
    };
    assert!(objs.iter().all(|o| s(o, "/kind") != "Namespace"));
    // The CRDs are cluster-scoped: they do not move (docs/operations.md: delete them too when a cluster admin owns them).
    assert_crds_are_the_repository_crds(&objs, "a tenant overlay");
    for o in objs
        .iter()
        .filter(|o| s(o, "/kind") != "CustomResourceDefinition")
    {
        assert_eq!(
            s(o, "/metadata/namespace"),
            "team-a",
            "{} moved",
            s(o, "/kind")
        );
    }
    assert_eq!(granted_rules(&objs), expected_rules());
    for (scope, ..) in grants(&objs) {
        assert_eq!(scope.as_deref(), Some("team-a"));
    }
}

#[test]
fn servicemonitor_component_renders_and_scrapes_the_metrics_service() {
    let Some(objs) = render_wrapper(&["deploy"], &["deploy/components/servicemonitor"], "") else {
        return;
    };
    let mut expected = base_identities();
    expected.push((
        "ServiceMonitor".into(),
        NS.into(),
        "droplet-operator".into(),
    ));
    expected.sort();
    assert_eq!(identities(&objs), expected);
    let sm = one(&objs, "ServiceMonitor");
    let svc = one(&objs, "Service");
    let selector = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "selects the Service by {k}"
        );
    }
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(s(&endpoints[0], "/port"), s(svc, "/spec/ports/0/name"));
    assert_eq!(s(&endpoints[0], "/path"), "/metrics");
}

#[test]
fn token_secret_example_matches_the_deployment_and_is_not_installed() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/examples/token-secret.yaml"))
        .expect("deploy/examples/token-secret.yaml");
    let secret: Value = serde_saphyr::from_str(&text).expect("parses");
    assert_eq!(s(&secret, "/kind"), "Secret");
    assert_eq!(s(&secret, "/metadata/name"), "digitalocean-token");
    assert_eq!(s(&secret, "/metadata/namespace"), NS);
    assert!(
        s(&secret, "/stringData/token").starts_with("REPLACE-"),
        "a placeholder"
    );
    // Not a resource of any kustomization (base_renders_exactly_the_expected_objects has no Secret), and not
    // listed anywhere by name.
    for k in [
        "deploy/kustomization.yaml",
        "deploy/base/kustomization.yaml",
        "deploy/overlays/namespaced/kustomization.yaml",
    ] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(k)).expect(k);
        let parsed: Value = serde_saphyr::from_str(&text).expect(k);
        assert!(
            !parsed.to_string().contains("token-secret"),
            "{k} must not include the example Secret"
        );
    }
}

#[test]
fn dockerfile_matches_the_deployment() {
    let dockerfile =
        std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains(
            "cargo build --release --locked -p droplet-operator --no-default-features --bin droplet-operator"
        ),
        "the image holds only the operator, without the sandbox's test world"
    );
    assert!(dockerfile.contains("gcr.io/distroless/cc-debian12:nonroot"));
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "runs as the UID the Deployment expects"
    );
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/droplet-operator"]"#));
    assert!(dockerfile.contains(r#"CMD ["run"]"#));
    let ignore =
        std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).expect(".dockerignore");
    let lines: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for entry in ["target", ".sandbox"] {
        assert!(
            lines.contains(entry) || lines.contains(format!("{entry}/").as_str()),
            ".dockerignore excludes {entry}"
        );
    }
}

// The checker itself: each control it claims to enforce rejects a pod that breaks it.
#[test]
fn restricted_checker_rejects_each_violation() {
    let good: PodSpec = serde_json::from_value(json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "c",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        }],
        "volumes": [{"name": "s", "secret": {"secretName": "x"}}],
    }))
    .expect("pod");
    let none = BTreeMap::new();
    assert_eq!(restricted_violations(&good, &none), Vec::<String>::new());

    let broken = |patch: Value| -> Vec<String> {
        let mut pod = serde_json::to_value(&good).expect("pod");
        json_patch::merge(&mut pod, &patch);
        restricted_violations(&serde_json::from_value(pod).expect("pod"), &none)
    };
    let container = |sc: Value| json!({"containers": [{"name": "c", "securityContext": sc}]});
    let base_sc = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    let with = |extra: Value| {
        let mut sc = base_sc.clone();
        json_patch::merge(&mut sc, &extra);
        container(sc)
    };
    let cases = [
        json!({"hostNetwork": true}),
        json!({"hostPID": true}),
        json!({"hostIPC": true}),
        json!({"securityContext": {"runAsNonRoot": null}}),
        json!({"securityContext": {"runAsUser": 0}}),
        json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
        json!({"securityContext": {"seccompProfile": null}}),
        json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}),
        json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
        json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
        json!({"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}),
        with(json!({"privileged": true})),
        with(json!({"allowPrivilegeEscalation": true})),
        with(json!({"allowPrivilegeEscalation": null})),
        with(json!({"capabilities": {"drop": []}})),
        with(json!({"capabilities": {"add": ["SYS_ADMIN"]}})),
        with(json!({"runAsNonRoot": false})),
        with(json!({"runAsUser": 0})),
        with(json!({"procMount": "Unmasked"})),
        with(json!({"appArmorProfile": {"type": "Unconfined"}})),
        with(json!({"seccompProfile": {"type": "Unconfined"}})),
        json!({"containers": [{"name": "c", "securityContext": base_sc, "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
        json!({"initContainers": [{"name": "i"}]}),
    ];
    for case in cases {
        assert!(!broken(case.clone()).is_empty(), "not rejected: {case}");
    }
    // NET_BIND_SERVICE is the one capability restricted allows adding.
    assert!(broken(with(json!({"capabilities": {"add": ["NET_BIND_SERVICE"]}}))).is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// The probes and the metrics the manifests and docs rely on, served by the real binary.

/// Status code and body of `GET path` on `addr` (plain HTTP/1.0, so no client library is needed).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Kills the operator process when the test ends, however it ends.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The metric names docs/operations.md documents (without the OpenMetrics `_total` suffix of counters).
const DOCUMENTED_METRICS: &[&str] = &[
    "droplet_operator_reconcile_errors",
    "droplet_operator_reconcile_duration_seconds",
    "droplet_operator_initiations",
    "droplet_operator_adoptions",
    "droplet_operator_actions_finished",
    "droplet_operator_action_duration_seconds",
    "droplet_operator_digitalocean_requests",
    "droplet_operator_digitalocean_rate_budget_remaining",
    "droplet_operator_leader",
];

/// A sandbox (emulated Kubernetes API + simulated DigitalOcean) with `droplet-operator run` started against it.
struct Running {
    sandbox: droplet_operator::sandbox::Sandbox,
    addr: std::net::SocketAddr,
    _operator: KillOnDrop,
    _state: tempfile::TempDir,
}

/// Starts the sandbox, runs `setup` with a client for it, forgets the requests made so far, then starts the
/// operator binary (so that every request the emulator records afterwards is the operator's).
async fn run_operator<F, Fut>(setup: F) -> Running
where
    F: FnOnce(kube::Client, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use droplet_operator::sandbox::{Sandbox, SandboxOptions};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = tempfile::tempdir().expect("temp dir");
    let sandbox = Sandbox::start(SandboxOptions {
        controller: false,
        action_seconds: Some(0.2),
        state_dir: state.path().to_path_buf(),
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts");
    let token = sandbox
        .env_contents()
        .lines()
        .find_map(|l| l.strip_prefix("DIGITALOCEAN_TOKEN=").map(str::to_string))
        .expect("the sandbox prints the token the simulator accepts");
    setup(sandbox.kube.client(), token.clone()).await;
    // Run as deployed: with leader election, the Lease in the operator's own namespace.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(sandbox.kube.client());
    let ns = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "droplet-operator"}}),
    )
    .expect("Namespace");
    namespaces
        .create(&Default::default(), &ns)
        .await
        .expect("create the operator's namespace");
    sandbox.kube.clear_requests();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let operator = KillOnDrop(
        Command::new(BIN)
            .args(["run", "--metrics-addr", &addr.to_string()])
            .args(["--do-api-url", sandbox.do_api_url.as_str()])
            .args(["--do-timeout-seconds", "5"])
            .args([
                "--leader-elect",
                "--leader-election-namespace",
                "droplet-operator",
                "--instance",
                "rbac-test",
            ])
            .env("KUBECONFIG", &sandbox.kubeconfig)
            .env("DIGITALOCEAN_TOKEN", &token)
            .env("POLL_SCALE", "0.05")
            .env_remove("WATCH_NAMESPACES")
            .env_remove("DIGITALOCEAN_TOKEN_FILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start droplet-operator run"),
    );
    Running {
        sandbox,
        addr,
        _operator: operator,
        _state: state,
    }
}

/// (namespace, apiGroup, resource[/subresource], verb) of a Kubernetes API request, as RBAC sees it; `None` for
/// non-resource URLs (/version, /api, /apis, /openapi/...).
fn rbac_attributes(
    method: &str,
    path: &str,
    query: &str,
) -> Option<(Option<String>, String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (resource, named) = match rest {
        [] => return None,
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => panic!("unexpected method {other} {path}"),
    };
    Some((namespace, group, resource, verb.to_string()))
}

#[tokio::test]
async fn every_api_call_of_the_operator_is_granted_and_metrics_are_documented() {
    // What the operator may do, from the manifests (skips without kubectl).
    let Some(objs) = render("deploy") else { return };
    let granted = grants(&objs);

    // Two DropletActions: one with the default token, one with its own token Secret; both deleted by
    // ttlSecondsAfterFinished once finished. Together they use the watch, status patches, events, the Secret read
    // and the delete.
    let running = run_operator(|client, token| async move {
        use kube::api::{Api, PostParams};
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "default");
        let secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "team-token"},
            "stringData": {"token": token},
        }))
        .expect("Secret");
        secrets.create(&PostParams::default(), &secret).await.expect("create Secret");
        let das: Api<droplet_operator::crd::DropletAction> = Api::namespaced(client, "default");
        for (name, extra) in [
            ("with-default-token", json!({"dropletId": 101006, "type": "power_on"})),
            (
                "with-own-token",
                json!({"dropletId": 101008, "type": "reboot", "tokenSecretRef": {"name": "team-token", "key": "token"}}),
            ),
        ] {
            let mut spec = extra;
            spec["ttlSecondsAfterFinished"] = json!(0);
            let da = serde_json::from_value(json!({
                "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
                "metadata": {"name": name}, "spec": spec,
            }))
            .expect("DropletAction");
            das.create(&PostParams::default(), &da).await.expect("create DropletAction");
        }
    })
    .await;
    let emu = &running.sandbox.kube;
    common::eventually(
        "both DropletActions finished and were deleted",
        std::time::Duration::from_secs(60),
        || {
            let deleted = emu
                .requests()
                .iter()
                .filter(|r| {
                    r.method == "DELETE" && r.path.contains("/dropletactions/") && r.status < 300
                })
                .count();
            async move { (deleted == 2).then_some(()) }
        },
    )
    .await;

    // Every call it made is one the rendered RBAC allows, at the scope it was made.
    let mut used = BTreeSet::new();
    for r in emu.requests() {
        let Some((ns, group, resource, verb)) = rbac_attributes(&r.method, &r.path, &r.query)
        else {
            assert!(
                ["/version", "/api", "/apis"].contains(&r.path.trim_end_matches('/')),
                "non-resource request {} {} (needs a nonResourceURLs rule)",
                r.method,
                r.path
            );
            continue;
        };
        let allowed = granted.iter().any(|(scope, g, res, v)| {
            g == &group
                && res == &resource
                && v == &verb
                && (scope.is_none() || (ns.is_some() && scope == &ns))
        });
        assert!(
            allowed,
            "{} {}?{} = {verb} {group}/{resource} in {ns:?}: not granted by deploy/",
            r.method, r.path, r.query
        );
        used.insert((group, resource, verb));
    }
    // The run above did exercise the paths it set out to (or this test would prove little).
    for (g, res, v) in [
        ("droplet-operator.dev", "dropletactions", "list"),
        ("droplet-operator.dev", "dropletactions", "watch"),
        ("droplet-operator.dev", "dropletactions", "delete"),
        ("droplet-operator.dev", "dropletactions/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("", "secrets", "get"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
    ] {
        assert!(
            used.contains(&(g.to_string(), res.to_string(), v.to_string())),
            "expected the operator to {v} {g}/{res}; it made: {used:?}"
        );
    }

    let unused: Vec<_> = granted_rules(&objs)
        .into_iter()
        .flat_map(|(g, r, verbs)| verbs.into_iter().map(move |v| (g.clone(), r.clone(), v)))
        .filter(|k| !used.contains(k))
        .collect();
    eprintln!("granted but not used in this run: {unused:?}");

    // /healthz, and the metrics: every exposed family is documented. Families appear once they have a sample;
    // after this run all but reconcile_errors (no failures) must have one.
    let addr = running.addr;
    let (code, _) = http_get(addr, "/healthz").await.expect("/healthz answers");
    assert_eq!(code, 200);
    let (code, metrics) = http_get(addr, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    let exposed: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/operations.md")).expect("docs");
    for name in &exposed {
        assert!(
            DOCUMENTED_METRICS.contains(name) && docs.contains(name),
            "metric {name} is exposed but not documented in docs/operations.md"
        );
    }
    for name in DOCUMENTED_METRICS {
        assert!(
            docs.contains(name),
            "{name} missing from docs/operations.md"
        );
        if *name != "droplet_operator_reconcile_errors" {
            assert!(
                exposed.contains(name),
                "{name} not exposed after a run:\n{metrics}"
            );
        }
    }
    running.sandbox.stop().await;
}

/// The Deployment's readiness probe: `/readyz` turns 200 once the DropletAction caches have synced.
#[tokio::test]
async fn readyz_turns_ready_once_caches_synced() {
    let running = run_operator(|_, _| async {}).await;
    let addr = running.addr;
    common::eventually(
        "/readyz answers 200",
        std::time::Duration::from_secs(60),
        || async move {
            http_get(addr, "/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
                .then_some(())
        },
    )
    .await;
    running.sandbox.stop().await;
}

/// The Argo CD health check in docs/operations.md, run by a Lua interpreter (`common::require_any_tool`; Argo CD
/// runs gopher-lua, Lua 5.1, and the script uses nothing newer).
#[test]
fn argocd_health_check_in_the_docs_maps_phases() {
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/operations.md")).expect("docs");
    let key = "resource.customizations.health.droplet-operator.dev_DropletAction: |\n";
    let start = docs.find(key).expect("the health check is documented") + key.len();
    let script: String = docs[start..]
        .lines()
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("health.lua"), &script).expect("write script");
    let harness = r#"
local check = assert(loadfile(arg[1]))
local function status(o) obj = o; local hs = check(); return hs.status .. "|" .. tostring(hs.message) end
local function da(phase, msg, gen, observed)
  return {metadata = {generation = gen or 1}, status = {phase = phase, message = msg, observedGeneration = observed or 1}}
end
print(status({metadata = {generation = 1}}))
print(status(da("Pending", "waiting for droplet")))
print(status(da("Running", nil)))
print(status(da("Succeeded", "reboot completed")))
print(status(da("Failed", "403: add scope droplet:update")))
print(status(da("Expired", "notAfter passed")))
print(status(da("Succeeded", "old", 2, 1)))
"#;
    std::fs::write(dir.path().join("harness.lua"), harness).expect("write harness");
    // .ci/run installs Debian's lua5.4 when no interpreter is present.
    let Some(lua) = common::require_any_tool(&["lua", "lua5.1", "lua5.4", "luajit"]) else {
        return;
    };
    let out = Command::new(lua)
        .arg(dir.path().join("harness.lua"))
        .arg(dir.path().join("health.lua"))
        .output()
        .expect("run the Lua interpreter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Progressing|Waiting for droplet-operator\n\
         Progressing|waiting for droplet\n\
         Progressing|Running\n\
         Healthy|reboot completed\n\
         Degraded|403: add scope droplet:update\n\
         Degraded|notAfter passed\n\
         Progressing|Waiting for droplet-operator\n"
    );
}
