//! Seed data: the documented example droplets (see the `sim` module doc; the
//! operator's `examples/` depend on these ids) and generated droplets.

use jiff::Timestamp;

use super::model::{SimDropletSeed, SimImage, backup_window};
use super::state::State;
use super::validate::BackupPolicy;

/// The documented example droplets (see the module doc of `sim`).
pub(crate) fn seed_examples(state: &mut State) {
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
    state.insert_image(SimImage {
        id: 701001,
        name: "db-1 2025-12-30".into(),
        type_: "backup".into(),
        created_at: Timestamp::from_second(1_767_052_800).unwrap_or(created),
        min_disk_size: 80,
        size_gigabytes: 4.2,
        resource_id: 101004,
        regions: vec!["sfo3".into()],
    });
    state.insert_image(SimImage {
        id: 701002,
        name: "db-1 2025-12-31".into(),
        type_: "backup".into(),
        created_at: Timestamp::from_second(1_767_139_200).unwrap_or(created),
        min_disk_size: 80,
        size_gigabytes: 4.3,
        resource_id: 101004,
        regions: vec!["sfo3".into()],
    });
    state.insert_image(SimImage {
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
        let id = state.add_droplet(seed, created);
        if id == 101004 {
            let policy = BackupPolicy::default();
            if let Some(d) = state.droplet_mut(id) {
                d.next_backup_window = Some(backup_window(&policy, Timestamp::now()));
                d.backup_policy = Some(policy);
            }
        }
    }
}

/// Generated droplets 200001..=200000+n, `gen-{i}`, tags `gen`, `gen-{i % 10}`.
pub(crate) fn seed_generated(state: &mut State, n: u32) {
    let created = Timestamp::from_second(1_767_225_600).unwrap_or(Timestamp::UNIX_EPOCH);
    for i in 1..=i64::from(n) {
        state.add_droplet(
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
