//! An in-memory Kubernetes API server emulator on loopback.
//!
//! The real `kube::Client`, kube-runtime `Controller`/watcher/`Recorder`/finalizer helpers and the
//! real `kubectl` (1.32) work against it unmodified. It powers integration tests, the
//! `droplet-operator sandbox` command and benchmarks.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kube_emu::{EmuConfig, KubeEmulator};
//! let emu = KubeEmulator::start(EmuConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! emu.write_kubeconfig(std::path::Path::new("kubeconfig"), "default")?; // for kubectl
//! let client = emu.client(); // a kube::Client, default namespace "default"
//! # drop(client);
//! emu.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! # Emulated
//! - Plain HTTP on 127.0.0.1, no authentication; a kubeconfig writer ([`EmuHandle::write_kubeconfig`]).
//! - `/version` (reports 1.32 so the kubectl dispatcher runs its own 1.32), `/healthz`, `/readyz`, `/livez`.
//! - Discovery: aggregated `apidiscovery.k8s.io/v2` for `/api` and `/apis` (when the Accept asks
//!   for it, with the exact `as=APIGroupDiscoveryList` Content-Type) and legacy APIVersions /
//!   APIGroupList / APIGroup / APIResourceList (short names, categories, verbs, `/status`).
//! - OpenAPI v3 index and per group-version documents: CRD schemas (so `kubectl explain` works),
//!   `x-kubernetes-group-version-kind` on schemas and operations, `fieldValidation` on PATCH so
//!   kubectl validates server-side. PATCH bodies list no strategic-merge type, so kubectl computes
//!   JSON merge patches for custom resources (as against a real server) without warnings.
//!   **`/openapi/v2` answers 404**: kubectl tolerates it on the apply update path and uses v3
//!   everywhere else; serving v2 would need the protobuf encoding kubectl asks for.
//! - Resources: every configured CRD version (namespaced or cluster-scoped, with or without a
//!   status subresource); core v1 Namespaces (seeded `default`, `kube-system`, `kube-public`,
//!   `kube-node-lease`), Secrets (`stringData` folded into `data`), ConfigMaps, Events;
//!   `events.k8s.io/v1` Events as a second view of the core Events store (regarding ↔
//!   involvedObject, note ↔ message, reportingController ↔ source.component/reportingComponent,
//!   series.count ↔ count, deprecated* ↔ legacy fields) so `kubectl describe` shows what kube's
//!   `Recorder` publishes; `coordination.k8s.io/v1` Leases (kube-lease-manager works);
//!   `apiextensions.k8s.io/v1` CustomResourceDefinitions holding the configured CRDs (Established,
//!   so `kubectl get crd` and `kubectl wait --for=condition=Established` work; creating new CRDs
//!   is refused with 405, and editing one does not change what is served).
//! - create / get / list / watch / update / patch / delete / deletecollection, `dryRun=All`.
//!   Patches: JSON merge, JSON patch (a failing `test` → 422; `test` of null on a missing path
//!   passes like the apiserver), strategic merge (treated as merge for built-ins; 415 for custom
//!   resources, like the real server), server-side apply (JSON or YAML body, `fieldManager`
//!   required, `force`, creates missing objects, conflicts reported with the real wording and
//!   `FieldManagerConflict` causes; `kubectl apply --server-side` takes over fields listed in
//!   `last-applied-configuration` like the real lastAppliedManager).
//! - One global resourceVersion; watch replay from a bounded history ring, 410 Expired (as an
//!   ERROR event, and for lists with `resourceVersionMatch=Exact` or an old continue token),
//!   periodic bookmarks with the current RV, `timeoutSeconds`, `sendInitialEvents` with the
//!   initial-events-end bookmark, selection enter/leave as ADDED/DELETED; list pagination
//!   (`limit`/`continue`, the token carries RV + last key); label selectors (`=`, `==`, `!=`,
//!   `in`, `notin`, exists, `!exists`) and field selectors (`metadata.name`, `metadata.namespace`,
//!   any event field such as `involvedObject.name`, Secret `type`); optimistic concurrency
//!   (409 for a stale `metadata.resourceVersion` in PUT, any PATCH or apply); no-op writes keep the
//!   resourceVersion; `metadata.generation` bumped on spec (non-metadata, non-status) changes only
//!   (for CRDs without a status subresource, status changes count too, like the real server);
//!   status subresource (status writes change only status; main writes ignore status; status is
//!   dropped on create); finalizers and deletionTimestamp; managedFields (per list-map item when
//!   the schema says `x-kubernetes-list-type: map`).
//! - An [`Admission`] hook before every persisted write, with the merged object and the old one
//!   (422 Invalid Status on rejection, formatted like the real server; warnings as
//!   `Warning: 299 - "..."` headers).
//! - Table (`as=Table`, v1 and v1beta1; printer columns, `date` columns as relative ages,
//!   `includeObject`) and PartialObjectMetadata(List) responses, also on watches.
//! - Protobuf request bodies for v1 Secrets, ConfigMaps and Namespaces (what `kubectl create
//!   secret|configmap|namespace` sends); responses are always JSON.
//! - A request log ([`EmuHandle::requests`]) with the parsed verb and resource, for RBAC checks.
//! - Lagging watches ([`EmuHandle::set_watch_delay`]): live watch events arrive late, like a slow informer's.
//!
//! # Not emulated
//! - Authentication, authorization/RBAC enforcement (calls are only logged), admission webhooks,
//!   API priority and fairness, HTTP/2 specifics, CBOR, protobuf responses.
//! - Garbage collection of owned objects, namespace finalization (deleting a namespace does not
//!   delete its contents), graceful deletion periods, Secret/ConfigMap immutability.
//! - Conversion between CRD versions (objects are served with the requested apiVersion and
//!   otherwise unchanged), CRD defaulting/pruning/validation unless the admission hook does it.
//! - Full structured-merge-diff: apply tracks `x-kubernetes-list-type: map` lists per item (from
//!   the CRD schema) but other lists (sets included) are atomic; strategic-merge-patch directives
//!   (`$patch`, `$setElementOrder`) are not interpreted.
//! - Consistent snapshots for paginated lists (later pages show current state; the continue token
//!   carries the first page's resourceVersion so a following watch replays the changes).
//! - `resourceVersion` "too large" waits: a list or watch from a future RV is served immediately.
//!
//! # Checked against a real kube-apiserver
//! `tests/real_k8s.rs` (`the_emulator_answers_like_the_real_server`) sends one request sequence (create, apply with
//! conflicting managers, status patches with stale and current resourceVersions, selectors, watch from an old
//! resourceVersion, events, leases, delete) here and to kube-apiserver 1.37.2 and compares status codes and the
//! fields clients read. Fixed after that comparison: strict unknown fields answer 400 `strict decoding error`
//! (not 422); writes without `fieldManager` (except apply) are recorded under the User-Agent or `unknown`, so
//! an apply conflicts with fields a PUT/PATCH wrote, as on the real server (this is what makes a Lease taken over
//! by apply conflict with the previous holder's update); events.k8s.io/v1 notes over 1024 bytes are 422; CRD
//! validation (`validation`) reports CEL failures as `Invalid value: <message>` (no value, as 1.37 does), skips
//! CEL after type/enum/required/length errors with the real `<nil>` "some validation rules were not checked"
//! cause, and reports CEL failures together with other schema errors (bounds, patterns) like the real server.
//! Known differences, kept with a reason:
//! - A watch with a malformed resourceVersion is 500 on the real server, 400 BadRequest here.
//! - DELETE of a custom resource answers with a Status on the real server; here with the deleted object (what the
//!   real server does for built-in kinds). Clients (kube's `Either<K, Status>`) accept both.
//! - The real server enforces RBAC; here requests are only logged (tests/deploy.rs checks them against deploy/).

