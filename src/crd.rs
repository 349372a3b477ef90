//! The `DropletAction` custom resource: one DigitalOcean droplet action, declared as a Kubernetes object.
//!
//! The spec mirrors DigitalOcean's request body (`POST /v2/droplets/{id}/actions`) in camelCase. Which
//! parameters belong to which action `type` is enforced at admission by the CRD's structural schema and the
//! CEL rules declared here (`x-kubernetes-validations`), each with a message that names the field and the fix.
//! The spec is immutable: one resource is one action.
//!
//! The status is written only by the controller through the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The API group of every resource this operator serves.
pub const GROUP: &str = "droplet-operator.dev";
/// The API version of `DropletAction`.
pub const VERSION: &str = "v1alpha1";
/// The field manager used for every write the controller makes.
pub const FIELD_MANAGER: &str = "droplet-operator";

/// The largest DigitalOcean ID (droplet, image, kernel) the CRD admits: 2^53 - 1, the largest integer every JSON
/// reader (and CEL) represents exactly. Every admitted ID fits in an `i64`.
pub const MAX_ID: i64 = 9_007_199_254_740_991;
/// The longest `deadlineSeconds` the CRD admits: 30 days.
pub const MAX_DEADLINE_SECONDS: i64 = 30 * 24 * 3600;
/// The longest `powerOffAfterSeconds` the CRD admits: 1 day.
pub const MAX_POWER_OFF_AFTER_SECONDS: i64 = 24 * 3600;
/// The longest `ttlSecondsAfterFinished` the CRD admits: 1 year.
pub const MAX_TTL_SECONDS_AFTER_FINISHED: i64 = 365 * 24 * 3600;
/// The longest image slug the CRD admits.
pub const MAX_IMAGE_SLUG_LEN: u32 = 255;

/// The eight action types DigitalOcean accepts on `POST /v2/droplets/actions?tag_name=`.
pub const BY_TAG_TYPES: [ActionType; 8] = [
    ActionType::EnableBackups,
    ActionType::DisableBackups,
    ActionType::PowerCycle,
    ActionType::Shutdown,
    ActionType::PowerOff,
    ActionType::PowerOn,
    ActionType::EnableIpv6,
    ActionType::Snapshot,
];

