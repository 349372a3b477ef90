//! How the operator under measurement runs: as a child process (the `bench` binary re-executes itself, so its
//! CPU time and memory are the operator's alone) or in-process on a dedicated thread with its own
//! current-thread tokio runtime (for tests; CPU is that thread's, memory is the whole test process's).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use do_sim::DEFAULT_SIM_TOKEN;
use droplet_operator::digitalocean::Token;
use droplet_operator::operator::{self, OperatorConfig};
use droplet_operator::telemetry::{self, LogFormat};
use kube_emu::EmuHandle;

/// The hidden subcommand of the `bench` binary that runs the operator.
pub const CHILD_SUBCOMMAND: &str = "__operator";

/// How to run the operator.
#[derive(Clone, Debug)]
pub enum Runner {
    /// `exe __operator ...` as a child process (what `cargo run --bin bench` does).
    Child {
        /// The executable that understands [`CHILD_SUBCOMMAND`] (the bench binary itself).
        exe: PathBuf,
        /// Let the child log at `RUST_LOG` (default info) instead of `error`.
        verbose: bool,
    },
    /// `operator::run` on a dedicated thread of this process.
    InProcess,
}

/// What the operator is started with (the rest is `droplet-operator run`'s defaults).
#[derive(Clone, Debug)]
pub struct OperatorSettings {
    /// DigitalOcean API (the simulator).
    pub do_api_url: url::Url,
    /// Kubeconfig of the emulator (child process).
    pub kubeconfig: PathBuf,
    /// The emulator (in-process).
    pub kube: EmuHandle,
    /// `--poll-scale`.
    pub poll_scale: f64,
    /// `--concurrency` (run's default: 16).
    pub concurrency: u16,
    /// `--do-timeout-seconds` (run's default: 30).
    pub do_timeout: Duration,
}

/// Resource usage of the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Peak resident set size in KiB (VmHWM read just before the stop; in-process: the larger of the
    /// thread's ru_maxrss and VmHWM, both the whole process's).
    pub max_rss_kib: u64,
}

impl Usage {
    /// User + system CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    /// Peak RSS in MiB.
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

enum Kind {
    Child {
        pid: libc::pid_t,
        reaped: bool,
    },
    InProcess {
        stop: tokio::sync::watch::Sender<bool>,
        thread: Option<std::thread::JoinHandle<Usage>>,
        tid: libc::pid_t,
    },
}

/// A running operator.
pub struct RunningOperator {
    kind: Kind,
    /// When it was started.
    pub started: Instant,
}

impl Runner {
    /// Starts the operator.
    pub fn start(&self, s: &OperatorSettings) -> Result<RunningOperator, String> {
        let started = Instant::now();
        match self {
            Runner::Child { exe, verbose } => {
                let mut cmd = Command::new(exe);
                cmd.arg(CHILD_SUBCOMMAND)
                    .arg("--do-api-url")
                    .arg(s.do_api_url.as_str())
                    .arg("--poll-scale")
                    .arg(s.poll_scale.to_string())
                    .arg("--concurrency")
                    .arg(s.concurrency.to_string())
                    .arg("--do-timeout-seconds")
                    .arg(s.do_timeout.as_secs().max(1).to_string())
                    .env("KUBECONFIG", &s.kubeconfig)
                    .env("DIGITALOCEAN_TOKEN", DEFAULT_SIM_TOKEN)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit());
                if !verbose {
                    cmd.env("RUST_LOG", "error");
                }
                // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
                unsafe {
                    use std::os::unix::process::CommandExt;
                    // The operator dies with the harness (Ctrl-C, timeout) instead of lingering.
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let child = cmd.spawn().map_err(|e| {
                    format!("cannot start {} {CHILD_SUBCOMMAND}: {e}", exe.display())
                })?;
                // The child is reaped with wait4 (for its rusage), not through std's Child.
                let pid = child.id() as libc::pid_t;
                drop(child);
                Ok(RunningOperator {
                    kind: Kind::Child { pid, reaped: false },
                    started,
                })
            }
            Runner::InProcess => {
                let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
                let (tid_tx, tid_rx) = std::sync::mpsc::channel();
                let cfg = operator_config(s);
                let kube = s.kube.clone();
                let thread = std::thread::Builder::new()
                    .name("bench-operator".into())
                    .spawn(move || {
                        let _ = tid_tx.send(gettid());
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("operator runtime");
                        rt.block_on(async move {
                            let client = kube.client();
                            let shutdown = async move {
                                let _ = stop_rx.wait_for(|s| *s).await;
                            };
                            if let Err(e) = operator::run(client, cfg, shutdown).await {
                                eprintln!("bench: operator stopped: {e}");
                            }
                        });
                        drop(rt);
                        thread_usage()
                    })
                    .map_err(|e| format!("cannot start the operator thread: {e}"))?;
                let tid = tid_rx
                    .recv()
                    .map_err(|_| "the operator thread died".to_string())?;
                Ok(RunningOperator {
                    kind: Kind::InProcess {
                        stop,
                        thread: Some(thread),
                        tid,
                    },
                    started,
                })
            }
        }
    }
}

/// The operator's configuration for `s` (as `droplet-operator run` builds it, without the admin server).
pub fn operator_config(s: &OperatorSettings) -> OperatorConfig {
    OperatorConfig {
        do_api_url: s.do_api_url.clone(),
        default_token: Some(Token::new(DEFAULT_SIM_TOKEN)),
        namespaces: vec![],
        concurrency: s.concurrency.max(1),
        metrics_addr: None,
        do_timeout: s.do_timeout,
        poll_scale: s.poll_scale,
        instance: Some("bench".into()),
        leader_election: None,
    }
}

impl RunningOperator {
    /// CPU seconds used so far (from /proc; 10 ms resolution), if known.
    pub fn cpu_now(&self) -> Option<f64> {
        let path = match &self.kind {
            Kind::Child { pid, .. } => format!("/proc/{pid}/stat"),
            Kind::InProcess { tid, .. } => format!("/proc/self/task/{tid}/stat"),
        };
        let text = std::fs::read_to_string(path).ok()?;
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After "pid (comm)": state is field 3, utime 14, stime 15 (1-based, proc(5)).
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / clock_ticks())
    }

