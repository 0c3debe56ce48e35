//! Owns search-parameter definitions (embedded HL7 bundles for R4, R4B and R5), parsing of search
//! criteria, search-semantics matching of a resource against a criterion, the matcher's equality
//! keys, and the search index's keys ([`index`]).

pub mod index;
#[cfg(test)]
mod index_tests;
mod matching;
pub mod result;
#[cfg(test)]
mod tests;

pub use matching::{index_keys, index_keys_of_criterion, matches};

use crate::date::{DateRange, parse_range};
use crate::fhirpath::{self, Expression};
use crate::reference::Reference;
use crate::{FhirError, FhirVersion, is_resource_type};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Search parameter type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// token
    Token,
    /// reference
    Reference,
    /// string
    String,
    /// date
    Date,
    /// uri
    Uri,
    /// number
    Number,
    /// quantity
    Quantity,
    /// composite
    Composite,
    /// special
    Special,
}

/// One SearchParameter definition.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchParamDef {
    /// The parameter code used in queries.
    pub code: String,
    /// Canonical URL of the definition.
    pub url: String,
    /// Resource types it applies to (`Resource`/`DomainResource` for all).
    pub base: Vec<String>,
    /// Parameter type.
    pub kind: ParamType,
    /// FHIRPath expression (multi-resource union as published).
    pub expression: Option<String>,
    /// Target resource types of a reference parameter.
    pub targets: Vec<String>,
}

/// The search parameters of one FHIR version.
#[derive(Debug)]
pub struct Registry {
    defs: Vec<SearchParamDef>,
    /// base resource type → indices into `defs`.
    by_base: HashMap<String, Vec<usize>>,
    /// Per resource type, the definitions that apply (resolved once: every write's validation
    /// asks for them).
    resolved: OnceLock<HashMap<String, Resolved>>,
}

/// The definitions that apply to one resource type.
#[derive(Debug)]
struct Resolved {
    /// Sorted by code.
    sorted: Vec<usize>,
    by_code: HashMap<String, usize>,
}

static R4_BUNDLE: &str = include_str!("../../data/r4/search-parameters-workflow.json");
static R4B_BUNDLE: &str = include_str!("../../data/r4b/search-parameters-workflow.json");
static R5_BUNDLE: &str = include_str!("../../data/r5/search-parameters-workflow.json");
/// Subscription and SubscriptionTopic parameters (core R4/R4B/R5 and the backport's `topic`),
/// written out from the specification's search tables: the workflow extract does not hold them.
/// R4B's are R4's Subscription parameters (the resource did not change) and the SubscriptionTopic
/// parameters R4B and R5 share.
static R4_SUBSCRIPTIONS: &str = include_str!("../../data/r4/search-parameters-subscriptions.json");
static R4B_SUBSCRIPTIONS: &str =
    include_str!("../../data/r4b/search-parameters-subscriptions.json");
static R5_SUBSCRIPTIONS: &str = include_str!("../../data/r5/search-parameters-subscriptions.json");

