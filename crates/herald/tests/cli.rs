//! The command line itself: `--version`, `--help`, and a refused configuration. (Being an
//! integration test of the `herald` package also makes `cargo test --workspace` build the
//! binary that the end-to-end tests in `tests/` spawn.)

use std::process::Command;

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

#[test]
fn version_prints_the_package_version() {
    let out = herald().arg("--version").output().expect("run herald");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("herald {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_the_serve_command() {
    let out = herald().arg("--help").output().expect("run herald");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve"), "help was: {text}");
}

#[test]
fn invalid_environment_configuration_is_refused_with_a_message() {
    let out = herald()
        .args(["config"])
        .env("HERALD_LISTEN", "not-an-address")
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("listen"), "stderr was: {err}");
}

#[test]
fn environment_overrides_the_config_file() {
    let out = herald()
        .args(["config"])
        .env("HERALD_LISTEN", "127.0.0.1:9999")
        .env("HERALD_DATA_DIR", "/tmp/elsewhere")
        .env("HERALD_LOG_JSON", "true")
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json config");
    assert_eq!(cfg["server"]["listen"], "127.0.0.1:9999");
    assert_eq!(cfg["storage"]["data_dir"], "/tmp/elsewhere");
    assert_eq!(cfg["log"]["json"], true);
}

#[test]
fn the_short_allowlist_variable_is_a_comma_separated_list() {
    let out = herald()
        .args(["config"])
        .env(
            "HERALD_PRIVATE_ENDPOINT_ALLOWLIST",
            "10.20.0.0/16, receiver.internal:8443,[fd00::5]:9000",
        )
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json config");
    assert_eq!(
        cfg["delivery"]["private_endpoint_allowlist"],
        serde_json::json!(["10.20.0.0/16", "receiver.internal:8443", "[fd00::5]:9000"])
    );
}

#[test]
fn a_single_bracketed_allowlist_entry_is_read_as_an_entry() {
    let out = herald()
        .args(["config"])
        .env("HERALD_PRIVATE_ENDPOINT_ALLOWLIST", "[fd00::5]:9000")
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json config");
    assert_eq!(
        cfg["delivery"]["private_endpoint_allowlist"],
        serde_json::json!(["[fd00::5]:9000"])
    );
}

#[test]
fn an_invalid_allowlist_entry_refuses_start_up_naming_it() {
    let out = herald()
        .args(["config"])
        .env("HERALD_PRIVATE_ENDPOINT_ALLOWLIST", "10.20.0.0/16,10.1.2.3")
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("private_endpoint_allowlist entry '10.1.2.3'"),
        "stderr was: {err}"
    );
}

#[test]
fn the_nats_url_and_node_id_variables_make_a_cluster_node_and_nothing_else_does() {
    let out = herald()
        .args(["config"])
        .env(
            "HERALD_NATS_URL",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
        )
        .env("HERALD_NODE_ID", "herald-a")
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json config");
    assert_eq!(
        cfg["cluster"]["nats_url"],
        "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
    );
    assert_eq!(cfg["cluster"]["node_id"], "herald-a");
    assert_eq!(cfg["cluster"]["replicas"], 3);
    assert_eq!(cfg["cluster"]["lease_ttl_secs"], 6);
    let out = herald().args(["config"]).output().expect("run herald");
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json config");
    assert!(cfg["cluster"].is_null(), "embedded by default: {cfg}");
    // A node without an id is refused, not run half-configured.
    let out = herald()
        .args(["config"])
        .env("HERALD_NATS_URL", "nats://127.0.0.1:4222")
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node_id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_search_parameter_list_naming_an_unknown_parameter_refuses_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("herald.toml");
    std::fs::write(
        &path,
        "[search.parameters]\nTask = [\"identifier\", \"ownr\"]\n",
    )
    .expect("write config");
    let out = herald()
        .args(["config", "--config"])
        .arg(&path)
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Task") && err.contains("\"ownr\""),
        "stderr was: {err}"
    );
    std::fs::write(
        &path,
        "[search.parameters]\nTask = [\"identifier\", \"owner\"]\n",
    )
    .expect("write config");
    let out = herald()
        .args(["config", "--config"])
        .arg(&path)
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json config");
    assert_eq!(
        cfg["search"]["parameters"]["Task"],
        serde_json::json!(["identifier", "owner"])
    );
}

#[test]
fn an_unknown_storage_engine_is_refused_naming_the_known_ones() {
    let out = herald()
        .args(["config"])
        .env("HERALD_STORE_ENGINE", "rocks")
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rocks") && err.contains("lsm") && err.contains("sled"),
        "stderr was: {err}"
    );
    let out = herald()
        .args(["config"])
        .env("HERALD_STORE_ENGINE", "sled")
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json config");
    assert_eq!(cfg["storage"]["engine"], "sled");
}
