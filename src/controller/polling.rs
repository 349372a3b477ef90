//! The polling policy: when to look at an action in flight again.
//!
//! Everything here is a pure function of (what was learned about each action type, how many actions share a
//! poll, how much rate budget is left, the action's elapsed time). The [`tracker`](super::tracker) feeds it
//! and [`decide`](super::decide) asks it for the next poll.
//!
//! - **Expected durations.** Each action type's duration is modelled as log-normal. Before any data the model
//!   is a wide prior per type ([`prior`]); every completed action the tracker reads (its own, or anything else
//!   of the account a `GET /v2/actions` page returns: `completed_at - started_at`) refines it ([`Learner`]).
//!   After a restart the first list re-learns from the account's recent history.
//! - **When to poll.** Not on a fixed clock but by probability of completion: the first poll when the action
//!   is about as likely done as not, then each poll at the time by which another slice of the remaining
//!   probability mass has completed ([`next_poll`]), and past the learned range geometric backoff.
//! - **Batching.** One list call observes every in-flight action of a token, so when several actions share
//!   a poll its cost is shared too: the ladder gets denser (promptness for the same calls per action), and a
//!   cached observation a little older than due is accepted ([`max_age`]) so actions due at nearly the same
//!   time share one list.
//! - **Rate budget.** With the budget idle the policy spends it on promptness (a denser ladder); as it
//!   tightens every gap stretches (the reconciler's `budget_factor`, 2× at half the budget left, up to 8×).
//!
//! All constants are seconds at `scale` 1.0 and are multiplied by `scale` (the operator's `--poll-scale`);
//! learned durations are already in the simulator's (scaled) time, so a time-scaled run polls at the same
//! moments relative to the action as a real-time one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::crd::ActionType;
use crate::digitalocean::{Action, ActionStatus};

/// Smallest gap between two polls of one action (seconds at scale 1).
const MIN_GAP: f64 = 1.0;
/// Earliest first poll after the start (seconds at scale 1).
const FIRST_POLL_MIN: f64 = 1.0;
/// Past the learned range: the next poll after this fraction of the elapsed time.
const TAIL_FRACTION: f64 = 0.25;
/// Never wait longer than this between polls (seconds at scale 1).
const MAX_GAP: f64 = 120.0;
/// Quantile above which the tail backoff starts.
const TAIL_QUANTILE: f64 = 0.995;
/// Smallest spread of a learned type (log scale): durations are never perfectly regular.
const SIGMA_MIN: f64 = 0.03;
/// How many observations the prior weighs (its pull fades with the square of the evidence).
const PRIOR_WEIGHT: f64 = 1.0;
/// Older observations fade: the effective sample count is capped here (an exponentially weighted mean).
const MAX_WEIGHT: f64 = 30.0;
/// Action IDs remembered as already learned from.
const SEEN_CAP: usize = 4096;
/// DigitalOcean's timestamps are whole seconds.
const TIMESTAMP_RESOLUTION: f64 = 1.0;

/// A log-normal duration: `median` seconds, `sigma` standard deviation of the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub median: f64,
    pub sigma: f64,
}

/// Before any data: typical DigitalOcean durations per type (median seconds, spread), wide on purpose.
pub fn prior(type_: ActionType) -> Estimate {
    let (median, sigma) = match type_ {
        ActionType::PowerOn | ActionType::PowerOff | ActionType::Reboot => (8.0, 0.35),
        ActionType::PowerCycle => (10.0, 0.4),
        ActionType::Shutdown => (12.0, 0.45),
        ActionType::Resize => (120.0, 0.6),
        ActionType::Rebuild | ActionType::Restore => (90.0, 0.6),
        ActionType::Snapshot => (180.0, 0.7),
        ActionType::Rename
        | ActionType::EnableIpv6
        | ActionType::DisableBackups
        | ActionType::EnableBackups
        | ActionType::ChangeBackupPolicy
        | ActionType::ChangeKernel
        | ActionType::PasswordReset => (3.0, 0.5),
    };
    Estimate { median, sigma }
}

/// What was learned about one type: exponentially weighted mean and variance of ln(seconds at scale 1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TypeStats {
    pub weight: f64,
    pub mean: f64,
    pub var: f64,
}

