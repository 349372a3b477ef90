//! SIGTERM ends the real operator process within 10 s in every state: the API server never answers (cache never
//! synced, Lease never read), the API server is gone, or a DigitalOcean request hangs — and the intent of a
//! request in flight stays recorded, so the next start adopts it instead of sending it again.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{free_port, servers, sigterm_and_wait, spawn_operator};
use do_sim::SimConfig;
use droplet_operator::crd::DropletAction;
use kube::Api;
use kube::api::PostParams;

const LIMIT: Duration = Duration::from_secs(10);

/// A TCP server that accepts connections and never answers: requests to it hang until their timeout. Counts the
/// connections it accepted.
fn black_hole() -> (TcpListener, String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accept = listener.try_clone().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in accept.incoming() {
            match conn {
                Ok(c) => {
                    held.push(c);
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => return,
            }
        }
    });
    (listener, url, count)
}

fn kubeconfig_for(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kube_emu::kubeconfig::render(server, "default")).unwrap();
    path
}

fn assert_stops(child: &mut std::process::Child, log: &Path, state: &str) {
    let took = sigterm_and_wait(child, LIMIT);
    assert!(
        took.is_some(),
        "{state}: the operator was still running {LIMIT:?} after SIGTERM; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    eprintln!("{state}: stopped {:?} after SIGTERM", took.unwrap());
}

#[test]
fn sigterm_stops_when_the_api_server_never_answers() {
    let (_hole, url, _) = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(dir.path(), &url);
    let log = dir.path().join("operator.log");
    for (state, extra) in [
        ("cache never synced", vec![]),
        (
            "Lease never read",
            vec!["--leader-elect", "--leader-election-namespace", "default"],
        ),
    ] {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--metrics-addr", addr.as_str()];
        args.extend(extra);
        let mut child = spawn_operator(&kubeconfig, "http://127.0.0.1:9", &args, &log);
        std::thread::sleep(Duration::from_secs(2));
        assert_stops(&mut child, &log, state);
    }
}

#[test]
fn sigterm_stops_when_the_api_server_is_unreachable() {
    // Nothing listens on this port: every connection is refused, the watcher backs off and retries.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(dir.path(), &format!("http://127.0.0.1:{port}"));
    let log = dir.path().join("operator.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = spawn_operator(
        &kubeconfig,
        "http://127.0.0.1:9",
        &["--metrics-addr", &addr],
        &log,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_stops(&mut child, &log, "API server unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_with_a_digitalocean_request_in_flight_and_keeps_its_intent() {
    let (sim, emu) = servers(SimConfig::fast(1.0)).await;
    let (_hole, do_url, do_connections) = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let log = dir.path().join("operator.log");
    let api: Api<DropletAction> = Api::namespaced(emu.client(), "default");
    let obj: DropletAction = serde_json::from_value(serde_json::json!({
        "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
        "metadata": {"name": "hanging"},
        "spec": {"type": "reboot", "dropletId": 101001},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    // DigitalOcean requests hang for up to a minute; SIGTERM must not wait for them.
    let mut child = spawn_operator(
        &kubeconfig,
        &do_url,
        &["--metrics-addr", &addr, "--do-timeout-seconds", "60"],
        &log,
    );
    // Wait until the controller is inside a DigitalOcean request.
    let start = Instant::now();
    loop {
        if do_connections.load(Ordering::SeqCst) > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the operator never picked the resource up; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_stops(&mut child, &log, "DigitalOcean request in flight");
    // Restarted against a DigitalOcean that answers: the recorded intent is adopted or resolved, never sent a
    // second time. The black hole never applied anything, so at most one POST may reach the simulator.
    let mut child = spawn_operator(
        &kubeconfig,
        sim.url().as_str(),
        &[
            "--metrics-addr",
            &addr,
            "--do-timeout-seconds",
            "2",
            "--poll-scale",
            "0.05",
        ],
        &log,
    );
    let start = Instant::now();
    let st = loop {
        let st = api.get("hanging").await.unwrap().status.unwrap_or_default();
        let settled = st
            .phase
            .is_some_and(droplet_operator::crd::Phase::is_terminal)
            || st.reason.as_deref() == Some("InitiationUncertain");
        if settled {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the restarted operator did not settle: {st:#?}\nlog:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("after the restart: {:?} {:?}", st.phase, st.reason);
    let posts = sim.posts_for_droplet(101001);
    assert!(posts.len() <= 1, "sent twice: {posts:?} {st:#?}");
    assert_stops(&mut child, &log, "after the restart");
    emu.shutdown();
    sim.shutdown();
}
