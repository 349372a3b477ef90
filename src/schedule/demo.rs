//! The demo's schedule part: apply every DropletActionSchedule manifest in `examples/schedules/`, wait until
//! each schedule that is due during the demo (a slot within the next minute of the demo's clock) has created
//! its first DropletAction, and print the schedules like `kubectl get das`.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

use super::crd::DropletActionSchedule;
use super::{SCHEDULE_UID_LABEL, cron::CronSchedule};
use crate::crd::DropletAction;

/// Loads the schedule manifests of `dir` (none when it does not exist).
pub fn load(dir: &Path) -> Result<Vec<(String, DropletActionSchedule)>, String> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    crate::demo::manifest_files(dir)?
        .into_iter()
        .map(|(file, text)| {
            let s: DropletActionSchedule =
                serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
            Ok((file, s))
        })
        .collect()
}

/// Applies the schedules and waits for the first child of each per-minute one. Ok(false) when one did not
/// create its child in time.
pub async fn run(client: &kube::Client, dir: &Path, timeout: Duration) -> Result<bool, String> {
    let manifests = load(dir)?;
    if manifests.is_empty() {
        return Ok(true);
    }
    println!();
    println!(
        "Applying {} schedules from {}",
        manifests.len(),
        dir.display()
    );
    let api: Api<DropletActionSchedule> = Api::namespaced(client.clone(), "default");
    let children: Api<DropletAction> = Api::namespaced(client.clone(), "default");
    let pp = PostParams {
        field_manager: Some("droplet-operator-demo".into()),
        ..Default::default()
    };
    let mut due = Vec::new();
    for (file, s) in &manifests {
        let mut obj = s.clone();
        obj.metadata.namespace = Some("default".into());
        let created = api
            .create(&pp, &obj)
            .await
            .map_err(|e| format!("creating {file}: {e}"))?;
        // Per-minute schedules are due within a second of the demo's sped-up clock.
        let per_minute = CronSchedule::parse(&s.spec.schedule, s.spec.time_zone.as_deref())
            .ok()
            .and_then(|c| {
                let now = jiff::Timestamp::now();
                let a = c.next_after(now)?;
                let b = c.next_after(a)?;
                Some(b.duration_since(a) <= jiff::SignedDuration::from_secs(60))
            })
            .unwrap_or(false);
        if per_minute {
            due.push(created);
        }
    }
    let started = Instant::now();
    let mut ok = true;
    for s in &due {
        let selector = format!("{SCHEDULE_UID_LABEL}={}", s.uid().unwrap_or_default());
        loop {
            let kids = children
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| format!("listing children: {e}"))?
                .items;
            if let Some(first) = kids.iter().min_by_key(|d| d.name_any()) {
                println!(
                    "Schedule {} created its first DropletAction {} ({}, phase {}).",
                    s.name_any(),
                    first.name_any(),
                    first.spec.type_,
                    first.phase().as_str()
                );
                break;
            }
            if started.elapsed() > timeout {
                println!(
                    "MISMATCH schedule {}: no DropletAction was created",
                    s.name_any()
                );
                ok = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing schedules: {e}"))?;
    println!();
    println!(
        "{:<20} {:<12} {:<14} {:<7} {:<6} {:<22} NEXT",
        "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST"
    );
    for s in &list.items {
        let st = s.status.clone().unwrap_or_default();
        println!(
            "{:<20} {:<12} {:<14} {:<7} {:<6} {:<22} {}",
            s.name_any(),
            s.spec.schedule,
            s.spec.time_zone.as_deref().unwrap_or("UTC"),
            s.spec.suspend,
            st.active_count.unwrap_or(0),
            st.last_schedule_time
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| "-".into()),
            st.next_schedule_time
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    Ok(ok)
}