fn param_type(code: &str) -> Option<ParamType> {
    Some(match code {
        "token" => ParamType::Token,
        "reference" => ParamType::Reference,
        "string" => ParamType::String,
        "date" => ParamType::Date,
        "uri" => ParamType::Uri,
        "number" => ParamType::Number,
        "quantity" => ParamType::Quantity,
        "composite" => ParamType::Composite,
        "special" => ParamType::Special,
        _ => return None,
    })
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Registry {
    /// Builds a registry from a SearchParameter Bundle (or a single SearchParameter).
    /// Entries without code or with an unknown type are skipped.
    pub fn from_bundle(bundle: &Value) -> Registry {
        let resources: Vec<&Value> = match bundle.get("entry").and_then(Value::as_array) {
            Some(entries) => entries.iter().filter_map(|e| e.get("resource")).collect(),
            None => vec![bundle],
        };
        let mut reg = Registry {
            defs: Vec::new(),
            by_base: HashMap::new(),
            resolved: OnceLock::new(),
        };
        for r in resources {
            if r.get("resourceType").and_then(Value::as_str) != Some("SearchParameter") {
                continue;
            }
            let (Some(code), Some(kind)) = (
                r.get("code").and_then(Value::as_str),
                r.get("type").and_then(Value::as_str).and_then(param_type),
            ) else {
                continue;
            };
            let def = SearchParamDef {
                code: code.to_string(),
                url: r
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                base: str_list(&r["base"]),
                kind,
                expression: r
                    .get("expression")
                    .and_then(Value::as_str)
                    .map(String::from),
                targets: str_list(&r["target"]),
            };
            let idx = reg.defs.len();
            for b in &def.base {
                reg.by_base.entry(b.clone()).or_default().push(idx);
            }
            reg.defs.push(def);
        }
        reg
    }

    /// The registry of `v`, parsed once from the embedded HL7 bundle.
    pub fn for_version(v: FhirVersion) -> &'static Registry {
        static R4: OnceLock<Registry> = OnceLock::new();
        static R4B: OnceLock<Registry> = OnceLock::new();
        static R5: OnceLock<Registry> = OnceLock::new();
        let (cell, text, extra) = match v {
            FhirVersion::R4 => (&R4, R4_BUNDLE, R4_SUBSCRIPTIONS),
            FhirVersion::R4B => (&R4B, R4B_BUNDLE, R4B_SUBSCRIPTIONS),
            FhirVersion::R5 => (&R5, R5_BUNDLE, R5_SUBSCRIPTIONS),
        };
        cell.get_or_init(|| {
            let mut reg = Registry::from_bundle(&serde_json::from_str(text).unwrap_or(Value::Null));
            let more = Registry::from_bundle(&serde_json::from_str(extra).unwrap_or(Value::Null));
            for def in more.defs {
                let idx = reg.defs.len();
                for b in &def.base {
                    reg.by_base.entry(b.clone()).or_default().push(idx);
                }
                reg.defs.push(def);
            }
            reg
        })
    }

    fn specific(&self, base: &str, code: &str) -> Option<usize> {
        // When several definitions share a code for a type (a multi-resource one and a
        // type-specific one), the most specific (fewest bases) wins.
        self.by_base
            .get(base)?
            .iter()
            .copied()
            .filter(|&i| self.defs.get(i).is_some_and(|d| d.code == code))
            .min_by_key(|&i| self.defs.get(i).map_or(usize::MAX, |d| d.base.len()))
    }

    fn get_index(&self, resource_type: &str, code: &str) -> Option<usize> {
        self.specific(resource_type, code)
            .or_else(|| self.specific("DomainResource", code))
            .or_else(|| self.specific("Resource", code))
    }

    fn resolve(&self, resource_type: &str) -> Resolved {
        let mut by_code: HashMap<String, usize> = HashMap::new();
        for base in [resource_type, "DomainResource", "Resource"] {
            for &i in self.by_base.get(base).into_iter().flatten() {
                let Some(def) = self.defs.get(i) else {
                    continue;
                };
                if !by_code.contains_key(&def.code) {
                    let chosen = self.get_index(resource_type, &def.code).unwrap_or(i);
                    by_code.insert(def.code.clone(), chosen);
                }
            }
        }
        let mut sorted: Vec<usize> = by_code.values().copied().collect();
        sorted.sort_by(|&a, &b| self.defs[a].code.cmp(&self.defs[b].code));
        Resolved { sorted, by_code }
    }

    fn resolved(&self, resource_type: &str) -> Option<&Resolved> {
        self.resolved
            .get_or_init(|| {
                self.by_base
                    .keys()
                    .map(|t| (t.clone(), self.resolve(t)))
                    .collect()
            })
            .get(resource_type)
    }

    /// The definition of `code` for `resource_type`, including Resource-level ones (`_id`,
    /// `_lastUpdated`, …).
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParamDef> {
        let index = match self.resolved(resource_type) {
            Some(r) => r.by_code.get(code).copied(),
            None => self.get_index(resource_type, code),
        };
        index.and_then(|i| self.defs.get(i))
    }

    /// All definitions that apply to `resource_type` (one per code), sorted by code.
    pub fn for_resource(&self, resource_type: &str) -> Vec<&SearchParamDef> {
        let resolved;
        let r = match self.resolved(resource_type) {
            Some(r) => r,
            None => {
                resolved = self.resolve(resource_type);
                &resolved
            }
        };
        r.sorted.iter().filter_map(|&i| self.defs.get(i)).collect()
    }
}

/// Search modifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Modifier {
    /// :missing
    Missing,
    /// :not
    Not,
    /// :exact
    Exact,
    /// :contains
    Contains,
    /// :text
    Text,
    /// :identifier
    Identifier,
    /// :above
    Above,
    /// :below
    Below,
    /// :in
    In,
    /// :not-in
    NotIn,
    /// :of-type
    OfType,
    /// :\[Type\] on a reference parameter
    Type(String),
}