pub mod admission;
pub mod apply;
pub mod discovery;
pub mod events;
pub mod kubeconfig;
pub mod openapi;
pub mod ops;
pub mod protobuf;
pub mod resource;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod validation;
pub mod watch;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::json;

pub use admission::{Admission, FieldError, FieldErrorReason, NoAdmission};
pub use resource::{PrinterColumn, ResourceInfo};
pub use server::EmuRequest;
pub use status::ApiError;

/// Emulator configuration.
#[derive(Clone)]
pub struct EmuConfig {
    /// CRDs to serve.
    pub crds: Vec<CustomResourceDefinition>,
    /// Admission hook called before every persisted write.
    pub admission: Arc<dyn Admission>,
    /// Number of changes kept for watch replay (older RVs get 410 Expired).
    pub watch_history: usize,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How many requests [`EmuHandle::requests`] keeps (the oldest are dropped; 0 = no log).
    pub request_log_limit: usize,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            crds: Vec::new(),
            admission: Arc::new(NoAdmission),
            watch_history: 20_000,
            bookmark_interval: Duration::from_secs(5),
            request_log_limit: 100_000,
        }
    }
}

impl std::fmt::Debug for EmuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuConfig")
            .field("crds", &self.crds.len())
            .field("watch_history", &self.watch_history)
            .field("bookmark_interval", &self.bookmark_interval)
            .finish()
    }
}

