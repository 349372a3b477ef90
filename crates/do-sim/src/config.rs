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

/// How long one action type stays `in-progress`: a log-normal draw around `median` (plus `per_disk_gb` for every
/// GB of the droplet's disk), with spread `sigma` (the standard deviation of the log; 0 = always the median),
/// clamped to `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationDist {
    pub median: Duration,
    pub per_disk_gb: Duration,
    pub sigma: f64,
    pub min: Duration,
    pub max: Duration,
}

impl DurationDist {
    /// Always exactly `d`.
    pub const fn fixed(d: Duration) -> Self {
        Self {
            median: d,
            per_disk_gb: Duration::ZERO,
            sigma: 0.0,
            min: d,
            max: d,
        }
    }

    const fn secs(median: u64, per_gb_ms: u64, sigma: f64, min: u64, max: u64) -> Self {
        Self {
            median: Duration::from_secs(median),
            per_disk_gb: Duration::from_millis(per_gb_ms),
            sigma,
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
        }
    }

    /// The duration for a droplet with `disk_gb` of disk at standard normal deviate `z`.
    pub fn at(&self, disk_gb: i64, z: f64) -> Duration {
        let median = self.median + self.per_disk_gb.mul_f64(disk_gb.max(0) as f64);
        let min = self.min + self.per_disk_gb.mul_f64(disk_gb.max(0) as f64 * 0.5);
        let max = self.max + self.per_disk_gb.mul_f64(disk_gb.max(0) as f64 * 2.0);
        let sigma = if self.sigma.is_finite() {
            self.sigma.max(0.0)
        } else {
            0.0
        };
        let factor = (sigma * z.clamp(-6.0, 6.0)).exp();
        median.mul_f64(factor).clamp(min.min(max), max.max(min))
    }
}

/// How long each action type stays `in-progress` before it completes (or errors): the simulator's timing model.
///
/// Each action's duration is drawn from its type's [`DurationDist`] (or `default`), deterministically from
/// (`seed`, droplet, how many actions that droplet had before, type): the same seed gives every droplet the
/// same sequence of durations, so two runs (the operator's and a reference poller's) face identical actions.
/// The result is multiplied by `scale`. Defaults (before scale; log-normal, median ×/÷ e^sigma covers ~68 %):
///
/// | types | median | + per disk GB | sigma | range |
/// |---|---|---|---|---|
/// | power_on | 10 s | | 0.20 | 5–30 s |
/// | power_off | 8 s | | 0.20 | 4–30 s |
/// | shutdown | 15 s | | 0.25 | 6–60 s |
/// | reboot | 8 s | | 0.15 | 5–30 s |
/// | power_cycle | 12 s | | 0.20 | 5–30 s |
/// | rename, enable_ipv6, disable_backups, change_kernel, password_reset, enable_backups, change_backup_policy | 3 s | | 0.30 | 1–15 s |
/// | resize | 90 s | 1.5 s | 0.20 | 60–600 s |
/// | rebuild, restore | 60 s | 1 s | 0.20 | 30–600 s |
/// | snapshot | 60 s | 5 s | 0.25 | 30–1800 s |
/// | anything else | 5 s | | 0.30 | 1–60 s |
///
/// (The disk term also widens the range: min + ½ × per-GB × disk, max + 2 × per-GB × disk. A 25 GB droplet's
/// snapshot has a median of 185 s.)
///
/// Timestamps (`started_at`, `completed_at`) are whole seconds, as DigitalOcean's are; a scaled model keeps the
/// same resolution in scaled time (`scale` × 1 s), so a time-scaled run sees what a real-time run sees.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionDurations {
    pub per_type: HashMap<String, DurationDist>,
    pub default: DurationDist,
    /// Seed of the per-action draws.
    pub seed: u64,
    /// Global multiplier, e.g. `0.01` in tests to make a 10 s power action take 100 ms.
    pub scale: f64,
}

impl ActionDurations {
    /// Every action type takes exactly `d` (scale 1.0): `--action-seconds`.
    pub fn uniform(d: Duration) -> Self {
        Self {
            per_type: HashMap::new(),
            default: DurationDist::fixed(d),
            seed: 0,
            scale: 1.0,
        }
    }

    /// The same durations multiplied by `scale`.
    pub fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// The same model with another seed.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Every action of one type takes exactly `d` (before scale).
    pub fn with(mut self, type_: &str, d: Duration) -> Self {
        self.per_type
            .insert(type_.to_string(), DurationDist::fixed(d));
        self
    }

    /// Overrides the distribution of one type.
    pub fn with_dist(mut self, type_: &str, d: DurationDist) -> Self {
        self.per_type.insert(type_.to_string(), d);
        self
    }

    fn effective_scale(&self) -> f64 {
        if self.scale.is_finite() && self.scale >= 0.0 {
            self.scale
        } else {
            1.0
        }
    }