/// Desired action. A DropletAction runs one DigitalOcean droplet action (against one droplet, or every droplet
/// with a tag) exactly once and reports its progress in status. The spec cannot be changed after creation:
/// create a new DropletAction to act again.
// NB: several printcolumn(...) entries share `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "droplet-operator.dev",
    version = "v1alpha1",
    kind = "DropletAction",
    plural = "dropletactions",
    singular = "dropletaction",
    shortname = "da",
    category = "digitalocean",
    namespaced,
    status = "DropletActionStatus",
    derive = "PartialEq",
    doc = "DropletAction runs one DigitalOcean droplet action (reboot, snapshot, resize, power off, ...) against one droplet or every droplet with a tag, exactly once, and reports its progress in status. Create a new DropletAction to act again.",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.type",
        description = "The DigitalOcean action type"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.target",
        description = "droplet/<id> or tag/<name>"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed or Expired"
    ),
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".status.actionSummary",
        description = "DigitalOcean action ID, or completed/total for tags"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1,
        description = "What the controller is doing or why it stopped"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec is immutable: a DropletAction records exactly one action. To act again, create a new DropletAction (a new metadata.name, or use metadata.generateName)"),
    validation = Rule::new("has(self.dropletId) || has(self.tagName)").message("spec must name a target: set spec.dropletId (one droplet) or spec.tagName (every droplet with that tag)"),
    validation = Rule::new("!(has(self.dropletId) && has(self.tagName))").message("spec.dropletId and spec.tagName are mutually exclusive: set only one of them"),
    validation = Rule::new("!has(self.tagName) || self.type in ['enable_backups', 'disable_backups', 'power_cycle', 'shutdown', 'power_off', 'power_on', 'enable_ipv6', 'snapshot']").message("spec.tagName can only be used with the by-tag types enable_backups, disable_backups, power_cycle, shutdown, power_off, power_on, enable_ipv6 and snapshot: for this spec.type use spec.dropletId"),
    validation = Rule::new("self.type != 'resize' || has(self.size)").message("spec.size is required when spec.type is resize: set a size slug such as s-2vcpu-4gb"),
    validation = Rule::new("self.type != 'rename' || has(self.name)").message("spec.name is required when spec.type is rename: set the droplet's new name"),
    validation = Rule::new("self.type != 'rebuild' || has(self.image)").message("spec.image is required when spec.type is rebuild: set an image slug such as ubuntu-24-04-x64 or an image ID"),
    validation = Rule::new("self.type != 'restore' || has(self.image)").message("spec.image is required when spec.type is restore: set the integer ID of one of the droplet's backups or snapshots"),
    validation = Rule::new("self.type != 'restore' || !has(self.image) || string(self.image).matches('^[0-9]+$')").message("spec.image must be an integer image ID when spec.type is restore: DigitalOcean restores only from a backup or snapshot ID, not from a slug"),
    validation = Rule::new("!has(self.image) || string(self.image) != '0'").message("spec.image must be a positive image ID or an image slug"),
    validation = Rule::new("!has(self.image) || string(self.image).matches('^[a-z0-9][a-z0-9.-]*$')").message("spec.image must be an image ID or a lowercase image slug (letters, digits, '.' and '-', for example ubuntu-24-04-x64)"),
    validation = Rule::new("self.type != 'change_kernel' || has(self.kernel)").message("spec.kernel is required when spec.type is change_kernel: set the kernel ID"),
    validation = Rule::new("self.type != 'change_backup_policy' || has(self.backupPolicy)").message("spec.backupPolicy is required when spec.type is change_backup_policy"),
    validation = Rule::new("!has(self.size) || self.type == 'resize'").message("spec.size is only valid when spec.type is resize: remove it"),
    validation = Rule::new("!has(self.disk) || self.type == 'resize'").message("spec.disk is only valid when spec.type is resize: remove it"),
    validation = Rule::new("!has(self.image) || self.type in ['rebuild', 'restore']").message("spec.image is only valid when spec.type is rebuild or restore: remove it"),
    validation = Rule::new("!has(self.name) || self.type in ['rename', 'snapshot']").message("spec.name is only valid when spec.type is rename or snapshot: remove it"),
    validation = Rule::new("!has(self.kernel) || self.type == 'change_kernel'").message("spec.kernel is only valid when spec.type is change_kernel: remove it"),
    validation = Rule::new("!has(self.backupPolicy) || self.type in ['enable_backups', 'change_backup_policy']").message("spec.backupPolicy is only valid when spec.type is enable_backups or change_backup_policy: remove it"),
    validation = Rule::new("!(has(self.backupPolicy) && has(self.tagName))").message("spec.backupPolicy cannot be combined with spec.tagName: DigitalOcean's by-tag enable_backups takes no policy. Remove backupPolicy (backups default to daily) or target one droplet with spec.dropletId"),
    validation = Rule::new("!has(self.powerOffAfterSeconds) || self.type == 'shutdown'").message("spec.powerOffAfterSeconds is only valid when spec.type is shutdown: remove it"),
    validation = Rule::new("self.type != 'rename' || !has(self.name) || self.name.matches('^[a-zA-Z0-9]?[a-zA-Z0-9.-]*[a-zA-Z0-9]$')").message("spec.name must be a valid hostname for rename: letters, digits, '.' and '-', starting and ending with a letter or digit"),
    validation = Rule::new("!has(self.deadlineSeconds) || !has(self.powerOffAfterSeconds) || self.powerOffAfterSeconds < self.deadlineSeconds").message("spec.powerOffAfterSeconds must be less than spec.deadlineSeconds, or the power_off fallback could never run")
)]
#[serde(rename_all = "camelCase")]
pub struct DropletActionSpec {
    /// ID of the droplet to act on. Exactly one of dropletId and tagName must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_ID))]
    pub droplet_id: Option<i64>,

