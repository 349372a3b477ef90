//! Kubernetes events that the API server always accepts.
//!
//! kube-runtime's [`Recorder`] names an event `<regarding name>.<nanoseconds in hex>` (17 characters after the
//! name): for a DropletAction whose name is close to the 253-character limit the name is invalid and the API
//! server rejects the event. It also passes the note on as is, while the API server refuses notes over 1 KiB
//! (counted in bytes). [`Publisher`] cuts the note on a character boundary at 1024 bytes and, for long names,
//! creates the event itself under a shortened name; otherwise it uses the Recorder (which folds repeats into
//! an event series).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};

/// The longest event note the API server accepts, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// The longest object name (DNS subdomain) the API server accepts.
pub const MAX_NAME_LEN: usize = 253;
/// What the Recorder appends to the regarding object's name: `.` and up to 16 hex digits.
const RECORDER_SUFFIX_LEN: usize = 17;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cut_to_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A valid event name for an object named `regarding` at `nanos`: the name, shortened so that the result stays
/// within 253 characters, and the time in hex. Object names are DNS subdomains; a cut one loses trailing '.' and
/// '-' so the result is one too.
pub fn event_name(regarding: &str, nanos: i128) -> String {
    let suffix = format!(".{:x}", nanos.max(0));
    let keep = MAX_NAME_LEN.saturating_sub(suffix.len());
    let base = cut_to_bytes(regarding, keep).trim_end_matches(['.', '-']);
    let base = if base.is_empty() { "event" } else { base };
    format!("{base}{suffix}")
}

/// Publishes events through kube-runtime's [`Recorder`], within the API server's limits.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
    recorder: Recorder,
}

impl Publisher {
    /// A publisher reporting as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Publisher {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
        }
    }

    /// Publishes `ev` about `reference` (in its namespace).
    pub async fn publish(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let ev = Event {
            type_: ev.type_,
            reason: ev.reason.clone(),
            note: ev
                .note
                .as_deref()
                .map(|n| cut_to_bytes(n, MAX_NOTE_BYTES).to_string()),
            action: ev.action.clone(),
            secondary: ev.secondary.clone(),
        };
        let name = reference.name.as_deref().unwrap_or_default();
        if name.len() + RECORDER_SUFFIX_LEN <= MAX_NAME_LEN {
            return self.recorder.publish(&ev, reference).await;
        }
        let now = jiff::Timestamp::now();
        let namespace = reference.namespace.as_deref().unwrap_or("default");
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(event_name(name, now.as_nanosecond())),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_by_bytes_on_a_character_boundary() {
        let s = "€".repeat(400); // 1200 bytes, 400 characters
        let cut = cut_to_bytes(&s, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert_eq!(cut.len(), 1023); // 341 whole characters
        assert_eq!(cut_to_bytes("short", MAX_NOTE_BYTES), "short");
    }

    #[test]
    fn event_names_fit_for_the_longest_resource_names() {
        // RFC 1123 subdomain: dot-separated labels of [a-z0-9-], each starting and ending alphanumeric.
        let dns = |n: &str| {
            n.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
        };
        let nanos = jiff::Timestamp::now().as_nanosecond();
        for name in [
            "a".repeat(253),
            format!("{}-b", "a".repeat(235)),
            format!("{}.b", "a".repeat(235)),
            "x".to_string(),
        ] {
            let n = event_name(&name, nanos);
            assert!(n.len() <= MAX_NAME_LEN, "{n}");
            assert!(dns(&n), "{n}");
        }
    }
}
