//! Owns the search index's key encoding: the keys a resource is filed under, and the key ranges a
//! criterion can be answered from. Both come from the same registered definitions and the same
//! target extraction the matcher uses (`matching.rs`), so the index can only narrow: every
//! resource the matcher accepts for an indexable criterion lies in one of the criterion's ranges.
//! The server still evaluates the whole query on each candidate; extra candidates cost time,
//! never correctness.
//!
//! A key is `code \0 tag payload`; the store appends `\0 id` and prefixes tenant and type. Tags:
//! `t` token (`code \0` then `|system` when the target has one), `i` a reference's bare id
//! (followed by `\0 Type` for a plain relative reference `Type/id`, filed under that key alone),
//! `r` any other reference string (as written, and as `Type/id` with its base and version forms),
//! `u` a uri, `s` a string leaf (lowercased, accents removed), `S`/`E` the start/end of a date
//! target's range (8 bytes, ordered), `W` a date target whose range is inverted (every date
//! query reads those). Components are cut at [`MAX_COMPONENT`] bytes on both sides, so a cut
//! key still matches by prefix.

use super::matching::{
    cached_path, normalize, string_leaves, strip_canonical_version, target_ranges, token_candidates,
};
use super::{Criterion, Modifier, ParamType, Prefix, Registry, SearchParamDef, SearchValue};
use crate::FhirVersion;
use crate::date::DateRange;
use crate::fhirpath::Context;
use crate::reference;
use serde_json::Value;
use std::borrow::Cow;

/// Version of this encoding; part of [`fingerprint`], so a change re-indexes stored data.
pub const INDEX_FORMAT: u32 = 3;

