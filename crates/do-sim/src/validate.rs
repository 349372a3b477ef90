//! Parsing and body-level validation of action requests (the checks that do
//! not need the droplet; the rest are in `state.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::catalog::{ACTION_TYPES, BY_TAG_TYPES};

/// A backup policy as accepted by enable_backups / change_backup_policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPolicy {
    pub plan: String,
    pub weekday: Option<String>,
    pub hour: Option<i64>,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self {
            plan: "daily".into(),
            weekday: None,
            hour: Some(0),
        }
    }
}

/// `rebuild`'s image: a slug or an image id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageSpec {
    Id(i64),
    Slug(String),
}

/// Validated per-type parameters of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ActionParams {
    None,
    Resize { size: String, disk: bool },
    Rename { name: String },
    Rebuild { image: ImageSpec },
    Restore { image: i64 },
    ChangeKernel { kernel: i64 },
    Backups { policy: Option<BackupPolicy> },
    Snapshot { name: Option<String> },
}

/// A parsed action request.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    pub type_: String,
    pub params: ActionParams,
}

/// Parses the body of `POST /v2/droplets/{id}/actions` (or the by-tag variant).
/// `Err` is a 422 message.
pub fn parse_action(body: &Value, by_tag: bool) -> Result<ActionRequest, String> {
    let obj = body
        .as_object()
        .ok_or_else(|| "request body must be a JSON object".to_string())?;
    let type_ = match obj.get("type") {
        None | Some(Value::Null) => return Err("type is required".into()),
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err("type must be a string".into()),
    };
    if !ACTION_TYPES.contains(&type_.as_str()) {
        return Err(format!("{type_} is not a valid droplet action type"));
    }
    if by_tag && !BY_TAG_TYPES.contains(&type_.as_str()) {
        return Err(format!(
            "{type_} is not a valid action type for tagged droplets; valid types are {}",
            BY_TAG_TYPES.join(", ")
        ));
    }
    let params = match type_.as_str() {
        "resize" => {
            let size = match obj.get("size") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                None | Some(Value::Null) => {
                    return Err("size is required to resize a Droplet".into());
                }
                Some(_) => return Err("size must be a size slug string".into()),
            };
            let disk = match obj.get("disk") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("disk must be a boolean".into()),
            };
            ActionParams::Resize { size, disk }
        }
        "rename" => {
            let name = match obj.get("name") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => {
                    return Err("name is required to rename a Droplet".into());
                }
                Some(_) => return Err("name must be a string".into()),
            };
            if !valid_hostname(&name) {
                return Err(format!(
                    "Name {name:?} is invalid: only letters, numbers, periods and dashes are allowed, it must end with a letter or number and be at most 255 characters"
                ));
            }
            ActionParams::Rename { name }
        }
        "rebuild" => {
            let image = match obj.get("image") {
                Some(Value::String(s)) if !s.is_empty() => match s.parse::<i64>() {
                    Ok(id) => ImageSpec::Id(id),
                    Err(_) => ImageSpec::Slug(s.clone()),
                },
                Some(Value::Number(n)) => ImageSpec::Id(
                    n.as_i64()
                        .ok_or_else(|| "image must be an image slug or integer ID".to_string())?,
                ),
                None | Some(Value::Null) => {
                    return Err("image is required to rebuild a Droplet".into());
                }
                Some(_) => return Err("image must be an image slug or integer ID".into()),
            };
            ActionParams::Rebuild { image }
        }
        "restore" => {
            let image = obj
                .get("image")
                .and_then(Value::as_i64)
                .ok_or_else(|| "image is required and must be the integer ID of a backup or snapshot of this Droplet".to_string())?;
            ActionParams::Restore { image }
        }
        "change_kernel" => {
            let kernel = obj
                .get("kernel")
                .and_then(Value::as_i64)
                .ok_or_else(|| "kernel is required and must be an integer kernel ID".to_string())?;
            ActionParams::ChangeKernel { kernel }
        }
        "enable_backups" => {
            // The by-tag body schema is plain `droplet_action`: a policy is ignored there.
            let policy = match obj.get("backup_policy") {
                Some(v) if !by_tag && !v.is_null() => Some(parse_policy(v)?),
                _ => None,
            };
            ActionParams::Backups { policy }
        }
        "change_backup_policy" => match obj.get("backup_policy") {
            Some(v) if !v.is_null() => ActionParams::Backups {
                policy: Some(parse_policy(v)?),
            },
            _ => {
                return Err("backup_policy is required to change a Droplet's backup policy".into());
            }
        },
        "snapshot" => {
            let name = match obj.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err("name must be a string".into()),
            };
            ActionParams::Snapshot { name }
        }
        _ => ActionParams::None,
    };
    Ok(ActionRequest { type_, params })
}

