//! Tests of the DigitalOcean client against a local wiremock server (and two tiny raw
//! TCP servers for connection-level failures), plus validation of every request body
//! against DigitalOcean's OpenAPI schemas (copied to `tests/fixtures/`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use droplet_operator::digitalocean::{
    ActionRequest, ActionStatus, Applied, BackupPlan, BackupPolicy, BudgetSnapshot, ClientConfig,
    DoClient, DoError, ErrorKind, ImageRef, RateLimits, RequestObserver, RetryPolicy, Token,
    Weekday,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab";

fn token() -> Token {
    Token::new(SECRET)
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

fn config(base: &str) -> ClientConfig {
    ClientConfig {
        base_url: base.parse().unwrap(),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        get_retry: fast_retry(3),
        post_retry: fast_retry(3),
        max_budget_wait: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

fn client(server: &MockServer) -> DoClient {
    DoClient::new(config(&server.uri())).unwrap()
}

fn action(id: i64, status: &str, type_: &str) -> Value {
    json!({
        "id": id, "status": status, "type": type_,
        "started_at": "2020-11-14T16:29:21Z", "completed_at": null,
        "resource_id": 3164444, "resource_type": "droplet",
        "region": {"slug": "nyc3"}, "region_slug": "nyc3"
    })
}

fn do_error(id: &str, message: &str) -> Value {
    json!({"id": id, "message": message, "request_id": "4d9d8375-3c56-4925-a3e7-eb137fed17e9"})
}

/// Every type with the exact body DigitalOcean documents.
fn all_requests() -> Vec<(ActionRequest, Value)> {
    vec![
        (
            ActionRequest::EnableBackups { policy: None },
            json!({"type": "enable_backups"}),
        ),
        (
            ActionRequest::EnableBackups {
                policy: Some(BackupPolicy {
                    plan: Some(BackupPlan::Weekly),
                    weekday: Some(Weekday::Sat),
                    hour: Some(8),
                }),
            },
            json!({"type": "enable_backups", "backup_policy": {"plan": "weekly", "weekday": "SAT", "hour": 8}}),
        ),
        (
            ActionRequest::DisableBackups,
            json!({"type": "disable_backups"}),
        ),
        (
            ActionRequest::ChangeBackupPolicy {
                policy: BackupPolicy {
                    plan: Some(BackupPlan::Daily),
                    weekday: None,
                    hour: Some(20),
                },
            },
            json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily", "hour": 20}}),
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
                size: "s-1vcpu-2gb".into(),
                disk: Some(false),
            },
            json!({"type": "resize", "size": "s-1vcpu-2gb", "disk": false}),
        ),
        (
            ActionRequest::Rebuild {
                image: ImageRef::Slug("ubuntu-24-04-x64".into()),
            },
            json!({"type": "rebuild", "image": "ubuntu-24-04-x64"}),
        ),
        (
            ActionRequest::Rebuild {
                image: ImageRef::Id(6372321),
            },
            json!({"type": "rebuild", "image": 6372321}),
        ),
        (
            ActionRequest::Rename {
                name: "web-01.example.com".into(),
            },
            json!({"type": "rename", "name": "web-01.example.com"}),
        ),
        (
            ActionRequest::ChangeKernel { kernel: 7515 },
            json!({"type": "change_kernel", "kernel": 7515}),
        ),
        (ActionRequest::EnableIpv6, json!({"type": "enable_ipv6"})),
        (
            ActionRequest::Snapshot {
                name: Some("nightly 2026-11-22".into()),
            },
            json!({"type": "snapshot", "name": "nightly 2026-11-22"}),
        ),
        (
            ActionRequest::Snapshot { name: None },
            json!({"type": "snapshot"}),
        ),
    ]
}

// ---------------------------------------------------------------------------------
// Request bodies on the wire
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn post_sends_exact_body_for_every_type() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/droplets/3164444/actions"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"action": action(1, "in-progress", "x")})),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let cases = all_requests();
    for (req, _) in &cases {
        let a = c.post_droplet_action(&token(), 3164444, req).await.unwrap();
        assert_eq!(a.status, ActionStatus::InProgress);
    }
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), cases.len());
    let mut types = std::collections::BTreeSet::new();
    for (r, (req, expected)) in received.iter().zip(&cases) {
        let sent: Value = r.body_json().unwrap();
        assert_eq!(&sent, expected, "body for {}", req.type_name());
        assert_eq!(
            r.headers.get("content-type").unwrap(),
            "application/json",
            "{}",
            req.type_name()
        );
        types.insert(req.type_name());
    }
    assert_eq!(types.len(), 16);
}

