//! Assembling what a notification carries: the subscription's reference for the status entry,
//! and each stored event with its focus **at the version that triggered it** (design
//! invariant 4) and its additional context, loaded from the store at the requested payload
//! level.

use herald_store::{Interaction as StoreInteraction, ResourceStore, Result, StoreError};
use herald_subscriptions::Subscription;
use herald_subscriptions::notification::{
    EventRecord, Interaction, PayloadContent, ResourceAtVersion, SubscriptionRef,
};

/// The status-entry view of a subscription.
pub fn subscription_ref(base_url: &str, sub: &Subscription) -> SubscriptionRef {
    SubscriptionRef {
        id: sub.id.clone(),
        base_url: base_url.to_owned(),
        identifier: sub.identifier.clone(),
        topic: sub.topic.clone(),
        status: sub.status.code().to_owned(),
    }
}

/// Loads the resources the events need at `content` level (none for `empty` and `id-only`).
pub fn materialize(
    store: &dyn ResourceStore,
    tenant: &str,
    events: &[herald_store::EventRecord],
    content: PayloadContent,
) -> Result<Vec<EventRecord>> {
    let full = content == PayloadContent::FullResource;
    events
        .iter()
        .map(|e| {
            let focus_resource = if full && e.interaction != StoreInteraction::Delete {
                store
                    .read_version(tenant, &e.focus_type, &e.focus_id, e.focus_version)?
                    .resource
            } else {
                None
            };
            let mut additional = Vec::with_capacity(e.additional_context.len());
            for r in &e.additional_context {
                let Some((rt, id)) = r.split_once('/') else {
                    continue;
                };
                let id = id.split('/').next().unwrap_or(id);
                match store.read(tenant, rt, id) {
                    Ok(v) => additional.push(ResourceAtVersion {
                        resource_type: rt.to_owned(),
                        id: id.to_owned(),
                        version: v.version.to_string(),
                        resource: if full { v.resource } else { None },
                    }),
                    // Context that does not exist (or no longer does) is left out: clients
                    // must work with the focus alone.
                    Err(StoreError::NotFound { .. } | StoreError::Gone { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
            Ok(EventRecord {
                number: e.number,
                timestamp: e.timestamp.clone(),
                focus: ResourceAtVersion {
                    resource_type: e.focus_type.clone(),
                    id: e.focus_id.clone(),
                    version: e.focus_version.to_string(),
                    resource: focus_resource,
                },
                additional_context: additional,
                interaction: match e.interaction {
                    StoreInteraction::Create => Interaction::Create,
                    StoreInteraction::Update => Interaction::Update,
                    StoreInteraction::Delete => Interaction::Delete,
                },
            })
        })
        .collect()
}

/// `SubscriptionStatus.error` entries for a subscription in `error`: the last delivery failure
/// as a CodeableConcept from the THO `subscription-error` code system (dns-resolution-error,
/// no-response, error-response) with the failure text.
pub fn error_concepts(
    status: herald_subscriptions::SubscriptionStatus,
    state: &herald_store::DeliveryState,
) -> Vec<serde_json::Value> {
    if status != herald_subscriptions::SubscriptionStatus::Error {
        return Vec::new();
    }
    let Some(text) = &state.last_error else {
        return Vec::new();
    };
    let lower = text.to_ascii_lowercase();
    let (code, display) = if lower.starts_with("http-status") {
        ("error-response", "Error response")
    } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
        ("dns-resolution-error", "DNS resolution error")
    } else {
        ("no-response", "No response")
    };
    vec![serde_json::json!({
        "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/subscription-error",
            "code": code,
            "display": display,
        }],
        "text": text,
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::DeliveryState;
    use herald_subscriptions::SubscriptionStatus;

    #[test]
    fn errors_are_reported_only_in_error_status_with_a_tho_code() {
        let state = DeliveryState {
            last_error: Some("http-status: 503".into()),
            ..Default::default()
        };
        assert!(error_concepts(SubscriptionStatus::Active, &state).is_empty());
        let e = error_concepts(SubscriptionStatus::Error, &state);
        assert_eq!(e[0]["coding"][0]["code"], "error-response");
        assert_eq!(e[0]["text"], "http-status: 503");
        let t = DeliveryState {
            last_error: Some("timeout: operation timed out".into()),
            ..Default::default()
        };
        assert_eq!(
            error_concepts(SubscriptionStatus::Error, &t)[0]["coding"][0]["code"],
            "no-response"
        );
    }
}
