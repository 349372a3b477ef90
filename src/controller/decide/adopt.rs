//! Adoption: finding the action an intent whose outcome is unknown may have started.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::util::*;
use super::*;
use crate::controller::conditions::{reasons, set_phase};
use crate::crd::{DropletActionStatus, PendingInitiation, Phase};
use crate::digitalocean::Action;

/// Actions that may have been started by a recorded intent: the intent's type, started at or after the intent
/// time (less the skew allowance), on one of its droplets, and not already claimed by any DropletAction.
pub fn adoption_candidates<'a>(
    intent: &PendingInitiation,
    listed: &'a [Action],
    claimed: &BTreeSet<i64>,
    skew: Duration,
) -> Vec<&'a Action> {
    let since = minus(intent.requested_at.0, skew);
    let mut by_droplet: BTreeMap<i64, &Action> = BTreeMap::new();
    for a in listed {
        let droplet = a.resource_id.unwrap_or(0);
        let matches = a.type_ == intent.type_
            && !claimed.contains(&a.id)
            && a.started_at.is_some_and(|t| t >= since)
            && (intent.droplet_ids.is_empty() || intent.droplet_ids.contains(&droplet));
        if matches {
            // The earliest matching action per droplet is the one the intent started.
            let keep = by_droplet.get(&droplet).is_none_or(|prev| a.id < prev.id);
            if keep {
                by_droplet.insert(droplet, a);
            }
        }
    }
    by_droplet.into_values().collect()
}

/// What an adoption lookup concluded.
#[derive(Clone, Debug)]
pub enum AdoptOutcome {
    /// Matching actions were found and recorded: track them (nothing is sent again).
    Adopted(Update),
    /// Nothing matched yet, but a request may still arrive at DigitalOcean: look again later.
    Wait(Update),
    /// The grace period passed without a match: nothing started. The intent is cleared and the reconcile goes
    /// on to initiate again.
    NothingStarted(DropletActionStatus),
}

/// Folds the result of an adoption lookup into the status.
pub fn after_adopt(input: &Input, intent: &PendingInitiation, found: &[&Action]) -> AdoptOutcome {
    let now = input.now;
    let mut st = input.status.clone();
    let fallback_droplet = intent.droplet_ids.first().copied().unwrap_or(0);
    let grace_over = now >= plus(intent.requested_at.0, input.config.adopt_grace);
    if found.is_empty() {
        if grace_over {
            st.pending_initiation = None;
            return AdoptOutcome::NothingStarted(st);
        }
        let wait_left = dur_since(plus(intent.requested_at.0, input.config.adopt_grace), now);
        let msg = "the outcome of the last request to DigitalOcean is unknown; waiting to see whether the action started before sending it again".to_string();
        let phase = st.phase.unwrap_or_default();
        set_phase(
            &mut st,
            phase,
            reasons::ADOPTING,
            msg,
            input.generation,
            now,
        );
        let poll = Duration::from_secs(3)
            .mul_f64(input.config.poll_scale.max(0.05))
            .min(wait_left.max(Duration::from_millis(50)));
        return AdoptOutcome::Wait(Update {
            status: st,
            requeue: Some(poll),
            note: None,
        });
    }
    for a in found {
        st.actions
            .push(record(a, intent.attempt, &intent.type_, fallback_droplet));
    }
    let found_droplets: BTreeSet<i64> = found.iter().filter_map(|a| a.resource_id).collect();
    let remaining: Vec<i64> = intent
        .droplet_ids
        .iter()
        .copied()
        .filter(|d| !found_droplets.contains(d))
        .collect();
    // Droplets of a by-tag request not seen yet keep their intent until the grace period is over.
    st.pending_initiation = if !remaining.is_empty()
        && !grace_over
        && found_droplets.len() < intent.droplet_ids.len()
    {
        Some(PendingInitiation {
            droplet_ids: remaining,
            ..intent.clone()
        })
    } else {
        None
    };
    st.attempts = Some(st.attempts.unwrap_or(0).max(intent.attempt));
    st.retry = None;
    if input.spec.tag_name.is_some()
        && intent.attempt == 1
        && intent.type_ == input.spec.type_.as_str()
    {
        let mut ids: Vec<i64> = st.actions.iter().map(|a| a.droplet_id).collect();
        ids.sort_unstable();
        ids.dedup();
        st.droplet_ids = ids;
    }
    let ids: Vec<String> = found.iter().map(|a| a.id.to_string()).collect();
    let msg = format!("DigitalOcean action(s) {} in progress", ids.join(", "));
    set_phase(
        &mut st,
        Phase::Running,
        reasons::RUNNING,
        msg,
        input.generation,
        now,
    );
    st.action_summary = action_summary(input.spec, &st);
    let text = format!(
        "adopted DigitalOcean action(s) {} started by an earlier request whose response was lost; not sending it again",
        ids.join(", ")
    );
    AdoptOutcome::Adopted(Update {
        status: st,
        requeue: Some(Duration::ZERO),
        note: note(false, "Adopted", text),
    })
}
