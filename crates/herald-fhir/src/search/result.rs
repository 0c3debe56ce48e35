//! Owns the search result parameters (`_sort`, `_include`, `_revinclude`, `_summary`,
//! `_elements`, `_total`, and the recognised-but-unsupported rest): parsing them, the sort order
//! of resources, and the references an `_include`/`_revinclude` follows. Pure: the server reads
//! the store and applies access rules; this module only says what the parameters mean.
//!
//! A parameter Herald does not support is not an error here: it comes back in
//! [`ResultParams::ignored`] with the reason, so the server can report it (an OperationOutcome
//! entry under lenient handling, 400 under `Prefer: handling=strict`). A value that is malformed
//! (`_summary=maybe`, `_sort=` on nothing) is an error either way.

use super::matching::{cached_path, number_of, string_leaves, target_ranges, token_candidates};
use super::{ParamType, Registry, SearchParamDef, matching::normalize};
use crate::fhirpath::Context;
use crate::{FhirError, FhirVersion, is_resource_type};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;

/// `_summary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryMode {
    /// `true`: the elements the core definitions mark `isSummary` (and the mandatory ones).
    True,
    /// `text`: `text`, `id`, `meta` and the mandatory top-level elements.
    Text,
    /// `data`: everything but `text`.
    Data,
    /// `count`: the number of matches, no entries.
    Count,
    /// `false`: whole resources (the default).
    False,
}

/// `_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalMode {
    /// `none`: no `Bundle.total`.
    None,
    /// `estimate`: Herald's count is exact, so the same as accurate.
    Estimate,
    /// `accurate` (Herald's default).
    Accurate,
}

/// One `_sort` key.
#[derive(Clone, Debug)]
pub struct SortKey {
    /// The search parameter sorted on.
    pub param: SearchParamDef,
    /// `-` prefix.
    pub descending: bool,
}

/// One `_include` (references from the matches) or `_revinclude` (resources referencing them).
#[derive(Clone, Debug)]
pub struct Include {
    /// The resource type that holds the reference (`Task` in `Task:focus`).
    pub source_type: String,
    /// The reference parameters followed (several for `Task:*`).
    pub params: Vec<SearchParamDef>,
    /// Only references to this type (`Task:focus:ServiceRequest`).
    pub target_type: Option<String>,
    /// The value as given, to echo in links.
    pub text: String,
}

/// A result parameter that was recognised but is not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// The parameter as given (`_include:iterate=Task:focus`).
    pub parameter: String,
    /// Why Herald does not apply it.
    pub reason: String,
}

/// The result parameters of one search.
#[derive(Clone, Debug, Default)]
pub struct ResultParams {
    /// `_sort` keys, most significant first.
    pub sort: Vec<SortKey>,
    /// `_include`s.
    pub include: Vec<Include>,
    /// `_revinclude`s.
    pub revinclude: Vec<Include>,
    /// `_summary`.
    pub summary: Option<SummaryMode>,
    /// `_elements` (element names; `Type.name` entries keep the type prefix).
    pub elements: Option<Vec<String>>,
    /// `_total`.
    pub total: Option<TotalMode>,
    /// `_pretty=true`.
    pub pretty: bool,
    /// Recognised parameters that are not applied.
    pub ignored: Vec<Ignored>,
    /// The applied parameters as (name, value), for paging links.
    pub echo: Vec<(String, String)>,
}

impl ResultParams {
    /// Whether the result is a subset of each resource (`_summary` other than false/count, or
    /// `_elements`).
    pub fn subsets(&self) -> bool {
        self.elements.is_some()
            || matches!(
                self.summary,
                Some(SummaryMode::True | SummaryMode::Text | SummaryMode::Data)
            )
    }
}

