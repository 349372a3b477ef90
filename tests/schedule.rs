//! DropletActionSchedule: the real operator (schedule controller + DropletAction controller) against the
//! Kubernetes API emulator and the DigitalOcean simulator. Slots come quickly because the schedule controller's
//! clock runs sped up (a test-only option; cron semantics are unchanged): at speed 60 a `* * * * *` schedule
//! has a slot every real second.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    World, assert_exactly_once, kill, operator_config, servers, spawn_operator_process,
    start_in_process,
};
use do_sim::{ActionDurations, DEFAULT_SIM_TOKEN, SimConfig, TokenSpec};
use droplet_operator::crd::DropletAction;
use droplet_operator::digitalocean::Token;
use droplet_operator::schedule::crd::DropletActionSchedule;
use droplet_operator::schedule::{SCHEDULED_AT, ScheduleClock, ScheduleOptions};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn sped_up(speed: f64) -> ScheduleOptions {
    ScheduleOptions {
        clock: ScheduleClock::sped_up(jiff::Timestamp::now(), speed),
    }
}

async fn world(sim: SimConfig, speed: f64) -> World {
    World::start_with(sim, Some(Token::new(DEFAULT_SIM_TOKEN)), sped_up(speed)).await
}

fn schedules(client: &kube::Client) -> Api<DropletActionSchedule> {
    Api::namespaced(client.clone(), "default")
}

