//! The search index end to end: indexed search finds exactly what a scan finds (a Herald with
//! the index, one indexing only some parameters, and one without, fed the same random Tasks,
//! asked the same random queries), and the
//! index's own crash test: after SIGKILL under concurrent writers, every acknowledged write is
//! found by `Task?identifier=…` and `Task?owner=…` at its acknowledged version (or at the next
//! one, when a write whose answer the kill cut off became durable), and search finds nothing the
//! stored resources do not say.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use herald_tests::{Herald, Rng, client, crash_seed};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FHIR: &str = "application/fhir+json";

/// Ids (in order) of a searchset, following no links: `_count` covers everything here.
async fn search_ids(c: &reqwest::Client, base: &str, query: &str) -> Vec<(String, String)> {
    let url = format!("{base}/Task?{query}&_count=1000");
    let r = c.get(&url).send().await.expect("search");
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    let b: Value = r.json().await.expect("searchset");
    b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            (
                e["resource"]["id"].as_str().unwrap_or_default().to_owned(),
                e["resource"]["meta"]["versionId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn random_task(rng: &mut Rng, id: &str) -> Value {
    let statuses = ["draft", "requested", "accepted", "in-progress", "completed"];
    let mut t = json!({
        "resourceType": "Task",
        "id": id,
        "status": statuses[rng.range(0, 5) as usize],
        "intent": if rng.range(0, 4) == 0 { "plan" } else { "order" },
        "authoredOn": format!("2024-{:02}-{:02}", rng.range(1, 13), rng.range(1, 29)),
        "identifier": [{
            "system": format!("urn:sys:{}", rng.range(0, 2)),
            "value": format!("v{}", rng.range(0, 30)),
        }],
    });
    match rng.range(0, 3) {
        0 => t["owner"] = json!({"reference": format!("Organization/o{}", rng.range(0, 5))}),
        1 => {
            t["owner"] = json!({"reference": format!("http://elsewhere.example/fhir/Organization/o{}", rng.range(0, 5))});
        }
        _ => {}
    }
    if rng.range(0, 2) == 0 {
        t["executionPeriod"] = json!({
            "start": format!("2024-{:02}-01T00:00:00Z", rng.range(1, 7)),
            "end": format!("2024-{:02}-01T00:00:00Z", rng.range(7, 13)),
        });
    }
    if rng.range(0, 3) == 0 {
        t["businessStatus"] =
            json!({"coding": [{"system": "urn:bs", "code": format!("b{}", rng.range(0, 3))}]});
    }
    if rng.range(0, 2) == 0 {
        t["basedOn"] = json!([{"reference": format!("ServiceRequest/sr{}", rng.range(0, 8))}]);
    }
    t
}

fn random_criterion(rng: &mut Rng) -> String {
    let statuses = ["draft", "requested", "accepted", "in-progress", "completed"];
    let s = |rng: &mut Rng| statuses[rng.range(0, 5) as usize];
    let date = |rng: &mut Rng| format!("2024-{:02}-{:02}", rng.range(1, 13), rng.range(1, 29));
    let prefixes = ["", "eq", "gt", "lt", "ge", "le", "sa", "eb", "ne"];
    match rng.range(0, 16) {
        0 => format!("status={}", s(rng)),
        1 => format!("status={},{}", s(rng), s(rng)),
        2 => format!("status:not={}", s(rng)),
        3 => format!("owner=Organization/o{}", rng.range(0, 5)),
        4 => format!("owner=o{}", rng.range(0, 5)),
        5 => format!(
            "owner=http://elsewhere.example/fhir/Organization/o{}",
            rng.range(0, 5)
        ),
        6 => format!(
            "identifier=urn:sys:{}|v{}",
            rng.range(0, 2),
            rng.range(0, 30)
        ),
        7 => format!("identifier=v{}", rng.range(0, 30)),
        8 => format!(
            "authored-on={}{}",
            prefixes[rng.range(0, 9) as usize],
            date(rng)
        ),
        9 => format!(
            "authored-on={}2024-{:02}",
            prefixes[rng.range(0, 9) as usize],
            rng.range(1, 13)
        ),
        10 => format!("period={}{}", prefixes[rng.range(0, 9) as usize], date(rng)),
        11 => format!("_id=t{}", rng.range(0, 80)),
        12 => format!("business-status=urn:bs|b{}", rng.range(0, 3)),
        13 => format!("based-on=ServiceRequest/sr{}", rng.range(0, 8)),
        14 => "_lastUpdated=gt2020-01-01".to_owned(),
        _ => format!(
            "intent={}",
            if rng.range(0, 2) == 0 {
                "order"
            } else {
                "plan"
            }
        ),
    }
}

/// Sends `entries` as a transaction.
async fn transact(c: &reqwest::Client, base: &str, entries: Vec<Value>) {
    let r = c
        .post(base)
        .header("content-type", FHIR)
        .body(
            json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string(),
        )
        .send()
        .await
        .expect("transaction");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn indexed_search_finds_what_a_scan_finds_over_random_tasks_and_queries() {
    let seed = crash_seed();
    println!("seed {seed} (HERALD_CRASH_SEED replays it)");
    let mut rng = Rng(seed);
    let indexed = Herald::start_with(&[("HERALD_SEARCH_INDEX", "true")]);
    let scanned = Herald::start_with(&[("HERALD_SEARCH_INDEX", "false")]);
    // A deployment that indexes only some of Task's parameters: criteria on the others are
    // left to the scan, and the answers stay the same.
    let scoped = Herald::start_with_config(
        "[search.parameters]\nTask = [\"identifier\", \"owner\"]\n",
        &[("HERALD_SEARCH_INDEX", "true")],
    );
    let c = client();
    // 80 Tasks, then a round of updates and deletes, applied to both alike.
    let mut rounds: Vec<Vec<Value>> = Vec::new();
    rounds.push(
        (0..80)
            .map(|i| {
                let id = format!("t{i}");
                json!({"resource": random_task(&mut rng, &id),
                    "request": {"method": "PUT", "url": format!("Task/{id}")}})
            })
            .collect(),
    );
    rounds.push(
        (0..80)
            .filter_map(|i| {
                let id = format!("t{i}");
                match rng.range(0, 6) {
                    0 => {
                        Some(json!({"request": {"method": "DELETE", "url": format!("Task/{id}")}}))
                    }
                    1 | 2 => Some(json!({"resource": random_task(&mut rng, &id),
                        "request": {"method": "PUT", "url": format!("Task/{id}")}})),
                    _ => None,
                }
            })
            .collect(),
    );
    for entries in rounds {
        transact(&c, &indexed.fhir("r4"), entries.clone()).await;
        transact(&c, &scoped.fhir("r4"), entries.clone()).await;
        transact(&c, &scanned.fhir("r4"), entries).await;
    }
    let mut nonempty = 0;
    for _ in 0..150 {
        let n = rng.range(1, 4);
        let query: Vec<String> = (0..n).map(|_| random_criterion(&mut rng)).collect();
        let query = query.join("&");
        let a = search_ids(&c, &indexed.fhir("r4"), &query).await;
        let b = search_ids(&c, &scanned.fhir("r4"), &query).await;
        let ids = |v: &[(String, String)]| v.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "Task?{query} (seed {seed})");
        let scoped_ids = search_ids(&c, &scoped.fhir("r4"), &query).await;
        assert_eq!(
            ids(&scoped_ids),
            ids(&b),
            "Task?{query} with a parameter list (seed {seed})"
        );
        nonempty += usize::from(!a.is_empty());
    }
    assert!(
        nonempty > 20,
        "too few queries found anything ({nonempty}) to compare"
    );
    // The same through conditional create: a match is found, not duplicated.
    let existing = search_ids(&c, &indexed.fhir("r4"), "_id=t1,t2,t3,t4").await;
    if let Some((id, _)) = existing.first() {
        let r = c
            .get(format!("{}/Task/{id}", indexed.fhir("r4")))
            .send()
            .await
            .expect("read");
        let body: Value = r.json().await.expect("body");
        let ident = &body["identifier"][0];
        let cond = format!(
            "identifier={}|{}",
            ident["system"].as_str().unwrap(),
            ident["value"].as_str().unwrap()
        );
        let before = search_ids(&c, &indexed.fhir("r4"), &cond).await.len();
        let r = c
            .post(format!("{}/Task", indexed.fhir("r4")))
            .header("content-type", FHIR)
            .header("if-none-exist", &cond)
            .body(json!({"resourceType": "Task", "status": "draft", "intent": "order", "identifier": [ident]}).to_string())
            .send()
            .await
            .expect("conditional create");
        if before == 1 {
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "If-None-Exist {cond} found nothing"
            );
        }
    }
}

/// One writer's resources: ids `w{writer}-{k}`, each with identifier `urn:crash|w{writer}-{k}`,
/// and an owner that changes with every write (`Organization/w{writer}-{k}-g{generation}`).
struct Writer {
    writer: u64,
    /// Per resource: the highest generation acknowledged, and the generation in flight when the
    /// kill came (sent, answer cut off).
    acked: BTreeMap<String, u64>,
    in_flight: Option<(String, u64)>,
}

fn owner(id: &str, generation: u64) -> String {
    format!("Organization/{id}-g{generation}")
}

async fn write_until_killed(
    c: reqwest::Client,
    base: String,
    writer: u64,
    mut generations: BTreeMap<String, u64>,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> (Writer, BTreeMap<String, u64>) {
    let mut w = Writer {
        writer,
        acked: BTreeMap::new(),
        in_flight: None,
    };
    let mut k = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("w{writer}-{}", k % 5);
        k += 1;
        let generation = generations.get(&id).copied().unwrap_or(0) + 1;
        let body = json!({
            "resourceType": "Task", "id": id, "status": "requested", "intent": "order",
            "identifier": [{"system": "urn:crash", "value": id}],
            "owner": {"reference": owner(&id, generation)},
        });
        let sent = c
            .put(format!("{base}/Task/{id}"))
            .header("content-type", FHIR)
            .body(body.to_string())
            .send()
            .await;
        // Whatever happens next, this generation was sent: never reuse its owner.
        generations.insert(id.clone(), generation);
        match sent {
            Ok(r) => {
                assert!(
                    r.status().is_success(),
                    "refused before the crash: {}",
                    r.status()
                );
                w.acked.insert(id, generation);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                if !e.is_connect() {
                    w.in_flight = Some((id, generation));
                }
                break;
            }
        }
    }
    (w, generations)
}

#[tokio::test]
async fn acknowledged_writes_are_found_by_search_after_kill9_and_nothing_else_is() {
    const WRITERS: u64 = 6;
    const CYCLES: usize = 4;
    let seed = crash_seed();
    println!("seed {seed} (HERALD_CRASH_SEED replays it)");
    let mut rng = Rng(seed);
    let mut h = Herald::start();
    let c = client();
    let mut generations: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); WRITERS as usize];
    // Per resource: the generation acknowledged last, over all cycles, and the generations sent
    // after it whose answers a kill cut off (each may or may not have become durable).
    let mut acked_ever: BTreeMap<String, u64> = BTreeMap::new();
    let mut maybe: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for cycle in 0..CYCLES {
        let base = h.fhir("r4");
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(write_until_killed(
                    c.clone(),
                    base.clone(),
                    w,
                    generations[w as usize].clone(),
                    stop.clone(),
                    acks.clone(),
                ))
            })
            .collect();
        // The kill comes at a random moment once writes are being acknowledged (however slow
        // the machine is today).
        let patience = std::time::Instant::now();
        while acks.load(Ordering::SeqCst) < WRITERS && patience.elapsed() < Duration::from_secs(120)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1200))).await;
        h.kill9();
        stop.store(true, Ordering::SeqCst);
        let mut writers = Vec::new();
        for t in tasks {
            let (w, g) = t.await.expect("writer");
            generations[w.writer as usize] = g;
            writers.push(w);
        }
        h.restart();
        let base = h.fhir("r4");
        let mut acknowledged = 0;
        let mut problems = Vec::new();
        for w in &writers {
            for (id, g) in &w.acked {
                acked_ever.insert(id.clone(), *g);
                maybe.remove(id);
            }
            if let Some((id, g)) = &w.in_flight {
                maybe.entry(id.clone()).or_default().insert(*g);
            }
            acknowledged += w.acked.len();
        }
        // Every resource ever acknowledged: found by identifier at its acknowledged generation,
        // or at a later one whose answer a kill cut off when that write became durable; found by
        // that owner; and under no other owner it ever had.
        let in_flight = writers.iter().filter(|w| w.in_flight.is_some()).count();
        for (id, acked) in &acked_ever {
            let by_ident = search_ids(&c, &base, &format!("identifier=urn:crash|{id}")).await;
            let read: Value = c
                .get(format!("{base}/Task/{id}"))
                .send()
                .await
                .expect("read")
                .json()
                .await
                .expect("body");
            let current_owner = read["owner"]["reference"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let version = read["meta"]["versionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let allowed: BTreeSet<String> = std::iter::once(owner(id, *acked))
                .chain(maybe.get(id).into_iter().flatten().map(|g| owner(id, *g)))
                .collect();
            if !allowed.contains(&current_owner) {
                problems.push(format!(
                    "{id}: stored owner {current_owner}, acknowledged {allowed:?}"
                ));
            }
            if by_ident != vec![(id.clone(), version.clone())] {
                problems.push(format!(
                    "identifier={id}: found {by_ident:?}, stored version {version}"
                ));
            }
            for g in 1..=generations
                .iter()
                .find_map(|m| m.get(id))
                .copied()
                .unwrap_or(0)
            {
                let o = owner(id, g);
                let found = search_ids(&c, &base, &format!("owner={o}")).await;
                let expect = if o == current_owner {
                    vec![(id.clone(), version.clone())]
                } else {
                    Vec::new()
                };
                if found != expect {
                    problems.push(format!("owner={o}: found {found:?}, expected {expect:?}"));
                }
            }
        }
        println!(
            "cycle {cycle}: {acknowledged} acknowledged, {} cut off in flight, {} problems",
            in_flight,
            problems.len()
        );
        assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
        assert!(acknowledged > 0, "nothing was acknowledged before the kill");
    }
}
