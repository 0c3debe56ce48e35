//! Search result parameters end to end, on R4 and R5: `_include`/`_revinclude` (the references
//! COW follows, access rules on what they bring in), `_sort`, `_summary`, `_elements`, `_total`,
//! and what is not supported: reported in an OperationOutcome entry under lenient handling,
//! refused with 400 under `Prefer: handling=strict`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use herald_tests::{Herald, client, get, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VERSIONS: [&str; 2] = ["r4", "r5"];

/// A small COW world: a placer's ServiceRequest for a patient, the fulfilment Task on it (owned
/// by the lab), a sub-task (partOf), and another lab's Task on the same ServiceRequest.
async fn seed(c: &reqwest::Client, base: &str) {
    let resources = [
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Zed"}]}),
        json!({"resourceType": "Organization", "id": "lab", "name": "Lab"}),
        json!({"resourceType": "Organization", "id": "placer", "name": "Placer"}),
        json!({"resourceType": "Organization", "id": "imaging", "name": "Imaging"}),
        json!({"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "requester": {"reference": "Organization/placer"}}),
        json!({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
               "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">fulfil sr1</div>"},
               "focus": {"reference": "ServiceRequest/sr1"}, "basedOn": [{"reference": "ServiceRequest/sr1"}],
               "for": {"reference": "Patient/p1"}, "owner": {"reference": "Organization/lab"},
               "requester": {"reference": "Organization/placer"}, "authoredOn": "2026-02-01",
               "note": [{"text": "not a summary element"}]}),
        json!({"resourceType": "Task", "id": "t2", "status": "in-progress", "intent": "order",
               "partOf": [{"reference": "Task/t1"}], "owner": {"reference": "Organization/lab"},
               "requester": {"reference": "Organization/placer"}, "authoredOn": "2026-03-01"}),
        json!({"resourceType": "Task", "id": "t3", "status": "accepted", "intent": "order",
               "focus": {"reference": "ServiceRequest/sr1"}, "owner": {"reference": "Organization/imaging"},
               "requester": {"reference": "Organization/placer"}, "authoredOn": "2026-01-01"}),
    ];
    for r in resources {
        let url = format!(
            "{base}/{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        let (s, b) = send(c, Method::PUT, &url, &r).await;
        assert!(s.is_success(), "PUT {url}: {s} {b}");
    }
}

async fn search(c: &reqwest::Client, url: &str) -> Value {
    let (s, b) = get(c, url).await;
    assert_eq!(s, StatusCode::OK, "{url}: {b}");
    assert_eq!(b["type"], "searchset", "{b}");
    b
}

/// `Type/id` of the entries in `mode`, in order.
fn entries(b: &Value, mode: &str) -> Vec<String> {
    b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn outcome(b: &Value) -> String {
    b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "outcome")
        .flat_map(|e| {
            e["resource"]["issue"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|i| i["diagnostics"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn strict(c: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let r = c
        .get(url)
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    let s = r.status();
    let b: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(b["resourceType"], "OperationOutcome", "{b}");
    (
        s,
        b["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn subsetted(r: &Value) -> bool {
    r["meta"]["tag"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["code"] == "SUBSETTED"))
}

#[tokio::test]
async fn include_follows_the_cow_references_once_each_as_include_entries() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let base = h.fhir(v);
        seed(&c, &base).await;
        let b = search(
            &c,
            &format!(
                "{base}/Task?_id=t1,t2&_include=Task:focus&_include=Task:based-on&_include=Task:part-of&_include=Task:owner&_include=Task:requester"
            ),
        )
        .await;
        assert_eq!(sorted(entries(&b, "match")), ["Task/t1", "Task/t2"], "{v}");
        // sr1 through focus and basedOn, the organisations once though both Tasks name them,
        // and t1 through t2's partOf is a match already, so not repeated.
        assert_eq!(
            sorted(entries(&b, "include")),
            [
                "Organization/lab",
                "Organization/placer",
                "ServiceRequest/sr1"
            ],
            "{v}: {b}"
        );
        assert_eq!(b["total"], 2, "includes are not counted");
        assert_eq!(outcome(&b), "", "{v}");
        let sub = search(&c, &format!("{base}/Task?_id=t2&_include=Task:part-of")).await;
        assert_eq!(entries(&sub, "include"), ["Task/t1"], "{v}");
        let sr = search(
            &c,
            &format!("{base}/ServiceRequest?_include=ServiceRequest:subject"),
        )
        .await;
        assert_eq!(entries(&sr, "include"), ["Patient/p1"], "{v}");
        // A target type narrows what is followed; `*` follows every reference parameter.
        let typed = search(
            &c,
            &format!(
                "{base}/Task?_id=t1&_include=Task:owner:Organization&_include=Task:focus:Patient"
            ),
        )
        .await;
        assert_eq!(entries(&typed, "include"), ["Organization/lab"], "{v}");
        let all = search(&c, &format!("{base}/Task?_id=t1&_include=Task:*")).await;
        assert_eq!(
            sorted(entries(&all, "include")),
            [
                "Organization/lab",
                "Organization/placer",
                "Patient/p1",
                "ServiceRequest/sr1"
            ],
            "{v}"
        );
    }
}

#[tokio::test]
async fn revinclude_brings_the_resources_that_reference_the_matches() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let base = h.fhir(v);
        seed(&c, &base).await;
        let b = search(
            &c,
            &format!("{base}/ServiceRequest?_id=sr1&_revinclude=Task:focus"),
        )
        .await;
        assert_eq!(entries(&b, "match"), ["ServiceRequest/sr1"]);
        assert_eq!(
            sorted(entries(&b, "include")),
            ["Task/t1", "Task/t3"],
            "{v}"
        );
        let based = search(
            &c,
            &format!("{base}/ServiceRequest?_id=sr1&_revinclude=Task:based-on"),
        )
        .await;
        assert_eq!(entries(&based, "include"), ["Task/t1"], "{v}");
        let parts = search(&c, &format!("{base}/Task?_id=t1&_revinclude=Task:part-of")).await;
        assert_eq!(entries(&parts, "include"), ["Task/t2"], "{v}");
        let none = search(&c, &format!("{base}/Patient?_revinclude=Task:owner")).await;
        assert!(entries(&none, "include").is_empty(), "{v}: {none}");
    }
}

#[tokio::test]
async fn unsupported_result_parameters_are_reported_or_refused_when_strict() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let base = h.fhir(v);
        seed(&c, &base).await;
        for (query, needle) in [
            ("_include:iterate=Task:part-of", ":iterate"),
            ("_revinclude:iterate=Task:part-of", ":iterate"),
            ("_include=Task:status", "not a reference parameter"),
            ("_include=Task:nonsense", "nonsense"),
            ("_include=ServiceRequest:subject", "not from ServiceRequest"),
            ("_sort=nonsense", "nonsense"),
            ("_contained=true", "_contained"),
            ("_containedType=contained", "_containedtype"),
            ("_format=xml", "JSON only"),
        ] {
            let url = format!("{base}/Task?{query}");
            let b = search(&c, &url).await;
            assert_eq!(b["total"], 3, "{v} {query}: ignored, the search still runs");
            let said = outcome(&b);
            assert!(
                said.to_lowercase().contains(&needle.to_lowercase()),
                "{v} {query}: outcome '{said}'"
            );
            let (s, diag) = strict(&c, &url).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v} {query}");
            assert!(
                diag.to_lowercase().contains(&needle.to_lowercase()),
                "{v} {query}: '{diag}'"
            );
        }
        // Malformed values are refused either way.
        for query in [
            "_summary=maybe",
            "_total=lots",
            "_include=Task",
            "_sort=",
            "_summary=true&_elements=status",
        ] {
            let (s, b) = get(&c, &format!("{base}/Task?{query}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v} {query}: {b}");
            assert_eq!(b["resourceType"], "OperationOutcome");
        }
    }
}

#[tokio::test]
async fn sort_orders_by_registered_parameters_ascending_descending_and_by_several_keys() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let base = h.fhir(v);
        seed(&c, &base).await;
        let ids = |b: &Value| entries(b, "match");
        let by_date = search(&c, &format!("{base}/Task?_sort=authored-on")).await;
        assert_eq!(ids(&by_date), ["Task/t3", "Task/t1", "Task/t2"], "{v}");
        let desc = search(&c, &format!("{base}/Task?_sort=-authored-on")).await;
        assert_eq!(ids(&desc), ["Task/t2", "Task/t1", "Task/t3"], "{v}");
        let by_id = search(&c, &format!("{base}/Task?_sort=-_id")).await;
        assert_eq!(ids(&by_id), ["Task/t3", "Task/t2", "Task/t1"], "{v}");
        // owner: imaging < lab; then, among lab's, the later authored first.
        let two = search(&c, &format!("{base}/Task?_sort=owner,-authored-on")).await;
        assert_eq!(ids(&two), ["Task/t3", "Task/t2", "Task/t1"], "{v}");
        let status = search(&c, &format!("{base}/Task?_sort=status")).await;
        assert_eq!(ids(&status), ["Task/t3", "Task/t2", "Task/t1"], "{v}");
        // _lastUpdated: t1 was written before t3; touching t1 moves it last.
        let (_, mut t1) = get(&c, &format!("{base}/Task/t1")).await;
        t1["description"] = json!("touched");
        let (s, _) = send(&c, Method::PUT, &format!("{base}/Task/t1"), &t1).await;
        assert!(s.is_success());
        let recent = search(&c, &format!("{base}/Task?_sort=_lastUpdated")).await;
        assert_eq!(ids(&recent), ["Task/t2", "Task/t3", "Task/t1"], "{v}");
        let newest = search(&c, &format!("{base}/Task?_sort=-_lastUpdated&_count=1")).await;
        assert_eq!(ids(&newest), ["Task/t1"], "{v}");
        // Paging links keep the order.
        let next = newest["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .expect("next link")["url"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(next.contains("_sort=-_lastUpdated"), "{next}");
        let page2 = search(&c, &next).await;
        assert_eq!(ids(&page2), ["Task/t3"], "{v}");
        // A resource without the value sorts last, whichever the direction.
        let missing = search(&c, &format!("{base}/Task?_sort=-part-of")).await;
        assert_eq!(ids(&missing)[0], "Task/t2", "{v}");
    }
}

#[tokio::test]
async fn summary_count_true_text_data_and_false_shape_the_result() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let base = h.fhir(v);
        seed(&c, &base).await;
        let count = search(&c, &format!("{base}/Task?_summary=count")).await;
        assert_eq!(count["total"], 3, "{v}");
        assert!(entries(&count, "match").is_empty(), "{v}: {count}");

        let t1 = |b: &Value| {
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["resource"]["id"] == "t1")
                .unwrap()["resource"]
                .clone()
        };
        let summary = t1(&search(&c, &format!("{base}/Task?_summary=true")).await);
        assert_eq!(summary["status"], "requested", "{v}");
        assert_eq!(summary["intent"], "order");
        assert_eq!(summary["owner"]["reference"], "Organization/lab");
        assert!(
            summary.get("note").is_none(),
            "{v}: note is not a summary element"
        );
        assert!(summary.get("text").is_none(), "{v}");
        assert!(summary["meta"]["versionId"].is_string(), "meta kept");
        assert!(subsetted(&summary), "{v}: {summary}");

        let text = t1(&search(&c, &format!("{base}/Task?_summary=text")).await);
        assert!(text["text"]["div"].is_string(), "{v}");
        assert_eq!(text["status"], "requested", "mandatory kept");
        assert!(
            text.get("owner").is_none() && text.get("note").is_none(),
            "{v}: {text}"
        );
        assert!(subsetted(&text));

        let data = t1(&search(&c, &format!("{base}/Task?_summary=data")).await);
        assert!(data.get("text").is_none(), "{v}");
        assert_eq!(data["note"][0]["text"], "not a summary element");
        assert!(subsetted(&data));

        let whole = t1(&search(&c, &format!("{base}/Task?_summary=false")).await);
        assert!(whole["text"].is_object() && whole["note"].is_array(), "{v}");
        assert!(!subsetted(&whole), "{v}");

        // Included resources are summarised too.
        let inc = search(
            &c,
            &format!("{base}/Task?_id=t1&_include=Task:focus&_summary=true"),
        )
        .await;
        let sr = &inc["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "include")
            .unwrap()["resource"];
        assert!(subsetted(sr), "{v}: {sr}");
    }
}

