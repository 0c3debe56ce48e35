//! Who is calling. Owns the registered clients and API keys, the SMART Backend Services token
//! endpoint (`client_credentials` with a `private_key_jwt` assertion, RS384 or ES384), the
//! access tokens it issues, and [`Auth::authenticate`], which turns a request's `Authorization`
//! header into a [`Caller`] (or a 401). What a caller may do is `crate::access`'s business.
//!
//! Access tokens are opaque random strings kept in memory for `access_token_ttl_secs`: a restart
//! makes clients ask again, which Backend Services clients do anyway. Replayed assertions are
//! caught by remembering each `jti` until its `exp` (at most five minutes).

pub mod config;
pub mod gate;
pub mod scopes;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use config::{AuthConfig, Role};
pub use scopes::{Perm, Scopes};

use crate::error::ApiError;
use herald_delivery::timers::unix_ms as now_ms;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client (`anonymous` when authentication is off).
    pub client_id: String,
    /// Who it acts as (`Organization/lab-1`); `None` for admins and anonymous.
    pub identity: Option<String>,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Its granted scopes.
    pub scopes: Scopes,
}

impl Caller {
    /// The caller when authentication is off: Herald on loopback, or explicitly insecure.
    pub fn anonymous() -> Caller {
        Caller {
            client_id: "anonymous".to_owned(),
            identity: None,
            roles: vec![Role::Admin],
            scopes: Scopes::all(),
        }
    }

    /// The caller of an open path (capabilities, discovery) when authentication is on: no roles,
    /// no scopes.
    pub fn public() -> Caller {
        Caller {
            client_id: "public".to_owned(),
            identity: None,
            roles: Vec::new(),
            scopes: Scopes::default(),
        }
    }

    /// Whether it has the admin role.
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether it has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

struct Client {
    cfg: config::ClientConfig,
    keys: JwkSet,
    scopes: Scopes,
}

struct Key {
    cfg: config::ApiKeyConfig,
    scopes: Scopes,
}

struct Issued {
    client_id: String,
    scopes: Scopes,
    expires_ms: u64,
}

/// The registry of credentials and the tokens issued.
pub struct Auth {
    enabled: bool,
    ttl_secs: u64,
    clients: HashMap<String, Client>,
    keys: HashMap<String, Key>,
    tokens: Mutex<HashMap<String, Issued>>,
    seen_jti: Mutex<HashMap<String, u64>>,
    per_minute: u32,
    /// Each client's token bucket: (tokens left, when last refilled).
    buckets: Mutex<HashMap<String, (f64, std::time::Instant)>>,
    /// Live Subscriptions a non-admin client may own.
    pub max_subscriptions_per_client: usize,
}

/// Why a token request was refused (RFC 6749 §5.2: `error` and `error_description`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    /// The OAuth error code (`invalid_client`, `invalid_request`, `unsupported_grant_type`, …).
    pub error: &'static str,
    /// What was wrong.
    pub description: String,
}

fn oauth(error: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError {
        error,
        description: description.into(),
    }
}

/// The claims of a client assertion Herald reads.
#[derive(Debug, Deserialize)]
struct Assertion {
    exp: u64,
    jti: Option<String>,
}

/// A successful token response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The bearer access token.
    pub access_token: String,
    /// Seconds it lasts.
    pub expires_in: u64,
    /// The scopes granted.
    pub scope: String,
}

/// Longest an assertion may still be valid for (SMART: `exp` at most five minutes ahead).
const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