/// The emulator entry point.
pub struct KubeEmulator;

impl KubeEmulator {
    /// Binds `addr` (use `127.0.0.1:0` for a free port) and serves in the current tokio runtime.
    pub async fn start(config: EmuConfig, addr: SocketAddr) -> std::io::Result<EmuHandle> {
        let reg = resource::Registry::new(&config.crds)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let emu = Arc::new(server::Emu::new(
            reg,
            config.admission.clone(),
            config.watch_history,
            config.bookmark_interval,
            local,
            config.request_log_limit,
        ));
        let ns = emu
            .reg
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            emu.create(
                &ns,
                "",
                json!({"metadata": {"name": name}}),
                &ops::WriteOpts::default(),
            )
            .map_err(|e| std::io::Error::other(e.message().to_string()))?;
        }
        let crd_res = emu
            .reg
            .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("CRDs are built in");
        for crd in emu.reg.crds.clone() {
            let mut crd = crd;
            let names = crd.pointer("/spec/names").cloned().unwrap_or_default();
            crd["status"] = json!({
                "acceptedNames": names,
                "storedVersions": crd.pointer("/spec/versions").and_then(|v| v.as_array()).map(|vs| {
                    vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()
                }),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": ops::now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": ops::now()},
                ],
            });
            let name = crd
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .to_string();
            // Seed directly: status is kept (the API strips it on create for status subresources).
            let mut st = emu.lock();
            let rv = st.next_rv();
            crd["metadata"]["resourceVersion"] = json!(rv.to_string());
            crd["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
            crd["metadata"]["creationTimestamp"] = json!(ops::now());
            crd["metadata"]["generation"] = json!(1);
            st.put(&crd_res.store_key, "", &name, crd, rv);
        }
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(emu.clone());
        let mut shutdown = emu.shutdown_rx.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.changed().await;
                })
                .await;
        });
        let url = url::Url::parse(&format!("http://{local}")).expect("valid url");
        Ok(EmuHandle {
            emu,
            url,
            task: Arc::new(task.abort_handle()),
        })
    }
}

/// A running emulator. Cheap to clone.
#[derive(Clone)]
pub struct EmuHandle {
    emu: Arc<server::Emu>,
    url: url::Url,
    task: Arc<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for EmuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuHandle")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl EmuHandle {
    /// Delivers every live watch event of `plural` (for example `dropletactions`) `delay` after its change was
    /// committed (0: at once), so watchers' caches of that resource lag behind the store, and behind those of
    /// other resources, the way separate informers can. Reads (get, list) stay current.
    pub fn set_watch_delay(&self, plural: &str, delay: Duration) {
        self.emu
            .watch_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(plural.to_string(), delay);
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> url::Url {
        self.url.clone()
    }

    /// The server URL without a trailing slash.
    pub fn server(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_string()
    }

    /// kubeconfig YAML (cluster/context/user `droplet-operator-sandbox`).
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        kubeconfig::render(&self.server(), namespace)
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(namespace))
    }

    /// A kube client for this emulator (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let uri: http::Uri = self.server().parse().expect("valid uri");
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("kube client for the emulator")
    }

    /// The requests served so far (the last `request_log_limit`), oldest first.
    pub fn requests(&self) -> Vec<EmuRequest> {
        self.emu
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Forget the request log.
    pub fn clear_requests(&self) {
        self.emu
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Number of stored objects (all kinds, including the seeded namespaces).
    pub fn object_count(&self) -> usize {
        self.emu.lock().count()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.emu.lock().rv
    }

    /// Stops accepting connections and ends every watch.
    pub fn shutdown(&self) {
        let _ = self.emu.shutdown_tx.send(true);
        self.task.abort();
    }
}
