//! OpenAPI v3 documents (`/openapi/v3` index and one document per group/version), enough for
//! `kubectl explain` and for kubectl's server-side field validation check. `/openapi/v2` is
//! answered with 404 (kubectl tolerates it on the apply update path and prefers v3 everywhere else).

use serde_json::{Map, Value, json};

use super::resource::{Registry, ResourceInfo};

/// Stable short hash for `?hash=` URLs.
pub fn hash(v: &Value) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in v.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn object_meta() -> Value {
    let string = |d: &str| json!({"type": "string", "description": d});
    let map = |d: &str| json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": string("Name must be unique within a namespace. Cannot be updated."),
            "generateName": string("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
            "namespace": string("Namespace defines the space within which each name must be unique."),
            "uid": string("UID is the unique in time and space value for this object. Populated by the system. Read-only."),
            "resourceVersion": string("An opaque value that represents the internal version of this object. Populated by the system. Read-only."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state. Populated by the system. Read-only."},
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "CreationTimestamp is a timestamp representing the server time when this object was created. Populated by the system. Read-only."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted. Populated by the system when a graceful deletion is requested. Read-only."},
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64", "description": "Number of seconds allowed for this object to gracefully terminate. Read-only."},
            "labels": map("Map of string keys and values that can be used to organize and categorize (scope and select) objects."),
            "annotations": map("Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata."),
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "set", "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"], "description": "List of objects depended by this object."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow."},
        },
    })
}

/// `api/v1` or `apis/<g>/<v>`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` index.
pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let doc = document(reg, &g, &v);
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// Component schema name, e.g. `dev.droplet-operator.v1alpha1.DropletAction`.
pub fn schema_name(r: &ResourceInfo) -> String {
    if r.group.is_empty() {
        return format!("io.k8s.api.core.v1.{}", r.kind);
    }
    if !r.custom {
        let short = r.group.trim_end_matches(".k8s.io").replace('.', "");
        return format!("io.k8s.api.{short}.{}.{}", r.version, r.kind);
    }
    let rev: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{}.{}", rev.join("."), r.version, r.kind)
}

fn gvk(r: &ResourceInfo) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn param(name: &str, desc: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "description": desc, "schema": {"type": ty, "uniqueItems": true}})
}

fn common_write_params(patch: bool) -> Vec<Value> {
    let mut ps = vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
            "string",
        ),
        param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
            "string",
        ),
        param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
            "string",
        ),
    ];
    if patch {
        ps.push(param(
            "force",
            "Force is going to \"force\" Apply requests.",
            "boolean",
        ));
    }
    ps
}

fn op(
    r: &ResourceInfo,
    action: &str,
    id: &str,
    params: Vec<Value>,
    body: bool,
    list: bool,
) -> Value {
    let name = schema_name(r);
    let resp = if list {
        format!("{name}List")
    } else {
        name.clone()
    };
    let mut o = json!({
        "operationId": id,
        "tags": [r.api_version().replace('/', "_")],
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{resp}")}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    });
    if body {
        // No strategic-merge-patch+json: kubectl then computes a JSON merge patch for custom
        // resources (like against a real server) and uses its built-in types for core kinds.
        let content = if action == "patch" {
            let s = json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}});
            json!({"application/apply-patch+yaml": s, "application/json-patch+json": s, "application/merge-patch+json": s})
        } else {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}})
        };
        o["requestBody"] = json!({"content": content, "required": true});
    }
    o
}

fn with_standard_fields(schema: Option<&Value>, r: &ResourceInfo) -> Value {
    let mut s = schema
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    if s.get("description").is_none() {
        s["description"] = json!(format!("{} is a {} resource.", r.kind, r.api_version()));
    }
    let props = s
        .as_object_mut()
        .expect("object")
        .entry("properties")
        .or_insert_with(|| json!({}));
    if let Some(p) = props.as_object_mut() {
        p.entry("apiVersion").or_insert_with(|| json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
        p.entry("kind").or_insert_with(|| json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
        p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "default": {}, "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
    }
    s["x-kubernetes-group-version-kind"] = json!([gvk(r)]);
    s
}

/// The OpenAPI v3 document of one group/version.
pub fn document(reg: &Registry, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.into(), object_meta());
    schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(), json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}));
    let base = format!("/{}", gv_path(group, version));
    for r in reg.in_group_version(group, version) {
        let name = schema_name(&r);
        schemas.insert(name.clone(), with_standard_fields(r.schema.as_ref(), &r));
        schemas.insert(
            format!("{name}List"),
            json!({"type": "object", "description": format!("{} is a list of {}", r.list_kind, r.kind),
                "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}}},
                "required": ["items"],
                "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.list_kind}]}),
        );
        let k = &r.kind;
        let (coll, item, scope) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
                "Namespaced",
            )
        } else {
            (
                format!("{base}/{}", r.plural),
                format!("{base}/{}/{{name}}", r.plural),
                "",
            )
        };
        let ns_param = json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}});
        let name_param =
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
        let mut path_params = vec![];
        if r.namespaced {
            path_params.push(ns_param.clone());
        }
        paths.insert(
            coll.clone(),
            json!({
                "get": op(&r, "list", &format!("list{scope}{k}"), vec![], false, true),
                "post": op(&r, "post", &format!("create{scope}{k}"), common_write_params(false), true, false),
                "delete": op(&r, "deletecollection", &format!("deleteCollection{scope}{k}"), vec![], false, false),
                "parameters": path_params.clone(),
            }),
        );
        let mut item_params = path_params.clone();
        item_params.push(name_param);
        paths.insert(
            item.clone(),
            json!({
                "get": op(&r, "get", &format!("read{scope}{k}"), vec![], false, false),
                "put": op(&r, "put", &format!("replace{scope}{k}"), common_write_params(false), true, false),
                "patch": op(&r, "patch", &format!("patch{scope}{k}"), common_write_params(true), true, false),
                "delete": op(&r, "delete", &format!("delete{scope}{k}"), vec![], false, false),
                "parameters": item_params.clone(),
            }),
        );
        if r.status_subresource {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": op(&r, "get", &format!("read{scope}{k}Status"), vec![], false, false),
                    "put": op(&r, "put", &format!("replace{scope}{k}Status"), common_write_params(false), true, false),
                    "patch": op(&r, "patch", &format!("patch{scope}{k}Status"), common_write_params(true), true, false),
                    "parameters": item_params,
                }),
            );
        }
        if r.namespaced {
            paths.insert(
                format!("{base}/{}", r.plural),
                json!({"get": op(&r, "list", &format!("list{k}ForAllNamespaces"), vec![], false, true)}),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
