//! Key encoding for the engine's trees. Components are joined with a 0 byte (FHIR ids, types and
//! tenant names never contain one) and numbers are big-endian so that range scans come out
//! ordered by version or event number.

const SEP: u8 = 0;

/// `tenant \0 type \0 id` — key of the `resources` tree (current version).
pub fn resource(tenant: &str, resource_type: &str, id: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), resource_type.as_bytes(), id.as_bytes()])
}

/// `tenant \0 type \0` — prefix of all resources of one type.
pub fn resource_type_prefix(tenant: &str, resource_type: &str) -> Vec<u8> {
    let mut k = join(&[tenant.as_bytes(), resource_type.as_bytes()]);
    k.push(SEP);
    k
}

/// `tenant \0 type \0 id \0 version(be)` — key of the `history` tree.
pub fn history(tenant: &str, resource_type: &str, id: &str, version: u64) -> Vec<u8> {
    let mut k = resource(tenant, resource_type, id);
    k.push(SEP);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// `tenant \0 type \0 id \0` — prefix of all versions of one resource.
pub fn history_prefix(tenant: &str, resource_type: &str, id: &str) -> Vec<u8> {
    let mut k = resource(tenant, resource_type, id);
    k.push(SEP);
    k
}

/// `tenant \0 subscription-id` — key of per-subscription single-value trees (event counter,
/// delivery state).
pub fn subscription(tenant: &str, subscription_id: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), subscription_id.as_bytes()])
}

/// `tenant \0 subscription-id \0 number(be)` — key of the `events` tree.
pub fn event(tenant: &str, subscription_id: &str, number: u64) -> Vec<u8> {
    let mut k = event_prefix(tenant, subscription_id);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// `tenant \0 subscription-id \0` — prefix of one subscription's events.
pub fn event_prefix(tenant: &str, subscription_id: &str) -> Vec<u8> {
    let mut k = subscription(tenant, subscription_id);
    k.push(SEP);
    k
}

/// `tenant \0 message-id` — key of the `messages` tree.
pub fn message(tenant: &str, message_id: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), message_id.as_bytes()])
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

/// Encodes a u64 counter value.
pub fn encode_u64(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a u64 counter value (missing or short values read as 0).
pub fn decode_u64(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_sort_by_version_numerically() {
        let a = history("r4", "Task", "1", 9);
        let b = history("r4", "Task", "1", 10);
        assert!(a < b);
        assert!(a.starts_with(&history_prefix("r4", "Task", "1")));
    }

    #[test]
    fn type_prefix_does_not_match_longer_type_names() {
        let k = resource("r4", "TaskX", "1");
        assert!(!k.starts_with(&resource_type_prefix("r4", "Task")));
        assert!(resource("r4", "Task", "1").starts_with(&resource_type_prefix("r4", "Task")));
    }
}
