//! Cron expressions and time zones: parsing with `croner`, time zones from jiff's bundled tz database, and the
//! slot sequence with CronJob's daylight-saving behaviour.
//!
//! CronJob (robfig/cron) fires at every real instant whose wall-clock time in the zone matches the expression.
//! So on a spring-forward day a wall-clock time inside the gap does not happen at all (skipped that day), and on
//! a fall-back day a wall-clock time inside the repeated hour happens twice (fires twice). `croner` follows a
//! different convention (run gap times right after the gap, run repeated fixed times once), so its answer is
//! used as a candidate and corrected: candidates whose wall clock does not match are dropped, and the minutes of
//! each repeated hour are checked one by one.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Why a schedule cannot be used, naming the field and a valid example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// spec.schedule does not parse.
    #[error(
        "spec.schedule {expr:?} is not a valid cron expression ({detail}): use 5 fields (minute hour day-of-month month day-of-week), for example \"0 2 * * *\", or @hourly, @daily, @weekly, @monthly, @yearly"
    )]
    InvalidSchedule { expr: String, detail: String },
    /// spec.timeZone is not in the tz database.
    #[error(
        "spec.timeZone {zone:?} is not a known IANA time zone: use a name such as Europe/Berlin, America/New_York or UTC"
    )]
    InvalidTimeZone { zone: String },
}

impl SpecError {
    /// Stable reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::InvalidSchedule { .. } => "InvalidSchedule",
            SpecError::InvalidTimeZone { .. } => "InvalidTimeZone",
        }
    }
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: TimeZone,
}

/// Nicknames CronJob accepts (robfig/cron's standard parser), mapped to 5 fields.
fn nickname(expr: &str) -> Option<&'static str> {
    Some(match expr {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

impl CronSchedule {
    /// Parses spec.schedule and spec.timeZone (default UTC).
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<CronSchedule, SpecError> {
        let invalid = |detail: String| SpecError::InvalidSchedule {
            expr: expr.to_string(),
            detail,
        };
        let trimmed = expr.trim();
        let five = match nickname(trimmed) {
            Some(n) => n.to_string(),
            None if trimmed.starts_with('@') => {
                return Err(invalid("unknown nickname".into()));
            }
            None => {
                let n = trimmed.split_whitespace().count();
                if n != 5 {
                    return Err(invalid(format!("{n} fields, expected 5")));
                }
                trimmed.to_string()
            }
        };
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(&five).map_err(|e| invalid(e.to_string()))?;
        let tz = match time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| SpecError::InvalidTimeZone {
                zone: name.to_string(),
            })?,
        };
        let schedule = CronSchedule { cron, tz };
        // An expression that never matches (for example 30 February) is as useless as a malformed one.
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(invalid("it never matches".into()));
        }
        Ok(schedule)
    }

    /// Whether a slot starts at `t` (a whole minute whose wall clock matches).
    pub fn matches(&self, t: Timestamp) -> bool {
        t.as_second().rem_euclid(60) == 0
            && t.subsec_nanosecond() == 0
            && self
                .cron
                .is_time_matching(&t.to_zoned(self.tz.clone()))
                .unwrap_or(false)
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let mut cur = t;
        // Each round either returns or moves past a candidate croner shifted out of a DST gap; a handful of
        // rounds is plenty (at most one gap per transition).
        for _ in 0..16 {
            let candidate = self
                .cron
                .find_next_occurrence(&cur.to_zoned(self.tz.clone()), false)
                .ok()?
                .timestamp();
            if let Some(repeated) = self.first_in_repeated_hours(cur, candidate) {
                return Some(repeated);
            }
            if self.matches(candidate) {
                return Some(candidate);
            }
            cur = candidate;
        }
        None
    }

    /// The first matching minute in (after, before) that lies in the repeated part of a fall-back transition.
    fn first_in_repeated_hours(&self, after: Timestamp, before: Timestamp) -> Option<Timestamp> {
        for transition in self.tz.following(after) {
            let at = transition.timestamp();
            if at >= before {
                break;
            }
            let old = self.tz.to_offset(at - SignedDuration::from_secs(1));
            let repeated = old.seconds() - transition.offset().seconds();
            if repeated <= 0 {
                continue;
            }
            let end = (at + SignedDuration::from_secs(i64::from(repeated))).min(before);
            let start = ceil_minute(at.max(after + SignedDuration::from_secs(1)));
            let mut m = start;
            while m < end {
                if self.matches(m) {
                    return Some(m);
                }
                m += SignedDuration::from_secs(60);
            }
        }
        None
    }
}