fn parse_policy(v: &Value) -> Result<BackupPolicy, String> {
    let obj: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| "backup_policy must be an object".to_string())?;
    for ro in ["window_length_hours", "retention_period_days"] {
        if obj.contains_key(ro) {
            return Err(format!("backup_policy.{ro} is read-only and cannot be set"));
        }
    }
    let plan = match obj.get("plan") {
        None | Some(Value::Null) => "daily".to_string(),
        Some(Value::String(p)) if p == "daily" || p == "weekly" => p.clone(),
        Some(p) => {
            return Err(format!(
                "backup_policy.plan {p} is invalid; must be one of daily, weekly"
            ));
        }
    };
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let weekday = match obj.get("weekday") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if DAYS.contains(&d.as_str()) => Some(d.clone()),
        Some(d) => {
            return Err(format!(
                "backup_policy.weekday {d} is invalid; must be one of {}",
                DAYS.join(", ")
            ));
        }
    };
    let hour = match obj.get("hour") {
        None | Some(Value::Null) => None,
        Some(h) => match h.as_i64() {
            Some(h) if [0, 4, 8, 12, 16, 20].contains(&h) => Some(h),
            _ => {
                return Err(format!(
                    "backup_policy.hour {h} is invalid; must be one of 0, 4, 8, 12, 16, 20"
                ));
            }
        },
    };
    let weekday = match (plan.as_str(), weekday) {
        ("weekly", None) => Some("SUN".to_string()),
        (_, w) => w,
    };
    Ok(BackupPolicy {
        plan,
        weekday,
        hour: Some(hour.unwrap_or(0)),
    })
}

/// `^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$`, max 255 characters.
pub fn valid_hostname(name: &str) -> bool {
    let Some(last) = name.chars().last() else {
        return false;
    };
    name.len() <= 255
        && last.is_ascii_alphanumeric()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hostname_pattern() {
        assert!(valid_hostname("web-1"));
        assert!(valid_hostname("a"));
        assert!(valid_hostname("web.example.com"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("web-"));
        assert!(!valid_hostname("web_1"));
        assert!(!valid_hostname("web 1"));
        assert!(!valid_hostname(&"a".repeat(256)));
    }

    #[test]
    fn backup_policy_rules() {
        let ok = json!({"type":"change_backup_policy","backup_policy":{"plan":"weekly","weekday":"TUE","hour":8}});
        assert!(parse_action(&ok, false).is_ok());
        for bad in [
            json!({"plan":"hourly"}),
            json!({"plan":"weekly","weekday":"Tuesday"}),
            json!({"plan":"daily","hour":3}),
            json!({"plan":"daily","window_length_hours":4}),
            json!({"plan":"daily","retention_period_days":7}),
        ] {
            let body = json!({"type":"change_backup_policy","backup_policy":bad});
            assert!(parse_action(&body, false).is_err(), "{body}");
        }
        assert!(parse_action(&json!({"type":"change_backup_policy"}), false).is_err());
    }

    #[test]
    fn by_tag_types_are_limited() {
        assert!(parse_action(&json!({"type":"reboot"}), true).is_err());
        assert!(parse_action(&json!({"type":"reboot"}), false).is_ok());
        assert!(parse_action(&json!({"type":"snapshot","name":"x"}), true).is_ok());
        assert!(parse_action(&json!({"type":"nope"}), false).is_err());
        assert!(parse_action(&json!({"kind":"reboot"}), false).is_err());
    }
}
