//! The server's part of Herald's configuration (listen address, request and connection limits,
//! paging, tenants).
//! The binary layers defaults, `config/herald.toml` and `HERALD_*` variables into it.

use std::net::SocketAddr;

use herald_fhir::FhirVersion;
use serde::{Deserialize, Deserializer, Serialize};

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes (larger bodies get 413).
    pub max_body_bytes: usize,
    /// Base URL clients reach Herald at (used in `Location` and `fullUrl`); when unset it is
    /// derived from the request's `Host` header.
    pub public_base_url: Option<String>,
    /// Default search page size (`_count` when absent).
    pub default_page_size: usize,
    /// Largest allowed `_count`.
    pub max_page_size: usize,
    /// Seconds a client has to send a request's complete head (request line and headers),
    /// counted from the connection's accept or from the first byte of a later request; the
    /// connection is closed when they run out (slowloris).
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit idle between requests before it is closed.
    pub keep_alive_timeout_secs: u64,
    /// Seconds a client has to send a request's complete body, counted from its head; a slower
    /// body gets 408.
    pub body_read_timeout_secs: u64,
    /// Connections served at once; further clients wait in the kernel's accept backlog until a
    /// connection closes.
    pub max_connections: usize,
    /// Longest accepted request target (path and query), in bytes; longer ones get 414.
    pub max_uri_bytes: usize,
    /// Largest accepted header section (each field counted as `name: value` plus CRLF), in
    /// bytes; larger ones get 431.
    pub max_header_bytes: usize,
    /// FHIR endpoints.
    pub tenants: Vec<TenantConfig>,
}

impl ServerConfig {
    /// Checks the limits that would make the server unusable when zero.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs as usize,
            ),
            (
                "keep_alive_timeout_secs",
                self.keep_alive_timeout_secs as usize,
            ),
            (
                "body_read_timeout_secs",
                self.body_read_timeout_secs as usize,
            ),
            ("max_connections", self.max_connections),
            ("max_uri_bytes", self.max_uri_bytes),
            ("max_header_bytes", self.max_header_bytes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("server.{name} must be at least 1"));
        }
        // Above this hyper refuses the request line itself, with an empty 414.
        if self.max_uri_bytes >= crate::listener::HYPER_MAX_URI_BYTES {
            return Err(format!(
                "server.max_uri_bytes must be below {}",
                crate::listener::HYPER_MAX_URI_BYTES
            ));
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            public_base_url: None,
            default_page_size: 50,
            max_page_size: 1000,
            header_read_timeout_secs: 10,
            keep_alive_timeout_secs: 60,
            body_read_timeout_secs: 30,
            max_connections: 10_000,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            tenants: vec![
                TenantConfig {
                    name: "r4".into(),
                    fhir_version: FhirVersion::R4,
                },
                TenantConfig {
                    name: "r4b".into(),
                    fhir_version: FhirVersion::R4B,
                },
                TenantConfig {
                    name: "r5".into(),
                    fhir_version: FhirVersion::R5,
                },
            ],
        }
    }
}

/// One FHIR endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Name (the URL segment after `/fhir/`).
    pub name: String,
    /// FHIR version: `4.0.1` (or `r4`), `4.3.0` (or `r4b`) or `5.0.0` (or `r5`).
    #[serde(deserialize_with = "fhir_version")]
    pub fhir_version: FhirVersion,
}

fn fhir_version<'de, D: Deserializer<'de>>(d: D) -> Result<FhirVersion, D::Error> {
    let s = String::deserialize(d)?;
    FhirVersion::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unsupported FHIR version '{s}' (use 4.0.1, 4.3.0 or 5.0.0)"
        ))
    })
}
