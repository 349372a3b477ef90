//! The Helm chart (deploy/helm/droplet-operator/) as the real `helm` renders it: `helm lint`, `helm template` with the
//! default values and with a values file that sets every option, RBAC identical to the kustomize installation, the
//! CRDs of crds/, a Deployment that configures the binary as kustomize's does (and passes the *restricted* Pod Security
//! Standard), refused bad values, and NOTES.txt.
//!
//! helm is found through `HELM_BIN`, then `$HOME/.cache/droplet-operator/tools/paths.env` (tests/k8s/build.sh builds
//! it from its Go module), then PATH. Without it each test prints `SKIPPED: ...`, and fails when `CI=true`.
//! The dry run against a real API server is `manifests::server_dry_run_inputs`.

mod common;
mod manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use manifests::pss::restricted_violations;
use manifests::{
    ALL_VALUES, CHART, ROOT, assert_crds_are_the_repository_crds, grants, helm, helm_or_skip,
    helm_template, helm_template_text, identities, kustomize, s,
};

const BIN: &str = env!("CARGO_BIN_EXE_droplet-operator");
const NS: &str = "droplet-operator";

fn chart_dir() -> String {
    Path::new(ROOT).join(CHART).display().to_string()
}

fn all_of<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| s(o, "/kind") == kind).collect()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of(objs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (s(e, "/name").to_string(), e.clone()))
        .collect()
}

