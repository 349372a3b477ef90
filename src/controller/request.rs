//! From a DropletAction spec to the DigitalOcean request body.

use crate::crd::IntOrString;

use crate::crd::{self, ActionType, DropletActionSpec};
use crate::digitalocean::{ActionRequest, BackupPlan, BackupPolicy, ImageRef, Weekday};

fn policy(p: &crd::BackupPolicy) -> BackupPolicy {
    BackupPolicy {
        plan: Some(match p.plan {
            crd::BackupPlan::Daily => BackupPlan::Daily,
            crd::BackupPlan::Weekly => BackupPlan::Weekly,
        }),
        weekday: p.weekday.map(|w| match w {
            crd::Weekday::Sun => Weekday::Sun,
            crd::Weekday::Mon => Weekday::Mon,
            crd::Weekday::Tue => Weekday::Tue,
            crd::Weekday::Wed => Weekday::Wed,
            crd::Weekday::Thu => Weekday::Thu,
            crd::Weekday::Fri => Weekday::Fri,
            crd::Weekday::Sat => Weekday::Sat,
        }),
        hour: p.hour.and_then(|h| u8::try_from(h).ok()),
    }
}

fn image(spec: &DropletActionSpec) -> Option<ImageRef> {
    match spec.image.as_ref()? {
        IntOrString::Int(i) => Some(ImageRef::Id(*i)),
        IntOrString::String(s) => match s.parse::<i64>() {
            Ok(id) => Some(ImageRef::Id(id)),
            Err(_) => Some(ImageRef::Slug(s.clone())),
        },
    }
}

/// The request for `type_` (the spec's own type, or power_off for the shutdown fallback). Admission guarantees
/// the parameters; a spec that slipped past it (for example created before the CRD was installed) gets an error
/// naming the missing field.
pub fn action_request(
    spec: &DropletActionSpec,
    type_: ActionType,
) -> Result<ActionRequest, String> {
    let missing = |field: &str| format!("spec.{field} is required for type {type_}");
    Ok(match type_ {
        ActionType::EnableBackups => ActionRequest::EnableBackups {
            policy: spec.backup_policy.as_ref().map(policy),
        },
        ActionType::DisableBackups => ActionRequest::DisableBackups,
        ActionType::ChangeBackupPolicy => ActionRequest::ChangeBackupPolicy {
            policy: spec
                .backup_policy
                .as_ref()
                .map(policy)
                .ok_or_else(|| missing("backupPolicy"))?,
        },
        ActionType::Reboot => ActionRequest::Reboot,
        ActionType::PowerCycle => ActionRequest::PowerCycle,
        ActionType::Shutdown => ActionRequest::Shutdown,
        ActionType::PowerOff => ActionRequest::PowerOff,
        ActionType::PowerOn => ActionRequest::PowerOn,
        ActionType::Restore => match image(spec) {
            Some(ImageRef::Id(id)) => ActionRequest::Restore { image: id },
            _ => return Err("spec.image must be an integer image ID for type restore".into()),
        },
        ActionType::PasswordReset => ActionRequest::PasswordReset,
        ActionType::Resize => ActionRequest::Resize {
            size: spec.size.clone().ok_or_else(|| missing("size"))?,
            disk: spec.disk,
        },
        ActionType::Rebuild => ActionRequest::Rebuild {
            image: image(spec).ok_or_else(|| missing("image"))?,
        },
        ActionType::Rename => ActionRequest::Rename {
            name: spec.name.clone().ok_or_else(|| missing("name"))?,
        },
        ActionType::ChangeKernel => ActionRequest::ChangeKernel {
            kernel: spec.kernel.ok_or_else(|| missing("kernel"))?,
        },
        ActionType::EnableIpv6 => ActionRequest::EnableIpv6,
        ActionType::Snapshot => ActionRequest::Snapshot {
            name: spec.name.clone(),
        },
    })
}
