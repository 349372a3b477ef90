//! Tracking many in-flight actions with few API calls.
//!
//! Every reconcile that needs an action's status asks the tracker with a freshness requirement. The tracker keeps
//! one cache per token (an account): when something asked for is stale it lists the account's newest actions
//! (`GET /v2/actions?per_page=200`, one call observes up to 200 actions), and only the actions that list does not
//! contain are fetched one by one (`GET /v2/droplets/{id}/actions/{action_id}`). Callers for the same token are
//! serialised on an async mutex, so concurrent reconciles share one list call instead of each making their own.
//! A token without the `actions:read` scope (403 on the list) falls back to per-action GETs.
//!
//! Every completed action the tracker reads (a wanted one, or any other action on a list page: after a restart
//! the first list re-learns from the account's recent history) teaches the [`polling`](super::polling) policy
//! how long its type takes; [`Tracker::policy`] hands that, with how many actions share the token's polls and
//! how much of its rate budget is left, to the decisions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;

use super::polling::{self, Learner, Policy};
use crate::crd::DropletAction;
use crate::digitalocean::{Action, ActionStatus, DoClient, DoError, ErrorKind, Token};

/// How long an observation is kept after it was last needed.
const CACHE_TTL: Duration = Duration::from_secs(600);
/// How often the cache is swept for observations older than [`CACHE_TTL`]. A sweep visits every cached action
/// (up to `MAX_LIST_PAGES × PER_PAGE` per list), and sweeping on every observation showed in a CPU profile of
/// `bench cpu_per_action`; an entry outliving its TTL by up to this long costs nothing.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Pages of `/v2/actions` read at most per refresh (each observes 200 actions; the loop stops at the oldest one
/// still wanted, so more pages only cost when that many actions are in flight, and still less than one GET each).
const MAX_LIST_PAGES: u32 = 10;
/// Page size of the list (DigitalOcean's maximum).
const PER_PAGE: u32 = 200;

#[derive(Default)]
struct TokenState {
    cache: HashMap<i64, (Action, Instant)>,
    last_list: Option<Instant>,
    /// The newest action ID the last list returned: anything newer started after that list.
    newest_listed: Option<i64>,
    list_forbidden: bool,
    /// Wanted actions not yet seen finished, with when they were last asked for and by which resource: the
    /// actions one list serves.
    in_flight: HashMap<i64, (Instant, ObjectRef<DropletAction>)>,
    /// When the cache was last swept.
    last_prune: Option<Instant>,
}

/// Shared action-status cache, one per operator.
#[derive(Clone)]
pub struct Tracker {
    client: DoClient,
    tokens: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<TokenState>>>>>,
    /// Action durations learned from every completed action read (DigitalOcean's, not per token).
    learner: Arc<Mutex<Learner>>,
    /// In-flight counts per token fingerprint, readable without waiting for a token's observation.
    sharing: Arc<Mutex<HashMap<String, usize>>>,
    /// `--poll-scale`: the simulator's clock runs this much faster.
    scale: f64,
    /// Wakes a resource whose action a list made for others saw finish (its reconcile then reads the cache).
    wake: Option<UnboundedSender<ObjectRef<DropletAction>>>,
}

impl Tracker {
    /// A tracker that calls DigitalOcean through `client`; `scale` is `--poll-scale` (1.0 against DigitalOcean).
    pub fn new(client: DoClient, scale: f64) -> Tracker {
        Tracker {
            client,
            tokens: Arc::default(),
            learner: Arc::default(),
            sharing: Arc::default(),
            scale,
            wake: None,
        }
    }

    /// Sends the resources whose actions a list saw finish, while they were not the ones asking, to `wake`:
    /// their next poll may be far off (a stretched schedule), and what the list found costs nothing to read.
    pub fn with_wake(mut self, wake: UnboundedSender<ObjectRef<DropletAction>>) -> Tracker {
        self.wake = Some(wake);
        self
    }