fn ceil_minute(t: Timestamp) -> Timestamp {
    let s = t.as_second();
    let rem = s.rem_euclid(60);
    let whole = if rem == 0 && t.subsec_nanosecond() == 0 {
        s
    } else {
        s - rem + 60
    };
    Timestamp::from_second(whole).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn slots(s: &CronSchedule, from: &str, n: usize) -> Vec<String> {
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn five_fields_and_nicknames() {
        let s = CronSchedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(
            slots(&s, "2026-01-01T03:00:00Z", 2),
            ["2026-01-02T02:00:00Z", "2026-01-03T02:00:00Z"]
        );
        let w = CronSchedule::parse("@weekly", None).unwrap();
        // 2026-01-04 is a Sunday.
        assert_eq!(
            slots(&w, "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00Z"]
        );
        let h = CronSchedule::parse("@hourly", None).unwrap();
        assert_eq!(
            slots(&h, "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T01:00:00Z"]
        );
        let m = CronSchedule::parse("@monthly", None).unwrap();
        assert_eq!(
            slots(&m, "2026-01-15T00:00:00Z", 1),
            ["2026-02-01T00:00:00Z"]
        );
        let names = CronSchedule::parse("30 4 * * sun", None).unwrap();
        assert_eq!(
            slots(&names, "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T04:30:00Z"]
        );
        let every = CronSchedule::parse("* * * * *", None).unwrap();
        assert_eq!(
            slots(&every, "2026-01-01T00:00:30Z", 2),
            ["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]
        );
    }

    #[test]
    fn invalid_expressions_and_zones_name_the_field() {
        for bad in [
            "0 2 * *",
            "0 0 2 * * *",
            "61 * * * *",
            "@every 1m",
            "@reboot",
            "x y z a b",
            "0 0 30 2 *",
        ] {
            let e = CronSchedule::parse(bad, None).unwrap_err();
            assert_eq!(e.reason(), "InvalidSchedule", "{bad}");
            assert!(e.to_string().contains("spec.schedule"), "{e}");
            assert!(e.to_string().contains("\"0 2 * * *\""), "{e}");
        }
        let e = CronSchedule::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(e.reason(), "InvalidTimeZone");
        assert!(e.to_string().contains("spec.timeZone"));
        assert!(e.to_string().contains("Europe/Berlin"));
    }

    #[test]
    fn time_zone_shifts_the_slot() {
        let s = CronSchedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        // Winter: UTC+1.
        assert_eq!(
            slots(&s, "2026-01-10T00:00:00Z", 1),
            ["2026-01-10T01:00:00Z"]
        );
        // Summer: UTC+2.
        assert_eq!(
            slots(&s, "2026-07-09T12:00:00Z", 1),
            ["2026-07-10T00:00:00Z"]
        );
    }

    #[test]
    fn spring_forward_skips_the_missing_wall_clock_time_like_cronjob() {
        // Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
        let s = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            slots(&s, "2026-03-28T12:00:00Z", 2),
            // 28th 02:30 CET was before; next: 30th 02:30 CEST = 00:30Z (the 29th has no 02:30).
            ["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]
        );
        // A slot outside the gap on the same day is unaffected.
        let s = CronSchedule::parse("30 3 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            slots(&s, "2026-03-28T12:00:00Z", 1),
            ["2026-03-29T01:30:00Z"]
        );
        // Hourly: 01:00 CET, then 03:00 CEST (one hour apart in real time).
        let h = CronSchedule::parse("0 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            slots(&h, "2026-03-28T23:30:00Z", 3),
            [
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z"
            ]
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_wall_clock_time_at_each_occurrence_like_cronjob() {
        // Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens at 00:30Z and at 01:30Z.
        let s = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            slots(&s, "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-26T01:30:00Z"
            ]
        );
        // Outside the repeated hour: once.
        let s = CronSchedule::parse("0 4 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            slots(&s, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T03:00:00Z", "2026-10-26T03:00:00Z"]
        );
        // New York, every 15 minutes across the repeated 01:xx hour: real time, no gaps, no duplicates.
        let q = CronSchedule::parse("*/15 * * * *", Some("America/New_York")).unwrap();
        let got = slots(&q, "2026-11-01T04:50:00Z", 10);
        assert_eq!(got.first().unwrap(), "2026-11-01T05:00:00Z");
        assert_eq!(got.last().unwrap(), "2026-11-01T07:15:00Z");
    }
}