fn invalid(param: &str, value: &str, reason: impl Into<String>) -> FhirError {
    FhirError::InvalidSearchValue {
        param: param.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Parses the result parameters among `pairs` (criteria are skipped: the caller parses them)
/// for a search on `resource_type`. `_count` and `_offset` are the caller's (paging).
pub fn parse_result_params<'a>(
    version: FhirVersion,
    resource_type: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<ResultParams, FhirError> {
    let mut out = ResultParams::default();
    for (name, value) in pairs {
        let (base, modifier) = match name.split_once(':') {
            Some((b, m)) => (b, Some(m)),
            None => (name, None),
        };
        if !super::is_result_parameter(base) {
            continue;
        }
        let ignore = |out: &mut ResultParams, reason: &str| {
            out.ignored.push(Ignored {
                parameter: format!("{name}={value}"),
                reason: reason.to_owned(),
            });
        };
        if let Some(m) = modifier
            && !matches!(base, "_include" | "_revinclude")
        {
            ignore(&mut out, &format!("{base} takes no modifier (got ':{m}')"));
            continue;
        }
        match base {
            "_count" | "_offset" => {}
            "_sort" => parse_sort(version, resource_type, name, value, &mut out)?,
            "_include" | "_revinclude" => {
                if let Some(m) = modifier {
                    ignore(
                        &mut out,
                        &format!(
                            "{base}:{m} is not supported (includes are followed one level, from the matches)"
                        ),
                    );
                    continue;
                }
                match parse_include(version, resource_type, base == "_revinclude", value)? {
                    Ok(inc) => {
                        out.echo.push((base.to_owned(), value.to_owned()));
                        if base == "_include" {
                            out.include.push(inc);
                        } else {
                            out.revinclude.push(inc);
                        }
                    }
                    Err(reason) => ignore(&mut out, &reason),
                }
            }
            "_summary" => {
                let mode = match value {
                    "true" => SummaryMode::True,
                    "text" => SummaryMode::Text,
                    "data" => SummaryMode::Data,
                    "count" => SummaryMode::Count,
                    "false" => SummaryMode::False,
                    _ => {
                        return Err(invalid(
                            "_summary",
                            value,
                            "expected true, text, data, count or false",
                        ));
                    }
                };
                if out.summary.is_some_and(|s| s != mode) {
                    return Err(invalid(
                        "_summary",
                        value,
                        "given twice with different values",
                    ));
                }
                out.summary = Some(mode);
                out.echo.push(("_summary".to_owned(), value.to_owned()));
            }
            "_elements" => {
                let names: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if names.is_empty() {
                    return Err(invalid("_elements", value, "no element named"));
                }
                // Top-level names, or `Type.name` for one type; a deeper path is not applied.
                let (names, deeper): (Vec<String>, Vec<String>) =
                    names.into_iter().partition(|n| match n.split_once('.') {
                        None => true,
                        Some((t, rest)) => is_resource_type(version, t) && !rest.contains('.'),
                    });
                for n in deeper {
                    ignore(
                        &mut out,
                        &format!("_elements names top-level elements ('{n}' is a path below one)"),
                    );
                }
                if names.is_empty() {
                    continue;
                }
                out.elements.get_or_insert_with(Vec::new).extend(names);
                out.echo.push(("_elements".to_owned(), value.to_owned()));
            }
            "_total" => {
                out.total = Some(match value {
                    "none" => TotalMode::None,
                    "estimate" => TotalMode::Estimate,
                    "accurate" => TotalMode::Accurate,
                    _ => {
                        return Err(invalid(
                            "_total",
                            value,
                            "expected none, estimate or accurate",
                        ));
                    }
                });
                out.echo.push(("_total".to_owned(), value.to_owned()));
            }
            "_format" => {
                let essence = value.split(';').next().unwrap_or("").trim();
                if matches!(
                    essence,
                    "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
                ) {
                    out.echo.push(("_format".to_owned(), value.to_owned()));
                } else {
                    ignore(&mut out, "Herald answers in JSON only");
                }
            }
            "_pretty" => match value {
                "true" => {
                    out.pretty = true;
                    out.echo.push(("_pretty".to_owned(), value.to_owned()));
                }
                "false" => out.echo.push(("_pretty".to_owned(), value.to_owned())),
                _ => return Err(invalid("_pretty", value, "expected true or false")),
            },
            other => ignore(&mut out, &format!("{other} is not supported")),
        }
    }
    if out.summary == Some(SummaryMode::Count) {
        // Nothing is returned to include, sort or subset.
        out.include.clear();
        out.revinclude.clear();
    }
    if out.summary.is_some() && out.elements.is_some() {
        return Err(invalid(
            "_elements",
            "",
            "_summary and _elements cannot be combined",
        ));
    }
    Ok(out)
}

fn parse_sort(
    version: FhirVersion,
    resource_type: &str,
    name: &str,
    value: &str,
    out: &mut ResultParams,
) -> Result<(), FhirError> {
    let registry = Registry::for_version(version);
    let mut applied = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(invalid("_sort", value, "empty sort key"));
        }
        let (code, descending) = match item.strip_prefix('-') {
            Some(c) => (c, true),
            None => (item, false),
        };
        let reason = match registry.get(resource_type, code) {
            None => Some(format!(
                "{code} is not a search parameter of {resource_type}"
            )),
            Some(d) if matches!(d.kind, ParamType::Composite | ParamType::Special) => {
                Some(format!(
                    "{code} is a {:?} parameter, which Herald cannot sort on",
                    d.kind
                ))
            }
            Some(d) if cached_path(d, resource_type).is_none() => Some(format!(
                "{code} has no expression for {resource_type} to sort on"
            )),
            Some(d) => {
                out.sort.push(SortKey {
                    param: d.clone(),
                    descending,
                });
                applied.push(item);
                None
            }
        };
        if let Some(reason) = reason {
            out.ignored.push(Ignored {
                parameter: format!("{name}={item}"),
                reason,
            });
        }
    }
    if !applied.is_empty() {
        out.echo.push(("_sort".to_owned(), applied.join(",")));
    }
    Ok(())
}

