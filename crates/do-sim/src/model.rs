//! The simulator's data model: droplets, actions, images, post records.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::validate::{ActionParams, BackupPolicy};

/// First action id is `ACTION_ID_BASE + 1`.
pub const ACTION_ID_BASE: i64 = 1_800_000_000;
/// Ids of snapshots created by the simulator start after this.
pub const IMAGE_ID_BASE: i64 = 703_000;
/// Ids of droplets added with `add_droplet` (without an explicit id) start after this.
pub const ADDED_DROPLET_ID_BASE: i64 = 300_000;

/// A droplet as the simulator stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimDroplet {
    pub id: i64,
    pub name: String,
    /// `active` or `off`.
    pub status: String,
    pub locked: bool,
    pub size_slug: String,
    pub disk: i64,
    pub memory: i64,
    pub vcpus: i64,
    pub features: Vec<String>,
    pub tags: Vec<String>,
    pub region: String,
    /// Current image id (a distribution image, backup or snapshot).
    pub image_id: i64,
    pub backup_ids: Vec<i64>,
    pub snapshot_ids: Vec<i64>,
    pub kernel_id: Option<i64>,
    pub next_backup_window: Option<BackupWindow>,
    pub backup_policy: Option<BackupPolicy>,
    pub password_resets: u32,
    pub created_at: Timestamp,
}

/// `next_backup_window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupWindow {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Input of [`super::SimHandle::add_droplet`]. Defaults: a new id, `active`,
/// `s-1vcpu-1gb`, `nyc3`, `ubuntu-24-04-x64`, no tags. Backup and snapshot
/// images listed here are created if they do not exist.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDropletSeed {
    pub id: Option<i64>,
    pub name: String,
    pub status: String,
    pub tags: Vec<String>,
    pub size_slug: String,
    pub region: String,
    pub image: String,
    pub features: Vec<String>,
    pub backup_ids: Vec<i64>,
    pub snapshot_ids: Vec<i64>,
    pub kernel_id: Option<i64>,
}

impl Default for SimDropletSeed {
    fn default() -> Self {
        Self {
            id: None,
            name: "droplet".into(),
            status: "active".into(),
            tags: vec![],
            size_slug: "s-1vcpu-1gb".into(),
            region: "nyc3".into(),
            image: "ubuntu-24-04-x64".into(),
            features: vec![],
            backup_ids: vec![],
            snapshot_ids: vec![],
            kernel_id: None,
        }
    }
}

impl SimDropletSeed {
    pub fn named(name: &str, tags: &[&str]) -> Self {
        Self {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionStatus {
    #[serde(rename = "in-progress")]
    InProgress,
    #[serde(rename = "completed")]
    Completed,
    #[serde(rename = "errored")]
    Errored,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Errored => "errored",
        }
    }
}

/// How an action was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum Initiation {
    /// `POST /v2/droplets/{id}/actions`.
    Single,
    /// `POST /v2/droplets/actions?tag_name=`.
    ByTag { tag: String },
    /// [`super::SimHandle::start_external_action`] (e.g. the DO console).
    External,
    /// Started by another API client at a random moment (the
    /// `foreign_action_rate` fault).
    Foreign,
}

/// An action as the simulator stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimAction {
    pub id: i64,
    pub droplet_id: i64,
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ActionStatus,
    pub started_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub region_slug: String,
    pub params: ActionParams,
    pub initiated: Initiation,
    /// Decided at creation by the fault settings.
    pub will_error: bool,
    pub duration_ms: u64,
    /// Never finishes (fault).
    #[serde(default)]
    pub stuck: bool,
    /// Reported instead of `completed`/`errored` once finished (fault).
    #[serde(default)]
    pub unknown_status: Option<String>,
    /// Reported times are shifted by this many seconds (clock-skew fault).
    #[serde(default)]
    pub skew_secs: i64,
    /// When the action was really created (Unix milliseconds); lists lag
    /// behind this.
    #[serde(default)]
    pub created_ms: i64,
    /// When the simulator completes it (exact, unlike the whole-second `completed_at`).
    #[serde(skip)]
    pub due: Option<std::time::Instant>,
}

impl SimAction {
    /// The status as DigitalOcean reports it (with the unknown-status fault).
    pub fn reported_status(&self) -> &str {
        match (&self.unknown_status, self.status) {
            (Some(s), ActionStatus::Completed | ActionStatus::Errored) => s,
            _ => self.status.as_str(),
        }
    }

    /// `started_at` as DigitalOcean reports it (with the clock-skew fault).
    pub fn reported_started_at(&self) -> Timestamp {
        skew(self.started_at, self.skew_secs)
    }

    /// `completed_at` as DigitalOcean reports it (with the clock-skew fault).
    pub fn reported_completed_at(&self) -> Option<Timestamp> {
        self.completed_at.map(|t| skew(t, self.skew_secs))
    }
}

fn skew(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(t)
}

/// A backup or snapshot image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimImage {
    pub id: i64,
    pub name: String,
    /// `snapshot` or `backup`.
    #[serde(rename = "type")]
    pub type_: String,
    pub created_at: Timestamp,
    pub min_disk_size: i64,
    pub size_gigabytes: f64,
    pub resource_id: i64,
    pub regions: Vec<String>,
}

/// One applied action POST (one per droplet for by-tag POSTs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostRecord {
    pub action_id: i64,
    pub droplet_id: i64,
    #[serde(rename = "type")]
    pub type_: String,
    pub time: Timestamp,
    pub initiated: Initiation,
    /// `seq` of the request in the request log.
    pub request_seq: u64,
    /// The connection was closed instead of sending the response (fault).
    pub response_dropped: bool,
}

/// A 422/404 from the state layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    NotFound,
    Unprocessable(String),
}

pub const PENDING_EVENT: &str = "Droplet already has a pending event.";
pub const BLOCKING_EVENTS: &str =
    "there are currently blocking events processing for one or more of the droplets";

/// The next backup window (4 hours) for `policy` after `now`.
pub fn backup_window(policy: &BackupPolicy, now: Timestamp) -> BackupWindow {
    use jiff::civil::Weekday;
    use jiff::tz::TimeZone;
    let hour = i8::try_from(policy.hour.unwrap_or(0)).unwrap_or(0);
    let want = match policy.weekday.as_deref() {
        Some("MON") => Some(Weekday::Monday),
        Some("TUE") => Some(Weekday::Tuesday),
        Some("WED") => Some(Weekday::Wednesday),
        Some("THU") => Some(Weekday::Thursday),
        Some("FRI") => Some(Weekday::Friday),
        Some("SAT") => Some(Weekday::Saturday),
        Some("SUN") => Some(Weekday::Sunday),
        _ => None,
    };
    let want = if policy.plan == "weekly" { want } else { None };
    let mut date = now.to_zoned(TimeZone::UTC).date();
    let mut start = now;
    for _ in 0..9 {
        let candidate = date
            .at(hour, 0, 0, 0)
            .to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp())
            .unwrap_or(now);
        if candidate > now && want.is_none_or(|w| date.weekday() == w) {
            start = candidate;
            break;
        }
        match date.tomorrow() {
            Ok(d) => date = d,
            Err(_) => break,
        }
    }
    let end = start
        .checked_add(jiff::SignedDuration::from_hours(4))
        .unwrap_or(start);
    BackupWindow { start, end }
}