/// Which registered parameters the index files: for a resource type listed, only the codes
/// listed; for any other type, every token, reference, string, date and uri parameter. A
/// criterion on a parameter outside the scope is left to the scan ([`criterion_ranges`] is
/// `None` for it), so narrowing the scope never changes an answer, only which searches are
/// fast and what each write costs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexScope {
    only: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl IndexScope {
    /// Every registered parameter.
    pub fn all() -> IndexScope {
        IndexScope::default()
    }

    /// Only `codes` for each listed type (other types: every parameter).
    pub fn only<I, C>(types: I) -> IndexScope
    where
        I: IntoIterator<Item = (String, C)>,
        C: IntoIterator<Item = String>,
    {
        IndexScope {
            only: types
                .into_iter()
                .map(|(t, codes)| (t, codes.into_iter().collect()))
                .collect(),
        }
    }

    /// Whether parameter `code` of `resource_type` is filed.
    pub fn covers(&self, resource_type: &str, code: &str) -> bool {
        self.only
            .get(resource_type)
            .is_none_or(|codes| codes.contains(code))
    }

    /// The listed types and codes, in order (empty: every parameter).
    pub fn restricted(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &str>)> {
        self.only
            .iter()
            .map(|(t, codes)| (t.as_str(), codes.iter().map(String::as_str)))
    }

    /// A stable description, part of the index's fingerprint.
    pub fn describe(&self) -> String {
        if self.only.is_empty() {
            return "all".into();
        }
        self.restricted()
            .map(|(t, codes)| format!("{t}: {}", codes.collect::<Vec<_>>().join(",")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Longest component (code, system, value) kept in a key, in bytes.
pub const MAX_COMPONENT: usize = 96;

const SEP: u8 = 0;

/// A half-open range `[start, end)` of index keys (relative to tenant and type, without the id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// First key in the range.
    pub start: Vec<u8>,
    /// First key after the range.
    pub end: Vec<u8>,
}

impl KeyRange {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: Vec<u8>) -> KeyRange {
        let end = successor(&prefix);
        KeyRange { start: prefix, end }
    }
}

/// The smallest byte string greater than every string starting with `prefix`.
fn successor(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

fn is_indexed(kind: ParamType) -> bool {
    matches!(
        kind,
        ParamType::Token
            | ParamType::Reference
            | ParamType::String
            | ParamType::Date
            | ParamType::Uri
    )
}

fn cut(s: &[u8]) -> &[u8] {
    &s[..s.len().min(MAX_COMPONENT)]
}

fn head(code: &str, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(code.len() + 48);
    k.extend_from_slice(code.as_bytes());
    k.push(SEP);
    k.push(tag);
    k
}

fn key(code: &str, tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut k = head(code, tag);
    k.extend_from_slice(cut(payload));
    k
}

fn token_key(code: &str, system: Option<&str>, value: &str) -> Vec<u8> {
    let mut k = key(code, b't', value.as_bytes());
    k.push(SEP);
    if let Some(s) = system {
        k.push(b'|');
        k.extend_from_slice(cut(s.as_bytes()));
    }
    k
}

/// Big-endian with the sign bit flipped: byte order is numeric order.
fn ordered(n: i64) -> [u8; 8] {
    ((n as u64) ^ (1 << 63)).to_be_bytes()
}

/// The keys `resource` is filed under, for every token, reference, string, date and uri
/// parameter registered for its type in `version` that `scope` covers. Sorted and without
/// duplicates.
pub fn resource_keys(version: FhirVersion, resource: &Value, scope: &IndexScope) -> Vec<Vec<u8>> {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let ctx = Context::on(resource);
    for def in Registry::for_version(version).for_resource(rt) {
        // `_id` is not filed: resources are stored by id, and search reads them directly.
        if !is_indexed(def.kind) || !scope.covers(rt, &def.code) || def.code == "_id" {
            continue;
        }
        let Some(path) = cached_path(def, rt) else {
            continue;
        };
        let Ok(targets) = path.evaluate_refs(&ctx) else {
            continue;
        };
        for t in targets.iter().map(Cow::as_ref) {
            target_keys(def, t, &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn target_keys(def: &SearchParamDef, t: &Value, out: &mut Vec<Vec<u8>>) {
    let code = def.code.as_str();
    match def.kind {
        ParamType::Token => {
            for (system, value) in token_candidates(t) {
                out.push(token_key(code, system.as_deref(), &value));
            }
        }
        ParamType::Reference => reference_keys(code, t, out),
        ParamType::String => {
            let mut leaves = Vec::new();
            string_leaves(t, &mut leaves);
            for l in leaves {
                out.push(key(code, b's', normalize(l).as_bytes()));
            }
        }
        ParamType::Uri => {
            if let Some(u) = t.as_str() {
                out.push(key(code, b'u', u.as_bytes()));
            }
        }
        ParamType::Date => {
            for r in target_ranges(t) {
                if r.start > r.end {
                    out.push(head(code, b'W'));
                } else {
                    out.push(key(code, b'S', &ordered(r.start)));
                    out.push(key(code, b'E', &ordered(r.end)));
                }
            }
        }
        _ => {}
    }
}

fn reference_keys(code: &str, t: &Value, out: &mut Vec<Vec<u8>>) {
    let refstr = match t {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("reference").and_then(Value::as_str),
        _ => None,
    };
    let Some(r) = refstr else { return };
    let plain = strip_canonical_version(r);
    let p = reference::parse(plain);
    if let (None, None, Some(t), Some(id)) = (&p.base, &p.version, &p.resource_type, &p.id)
        && plain.len() == t.len() + 1 + id.len()
    {
        // A plain `Type/id` (most references): one key answers both a typed criterion
        // (exactly this key) and a bare-id one (the key's `i id` prefix).
        out.push(typed_id_key(code, t, id));
        return;
    }
    out.push(key(code, b'r', plain.as_bytes()));
    if p.is_contained() {
        return;
    }
    if let Some(id) = &p.id {
        // Every reference with an id, whatever its base: a bare-id criterion only matches
        // relative ones (the matcher decides), and [`reference_id_range`] wants them all.
        out.push(key(code, b'i', id.as_bytes()));
        if let Some(rel) = p.relative() {
            let prefix = p
                .base
                .as_deref()
                .map(|b| format!("{b}/"))
                .unwrap_or_default();
            out.push(key(code, b'r', format!("{prefix}{rel}").as_bytes()));
            if let Some(v) = &p.version {
                out.push(key(
                    code,
                    b'r',
                    format!("{prefix}{rel}/_history/{v}").as_bytes(),
                ));
            }
        }
    }
}

/// The key of a plain relative reference `Type/id`: `i id \0 Type`, under the bare-id key's
/// prefix (see [`reference_keys`]).
fn typed_id_key(code: &str, resource_type: &str, id: &str) -> Vec<u8> {
    let mut k = key(code, b'i', id.as_bytes());
    k.push(SEP);
    k.extend_from_slice(cut(resource_type.as_bytes()));
    k
}

/// The keys of every reference of parameter `code` to a resource with logical id `id`, of any
/// type and on any server (a superset for callers that judge the references themselves, such as
/// the Tasks that point at a ServiceRequest).
pub fn reference_id_range(code: &str, id: &str) -> KeyRange {
    exact(key(code, b'i', id.as_bytes()))
}

fn exact(k: Vec<u8>) -> KeyRange {
    let mut k = k;
    k.push(SEP);
    KeyRange::prefix(k)
}

/// The key ranges holding every resource that can satisfy `criterion` (`None` when the index
/// cannot answer it: `_id` (not filed: resources are stored by id), `:not`, `:missing`, `:contains`, `:text`, `:of-type`, `:identifier`,
/// `:above`, `system|` tokens, `ne`/`ap` dates, number and quantity parameters).
pub fn criterion_ranges(criterion: &Criterion) -> Option<Vec<KeyRange>> {
    if !is_indexed(criterion.param.kind) || criterion.param.code == "_id" {
        return None;
    }
    let code = criterion.param.code.as_str();
    let m = criterion.modifier.as_ref();
    let mut out = Vec::new();
    for v in &criterion.values {
        match (criterion.param.kind, m, v) {
            (ParamType::Token, None, SearchValue::Token { system, code: c }) => {
                let c = c.as_deref()?;
                match system.as_deref() {
                    None => out.push(KeyRange::prefix(token_key(code, None, c))),
                    Some("") => out.push(exact(token_key(code, None, c))),
                    Some(s) => out.push(exact(token_key(code, Some(s), c))),
                }
            }
            (ParamType::Reference, None | Some(Modifier::Type(_)), SearchValue::Reference(r)) => {
                match (&r.resource_type, &r.id, &r.base) {
                    (_, None, Some(b)) => {
                        out.push(exact(key(
                            code,
                            b'r',
                            strip_canonical_version(b).as_bytes(),
                        )));
                    }
                    (Some(t), Some(id), base) => {
                        let rel = reference::Reference {
                            base: None,
                            ..r.clone()
                        }
                        .to_string();
                        out.push(exact(key(code, b'r', rel.as_bytes())));
                        if r.version.is_none() {
                            // Plain relative references are filed under this key instead.
                            out.push(exact(typed_id_key(code, t, id)));
                        }
                        if base.is_some() {
                            out.push(exact(key(code, b'r', r.to_string().as_bytes())));
                        }
                    }
                    (None, Some(id), None) if r.version.is_none() => {
                        out.push(exact(key(code, b'i', id.as_bytes())));
                    }
                    _ => return None,
                }
            }
            (ParamType::String, None | Some(Modifier::Exact), SearchValue::String(s)) => {
                out.push(KeyRange::prefix(key(code, b's', normalize(s).as_bytes())));
            }
            (ParamType::Uri, None, SearchValue::Uri(u)) => {
                out.push(exact(key(code, b'u', u.as_bytes())));
            }
            (ParamType::Uri, Some(Modifier::Below), SearchValue::Uri(u)) => {
                out.push(KeyRange::prefix(key(code, b'u', u.as_bytes())));
            }
            (ParamType::Date, None, SearchValue::Date { prefix, range }) => {
                out.push(date_range(code, *prefix, range)?);
                out.push(KeyRange::prefix(head(code, b'W')));
            }
            _ => return None,
        }
    }
    out.sort_by(|a, b| a.start.cmp(&b.start));
    out.dedup();
    Some(out)
}

/// Keys of the date targets a prefix can accept, by bound (see `matching::date_matches`: a
/// target range is never inverted here, those are under `W`).
fn date_range(code: &str, prefix: Prefix, s: &DateRange) -> Option<KeyRange> {
    let (tag, lo, hi) = match prefix {
        // s contains t: t.start in [s.start, t.end] and t.end <= s.end.
        Prefix::Eq => (b'S', s.start, s.end),
        Prefix::Gt => (b'E', s.end, i64::MAX),
        Prefix::Lt => (b'S', i64::MIN, s.start),
        // t.end > s.end, or s contains t (then t.end >= t.start >= s.start).
        Prefix::Ge => (b'E', s.start, i64::MAX),
        Prefix::Le => (b'S', i64::MIN, s.end),
        Prefix::Sa => (b'S', s.end, i64::MAX),
        Prefix::Eb => (b'E', i64::MIN, s.start),
        Prefix::Ne | Prefix::Ap => return None,
    };
    let start = key(code, tag, &ordered(lo));
    let end = match hi.checked_add(1) {
        Some(next) => key(code, tag, &ordered(next)),
        None => successor(&head(code, tag)),
    };
    Some(KeyRange { start, end })
}

/// Identifies what [`resource_keys`] files for `version`: the encoding's [`INDEX_FORMAT`] and
/// every indexed definition (code, type, bases, expression). Stored with the index; a different
/// fingerprint at start-up means the index is rebuilt.
pub fn fingerprint(version: FhirVersion) -> String {
    // FNV-1a: stable across Rust releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for def in Registry::for_version(version).defs.iter() {
        if !is_indexed(def.kind) {
            continue;
        }
        feed(def.code.as_bytes());
        feed(format!("{:?}", def.kind).as_bytes());
        for b in &def.base {
            feed(b.as_bytes());
        }
        feed(def.expression.as_deref().unwrap_or_default().as_bytes());
    }
    format!("format {INDEX_FORMAT}, definitions {h:016x}")
}
