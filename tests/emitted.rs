//! End-to-end: everything Herald emits validates against the core definitions of its tenant's
//! FHIR version (Herald's own validator, `herald_fhir::validate`): notification bundles of each kind (handshake,
//! heartbeat, event notification at each payload level), `$status` and `$events` results, the
//! CapabilityStatement, OperationOutcomes, topics, search and history bundles, and PATCH
//! results, transaction responses and response messages. R4B and R5 bodies are also checked by
//! an independent validator (the `fhir.resources` models from PyPI).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use herald_subscriptions::notification::NotificationType;
use herald_tests::receiver::{Receiver, of_kind};
use herald_tests::{Herald, client, create, get, r4_subscription, r5_subscription, send, task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const R4_HEARTBEAT: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";

fn assert_valid(version: &str, what: &str, body: &Value) {
    if let Err(e) = herald_fhir::validate::check_resource_for(version, body) {
        panic!("{what} ({version}) does not validate: {e}\n{body}");
    }
    COLLECTED
        .lock()
        .unwrap()
        .push((version.to_owned(), what.to_owned(), body.clone()));
}

/// Everything [`assert_valid`] saw, for the independent validator.
static COLLECTED: std::sync::Mutex<Vec<(String, String, Value)>> =
    std::sync::Mutex::new(Vec::new());

/// The independent check: the R4B and R5 bodies are validated by the `fhir.resources` models
/// from PyPI (installed by `scripts/install-test-tools`; pydantic models generated from the
/// official definitions by another team, which refuse unknown elements and wrong types). It has
/// no R4 models, so R4 bodies rest on Herald's own validator. Skipped, saying so, where Python
/// or the package is missing.
fn independent_check() {
    const SCRIPT: &str = r#"
import json, sys
try:
    import fhir.resources as r5
    import fhir.resources.R4B as r4b
except ImportError as e:
    print("SKIP", e)
    sys.exit(0)
bad = 0
for version, what, body in json.load(open(sys.argv[1])):
    mod = {"4.3.0": r4b, "5.0.0": r5}.get(version)
    if mod is None:
        continue
    try:
        mod.get_fhir_model_class(body["resourceType"]).model_validate(body)
    except Exception as e:
        bad += 1
        print("INVALID", version, what, str(e)[:2000])
print("CHECKED")
sys.exit(1 if bad else 0)
"#;
    let bodies = COLLECTED.lock().unwrap().clone();
    let file = std::env::temp_dir().join(format!("herald-emitted-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&bodies).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let Ok(out) = out else {
        eprintln!("independent FHIR validation skipped: python3 is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if text.starts_with("SKIP") {
        eprintln!(
            "independent FHIR validation skipped: {text} (scripts/install-test-tools installs fhir.resources)"
        );
        return;
    }
    assert!(
        out.status.success() && text.contains("CHECKED"),
        "the independent validator (fhir.resources) refuses what Herald emits:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn everything_herald_emits_validates_against_its_versions_definitions() {
    let rx = Receiver::start().await;
    let h = Herald::start_with(&[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    for (tenant, version) in [("r4", "4.0.1"), ("r4b", "4.3.0"), ("r5", "5.0.0")] {
        let base = h.fhir(tenant);
        let mut subs = Vec::new();
        for content in ["empty", "id-only", "full-resource"] {
            let path = format!("/{tenant}-{content}");
            let mut body = if tenant != "r5" {
                r4_subscription("cow-task-changed", &[], &rx.url(&path), content)
            } else {
                r5_subscription("cow-task-changed", &[], &rx.url(&path), content)
            };
            if content == "empty" {
                if tenant != "r5" {
                    body["channel"]["extension"] =
                        json!([{"url": R4_HEARTBEAT, "valueUnsignedInt": 1}]);
                } else {
                    body["heartbeatPeriod"] = json!(1);
                }
            }
            let created = create(&c, &base, "Subscription", &body).await;
            assert_valid(version, "created Subscription", &created);
            subs.push((path, created["id"].as_str().unwrap().to_owned()));
        }
        let t = create(&c, &base, "Task", &task("Organization/lab")).await;
        let task_url = format!("{base}/Task/{}", t["id"].as_str().unwrap());
        let mut update = t.clone();
        update["status"] = json!("accepted");
        let (s, updated) = send(&c, Method::PUT, &task_url, &update).await;
        assert_eq!(s, StatusCode::OK, "{updated}");

        for (path, _) in &subs {
            let want_heartbeat = path.ends_with("empty");
            let got = rx
                .wait_until(path, "handshake and two events", WAIT, |l| {
                    let events: usize = of_kind(l, NotificationType::EventNotification)
                        .iter()
                        .map(|r| r.event_numbers().len())
                        .sum();
                    events >= 2
                        && !of_kind(l, NotificationType::Handshake).is_empty()
                        && (!want_heartbeat || !of_kind(l, NotificationType::Heartbeat).is_empty())
                })
                .await;
            for r in &got {
                assert_valid(version, &format!("notification to {path}"), &r.body);
            }
        }
        for (_, id) in &subs {
            for op in ["$status", "$events"] {
                let (s, b) = get(&c, &format!("{base}/Subscription/{id}/{op}")).await;
                assert_eq!(s, StatusCode::OK, "{op}: {b}");
                assert_valid(version, op, &b);
            }
        }
        let (_, cs) = get(&c, &format!("{base}/metadata")).await;
        assert_valid(version, "CapabilityStatement", &cs);
        let topics = if tenant == "r4" {
            "Basic"
        } else {
            "SubscriptionTopic"
        };
        let (s, b) = get(&c, &format!("{base}/{topics}")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b["total"].as_u64().unwrap_or(0) > 0, "{b}");
        assert_valid(version, "topics", &b);
        for url in [
            format!("{base}/Task"),
            format!("{task_url}/_history"),
            format!("{base}/Subscription"),
        ] {
            let (_, b) = get(&c, &url).await;
            assert_valid(version, &url, &b);
        }
        // A transaction's response, and a message's response (ok and fatal-error).
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:4b9c2a10-0000-4000-8000-000000000001",
             "resource": task("Organization/lab"), "request": {"method": "POST", "url": "Task"}}]});
        let (s, b) = send(&c, Method::POST, &base, &tx).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_valid(version, "transaction-response", &b);
        let source = if tenant == "r5" {
            "endpointUrl"
        } else {
            "endpoint"
        };
        let mut t = task("Organization/lab");
        t["identifier"] =
            json!([{"system": "https://placer.example/task", "value": format!("E-{tenant}")}]);
        let mut message = json!({"resourceType": "Bundle", "type": "message",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:4b9c2a10-0000-4000-8000-000000000002"},
            "entry": [
                {"fullUrl": "urn:uuid:4b9c2a10-0000-4000-8000-000000000003", "resource": {
                    "resourceType": "MessageHeader", "id": "emitted-1",
                    "eventCoding": {"system": "http://hl7.org/fhir/uv/cow/CodeSystem/temp", "code": "new-order"},
                    "source": {source: "http://placer.example/fhir"}}},
                {"fullUrl": "urn:uuid:4b9c2a10-0000-4000-8000-000000000004", "resource": t}]});
        for what in ["ok", "fatal-error"] {
            if what == "fatal-error" {
                message["identifier"]["value"] =
                    json!("urn:uuid:4b9c2a10-0000-4000-8000-000000000005");
                message["entry"][0]["resource"]["id"] = json!("emitted-2");
                message["entry"][0]["resource"]["eventCoding"]["code"] = json!("discharge");
            }
            let (s, b) = send(
                &c,
                Method::POST,
                &format!("{base}/$process-message"),
                &message,
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(b["entry"][0]["resource"]["response"]["code"], what, "{b}");
            assert_valid(version, &format!("{what} response message"), &b);
        }
        // OperationOutcomes: not found, unknown type, and one inside a search Bundle (an
        // ignored parameter).
        for url in [format!("{base}/Task/nope"), format!("{base}/Nope")] {
            let (_, oo) = get(&c, &url).await;
            assert_eq!(oo["resourceType"], "OperationOutcome", "{url}: {oo}");
            assert_valid(version, &url, &oo);
        }
        let (_, b) = get(&c, &format!("{base}/Task?foo=bar")).await;
        assert_valid(version, "search with an outcome entry", &b);
        let mut bad = task("Organization/lab");
        bad["status"] = json!("foo");
        let (_, oo) = send(&c, Method::POST, &format!("{base}/Task"), &bad).await;
        assert_valid(version, "400 OperationOutcome", &oo);
        let r = c
            .patch(&task_url)
            .header("content-type", "application/json-patch+json")
            .body(json!([{"op":"replace","path":"/status","value":"in-progress"}]).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_valid(version, "PATCH result", &r.json().await.unwrap());
    }
    independent_check();
}
