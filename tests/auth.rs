//! Authentication end to end: SMART Backend Services (client_credentials with an RS384 or ES384
//! `private_key_jwt` assertion) with keys made here by `openssl`, API keys, every refusal of the
//! token endpoint, scopes, the admin role, and secure-by-default start-up.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use herald_tests::{Herald, client, herald_bin, task};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (installed by scripts/install-test-tools)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A signing key and its public JWK.
struct Key {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn rsa_key(dir: &Path, kid: &str) -> Key {
    let pem = format!("{kid}.pem");
    openssl(dir, &["genrsa", "-out", &pem, "2048"]);
    let der = openssl(
        dir,
        &["rsa", "-in", &pem, "-traditional", "-outform", "DER"],
    );
    let modulus =
        String::from_utf8(openssl(dir, &["rsa", "-in", &pem, "-noout", "-modulus"])).unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    Key {
        alg: Algorithm::RS384,
        kid: kid.to_owned(),
        encoding: EncodingKey::from_rsa_der(&der),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig", "n": b64(&n), "e": "AQAB"}),
    }
}

fn ec_key(dir: &Path, kid: &str) -> Key {
    let pem = format!("{kid}.pem");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            &pem,
        ],
    );
    let pkcs8 = openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER",
        ],
    );
    let spki = openssl(dir, &["ec", "-in", &pem, "-pubout", "-outform", "DER"]);
    let point = &spki[spki.len() - 97..];
    assert_eq!(point[0], 4, "uncompressed point");
    Key {
        alg: Algorithm::ES384,
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ec_der(&pkcs8),
        jwk: json!({"kty": "EC", "kid": kid, "crv": "P-384", "alg": "ES384", "use": "sig",
                    "x": b64(&point[1..49]), "y": b64(&point[49..97])}),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assertion(key: &Key, iss: &str, aud: &str, exp: u64, jti: &str) -> String {
    let mut h = Header::new(key.alg);
    h.kid = Some(key.kid.clone());
    encode(
        &h,
        &json!({"iss": iss, "sub": iss, "aud": aud, "exp": exp, "jti": jti}),
        &key.encoding,
    )
    .expect("sign")
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// API key `lab-key` (sha256 below), a fulfiller.
const LAB_KEY: &str = "lab-key";

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

struct Setup {
    h: Herald,
    rsa: Key,
    ec: Key,
    stranger: Key,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rsa_key(dir.path(), "rsa-1");
    let ec = ec_key(dir.path(), "ec-1");
    let stranger = rsa_key(dir.path(), "rsa-1-impostor");
    let revoked = ec_key(dir.path(), "ec-revoked");
    let config = format!(
        r#"
[[auth.clients]]
client_id = "placer-app"
jwks = '{}'
identity = "Organization/placer-1"
roles = ["placer"]
scopes = "system/Task.cruds system/Subscription.cruds system/ServiceRequest.cruds"

[[auth.clients]]
client_id = "lab-app"
jwks = '{}'
identity = "Organization/lab-1"
roles = ["fulfiller"]
scopes = "system/Task.rs"

[[auth.clients]]
client_id = "old-app"
jwks = '{}'
identity = "Organization/old"
roles = ["placer"]
scopes = "system/*.cruds"
revoked = true

[[auth.api_keys]]
client_id = "lab-script"
key_sha256 = "{}"
identity = "Organization/lab-1"
roles = ["fulfiller"]
scopes = "system/Task.rus"
"#,
        jwks(&[&rsa]),
        jwks(&[&ec]),
        jwks(&[&revoked]),
        sha256_hex(LAB_KEY),
    );
    let h = Herald::start_with_config(&config, &[]);
    Setup {
        h,
        rsa,
        ec,
        stranger,
        _dir: dir,
    }
}

async fn token_request(c: &reqwest::Client, h: &Herald, jwt: &str) -> (StatusCode, Value) {
    let r = c
        .post(format!("{}/auth/token", h.root))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", jwt),
            ("scope", "system/Task.cruds system/Subscription.rs"),
        ])
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn discovery_names_the_token_endpoint_and_rs384_and_es384_clients_get_working_tokens() {
    let s = setup();
    let c = client();
    let conf: Value = c
        .get(format!(
            "{}/fhir/r4/.well-known/smart-configuration",
            s.h.root
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = conf["token_endpoint"].as_str().unwrap().to_owned();
    assert_eq!(endpoint, format!("{}/auth/token", s.h.root));
    let meta: Value = c
        .get(format!("{}/fhir/r4/metadata", s.h.root))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["rest"][0]["security"]["service"][0]["coding"][0]["code"], "SMART-on-FHIR",
        "{meta}"
    );

    // no credentials: 401 with an OperationOutcome and a challenge
    let r = c
        .get(format!("{}/fhir/r4/Task", s.h.root))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");

    for (key, client_id) in [(&s.rsa, "placer-app"), (&s.ec, "lab-app")] {
        let jwt = assertion(key, client_id, &endpoint, now() + 240, &uuid_like());
        let (st, t) = token_request(&c, &s.h, &jwt).await;
        assert_eq!(st, StatusCode::OK, "{client_id}: {t}");
        assert_eq!(t["token_type"], "bearer");
        assert!(t["expires_in"].as_u64().unwrap() <= 300);
        let token = t["access_token"].as_str().unwrap();
        let r = c
            .get(format!("{}/fhir/r4/Task", s.h.root))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{client_id}");
        // scope: granted = registered ∩ asked
        let granted = t["scope"].as_str().unwrap();
        if client_id == "lab-app" {
            assert_eq!(granted, "system/Task.rs", "{t}");
            // ... so it may not create
            let r = c
                .post(format!("{}/fhir/r4/Task", s.h.root))
                .bearer_auth(token)
                .header("content-type", "application/fhir+json")
                .body(task("Organization/lab-1").to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
            let oo: Value = r.json().await.unwrap();
            assert!(
                oo["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap()
                    .contains("system/Task.c"),
                "{oo}"
            );
        }
        // a placer is not an admin
        let r = c
            .get(format!("{}/admin/deliveries", s.h.root))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
}

fn uuid_like() -> String {
    format!("{:x}{:x}", now(), std::process::id() as u64 ^ rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

#[tokio::test]
async fn every_bad_assertion_is_refused_with_invalid_client() {
    let s = setup();
    let c = client();
    let endpoint = format!("{}/auth/token", s.h.root);
    let cases: Vec<(&str, String)> = vec![
        ("signed with another key under the registered kid", {
            let mut h = Header::new(Algorithm::RS384);
            h.kid = Some("rsa-1".into());
            encode(
                &h,
                &json!({"iss": "placer-app", "sub": "placer-app", "aud": endpoint, "exp": now() + 200, "jti": uuid_like()}),
                &s.stranger.encoding,
            )
            .unwrap()
        }),
        (
            "wrong audience",
            assertion(
                &s.rsa,
                "placer-app",
                "https://elsewhere.example/token",
                now() + 200,
                &uuid_like(),
            ),
        ),
        (
            "expired",
            assertion(&s.rsa, "placer-app", &endpoint, now() - 120, &uuid_like()),
        ),
        (
            "more than five minutes ahead",
            assertion(&s.rsa, "placer-app", &endpoint, now() + 3600, &uuid_like()),
        ),
        (
            "unknown key id",
            assertion(
                &s.stranger,
                "placer-app",
                &endpoint,
                now() + 200,
                &uuid_like(),
            ),
        ),
        (
            "unknown client",
            assertion(&s.rsa, "nobody", &endpoint, now() + 200, &uuid_like()),
        ),
        (
            "iss of another client",
            assertion(&s.rsa, "lab-app", &endpoint, now() + 200, &uuid_like()),
        ),
    ];
    for (why, jwt) in cases {
        let (st, e) = token_request(&c, &s.h, &jwt).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{why}: {e}");
        assert_eq!(e["error"], "invalid_client", "{why}: {e}");
    }
    // replayed jti: the first use works, the second is refused
    let jwt = assertion(&s.rsa, "placer-app", &endpoint, now() + 200, "once-only");
    assert_eq!(token_request(&c, &s.h, &jwt).await.0, StatusCode::OK);
    let (st, e) = token_request(&c, &s.h, &jwt).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(
        e["error_description"].as_str().unwrap().contains("replay"),
        "{e}"
    );
    // not a JWT at all
    let (st, e) = token_request(&c, &s.h, "not.a.jwt").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    // wrong grant type
    let r = c
        .post(&endpoint)
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_revoked_client_and_a_wrong_api_key_are_refused_and_a_right_key_works() {
    let s = setup();
    let c = client();
    let base = s.h.fhir("r4");
    // the revoked client's key is registered, its assertions are still refused
    let dir = tempfile::tempdir().unwrap();
    let other = ec_key(dir.path(), "ec-revoked");
    let jwt = assertion(
        &other,
        "old-app",
        &format!("{}/auth/token", s.h.root),
        now() + 200,
        &uuid_like(),
    );
    let (st, e) = token_request(&c, &s.h, &jwt).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["error"], "invalid_client", "{e}");
    assert!(
        e["error_description"].as_str().unwrap().contains("revoked"),
        "{e}"
    );
    // API keys
    let r = c
        .get(format!("{base}/Task"))
        .bearer_auth("not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{base}/Task"))
        .bearer_auth(LAB_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn without_authentication_herald_refuses_a_non_loopback_address_unless_told_it_is_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(herald_bin())
        .arg("serve")
        .env("HERALD_LISTEN", "0.0.0.0:0")
        .env("HERALD_DATA_DIR", tmp.path().join("data"))
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");
    let h = Herald::start_with(&[
        ("HERALD_LISTEN", "0.0.0.0:0"),
        ("HERALD_INSECURE_NO_AUTH", "true"),
    ]);
    assert!(!h.root.is_empty());
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_and_over_its_subscriptions_422() {
    let config = format!(
        "[auth]\nrequests_per_minute = 5\nmax_subscriptions_per_client = 2\n\n[[auth.api_keys]]\nclient_id = \"lab-script\"\nkey_sha256 = \"{}\"\nidentity = \"Organization/lab-1\"\nroles = [\"fulfiller\"]\nscopes = \"system/*.cruds\"\n",
        sha256_hex(LAB_KEY)
    );
    let h = Herald::start_with_config(&config, &[("HERALD_ALLOW_PRIVATE_ENDPOINTS", "true")]);
    let c = client();
    let base = h.fhir("r4");
    let sub = herald_tests::r4_subscription(
        "cow-task-changed",
        &["Task?owner=Organization/lab-1"],
        "http://127.0.0.1:9/hook",
        "id-only",
    );
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = c
            .post(format!("{base}/Subscription"))
            .bearer_auth(LAB_KEY)
            .header("content-type", "application/fhir+json")
            .body(sub.to_string())
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::UNPROCESSABLE_ENTITY
        ]
    );
    // two requests left in the bucket, then 429 with Retry-After and an OperationOutcome
    for _ in 0..2 {
        let r = c
            .get(format!("{base}/Task"))
            .bearer_auth(LAB_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = c
        .get(format!("{base}/Task"))
        .bearer_auth(LAB_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
}
