//! The simulated account: droplets, actions, images, and the per-droplet
//! indexes. Actions complete lazily: every access first calls [`State::tick`],
//! which pops the actions whose deadline has passed (a min-heap, so the cost is
//! proportional to the number of completions, not to the number of actions)
//! and applies their effects.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::catalog;
use super::config::ActionDurations;
use super::validate::{ActionParams, ActionRequest, BackupPolicy, ImageSpec};

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

#[derive(Debug)]
pub(crate) struct State {
    droplets: BTreeMap<i64, SimDroplet>,
    tag_index: HashMap<String, BTreeSet<i64>>,
    /// Index = id - ACTION_ID_BASE - 1.
    actions: Vec<SimAction>,
    droplet_actions: HashMap<i64, Vec<i64>>,
    /// droplet id -> its in-progress action.
    pending: HashMap<i64, i64>,
    due: BinaryHeap<Reverse<(Instant, i64)>>,
    images: BTreeMap<i64, SimImage>,
    posts: HashMap<i64, Vec<PostRecord>>,
    next_droplet_id: i64,
    next_image_id: i64,
    pub durations: ActionDurations,
}

fn now_secs() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl State {
    pub fn new(durations: ActionDurations) -> Self {
        Self {
            droplets: BTreeMap::new(),
            tag_index: HashMap::new(),
            actions: Vec::new(),
            droplet_actions: HashMap::new(),
            pending: HashMap::new(),
            due: BinaryHeap::new(),
            images: BTreeMap::new(),
            posts: HashMap::new(),
            next_droplet_id: ADDED_DROPLET_ID_BASE + 1,
            next_image_id: IMAGE_ID_BASE + 1,
            durations,
        }
    }

    /// The documented example droplets (see the module doc of `sim`).
    pub fn seed_examples(&mut self) {
        let created = Timestamp::from_second(1_767_225_600).unwrap_or(Timestamp::UNIX_EPOCH); // 2026-01-01
        let ex = |id: i64, name: &str, status: &str, tags: &[&str], size: &str, region: &str| {
            SimDropletSeed {
                id: Some(id),
                name: name.into(),
                status: status.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                size_slug: size.into(),
                region: region.into(),
                ..SimDropletSeed::default()
            }
        };
        let mut seeds = vec![
            ex(
                101001,
                "web-1",
                "active",
                &["web", "frontend"],
                "s-1vcpu-1gb",
                "nyc3",
            ),
            ex(
                101002,
                "web-2",
                "active",
                &["web", "frontend"],
                "s-1vcpu-1gb",
                "nyc3",
            ),
            ex(101003, "web-3", "active", &["web"], "s-1vcpu-2gb", "nyc3"),
            ex(101004, "db-1", "active", &["db"], "s-2vcpu-4gb", "sfo3"),
            ex(101005, "db-2", "active", &["db"], "s-2vcpu-4gb", "sfo3"),
            ex(101006, "batch-1", "off", &["batch"], "s-4vcpu-8gb", "nyc3"),
            ex(101007, "batch-2", "off", &["batch"], "s-4vcpu-8gb", "nyc3"),
            ex(
                101008,
                "cache-1",
                "active",
                &["cache"],
                "s-2vcpu-2gb",
                "nyc3",
            ),
            ex(
                101009,
                "legacy-1",
                "active",
                &["legacy"],
                "s-1vcpu-1gb",
                "nyc3",
            ),
            ex(
                101010,
                "staging-1",
                "active",
                &["staging", "web-staging"],
                "s-1vcpu-1gb",
                "nyc3",
            ),
            ex(
                101011,
                "stage-2",
                "active",
                &["staging"],
                "s-1vcpu-1gb",
                "nyc3",
            ),
            ex(101012, "ops-1", "active", &["ops"], "s-1vcpu-2gb", "nyc3"),
        ];
        seeds[3].features = vec!["backups".into()];
        seeds[3].backup_ids = vec![701001, 701002];
        seeds[4].snapshot_ids = vec![702001];
        seeds[8].kernel_id = Some(8611);
        self.insert_image(SimImage {
            id: 701001,
            name: "db-1 2025-12-30".into(),
            type_: "backup".into(),
            created_at: Timestamp::from_second(1_767_052_800).unwrap_or(created),
            min_disk_size: 80,
            size_gigabytes: 4.2,
            resource_id: 101004,
            regions: vec!["sfo3".into()],
        });
        self.insert_image(SimImage {
            id: 701002,
            name: "db-1 2025-12-31".into(),
            type_: "backup".into(),
            created_at: Timestamp::from_second(1_767_139_200).unwrap_or(created),
            min_disk_size: 80,
            size_gigabytes: 4.3,
            resource_id: 101004,
            regions: vec!["sfo3".into()],
        });
        self.insert_image(SimImage {
            id: 702001,
            name: "db-2-before-upgrade".into(),
            type_: "snapshot".into(),
            created_at: Timestamp::from_second(1_767_000_000).unwrap_or(created),
            min_disk_size: 80,
            size_gigabytes: 3.9,
            resource_id: 101005,
            regions: vec!["sfo3".into()],
        });
        for seed in seeds {
            let id = self.add_droplet(seed, created);
            if id == 101004 {
                let policy = BackupPolicy::default();
                if let Some(d) = self.droplets.get_mut(&id) {
                    d.next_backup_window = Some(backup_window(&policy, Timestamp::now()));
                    d.backup_policy = Some(policy);
                }
            }
        }
    }

    /// Generated droplets 200001..=200000+n, `gen-{i}`, tags `gen`, `gen-{i % 10}`.
    pub fn seed_generated(&mut self, n: u32) {
        let created = Timestamp::from_second(1_767_225_600).unwrap_or(Timestamp::UNIX_EPOCH);
        for i in 1..=i64::from(n) {
            self.add_droplet(
                SimDropletSeed {
                    id: Some(200_000 + i),
                    name: format!("gen-{i}"),
                    tags: vec!["gen".into(), format!("gen-{}", i % 10)],
                    ..SimDropletSeed::default()
                },
                created,
            );
        }
    }

    fn insert_image(&mut self, image: SimImage) {
        self.images.insert(image.id, image);
    }

    pub fn add_droplet(&mut self, seed: SimDropletSeed, created_at: Timestamp) -> i64 {
        let id = match seed.id {
            Some(id) => id,
            None => {
                while self.droplets.contains_key(&self.next_droplet_id) {
                    self.next_droplet_id += 1;
                }
                self.next_droplet_id
            }
        };
        if id >= self.next_droplet_id {
            self.next_droplet_id = id + 1;
        }
        let size = catalog::size_by_slug(&seed.size_slug)
            .or_else(|| catalog::size_by_slug("s-1vcpu-1gb"))
            .copied();
        let (disk, memory, vcpus) = size
            .map(|s| (s.disk, s.memory, s.vcpus))
            .unwrap_or((25, 1024, 1));
        let image_id = catalog::distro_by_slug(&seed.image)
            .map(|d| d.0)
            .unwrap_or(catalog::DISTRO_IMAGES[0].0);
        for (ids, kind) in [
            (&seed.backup_ids, "backup"),
            (&seed.snapshot_ids, "snapshot"),
        ] {
            for &img in ids {
                if !self.images.contains_key(&img) {
                    self.insert_image(SimImage {
                        id: img,
                        name: format!("{}-{kind}-{img}", seed.name),
                        type_: kind.into(),
                        created_at,
                        min_disk_size: disk,
                        size_gigabytes: disk as f64 / 10.0,
                        resource_id: id,
                        regions: vec![seed.region.clone()],
                    });
                }
            }
        }
        if let Some(old) = self.droplets.get(&id) {
            for t in old.tags.clone() {
                if let Some(set) = self.tag_index.get_mut(&t) {
                    set.remove(&id);
                }
            }
        }
        for t in &seed.tags {
            self.tag_index.entry(t.clone()).or_default().insert(id);
        }
        let droplet = SimDroplet {
            id,
            name: seed.name,
            status: seed.status,
            locked: false,
            size_slug: size.map(|s| s.slug.to_string()).unwrap_or(seed.size_slug),
            disk,
            memory,
            vcpus,
            features: seed.features,
            tags: seed.tags,
            region: seed.region,
            image_id,
            backup_ids: seed.backup_ids,
            snapshot_ids: seed.snapshot_ids,
            kernel_id: seed.kernel_id,
            next_backup_window: None,
            backup_policy: None,
            password_resets: 0,
            created_at,
        };
        self.droplets.insert(id, droplet);
        id
    }

    // ---- reads -------------------------------------------------------------

    pub fn droplet(&self, id: i64) -> Option<&SimDroplet> {
        self.droplets.get(&id)
    }

    pub fn droplet_count(&self) -> usize {
        self.droplets.len()
    }

    pub fn droplets_page(&self, offset: usize, limit: usize) -> Vec<&SimDroplet> {
        self.droplets.values().skip(offset).take(limit).collect()
    }

    pub fn tagged_count(&self, tag: &str) -> usize {
        self.tag_index.get(tag).map_or(0, BTreeSet::len)
    }

    pub fn tagged_page(&self, tag: &str, offset: usize, limit: usize) -> Vec<&SimDroplet> {
        self.tag_index
            .get(tag)
            .into_iter()
            .flatten()
            .skip(offset)
            .take(limit)
            .filter_map(|id| self.droplets.get(id))
            .collect()
    }

    pub fn droplets_named(&self, name: &str) -> Vec<&SimDroplet> {
        self.droplets
            .values()
            .filter(|d| d.name.eq_ignore_ascii_case(name))
            .collect()
    }

    pub fn all_droplets(&self) -> Vec<SimDroplet> {
        self.droplets.values().cloned().collect()
    }

    pub fn action(&self, id: i64) -> Option<&SimAction> {
        let idx = id.checked_sub(ACTION_ID_BASE + 1)?;
        self.actions.get(usize::try_from(idx).ok()?)
    }

    pub fn all_actions(&self) -> &[SimAction] {
        &self.actions
    }

    /// Account-wide actions, newest first.
    pub fn actions_page(&self, offset: usize, limit: usize) -> Vec<&SimAction> {
        self.actions.iter().rev().skip(offset).take(limit).collect()
    }

    pub fn droplet_action_count(&self, droplet_id: i64) -> usize {
        self.droplet_actions.get(&droplet_id).map_or(0, Vec::len)
    }

    /// A droplet's actions, newest first.
    pub fn droplet_actions_page(
        &self,
        droplet_id: i64,
        offset: usize,
        limit: usize,
    ) -> Vec<&SimAction> {
        self.droplet_actions
            .get(&droplet_id)
            .into_iter()
            .flat_map(|ids| ids.iter().rev())
            .skip(offset)
            .take(limit)
            .filter_map(|id| self.action(*id))
            .collect()
    }

    pub fn all_images(&self) -> Vec<&SimImage> {
        self.images.values().collect()
    }

    pub fn image(&self, id: i64) -> Option<&SimImage> {
        self.images.get(&id)
    }

    pub fn posts_for(&self, droplet_id: i64) -> Vec<PostRecord> {
        self.posts.get(&droplet_id).cloned().unwrap_or_default()
    }

    /// All post records, by droplet id then time.
    pub fn all_posts(&self) -> Vec<PostRecord> {
        let mut entries: Vec<_> = self.posts.iter().collect();
        entries.sort_unstable_by_key(|(id, _)| **id);
        entries
            .into_iter()
            .flat_map(|(_, posts)| posts.iter().cloned())
            .collect()
    }

    pub fn clear_posts(&mut self) {
        self.posts.clear();
    }

    pub fn mark_dropped(&mut self, droplet_id: i64, action_id: i64) {
        if let Some(list) = self.posts.get_mut(&droplet_id) {
            for p in list.iter_mut().filter(|p| p.action_id == action_id) {
                p.response_dropped = true;
            }
        }
    }

    // ---- progress ----------------------------------------------------------

    /// Completes every action whose deadline is `<= now` and applies its effects.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((due, id))) = self.due.peek().copied() {
            if due > now {
                break;
            }
            self.due.pop();
            self.complete(id);
        }
    }

    fn complete(&mut self, id: i64) {
        let Some(idx) = id
            .checked_sub(ACTION_ID_BASE + 1)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(action) = self.actions.get_mut(idx) else {
            return;
        };
        let completed_at = action
            .started_at
            .checked_add(Duration::from_millis(action.duration_ms))
            .unwrap_or(action.started_at);
        let completed_at = Timestamp::from_second(completed_at.as_second()).unwrap_or(completed_at);
        action.completed_at = Some(completed_at);
        action.status = if action.will_error {
            ActionStatus::Errored
        } else {
            ActionStatus::Completed
        };
        let action = action.clone();
        if self.pending.get(&action.droplet_id) == Some(&id) {
            self.pending.remove(&action.droplet_id);
        }
        if let Some(d) = self.droplets.get_mut(&action.droplet_id) {
            d.locked = false;
        }
        if !action.will_error {
            self.apply_effect(&action);
        }
    }

    fn apply_effect(&mut self, action: &SimAction) {
        let mut new_image = None;
        {
            let Some(d) = self.droplets.get_mut(&action.droplet_id) else {
                return;
            };
            match (action.type_.as_str(), &action.params) {
                ("power_off" | "shutdown", _) => d.status = "off".into(),
                ("power_on" | "reboot" | "power_cycle", _) => d.status = "active".into(),
                ("password_reset", _) => {
                    d.password_resets += 1;
                    d.status = "active".into();
                }
                ("rename", ActionParams::Rename { name }) => d.name = name.clone(),
                ("resize", ActionParams::Resize { size, disk }) => {
                    if let Some(s) = catalog::size_by_slug(size) {
                        d.size_slug = s.slug.into();
                        d.memory = s.memory;
                        d.vcpus = s.vcpus;
                        if *disk {
                            d.disk = s.disk;
                        }
                    }
                }
                ("enable_backups" | "change_backup_policy", ActionParams::Backups { policy }) => {
                    if !d.features.iter().any(|f| f == "backups") {
                        d.features.push("backups".into());
                    }
                    let policy = policy.clone().unwrap_or_default();
                    d.next_backup_window = Some(backup_window(&policy, Timestamp::now()));
                    d.backup_policy = Some(policy);
                }
                ("disable_backups", _) => {
                    d.features.retain(|f| f != "backups");
                    d.next_backup_window = None;
                    d.backup_policy = None;
                }
                ("enable_ipv6", _) if !d.features.iter().any(|f| f == "ipv6") => {
                    d.features.push("ipv6".into());
                }
                ("change_kernel", ActionParams::ChangeKernel { kernel }) => {
                    d.kernel_id = Some(*kernel)
                }
                ("rebuild", ActionParams::Rebuild { image }) => {
                    if let Some(id) = self_resolve(image, &self.images) {
                        d.image_id = id;
                    }
                    d.status = "active".into();
                }
                ("restore", ActionParams::Restore { image }) => {
                    d.image_id = *image;
                    d.status = "active".into();
                }
                ("snapshot", ActionParams::Snapshot { name }) => {
                    let id = self.next_image_id;
                    let name = name.clone().unwrap_or_else(|| {
                        format!("{}-{}", d.name, action.started_at.as_millisecond())
                    });
                    d.snapshot_ids.push(id);
                    new_image = Some(SimImage {
                        id,
                        name,
                        type_: "snapshot".into(),
                        created_at: action.started_at,
                        min_disk_size: d.disk,
                        size_gigabytes: (d.disk as f64 * 0.1 * 100.0).round() / 100.0,
                        resource_id: d.id,
                        regions: vec![d.region.clone()],
                    });
                }
                _ => {}
            }
        }
        if let Some(img) = new_image {
            self.next_image_id += 1;
            self.insert_image(img);
        }
    }

    // ---- creation ----------------------------------------------------------

    /// Checks an action against the droplet (not the pending state).
    pub fn check_action(&self, droplet_id: i64, req: &ActionRequest) -> Result<(), StateError> {
        let d = self.droplets.get(&droplet_id).ok_or(StateError::NotFound)?;
        let bad = |m: &str| Err(StateError::Unprocessable(m.to_string()));
        let has_backups = d.features.iter().any(|f| f == "backups");
        match &req.params {
            ActionParams::Resize { size, .. } => {
                let Some(s) = catalog::size_by_slug(size) else {
                    return bad(&format!("Size {size} is invalid or not available"));
                };
                if s.disk < d.disk {
                    return bad("Size can not decrease size of Droplet's disk image");
                }
            }
            ActionParams::Rebuild { image } if self_resolve(image, &self.images).is_none() => {
                return bad("You specified an invalid image for Droplet rebuild.");
            }
            ActionParams::Restore { image }
                if !d.backup_ids.contains(image) && !d.snapshot_ids.contains(image) =>
            {
                return bad("Image is not a backup or snapshot of this Droplet.");
            }
            ActionParams::ChangeKernel { kernel } if catalog::kernel_by_id(*kernel).is_none() => {
                return bad(&format!(
                    "Kernel {kernel} is not available for this Droplet"
                ));
            }
            ActionParams::Backups { .. } if req.type_ == "change_backup_policy" && !has_backups => {
                return bad("Backups are not enabled for this Droplet");
            }
            _ => {}
        }
        if req.type_ == "power_off" && d.status == "off" {
            return bad("Droplet is already powered off.");
        }
        Ok(())
    }

    pub fn is_pending(&self, droplet_id: i64) -> bool {
        self.pending.contains_key(&droplet_id)
    }

    /// Creates an in-progress action (no validation) and locks the droplet.
    #[allow(clippy::too_many_arguments)]
    pub fn create_action(
        &mut self,
        droplet_id: i64,
        req: ActionRequest,
        initiated: Initiation,
        will_error: bool,
        request_seq: Option<u64>,
        now: Instant,
    ) -> Option<SimAction> {
        let d = self.droplets.get_mut(&droplet_id)?;
        d.locked = true;
        let id = ACTION_ID_BASE + 1 + self.actions.len() as i64;
        let duration = self.durations.duration_for(&req.type_);
        let started_at = now_secs();
        let action = SimAction {
            id,
            droplet_id,
            type_: req.type_,
            status: ActionStatus::InProgress,
            started_at,
            completed_at: None,
            region_slug: d.region.clone(),
            params: req.params,
            initiated: initiated.clone(),
            will_error,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        };
        self.actions.push(action.clone());
        self.droplet_actions.entry(droplet_id).or_default().push(id);
        self.pending.insert(droplet_id, id);
        self.due.push(Reverse((now + duration, id)));
        if let Some(seq) = request_seq {
            self.posts.entry(droplet_id).or_default().push(PostRecord {
                action_id: id,
                droplet_id,
                type_: action.type_.clone(),
                time: Timestamp::now(),
                initiated,
                request_seq: seq,
                response_dropped: false,
            });
        }
        Some(action)
    }
}

fn self_resolve(image: &ImageSpec, images: &BTreeMap<i64, SimImage>) -> Option<i64> {
    match image {
        ImageSpec::Slug(s) => catalog::distro_by_slug(s).map(|d| d.0),
        ImageSpec::Id(id) => {
            if catalog::distro_by_id(*id).is_some() || images.contains_key(id) {
                Some(*id)
            } else {
                None
            }
        }
    }
}

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