#[tokio::test]
async fn elements_keeps_the_named_and_mandatory_elements_and_total_can_be_left_out() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let base = h.fhir(v);
        seed(&c, &base).await;
        let b = search(&c, &format!("{base}/Task?_id=t1&_elements=owner,note")).await;
        let r = &b["entry"][0]["resource"];
        assert_eq!(r["owner"]["reference"], "Organization/lab", "{v}");
        assert!(r["note"].is_array());
        assert_eq!(r["status"], "requested", "{v}: mandatory elements are kept");
        assert!(
            r.get("focus").is_none() && r.get("text").is_none(),
            "{v}: {r}"
        );
        assert!(subsetted(r), "{v}");
        // Type-prefixed names reach included resources.
        let inc = search(
            &c,
            &format!("{base}/Task?_id=t1&_include=Task:owner&_elements=status,Organization.name"),
        )
        .await;
        let org = &inc["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "include")
            .unwrap()["resource"];
        assert_eq!(org["name"], "Lab", "{v}");
        assert!(subsetted(org), "{v}");

        let none = search(&c, &format!("{base}/Task?_total=none")).await;
        assert!(none.get("total").is_none(), "{v}: {none}");
        assert_eq!(entries(&none, "match").len(), 3);
        for t in ["accurate", "estimate"] {
            let b = search(&c, &format!("{base}/Task?_total={t}&_count=1")).await;
            assert_eq!(b["total"], 3, "{v} {t}");
        }
    }
}

