//! The highest DigitalOcean action ID this client has seen, per token: a watermark for an initiation that costs
//! no request.
//!
//! An initiation records a watermark before it sends its POST: every action that existed before the send has a
//! lower ID (IDs grow over time), so when the send's outcome is unknown, only unclaimed actions above the watermark
//! can be the one it started. Any ID the client received *before* the send is such a bound, whatever endpoint
//! returned it; a lower bound than the true newest ID is still safe, it only widens the set of candidates (and the
//! controller adopts only a single match). What a stale value widens it by is another client's actions of the same
//! type on the same droplet started since the value was current, so a value is used only while it is *fresh*:
//! observed as the account's newest ID (a POST's answer, or the first page of `GET /v2/actions`, which DigitalOcean
//! lists newest first) within a maximum age. Otherwise the caller reads one (a droplet's newest actions).
//!
//! Keyed by token fingerprint: tokens may belong to different accounts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
struct Mark {
    highest: i64,
    /// When an observation last showed the account's newest action (None: only older ones were seen).
    current_at: Option<Instant>,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct Watermarks {
    marks: Mutex<HashMap<String, Mark>>,
}

impl Watermarks {
    /// Records IDs received at `at`. `current`: they include the account's newest action at that moment (a POST's
    /// answer, the first page of the account's action list), not only older actions.
    pub fn observe(
        &self,
        fingerprint: &str,
        ids: impl IntoIterator<Item = i64>,
        current: bool,
        at: Instant,
    ) {
        let Some(max) = ids.into_iter().max() else {
            return;
        };
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let mark = marks.entry(fingerprint.to_string()).or_insert(Mark {
            highest: max,
            current_at: None,
        });
        mark.highest = mark.highest.max(max);
        if current {
            mark.current_at = Some(mark.current_at.map_or(at, |t| t.max(at)));
        }
    }

    /// The highest ID seen for the token, if it was the account's newest within `max_age` before `now`.
    pub fn fresh(&self, fingerprint: &str, max_age: Duration, now: Instant) -> Option<i64> {
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let mark = marks.get(fingerprint)?;
        let at = mark.current_at?;
        (now.saturating_duration_since(at) <= max_age).then_some(mark.highest)
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
    fn an_empty_observation_changes_nothing() {
        let w = Watermarks::default();
        let t0 = Instant::now();
        w.observe("a", [], true, t0);
        assert_eq!(w.fresh("a", AGE, t0), None);
    }
}