    /// Peak RSS so far in KiB (VmHWM; for in-process runs, the whole process's).
    pub fn peak_rss_kib_now(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Current RSS in KiB (VmRSS; for in-process runs, the whole process's).
    pub fn rss_kib_now(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, key: &str) -> Option<u64> {
        let path = match &self.kind {
            Kind::Child { pid, .. } => format!("/proc/{pid}/status"),
            Kind::InProcess { .. } => "/proc/self/status".to_string(),
        };
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits until the operator used less than `threshold` CPU seconds during `window` (it has nothing left to
    /// do), at most `max`. Returns how long it waited.
    pub async fn wait_idle(&self, window: Duration, threshold: f64, max: Duration) -> Duration {
        let start = Instant::now();
        let Some(mut last) = self.cpu_now() else {
            tokio::time::sleep(window).await;
            return start.elapsed();
        };
        while start.elapsed() < max {
            tokio::time::sleep(window).await;
            let Some(now) = self.cpu_now() else { break };
            if now - last < threshold {
                break;
            }
            last = now;
        }
        start.elapsed()
    }

    /// Stops the operator (SIGTERM / shutdown signal) and returns its resource usage.
    pub async fn stop(mut self) -> Result<Usage, String> {
        let peak = self.peak_rss_kib_now().unwrap_or(0);
        match &mut self.kind {
            Kind::Child { pid, reaped } => {
                let pid = *pid;
                // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    if let Some((status, usage)) = wait4(pid, libc::WNOHANG)? {
                        *reaped = true;
                        // Not ru_maxrss: for a child it also counts the memory of the forked copy of this
                        // (large) harness before exec. VmHWM is the operator's own address space.
                        let usage = Usage {
                            max_rss_kib: peak,
                            ..usage
                        };
                        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
                            return Err(format!(
                                "the operator exited with status {}",
                                libc::WEXITSTATUS(status)
                            ));
                        }
                        return Ok(usage);
                    }
                    if Instant::now() > deadline {
                        // SAFETY: as above.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        let _ = wait4(pid, 0);
                        *reaped = true;
                        return Err("the operator did not stop within 15 s of SIGTERM".into());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Kind::InProcess { stop, thread, .. } => {
                let _ = stop.send(true);
                let Some(t) = thread.take() else {
                    return Err("already stopped".into());
                };
                let usage = tokio::task::spawn_blocking(move || t.join())
                    .await
                    .map_err(|e| format!("operator thread: {e}"))?
                    .map_err(|_| "the operator thread panicked".to_string())?;
                Ok(Usage {
                    max_rss_kib: usage.max_rss_kib.max(peak),
                    ..usage
                })
            }
        }
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        match &mut self.kind {
            Kind::Child { pid, reaped } if !*reaped => {
                // SAFETY: our own, not yet reaped child.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                let _ = wait4(*pid, 0);
                *reaped = true;
            }
            Kind::InProcess { stop, .. } => {
                let _ = stop.send(true);
            }
            _ => {}
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn from_rusage(r: &libc::rusage) -> Usage {
    Usage {
        user_s: tv(r.ru_utime),
        sys_s: tv(r.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: r.ru_maxrss.max(0) as u64,
    }
}

fn thread_usage() -> Usage {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    from_rusage(&r)
}

/// wait4(pid, options): Some((status, usage)) once the child exited.
fn wait4(pid: libc::pid_t, options: libc::c_int) -> Result<Option<(libc::c_int, Usage)>, String> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; pid is our child.
    let rc = unsafe { libc::wait4(pid, &mut status, options, &mut r) };
    match rc {
        0 => Ok(None),
        n if n == pid => Ok(Some((status, from_rusage(&r)))),
        _ => Err(format!(
            "wait4({pid}) failed: {}",
            std::io::Error::last_os_error()
        )),
    }
}

/// Arguments of [`CHILD_SUBCOMMAND`] (KUBECONFIG and DIGITALOCEAN_TOKEN come from the environment, as for
/// `droplet-operator run`).
#[derive(Clone, Debug, clap::Args)]
pub struct ChildArgs {
    /// DigitalOcean API base URL.
    #[arg(long)]
    pub do_api_url: url::Url,
    /// Multiplies poll intervals.
    #[arg(long, default_value_t = 1.0)]
    pub poll_scale: f64,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// DigitalOcean request timeout.
    #[arg(long, default_value_t = 30)]
    pub do_timeout_seconds: u64,
}

/// The child process: the operator, exactly as `droplet-operator run` wires it (minus the admin server), until
/// SIGTERM.
pub fn child_main(args: ChildArgs) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    telemetry::init(LogFormat::Text);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("cannot reach Kubernetes (KUBECONFIG): {e}"))?;
        let token = std::env::var("DIGITALOCEAN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(Token::new);
        let cfg = OperatorConfig {
            do_api_url: args.do_api_url,
            default_token: token,
            namespaces: vec![],
            concurrency: args.concurrency.max(1),
            metrics_addr: None,
            do_timeout: Duration::from_secs(args.do_timeout_seconds.max(1)),
            poll_scale: args.poll_scale,
            instance: Some("bench".into()),
            leader_election: None,
        };
        operator::run(client, cfg, operator::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}
