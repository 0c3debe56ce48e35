//! Owns search-semantics matching of a resource against one criterion and the equality-index
//! keys of resources and criteria.

use super::{Criterion, Modifier, ParamType, Prefix, SearchParamDef, SearchValue, compile_path};
use crate::date::{DateRange, parse_range};
use crate::fhirpath::{Context, Expression};
use crate::reference::{self, Reference};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// Does `resource` satisfy the criterion (search semantics)? All criteria of a query are ANDed
/// by the caller. A resource of another type than the criterion's never matches.
pub fn matches(criterion: &Criterion, resource: &Value) -> Result<bool, crate::FhirError> {
    if resource.get("resourceType").and_then(Value::as_str)
        != Some(criterion.resource_type.as_str())
    {
        return Ok(false);
    }
    let compiled;
    let path = match &criterion.path {
        Some(p) => p,
        None => {
            compiled = compile_path(&criterion.param, &criterion.resource_type)?;
            &compiled
        }
    };
    let targets = path.evaluate_refs(&Context::on(resource))?;
    let kind = criterion.param.kind;
    let m = criterion.modifier.as_ref();
    let any = |v: &SearchValue| targets.iter().any(|t| value_matches(kind, m, v, t));
    Ok(match m {
        Some(Modifier::Missing) => criterion.values.iter().any(|v| match v {
            SearchValue::Missing(b) => targets.is_empty() == *b,
            _ => false,
        }),
        Some(Modifier::Not) => !criterion.values.iter().any(any),
        _ => criterion.values.iter().any(any),
    })
}

fn value_matches(kind: ParamType, m: Option<&Modifier>, v: &SearchValue, t: &Value) -> bool {
    match (kind, v) {
        (ParamType::Token, SearchValue::String(text)) => token_text(t, text),
        (
            ParamType::Token,
            SearchValue::OfType {
                system,
                code,
                value,
            },
        ) => {
            t.get("value").and_then(Value::as_str) == Some(value.as_str())
                && codings(t.get("type").unwrap_or(&Value::Null))
                    .iter()
                    .any(|(s, c)| s.as_deref() == Some(system.as_str()) && c == code)
        }
        (ParamType::Token, SearchValue::Token { system, code }) => token_candidates(t)
            .iter()
            .any(|(cs, cc)| token_eq(system.as_deref(), code.as_deref(), cs.as_deref(), cc)),
        (ParamType::Reference, SearchValue::Token { system, code }) => {
            // :identifier
            let Some(id) = t.get("identifier") else {
                return false;
            };
            token_candidates(id)
                .iter()
                .any(|(cs, cc)| token_eq(system.as_deref(), code.as_deref(), cs.as_deref(), cc))
        }
        (ParamType::Reference, SearchValue::Reference(r)) => reference_matches(r, t),
        (ParamType::String, SearchValue::String(s)) => string_matches(m, s, t),
        (ParamType::Uri, SearchValue::Uri(u)) => t.as_str().is_some_and(|x| match m {
            Some(Modifier::Below) => x.starts_with(u.as_str()),
            Some(Modifier::Above) => u.starts_with(x),
            _ => x == u,
        }),
        (ParamType::Date, SearchValue::Date { prefix, range }) => target_ranges(t)
            .iter()
            .any(|tr| date_matches(*prefix, range, tr)),
        (
            ParamType::Number,
            SearchValue::Number {
                prefix,
                value,
                precision,
            },
        ) => number_of(t).is_some_and(|x| number_matches(*prefix, *value, *precision, x)),
        (
            ParamType::Quantity,
            SearchValue::Quantity {
                prefix,
                value,
                precision,
                system,
                code,
            },
        ) => {
            let Some(x) = t.get("value").and_then(number_of) else {
                return false;
            };
            let sys_ok = system
                .as_deref()
                .is_none_or(|s| t.get("system").and_then(Value::as_str) == Some(s));
            let code_ok = code.as_deref().is_none_or(|c| {
                t.get("code").and_then(Value::as_str) == Some(c)
                    || (system.is_none() && t.get("unit").and_then(Value::as_str) == Some(c))
            });
            sys_ok && code_ok && number_matches(*prefix, *value, *precision, x)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// token
// ---------------------------------------------------------------------------------------------

const CONTACT_SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];

fn codings(cc: &Value) -> Vec<(Option<String>, String)> {
    cc.get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let code = c.get("code").and_then(Value::as_str)?;
            Some((
                c.get("system").and_then(Value::as_str).map(String::from),
                code.to_string(),
            ))
        })
        .collect()
}

