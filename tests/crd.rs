//! The DropletAction API as users meet it at admission: the committed CRD matches the code, every example is
//! accepted, and bad manifests are rejected with a message that names the field and the fix.

use kube_emu::validation::{FieldError, SchemaValidator};
use serde_json::{Value, json};

const CRD_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/dropletactions.droplet-operator.dev.yaml"
);
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

fn da(spec: Value) -> Value {
    json!({
        "apiVersion": "droplet-operator.dev/v1alpha1",
        "kind": "DropletAction",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": spec,
    })
}

fn admit(v: &SchemaValidator, obj: Value) -> Result<Value, Vec<FieldError>> {
    let mut obj = obj;
    v.admit(&mut obj, None, true).map(|()| obj)
}

#[test]
fn committed_crd_matches_generated() {
    let generated = droplet_operator::crd::crd_yaml();
    let committed = std::fs::read_to_string(CRD_PATH).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/dropletactions.droplet-operator.dev.yaml is stale: regenerate it with\n    cargo run -- crd --kind DropletAction > crds/dropletactions.droplet-operator.dev.yaml"
    );
}

#[test]
fn committed_schedule_crd_matches_generated() {
    let generated = droplet_operator::schedule::crd::crd_yaml();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/dropletactionschedules.droplet-operator.dev.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/dropletactionschedules.droplet-operator.dev.yaml is stale: regenerate it with\n    cargo run -- crd --kind DropletActionSchedule > crds/dropletactionschedules.droplet-operator.dev.yaml"
    );
}

fn example_files() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(EXAMPLES)
        .expect("examples/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_is_accepted_and_covers_all_types() {
    let v = droplet_action_validator();
    let mut types = std::collections::BTreeSet::new();
    let mut by_tag = 0;
    for (name, text) in example_files() {
        let obj: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.lines().any(|l| l.starts_with("# expect: ")),
            "{name} must say what the user will see"
        );
        assert!(
            text.starts_with("# "),
            "{name} must start with a comment saying what it does"
        );
        let admitted = admit(&v, obj.clone()).unwrap_or_else(|e| panic!("{name} rejected: {e:?}"));
        // Typed decoding must agree with the schema.
        let typed: droplet_operator::crd::DropletAction =
            serde_json::from_value(admitted).unwrap_or_else(|e| panic!("{name}: {e}"));
        types.insert(typed.spec.type_.as_str());
        if typed.spec.tag_name.is_some() {
            by_tag += 1;
        }
    }
    assert_eq!(
        types.len(),
        16,
        "one example per action type, have {types:?}"
    );
    assert!(by_tag >= 3, "by-tag examples");
}

/// (what is wrong, spec, the field in the error, a piece of the message)
fn invalid_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
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

#[test]
fn invalid_manifests_are_rejected_with_the_rule_message() {
    let v = droplet_action_validator();
    let cases = invalid_cases();
    assert!(
        cases.len() >= 40,
        "at least 40 rejection cases, have {}",
        cases.len()
    );
    for (what, spec, field, needle) in cases {
        let errs = match admit(&v, da(spec.clone())) {
            Ok(_) => panic!("{what}: {spec} was accepted"),
            Err(e) => e,
        };
        assert!(
            errs.iter()
                .any(|e| e.field == field && e.detail.contains(needle)),
            "{what}: expected an error on {field} containing {needle:?}, got {errs:#?}"
        );
    }
}

#[test]
fn spec_is_immutable_with_a_message_that_says_what_to_do() {
    let v = droplet_action_validator();
    let old = admit(&v, da(json!({"type": "reboot", "dropletId": 101001}))).unwrap();
    let mut new = da(json!({"type": "reboot", "dropletId": 101002}));
    let errs = v.admit(&mut new, Some(&old), true).unwrap_err();
    assert!(
        errs.iter().any(|e| e.field == "spec"
            && e.detail.contains("spec is immutable")
            && e.detail.contains("create a new DropletAction")),
        "{errs:?}"
    );

    // Adding a parameter is a change too.
    let mut new = da(json!({"type": "reboot", "dropletId": 101001, "deadlineSeconds": 60}));
    assert!(v.admit(&mut new, Some(&old), true).is_err());

    // Re-applying the same spec (GitOps re-sync) is fine, and status may change freely.
    let mut same = da(json!({"type": "reboot", "dropletId": 101001}));
    same["status"] = json!({"phase": "Running"});
    v.admit(&mut same, Some(&old), true)
        .expect("unchanged spec is accepted");
}

#[test]
fn defaults_and_pruning_behave_like_the_apiserver() {
    let v = droplet_action_validator();
    let obj = admit(
        &v,
        da(json!({"type": "reboot", "dropletId": 1, "tokenSecretRef": {"name": "do"}})),
    )
    .unwrap();
    assert_eq!(
        obj["spec"]["tokenSecretRef"]["key"], "token",
        "key defaults to token"
    );

    // Without strict field validation unknown fields are dropped, as kubectl --validate=false would see.
    let mut lax = da(json!({"type": "reboot", "dropletId": 1, "force": true}));
    v.admit(&mut lax, None, false)
        .expect("unknown fields are pruned, not rejected");
    assert!(lax["spec"].get("force").is_none());
}

#[test]
fn valid_parameter_combinations_are_accepted() {
    let v = droplet_action_validator();
    for spec in [
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
    ] {
        admit(&v, da(spec.clone())).unwrap_or_else(|e| panic!("{spec} rejected: {e:?}"));
    }
}

/// `kubectl explain dropletaction.spec.<field>` prints the schema description: every field must have one.
#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    let v = droplet_action_validator();
    fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                let p = format!("{path}.{k}");
                let described = s
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.len() > 5);
                if !described && !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    missing.push(p.clone());
                }
                walk(s, &p, missing);
                if let Some(items) = s.get("items") {
                    walk(items, &p, missing);
                }
            }
        }
    }
    let mut missing = Vec::new();
    walk(v.schema(), "dropletaction", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
    let disk = &v.schema()["properties"]["spec"]["properties"]["disk"]["description"];
    assert!(
        disk.as_str().unwrap().contains("PERMANENT"),
        "resize disk: true must say it is permanent"
    );
    let deadline =
        &v.schema()["properties"]["spec"]["properties"]["deadlineSeconds"]["description"];
    assert!(deadline.as_str().unwrap().contains("cannot cancel"));
}

#[test]
fn crd_has_names_columns_and_status_subresource() {
    let crd = serde_json::to_value(droplet_operator::crd::definition()).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["da"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["digitalocean"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for c in ["Type", "Target", "Phase", "Action", "Age"] {
        assert!(columns.contains(&c), "printer column {c}");
    }
    let conditions =
        &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

/// The structural + CEL validator of the generated DropletAction CRD.
fn droplet_action_validator() -> SchemaValidator {
    SchemaValidator::for_crd(&droplet_operator::crd::definition())
        .expect("the generated DropletAction CRD has a schema")
}
