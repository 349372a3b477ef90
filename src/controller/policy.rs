//! Every timing of the controller in one place: poll schedule, adoption window, backoff, budget factor.

use std::time::Duration;

use crate::crd::ActionType;
use crate::digitalocean::BudgetSnapshot;

/// Tunables of the decision logic.
#[derive(Clone, Debug)]
pub struct DecideConfig {
    /// After recording an intent, how long a missing DigitalOcean action may still appear (the request timeout
    /// plus a margin). Only after this is it certain that nothing started, and the request is sent again.
    pub adopt_grace: Duration,
    /// Clock-skew allowance when matching an action's `started_at` against the recorded intent time.
    pub adopt_skew: Duration,
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
}

impl Default for DecideConfig {
    fn default() -> Self {
        DecideConfig {
            adopt_grace: Duration::from_secs(45),
            adopt_skew: Duration::from_secs(60),
            poll_scale: 1.0,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            busy_max: Duration::from_secs(60),
            recheck: Duration::from_secs(15),
        }
    }
}

impl DecideConfig {
    /// Settings for a DigitalOcean request timeout, with every wait and poll interval multiplied by `poll_scale`
    /// (1.0 against DigitalOcean; smaller against a fast simulator).
    pub fn for_timeout(request_timeout: Duration, poll_scale: f64) -> DecideConfig {
        let defaults = DecideConfig::default();
        let scale = poll_scale.clamp(0.001, 1000.0);
        DecideConfig {
            // After this long no request of ours can still be on its way to DigitalOcean.
            adopt_grace: request_timeout
                + Duration::from_secs(5)
                    .mul_f64(scale.min(1.0))
                    .max(Duration::from_millis(500)),
            poll_scale,
            recheck: defaults.recheck.mul_f64(scale),
            retry_base: defaults.retry_base.mul_f64(scale),
            retry_max: defaults.retry_max.mul_f64(scale),
            busy_max: defaults.busy_max.mul_f64(scale),
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
