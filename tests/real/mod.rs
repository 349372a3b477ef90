//! A real Kubernetes control plane for tests: etcd and kube-apiserver (built from their Go modules by
//! `tests/k8s/build.sh`) on loopback, one per test binary, started on first use and killed when the binary exits.
//!
//! * Binaries: `KUBE_APISERVER_BIN` / `ETCD_BIN`, else `paths.env` in `$DROPLET_OPERATOR_TOOLS_DIR` (default
//!   `~/.cache/droplet-operator/tools`, written by build.sh), else `kube-apiserver` / `etcd` on `PATH`. When they are
//!   missing a test prints `SKIPPED: <test>: <why>` and returns, except in CI (`CI=true`), where it fails.
//! * Security as in a cluster: a generated CA and a serving certificate for 127.0.0.1 (rcgen), bearer tokens from
//!   `--token-auth-file` for an admin (`system:masters`) and for the operator's ServiceAccount
//!   (`system:serviceaccount:droplet-operator:droplet-operator`, groups `system:serviceaccounts`,
//!   `system:serviceaccounts:droplet-operator`), `--authorization-mode=RBAC`, ServiceAccount token signing keys.
//!   Kubeconfigs carry `certificate-authority-data`, so kubectl and kube-rs (rustls) verify the server.
//! * Lifetime: the processes are spawned from a thread that never ends, with `PR_SET_PDEATHSIG=SIGKILL`, so they die
//!   with the test binary however it ends (panic, abort, SIGKILL); on a normal exit an `atexit` hook stops
//!   kube-apiserver, then etcd (SIGTERM, then SIGKILL after 3 s) and removes the temporary directory.
//! * Tests share the server: each works in its own namespace, and [`ControlPlane::install_crd`] /
//!   [`ControlPlane::install_deploy`] run once per binary.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The operator's ServiceAccount, as deploy/ creates it.
pub const SA_NAMESPACE: &str = "droplet-operator";
pub const SA_NAME: &str = "droplet-operator";

/// Who talks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `admin` in `system:masters`: installs the CRD and deploy/, creates test objects.
    Admin,
    /// The operator's ServiceAccount: only what deploy/'s RBAC grants.
    Operator,
}

pub struct ControlPlane {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// Temporary directory: certificates, tokens, kubeconfigs, etcd data, logs.
    pub dir: PathBuf,
    /// Time from spawning etcd to `/readyz` answering 200.
    pub startup: Duration,
    pub apiserver_version: String,
    installed: tokio::sync::Mutex<Installed>,
}

#[derive(Default)]
struct Installed {
    crd: bool,
    deploy: bool,
}

enum Unavailable {
    /// The binaries are not there: skip outside CI.
    Missing(String),
    /// They are there but the control plane did not come up: always a failure.
    Failed(String),
}

static CONTROL_PLANE: OnceLock<Result<ControlPlane, Unavailable>> = OnceLock::new();
/// Children to stop at exit: (pid, name), in start order.
static CHILDREN: Mutex<Vec<(i32, &'static str)>> = Mutex::new(Vec::new());
static TEMP_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Prints the skip line, or fails in CI.
pub fn skip(test: &str, why: &str) {
    assert!(
        !in_ci(),
        "{test}: {why} (CI=true: the real-server tests must run; build the binaries with tests/k8s/build.sh)"
    );
    eprintln!("SKIPPED: {test}: {why}");
    // Visible with the default `cargo test` output capture too.
    let _ = writeln!(std::io::stdout(), "SKIPPED: {test}: {why}");
}

/// The shared control plane, started on first use; `None` (after [`skip`]) when the binaries are missing.
pub fn control_plane(test: &str) -> Option<&'static ControlPlane> {
    match CONTROL_PLANE.get_or_init(start_shared) {
        Ok(cp) => Some(cp),
        Err(Unavailable::Missing(why)) => {
            skip(test, why);
            None
        }
        Err(Unavailable::Failed(why)) => {
            panic!("{test}: the real control plane did not start: {why}")
        }
    }
}