#[tokio::test]
async fn tag_post_sends_exact_body_for_every_tag_type_and_encodes_tag() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/droplets/actions"))
        .and(query_param("tag_name", "env:prod"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "actions": [action(1, "in-progress", "power_off"), action(2, "in-progress", "power_off")]
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let mut sent_types = vec![];
    for (req, expected) in all_requests() {
        let res = c.post_tag_action(&token(), "env:prod", &req).await;
        if !req.allowed_by_tag() {
            let e = res.unwrap_err();
            assert_eq!(e.applied, Applied::NotApplied);
            assert_eq!(e.error.kind(), ErrorKind::Invalid);
            continue;
        }
        if let ActionRequest::EnableBackups { policy: Some(_) } = req {
            // The by-tag schema is plain droplet_action: no backup_policy allowed.
            let e = res.unwrap_err();
            assert_eq!(e.applied, Applied::NotApplied);
            continue;
        }
        let actions = res.unwrap();
        assert_eq!(actions.len(), 2);
        let got = server.received_requests().await.unwrap();
        let last = got.last().unwrap();
        assert_eq!(last.body_json::<Value>().unwrap(), expected);
        assert_eq!(last.url.query(), Some("tag_name=env%3Aprod"));
        sent_types.push(req.type_name());
    }
    sent_types.dedup();
    assert_eq!(
        sent_types,
        vec![
            "enable_backups",
            "disable_backups",
            "power_cycle",
            "shutdown",
            "power_off",
            "power_on",
            "enable_ipv6",
            "snapshot"
        ]
    );
    // Rejected requests were never sent.
    assert_eq!(
        server.received_requests().await.unwrap().len() as u64,
        c.request_count()
    );
}

#[tokio::test]
async fn tag_with_space_is_percent_encoded_in_get_and_post() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets"))
        .and(query_param("tag_name", "a b"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"droplets": [], "meta": {"total": 0}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/droplets/actions"))
        .and(query_param("tag_name", "a b"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"actions": []})))
        .mount(&server)
        .await;
    let c = client(&server);
    assert!(
        c.list_droplets_by_tag(&token(), "a b")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.post_tag_action(&token(), "a b", &ActionRequest::PowerOn)
            .await
            .unwrap()
            .is_empty()
    );
    let got = server.received_requests().await.unwrap();
    assert_eq!(
        got[0].url.query(),
        Some("tag_name=a%20b&page=1&per_page=200")
    );
    assert_eq!(got[1].url.query(), Some("tag_name=a%20b"));
    // An empty tag is never sent (the endpoint's behaviour without a tag is undocumented).
    let e = c
        .post_tag_action(&token(), "", &ActionRequest::PowerOn)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::NotApplied);
    assert_eq!(c.request_count(), 2);
}

#[tokio::test]
async fn sends_user_agent_authorization_and_accept() {
    let server = MockServer::start().await;
    let ua = format!("droplet-operator/{}", env!("CARGO_PKG_VERSION"));
    Mock::given(method("GET"))
        .and(path("/v2/droplets/42"))
        .and(header("user-agent", ua.as_str()))
        .and(header("authorization", format!("Bearer {SECRET}").as_str()))
        .and(header("accept", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"droplet": {
            "id": 42, "name": "web-1", "status": "active", "locked": true,
            "size_slug": "s-1vcpu-1gb", "tags": ["env:prod"], "features": ["backups"],
            "snapshot_ids": [7], "backup_ids": [], "region": {"slug": "ams3", "name": "Amsterdam 3"},
            "networks": {"v4": []}, "image": {"id": 1}, "kernel": null
        }})))
        .expect(1)
        .mount(&server)
        .await;
    let d = client(&server).get_droplet(&token(), 42).await.unwrap();
    assert_eq!(d.id, 42);
    assert!(d.locked);
    assert_eq!(d.region_slug(), Some("ams3"));
    assert_eq!(d.tags, vec!["env:prod"]);
    assert_eq!(d.snapshot_ids, vec![7]);
}

// ---------------------------------------------------------------------------------
// GET endpoints and pagination
// ---------------------------------------------------------------------------------

fn actions_page(first_id: i64, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| action(first_id + i as i64, "completed", "reboot"))
        .collect()
}

#[tokio::test]
async fn single_page_without_links() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/7/actions"))
        .and(query_param("page", "1"))
        .and(query_param("per_page", "20"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "actions": actions_page(1, 3), "meta": {"total": 3}
        })))
        .mount(&server)
        .await;
    let p = client(&server)
        .list_droplet_actions(&token(), 7, 1, 20)
        .await
        .unwrap();
    assert_eq!(p.items.len(), 3);
    assert_eq!(p.total, Some(3));
    assert_eq!(p.next_page, None);
}

#[tokio::test]
async fn per_page_is_clamped_to_200_and_next_link_is_followed() {
    let server = MockServer::start().await;
    let base = server.uri();
    let pages = [(1, 200, true), (2, 200, true), (3, 25, false)];
    for (page, n, more) in pages {
        let mut links =
            json!({"pages": {"last": format!("{base}/v2/droplets/7/actions?page=3&per_page=200")}});
        if more {
            links["pages"]["next"] = json!(format!(
                "{base}/v2/droplets/7/actions?page={}&per_page=200",
                page + 1
            ));
        }
        if page > 1 {
            links["pages"]["first"] =
                json!(format!("{base}/v2/droplets/7/actions?page=1&per_page=200"));
            links["pages"]["prev"] = json!(format!(
                "{base}/v2/droplets/7/actions?page={}&per_page=200",
                page - 1
            ));
        }
        Mock::given(method("GET"))
            .and(path("/v2/droplets/7/actions"))
            .and(query_param("page", page.to_string().as_str()))
            .and(query_param("per_page", "200"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "actions": actions_page((page as i64 - 1) * 200 + 1, n),
                "links": links, "meta": {"total": 425}
            })))
            .expect(if page == 1 { 2 } else { 1 })
            .mount(&server)
            .await;
    }
    let c = client(&server);
    let first = c.list_droplet_actions(&token(), 7, 1, 5000).await.unwrap();
    assert_eq!(first.items.len(), 200);
    assert_eq!(first.next_page, Some(2));
    assert_eq!(first.total, Some(425));
    let all = c.list_all_droplet_actions(&token(), 7, 10).await.unwrap();
    assert_eq!(all.len(), 425);
    let ids: std::collections::BTreeSet<i64> = all.iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), 425);
}

#[tokio::test]
async fn list_all_stops_at_max_pages_and_on_empty_links() {
    let server = MockServer::start().await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/v2/droplets/8/actions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "actions": actions_page(1, 2),
            "links": {"pages": {"next": format!("{base}/v2/droplets/8/actions?page=99")}},
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/9/actions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "actions": actions_page(1, 21), "links": {}, "meta": {"total": 21}
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let capped = c.list_all_droplet_actions(&token(), 8, 3).await.unwrap();
    assert_eq!(capped.len(), 6);
    assert_eq!(c.request_count(), 3);
    let all = c.list_all_droplet_actions(&token(), 9, 3).await.unwrap();
    assert_eq!(all.len(), 21);
    assert_eq!(c.request_count(), 4);
}