impl TypeStats {
    /// Adds one duration (seconds at scale 1).
    pub fn add(&mut self, secs: f64) {
        if !(secs.is_finite() && secs > 0.0) {
            return;
        }
        let x = secs.ln();
        let w = (self.weight + 1.0).min(MAX_WEIGHT);
        let alpha = 1.0 / w;
        let delta = x - self.mean;
        self.mean += alpha * delta;
        self.var = (1.0 - alpha) * (self.var + alpha * delta * delta);
        self.weight = w;
    }
}

/// The prior of `type_` combined with what was learned (the prior weighs [`PRIOR_WEIGHT`] observations).
pub fn estimate(type_: ActionType, learned: Option<&TypeStats>) -> Estimate {
    let p = prior(type_);
    let Some(s) = learned.filter(|s| s.weight > 0.0) else {
        return p;
    };
    // Once there is data its mean is the estimate (a prior that pulled it would put every poll early); the
    // prior only keeps the spread wide while the evidence is thin, fading with its square, so a type that
    // behaves unlike its prior is learned within a few completions instead of dozens.
    let fade = PRIOR_WEIGHT / (PRIOR_WEIGHT + s.weight).powi(2);
    let mean = s.mean;
    let var = s.var + fade * p.sigma * p.sigma;
    Estimate {
        median: mean.exp(),
        sigma: var.sqrt().max(SIGMA_MIN),
    }
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, error < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

impl Estimate {
    /// Probability that the action is done after `secs`.
    pub fn cdf(&self, secs: f64) -> f64 {
        if secs <= 0.0 {
            return 0.0;
        }
        normal_cdf((secs / self.median).ln() / self.sigma)
    }

    /// The duration by which a fraction `p` of such actions is done.
    pub fn quantile(&self, p: f64) -> f64 {
        self.median * (self.sigma * normal_quantile(p)).exp()
    }
}

/// How densely to poll: the first poll at quantile `first` (or earlier: at most `gap` after the 5 % quantile),
/// then each poll after another `step` of probability mass, but at most `gap` seconds (at scale 1) later.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ladder {
    pub first: f64,
    pub step: f64,
    /// Promptness: the longest wait between polls while the action is likely to complete.
    pub gap: f64,
}

/// A lone action: the median, then 30 % more of the mass per poll, at most 2.5 s apart (a short action takes
/// about two reads; a long one a read per 2.5 s of its likely window only, not from its start).
const LONE: Ladder = Ladder {
    first: 0.5,
    step: 0.3,
    gap: 2.5,
};

/// The ladder for `sharing` actions observed by one poll, with `budget_left` (0..=1) of the token's rate
/// budget unused. Shared polls are cheaper per action, so with the budget idle (more than three quarters
/// left) they are denser and start earlier; with less left every token goes back to the lone ladder (and the
/// reconciler's budget factor stretches it further).
pub fn ladder(sharing: usize, budget_left: f64) -> Ladder {
    if budget_left < 0.75 || sharing < 2 {
        LONE
    } else if sharing >= 8 {
        Ladder {
            first: 0.35,
            step: 0.15,
            gap: 1.0,
        }
    } else {
        Ladder {
            first: 0.45,
            step: 0.22,
            gap: 2.0,
        }
    }
}

/// Seconds from now (the action has run `elapsed` seconds) to its next poll, all in seconds at the same
/// scale as `est`; `scale` multiplies the fixed gaps, `stretch` (>= 1, from the rate budget) every gap.
pub fn next_poll(est: &Estimate, elapsed: f64, lad: Ladder, scale: f64, stretch: f64) -> f64 {
    let stretch = stretch.max(1.0);
    let min_gap = MIN_GAP * scale * stretch;
    let gap = lad.gap * scale;
    let elapsed = elapsed.max(0.0);
    let first = est
        .quantile(lad.first)
        .min(est.quantile(0.05) + gap)
        .max(FIRST_POLL_MIN * scale);
    let done = est.cdf(elapsed);
    let delay = if elapsed < first {
        (first - elapsed) * stretch
    } else if done < TAIL_QUANTILE {
        let p = (done + lad.step).min(TAIL_QUANTILE);
        (est.quantile(p) - elapsed).max(0.0).min(gap) * stretch
    } else {
        elapsed * TAIL_FRACTION * stretch
    };
    delay.max(min_gap).min(MAX_GAP * scale * stretch)
}

