//! Fault injection. Deterministic with a seed.
//!
//! Besides the plain faults (server errors, latency, 429 bursts, errored
//! actions, responses dropped after the POST was applied), the simulator can
//! break the properties an exactly-once client is tempted to rely on:
//!
//! - **late commit**: a POST is applied only some seconds after it arrived
//!   (possibly after the client timed out); the response, if the client still
//!   waits, comes after the apply, or the connection is dropped;
//! - **lagging lists**: `GET /v2/droplets/{id}/actions` and `GET /v2/actions`
//!   omit actions younger than `list_lag` (direct GETs by ID see them at once);
//! - **5xx after apply**: the action exists, the answer is 500/502/503/504;
//! - **clock skew**: `started_at`/`completed_at` are reported `clock_skew_secs`
//!   ahead of (positive) or behind (negative) the real clock;
//! - **foreign actions**: another client starts actions of the type recently
//!   posted on a droplet, at random moments (and locks the droplet);
//! - **unknown status values**: a completed action reports e.g. `"done"`;
//! - **stuck actions**: an action stays `in-progress` forever.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Faults to inject. `Default` injects nothing. Also the JSON body of
/// `PUT /_sim/faults` (every field optional; `latency` is written `latency_ms`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction (0..=1) of authenticated API requests answered with
    /// 500 `server_error` and no effect.
    pub server_error_rate: f64,
    /// Added to every API request before it is processed (JSON: `latency_ms`,
    /// also accepted as `latency`, in milliseconds).
    #[serde(rename = "latency_ms", alias = "latency", with = "millis")]
    pub latency: Duration,
    /// The next N authenticated API requests get 429 with `retry-after`.
    pub burst_429: u32,
    /// `retry-after` (seconds) of the burst 429s.
    pub burst_retry_after_secs: u64,
    /// Fraction (0..=1) of created actions that end `errored` (no effect).
    pub errored_rate: f64,
    /// Actions on these droplets always end `errored`.
    pub errored_droplets: Vec<i64>,
    /// Actions of these types always end `errored`.
    pub errored_types: Vec<String>,
    /// Fraction (0..=1) of applied action POSTs whose connection is closed
    /// instead of sending the response.
    pub drop_after_apply_rate: f64,
    /// The next N applied action POSTs have their connection closed.
    pub drop_after_apply_next: u32,
    /// Fraction (0..=1) of accepted action POSTs that are applied late: after
    /// a delay drawn uniformly from `late_commit_delay_min..=late_commit_delay_max`.
    /// Until then nothing is visible; the response (if the client still waits)
    /// follows the apply, or the connection is dropped (half of the cases).
    pub late_commit_rate: f64,
    /// Shortest late-commit delay (JSON: `late_commit_delay_min_ms`).
    #[serde(rename = "late_commit_delay_min_ms", with = "millis")]
    pub late_commit_delay_min: Duration,
    /// Longest late-commit delay (JSON: `late_commit_delay_max_ms`).
    #[serde(rename = "late_commit_delay_max_ms", with = "millis")]
    pub late_commit_delay_max: Duration,
    /// Action lists omit actions created less than this long ago
    /// (JSON: `list_lag_ms`).
    #[serde(rename = "list_lag_ms", with = "millis")]
    pub list_lag: Duration,
    /// Fraction (0..=1) of applied action POSTs answered with a 500, 502, 503
    /// or 504 although the action was created.
    pub error_after_apply_rate: f64,
    /// DigitalOcean's clock runs this many seconds ahead (positive) or behind
    /// (negative): reported `started_at`/`completed_at` are shifted by it.
    pub clock_skew_secs: i64,
    /// Expected foreign actions per droplet per minute, on droplets that were
    /// sent an action: another client starts an action of the type last posted
    /// there (with the same parameters) whenever the droplet is idle.
    pub foreign_action_rate: f64,
    /// Fraction (0..=1) of actions that, once finished, report
    /// `unknown_status` instead of `completed`.
    pub unknown_status_rate: f64,
    /// The unknown status value (default `"done"`).
    pub unknown_status: String,
    /// Fraction (0..=1) of actions that stay `in-progress` forever (their
    /// droplet stays locked).
    pub stuck_rate: f64,
    /// RNG seed; `None` = random.
    pub seed: Option<u64>,
}

impl Faults {
    /// Every exactly-once fault at once, at rates that make each of them happen
    /// many times in a test of about a hundred actions; `request_timeout` is
    /// the client's, so that late commits land both before and after it.
    pub fn hostile(request_timeout: Duration) -> Self {
        Faults {
            server_error_rate: 0.03,
            drop_after_apply_rate: 0.1,
            late_commit_rate: 0.2,
            late_commit_delay_min: request_timeout / 2,
            late_commit_delay_max: request_timeout * 3,
            list_lag: request_timeout,
            error_after_apply_rate: 0.1,
            clock_skew_secs: 90,
            foreign_action_rate: 0.5,
            unknown_status_rate: 0.05,
            ..Faults::default()
        }
    }
}

/// What becomes of a new action, decided by the faults when it is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fate {
    /// Ends `errored` (no effect).
    pub errors: bool,
    /// Never finishes.
    pub stuck: bool,
    /// Reported instead of `completed`/`errored` once finished.
    pub unknown_status: Option<String>,
    /// Offset of reported times, seconds.
    pub skew_secs: i64,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Live fault state: the configured faults, the RNG and the burst counters.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub faults: Faults,
    rng: StdRng,
    burst_left: u32,
    drop_next_left: u32,
}