impl Auth {
    /// Loads the configuration (JWKS files are read here); an unusable entry refuses start-up.
    pub fn new(cfg: &AuthConfig) -> Result<Auth, String> {
        let mut clients = HashMap::new();
        for c in &cfg.clients {
            let text = match (&c.jwks, &c.jwks_file) {
                (Some(inline), None) => inline.clone(),
                (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "auth client '{}': cannot read jwks_file {}: {e}",
                        c.client_id,
                        path.display()
                    )
                })?,
                _ => {
                    return Err(format!(
                        "auth client '{}': give exactly one of jwks and jwks_file",
                        c.client_id
                    ));
                }
            };
            let keys: JwkSet = serde_json::from_str(&text)
                .map_err(|e| format!("auth client '{}': the JWKS is invalid: {e}", c.client_id))?;
            let scopes = Scopes::parse(&c.scopes)
                .map_err(|e| format!("auth client '{}': {e}", c.client_id))?;
            clients.insert(
                c.client_id.clone(),
                Client {
                    cfg: c.clone(),
                    keys,
                    scopes,
                },
            );
        }
        let mut keys = HashMap::new();
        for k in &cfg.api_keys {
            let hash = k.key_sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth api key of '{}': key_sha256 must be 64 hex digits",
                    k.client_id
                ));
            }
            let scopes = Scopes::parse(&k.scopes)
                .map_err(|e| format!("auth api key of '{}': {e}", k.client_id))?;
            keys.insert(
                hash,
                Key {
                    cfg: k.clone(),
                    scopes,
                },
            );
        }
        Ok(Auth {
            enabled: cfg.enabled(),
            ttl_secs: cfg.access_token_ttl_secs.max(1),
            clients,
            keys,
            tokens: Mutex::new(HashMap::new()),
            seen_jti: Mutex::new(HashMap::new()),
            per_minute: cfg.requests_per_minute,
            buckets: Mutex::new(HashMap::new()),
            max_subscriptions_per_client: cfg.max_subscriptions_per_client,
        })
    }

    /// Takes one request from `client`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn throttle(&self, client: &str) -> Result<(), u64> {
        if !self.enabled || self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let now = std::time::Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (tokens, last) = buckets.entry(client.to_owned()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // Truncation is fine: the wait is at most a minute and rounded up by the +1.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let wait = ((1.0 - *tokens) / rate).ceil() as u64;
            Err(wait.max(1))
        }
    }

    /// The caller a registered, unrevoked client or API key is, with its registered scopes (for
    /// decisions made without a request: what a Subscription's creator may receive).
    pub fn caller_for(&self, client_id: &str) -> Option<Caller> {
        if let Some(c) = self.clients.get(client_id).filter(|c| !c.cfg.revoked) {
            return Some(Caller {
                client_id: c.cfg.client_id.clone(),
                identity: c.cfg.identity.clone(),
                roles: c.cfg.roles.clone(),
                scopes: c.scopes.clone(),
            });
        }
        self.keys
            .values()
            .find(|k| k.cfg.client_id == client_id && !k.cfg.revoked)
            .map(|k| Caller {
                client_id: k.cfg.client_id.clone(),
                identity: k.cfg.identity.clone(),
                roles: k.cfg.roles.clone(),
                scopes: k.scopes.clone(),
            })
    }

    /// Whether credentials are required.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller a request's `Authorization` header names; 401 when it names none.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.enabled {
            return Ok(Caller::anonymous());
        }
        let unauthorized = |why: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "login",
                format!(
                    "{why}; send 'Authorization: Bearer <token>' (a SMART Backend Services access token from the token endpoint named in /.well-known/smart-configuration, or an API key)"
                ),
            )
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("no credentials"))?
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("only Bearer credentials are accepted"))?;
        if let Some(c) = self.caller_of_token(token) {
            return c.ok_or_else(|| unauthorized("the client of this token has been revoked"));
        }
        let hash = hex(&Sha256::digest(token.as_bytes()));
        if let Some(k) = self.keys.get(&hash) {
            if k.cfg.revoked {
                return Err(unauthorized("this API key has been revoked"));
            }
            return Ok(Caller {
                client_id: k.cfg.client_id.clone(),
                identity: k.cfg.identity.clone(),
                roles: k.cfg.roles.clone(),
                scopes: k.scopes.clone(),
            });
        }
        Err(unauthorized("unknown or expired access token"))
    }

    /// `Some(Some(caller))` for a live token, `Some(None)` for a token of a revoked client,
    /// `None` when it is not one of ours.
    fn caller_of_token(&self, token: &str) -> Option<Option<Caller>> {
        let now = now_ms();
        let mut tokens = self.tokens.lock().ok()?;
        let issued = tokens.get(token)?;
        if issued.expires_ms <= now {
            tokens.remove(token);
            return None;
        }
        let client = self.clients.get(&issued.client_id)?;
        if client.cfg.revoked {
            return Some(None);
        }
        Some(Some(Caller {
            client_id: client.cfg.client_id.clone(),
            identity: client.cfg.identity.clone(),
            roles: client.cfg.roles.clone(),
            scopes: issued.scopes.clone(),
        }))
    }

    /// The token endpoint's work: checks a `client_credentials` request with a
    /// `private_key_jwt` assertion whose audience must be `token_endpoint`.
    pub fn issue(
        &self,
        form: &HashMap<String, String>,
        token_endpoint: &str,
    ) -> Result<Token, OAuthError> {
        if !self.enabled {
            return Err(oauth(
                "invalid_request",
                "authentication is not configured on this server",
            ));
        }
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if field("grant_type") != "client_credentials" {
            return Err(oauth(
                "unsupported_grant_type",
                "grant_type must be client_credentials",
            ));
        }
        if field("client_assertion_type")
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        {
            return Err(oauth(
                "invalid_request",
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let jwt = field("client_assertion");
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| {
            oauth(
                "invalid_client",
                format!("the client assertion is not a JWT: {e}"),
            )
        })?;
        if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
            return Err(oauth(
                "invalid_client",
                format!(
                    "algorithm {:?} is not accepted; use RS384 or ES384",
                    header.alg
                ),
            ));
        }
        // Who claims to be calling (verified below with that client's keys).
        let claimed = unverified_issuer(jwt)
            .ok_or_else(|| oauth("invalid_client", "the assertion names no issuer"))?;
        let client = self
            .clients
            .get(&claimed)
            .ok_or_else(|| oauth("invalid_client", format!("unknown client '{claimed}'")))?;
        if client.cfg.revoked {
            return Err(oauth(
                "invalid_client",
                format!("client '{claimed}' has been revoked"),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[token_endpoint]);
        validation.set_issuer(&[&client.cfg.client_id]);
        validation.sub = Some(client.cfg.client_id.clone());
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = LEEWAY_SECS;
        let candidates: Vec<_> = client
            .keys
            .keys
            .iter()
            .filter(|k| match (&header.kid, &k.common.key_id) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(oauth(
                "invalid_client",
                format!(
                    "no key of client '{claimed}' matches kid {:?}",
                    header.kid.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        let mut last_error = String::new();
        let mut claims = None;
        for jwk in candidates {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<Assertion>(jwt, &key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let claims = claims.ok_or_else(|| {
            oauth(
                "invalid_client",
                format!("the client assertion does not verify: {last_error}"),
            )
        })?;
        let now_s = now_ms() / 1000;
        if claims.exp > now_s + MAX_ASSERTION_LIFETIME_SECS + LEEWAY_SECS {
            return Err(oauth(
                "invalid_client",
                "the assertion's exp is more than five minutes ahead",
            ));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty())
            .ok_or_else(|| oauth("invalid_client", "the assertion has no jti"))?;
        {
            let mut seen = self
                .seen_jti
                .lock()
                .map_err(|_| oauth("invalid_client", "internal error"))?;
            seen.retain(|_, exp| *exp + LEEWAY_SECS >= now_s);
            let key = format!("{}\u{0}{jti}", client.cfg.client_id);
            if seen.contains_key(&key) {
                return Err(oauth(
                    "invalid_client",
                    "this assertion's jti was already used (replay)",
                ));
            }
            seen.insert(key, claims.exp);
        }
        let asked = field("scope");
        let scopes = if asked.trim().is_empty() {
            client.scopes.clone()
        } else {
            let asked = Scopes::parse(asked).map_err(|e| oauth("invalid_scope", e))?;
            client.scopes.intersect(&asked)
        };
        let access_token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        if let Ok(mut tokens) = self.tokens.lock() {
            let now = now_ms();
            tokens.retain(|_, t| t.expires_ms > now);
            tokens.insert(
                access_token.clone(),
                Issued {
                    client_id: client.cfg.client_id.clone(),
                    scopes: scopes.clone(),
                    expires_ms: now + self.ttl_secs * 1000,
                },
            );
        }
        Ok(Token {
            access_token,
            expires_in: self.ttl_secs,
            scope: scopes.render(),
        })
    }
}

/// The `iss` of a JWT, read without verifying it (to choose whose keys verify it).
fn unverified_issuer(jwt: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_config(hash: &str, revoked: bool) -> AuthConfig {
        AuthConfig {
            api_keys: vec![config::ApiKeyConfig {
                client_id: "lab".into(),
                key_sha256: hash.into(),
                identity: Some("Organization/lab".into()),
                roles: vec![Role::Fulfiller],
                scopes: "system/Task.rus".into(),
                revoked,
            }],
            ..AuthConfig::default()
        }
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn without_credentials_configured_everyone_is_the_anonymous_admin() {
        let a = Auth::new(&AuthConfig::default()).expect("auth");
        assert_eq!(
            a.authenticate(&HeaderMap::new()).ok(),
            Some(Caller::anonymous())
        );
    }

    #[test]
    fn an_api_key_is_known_by_its_hash_and_a_revoked_one_is_refused() {
        let hash = hex(&Sha256::digest(b"s3cret-key"));
        let a = Auth::new(&key_config(&hash, false)).expect("auth");
        let c = a
            .authenticate(&bearer("Bearer s3cret-key"))
            .expect("caller");
        assert_eq!(c.identity.as_deref(), Some("Organization/lab"));
        assert!(c.scopes.allows("Task", Perm::Update));
        assert!(!c.scopes.allows("Task", Perm::Create));
        for h in ["Bearer wrong", "Basic abc", ""] {
            let e = a.authenticate(&bearer(h)).expect_err("refused");
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{h}");
        }
        assert_eq!(
            a.authenticate(&HeaderMap::new())
                .expect_err("refused")
                .status,
            StatusCode::UNAUTHORIZED
        );
        let revoked = Auth::new(&key_config(&hash, true)).expect("auth");
        assert!(revoked.authenticate(&bearer("Bearer s3cret-key")).is_err());
    }

    #[test]
    fn a_malformed_key_hash_refuses_start_up() {
        assert!(Auth::new(&key_config("abc", false)).is_err());
    }
}