/// `Source:param[:Target]` (or `Source:*`). `Ok(Err(reason))` when it is well formed but not
/// something Herald follows.
fn parse_include(
    version: FhirVersion,
    searched: &str,
    reverse: bool,
    value: &str,
) -> Result<Result<Include, String>, FhirError> {
    let parts: Vec<&str> = value.split(':').collect();
    let (source, code, target) = match parts.as_slice() {
        [s, c] => (*s, *c, None),
        [s, c, t] => (*s, *c, Some(*t)),
        _ => {
            return Err(invalid(
                if reverse { "_revinclude" } else { "_include" },
                value,
                "expected SourceType:parameter[:TargetType]",
            ));
        }
    };
    for t in std::iter::once(source).chain(target) {
        if !is_resource_type(version, t) {
            return Ok(Err(format!(
                "{t} is not a resource type of FHIR {}",
                version.fhir_version()
            )));
        }
    }
    if !reverse && source != searched {
        return Ok(Err(format!(
            "_include follows references from the matches ({searched}), not from {source}"
        )));
    }
    if reverse && target.is_some_and(|t| t != searched) {
        return Ok(Err(format!(
            "_revinclude finds resources that reference the matches ({searched}), not {}",
            target.unwrap_or_default()
        )));
    }
    let registry = Registry::for_version(version);
    let params: Vec<SearchParamDef> = if code == "*" {
        include_params(version, source)
            .into_iter()
            .filter(|d| !reverse || d.targets.is_empty() || d.targets.iter().any(|t| t == searched))
            .cloned()
            .collect()
    } else {
        match registry.get(source, code) {
            None => {
                return Ok(Err(format!("{code} is not a search parameter of {source}")));
            }
            Some(d) if d.kind != ParamType::Reference => {
                return Ok(Err(format!("{source}:{code} is not a reference parameter")));
            }
            Some(d) if code.starts_with('_') || cached_path(d, source).is_none() => {
                return Ok(Err(format!("{source}:{code} cannot be followed")));
            }
            Some(d) => vec![d.clone()],
        }
    };
    if let Some(t) = target
        && params
            .iter()
            .all(|d| !d.targets.is_empty() && !d.targets.iter().any(|x| x == t))
    {
        return Ok(Err(format!("{source}:{code} never refers to a {t}")));
    }
    Ok(Ok(Include {
        source_type: source.to_owned(),
        params,
        target_type: target.map(str::to_owned),
        text: value.to_owned(),
    }))
}

/// The reference parameters of `source` that an `_include`/`_revinclude` can follow (those
/// with an expression for the type), sorted by code. The Resource-level ones (`_in`, R5's
/// `_profile`) are not: they name lists and profiles, not the workflow's references.
pub fn include_params(version: FhirVersion, source: &str) -> Vec<&'static SearchParamDef> {
    Registry::for_version(version)
        .for_resource(source)
        .into_iter()
        .filter(|d| {
            d.kind == ParamType::Reference
                && !d.code.starts_with('_')
                && cached_path(d, source).is_some()
        })
        .collect()
}

