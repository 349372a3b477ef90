//! Tracking: folding polled actions (and resolved images, droplet power states) into the status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::util::*;
use super::*;
use crate::controller::conditions::{reasons, set_phase};
use crate::crd::DropletActionStatus;
use crate::digitalocean::{Action, DoError, ErrorKind};

/// Folds polled actions and resolved snapshot images into the status.
pub fn after_track(
    status: &DropletActionStatus,
    observed: &BTreeMap<i64, Action>,
    snapshot_images: &BTreeMap<i64, i64>,
    droplet_statuses: &BTreeMap<i64, String>,
) -> DropletActionStatus {
    let mut st = status.clone();
    for rec in st.actions.iter_mut() {
        if let Some(a) = observed.get(&rec.id) {
            rec.status = status_str(&a.status);
            if a.started_at.is_some() {
                rec.started_at = a.started_at.map(Time);
            }
            rec.completed_at = a.completed_at.map(Time);
            if rec.region_slug.is_none() {
                rec.region_slug = a.region_slug.clone();
            }
        }
        if let Some(image) = snapshot_images.get(&rec.id) {
            rec.snapshot_image_id = Some(*image);
        }
        if let Some(power) = droplet_statuses.get(&rec.id) {
            rec.droplet_status = Some(power.clone());
        }
    }
    st
}

/// Folds a failed poll into the status: transient errors back off (the backoff survives restarts because it
/// lives in status), permanent ones fail the resource.
pub fn after_track_error(input: &Input, status: &DropletActionStatus, error: &DoError) -> Update {
    let mut st = status.clone();
    if !error.is_transient() && error.kind() != ErrorKind::DropletBusy {
        return failed_by(st, input, error);
    }
    st.last_error = Some(Box::new(last_error(error, input.now)));
    let delay = schedule_retry(&mut st, input, error, input.config.retry_max);
    let msg = format!(
        "checking the action's progress failed: {}; retrying in {}s",
        describe_error(error),
        delay.as_secs()
    );
    let phase = st.phase.unwrap_or_default();
    set_phase(
        &mut st,
        phase,
        reasons::RETRYING,
        msg.clone(),
        input.generation,
        input.now,
    );
    Update {
        status: st,
        requeue: Some(delay),
        note: note(true, reasons::RETRYING, msg),
    }
}
