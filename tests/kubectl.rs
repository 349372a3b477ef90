//! The real `kubectl` binary against the in-memory API server.
//!
//! Without `kubectl` on PATH every test fails in CI (`CI=true`) and elsewhere prints `SKIPPED: <test>: ...`
//! (`common::require_tool`).
#![allow(clippy::duplicated_attributes)] // repeated printcolumn(...) in #[kube(...)]

mod common;

use std::{process::Output, sync::Arc, time::Duration};

use kube::{
    Api, CustomResourceExt, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use kube_emu::{
    Admission, EmuConfig, EmuHandle, FieldError, FieldErrorReason, KubeEmulator, ResourceInfo,
};
use serde_json::{Value, json};

// The emulator's own test resource, shared with crates/kube-emu's tests.
#[path = "../crates/kube-emu/tests/support/widget.rs"]
mod widget;
use widget::{NoBadWidgets, Widget, WidgetSpec};

struct Kubectl {
    emu: EmuHandle,
    dir: tempfile::TempDir,
}

impl Kubectl {
    async fn start() -> Option<Self> {
        Self::start_with(EmuConfig {
            crds: vec![Widget::crd()],
            admission: Arc::new(NoBadWidgets),
            ..Default::default()
        })
        .await
    }

    /// kubectl against an emulator serving `cfg`; `None` (after `common::require_tool`) without kubectl.
    async fn start_with(cfg: EmuConfig) -> Option<Self> {
        if !common::require_tool("kubectl") {
            return None;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let emu = KubeEmulator::start(cfg, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        emu.write_kubeconfig(&dir.path().join("kubeconfig"), "default")
            .unwrap();
        Some(Self { emu, dir })
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        eprintln!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn api(&self) -> Api<Widget> {
        Api::default_namespaced(self.emu.client())
    }
}

const MANIFEST: &str = "apiVersion: example.dev/v1
kind: Widget
metadata:
  name: k1
spec:
  type: round
  size: 3
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_client_side_and_server_side_then_get_and_delete() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let m = k.file("w.yaml", MANIFEST);
    assert_eq!(
        k.ok(&["apply", "-f", &m]).await.trim(),
        "widget.example.dev/k1 created"
    );
    let m = k.file("w.yaml", &MANIFEST.replace("size: 3", "size: 4"));
    assert_eq!(
        k.ok(&["apply", "-f", &m]).await.trim(),
        "widget.example.dev/k1 configured"
    );
    let w = k.api().get("k1").await.unwrap();
    assert_eq!(w.spec.size, Some(4));
    assert_eq!(w.metadata.generation, Some(2));
    assert!(
        w.annotations()
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );
    let reqs = k.emu.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST"
                && r.query.contains("fieldManager=kubectl-client-side-apply"))
    );
    assert!(
        reqs.iter()
            .any(|r| r.method == "PATCH"
                && r.content_type.starts_with("application/merge-patch+json"))
    );

    let m2 = k.file(
        "w2.yaml",
        &MANIFEST.replace("k1", "k2").replace("round", "square"),
    );
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &m2]).await.trim(),
        "widget.example.dev/k2 serverside-applied"
    );
    let m2 = k.file(
        "w2.yaml",
        &MANIFEST
            .replace("k1", "k2")
            .replace("round", "square")
            .replace("size: 3", "size: 5"),
    );
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &m2]).await.trim(),
        "widget.example.dev/k2 serverside-applied"
    );
    assert_eq!(k.api().get("k2").await.unwrap().spec.size, Some(5));
    // Another manager changing a field kubectl owns: conflict, reported like the real server.
    k.api()
        .patch("k2", &PatchParams::apply("other"), &Patch::Apply(json!({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "k2"}, "spec": {"type": "square", "size": 5}})))
        .await
        .unwrap();
    let m2 = k.file(
        "w2.yaml",
        &MANIFEST
            .replace("k1", "k2")
            .replace("round", "square")
            .replace("size: 3", "size: 6"),
    );
    k.api()
        .patch("k2", &PatchParams::apply("other").force(), &Patch::Apply(json!({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "k2"}, "spec": {"type": "square", "size": 7}})))
        .await
        .unwrap();
    let out = k.run(&["apply", "--server-side", "-f", &m2]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("conflict with \"other\""), "{stderr}");
    assert!(stderr.contains(".spec.size"), "{stderr}");

    // kubectl apply --server-side after client-side apply takes over the fields recorded in
    // last-applied-configuration without conflicts (the real server's lastAppliedManager).
    let m = k.file("w.yaml", &MANIFEST.replace("size: 3", "size: 8"));
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &m]).await.trim(),
        "widget.example.dev/k1 serverside-applied"
    );
    assert_eq!(k.api().get("k1").await.unwrap().spec.size, Some(8));
    let m = k.file("w.yaml", &MANIFEST.replace("size: 3", "size: 4"));
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &m]).await.trim(),
        "widget.example.dev/k1 serverside-applied"
    );
    // Strategic merge (kubectl patch's default) is refused for custom resources, like a real server.
    let out = k
        .run(&["patch", "widget", "k1", "-p", r#"{"spec":{"size":9}}"#])
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("application/strategic-merge-patch+json is not supported")
    );
    k.ok(&[
        "patch",
        "widget",
        "k1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ])
    .await;
    assert!(
        k.ok(&["get", "widgets", "-l", "x=y", "-o", "name"])
            .await
            .contains("k1")
    );

    let table = k.ok(&["get", "widgets"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "SIZE", "PHASE", "AGE"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("k1") && l.contains("round") && l.contains('4')),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("k2") && l.contains("square")),
        "{table}"
    );
    assert!(k.ok(&["get", "wd"]).await.contains("k1"));
    let crds = k.ok(&["get", "crd"]).await;
    assert!(crds.contains("widgets.example.dev"), "{crds}");
    let out = k
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.example.dev",
            "--timeout=5s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
    assert!(k.ok(&["get", "examples"]).await.contains("k2"));
    assert!(k.ok(&["get", "widgets", "-A"]).await.contains("NAMESPACE"));

    let yaml = k.ok(&["get", "widget/k1", "-o", "yaml"]).await;
    assert!(yaml.contains("kind: Widget"), "{yaml}");
    assert!(yaml.contains("type: round"), "{yaml}");
    assert!(yaml.contains("size: 4"), "{yaml}");
    assert_eq!(
        k.ok(&["get", "widgets", "-o", "name"]).await.trim(),
        "widget.example.dev/k1\nwidget.example.dev/k2"
    );

    assert_eq!(
        k.ok(&["delete", "widget/k1"]).await.trim(),
        "widget.example.dev \"k1\" deleted"
    );
    let out = k.run(&["get", "widget/k1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    k.emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_ready_condition() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let api = k.api();
    api.create(
        &PostParams::default(),
        &Widget::new(
            "w",
            WidgetSpec {
                type_: "round".into(),
                size: None,
            },
        ),
    )
    .await
    .unwrap();
    // The condition is set only once kubectl watches the object, so the test proves it waited for the change
    // (rather than finding the condition already met), without comparing clocks.
    let emu = k.emu.clone();
    let setter = tokio::spawn(async move {
        common::eventually("kubectl watches widget/w", Duration::from_secs(60), || {
            let watching = emu
                .requests()
                .iter()
                .any(|r| r.verb == "watch" && r.query.contains("fieldSelector=metadata.name"));
            async move { watching.then_some(()) }
        })
        .await;
        let status = json!({"status": {"phase": "Done", "conditions": [{"type": "Ready", "status": "True", "reason": "Done",
            "message": "done", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        api.patch_status("w", &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    });
    let out = k
        .ok(&["wait", "--for=condition=Ready", "widget/w", "--timeout=60s"])
        .await;
    assert_eq!(out.trim(), "widget.example.dev/w condition met");
    setter.await.unwrap();
    assert!(
        k.emu
            .requests()
            .iter()
            .any(|r| r.verb == "watch" && r.query.contains("fieldSelector=metadata.name"))
    );
    k.emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_field_descriptions() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let out = k.ok(&["explain", "widget.spec"]).await;
    assert!(
        out.contains("The shape of the widget: round or square."),
        "{out}"
    );
    assert!(
        out.contains("How big the widget is, in centimetres."),
        "{out}"
    );
    let out = k.ok(&["explain", "widgets.spec.type"]).await;
    assert!(out.contains("The shape of the widget"), "{out}");
    k.emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_events() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let client = k.emu.client();
    let w = k
        .api()
        .create(
            &PostParams::default(),
            &Widget::new(
                "d",
                WidgetSpec {
                    type_: "round".into(),
                    size: Some(1),
                },
            ),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "widget-controller".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "Wobbly".into(),
        note: Some("the widget wobbles".into()),
        action: "Inspect".into(),
        secondary: None,
    };
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    let out = k.ok(&["describe", "widget/d"]).await;
    assert!(out.contains("Events:"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("Wobbly"))
        .unwrap_or_else(|| panic!("no event in {out}"));
    assert!(
        line.contains("Warning")
            && line.contains("widget-controller")
            && line.contains("the widget wobbles"),
        "{line}"
    );
    assert!(line.contains("(x2 over"), "{line}");
    let events = k.ok(&["get", "events"]).await;
    assert!(
        events
            .lines()
            .any(|l| l.contains("Wobbly") && l.contains("widget/d")),
        "{events}"
    );
    k.emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifest_is_rejected_with_the_admission_message() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let m = k.file(
        "bad.yaml",
        &MANIFEST.replace("k1", "bad").replace("round", "bad"),
    );
    let out = k.run(&["apply", "-f", &m]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("The Widget \"bad\" is invalid: spec: Invalid value: \"object\": type must be round or square"),
        "{stderr}"
    );
    let out = k.run(&["apply", "--server-side", "-f", &m]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("type must be round or square"));
    assert!(k.api().get_opt("bad").await.unwrap().is_none());
    k.emu.shutdown();
}

/// The integrator's schema + CEL validator behind the emulator's admission hook.
struct DropletActionAdmission(kube_emu::validation::SchemaValidator);

impl Admission for DropletActionAdmission {
    fn admit(
        &self,
        resource: &ResourceInfo,
        _sub: Option<&str>,
        new: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<Vec<String>, Vec<FieldError>> {
        use kube_emu::validation::FieldReason as R;
        if resource.kind != "DropletAction" {
            return Ok(vec![]);
        }
        self.0
            .admit(new, old, strict)
            .map(|()| vec![])
            .map_err(|errs| {
                errs.into_iter()
                    .map(|e| {
                        let reason = match e.reason {
                            R::Required => FieldErrorReason::Required,
                            R::Invalid => FieldErrorReason::Invalid,
                            R::NotSupported => FieldErrorReason::NotSupported,
                            R::Forbidden => FieldErrorReason::Forbidden,
                            R::TypeInvalid => FieldErrorReason::TypeInvalid,
                            R::TooLong => FieldErrorReason::TooLong,
                        };
                        FieldError::new(e.field, reason, e.detail)
                    })
                    .collect()
            })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropletaction_crd_with_kubectl() {
    let crd = droplet_operator::crd::definition();
    let admission = DropletActionAdmission(
        kube_emu::validation::SchemaValidator::for_crd(&crd).expect("schema"),
    );
    let Some(k) = Kubectl::start_with(EmuConfig {
        crds: vec![crd],
        admission: Arc::new(admission),
        ..Default::default()
    })
    .await
    else {
        return;
    };

    // Re-applying the installed CRD (what the README does on a real cluster) is harmless.
    let crd_yaml = k.file("crd.yaml", &droplet_operator::crd::crd_yaml());
    let out = k.ok(&["apply", "-f", &crd_yaml]).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/dropletactions.droplet-operator.dev"
        ),
        "{out}"
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/reboot.yaml");
    assert_eq!(
        k.ok(&["apply", "-f", example]).await.trim(),
        "dropletaction.droplet-operator.dev/reboot created"
    );
    let table = k.ok(&["get", "dropletactions"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "TARGET", "PHASE", "ACTION", "AGE"]);
    assert!(table.contains("reboot"), "{table}");
    assert!(k.ok(&["get", "da", "-o", "wide"]).await.contains("MESSAGE"));
    assert!(k.ok(&["get", "digitalocean"]).await.contains("reboot"));
    let explain = k.ok(&["explain", "dropletaction.spec.type"]).await;
    assert!(
        explain.contains("The DigitalOcean droplet action to run."),
        "{explain}"
    );
    let ssa = k.file("ssa.yaml", "apiVersion: droplet-operator.dev/v1alpha1\nkind: DropletAction\nmetadata:\n  name: poweron\nspec:\n  dropletId: 7\n  type: power_on\n");
    assert!(
        k.ok(&["apply", "--server-side", "-f", &ssa])
            .await
            .contains("serverside-applied")
    );

    let bad = k.file(
        "bad.yaml",
        "apiVersion: droplet-operator.dev/v1alpha1\nkind: DropletAction\nmetadata:\n  name: bad\nspec:\n  dropletId: 1\n  tagName: web\n  type: power_on\n",
    );
    let out = k.run(&["apply", "-f", &bad]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("The DropletAction \"bad\" is invalid: "),
        "{stderr}"
    );
    // Spec is immutable: a changed re-apply is rejected by the transition rule.
    let changed = std::fs::read_to_string(example)
        .unwrap()
        .replace("deadlineSeconds: 600", "deadlineSeconds: 60");
    let changed = k.file("changed.yaml", &changed);
    let out = k.run(&["apply", "-f", &changed]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("immutable"));
    k.emu.shutdown();
}
