//! The DropletAction API as users meet it at admission: the committed CRD matches the code, every example is
//! accepted, and bad manifests are rejected with a message that names the field and the fix.

use kube_emu::validation::{FieldError, SchemaValidator};
use serde_json::{Value, json};

#[path = "common/crd_cases.rs"]
mod crd_cases;
use crd_cases::{da, invalid_cases, valid_specs};

const CRD_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/dropletactions.droplet-operator.dev.yaml"
);
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

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
    for spec in valid_specs() {
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

/// A `tagName: null` beside `dropletId` is admitted (null counts as absent for CEL `has()`), and reads as absent.
#[test]
fn a_null_nullable_field_counts_as_absent() {
    let v = droplet_action_validator();
    let obj = admit(
        &v,
        da(json!({"type": "reboot", "dropletId": 1, "tagName": null})),
    )
    .expect("tagName: null beside dropletId is admitted");
    let read: droplet_operator::crd::DropletAction = serde_json::from_value(obj).unwrap();
    assert_eq!(read.spec.tag_name, None);
    // A tag set beside a droplet is still rejected.
    assert!(
        admit(
            &v,
            da(json!({"type": "reboot", "dropletId": 1, "tagName": "web"}))
        )
        .is_err()
    );
}

/// Values beyond the CRD's maxima are rejected at admission (so no arithmetic on them can overflow).
#[test]
fn maxima_are_enforced_at_admission() {
    use droplet_operator::crd::{MAX_DEADLINE_SECONDS, MAX_ID, MAX_TTL_SECONDS_AFTER_FINISHED};
    let v = droplet_action_validator();
    for spec in [
        json!({"type": "reboot", "dropletId": MAX_ID + 1}),
        json!({"type": "reboot", "dropletId": 1, "deadlineSeconds": MAX_DEADLINE_SECONDS + 1}),
        json!({"type": "reboot", "dropletId": 1, "ttlSecondsAfterFinished": MAX_TTL_SECONDS_AFTER_FINISHED + 1}),
        json!({"type": "rebuild", "dropletId": 1, "image": MAX_ID + 1}),
        json!({"type": "rebuild", "dropletId": 1, "image": "a".repeat(256)}),
        json!({"type": "shutdown", "dropletId": 1, "powerOffAfterSeconds": 86401}),
    ] {
        assert!(admit(&v, da(spec.clone())).is_err(), "admitted {spec}");
    }
}

mod admitted_objects_round_trip {
    use super::*;
    use droplet_operator::crd::{
        DropletAction, MAX_DEADLINE_SECONDS, MAX_ID, MAX_POWER_OFF_AFTER_SECONDS,
        MAX_TTL_SECONDS_AFTER_FINISHED,
    };
    use proptest::prelude::*;

    /// An integer in `lo..=hi`, often one of the bounds.
    fn bounded(lo: i64, hi: i64) -> impl Strategy<Value = i64> {
        prop_oneof![Just(lo), Just(hi), lo..=hi]
    }

    /// A slug of `[a-z0-9]` then up to `max - 1` of `[a-z0-9{extra}]`, often the longest.
    fn slug(max: usize, extra: &str) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".repeat(max)),
            proptest::string::string_regex(&format!("[a-z0-9][a-z0-9{extra}]{{0,{}}}", max - 1))
                .unwrap(),
        ]
    }

    fn image() -> impl Strategy<Value = Value> {
        prop_oneof![
            bounded(1, MAX_ID).prop_map(Value::from),
            Just(Value::from(3_000_000_000i64)),
            slug(255, ".-").prop_map(Value::from),
        ]
    }

    fn spec() -> impl Strategy<Value = Value> {
        let common = (
            bounded(1, MAX_ID),
            proptest::option::of(bounded(1, MAX_DEADLINE_SECONDS)),
            proptest::option::of(bounded(0, MAX_TTL_SECONDS_AFTER_FINISHED)),
            proptest::option::of(0..=100i32),
        );
        let typed = prop_oneof![
            Just(json!({"type": "reboot"})),
            image().prop_map(|i| json!({"type": "rebuild", "image": i})),
            bounded(1, MAX_ID).prop_map(|i| json!({"type": "restore", "image": i})),
            slug(64, "-").prop_map(|s| json!({"type": "resize", "size": s, "disk": true})),
            proptest::string::string_regex("[a-zA-Z0-9][a-zA-Z0-9.-]{0,253}[a-zA-Z0-9]")
                .unwrap()
                .prop_map(|n| json!({"type": "rename", "name": n})),
            bounded(1, MAX_ID).prop_map(|k| json!({"type": "change_kernel", "kernel": k})),
            bounded(1, MAX_POWER_OFF_AFTER_SECONDS)
                .prop_map(|p| json!({"type": "shutdown", "powerOffAfterSeconds": p})),
        ];
        (common, typed).prop_map(|((droplet, deadline, ttl, backoff), mut spec)| {
            spec["dropletId"] = json!(droplet);
            if let Some(d) = deadline {
                spec["deadlineSeconds"] = json!(d);
                if let Some(p) = spec.get("powerOffAfterSeconds").and_then(Value::as_i64)
                    && p >= d
                {
                    spec.as_object_mut().unwrap().remove("deadlineSeconds");
                }
            }
            if let Some(t) = ttl {
                spec["ttlSecondsAfterFinished"] = json!(t);
            }
            if let Some(b) = backoff {
                spec["backoffLimit"] = json!(b);
            }
            spec
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn every_admitted_object_is_read_and_round_trips(spec in spec()) {
            let v = droplet_action_validator();
            let admitted = admit(&v, da(spec.clone()));
            prop_assert!(admitted.is_ok(), "the generator made an invalid object: {spec} {admitted:?}");
            let stored = admitted.unwrap();
            // Read the way the controller reads the watch: loosely typed first, then one object at a time.
            let raw: droplet_operator::controller::intake::Stored =
                serde_json::from_value(stored.clone()).unwrap();
            let read = droplet_operator::controller::intake::read(&raw);
            prop_assert!(read.is_ok(), "{spec}: {read:?}");
            let read = read.unwrap();
            let again: DropletAction =
                serde_json::from_value(serde_json::to_value(&read).unwrap()).unwrap();
            prop_assert_eq!(&again, &read);
            prop_assert_eq!(serde_json::to_value(&read.spec).unwrap(), stored["spec"].clone());
        }
    }
}