    /// Act on every droplet that has this DigitalOcean tag (one DigitalOcean action per droplet). Only the
    /// by-tag types are allowed: enable_backups, disable_backups, power_cycle, shutdown, power_off, power_on,
    /// enable_ipv6 and snapshot. Exactly one of dropletId and tagName must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-zA-Z0-9_:\-]+$"))]
    pub tag_name: Option<String>,

    /// The DigitalOcean droplet action to run. Parameters that belong to other types are rejected.
    #[serde(rename = "type")]
    pub type_: ActionType,

    /// Backup schedule. Optional for enable_backups (DigitalOcean defaults to a daily plan when it is
    /// omitted), required for change_backup_policy, not allowed otherwise or with tagName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_policy: Option<BackupPolicy>,

    /// resize only (required): the new size slug, for example s-2vcpu-4gb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub size: Option<String>,

    /// resize only: when true, the disk is resized too. This is PERMANENT: a droplet whose disk was
    /// enlarged can never be resized back to a smaller size. When false or omitted only CPU and memory change,
    /// which can be reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<bool>,

    /// rebuild (required): an image slug such as ubuntu-24-04-x64, or an integer image ID. restore
    /// (required): the integer ID of one of this droplet's backups or snapshots (slugs are rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "image_schema")]
    pub image: Option<IntOrString>,

    /// rename (required): the droplet's new name (a hostname: letters, digits, '.' and '-'). snapshot
    /// (optional): the name of the new snapshot image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,

    /// change_kernel (required): the ID of the kernel to boot (only for droplets with externally managed
    /// kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_ID))]
    pub kernel: Option<i64>,

    /// Secret in this namespace that holds the DigitalOcean API token. When omitted the operator's default
    /// token is used. The token is never written to status, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<TokenSecretRef>,

    /// Stop tracking after this many seconds (at most 2592000, 30 days) from when the controller first saw the
    /// resource: the phase becomes Failed with reason DeadlineExceeded. DigitalOcean cannot cancel an action, so an action that
    /// already started keeps running on DigitalOcean's side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_DEADLINE_SECONDS))]
    pub deadline_seconds: Option<i64>,

    /// How many times to initiate the action again after DigitalOcean reports it errored. Default 0 (no
    /// retry). Transient API errors (rate limits, 5xx, network) are always retried and do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: Option<i32>,

    /// shutdown only: when the graceful shutdown has not completed after this many seconds, or errored,
    /// issue a hard power_off (DigitalOcean's recommended pattern). At most 86400 (1 day). Both actions appear in status.actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_POWER_OFF_AFTER_SECONDS))]
    pub power_off_after_seconds: Option<i64>,

    /// Delete this DropletAction this many seconds after it finished (Succeeded, Failed or Expired), like
    /// Jobs. Unset: keep it forever. 0: delete as soon as it finished. At most 31536000 (1 year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_TTL_SECONDS_AFTER_FINISHED))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Never initiate the action after this time (RFC 3339). Protects against a GitOps re-apply or a cluster
    /// restore re-running an old action: past this time the phase becomes Expired and nothing is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
}

/// An integer or a string, like Kubernetes' `IntOrString` (same schema, `x-kubernetes-int-or-string`), but the
/// integer is an `i64`: DigitalOcean image IDs do not fit in the `i32` of `k8s_openapi`'s type, and every value
/// the CRD admits must be readable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    /// An integer (an image ID).
    Int(i64),
    /// A string (an image slug, or an ID written as a string).
    String(String),
}

fn image_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        // No minimum: the CEL rules reject 0 and negative IDs with a message that says what to set.
        "maximum": MAX_ID,
        "maxLength": MAX_IMAGE_SLUG_LEN,
        "description": "rebuild (required): an image slug such as ubuntu-24-04-x64, or an integer image ID. restore (required): the integer ID of one of this droplet's backups or snapshots (slugs are rejected).",
    })
}