fn env_literal(container: &Value, name: &str) -> Option<String> {
    env_of(container)
        .get(name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

/// `[env: NAME=]` → `[default: X]` of `droplet-operator run --help` (X is `None` for env vars without a default).
fn binary_env_defaults() -> BTreeMap<String, Option<String>> {
    let out = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("run the binary");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut out = BTreeMap::new();
    // One block per option: from a line starting with "  -" to the next.
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        if line.trim_start().starts_with('-') && line.starts_with("  ") {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    for b in blocks {
        let Some(env) = b.split("[env: ").nth(1).and_then(|r| r.split('=').next()) else {
            continue;
        };
        let default = b
            .split("[default: ")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .map(str::to_string);
        out.insert(env.to_string(), default);
    }
    out
}

#[test]
fn chart_lints_with_default_values_and_with_every_option() {
    let Some(bin) = helm_or_skip("chart_lints_with_default_values_and_with_every_option") else {
        return;
    };
    let chart = chart_dir();
    let values = Path::new(ROOT).join(ALL_VALUES).display().to_string();
    for args in [
        vec!["lint", "--strict", chart.as_str()],
        vec!["lint", "--strict", chart.as_str(), "-f", values.as_str()],
    ] {
        let out = helm(&bin, &args).unwrap_or_else(|e| panic!("helm {args:?} failed:\n{e}"));
        assert!(out.contains("0 chart(s) failed"), "helm {args:?}:\n{out}");
    }
}

/// The values file used by the "every option" tests really sets every leaf of values.yaml, to something else.
#[test]
fn all_values_file_sets_every_option_to_a_non_default() {
    fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    leaves(&format!("{prefix}.{k}"), v, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let read = |rel: &str| -> Value {
        let text = std::fs::read_to_string(Path::new(ROOT).join(rel)).expect(rel);
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let mut defaults = BTreeMap::new();
    leaves("", &read(&format!("{CHART}/values.yaml")), &mut defaults);
    // A map set in the all-values file counts as setting the option (e.g. resources, affinity).
    let all_values = read(ALL_VALUES);
    for key in defaults.keys() {
        let pointer = key.replace('.', "/");
        let got = all_values.pointer(&pointer);
        assert!(got.is_some(), "{ALL_VALUES} does not set {key}");
        // Left at their defaults because other options need them: 2 replicas need leader election, the
        // ServiceMonitor needs the Service, serviceAccount.name/annotations need a created ServiceAccount
        // (serviceAccount.create=false: chart_binds_an_existing_service_account).
        if ![
            ".leaderElection.enabled",
            ".metrics.service.enabled",
            ".serviceAccount.create",
        ]
        .contains(&key.as_str())
        {
            assert_ne!(
                got,
                Some(&defaults[key]),
                "{ALL_VALUES} sets {key} to its default"
            );
        }
    }
}

/// With the default values, the chart installs what `kubectl apply -k deploy/` installs: the same objects (minus the
/// Namespace, which `helm install --create-namespace` makes), the same RBAC grant for grant, the same CRDs and a
/// Deployment that runs the binary the same way.
#[test]
fn chart_defaults_match_the_kustomize_installation() {
    let Some(bin) = helm_or_skip("chart_defaults_match_the_kustomize_installation") else {
        return;
    };
    let Some(kust) = kustomize(&Path::new(ROOT).join("deploy")) else {
        return;
    };
    let chart = helm_template(&bin, NS, NS, &[], &[]);

    let without_ns: Vec<_> = identities(&kust)
        .into_iter()
        .filter(|(k, ..)| k != "Namespace")
        .collect();
    assert_eq!(identities(&chart), without_ns);
    assert_crds_are_the_repository_crds(&chart, "helm template --include-crds");

    // RBAC: identical grants, at identical scopes (deploy/base/rbac.yaml and leader-election.yaml vs the chart's).
    let (from_chart, from_kustomize) = (grants(&chart), grants(&kust));
    let only_kustomize: Vec<_> = from_kustomize.difference(&from_chart).collect();
    let only_chart: Vec<_> = from_chart.difference(&from_kustomize).collect();
    assert!(
        only_kustomize.is_empty() && only_chart.is_empty(),
        "RBAC differs between deploy/base and {CHART}/templates/rbac.yaml:\n  \
         granted only by kustomize: {only_kustomize:?}\n  granted only by the chart: {only_chart:?}"
    );

    // The Deployment: the same pod, apart from env vars that spell out the binary's own defaults.
    let (kd, hd) = (one(&kust, "Deployment"), one(&chart, "Deployment"));
    assert_eq!(hd["spec"]["replicas"], kd["spec"]["replicas"]);
    assert_eq!(hd["spec"]["strategy"], kd["spec"]["strategy"]);
    let mut kpod = kd["spec"]["template"]["spec"].clone();
    let mut hpod = hd["spec"]["template"]["spec"].clone();
    let kenv = env_of(&kpod["containers"][0]);
    let henv = env_of(&hpod["containers"][0]);
    kpod["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("env");
    hpod["containers"][0]
        .as_object_mut()
        .expect("container")
        .remove("env");
    assert_eq!(
        hpod, kpod,
        "the chart's pod spec differs from deploy/base/deployment.yaml"
    );
    let defaults = binary_env_defaults();
    for (name, e) in &henv {
        match kenv.get(name) {
            Some(k) => assert_eq!(e, k, "env {name}"),
            None if name == "RUST_LOG" => assert_eq!(s(e, "/value"), "info", "RUST_LOG default"),
            None => assert_eq!(
                defaults.get(name).cloned().flatten().as_deref(),
                Some(s(e, "/value")),
                "env {name} is set by the chart only; with default values it must equal the binary's default"
            ),
        }
    }
    for name in kenv.keys() {
        assert!(henv.contains_key(name), "env {name} missing in the chart");
    }
}

/// The chart's Deployment with every option still passes the restricted Pod Security Standard, and every flag and
/// env var it sets is one `droplet-operator run` reads.
#[test]
fn chart_deployment_is_restricted_and_wired_to_the_binary() {
    let Some(bin) = helm_or_skip("chart_deployment_is_restricted_and_wired_to_the_binary") else {
        return;
    };
    let defaults = binary_env_defaults();
    let help = String::from_utf8_lossy(
        &Command::new(BIN)
            .args(["run", "--help"])
            .output()
            .expect("run the binary")
            .stdout,
    )
    .into_owned();
    for values in [vec![], vec![ALL_VALUES]] {
        let objs = helm_template(&bin, NS, NS, &values, &[]);
        let d: Deployment =
            serde_json::from_value(one(&objs, "Deployment").clone()).expect("Deployment parses");
        let tmpl = &d.spec.template;
        let annotations = tmpl
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        let pod = tmpl.spec.as_ref().expect("pod spec");
        let violations = restricted_violations(pod, &annotations);
        assert!(
            violations.is_empty(),
            "{values:?}: restricted violations {violations:?}"
        );
        let c = &one(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(args.first(), Some(&"run"));
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap_or(arg);
            assert!(
                help.lines().any(|l| l.split_whitespace().any(|w| w
                    .trim_end_matches(',')
                    .split(['[', '='])
                    .next()
                    == Some(flag))),
                "{values:?}: {flag} is not a flag of `droplet-operator run`"
            );
        }
        for name in env_of(c).keys() {
            assert!(
                defaults.contains_key(name) || name == "RUST_LOG",
                "{values:?}: env {name} is not read by `droplet-operator run`"
            );
            assert!(
                !name.contains("TOKEN"),
                "{values:?}: no token env var ({name})"
            );
        }
        // The token: a file from the configured Secret key, never an env var.
        let token_file = args
            .iter()
            .find_map(|a| a.strip_prefix("--token-file="))
            .expect("--token-file");
        assert_eq!(token_file, "/var/run/secrets/digitalocean/token");
    }
}

/// Every option of values.yaml, set by ci/all-values.yaml, shows up where it should.
#[test]
fn chart_applies_every_option() {
    let Some(bin) = helm_or_skip("chart_applies_every_option") else {
        return;
    };
    let objs = helm_template(&bin, "prod", "ops", &[ALL_VALUES], &[]);
    let name = "droplet-operator-prod";
    let d = one(&objs, "Deployment");
    assert_eq!(s(d, "/metadata/name"), name, "fullnameOverride");
    assert_eq!(
        s(d, "/metadata/labels/app.kubernetes.io~1name"),
        "dop",
        "nameOverride"
    );
    assert_eq!(d["spec"]["replicas"], json!(2));
    assert_eq!(
        s(d, "/spec/strategy/type"),
        "RollingUpdate",
        "several replicas roll"
    );
    let tmpl = &d["spec"]["template"];
    let pod = &tmpl["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        s(c, "/image"),
        "registry.example.com/platform/droplet-operator:0.1.0-rc.1"
    );
    assert_eq!(s(c, "/imagePullPolicy"), "Always");
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "registry-example-com"}])
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--leader-elect"));
    assert!(args.contains(&"--log-format=text"));
    for (env, value) in [
        ("LEADER_ELECTION_LEASE", "droplet-operator-prod"),
        ("LEASE_DURATION_SECONDS", "20"),
        ("WATCH_NAMESPACES", "team-a,team-b"),
        ("DIGITALOCEAN_API_URL", "https://do-proxy.example.com"),
        ("CONCURRENCY", "8"),
        ("DO_TIMEOUT_SECONDS", "20"),
        ("METRICS_ADDR", "0.0.0.0:9090"),
        ("RUST_LOG", "info,droplet_operator=debug"),
    ] {
        assert_eq!(env_literal(c, env).as_deref(), Some(value), "env {env}");
    }
    assert_eq!(
        pod["terminationGracePeriodSeconds"],
        json!(35),
        "doTimeoutSeconds + 15"
    );
    assert_eq!(s(pod, "/volumes/0/secret/secretName"), "do-api-token");
    assert_eq!(
        pod["volumes"][0]["secret"]["items"],
        json!([{"key": "api-token", "path": "token"}])
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "20m", "memory": "48Mi"}, "limits": {"memory": "96Mi"}})
    );
    assert_eq!(c["ports"][0]["containerPort"], json!(9090));
    assert_eq!(s(pod, "/serviceAccountName"), "droplet-operator-sa");
    assert_eq!(s(pod, "/priorityClassName"), "system-cluster-critical");
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(s(pod, "/tolerations/0/key"), "dedicated");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        json!("kubernetes.io/arch")
    );
    // Extra pod labels and annotations; a podLabel cannot break the selector.
    let labels = &tmpl["metadata"]["labels"];
    assert_eq!(labels["team"], json!("platform"));
    for (k, v) in d["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&labels[k], v, "pod label {k} still matches the selector");
    }
    assert_eq!(
        tmpl["metadata"]["annotations"]["example.com/scrape"],
        json!("false")
    );

    let sa = one(&objs, "ServiceAccount");
    assert_eq!(s(sa, "/metadata/name"), "droplet-operator-sa");
    assert_eq!(
        sa["metadata"]["annotations"]["example.com/owner"],
        json!("platform")
    );

    let svc = one(&objs, "Service");
    assert_eq!(s(svc, "/metadata/name"), format!("{name}-metrics"));
    assert_eq!(svc["spec"]["ports"][0]["port"], json!(9091));
    assert_eq!(s(svc, "/spec/type"), "NodePort");
    assert_eq!(s(svc, "/spec/ports/0/targetPort"), "metrics");
    assert_eq!(
        svc["metadata"]["annotations"]["prometheus.io/scrape"],
        json!("true")
    );
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[k], v, "the Service selects the pods by {k}");
    }
    let sm = one(&objs, "ServiceMonitor");
    assert_eq!(
        sm["metadata"]["labels"]["release"],
        json!("kube-prometheus-stack")
    );
    assert_eq!(s(sm, "/spec/endpoints/0/port"), "metrics");
    assert_eq!(s(sm, "/spec/endpoints/0/interval"), "15s");
    assert_eq!(s(sm, "/spec/endpoints/0/scrapeTimeout"), "10s");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service by {k}"
        );
    }

    // watchNamespaces: the same rules, bound in team-a and team-b only; the Lease in the release namespace;
    // tenantTokens=false: no Secret access at all.
    let g = grants(&objs);
    assert!(!g.is_empty());
    for (scope, group, resource, verb) in &g {
        match resource.as_str() {
            "leases" => assert_eq!(
                scope.as_deref(),
                Some("ops"),
                "leases in the release namespace"
            ),
            _ => assert!(
                matches!(scope.as_deref(), Some("team-a" | "team-b")),
                "{group}/{resource} {verb} granted at {scope:?}, not in a watched namespace"
            ),
        }
        assert_ne!(
            resource, "secrets",
            "tenantTokens=false grants no Secret access"
        );
    }
    assert!(
        all_of(&objs, "ClusterRoleBinding").is_empty(),
        "nothing cluster-wide"
    );
}

