//! Simulator configuration: tokens, seed data, action durations, rate limits.

use std::collections::HashMap;
use std::time::Duration;

use super::faults::Faults;

/// The token the simulator accepts by default (full access). Shaped like a real
/// personal access token (`dop_v1_` + 64 hex characters).
pub const DEFAULT_SIM_TOKEN: &str =
    "dop_v1_sandbox0000000000000000000000000000000000000000000000000000";

/// One accepted bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub token: String,
    /// Custom scopes such as `droplet:read`; `None` means full access.
    /// `resource:*` and `*` are accepted as wildcards.
    pub scopes: Option<Vec<String>>,
}

impl TokenSpec {
    /// A full-access token.
    pub fn full(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            scopes: None,
        }
    }

    /// A token limited to `scopes`.
    pub fn scoped(token: impl Into<String>, scopes: &[&str]) -> Self {
        Self {
            token: token.into(),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        }
    }
}

/// How long each action type stays `in-progress` before it completes (or errors).
///
/// The effective duration is `per_type[type]` (or `default` for types not
/// listed) multiplied by `scale`. Defaults (before scale):
///
/// | types | duration |
/// |---|---|
/// | power_off, power_on, shutdown | 3 s |
/// | reboot, power_cycle | 5 s |
/// | rename, enable_ipv6, disable_backups, change_kernel, password_reset, enable_backups, change_backup_policy | 2 s |
/// | resize | 20 s |
/// | rebuild, restore | 30 s |
/// | snapshot | 60 s |
/// | anything else | 5 s |
#[derive(Debug, Clone, PartialEq)]
pub struct ActionDurations {
    pub per_type: HashMap<String, Duration>,
    pub default: Duration,
    /// Global multiplier, e.g. `0.01` in tests to make a 3 s power action take 30 ms.
    pub scale: f64,
}

impl ActionDurations {
    /// Every action type takes `d` (scale 1.0).
    pub fn uniform(d: Duration) -> Self {
        Self {
            per_type: HashMap::new(),
            default: d,
            scale: 1.0,
        }
    }

    /// The same durations multiplied by `scale`.
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// Overrides the duration of one type.
    pub fn with(mut self, type_: &str, d: Duration) -> Self {
        self.per_type.insert(type_.to_string(), d);
        self
    }

    /// The effective (scaled) duration of `type_`.
    pub fn duration_for(&self, type_: &str) -> Duration {
        let base = self.per_type.get(type_).copied().unwrap_or(self.default);
        let scale = if self.scale.is_finite() && self.scale >= 0.0 {
            self.scale
        } else {
            1.0
        };
        base.mul_f64(scale)
    }
}

impl Default for ActionDurations {
    fn default() -> Self {
        let s = Duration::from_secs;
        let per_type = [
            ("power_off", s(3)),
            ("power_on", s(3)),
            ("shutdown", s(3)),
            ("reboot", s(5)),
            ("power_cycle", s(5)),
            ("rename", s(2)),
            ("enable_ipv6", s(2)),
            ("disable_backups", s(2)),
            ("change_kernel", s(2)),
            ("password_reset", s(2)),
            ("enable_backups", s(2)),
            ("change_backup_policy", s(2)),
            ("resize", s(20)),
            ("rebuild", s(30)),
            ("restore", s(30)),
            ("snapshot", s(60)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            per_type,
            default: s(5),
            scale: 1.0,
        }
    }
}

/// Everything [`super::Simulator::start`] needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Accepted tokens. Default: one full-access [`DEFAULT_SIM_TOKEN`].
    pub tokens: Vec<TokenSpec>,
    /// Seed the documented example droplets (101001..=101012). Default true.
    pub seed_examples: bool,
    /// Number of generated droplets (ids 200001..). Default 0.
    pub generated_droplets: u32,
    pub action_durations: ActionDurations,
    /// Sliding one-minute limit per token; `None` = off. Default 250.
    pub rate_limit_per_minute: Option<u32>,
    /// Sliding one-hour limit per token; `None` = off. Default 5000.
    pub rate_limit_per_hour: Option<u32>,
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tokens: vec![TokenSpec::full(DEFAULT_SIM_TOKEN)],
            seed_examples: true,
            generated_droplets: 0,
            action_durations: ActionDurations::default(),
            rate_limit_per_minute: Some(250),
            rate_limit_per_hour: Some(5000),
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// Default config with action durations scaled by `scale` and rate limits off:
    /// convenient for fast tests.
    pub fn fast(scale: f64) -> Self {
        Self {
            action_durations: ActionDurations::default().scaled(scale),
            rate_limit_per_minute: None,
            rate_limit_per_hour: None,
            ..Self::default()
        }
    }
}
