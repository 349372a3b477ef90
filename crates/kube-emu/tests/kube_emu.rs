//! The kube-rs client, watcher, Controller and Recorder against the in-memory API server.
#![allow(clippy::duplicated_attributes)] // repeated printcolumn(...) in #[kube(...)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use kube::{
    Api, Client, CustomResourceExt, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use kube_emu::{
    Admission, EmuConfig, EmuHandle, FieldError, FieldErrorReason, KubeEmulator, ResourceInfo,
};
use serde_json::{Value, json};

#[path = "support/widget.rs"]
mod widget;
use widget::{Widget, WidgetStatus, widget};

async fn start_with(cfg: EmuConfig) -> (EmuHandle, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = EmuConfig {
        crds: vec![Widget::crd()],
        ..cfg
    };
    let emu = KubeEmulator::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = emu.client();
    (emu, client)
}

async fn start() -> (EmuHandle, Client) {
    start_with(EmuConfig::default()).await
}

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_on_custom_resource_and_secret() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let created = api
        .create(&PostParams::default(), &widget("a", "round"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let got = api.get("a").await.unwrap();
    assert_eq!(got.spec.type_, "round");
    assert_eq!(got.resource_version(), created.resource_version());
    let err = api_err(
        api.create(&PostParams::default(), &widget("a", "x"))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    let mut upd = got.clone();
    upd.spec.size = Some(3);
    let replaced = api
        .replace("a", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(replaced.spec.size, Some(3));
    assert_eq!(replaced.metadata.generation, Some(2));
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let err = api_err(api.get("a").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "widgets.example.dev \"a\" not found");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tok"}, "stringData": {"token": "abc"}, "data": {"k": "dmFs"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let got = secrets.get("tok").await.unwrap();
    assert_eq!(got.data.unwrap()["k"].0, b"val");
    secrets
        .delete("tok", &DeleteParams::default())
        .await
        .unwrap();
    assert!(secrets.get_opt("tok").await.unwrap().is_none());

    // Undecodable metadata is a bad request, not a crash.
    let url = format!(
        "{}apis/example.dev/v1/namespaces/default/widgets",
        emu.url()
    );
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "l", "labels": "x"}, "spec": {"type": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // A namespace must exist.
    let nowhere: Api<Widget> = Api::namespaced(client.clone(), "nowhere");
    let err = api_err(
        nowhere
            .create(&PostParams::default(), &widget("b", "x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);

    let reqs = emu.requests();
    assert!(
        reqs.iter()
            .any(|r| r.verb == "create" && r.resource.as_deref() == Some("widgets"))
    );
    assert!(
        reqs.iter()
            .any(|r| r.verb == "update" && r.name.as_deref() == Some("a") && r.status == 200)
    );
    assert!(
        reqs.iter()
            .any(|r| r.verb == "delete" && r.resource.as_deref() == Some("secrets"))
    );
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_missed_events_in_order_and_expires_old_versions() {
    let (emu, client) = start_with(EmuConfig {
        watch_history: 50,
        ..Default::default()
    })
    .await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let first = api
        .create(&PostParams::default(), &widget("w0", "t"))
        .await
        .unwrap();
    let rv0 = first.resource_version().unwrap();
    for i in 1..5 {
        api.create(&PostParams::default(), &widget(&format!("w{i}"), "t"))
            .await
            .unwrap();
    }
    api.patch(
        "w0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 9}})),
    )
    .await
    .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();

    // A watch from rv0 (a "reconnect") replays everything after it, in order.
    let stream = api
        .watch(&WatchParams::default().timeout(1), &rv0)
        .await
        .unwrap();
    let events: Vec<_> = stream.try_collect().await.unwrap();
    let seen: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
            WatchEvent::Bookmark(_) => "BOOKMARK".into(),
            WatchEvent::Error(e) => format!("ERROR {}", e.code),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "ADDED w1",
            "ADDED w2",
            "ADDED w3",
            "ADDED w4",
            "MODIFIED w0",
            "DELETED w1"
        ]
    );
    let rvs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                o.resource_version().and_then(|r| r.parse().ok())
            }
            _ => None,
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");

    // Push the start out of the 50-entry history: 410 Expired.
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for i in 0..60 {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let stream = api
        .watch(&WatchParams::default().timeout(1), &rv0)
        .await
        .unwrap();
    let events: Vec<_> = stream.try_collect().await.unwrap();
    match &events[..] {
        [WatchEvent::Error(e)] => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a single 410 error, got {other:?}"),
    }
    // A list with an expired RV and resourceVersionMatch=Exact is 410 too.
    let url = format!(
        "{}apis/example.dev/v1/namespaces/default/widgets?resourceVersion={rv0}&resourceVersionMatch=Exact",
        emu.url()
    );
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 410);
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_bookmarks_with_the_current_version() {
    let (emu, client) = start_with(EmuConfig {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap();
    let other = secrets.create(&PostParams::default(), &s).await.unwrap();
    let other_rv: u64 = other.resource_version().unwrap().parse().unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Bookmark(b) => {
            let brv: u64 = b.metadata.resource_version.parse().unwrap();
            assert!(
                brv >= other_rv,
                "bookmark {brv} should carry the current RV {other_rv}"
            );
            assert_eq!(b.types.kind, "Widget");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    emu.shutdown();
}

fn name_event<K: ResourceExt>(e: watcher::Event<K>) -> watcher::Event<String> {
    use watcher::Event as W;
    match e {
        W::Init => W::Init,
        W::InitApply(k) => W::InitApply(k.name_any()),
        W::InitDone => W::InitDone,
        W::Apply(k) => W::Apply(k.name_any()),
        W::Delete(k) => W::Delete(k.name_any()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_and_metadata_watchers() {
    use kube::{core::PartialObjectMeta, runtime::watcher::Event as W};
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    for i in 0..3 {
        api.create(&PostParams::default(), &widget(&format!("m{i}"), "t"))
            .await
            .unwrap();
    }
    let summarize = |e: &W<String>| match e {
        W::Init => "Init".to_string(),
        W::InitApply(n) => format!("InitApply {n}"),
        W::InitDone => "InitDone".to_string(),
        W::Apply(n) => format!("Apply {n}"),
        W::Delete(n) => format!("Delete {n}"),
    };
    // sendInitialEvents=true: initial ADDED events then a bookmark marking their end.
    let mut streaming = watcher(api.clone(), watcher::Config::default().streaming_lists())
        .map_ok(name_event)
        .boxed();
    // A metadata-only watcher (as used by Controller::owns).
    let meta_api: Api<PartialObjectMeta<Widget>> = Api::default_namespaced(client.clone());
    let mut meta = watcher(meta_api, watcher::Config::default())
        .map_ok(name_event)
        .boxed();
    let mut got = Vec::new();
    let mut got_meta = Vec::new();
    for _ in 0..5 {
        got.push(summarize(&streaming.try_next().await.unwrap().unwrap()));
        got_meta.push(summarize(&meta.try_next().await.unwrap().unwrap()));
    }
    let init = [
        "Init",
        "InitApply m0",
        "InitApply m1",
        "InitApply m2",
        "InitDone",
    ];
    assert_eq!(got, init);
    assert_eq!(got_meta, init);
    api.delete("m1", &DeleteParams::default()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), streaming.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summarize(&next), "Delete m1");
    let next = tokio::time::timeout(Duration::from_secs(5), meta.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summarize(&next), "Delete m1");
    assert!(
        emu.requests()
            .iter()
            .any(|r| r.query.contains("sendInitialEvents=true"))
    );
    // An unparsable resourceVersion is a bad request.
    let url = format!(
        "{}apis/example.dev/v1/namespaces/default/widgets?watch=true&resourceVersion=abc",
        emu.url()
    );
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 400);
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_generate_name_status_put_and_delete_collection() {
    use k8s_openapi::api::core::v1::Namespace;
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &widget("dry", "t"),
        )
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(
        api.get_opt("dry").await.unwrap().is_none(),
        "dryRun=All persists nothing"
    );

    let mut g = widget("", "t");
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let generated = api.create(&PostParams::default(), &g).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    let mut with_status = generated.clone();
    with_status.status = Some(WidgetStatus {
        phase: Some("Put".into()),
        ..Default::default()
    });
    with_status.spec.type_ = "ignored".into();
    let put = api
        .replace_status(&generated.name_any(), &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(put.status.as_ref().unwrap().phase.as_deref(), Some("Put"));
    assert_eq!(put.spec.type_, "t");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let team: Api<Widget> = Api::namespaced(client.clone(), "team-a");
    team.create(&PostParams::default(), &widget("x", "t"))
        .await
        .unwrap();
    let all: Api<Widget> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "other namespaces are untouched"
    );
    assert!(emu.requests().iter().any(|r| r.verb == "deletecollection"));
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_crd_is_served_cluster_scoped_without_status_subresource() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let gadget: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.other.io"},
        "spec": {"group": "other.io", "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v2", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emu = KubeEmulator::start(
        EmuConfig {
            crds: vec![gadget],
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("other.io", "v2", "Gadget"),
        "gadgets",
    );
    let api: Api<DynamicObject> = Api::all_with(emu.client(), &ar);
    let mut g = DynamicObject::new("g1", &ar);
    g.data = json!({"spec": {"a": 1}, "status": {"ok": true}});
    let created = api.create(&PostParams::default(), &g).await.unwrap();
    assert_eq!(
        created.data["status"]["ok"], true,
        "without a status subresource, status is part of the object"
    );
    let patched = api
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ok": false}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["ok"], false);
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "without a status subresource every non-metadata change bumps generation (real CR strategy)"
    );
    let labelled = api
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    let err = api_err(
        api.patch_status("g1", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let http = reqwest::Client::new();
    let res: Value = http
        .get(format!("{}apis/other.io/v2", emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["resources"][0]["namespaced"], false);
    assert_eq!(res["resources"].as_array().unwrap().len(), 1);
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_writes_conflict() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let v1 = api
        .create(&PostParams::default(), &widget("c", "t"))
        .await
        .unwrap();
    api.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 1}})),
    )
    .await
    .unwrap();
    let mut stale = v1.clone();
    stale.spec.size = Some(2);
    let err = api_err(
        api.replace("c", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on widgets.example.dev \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let patch =
        json!({"metadata": {"resourceVersion": v1.resource_version()}, "spec": {"size": 3}});
    let err = api_err(
        api.patch("c", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    let ssa = json!({"apiVersion": "example.dev/v1", "kind": "Widget",
        "metadata": {"name": "c", "resourceVersion": v1.resource_version()}, "spec": {"type": "t"}});
    let err = api_err(
        api.patch("c", &PatchParams::apply("m"), &Patch::Apply(ssa))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(api.get("c").await.unwrap().spec.size, Some(1));
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_and_generation() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let mut w = widget("s", "t");
    w.status = Some(WidgetStatus {
        phase: Some("Ignored".into()),
        ..Default::default()
    });
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "status is dropped on create");

    let after_status = api
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"type": "changed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        after_status.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(
        after_status.spec.type_, "t",
        "status writes do not change spec"
    );
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    assert_ne!(after_status.resource_version(), created.resource_version());

    let main = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Hacked"}, "metadata": {"labels": {"a": "b"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.as_ref().unwrap().phase.as_deref(),
        Some("Running"),
        "main writes ignore status"
    );
    assert_eq!(
        main.metadata.generation,
        Some(1),
        "metadata changes do not bump generation"
    );
    assert_eq!(main.labels()["a"], "b");

    let spec = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));
    // A no-op write keeps the resourceVersion.
    let same = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), spec.resource_version());

    // Status apply by a controller with force.
    let st = json!({"apiVersion": "example.dev/v1", "kind": "Widget", "status": {"phase": "Done"}});
    let applied = api
        .patch_status("s", &PatchParams::apply("ctl").force(), &Patch::Apply(st))
        .await
        .unwrap();
    assert_eq!(applied.status.unwrap().phase.as_deref(), Some("Done"));
    assert_eq!(applied.metadata.generation, Some(2));
    let mf = applied.metadata.managed_fields.unwrap();
    assert!(
        mf.iter()
            .any(|m| m.manager.as_deref() == Some("ctl")
                && m.subresource.as_deref() == Some("status"))
    );
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_until_removed() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let mut w = widget("f", "t");
    w.metadata.finalizers = Some(vec!["example.dev/cleanup".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = api.get("f").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    // Remove the finalizer the way kube's finalizer helper does (JSON patch with a test op).
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "example.dev/cleanup"},
        {"op": "remove", "path": "/metadata/finalizers/0"}
    ]))
    .unwrap();
    api.patch("f", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
    let events: Vec<_> = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::finalizer::{Event as Fin, finalizer};
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &widget("fin", "t"))
        .await
        .unwrap();
    let cleaned = Arc::new(Mutex::new(false));
    let run = |obj: Widget| {
        let api = api.clone();
        let cleaned = cleaned.clone();
        async move {
            finalizer(
                &api,
                "example.dev/cleanup",
                Arc::new(obj),
                |ev| async move {
                    if let Fin::Cleanup(_) = ev {
                        *cleaned.lock().unwrap() = true;
                    }
                    Ok::<_, kube::Error>(Action::await_change())
                },
            )
            .await
        }
    };
    run(api.get("fin").await.unwrap()).await.unwrap(); // adds the finalizer
    let with = api.get("fin").await.unwrap();
    assert_eq!(with.finalizers(), ["example.dev/cleanup"]);
    run(with).await.unwrap(); // Apply
    api.delete("fin", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("fin").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    run(deleting).await.unwrap(); // Cleanup, then the finalizer is removed
    assert!(*cleaned.lock().unwrap());
    assert!(api.get_opt("fin").await.unwrap().is_none());
    let patches: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.verb == "patch")
        .collect();
    assert!(
        patches
            .iter()
            .all(|r| r.content_type == "application/json-patch+json" && r.status == 200),
        "{patches:?}"
    );
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_test_failure_is_rejected() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &widget("j", "t"))
        .await
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/type", "value": "other"},
        {"op": "replace", "path": "/spec/type", "value": "new"}
    ]))
    .unwrap();
    let err = api_err(
        api.patch("j", &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(api.get("j").await.unwrap().spec.type_, "t");
    // Strategic merge is refused for custom resources.
    let err = api_err(
        api.patch(
            "j",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 1}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 415);
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_create_update_conflict_and_force() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let cfg = |ty: &str, size: i64| json!({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "ssa"}, "spec": {"type": ty, "size": size}});
    let created = api
        .patch(
            "ssa",
            &PatchParams::apply("alice"),
            &Patch::Apply(cfg("a", 1)),
        )
        .await
        .unwrap();
    assert_eq!(created.spec.size, Some(1));
    assert_eq!(created.metadata.generation, Some(1));
    let updated = api
        .patch(
            "ssa",
            &PatchParams::apply("alice"),
            &Patch::Apply(cfg("a", 2)),
        )
        .await
        .unwrap();
    assert_eq!(updated.spec.size, Some(2));
    assert_eq!(updated.metadata.generation, Some(2));

    let err = api_err(
        api.patch(
            "ssa",
            &PatchParams::apply("bob"),
            &Patch::Apply(cfg("b", 2)),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.type"
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".spec.type");

    // Same value: shared ownership, no conflict.
    api.patch(
        "ssa",
        &PatchParams::apply("carol"),
        &Patch::Apply(cfg("a", 2)),
    )
    .await
    .unwrap();
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(cfg("b", 2)),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.type_, "b");

    // An Update by another manager (merge patch) followed by apply: conflict names the updater.
    api.patch(
        "ssa",
        &PatchParams {
            field_manager: Some("dave".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"spec": {"size": 7}})),
    )
    .await
    .unwrap();
    let err = api_err(
        api.patch(
            "ssa",
            &PatchParams::apply("bob"),
            &Patch::Apply(cfg("b", 8)),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        err.message.starts_with(
            "Apply failed with 1 conflict: conflict with \"dave\" using example.dev/v1 at "
        ),
        "{}",
        err.message
    );
    assert!(err.message.ends_with(": .spec.size"), "{}", err.message);

    // fieldManager is required.
    let url = format!(
        "{}apis/example.dev/v1/namespaces/default/widgets/ssa",
        emu.url()
    );
    let resp = reqwest::Client::new()
        .patch(&url)
        .header("Content-Type", "application/apply-patch+yaml")
        .body("apiVersion: example.dev/v1\nkind: Widget\nmetadata:\n  name: ssa\nspec:\n  type: yellow\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // YAML bodies work.
    let resp = reqwest::Client::new()
        .patch(format!("{url}?fieldManager=yaml&force=true"))
        .header("Content-Type", "application/apply-patch+yaml")
        .body("apiVersion: example.dev/v1\nkind: Widget\nmetadata:\n  name: ssa\nspec:\n  type: yellow\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(api.get("ssa").await.unwrap().spec.type_, "yellow");
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_and_selectors() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    for i in 0..7 {
        let mut w = widget(&format!("p{i}"), "t");
        w.metadata.labels = Some(
            [(
                "parity".to_string(),
                if i % 2 == 0 { "even" } else { "odd" }.to_string(),
            )]
            .into(),
        );
        api.create(&PostParams::default(), &w).await.unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(page.metadata.resource_version, *first_rv.as_ref().unwrap());
        names.extend(page.items.iter().map(|w| w.name_any()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());

    let sel = |l: &str| {
        let api = api.clone();
        let lp = ListParams::default().labels(l);
        async move { api.list(&lp).await }
    };
    assert_eq!(sel("parity=even").await.unwrap().items.len(), 4);
    assert_eq!(sel("parity!=even").await.unwrap().items.len(), 3);
    assert_eq!(sel("parity in (odd)").await.unwrap().items.len(), 3);
    assert_eq!(sel("parity notin (odd,even)").await.unwrap().items.len(), 0);
    assert_eq!(sel("parity").await.unwrap().items.len(), 7);
    assert_eq!(sel("!parity").await.unwrap().items.len(), 0);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=p3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all: Api<Widget> = Api::all(client.clone());
    let not_ns = all
        .list(&ListParams::default().fields("metadata.namespace!=default"))
        .await
        .unwrap();
    assert_eq!(not_ns.items.len(), 0);
    let err = api_err(
        api.list(&ListParams::default().fields("spec.type=t"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_sees_every_change() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    for i in 0..20 {
        api.create(&PostParams::default(), &widget(&format!("c{i}"), "v0"))
            .await
            .unwrap();
    }
    let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let ctx = seen.clone();
    let ctl = Controller::new(api.clone(), watcher::Config::default())
        .shutdown_on_signal()
        .run(
            |w: Arc<Widget>, ctx: Arc<Mutex<HashMap<String, String>>>| async move {
                ctx.lock()
                    .unwrap()
                    .insert(w.name_any(), w.spec.type_.clone());
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            ctx,
        )
        .for_each(|_| async {});
    let task = tokio::spawn(ctl);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in (0..20).step_by(3) {
        api.patch(
            &format!("c{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "v1"}})),
        )
        .await
        .unwrap();
    }
    for i in (0..20).step_by(6) {
        api.patch(
            &format!("c{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "v2"}})),
        )
        .await
        .unwrap();
    }
    api.create(&PostParams::default(), &widget("late", "v9"))
        .await
        .unwrap();
    let expected: HashMap<String, String> = (0..20)
        .map(|i| {
            let v = if i % 6 == 0 {
                "v2"
            } else if i % 3 == 0 {
                "v1"
            } else {
                "v0"
            };
            (format!("c{i}"), v.to_string())
        })
        .chain([("late".to_string(), "v9".to_string())])
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if *seen.lock().unwrap() == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "controller state {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    let reqs = emu.requests();
    assert!(
        reqs.iter()
            .any(|r| r.verb == "list" && r.resource.as_deref() == Some("widgets"))
    );
    assert!(
        reqs.iter()
            .any(|r| r.verb == "watch" && r.resource.as_deref() == Some("widgets"))
    );
    let rbac: std::collections::BTreeSet<_> = reqs.iter().filter_map(|r| r.rbac()).collect();
    let want = |v: &str, r: &str| (v.to_string(), "example.dev".to_string(), r.to_string());
    assert!(rbac.contains(&want("list", "widgets")), "{rbac:?}");
    assert!(rbac.contains(&want("watch", "widgets")), "{rbac:?}");
    assert!(
        !rbac.iter().any(|(_, _, r)| r.contains("status")),
        "the reconciler never wrote status"
    );
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_show_up_as_core_events() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let w = api
        .create(&PostParams::default(), &widget("ev", "t"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "widget-ctl".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "Started".into(),
        note: Some("widget started".into()),
        action: "Start".into(),
        secondary: None,
    };
    let oref = w.object_ref(&());
    recorder.publish(&ev, &oref).await.unwrap();
    recorder.publish(&ev, &oref).await.unwrap(); // a repeat becomes a series PATCH

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields(&format!(
        "involvedObject.name=ev,involvedObject.namespace=default,involvedObject.kind=Widget,involvedObject.uid={}",
        w.uid().unwrap()
    ));
    let list = core.list(&lp).await.unwrap();
    assert_eq!(list.items.len(), 1, "{list:?}");
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("widget started"));
    assert_eq!(e.reason.as_deref(), Some("Started"));
    assert_eq!(
        e.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("widget-ctl")
    );
    assert_eq!(e.count, Some(2));
    assert!(
        emu.requests()
            .iter()
            .any(|r| r.verb == "patch" && r.group.as_deref() == Some("events.k8s.io"))
    );
    let none = core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
    emu.shutdown();
}

struct RejectBig;

impl Admission for RejectBig {
    fn admit(
        &self,
        resource: &ResourceInfo,
        _sub: Option<&str>,
        new: &mut Value,
        _old: Option<&Value>,
        _strict: bool,
    ) -> Result<Vec<String>, Vec<FieldError>> {
        if resource.kind != "Widget" {
            return Ok(vec![]);
        }
        if new
            .pointer("/spec/size")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 10
        {
            return Err(vec![FieldError::new(
                "spec.size",
                FieldErrorReason::Invalid,
                "Invalid value: 11: must be at most 10",
            )]);
        }
        if new.pointer("/spec/type") == Some(&json!("both")) {
            return Err(vec![
                FieldError::new("spec.size", FieldErrorReason::Required, "Required value"),
                FieldError::new(
                    "spec",
                    FieldErrorReason::Invalid,
                    "Invalid value: \"object\": exactly one of a, b",
                ),
            ]);
        }
        // Defaulting.
        if new.pointer("/spec/size").is_none() {
            new["spec"]["size"] = json!(1);
        }
        Ok(vec!["widgets are experimental".into()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_rejection_is_422_invalid() {
    let (emu, client) = start_with(EmuConfig {
        admission: Arc::new(RejectBig),
        ..Default::default()
    })
    .await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let ok = api
        .create(&PostParams::default(), &widget("ok", "t"))
        .await
        .unwrap();
    assert_eq!(ok.spec.size, Some(1), "the hook's defaults are persisted");
    let mut big = widget("big", "t");
    big.spec.size = Some(11);
    let err = api_err(api.create(&PostParams::default(), &big).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Widget.example.dev \"big\" is invalid: spec.size: Invalid value: 11: must be at most 10"
    );
    let details = err.details.unwrap();
    assert_eq!(details.kind, "Widget");
    assert_eq!(details.causes[0].reason, "FieldValueInvalid");
    assert_eq!(details.causes[0].field, "spec.size");
    let err = api_err(
        api.patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "both"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "Widget.example.dev \"ok\" is invalid: [spec.size: Required value, spec: Invalid value: \"object\": exactly one of a, b]"
    );
    assert!(api.get_opt("big").await.unwrap().is_none());
    // Warnings come back as Warning headers.
    let url = format!(
        "{}apis/example.dev/v1/namespaces/default/widgets",
        emu.url()
    );
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"type": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()["warning"],
        "299 - \"widgets are experimental\""
    );
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_tables_and_metadata_views() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &widget("t1", "square"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = emu.url();
    let resp = http
        .get(format!("{base}apis"))
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let body: Value = resp.json().await.unwrap();
    let group = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "example.dev")
        .unwrap();
    let res = &group["versions"][0]["resources"][0];
    assert_eq!(res["resource"], "widgets");
    assert_eq!(res["shortNames"], json!(["wd"]));
    assert_eq!(res["categories"], json!(["examples"]));
    assert_eq!(res["subresources"][0]["subresource"], "status");
    let legacy: Value = http
        .get(format!("{base}apis/example.dev/v1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(legacy["resources"][1]["name"], "widgets/status");
    let core: Value = http
        .get(format!("{base}api/v1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "secrets")
    );
    let version: Value = http
        .get(format!("{base}version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["minor"], "32");
    assert_eq!(
        http.get(format!("{base}readyz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );

    // kube's own discovery works.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("example.dev"));

    let table: Value = http
        .get(format!(
            "{base}apis/example.dev/v1/namespaces/default/widgets"
        ))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Type", "Size", "Phase", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "t1");
    assert_eq!(cells[1], "square");
    assert_eq!(cells[2], Value::Null);
    assert_eq!(cells[3], Value::Null);
    assert!(cells[4].as_str().unwrap().ends_with('s'));
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    // Metadata-only API (kube metadata watchers).
    let metas = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(metas.items[0].metadata.name.as_deref(), Some("t1"));
    let one = api.get_metadata("t1").await.unwrap();
    assert_eq!(one.metadata.name.as_deref(), Some("t1"));

    let openapi: Value = http
        .get(format!("{base}openapi/v3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = openapi["paths"]["apis/example.dev/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    let doc: Value = http
        .get(format!("{}{}", base.as_str().trim_end_matches('/'), url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &doc["components"]["schemas"]["dev.example.v1.Widget"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"][0]["kind"],
        "Widget"
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["type"]["description"],
        "The shape of the widget: round or square."
    );
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_manager_leader_election_is_exclusive() {
    use kube_lease_manager::LeaseManagerBuilder;
    let (emu, client) = start().await;
    let build = |id: &str| {
        LeaseManagerBuilder::new(client.clone(), "leader")
            .with_namespace("default")
            .with_identity(id)
            .with_duration(4) // renewed every 2 s: a 2 s margin on a loaded CI machine
            .with_grace(2)
            .build()
    };
    let (mut rx_a, task_a) = build("a").await.unwrap().watch().await;
    tokio::time::timeout(Duration::from_secs(5), rx_a.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    let (rx_b, task_b) = build("b").await.unwrap().watch().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(*rx_a.borrow(), "a keeps the lease by renewing it");
    assert!(!*rx_b.borrow(), "b must not acquire a held lease");
    drop(rx_a); // a releases the lease
    task_a.await.unwrap().unwrap();
    let mut rx_b = rx_b;
    tokio::time::timeout(Duration::from_secs(8), rx_b.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    drop(rx_b);
    task_b.await.unwrap().unwrap();
    let reqs = emu.requests();
    assert!(reqs.iter().any(|r| r.resource.as_deref() == Some("leases")
        && r.content_type.starts_with("application/apply-patch")));
    assert!(reqs.iter().any(|r| {
        r.resource.as_deref() == Some("leases")
            && r.content_type
                .starts_with("application/strategic-merge-patch")
    }));
    emu.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Scale check (run with `--ignored --nocapture`): 10,000 objects through create, list, paged list
/// and status apply.
#[ignore]
async fn perf_10k_objects() {
    let (emu, client) = start().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    // A Controller watching throughout: every object must reach its reconciler.
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let ctl = Controller::new(api.clone(), watcher::Config::default())
        .run(
            |w: Arc<Widget>, seen: Arc<Mutex<std::collections::HashSet<String>>>| async move {
                seen.lock().unwrap().insert(w.name_any());
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            seen.clone(),
        )
        .for_each(|_| async {});
    let ctl = tokio::spawn(ctl);
    let t = std::time::Instant::now();
    futures::stream::iter(0..10_000)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &widget(&format!("w{i:05}"), "t"))
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .for_each(|_| async {})
        .await;
    eprintln!("create 10k: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let all = api.list(&ListParams::default()).await.unwrap();
    eprintln!("list 10k: {:?} {}", t.elapsed(), all.items.len());
    let t = std::time::Instant::now();
    let mut n = 0;
    let mut tok: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(c) = &tok {
            lp = lp.continue_token(c);
        }
        let p = api.list(&lp).await.unwrap();
        n += p.items.len();
        tok = p.metadata.continue_.filter(|c| !c.is_empty());
        if tok.is_none() {
            break;
        }
    }
    eprintln!("paged list 10k: {:?} {n}", t.elapsed());
    let t = std::time::Instant::now();
    futures::stream::iter(0..10_000)
        .map(|i| {
            let api = api.clone();
            async move { api.patch_status(&format!("w{i:05}"), &PatchParams::apply("x").force(), &Patch::Apply(json!({"apiVersion":"example.dev/v1","kind":"Widget","status":{"phase":"Done"}}))).await.unwrap() }
        })
        .buffer_unordered(32)
        .for_each(|_| async {})
        .await;
    eprintln!("status apply 10k: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    while seen.lock().unwrap().len() < 10_000 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "controller saw {}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("controller caught up after {:?}", t.elapsed());
    ctl.abort();
    eprintln!("objects {}", emu.object_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_notes_over_1024_bytes_and_names_over_253_are_rejected_like_the_api_server() {
    let (emu, client) = start().await;
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    let event = |name: String, note: String| -> k8s_openapi::api::events::v1::Event {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Widget", "name": "w", "namespace": "default"},
            "reason": "Did", "type": "Normal", "action": "Do",
            "reportingController": "c", "reportingInstance": "i",
            "note": note,
        }))
        .unwrap()
    };
    // 1024 bytes pass; 342 three-byte characters (1026 bytes, fewer than 1024 characters) do not.
    api.create(
        &PostParams::default(),
        &event("ok".into(), "x".repeat(1024)),
    )
    .await
    .expect("a 1024-byte note is accepted");
    let err = api
        .create(
            &PostParams::default(),
            &event("long".into(), "€".repeat(342)),
        )
        .await
        .expect_err("a note over 1024 bytes is rejected");
    assert_eq!(api_err(err).code, 422);
    api.create(&PostParams::default(), &event("n".repeat(253), "ok".into()))
        .await
        .expect("a 253-character name is accepted");
    let err = api
        .create(&PostParams::default(), &event("n".repeat(254), "ok".into()))
        .await
        .expect_err("a 254-character name is rejected");
    assert_eq!(api_err(err).code, 422);
    emu.shutdown();
}