impl FaultState {
    pub fn new(faults: Faults) -> Self {
        let rng = match faults.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            burst_left: faults.burst_429,
            drop_next_left: faults.drop_after_apply_next,
            faults,
            rng,
        }
    }

    fn roll(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random::<f64>() < rate
    }

    /// `Some(retry_after_secs)` when this request falls in a 429 burst.
    pub fn take_burst_429(&mut self) -> Option<u64> {
        if self.burst_left > 0 {
            self.burst_left -= 1;
            Some(self.faults.burst_retry_after_secs)
        } else {
            None
        }
    }

    pub fn server_error(&mut self) -> bool {
        let rate = self.faults.server_error_rate;
        self.roll(rate)
    }

    /// Whether a new action on `droplet_id` of `type_` should end `errored`.
    pub fn action_errors(&mut self, droplet_id: i64, type_: &str) -> bool {
        if self.faults.errored_droplets.contains(&droplet_id)
            || self.faults.errored_types.iter().any(|t| t == type_)
        {
            return true;
        }
        let rate = self.faults.errored_rate;
        self.roll(rate)
    }

    /// What becomes of a new action on `droplet_id` of `type_`.
    pub fn fate(&mut self, droplet_id: i64, type_: &str) -> Fate {
        let errors = self.action_errors(droplet_id, type_);
        let stuck = {
            let rate = self.faults.stuck_rate;
            self.roll(rate)
        };
        let unknown = {
            let rate = self.faults.unknown_status_rate;
            self.roll(rate)
        };
        Fate {
            errors,
            stuck,
            unknown_status: unknown.then(|| {
                if self.faults.unknown_status.is_empty() {
                    "done".to_string()
                } else {
                    self.faults.unknown_status.clone()
                }
            }),
            skew_secs: self.faults.clock_skew_secs,
        }
    }

    /// `Some(delay)` when an accepted POST is to be applied late.
    pub fn late_commit(&mut self) -> Option<Duration> {
        let rate = self.faults.late_commit_rate;
        if !self.roll(rate) {
            return None;
        }
        let (lo, hi) = (
            self.faults.late_commit_delay_min,
            self.faults
                .late_commit_delay_max
                .max(self.faults.late_commit_delay_min),
        );
        let span = u64::try_from((hi - lo).as_millis()).unwrap_or(u64::MAX);
        Some(lo + Duration::from_millis(self.rng.random_range(0..=span)))
    }

    /// Whether a late-committed POST whose client still waits gets its
    /// connection dropped instead of the response.
    pub fn late_commit_drops(&mut self) -> bool {
        self.roll(0.5)
    }

    /// `Some(status)` when an applied POST is answered with a 5xx.
    pub fn error_after_apply(&mut self) -> Option<u16> {
        let rate = self.faults.error_after_apply_rate;
        self.roll(rate)
            .then(|| [500, 502, 503, 504][self.rng.random_range(0..4)])
    }

    /// Whether a foreign client starts an action on an idle droplet within
    /// the next `elapsed`.
    pub fn foreign_action(&mut self, elapsed: Duration) -> bool {
        let rate = self.faults.foreign_action_rate * elapsed.as_secs_f64() / 60.0;
        self.roll(rate.min(1.0))
    }

    /// Whether the response to an applied POST should be dropped.
    pub fn drop_after_apply(&mut self) -> bool {
        if self.drop_next_left > 0 {
            self.drop_next_left -= 1;
            return true;
        }
        let rate = self.faults.drop_after_apply_rate;
        self.roll(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_milliseconds_and_defaults() {
        let f: Faults =
            serde_json::from_str(r#"{"latency_ms": 250, "burst_429": 2}"#).expect("json");
        assert_eq!(f.latency, Duration::from_millis(250));
        assert_eq!(f.burst_429, 2);
        assert_eq!(f.server_error_rate, 0.0);
        let f: Faults = serde_json::from_str(r#"{"latency": 5}"#).expect("alias");
        assert_eq!(f.latency, Duration::from_millis(5));
        assert_eq!(
            serde_json::from_str::<Faults>("{}").expect("empty"),
            Faults::default()
        );
        let back: Faults =
            serde_json::from_value(serde_json::to_value(&f).expect("ser")).expect("de");
        assert_eq!(back, f);
    }

    #[test]
    fn seeded_faults_are_reproducible_and_counters_run_out() {
        let faults = Faults {
            server_error_rate: 0.3,
            drop_after_apply_next: 2,
            seed: Some(9),
            ..Faults::default()
        };
        let run = || {
            let mut s = FaultState::new(faults.clone());
            (0..50).map(|_| s.server_error()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let mut s = FaultState::new(faults);
        assert!(s.drop_after_apply() && s.drop_after_apply() && !s.drop_after_apply());
    }

    #[test]
    fn late_commit_delays_stay_in_their_range_and_fates_follow_rates() {
        let mut s = FaultState::new(Faults {
            late_commit_rate: 1.0,
            late_commit_delay_min: Duration::from_millis(100),
            late_commit_delay_max: Duration::from_millis(300),
            unknown_status_rate: 1.0,
            clock_skew_secs: -75,
            seed: Some(3),
            ..Faults::default()
        });
        for _ in 0..100 {
            let d = s.late_commit().expect("always late");
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(300));
        }
        let fate = s.fate(1, "reboot");
        assert_eq!(fate.unknown_status.as_deref(), Some("done"));
        assert_eq!(fate.skew_secs, -75);
        assert!(!fate.stuck && !fate.errors);
        let mut none = FaultState::new(Faults::default());
        assert_eq!(none.late_commit(), None);
        assert_eq!(none.error_after_apply(), None);
        assert!(!none.foreign_action(Duration::from_secs(3600)));
        let json = serde_json::to_value(Faults::hostile(Duration::from_secs(2))).expect("ser");
        assert_eq!(json["list_lag_ms"], 2000);
        assert_eq!(json["late_commit_delay_max_ms"], 6000);
    }
}
