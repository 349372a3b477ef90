//! Isolation, through kubectl and the real operator binary: an object the operator cannot read, a tenant whose
//! token is missing or refused, and a same-second batch whose names sort against file order stop nobody else.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, kubectl, servers, servers_with_crds, sigterm_and_wait, spawn_operator};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, SimConfig, SimHandle, TokenSpec};
use droplet_operator::crd::{DropletAction, Phase};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::fast(1.0);
    cfg.generated_droplets = 10; // 200001..=200010
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(300));
    cfg.tokens = vec![
        TokenSpec::full(DEFAULT_SIM_TOKEN),
        TokenSpec::scoped("read-only-token", &["droplet:read", "actions:read"]),
    ];
    cfg
}

/// The operator binary with fast-test settings and its admin server on `port`.
fn operator(kubeconfig: &Path, sim: &SimHandle, port: u16, log: &Path) -> std::process::Child {
    let addr = format!("127.0.0.1:{port}");
    spawn_operator(
        kubeconfig,
        sim.url().as_str(),
        &[
            "--metrics-addr",
            &addr,
            "--poll-scale",
            "0.05",
            "--do-timeout-seconds",
            "2",
        ],
        log,
    )
}

async fn readyz(port: u16) -> Option<u16> {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn wait_ready(port: u16, log: &Path) {
    let start = Instant::now();
    while readyz(port).await != Some(200) {
        assert!(
            start.elapsed() < WAIT,
            "/readyz never turned ready; operator log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn apply(kubeconfig: &Path, dir: &Path, file: &str, yaml: &str) -> bool {
    let path = dir.join(file);
    std::fs::write(&path, yaml).unwrap();
    let Some(out) = kubectl(kubeconfig, &["apply", "-f", path.to_str().unwrap()]) else {
        return false;
    };
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

async fn wait_phase(
    client: &Client,
    ns: &str,
    name: &str,
    phases: &[Phase],
    log: &Path,
) -> DropletAction {
    let api: Api<DropletAction> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let da = api.get(name).await.expect("get");
        if phases.contains(&da.phase()) {
            return da;
        }
        assert!(
            start.elapsed() < WAIT,
            "{ns}/{name} did not reach {phases:?}: {:#?}\noperator log:\n{}",
            da.status,
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

fn namespaces(kubeconfig: &Path, names: &[&str]) -> bool {
    names.iter().all(|ns| {
        kubectl(kubeconfig, &["create", "namespace", ns]).is_some_and(|o| o.status.success())
    })
}

/// The CRD as an older release might have installed it: spec without any schema or rules.
fn loose_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = droplet_operator::crd::definition();
    for v in crd.spec.versions.iter_mut() {
        let schema = v
            .schema
            .as_mut()
            .unwrap()
            .open_api_v3_schema
            .as_mut()
            .unwrap();
        schema.properties.as_mut().unwrap().insert(
            "spec".into(),
            JSONSchemaProps {
                type_: Some("object".into()),
                x_kubernetes_preserve_unknown_fields: Some(true),
                ..Default::default()
            },
        );
    }
    crd
}

const POISON: &str = "
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: fractional-image, namespace: t1}
spec: {type: rebuild, dropletId: 200001, image: 1.5}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: unknown-type, namespace: t1}
spec: {type: explode, dropletId: 200001}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: endless-deadline, namespace: t1}
spec: {type: reboot, dropletId: 200001, deadlineSeconds: 99999999999}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: fine, namespace: t2}
spec: {type: reboot, dropletId: 200001}
";

const POISON_LATER: &str = "
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: string-droplet, namespace: t1}
spec: {type: reboot, dropletId: two}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: fine-later, namespace: t2}
spec: {type: power_cycle, dropletId: 200002}
";