/// (system, code) pairs a token target offers. Primitives (code, string, boolean, id) have no
/// system.
pub(super) fn token_candidates(t: &Value) -> Vec<(Option<String>, String)> {
    match t {
        Value::String(s) => vec![(None, s.clone())],
        Value::Bool(b) => vec![(None, b.to_string())],
        Value::Number(n) => vec![(None, n.to_string())],
        Value::Object(o) => {
            if let Some(concept) = o.get("concept") {
                return token_candidates(concept); // CodeableReference
            }
            if o.contains_key("coding") {
                return codings(t);
            }
            let system = o.get("system").and_then(Value::as_str);
            if let Some(code) = o.get("code").and_then(Value::as_str) {
                return vec![(system.map(String::from), code.to_string())]; // Coding, Quantity
            }
            if let Some(value) = o.get("value").and_then(Value::as_str) {
                // Identifier (system is a URI) or ContactPoint (system is phone/email/…).
                let system = system.filter(|s| !CONTACT_SYSTEMS.contains(s));
                return vec![(system.map(String::from), value.to_string())];
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn token_eq(system: Option<&str>, code: Option<&str>, cs: Option<&str>, cc: &str) -> bool {
    let code_ok = code.is_none_or(|c| c == cc);
    let system_ok = match system {
        None => true,
        Some("") => cs.is_none(),
        Some(s) => cs == Some(s),
    };
    code_ok && system_ok && (code.is_some() || system.is_some_and(|s| !s.is_empty()))
}

fn token_text(t: &Value, text: &str) -> bool {
    let mut texts: Vec<&str> = Vec::new();
    let cc = t.get("concept").unwrap_or(t);
    if let Some(s) = cc.get("text").and_then(Value::as_str) {
        texts.push(s);
    }
    if let Some(s) = cc.get("display").and_then(Value::as_str) {
        texts.push(s);
    }
    for c in cc
        .get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(s) = c.get("display").and_then(Value::as_str) {
            texts.push(s);
        }
    }
    if let Some(s) = cc
        .get("type")
        .and_then(|ty| ty.get("text"))
        .and_then(Value::as_str)
    {
        texts.push(s);
    }
    let needle = normalize(text);
    texts
        .iter()
        .any(|s| normalize(s).starts_with(&needle) || normalize(s).contains(&format!(" {needle}")))
}

// ---------------------------------------------------------------------------------------------
// reference
// ---------------------------------------------------------------------------------------------

pub(super) fn strip_canonical_version(s: &str) -> &str {
    s.split_once('|').map_or(s, |(u, _)| u)
}

fn reference_matches(sv: &Reference, t: &Value) -> bool {
    let (refstr, declared_type) = match t {
        Value::String(s) => (Some(s.as_str()), None),
        Value::Object(o) => (
            o.get("reference").and_then(Value::as_str),
            o.get("type").and_then(Value::as_str),
        ),
        _ => (None, None),
    };
    let Some(refstr) = refstr else { return false };
    // URL / URN / canonical search values: compare the whole string.
    if sv.id.is_none() {
        return sv
            .base
            .as_deref()
            .is_some_and(|b| strip_canonical_version(b) == strip_canonical_version(refstr));
    }
    let tr = reference::parse(strip_canonical_version(refstr));
    if tr.is_contained() || tr.id != sv.id {
        return false;
    }
    if let Some(ty) = &sv.resource_type {
        let target_type = tr.resource_type.as_deref().or(declared_type);
        if target_type != Some(ty.as_str()) {
            return false;
        }
    }
    if sv.version.is_some() && tr.version != sv.version {
        return false;
    }
    match (&sv.base, &tr.base) {
        (_, None) => true,
        (Some(a), Some(b)) => a == b,
        (None, Some(_)) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// string
// ---------------------------------------------------------------------------------------------

/// Lowercases and removes common Latin diacritics (search's default string normalisation).
pub(crate) fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => out.push('a'),
            'ç' | 'ć' | 'č' | 'ĉ' | 'ċ' => out.push('c'),
            'ď' | 'đ' => out.push('d'),
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => out.push('e'),
            'ĝ' | 'ğ' | 'ġ' | 'ģ' => out.push('g'),
            'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => out.push('i'),
            'ñ' | 'ń' | 'ņ' | 'ň' => out.push('n'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => out.push('o'),
            'ŕ' | 'ř' => out.push('r'),
            'ś' | 'ş' | 'š' => out.push('s'),
            'ţ' | 'ť' => out.push('t'),
            'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => out.push('u'),
            'ý' | 'ÿ' => out.push('y'),
            'ź' | 'ż' | 'ž' => out.push('z'),
            'ł' => out.push('l'),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'ß' => out.push_str("ss"),
            c if ('\u{300}'..='\u{36f}').contains(&c) => {} // combining marks
            c => out.push(c),
        }
    }
    out
}

const STRING_SKIP: &[&str] = &[
    "use",
    "period",
    "id",
    "extension",
    "system",
    "type",
    "code",
    "url",
];

pub(super) fn string_leaves<'v>(t: &'v Value, out: &mut Vec<&'v str>) {
    match t {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| string_leaves(x, out)),
        Value::Object(o) => {
            for (k, v) in o {
                if !k.starts_with('_') && !STRING_SKIP.contains(&k.as_str()) {
                    string_leaves(v, out);
                }
            }
        }
        _ => {}
    }
}

fn string_matches(m: Option<&Modifier>, s: &str, t: &Value) -> bool {
    let mut leaves = Vec::new();
    string_leaves(t, &mut leaves);
    match m {
        Some(Modifier::Exact) => leaves.contains(&s),
        Some(Modifier::Contains) => {
            let n = normalize(s);
            leaves.iter().any(|l| normalize(l).contains(&n))
        }
        _ => {
            let n = normalize(s);
            leaves.iter().any(|l| normalize(l).starts_with(&n))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// date and number
// ---------------------------------------------------------------------------------------------

pub(super) fn target_ranges(t: &Value) -> Vec<DateRange> {
    match t {
        Value::String(s) => parse_range(s).map(|r| r.0).into_iter().collect(),
        Value::Object(o) => {
            if let Some(events) = o.get("event").and_then(Value::as_array) {
                return events.iter().flat_map(target_ranges).collect(); // Timing
            }
            let start = o.get("start").and_then(Value::as_str).and_then(parse_range);
            let end = o.get("end").and_then(Value::as_str).and_then(parse_range);
            if start.is_none() && end.is_none() {
                return Vec::new();
            }
            vec![DateRange {
                start: start.map_or(i64::MIN, |r| r.0.start),
                end: end.map_or(i64::MAX, |r| r.0.end),
            }]
        }
        _ => Vec::new(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Search-page range semantics of a prefix: `s` is the search value's range, `t` the target's.
pub(crate) fn date_matches(prefix: Prefix, s: &DateRange, t: &DateRange) -> bool {
    match prefix {
        Prefix::Eq => s.contains(t),
        Prefix::Ne => !s.contains(t),
        Prefix::Gt => t.end > s.end,
        Prefix::Lt => t.start < s.start,
        Prefix::Ge => t.end > s.end || s.contains(t),
        Prefix::Le => t.start < s.start || s.contains(t),
        Prefix::Sa => t.start >= s.end,
        Prefix::Eb => t.end <= s.start,
        Prefix::Ap => {
            // 10% of the gap between now and the value, at least one day.
            let gap = (now_ms().saturating_sub(s.start)).unsigned_abs() / 10;
            let slack = i64::try_from(gap).unwrap_or(i64::MAX).max(86_400_000);
            let widened = DateRange {
                start: s.start.saturating_sub(slack),
                end: s.end.saturating_add(slack),
            };
            widened.overlaps(t)
        }
    }
}

pub(super) fn number_of(t: &Value) -> Option<f64> {
    match t {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn number_matches(prefix: Prefix, v: f64, precision: f64, x: f64) -> bool {
    match prefix {
        Prefix::Eq => x >= v - precision && x < v + precision,
        Prefix::Ne => !(x >= v - precision && x < v + precision),
        Prefix::Gt | Prefix::Sa => x > v,
        Prefix::Lt | Prefix::Eb => x < v,
        Prefix::Ge => x >= v,
        Prefix::Le => x <= v,
        Prefix::Ap => (x - v).abs() <= (v.abs() * 0.1).max(precision),
    }
}

// ---------------------------------------------------------------------------------------------
// index keys
// ---------------------------------------------------------------------------------------------

/// The parameter's expression compiled for one resource type, compiled once per process.
/// Read-mostly: lookups borrow the key (no allocation) under a shared lock, so concurrent
/// writers matching in parallel do not serialise here.
pub(super) fn cached_path(def: &SearchParamDef, resource_type: &str) -> Option<Arc<Expression>> {
    type Cache = RwLock<HashMap<String, HashMap<String, Option<Arc<Expression>>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let expression = def.expression.as_deref()?;
    let cache = CACHE.get_or_init(Cache::default);
    if let Ok(guard) = cache.read()
        && let Some(hit) = guard.get(expression).and_then(|m| m.get(resource_type))
    {
        return hit.clone();
    }
    let compiled = compile_path(def, resource_type).ok().map(Arc::new);
    if let Ok(mut guard) = cache.write() {
        guard
            .entry(expression.to_owned())
            .or_default()
            .insert(resource_type.to_owned(), compiled.clone());
    }
    compiled
}

fn token_keys(cs: Option<&str>, cc: &str, out: &mut Vec<String>) {
    out.push(cc.to_string());
    match cs {
        Some(s) => {
            out.push(format!("{s}|{cc}"));
            out.push(format!("{s}|"));
        }
        None => out.push(format!("|{cc}")),
    }
}

fn reference_keys(t: &Value, out: &mut Vec<String>) {
    let refstr = match t {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("reference").and_then(Value::as_str),
        _ => None,
    };
    let Some(r) = refstr else { return };
    let plain = strip_canonical_version(r);
    out.push(plain.to_string());
    let p = reference::parse(plain);
    if let (Some(ty), Some(id)) = (&p.resource_type, &p.id) {
        if p.is_contained() {
            return;
        }
        let prefix = p
            .base
            .as_deref()
            .map(|b| format!("{b}/"))
            .unwrap_or_default();
        out.push(format!("{prefix}{ty}/{id}"));
        if let Some(v) = &p.version {
            out.push(format!("{prefix}{ty}/{id}/_history/{v}"));
        }
    }
}

/// Values an equality index can key on, for a resource and a token or reference parameter (other
/// types give no keys). Token targets give `code`, and `system|code` plus `system|` when they
/// have a system or `|code` when they have none; reference targets give the reference string and
/// `Type/id` (with the base kept for absolute references, plus the `_history` form for
/// version-specific ones). A criterion matches the resource exactly when its
/// [`index_keys_of_criterion`] share a key with these.
pub fn index_keys(def: &SearchParamDef, resource: &Value) -> Vec<String> {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    if !matches!(def.kind, ParamType::Token | ParamType::Reference) {
        return Vec::new();
    }
    let Some(path) = cached_path(def, rt) else {
        return Vec::new();
    };
    let Ok(targets) = path.evaluate_refs(&Context::on(resource)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in targets.iter().map(Cow::as_ref) {
        match def.kind {
            ParamType::Token => {
                for (cs, cc) in token_candidates(t) {
                    token_keys(cs.as_deref(), &cc, &mut out);
                }
            }
            _ => reference_keys(t, &mut out),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The keys an equality criterion would match (`None` when it is not an indexable equality:
/// modifiers other than `:[Type]`, bare ids of any type, other parameter types).
pub fn index_keys_of_criterion(criterion: &Criterion) -> Option<Vec<String>> {
    match (&criterion.modifier, criterion.param.kind) {
        (None, ParamType::Token | ParamType::Reference)
        | (Some(Modifier::Type(_)), ParamType::Reference) => {}
        _ => return None,
    }
    let mut out = Vec::new();
    for v in &criterion.values {
        match v {
            SearchValue::Token { system, code } => match (system.as_deref(), code) {
                (None, Some(c)) => out.push(c.clone()),
                (Some(""), Some(c)) => out.push(format!("|{c}")),
                (Some(s), Some(c)) => out.push(format!("{s}|{c}")),
                (Some(s), None) if !s.is_empty() => out.push(format!("{s}|")),
                _ => return None,
            },
            SearchValue::Reference(r) => match (&r.resource_type, &r.id) {
                (Some(_), Some(_)) => {
                    let rel = super::Reference {
                        base: None,
                        ..r.clone()
                    }
                    .to_string();
                    out.push(rel.clone());
                    if r.base.is_some() {
                        out.push(r.to_string());
                    }
                }
                (None, None) => out.push(strip_canonical_version(r.base.as_deref()?).to_string()),
                _ => return None,
            },
            _ => return None,
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}