/// Comparison prefix of date, number and quantity values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Prefix {
    /// eq (default)
    #[default]
    Eq,
    /// ne
    Ne,
    /// gt
    Gt,
    /// lt
    Lt,
    /// ge
    Ge,
    /// le
    Le,
    /// sa
    Sa,
    /// eb
    Eb,
    /// ap
    Ap,
}

/// One parsed search value.
#[derive(Clone, Debug, PartialEq)]
pub enum SearchValue {
    /// token: `code`, `system|code`, `|code` (system `Some("")`), `system|` (code `None`).
    Token {
        /// `None` = any system; `Some("")` = no system.
        system: Option<String>,
        /// `None` = any code in the system.
        code: Option<String>,
    },
    /// reference value: `Type/id`, bare id (type from a `:Type` modifier or none = any type),
    /// `Type/id/_history/v`, absolute URL (base kept) or canonical/URN (whole string as base).
    Reference(Reference),
    /// string value (as given, unescaped).
    String(String),
    /// date value with its prefix and range.
    Date {
        /// Comparison prefix.
        prefix: Prefix,
        /// The range the value denotes.
        range: DateRange,
    },
    /// number value.
    Number {
        /// Comparison prefix.
        prefix: Prefix,
        /// The number.
        value: f64,
        /// Half-width of the implicit precision range (0.5 × 10^-decimals).
        precision: f64,
    },
    /// quantity value `[prefix]number|system|code`.
    Quantity {
        /// Comparison prefix.
        prefix: Prefix,
        /// The number.
        value: f64,
        /// Half-width of the implicit precision range.
        precision: f64,
        /// Unit system, when given.
        system: Option<String>,
        /// Unit code, when given.
        code: Option<String>,
    },
    /// `:missing=true|false`.
    Missing(bool),
    /// `:of-type` value `type-system|type-code|value` for Identifier elements.
    OfType {
        /// Identifier.type coding system.
        system: String,
        /// Identifier.type coding code.
        code: String,
        /// Identifier.value.
        value: String,
    },
    /// uri value.
    Uri(String),
}

/// One search criterion: values are ORed.
#[derive(Clone, Debug)]
pub struct Criterion {
    /// The definition the criterion searches by.
    pub param: SearchParamDef,
    /// The modifier, if any.
    pub modifier: Option<Modifier>,
    /// The values (ORed).
    pub values: Vec<SearchValue>,
    /// The resource type the criterion was parsed for.
    pub resource_type: String,
    /// The parameter's expression restricted to the branches for `resource_type`, compiled.
    pub path: Option<Expression>,
}

/// Result-control parameters: not criteria.
const RESULT_PARAMS: &[&str] = &[
    "_count",
    // Herald's paging offset (its `next`/`previous` links carry it).
    "_offset",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_format",
    "_pretty",
    "_contained",
    "_containedType",
    "_maxresults",
    "_score",
    "_graph",
    "_offset",
];

/// Is `name` (without modifier) a result-control parameter rather than a criterion?
pub fn is_result_parameter(name: &str) -> bool {
    let base = name.split(':').next().unwrap_or(name);
    RESULT_PARAMS.contains(&base)
}