#[tokio::test]
async fn droplets_by_tag_reads_every_page() {
    let server = MockServer::start().await;
    let base = server.uri();
    let droplets = |from: i64, n: i64| -> Vec<Value> {
        (from..from + n)
            .map(|id| json!({"id": id, "name": format!("d{id}"), "status": "active", "locked": false, "tags": ["web"]}))
            .collect()
    };
    Mock::given(method("GET"))
        .and(path("/v2/droplets"))
        .and(query_param("tag_name", "web"))
        .and(query_param("page", "1"))
        .and(query_param("per_page", "200"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "droplets": droplets(1, 200),
            "links": {"pages": {"next": format!("{base}/v2/droplets?page=2&per_page=200&tag_name=web"),
                                 "last": format!("{base}/v2/droplets?page=2&per_page=200&tag_name=web")}},
            "meta": {"total": 230}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets"))
        .and(query_param("tag_name", "web"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "droplets": droplets(201, 30),
            "links": {"pages": {"first": format!("{base}/v2/droplets?page=1&per_page=200&tag_name=web"),
                                 "prev": format!("{base}/v2/droplets?page=1&per_page=200&tag_name=web")}},
            "meta": {"total": 230}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let all = client(&server)
        .list_droplets_by_tag(&token(), "web")
        .await
        .unwrap();
    assert_eq!(all.len(), 230);
    assert_eq!(all[229].id, 230);
}

#[tokio::test]
async fn actions_and_snapshots_endpoints() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/actions/55"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"action": action(55, "errored", "snapshot")})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/3/actions/56"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"action": action(56, "done", "power_off")})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/actions"))
        .and(query_param("page", "2"))
        .and(query_param("per_page", "50"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "actions": actions_page(1, 50), "links": {}, "meta": {"total": 100}
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/3/snapshots"))
        .and(query_param("per_page", "200"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "snapshots": [
                {"id": 6372321, "name": "web-01-1595954862243", "created_at": "2020-07-28T16:47:44Z",
                 "regions": ["nyc3", "sfo3"], "min_disk_size": 25, "size_gigabytes": 2.34, "type": "snapshot"},
                {"id": "6372322", "name": "web-01-b", "created_at": "2020-07-29T01:44:35Z",
                 "regions": ["nyc3"], "min_disk_size": 25, "size_gigabytes": 2.34, "type": "snapshot"}
            ],
            "links": {}, "meta": {"total": 2}
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let a = c.get_action(&token(), 55).await.unwrap();
    assert_eq!(a.status, ActionStatus::Errored);
    assert_eq!(a.type_, "snapshot");
    assert_eq!(a.started_at, Some("2020-11-14T16:29:21Z".parse().unwrap()));
    let a = c.get_droplet_action(&token(), 3, 56).await.unwrap();
    assert_eq!(a.status, ActionStatus::Other("done".into()));
    let p = c.list_actions(&token(), 2, 50).await.unwrap();
    assert_eq!(p.items.len(), 50);
    assert_eq!(p.next_page, None);
    let s = c.list_droplet_snapshots(&token(), 3, 1, 200).await.unwrap();
    assert_eq!(s.items[0].id, 6372321);
    assert_eq!(s.items[1].id, 6372322);
    assert_eq!(
        s.items[0].created_at,
        Some("2020-07-28T16:47:44Z".parse().unwrap())
    );
    let all = c.list_all_droplet_snapshots(&token(), 3, 5).await.unwrap();
    assert_eq!(all.len(), 2);
}

// ---------------------------------------------------------------------------------
// Error kinds
// ---------------------------------------------------------------------------------

async fn get_error(status: u16, body: Value) -> DoError {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(status)
                .set_body_json(body)
                .insert_header("x-request-id", "hdr-req-id"),
        )
        .mount(&server)
        .await;
    let c = DoClient::new(ClientConfig {
        get_retry: fast_retry(1),
        ..config(&server.uri())
    })
    .unwrap();
    c.get_droplet(&token(), 1).await.unwrap_err()
}

#[tokio::test]
async fn error_kinds_for_get() {
    let cases = [
        (
            401,
            "unauthorized",
            "Unable to authenticate you.",
            ErrorKind::Unauthorized,
            "Unauthorized",
        ),
        (
            403,
            "forbidden",
            "You are not authorized to perform this operation",
            ErrorKind::Forbidden,
            "Forbidden",
        ),
        (
            404,
            "not_found",
            "The resource you requested could not be found.",
            ErrorKind::NotFound,
            "NotFound",
        ),
        (
            422,
            "unprocessable_entity",
            "Droplet already has a pending event.",
            ErrorKind::DropletBusy,
            "DropletBusy",
        ),
        (
            422,
            "unprocessable_entity",
            "Size is too large to fit on your droplet's server",
            ErrorKind::Invalid,
            "Invalid",
        ),
        (
            400,
            "bad_request",
            "error parsing request body",
            ErrorKind::Invalid,
            "Invalid",
        ),
        (
            429,
            "too_many_requests",
            "API rate limit exceeded.",
            ErrorKind::RateLimited,
            "RateLimited",
        ),
        (
            500,
            "server_error",
            "Unexpected server-side error",
            ErrorKind::Server,
            "ServerError",
        ),
        (
            503,
            "service_unavailable",
            "try later",
            ErrorKind::Server,
            "ServerError",
        ),
    ];
    for (status, id, message, kind, reason) in cases {
        let e = get_error(status, do_error(id, message)).await;
        assert_eq!(e.kind(), kind, "{status} {message}");
        assert_eq!(e.reason(), reason);
        assert_eq!(e.http_status(), Some(status));
        assert_eq!(e.api_id(), Some(id));
        assert_eq!(e.message(), message);
        assert_eq!(e.request_id(), Some("4d9d8375-3c56-4925-a3e7-eb137fed17e9"));
        assert_eq!(
            e.is_transient(),
            matches!(status, 429 | 500..=599) || kind == ErrorKind::DropletBusy
        );
        if status == 403 {
            assert_eq!(e.scope_hint(), Some("droplet:read"));
        } else {
            assert_eq!(e.scope_hint(), None);
        }
    }
    // Body without request_id: fall back to the x-request-id header.
    let e = get_error(404, json!({"id": "not_found", "message": "gone"})).await;
    assert_eq!(e.request_id(), Some("hdr-req-id"));
}

#[tokio::test]
async fn scope_hints_per_action_type_and_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_json(do_error(
            "forbidden",
            "You do not have access for the attempted action.",
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_json(do_error("forbidden", "no")))
        .mount(&server)
        .await;
    let c = client(&server);
    let t = token();
    let expect = [
        (ActionRequest::Restore { image: 1 }, "droplet:admin"),
        (ActionRequest::PasswordReset, "droplet:admin"),
        (
            ActionRequest::Rebuild {
                image: ImageRef::Id(1),
            },
            "droplet:admin",
        ),
        (
            ActionRequest::Resize {
                size: "s-1vcpu-1gb".into(),
                disk: None,
            },
            "droplet:create",
        ),
        (ActionRequest::Snapshot { name: None }, "image:create"),
        (ActionRequest::Reboot, "droplet:update"),
    ];
    for (req, hint) in expect {
        let e = c.post_droplet_action(&t, 1, &req).await.unwrap_err();
        assert_eq!(e.applied, Applied::NotApplied);
        assert_eq!(e.error.kind(), ErrorKind::Forbidden);
        assert_eq!(e.error.scope_hint(), Some(hint), "{}", req.type_name());
    }
    let e = c
        .post_tag_action(&t, "web", &ActionRequest::PowerOff)
        .await
        .unwrap_err();
    assert_eq!(e.error.scope_hint(), Some("tag:read"));
    let e = c.get_action(&t, 1).await.unwrap_err();
    assert_eq!(e.scope_hint(), Some("actions:read"));
    let e = c.list_actions(&t, 1, 20).await.unwrap_err();
    assert_eq!(e.scope_hint(), Some("actions:read"));
    // 403 is not transient: exactly one request per call.
    assert_eq!(c.request_count(), 9);
}

#[tokio::test]
async fn decode_error_for_unparseable_success_body() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy</html>"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"action": {"status": 5}})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = c.get_droplet(&token(), 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    assert_eq!(e.reason(), "Decode");
    assert!(!e.is_transient());
    assert_eq!(c.request_count(), 1, "decode errors are not retried");
    // On POST a 2xx that cannot be decoded means the action probably started.
    let e = c
        .post_droplet_action(&token(), 1, &ActionRequest::PowerOn)
        .await
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Decode);
    assert_eq!(e.applied, Applied::Ambiguous);
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn transport_error_when_nothing_listens() {
    let port = free_port();
    let c = DoClient::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let e = c.get_droplet(&token(), 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert_eq!(e.reason(), "Transport");
    assert!(e.is_transient());
    assert_eq!(e.http_status(), None);
    assert_eq!(c.request_count(), 3, "GET retried up to max_attempts");
    // POST: connect refused means certainly not applied; it may be re-sent (bounded).
    let e = c
        .post_droplet_action(&token(), 1, &ActionRequest::PowerOff)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::NotApplied);
    assert_eq!(e.error.kind(), ErrorKind::Transport);
    assert_eq!(c.request_count(), 6);
}

// ---------------------------------------------------------------------------------
// Retries and POST safety
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn get_429_then_success_waits_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/1"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(do_error("too_many_requests", "API rate limit exceeded."))
                .insert_header("Retry-After", "1")
                .insert_header("RateLimit-Remaining", "0"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"droplet": {"id": 1}}))
                .insert_header("ratelimit-remaining", "4999"),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let started = Instant::now();
    let d = c.get_droplet(&token(), 1).await.unwrap();
    assert_eq!(d.id, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(c.budget(&token()).blocked_until, None);
}

#[tokio::test]
async fn get_retries_5xx_then_gives_up_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/1"))
        .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"droplet": {"id": 1}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/2"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(do_error("server_error", "Unexpected server-side error")),
        )
        .expect(3)
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(c.get_droplet(&token(), 1).await.unwrap().id, 1);
    let e = c.get_droplet(&token(), 2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server);
    assert_eq!(e.message(), "Unexpected server-side error");
    assert_eq!(c.request_count(), 5);
}