/// DigitalOcean droplet action types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    EnableBackups,
    DisableBackups,
    ChangeBackupPolicy,
    Reboot,
    PowerCycle,
    Shutdown,
    PowerOff,
    PowerOn,
    Restore,
    PasswordReset,
    Resize,
    Rebuild,
    Rename,
    ChangeKernel,
    #[serde(rename = "enable_ipv6")]
    EnableIpv6,
    Snapshot,
}

impl ActionType {
    /// Every action type, in the order of the documentation.
    pub const ALL: [ActionType; 16] = [
        ActionType::EnableBackups,
        ActionType::DisableBackups,
        ActionType::ChangeBackupPolicy,
        ActionType::Reboot,
        ActionType::PowerCycle,
        ActionType::Shutdown,
        ActionType::PowerOff,
        ActionType::PowerOn,
        ActionType::Restore,
        ActionType::PasswordReset,
        ActionType::Resize,
        ActionType::Rebuild,
        ActionType::Rename,
        ActionType::ChangeKernel,
        ActionType::EnableIpv6,
        ActionType::Snapshot,
    ];

    /// DigitalOcean's name of the type (`snake_case`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::EnableBackups => "enable_backups",
            ActionType::DisableBackups => "disable_backups",
            ActionType::ChangeBackupPolicy => "change_backup_policy",
            ActionType::Reboot => "reboot",
            ActionType::PowerCycle => "power_cycle",
            ActionType::Shutdown => "shutdown",
            ActionType::PowerOff => "power_off",
            ActionType::PowerOn => "power_on",
            ActionType::Restore => "restore",
            ActionType::PasswordReset => "password_reset",
            ActionType::Resize => "resize",
            ActionType::Rebuild => "rebuild",
            ActionType::Rename => "rename",
            ActionType::ChangeKernel => "change_kernel",
            ActionType::EnableIpv6 => "enable_ipv6",
            ActionType::Snapshot => "snapshot",
        }
    }

    /// Parses DigitalOcean's name of a type.
    pub fn parse(s: &str) -> Option<ActionType> {
        ActionType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether DigitalOcean accepts this type by tag.
    pub fn allowed_by_tag(self) -> bool {
        BY_TAG_TYPES.contains(&self)
    }
}

impl std::fmt::Display for ActionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup schedule (DigitalOcean `backup_policy`). DigitalOcean's read-only fields (window_length_hours,
/// retention_period_days) are not part of it and never sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.weekday) || self.plan == 'weekly'").message("spec.backupPolicy.weekday is only used when plan is weekly: remove weekday, or set plan: weekly"),
    validation = Rule::new("self.plan != 'weekly' || has(self.weekday)").message("spec.backupPolicy.weekday is required when plan is weekly: set one of SUN, MON, TUE, WED, THU, FRI, SAT")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    /// How often backups run: daily or weekly.
    pub plan: BackupPlan,
    /// Day of the week for weekly backups (SUN..SAT). Required with plan weekly, not allowed with daily.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<Weekday>,
    /// Start hour (UTC) of the 4-hour backup window: one of 0, 4, 8, 12, 16, 20. When omitted DigitalOcean
    /// chooses the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "backup_hour_schema")]
    pub hour: Option<i32>,
}

fn backup_hour_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "enum": [0, 4, 8, 12, 16, 20],
        "description": "Start hour (UTC) of the 4-hour backup window: one of 0, 4, 8, 12, 16, 20. When omitted DigitalOcean chooses the window."
    })
}

/// Backup plan.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupPlan {
    Daily,
    Weekly,
}

/// Day of the week for weekly backups.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Weekday {
    Sun,
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
}

/// Reference to the Secret (in the DropletAction's namespace) that holds a DigitalOcean API token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// Name of the Secret, in the same namespace as the DropletAction.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data that holds the token. Default: token.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_string()
}