/// Polls of one token land on a shared wall-clock grid of this step (seconds at scale 1): actions due within
/// the same step share one list call, and a token is listed at most once per step for its in-flight actions.
const GRID: f64 = 1.0;

/// `delay` (seconds) moved forward to the next grid point after `now_secs` (seconds since any fixed epoch).
pub fn align(delay: f64, now_secs: f64, scale: f64) -> f64 {
    let grid = GRID * scale.clamp(0.001, 1000.0);
    let due = now_secs + delay.max(0.0);
    let aligned = (due / grid).ceil() * grid;
    (aligned - now_secs).max(0.0)
}

/// How much earlier than its recomputed due time a woken poll still goes ahead: one grid step and a little
/// (a schedule computed a few milliseconds after an observation can land on the next grid point).
pub fn due_slack(scale: f64) -> Duration {
    Duration::from_secs_f64(1.05 * GRID * scale.clamp(0.001, 1000.0))
}

/// How old a cached observation may be when a poll is due `interval` from the previous one: up to a third of
/// the gap and less than half a grid step, so polls due at the same grid point share one list call but a poll
/// never takes the previous grid point's list for a new one.
pub fn max_age(interval: Duration, scale: f64) -> Duration {
    let cap = Duration::from_secs_f64((0.45 * GRID * scale).max(0.001));
    interval.mul_f64(0.34).min(cap)
}

/// What the policy knows at one moment: the learned durations, how many actions a poll of this token
/// serves, how much of its budget is left.
#[derive(Clone, Debug)]
pub struct Policy {
    pub learned: Arc<HashMap<ActionType, TypeStats>>,
    /// Actions of the token in flight (observed by one list call).
    pub sharing: usize,
    /// Fraction of the token's rate budget unused (0..=1; 1 when unknown).
    pub budget_left: f64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::prior_only()
    }
}

impl Policy {
    /// A policy with nothing learned and an idle budget (unit tests, fresh start).
    pub fn prior_only() -> Policy {
        Policy {
            learned: Arc::default(),
            sharing: 1,
            budget_left: 1.0,
        }
    }

    /// The expected duration of `type_`.
    pub fn estimate(&self, type_: ActionType) -> Estimate {
        estimate(type_, self.learned.get(&type_))
    }

    /// When to poll an action of `type_` that has run `elapsed` at `now`: `scale` is `--poll-scale`,
    /// `budget_factor` (>= 1) the rate budget's stretch. When other actions of the token are in flight the poll
    /// lands on the token's shared grid ([`align`]).
    pub fn interval_at(
        &self,
        type_: ActionType,
        elapsed: Duration,
        scale: f64,
        budget_factor: f64,
        now: jiff::Timestamp,
    ) -> Duration {
        let d = self.interval(type_, elapsed, scale, budget_factor);
        if self.sharing < 2 {
            // Nothing to share a list with: the grid would only make the poll later.
            return d;
        }
        let now_secs = (now.as_millisecond() % 86_400_000) as f64 / 1000.0;
        let secs = align(d.as_secs_f64(), now_secs, scale);
        Duration::from_secs_f64(secs.max(0.001))
    }

    /// [`Self::interval_at`] before the grid alignment.
    pub fn interval(
        &self,
        type_: ActionType,
        elapsed: Duration,
        scale: f64,
        budget_factor: f64,
    ) -> Duration {
        let scale = scale.clamp(0.001, 1000.0);
        let est = self.estimate(type_);
        let est = Estimate {
            median: est.median * scale,
            sigma: est.sigma,
        };
        let lad = ladder(self.sharing, self.budget_left);
        let secs = next_poll(&est, elapsed.as_secs_f64(), lad, scale, budget_factor);
        Duration::from_secs_f64(secs.max(0.001))
    }
}

/// The fraction of a budget left: the smaller of the minute's and the hour's.
pub fn budget_left(
    remaining_minute: u32,
    limit_minute: u32,
    remaining_hour: u32,
    limit_hour: u32,
) -> f64 {
    let frac = |rem: u32, lim: u32| {
        if lim == 0 {
            1.0
        } else {
            (f64::from(rem) / f64::from(lim)).clamp(0.0, 1.0)
        }
    };
    frac(remaining_minute, limit_minute).min(frac(remaining_hour, limit_hour))
}