#[tokio::test]
async fn post_5xx_is_ambiguous_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(do_error("server_error", "Unexpected server-side error")),
        )
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = c
        .post_droplet_action(&token(), 1, &ActionRequest::Snapshot { name: None })
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::Ambiguous);
    assert_eq!(e.error.kind(), ErrorKind::Server);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    let e = c
        .post_tag_action(&token(), "web", &ActionRequest::PowerOn)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::Ambiguous);
    assert_eq!(c.request_count(), 2, "one request per POST, never re-sent");
}

#[tokio::test]
async fn post_timeout_after_sending_is_ambiguous_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"action": action(1, "in-progress", "power_off")}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let c = DoClient::new(ClientConfig {
        timeout: Duration::from_millis(300),
        ..config(&server.uri())
    })
    .unwrap();
    let e = c
        .post_droplet_action(&token(), 1, &ActionRequest::PowerOff)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::Ambiguous);
    assert_eq!(e.error.kind(), ErrorKind::Transport);
    assert_eq!(c.request_count(), 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// A server that reads the request and then closes the connection without answering.
async fn hang_up_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 16 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(200), sock.read(&mut buf)).await;
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn post_connection_lost_after_sending_is_ambiguous() {
    let (url, accepted) = hang_up_server().await;
    let c = DoClient::new(config(&url)).unwrap();
    let e = c
        .post_droplet_action(&token(), 1, &ActionRequest::Reboot)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::Ambiguous);
    assert_eq!(e.error.kind(), ErrorKind::Transport);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "never re-sent");
    // The same failure on GET is retried.
    let e = c.get_droplet(&token(), 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn post_429_is_not_applied_and_resent_after_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(do_error("too_many_requests", "API rate limit exceeded."))
                .insert_header("retry-after", "0"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!({"type": "power_on"})))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"action": action(9, "in-progress", "power_on")})),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let a = c
        .post_droplet_action(&token(), 1, &ActionRequest::PowerOn)
        .await
        .unwrap();
    assert_eq!(a.id, 9);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);

    // With no attempts left the 429 comes back, certainly not applied.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(do_error("too_many_requests", "API rate limit exceeded."))
                .insert_header("retry-after", "0"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = DoClient::new(ClientConfig {
        post_retry: fast_retry(1),
        ..config(&server.uri())
    })
    .unwrap();
    let e = c
        .post_droplet_action(&token(), 1, &ActionRequest::PowerOn)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::NotApplied);
    assert_eq!(e.error.kind(), ErrorKind::RateLimited);
    assert_eq!(e.error.retry_after(), Some(Duration::ZERO));
}

