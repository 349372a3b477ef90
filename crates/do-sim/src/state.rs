//! The simulated account: droplets, actions, images, and the per-droplet
//! indexes. Actions complete lazily: every access first calls [`State::tick`],
//! which pops the actions whose deadline has passed (a min-heap, so the cost is
//! proportional to the number of completions, not to the number of actions)
//! and applies their effects.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::catalog;
use super::config::ActionDurations;
use super::faults::Fate;
use super::model::{
    ACTION_ID_BASE, ADDED_DROPLET_ID_BASE, ActionStatus, IMAGE_ID_BASE, Initiation, PostRecord,
    SimAction, SimDroplet, SimDropletSeed, SimImage, StateError, backup_window,
};
use super::validate::{ActionParams, ActionRequest, ImageSpec};

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
    /// droplet id -> the last action request posted to it (what a foreign
    /// client repeats).
    last_request: HashMap<i64, ActionRequest>,
    next_droplet_id: i64,
    next_image_id: i64,
    pub durations: ActionDurations,
}

/// `t` truncated to `resolution` (DigitalOcean's timestamps are whole seconds).
fn truncate(t: Timestamp, resolution: Duration) -> Timestamp {
    let step = i64::try_from(resolution.as_nanos())
        .unwrap_or(1_000_000_000)
        .max(1);
    let ns = t.as_nanosecond();
    let ns = ns - ns.rem_euclid(i128::from(step));
    Timestamp::from_nanosecond(ns).unwrap_or(t)
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
            last_request: HashMap::new(),
            next_droplet_id: ADDED_DROPLET_ID_BASE + 1,
            next_image_id: IMAGE_ID_BASE + 1,
            durations,
        }
    }

    pub fn insert_image(&mut self, image: SimImage) {
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

    pub fn droplet_mut(&mut self, id: i64) -> Option<&mut SimDroplet> {
        self.droplets.get_mut(&id)
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

    /// How many account-wide actions a list shows when it omits those created
    /// after `visible_until_ms` (Unix ms; the lagging-list fault). Actions are
    /// stored in creation order, so the visible ones are a prefix.
    pub fn visible_action_count(&self, visible_until_ms: i64) -> usize {
        self.actions
            .partition_point(|a| a.created_ms <= visible_until_ms)
    }

    /// Account-wide actions among the first `visible` (see
    /// [`State::visible_action_count`]), newest first.
    pub fn actions_page(&self, visible: usize, offset: usize, limit: usize) -> Vec<&SimAction> {
        self.actions[..visible.min(self.actions.len())]
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .collect()
    }

    fn droplet_visible_ids(&self, droplet_id: i64, visible_until_ms: i64) -> &[i64] {
        let ids = self
            .droplet_actions
            .get(&droplet_id)
            .map_or(&[][..], Vec::as_slice);
        let n = ids.partition_point(|id| {
            self.action(*id)
                .is_some_and(|a| a.created_ms <= visible_until_ms)
        });
        &ids[..n]
    }

    /// How many of a droplet's actions a list created up to
    /// `visible_until_ms` shows.
    pub fn droplet_action_count(&self, droplet_id: i64, visible_until_ms: i64) -> usize {
        self.droplet_visible_ids(droplet_id, visible_until_ms).len()
    }

    /// A droplet's actions created up to `visible_until_ms`, newest first.
    pub fn droplet_actions_page(
        &self,
        droplet_id: i64,
        visible_until_ms: i64,
        offset: usize,
        limit: usize,
    ) -> Vec<&SimAction> {
        self.droplet_visible_ids(droplet_id, visible_until_ms)
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .filter_map(|id| self.action(*id))
            .collect()
    }

    /// Droplets that were sent an action and are idle now, with the request
    /// last sent to each (for the foreign-action fault).
    pub fn idle_posted_droplets(&self) -> Vec<(i64, ActionRequest)> {
        self.last_request
            .iter()
            .filter(|(id, _)| !self.is_pending(**id))
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    }

    pub fn all_images(&self) -> Vec<&SimImage> {
        self.images.values().collect()
    }

    /// `DELETE /v2/snapshots/{id}`: removes a snapshot image (not a backup) and its droplet's reference.
    /// Returns whether it existed.
    pub fn delete_snapshot(&mut self, id: i64) -> bool {
        if self.images.get(&id).is_none_or(|i| i.type_ != "snapshot") {
            return false;
        }
        let image = self.images.remove(&id);
        if let Some(d) = image.and_then(|i| self.droplets.get_mut(&i.resource_id)) {
            d.snapshot_ids.retain(|s| *s != id);
        }
        true
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
        let completed_at = truncate(completed_at, self.durations.timestamp_resolution());
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
                        // Whole seconds, as DigitalOcean's (and as a Kubernetes status keeps the action's
                        // started_at), also in a time-scaled world; on DigitalOcean's (possibly skewed) clock.
                        created_at: truncate(action.reported_started_at(), Duration::from_secs(1)),
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
    /// `fate` (from the faults) decides how it ends.
    pub fn create_action(
        &mut self,
        droplet_id: i64,
        req: ActionRequest,
        initiated: Initiation,
        fate: Fate,
        request_seq: Option<u64>,
        now: Instant,
    ) -> Option<SimAction> {
        if matches!(initiated, Initiation::Single | Initiation::ByTag { .. })
            && self.droplets.contains_key(&droplet_id)
        {
            self.last_request.insert(droplet_id, req.clone());
        }
        let d = self.droplets.get_mut(&droplet_id)?;
        d.locked = true;
        let id = ACTION_ID_BASE + 1 + self.actions.len() as i64;
        let nth = self.droplet_actions.get(&droplet_id).map_or(0, Vec::len) as u64;
        let duration = self.durations.draw(&req.type_, droplet_id, nth, d.disk);
        let started_at = truncate(Timestamp::now(), self.durations.timestamp_resolution());
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
            will_error: fate.errors,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            stuck: fate.stuck,
            unknown_status: fate.unknown_status,
            skew_secs: fate.skew_secs,
            created_ms: Timestamp::now().as_millisecond(),
            due: Some(now + duration),
        };
        self.actions.push(action.clone());
        self.droplet_actions.entry(droplet_id).or_default().push(id);
        self.pending.insert(droplet_id, id);
        if !action.stuck {
            self.due.push(Reverse((now + duration, id)));
        }
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