    /// The (scaled) median duration of `type_` on a droplet with `disk_gb` of disk.
    pub fn duration_for(&self, type_: &str) -> Duration {
        self.dist(type_).at(25, 0.0).mul_f64(self.effective_scale())
    }

    /// The distribution of `type_` (before scale).
    pub fn dist(&self, type_: &str) -> &DurationDist {
        self.per_type.get(type_).unwrap_or(&self.default)
    }

    /// The (scaled) duration of the `nth` action (0-based) on `droplet`, which has `disk_gb` of disk.
    pub fn draw(&self, type_: &str, droplet: i64, nth: u64, disk_gb: i64) -> Duration {
        let key = splitmix(
            self.seed
                ^ splitmix(droplet as u64)
                ^ splitmix(nth.wrapping_mul(0x9e37_79b9))
                ^ type_.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                }),
        );
        self.dist(type_)
            .at(disk_gb, normal(key))
            .mul_f64(self.effective_scale())
    }

    /// Resolution of `started_at`/`completed_at`: one second in scaled time (at least a millisecond).
    pub fn timestamp_resolution(&self) -> Duration {
        Duration::from_secs(1)
            .mul_f64(self.effective_scale().min(1.0))
            .max(Duration::from_millis(1))
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A standard normal deviate from a hash (Box-Muller on two 32-bit halves).
fn normal(h: u64) -> f64 {
    let u1 = ((h >> 32) as f64 + 1.0) / (u32::MAX as f64 + 2.0);
    let u2 = (h & 0xffff_ffff) as f64 / (u32::MAX as f64 + 1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Default for ActionDurations {
    fn default() -> Self {
        let d = DurationDist::secs;
        let quick = d(3, 0, 0.30, 1, 15);
        let per_type = [
            ("power_on", d(10, 0, 0.20, 5, 30)),
            ("power_off", d(8, 0, 0.20, 4, 30)),
            ("shutdown", d(15, 0, 0.25, 6, 60)),
            ("reboot", d(8, 0, 0.15, 5, 30)),
            ("power_cycle", d(12, 0, 0.20, 5, 30)),
            ("rename", quick),
            ("enable_ipv6", quick),
            ("disable_backups", quick),
            ("change_kernel", quick),
            ("password_reset", quick),
            ("enable_backups", quick),
            ("change_backup_policy", quick),
            ("resize", d(90, 1500, 0.20, 60, 600)),
            ("rebuild", d(60, 1000, 0.20, 30, 600)),
            ("restore", d(60, 1000, 0.20, 30, 600)),
            ("snapshot", d(60, 5000, 0.25, 30, 1800)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            per_type,
            default: d(5, 0, 0.30, 1, 60),
            seed: 1,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_seeded_per_droplet_and_within_the_documented_range() {
        let m = ActionDurations::default();
        // The same (seed, droplet, nth, type) always gives the same duration; another droplet or seed another.
        assert_eq!(
            m.draw("reboot", 200_001, 0, 25),
            m.draw("reboot", 200_001, 0, 25)
        );
        let other_seed = m.clone().seeded(2);
        let a: Vec<Duration> = (0..50).map(|d| m.draw("reboot", d, 0, 25)).collect();
        let b: Vec<Duration> = (0..50)
            .map(|d| other_seed.draw("reboot", d, 0, 25))
            .collect();
        assert_ne!(a, b);
        assert!(a.windows(2).any(|w| w[0] != w[1]), "durations vary");
        for d in &a {
            assert!(
                *d >= Duration::from_secs(5) && *d <= Duration::from_secs(30),
                "{d:?}"
            );
        }
        // About half below the median.
        let below = a.iter().filter(|d| **d < Duration::from_secs(8)).count();
        assert!((15..=35).contains(&below), "{below} of 50 below the median");
    }

    #[test]
    fn snapshots_grow_with_disk_and_scaling_scales_the_clock() {
        let m = ActionDurations::default();
        let small = m.draw("snapshot", 7, 0, 10);
        let big = m.draw("snapshot", 7, 0, 160);
        assert!(big > small * 3, "{small:?} {big:?}");
        let fast = m.clone().scaled(0.1);
        let d = m.draw("resize", 7, 0, 25).as_secs_f64();
        let f = fast.draw("resize", 7, 0, 25).as_secs_f64();
        assert!((d * 0.1 - f).abs() < 1e-6, "{d} {f}");
        assert_eq!(m.timestamp_resolution(), Duration::from_secs(1));
        assert_eq!(fast.timestamp_resolution(), Duration::from_millis(100));
        // --action-seconds: exactly that, for every type.
        let fixed = ActionDurations::uniform(Duration::from_secs(60));
        assert_eq!(fixed.draw("snapshot", 1, 3, 160), Duration::from_secs(60));
    }
}
