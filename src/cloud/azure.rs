//! Azure's Instance Metadata Service: the VM's identity, and Scheduled Events,
//! polled every `interruption_poll_interval` (Azure recommends as often as every
//! second; a Spot VM's `Preempt` comes at least 30 s ahead).
//!
//! Every request carries `Metadata: true` and an `api-version`. A scale set's
//! document lists its neighbours' events too: an event counts for this VM only if
//! its `Resources` name it. A document is read again only when its
//! `DocumentIncarnation` changes, and an event is handed over once.
//!
//! The first Scheduled Events request switches the service on and can take up to
//! two minutes to answer: it runs on the watcher's task, with a timeout of its own
//! ([`EVENTS_TIMEOUT`]), so it never delays READY, registration or a heartbeat.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::metadata::{self, MetadataError, body, unreachable};
use super::{Cloud, Notice, NoticeKind, clip, fact};
use crate::api::json_fault;
use crate::api::wire::Instance;

/// The instance document.
pub const INSTANCE: &str = "/metadata/instance";
const INSTANCE_API: &str = "2021-02-01";
/// The Scheduled Events document.
pub const SCHEDULED_EVENTS: &str = "/metadata/scheduledevents";
const EVENTS_API: &str = "2020-07-01";
/// The identity request's limit: the service answers in milliseconds.
const INSTANCE_TIMEOUT: Duration = Duration::from_secs(2);
/// A Scheduled Events request's limit: the first one can take two minutes.
pub const EVENTS_TIMEOUT: Duration = Duration::from_secs(150);

/// The client. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client for the service at `base` (`http://169.254.169.254`).
    pub fn new(base: Url) -> Self {
        Self {
            http: metadata::client(INSTANCE_TIMEOUT),
            base,
        }
    }

    /// `GET path?api-version=version` with `Metadata: true`: the body of a 200.
    async fn get(
        &self,
        path: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<String, MetadataError> {
        let mut url = self.base.clone();
        url.set_path(path);
        url.query_pairs_mut().append_pair("api-version", version);
        let response = self
            .http
            .get(url)
            .header("Metadata", "true")
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = body(response).await?;
        if status != StatusCode::OK {
            return Err(MetadataError::Status(status.as_u16()));
        }
        metadata::text(body, path)
    }
}

