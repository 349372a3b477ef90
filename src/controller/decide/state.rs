//! The state of each droplet's latest attempt, derived from the recorded actions.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use super::util::{dur_since, ts};
use crate::crd::{ActionRecord, ActionType, DropletActionSpec, DropletActionStatus};

/// Per-droplet state of the latest attempt.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DropletState {
    NotStarted,
    InProgress(Vec<i64>),
    Done,
    NeedSnapshotId(i64, Option<Timestamp>),
    Errored {
        attempt: i32,
    },
    NeedFallback {
        attempt: i32,
        in_progress: Vec<i64>,
    },
    /// A shutdown completed; whether the droplet is really off must be checked.
    CheckPower(i64),
}

pub(crate) fn droplet_state(
    spec: &DropletActionSpec,
    records: &[&ActionRecord],
    now: Timestamp,
) -> DropletState {
    let Some(attempt) = records.iter().map(|r| r.attempt).max() else {
        return DropletState::NotStarted;
    };
    let current: Vec<&&ActionRecord> = records.iter().filter(|r| r.attempt == attempt).collect();
    let primary = current.iter().find(|r| r.type_ == spec.type_.as_str());
    let fallback = if spec.type_ == ActionType::Shutdown {
        current
            .iter()
            .find(|r| r.type_ == ActionType::PowerOff.as_str())
    } else {
        None
    };
    let primary_done = primary.is_some_and(|p| p.status == "completed");
    if let Some(fb) = fallback {
        return match fb.status.as_str() {
            "completed" => DropletState::Done,
            _ if primary_done => DropletState::Done,
            "errored" => DropletState::Errored { attempt },
            _ => DropletState::InProgress(vec![fb.id]),
        };
    }
    let Some(p) = primary else {
        return DropletState::NotStarted;
    };
    let overdue = match (spec.power_off_after_seconds, &p.started_at) {
        (Some(secs), Some(started)) => {
            dur_since(now, ts(started)) >= Duration::from_secs(secs as u64)
        }
        _ => false,
    };
    match p.status.as_str() {
        // A completed shutdown only says the command was issued: with a fallback configured, the droplet must
        // be seen off, else power_off follows once powerOffAfterSeconds passed.
        "completed"
            if spec.type_ == ActionType::Shutdown && spec.power_off_after_seconds.is_some() =>
        {
            match p.droplet_status.as_deref() {
                Some("off") => DropletState::Done,
                Some(_) if overdue => DropletState::NeedFallback {
                    attempt,
                    in_progress: vec![],
                },
                _ => DropletState::CheckPower(p.id),
            }
        }
        "completed" => {
            if spec.type_ == ActionType::Snapshot && p.snapshot_image_id.is_none() {
                DropletState::NeedSnapshotId(p.id, p.started_at.as_ref().map(ts))
            } else {
                DropletState::Done
            }
        }
        "errored" if spec.power_off_after_seconds.is_some() => DropletState::NeedFallback {
            attempt,
            in_progress: vec![],
        },
        "errored" => DropletState::Errored { attempt },
        // While the shutdown runs DigitalOcean refuses other actions on the droplet (422): keep tracking it.
        _ => DropletState::InProgress(vec![p.id]),
    }
}

/// The `Action` column: the action ID for one droplet, completed/total for several.
pub fn action_summary(spec: &DropletActionSpec, status: &DropletActionStatus) -> Option<String> {
    if status.actions.is_empty() {
        return None;
    }
    let droplets: BTreeSet<i64> = status.actions.iter().map(|a| a.droplet_id).collect();
    if spec.tag_name.is_none() && droplets.len() == 1 {
        return status.actions.last().map(|a| a.id.to_string());
    }
    let done = droplets
        .iter()
        .filter(|d| {
            let recs: Vec<&ActionRecord> = status
                .actions
                .iter()
                .filter(|a| a.droplet_id == **d)
                .collect();
            matches!(
                droplet_state(spec, &recs, Timestamp::UNIX_EPOCH),
                DropletState::Done
            )
        })
        .count();
    Some(format!("{done}/{}", droplets.len()))
}
