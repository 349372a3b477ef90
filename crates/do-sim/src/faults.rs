//! Fault injection: server errors, latency, 429 bursts, errored actions and
//! responses dropped after the POST was applied. Deterministic with a seed.

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
    /// RNG seed; `None` = random.
    pub seed: Option<u64>,
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
}