/// The chart's rules are the kustomize base's whatever the scope: with watchNamespaces, each watched namespace gets
/// exactly the rules the cluster-wide installation grants everywhere.
#[test]
fn chart_rbac_with_watched_namespaces_is_the_base_rbac_per_namespace() {
    let Some(bin) =
        helm_or_skip("chart_rbac_with_watched_namespaces_is_the_base_rbac_per_namespace")
    else {
        return;
    };
    let Some(kust) = kustomize(&Path::new(ROOT).join("deploy")) else {
        return;
    };
    let objs = helm_template(
        &bin,
        NS,
        NS,
        &[],
        &["--set", "watchNamespaces={team-a,team-b}"],
    );
    let per_scope = |g: BTreeSet<manifests::Grant>| -> BTreeMap<Option<String>, BTreeSet<(String, String, String)>> {
        let mut m: BTreeMap<Option<String>, BTreeSet<_>> = BTreeMap::new();
        for (scope, group, resource, verb) in g {
            m.entry(scope).or_default().insert((group, resource, verb));
        }
        m
    };
    let base = per_scope(grants(&kust));
    let chart = per_scope(grants(&objs));
    assert_eq!(chart.get(&None), None, "nothing cluster-wide");
    for ns in ["team-a", "team-b"] {
        assert_eq!(
            chart.get(&Some(ns.to_string())),
            base.get(&None),
            "{ns} gets the base's cluster-wide rules"
        );
    }
    assert_eq!(
        chart.get(&Some(NS.to_string())),
        base.get(&Some(NS.to_string())),
        "the Lease"
    );
}

