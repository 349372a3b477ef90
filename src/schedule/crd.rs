//! The `DropletActionSchedule` custom resource: a DropletAction template run on a cron schedule, like a CronJob
//! runs Jobs.
//!
//! `spec.template.spec` is a full [`DropletActionSpec`], so the template carries the same schema and CEL rules
//! as a DropletAction (minus the immutability rule: a schedule's template may be edited; each child is immutable).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::DropletActionSpec;

/// Desired schedule. A DropletActionSchedule creates one DropletAction from its template for every slot of its
/// cron schedule (exactly one per slot, even across operator restarts and with several replicas), keeps a few
/// finished ones, and for snapshot templates deletes the snapshots it made beyond its retention.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "droplet-operator.dev",
    version = "v1alpha1",
    kind = "DropletActionSchedule",
    plural = "dropletactionschedules",
    singular = "dropletactionschedule",
    shortname = "das",
    category = "digitalocean",
    namespaced,
    status = "DropletActionScheduleStatus",
    derive = "PartialEq",
    doc = "DropletActionSchedule creates a DropletAction from its template at every slot of a cron schedule (nightly snapshots with retention, weekly reboots, ...), exactly once per slot.",
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron expression"
    ),
    printcolumn(
        name = "Suspend",
        type_ = "boolean",
        json_path = ".spec.suspend",
        description = "Whether new slots are skipped"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.activeCount",
        description = "Unfinished DropletActions of this schedule"
    ),
    printcolumn(
        name = "Last",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        description = "The last slot a DropletAction was created for"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "The next slot"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.schedule.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*,/?-]+( +[0-9A-Za-z*,/?-]+){4})$')").message("spec.schedule must be a 5-field cron expression (minute hour day-of-month month day-of-week), for example \"0 2 * * *\" for 02:00 every day, or one of @hourly, @daily, @weekly, @monthly, @yearly; set the time zone in spec.timeZone, not in the expression"),
    validation = Rule::new("!has(self.timeZone) || self.timeZone.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')").message("spec.timeZone must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC"),
    validation = Rule::new("!has(self.retention) || self.template.spec.type == 'snapshot'").message("spec.retention is only valid when spec.template.spec.type is snapshot: remove it"),
    validation = Rule::new("!has(self.retention) || has(self.retention.keepLast) || has(self.retention.maxAgeDays)").message("spec.retention needs keepLast, maxAgeDays or both, for example keepLast: 7")
)]
#[serde(rename_all = "camelCase")]
pub struct DropletActionScheduleSpec {
    /// When to act: a standard 5-field cron expression (minute hour day-of-month month day-of-week, for example
    /// "0 2 * * *" for 02:00 every day, "0 4 * * SUN" for Sundays at 04:00), or @hourly, @daily (= @midnight),
    /// @weekly, @monthly, @yearly (= @annually). Evaluated in spec.timeZone.
    #[schemars(length(min = 1, max = 200))]
    pub schedule: String,

    /// IANA time zone the schedule is evaluated in, for example Europe/Berlin. Default: UTC. Like a CronJob, a
    /// slot whose wall-clock time does not exist on a spring-forward day is skipped that day, and a slot in the
    /// repeated hour of a fall-back day runs once for each time that wall-clock time occurs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// When true, slots are skipped (with a Skipped event) and no DropletAction is created. Running children are
    /// not affected. A slot skipped while suspended is not run later.
    #[serde(default)]
    pub suspend: bool,

    /// A slot that could not start within this many seconds of its time (operator down, concurrency) is skipped,
    /// not run late. Each child also gets notAfter = slot + this, so it never acts later. Default: the smaller
    /// of one hour and the time to the following slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,

    /// Forbid (default): a slot waits while an earlier child is unfinished, and is skipped if that lasts past its
    /// starting deadline. Allow: children may run concurrently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,

    /// Succeeded children kept (older ones are deleted). Default 3. The newest child is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_history_limit: Option<i32>,

    /// Failed or Expired children kept (older ones are deleted). Default 1. The newest child is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_history_limit: Option<i32>,

    /// snapshot templates only: which snapshots made by this schedule's own children to keep. Snapshots that
    /// this schedule did not create are never deleted. Needs a token with the image:delete scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,

    /// The DropletAction created for each slot.
    pub template: DropletActionTemplate,
}

