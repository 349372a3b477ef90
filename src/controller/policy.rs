//! Every timing of the controller in one place: poll schedule, adoption window, backoff, budget factor.

use std::time::Duration;

use crate::crd::ActionType;
use crate::digitalocean::BudgetSnapshot;

/// Default of [`DecideConfig::adopt_window`]: how long after a send attempt ended without a known outcome an
/// action it started may still show up in DigitalOcean's lists. Covers a request applied late (after our
/// timeout) and lists that lag behind by tens of seconds.
pub const ADOPT_WINDOW: Duration = Duration::from_secs(120);
/// How often to list a droplet's actions while looking for the action of an uncertain send.
pub const ADOPT_POLL: Duration = Duration::from_secs(3);
/// First look after an ambiguous send.
pub const ADOPT_FIRST_LOOK: Duration = Duration::from_secs(2);
/// Without a deadline, how long an action whose DigitalOcean status is not one we know is polled before the
/// resource fails.
pub const UNKNOWN_STATUS_LIMIT: Duration = Duration::from_secs(3600);
/// How long after a snapshot completed its image is looked for before the resource ends without the image ID.
pub const SNAPSHOT_SEARCH_LIMIT: Duration = Duration::from_secs(600);
/// Pages of a droplet's snapshots searched for the new image.
pub const SNAPSHOT_SEARCH_PAGES: u32 = 10;
/// Pages of a droplet's action list read when looking for the action of an uncertain send.
pub const ADOPT_LIST_PAGES: u32 = 2;
/// How recently a response must have shown the account's newest action ID for an initiation to use it as its
/// watermark instead of reading one (see `digitalocean::watermark`). A burst of initiations then costs one read,
/// not one per POST. Of the order of DigitalOcean's list lag, which already hides that many seconds of other
/// clients' actions from a fresh read.
pub const WATERMARK_MAX_AGE: Duration = Duration::from_secs(5);

/// Tunables of the decision logic.
#[derive(Clone, Debug)]
pub struct DecideConfig {
    /// Timeout of one DigitalOcean request: an intent whose send never recorded an end (the process died) may
    /// have a request in flight until `requested_at + request_timeout`.
    pub request_timeout: Duration,
    /// After a send attempt ended without a known outcome, how long its action may still appear. Only an
    /// action with an ID above the intent's watermark found within this window is adopted; after it the
    /// resource stops with reason InitiationUncertain (it never guesses "nothing started").
    pub adopt_window: Duration,
    /// Interval of the adoption lookups.
    pub adopt_poll: Duration,
    /// Clock-skew allowance for intents recorded before watermarks existed (matched by `started_at`).
    pub adopt_skew: Duration,
    /// See [`WATERMARK_MAX_AGE`].
    pub watermark_max_age: Duration,
    /// Multiplies every poll interval (1.0 in production; smaller in tests against a fast simulator).
    pub poll_scale: f64,
    /// First delay after a transient failure; doubles per consecutive failure.
    pub retry_base: Duration,
    /// Cap of the transient-failure backoff.
    pub retry_max: Duration,
    /// Cap of the backoff while DigitalOcean reports the droplet busy.
    pub busy_max: Duration,
    /// How often to re-check while waiting for a token or for another DropletAction on the same droplet.
    pub recheck: Duration,
    /// See [`UNKNOWN_STATUS_LIMIT`].
    pub unknown_status_limit: Duration,
    /// See [`SNAPSHOT_SEARCH_LIMIT`].
    pub snapshot_search_limit: Duration,
}

impl Default for DecideConfig {
    fn default() -> Self {
        DecideConfig {
            request_timeout: Duration::from_secs(30),
            adopt_window: ADOPT_WINDOW,
            adopt_poll: ADOPT_POLL,
            adopt_skew: Duration::from_secs(60),
            watermark_max_age: WATERMARK_MAX_AGE,
            poll_scale: 1.0,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            busy_max: Duration::from_secs(60),
            recheck: Duration::from_secs(15),
            unknown_status_limit: UNKNOWN_STATUS_LIMIT,
            snapshot_search_limit: SNAPSHOT_SEARCH_LIMIT,
        }
    }
}

