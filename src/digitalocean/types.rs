//! Response types. Decoding is lenient: missing fields take defaults, unknown action
//! statuses become [`ActionStatus::Other`], and timestamps that do not parse become
//! `None`, so a surprise in one field never hides the rest of the object.

use serde::{Deserialize, Deserializer, Serialize};

/// A DigitalOcean action (`resources/actions/models/action.yml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Action ID.
    pub id: i64,
    /// `in-progress`, `completed`, `errored` (or anything else DigitalOcean invents).
    #[serde(default)]
    pub status: ActionStatus,
    /// The action type (free string, e.g. `power_off`).
    #[serde(rename = "type", default)]
    pub type_: String,
    /// When the action started.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub started_at: Option<jiff::Timestamp>,
    /// When it finished (null while in progress).
    #[serde(default, deserialize_with = "lenient_ts")]
    pub completed_at: Option<jiff::Timestamp>,
    /// The droplet ID for droplet actions.
    #[serde(default)]
    pub resource_id: Option<i64>,
    /// E.g. `droplet`.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// Region slug.
    #[serde(default)]
    pub region_slug: Option<String>,
}

/// Action status. Unknown values (DigitalOcean has sent `done` on other endpoints) are
/// kept verbatim in [`ActionStatus::Other`] instead of failing the decode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum ActionStatus {
    /// `in-progress`
    #[default]
    InProgress,
    /// `completed`
    Completed,
    /// `errored`
    Errored,
    /// Anything else.
    Other(String),
}

impl ActionStatus {
    /// DigitalOcean's string.
    pub fn as_str(&self) -> &str {
        match self {
            ActionStatus::InProgress => "in-progress",
            ActionStatus::Completed => "completed",
            ActionStatus::Errored => "errored",
            ActionStatus::Other(s) => s,
        }
    }

    /// `completed` or `errored`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ActionStatus::Completed | ActionStatus::Errored)
    }
}

impl From<&str> for ActionStatus {
    fn from(s: &str) -> Self {
        match s {
            "in-progress" => ActionStatus::InProgress,
            "completed" => ActionStatus::Completed,
            "errored" => ActionStatus::Errored,
            other => ActionStatus::Other(other.to_string()),
        }
    }
}

impl Serialize for ActionStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActionStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Option::<String>::deserialize(d)?;
        Ok(v.as_deref().map(ActionStatus::from).unwrap_or_default())
    }
}

/// The region reference inside a droplet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionRef {
    /// Region slug, e.g. `nyc3`.
    #[serde(default)]
    pub slug: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A droplet (`resources/droplets/models/droplet.yml`), the fields an operator reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Droplet {
    /// Droplet ID.
    pub id: i64,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `new`, `active`, `off` or `archive`.
    #[serde(default)]
    pub status: String,
    /// True while an action blocks further actions.
    #[serde(default, deserialize_with = "null_as_default")]
    pub locked: bool,
    /// Size slug.
    #[serde(default)]
    pub size_slug: Option<String>,
    /// Memory in MB.
    #[serde(default)]
    pub memory: Option<u64>,
    /// vCPUs.
    #[serde(default)]
    pub vcpus: Option<u64>,
    /// Disk in GB.
    #[serde(default)]
    pub disk: Option<u64>,
    /// Tags.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Enabled features (`backups`, `ipv6`, …).
    #[serde(default, deserialize_with = "null_as_default")]
    pub features: Vec<String>,
    /// Snapshot image IDs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub snapshot_ids: Vec<i64>,
    /// Backup image IDs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub backup_ids: Vec<i64>,
    /// Region.
    #[serde(default, deserialize_with = "null_as_default")]
    pub region: RegionRef,
    /// Creation time.
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<jiff::Timestamp>,
}

impl Droplet {
    /// `region.slug`.
    pub fn region_slug(&self) -> Option<&str> {
        self.region.slug.as_deref()
    }
}

/// A droplet snapshot or backup image (`droplet_snapshot`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Image ID (accepts a JSON integer or a numeric string).
    #[serde(deserialize_with = "int_or_string")]
    pub id: i64,
    /// Display name (not unique).
    #[serde(default)]
    pub name: String,
    /// Creation time (matches the snapshot action's `started_at`).
    #[serde(default, deserialize_with = "lenient_ts")]
    pub created_at: Option<jiff::Timestamp>,
    /// `snapshot` or `backup`.
    #[serde(rename = "type", default)]
    pub type_: Option<String>,
    /// Regions it is available in.
    #[serde(default, deserialize_with = "null_as_default")]
    pub regions: Vec<String>,
    /// Minimum disk size in GB.
    #[serde(default)]
    pub min_disk_size: Option<u64>,
    /// Billable size in GB.
    #[serde(default)]
    pub size_gigabytes: Option<f64>,
}