/// Lifecycle phase of a DropletAction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Phase {
    /// Accepted and waiting: for its token, for the droplet to be free, for the rate budget or a retry.
    #[default]
    Pending,
    /// Initiated on DigitalOcean; tracking the action(s) until they finish.
    Running,
    /// Every DigitalOcean action completed.
    Succeeded,
    /// An action errored (after backoffLimit re-initiations), the deadline passed, or DigitalOcean refused
    /// the request permanently. See the Stalled condition and lastError.
    Failed,
    /// notAfter passed before the action was initiated; nothing was sent.
    Expired,
}

impl Phase {
    /// Succeeded, Failed and Expired are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Expired)
    }

    /// The phase as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Expired => "Expired",
        }
    }
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DropletActionStatus {
    /// Pending, Running, Succeeded, Failed or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Ready (True when Succeeded), Reconciling (True while work is in progress) and Stalled (True when
    /// Failed or Expired), kstatus-compatible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// droplet/<id> or tag/<name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,

    /// The DigitalOcean action ID (one droplet) or completed/total (several droplets), for kubectl get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_summary: Option<String>,

    /// Human-readable account of what the controller is doing or why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Machine-readable reason for the current phase (for example WaitingForDroplet, DropletBusy,
    /// TokenNotFound, Running, Succeeded, DeadlineExceeded, ActionErrored, NotAfterPassed, or DigitalOcean's error
    /// category such as Forbidden for a Failed resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// DigitalOcean actions started for this resource, one per droplet and attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,

    /// Droplets this resource acts on (for tagName: the droplets that had the tag when it was resolved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub droplet_ids: Vec<i64>,

    /// When the controller first saw this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// The resource's metadata.resourceVersion when the controller first saw it: the API server's revision at
    /// creation unless the resource was changed before. DropletActions on one droplet take turns in the order
    /// of this revision (see the README, "Order on a droplet").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_revision: Option<String>,

    /// When the resource reached Succeeded, Failed or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// How many times the action was initiated (1 + re-initiations after errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,

    /// The last error DigitalOcean returned, in its own words (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Box<LastError>>,

    /// An initiation that was recorded before the request to DigitalOcean and whose outcome is not known yet
    /// (the operator restarted, or the response was lost). The controller adopts the matching DigitalOcean
    /// action instead of sending the request again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_initiation: Option<Box<PendingInitiation>>,

    /// Transient-failure bookkeeping: the controller waits until nextAttemptTime before calling DigitalOcean
    /// again (capped exponential backoff that survives restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryState>,
}

pub(crate) fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Ready (True when Succeeded), Reconciling (True while work is in progress) and Stalled (True when Failed or Expired), kstatus-compatible.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "maxItems": 16,
        "items": {
            "type": "object",
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the condition last changed status."},
                "message": {"type": "string", "maxLength": 32768, "description": "Human-readable details."},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0, "description": "The spec generation the condition was set for."},
                "reason": {"type": "string", "maxLength": 1024, "minLength": 1, "description": "Machine-readable CamelCase reason."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown."},
                "type": {"type": "string", "maxLength": 316, "description": "Ready, Reconciling or Stalled."}
            }
        }
    })
}

/// One DigitalOcean action started for this resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// DigitalOcean action ID.
    pub id: i64,
    /// The droplet the action runs on.
    pub droplet_id: i64,
    /// The DigitalOcean action type (for shutdown with powerOffAfterSeconds, also power_off).
    #[serde(rename = "type")]
    pub type_: String,
    /// in-progress, completed or errored, as DigitalOcean reports it.
    pub status: String,
    /// Which initiation this action belongs to (1 for the first).
    #[serde(default = "one")]
    pub attempt: i32,
    /// When DigitalOcean started the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When DigitalOcean finished the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Region of the droplet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_slug: Option<String>,
    /// snapshot only: the ID of the image the snapshot created, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_image_id: Option<i64>,
    /// shutdown with powerOffAfterSeconds: the droplet's status (active, off) observed after the shutdown
    /// completed. A shutdown can complete without the droplet stopping; then power_off follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub droplet_status: Option<String>,
}