#[tokio::test]
async fn capability_statement_lists_the_includes_and_result_parameters_that_work() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let (_, cs) = get(&c, &format!("{}/metadata", h.fhir(v))).await;
        let res = |t: &str| {
            cs["rest"][0]["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == t)
                .unwrap()
                .clone()
        };
        let list = |r: &Value, k: &str| -> Vec<String> {
            r[k].as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        let task = res("Task");
        for inc in [
            "Task:focus",
            "Task:based-on",
            "Task:part-of",
            "Task:owner",
            "Task:requester",
            "Task:*",
        ] {
            assert!(
                list(&task, "searchInclude").contains(&inc.to_owned()),
                "{v} {inc}"
            );
        }
        assert!(
            list(&res("ServiceRequest"), "searchInclude")
                .contains(&"ServiceRequest:subject".to_owned())
        );
        let rev = list(&res("ServiceRequest"), "searchRevInclude");
        for inc in ["Task:focus", "Task:based-on"] {
            assert!(rev.contains(&inc.to_owned()), "{v} {inc}: {rev:?}");
        }
        assert!(list(&task, "searchRevInclude").contains(&"Task:part-of".to_owned()));
        let doc = cs["rest"][0]["documentation"].as_str().unwrap();
        for p in [
            "_sort",
            "_include",
            "_revinclude",
            "_summary",
            "_elements",
            "_total",
            ":iterate",
        ] {
            assert!(doc.contains(p), "{v}: {p} in '{doc}'");
        }
    }
}

