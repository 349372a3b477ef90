//! Droplet action request bodies, exactly as DigitalOcean documents them per type.
//!
//! Sixteen types (`resources/droplets/models/droplet_actions.yml`); eight of them may be
//! sent by tag. Bodies carry only the documented fields: no read-only backup fields
//! (`window_length_hours`, `retention_period_days`), `restore.image` and
//! `change_kernel.kernel` as integers, `rebuild.image` as an integer ID or a string
//! slug, `resize.disk` as a JSON boolean. The by-tag body schema is the plain
//! `droplet_action` (or `droplet_action_snapshot`), so a by-tag `enable_backups`
//! carries no `backup_policy`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Why a request cannot be sent as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The type cannot be applied by tag (DigitalOcean allows only eight).
    #[error("action type {0} cannot be applied by tag")]
    NotAllowedByTag(&'static str),
    /// A by-tag enable_backups cannot carry a backup policy.
    #[error(
        "enable_backups by tag takes no backup_policy (DigitalOcean's by-tag body is plain droplet_action); set the policy per droplet"
    )]
    PolicyNotAllowedByTag,
    /// A field breaks one of DigitalOcean's per-type rules.
    #[error("invalid {field} for {action}: {reason}")]
    InvalidField {
        /// The action type.
        action: &'static str,
        /// The offending body field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Backup plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupPlan {
    /// Daily backups (DigitalOcean's default).
    Daily,
    /// Weekly backups.
    Weekly,
}

/// Backup weekday, serialized as DigitalOcean's three-letter upper-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Weekday {
    /// Sunday
    Sun,
    /// Monday
    Mon,
    /// Tuesday
    Tue,
    /// Wednesday
    Wed,
    /// Thursday
    Thu,
    /// Friday
    Fri,
    /// Saturday
    Sat,
}

/// The writable part of DigitalOcean's `droplet_backup_policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackupPolicy {
    /// `daily` or `weekly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<BackupPlan>,
    /// Day of the week (weekly plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<Weekday>,
    /// Start hour of the backup window: 0, 4, 8, 12, 16 or 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<u8>,
}

/// The hours DigitalOcean accepts as a backup window start.
pub const BACKUP_HOURS: [u8; 6] = [0, 4, 8, 12, 16, 20];

impl BackupPolicy {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(plan) = self.plan {
            m.insert("plan".into(), json!(plan));
        }
        if let Some(day) = self.weekday {
            m.insert("weekday".into(), json!(day));
        }
        if let Some(hour) = self.hour {
            m.insert("hour".into(), json!(hour));
        }
        Value::Object(m)
    }

    fn validate(&self, action: &'static str) -> Result<(), RequestError> {
        if let Some(h) = self.hour
            && !BACKUP_HOURS.contains(&h)
        {
            return Err(RequestError::InvalidField {
                action,
                field: "backup_policy.hour",
                reason: "must be one of 0, 4, 8, 12, 16, 20",
            });
        }
        if self.weekday.is_some() && self.plan != Some(BackupPlan::Weekly) {
            return Err(RequestError::InvalidField {
                action,
                field: "backup_policy.weekday",
                reason: "only applies to plan weekly",
            });
        }
        Ok(())
    }
}

/// An image for `rebuild`: a numeric ID or a public image slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageRef {
    /// Image ID (sent as a JSON integer).
    Id(i64),
    /// Image slug such as `ubuntu-24-04-x64` (sent as a JSON string).
    Slug(String),
}