/// Concurrency policy of a schedule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ConcurrencyPolicy {
    /// A slot waits while an earlier child is unfinished (and is skipped after its starting deadline).
    #[default]
    Forbid,
    /// Children may run at the same time.
    Allow,
}

/// Snapshot retention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest this many snapshots made by this schedule; delete older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last: Option<i32>,
    /// Delete snapshots made by this schedule whose slot is older than this many days. The newest snapshot is
    /// always kept, so a schedule that stopped producing snapshots never deletes its last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub max_age_days: Option<i32>,
}

/// Template of the DropletAction created for each slot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DropletActionTemplate {
    /// Labels and annotations copied onto each DropletAction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The DropletAction spec, validated by the same rules as a DropletAction. notAfter is set to the slot plus
    /// the starting deadline (or left as written here when that is earlier).
    pub spec: DropletActionSpec,
}

/// Labels and annotations for the children.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of each DropletAction (droplet-operator.dev/schedule is added).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of each DropletAction (droplet-operator.dev/scheduled-at is added).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DropletActionScheduleStatus {
    /// Ready (True while the schedule works), Reconciling (True while a slot waits for the previous child) and
    /// Stalled (True when the schedule or time zone is invalid, or retention is refused), kstatus-compatible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last slot a DropletAction was created for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last child that succeeded finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// The next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The last slot that was skipped (suspended, missed its starting deadline, or Forbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped_time: Option<Time>,
    /// Why the last skipped slot was skipped (Suspended, MissedStartingDeadline, ConcurrencyForbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped_reason: Option<String>,
    /// Unfinished children.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ChildRef>,
    /// Number of unfinished children (for kubectl get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_count: Option<i32>,
    /// Snapshots made by this schedule's children and not deleted by retention, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<OwnSnapshot>,
    /// The most recent retention deletions (at most 20), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_snapshots: Vec<DeletedSnapshot>,
}

/// A child DropletAction.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildRef {
    /// Name of the DropletAction.
    pub name: String,
    /// The slot it was created for.
    pub scheduled_time: Time,
}

/// A snapshot image made by one of this schedule's children.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnSnapshot {
    /// DigitalOcean image ID.
    pub image_id: i64,
    /// The DropletAction that made it.
    pub child: String,
    /// That child's slot.
    pub scheduled_time: Time,
}

/// A snapshot deleted by retention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedSnapshot {
    /// DigitalOcean image ID.
    pub image_id: i64,
    /// The DropletAction that made it.
    pub child: String,
    /// When it was deleted (or found already gone).
    pub deleted_at: Time,
    /// keepLast or maxAgeDays.
    pub rule: String,
}

/// The CustomResourceDefinition of `DropletActionSchedule`, as installed: descriptions reflowed like the
/// DropletAction CRD, and the template's spec without DropletAction's immutability rule.
pub fn definition()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = DropletActionSchedule::crd();
    for version in crd.spec.versions.iter_mut() {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            crate::crd::reflow(schema);
            // The shared conditions schema describes DropletAction's conditions; say what they mean here.
            if let Some(conditions) = schema
                .properties
                .as_mut()
                .and_then(|p| p.get_mut("status"))
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("conditions"))
            {
                conditions.description = Some(
                    "Ready (True while the schedule works), Reconciling (True while a slot waits for the previous child) and Stalled (True when the schedule or time zone is invalid, or retention is refused), kstatus-compatible."
                        .into(),
                );
            }
            let template_spec = schema
                .properties
                .as_mut()
                .and_then(|p| p.get_mut("spec"))
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("template"))
                .and_then(|t| t.properties.as_mut())
                .and_then(|p| p.get_mut("spec"));
            if let Some(rules) = template_spec.and_then(|s| s.x_kubernetes_validations.as_mut()) {
                rules.retain(|r| r.rule != "self == oldSelf");
            }
        }
    }
    crd
}

/// The CRD as YAML, as `droplet-operator crd` prints it after the DropletAction CRD.
pub fn crd_yaml() -> String {
    match serde_saphyr::to_string(&definition()) {
        Ok(yaml) => yaml,
        // Serializing a value built from static types cannot fail short of a bug in the serializer.
        Err(e) => panic!("CRD serialization failed: {e}"),
    }
}