/// serviceAccount.create=false: no ServiceAccount, and the RBAC is bound to the named existing one.
#[test]
fn chart_binds_an_existing_service_account() {
    let Some(bin) = helm_or_skip("chart_binds_an_existing_service_account") else {
        return;
    };
    let objs = helm_template(
        &bin,
        NS,
        NS,
        &[],
        &[
            "--set",
            "serviceAccount.create=false",
            "--set",
            "serviceAccount.name=existing",
        ],
    );
    assert!(all_of(&objs, "ServiceAccount").is_empty());
    assert_eq!(
        s(
            one(&objs, "Deployment"),
            "/spec/template/spec/serviceAccountName"
        ),
        "existing"
    );
    let created = helm_template(&bin, NS, NS, &[], &[]);
    assert_eq!(
        manifests::grants_to(&objs, Some((NS, "existing"))),
        grants(&created),
        "the same grants, to the existing ServiceAccount"
    );
}

/// Values the operator cannot run with are refused by `helm template`/`install`, naming the value.
#[test]
fn chart_refuses_bad_values_naming_them() {
    let Some(bin) = helm_or_skip("chart_refuses_bad_values_naming_them") else {
        return;
    };
    for (set, expected) in [
        (
            vec![
                "--set",
                "replicaCount=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (vec!["--set", "logFormat=xml"], "logFormat"),
        (vec!["--set", "replicas=2"], "replicas"),
        (vec!["--set", "watchNamespaces={Team_A}"], "watchNamespaces"),
        (
            vec![
                "--set",
                "metrics.service.enabled=false",
                "--set",
                "metrics.serviceMonitor.enabled=true",
            ],
            "metrics.serviceMonitor.enabled=true needs metrics.service.enabled=true",
        ),
        (vec!["--set", "token.secretName="], "secretName"),
    ] {
        let err = helm_template_text(&bin, NS, NS, &[], &set)
            .err()
            .unwrap_or_else(|| panic!("{set:?} was accepted"));
        assert!(
            err.contains(expected),
            "{set:?}: expected {expected:?} in:\n{err}"
        );
    }
}

/// NOTES.txt (what `helm install` prints) tells how to create the token Secret of the configured name and key in the
/// release namespace, and how to watch a first DropletAction, which is a valid one.
#[test]
fn notes_tell_how_to_create_the_token_secret_and_watch_a_first_dropletaction() {
    let Some(bin) =
        helm_or_skip("notes_tell_how_to_create_the_token_secret_and_watch_a_first_dropletaction")
    else {
        return;
    };
    // `helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster, so render it through `tpl` in a
    // copy of the chart (same helpers, same values).
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("droplet-operator");
    copy_dir(&Path::new(ROOT).join(CHART), &copy);
    std::fs::create_dir_all(copy.join("files")).expect("files/");
    std::fs::rename(
        copy.join("templates/NOTES.txt"),
        copy.join("files/NOTES.txt"),
    )
    .expect("move NOTES.txt");
    std::fs::write(
        copy.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get \"files/NOTES.txt\") . | quote }}\n",
    )
    .expect("write the rendering template");
    let render = |ns: &str, set: &[&str]| -> String {
        let chart = copy.display().to_string();
        let mut args = vec![
            "template",
            "r",
            chart.as_str(),
            "-n",
            ns,
            "--show-only",
            "templates/zz-notes.yaml",
        ];
        args.extend(set);
        let out = helm(&bin, &args).unwrap_or_else(|e| panic!("rendering NOTES.txt failed:\n{e}"));
        let cm: Value = serde_saphyr::from_str(&out).expect("ConfigMap");
        s(&cm, "/data/notes").to_string()
    };

    let notes = render("ops", &[]);
    assert!(
        notes.contains(
            "kubectl -n ops create secret generic digitalocean-token \\\n       --from-literal=token=\"$DIGITALOCEAN_TOKEN\""
        ),
        "{notes}"
    );
    assert!(notes.contains("kubectl get dropletactions -w"), "{notes}");
    assert!(
        notes.contains("kubectl wait --for=condition=Ready dropletaction/first-reboot"),
        "{notes}"
    );
    // The DropletAction in the notes is one the CRD's types accept.
    let start = notes.find("<<'YAML'\n").expect("a heredoc") + "<<'YAML'\n".len();
    let end = start + notes[start..].find("\nYAML\n").expect("its end");
    let da: droplet_operator::crd::DropletAction =
        serde_saphyr::from_str(&notes[start..end]).expect("the example DropletAction parses");
    assert_eq!(da.spec.type_.as_str(), "reboot");

    let notes = render(
        "ops",
        &[
            "--set",
            "token.secretName=do-api",
            "--set",
            "token.secretKey=key",
            "--set",
            "watchNamespaces={team-a}",
        ],
    );
    assert!(
        notes.contains("kubectl -n ops create secret generic do-api"),
        "{notes}"
    );
    assert!(notes.contains("--from-literal=key="), "{notes}");
    assert!(
        notes.contains("kubectl -n team-a get dropletactions -w"),
        "{notes}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy file");
        }
    }
}

/// The input the real-API-server harness gets renders (the harness itself applies it with `--dry-run=server`).
#[test]
fn server_dry_run_inputs_render_every_variant() {
    let Some(inputs) = manifests::server_dry_run_inputs() else {
        return;
    };
    assert_eq!(inputs.len(), 4);
    for i in &inputs {
        let docs = manifests::parse_docs(&i.yaml, &i.name);
        assert!(
            docs.iter()
                .any(|d| s(d, "/kind") == "CustomResourceDefinition"),
            "{}: includes the CRDs",
            i.name
        );
        assert!(
            docs.iter().all(|d| s(d, "/kind") != "ServiceMonitor"),
            "{}: no ServiceMonitor (a bare API server has no monitoring CRDs)",
            i.name
        );
        assert!(!i.namespaces.is_empty());
    }
}
