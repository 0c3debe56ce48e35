//! The store's search indexer: each tenant's resources filed under the keys of its FHIR
//! version's registered search parameters (`herald_fhir::search::index`). Lives here because only
//! the server knows which version a tenant serves; the store stays FHIR-agnostic.

use std::collections::BTreeMap;

use herald_fhir::FhirVersion;
use herald_fhir::search::index;
use serde_json::Value;

use crate::config::TenantConfig;

/// Files resources by their tenant's FHIR version; resources of a tenant not configured are not
/// indexed (they are not served either).
#[derive(Debug, Clone)]
pub struct FhirIndexer {
    tenants: BTreeMap<String, FhirVersion>,
}

impl FhirIndexer {
    /// An indexer for the configured tenants.
    pub fn new(tenants: &[TenantConfig]) -> FhirIndexer {
        FhirIndexer {
            tenants: tenants
                .iter()
                .map(|t| (t.name.clone(), t.fhir_version))
                .collect(),
        }
    }
}

impl herald_store::Indexer for FhirIndexer {
    fn fingerprint(&self) -> String {
        // The tenants' versions are part of it: a tenant moved to another version is re-filed.
        self.tenants
            .iter()
            .map(|(name, v)| format!("{name}={}: {}", v.fhir_version(), index::fingerprint(*v)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keys(&self, tenant: &str, _resource_type: &str, resource: &Value) -> Vec<Vec<u8>> {
        match self.tenants.get(tenant) {
            Some(v) => index::resource_keys(*v, resource),
            None => Vec::new(),
        }
    }
}