#[tokio::test]
async fn post_4xx_is_not_applied_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_json(do_error(
            "unprocessable_entity",
            "Droplet already has a pending event.",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server)
        .post_droplet_action(&token(), 1, &ActionRequest::Shutdown)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::NotApplied);
    assert_eq!(e.error.kind(), ErrorKind::DropletBusy);
    assert_eq!(e.error.message(), "Droplet already has a pending event.");
    assert!(e.to_string().contains("not applied"), "{e}");
}

#[tokio::test]
async fn invalid_requests_are_not_sent() {
    let server = MockServer::start().await;
    let c = client(&server);
    let bad = [
        ActionRequest::Restore { image: 0 },
        ActionRequest::ChangeBackupPolicy {
            policy: BackupPolicy::default(),
        },
        ActionRequest::Rename {
            name: "has space".into(),
        },
    ];
    for req in bad {
        let e = c.post_droplet_action(&token(), 1, &req).await.unwrap_err();
        assert_eq!(e.applied, Applied::NotApplied);
        assert_eq!(e.error.kind(), ErrorKind::Invalid);
    }
    let e = c
        .post_tag_action(&token(), "web", &ActionRequest::Reboot)
        .await
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Invalid);
    assert_eq!(c.request_count(), 0);
}

#[tokio::test]
async fn unusable_tokens_are_never_sent() {
    let server = MockServer::start().await;
    let c = client(&server);
    for bad in [Token::new("  \n"), Token::new("dop_v1_abc\ndef")] {
        let e = c.get_droplet(&bad, 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert!(!e.to_string().contains("abc"), "{e}");
        let e = c
            .post_droplet_action(&bad, 1, &ActionRequest::PowerOn)
            .await
            .unwrap_err();
        assert_eq!(e.applied, Applied::NotApplied);
    }
    assert_eq!(c.request_count(), 0);
}

// ---------------------------------------------------------------------------------
// Rate budget
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_headers_any_casing_update_budget() {
    let server = MockServer::start().await;
    let reset = jiff::Timestamp::now().as_second() + 600;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"droplet": {"id": 1}}))
                .insert_header("rAtElImIt-LiMiT", "5000")
                .insert_header("RateLimit-Remaining", "42")
                .insert_header("RATELIMIT-RESET", reset.to_string().as_str()),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let t = token();
    let before = c.budget(&t);
    assert_eq!(before.remaining_hour, 5000);
    assert_eq!(before.remaining_minute, 250);
    c.get_droplet(&t, 1).await.unwrap();
    let b = c.budget(&t);
    assert_eq!(b.remaining_hour, 42);
    assert_eq!(b.limit_hour, 5000);
    assert_eq!(b.remaining_minute, 249);
    assert!(b.server_reset.is_some());
    // Budgets are per token.
    assert_eq!(c.budget(&Token::new("dop_v1_other")).remaining_hour, 5000);
}

#[tokio::test]
async fn a_429_blocks_the_token_for_every_caller() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(do_error("too_many_requests", "API rate limit exceeded."))
                .insert_header("retry-after", "30")
                .insert_header("ratelimit-remaining", "0"),
        )
        .mount(&server)
        .await;
    let c = DoClient::new(ClientConfig {
        max_budget_wait: Duration::from_millis(200),
        ..config(&server.uri())
    })
    .unwrap();
    let t = token();
    let e = c.get_droplet(&t, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.http_status(), Some(429));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(c.request_count(), 1);
    assert!(c.budget(&t).blocked_until.is_some());
    // A clone (another reconcile) with the same token does not send anything.
    let other = c.clone();
    let e = other
        .post_droplet_action(&t, 1, &ActionRequest::PowerOn)
        .await
        .unwrap_err();
    assert_eq!(e.applied, Applied::NotApplied);
    assert_eq!(e.error.kind(), ErrorKind::RateLimited);
    assert!(e.error.retry_after().unwrap() > Duration::from_secs(25));
    assert_eq!(e.error.http_status(), None);
    assert_eq!(c.request_count(), 1);
    // Another token is unaffected.
    let _ = c.get_droplet(&Token::new("dop_v1_other"), 1).await;
    assert_eq!(c.request_count(), 2);
}

#[tokio::test]
async fn local_per_minute_limit_holds_requests_back() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"droplet": {"id": 1}})))
        .mount(&server)
        .await;
    let c = DoClient::new(ClientConfig {
        rate_limits: RateLimits {
            per_minute: 2,
            per_hour: 100,
        },
        max_budget_wait: Duration::from_millis(50),
        ..config(&server.uri())
    })
    .unwrap();
    let t = token();
    c.get_droplet(&t, 1).await.unwrap();
    c.get_droplet(&t, 1).await.unwrap();
    let e = c.get_droplet(&t, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.retry_after().unwrap() > Duration::from_secs(50));
    assert_eq!(c.request_count(), 2);
    assert_eq!(c.budget(&t).remaining_minute, 0);
    assert_eq!(c.budget(&t).remaining_hour, 98);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, &'static str, u32)>>);