/// An unreadable object whose report quotes 1,400 bytes of two-byte characters (the event note must be cut by
/// bytes), and a readable one with the longest name Kubernetes allows (its event names must stay valid).
fn long_objects() -> (String, String) {
    let long_name = format!("{}-{}", "n".repeat(240), "x".repeat(12));
    assert_eq!(long_name.len(), 253);
    let yaml = format!(
        "
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {{name: multibyte-type, namespace: t1}}
spec: {{type: \"{}\", dropletId: 200001}}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {{name: {long_name}, namespace: t2}}
spec: {{type: reboot, dropletId: 200006}}
",
        "é".repeat(700)
    );
    (yaml, long_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_objects_are_reported_on_themselves_and_skipped() {
    let (sim, emu) = servers_with_crds(sim_config(), vec![loose_crd()]).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let log = dir.path().join("operator.log");
    if !namespaces(&kubeconfig, &["t1", "t2"]) {
        return;
    }
    // Unreadable objects already stored when the operator starts: the initial list must not fail.
    assert!(apply(&kubeconfig, dir.path(), "poison.yaml", POISON));
    let port = free_port();
    let mut child = operator(&kubeconfig, &sim, port, &log);
    wait_ready(port, &log).await;
    // And some arriving through the watch.
    assert!(apply(&kubeconfig, dir.path(), "later.yaml", POISON_LATER));
    let (long, long_name) = long_objects();
    assert!(apply(&kubeconfig, dir.path(), "long.yaml", &long));

    let client = emu.client();
    wait_phase(&client, "t2", "fine", &[Phase::Succeeded], &log).await;
    wait_phase(&client, "t2", "fine-later", &[Phase::Succeeded], &log).await;
    wait_phase(&client, "t2", &long_name, &[Phase::Succeeded], &log).await;
    let evs = events(&client, "t2", &long_name).await;
    assert!(
        evs.iter().any(|(_, r, _)| r == "Succeeded"),
        "events of the 253-character resource were refused: {evs:?}"
    );

    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "t1",
        &ApiResource::erase::<DropletAction>(&()),
    );
    for (name, field) in [
        ("fractional-image", "spec.image"),
        ("unknown-type", "spec.type"),
        ("endless-deadline", "spec.deadlineSeconds"),
        ("string-droplet", "spec.dropletId"),
        ("multibyte-type", "spec.type"),
    ] {
        let start = Instant::now();
        loop {
            let obj = raw.get(name).await.unwrap();
            let stalled = obj.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Stalled")
                .cloned();
            let evs = events(&client, "t1", name).await;
            let warned = evs
                .iter()
                .any(|(t, r, n)| t == "Warning" && r == "Unreadable" && n.contains(field));
            if let Some(c) = &stalled
                && warned
            {
                assert_eq!(c["status"], "True");
                assert_eq!(c["reason"], "Unreadable");
                let message = c["message"].as_str().unwrap();
                assert!(message.contains(field), "{message}");
                assert_eq!(obj.data["status"]["reason"], Value::from("Unreadable"));
                // Reported once, not once per watch event.
                assert_eq!(
                    evs.iter().filter(|(_, r, _)| r == "Unreadable").count(),
                    1,
                    "{evs:?}"
                );
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "{name}: no Unreadable report naming {field}: {:#?} {evs:?}",
                obj.data["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Nothing was ever sent for an unreadable object: droplet 200001 saw only `fine`'s reboot.
    assert_eq!(sim.posts_for_droplet(200001).len(), 1);
    assert!(sigterm_and_wait(&mut child, Duration::from_secs(10)).is_some());
    emu.shutdown();
    sim.shutdown();
}

const TENANTS: &str = "
apiVersion: v1
kind: Secret
metadata: {name: wrong-token, namespace: t2}
stringData: {token: not-a-digitalocean-token}
---
apiVersion: v1
kind: Secret
metadata: {name: read-only, namespace: t3}
stringData: {token: read-only-token}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: no-secret, namespace: t1}
spec: {type: reboot, dropletId: 200003, tokenSecretRef: {name: missing}, deadlineSeconds: 40}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: refused-token, namespace: t2}
spec: {type: reboot, dropletId: 200003, tokenSecretRef: {name: wrong-token}}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: forbidden, namespace: t3}
spec: {type: reboot, dropletId: 200003, tokenSecretRef: {name: read-only}}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: good, namespace: t4}
spec: {type: power_cycle, dropletId: 200003}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_cannot_start_does_not_block_other_tenants_on_the_same_droplet() {
    let (sim, emu) = servers(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let log = dir.path().join("operator.log");
    if !namespaces(&kubeconfig, &["t1", "t2", "t3", "t4"]) {
        return;
    }
    let port = free_port();
    let mut child = operator(&kubeconfig, &sim, port, &log);
    wait_ready(port, &log).await;
    // The stuck tenants are created first, the good one last, all on droplet 200003.
    assert!(apply(&kubeconfig, dir.path(), "tenants.yaml", TENANTS));
    let client = emu.client();
    wait_phase(&client, "t4", "good", &[Phase::Succeeded], &log).await;
    // Not by outwaiting them: the tenant without a Secret is still waiting (its deadline has not passed).
    let waiting: Api<DropletAction> = Api::namespaced(client.clone(), "t1");
    assert_eq!(
        waiting.get("no-secret").await.unwrap().phase(),
        Phase::Pending
    );
    assert_eq!(
        sim.posts_for_droplet(200003)
            .into_iter()
            .filter(|p| !matches!(p.initiated, do_sim::Initiation::External))
            .map(|p| p.type_)
            .collect::<Vec<_>>(),
        vec!["power_cycle".to_string()],
        "only the good tenant's action reached DigitalOcean"
    );
    // The tenant without a Secret says so, with a Warning, and its deadline still ends it.
    let stuck = wait_phase(&client, "t1", "no-secret", &[Phase::Failed], &log).await;
    assert_eq!(
        stuck.status.as_ref().unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    let evs = events(&client, "t1", "no-secret").await;
    assert!(
        evs.iter()
            .any(|(t, r, n)| t == "Warning" && r == "TokenNotFound" && n.contains("missing")),
        "{evs:?}"
    );
    assert!(sigterm_and_wait(&mut child, Duration::from_secs(10)).is_some());
    emu.shutdown();
    sim.shutdown();
}

/// Names that sort against file order, and a rebuild whose image ID needs 64 bits, and `tagName: null` beside a
/// dropletId (nullable: counts as absent).
const BATCH: &str = "
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: zz-shutdown}
spec: {type: shutdown, dropletId: 200004}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: mm-snapshot}
spec: {type: snapshot, dropletId: 200004, name: before-upgrade}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: aa-power-on}
spec: {type: power_on, dropletId: 200004, tagName: null}
---
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: big-image}
spec: {type: rebuild, dropletId: 200005, image: 3000000000}
";

const LATER: &str = "
apiVersion: droplet-operator.dev/v1alpha1
kind: DropletAction
metadata: {name: a-reboot}
spec: {type: reboot, dropletId: 200004}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_runs_in_file_order_and_later_applies_after_it() {
    let (sim, emu) = servers(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let log = dir.path().join("operator.log");
    // Created while the operator is down: ordered by their creation revisions all the same.
    if !apply(&kubeconfig, dir.path(), "batch.yaml", BATCH) {
        return;
    }
    let port = free_port();
    let mut child = operator(&kubeconfig, &sim, port, &log);
    wait_ready(port, &log).await;
    let client = emu.client();
    // Restart while the first one runs; the next file is applied while the operator is down.
    wait_phase(
        &client,
        "default",
        "zz-shutdown",
        &[Phase::Running, Phase::Succeeded],
        &log,
    )
    .await;
    assert!(sigterm_and_wait(&mut child, Duration::from_secs(10)).is_some());
    assert!(apply(&kubeconfig, dir.path(), "later.yaml", LATER));
    let mut child = operator(&kubeconfig, &sim, port, &log);
    for name in ["zz-shutdown", "mm-snapshot", "aa-power-on", "a-reboot"] {
        wait_phase(&client, "default", name, &[Phase::Succeeded], &log).await;
    }
    let order: Vec<String> = sim
        .posts_for_droplet(200004)
        .into_iter()
        .filter(|p| !matches!(p.initiated, do_sim::Initiation::External))
        .map(|p| p.type_)
        .collect();
    assert_eq!(order, ["shutdown", "snapshot", "power_on", "reboot"]);
    // The recorded creation revisions follow the file, then the later apply.
    let api: Api<DropletAction> = Api::namespaced(client.clone(), "default");
    let mut revisions = Vec::new();
    for name in ["zz-shutdown", "mm-snapshot", "aa-power-on", "a-reboot"] {
        let st = api.get(name).await.unwrap().status.unwrap();
        revisions.push(st.creation_revision.unwrap().parse::<u64>().unwrap());
    }
    assert!(revisions.is_sorted(), "{revisions:?}");
    // The 64-bit image ID was read and acted on (DigitalOcean's answer decides the phase).
    let big = wait_phase(
        &client,
        "default",
        "big-image",
        &[Phase::Running, Phase::Succeeded, Phase::Failed],
        &log,
    )
    .await;
    assert!(big.status.unwrap().creation_revision.is_some());
    assert!(sigterm_and_wait(&mut child, Duration::from_secs(10)).is_some());
    emu.shutdown();
    sim.shutdown();
}