    /// The polling policy for actions of `token` now.
    pub fn policy(&self, token: &Token) -> Policy {
        let b = self.client.budget(token);
        let sharing = self
            .sharing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&token.fingerprint())
            .copied()
            .unwrap_or(0);
        Policy {
            learned: self
                .learner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot(),
            sharing: sharing.max(1),
            budget_left: polling::budget_left(
                b.remaining_minute,
                b.limit_minute,
                b.remaining_hour,
                b.limit_hour,
            ),
        }
    }

    /// When the oldest of `ids`' cached observations was made (a POST's answer counts as one), or None when
    /// one of them is not cached or already finished, `ids` is empty, or the token's cache is busy (a list is
    /// being read: the caller then polls and shares that list).
    pub fn last_observed(&self, token: &Token, ids: &[i64]) -> Option<jiff::Timestamp> {
        if ids.is_empty() {
            return None;
        }
        let state = self.state_for(token);
        let st = state.try_lock().ok()?;
        let mut oldest: Option<Instant> = None;
        for id in ids {
            let (a, at) = st.cache.get(id)?;
            if a.status.is_terminal() {
                // Finished in a list the resource has not read yet: reading it is free, so it is due now.
                return None;
            }
            oldest = Some(oldest.map_or(*at, |o| o.min(*at)));
        }
        let age = oldest?.elapsed();
        let age = jiff::SignedDuration::try_from(age).ok()?;
        jiff::Timestamp::now().checked_sub(age).ok()
    }

    /// Records actions of `owner` just returned by a POST as observed now.
    pub async fn record(
        &self,
        token: &Token,
        actions: &[Action],
        owner: &ObjectRef<DropletAction>,
    ) {
        let state = self.state_for(token);
        let mut st = state.lock().await;
        let now = Instant::now();
        for a in actions {
            st.cache.insert(a.id, (a.clone(), now));
            st.in_flight.insert(a.id, (now, owner.clone()));
        }
        // The next action of a burst already schedules its polls as a shared one.
        self.set_sharing(token, st.in_flight.len());
    }

    fn set_sharing(&self, token: &Token, n: usize) {
        self.sharing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.fingerprint(), n);
    }

    fn learn<'a>(&self, actions: impl IntoIterator<Item = &'a Action>) {
        let mut l = self.learner.lock().unwrap_or_else(|p| p.into_inner());
        for a in actions {
            l.learn(a, self.scale);
        }
    }

    fn state_for(&self, token: &Token) -> Arc<tokio::sync::Mutex<TokenState>> {
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(token.fingerprint()).or_default().clone()
    }

    /// The current status of each wanted `(droplet, action)` of `owner`, no older than `max_age`.
    pub async fn observe(
        &self,
        token: &Token,
        wanted: &[(i64, i64)],
        max_age: Duration,
        owner: &ObjectRef<DropletAction>,
    ) -> Result<BTreeMap<i64, Action>, DoError> {
        let state = self.state_for(token);
        let mut st = state.lock().await;
        let now = Instant::now();
        for (_, id) in wanted {
            st.in_flight.insert(*id, (now, owner.clone()));
        }
        // A finished action does not change again: its cached observation is fresh at any age (a list made for
        // other resources already answered this one).
        let fresh = |st: &TokenState, id: i64| {
            st.cache
                .get(&id)
                .is_some_and(|(a, at)| a.status.is_terminal() || now.duration_since(*at) <= max_age)
        };
        let mut stale: Vec<(i64, i64)> = wanted
            .iter()
            .copied()
            .filter(|(_, id)| !fresh(&st, *id))
            .collect();

        let listed_recently = st
            .last_list
            .is_some_and(|at| now.duration_since(at) <= max_age);
        if !stale.is_empty() && !st.list_forbidden {
            // An action that started after a recent list will be in the next one: leave it unobserved this round
            // (the caller polls again within one interval) instead of paying a GET or an extra list for it. A
            // burst of new actions then costs no more than the regular list schedule.
            let newest = st.newest_listed;
            let started_after_list = |st: &TokenState, id: i64| {
                !st.cache.contains_key(&id) && newest.is_some_and(|n| id > n)
            };
            if listed_recently {
                stale.retain(|(_, id)| !started_after_list(&st, *id));
            }
            if !stale.is_empty() && !listed_recently {
                match self.refresh_list(token, &mut st, &stale).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Forbidden => st.list_forbidden = true,
                    Err(e) => return Err(e),
                }
                stale.retain(|(_, id)| !fresh(&st, *id));
            }
        }
        for (droplet, id) in stale {
            let action = self.client.get_droplet_action(token, droplet, id).await?;
            self.learn([&action]);
            st.cache.insert(id, (action, Instant::now()));
        }
        if st
            .last_prune
            .is_none_or(|p| now.duration_since(p) >= PRUNE_EVERY)
        {
            st.cache
                .retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
            st.last_prune = Some(now);
        }
        let TokenState {
            cache, in_flight, ..
        } = &mut *st;
        let mut finished_elsewhere = Vec::new();
        in_flight.retain(|id, (asked, who)| {
            let running = cache
                .get(id)
                .is_none_or(|(a, _)| a.status == ActionStatus::InProgress);
            if !running && who != owner {
                finished_elsewhere.push(who.clone());
            }
            now.duration_since(*asked) < CACHE_TTL && running
        });
        if let Some(wake) = &self.wake {
            finished_elsewhere
                .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            finished_elsewhere.dedup();
            for who in finished_elsewhere {
                let _ = wake.send(who);
            }
        }
        self.set_sharing(token, in_flight.len());
        Ok(wanted
            .iter()
            .filter_map(|(_, id)| st.cache.get(id).map(|(a, _)| (*id, a.clone())))
            .collect())
    }

    async fn refresh_list(
        &self,
        token: &Token,
        st: &mut TokenState,
        stale: &[(i64, i64)],
    ) -> Result<(), DoError> {
        // Down to the oldest action any resource of this token is still waiting for, not only the caller's:
        // the other resources then find theirs in the cache instead of fetching them one by one.
        let oldest_wanted = stale
            .iter()
            .map(|(_, id)| *id)
            .chain(st.in_flight.keys().copied())
            .min()
            .unwrap_or(i64::MAX);
        for page in 1..=MAX_LIST_PAGES {
            let listed = self.client.list_actions(token, page, PER_PAGE).await?;
            let at = Instant::now();
            let smallest = listed.items.iter().map(|a| a.id).min();
            if page == 1 {
                let newest = listed.items.iter().map(|a| a.id).max();
                st.newest_listed = newest.or(st.newest_listed);
            }
            self.learn(&listed.items);
            for a in listed.items {
                st.cache.insert(a.id, (a, at));
            }
            // Action IDs grow over time: once a page reaches below the oldest wanted ID, later pages are older.
            let reached = smallest.is_none_or(|s| s <= oldest_wanted);
            if reached || listed.next_page.is_none() {
                break;
            }
        }
        st.last_list = Some(Instant::now());
        Ok(())
    }
}
