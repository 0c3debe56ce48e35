//! Clinical Order Workflows kit for the pattern tests (`tests/cow_*.rs`): builders for the COW
//! resources (ServiceRequest, Coordination Task, Cancellation Request Task) with client-assigned
//! ids, a two-Herald fixture (a placer-side and a fulfiller-side process on loopback, each
//! caller a [`Party`] with or without its own API key), and the notification view the tests
//! assert on ([`Note`]: type, event number, focus, subscription identifier, status, in arrival
//! order). The flows themselves live in the test files; this module only knows the shapes.

use std::time::Duration;

use herald_subscriptions::notification::{NotificationType, parse_status_bundle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::receiver::{Received, Receiver, summary};
use crate::{Herald, client};

/// Upper bound of every wait (the machine is shared and loaded: generous on purpose).
pub const WAIT: Duration = Duration::from_secs(30);

/// The placer organisation.
pub const PLACER: &str = "Organization/placer";
/// The fulfiller (a lab) that the orders go to.
pub const LAB_1: &str = "Organization/lab-1";
/// A competing fulfiller that must hear nothing about lab-1's Tasks.
pub const LAB_2: &str = "Organization/lab-2";
/// The patient of every order.
pub const PATIENT: &str = "Patient/pat-1";

/// Identifier system of the placer's orders (ServiceRequest.identifier).
pub const PLACER_ORDERS: &str = "https://placer.example.org/ehr";
/// Identifier system of the placer's Coordination and Cancellation Request Tasks.
pub const PLACER_TASKS: &str = "https://placer.example.org/cpoe";
/// Identifier system of the fulfiller's own resources.
pub const FILLER_IDS: &str = "https://filler.example.org/lab";
/// Identifier system of the Subscriptions (the COW notification profile names them by it).
pub const SUBSCRIPTIONS: &str = "https://placer.example.org/cow-subscription/orders";
/// The R4 cross-version extension that carries `Subscription.identifier`.
pub const R4_SUBSCRIPTION_IDENTIFIER: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.identifier";
/// The FHIR task-code system (`fulfill`, `abort`).
pub const TASK_CODE: &str = "http://hl7.org/fhir/CodeSystem/task-code";
/// The COW example code system of business statuses.
pub const COW_TEMP: &str = "http://hl7.org/fhir/uv/cow/CodeSystem/temp";
/// Profile of a Coordination Task.
pub const COORDINATION_TASK: &str =
    "http://hl7.org/fhir/uv/cow/StructureDefinition/coordination-task";
/// Profile of a Cancellation Request Task.
pub const CANCELLATION_TASK: &str =
    "http://hl7.org/fhir/uv/cow/StructureDefinition/cancellation-request-task";

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// A placer's ServiceRequest (an order) with a client-assigned id, for `performer`.
pub fn service_request(id: &str, requester: &str, performer: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": id,
        "identifier": [{"system": PLACER_ORDERS, "value": id}],
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": PATIENT},
        "requester": {"reference": requester},
        "performer": [{"reference": performer}],
    })
}

/// A Coordination Task (code `fulfill`, status `requested`, intent `order`) about the order
/// `request` (a reference, relative or absolute), requested by `requester`, owned by `owner`
/// (`None`: not yet assigned, for triage).
pub fn coordination_task(id: &str, request: &str, requester: &str, owner: Option<&str>) -> Value {
    let mut t = json!({
        "resourceType": "Task",
        "id": id,
        "meta": {"profile": [COORDINATION_TASK]},
        "identifier": [{"system": PLACER_TASKS, "value": id}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": {"reference": request},
        "basedOn": [{"reference": request}],
        "for": {"reference": PATIENT},
        "requester": {"reference": requester},
    });
    if let Some(o) = owner {
        t["owner"] = json!({"reference": o});
    }
    t
}

/// A Cancellation Request Task (code `abort`, status `requested`, intent `order`) whose focus is
/// the Coordination Task `task` (a reference).
pub fn cancellation_task(id: &str, task: &str, requester: &str, owner: &str) -> Value {
    json!({
        "resourceType": "Task",
        "id": id,
        "meta": {"profile": [CANCELLATION_TASK]},
        "identifier": [{"system": PLACER_TASKS, "value": id}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "abort"}]},
        "focus": {"reference": task},
        "requester": {"reference": requester},
        "owner": {"reference": owner},
    })
}

