//! The operator, its CRD and its deploy/ manifests against a real kube-apiserver + etcd (tests/real/mod.rs): CRD
//! installation and admission verdicts (the table of tests/crd.rs), the manifests through server-side dry-run, the
//! operator binary running as its ServiceAccount with exactly deploy/'s RBAC (the example set of tests/operator.rs,
//! kubectl wait/get/describe/explain, leader election, SIGKILL and adoption), and a differential check of the
//! emulator against the real server (tests/real_k8s/differential.rs).
//!
//! Without the binaries each test prints `SKIPPED: <test>: <why>` and passes, except with `CI=true`.

mod common;
#[path = "real_k8s/differential.rs"]
mod differential;
mod real;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::crd_cases::{da, invalid_cases, valid_specs};
use common::{assert_exactly_once, wait_all_terminal};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, Faults, SimConfig, Simulator};
use droplet_operator::crd::{DropletAction, Phase};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use real::{ControlPlane, Identity, Proc};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_droplet-operator");

/// `let cp = control_plane!("name");`: the shared control plane, or return after printing why it is skipped.
macro_rules! control_plane {
    ($test:expr) => {
        match real::control_plane($test) {
            Some(cp) => cp,
            None => return,
        }
    };
}

async fn sim(cfg: SimConfig) -> do_sim::SimHandle {
    Simulator::start(cfg, common::loopback())
        .await
        .expect("simulator")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `droplet-operator run` as the ServiceAccount (operator kubeconfig), watching `namespace`, against `do_url`.
/// With `lease`: leader election as deployed (Lease in the operator's namespace), as `(lease name, instance)`.
fn operator(
    cp: &ControlPlane,
    do_url: &str,
    namespace: &str,
    lease: Option<(&str, &str)>,
    metrics_port: u16,
    log: &Path,
) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--do-api-url", do_url])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--do-timeout-seconds", "1", "--poll-scale", "0.05"])
        .args(["--namespace", namespace])
        .env("KUBECONFIG", cp.kubeconfig(Identity::Operator))
        .env("DIGITALOCEAN_TOKEN", DEFAULT_SIM_TOKEN)
        .env("RUST_LOG", "droplet_operator=info,kube=warn")
        .env_remove("WATCH_NAMESPACES")
        .env_remove("DIGITALOCEAN_TOKEN_FILE")
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    if let Some((name, instance)) = lease {
        cmd.args([
            "--leader-elect",
            "--leader-election-namespace",
            real::SA_NAMESPACE,
        ])
        .args(["--leader-election-lease", name, "--instance", instance])
        .args(["--lease-duration-seconds", "3"]);
    }
    Proc::spawn(&mut cmd)
}