/// The duration (seconds at scale 1) a finished action shows, if it is usable: its whole-second timestamps
/// bracket the true duration, so the middle of the bracket is taken.
pub fn observed_duration(a: &Action, scale: f64) -> Option<f64> {
    if a.status != ActionStatus::Completed {
        return None;
    }
    let (s, c) = (a.started_at?, a.completed_at?);
    let secs = c.duration_since(s).as_secs_f64();
    if secs < 0.0 {
        return None;
    }
    let scale = scale.clamp(0.001, 1000.0);
    let resolution = TIMESTAMP_RESOLUTION * scale.min(1.0);
    Some((secs + resolution / 2.0) / scale)
}

/// Learns durations from completed actions, each action once.
#[derive(Debug, Default)]
pub struct Learner {
    stats: Arc<HashMap<ActionType, TypeStats>>,
    seen: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Learner {
    /// Learns from `a` if it is completed and new; true when it changed something.
    pub fn learn(&mut self, a: &Action, scale: f64) -> bool {
        let Some(type_) = ActionType::parse(&a.type_) else {
            return false;
        };
        let Some(secs) = observed_duration(a, scale) else {
            return false;
        };
        if !self.seen.insert(a.id) {
            return false;
        }
        self.order.push_back(a.id);
        if self.order.len() > SEEN_CAP
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        Arc::make_mut(&mut self.stats)
            .entry(type_)
            .or_default()
            .add(secs);
        true
    }

    /// The learned statistics (cheap to clone).
    pub fn snapshot(&self) -> Arc<HashMap<ActionType, TypeStats>> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: i64, type_: &str, secs: i64) -> Action {
        let start = jiff::Timestamp::from_second(1_767_225_600).unwrap();
        serde_json::from_value(serde_json::json!({
            "id": id, "status": "completed", "type": type_,
            "started_at": start.to_string(),
            "completed_at": jiff::Timestamp::from_second(1_767_225_600 + secs).unwrap().to_string(),
        }))
        .unwrap()
    }

    #[test]
    fn quantile_inverts_cdf() {
        for p in [0.01, 0.2, 0.5, 0.8, 0.99] {
            let z = normal_quantile(p);
            assert!((normal_cdf(z) - p).abs() < 1e-6, "{p}");
        }
        let e = Estimate {
            median: 60.0,
            sigma: 0.2,
        };
        assert!((e.quantile(0.5) - 60.0).abs() < 1e-6);
        assert!((e.cdf(e.quantile(0.9)) - 0.9).abs() < 1e-6);
    }

    #[test]
    fn learns_the_type_duration_and_tightens() {
        let mut l = Learner::default();
        for i in 0..10 {
            assert!(l.learn(&action(i, "power_cycle", 60), 1.0));
        }
        // The same action again teaches nothing.
        assert!(!l.learn(&action(3, "power_cycle", 60), 1.0));
        let e = estimate(
            ActionType::PowerCycle,
            l.snapshot().get(&ActionType::PowerCycle),
        );
        assert!((e.median - 60.5).abs() < 1e-9, "{e:?}");
        // A prior of 10 s still widens it a little, less with every observation.
        assert!(e.sigma < 0.1, "{e:?}");
        // In-progress and unknown types are ignored.
        let mut a = action(99, "power_cycle", 5);
        a.status = ActionStatus::InProgress;
        assert!(!l.learn(&a, 1.0));
        assert!(!l.learn(&action(100, "something_new", 5), 1.0));
    }

    #[test]
    fn a_time_scaled_observation_learns_the_same_duration() {
        let mut real = Learner::default();
        let mut scaled = Learner::default();
        let mut a = action(1, "reboot", 8);
        real.learn(&a, 1.0);
        // At scale 0.1 the simulator's timestamps have 0.1 s resolution: 8 s become 0.8 s.
        a.completed_at = a.started_at.map(|s| {
            s.checked_add(jiff::SignedDuration::from_millis(800))
                .unwrap()
        });
        scaled.learn(&a, 0.1);
        let r = real.snapshot()[&ActionType::Reboot].mean.exp();
        let s = scaled.snapshot()[&ActionType::Reboot].mean.exp();
        assert!((r - 8.5).abs() < 1e-9 && (s - 8.5).abs() < 1e-9, "{r} {s}");
    }