/// `kubectl` on PATH, or `None` after [`skip`].
pub fn kubectl_available(test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()));
    if !found {
        skip(test, "kubectl is not on PATH");
    }
    found
}

// ---------------------------------------------------------------------------------------------------------------
// Finding the binaries

fn tools_dir() -> PathBuf {
    std::env::var_os("DROPLET_OPERATOR_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/droplet-operator/tools")
        })
}

/// `KEY=value` lines of paths.env (values as build.sh's `printf %q` writes plain paths).
fn paths_env() -> Vec<(String, String)> {
    std::fs::read_to_string(tools_dir().join("paths.env"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').trim_matches('"').to_string(),
            )
        })
        .collect()
}

fn find_binary(var: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{var}={} is not a file", p.display()))
        };
    }
    if let Some((_, v)) = paths_env().into_iter().find(|(k, _)| k == var) {
        let p = PathBuf::from(v);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    {
        return Ok(p);
    }
    Err(format!(
        "{name} not found (set {var}, or run tests/k8s/build.sh to write {}, or put {name} on PATH)",
        tools_dir().join("paths.env").display()
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Starting

fn start_shared() -> Result<ControlPlane, Unavailable> {
    let apiserver =
        find_binary("KUBE_APISERVER_BIN", "kube-apiserver").map_err(Unavailable::Missing)?;
    let etcd = find_binary("ETCD_BIN", "etcd").map_err(Unavailable::Missing)?;
    // Spawned from a thread that lives as long as the process: PR_SET_PDEATHSIG fires when the *thread* that forked
    // the child exits, and test threads end with their test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("real-control-plane".into())
        .spawn(move || {
            let mut result = Err(String::new());
            for attempt in 1..=3 {
                match start(&apiserver, &etcd) {
                    Ok(cp) => {
                        result = Ok(cp);
                        break;
                    }
                    Err(e) => {
                        eprintln!("control plane start attempt {attempt} failed: {e}");
                        stop_children();
                        result = Err(e);
                    }
                }
            }
            let _ = tx.send(result);
            loop {
                std::thread::park();
            }
        })
        .expect("control-plane thread");
    rx.recv()
        .expect("control-plane thread answers")
        .map_err(Unavailable::Failed)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Starts `cmd` so that it dies with this process (and, spawned from a test thread, with that test).
pub fn spawn_guarded(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A child process killed (SIGKILL) when dropped, however the test ends.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc(spawn_guarded(cmd).expect("spawn"))
    }
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

extern "C" fn at_exit() {
    stop_children();
    if let Some(dir) = TEMP_DIR.lock().ok().and_then(|mut d| d.take())
        && std::env::var_os("KEEP_CONTROL_PLANE_DIR").is_none()
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// SIGTERM (kube-apiserver first, then etcd), wait up to 3 s each, then SIGKILL.
fn stop_children() {
    let children: Vec<(i32, &str)> = match CHILDREN.lock() {
        Ok(mut c) => c.drain(..).rev().collect(),
        Err(_) => return,
    };
    for (pid, _) in children {
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut status = 0;
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r != 0 {
                break;
            }
            if Instant::now() > deadline {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Directories left by test binaries that were killed (no atexit hook ran): their pid is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("droplet-operator-k8s-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

struct Tokens {
    admin: String,
    operator: String,
}

fn start(apiserver: &Path, etcd: &Path) -> Result<ControlPlane, String> {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!(
        "droplet-operator-k8s-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    *TEMP_DIR.lock().unwrap() = Some(dir.clone());
    let w = |name: &str, text: &str| -> Result<PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };

    // Certificates: a CA, the serving certificate for 127.0.0.1 signed by it, and the ServiceAccount token key pair.
    let (ca_pem, serving_cert, serving_key) = certificates().map_err(|e| format!("rcgen: {e}"))?;
    let sa_key = rcgen::KeyPair::generate().map_err(|e| format!("rcgen: {e}"))?;
    let ca_file = w("ca.crt", &ca_pem)?;
    let cert_file = w("apiserver.crt", &serving_cert)?;
    let key_file = w("apiserver.key", &serving_key)?;
    let sa_priv = w("sa.key", &sa_key.serialize_pem())?;
    let sa_pub = w("sa.pub", &sa_key.public_key_pem())?;
    let tokens = Tokens {
        admin: uuid::Uuid::new_v4().simple().to_string(),
        operator: uuid::Uuid::new_v4().simple().to_string(),
    };
    let token_file = w(
        "tokens.csv",
        &format!(
            "{},admin,admin-uid,\"system:masters\"\n{},system:serviceaccount:{SA_NAMESPACE}:{SA_NAME},{SA_NAME}-uid,\"system:serviceaccounts,system:serviceaccounts:{SA_NAMESPACE}\"\n",
            tokens.admin, tokens.operator
        ),
    )?;

    let t0 = Instant::now();
    let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let log = |name: &str| -> Result<Stdio, String> {
        std::fs::File::create(dir.join(name))
            .map(Stdio::from)
            .map_err(|e| e.to_string())
    };
    let etcd_child = spawn_guarded(
        Command::new(etcd)
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{peer_port}"
            ))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log("etcd.log")?)
            .stderr(log("etcd.log")?),
    )
    .map_err(|e| format!("spawn {}: {e}", etcd.display()))?;
    CHILDREN
        .lock()
        .unwrap()
        .push((etcd_child.id() as i32, "etcd"));
    let url = format!("https://127.0.0.1:{port}");
    let mut api_child = spawn_guarded(
        Command::new(apiserver)
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg("--advertise-address=127.0.0.1")
            // The default endpoint reconciler refuses a loopback advertise address.
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--tls-cert-file={}", cert_file.display()))
            .arg(format!("--tls-private-key-file={}", key_file.display()))
            .arg(format!("--client-ca-file={}", ca_file.display()))
            .arg(format!("--token-auth-file={}", token_file.display()))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-issuer={url}"))
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_priv.display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=true")
            // No controller-manager mints ServiceAccount tokens here; as in controller-runtime's envtest.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .stdin(Stdio::null())
            .stdout(log("kube-apiserver.log")?)
            .stderr(log("kube-apiserver.log")?),
    )
    .map_err(|e| format!("spawn {}: {e}", apiserver.display()))?;
    CHILDREN
        .lock()
        .unwrap()
        .push((api_child.id() as i32, "kube-apiserver"));
    // The child handles are not needed any more: stop_children() waits by pid.
    std::mem::forget(etcd_child);

    let cp = ControlPlane {
        url: url.clone(),
        dir: dir.clone(),
        startup: Duration::ZERO,
        apiserver_version: String::new(),
        installed: tokio::sync::Mutex::new(Installed::default()),
    };
    cp.write_kubeconfig(Identity::Admin, &ca_pem, &tokens.admin)?;
    cp.write_kubeconfig(Identity::Operator, &ca_pem, &tokens.operator)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let version = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = cp.client(Identity::Admin).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(Some(status)) = api_child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.join("kube-apiserver.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "kube-apiserver exited ({status}):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            if let Ok(text) = client.request_text(req).await
                && text.trim() == "ok"
            {
                let v = client
                    .apiserver_version()
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(v.git_version);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "/readyz not ok after 180 s; see {}",
                    dir.join("kube-apiserver.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    std::mem::forget(api_child);
    let cp = ControlPlane {
        startup: t0.elapsed(),
        apiserver_version: version,
        ..cp
    };
    eprintln!(
        "real control plane: kube-apiserver {} at {} ready in {:.1} s (dir {})",
        cp.apiserver_version,
        cp.url,
        cp.startup.as_secs_f64(),
        cp.dir.display()
    );
    Ok(cp)
}

/// (CA PEM, serving certificate PEM, serving key PEM)
fn certificates() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "droplet-operator test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

// ---------------------------------------------------------------------------------------------------------------
// Using it

impl ControlPlane {
    pub fn kubeconfig(&self, who: Identity) -> PathBuf {
        self.dir.join(match who {
            Identity::Admin => "admin.kubeconfig",
            Identity::Operator => "operator.kubeconfig",
        })
    }

    fn write_kubeconfig(&self, who: Identity, ca_pem: &str, token: &str) -> Result<(), String> {
        use base64::Engine;
        let user = match who {
            Identity::Admin => "admin",
            Identity::Operator => "droplet-operator",
        };
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}\n  context:\n    cluster: real\n    user: {user}\n    namespace: default\ncurrent-context: {user}\n",
            self.url
        );
        let path = self.kubeconfig(who);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A client for `who`, bound to the calling test's runtime.
    pub async fn client(&self, who: Identity) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig(who)).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config from kubeconfig");
        kube::Client::try_from(cfg).expect("client")
    }

    /// Runs kubectl as `who` (blocking the runtime's blocking pool, not the test's executor).
    pub async fn kubectl(&self, who: Identity, args: &[&str]) -> Output {
        let mut cmd = Command::new("kubectl");
        let cache = self.dir.join(format!("kubectl-cache-{who:?}"));
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig(who))
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .current_dir(ROOT);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("kubectl task")
            .expect("run kubectl");
        eprintln!(
            "$ kubectl {} ({who:?}) -> {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// kubectl that must succeed; its stdout.
    pub async fn kubectl_ok(&self, who: Identity, args: &[&str]) -> String {
        let out = self.kubectl(who, args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Installs crds/ through the apiextensions API (server-side apply, as admin) and waits until each CRD is
    /// Established and its resource is served. Once per test binary.
    pub async fn install_crd(&self) {
        let mut installed = self.installed.lock().await;
        if installed.crd {
            return;
        }
        let client = self.client(Identity::Admin).await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(Path::new(ROOT).join("crds")).expect("crds/") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("CRD file");
            let crd: CustomResourceDefinition =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = crd.metadata.name.clone().expect("CRD name");
            crds.patch(
                &name,
                &PatchParams::apply("droplet-operator-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("the real server refused {}: {e}", path.display()));
            names.push(name);
        }
        assert!(!names.is_empty(), "crds/ holds no CRD");
        for name in &names {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let crd = crds.get(name).await.expect("get CRD");
                let conds = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                if conds
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    assert!(
                        !conds
                            .iter()
                            .any(|c| c.type_ == "NonStructuralSchema" && c.status == "True"),
                        "{name}: {conds:?}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} not Established: {conds:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Established can precede the handler serving the resource by a moment.
        let das: Api<droplet_operator::crd::DropletAction> = Api::all(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        while das.list(&Default::default()).await.is_err() {
            assert!(Instant::now() < deadline, "dropletactions never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        installed.crd = true;
    }

    /// `kubectl apply -k deploy/` as admin (the documented installation: Namespace, ServiceAccount, RBAC,
    /// Deployment, Service; nothing runs the Deployment here), after the CRD. Once per test binary. Then waits
    /// until the ServiceAccount's RBAC is in effect.
    pub async fn install_deploy(&self) {
        self.install_crd().await;
        let mut installed = self.installed.lock().await;
        if installed.deploy {
            return;
        }
        let dir = std::env::var("DEPLOY_DIR").unwrap_or_else(|_| "deploy".into());
        self.kubectl_ok(Identity::Admin, &["apply", "-k", &dir])
            .await;
        // RBAC is served from an informer cache: wait until the operator may list DropletActions.
        let client = self.client(Identity::Operator).await;
        let das: Api<droplet_operator::crd::DropletAction> = Api::all(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        while das.list(&Default::default()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the operator's RBAC never took effect"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        installed.deploy = true;
    }

    /// Creates a fresh namespace (as admin) for one test.
    pub async fn namespace(&self, name: &str) -> String {
        let client = self.client(Identity::Admin).await;
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
        let ns = serde_json::from_value(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .unwrap();
        api.create(&Default::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name.to_string()
    }
}
