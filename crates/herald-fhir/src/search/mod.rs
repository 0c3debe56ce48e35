//! Owns search-parameter definitions (embedded HL7 bundles for R4 and R5), parsing of search
//! criteria, search-semantics matching of a resource against a criterion, and index keys.

use crate::date::DateRange;
use crate::{FhirError, FhirVersion};
use serde_json::Value;

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
}

impl Registry {
    /// The registry of `v`, parsed once.
    pub fn for_version(v: FhirVersion) -> &'static Registry {
        let _ = v;
        static EMPTY: Registry = Registry { defs: Vec::new() };
        &EMPTY
    }

    /// The definition of `code` for `resource_type` (including Resource-level ones).
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParamDef> {
        self.defs
            .iter()
            .find(|d| d.code == code && d.base.iter().any(|b| b == resource_type))
    }

    /// All definitions that apply to `resource_type`.
    pub fn for_resource(&self, resource_type: &str) -> Vec<&SearchParamDef> {
        self.defs
            .iter()
            .filter(|d| d.base.iter().any(|b| b == resource_type))
            .collect()
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
    /// reference value.
    Reference(crate::reference::Reference),
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
}

/// Parses one query parameter (name may carry `:modifier`) for `resource_type`.
pub fn parse_criterion(
    version: FhirVersion,
    resource_type: &str,
    name: &str,
    value: &str,
) -> Result<Criterion, FhirError> {
    let _ = (version, value);
    Err(FhirError::UnknownSearchParameter {
        resource_type: resource_type.into(),
        code: name.into(),
    })
}

/// Same as [`parse_criterion`] with an explicit comparator/modifier (R5 SubscriptionTopic filterBy).
pub fn parse_filter(
    version: FhirVersion,
    resource_type: &str,
    param: &str,
    comparator: Option<&str>,
    modifier: Option<&str>,
    value: &str,
) -> Result<Criterion, FhirError> {
    let _ = (comparator, modifier);
    parse_criterion(version, resource_type, param, value)
}

/// Does `resource` satisfy the criterion (search semantics)?
pub fn matches(criterion: &Criterion, resource: &Value) -> Result<bool, FhirError> {
    let _ = (criterion, resource);
    Ok(false)
}

/// ANDed criteria and result-control parameters (`_count`, `_sort`, …) of a query string.
pub type ParsedQuery = (Vec<Criterion>, Vec<(String, String)>);

/// Parses a whole query string into ANDed criteria plus result-control parameters.
pub fn parse_query(
    version: FhirVersion,
    resource_type: &str,
    query: &str,
) -> Result<ParsedQuery, FhirError> {
    let _ = (version, resource_type, query);
    Ok((Vec::new(), Vec::new()))
}

/// Equality-index keys of `resource` for a reference or token parameter.
pub fn index_keys(def: &SearchParamDef, resource: &Value) -> Vec<String> {
    let _ = (def, resource);
    Vec::new()
}

/// The keys an equality criterion would match (None when not an indexable equality).
pub fn index_keys_of_criterion(criterion: &Criterion) -> Option<Vec<String>> {
    let _ = criterion;
    None
}
