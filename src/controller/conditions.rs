//! kstatus-compatible conditions (`Ready`, `Reconciling`, `Stalled`) derived from the phase.
//!
//! `lastTransitionTime` changes only when a condition's status flips, so writing the same state twice produces
//! the same status and no write.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{DropletActionStatus, Phase};

/// Condition types.
pub mod types {
    /// True when the action Succeeded.
    pub const READY: &str = "Ready";
    /// True while the controller is working towards a final phase.
    pub const RECONCILING: &str = "Reconciling";
    /// True when the resource is Failed or Expired and will not progress without a new resource.
    pub const STALLED: &str = "Stalled";
}

/// Stable reasons, used in conditions, status.reason, events and metrics.
pub mod reasons {
    pub const CREATED: &str = "Created";
    pub const TOKEN_NOT_FOUND: &str = "TokenNotFound";
    pub const WAITING_FOR_DROPLET: &str = "WaitingForDroplet";
    pub const DROPLET_BUSY: &str = "DropletBusy";
    pub const RETRYING: &str = "Retrying";
    pub const INITIATING: &str = "Initiating";
    pub const ADOPTING: &str = "Adopting";
    pub const RUNNING: &str = "Running";
    pub const POWER_OFF_FALLBACK: &str = "PowerOffFallback";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const ACTION_ERRORED: &str = "ActionErrored";
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    pub const NOT_AFTER_PASSED: &str = "NotAfterPassed";
    pub const NO_DROPLETS: &str = "NoDropletsWithTag";
    pub const REJECTED: &str = "Rejected";
    /// The outcome of a request is unknown and no action appeared: waits for an annotation (Stalled).
    pub const INITIATION_UNCERTAIN: &str = "InitiationUncertain";
    /// DigitalOcean reports an action status the controller does not know.
    pub const UNKNOWN_ACTION_STATUS: &str = "UnknownActionStatus";
    /// A snapshot completed but its image was not found (event reason; the phase is Succeeded).
    pub const SNAPSHOT_IMAGE_NOT_FOUND: &str = "SnapshotImageNotFound";
}

/// Reasons that stop a resource that is not finished: Stalled=True, Reconciling=False.
const STALLED_WHILE_ACTIVE: [&str; 1] = [reasons::INITIATION_UNCERTAIN];

/// Sets phase, reason, message and the three conditions for `generation`.
pub fn set_phase(
    status: &mut DropletActionStatus,
    phase: Phase,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: Timestamp,
) {
    let message = message.into();
    status.phase = Some(phase);
    status.reason = Some(reason.to_string());
    status.message = Some(message.clone());
    status.observed_generation = Some(generation);
    let (ready, reconciling, stalled) = match phase {
        Phase::Pending | Phase::Running if STALLED_WHILE_ACTIVE.contains(&reason) => {
            (false, false, true)
        }
        Phase::Pending | Phase::Running => (false, true, false),
        Phase::Succeeded => (true, false, false),
        Phase::Failed | Phase::Expired => (false, false, true),
    };
    let flag = |b: bool| if b { "True" } else { "False" };
    set_condition(
        &mut status.conditions,
        types::READY,
        flag(ready),
        reason,
        &message,
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        types::RECONCILING,
        flag(reconciling),
        reason,
        &message,
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        types::STALLED,
        flag(stalled),
        reason,
        &message,
        generation,
        now,
    );
}

/// Upserts one condition; `lastTransitionTime` moves only when `status` flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = Time(now);
            }
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = Some(generation);
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: Some(generation),
            last_transition_time: Time(now),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flips() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut s = DropletActionStatus::default();
        set_phase(
            &mut s,
            Phase::Pending,
            reasons::WAITING_FOR_DROPLET,
            "waiting",
            1,
            t0,
        );
        set_phase(&mut s, Phase::Running, reasons::RUNNING, "running", 1, t1);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, Time(t0), "Ready stayed False");
        assert_eq!(ready.reason, "Running");
        set_phase(&mut s, Phase::Succeeded, reasons::SUCCEEDED, "done", 1, t1);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", Time(t1))
        );
        let stalled = s.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
        assert_eq!(stalled.status, "False");
    }

    #[test]
    fn failed_is_stalled_and_not_reconciling() {
        let mut s = DropletActionStatus::default();
        set_phase(
            &mut s,
            Phase::Failed,
            reasons::ACTION_ERRORED,
            "boom",
            3,
            Timestamp::UNIX_EPOCH,
        );
        let get = |t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(
            (get("Ready"), get("Reconciling"), get("Stalled")),
            ("False".into(), "False".into(), "True".into())
        );
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }
}