fn invalid(param: &str, value: &str, reason: impl Into<String>) -> FhirError {
    FhirError::InvalidSearchValue {
        param: param.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn unsupported_modifier(param: &str, modifier: &str) -> FhirError {
    FhirError::UnsupportedModifier {
        param: param.into(),
        modifier: modifier.into(),
    }
}

/// Splits on `sep` where it is not escaped with `\`; escapes are kept for later unescaping.
pub(crate) fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Removes search escapes (`\,` `\|` `\$` `\\`).
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_modifier(
    version: FhirVersion,
    def: &SearchParamDef,
    text: &str,
) -> Result<Modifier, FhirError> {
    use ParamType as T;
    let m = match text {
        "missing" => Modifier::Missing,
        "not" => Modifier::Not,
        "exact" => Modifier::Exact,
        "contains" => Modifier::Contains,
        "text" => Modifier::Text,
        "identifier" => Modifier::Identifier,
        "above" => Modifier::Above,
        "below" => Modifier::Below,
        "in" => Modifier::In,
        "not-in" => Modifier::NotIn,
        "of-type" => Modifier::OfType,
        t if is_resource_type(version, t) => Modifier::Type(t.to_string()),
        _ => return Err(unsupported_modifier(&def.code, text)),
    };
    let ok = match (&m, def.kind) {
        (Modifier::Missing, _) => true,
        (Modifier::Not, T::Token | T::Reference) => true,
        (Modifier::Exact | Modifier::Contains, T::String) => true,
        (Modifier::Text, T::Token) => true,
        (Modifier::Identifier, T::Reference) => true,
        (Modifier::Above | Modifier::Below, T::Uri) => true,
        (Modifier::OfType, T::Token) => true,
        (Modifier::Type(t), T::Reference) => {
            def.targets.is_empty() || def.targets.iter().any(|x| x == t)
        }
        // :in / :not-in / hierarchical token and reference searches need terminology services.
        _ => false,
    };
    if ok {
        Ok(m)
    } else {
        Err(unsupported_modifier(&def.code, text))
    }
}

fn parse_prefix(code: &str) -> Option<Prefix> {
    Some(match code {
        "eq" => Prefix::Eq,
        "ne" => Prefix::Ne,
        "gt" => Prefix::Gt,
        "lt" => Prefix::Lt,
        "ge" => Prefix::Ge,
        "le" => Prefix::Le,
        "sa" => Prefix::Sa,
        "eb" => Prefix::Eb,
        "ap" => Prefix::Ap,
        _ => return None,
    })
}

/// Splits a leading comparison prefix off a date/number/quantity value.
fn split_prefix(v: &str) -> (Option<Prefix>, &str) {
    if v.len() > 2
        && v.is_char_boundary(2)
        && let Some(p) = parse_prefix(&v[..2])
    {
        return (Some(p), &v[2..]);
    }
    (None, v)
}

fn parse_decimal(param: &str, raw: &str, text: &str) -> Result<(f64, f64), FhirError> {
    let t = text.trim();
    let ok = !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    let value: f64 = if ok {
        t.parse().map_err(|_| invalid(param, raw, "not a number"))?
    } else {
        return Err(invalid(param, raw, "not a number"));
    };
    let mantissa = t.split(['e', 'E']).next().unwrap_or(t);
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
    let exp: i32 = t
        .split_once(['e', 'E'])
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    let precision = 0.5 * 10f64.powi(exp - i32::try_from(decimals).unwrap_or(0));
    Ok((value, precision))
}

fn parse_value(
    def: &SearchParamDef,
    modifier: Option<&Modifier>,
    comparator: Option<Prefix>,
    raw: &str,
) -> Result<SearchValue, FhirError> {
    let code = def.code.as_str();
    if raw.is_empty() {
        return Err(invalid(code, raw, "empty value"));
    }
    Ok(match def.kind {
        ParamType::Token if modifier == Some(&Modifier::Text) => SearchValue::String(unescape(raw)),
        ParamType::Token if modifier == Some(&Modifier::OfType) => {
            let parts = split_escaped(raw, '|');
            match parts.as_slice() {
                [s, c, v] if !c.is_empty() && !v.is_empty() => SearchValue::OfType {
                    system: unescape(s),
                    code: unescape(c),
                    value: unescape(v),
                },
                _ => return Err(invalid(code, raw, "expected type-system|type-code|value")),
            }
        }
        ParamType::Token => parse_token(code, raw)?,
        ParamType::Reference if modifier == Some(&Modifier::Identifier) => parse_token(code, raw)?,
        ParamType::Reference => {
            let v = unescape(raw);
            let forced = match modifier {
                Some(Modifier::Type(t)) => Some(t.clone()),
                _ => None,
            };
            let r = if v.contains('/') || v.contains(':') {
                let r = crate::reference::parse(&v);
                if r.is_contained() {
                    return Err(invalid(
                        code,
                        raw,
                        "contained references cannot be searched",
                    ));
                }
                if let (Some(f), Some(t)) = (&forced, &r.resource_type)
                    && f != t
                {
                    return Err(invalid(
                        code,
                        raw,
                        format!("type {t} contradicts modifier :{f}"),
                    ));
                }
                if r.id.is_none() && r.base.is_none() {
                    return Err(invalid(code, raw, "not a reference"));
                }
                r
            } else {
                Reference {
                    resource_type: forced,
                    id: Some(v),
                    ..Reference::default()
                }
            };
            if let Some(t) = &r.resource_type
                && r.base.is_none()
                && !def.targets.is_empty()
                && !def.targets.iter().any(|x| x == t)
            {
                return Err(invalid(
                    code,
                    raw,
                    format!("{t} is not a target type of {code}"),
                ));
            }
            SearchValue::Reference(r)
        }
        ParamType::String => SearchValue::String(unescape(raw)),
        ParamType::Uri => SearchValue::Uri(unescape(raw)),
        ParamType::Date => {
            let (p, rest) = match comparator {
                Some(c) => (Some(c), raw),
                None => split_prefix(raw),
            };
            // A '+' of a timezone may have been decoded to a space by form decoding.
            let text = rest.trim().replace(' ', "+");
            let (range, _) = parse_range(&text).ok_or_else(|| {
                invalid(
                    code,
                    raw,
                    "expected YYYY, YYYY-MM, YYYY-MM-DD or a dateTime",
                )
            })?;
            SearchValue::Date {
                prefix: p.unwrap_or_default(),
                range,
            }
        }
        ParamType::Number => {
            let (p, rest) = match comparator {
                Some(c) => (Some(c), raw),
                None => split_prefix(raw),
            };
            let (value, precision) = parse_decimal(code, raw, rest)?;
            SearchValue::Number {
                prefix: p.unwrap_or_default(),
                value,
                precision,
            }
        }
        ParamType::Quantity => {
            let (p, rest) = match comparator {
                Some(c) => (Some(c), raw),
                None => split_prefix(raw),
            };
            let parts = split_escaped(rest, '|');
            let (num, system, unit) = match parts.as_slice() {
                [n] => (n.as_str(), None, None),
                [n, s, c] => (
                    n.as_str(),
                    Some(unescape(s)).filter(|s| !s.is_empty()),
                    Some(unescape(c)).filter(|c| !c.is_empty()),
                ),
                _ => return Err(invalid(code, raw, "expected number[|system|code]")),
            };
            let (value, precision) = parse_decimal(code, raw, num)?;
            SearchValue::Quantity {
                prefix: p.unwrap_or_default(),
                value,
                precision,
                system,
                code: unit,
            }
        }
        ParamType::Composite | ParamType::Special => {
            return Err(FhirError::UnsupportedSearchParameter {
                param: code.into(),
                reason: "composite and special parameters are not supported".into(),
            });
        }
    })
}

fn parse_token(code: &str, raw: &str) -> Result<SearchValue, FhirError> {
    let parts = split_escaped(raw, '|');
    Ok(match parts.as_slice() {
        [c] => SearchValue::Token {
            system: None,
            code: Some(unescape(c)),
        },
        [s, c] if s.is_empty() && c.is_empty() => return Err(invalid(code, raw, "empty token")),
        [s, c] => SearchValue::Token {
            system: Some(unescape(s)),
            code: if c.is_empty() {
                None
            } else {
                Some(unescape(c))
            },
        },
        _ => return Err(invalid(code, raw, "too many '|' (escape as \\|)")),
    })
}

fn compile_path(def: &SearchParamDef, resource_type: &str) -> Result<Expression, FhirError> {
    let Some(text) = def.expression.as_deref() else {
        return Err(FhirError::UnsupportedSearchParameter {
            param: def.code.clone(),
            reason: "the parameter has no FHIRPath expression".into(),
        });
    };
    let full = fhirpath::parse(text)?;
    full.for_resource_type(resource_type)
        .ok_or_else(|| FhirError::UnsupportedSearchParameter {
            param: def.code.clone(),
            reason: format!("its expression has no branch for {resource_type}"),
        })
}

fn build(
    version: FhirVersion,
    resource_type: &str,
    name: &str,
    modifier: Option<&str>,
    comparator: Option<&str>,
    value: &str,
) -> Result<Criterion, FhirError> {
    if !is_resource_type(version, resource_type) {
        return Err(FhirError::UnknownResourceType(resource_type.to_string()));
    }
    if name.contains('.') || name.starts_with("_has") {
        return Err(FhirError::UnsupportedSearchParameter {
            param: name.into(),
            reason: "chained and reverse-chained parameters are not supported".into(),
        });
    }
    let def = Registry::for_version(version)
        .get(resource_type, name)
        .ok_or_else(|| FhirError::UnknownSearchParameter {
            resource_type: resource_type.into(),
            code: name.into(),
        })?;
    if matches!(def.kind, ParamType::Composite | ParamType::Special) || def.code == "_in" {
        return Err(FhirError::UnsupportedSearchParameter {
            param: def.code.clone(),
            reason: "composite, special and list-membership parameters are not supported".into(),
        });
    }
    let modifier = modifier
        .map(|m| parse_modifier(version, def, m))
        .transpose()?;
    let prefix = match comparator {
        None => None,
        Some(c) => {
            let p = parse_prefix(c).ok_or_else(|| unsupported_modifier(&def.code, c))?;
            let ordered = matches!(
                def.kind,
                ParamType::Date | ParamType::Number | ParamType::Quantity
            );
            if !ordered && p != Prefix::Eq {
                return Err(unsupported_modifier(&def.code, c));
            }
            ordered.then_some(p)
        }
    };
    let path = compile_path(def, resource_type)?;
    let values = if modifier == Some(Modifier::Missing) {
        match value {
            "true" => vec![SearchValue::Missing(true)],
            "false" => vec![SearchValue::Missing(false)],
            _ => return Err(invalid(&def.code, value, ":missing takes true or false")),
        }
    } else {
        split_escaped(value, ',')
            .iter()
            .map(|v| parse_value(def, modifier.as_ref(), prefix, v))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(Criterion {
        param: def.clone(),
        modifier,
        values,
        resource_type: resource_type.to_string(),
        path: Some(path),
    })
}

/// Parses one query parameter (name may carry `:modifier`) for `resource_type`. Comma = OR
/// (escaped `\,` kept). Unknown parameter → `UnknownSearchParameter`; bad value →
/// `InvalidSearchValue`; modifier not valid for the type → `UnsupportedModifier`; parameters
/// Herald cannot evaluate (chained, composite, special, no expression) →
/// `UnsupportedSearchParameter`.
pub fn parse_criterion(
    version: FhirVersion,
    resource_type: &str,
    name: &str,
    value: &str,
) -> Result<Criterion, FhirError> {
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    build(version, resource_type, code, modifier, None, value)
}

/// Same as [`parse_criterion`] with an explicit comparator/modifier, as R5 SubscriptionTopic
/// `filterBy` carries them separately (comparator codes eq, ne, gt, lt, ge, le, sa, eb, ap;
/// modifier codes missing, exact, contains, not, text, in, not-in, below, above, type,
/// identifier, of-type, or a resource type name). With modifier `type` the value must be
/// `Type/id`. A comparator other than `eq` on a parameter that is not date, number or quantity
/// is refused.
pub fn parse_filter(
    version: FhirVersion,
    resource_type: &str,
    param: &str,
    comparator: Option<&str>,
    modifier: Option<&str>,
    value: &str,
) -> Result<Criterion, FhirError> {
    let modifier = match modifier {
        Some("type") => {
            let r = crate::reference::parse(value);
            match r.resource_type {
                Some(t) if r.id.is_some() => Some(t),
                _ => {
                    return Err(invalid(
                        param,
                        value,
                        "modifier 'type' needs a Type/id value",
                    ));
                }
            }
        }
        Some(m) => Some(m.to_string()),
        None => None,
    };
    build(
        version,
        resource_type,
        param,
        modifier.as_deref(),
        comparator,
        value,
    )
}

/// ANDed criteria and result-control parameters (`_count`, `_sort`, …) of a query string.
pub type ParsedQuery = (Vec<Criterion>, Vec<(String, String)>);

fn percent_decode(s: &str) -> Result<String, FhirError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| invalid(s, s, "bad percent-encoding"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| invalid(s, s, "not UTF-8 after percent-decoding"))
}

/// Parses a whole query string `a=1&b:not=x` (a leading `?` is ignored; URL-encoded or not)
/// into ANDed criteria. Result-control parameters (`_count`, `_sort`, `_include`, `_summary`,
/// `_elements`, `_total`, `_format`, …) are returned separately, in order. Parameters with an
/// empty value are ignored, as the search page recommends.
pub fn parse_query(
    version: FhirVersion,
    resource_type: &str,
    query: &str,
) -> Result<ParsedQuery, FhirError> {
    let mut criteria = Vec::new();
    let mut control = Vec::new();
    for pair in query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(n)?;
        let value = percent_decode(v)?;
        if is_result_parameter(&name) {
            control.push((name, value));
        } else if !value.is_empty() {
            criteria.push(parse_criterion(version, resource_type, &name, &value)?);
        }
    }
    Ok((criteria, control))
}
