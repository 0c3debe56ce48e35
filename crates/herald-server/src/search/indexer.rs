//! The store's search indexer: each tenant's resources filed under the keys of its FHIR
//! version's registered search parameters (`herald_fhir::search::index`). Lives here because only
//! the server knows which version a tenant serves; the store stays FHIR-agnostic.

use std::collections::BTreeMap;

use herald_fhir::FhirVersion;
use herald_fhir::search::index;
pub use herald_fhir::search::index::IndexScope;
use serde_json::Value;

use crate::config::TenantConfig;

/// Files resources by their tenant's FHIR version; resources of a tenant not configured are not
/// indexed (they are not served either).
#[derive(Debug, Clone)]
pub struct FhirIndexer {
    tenants: BTreeMap<String, FhirVersion>,
    scope: IndexScope,
}

impl FhirIndexer {
    /// An indexer for the configured tenants, filing every registered parameter.
    pub fn new(tenants: &[TenantConfig]) -> FhirIndexer {
        FhirIndexer::scoped(tenants, IndexScope::all())
    }

    /// An indexer filing only the parameters `scope` covers (`[search] parameters`).
    pub fn scoped(tenants: &[TenantConfig], scope: IndexScope) -> FhirIndexer {
        FhirIndexer {
            tenants: tenants
                .iter()
                .map(|t| (t.name.clone(), t.fhir_version))
                .collect(),
            scope,
        }
    }
}

/// Checks a `[search] parameters` scope against the tenants' FHIR versions: every listed type
/// must be a resource type and every code a search parameter of that type in at least one
/// tenant's version, so a typo is refused at start-up instead of quietly making searches scan.
pub fn check_scope(tenants: &[TenantConfig], scope: &IndexScope) -> Result<(), String> {
    use herald_fhir::search::Registry;
    for (rtype, codes) in scope.restricted() {
        for code in codes {
            let known = tenants.iter().any(|t| {
                Registry::for_version(t.fhir_version)
                    .get(rtype, code)
                    .is_some()
            });
            if !known {
                return Err(format!(
                    "[search] parameters: {rtype} has no search parameter {code:?} in the \
                     configured tenants' FHIR versions"
                ));
            }
        }
    }
    Ok(())
}

impl herald_store::Indexer for FhirIndexer {
    fn fingerprint(&self) -> String {
        // The tenants' versions are part of it: a tenant moved to another version is re-filed.
        self.tenants
            .iter()
            .map(|(name, v)| format!("{name}={}: {}", v.fhir_version(), index::fingerprint(*v)))
            .chain(std::iter::once(format!(
                "parameters: {}",
                self.scope.describe()
            )))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keys(&self, tenant: &str, _resource_type: &str, resource: &Value) -> Vec<Vec<u8>> {
        match self.tenants.get(tenant) {
            Some(v) => index::resource_keys(*v, resource, &self.scope),
            None => Vec::new(),
        }
    }

    fn covers(&self, _tenant: &str, resource_type: &str, code: &str) -> bool {
        self.scope.covers(resource_type, code)
    }
}