impl DecideConfig {
    /// Settings for a DigitalOcean request timeout, with every wait and poll interval multiplied by `poll_scale`
    /// (1.0 against DigitalOcean; smaller against a fast simulator), the adoption window included.
    pub fn for_timeout(request_timeout: Duration, poll_scale: f64) -> DecideConfig {
        let defaults = DecideConfig::default();
        let scale = poll_scale.clamp(0.001, 1000.0);
        DecideConfig {
            request_timeout,
            adopt_window: ADOPT_WINDOW.mul_f64(scale),
            adopt_poll: ADOPT_POLL.mul_f64(scale).max(Duration::from_millis(50)),
            watermark_max_age: WATERMARK_MAX_AGE.mul_f64(scale),
            poll_scale,
            recheck: defaults.recheck.mul_f64(scale),
            retry_base: defaults.retry_base.mul_f64(scale),
            retry_max: defaults.retry_max.mul_f64(scale),
            busy_max: defaults.busy_max.mul_f64(scale),
            unknown_status_limit: UNKNOWN_STATUS_LIMIT.mul_f64(scale),
            snapshot_search_limit: SNAPSHOT_SEARCH_LIMIT.mul_f64(scale),
            ..defaults
        }
    }
}

/// Poll interval for an action type that has been running for `elapsed`: short for power actions, long for
/// snapshots, growing with the elapsed time (a long action is polled less often).
pub fn poll_interval(
    type_: ActionType,
    elapsed: Duration,
    scale: f64,
    budget_factor: f64,
) -> Duration {
    // First poll after `min`; then half the time the action has run so far (an action that took 20 s is
    // unlikely to finish in the next second), capped at `max`. One list call observes every in-flight action of
    // a token, so this schedule is paid once per token, not once per action.
    let (min, max) = match type_ {
        ActionType::PowerOn
        | ActionType::PowerOff
        | ActionType::Shutdown
        | ActionType::Reboot
        | ActionType::PowerCycle => (3.0, 15.0),
        ActionType::Resize | ActionType::Rebuild | ActionType::Restore => (5.0, 30.0),
        ActionType::Snapshot => (10.0, 120.0),
        _ => (3.0, 20.0),
    };
    let secs = (elapsed.as_secs_f64() / 2.0).clamp(min, max) * scale * budget_factor.max(1.0);
    Duration::from_secs_f64(secs.max(0.05))
}

/// Capped exponential backoff for the `failures`-th consecutive failure, with deterministic spread.
pub fn backoff(failures: i32, base: Duration, cap: Duration) -> Duration {
    let exp = failures.clamp(1, 20) - 1;
    let d = base.as_secs_f64() * 2f64.powi(exp);
    Duration::from_secs_f64(d.min(cap.as_secs_f64()))
}

/// How much to stretch polling when the rate budget runs low.
pub fn budget_factor(b: &BudgetSnapshot) -> f64 {
    let frac = |rem: u32, lim: u32| {
        if lim == 0 {
            1.0
        } else {
            f64::from(rem) / f64::from(lim)
        }
    };
    let left = frac(b.remaining_minute, b.limit_minute).min(frac(b.remaining_hour, b.limit_hour));
    if left < 0.1 {
        8.0
    } else if left < 0.25 {
        4.0
    } else if left < 0.5 {
        2.0
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(remaining_minute: u32, remaining_hour: u32) -> BudgetSnapshot {
        BudgetSnapshot {
            remaining_minute,
            remaining_hour,
            limit_minute: 240,
            limit_hour: 4800,
            blocked_until: None,
            server_reset: None,
        }
    }

    #[test]
    fn polling_stretches_as_either_rate_window_runs_low() {
        assert_eq!(budget_factor(&budget(240, 4800)), 1.0);
        assert_eq!(budget_factor(&budget(100, 4800)), 2.0);
        assert_eq!(budget_factor(&budget(50, 4800)), 4.0);
        assert_eq!(budget_factor(&budget(10, 4800)), 8.0);
        assert_eq!(
            budget_factor(&budget(240, 400)),
            8.0,
            "the hourly window counts too"
        );
    }
}
