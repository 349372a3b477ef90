//! Unit tests of the client's URL building, retry delays and page decoding.
use std::time::Duration;

use super::*;
use crate::digitalocean::Action;

fn cfg(url: &str) -> ClientConfig {
    ClientConfig {
        base_url: Url::parse(url).unwrap(),
        ..ClientConfig::default()
    }
}

#[test]
fn http_only_for_loopback() {
    for ok in [
        "https://api.digitalocean.com",
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://[::1]:9000/",
        "http://localhost:1234/prefix/",
        "http://LOCALHOST",
    ] {
        assert!(DoClient::new(cfg(ok)).is_ok(), "{ok}");
    }
    for bad in [
        "http://api.digitalocean.com",
        "http://10.0.0.1",
        "http://localhost.evil.com",
        "http://[::2]",
    ] {
        assert!(
            matches!(DoClient::new(cfg(bad)), Err(ConfigError::InsecureUrl(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        DoClient::new(cfg("ftp://example.com")),
        Err(ConfigError::UnsupportedUrl(_))
    ));
}

#[test]
fn urls_keep_prefix_and_encode_tags() {
    let c = DoClient::new(cfg("http://127.0.0.1:1/proxy")).unwrap();
    assert_eq!(
        c.url(&["v2", "droplets", "5", "actions"], &[]).as_str(),
        "http://127.0.0.1:1/proxy/v2/droplets/5/actions"
    );
    let c = DoClient::new(ClientConfig::default()).unwrap();
    assert_eq!(
        c.url(
            &["v2", "droplets", "actions"],
            &[("tag_name", "env:prod a/b&c=d+")]
        )
        .as_str(),
        "https://api.digitalocean.com/v2/droplets/actions?tag_name=env%3Aprod%20a%2Fb%26c%3Dd%2B"
    );
}

#[test]
fn retry_delay_is_capped_and_jittered() {
    let p = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(800),
    };
    for attempt in 1..12 {
        let d = p.delay(attempt);
        let full = (Duration::from_millis(100) * 2u32.pow((attempt - 1).min(20)))
            .min(Duration::from_millis(800));
        assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
    }
}

#[test]
fn page_decoding() {
    let p: Page<Action> = decode_page(
        br#"{"actions":[{"id":1,"status":"completed","type":"reboot"}],"links":{},"meta":{"total":1}}"#,
        "actions",
        1,
    )
    .unwrap();
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.total, Some(1));
    assert_eq!(p.next_page, None);
    assert!(decode_page::<Action>(b"{}", "actions", 1).is_err());
    assert!(decode_key::<Action>(b"not json", "action").is_err());
}
