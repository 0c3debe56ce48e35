//! `[auth]` settings: the registered clients (SMART Backend Services: a JWKS per client) and
//! static API keys (stored as SHA-256 hashes), with the identity, roles and scopes each gets.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A COW role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Orders: reads and writes what it requested.
    Placer,
    /// Performs: reads and updates what it owns.
    Fulfiller,
    /// Everything, and `/admin`.
    Admin,
}

/// Authentication settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Clients authenticating with a `private_key_jwt` client assertion.
    pub clients: Vec<ClientConfig>,
    /// Static API keys (sent as `Authorization: Bearer <key>`).
    pub api_keys: Vec<ApiKeyConfig>,
    /// Lifetime of the access tokens the token endpoint issues, in seconds.
    pub access_token_ttl_secs: u64,
    /// Serve without authentication on a non-loopback address (everyone is admin). Off by
    /// default: with no client or key configured Herald refuses to listen beyond loopback.
    pub insecure_no_auth: bool,
    /// Requests per minute one client may make (a token bucket of that size refilled over a
    /// minute); beyond it 429 with `Retry-After`. 0: no limit.
    pub requests_per_minute: u32,
    /// Live Subscriptions one client (other than an admin) may own; beyond it 422.
    pub max_subscriptions_per_client: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            clients: Vec::new(),
            api_keys: Vec::new(),
            access_token_ttl_secs: 300,
            insecure_no_auth: false,
            requests_per_minute: 6000,
            max_subscriptions_per_client: 100,
        }
    }
}

impl AuthConfig {
    /// Whether any credential is configured (then every FHIR and admin request needs one).
    pub fn enabled(&self) -> bool {
        !self.clients.is_empty() || !self.api_keys.is_empty()
    }

    /// Secure by default: without authentication, only a loopback address may be served,
    /// unless `insecure_no_auth` says otherwise.
    pub fn check_listen(&self, listen: SocketAddr) -> Result<(), String> {
        if self.enabled() || listen.ip().is_loopback() || self.insecure_no_auth {
            return Ok(());
        }
        Err(format!(
            "refusing to serve {listen} without authentication: configure [[auth.clients]] or [[auth.api_keys]], listen on a loopback address, or set auth.insecure_no_auth = true (HERALD_INSECURE_NO_AUTH=true) to let anyone do anything"
        ))
    }
}

/// A SMART Backend Services client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `client_id` (the assertion's `iss` and `sub`).
    pub client_id: String,
    /// Its public keys as an inline JWKS JSON document.
    #[serde(default)]
    pub jwks: Option<String>,
    /// Or a file holding the JWKS.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Who the client acts as, e.g. `Organization/lab-1`.
    #[serde(default)]
    pub identity: Option<String>,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// SMART scopes it may be granted, space-separated (`system/Task.cruds system/Subscription.cruds`).
    #[serde(default)]
    pub scopes: String,
    /// A revoked client: its assertions and tokens are refused.
    #[serde(default)]
    pub revoked: bool,
}

/// A static API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The client it stands for (in logs and ownership).
    pub client_id: String,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`); the key itself is never stored.
    pub key_sha256: String,
    /// Who the key acts as.
    #[serde(default)]
    pub identity: Option<String>,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Its SMART scopes, space-separated.
    #[serde(default)]
    pub scopes: String,
    /// A revoked key.
    #[serde(default)]
    pub revoked: bool,
}
