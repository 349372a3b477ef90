//! droplet-operator: DigitalOcean droplet actions as Kubernetes resources.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Modules:
//! - [`crd`]: the `DropletAction` custom resource (spec, status, CEL admission rules).
//! - [`digitalocean`]: typed DigitalOcean API client (bodies, errors, rate-limit budget).
//! - [`controller`]: the reconciler (exactly-once initiation, per-droplet ordering, batched tracking).
//! - [`operator`]: runtime wiring (Kubernetes client, watchers, leader election, admin server).
//! - [`metrics`], [`admin`], [`telemetry`]: Prometheus metrics, `/metrics` `/healthz` `/readyz`, logging.
//! - [`sandbox`], [`demo`] (default feature `sandbox`): the local playground on top of the test world's
//!   DigitalOcean simulator (`do-sim`) and Kubernetes emulator (`kube-emu`), which live in `crates/`.

pub mod admin;
pub mod controller;
pub mod crd;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod digitalocean;
pub mod events;
pub mod metrics;
pub mod operator;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod schedule;
pub mod telemetry;