fn one() -> i32 {
    1
}

/// DigitalOcean's error, in its own words.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// HTTP status code DigitalOcean answered with (absent for network errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// DigitalOcean's error id, for example unprocessable_entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// DigitalOcean's message.
    pub message: String,
    /// DigitalOcean's request id, for support tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Stable error category (Unauthorized, Forbidden, NotFound, DropletBusy, Invalid, RateLimited,
    /// ServerError, Transport, Decode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the error happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// An initiation recorded before its request was sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingInitiation {
    /// The attempt number being initiated.
    pub attempt: i32,
    /// The DigitalOcean action type being initiated.
    #[serde(rename = "type")]
    pub type_: String,
    /// When the controller decided to send the request (before sending it).
    pub requested_at: Time,
    /// True after an ambiguous outcome (timeout, dropped connection, 5xx): the request may have been applied.
    /// False does not prove it was not sent (a crash right after sending leaves it false); either way the
    /// controller looks for the action before sending again.
    #[serde(default)]
    pub sent: bool,
    /// The droplets the request may act on (for tagName: the droplets that had the tag).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub droplet_ids: Vec<i64>,
    /// The highest DigitalOcean action ID listed before the request was sent. DigitalOcean action IDs only
    /// grow, so an action this request started has a higher ID; older ones are never adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// When the send attempt ended without a known outcome (timeout, dropped connection, 5xx). The window in
    /// which a late action may still appear is measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_ended_at: Option<Time>,
    /// True when the window passed without the action appearing: the controller stops (reason
    /// InitiationUncertain) until the droplet-operator.dev/resend or droplet-operator.dev/adopt-action-id
    /// annotation says what happened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncertain: bool,
    /// True when this intent re-sends an uncertain one (droplet-operator.dev/resend): a 422 "pending event"
    /// then means the earlier request may be running, and the controller looks for it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
}

/// Backoff state for transient failures.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryState {
    /// Consecutive transient failures.
    pub failures: i32,
    /// Do not call DigitalOcean for this resource before this time.
    pub next_attempt_time: Time,
}

impl DropletActionSpec {
    /// `droplet/<id>` or `tag/<name>`.
    pub fn target(&self) -> String {
        match (&self.droplet_id, &self.tag_name) {
            (Some(id), _) => format!("droplet/{id}"),
            (None, Some(tag)) => format!("tag/{tag}"),
            (None, None) => "none".to_string(),
        }
    }
}

impl DropletAction {
    /// The phase, Pending when unset.
    pub fn phase(&self) -> Phase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }

    /// `droplet/<id>` or `tag/<name>`.
    pub fn target(&self) -> String {
        self.spec.target()
    }
}

/// The CustomResourceDefinition of `DropletAction`, as installed: the derived one with descriptions reflowed
/// into paragraphs (doc comments are wrapped at the source width; `kubectl explain` wraps text itself).
pub fn definition()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = DropletAction::crd();
    for version in crd.spec.versions.iter_mut() {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            reflow(schema);
        }
    }
    crd
}

pub(crate) fn reflow(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    if let Some(d) = schema.description.as_mut() {
        *d = d
            .split("\n\n")
            .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        reflow(child);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) =
        schema.items.as_mut()
    {
        reflow(items);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(extra)) =
        schema.additional_properties.as_mut()
    {
        reflow(extra);
    }
}

/// The CRD as YAML, as `droplet-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let crd = definition();
    match serde_saphyr::to_string(&crd) {
        Ok(yaml) => yaml,
        // Serializing a value built from static types cannot fail short of a bug in the serializer.
        Err(e) => panic!("CRD serialization failed: {e}"),
    }
}
