//! droplet-operator: DigitalOcean droplet actions as Kubernetes resources.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Modules:
//! - [`crd`]: the `DropletAction` custom resource (spec, status, CEL admission rules).
//! - [`admission`]: structural OpenAPI + CEL validation of objects against a CRD schema.
//! - [`digitalocean`]: typed DigitalOcean API client (bodies, errors, rate-limit budget).
//! - [`sim`]: a stateful DigitalOcean API simulator for tests, the sandbox and benchmarks.
//! - [`controller`]: the reconciler (exactly-once initiation, per-droplet ordering, batched tracking).
//! - [`metrics`]: Prometheus metrics.
//! - [`kube_emu`]: an in-memory Kubernetes API server emulator on loopback.

pub mod admin;
pub mod admission;
pub mod bench;
pub mod controller;
pub mod crd;
pub mod demo;
pub mod digitalocean;
pub mod kube_emu;
pub mod metrics;
pub mod operator;
pub mod sandbox;
pub mod sim;
pub mod telemetry;
