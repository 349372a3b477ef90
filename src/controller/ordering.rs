//! One action in flight per droplet, in creation order, with tenants kept apart.
//!
//! DigitalOcean refuses a second action on a droplet while one is pending (422 "pending event"). Instead of
//! racing, DropletActions that share a droplet take turns.
//!
//! # Creation order
//! Order is the API server's revision at creation, not `creationTimestamp` (one-second resolution, ties broken
//! by name would reorder a batch). The controller records the object's `metadata.resourceVersion` at first
//! sight in `status.creationRevision`; until then the current `resourceVersion` stands in, which *is* the
//! creation revision as long as nobody changed the object. On a real API server a resourceVersion is the etcd
//! revision, one global counter that grows with every write, so objects created by one `kubectl apply -f` (one
//! request per object, in file order) and by later applies compare in the order they were created, at any
//! speed and whatever their names. Revisions are compared as integers when both parse as one; otherwise (an API
//! server with opaque versions) the order falls back to `creationTimestamp`, namespace and name.
//!
//! After an operator restart the recorded revisions still hold. A resource created while the operator was down
//! is ordered by its current resourceVersion: its creation revision unless it was changed before the operator
//! saw it (a label added, say), in which case it sorts as if created at that change.
//!
//! # Queues and tenants
//! One *queue* is the unfinished DropletActions of one namespace that use the same token (the same
//! `tokenSecretRef` name and key, or the operator's default token) and share a droplet. Within a queue, order
//! is strict: a resource waits for every earlier one, even one that cannot start; then it reports
//! `Blocked by <namespace>/<name>: <why>` with a Warning event, and its own deadline keeps running. Across
//! queues on the same droplet a resource waits only for one that holds the droplet (an initiation recorded or an
//! action running) or that was created earlier and can start. A resource that cannot start (its token is
//! missing, unreadable or not allowed to be read, DigitalOcean refused its token, or it is itself blocked that
//! way) never holds up another queue: one tenant's mistake cannot stop another tenant's actions.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;

use super::conditions::reasons;
use super::decide::{Gate, droplets_of};
use crate::crd::{DropletAction, Phase};

/// A resource's place in creation order (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    revision: Option<String>,
    created: Option<jiff::Timestamp>,
    namespace: String,
    name: String,
}

impl SortKey {
    /// `namespace/name`.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let revisions = match (&self.revision, &other.revision) {
            (Some(a), Some(b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) => a.cmp(&b),
                _ => Ordering::Equal,
            },
            _ => Ordering::Equal,
        };
        revisions
            .then_with(|| self.created.cmp(&other.created))
            .then_with(|| self.namespace.cmp(&other.namespace))
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// The revision a resource is ordered by: recorded at first sight, else its current resourceVersion.
pub fn creation_revision(da: &DropletAction) -> Option<String> {
    da.status
        .as_ref()
        .and_then(|s| s.creation_revision.clone())
        .or_else(|| da.metadata.resource_version.clone())
}

/// Where `da` stands in creation order.
pub fn sort_key(da: &DropletAction) -> SortKey {
    SortKey {
        revision: creation_revision(da),
        created: da.metadata.creation_timestamp.as_ref().map(|t| t.0),
        namespace: da.namespace().unwrap_or_default(),
        name: da.name_any(),
    }
}

/// Which queue a resource belongs to on each of its droplets: its namespace and its token source.
fn queue(da: &DropletAction) -> (String, Option<(&str, &str)>) {
    (
        da.namespace().unwrap_or_default(),
        da.spec
            .token_secret_ref
            .as_ref()
            .map(|r| (r.name.as_str(), r.key.as_str())),
    )
}

