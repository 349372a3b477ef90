//! DigitalOcean wire types (response bodies), independent of the client in
//! the operator's DigitalOcean client, and conversions from the simulator's state.

use std::collections::BTreeMap;

use serde::Serialize;

use super::catalog;
use super::model::{SimAction, SimDroplet, SimImage};
use super::state::State;

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub id: &'a str,
    pub message: &'a str,
    pub request_id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Region {
    pub name: &'static str,
    pub slug: String,
    pub features: Vec<&'static str>,
    pub available: bool,
    pub sizes: Vec<&'static str>,
}

pub fn region(slug: &str) -> Region {
    Region {
        name: catalog::region_name(slug),
        slug: slug.to_string(),
        features: catalog::REGION_FEATURES.to_vec(),
        available: true,
        sizes: catalog::SIZES.iter().map(|s| s.slug).collect(),
    }
}

#[derive(Debug, Serialize)]
pub struct Action {
    pub id: i64,
    pub status: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub resource_id: i64,
    pub resource_type: &'static str,
    pub region: Region,
    pub region_slug: String,
}

impl From<&SimAction> for Action {
    fn from(a: &SimAction) -> Self {
        Self {
            id: a.id,
            status: a.reported_status().to_string(),
            type_: a.type_.clone(),
            started_at: a.reported_started_at().to_string(),
            completed_at: a.reported_completed_at().map(|t| t.to_string()),
            resource_id: a.droplet_id,
            resource_type: "droplet",
            region: region(&a.region_slug),
            region_slug: a.region_slug.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Size {
    pub slug: &'static str,
    pub memory: i64,
    pub vcpus: i64,
    pub disk: i64,
    pub transfer: f64,
    pub price_monthly: f64,
    pub price_hourly: f64,
    pub regions: Vec<&'static str>,
    pub available: bool,
    pub description: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Kernel {
    pub id: i64,
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Serialize)]
pub struct BackupWindow {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize)]
pub struct Image {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub distribution: String,
    pub slug: Option<String>,
    pub public: bool,
    pub regions: Vec<String>,
    pub created_at: String,
    pub min_disk_size: i64,
    pub size_gigabytes: f64,
    pub description: String,
    pub tags: Vec<String>,
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct NetworkV4 {
    pub ip_address: String,
    pub netmask: &'static str,
    pub gateway: String,
    #[serde(rename = "type")]
    pub type_: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Networks {
    pub v4: Vec<NetworkV4>,
    pub v6: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct Droplet {
    pub id: i64,
    pub name: String,
    pub memory: i64,
    pub vcpus: i64,
    pub disk: i64,
    pub locked: bool,
    pub status: String,
    pub kernel: Option<Kernel>,
    pub created_at: String,
    pub features: Vec<String>,
    pub backup_ids: Vec<i64>,
    pub next_backup_window: Option<BackupWindow>,
    pub snapshot_ids: Vec<i64>,
    pub image: Option<Image>,
    pub volume_ids: Vec<String>,
    pub size: Option<Size>,
    pub size_slug: String,
    pub networks: Networks,
    pub region: Region,
    pub tags: Vec<String>,
    pub vpc_uuid: String,
}

/// A snapshot or backup as listed by `/v2/droplets/{id}/snapshots|backups`.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub regions: Vec<String>,
    pub min_disk_size: i64,
    pub size_gigabytes: f64,
    #[serde(rename = "type")]
    pub type_: String,
    pub resource_id: i64,
    pub resource_type: &'static str,
}

impl From<&SimImage> for Snapshot {
    fn from(i: &SimImage) -> Self {
        Self {
            id: i.id,
            name: i.name.clone(),
            created_at: i.created_at.to_string(),
            regions: i.regions.clone(),
            min_disk_size: i.min_disk_size,
            size_gigabytes: i.size_gigabytes,
            type_: i.type_.clone(),
            resource_id: i.resource_id,
            resource_type: "droplet",
        }
    }
}

fn image(state: &State, id: i64, region: &str) -> Option<Image> {
    if let Some((id, slug, distro, name)) = catalog::distro_by_id(id) {
        return Some(Image {
            id: *id,
            name: (*name).to_string(),
            type_: "base".into(),
            distribution: (*distro).to_string(),
            slug: Some((*slug).to_string()),
            public: true,
            regions: catalog::REGIONS.iter().map(|r| r.0.to_string()).collect(),
            created_at: "2024-04-25T00:00:00Z".into(),
            min_disk_size: 7,
            size_gigabytes: 2.36,
            description: format!("{distro} {name}"),
            tags: vec![],
            status: "available",
        });
    }
    state.image(id).map(|i| Image {
        id: i.id,
        name: i.name.clone(),
        type_: i.type_.clone(),
        distribution: "Ubuntu".into(),
        slug: None,
        public: false,
        regions: if i.regions.is_empty() {
            vec![region.to_string()]
        } else {
            i.regions.clone()
        },
        created_at: i.created_at.to_string(),
        min_disk_size: i.min_disk_size,
        size_gigabytes: i.size_gigabytes,
        description: String::new(),
        tags: vec![],
        status: "available",
    })
}

pub fn droplet(state: &State, d: &SimDroplet) -> Droplet {
    let size = catalog::size_by_slug(&d.size_slug).map(|s| Size {
        slug: s.slug,
        memory: s.memory,
        vcpus: s.vcpus,
        disk: s.disk,
        transfer: s.transfer,
        price_monthly: s.price_monthly,
        price_hourly: (s.price_monthly / 672.0 * 100_000.0).round() / 100_000.0,
        regions: catalog::REGIONS.iter().map(|r| r.0).collect(),
        available: true,
        description: s.description,
    });
    let octet = |n: i64| (n.rem_euclid(254) + 1).to_string();
    Droplet {
        id: d.id,
        name: d.name.clone(),
        memory: d.memory,
        vcpus: d.vcpus,
        disk: d.disk,
        locked: d.locked,
        status: d.status.clone(),
        kernel: d.kernel_id.and_then(catalog::kernel_by_id).map(|k| Kernel {
            id: k.0,
            name: k.1,
            version: k.2,
        }),
        created_at: d.created_at.to_string(),
        features: d.features.clone(),
        backup_ids: d.backup_ids.clone(),
        next_backup_window: d.next_backup_window.as_ref().map(|w| BackupWindow {
            start: w.start.to_string(),
            end: w.end.to_string(),
        }),
        snapshot_ids: d.snapshot_ids.clone(),
        image: image(state, d.image_id, &d.region),
        volume_ids: vec![],
        size,
        size_slug: d.size_slug.clone(),
        networks: Networks {
            v4: vec![NetworkV4 {
                ip_address: format!("198.51.{}.{}", octet(d.id / 254), octet(d.id)),
                netmask: "255.255.255.0",
                gateway: format!("198.51.{}.1", octet(d.id / 254)),
                type_: "public",
            }],
            v6: vec![],
        },
        region: region(&d.region),
        tags: d.tags.clone(),
        vpc_uuid: "760e09ef-dc84-11e8-981e-3cfdfeaae000".into(),
    }
}

/// `links.pages`: only the relevant keys.
#[derive(Debug, Default, Serialize)]
pub struct Links {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<BTreeMap<&'static str, String>>,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    pub total: usize,
}