async fn eventually<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "after {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator log must show no RBAC refusal: every call it made was granted by deploy/.
fn assert_no_forbidden(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden") || l.contains(" 403"))
        .collect();
    assert!(
        bad.is_empty(),
        "the operator was refused by the real RBAC of deploy/:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_installs_and_every_admission_verdict_matches_the_crd_tests() {
    let cp = control_plane!("crd_installs_and_every_admission_verdict_matches_the_crd_tests");
    cp.install_crd().await;
    let ns = cp.namespace("admission").await;
    let client = cp.client(Identity::Admin).await;
    // As `kubectl create`/`apply` send it: strict field validation; dry run, so nothing is stored.
    let path = format!("/apis/droplet-operator.dev/v1alpha1/namespaces/{ns}/dropletactions");
    let post = async |obj: &Value| -> (u16, Value) {
        let mut obj = obj.clone();
        obj["metadata"]["namespace"] = json!(ns);
        differential::send(
            &client,
            "POST",
            &format!("{path}?fieldValidation=Strict&dryRun=All"),
            "application/json",
            Some(&obj),
        )
        .await
    };
    let mut mismatches = Vec::new();
    let mut cause_mismatches = Vec::new();
    let validator =
        kube_emu::validation::SchemaValidator::for_crd(&droplet_operator::crd::definition())
            .expect("CRD schema");
    let cases = invalid_cases();
    for (what, spec, field, needle) in &cases {
        let (code, body) = post(&da(spec.clone())).await;
        if code < 400 {
            mismatches.push(format!("{what}: {spec} accepted ({code})"));
            continue;
        }
        // The field and message the emulator's validator promises, as a cause or in the message.
        let causes = body["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let message = body["message"].as_str().unwrap_or_default();
        let by_cause = causes.iter().any(|c| {
            c["field"].as_str() == Some(field)
                && c["message"].as_str().is_some_and(|m| m.contains(needle))
        });
        let in_message = message.contains(needle) && message.contains(field);
        if !(by_cause || in_message) {
            mismatches.push(format!(
                "{what}: expected {field}: ..{needle}.. got {code} {message}"
            ));
        }
        // The emulator's validator gives exactly the same causes (field, reason, message), in any order. Unknown
        // fields are a decoding error (400, no causes) on the real server; the emulator's HTTP layer maps them.
        if code == 422 {
            let mut obj = da(spec.clone());
            let emu = match validator.admit(&mut obj, None, true) {
                Ok(()) => vec![],
                Err(errs) => errs,
            };
            let mut emu: Vec<(String, String, String)> = emu
                .iter()
                .map(|e| {
                    (
                        e.field.clone(),
                        e.reason.as_str().to_string(),
                        e.detail.clone(),
                    )
                })
                .collect();
            let mut real: Vec<(String, String, String)> = causes
                .iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    (s("field"), s("reason"), s("message"))
                })
                .collect();
            emu.sort();
            real.sort();
            if emu != real {
                cause_mismatches.push(format!(
                    "{what}:\n    real     {real:?}\n    emulator {emu:?}"
                ));
            }
        }
    }
    assert!(
        cause_mismatches.is_empty(),
        "the emulator's causes differ from kube-apiserver's in {} cases:\n{}",
        cause_mismatches.len(),
        cause_mismatches.join("\n")
    );
    for spec in valid_specs() {
        let (code, body) = post(&da(spec.clone())).await;
        if code != 201 {
            mismatches.push(format!("valid {spec} refused: {code} {}", body["message"]));
        }
    }
    // Every example is accepted.
    let examples = droplet_operator::demo::load_examples(&Path::new(real::ROOT).join("examples"))
        .expect("examples");
    for ex in &examples {
        let obj = serde_json::to_value(&ex.resource).unwrap();
        let (code, body) = post(&obj).await;
        if code != 201 {
            mismatches.push(format!("{} refused: {code} {}", ex.file, body["message"]));
        }
    }
    // spec is immutable, with the message that says what to do.
    let api: Api<DropletAction> = Api::namespaced(client.clone(), &ns);
    let created: DropletAction =
        serde_json::from_value(da(json!({"type": "reboot", "dropletId": 101001}))).unwrap();
    let mut created = created;
    created.metadata.namespace = Some(ns.clone());
    let created = api
        .create(&PostParams::default(), &created)
        .await
        .expect("create");
    let mut changed = serde_json::to_value(&created).unwrap();
    changed["spec"]["dropletId"] = json!(101002);
    let (code, body) = differential::send(
        &client,
        "PUT",
        &format!("{path}/x"),
        "application/json",
        Some(&changed),
    )
    .await;
    let msg = body["message"].as_str().unwrap_or_default();
    if !(code == 422
        && msg.contains("spec is immutable")
        && msg.contains("create a new DropletAction"))
    {
        mismatches.push(format!("immutable spec: {code} {msg}"));
    }
    assert!(
        mismatches.is_empty(),
        "the real kube-apiserver disagrees with tests/crd.rs on {} of {} cases:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_are_accepted_by_server_side_dry_run() {
    let test = "deploy_manifests_are_accepted_by_server_side_dry_run";
    let cp = control_plane!(test);
    if !real::kubectl_available(test) {
        return;
    }
    // The namespaced objects need their Namespace to exist for a dry run: install once for real first.
    cp.install_deploy().await;
    for dir in ["deploy/", "deploy/overlays/namespaced/"] {
        let out = cp
            .kubectl_ok(Identity::Admin, &["apply", "--dry-run=server", "-k", dir])
            .await;
        for kind in [
            "namespace/droplet-operator",
            "serviceaccount/droplet-operator",
            "deployment.apps/droplet-operator",
            "rolebinding.rbac.authorization.k8s.io/droplet-operator-leader-election",
        ] {
            assert!(out.contains(kind), "{dir}: {kind} missing from:\n{out}");
        }
        assert!(out.contains("(server dry run)"), "{out}");
    }
    // Server-side apply of the CRD through kubectl, as the install docs say.
    let out = cp
        .kubectl_ok(
            Identity::Admin,
            &["apply", "--server-side", "--dry-run=server", "-f", "crds/"],
        )
        .await;
    assert!(out.contains("dropletactions.droplet-operator.dev"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_as_its_service_account_runs_every_example_and_kubectl_shows_it() {
    let test = "the_operator_as_its_service_account_runs_every_example_and_kubectl_shows_it";
    let cp = control_plane!(test);
    if !real::kubectl_available(test) {
        return;
    }
    cp.install_deploy().await;
    let ns = cp.namespace("examples").await;
    let sim = sim(SimConfig::fast(0.02)).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let port = free_port();
    let _op = operator(
        cp,
        sim.url().as_str(),
        &ns,
        Some(("droplet-operator-examples", "examples-0")),
        port,
        &log,
    );
    let admin = cp.client(Identity::Admin).await;
    let api: Api<DropletAction> = Api::namespaced(admin.clone(), &ns);
    let examples = common::create_examples(&api, &ns).await;
    let items = wait_all_terminal(&api, Duration::from_secs(120)).await;
    let phases: Vec<_> = items
        .iter()
        .map(|d| (kube::ResourceExt::name_any(d), d.phase()))
        .collect();
    eprintln!("phases: {phases:?}");
    assert_no_forbidden(&log);
    common::assert_examples_ended_as_documented(&examples, &items, &sim);

    // kubectl, as users see it.
    cp.kubectl_ok(
        Identity::Admin,
        &[
            "-n",
            &ns,
            "wait",
            "--for=condition=Ready",
            "dropletaction/reboot",
            "--timeout=60s",
        ],
    )
    .await;
    let table = cp
        .kubectl_ok(Identity::Admin, &["-n", &ns, "get", "da"])
        .await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    for col in ["NAME", "TYPE", "TARGET", "PHASE", "ACTION", "AGE"] {
        assert!(header.contains(&col), "column {col} in {header:?}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("tag-snapshot "))
        .expect("tag-snapshot row");
    assert!(row.contains("Succeeded"), "{row}");
    let described = cp
        .kubectl_ok(Identity::Admin, &["-n", &ns, "describe", "da", "reboot"])
        .await;
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events.contains("Initiated") || events.contains("Succeeded"),
        "events visible in kubectl describe:\n{described}"
    );
    let explained = cp
        .kubectl_ok(Identity::Admin, &["explain", "dropletaction.spec.disk"])
        .await;
    assert!(explained.contains("PERMANENT"), "{explained}");
    let explained = cp
        .kubectl_ok(Identity::Admin, &["explain", "da.status.conditions"])
        .await;
    assert!(explained.contains("observedGeneration"), "{explained}");
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_a_sigkilled_leader_is_replaced_without_duplicates() {
    let cp = control_plane!(
        "two_replicas_elect_one_leader_and_a_sigkilled_leader_is_replaced_without_duplicates"
    );
    cp.install_deploy().await;
    let ns = cp.namespace("failover").await;
    let mut cfg = SimConfig::fast(1.0);
    cfg.generated_droplets = 12;
    cfg.action_durations = ActionDurations::uniform(Duration::from_millis(1500));
    // A quarter of the POSTs are applied and answered by a dropped connection: the survivor must adopt.
    cfg.faults = Faults {
        drop_after_apply_rate: 0.25,
        seed: Some(3),
        ..Faults::default()
    };
    let sim = sim(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operators.log");
    let lease_name = "droplet-operator-failover";
    let url = sim.url().to_string();
    let mut a = Some(operator(
        cp,
        &url,
        &ns,
        Some((lease_name, "op-a")),
        free_port(),
        &log,
    ));
    let mut b = Some(operator(
        cp,
        &url,
        &ns,
        Some((lease_name, "op-b")),
        free_port(),
        &log,
    ));
    let admin = cp.client(Identity::Admin).await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), real::SA_NAMESPACE);
    let holder = async || -> Option<String> {
        leases
            .get_opt(lease_name)
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let first = eventually(60, "a replica holds the Lease", holder).await;
    let api: Api<DropletAction> = Api::namespaced(admin.clone(), &ns);
    for i in 1..=12 {
        let obj: DropletAction = serde_json::from_value(json!({
            "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
            "metadata": {"name": format!("r{i}"), "namespace": ns},
            "spec": {"type": "reboot", "dropletId": 200000 + i},
        }))
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
    eventually(60, "the leader initiated actions", async || {
        (sim.actions().len() >= 4).then_some(())
    })
    .await;
    // One leader at a time: the other replica never believed it held the Lease (with one field manager name
    // shared by the replicas, both applies succeed on the real server and both "become the leader").
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let leaders: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("became the leader"))
        .collect();
    assert_eq!(
        leaders.len(),
        1,
        "split brain before any failover:\n{}",
        leaders.join("\n")
    );
    // SIGKILL the leader mid-flight.
    let (other, killed_name) = if first == "op-a" {
        a.take().unwrap().kill();
        ("op-b", "op-a")
    } else {
        b.take().unwrap().kill();
        ("op-a", "op-b")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while holder().await.as_deref() != Some(other) {
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            let lease = leases.get_opt(lease_name).await.ok().flatten();
            panic!(
                "the standby {other} never took the Lease from {first}: {:#?}\n{}",
                lease.map(|l| (l.spec, l.metadata.managed_fields)),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The killed replica restarts and becomes the standby.
    let _restarted = operator(
        cp,
        &url,
        &ns,
        Some((lease_name, killed_name)),
        free_port(),
        &log,
    );
    // A kill between recording an intent and sending it stops that resource InitiationUncertain (never guessed
    // at); resolve it as a user would, after checking DigitalOcean.
    let (items, resent) =
        common::finish_after_crash(&api, &sim, 12, Duration::from_secs(120)).await;
    eprintln!("{resent} uncertain initiations resent");
    assert!(
        items.iter().all(|d| d.phase() == Phase::Succeeded),
        "{:#?}",
        items
            .iter()
            .map(|d| (&d.metadata.name, &d.status))
            .collect::<Vec<_>>()
    );
    for i in 1..=12 {
        assert_eq!(
            sim.posts_for_droplet(200000 + i).len(),
            1,
            "droplet {} got a duplicate POST",
            200000 + i
        );
    }
    assert_exactly_once(&items, &sim);
    assert_eq!(holder().await.as_deref(), Some(other), "no flapping");
    // The Lease was written by both replicas under the real server's field ownership rules.
    let lease = leases.get(lease_name).await.unwrap();
    assert!(
        lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .is_some()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("became the leader"), "{text}");
    // The hard case really happened: POSTs applied by DigitalOcean whose responses were lost, adopted (found on
    // DigitalOcean and recorded) instead of being sent again.
    let dropped = (1..=12)
        .filter(|i| {
            sim.posts_for_droplet(200000 + i)
                .iter()
                .any(|p| p.response_dropped)
        })
        .count();
    let adopted = text.lines().filter(|l| l.contains(" adopted")).count();
    eprintln!("{dropped} responses dropped after apply, {adopted} adoptions");
    assert!(
        dropped > 0 && adopted > 0,
        "dropped {dropped}, adopted {adopted}"
    );
    assert_no_forbidden(&log);
    sim.shutdown();
}

/// What a replica killed right after recording its intent leaves (`status.pendingInitiation`, nothing sent),
/// resolved as the message says: the operator, as its ServiceAccount under deploy/'s RBAC, stops
/// InitiationUncertain, then consumes the user's `resend` annotation and sends exactly one POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncertain_intent_is_resent_once_on_request_under_the_deployed_rbac() {
    let cp =
        control_plane!("an_uncertain_intent_is_resent_once_on_request_under_the_deployed_rbac");
    cp.install_deploy().await;
    let ns = cp.namespace("resend").await;
    let sim = sim(SimConfig::fast(0.02)).await;
    let droplet = 101002;
    let admin = cp.client(Identity::Admin).await;
    let api: Api<DropletAction> = Api::namespaced(admin, &ns);
    api.create(
        &PostParams::default(),
        &common::droplet_action(
            "orphan",
            &ns,
            json!({"type": "reboot", "dropletId": droplet}),
        ),
    )
    .await
    .unwrap();
    let at = jiff::Timestamp::now().to_string();
    api.patch_status(
        "orphan",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": {
            "phase": "Pending", "reason": "Initiating", "startTime": at, "dropletIds": [droplet],
            "pendingInitiation": {
                "attempt": 1, "type": "reboot", "requestedAt": at, "sent": false, "dropletIds": [droplet],
            },
        }})),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let _op = operator(cp, sim.url().as_str(), &ns, None, free_port(), &log);
    let stuck = eventually(60, "InitiationUncertain", async || {
        let da = api.get("orphan").await.ok()?;
        (da.status.as_ref()?.reason.as_deref() == Some("InitiationUncertain")).then_some(da)
    })
    .await;
    assert!(
        common::post_requests(&sim, droplet).is_empty(),
        "nothing sent while uncertain"
    );
    assert_eq!(
        common::resend_uncertain(&api, &sim, &[stuck]).await,
        vec![droplet]
    );
    let done = eventually(60, "Succeeded after the resend", async || {
        let da = api.get("orphan").await.ok()?;
        da.phase().is_terminal().then_some(da)
    })
    .await;
    assert_eq!(done.phase(), Phase::Succeeded, "{:#?}", done.status);
    assert_eq!(
        common::post_requests(&sim, droplet).len(),
        1,
        "exactly one POST"
    );
    assert!(
        !done
            .annotations()
            .contains_key(droplet_operator::controller::decide::RESEND_ANNOTATION),
        "the annotation was consumed"
    );
    assert_no_forbidden(&log);
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_answers_like_the_real_server() {
    let cp = control_plane!("the_emulator_answers_like_the_real_server");
    cp.install_crd().await;
    let ns = cp.namespace("differential").await;
    let real = cp.client(Identity::Admin).await;
    let (_sim, emu) = common::servers(SimConfig::fast(0.02)).await;
    let emu_client = emu.client();
    let real_steps = differential::run(&real, &ns).await;
    let emu_steps = differential::run(&emu_client, "default").await;
    let diffs = differential::compare(&real_steps, &emu_steps);
    assert!(
        diffs.is_empty(),
        "the emulator differs from kube-apiserver {} in {} of {} steps:\n{}",
        cp.apiserver_version,
        diffs.len(),
        real_steps.len(),
        diffs.join("\n")
    );
    emu.shutdown();
}
