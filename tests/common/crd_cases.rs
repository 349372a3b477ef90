//! DropletAction manifests and the admission verdicts we promise for them: one table, checked against the
//! emulator's validator (tests/crd.rs) and against a real kube-apiserver (tests/real_k8s.rs).
#![allow(dead_code)]

use serde_json::{Value, json};

/// A DropletAction named `x` in `default` with `spec`.
pub fn da(spec: Value) -> Value {
    json!({
        "apiVersion": "droplet-operator.dev/v1alpha1",
        "kind": "DropletAction",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": spec,
    })
}

/// Every invalid manifest: (what is wrong, spec, the field in the error, a piece of the message)
pub fn invalid_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    vec![
        (
            "missing target",
            json!({"type": "reboot"}),
            "spec",
            "spec must name a target",
        ),
        (
            "both targets",
            json!({"type": "power_off", "dropletId": 1, "tagName": "web"}),
            "spec",
            "mutually exclusive",
        ),
        (
            "unknown type",
            json!({"type": "explode", "dropletId": 1}),
            "spec.type",
            "Unsupported value: \"explode\"",
        ),
        (
            "type missing",
            json!({"dropletId": 1}),
            "spec.type",
            "Required value",
        ),
        (
            "type in camelCase",
            json!({"type": "powerOff", "dropletId": 1}),
            "spec.type",
            "supported values: \"enable_backups\"",
        ),
        (
            "reboot by tag",
            json!({"type": "reboot", "tagName": "web"}),
            "spec",
            "spec.tagName can only be used with the by-tag types",
        ),
        (
            "rename by tag",
            json!({"type": "rename", "tagName": "web", "name": "a"}),
            "spec",
            "for this spec.type use spec.dropletId",
        ),
        (
            "resize by tag",
            json!({"type": "resize", "tagName": "web", "size": "s-1vcpu-1gb"}),
            "spec",
            "by-tag types",
        ),
        (
            "restore by tag",
            json!({"type": "restore", "tagName": "db", "image": 5}),
            "spec",
            "by-tag types",
        ),
        (
            "password_reset by tag",
            json!({"type": "password_reset", "tagName": "db"}),
            "spec",
            "by-tag types",
        ),
        (
            "resize without size",
            json!({"type": "resize", "dropletId": 1}),
            "spec",
            "spec.size is required when spec.type is resize",
        ),
        (
            "rename without name",
            json!({"type": "rename", "dropletId": 1}),
            "spec",
            "spec.name is required when spec.type is rename",
        ),
        (
            "rebuild without image",
            json!({"type": "rebuild", "dropletId": 1}),
            "spec",
            "spec.image is required when spec.type is rebuild",
        ),
        (
            "restore without image",
            json!({"type": "restore", "dropletId": 1}),
            "spec",
            "spec.image is required when spec.type is restore",
        ),
        (
            "restore with a slug",
            json!({"type": "restore", "dropletId": 1, "image": "ubuntu-24-04-x64"}),
            "spec",
            "spec.image must be an integer image ID when spec.type is restore",
        ),
        (
            "change_kernel without kernel",
            json!({"type": "change_kernel", "dropletId": 1}),
            "spec",
            "spec.kernel is required",
        ),
        (
            "change_backup_policy without policy",
            json!({"type": "change_backup_policy", "dropletId": 1}),
            "spec",
            "spec.backupPolicy is required",
        ),
        (
            "size on reboot",
            json!({"type": "reboot", "dropletId": 1, "size": "s-1vcpu-1gb"}),
            "spec",
            "spec.size is only valid when spec.type is resize",
        ),
        (
            "disk on power_off",
            json!({"type": "power_off", "dropletId": 1, "disk": true}),
            "spec",
            "spec.disk is only valid",
        ),
        (
            "image on snapshot",
            json!({"type": "snapshot", "dropletId": 1, "image": 4}),
            "spec",
            "spec.image is only valid when spec.type is rebuild or restore",
        ),
        (
            "name on reboot",
            json!({"type": "reboot", "dropletId": 1, "name": "x"}),
            "spec",
            "spec.name is only valid when spec.type is rename or snapshot",
        ),
        (
            "kernel on reboot",
            json!({"type": "reboot", "dropletId": 1, "kernel": 5}),
            "spec",
            "spec.kernel is only valid",
        ),
        (
            "backupPolicy on reboot",
            json!({"type": "reboot", "dropletId": 1, "backupPolicy": {"plan": "daily"}}),
            "spec",
            "spec.backupPolicy is only valid",
        ),
        (
            "backupPolicy with tag",
            json!({"type": "enable_backups", "tagName": "web", "backupPolicy": {"plan": "daily"}}),
            "spec",
            "spec.backupPolicy cannot be combined with spec.tagName",
        ),
        (
            "powerOffAfterSeconds on reboot",
            json!({"type": "reboot", "dropletId": 1, "powerOffAfterSeconds": 30}),
            "spec",
            "spec.powerOffAfterSeconds is only valid when spec.type is shutdown",
        ),
        (
            "backup hour 5",
            json!({"type": "enable_backups", "dropletId": 1, "backupPolicy": {"plan": "daily", "hour": 5}}),
            "spec.backupPolicy.hour",
            "Unsupported value: 5",
        ),
        (
            "backup hour as string",
            json!({"type": "enable_backups", "dropletId": 1, "backupPolicy": {"plan": "daily", "hour": "4"}}),
            "spec.backupPolicy.hour",
            "must be of type integer",
        ),
        (
            "weekday XYZ",
            json!({"type": "enable_backups", "dropletId": 1, "backupPolicy": {"plan": "weekly", "weekday": "XYZ"}}),
            "spec.backupPolicy.weekday",
            "Unsupported value: \"XYZ\"",
        ),
        (
            "weekday lowercase",
            json!({"type": "enable_backups", "dropletId": 1, "backupPolicy": {"plan": "weekly", "weekday": "sun"}}),
            "spec.backupPolicy.weekday",
            "supported values: \"SUN\"",
        ),
        (
            "weekday with daily",
            json!({"type": "enable_backups", "dropletId": 1, "backupPolicy": {"plan": "daily", "weekday": "MON"}}),
            "spec.backupPolicy",
            "weekday is only used when plan is weekly",
        ),
        (
            "weekly without weekday",
            json!({"type": "change_backup_policy", "dropletId": 1, "backupPolicy": {"plan": "weekly"}}),
            "spec.backupPolicy",
            "weekday is required when plan is weekly",
        ),
        (
            "plan monthly",
            json!({"type": "enable_backups", "dropletId": 1, "backupPolicy": {"plan": "monthly"}}),
            "spec.backupPolicy.plan",
            "Unsupported value: \"monthly\"",
        ),
        (
            "policy without plan",
            json!({"type": "change_backup_policy", "dropletId": 1, "backupPolicy": {"hour": 4}}),
            "spec.backupPolicy.plan",
            "Required value",
        ),
        (
            "read-only window_length_hours",
            json!({"type": "change_backup_policy", "dropletId": 1, "backupPolicy": {"plan": "daily", "windowLengthHours": 4}}),
            "spec.backupPolicy.windowLengthHours",
            "unknown field",
        ),
        (
            "dropletId as string",
            json!({"type": "reboot", "dropletId": "101001"}),
            "spec.dropletId",
            "must be of type integer",
        ),
        (
            "dropletId zero",
            json!({"type": "reboot", "dropletId": 0}),
            "spec.dropletId",
            "should be greater than or equal to 1",
        ),
        (
            "dropletId negative",
            json!({"type": "reboot", "dropletId": -4}),
            "spec.dropletId",
            "greater than or equal to 1",
        ),
        (
            "disk as string",
            json!({"type": "resize", "dropletId": 1, "size": "s-1vcpu-1gb", "disk": "true"}),
            "spec.disk",
            "must be of type boolean",
        ),
        (
            "kernel zero",
            json!({"type": "change_kernel", "dropletId": 1, "kernel": 0}),
            "spec.kernel",
            "greater than or equal to 1",
        ),
        (
            "image as float",
            json!({"type": "rebuild", "dropletId": 1, "image": 1.5}),
            "spec.image",
            "must be of type integer,string",
        ),
        (
            "image zero",
            json!({"type": "rebuild", "dropletId": 1, "image": 0}),
            "spec",
            "positive image ID",
        ),
        (
            "image slug with spaces",
            json!({"type": "rebuild", "dropletId": 1, "image": "Ubuntu 24"}),
            "spec",
            "lowercase image slug",
        ),
        (
            "size with uppercase",
            json!({"type": "resize", "dropletId": 1, "size": "S-1VCPU"}),
            "spec.size",
            "should match",
        ),
        (
            "empty size",
            json!({"type": "resize", "dropletId": 1, "size": ""}),
            "spec.size",
            "at least 1 chars long",
        ),
        (
            "rename to invalid hostname",
            json!({"type": "rename", "dropletId": 1, "name": "web_1!"}),
            "spec",
            "valid hostname",
        ),
        (
            "rename to trailing dash",
            json!({"type": "rename", "dropletId": 1, "name": "web-"}),
            "spec",
            "valid hostname",
        ),
        (
            "tag with spaces",
            json!({"type": "power_on", "tagName": "my tag"}),
            "spec.tagName",
            "should match",
        ),
        (
            "empty tag",
            json!({"type": "power_on", "tagName": ""}),
            "spec.tagName",
            "at least 1 chars long",
        ),
        (
            "negative backoffLimit",
            json!({"type": "reboot", "dropletId": 1, "backoffLimit": -1}),
            "spec.backoffLimit",
            "greater than or equal to 0",
        ),
        (
            "huge backoffLimit",
            json!({"type": "reboot", "dropletId": 1, "backoffLimit": 1000}),
            "spec.backoffLimit",
            "less than or equal to 100",
        ),
        (
            "deadline zero",
            json!({"type": "reboot", "dropletId": 1, "deadlineSeconds": 0}),
            "spec.deadlineSeconds",
            "greater than or equal to 1",
        ),
        (
            "negative ttl",
            json!({"type": "reboot", "dropletId": 1, "ttlSecondsAfterFinished": -5}),
            "spec.ttlSecondsAfterFinished",
            "greater than or equal to 0",
        ),
        (
            "power off after deadline",
            json!({"type": "shutdown", "dropletId": 1, "powerOffAfterSeconds": 600, "deadlineSeconds": 300}),
            "spec",
            "must be less than spec.deadlineSeconds",
        ),
        (
            "notAfter not a time",
            json!({"type": "reboot", "dropletId": 1, "notAfter": "tomorrow"}),
            "spec.notAfter",
            "must be of type date-time",
        ),
        (
            "token secret without name",
            json!({"type": "reboot", "dropletId": 1, "tokenSecretRef": {"key": "token"}}),
            "spec.tokenSecretRef.name",
            "Required value",
        ),
        (
            "unknown spec field",
            json!({"type": "reboot", "dropletId": 1, "force": true}),
            "spec.force",
            "unknown field \"spec.force\"",
        ),
        (
            "snake_case field",
            json!({"type": "reboot", "droplet_id": 1}),
            "spec.droplet_id",
            "unknown field",
        ),
    ]
}

/// Parameter combinations that must be accepted.
pub fn valid_specs() -> Vec<Value> {
    vec![
        json!({"type": "restore", "dropletId": 1, "image": 701001}),
        json!({"type": "rebuild", "dropletId": 1, "image": 12345}),
        json!({"type": "rebuild", "dropletId": 1, "image": "debian-12-x64"}),
        json!({"type": "snapshot", "tagName": "env:prod"}),
        json!({"type": "enable_backups", "dropletId": 1}),
        json!({"type": "change_backup_policy", "dropletId": 1, "backupPolicy": {"plan": "weekly", "weekday": "SAT", "hour": 20}}),
        json!({"type": "shutdown", "tagName": "batch", "powerOffAfterSeconds": 60, "deadlineSeconds": 600}),
        json!({"type": "resize", "dropletId": 1, "size": "s-8vcpu-16gb", "disk": true}),
        json!({"type": "rename", "dropletId": 1, "name": "a"}),
        json!({"type": "reboot", "dropletId": 1, "notAfter": "2030-01-01T00:00:00Z", "ttlSecondsAfterFinished": 0, "backoffLimit": 3}),
    ]
}