/// One page of a list endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// `meta.total`, when DigitalOcean sent it.
    pub total: Option<u64>,
    /// The next page number, when `links.pages.next` says there is one.
    pub next_page: Option<u32>,
}

/// `links` of a list response.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Links {
    #[serde(default)]
    pub pages: Option<PageLinks>,
}

/// `links.pages`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageLinks {
    #[serde(default)]
    pub next: Option<String>,
}

/// `meta`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Meta {
    #[serde(default)]
    pub total: Option<u64>,
}

/// Works out the next page from `links.pages.next` (its `page` query parameter).
pub(crate) fn next_page_from(links: Option<&Links>, current: u32) -> Option<u32> {
    let next = links?.pages.as_ref()?.next.as_deref()?;
    let parsed = url::Url::parse(next)
        .or_else(|_| url::Url::parse("https://placeholder.invalid/").and_then(|b| b.join(next)))
        .ok();
    let from_link = parsed.and_then(|u| {
        u.query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse::<u32>().ok())
    });
    match from_link {
        Some(p) if p > current => Some(p),
        // A `next` link without a usable page number still means "there is more".
        _ => current.checked_add(1),
    }
}

fn lenient_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<jiff::Timestamp>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => s.parse::<jiff::Timestamp>().ok(),
        _ => None,
    })
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn int_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(i64),
        Str(String),
    }
    match IntOrString::deserialize(d)? {
        IntOrString::Int(i) => Ok(i),
        IntOrString::Str(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| serde::de::Error::custom(format!("non-numeric image id {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn action_decodes_known_and_unknown_statuses() {
        let a: Action = serde_json::from_value(json!({
            "id": 36804636, "status": "completed", "type": "create",
            "started_at": "2020-11-14T16:29:21Z", "completed_at": "2020-11-14T16:30:06Z",
            "resource_id": 3164444, "resource_type": "droplet", "region": {"slug": "nyc3"},
            "region_slug": "nyc3"
        }))
        .unwrap();
        assert_eq!(a.status, ActionStatus::Completed);
        assert_eq!(a.type_, "create");
        assert!(a.completed_at.is_some());
        let a: Action = serde_json::from_value(json!({
            "id": 1, "status": "done", "type": "power_off", "completed_at": null,
            "started_at": "not a time"
        }))
        .unwrap();
        assert_eq!(a.status, ActionStatus::Other("done".into()));
        assert_eq!(a.started_at, None);
        assert_eq!(a.completed_at, None);
        assert_eq!(a.status.as_str(), "done");
    }

    #[test]
    fn droplet_is_lenient() {
        let d: Droplet = serde_json::from_value(json!({
            "id": 3164444, "name": "web", "status": "active", "locked": false,
            "tags": null, "region": {"slug": "nyc3", "name": "New York 3"},
            "snapshot_ids": [1, 2], "features": ["backups"], "extra": {"x": 1}
        }))
        .unwrap();
        assert_eq!(d.region_slug(), Some("nyc3"));
        assert!(d.tags.is_empty());
        assert_eq!(d.snapshot_ids, vec![1, 2]);
        let d: Droplet = serde_json::from_value(json!({"id": 5})).unwrap();
        assert_eq!(d.region_slug(), None);
    }

    #[test]
    fn snapshot_id_int_or_string() {
        let s: Snapshot = serde_json::from_value(
            json!({"id": "6372321", "name": "n", "created_at": "2020-07-28T16:47:44Z", "type": "snapshot"}),
        )
        .unwrap();
        assert_eq!(s.id, 6372321);
        let s: Snapshot = serde_json::from_value(json!({"id": 7, "name": "n"})).unwrap();
        assert_eq!(s.id, 7);
        assert!(serde_json::from_value::<Snapshot>(json!({"id": "abc"})).is_err());
    }

    #[test]
    fn next_page_parsing() {
        let links: Links = serde_json::from_value(json!({"pages": {
            "next": "https://api.digitalocean.com/v2/droplets?page=3&per_page=200",
            "last": "https://api.digitalocean.com/v2/droplets?page=9&per_page=200"}}))
        .unwrap();
        assert_eq!(next_page_from(Some(&links), 2), Some(3));
        let links: Links =
            serde_json::from_value(json!({"pages": {"first": "x", "prev": "y"}})).unwrap();
        assert_eq!(next_page_from(Some(&links), 2), None);
        let empty: Links = serde_json::from_value(json!({})).unwrap();
        assert_eq!(next_page_from(Some(&empty), 1), None);
        assert_eq!(next_page_from(None, 1), None);
        let rel: Links =
            serde_json::from_value(json!({"pages": {"next": "/v2/actions?page=2"}})).unwrap();
        assert_eq!(next_page_from(Some(&rel), 1), Some(2));
    }
}