impl RequestObserver for Recorder {
    fn on_response(
        &self,
        route: &'static str,
        status_class: &'static str,
        budget: &BudgetSnapshot,
    ) {
        self.0
            .lock()
            .unwrap()
            .push((route, status_class, budget.remaining_hour));
    }
}

#[tokio::test]
async fn observer_sees_route_templates_and_status_classes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/5"))
        .respond_with(ResponseTemplate::new(404).set_body_json(do_error("not_found", "gone")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"action": action(1, "in-progress", "reboot")}))
                .insert_header("ratelimit-remaining", "100"),
        )
        .mount(&server)
        .await;
    let rec = Arc::new(Recorder::default());
    let c = DoClient::new(ClientConfig {
        observer: Some(rec.clone()),
        ..config(&server.uri())
    })
    .unwrap();
    let _ = c.get_droplet(&token(), 5).await;
    c.post_droplet_action(&token(), 5, &ActionRequest::Reboot)
        .await
        .unwrap();
    let seen = rec.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("GET /v2/droplets/{id}", "4xx", 4999),
            ("POST /v2/droplets/{id}/actions", "2xx", 100),
        ]
    );
}

// ---------------------------------------------------------------------------------
// The token never leaks
// ---------------------------------------------------------------------------------

/// One error of every kind, produced through the client.
async fn one_error_of_each_kind() -> Vec<(ErrorKind, String, String)> {
    let server = MockServer::start().await;
    let echo = format!("invalid header Authorization: Bearer {SECRET} (token {SECRET})");
    let statuses = [
        (401, "unauthorized", echo.clone()),
        (
            403,
            "forbidden",
            format!("forbidden for authorization=Bearer {SECRET}"),
        ),
        (404, "not_found", format!("no droplet for {SECRET}")),
        (
            422,
            "unprocessable_entity",
            format!("Droplet already has a pending event. {SECRET}"),
        ),
        (400, "bad_request", echo.clone()),
        (429, "too_many_requests", echo.clone()),
        (500, "server_error", echo.clone()),
    ];
    for (i, (status, id, message)) in statuses.iter().enumerate() {
        Mock::given(method("GET"))
            .and(path(format!("/v2/droplets/{i}")))
            .respond_with(
                ResponseTemplate::new(*status)
                    .set_body_json(json!({"id": id, "message": message, "request_id": SECRET}))
                    .insert_header("retry-after", "0"),
            )
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/v2/droplets/100"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!("Bearer {SECRET}")))
        .mount(&server)
        .await;
    let c = DoClient::new(ClientConfig {
        get_retry: fast_retry(1),
        ..config(&server.uri())
    })
    .unwrap();
    let t = token();
    let mut errors = vec![];
    for i in 0..statuses.len() {
        errors.push(c.get_droplet(&t, i as i64).await.unwrap_err());
    }
    errors.push(c.get_droplet(&t, 100).await.unwrap_err());
    let refused = DoClient::new(config(&format!("http://127.0.0.1:{}", free_port()))).unwrap();
    errors.push(refused.get_droplet(&t, 1).await.unwrap_err());
    let post = c
        .post_droplet_action(&t, 0, &ActionRequest::PowerOn)
        .await
        .unwrap_err();
    let mut out: Vec<_> = errors
        .into_iter()
        .map(|e| (e.kind(), format!("{e}"), format!("{e:?}")))
        .collect();
    out.push((post.kind(), format!("{post}"), format!("{post:?}")));
    out
}

#[tokio::test]
async fn no_error_kind_ever_prints_the_token() {
    let errors = one_error_of_each_kind().await;
    let kinds: std::collections::HashSet<ErrorKind> = errors.iter().map(|e| e.0).collect();
    for k in [
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::DropletBusy,
        ErrorKind::Invalid,
        ErrorKind::RateLimited,
        ErrorKind::Server,
        ErrorKind::Transport,
        ErrorKind::Decode,
    ] {
        assert!(kinds.contains(&k), "missing {k:?}");
    }
    let secret_tail = &SECRET[7..];
    for (kind, display, debug) in errors {
        assert!(
            !display.contains(secret_tail),
            "{kind:?} Display leaks: {display}"
        );
        assert!(
            !debug.contains(secret_tail),
            "{kind:?} Debug leaks: {debug}"
        );
    }
    let t = token();
    assert_eq!(format!("{t}"), "Token(***)");
    assert_eq!(format!("{t:?}"), "Token(***)");
    assert!(!format!("{:?}", Some(&t)).contains(secret_tail));
}

#[tokio::test]
async fn budgets_config_and_logs_never_contain_the_token() {
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }
    // A global subscriber (thread-local ones miss events while other tests run in
    // parallel); it therefore also captures every other test's logs, which is fine:
    // none of them may contain the token either.
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(buf.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).set_body_string(format!("Bearer {SECRET}")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .mount(&server)
        .await;
    let c = client(&server);
    let t = token();
    let _ = c.get_droplet(&t, 1).await;
    let _ = c.post_droplet_action(&t, 1, &ActionRequest::PowerOff).await;
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains(&t.fingerprint()),
        "logs name the token by fingerprint: {logs}"
    );
    assert!(!logs.contains(&SECRET[7..]), "{logs}");
    assert!(!format!("{:?}", c.rate_budget()).contains(&SECRET[7..]));
    assert!(!format!("{c:?}").contains(&SECRET[7..]));
}

