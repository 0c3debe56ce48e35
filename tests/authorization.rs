//! Who sees what, end to end: several placers and fulfillers (API keys) write ≥ 1 000 Tasks and
//! reassign owners at random; every read, search result and notification is checked against the
//! COW rules (a fulfiller sees the Tasks it owns, a placer those it requested). Also: scoped
//! subscriptions only, Subscriptions and their operations for their creator, channel headers
//! write-only, topics written by admins.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_subscriptions::notification::NotificationType;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Rng, client, crash_seed, r4_subscription};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const FULFILLERS: [&str; 3] = ["lab-1", "lab-2", "lab-3"];
const PLACERS: [&str; 2] = ["placer-1", "placer-2"];

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

fn key(name: &str) -> String {
    format!("key-of-{name}")
}

fn config() -> String {
    let mut c = String::new();
    for (name, role) in FULFILLERS
        .iter()
        .map(|n| (*n, "fulfiller"))
        .chain(PLACERS.iter().map(|n| (*n, "placer")))
        .chain([("ops", "admin")])
    {
        c.push_str(&format!(
            "[[auth.api_keys]]\nclient_id = \"{name}\"\nkey_sha256 = \"{}\"\nidentity = \"Organization/{name}\"\nroles = [\"{role}\"]\nscopes = \"system/*.cruds\"\n\n",
            sha256_hex(&key(name))
        ));
    }
    c
}

