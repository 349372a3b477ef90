//! One action in flight per droplet, in creation order, across all DropletActions.
//!
//! DigitalOcean refuses a second action on a droplet while one is pending (422 "pending event"). Instead of
//! racing, DropletActions that share a droplet take turns: a resource may start only when no other resource on
//! any of its droplets is running, and none that was created before it is still unfinished. Creation order is
//! `metadata.creationTimestamp`, then namespace and name, so `shutdown`, `snapshot`, `power_on` applied together
//! run in that order.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;

use super::decide::{Gate, droplets_of};
use crate::crd::{DropletAction, Phase};

/// Creation order: timestamp, then namespace and name.
type SortKey = (Option<jiff::Timestamp>, String, String);

fn sort_key(da: &DropletAction) -> SortKey {
    (
        da.metadata.creation_timestamp.as_ref().map(|t| t.0),
        da.namespace().unwrap_or_default(),
        da.name_any(),
    )
}

fn is_same(a: &DropletAction, b: &DropletAction) -> bool {
    match (&a.metadata.uid, &b.metadata.uid) {
        (Some(x), Some(y)) => x == y,
        _ => a.namespace() == b.namespace() && a.name_any() == b.name_any(),
    }
}

/// Whether `other` is working on its droplets right now.
pub fn holds_droplets(other: &DropletAction) -> bool {
    let Some(st) = &other.status else {
        return false;
    };
    if st.phase.is_some_and(Phase::is_terminal) {
        return false;
    }
    st.pending_initiation.is_some()
        || st.phase == Some(Phase::Running)
        || st
            .actions
            .iter()
            .any(|a| a.status != "completed" && a.status != "errored")
}

/// The droplets a resource acts on (known only after a tag was resolved).
pub fn droplets(da: &DropletAction) -> BTreeSet<i64> {
    let empty = Default::default();
    droplets_of(&da.spec, da.status.as_ref().unwrap_or(&empty))
        .into_iter()
        .collect()
}

/// The first of `other`'s droplets that is also in `mine`, without allocating: the gate runs this against
/// every cached resource.
fn shared_droplet(other: &DropletAction, mine: &BTreeSet<i64>) -> Option<i64> {
    match other.spec.droplet_id {
        Some(id) => mine.contains(&id).then_some(id),
        None => other
            .status
            .as_ref()?
            .droplet_ids
            .iter()
            .copied()
            .find(|d| mine.contains(d)),
    }
}

/// May `me` start now, given every DropletAction the controller knows? `finished` holds the UIDs of resources
/// this controller just finished: the cache may not show their final status yet.
pub fn gate(me: &DropletAction, all: &[Arc<DropletAction>], finished: &BTreeSet<String>) -> Gate {
    let mine = droplets(me);
    if mine.is_empty() {
        return Gate::Free;
    }
    let my_key = sort_key(me);
    let mut blockers: Vec<(bool, SortKey, i64)> = Vec::new();
    for other in all {
        if is_same(me, other) || other.phase().is_terminal() {
            continue;
        }
        if other
            .metadata
            .uid
            .as_ref()
            .is_some_and(|u| finished.contains(u))
        {
            continue;
        }
        let Some(shared) = shared_droplet(other, &mine) else {
            continue;
        };
        let key = sort_key(other);
        if holds_droplets(other) || key < my_key {
            blockers.push((holds_droplets(other), key, shared));
        }
    }
    // Report the one that runs (or would run) first.
    blockers.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    match blockers.into_iter().next() {
        None => Gate::Free,
        Some((_, (_, ns, name), droplet)) => Gate::Blocked {
            by: format!("{ns}/{name}"),
            droplet,
        },
    }
}

/// The action IDs recorded by any DropletAction: an adoption must never take one of these.
pub fn claimed_action_ids(all: &[Arc<DropletAction>]) -> BTreeSet<i64> {
    all.iter()
        .filter_map(|da| da.status.as_ref())
        .flat_map(|s| s.actions.iter().map(|a| a.id))
        .collect()
}

/// Other unfinished DropletActions sharing a droplet with `me`: they may be able to start once `me` finished.
pub fn waiting_on(me: &DropletAction, all: &[Arc<DropletAction>]) -> Vec<Arc<DropletAction>> {
    let mine = droplets(me);
    all.iter()
        .filter(|o| {
            !is_same(me, o) && !o.phase().is_terminal() && shared_droplet(o, &mine).is_some()
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ActionType, DropletActionSpec, DropletActionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn da(name: &str, created: i64, droplet: i64, phase: Option<Phase>) -> Arc<DropletAction> {
        let mut spec: DropletActionSpec =
            serde_json::from_value(serde_json::json!({"type": "reboot"})).unwrap();
        spec.droplet_id = Some(droplet);
        spec.type_ = ActionType::Reboot;
        let mut d = DropletAction::new(name, spec);
        d.metadata.namespace = Some("default".into());
        d.metadata.uid = Some(name.into());
        d.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        d.status = phase.map(|p| DropletActionStatus {
            phase: Some(p),
            ..Default::default()
        });
        Arc::new(d)
    }

    #[test]
    fn earlier_unfinished_resource_goes_first() {
        let a = da("shutdown", 10, 1, Some(Phase::Pending));
        let b = da("snapshot", 11, 1, None);
        let c = da("power-on", 12, 1, None);
        let all = vec![a.clone(), b.clone(), c.clone()];
        let none = BTreeSet::new();
        assert_eq!(gate(&a, &all, &none), Gate::Free);
        assert_eq!(
            gate(&b, &all, &none),
            Gate::Blocked {
                by: "default/shutdown".into(),
                droplet: 1
            }
        );
        assert_eq!(
            gate(&c, &all, &none),
            Gate::Blocked {
                by: "default/shutdown".into(),
                droplet: 1
            }
        );
    }

    #[test]
    fn finished_resources_and_other_droplets_do_not_block() {
        let a = da("done", 10, 1, Some(Phase::Succeeded));
        let b = da("other-droplet", 9, 2, Some(Phase::Running));
        let c = da("me", 11, 1, None);
        assert_eq!(gate(&c, &[a, b, c.clone()], &BTreeSet::new()), Gate::Free);
    }

    #[test]
    fn a_later_resource_that_already_runs_blocks_an_earlier_one() {
        let early = da("early", 10, 1, Some(Phase::Pending));
        let running = da("late", 20, 1, Some(Phase::Running));
        assert_eq!(
            gate(&early, &[early.clone(), running.clone()], &BTreeSet::new()),
            Gate::Blocked {
                by: "default/late".into(),
                droplet: 1
            }
        );
    }
}