// ---------------------------------------------------------------------------------
// Bodies against DigitalOcean's OpenAPI schemas
// ---------------------------------------------------------------------------------

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/do-droplet-action-schemas.yaml"
);
/// DigitalOcean's full OpenAPI spec: `$DIGITALOCEAN_OPENAPI_SPEC`, else `shared/digitalocean-openapi.yaml` beside the
/// checkout (or beside its worktree directory).
fn shared_spec() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("DIGITALOCEAN_OPENAPI_SPEC") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let near = root.join("../shared/digitalocean-openapi.yaml");
    let far = root.join("../../shared/digitalocean-openapi.yaml");
    if near.is_file() || !far.is_file() {
        near
    } else {
        far
    }
}

fn load_fixture() -> Value {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn resolve<'a>(spec: &'a Value, reference: &str) -> &'a Value {
    let name = reference
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
    spec["schemas"]
        .get(name)
        .unwrap_or_else(|| panic!("fixture lacks {name}"))
}

/// A small OpenAPI 3.0 schema checker covering what these schemas use: $ref, allOf,
/// anyOf, oneOf, type, enum, required, properties, readOnly (a request must not carry
/// read-only properties). `type_override` lets `$.type` be checked against the
/// discriminator mapping instead of the (inconsistent) enum.
fn check(
    spec: &Value,
    schema: &Value,
    v: &Value,
    at: &str,
    type_override: Option<&[String]>,
    errs: &mut Vec<String>,
) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return check(spec, resolve(spec, r), v, at, type_override, errs);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(spec, s, v, at, type_override, errs);
        }
    }
    for (key, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let ok = options
                .iter()
                .filter(|s| {
                    let mut e = vec![];
                    check(spec, s, v, at, type_override, &mut e);
                    e.is_empty()
                })
                .count();
            if ok == 0 || (exactly_one && ok > 1) {
                errs.push(format!("{at}: {ok} of {key} match"));
            }
        }
    }
    if schema.get("readOnly") == Some(&Value::Bool(true)) {
        errs.push(format!("{at}: read-only property sent"));
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            _ => false,
        };
        if !ok {
            errs.push(format!("{at}: expected {t}, got {v}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        let overridden = at == "$.type" && type_override.is_some();
        if overridden {
            let allowed = type_override.unwrap_or_default();
            if !v.as_str().is_some_and(|s| allowed.iter().any(|a| a == s)) {
                errs.push(format!("{at}: {v} not in discriminator mapping"));
            }
        } else if !e.contains(v) {
            errs.push(format!("{at}: {v} not in enum {e:?}"));
        }
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req {
            let r = r.as_str().unwrap_or_default();
            if v.get(r).is_none() {
                errs.push(format!("{at}: missing required {r}"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        for (k, s) in props {
            if let Some(val) = obj.get(k) {
                check(spec, s, val, &format!("{at}.{k}"), type_override, errs);
            }
        }
    }
}

/// Property names a schema declares (through $ref and allOf), to reject extras.
fn declared(spec: &Value, schema: &Value, out: &mut std::collections::BTreeSet<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return declared(spec, resolve(spec, r), out);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            declared(spec, s, out);
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        out.extend(props.keys().cloned());
    }
}

/// Validates a body against an operation's request schema via its discriminator, and
/// checks that the body (and a nested backup_policy) carries no undeclared field.
fn validate_body(spec: &Value, operation: &str, body: &Value) -> Vec<String> {
    let op = &spec["requestBodies"][operation];
    let mapping = op["discriminator"]["mapping"].as_object().unwrap();
    let types: Vec<String> = mapping.keys().cloned().collect();
    let mut errs = vec![];
    let Some(t) = body["type"].as_str() else {
        return vec!["no type".into()];
    };
    let Some(target) = mapping.get(t).and_then(Value::as_str) else {
        return vec![format!("type {t} not allowed by {operation}")];
    };
    let schema = resolve(spec, target);
    check(spec, schema, body, "$", Some(&types), &mut errs);
    // The operation's own anyOf/oneOf, as a cross-check (oneOf cannot be exact here
    // because the branches do not forbid extra properties; the discriminator decides).
    if op.get("anyOf").is_some() {
        check(spec, op, body, "$", Some(&types), &mut errs);
    }
    let mut names = std::collections::BTreeSet::new();
    declared(spec, schema, &mut names);
    for k in body.as_object().unwrap().keys() {
        if !names.contains(k) {
            errs.push(format!("$.{k}: not declared by {target}"));
        }
    }
    if let Some(bp) = body.get("backup_policy") {
        let mut names = std::collections::BTreeSet::new();
        declared(
            spec,
            &json!({"$ref": "#/components/schemas/droplet_backup_policy"}),
            &mut names,
        );
        for k in bp.as_object().unwrap().keys() {
            if !names.contains(k) {
                errs.push(format!("$.backup_policy.{k}: not declared"));
            }
        }
    }
    errs
}

/// DigitalOcean's per-type rules that the schema leaves implicit.
fn do_rules(body: &Value) -> Vec<String> {
    let mut errs = vec![];
    let required: &[&str] = match body["type"].as_str().unwrap_or_default() {
        "change_backup_policy" => &["backup_policy"],
        "restore" | "rebuild" => &["image"],
        "resize" => &["size"],
        "rename" => &["name"],
        "change_kernel" => &["kernel"],
        _ => &[],
    };
    for r in required {
        if body.get(*r).is_none() {
            errs.push(format!("missing {r}"));
        }
    }
    if let Some(bp) = body.get("backup_policy") {
        if bp.get("weekday").is_some() && bp.get("plan") != Some(&json!("weekly")) {
            errs.push("weekday without plan weekly".into());
        }
        if bp.as_object().is_some_and(|m| m.is_empty()) {
            errs.push("empty backup_policy".into());
        }
    }
    if body["type"] == "restore" && !body["image"].is_i64() {
        errs.push("restore image must be an integer".into());
    }
    errs
}

#[test]
fn every_body_validates_against_the_openapi_schemas() {
    let spec = load_fixture();
    let mut checked = 0;
    for (req, _) in all_requests() {
        let body = req.body();
        let errs = validate_body(&spec, "dropletActions_post", &body);
        assert!(errs.is_empty(), "{}: {errs:?}", req.type_name());
        let rules = do_rules(&body);
        assert!(rules.is_empty(), "{}: {rules:?}", req.type_name());
        match req.tag_body() {
            Ok(tag_body) => {
                let errs = validate_body(&spec, "dropletActions_post_byTag", &tag_body);
                assert!(errs.is_empty(), "{} by tag: {errs:?}", req.type_name());
                checked += 1;
            }
            Err(_) => {
                // Rejected locally: either the type is not in the by-tag mapping, or
                // (enable_backups with a policy) the by-tag schema has no backup_policy.
                let errs = validate_body(&spec, "dropletActions_post_byTag", &body);
                assert!(
                    !errs.is_empty(),
                    "{} should be invalid by tag",
                    req.type_name()
                );
            }
        }
    }
    assert_eq!(checked, 9, "8 tag types (snapshot twice)");
}

#[test]
fn the_schema_checker_catches_wrong_bodies() {
    let spec = load_fixture();
    let bad = [
        json!({"type": "resize", "size": "s-1vcpu-1gb", "disk": "true"}),
        json!({"type": "restore", "image": "12389723"}),
        json!({"type": "rebuild", "image": true}),
        json!({"type": "change_kernel", "kernel": "7515"}),
        json!({"type": "enable_backups", "backup_policy": {"plan": "daily", "hour": 4, "window_length_hours": 4}}),
        json!({"type": "change_backup_policy", "backup_policy": {"plan": "weekly", "day": "SUN"}}),
        json!({"type": "change_backup_policy"}),
        json!({"type": "enable_backups", "backup_policy": {"plan": "hourly"}}),
        json!({"type": "enable_backups", "backup_policy": {"hour": 3}}),
        json!({"type": "reboot", "name": "x"}),
        json!({"type": "enable_private_networking"}),
    ];
    for body in bad {
        assert!(
            !validate_body(&spec, "dropletActions_post", &body).is_empty(),
            "{body}"
        );
    }
    for body in [
        json!({"type": "reboot"}),
        json!({"type": "enable_backups", "backup_policy": {"plan": "weekly"}}),
    ] {
        assert!(
            !validate_body(&spec, "dropletActions_post_byTag", &body).is_empty(),
            "{body}"
        );
    }
    assert!(!do_rules(&json!({"type": "resize"})).is_empty());
    assert!(
        !do_rules(&json!({"type": "enable_backups", "backup_policy": {"weekday": "SUN"}}))
            .is_empty()
    );
}

#[test]
fn fixture_matches_the_shared_openapi_spec() {
    let spec = shared_spec();
    if !common::require_file(&spec) {
        return;
    }
    let text = std::fs::read_to_string(&spec).expect("read the OpenAPI spec");
    let full: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", spec.display()));
    let fixture = load_fixture();
    for (name, schema) in fixture["schemas"].as_object().unwrap() {
        assert_eq!(
            &full["components"]["schemas"][name], schema,
            "fixture schema {name} drifted from the spec"
        );
    }
    let op_schema = |path: &str| {
        full["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"].clone()
    };
    assert_eq!(
        op_schema("/v2/droplets/{droplet_id}/actions"),
        fixture["requestBodies"]["dropletActions_post"]
    );
    assert_eq!(
        op_schema("/v2/droplets/actions"),
        fixture["requestBodies"]["dropletActions_post_byTag"]
    );
}

/// The exactly-once watermark: initiations that start together share one `GET /v2/actions?per_page=1`; a POST's
/// answer then serves the next ones without a request; a token without `actions:read` reads the droplet's list.
#[tokio::test]
async fn watermark_reads_are_shared_and_fall_back_to_the_droplet_list() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/actions"))
        .and(query_param("per_page", "1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(100))
                .set_body_json(json!({"actions": [action(700, "completed", "reboot")], "links": {}, "meta": {"total": 1}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/droplets/3164444/actions"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"action": action(750, "in-progress", "reboot")})),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let age = Duration::from_secs(60);
    let t = token();
    let marks =
        futures::future::join_all((0..8).map(|i| c.watermark(&t, Some(3_000_000 + i), age))).await;
    assert!(
        marks.iter().all(|m| m.as_ref().ok() == Some(&700)),
        "{marks:?}"
    );
    let account_reads = async || {
        server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/v2/actions")
            .count()
    };
    assert_eq!(account_reads().await, 1, "eight initiations, one read");
    c.post_droplet_action(&token(), 3164444, &ActionRequest::Reboot)
        .await
        .unwrap();
    assert_eq!(c.watermark(&token(), None, age).await.unwrap(), 750);
    assert_eq!(account_reads().await, 1, "the POST's answer is fresh");
    assert_eq!(
        c.watermark(&token(), Some(1), Duration::ZERO)
            .await
            .unwrap(),
        750,
        "a stale value is read again; the higher of the read and what was seen counts"
    );
    assert_eq!(account_reads().await, 2);

    // Without actions:read: each initiation reads its droplet's newest actions; the 403 is remembered.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/actions"))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(do_error("forbidden", "You are not authorized")),
        )
        // Once for the droplet (then remembered), once for the tag (which has no fallback).
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/42/actions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"actions": [action(90, "completed", "reboot"), action(80, "completed", "reboot")], "links": {}, "meta": {"total": 2}}),
        ))
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server);
    for _ in 0..2 {
        assert_eq!(c.watermark(&token(), Some(42), age).await.unwrap(), 90);
    }
    let by_tag = c.watermark(&token(), None, age).await.unwrap_err();
    assert_eq!(
        by_tag.kind(),
        ErrorKind::Forbidden,
        "a tag needs the account list"
    );
    server.verify().await;
}
