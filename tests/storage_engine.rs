//! The storage engine as an operator meets it (`docs/design.md`, "The engine"): a data directory
//! keeps the engine that wrote it (an old sled directory goes on running on sled, crash included),
//! naming the other engine is refused with a message instead of starting empty, and a second
//! process on a data directory in use is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use herald_tests::{Herald, client, create, get, herald_bin, task};
use reqwest::StatusCode;

/// Runs `herald serve` on `data_dir` with `env` and expects it to exit with an error; returns
/// its standard error.
fn refused_start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(herald_bin())
        .arg("serve")
        .env("HERALD_LISTEN", "127.0.0.1:0")
        .env("HERALD_DATA_DIR", data_dir)
        .env("HERALD_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run herald");
    assert!(!out.status.success(), "herald started on {data_dir:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_sled_data_directory_keeps_running_on_sled_across_a_crash_and_refuses_the_lsm_engine() {
    let mut h = Herald::start_with(&[("HERALD_STORE_ENGINE", "sled")]);
    let c = client();
    let created = create(&c, &h.fhir("r4"), "Task", &task("Organization/o1")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(h.data_dir().join("conf").is_file(), "sled wrote its files");
    assert!(!h.data_dir().join("lsm").exists());
    // Without naming an engine, the directory's own is found again, after a crash.
    h.set_env("HERALD_STORE_ENGINE", None);
    h.restart();
    let (status, body) = get(&c, &format!("{}/Task/{id}", h.fhir("r4"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["owner"]["reference"], "Organization/o1");
    assert!(
        !h.data_dir().join("lsm").exists(),
        "no LSM database was started beside it"
    );
    h.kill9();
    let err = refused_start(h.data_dir(), &[("HERALD_STORE_ENGINE", "lsm")]);
    assert!(
        err.contains("sled engine") && err.contains("lsm engine"),
        "stderr was: {err}"
    );
    // Refusing changed nothing: it still starts on sled with its data.
    h.restart();
    let (status, _) = get(&c, &format!("{}/Task/{id}", h.fhir("r4"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_new_data_directory_runs_on_lsm_and_a_second_process_on_it_is_refused() {
    let h = Herald::start();
    let c = client();
    let created = create(&c, &h.fhir("r4"), "Task", &task("Organization/o2")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        h.data_dir().join("lsm").is_dir(),
        "the default engine is LSM"
    );
    let err = refused_start(h.data_dir(), &[]);
    assert!(err.contains("in use"), "stderr was: {err}");
    // The first one was not disturbed.
    let (status, _) = get(&c, &format!("{}/Task/{id}", h.fhir("r4"))).await;
    assert_eq!(status, StatusCode::OK);
}