#[derive(Deserialize)]
struct InstanceDocument {
    compute: Compute,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Compute {
    vm_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    vm_size: String,
    #[serde(default)]
    priority: String,
}

/// The VM's facts: `compute.vmId` (the logical agent id), its name, size,
/// location (in `availability_zone`), and `spot` when its priority is Spot (or
/// Low, the scale sets' older word for it), else `on-demand`.
pub async fn identity(client: &Client) -> Result<Instance, MetadataError> {
    let body = client.get(INSTANCE, INSTANCE_API, INSTANCE_TIMEOUT).await?;
    parse_instance(&body)
}

/// Reads the instance document.
pub fn parse_instance(body: &str) -> Result<Instance, MetadataError> {
    let document: InstanceDocument = serde_json::from_str(body)
        .map_err(|e| MetadataError::Garbage(format!("{INSTANCE}: {}", json_fault(&e))))?;
    let compute = document.compute;
    let id = compute.vm_id.trim().to_owned();
    if !crate::identity::is_valid_agent_id(&id) {
        return Err(MetadataError::Garbage("no usable vmId".to_owned()));
    }
    let spot = matches!(compute.priority.trim(), "Spot" | "Low");
    Ok(Instance {
        cloud: Cloud::Azure,
        id,
        name: fact(Some(&compute.name)),
        instance_type: fact(Some(&compute.vm_size)),
        availability_zone: fact(Some(&compute.location)),
        lifecycle: Some(if spot { "spot" } else { "on-demand" }.to_owned()),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventsDocument {
    document_incarnation: u64,
    /// Read one by one: a neighbour's odd event must not hide this VM's.
    #[serde(default)]
    events: Vec<serde_json::Value>,
}

/// One Scheduled Events document, read for the VM `name`.
#[derive(Debug, PartialEq, Eq)]
pub struct Document {
    /// Changes whenever the events change.
    pub incarnation: u64,
    /// This VM's events that hostbeat acts on, by `EventId`.
    pub ours: Vec<(String, Notice)>,
}

/// Reads a Scheduled Events document: the events that name `name` in their
/// `Resources`, each read on its own so that an odd event (a neighbour's, or one of
/// a type hostbeat does not know) never hides another. `Preempt` and `Terminate`
/// are notices that the VM goes at `NotBefore`: now when it is empty (the event
/// has started) or unreadable, the earliest it could mean. `Reboot`, `Redeploy`
/// and `Freeze` are maintenance it survives. Other types are ignored.
pub fn parse_events(body: &str, name: &str) -> Result<Document, MetadataError> {
    let document: EventsDocument = serde_json::from_str(body)
        .map_err(|e| MetadataError::Garbage(format!("{SCHEDULED_EVENTS}: {}", json_fault(&e))))?;
    let mut ours = Vec::new();
    for event in &document.events {
        let text = |key: &str| event[key].as_str().unwrap_or("").trim();
        let names_us = event["Resources"].as_array().is_some_and(|resources| {
            resources
                .iter()
                .filter_map(serde_json::Value::as_str)
                .any(|r| r.trim().eq_ignore_ascii_case(name))
        });
        if !names_us {
            continue;
        }
        let (kind, action) = match text("EventType") {
            "Preempt" => (NoticeKind::Interruption, "preempt"),
            "Terminate" => (NoticeKind::Interruption, "terminate"),
            "Reboot" => (NoticeKind::Maintenance, "reboot"),
            "Redeploy" => (NoticeKind::Maintenance, "redeploy"),
            "Freeze" => (NoticeKind::Maintenance, "freeze"),
            _ => continue,
        };
        let at = httpdate::parse_http_date(text("NotBefore")).unwrap_or_else(|_| SystemTime::now());
        // Told apart by id; an event without one, by what it is.
        let id = match text("EventId") {
            "" => format!("{action}@{}", clip(text("NotBefore"))),
            id => clip(id),
        };
        ours.push((
            id,
            Notice {
                source: Cloud::Azure,
                kind,
                action: action.to_owned(),
                time: humantime::format_rfc3339_seconds(at).to_string(),
            },
        ));
    }
    Ok(Document {
        incarnation: document.document_incarnation,
        ours,
    })
}

/// The Scheduled Events, polled: a new incarnation is read, each event of this VM
/// handed over once.
pub struct Events {
    client: Arc<Client>,
    /// The VM's name as its events name it (`compute.name` as Azure writes it),
    /// read on the first turn.
    name: Option<String>,
    incarnation: Option<u64>,
    /// The events of the last document already handed over.
    handed: Vec<String>,
}

impl Events {
    /// Nothing read yet.
    pub fn new(client: Arc<Client>) -> Self {
        Self {
            client,
            name: None,
            incarnation: None,
            handed: Vec::new(),
        }
    }
}

impl super::watch::Poll for Events {
    const WHAT: &'static str = "Azure's scheduled events";

    fn cloud(&self) -> Cloud {
        Cloud::Azure
    }

    async fn poll(&mut self) -> Result<Vec<Notice>, MetadataError> {
        if self.name.is_none() {
            let body = self
                .client
                .get(INSTANCE, INSTANCE_API, INSTANCE_TIMEOUT)
                .await?;
            self.name = Some(parse_vm_name(&body)?);
        }
        let name = self.name.clone().unwrap_or_default();
        let body = self
            .client
            .get(SCHEDULED_EVENTS, EVENTS_API, EVENTS_TIMEOUT)
            .await?;
        let document = parse_events(&body, &name)?;
        if self.incarnation == Some(document.incarnation) {
            return Ok(Vec::new());
        }
        self.incarnation = Some(document.incarnation);
        let new = document
            .ours
            .iter()
            .filter(|(id, _)| !self.handed.contains(id))
            .map(|(_, notice)| notice.clone())
            .collect();
        self.handed = document.ours.into_iter().map(|(id, _)| id).collect();
        Ok(new)
    }
}

/// `compute.name` as Azure writes it, the name its events use: matched, never
/// sent nor logged, so kept whole (the identity's `name` is the cleaned copy).
fn parse_vm_name(body: &str) -> Result<String, MetadataError> {
    let document: InstanceDocument = serde_json::from_str(body)
        .map_err(|e| MetadataError::Garbage(format!("{INSTANCE}: {}", json_fault(&e))))?;
    Some(document.compute.name.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| MetadataError::Garbage(format!("{INSTANCE}: no compute.name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r#"{"DocumentIncarnation": 3, "Events": [
        {"EventId": "A", "EventType": "Preempt", "ResourceType": "VirtualMachine",
         "Resources": ["vmss_7"], "EventStatus": "Scheduled",
         "NotBefore": "Tue, 24 Nov 2026 08:22:00 GMT", "EventSource": "Platform"},
        {"EventId": "B", "EventType": "Preempt", "Resources": ["VMSS_3"],
         "NotBefore": "Tue, 24 Nov 2026 08:23:00 GMT"},
        {"EventId": "C", "EventType": "Freeze", "Resources": ["vmss_3"], "NotBefore": ""},
        {"EventId": "D", "EventType": "Unheard", "Resources": ["vmss_3"], "NotBefore": ""}
    ]}"#;

    #[test]
    fn only_this_vms_events_count_and_a_deadline_is_not_before() {
        let document = parse_events(DOCUMENT, "vmss_3").unwrap();
        assert_eq!(document.incarnation, 3);
        let ids: Vec<&str> = document.ours.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["B", "C"]);
        let preempt = &document.ours[0].1;
        assert_eq!(preempt.action, "preempt");
        assert_eq!(preempt.time, "2026-11-24T08:23:00Z");
        assert!(preempt.kind.terminating());
        assert!(!document.ours[1].1.kind.terminating());
    }

    #[test]
    fn an_odd_event_never_hides_this_vms_preemption() {
        let document = parse_events(
            r#"{"DocumentIncarnation": 4, "Events": [
                {"EventId": "N", "EventType": "Preempt", "Resources": null},
                {"EventType": "Reboot", "Resources": ["vmss_9"], "NotBefore": "soon"},
                {"EventId": 7, "EventType": "Preempt", "Resources": ["vmss_3"], "NotBefore": "Tue, 24 Nov 2026 08:22:00 UTC"}
            ]}"#,
            "vmss_3",
        )
        .unwrap();
        assert_eq!(document.ours.len(), 1);
        let (id, notice) = &document.ours[0];
        assert_eq!(id, "preempt@Tue, 24 Nov 2026 08:22:00 UTC");
        // An unreadable NotBefore is the earliest it could mean: now.
        let at = humantime::parse_rfc3339(&notice.time).unwrap();
        assert!(at <= SystemTime::now() + std::time::Duration::from_secs(1));
    }

    #[test]
    fn broken_documents_are_errors_that_quote_little() {
        for bad in [
            "",
            "{}",
            r#"{"DocumentIncarnation": -1, "Events": []}"#,
            r#"{"DocumentIncarnation": 1, "Events": {}}"#,
        ] {
            let error = parse_events(bad, "x").unwrap_err();
            assert!(error.to_string().len() < 200, "{error}");
        }
    }

    #[test]
    fn identity_is_read_from_compute() {
        let instance = parse_instance(
            r#"{"compute": {"vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "name": "vmss_3",
                "location": "westeurope", "vmSize": "Standard_D2s_v3", "priority": "Spot"}}"#,
        )
        .unwrap();
        assert_eq!(instance.id, "02aab8a4-74ef-476e-8182-f6d2ba4166a6");
        assert_eq!(instance.name.as_deref(), Some("vmss_3"));
        assert_eq!(instance.lifecycle.as_deref(), Some("spot"));
        assert!(parse_instance(r#"{"compute": {"vmId": "a b"}}"#).is_err());
    }
}