async fn create_schedule(client: &kube::Client, name: &str, spec: Value) -> DropletActionSchedule {
    let obj: DropletActionSchedule = serde_json::from_value(json!({
        "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletActionSchedule",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("valid schedule");
    schedules(client)
        .create(&PostParams::default(), &obj)
        .await
        .expect("schedule created")
}

async fn set_suspend(client: &kube::Client, name: &str, suspend: bool) {
    schedules(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": suspend}})),
        )
        .await
        .expect("patched");
}

/// The children of `schedule` (by owner reference).
async fn children(client: &kube::Client, schedule: &DropletActionSchedule) -> Vec<DropletAction> {
    let uid = schedule.uid().unwrap();
    let api: Api<DropletAction> = Api::namespaced(client.clone(), "default");
    let mut items: Vec<DropletAction> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|d| {
            d.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    items.sort_by_key(|d| d.name_any());
    items
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < T, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn slot(d: &DropletAction) -> String {
    d.annotations()
        .get(SCHEDULED_AT)
        .cloned()
        .expect("slot annotation")
}

/// Events about `name` as (reason, action, note), one entry per occurrence (the recorder aggregates repeats of
/// the same reason and action into one Event with a series count).
async fn events(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .flat_map(|e| {
            let n = e.series.as_ref().map_or(1, |s| s.count.max(1)) as usize;
            let reason = e.reason.unwrap_or_default();
            let what = format!(
                "{} {}",
                e.action.unwrap_or_default(),
                e.note.unwrap_or_default()
            );
            std::iter::repeat_n((reason, what), n)
        })
        .collect()
}

async fn get(client: &kube::Client, name: &str) -> DropletActionSchedule {
    schedules(client).get(name).await.expect("get schedule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_slot_creates_one_owned_child_that_the_action_controller_runs() {
    let w = world(SimConfig::fast(0.02), 60.0).await;
    let s = create_schedule(
        &w.client,
        "on",
        json!({"schedule": "* * * * *", "successfulHistoryLimit": 100,
               "template": {"metadata": {"labels": {"team": "ops"}},
                            "spec": {"type": "power_on", "dropletId": 101006}}}),
    )
    .await;
    eventually("three children succeeded", || async {
        children(&w.client, &s)
            .await
            .iter()
            .filter(|d| d.phase() == droplet_operator::crd::Phase::Succeeded)
            .count()
            >= 3
    })
    .await;
    set_suspend(&w.client, "on", true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kids = children(&w.client, &s).await;
    let slots: BTreeSet<String> = kids.iter().map(slot).collect();
    assert_eq!(slots.len(), kids.len(), "one child per slot");
    for d in &kids {
        let at: jiff::Timestamp = slot(d).parse().unwrap();
        assert_eq!(d.name_any(), format!("on-{}", at.as_second() / 60));
        assert_eq!(d.labels().get("team").map(String::as_str), Some("ops"));
        assert_eq!(
            d.labels()
                .get("droplet-operator.dev/schedule")
                .map(String::as_str),
            Some("on")
        );
        // notAfter = slot + default deadline (60 s for a per-minute schedule).
        assert_eq!(
            d.spec.not_after.as_ref().unwrap().0,
            at + jiff::SignedDuration::from_secs(60)
        );
    }
    assert_exactly_once(&kids, &w.sim);
    let st = get(&w.client, "on").await.status.unwrap();
    assert_eq!(
        st.last_schedule_time.unwrap().0.to_string(),
        *slots.iter().max().unwrap()
    );
    assert!(st.last_successful_time.is_some() && st.next_schedule_time.is_some());
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.observed_generation),
        ("True", Some(2))
    );
    let created = events(&w.client, "on")
        .await
        .into_iter()
        .filter(|(r, _)| r == "Created")
        .count();
    assert_eq!(created, kids.len(), "one Created event per child");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_slots_while_the_previous_child_runs_and_allow_does_not() {
    let mut sim = SimConfig::fast(1.0);
    sim.action_durations = ActionDurations::uniform(Duration::from_secs(6));
    let w = world(sim, 60.0).await;
    let forbid = create_schedule(
        &w.client,
        "forbid",
        json!({"schedule": "* * * * *", "template": {"spec": {"type": "reboot", "dropletId": 101001}}}),
    )
    .await;
    let allow = create_schedule(
        &w.client,
        "allow",
        json!({"schedule": "* * * * *", "concurrencyPolicy": "Allow", "successfulHistoryLimit": 100,
               "template": {"spec": {"type": "reboot", "dropletId": 101002}}}),
    )
    .await;
    eventually("a Forbid skip", || async {
        events(&w.client, "forbid")
            .await
            .iter()
            .any(|(r, n)| r == "Skipped" && n.contains("ConcurrencyForbid"))
    })
    .await;
    eventually("Allow has 3 children", || async {
        children(&w.client, &allow).await.len() >= 3
    })
    .await;
    let f = children(&w.client, &forbid).await;
    assert_eq!(
        f.len(),
        1,
        "Forbid created nothing while its child ran: {:?}",
        f.iter().map(|d| d.name_any()).collect::<Vec<_>>()
    );
    assert!(
        !f[0].phase().is_terminal(),
        "the first child is still running"
    );
    let st = get(&w.client, "forbid").await.status.unwrap();
    assert_eq!(st.last_skipped_reason.as_deref(), Some("ConcurrencyForbid"));
    assert_eq!(st.active.len(), 1);
    assert_eq!(st.active_count, Some(1));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_and_late_slots_are_skipped_with_events_and_nothing_is_created() {
    // Speed 3600: an hourly schedule has a slot every real second. A starting deadline of 1 s is 0.3 ms real:
    // no reconcile starts that quickly, so every slot misses it.
    let w = world(SimConfig::fast(0.02), 3600.0).await;
    let late = create_schedule(
        &w.client,
        "late",
        json!({"schedule": "@hourly", "startingDeadlineSeconds": 1,
               "template": {"spec": {"type": "power_on", "dropletId": 101006}}}),
    )
    .await;
    let suspended = create_schedule(
        &w.client,
        "paused",
        json!({"schedule": "@hourly", "suspend": true,
               "template": {"spec": {"type": "power_on", "dropletId": 101007}}}),
    )
    .await;
    eventually("skips of both", || async {
        let l = events(&w.client, "late").await;
        let p = events(&w.client, "paused").await;
        l.iter()
            .filter(|(r, n)| r == "Skipped" && n.contains("MissedStartingDeadline"))
            .count()
            >= 2
            && p.iter()
                .filter(|(r, n)| r == "Skipped" && n.contains("Suspended"))
                .count()
                >= 2
    })
    .await;
    assert!(children(&w.client, &late).await.is_empty());
    assert!(children(&w.client, &suspended).await.is_empty());
    assert!(
        w.sent_posts(101006).is_empty() && w.sent_posts(101007).is_empty(),
        "nothing reached DigitalOcean"
    );
    let st = get(&w.client, "paused").await.status.unwrap();
    assert_eq!(st.last_skipped_reason.as_deref(), Some("Suspended"));
    // Resumed: the next slot runs (with the default deadline of 1 h).
    set_suspend(&w.client, "paused", false).await;
    eventually("a child after resuming", || async {
        !children(&w.client, &suspended).await.is_empty()
    })
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cron_or_zone_is_refused_at_admission_or_stalled_and_creates_nothing() {
    let w = world(SimConfig::fast(0.02), 60.0).await;
    let bad = serde_json::from_value::<DropletActionSchedule>(json!({
        "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletActionSchedule",
        "metadata": {"name": "bad"},
        "spec": {"schedule": "every day", "template": {"spec": {"type": "reboot", "dropletId": 1}}},
    }))
    .unwrap();
    let err = schedules(&w.client)
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.schedule must be a 5-field cron expression"),
        "{err}"
    );
    // The template is checked by the DropletAction rules.
    let mut bad_template = bad.clone();
    bad_template.spec.schedule = "0 2 * * *".into();
    bad_template.spec.template.spec.type_ = droplet_operator::crd::ActionType::Resize;
    let err = schedules(&w.client)
        .create(&PostParams::default(), &bad_template)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.size is required"), "{err}");
    // Shape fine, values not: Stalled with the field and an example.
    let s = create_schedule(
        &w.client,
        "minute-61",
        json!({"schedule": "61 * * * *", "template": {"spec": {"type": "reboot", "dropletId": 101001}}}),
    )
    .await;
    let z = create_schedule(
        &w.client,
        "nowhere",
        json!({"schedule": "* * * * *", "timeZone": "Europe/Nowhere", "template": {"spec": {"type": "reboot", "dropletId": 101001}}}),
    )
    .await;
    for (name, reason, field) in [
        ("minute-61", "InvalidSchedule", "spec.schedule"),
        ("nowhere", "InvalidTimeZone", "spec.timeZone"),
    ] {
        eventually("stalled", || async {
            get(&w.client, name).await.status.is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.type_ == "Stalled"
                        && c.status == "True"
                        && c.reason == reason
                        && c.message.contains(field)
                })
            })
        })
        .await;
        // The event follows the status write; it may arrive a moment later.
        eventually("the Warning event", || async {
            events(&w.client, name)
                .await
                .iter()
                .any(|(r, _)| r == reason)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(children(&w.client, &s).await.is_empty() && children(&w.client, &z).await.is_empty());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_the_oldest_own_snapshots_and_nothing_foreign() {
    let w = world(SimConfig::fast(0.02), 20.0).await;
    // Droplet 101005 has a snapshot (702001) that this schedule did not make.
    assert!(w.sim.image(702001).is_some());
    let s = create_schedule(
        &w.client,
        "nightly",
        json!({"schedule": "* * * * *", "retention": {"keepLast": 2},
               "template": {"spec": {"type": "snapshot", "dropletId": 101005}}}),
    )
    .await;
    eventually("three snapshots deleted", || async {
        get(&w.client, "nightly")
            .await
            .status
            .is_some_and(|st| st.deleted_snapshots.len() >= 3)
    })
    .await;
    set_suspend(&w.client, "nightly", true).await;
    // Let the last child finish and retention settle.
    eventually("all children finished and retention applied", || async {
        let kids = children(&w.client, &s).await;
        let st = get(&w.client, "nightly").await.status.unwrap();
        kids.iter().all(|d| d.phase().is_terminal()) && st.snapshots.len() <= 2
    })
    .await;
    let st = get(&w.client, "nightly").await.status.unwrap();
    let deleted: BTreeSet<i64> = st.deleted_snapshots.iter().map(|d| d.image_id).collect();
    let kept: Vec<i64> = st.snapshots.iter().map(|s| s.image_id).collect();
    assert_eq!(kept.len(), 2, "keepLast 2: {st:#?}");
    // The deleted ones are older than every kept one, and gone from DigitalOcean; the kept ones exist.
    let newest_deleted = st
        .deleted_snapshots
        .iter()
        .map(|d| d.image_id)
        .max()
        .unwrap();
    assert!(
        kept.iter().all(|k| *k > newest_deleted),
        "kept {kept:?}, deleted {deleted:?}"
    );
    for id in &deleted {
        assert!(w.sim.image(*id).is_none(), "{id} was deleted");
    }
    for id in &kept {
        assert!(w.sim.image(*id).is_some(), "{id} is kept");
    }
    assert!(
        w.sim.image(702001).is_some(),
        "the foreign snapshot is untouched"
    );
    // DigitalOcean received deletes only for own snapshots, one each.
    let deletes: Vec<String> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    let expected: Vec<String> = {
        let mut v: Vec<i64> = deleted.iter().copied().collect();
        v.sort();
        v.into_iter()
            .map(|id| format!("/v2/snapshots/{id}"))
            .collect()
    };
    let mut got = deletes.clone();
    got.sort();
    assert_eq!(got, expected);
    let ev = events(&w.client, "nightly").await;
    assert_eq!(
        ev.iter().filter(|(r, _)| r == "RetentionDeleted").count(),
        deleted.len()
    );
    // History limit: at most 3 succeeded children are kept, yet every snapshot they made was recorded first.
    assert!(children(&w.client, &s).await.len() <= 4);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_without_image_delete_scope_is_stalled_naming_the_scope() {
    let mut sim = SimConfig::fast(0.02);
    sim.tokens.push(TokenSpec::scoped(
        "no-delete",
        &[
            "droplet:read",
            "droplet:update",
            "image:read",
            "image:create",
            "actions:read",
        ],
    ));
    let w = World::start_with(sim, Some(Token::new("no-delete")), sped_up(20.0)).await;
    create_schedule(
        &w.client,
        "nightly",
        json!({"schedule": "* * * * *", "retention": {"keepLast": 1},
               "template": {"spec": {"type": "snapshot", "dropletId": 101005}}}),
    )
    .await;
    eventually("Stalled naming image:delete", || async {
        get(&w.client, "nightly").await.status.is_some_and(|st| {
            st.conditions.iter().any(|c| {
                c.type_ == "Stalled"
                    && c.status == "True"
                    && c.reason == "RetentionForbidden"
                    && c.message.contains("image:delete")
            })
        })
    })
    .await;
    let st = get(&w.client, "nightly").await.status.unwrap();
    assert!(st.deleted_snapshots.is_empty());
    assert!(
        st.snapshots
            .iter()
            .all(|s| w.sim.image(s.image_id).is_some())
    );
    assert!(w.sim.image(702001).is_some());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_create_exactly_one_child_per_slot() {
    let options = sped_up(60.0);
    let w = World::start_with(
        SimConfig::fast(0.02),
        Some(Token::new(DEFAULT_SIM_TOKEN)),
        options.clone(),
    )
    .await;
    let (stop2, task2) = start_in_process(
        w.client.clone(),
        operator_config(&w.sim, Some(Token::new(DEFAULT_SIM_TOKEN))),
        options,
    );
    let s = create_schedule(
        &w.client,
        "both",
        json!({"schedule": "* * * * *", "successfulHistoryLimit": 100, "failedHistoryLimit": 100,
               "template": {"spec": {"type": "power_on", "dropletId": 101007}}}),
    )
    .await;
    eventually("five children", || async {
        children(&w.client, &s).await.len() >= 5
    })
    .await;
    set_suspend(&w.client, "both", true).await;
    eventually("all finished", || async {
        children(&w.client, &s)
            .await
            .iter()
            .all(|d| d.phase().is_terminal())
    })
    .await;
    let _ = stop2.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task2).await;
    let kids = children(&w.client, &s).await;
    let slots: BTreeSet<String> = kids.iter().map(slot).collect();
    assert_eq!(slots.len(), kids.len());
    // The Kubernetes API accepted exactly one create per child; the other replica's attempt was AlreadyExists.
    let posts: Vec<u16> = w
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/dropletactions"))
        .map(|r| r.status)
        .collect();
    let accepted = posts.iter().filter(|s| **s == 201).count();
    assert_eq!(
        accepted,
        kids.len(),
        "one accepted create per child: {posts:?}"
    );
    assert!(posts.iter().all(|s| *s == 201 || *s == 409), "{posts:?}");
    eprintln!(
        "{} creates refused as AlreadyExists",
        posts.iter().filter(|s| **s == 409).count()
    );
    assert_exactly_once(&kids, &w.sim);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_operators_never_create_a_slot_twice_or_act_twice() {
    let (sim, emu) = servers(SimConfig::fast(0.02)).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let log = dir.path().join("operator.log");
    let client = emu.client();
    let origin = jiff::Timestamp::now().to_string();
    let args = [
        "--schedule-clock-speed",
        "60",
        "--schedule-clock-origin",
        origin.as_str(),
    ];
    let s = create_schedule(
        &client,
        "crashy",
        json!({"schedule": "* * * * *", "successfulHistoryLimit": 100, "failedHistoryLimit": 100,
               "template": {"spec": {"type": "power_on", "dropletId": 101006}}}),
    )
    .await;
    let snaps = create_schedule(
        &client,
        "snaps",
        json!({"schedule": "* * * * *", "retention": {"keepLast": 2},
               "successfulHistoryLimit": 100, "failedHistoryLimit": 100,
               "template": {"spec": {"type": "snapshot", "dropletId": 101005}}}),
    )
    .await;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for _ in 0..15 {
        let child = spawn_operator_process(&kubeconfig, sim.url().as_str(), &log, &args);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        kill(child);
    }
    let last = spawn_operator_process(&kubeconfig, sim.url().as_str(), &log, &args);
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_suspend(&client, "crashy", true).await;
    set_suspend(&client, "snaps", true).await;
    let start = Instant::now();
    let kids = loop {
        let kids = children(&client, &s).await;
        let snap_kids = children(&client, &snaps).await;
        let settled = get(&client, "snaps")
            .await
            .status
            .is_some_and(|st| st.snapshots.len() <= 2);
        if (kids
            .iter()
            .chain(&snap_kids)
            .all(|d| d.phase().is_terminal())
            && settled)
            || start.elapsed() > T
        {
            break kids;
        }
        // A kill between a child's recorded intent and its send stops that child InitiationUncertain (never
        // guessed at): resolve it as a user would, after checking DigitalOcean.
        let api: Api<DropletAction> = Api::namespaced(client.clone(), "default");
        let all: Vec<DropletAction> = kids.iter().chain(&snap_kids).cloned().collect();
        common::resend_uncertain(&api, &sim, &all).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = get(&client, "crashy").await.status.unwrap();
    kill(last);
    assert!(
        kids.len() >= 3,
        "the operators created children: {}",
        kids.len()
    );
    assert!(kids.iter().all(|d| d.phase().is_terminal()));
    let slots: BTreeSet<String> = kids.iter().map(slot).collect();
    assert_eq!(slots.len(), kids.len(), "one child per slot");
    let snap_kids = children(&client, &snaps).await;
    let snap_slots: BTreeSet<String> = snap_kids.iter().map(slot).collect();
    assert_eq!(
        snap_slots.len(),
        snap_kids.len(),
        "one snapshot child per slot"
    );
    let all: Vec<DropletAction> = kids.iter().chain(&snap_kids).cloned().collect();
    assert_exactly_once(&all, &sim);
    assert_eq!(
        st.last_schedule_time.unwrap().0.to_string(),
        *slots.iter().max().unwrap(),
        "status caught up with the children"
    );
    // Retention through the kills: only own snapshots were deleted, each once, the newest two are kept.
    let st = get(&client, "snaps").await.status.unwrap();
    let own: BTreeSet<i64> = st
        .snapshots
        .iter()
        .map(|s| s.image_id)
        .chain(st.deleted_snapshots.iter().map(|d| d.image_id))
        .collect();
    let deleted: Vec<i64> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.status == 204)
        .map(|r| r.path.rsplit('/').next().unwrap().parse().unwrap())
        .collect();
    let unique: BTreeSet<i64> = deleted.iter().copied().collect();
    assert_eq!(
        unique.len(),
        deleted.len(),
        "no snapshot deleted twice: {deleted:?}"
    );
    assert!(unique.is_subset(&own), "deleted {unique:?}, own {own:?}");
    assert!(!unique.is_empty(), "retention ran");
    assert!(sim.image(702001).is_some(), "the foreign snapshot survived");
    assert!(st.snapshots.len() <= 2, "{st:#?}");
    let kept_min = st
        .snapshots
        .iter()
        .map(|s| s.image_id)
        .min()
        .unwrap_or(i64::MAX);
    assert!(
        unique.iter().all(|d| *d < kept_min),
        "the oldest were deleted"
    );
    for k in &st.snapshots {
        assert!(sim.image(k.image_id).is_some());
    }
    eprintln!(
        "{} schedule children, {} snapshots deleted, {} kept",
        kids.len(),
        unique.len(),
        st.snapshots.len()
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logs.contains(DEFAULT_SIM_TOKEN),
        "the token is never logged"
    );
    emu.shutdown();
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_snapshot_is_idempotent_and_names_the_missing_scope() {
    use droplet_operator::digitalocean::{ClientConfig, DoClient, ErrorKind};
    let mut cfg = SimConfig::fast(0.02);
    cfg.tokens
        .push(TokenSpec::scoped("read-only", &["image:read"]));
    let (sim, emu) = servers(cfg).await;
    let client = DoClient::new(ClientConfig {
        base_url: sim.url(),
        ..ClientConfig::default()
    })
    .unwrap();
    let full = Token::new(DEFAULT_SIM_TOKEN);
    // 403 without image:delete, naming the scope; nothing deleted.
    let err = client
        .delete_snapshot(&Token::new("read-only"), 702001)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(err.scope_hint(), Some("image:delete"));
    assert!(sim.image(702001).is_some());
    // 204, then 404 = already gone.
    assert!(client.delete_snapshot(&full, 702001).await.unwrap());
    assert!(sim.image(702001).is_none());
    assert!(!sim.droplet(101005).unwrap().snapshot_ids.contains(&702001));
    assert!(!client.delete_snapshot(&full, 702001).await.unwrap());
    // A backup is not a snapshot.
    assert!(!client.delete_snapshot(&full, 701001).await.unwrap());
    assert!(sim.image(701001).is_some());
    let deletes: Vec<(String, u16)> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        deletes,
        [
            ("/v2/snapshots/702001".to_string(), 403),
            ("/v2/snapshots/702001".to_string(), 204),
            ("/v2/snapshots/702001".to_string(), 404),
            ("/v2/snapshots/701001".to_string(), 404),
        ]
    );
    emu.shutdown();
    sim.shutdown();
}

#[test]
fn the_crd_and_the_examples_admit_what_they_should() {
    use kube_emu::validation::SchemaValidator;
    let crd = droplet_operator::schedule::crd::definition();
    let v = serde_json::to_value(&crd).unwrap();
    assert_eq!(v["spec"]["names"]["shortNames"], json!(["das"]));
    assert_eq!(v["spec"]["names"]["categories"], json!(["digitalocean"]));
    let version = &v["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Schedule", "Suspend", "Active", "Last", "Next", "Age"]
    );
    let validator = SchemaValidator::for_crd(&crd).expect("schema");
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schedules"));
    let examples = droplet_operator::schedule::demo::load(dir).expect("schedule examples");
    assert!(examples.len() >= 2);
    for (file, s) in &examples {
        let mut obj = serde_json::to_value(s).unwrap();
        obj["metadata"]["namespace"] = json!("default");
        validator
            .admit(&mut obj, None, true)
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
    }
    let base = || {
        json!({"apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletActionSchedule",
               "metadata": {"name": "s", "namespace": "default"},
               "spec": {"schedule": "0 2 * * *", "template": {"spec": {"type": "snapshot", "dropletId": 1}}}})
    };
    // The template may be edited (DropletAction's immutability rule is not inherited).
    let old = base();
    let mut new = base();
    new["spec"]["template"]["spec"]["dropletId"] = json!(2);
    validator
        .admit(&mut new, Some(&old), true)
        .expect("template edits are allowed");
    for (patch, needle) in [
        (
            json!({"schedule": "@every 1m"}),
            "spec.schedule must be a 5-field cron expression",
        ),
        (
            json!({"schedule": "CRON_TZ=UTC 0 2 * * *"}),
            "spec.schedule must be a 5-field cron expression",
        ),
        (
            json!({"timeZone": "not a zone"}),
            "spec.timeZone must be an IANA time zone name",
        ),
        (
            json!({"retention": {}}),
            "spec.retention needs keepLast, maxAgeDays or both",
        ),
        (json!({"concurrencyPolicy": "Replace"}), "Unsupported value"),
    ] {
        let mut obj = base();
        for (k, val) in patch.as_object().unwrap() {
            obj["spec"][k] = val.clone();
        }
        let err = validator.admit(&mut obj, None, true).unwrap_err();
        assert!(format!("{err:?}").contains(needle), "{patch}: {err:?}");
    }
    let mut reboot = base();
    reboot["spec"]["template"]["spec"]["type"] = json!("reboot");
    reboot["spec"]["retention"] = json!({"keepLast": 3});
    let err = validator.admit(&mut reboot, None, true).unwrap_err();
    assert!(
        format!("{err:?}")
            .contains("spec.retention is only valid when spec.template.spec.type is snapshot")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_created_but_not_recorded_before_a_crash_is_adopted_not_created_again() {
    // The state a SIGKILL leaves between creating a slot's child and recording it in status: the child exists,
    // the schedule's status does not mention it. Built by hand, then an operator starts.
    let (sim, emu) = servers(SimConfig::fast(0.02)).await;
    let client = emu.client();
    let s = create_schedule(
        &client,
        "pre",
        json!({"schedule": "* * * * *", "successfulHistoryLimit": 100,
               "template": {"spec": {"type": "power_on", "dropletId": 101006}}}),
    )
    .await;
    let created = s.metadata.creation_timestamp.clone().unwrap().0;
    let clock = ScheduleClock::sped_up(created, 60.0);
    let first = droplet_operator::schedule::cron::CronSchedule::parse("* * * * *", None)
        .unwrap()
        .next_after(created)
        .unwrap();
    let name = droplet_operator::schedule::decide::child_name("pre", first);
    let orphan: DropletAction = serde_json::from_value(json!({
        "apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletAction",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"droplet-operator.dev/schedule": "pre", "droplet-operator.dev/schedule-uid": s.uid()},
                     "annotations": {SCHEDULED_AT: first.to_string()},
                     "ownerReferences": [{"apiVersion": "droplet-operator.dev/v1alpha1", "kind": "DropletActionSchedule",
                                          "name": "pre", "uid": s.uid(), "controller": true}]},
        "spec": {"type": "power_on", "dropletId": 101006},
    }))
    .unwrap();
    let api: Api<DropletAction> = Api::namespaced(client.clone(), "default");
    let orphan = api.create(&PostParams::default(), &orphan).await.unwrap();
    // Wait until that slot has passed on the operator's clock, then start it.
    while clock.now() <= first {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stop, task) = start_in_process(
        client.clone(),
        operator_config(&sim, Some(Token::new(DEFAULT_SIM_TOKEN))),
        ScheduleOptions { clock },
    );
    eventually("two more slots", || async {
        children(&client, &s).await.len() >= 3
    })
    .await;
    set_suspend(&client, "pre", true).await;
    eventually("all finished", || async {
        children(&client, &s)
            .await
            .iter()
            .all(|d| d.phase().is_terminal())
    })
    .await;
    let kids = children(&client, &s).await;
    let for_first: Vec<&DropletAction> = kids
        .iter()
        .filter(|d| slot(d) == first.to_string())
        .collect();
    assert_eq!(for_first.len(), 1);
    assert_eq!(
        for_first[0].uid(),
        orphan.uid(),
        "the existing child was kept, not replaced"
    );
    let refused = emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/dropletactions") && r.status != 201)
        .count();
    assert_eq!(
        refused, 0,
        "the operator did not even try to create the first slot again"
    );
    assert_exactly_once(&kids, &sim);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    emu.shutdown();
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_schedules_with_their_columns_and_explains_the_fields() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: kubectl is not installed (not on PATH)");
        return;
    }
    let w = world(SimConfig::fast(0.02), 60.0).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    w.emu.write_kubeconfig(&kubeconfig, "default").unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/schedules/weekly-reboot-schedule.yaml"
    );
    let applied = kubectl(&["apply", "-f", example]);
    assert!(
        applied.contains("dropletactionschedule.droplet-operator.dev/weekly-web-reboot created"),
        "{applied}"
    );
    eventually("status written", || async {
        get(&w.client, "weekly-web-reboot")
            .await
            .status
            .is_some_and(|s| s.next_schedule_time.is_some())
    })
    .await;
    let table = kubectl(&["get", "das"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST", "NEXT", "AGE"
        ]
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("weekly-web-reboot")
            && row.contains("0 4 * * SUN")
            && row.contains("false"),
        "{row}"
    );
    assert!(kubectl(&["get", "digitalocean"]).contains("weekly-web-reboot"));
    let explain = kubectl(&["explain", "dropletactionschedule.spec.schedule"]);
    assert!(explain.contains("5-field cron expression"), "{explain}");
    let explain = kubectl(&["explain", "das.spec.template.spec.type"]);
    assert!(
        explain.contains("The DigitalOcean droplet action to run."),
        "{explain}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_deleted_by_their_ttl_are_never_created_again() {
    use futures::StreamExt;
    let w = world(SimConfig::fast(0.02), 60.0).await;
    // The operator's cache of schedules lags (its cache of children does not): a reconcile triggered by a
    // child may see a schedule without its own last status write.
    w.emu
        .set_watch_delay("dropletactionschedules", Duration::from_millis(1500));
    // Every child ever created, by name, as the watch sees them.
    let api: Api<DropletAction> = Api::namespaced(w.client.clone(), "default");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let recorder = seen.clone();
    let watch = tokio::spawn(async move {
        let mut stream =
            kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).boxed();
        while let Some(Ok(ev)) = stream.next().await {
            if let kube::runtime::watcher::Event::Apply(d)
            | kube::runtime::watcher::Event::InitApply(d) = ev
            {
                let mut seen = recorder.lock().unwrap();
                let key = (d.name_any(), d.uid().unwrap_or_default());
                if !seen.contains(&key) {
                    seen.push(key);
                }
            }
        }
    });
    let s = create_schedule(
        &w.client,
        "ttl",
        json!({"schedule": "* * * * *",
               "template": {"spec": {"type": "power_on", "dropletId": 101007, "ttlSecondsAfterFinished": 0}}}),
    )
    .await;
    eventually("five children", || async {
        seen.lock().unwrap().len() >= 5
    })
    .await;
    set_suspend(&w.client, "ttl", true).await;
    eventually("the last child is gone", || async {
        children(&w.client, &s).await.is_empty()
    })
    .await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let names: BTreeSet<&String> = seen.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names.len(),
        seen.len(),
        "a slot's child was created twice: {seen:?}"
    );
    let actions = w.sent_posts(101007).len();
    assert_eq!(
        actions,
        seen.len(),
        "one DigitalOcean POST request per child"
    );
    w.stop().await;
}