async fn call(
    c: &reqwest::Client,
    who: &str,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut r = c.request(method, url).bearer_auth(key(who));
    if let Some(b) = body {
        r = r
            .header("content-type", "application/fhir+json")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn org(name: &str) -> String {
    format!("Organization/{name}")
}

/// `Task/1/_history/2` from an absolute or relative focus reference.
fn strip(focus: &str) -> String {
    let i = focus.find("Task/").expect("a Task reference");
    focus[i..].to_owned()
}

fn owner_of(task: &Value) -> String {
    task["owner"]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn no_read_search_or_notification_leaks_across_clients() {
    let seed = crash_seed();
    eprintln!("seed {seed} (HERALD_CRASH_SEED to replay)");
    let mut rng = Rng(seed);
    let rx = Receiver::start().await;
    let h = Herald::start_with_config(&config(), &[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    let base = h.fhir("r4");

    // Subscriptions: each restricted to its creator; an unrestricted one is refused.
    let mut sub_of = HashMap::new();
    for who in FULFILLERS.iter().chain(PLACERS.iter()) {
        let param = if who.starts_with("lab") {
            "owner"
        } else {
            "requester"
        };
        let mut s = r4_subscription(
            "cow-task-changed",
            &[&format!("Task?{param}={}", org(who))],
            &rx.url(&format!("/{who}")),
            "full-resource",
        );
        s["channel"]["header"] = json!([format!("Authorization: Bearer secret-of-{who}")]);
        let (st, created) = call(
            &c,
            who,
            Method::POST,
            &format!("{base}/Subscription"),
            Some(&s),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{who}: {created}");
        // the header's value is write-only
        assert!(!created.to_string().contains("secret-of-"), "{created}");
        sub_of.insert(*who, created["id"].as_str().unwrap().to_owned());
    }
    let unrestricted = r4_subscription("cow-task-changed", &[], &rx.url("/x"), "id-only");
    let (st, _) = call(
        &c,
        "lab-1",
        Method::POST,
        &format!("{base}/Subscription"),
        Some(&unrestricted),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let other_owner = r4_subscription(
        "cow-task-changed",
        &["Task?owner=Organization/lab-2"],
        &rx.url("/x"),
        "id-only",
    );
    let (st, _) = call(
        &c,
        "lab-1",
        Method::POST,
        &format!("{base}/Subscription"),
        Some(&other_owner),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // a Subscription and its operations are its creator's
    let lab1_sub = &sub_of["lab-1"];
    let (st, _) = call(
        &c,
        "lab-2",
        Method::GET,
        &format!("{base}/Subscription/{lab1_sub}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(
        &c,
        "lab-2",
        Method::GET,
        &format!("{base}/Subscription/{lab1_sub}/$status"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(
        &c,
        "lab-1",
        Method::GET,
        &format!("{base}/Subscription/{lab1_sub}/$status"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // topics are written by admins only
    let topic =
        json!({"resourceType": "Basic", "code": {"coding": [{"code": "SubscriptionTopic"}]}});
    let (st, _) = call(
        &c,
        "placer-1",
        Method::POST,
        &format!("{base}/Basic"),
        Some(&topic),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // ≥ 1 000 Tasks by random placers for random owners, then owner reassignments.
    let mut tasks: HashMap<String, (String, String)> = HashMap::new(); // id → (requester, owner)
    for _ in 0..1000 {
        let placer = PLACERS[rng.range(0, 2) as usize];
        let owner = FULFILLERS[rng.range(0, 3) as usize];
        let t = json!({"resourceType": "Task", "status": "requested", "intent": "order",
                       "requester": {"reference": org(placer)}, "owner": {"reference": org(owner)}});
        let (st, v) = call(&c, placer, Method::POST, &format!("{base}/Task"), Some(&t)).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        tasks.insert(
            v["id"].as_str().unwrap().to_owned(),
            (placer.to_owned(), owner.to_owned()),
        );
    }
    // a placer cannot create for another placer, a fulfiller cannot create for another owner
    let forged = json!({"resourceType": "Task", "status": "requested", "intent": "order",
                        "requester": {"reference": org("placer-2")}, "owner": {"reference": org("lab-1")}});
    let (st, _) = call(
        &c,
        "placer-1",
        Method::POST,
        &format!("{base}/Task"),
        Some(&forged),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let ids: Vec<String> = tasks.keys().cloned().collect();
    for _ in 0..200 {
        let id = &ids[rng.range(0, ids.len() as u64) as usize];
        let (placer, _) = tasks[id].clone();
        let new_owner = FULFILLERS[rng.range(0, 3) as usize];
        let (st, mut t) = call(&c, &placer, Method::GET, &format!("{base}/Task/{id}"), None).await;
        assert_eq!(st, StatusCode::OK);
        t["owner"] = json!({"reference": org(new_owner)});
        t["status"] = json!("received");
        let (st, v) = call(
            &c,
            &placer,
            Method::PUT,
            &format!("{base}/Task/{id}"),
            Some(&t),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        tasks.get_mut(id).unwrap().1 = new_owner.to_owned();
    }
    // a fulfiller cannot touch a Task it does not own
    let (id, (_, owner)) = tasks.iter().next().unwrap();
    let stranger = FULFILLERS.iter().find(|f| *f != owner).unwrap();
    let (st, _) = call(
        &c,
        stranger,
        Method::GET,
        &format!("{base}/Task/{id}"),
        None,
    )
    .await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "another fulfiller's Task is not visible"
    );
    let (st, _) = call(
        &c,
        stranger,
        Method::DELETE,
        &format!("{base}/Task/{id}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Searches: exactly the caller's Tasks, no one else's.
    for who in FULFILLERS.iter().chain(PLACERS.iter()) {
        let (st, b) = call(
            &c,
            who,
            Method::GET,
            &format!("{base}/Task?_count=1000"),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let got: HashSet<String> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
            .collect();
        let want: HashSet<String> = tasks
            .iter()
            .filter(|(_, (p, o))| p == who || o == who)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(got, want, "{who} sees exactly its own Tasks");
        assert_eq!(b["total"].as_u64().unwrap() as usize, want.len());
        // and its history holds only versions it may read
        let (_, hist) = call(
            &c,
            who,
            Method::GET,
            &format!("{base}/Task/_history?_count=1000"),
            None,
        )
        .await;
        for e in hist["entry"].as_array().unwrap() {
            let r = &e["resource"];
            let mine = r["requester"]["reference"] == org(who) || owner_of(r) == org(who);
            assert!(mine, "{who} sees a version that is not its own: {r}");
        }
    }

    // Notifications: every resource sent is one the subscriber could read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut withheld = 0;
    for who in FULFILLERS.iter().chain(PLACERS.iter()) {
        let expected = tasks.values().filter(|(p, o)| p == who || o == who).count();
        let got = rx
            .wait_until(
                &format!("/{who}"),
                "notifications",
                Duration::from_secs(60),
                |l| {
                    l.iter()
                        .filter(|r| r.kind() == Some(NotificationType::EventNotification))
                        .count()
                        >= expected
                },
            )
            .await;
        for r in got
            .iter()
            .filter(|r| r.kind() == Some(NotificationType::EventNotification))
        {
            for e in &r.notification.as_ref().unwrap().events {
                match e.focus_resource.as_ref() {
                    Some(t) => {
                        let mine =
                            t["requester"]["reference"] == org(who) || owner_of(t) == org(who);
                        assert!(
                            mine,
                            "{who} was notified of a Task that is not its own: {t}"
                        );
                    }
                    None => {
                        // The send-time check withheld it (the former owner hears of the change,
                        // not its content): it really is no longer this client's Task.
                        let focus = e.focus.as_deref().expect("focus reference");
                        let (_, t) = call(
                            &c,
                            "ops",
                            Method::GET,
                            &format!("{base}/{}", strip(focus)),
                            None,
                        )
                        .await;
                        let mine =
                            t["requester"]["reference"] == org(who) || owner_of(&t) == org(who);
                        assert!(!mine, "{who}'s own Task was withheld: {t}");
                        withheld += 1;
                    }
                }
            }
            // the subscriber's secret header reached it, no one else's
            let auth = r.header("authorization");
            assert_eq!(auth, vec![format!("Bearer secret-of-{who}").as_str()]);
        }
    }
    assert!(
        withheld > 0,
        "reassignments notify the former owner, without the Task"
    );
    // the admin sees all
    let (_, all) = call(
        &c,
        "ops",
        Method::GET,
        &format!("{base}/Task?_count=1000"),
        None,
    )
    .await;
    assert_eq!(all["total"].as_u64().unwrap() as usize, tasks.len());
}

#[tokio::test]
async fn planted_secrets_never_appear_in_logs_admin_output_or_responses() {
    let rx = Receiver::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("herald.log");
    let h = Herald::start_with_config(
        &config(),
        &[
            ("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true"),
            ("HERALD_LOG", "debug"),
            ("HERALD_TEST_STDERR", log.to_str().unwrap()),
        ],
    );
    let c = client();
    let base = h.fhir("r4");
    let planted = ["planted-header-secret-1", "planted-param-secret-2"];
    let mut s = r4_subscription(
        "cow-task-changed",
        &["Task?owner=Organization/lab-1"],
        &rx.url("/lab"),
        "id-only",
    );
    s["channel"]["header"] = json!([
        format!("Authorization: Bearer {}", planted[0]),
        format!("X-Api-Token: {}", planted[1])
    ]);
    let (st, created) = call(
        &c,
        "lab-1",
        Method::POST,
        &format!("{base}/Subscription"),
        Some(&s),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let t = json!({"resourceType": "Task", "status": "requested", "intent": "order",
                   "requester": {"reference": org("placer-1")}, "owner": {"reference": org("lab-1")}});
    let (st, _) = call(
        &c,
        "placer-1",
        Method::POST,
        &format!("{base}/Task"),
        Some(&t),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    // the receiver gets the secrets (that is their purpose) ...
    rx.wait_until("/lab", "an event", Duration::from_secs(20), |l| {
        l.iter()
            .any(|r| r.kind() == Some(NotificationType::EventNotification))
    })
    .await;
    // ... and nothing else shows them: responses to the owner, admin output, the log
    let mut seen = Vec::new();
    for (who, url) in [
        ("lab-1", format!("{base}/Subscription/{id}")),
        ("lab-1", format!("{base}/Subscription/{id}/_history")),
        ("lab-1", format!("{base}/Subscription?_count=100")),
        ("ops", format!("{}/admin/deliveries", h.root)),
        ("ops", format!("{}/admin/subscriptions", h.root)),
    ] {
        let (st, v) = call(&c, who, Method::GET, &url, None).await;
        assert_eq!(st, StatusCode::OK, "{url}");
        seen.push((url, v.to_string()));
    }
    // a bad API key attempt is logged without the key
    let r = c
        .get(format!("{base}/Task"))
        .bearer_auth("planted-wrong-key-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    drop(h);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("request finished"), "the log was collected");
    seen.push(("log".into(), text));
    for (where_, text) in &seen {
        for secret in planted
            .iter()
            .chain(["planted-wrong-key-3", &key("lab-1"), &key("ops")].iter())
        {
            assert!(!text.contains(secret), "{secret} appears in {where_}");
        }
    }
}