/// `body` with `status` (and `businessStatus` when given, else none) set.
pub fn with_status(body: &Value, status: &str, business: Option<&str>) -> Value {
    let mut b = body.clone();
    b["status"] = json!(status);
    match business {
        Some(code) => {
            b["businessStatus"] = json!({"coding": [{"system": COW_TEMP, "code": code}]});
        }
        None => {
            if let Some(o) = b.as_object_mut() {
                o.remove("businessStatus");
            }
        }
    }
    b
}

/// `body` with `statusReason` text set.
pub fn with_reason(body: &Value, text: &str) -> Value {
    let mut b = body.clone();
    b["statusReason"] = json!({"text": text});
    b
}

/// A Task `output` entry referencing `reference`.
pub fn output(reference: &str) -> Value {
    json!({
        "type": {"text": "result"},
        "valueReference": {"reference": reference},
    })
}

/// An R4 backport rest-hook Subscription (full-resource) on built-in topic `topic_id` with
/// `_criteria` filters, with id `ident` (for PUT) and identifier `ident` (system
/// [`SUBSCRIPTIONS`]).
pub fn subscription(topic_id: &str, filters: &[&str], endpoint: &str, ident: &str) -> Value {
    let mut s = crate::r4_subscription(topic_id, filters, endpoint, "full-resource");
    s["id"] = json!(ident);
    s["reason"] = json!(format!("COW: {ident}"));
    s["extension"] = json!([{
        "url": R4_SUBSCRIPTION_IDENTIFIER,
        "valueIdentifier": {"system": SUBSCRIPTIONS, "value": ident},
    }]);
    s
}

// ---------------------------------------------------------------------------------------------
// Parties and the two-Herald fixture
// ---------------------------------------------------------------------------------------------

/// One caller: an HTTP client, with its API key when the Herald it talks to has authentication.
#[derive(Clone)]
pub struct Party {
    c: reqwest::Client,
    key: Option<String>,
}

impl Party {
    /// A caller without credentials (Herald without authentication: the anonymous admin).
    pub fn anonymous() -> Party {
        Party {
            c: client(),
            key: None,
        }
    }

    /// A caller with the API key of client `name` (see [`auth_config`]).
    pub fn with_key(name: &str) -> Party {
        Party {
            c: client(),
            key: Some(api_key(name)),
        }
    }

