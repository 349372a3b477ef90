//! Tracking many in-flight actions with few API calls.
//!
//! Every reconcile that needs an action's status asks the tracker with a freshness requirement. The tracker keeps
//! one cache per token (an account): when something asked for is stale it lists the account's newest actions
//! (`GET /v2/actions?per_page=200`, one call observes up to 200 actions), and only the actions that list does not
//! contain are fetched one by one (`GET /v2/droplets/{id}/actions/{action_id}`). Callers for the same token are
//! serialised on an async mutex, so concurrent reconciles share one list call instead of each making their own.
//! A token without the `actions:read` scope (403 on the list) falls back to per-action GETs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digitalocean::{Action, DoClient, DoError, ErrorKind, Token};

/// How long an observation is kept after it was last needed.
const CACHE_TTL: Duration = Duration::from_secs(600);
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
}

/// Shared action-status cache, one per operator.
#[derive(Clone)]
pub struct Tracker {
    client: DoClient,
    tokens: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<TokenState>>>>>,
}

impl Tracker {
    /// A tracker that calls DigitalOcean through `client`.
    pub fn new(client: DoClient) -> Tracker {
        Tracker {
            client,
            tokens: Arc::default(),
        }
    }

    fn state_for(&self, token: &Token) -> Arc<tokio::sync::Mutex<TokenState>> {
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(token.fingerprint()).or_default().clone()
    }

    /// The current status of each wanted `(droplet, action)`, no older than `max_age`.
    pub async fn observe(
        &self,
        token: &Token,
        wanted: &[(i64, i64)],
        max_age: Duration,
    ) -> Result<BTreeMap<i64, Action>, DoError> {
        let state = self.state_for(token);
        let mut st = state.lock().await;
        let now = Instant::now();
        let fresh = |st: &TokenState, id: i64| {
            st.cache
                .get(&id)
                .is_some_and(|(_, at)| now.duration_since(*at) <= max_age)
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
            st.cache.insert(id, (action, Instant::now()));
        }
        st.cache
            .retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
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
        let oldest_wanted = stale.iter().map(|(_, id)| *id).min().unwrap_or(i64::MAX);
        for page in 1..=MAX_LIST_PAGES {
            let listed = self.client.list_actions(token, page, PER_PAGE).await?;
            let at = Instant::now();
            let smallest = listed.items.iter().map(|a| a.id).min();
            if page == 1 {
                let newest = listed.items.iter().map(|a| a.id).max();
                st.newest_listed = newest.or(st.newest_listed);
            }
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