/// Why `other` cannot start, when it cannot (from its status): its token is missing or unreadable, DigitalOcean
/// refused its token before anything was sent, or it is itself blocked by such a resource.
pub fn cannot_start(other: &DropletAction) -> Option<String> {
    let st = other.status.as_ref()?;
    if st.phase.is_some_and(Phase::is_terminal)
        || !st.actions.is_empty()
        || st.pending_initiation.is_some()
    {
        return None;
    }
    let message = || st.message.clone().or_else(|| st.reason.clone());
    match st.reason.as_deref() {
        Some(reasons::TOKEN_NOT_FOUND) => message(),
        Some(reasons::WAITING_FOR_DROPLET)
            if st
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("Blocked by ")) =>
        {
            message()
        }
        _ if st.last_error.as_ref().is_some_and(|e| {
            matches!(
                e.reason.as_deref(),
                Some("Unauthorized" | "Forbidden" | "NotFound")
            )
        }) =>
        {
            message()
        }
        _ => None,
    }
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
    let my_queue = queue(me);
    // (holds the droplet, order, droplet, why it cannot start)
    let mut blockers: Vec<(bool, SortKey, i64, Option<String>)> = Vec::new();
    for other in all {
        // Cheapest tests first: this loop visits every cached resource.
        if other.phase().is_terminal() {
            continue;
        }
        let Some(shared) = shared_droplet(other, &mine) else {
            continue;
        };
        if is_same(me, other)
            || other
                .metadata
                .uid
                .as_ref()
                .is_some_and(|u| finished.contains(u))
        {
            continue;
        }
        let holds = holds_droplets(other);
        let key = sort_key(other);
        if holds {
            blockers.push((true, key, shared, None));
            continue;
        }
        if key >= my_key {
            continue;
        }
        let stuck = cannot_start(other);
        if stuck.is_some() && queue(other) != my_queue {
            // Another tenant's resource that cannot start does not hold this queue up.
            continue;
        }
        blockers.push((false, key, shared, stuck));
    }
    // Report the one that runs (or would run) first.
    blockers.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    match blockers.into_iter().next() {
        None => Gate::Free,
        Some((_, key, droplet, why)) => Gate::Blocked {
            by: key.display_name(),
            droplet,
            why,
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
            !o.phase().is_terminal() && shared_droplet(o, &mine).is_some() && !is_same(me, o)
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
                droplet: 1,
                why: None,
            }
        );
        assert_eq!(
            gate(&c, &all, &none),
            Gate::Blocked {
                by: "default/shutdown".into(),
                droplet: 1,
                why: None,
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
                droplet: 1,
                why: None,
            }
        );
    }

    fn with_rv(d: &Arc<DropletAction>, rv: &str) -> Arc<DropletAction> {
        let mut d = (**d).clone();
        d.metadata.resource_version = Some(rv.into());
        Arc::new(d)
    }

    #[test]
    fn creation_revision_orders_a_same_second_batch_against_its_names() {
        // zz, mm, aa applied in that order within one second: revisions 7, 8, 9.
        let zz = with_rv(&da("zz-shutdown", 10, 1, None), "7");
        let mm = with_rv(&da("mm-snapshot", 10, 1, None), "8");
        let aa = with_rv(&da("aa-power-on", 10, 1, None), "9");
        let all = vec![aa.clone(), mm.clone(), zz.clone()];
        let none = BTreeSet::new();
        assert_eq!(gate(&zz, &all, &none), Gate::Free);
        assert!(
            matches!(gate(&mm, &all, &none), Gate::Blocked { by, .. } if by == "default/zz-shutdown")
        );
        assert!(
            matches!(gate(&aa, &all, &none), Gate::Blocked { by, .. } if by == "default/zz-shutdown")
        );
        // Numerically, not as text: "10" comes after "9".
        let late = with_rv(&da("a", 10, 1, None), "10");
        assert!(
            matches!(gate(&late, &[late.clone(), aa.clone()], &none), Gate::Blocked { by, .. } if by == "default/aa-power-on")
        );
    }

    #[test]
    fn the_revision_recorded_at_first_sight_wins_over_a_later_resource_version() {
        let mut first = (*with_rv(&da("first", 10, 1, Some(Phase::Pending)), "500")).clone();
        first.status.as_mut().unwrap().creation_revision = Some("7".into());
        let first = Arc::new(first);
        let second = with_rv(&da("second", 10, 1, None), "8");
        let all = vec![first.clone(), second.clone()];
        assert!(
            matches!(gate(&second, &all, &BTreeSet::new()), Gate::Blocked { by, .. } if by == "default/first")
        );
        assert_eq!(gate(&first, &all, &BTreeSet::new()), Gate::Free);
    }

    fn stuck(name: &str, ns: &str, created: i64) -> Arc<DropletAction> {
        let mut d = (*da(name, created, 1, Some(Phase::Pending))).clone();
        d.metadata.namespace = Some(ns.into());
        let st = d.status.as_mut().unwrap();
        st.reason = Some(reasons::TOKEN_NOT_FOUND.into());
        st.message = Some(format!("Secret {ns}/do was not found"));
        d.spec.token_secret_ref = Some(crate::crd::TokenSecretRef {
            name: "do".into(),
            key: "token".into(),
        });
        Arc::new(d)
    }

    #[test]
    fn a_tenant_that_cannot_start_blocks_only_its_own_queue_and_says_why() {
        let t1 = stuck("waits-for-token", "t1", 10);
        let mut other = (*da("other-tenant", 11, 1, None)).clone();
        other.metadata.namespace = Some("t2".into());
        let other = Arc::new(other);
        let mut same = (*da("same-queue", 12, 1, None)).clone();
        same.metadata.namespace = Some("t1".into());
        same.spec.token_secret_ref = t1.spec.token_secret_ref.clone();
        let same = Arc::new(same);
        let all = vec![t1.clone(), other.clone(), same.clone()];
        let none = BTreeSet::new();
        assert_eq!(gate(&other, &all, &none), Gate::Free);
        assert_eq!(
            gate(&same, &all, &none),
            Gate::Blocked {
                by: "t1/waits-for-token".into(),
                droplet: 1,
                why: Some("Secret t1/do was not found".into()),
            }
        );
    }

    #[test]
    fn across_queues_an_earlier_resource_that_can_start_still_goes_first() {
        let mut early = (*da("early", 10, 1, Some(Phase::Pending))).clone();
        early.metadata.namespace = Some("t1".into());
        let early = Arc::new(early);
        let mut late = (*da("late", 11, 1, None)).clone();
        late.metadata.namespace = Some("t2".into());
        let late = Arc::new(late);
        assert!(matches!(
            gate(&late, &[early.clone(), late.clone()], &BTreeSet::new()),
            Gate::Blocked { by, why: None, .. } if by == "t1/early"
        ));
    }

    #[test]
    fn opaque_resource_versions_fall_back_to_creation_time_then_name() {
        // An API server whose resourceVersions are not integers: order by creationTimestamp, then name.
        let later = with_rv(&da("a-later", 11, 1, None), "opaque-x");
        let earlier = with_rv(&da("z-earlier", 10, 1, None), "opaque-y");
        let all = vec![later.clone(), earlier.clone()];
        assert_eq!(gate(&earlier, &all, &BTreeSet::new()), Gate::Free);
        assert!(
            matches!(gate(&later, &all, &BTreeSet::new()), Gate::Blocked { by, .. } if by == "default/z-earlier")
        );
    }
}