    /// Any request; returns the status and the JSON answer (`Null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.c.request(method, url);
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/fhir+json")
                .body(b.to_string());
        }
        let r = r.send().await.expect("request");
        let s = r.status();
        let text = r.text().await.expect("body");
        (s, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// PUT `body` at `{base}/{type}/{id}` (client-assigned id) and insist on 200/201; returns
    /// the stored resource.
    pub async fn put(&self, base: &str, body: &Value) -> Value {
        let url = format!(
            "{base}/{}/{}",
            body["resourceType"].as_str().expect("resourceType"),
            body["id"].as_str().expect("id")
        );
        let (s, v) = self.call(Method::PUT, &url, Some(body)).await;
        assert!(
            s == StatusCode::OK || s == StatusCode::CREATED,
            "PUT {url}: {s} {v}"
        );
        v
    }

    /// GET and insist on 200.
    pub async fn read(&self, url: &str) -> Value {
        let (s, v) = self.call(Method::GET, url, None).await;
        assert_eq!(s, StatusCode::OK, "GET {url}: {v}");
        v
    }

    /// PUTs Subscription `body` and waits until its handshake made it `active` (as a COW party
    /// does before it relies on it: a notification built while the handshake's status change
    /// is still being applied may say `requested`).
    pub async fn subscribe(&self, base: &str, body: &Value) {
        self.put(base, body).await;
        let id = body["id"].as_str().expect("id");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let b = self
                .read(&format!("{base}/Subscription/{id}/$status"))
                .await;
            let parsed = parse_status_bundle(&b).expect("status bundle");
            if parsed[0].status.as_deref() == Some("active") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Subscription/{id} not active: {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `events-since-subscription-start` of Subscription `id`, from `$status`.
    pub async fn events_since_start(&self, base: &str, id: &str) -> u64 {
        let b = self
            .read(&format!("{base}/Subscription/{id}/$status"))
            .await;
        let parsed = parse_status_bundle(&b).expect("status bundle");
        parsed[0]
            .events_since_start
            .expect("events-since-subscription-start")
    }
}

/// The API key of client `name` in [`auth_config`].
pub fn api_key(name: &str) -> String {
    format!("key-of-{name}")
}

/// A configuration with one API key per `(client id, role)` (`placer`, `fulfiller`, `admin`),
/// identity `Organization/{client id}`, every SMART scope.
pub fn auth_config(clients: &[(&str, &str)]) -> String {
    let mut c = String::new();
    for (name, role) in clients {
        let hash: String = Sha256::digest(api_key(name).as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        c.push_str(&format!(
            "[[auth.api_keys]]\nclient_id = \"{name}\"\nkey_sha256 = \"{hash}\"\nidentity = \"Organization/{name}\"\nroles = [\"{role}\"]\nscopes = \"system/*.cruds\"\n\n"
        ));
    }
    c
}

/// The environment every COW Herald gets: loopback receivers allowed, a one-second retry.
pub const COW_ENV: [(&str, &str); 2] = [
    ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
    ("HERALD__DELIVERY__RETRY_SCHEDULE_SECS", "[1]"),
];

/// A Herald for one side of a COW exchange (with `config` when not empty).
pub fn side(config: &str) -> Herald {
    Herald::start_with_config(config, &COW_ENV)
}

/// Two Herald processes: the placer's (which holds its orders, and in pattern 2 the Tasks) and
/// the fulfiller's (which in pattern 1 holds the Coordination Tasks), plus the receiver that
/// stands for every party's notification endpoint (one path per subscriber).
pub struct CowPair {
    /// The placer-side Herald.
    pub placer: Herald,
    /// The fulfiller-side Herald.
    pub fulfiller: Herald,
    /// Notification endpoints (`/placer`, `/lab-1`, …).
    pub rx: Receiver,
}

impl CowPair {
    /// Both sides without authentication.
    pub async fn start() -> CowPair {
        CowPair {
            placer: side(""),
            fulfiller: side(""),
            rx: Receiver::start().await,
        }
    }

    /// The placer's R4 base.
    pub fn placer_base(&self) -> String {
        self.placer.fhir("r4")
    }

    /// The fulfiller's R4 base.
    pub fn fulfiller_base(&self) -> String {
        self.fulfiller.fhir("r4")
    }
}

// ---------------------------------------------------------------------------------------------
// What a subscriber received
// ---------------------------------------------------------------------------------------------

/// One event as a subscriber received it (one per event of an accepted event notification).
#[derive(Debug, Clone)]
pub struct Note {
    /// The notification type.
    pub kind: NotificationType,
    /// The event number.
    pub number: u64,
    /// `events-since-subscription-start` of the notification that carried it.
    pub since_start: Option<u64>,
    /// The Subscription's status in that notification.
    pub status: Option<String>,
    /// The Subscription's identifier value (system checked to be [`SUBSCRIPTIONS`]).
    pub subscription: Option<String>,
    /// The focus as `Type/id/_history/v` (the base stripped).
    pub focus: String,
    /// The focus resource, when the payload carried it (it is withheld from a subscriber who
    /// may no longer read it).
    pub resource: Option<Value>,
    /// `additional-context` references, the base stripped.
    pub context: Vec<String>,
}

impl Note {
    /// The focus resource's `status`.
    pub fn task_status(&self) -> Option<&str> {
        self.resource.as_ref()?.get("status")?.as_str()
    }

    /// The focus resource's `businessStatus` code.
    pub fn business_status(&self) -> Option<&str> {
        self.resource
            .as_ref()?
            .pointer("/businessStatus/coding/0/code")?
            .as_str()
    }
}

/// `Type/id[/_history/v]` of a reference, with any base URL before the type removed.
pub fn local(reference: &str) -> String {
    let parts: Vec<&str> = reference.split('/').collect();
    for i in 0..parts.len() {
        let p = parts[i];
        if p.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && parts.get(i + 1).is_some_and(|id| !id.is_empty())
            && p != "_history"
        {
            return parts[i..].join("/");
        }
    }
    reference.to_owned()
}

/// The events of the accepted event notifications in `list`, in arrival order.
pub fn notes(list: &[Received]) -> Vec<Note> {
    let mut out = Vec::new();
    for r in list {
        let Some(n) = &r.notification else { continue };
        if !r.accepted() || n.kind != NotificationType::EventNotification {
            continue;
        }
        let ident = n.subscription_identifier.as_ref().map(|i| {
            assert_eq!(
                i["system"], SUBSCRIPTIONS,
                "subscription identifier system: {i}"
            );
            i["value"].as_str().unwrap_or_default().to_owned()
        });
        for e in &n.events {
            out.push(Note {
                kind: n.kind,
                number: e.number,
                since_start: n.events_since_start,
                status: n.status.clone(),
                subscription: ident.clone(),
                focus: local(e.focus.as_deref().unwrap_or_default()),
                resource: e.focus_resource.clone(),
                context: e.additional_context.iter().map(|c| local(c)).collect(),
            });
        }
    }
    out
}

/// Waits until `path` has received accepted event notifications for exactly `n` events and
/// returns them; panics on a timeout, and when more than `n` arrived.
pub async fn wait_notes(rx: &Receiver, path: &str, n: usize) -> Vec<Note> {
    let got = rx
        .wait_until(path, &format!("{n} events"), WAIT, |l| notes(l).len() >= n)
        .await;
    let list = notes(&got);
    assert_eq!(
        list.len(),
        n,
        "{path}: more events than expected: {}",
        summary(&got)
    );
    list
}

/// One expected event: focus `Type/id/_history/v`, the focus's status and business status.
pub type Expect<'a> = (&'a str, &'a str, Option<&'a str>);

/// Asserts that `notes` are event notifications of Subscription `ident`, numbered
/// `first..first+len` in arrival order, each with the expected focus (at that version), the
/// focus resource's status and business status, and the Subscription `active`.
pub fn assert_notes(notes: &[Note], ident: &str, first: u64, expected: &[Expect]) {
    assert_eq!(
        notes.len(),
        expected.len(),
        "{ident}: {:#?}",
        notes
            .iter()
            .map(|n| (&n.focus, n.number))
            .collect::<Vec<_>>()
    );
    for (i, (note, (focus, status, business))) in notes.iter().zip(expected).enumerate() {
        let want = first + i as u64;
        assert_eq!(note.kind, NotificationType::EventNotification);
        assert_eq!(note.number, want, "{ident}: event {i} number");
        assert!(
            note.since_start.is_some_and(|n| n >= want),
            "{ident}: events-since-subscription-start {:?} counts event {want}",
            note.since_start
        );
        assert_eq!(
            note.subscription.as_deref(),
            Some(ident),
            "{ident}: identifier"
        );
        assert_eq!(note.status.as_deref(), Some("active"), "{ident}: status");
        assert_eq!(&note.focus, focus, "{ident}: event {want} focus");
        assert_eq!(
            note.task_status(),
            Some(*status),
            "{ident}: event {want} status"
        );
        assert_eq!(
            note.business_status(),
            *business,
            "{ident}: event {want} business status"
        );
    }
}

/// Requests on `path` that were event notifications (accepted or not).
pub fn event_requests(rx: &Receiver, path: &str) -> Vec<Received> {
    rx.on(path)
        .into_iter()
        .filter(|r| r.kind() == Some(NotificationType::EventNotification))
        .collect()
}