    #[test]
    fn first_poll_near_the_expected_completion_then_denser_than_a_fixed_clock() {
        let est = Estimate {
            median: 60.0,
            sigma: 0.05,
        };
        let lone = ladder(1, 1.0);
        let first = next_poll(&est, 0.0, lone, 1.0, 1.0);
        // The median, or earlier when the 5 % quantile lies more than one promptness gap before it.
        assert!((first - (est.quantile(0.05) + 2.5)).abs() < 0.01, "{first}");
        assert!(first < 60.0, "{first}");
        // Not done at the median: the next poll after 30 % more of the mass, a few seconds later.
        let second = next_poll(&est, 60.0, lone, 1.0, 1.0);
        assert!(second > 1.0 && second < 4.0, "{second}");
        // A long, spread-out action: within its likely window never more than the gap apart.
        let long = Estimate {
            median: 180.0,
            sigma: 0.25,
        };
        assert!((next_poll(&long, 150.0, lone, 1.0, 1.0) - 2.5).abs() < 1e-9);
        // Far past the learned range: geometric backoff.
        let late = next_poll(&est, 200.0, lone, 1.0, 1.0);
        assert!((late - 50.0).abs() < 1e-9, "{late}");
        // Never closer than the minimum gap.
        assert!(next_poll(&est, 59.99, lone, 1.0, 1.0) >= 1.0);
    }

    #[test]
    fn shared_polls_are_denser_and_a_tight_budget_stretches_them() {
        let est = Estimate {
            median: 8.0,
            sigma: 0.15,
        };
        let lone = next_poll(&est, 0.0, ladder(1, 1.0), 1.0, 1.0);
        let shared = next_poll(&est, 0.0, ladder(20, 1.0), 1.0, 1.0);
        assert!(shared < lone, "{shared} {lone}");
        let tight = next_poll(&est, 0.0, ladder(20, 0.3), 1.0, 4.0);
        assert!(tight >= 4.0 * lone - 1e-9, "{tight} {lone}");
    }

    #[test]
    fn scale_moves_every_poll_proportionally() {
        let p = Policy::prior_only();
        for elapsed in [0.0, 5.0, 9.0, 30.0, 300.0] {
            let real = p.interval(
                ActionType::Reboot,
                Duration::from_secs_f64(elapsed),
                1.0,
                1.0,
            );
            let fast = p.interval(
                ActionType::Reboot,
                Duration::from_secs_f64(elapsed * 0.1),
                0.1,
                1.0,
            );
            assert!(
                (real.as_secs_f64() * 0.1 - fast.as_secs_f64()).abs() < 1e-6,
                "{elapsed}: {real:?} vs {fast:?}"
            );
        }
    }

    #[test]
    fn max_age_lets_nearby_polls_share_a_list() {
        let ms = Duration::from_millis;
        assert_eq!(max_age(Duration::from_secs(1), 1.0), ms(340));
        assert_eq!(max_age(Duration::from_secs(30), 1.0), ms(450));
        assert_eq!(max_age(Duration::from_secs(30), 0.1), ms(45));
    }

    #[test]
    fn polls_due_in_the_same_grid_step_land_together() {
        // Two actions due 7.2 s and 7.6 s after 100.3 poll together at 108.0.
        assert!((align(7.2, 100.3, 1.0) - 7.7).abs() < 1e-9);
        assert!((align(7.6, 100.3, 1.0) - 7.7).abs() < 1e-9);
        // Exactly on a grid point stays there; scaled grids are scaled.
        assert!(align(0.0, 100.0, 1.0).abs() < 1e-9);
        assert!((align(0.72, 10.03, 0.1) - 0.77).abs() < 1e-9);
    }

    #[test]
    fn budget_left_is_the_tighter_window() {
        assert_eq!(budget_left(250, 250, 5000, 5000), 1.0);
        assert_eq!(budget_left(125, 250, 5000, 5000), 0.5);
        assert_eq!(budget_left(250, 250, 500, 5000), 0.1);
        assert_eq!(budget_left(0, 0, 0, 0), 1.0);
    }
}
