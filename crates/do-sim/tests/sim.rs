//! Tests of the DigitalOcean API simulator, over HTTP with reqwest.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use do_sim::{
    ActionDurations, ActionStatus, DEFAULT_SIM_TOKEN, Faults, Initiation, SimConfig,
    SimDropletSeed, SimHandle, Simulator, TokenSpec,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

struct T {
    sim: SimHandle,
    http: reqwest::Client,
    token: String,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("missing header {name}"))
    }

    fn assert_error(&self, status: u16, id: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["id"], id, "{}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(self.body["request_id"], self.header("x-request-id"));
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn start(config: SimConfig) -> T {
    let sim = Simulator::start(config, loopback()).await.expect("start");
    T {
        sim,
        http: client(),
        token: DEFAULT_SIM_TOKEN.to_string(),
    }
}

/// Fast durations (power actions 30 ms, snapshot 600 ms), no rate limits.
async fn fast() -> T {
    start(SimConfig::fast(0.01)).await
}

impl T {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.url().as_str().trim_end_matches('/'), path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.get_as(&self.token, path).await
    }

    async fn get_as(&self, token: &str, path: &str) -> Resp {
        self.send(self.http.get(self.url(path)).bearer_auth(token))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.post_as(&self.token, path, body).await
    }

    async fn post_as(&self, token: &str, path: &str, body: Value) -> Resp {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    /// POSTs an action and asserts 201; returns the action object.
    async fn act(&self, droplet: i64, body: Value) -> Value {
        let r = self
            .post(&format!("/v2/droplets/{droplet}/actions"), body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["action"].clone()
    }

    /// Polls until the action is no longer in progress; returns it.
    async fn wait(&self, action_id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.get(&format!("/v2/actions/{action_id}")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            if r.body["action"]["status"] != "in-progress" {
                return r.body["action"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "action {action_id} never finished"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn act_and_wait(&self, droplet: i64, body: Value) -> Value {
        let a = self.act(droplet, body).await;
        let done = self.wait(a["id"].as_i64().expect("id")).await;
        assert_eq!(done["status"], "completed", "{done}");
        done
    }

    async fn droplet(&self, id: i64) -> Value {
        let r = self.get(&format!("/v2/droplets/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["droplet"].clone()
    }
}

#[tokio::test]
async fn starts_in_milliseconds_and_serves_the_seed() {
    let t0 = Instant::now();
    let sim = Simulator::start(SimConfig::default(), loopback())
        .await
        .expect("start");
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(sim.url().host_str(), Some("127.0.0.1"));
    let ids: Vec<i64> = sim.droplets().iter().map(|d| d.id).collect();
    assert_eq!(ids, (101001..=101012).collect::<Vec<_>>());
    let db1 = sim.droplet(101004).expect("db-1");
    assert_eq!(db1.backup_ids, vec![701001, 701002]);
    assert!(db1.features.contains(&"backups".to_string()));
    assert_eq!(
        sim.droplet(101005).expect("db-2").snapshot_ids,
        vec![702001]
    );
    assert_eq!(sim.droplet(101006).expect("batch-1").status, "off");
    assert_eq!(sim.droplet(101009).expect("legacy-1").kernel_id, Some(8611));
    assert!(sim.image(701001).is_some() && sim.image(702001).is_some());

    let t = T {
        sim,
        http: client(),
        token: DEFAULT_SIM_TOKEN.into(),
    };
    let d = t.droplet(101001).await;
    for field in [
        "id",
        "name",
        "memory",
        "vcpus",
        "disk",
        "locked",
        "status",
        "kernel",
        "created_at",
        "features",
        "backup_ids",
        "next_backup_window",
        "snapshot_ids",
        "image",
        "volume_ids",
        "size",
        "size_slug",
        "networks",
        "region",
        "tags",
    ] {
        assert!(d.get(field).is_some(), "droplet lacks {field}: {d}");
    }
    assert_eq!(d["name"], "web-1");
    assert_eq!(d["size_slug"], "s-1vcpu-1gb");
    assert_eq!(d["size"]["slug"], "s-1vcpu-1gb");
    assert_eq!(d["region"]["slug"], "nyc3");
    assert_eq!(d["tags"], json!(["web", "frontend"]));
    assert_eq!(t.droplet(101009).await["kernel"]["id"], 8611);
    assert!(t.droplet(101004).await["next_backup_window"]["start"].is_string());
}

#[tokio::test]
async fn generated_droplets_have_documented_ids_and_tags() {
    let t = start(SimConfig {
        seed_examples: false,
        generated_droplets: 25,
        ..SimConfig::fast(0.01)
    })
    .await;
    assert_eq!(t.sim.droplets().len(), 25);
    let d = t.sim.droplet(200013).expect("gen-13");
    assert_eq!(d.name, "gen-13");
    assert_eq!(d.tags, vec!["gen".to_string(), "gen-3".to_string()]);
    let r = t.get("/v2/droplets?tag_name=gen-3").await;
    assert_eq!(r.body["meta"]["total"], 3); // 3, 13, 23
}

#[tokio::test]
async fn post_action_returns_201_with_do_shape_and_headers() {
    let t = fast().await;
    let r = t
        .post("/v2/droplets/101001/actions", json!({"type": "reboot"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let a = &r.body["action"];
    assert!(a["id"].as_i64().is_some_and(|id| id > 0));
    assert_eq!(a["status"], "in-progress");
    assert_eq!(a["type"], "reboot");
    assert!(a["started_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert!(a["completed_at"].is_null());
    assert_eq!(a["resource_id"], 101001);
    assert_eq!(a["resource_type"], "droplet");
    assert_eq!(a["region"]["slug"], "nyc3");
    assert_eq!(a["region"]["name"], "New York 3");
    assert_eq!(a["region_slug"], "nyc3");
    assert!(r.headers.contains_key("ratelimit-limit"));
    assert!(r.headers.contains_key("ratelimit-remaining"));
    assert!(r.header("ratelimit-reset").parse::<i64>().is_ok());
    assert!(uuid::Uuid::parse_str(r.header("x-request-id")).is_ok());

    // The same action through both GET endpoints.
    let id = a["id"].as_i64().expect("id");
    let one = t.get(&format!("/v2/droplets/101001/actions/{id}")).await;
    assert_eq!(one.body["action"]["id"], id);
    let global = t.get(&format!("/v2/actions/{id}")).await;
    assert_eq!(global.body["action"]["type"], "reboot");

    let posts = t.sim.posts_for_droplet(101001);
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].action_id, id);
    assert_eq!(posts[0].initiated, Initiation::Single);
}

#[tokio::test]
async fn actions_progress_lock_the_droplet_and_never_complete_early() {
    let d = Duration::from_millis(150);
    let t = start(SimConfig {
        action_durations: ActionDurations::uniform(d),
        ..SimConfig::fast(1.0)
    })
    .await;
    let sent = Instant::now();
    let a = t.act(101001, json!({"type": "power_off"})).await;
    let id = a["id"].as_i64().expect("id");
    let drop = t.droplet(101001).await;
    assert_eq!(drop["locked"], true);
    assert_eq!(drop["status"], "active");

    let again = t
        .post("/v2/droplets/101001/actions", json!({"type": "power_on"}))
        .await;
    again.assert_error(422, "unprocessable_entity");
    assert_eq!(
        again.body["message"],
        "Droplet already has a pending event."
    );

    // Poll: whenever it reads completed, the duration must have elapsed, and
    // the effect must be visible at the same time.
    loop {
        let r = t.get(&format!("/v2/actions/{id}")).await;
        if r.body["action"]["status"] == "completed" {
            assert!(sent.elapsed() >= d, "completed after {:?}", sent.elapsed());
            assert!(r.body["action"]["completed_at"].is_string());
            let drop = t.droplet(101001).await;
            assert_eq!(drop["status"], "off");
            assert_eq!(drop["locked"], false);
            break;
        }
        assert_eq!(r.body["action"]["status"], "in-progress");
        assert!(sent.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn each_action_type_applies_its_effect() {
    let t = fast().await;
    t.act_and_wait(101001, json!({"type": "shutdown"})).await;
    assert_eq!(t.droplet(101001).await["status"], "off");
    t.act_and_wait(101001, json!({"type": "power_on"})).await;
    assert_eq!(t.droplet(101001).await["status"], "active");
    t.act_and_wait(101006, json!({"type": "reboot"})).await;
    assert_eq!(t.droplet(101006).await["status"], "active");
    t.act_and_wait(101007, json!({"type": "power_cycle"})).await;
    assert_eq!(t.droplet(101007).await["status"], "active");

    t.act_and_wait(
        101002,
        json!({"type": "rename", "name": "web-2.example.com"}),
    )
    .await;
    assert_eq!(t.droplet(101002).await["name"], "web-2.example.com");

    // Resize without disk keeps the disk; with disk grows it.
    t.act_and_wait(101003, json!({"type": "resize", "size": "s-2vcpu-4gb"}))
        .await;
    let d = t.droplet(101003).await;
    assert_eq!(
        (
            d["size_slug"].clone(),
            d["disk"].clone(),
            d["vcpus"].clone()
        ),
        (json!("s-2vcpu-4gb"), json!(50), json!(2))
    );
    t.act_and_wait(
        101003,
        json!({"type": "resize", "size": "s-4vcpu-8gb", "disk": true}),
    )
    .await;
    assert_eq!(t.droplet(101003).await["disk"], 160);
    let shrink = t
        .post(
            "/v2/droplets/101003/actions",
            json!({"type": "resize", "size": "s-1vcpu-1gb", "disk": true}),
        )
        .await;
    shrink.assert_error(422, "unprocessable_entity");
    assert_eq!(
        shrink.body["message"],
        "Size can not decrease size of Droplet's disk image"
    );

    t.act_and_wait(
        101008,
        json!({"type": "enable_backups", "backup_policy": {"plan": "weekly", "weekday": "TUE", "hour": 8}}),
    )
    .await;
    let d = t.droplet(101008).await;
    assert!(
        d["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("backups")))
    );
    assert!(
        d["next_backup_window"]["start"]
            .as_str()
            .is_some_and(|s| s.contains("T08:00:00"))
    );
    assert_eq!(
        t.sim
            .droplet(101008)
            .and_then(|d| d.backup_policy)
            .map(|p| p.plan),
        Some("weekly".into())
    );
    t.act_and_wait(
        101008,
        json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily", "hour": 20}}),
    )
    .await;
    let policy = t
        .sim
        .droplet(101008)
        .and_then(|d| d.backup_policy)
        .expect("policy");
    assert_eq!((policy.plan.as_str(), policy.hour), ("daily", Some(20)));
    t.act_and_wait(101008, json!({"type": "disable_backups"}))
        .await;
    let d = t.droplet(101008).await;
    assert!(
        !d["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("backups")))
    );
    assert!(d["next_backup_window"].is_null());

    t.act_and_wait(101012, json!({"type": "enable_ipv6"})).await;
    assert!(
        t.droplet(101012).await["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("ipv6")))
    );

    t.act_and_wait(101009, json!({"type": "change_kernel", "kernel": 8613}))
        .await;
    assert_eq!(t.droplet(101009).await["kernel"]["id"], 8613);

    t.act_and_wait(101010, json!({"type": "rebuild", "image": "debian-12-x64"}))
        .await;
    assert_eq!(t.droplet(101010).await["image"]["slug"], "debian-12-x64");

    t.act_and_wait(101004, json!({"type": "restore", "image": 701002}))
        .await;
    assert_eq!(t.droplet(101004).await["image"]["id"], 701002);

    t.act_and_wait(101011, json!({"type": "password_reset"}))
        .await;
    assert_eq!(t.sim.droplet(101011).map(|d| d.password_resets), Some(1));
}

#[tokio::test]
async fn snapshot_creates_an_image_with_created_at_equal_to_started_at() {
    let t = start(SimConfig {
        action_durations: ActionDurations::uniform(Duration::from_millis(20)),
        ..SimConfig::fast(1.0)
    })
    .await;
    let done = t
        .act_and_wait(101005, json!({"type": "snapshot", "name": "db-2-nightly"}))
        .await;
    let r = t.get("/v2/droplets/101005/snapshots?per_page=200").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["meta"]["total"], 2);
    let snaps = r.body["snapshots"].as_array().expect("snapshots");
    let snap = snaps
        .iter()
        .find(|s| s["created_at"] == done["started_at"])
        .expect("snapshot matching started_at");
    assert_eq!(snap["name"], "db-2-nightly");
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["resource_id"], 101005);
    assert_eq!(snap["resource_type"], "droplet");
    assert_eq!(snap["regions"], json!(["sfo3"]));
    assert!(snap["min_disk_size"].as_i64().is_some() && snap["size_gigabytes"].as_f64().is_some());
    let id = snap["id"].clone();
    assert!(
        t.droplet(101005).await["snapshot_ids"]
            .as_array()
            .is_some_and(|s| s.contains(&id))
    );

    // Default name: "<droplet name>-<timestamp>". The new snapshot can be restored.
    t.act_and_wait(101001, json!({"type": "snapshot"})).await;
    let snaps = t.get("/v2/droplets/101001/snapshots").await.body["snapshots"].clone();
    let name = snaps[0]["name"].as_str().expect("name");
    assert!(
        name.strip_prefix("web-1-")
            .is_some_and(|ts| ts.parse::<i64>().is_ok()),
        "{name}"
    );
    t.act_and_wait(101001, json!({"type": "restore", "image": snaps[0]["id"]}))
        .await;
}

#[tokio::test]
async fn by_tag_fans_out_one_action_per_droplet() {
    let t = fast().await;
    let r = t
        .post(
            "/v2/droplets/actions?tag_name=web",
            json!({"type": "power_cycle"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body.get("links").is_none() && r.body.get("meta").is_none());
    let actions = r.body["actions"].as_array().expect("actions");
    let ids: BTreeSet<i64> = actions
        .iter()
        .map(|a| a["resource_id"].as_i64().expect("resource_id"))
        .collect();
    assert_eq!(ids, BTreeSet::from([101001, 101002, 101003]));
    assert!(
        actions
            .iter()
            .all(|a| a["type"] == "power_cycle" && a["status"] == "in-progress")
    );
    let posts = t.sim.posts_for_droplet(101002);
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].initiated, Initiation::ByTag { tag: "web".into() });

    // While any tagged droplet is busy: 422 and nothing is created.
    let before = t.sim.actions().len();
    let busy = t
        .post(
            "/v2/droplets/actions?tag_name=frontend",
            json!({"type": "power_off"}),
        )
        .await;
    busy.assert_error(422, "unprocessable_entity");
    assert_eq!(
        busy.body["message"],
        "there are currently blocking events processing for one or more of the droplets"
    );
    assert_eq!(t.sim.actions().len(), before);

    // Only the 8 by-tag types.
    let reboot = t
        .post(
            "/v2/droplets/actions?tag_name=db",
            json!({"type": "reboot"}),
        )
        .await;
    reboot.assert_error(422, "unprocessable_entity");
    let snap = t
        .post(
            "/v2/droplets/actions?tag_name=db",
            json!({"type": "snapshot", "name": "db"}),
        )
        .await;
    assert_eq!(snap.status, StatusCode::CREATED);
    assert_eq!(snap.body["actions"].as_array().map(Vec::len), Some(2));
    let none = t
        .post(
            "/v2/droplets/actions?tag_name=nothing-here",
            json!({"type": "power_on"}),
        )
        .await;
    assert_eq!(none.status, StatusCode::CREATED);
    assert_eq!(none.body["actions"], json!([]));
    let missing = t
        .post("/v2/droplets/actions", json!({"type": "power_on"}))
        .await;
    missing.assert_error(422, "unprocessable_entity");
}

#[tokio::test]
async fn external_actions_make_the_droplet_busy() {
    let t = start(SimConfig {
        action_durations: ActionDurations::uniform(Duration::from_millis(100)),
        ..SimConfig::fast(1.0)
    })
    .await;
    let id = t.sim.start_external_action(101008, "power_off");
    assert!(id > 0);
    assert_eq!(t.sim.start_external_action(999, "reboot"), 0);
    assert_eq!(t.droplet(101008).await["locked"], true);
    let r = t
        .post("/v2/droplets/101008/actions", json!({"type": "reboot"}))
        .await;
    r.assert_error(422, "unprocessable_entity");
    let list = t.get("/v2/droplets/101008/actions").await;
    assert_eq!(list.body["actions"][0]["id"], id);
    assert!(t.sim.posts_for_droplet(101008).is_empty());
    let done = t.wait(id).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(t.droplet(101008).await["status"], "off");
}

#[tokio::test]
async fn invalid_bodies_are_422_and_malformed_json_is_400() {
    let t = fast().await;
    let cases = [
        (101001, json!({})),
        (101001, json!({"type": "explode"})),
        (101001, json!({"type": 7})),
        (101001, json!({"type": "resize"})),
        (101001, json!({"type": "resize", "size": "s-99vcpu-1tb"})),
        (
            101001,
            json!({"type": "resize", "size": "s-2vcpu-2gb", "disk": "yes"}),
        ),
        (101001, json!({"type": "rename"})),
        (101001, json!({"type": "rename", "name": "bad_name!"})),
        (101001, json!({"type": "rename", "name": "ends-with-dash-"})),
        (101001, json!({"type": "rebuild"})),
        (101001, json!({"type": "rebuild", "image": "windows-95"})),
        (101001, json!({"type": "rebuild", "image": 42})),
        (101004, json!({"type": "restore"})),
        (101004, json!({"type": "restore", "image": "701001"})),
        (101004, json!({"type": "restore", "image": 702001})), // db-2's snapshot
        (101009, json!({"type": "change_kernel"})),
        (101009, json!({"type": "change_kernel", "kernel": "8612"})),
        (101009, json!({"type": "change_kernel", "kernel": 1})),
        (101004, json!({"type": "change_backup_policy"})),
        (
            101001,
            json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily"}}),
        ), // no backups
        (
            101004,
            json!({"type": "change_backup_policy", "backup_policy": {"plan": "hourly"}}),
        ),
        (
            101004,
            json!({"type": "change_backup_policy", "backup_policy": {"plan": "weekly", "weekday": "FUNDAY"}}),
        ),
        (
            101004,
            json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily", "hour": 5}}),
        ),
        (
            101004,
            json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily", "window_length_hours": 4}}),
        ),
        (
            101001,
            json!({"type": "enable_backups", "backup_policy": {"plan": "daily", "retention_period_days": 7}}),
        ),
        (101006, json!({"type": "power_off"})), // already off
    ];
    for (droplet, body) in cases {
        let r = t
            .post(&format!("/v2/droplets/{droplet}/actions"), body.clone())
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {}",
            r.body
        );
        r.assert_error(422, "unprocessable_entity");
    }
    assert!(
        t.sim.actions().is_empty(),
        "no invalid request may create an action"
    );

    let r = t
        .send(
            t.http
                .post(t.url("/v2/droplets/101001/actions"))
                .bearer_auth(&t.token)
                .header("content-type", "application/json")
                .body("{\"type\": "),
        )
        .await;
    r.assert_error(400, "bad_request");
}

#[tokio::test]
async fn unknown_resources_are_404() {
    let t = fast().await;
    t.get("/v2/droplets/999")
        .await
        .assert_error(404, "not_found");
    t.get("/v2/droplets/abc")
        .await
        .assert_error(404, "not_found");
    t.post("/v2/droplets/999/actions", json!({"type": "reboot"}))
        .await
        .assert_error(404, "not_found");
    t.get("/v2/droplets/999/actions")
        .await
        .assert_error(404, "not_found");
    t.get("/v2/actions/12345")
        .await
        .assert_error(404, "not_found");
    let a = t.act(101001, json!({"type": "reboot"})).await;
    // An existing action under another droplet.
    t.get(&format!("/v2/droplets/101002/actions/{}", a["id"]))
        .await
        .assert_error(404, "not_found");
    t.get("/v2/nothing").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn unknown_or_missing_tokens_are_401() {
    let t = fast().await;
    let r = t.get_as("dop_v1_wrong", "/v2/droplets/101001").await;
    r.assert_error(401, "unauthorized");
    assert_eq!(r.body["message"], "Unable to authenticate you.");
    let r = t.send(t.http.get(t.url("/v2/droplets"))).await;
    r.assert_error(401, "unauthorized");
    let r = t
        .post_as(
            "nope",
            "/v2/droplets/101001/actions",
            json!({"type": "reboot"}),
        )
        .await;
    r.assert_error(401, "unauthorized");
    assert!(t.sim.actions().is_empty());
}

#[tokio::test]
async fn scopes_are_enforced_per_endpoint_and_action_type() {
    let tokens = vec![
        TokenSpec::full(DEFAULT_SIM_TOKEN),
        TokenSpec::scoped("read", &["droplet:read", "actions:read"]),
        TokenSpec::scoped("update", &["droplet:update", "droplet:read"]),
        TokenSpec::scoped("update-create", &["droplet:update", "droplet:create"]),
        TokenSpec::scoped("update-admin", &["droplet:update", "droplet:admin"]),
        TokenSpec::scoped(
            "update-image",
            &["droplet:update", "image:create", "tag:read"],
        ),
        TokenSpec::scoped("update-tag", &["droplet:update", "tag:read"]),
        TokenSpec::scoped("wild", &["droplet:*", "tag:*"]),
    ];
    let t = start(SimConfig {
        tokens,
        action_durations: ActionDurations::uniform(Duration::ZERO),
        ..SimConfig::fast(1.0)
    })
    .await;
    let forbidden = |r: Resp| {
        r.assert_error(403, "forbidden");
        assert_eq!(
            r.body["message"],
            "You are not authorized to perform this operation"
        );
    };
    let post = |tok: &'static str, id: i64, body: Value| {
        let t = &t;
        async move {
            t.post_as(tok, &format!("/v2/droplets/{id}/actions"), body)
                .await
        }
    };
    forbidden(post("read", 101001, json!({"type": "reboot"})).await);
    assert_eq!(
        post("update", 101001, json!({"type": "reboot"}))
            .await
            .status,
        201
    );
    forbidden(
        post(
            "update",
            101002,
            json!({"type": "resize", "size": "s-2vcpu-2gb"}),
        )
        .await,
    );
    assert_eq!(
        post(
            "update-create",
            101002,
            json!({"type": "resize", "size": "s-2vcpu-2gb"})
        )
        .await
        .status,
        201
    );
    for body in [
        json!({"type": "rebuild", "image": "debian-12-x64"}),
        json!({"type": "password_reset"}),
        json!({"type": "restore", "image": 701001}),
    ] {
        forbidden(post("update", 101004, body.clone()).await);
        forbidden(post("update-create", 101004, body.clone()).await);
    }
    assert_eq!(
        post(
            "update-admin",
            101004,
            json!({"type": "restore", "image": 701001})
        )
        .await
        .status,
        201
    );
    forbidden(post("update", 101003, json!({"type": "snapshot"})).await);
    assert_eq!(
        post("update-image", 101003, json!({"type": "snapshot"}))
            .await
            .status,
        201
    );

    // By tag needs tag:read, and image:create for snapshots.
    forbidden(
        t.post_as(
            "update",
            "/v2/droplets/actions?tag_name=batch",
            json!({"type": "power_on"}),
        )
        .await,
    );
    forbidden(
        t.post_as(
            "update-tag",
            "/v2/droplets/actions?tag_name=batch",
            json!({"type": "snapshot"}),
        )
        .await,
    );
    assert_eq!(
        t.post_as(
            "update-tag",
            "/v2/droplets/actions?tag_name=batch",
            json!({"type": "power_on"})
        )
        .await
        .status,
        201
    );

    // Reads.
    assert_eq!(t.get_as("read", "/v2/droplets/101001").await.status, 200);
    assert_eq!(
        t.get_as("read", "/v2/droplets/101001/actions").await.status,
        200
    );
    assert_eq!(t.get_as("read", "/v2/actions").await.status, 200);
    forbidden(t.get_as("read", "/v2/droplets?tag_name=web").await);
    forbidden(t.get_as("update-image", "/v2/droplets/101001").await);
    forbidden(t.get_as("update", "/v2/actions").await);
    forbidden(t.get_as("update", "/v2/actions/1800000001").await);
    assert_eq!(
        t.get_as("update", "/v2/droplets/101001/actions/1800000001")
            .await
            .status,
        200
    );
    // Wildcards.
    assert_eq!(
        t.get_as("wild", "/v2/droplets?tag_name=web").await.status,
        200
    );
    assert_eq!(
        post(
            "wild",
            101012,
            json!({"type": "resize", "size": "s-2vcpu-2gb"})
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn rate_limit_returns_429_with_headers_and_no_effect() {
    let t = start(SimConfig {
        rate_limit_per_minute: Some(5),
        rate_limit_per_hour: Some(100),
        ..SimConfig::fast(0.01)
    })
    .await;
    for i in 0..5u64 {
        let r = t.get("/v2/droplets/101001").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("ratelimit-limit"), "100");
        let remaining: u64 = r.header("ratelimit-remaining").parse().expect("remaining");
        assert_eq!(remaining, if i == 4 { 0 } else { 99 - i });
        assert!(
            r.header("ratelimit-reset").parse::<i64>().expect("reset")
                >= jiff::Timestamp::now().as_second()
        );
    }
    let r = t
        .post("/v2/droplets/101001/actions", json!({"type": "reboot"}))
        .await;
    r.assert_error(429, "too_many_requests");
    assert_eq!(r.body["message"], "API rate limit exceeded.");
    assert_eq!(r.header("ratelimit-remaining"), "0");
    let retry: u64 = r.header("retry-after").parse().expect("retry-after");
    assert!((55..=60).contains(&retry), "{retry}");
    assert!(
        t.sim.actions().is_empty(),
        "a rate-limited POST has no effect"
    );
    let log = t.sim.requests();
    let last = log.last().expect("log");
    assert_eq!(
        (last.status, last.fault.as_deref(), last.applied),
        (429, Some("rate_limited"), false)
    );
    // Another token has its own window.
    let other = start(SimConfig {
        tokens: vec![TokenSpec::full("a"), TokenSpec::full("b")],
        rate_limit_per_minute: Some(1),
        ..SimConfig::fast(0.01)
    })
    .await;
    assert_eq!(other.get_as("a", "/v2/droplets/101001").await.status, 200);
    assert_eq!(other.get_as("a", "/v2/droplets/101001").await.status, 429);
    assert_eq!(other.get_as("b", "/v2/droplets/101001").await.status, 200);
}

#[tokio::test]
async fn pagination_links_meta_and_clamping() {
    let t = start(SimConfig {
        generated_droplets: 45,
        ..SimConfig::fast(0.01)
    })
    .await;
    let base = t.sim.url();
    let r = t.get("/v2/droplets?tag_name=gen").await;
    assert_eq!(r.body["droplets"].as_array().map(Vec::len), Some(20));
    assert_eq!(r.body["meta"]["total"], 45);
    let pages = &r.body["links"]["pages"];
    assert!(pages.get("first").is_none() && pages.get("prev").is_none());
    let next = pages["next"].as_str().expect("next");
    let last = pages["last"].as_str().expect("last");
    assert!(next.starts_with(base.as_str()), "{next}");
    let next_url = url::Url::parse(next).expect("absolute");
    let q: Vec<(String, String)> = next_url.query_pairs().into_owned().collect();
    assert!(
        q.contains(&("page".into(), "2".into())) && q.contains(&("tag_name".into(), "gen".into()))
    );
    assert!(last.contains("page=3"));

    // Follow next to the end.
    let path = format!("{}?{}", next_url.path(), next_url.query().unwrap_or(""));
    let p2 = t.get(&path).await;
    assert_eq!(p2.body["droplets"][0]["id"], 200021);
    let keys: BTreeSet<String> = p2.body["links"]["pages"]
        .as_object()
        .expect("pages")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["first", "prev", "next", "last"].map(String::from))
    );
    let p3 = t.get("/v2/droplets?tag_name=gen&page=3").await;
    assert_eq!(p3.body["droplets"].as_array().map(Vec::len), Some(5));
    assert!(p3.body["links"]["pages"].get("next").is_none());
    assert!(
        p3.body["links"]["pages"]["prev"]
            .as_str()
            .is_some_and(|u| u.contains("page=2"))
    );

    // Everything fits: links is empty, meta still present. per_page > 200 is clamped.
    let all = t.get("/v2/droplets?tag_name=gen&per_page=500").await;
    assert_eq!(all.body["droplets"].as_array().map(Vec::len), Some(45));
    assert_eq!(all.body["links"], json!({}));
    assert_eq!(all.body["meta"]["total"], 45);
    let web = t.get("/v2/droplets?tag_name=web").await;
    assert_eq!(web.body["links"], json!({}));
    assert_eq!(web.body["meta"]["total"], 3);
    t.get("/v2/droplets?per_page=0")
        .await
        .assert_error(422, "unprocessable_entity");
    t.get("/v2/droplets?page=x")
        .await
        .assert_error(422, "unprocessable_entity");
    let everything = t.get("/v2/droplets?per_page=200").await;
    assert_eq!(everything.body["meta"]["total"], 57);
}

#[tokio::test]
async fn action_lists_are_newest_first_and_paged() {
    let t = start(SimConfig {
        action_durations: ActionDurations::uniform(Duration::ZERO),
        ..SimConfig::fast(1.0)
    })
    .await;
    let mut ids = vec![];
    for i in 0..23 {
        let type_ = if i % 2 == 0 { "reboot" } else { "enable_ipv6" };
        ids.push(
            t.act(101001, json!({"type": type_})).await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    t.act(101002, json!({"type": "reboot"})).await;
    let r = t.get("/v2/droplets/101001/actions").await;
    assert_eq!(r.body["meta"]["total"], 23);
    let got: Vec<i64> = r.body["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["id"].as_i64())
        .collect();
    let newest: Vec<i64> = ids.iter().rev().take(20).copied().collect();
    assert_eq!(got, newest);
    assert!(r.body["links"]["pages"]["next"].is_string());
    let p2 = t.get("/v2/droplets/101001/actions?page=2").await;
    assert_eq!(p2.body["actions"].as_array().map(Vec::len), Some(3));
    let all = t.get("/v2/actions?per_page=5").await;
    assert_eq!(all.body["meta"]["total"], 24);
    assert_eq!(all.body["actions"][0]["resource_id"], 101002);
    assert!(
        all.body["links"]["pages"]["last"]
            .as_str()
            .is_some_and(|u| u.contains("page=5"))
    );
}

#[tokio::test]
async fn server_error_fault_is_500_without_effect_and_deterministic() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let r = t
        .post("/v2/droplets/101001/actions", json!({"type": "reboot"}))
        .await;
    r.assert_error(500, "server_error");
    assert_eq!(r.body["message"], "Unexpected server-side error");
    assert!(t.sim.actions().is_empty());

    async fn statuses(seed: u64) -> Vec<u16> {
        let t = start(SimConfig {
            faults: Faults {
                server_error_rate: 0.5,
                seed: Some(seed),
                ..Faults::default()
            },
            ..SimConfig::fast(0.01)
        })
        .await;
        let mut out = vec![];
        for _ in 0..30 {
            out.push(t.get("/v2/droplets/101001").await.status.as_u16());
        }
        out
    }
    let a = statuses(42).await;
    assert_eq!(a, statuses(42).await, "same seed, same faults");
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
}

#[tokio::test]
async fn latency_fault_delays_responses() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        latency: Duration::from_millis(400),
        ..Faults::default()
    });
    let t0 = Instant::now();
    assert_eq!(t.get("/v2/droplets/101001").await.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(400));
    t.sim.set_faults(Faults::default());
    let t0 = Instant::now();
    t.get("/v2/droplets/101001").await;
    assert!(t0.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn burst_429_fault_answers_the_next_k_requests() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        burst_429: 3,
        burst_retry_after_secs: 7,
        ..Faults::default()
    });
    for _ in 0..3 {
        let r = t
            .post("/v2/droplets/101001/actions", json!({"type": "reboot"}))
            .await;
        r.assert_error(429, "too_many_requests");
        assert_eq!(r.header("retry-after"), "7");
        assert_eq!(r.header("ratelimit-remaining"), "0");
    }
    assert!(t.sim.actions().is_empty());
    assert_eq!(t.get("/v2/droplets/101001").await.status, 200);
    let faults: Vec<_> = t.sim.requests().iter().map(|r| r.fault.clone()).collect();
    assert_eq!(
        faults[..3],
        [
            Some("burst_429".to_string()),
            Some("burst_429".into()),
            Some("burst_429".into())
        ]
    );
}

#[tokio::test]
async fn errored_actions_end_errored_without_effect() {
    let t = start(SimConfig {
        faults: Faults {
            errored_droplets: vec![101001],
            errored_types: vec!["rename".into()],
            ..Faults::default()
        },
        ..SimConfig::fast(0.01)
    })
    .await;
    let a = t.act(101001, json!({"type": "power_off"})).await;
    let done = t.wait(a["id"].as_i64().expect("id")).await;
    assert_eq!(done["status"], "errored");
    assert!(done["completed_at"].is_string());
    let d = t.droplet(101001).await;
    assert_eq!(
        (d["status"].clone(), d["locked"].clone()),
        (json!("active"), json!(false))
    );
    let a = t
        .act(101002, json!({"type": "rename", "name": "renamed"}))
        .await;
    assert_eq!(
        t.wait(a["id"].as_i64().expect("id")).await["status"],
        "errored"
    );
    assert_eq!(t.droplet(101002).await["name"], "web-2");
    t.act_and_wait(101002, json!({"type": "power_off"})).await;

    // A rate of 1.0 errors everything.
    t.sim.set_faults(Faults {
        errored_rate: 1.0,
        ..Faults::default()
    });
    let a = t.act(101003, json!({"type": "enable_ipv6"})).await;
    assert_eq!(
        t.wait(a["id"].as_i64().expect("id")).await["status"],
        "errored"
    );
    assert!(
        t.sim
            .actions()
            .iter()
            .any(|a| a.status == ActionStatus::Errored)
    );
}

#[tokio::test]
async fn dropped_connection_after_apply_fails_at_transport_but_the_action_exists() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        drop_after_apply_next: 1,
        ..Faults::default()
    });
    let err = t
        .http
        .post(t.url("/v2/droplets/101001/actions"))
        .bearer_auth(&t.token)
        .json(&json!({"type": "power_off"}))
        .send()
        .await
        .expect_err("the client must see a transport error, not a status");
    assert!(err.status().is_none(), "{err:?}");

    let posts = t.sim.posts_for_droplet(101001);
    assert_eq!(posts.len(), 1);
    assert!(posts[0].response_dropped);
    assert_eq!(posts[0].type_, "power_off");
    let log = t.sim.requests();
    let rec = log.last().expect("logged");
    assert!(rec.applied);
    assert_eq!(rec.fault.as_deref(), Some("dropped_after_apply"));
    assert_eq!(rec.action_ids, vec![posts[0].action_id]);

    // Over HTTP introspection too; and a retry hits the pending action.
    let r: Value = t
        .http
        .get(t.url("/_sim/posts?droplet_id=101001"))
        .send()
        .await
        .expect("posts")
        .json()
        .await
        .expect("json");
    assert_eq!(r["posts"][0]["action_id"], posts[0].action_id);
    assert_eq!(r["posts"][0]["response_dropped"], true);
    let again = t
        .post("/v2/droplets/101001/actions", json!({"type": "power_off"}))
        .await;
    again.assert_error(422, "unprocessable_entity");
    // The next one is answered normally.
    assert_eq!(
        t.act(101002, json!({"type": "reboot"})).await["type"],
        "reboot"
    );

    // Rate-based drops are seeded and also apply to by-tag POSTs.
    t.sim.set_faults(Faults {
        drop_after_apply_rate: 1.0,
        seed: Some(1),
        ..Faults::default()
    });
    let err = t
        .http
        .post(t.url("/v2/droplets/actions?tag_name=batch"))
        .bearer_auth(&t.token)
        .json(&json!({"type": "power_on"}))
        .send()
        .await;
    assert!(err.is_err());
    assert!(t.sim.posts_for_droplet(101006)[0].response_dropped);
    assert!(t.sim.posts_for_droplet(101007)[0].response_dropped);
}

#[tokio::test]
async fn introspection_api_over_http() {
    let t = fast().await;
    t.act(101001, json!({"type": "reboot"})).await;
    t.get("/v2/droplets?tag_name=web").await;
    let reqs: Value = t
        .http
        .get(t.url("/_sim/requests"))
        .send()
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    let reqs = reqs["requests"].as_array().expect("array").clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["path"], "/v2/droplets/101001/actions");
    assert_eq!(reqs[0]["status"], 201);
    assert_eq!(reqs[0]["droplet_id"], 101001);
    assert_eq!(reqs[0]["action_type"], "reboot");
    assert_eq!(reqs[0]["applied"], true);
    assert_eq!(reqs[1]["query"], "tag_name=web");
    assert!(reqs[1]["seq"].as_u64() > reqs[0]["seq"].as_u64());

    let state: Value = t
        .http
        .get(t.url("/_sim/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["droplets"].as_array().map(Vec::len), Some(12));
    assert_eq!(state["actions"][0]["type"], "reboot");

    let put = t
        .http
        .put(t.url("/_sim/faults"))
        .json(&json!({"server_error_rate": 1.0, "latency_ms": 0}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 200);
    assert_eq!(t.sim.faults().server_error_rate, 1.0);
    assert_eq!(t.get("/v2/droplets/101001").await.status, 500);
    let bad = t
        .http
        .put(t.url("/_sim/faults"))
        .body("nope")
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), 400);
    t.http
        .put(t.url("/_sim/faults"))
        .json(&json!({}))
        .send()
        .await
        .expect("put");
    assert_eq!(t.get("/v2/droplets/101001").await.status, 200);

    let reset = t
        .http
        .post(t.url("/_sim/reset-log"))
        .send()
        .await
        .expect("reset");
    assert!(reset.status().is_success());
    assert_eq!(t.sim.request_count(), 0);
    assert!(t.sim.posts_for_droplet(101001).is_empty());
    assert_eq!(t.sim.actions().len(), 1, "state survives a log reset");
}

#[tokio::test]
async fn request_counting_for_benchmarks() {
    let t = start(SimConfig {
        generated_droplets: 2000,
        ..SimConfig::fast(0.01)
    })
    .await;
    let t0 = Instant::now();
    for i in 0..50 {
        t.get(&format!("/v2/droplets/{}", 200001 + i * 37)).await;
    }
    assert_eq!(t.sim.request_count(), 50);
    assert_eq!(t.sim.max_requests_in_window(Duration::from_secs(60)), 50);
    assert_eq!(t.sim.max_requests_in_window(Duration::ZERO), 0);
    assert!(t.sim.max_requests_in_window(Duration::from_millis(1)) >= 1);
    let r = t
        .post(
            "/v2/droplets/actions?tag_name=gen-7",
            json!({"type": "power_off"}),
        )
        .await;
    assert_eq!(r.body["actions"].as_array().map(Vec::len), Some(200));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn add_droplet_and_shutdown() {
    let t = fast().await;
    let id = t.sim.add_droplet(SimDropletSeed {
        backup_ids: vec![9001],
        ..SimDropletSeed::named("extra", &["extra"])
    });
    assert_eq!(id, 300001);
    assert_eq!(t.droplet(id).await["name"], "extra");
    t.act_and_wait(id, json!({"type": "restore", "image": 9001}))
        .await;
    let fixed = t.sim.add_droplet(SimDropletSeed {
        id: Some(123),
        ..SimDropletSeed::named("fixed", &[])
    });
    assert_eq!(fixed, 123);

    t.sim.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = t
        .http
        .get(t.url("/v2/droplets/101001"))
        .bearer_auth(&t.token)
        .send()
        .await;
    assert!(after.is_err(), "no longer serving");
}

#[tokio::test]
async fn thousands_of_droplets_and_actions_stay_cheap() {
    let t0 = Instant::now();
    let t = start(SimConfig {
        seed_examples: false,
        generated_droplets: 5000,
        action_durations: ActionDurations::uniform(Duration::from_millis(50)),
        ..SimConfig::fast(1.0)
    })
    .await;
    let started = t0.elapsed();
    let r = t
        .post(
            "/v2/droplets/actions?tag_name=gen",
            json!({"type": "power_off"}),
        )
        .await;
    assert_eq!(r.body["actions"].as_array().map(Vec::len), Some(5000));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let t1 = Instant::now();
    let d = t.droplet(204321).await;
    assert_eq!(
        (d["status"].clone(), d["locked"].clone()),
        (json!("off"), json!(false))
    );
    let page = t.get("/v2/actions?per_page=200&page=25").await;
    assert_eq!(page.body["actions"].as_array().map(Vec::len), Some(200));
    assert_eq!(page.body["actions"][199]["resource_id"], 200001);
    assert!(
        page.body["actions"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a["status"] == "completed"))
    );
    for i in 0..100 {
        let r = t
            .get(&format!("/v2/droplets/{}/actions", 200001 + i * 49))
            .await;
        assert_eq!(r.body["meta"]["total"], 1);
    }
    let reads = t1.elapsed();
    assert!(
        started < Duration::from_millis(500),
        "start with 5000 droplets: {started:?}"
    );
    assert!(reads < Duration::from_secs(3), "reads: {reads:?}");
}

// ---- the exactly-once fault model ---------------------------------------------------------------

#[tokio::test]
async fn late_commit_applies_after_the_client_gave_up_and_is_logged_as_a_request() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        late_commit_rate: 1.0,
        late_commit_delay_min: Duration::from_millis(400),
        late_commit_delay_max: Duration::from_millis(400),
        seed: Some(5),
        ..Faults::default()
    });
    // The client gives up after 100 ms: nothing is visible yet.
    let err = t
        .http
        .post(t.url("/v2/droplets/101001/actions"))
        .bearer_auth(&t.token)
        .timeout(Duration::from_millis(100))
        .json(&json!({"type": "reboot"}))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    assert!(t.sim.posts_for_droplet(101001).is_empty());
    let list = t.get("/v2/droplets/101001/actions").await;
    assert_eq!(list.body["meta"]["total"], 0, "{}", list.body);
    // ... and then it is applied all the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = t.sim.posts_for_droplet(101001);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let reqs = t.sim.post_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].status, 499, "the client went away: {reqs:?}");
    assert!(reqs[0].applied);
    assert_eq!(reqs[0].action_ids, vec![posts[0].action_id]);
    assert_eq!(reqs[0].fault.as_deref(), Some("client_gone"));

    // A client that waits long enough gets the answer (or a dropped connection) after the apply.
    let before = Instant::now();
    let r = t
        .http
        .post(t.url("/v2/droplets/101002/actions"))
        .bearer_auth(&t.token)
        .json(&json!({"type": "reboot"}))
        .send()
        .await;
    assert!(before.elapsed() >= Duration::from_millis(400));
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(t.sim.posts_for_droplet(101002).len(), 1);
}

#[tokio::test]
async fn lagging_lists_hide_young_actions_but_direct_gets_see_them() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        list_lag: Duration::from_millis(600),
        ..Faults::default()
    });
    let a = t.act(101003, json!({"type": "power_cycle"})).await;
    let id = a["id"].as_i64().expect("id");
    let list = t.get("/v2/droplets/101003/actions").await;
    assert_eq!(list.body["meta"]["total"], 0, "{}", list.body);
    let all = t.get("/v2/actions?per_page=200").await;
    assert!(
        !all.body["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|x| x["id"] == id)
    );
    assert_eq!(
        t.get(&format!("/v2/actions/{id}")).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let list = t.get("/v2/droplets/101003/actions").await;
    assert_eq!(list.body["actions"][0]["id"], id, "{}", list.body);
}

#[tokio::test]
async fn server_errors_after_apply_leave_the_action_behind() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        error_after_apply_rate: 1.0,
        seed: Some(2),
        ..Faults::default()
    });
    let r = t
        .post("/v2/droplets/101004/actions", json!({"type": "reboot"}))
        .await;
    assert!(
        [500, 502, 503, 504].contains(&r.status.as_u16()),
        "{}",
        r.status
    );
    assert_eq!(t.sim.posts_for_droplet(101004).len(), 1);
    let reqs = t.sim.post_requests();
    assert_eq!(reqs[0].fault.as_deref(), Some("error_after_apply"));
    assert!(reqs[0].applied);
}

#[tokio::test]
async fn clock_skew_shifts_reported_times_both_ways() {
    for skew in [-120i64, 120] {
        let t = fast().await;
        t.sim.set_faults(Faults {
            clock_skew_secs: skew,
            ..Faults::default()
        });
        let now = jiff::Timestamp::now().as_second();
        let a = t.act(101001, json!({"type": "reboot"})).await;
        let started: jiff::Timestamp = a["started_at"].as_str().expect("t").parse().expect("ts");
        let off = started.as_second() - now;
        assert!(
            (off - skew).abs() <= 2,
            "skew {skew}: reported offset {off}"
        );
        let done = t.wait(a["id"].as_i64().expect("id")).await;
        let completed: jiff::Timestamp = done["completed_at"]
            .as_str()
            .expect("t")
            .parse()
            .expect("ts");
        assert!(completed >= started);
    }
}

#[tokio::test]
async fn foreign_clients_repeat_actions_on_droplets_we_posted_to() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        foreign_action_rate: 600.0,
        seed: Some(4),
        ..Faults::default()
    });
    t.act_and_wait(101005, json!({"type": "power_cycle"})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let foreign: Vec<_> = t
            .sim
            .actions()
            .into_iter()
            .filter(|a| a.initiated == Initiation::Foreign)
            .collect();
        if let Some(a) = foreign.first() {
            assert_eq!(a.droplet_id, 101005);
            assert_eq!(a.type_, "power_cycle");
            break;
        }
        assert!(Instant::now() < deadline, "no foreign action appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Droplets nobody posted to are left alone; foreign POSTs are not our requests.
    assert!(t.sim.actions().iter().all(|a| a.droplet_id == 101005));
    assert_eq!(t.sim.post_requests().len(), 1);
}

#[tokio::test]
async fn unknown_status_values_and_stuck_actions() {
    let t = fast().await;
    t.sim.set_faults(Faults {
        unknown_status_rate: 1.0,
        unknown_status: "done".into(),
        ..Faults::default()
    });
    let a = t.act(101006, json!({"type": "power_on"})).await;
    let done = t.wait(a["id"].as_i64().expect("id")).await;
    assert_eq!(done["status"], "done");

    t.sim.set_faults(Faults {
        stuck_rate: 1.0,
        ..Faults::default()
    });
    let a = t.act(101007, json!({"type": "power_on"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = t.get(&format!("/v2/actions/{}", a["id"])).await;
    assert_eq!(r.body["action"]["status"], "in-progress");
    t.post("/v2/droplets/101007/actions", json!({"type": "power_off"}))
        .await
        .assert_error(422, "unprocessable_entity");
    let stuck = t.sim.action(a["id"].as_i64().expect("id")).expect("stored");
    assert_eq!(stuck.status, ActionStatus::InProgress);
}