fn sha256_hex(s: &str) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()[..64].to_owned()
}

#[tokio::test]
async fn included_resources_obey_the_same_access_rules_as_matches() {
    let mut cfg = String::new();
    for (name, role, scopes) in [
        ("lab", "fulfiller", "system/*.cruds"),
        ("lab-tasks-only", "fulfiller", "system/Task.rs"),
        ("ops", "admin", "system/*.cruds"),
    ] {
        cfg.push_str(&format!(
            "[[auth.api_keys]]\nclient_id = \"{name}\"\nkey_sha256 = \"{}\"\nidentity = \"Organization/lab\"\nroles = [\"{role}\"]\nscopes = \"{scopes}\"\n\n",
            sha256_hex(&format!("key-of-{name}"))
        ));
    }
    let h = Herald::start_with_config(&cfg, &[]);
    let c = client();
    let as_ = |who: &'static str, url: String| {
        let c = c.clone();
        async move {
            let r = c
                .get(url)
                .bearer_auth(format!("key-of-{who}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    for v in VERSIONS {
        let base = h.fhir(v);
        // Seeded by the admin.
        let admin = reqwest::Client::builder()
            .default_headers(
                [(
                    reqwest::header::AUTHORIZATION,
                    "Bearer key-of-ops".parse().unwrap(),
                )]
                .into_iter()
                .collect(),
            )
            .build()
            .unwrap();
        seed(&admin, &base).await;
        // The lab reaches sr1 through its own Task, but not imaging's Task on the same request.
        let b = as_(
            "lab",
            format!("{base}/ServiceRequest?_id=sr1&_revinclude=Task:focus"),
        )
        .await;
        assert_eq!(entries(&b, "match"), ["ServiceRequest/sr1"], "{v}: {b}");
        assert_eq!(
            entries(&b, "include"),
            ["Task/t1"],
            "{v}: imaging's t3 must not show"
        );
        let admin_view = search(
            &admin,
            &format!("{base}/ServiceRequest?_id=sr1&_revinclude=Task:focus"),
        )
        .await;
        assert_eq!(
            sorted(entries(&admin_view, "include")),
            ["Task/t1", "Task/t3"]
        );
        // Includes of types the caller's scopes do not grant are left out.
        let scoped = as_(
            "lab-tasks-only",
            format!("{base}/Task?_id=t1&_include=Task:focus&_include=Task:part-of"),
        )
        .await;
        assert_eq!(entries(&scoped, "match"), ["Task/t1"], "{v}");
        assert!(entries(&scoped, "include").is_empty(), "{v}: {scoped}");
        let full = as_("lab", format!("{base}/Task?_id=t1&_include=Task:focus")).await;
        assert_eq!(entries(&full, "include"), ["ServiceRequest/sr1"], "{v}");
    }
}

#[tokio::test]
async fn supported_result_parameters_pass_strict_handling_untouched() {
    let h = Herald::start();
    let c = client();
    for v in VERSIONS {
        let base = h.fhir(v);
        seed(&c, &base).await;
        let url = format!(
            "{base}/Task?_sort=-status&_include=Task:focus&_revinclude=Task:part-of&_summary=data&_total=accurate&_pretty=true&_format=json&_count=2"
        );
        let r = c
            .get(&url)
            .header("prefer", "handling=strict")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{v}");
        let text = r.text().await.unwrap();
        assert!(text.contains("\n  \"entry\""), "{v}: _pretty indents");
        let b: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(outcome(&b), "", "{v}: nothing to report");
        assert_eq!(entries(&b, "match"), ["Task/t1", "Task/t2"], "{v}");
        assert_eq!(
            sorted(entries(&b, "include")),
            ["ServiceRequest/sr1"],
            "{v}: t2 is a match, so t1's part-of revinclude adds nothing new"
        );
        assert_eq!(b["total"], 3);
        let next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_owned();
        for p in [
            "_sort=-status",
            "_include=Task%3Afocus",
            "_summary=data",
            "_revinclude=Task%3Apart-of",
        ] {
            assert!(next.contains(p), "{v}: {p} in {next}");
        }
        let (_, diag) = strict(&c, &format!("{base}/Task?_include=Task:_in")).await;
        // R5 defines `_in` (list membership), R4 does not: neither is followed.
        assert!(
            diag.contains("_include=Task:_in (")
                && (diag.contains("cannot be followed") || diag.contains("not a search parameter")),
            "{v}: {diag}"
        );
    }
}
