//! The server's part of Herald's configuration (listen address, body limit, paging, tenants).
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
    /// FHIR endpoints.
    pub tenants: Vec<TenantConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            public_base_url: None,
            default_page_size: 50,
            max_page_size: 1000,
            tenants: vec![
                TenantConfig {
                    name: "r4".into(),
                    fhir_version: FhirVersion::R4,
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
    /// FHIR version: `4.0.1` (or `r4`) or `5.0.0` (or `r5`).
    #[serde(deserialize_with = "fhir_version")]
    pub fhir_version: FhirVersion,
}

fn fhir_version<'de, D: Deserializer<'de>>(d: D) -> Result<FhirVersion, D::Error> {
    let s = String::deserialize(d)?;
    FhirVersion::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unsupported FHIR version '{s}' (use 4.0.1 or 5.0.0)"
        ))
    })
}
