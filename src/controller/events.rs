//! Kubernetes Events (`events.k8s.io/v1`), published without a cache.
//!
//! kube's `Recorder` keeps every Event it published for six minutes to aggregate repeats into a series, and walks
//! that whole cache under a lock on every publish. At scale that is memory and CPU proportional to the Events of
//! the last six minutes (20,000 of them while 10,000 keys are created). Our Events are written on transitions
//! only (a condition that changed, a key created, rotated or revoked), so repeats are rare and a series buys
//! nothing: each Event is one create, and nothing is kept.

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams, runtime::events::EventType};

/// The API server refuses a `note` over 1 KiB.
const MAX_NOTE_BYTES: usize = 1024;

/// Who publishes: the controller name and this instance (the pod name in a cluster).
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self { client, controller: controller.to_owned(), instance: instance.unwrap_or_else(|| controller.to_owned()) }
    }

    /// Creates one Event about `regarding` (in its namespace, `default` for a cluster-scoped object).
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let event = self.event(regarding, type_, reason, action, note, Timestamp::now());
        let namespace = event.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        Ok(())
    }

    fn event(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        now: Timestamp,
    ) -> Event {
        // Unique per object and instant; a random tail keeps two Events of one nanosecond apart.
        let name = format!(
            "{}.{:x}{:04x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond(),
            rand::random::<u16>()
        );
        Event {
            metadata: ObjectMeta { name: Some(name), namespace: regarding.namespace.clone(), ..Default::default() },
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(truncate(note, MAX_NOTE_BYTES)),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(match type_ {
                EventType::Normal => "Normal".to_owned(),
                EventType::Warning => "Warning".to_owned(),
            }),
            ..Default::default()
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked with an ellipsis when cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> Publisher {
        // Never used to send anything here: only `event` is called.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        Publisher::new(Client::try_from(config).unwrap(), "workload-key-operator", Some("pod-1".into()))
    }

    #[tokio::test]
    async fn event_names_its_object_and_reporter() {
        let regarding = ObjectReference {
            kind: Some("WorkloadApiKey".into()),
            name: Some("reporting".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let e = publisher().event(regarding, EventType::Warning, "InvalidSpec", "Reconcile", "bad".into(), now);
        assert!(e.metadata.name.as_deref().unwrap().starts_with("reporting."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(e.regarding.unwrap().kind.as_deref(), Some("WorkloadApiKey"));
        assert!(e.series.is_none());
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), 1024), "short");
        let cut = truncate("é".repeat(600), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'));
    }
}