/// One droplet action, one variant per DigitalOcean type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionRequest {
    /// `enable_backups`; without a policy DigitalOcean defaults to daily.
    EnableBackups {
        /// Optional policy (single droplet only).
        policy: Option<BackupPolicy>,
    },
    /// `disable_backups`
    DisableBackups,
    /// `change_backup_policy` (policy required).
    ChangeBackupPolicy {
        /// The new policy.
        policy: BackupPolicy,
    },
    /// `reboot` (graceful; not allowed by tag).
    Reboot,
    /// `power_cycle`
    PowerCycle,
    /// `shutdown` (graceful, best effort).
    Shutdown,
    /// `power_off` (hard).
    PowerOff,
    /// `power_on`
    PowerOn,
    /// `restore` from a backup image ID of this droplet.
    Restore {
        /// Backup image ID (integer).
        image: i64,
    },
    /// `password_reset`
    PasswordReset,
    /// `resize`
    Resize {
        /// Size slug, e.g. `s-2vcpu-2gb`.
        size: String,
        /// `true` also resizes the disk (permanent).
        disk: Option<bool>,
    },
    /// `rebuild` from an image ID or slug.
    Rebuild {
        /// The base image.
        image: ImageRef,
    },
    /// `rename`
    Rename {
        /// New droplet name.
        name: String,
    },
    /// `change_kernel`
    ChangeKernel {
        /// Kernel ID.
        kernel: i64,
    },
    /// `enable_ipv6` (irreversible).
    EnableIpv6,
    /// `snapshot`
    Snapshot {
        /// Snapshot name (DigitalOcean picks one when absent).
        name: Option<String>,
    },
}

/// All sixteen type names, in DigitalOcean's table order.
pub const ALL_TYPES: [&str; 16] = [
    "enable_backups",
    "disable_backups",
    "change_backup_policy",
    "reboot",
    "power_cycle",
    "shutdown",
    "power_off",
    "power_on",
    "restore",
    "password_reset",
    "resize",
    "rebuild",
    "rename",
    "change_kernel",
    "enable_ipv6",
    "snapshot",
];

/// The eight types DigitalOcean accepts on `POST /v2/droplets/actions?tag_name=`.
pub const TAG_TYPES: [&str; 8] = [
    "enable_backups",
    "disable_backups",
    "power_cycle",
    "shutdown",
    "power_off",
    "power_on",
    "enable_ipv6",
    "snapshot",
];

