//! `droplet-operator sandbox`: a local playground on loopback — the Kubernetes API emulator serving the
//! DropletAction CRD, the DigitalOcean API simulator (or a real DigitalOcean API), and the controller.
//!
//! It writes a kubeconfig and `sandbox.env` (shell `KEY=value` lines) into the state directory so another shell
//! can `source .sandbox/sandbox.env` and use kubectl or `droplet-operator run` against it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::digitalocean::Token;
use crate::operator::{self, OperatorConfig};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, Faults, SimConfig, SimHandle, Simulator};
use kube_emu::validation::CrdAdmission;
use kube_emu::{EmuConfig, EmuHandle, KubeEmulator};

/// Why the sandbox could not start. Variant names are stable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DigitalOcean simulator could not listen.
    #[error("cannot start the DigitalOcean simulator on port {port} (--do-port): {source}")]
    Simulator {
        /// The port asked for (0: any).
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes API emulator could not listen.
    #[error("cannot start the Kubernetes API emulator on port {port} (--kube-port): {source}")]
    Emulator {
        /// The port asked for (0: any).
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state directory could not be created.
    #[error("cannot create --state-dir {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig or sandbox.env could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to start the sandbox.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Use this DigitalOcean API instead of the simulator.
    pub do_api_url: Option<url::Url>,
    /// With `do_api_url`: the token for it (never written to disk by the sandbox).
    pub do_token: Option<Token>,
    /// Run the controller in-process.
    pub controller: bool,
    /// Generated droplets on top of the documented example droplets.
    pub droplets: u32,
    /// Every simulated action takes this long times `duration_scale` (None: the simulator's seeded per-type
    /// model times `duration_scale`).
    pub action_seconds: Option<f64>,
    /// Multiplies the simulator's durations and the resolution of its timestamps (a time-scaled world).
    pub duration_scale: f64,
    /// Seed of the simulator's per-action duration draws (`do_sim::ActionDurations`).
    pub duration_seed: u64,
    /// Simulator faults.
    pub faults: Faults,
    /// Simulator rate limit per minute (None: off).
    pub rate_limit_per_minute: Option<u32>,
    /// Fixed port for the Kubernetes API (0: a free port).
    pub kube_port: u16,
    /// Fixed port for the DigitalOcean simulator (0: a free port).
    pub do_port: u16,
    /// Where the kubeconfig and sandbox.env are written.
    pub state_dir: PathBuf,
    /// Poll-interval scale of the in-process controller.
    pub poll_scale: f64,
    /// DigitalOcean request timeout of the in-process controller.
    pub do_timeout: Duration,
    /// The schedule controller's options (the demo speeds its clock up).
    pub schedule: crate::schedule::ScheduleOptions,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            do_api_url: None,
            do_token: None,
            controller: true,
            droplets: 0,
            action_seconds: None,
            duration_scale: 1.0,
            duration_seed: 1,
            faults: Faults::default(),
            rate_limit_per_minute: Some(250),
            kube_port: 0,
            do_port: 0,
            state_dir: PathBuf::from(".sandbox"),
            poll_scale: 1.0,
            do_timeout: Duration::from_secs(10),
            schedule: Default::default(),
        }
    }
}

/// A running sandbox.
pub struct Sandbox {
    /// The Kubernetes API emulator.
    pub kube: EmuHandle,
    /// The DigitalOcean simulator (None with `do_api_url`).
    pub sim: Option<SimHandle>,
    /// The DigitalOcean API the controller talks to.
    pub do_api_url: url::Url,
    /// Path of the kubeconfig written for kubectl.
    pub kubeconfig: PathBuf,
    /// Path of sandbox.env.
    pub env_file: PathBuf,
    token: Option<Token>,
    stop: tokio::sync::watch::Sender<bool>,
    controller: Option<tokio::task::JoinHandle<()>>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl Sandbox {
    /// Starts the servers (and the controller when asked).
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, Error> {
        let (sim, do_api_url, token) = match &opts.do_api_url {
            Some(url) => (None, url.clone(), opts.do_token.clone()),
            None => {
                let durations = match opts.action_seconds {
                    Some(s) => ActionDurations::uniform(Duration::from_secs_f64(s.max(0.0)))
                        .scaled(opts.duration_scale),
                    None => ActionDurations::default()
                        .scaled(opts.duration_scale)
                        .seeded(opts.duration_seed),
                };
                let config = SimConfig {
                    generated_droplets: opts.droplets,
                    action_durations: durations,
                    rate_limit_per_minute: opts.rate_limit_per_minute,
                    faults: opts.faults.clone(),
                    ..SimConfig::default()
                };
                let sim = Simulator::start(config, loopback(opts.do_port))
                    .await
                    .map_err(|source| Error::Simulator {
                        port: opts.do_port,
                        source,
                    })?;
                let url = sim.url();
                (Some(sim), url, Some(Token::new(DEFAULT_SIM_TOKEN)))
            }
        };

        let crds = vec![crate::crd::definition(), crate::schedule::crd::definition()];
        let emu_config = EmuConfig {
            admission: Arc::new(CrdAdmission::new(&crds)),
            crds,
            ..EmuConfig::default()
        };
        let kube = KubeEmulator::start(emu_config, loopback(opts.kube_port))
            .await
            .map_err(|source| Error::Emulator {
                port: opts.kube_port,
                source,
            })?;

        let state_dir = state_dir(&opts.state_dir)?;
        let kubeconfig = state_dir.join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig, "default")
            .map_err(|source| Error::Write {
                path: kubeconfig.clone(),
                source,
            })?;
        let env_file = state_dir.join("sandbox.env");

        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let controller = if opts.controller {
            let cfg = OperatorConfig {
                do_api_url: do_api_url.clone(),
                default_token: token.clone(),
                namespaces: vec![],
                concurrency: 32,
                metrics_addr: None,
                do_timeout: opts.do_timeout,
                poll_scale: opts.poll_scale,
                instance: Some("sandbox".into()),
                leader_election: None,
            };
            let client = kube.client();
            let schedule = opts.schedule.clone();
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = operator::run_with(client, cfg, schedule, shutdown).await {
                    tracing::error!(error = %e, "controller stopped");
                }
            }))
        } else {
            None
        };
        let sandbox = Sandbox {
            kube,
            sim,
            do_api_url,
            kubeconfig,
            env_file,
            token,
            stop,
            controller,
        };
        std::fs::write(&sandbox.env_file, sandbox.env_contents()).map_err(|source| {
            Error::Write {
                path: sandbox.env_file.clone(),
                source,
            }
        })?;
        Ok(sandbox)
    }

    /// `KEY=value` lines for `source`. The token is included only when it is the simulator's own token.
    pub fn env_contents(&self) -> String {
        let mut s = format!(
            "KUBECONFIG={}\nKUBE_API_URL={}\nDIGITALOCEAN_API_URL={}\n",
            shell_quote(&self.kubeconfig),
            self.kube.url().as_str().trim_end_matches('/'),
            self.do_api_url.as_str().trim_end_matches('/'),
        );
        if self.sim.is_some()
            && let Some(t) = &self.token
        {
            s.push_str(&format!("DIGITALOCEAN_TOKEN={}\n", t.expose()));
        }
        s
    }

    /// Stops the controller and the servers.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(c) = self.controller.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
        self.kube.shutdown();
        if let Some(sim) = &self.sim {
            sim.shutdown();
        }
    }
}

/// Creates the state directory if needed and returns its canonical path (where the kubeconfig, sandbox.env and the
/// demo's controller log go).
pub fn state_dir(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::StateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