/// The `Type/id` references an include follows out of `resource` (relative literal references
/// only: Herald holds no other server's resources), each once, in document order.
pub fn include_targets(include: &Include, resource: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    if resource.get("resourceType").and_then(Value::as_str) != Some(include.source_type.as_str()) {
        return out;
    }
    for def in &include.params {
        let Some(path) = cached_path(def, &include.source_type) else {
            continue;
        };
        let Ok(targets) = path.evaluate_refs(&Context::on(resource)) else {
            continue;
        };
        for t in targets.iter().map(Cow::as_ref) {
            let Some(s) = t.get("reference").and_then(Value::as_str) else {
                continue;
            };
            let r = crate::reference::parse(s);
            if r.base.is_some() || r.is_contained() {
                continue;
            }
            let (Some(ty), Some(id)) = (r.resource_type, r.id) else {
                continue;
            };
            if include.target_type.as_ref().is_some_and(|want| *want != ty) {
                continue;
            }
            if !out.iter().any(|(a, b)| *a == ty && *b == id) {
                out.push((ty, id));
            }
        }
    }
    out
}

/// Whether `resource` (of the include's source type) refers, through the include's parameters,
/// to one of `targets` (`Type/id`): the test of a `_revinclude`.
pub fn refers_to_any(include: &Include, resource: &Value, targets: &HashSet<String>) -> bool {
    include_targets(include, resource)
        .iter()
        .any(|(t, id)| targets.contains(&format!("{t}/{id}")))
}

/// A sortable value of one resource for one key.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub enum SortValue {
    /// Numbers and quantities.
    Number(f64),
    /// Dates, as milliseconds.
    Date(i64),
    /// Strings, tokens, references, uris (normalised for strings).
    Text(String),
}

/// The value `resource` sorts by under `key`: the lowest of its values when ascending, the
/// highest when descending (the search page's rule for repeating elements); `None` when it has
/// none (such resources sort last either way).
pub fn sort_value(key: &SortKey, resource: &Value) -> Option<SortValue> {
    let rt = resource.get("resourceType").and_then(Value::as_str)?;
    let path = cached_path(&key.param, rt)?;
    let targets = path.evaluate_refs(&Context::on(resource)).ok()?;
    let mut values: Vec<SortValue> = Vec::new();
    for t in targets.iter().map(Cow::as_ref) {
        match key.param.kind {
            ParamType::Number => values.extend(number_of(t).map(SortValue::Number)),
            ParamType::Quantity => values.extend(
                t.get("value")
                    .and_then(number_of)
                    .or_else(|| number_of(t))
                    .map(SortValue::Number),
            ),
            ParamType::Date => {
                for r in target_ranges(t) {
                    values.push(SortValue::Date(if key.descending {
                        r.end
                    } else {
                        r.start
                    }));
                }
            }
            ParamType::Token => values.extend(
                token_candidates(t)
                    .into_iter()
                    .map(|(_, code)| SortValue::Text(code)),
            ),
            ParamType::Reference => {
                let s = match t {
                    Value::String(s) => Some(s.as_str()),
                    other => other.get("reference").and_then(Value::as_str),
                };
                values.extend(s.map(|s| SortValue::Text(s.to_owned())));
            }
            ParamType::Uri => values.extend(t.as_str().map(|s| SortValue::Text(s.to_owned()))),
            ParamType::String => {
                let mut leaves = Vec::new();
                string_leaves(t, &mut leaves);
                values.extend(leaves.into_iter().map(|s| SortValue::Text(normalize(s))));
            }
            ParamType::Composite | ParamType::Special => {}
        }
    }
    let pick = |a: SortValue, b: SortValue| {
        let b_wins = match a.partial_cmp(&b) {
            Some(Ordering::Less) => key.descending,
            Some(Ordering::Greater) => !key.descending,
            _ => false,
        };
        if b_wins { b } else { a }
    };
    values.into_iter().reduce(pick)
}

/// Orders two resources' sort values (one per key, from [`sort_value`]): key by key, missing
/// values last, `-` keys descending.
pub fn compare_sort_values(
    keys: &[SortKey],
    a: &[Option<SortValue>],
    b: &[Option<SortValue>],
) -> Ordering {
    for ((key, x), y) in keys.iter().zip(a).zip(b) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = x.partial_cmp(y).unwrap_or(Ordering::Equal);
                if key.descending { o.reverse() } else { o }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests;