impl ActionRequest {
    /// DigitalOcean's snake_case `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ActionRequest::EnableBackups { .. } => "enable_backups",
            ActionRequest::DisableBackups => "disable_backups",
            ActionRequest::ChangeBackupPolicy { .. } => "change_backup_policy",
            ActionRequest::Reboot => "reboot",
            ActionRequest::PowerCycle => "power_cycle",
            ActionRequest::Shutdown => "shutdown",
            ActionRequest::PowerOff => "power_off",
            ActionRequest::PowerOn => "power_on",
            ActionRequest::Restore { .. } => "restore",
            ActionRequest::PasswordReset => "password_reset",
            ActionRequest::Resize { .. } => "resize",
            ActionRequest::Rebuild { .. } => "rebuild",
            ActionRequest::Rename { .. } => "rename",
            ActionRequest::ChangeKernel { .. } => "change_kernel",
            ActionRequest::EnableIpv6 => "enable_ipv6",
            ActionRequest::Snapshot { .. } => "snapshot",
        }
    }

    /// Whether DigitalOcean accepts this type by tag.
    pub fn allowed_by_tag(&self) -> bool {
        TAG_TYPES.contains(&self.type_name())
    }

    /// Token scopes this type needs on the single-droplet endpoint (DigitalOcean's
    /// permission table in `dropletActions_post.yml`).
    pub fn required_scopes(&self) -> &'static [&'static str] {
        match self {
            ActionRequest::Restore { .. }
            | ActionRequest::PasswordReset
            | ActionRequest::Rebuild { .. } => &["droplet:update", "droplet:admin"],
            ActionRequest::Resize { .. } => &["droplet:update", "droplet:create"],
            ActionRequest::Snapshot { .. } => &["droplet:update", "image:create"],
            _ => &["droplet:update"],
        }
    }

    /// Scopes needed for the by-tag endpoint (adds `tag:read`).
    pub fn required_tag_scopes(&self) -> &'static [&'static str] {
        match self {
            ActionRequest::Snapshot { .. } => &["droplet:update", "tag:read", "image:create"],
            _ => &["droplet:update", "tag:read"],
        }
    }

    /// The scope most likely missing when the single-droplet POST gets a 403.
    pub fn scope_hint(&self) -> &'static str {
        match self {
            ActionRequest::Restore { .. }
            | ActionRequest::PasswordReset
            | ActionRequest::Rebuild { .. } => "droplet:admin",
            ActionRequest::Resize { .. } => "droplet:create",
            ActionRequest::Snapshot { .. } => "image:create",
            _ => "droplet:update",
        }
    }

    /// The scope most likely missing when the by-tag POST gets a 403.
    pub fn tag_scope_hint(&self) -> &'static str {
        match self {
            ActionRequest::Snapshot { .. } => "tag:read, image:create",
            _ => "tag:read",
        }
    }

    /// The JSON body for `POST /v2/droplets/{id}/actions`.
    pub fn body(&self) -> Value {
        let t = self.type_name();
        match self {
            ActionRequest::EnableBackups { policy: Some(p) } => {
                json!({"type": t, "backup_policy": p.to_json()})
            }
            ActionRequest::ChangeBackupPolicy { policy } => {
                json!({"type": t, "backup_policy": policy.to_json()})
            }
            ActionRequest::Restore { image } => json!({"type": t, "image": image}),
            ActionRequest::Resize { size, disk } => match disk {
                Some(d) => json!({"type": t, "size": size, "disk": d}),
                None => json!({"type": t, "size": size}),
            },
            ActionRequest::Rebuild { image } => json!({"type": t, "image": image}),
            ActionRequest::Rename { name } => json!({"type": t, "name": name}),
            ActionRequest::ChangeKernel { kernel } => json!({"type": t, "kernel": kernel}),
            ActionRequest::Snapshot { name: Some(n) } => json!({"type": t, "name": n}),
            _ => json!({ "type": t }),
        }
    }

    /// The JSON body for `POST /v2/droplets/actions?tag_name=`.
    pub fn tag_body(&self) -> Result<Value, RequestError> {
        if !self.allowed_by_tag() {
            return Err(RequestError::NotAllowedByTag(self.type_name()));
        }
        if let ActionRequest::EnableBackups { policy: Some(_) } = self {
            return Err(RequestError::PolicyNotAllowedByTag);
        }
        Ok(self.body())
    }

    /// Checks DigitalOcean's per-type rules before anything is sent.
    pub fn validate(&self) -> Result<(), RequestError> {
        let action = self.type_name();
        let invalid = |field, reason| {
            Err(RequestError::InvalidField {
                action,
                field,
                reason,
            })
        };
        match self {
            ActionRequest::EnableBackups { policy: Some(p) } => p.validate(action),
            ActionRequest::ChangeBackupPolicy { policy } => {
                if policy.plan.is_none() && policy.weekday.is_none() && policy.hour.is_none() {
                    return invalid(
                        "backup_policy",
                        "must set at least one of plan, weekday, hour",
                    );
                }
                policy.validate(action)
            }
            ActionRequest::Restore { image } if *image < 1 => {
                invalid("image", "must be a backup image ID (integer >= 1)")
            }
            ActionRequest::Resize { size, .. } if size.trim().is_empty() => {
                invalid("size", "must be a size slug")
            }
            ActionRequest::Rebuild {
                image: ImageRef::Id(id),
            } if *id < 1 => invalid("image", "image ID must be >= 1"),
            ActionRequest::Rebuild {
                image: ImageRef::Slug(s),
            } if s.trim().is_empty() => invalid("image", "image slug must not be empty"),
            ActionRequest::Rename { name } => {
                if name.is_empty() || name.len() > 255 {
                    return invalid("name", "must be 1 to 255 characters");
                }
                let allowed = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
                if !name.chars().all(allowed)
                    || !name
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_ascii_alphanumeric())
                {
                    return invalid(
                        "name",
                        "may contain only letters, digits, '.' and '-', and must end with a letter or digit",
                    );
                }
                Ok(())
            }
            ActionRequest::ChangeKernel { kernel } if *kernel < 1 => {
                invalid("kernel", "must be a kernel ID (integer >= 1)")
            }
            ActionRequest::Snapshot { name: Some(n) } if n.trim().is_empty() => {
                invalid("name", "must not be empty when given")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekly() -> BackupPolicy {
        BackupPolicy {
            plan: Some(BackupPlan::Weekly),
            weekday: Some(Weekday::Sun),
            hour: Some(20),
        }
    }

    /// One case per type: the request and the exact JSON DigitalOcean documents.
    fn cases() -> Vec<(ActionRequest, Value)> {
        vec![
            (
                ActionRequest::EnableBackups { policy: None },
                json!({"type": "enable_backups"}),
            ),
            (
                ActionRequest::EnableBackups {
                    policy: Some(BackupPolicy {
                        plan: Some(BackupPlan::Daily),
                        weekday: None,
                        hour: Some(4),
                    }),
                },
                json!({"type": "enable_backups", "backup_policy": {"plan": "daily", "hour": 4}}),
            ),
            (
                ActionRequest::DisableBackups,
                json!({"type": "disable_backups"}),
            ),
            (
                ActionRequest::ChangeBackupPolicy { policy: weekly() },
                json!({"type": "change_backup_policy",
                       "backup_policy": {"plan": "weekly", "weekday": "SUN", "hour": 20}}),
            ),
            (ActionRequest::Reboot, json!({"type": "reboot"})),
            (ActionRequest::PowerCycle, json!({"type": "power_cycle"})),
            (ActionRequest::Shutdown, json!({"type": "shutdown"})),
            (ActionRequest::PowerOff, json!({"type": "power_off"})),
            (ActionRequest::PowerOn, json!({"type": "power_on"})),
            (
                ActionRequest::Restore { image: 12389723 },
                json!({"type": "restore", "image": 12389723}),
            ),
            (
                ActionRequest::PasswordReset,
                json!({"type": "password_reset"}),
            ),
            (
                ActionRequest::Resize {
                    size: "s-2vcpu-2gb".into(),
                    disk: Some(true),
                },
                json!({"type": "resize", "size": "s-2vcpu-2gb", "disk": true}),
            ),
            (
                ActionRequest::Resize {
                    size: "s-1vcpu-1gb".into(),
                    disk: None,
                },
                json!({"type": "resize", "size": "s-1vcpu-1gb"}),
            ),
            (
                ActionRequest::Rebuild {
                    image: ImageRef::Slug("ubuntu-20-04-x64".into()),
                },
                json!({"type": "rebuild", "image": "ubuntu-20-04-x64"}),
            ),
            (
                ActionRequest::Rebuild {
                    image: ImageRef::Id(6372321),
                },
                json!({"type": "rebuild", "image": 6372321}),
            ),
            (
                ActionRequest::Rename {
                    name: "nifty-new-name".into(),
                },
                json!({"type": "rename", "name": "nifty-new-name"}),
            ),
            (
                ActionRequest::ChangeKernel { kernel: 12389723 },
                json!({"type": "change_kernel", "kernel": 12389723}),
            ),
            (ActionRequest::EnableIpv6, json!({"type": "enable_ipv6"})),
            (
                ActionRequest::Snapshot {
                    name: Some("Nifty New Snapshot".into()),
                },
                json!({"type": "snapshot", "name": "Nifty New Snapshot"}),
            ),
            (
                ActionRequest::Snapshot { name: None },
                json!({"type": "snapshot"}),
            ),
        ]
    }

    #[test]
    fn body_per_type_is_exact() {
        let mut seen = std::collections::BTreeSet::new();
        for (req, expected) in cases() {
            assert_eq!(req.body(), expected, "{}", req.type_name());
            assert_eq!(req.validate(), Ok(()), "{}", req.type_name());
            seen.insert(req.type_name());
        }
        assert_eq!(seen.len(), 16, "every type has a case");
        for t in ALL_TYPES {
            assert!(seen.contains(t), "{t}");
        }
    }

    #[test]
    fn types_are_literal_json_scalars() {
        let b = ActionRequest::Resize {
            size: "x".into(),
            disk: Some(false),
        }
        .body();
        assert!(b["disk"].is_boolean());
        assert!(ActionRequest::Restore { image: 5 }.body()["image"].is_i64());
        assert!(ActionRequest::ChangeKernel { kernel: 5 }.body()["kernel"].is_i64());
    }

    #[test]
    fn backup_policy_never_carries_read_only_fields() {
        let s = ActionRequest::ChangeBackupPolicy { policy: weekly() }
            .body()
            .to_string();
        assert!(!s.contains("window_length_hours"));
        assert!(!s.contains("retention_period_days"));
    }

    #[test]
    fn tag_rules() {
        let mut allowed = vec![];
        for (req, _) in cases() {
            if req.allowed_by_tag() {
                allowed.push(req.type_name());
            }
        }
        allowed.dedup();
        assert_eq!(allowed, TAG_TYPES.to_vec());
        assert_eq!(
            ActionRequest::Reboot.tag_body(),
            Err(RequestError::NotAllowedByTag("reboot"))
        );
        assert_eq!(
            ActionRequest::EnableBackups { policy: None }.tag_body(),
            Ok(json!({"type": "enable_backups"}))
        );
        assert_eq!(
            ActionRequest::EnableBackups {
                policy: Some(weekly())
            }
            .tag_body(),
            Err(RequestError::PolicyNotAllowedByTag)
        );
        assert_eq!(
            ActionRequest::Snapshot {
                name: Some("n".into())
            }
            .tag_body(),
            Ok(json!({"type": "snapshot", "name": "n"}))
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(
            ActionRequest::PasswordReset.required_scopes(),
            &["droplet:update", "droplet:admin"]
        );
        assert_eq!(
            ActionRequest::Resize {
                size: "s".into(),
                disk: None
            }
            .scope_hint(),
            "droplet:create"
        );
        assert_eq!(
            ActionRequest::Snapshot { name: None }.scope_hint(),
            "image:create"
        );
        assert_eq!(ActionRequest::PowerOn.tag_scope_hint(), "tag:read");
    }

    #[test]
    fn per_type_rules_reject_bad_fields() {
        let bad = [
            ActionRequest::ChangeBackupPolicy {
                policy: BackupPolicy::default(),
            },
            ActionRequest::EnableBackups {
                policy: Some(BackupPolicy {
                    plan: Some(BackupPlan::Daily),
                    weekday: None,
                    hour: Some(3),
                }),
            },
            ActionRequest::EnableBackups {
                policy: Some(BackupPolicy {
                    plan: Some(BackupPlan::Daily),
                    weekday: Some(Weekday::Mon),
                    hour: None,
                }),
            },
            ActionRequest::Restore { image: 0 },
            ActionRequest::Resize {
                size: " ".into(),
                disk: None,
            },
            ActionRequest::Rebuild {
                image: ImageRef::Slug(String::new()),
            },
            ActionRequest::Rebuild {
                image: ImageRef::Id(-1),
            },
            ActionRequest::Rename {
                name: "bad name".into(),
            },
            ActionRequest::Rename {
                name: "trailing-".into(),
            },
            ActionRequest::Rename {
                name: "a".repeat(256),
            },
            ActionRequest::ChangeKernel { kernel: 0 },
            ActionRequest::Snapshot {
                name: Some(String::new()),
            },
        ];
        for req in bad {
            assert!(req.validate().is_err(), "{req:?}");
        }
        assert!(
            ActionRequest::Rename {
                name: "web-01.example.com".into()
            }
            .validate()
            .is_ok()
        );
    }
}
