//! The highest DigitalOcean action ID this client has seen, per token: the watermark of an initiation, shared by
//! the initiations of a burst.
//!
//! An initiation records a watermark before it sends its POST: every action that existed before the send has a
//! lower ID (IDs grow over time), so when the send's outcome is unknown, only unclaimed actions above the watermark
//! can be the one it started. Any ID the client received *before* the send is such a bound, whatever endpoint
//! returned it; a lower bound than the true newest ID is still safe, it only widens the set of candidates (and the
//! controller adopts only a single match). What a stale value widens it by is another client's actions of the same
//! type on the same droplet started since the value was current, so a value is used only while it is *fresh*:
//! observed as the account's newest ID (a POST's answer, or the first page of `GET /v2/actions`, which DigitalOcean
//! lists newest first) within a maximum age.
//!
//! Otherwise [`DoClient::watermark`] reads one: `GET /v2/actions?per_page=1` (the account's newest action), one
//! read at a time per token, so initiations that start together wait for the same read instead of each sending
//! their own. A token without the `actions:read` scope (403) reads its droplet's newest actions instead, each
//! initiation its own (a droplet's list says nothing about other droplets).
//!
//! Keyed by token fingerprint: tokens may belong to different accounts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::DoClient;
use super::error::{DoError, ErrorKind};
use super::token::Token;

/// Actions read from a droplet's list when the account list is not allowed (DigitalOcean lists newest first).
const DROPLET_PER_PAGE: u32 = 50;

#[derive(Clone, Copy, Debug, Default)]
struct Mark {
    highest: i64,
    /// When an observation last showed the account's newest action (None: only older ones were seen).
    current_at: Option<Instant>,
    /// The token may not list the account's actions (403 on `GET /v2/actions`).
    no_account_list: bool,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Watermarks {
    marks: Mutex<HashMap<String, Mark>>,
    /// One read at a time per token.
    reads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Watermarks {
    fn with<T>(&self, fingerprint: &str, f: impl FnOnce(&mut Mark) -> T) -> T {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        f(marks.entry(fingerprint.to_string()).or_default())
    }

    /// Records IDs received at `at`. `current`: they are the account's newest actions at that moment (a POST's
    /// answer, the first page of the account's action list; an empty first page means there are none).
    pub fn observe(
        &self,
        fingerprint: &str,
        ids: impl IntoIterator<Item = i64>,
        current: bool,
        at: Instant,
    ) {
        let max = ids.into_iter().max();
        if max.is_none() && !current {
            return;
        }
        self.with(fingerprint, |mark| {
            mark.highest = mark.highest.max(max.unwrap_or(0));
            if current {
                mark.current_at = Some(mark.current_at.map_or(at, |t| t.max(at)));
            }
        });
    }

    /// The highest ID seen for the token, if it was the account's newest within `max_age` before `now`.
    pub fn fresh(&self, fingerprint: &str, max_age: Duration, now: Instant) -> Option<i64> {
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let mark = marks.get(fingerprint)?;
        let at = mark.current_at?;
        (now.saturating_duration_since(at) <= max_age).then_some(mark.highest)
    }

    fn read_lock(&self, fingerprint: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        reads.entry(fingerprint.to_string()).or_default().clone()
    }
}

impl DoClient {
    /// The watermark for an initiation on `droplet` (None: by tag), see the [module docs](self): a fresh value
    /// without a request, else the account's newest action ID (one read shared by the initiations waiting for
    /// it), else (no `actions:read`, droplets only) the droplet's newest.
    pub async fn watermark(
        &self,
        token: &Token,
        droplet: Option<i64>,
        max_age: Duration,
    ) -> Result<i64, DoError> {
        let marks = self.marks();
        let fp = token.fingerprint();
        if let Some(w) = marks.fresh(&fp, max_age, Instant::now()) {
            return Ok(w);
        }
        let no_account_list = marks.with(&fp, |m| m.no_account_list);
        if !(no_account_list && droplet.is_some()) {
            let lock = marks.read_lock(&fp);
            let _one_at_a_time = lock.lock().await;
            // The read another initiation just finished serves this one too.
            if let Some(w) = marks.fresh(&fp, max_age, Instant::now()) {
                return Ok(w);
            }
            match self.list_actions(token, 1, 1).await {
                // The list recorded what it saw as current (see `list_actions`); an ID received meanwhile may
                // be higher still.
                Ok(_) => return Ok(marks.with(&fp, |m| m.highest)),
                Err(e) if e.kind() == ErrorKind::Forbidden && droplet.is_some() => {
                    marks.with(&fp, |m| m.no_account_list = true);
                }
                Err(e) => return Err(e),
            }
        }
        let droplet = droplet.unwrap_or_default();
        let page = self
            .list_droplet_actions(token, droplet, 1, DROPLET_PER_PAGE)
            .await?;
        // 0 when the droplet has no action yet.
        Ok(page.items.iter().map(|a| a.id).max().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(5);

    #[test]
    fn a_current_observation_is_fresh_until_the_max_age() {
        let w = Watermarks::default();
        let t0 = Instant::now();
        assert_eq!(w.fresh("a", AGE, t0), None, "nothing seen yet");
        w.observe("a", [7, 12, 9], true, t0);
        assert_eq!(w.fresh("a", AGE, t0 + AGE), Some(12));
        assert_eq!(w.fresh("a", AGE, t0 + AGE + Duration::from_millis(1)), None);
        assert_eq!(
            w.fresh("b", AGE, t0),
            None,
            "another token's IDs say nothing"
        );
    }

    #[test]
    fn older_actions_raise_the_value_but_do_not_make_it_fresh() {
        let w = Watermarks::default();
        let t0 = Instant::now();
        w.observe("a", [40], false, t0);
        assert_eq!(
            w.fresh("a", AGE, t0),
            None,
            "a GET of one action is not the newest"
        );
        w.observe("a", [30], true, t0);
        assert_eq!(w.fresh("a", AGE, t0), Some(40), "the value never goes down");
        w.observe("a", [50], false, t0 + AGE);
        assert_eq!(
            w.fresh("a", AGE, t0 + AGE),
            Some(50),
            "a higher ID seen later is still below anything sent after it"
        );
        assert_eq!(w.fresh("a", AGE, t0 + AGE * 2), None);
    }

    #[test]
    fn an_empty_first_page_says_there_is_no_action_yet() {
        let w = Watermarks::default();
        let t0 = Instant::now();
        w.observe("a", [], false, t0);
        assert_eq!(
            w.fresh("a", AGE, t0),
            None,
            "an empty droplet list says nothing"
        );
        w.observe("a", [], true, t0);
        assert_eq!(w.fresh("a", AGE, t0), Some(0));
    }
}
