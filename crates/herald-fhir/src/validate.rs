//! Owns the validation of FHIR JSON resource bodies against the core definitions of their
//! version (`crate::definitions`): the FHIR JSON rules (no nulls, empty strings, arrays or
//! objects), element names (unknown elements refused), data types and primitive formats,
//! cardinality, and the required bindings of `code` elements. Profiles and invariants are not
//! checked.
//!
//! One pass over the JSON: each property is looked up in its parent's definition once, and the
//! path is a chain of borrowed segments that becomes a string only when an error is reported.

use crate::definitions::{self, Definitions, Kind};
use crate::{FhirError, FhirVersion, is_valid_id};
use serde_json::{Map, Value};

/// Validates a resource body for `version` (see the module doc). Nested resources
/// (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`) are validated the
/// same way. The error names the element (`Task.status`) in `FhirError::InvalidElement`.
pub fn check_resource(version: FhirVersion, body: &Value) -> Result<(), FhirError> {
    check_resource_for(version.fhir_version(), body)
}

/// [`check_resource`] for a `fhirVersion` string ("4.0.1", "4.3.0", "5.0.0").
pub fn check_resource_for(fhir_version: &str, body: &Value) -> Result<(), FhirError> {
    let Some(defs) = definitions::for_fhir_version(fhir_version) else {
        return Err(FhirError::InvalidResource(format!(
            "no definitions for FHIR {fhir_version}"
        )));
    };
    let Some(obj) = body.as_object() else {
        return Err(FhirError::InvalidResource(
            "resource body must be a JSON object".into(),
        ));
    };
    Walker { defs }.resource(obj, &Path::root())
}

/// A location in the body, rendered only for an error.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Type(&'a str),
    Key(&'a str),
    Index(usize),
}

impl<'a> Path<'a> {
    fn root() -> Path<'static> {
        Path {
            parent: None,
            seg: Seg::Root,
        }
    }
    fn then(&'a self, seg: Seg<'a>) -> Path<'a> {
        Path {
            parent: Some(self),
            seg,
        }
    }
    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut at = Some(self);
        while let Some(p) = at {
            segs.push(p.seg);
            at = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root => {}
                // A nested resource continues its parent's path; at the root it starts it.
                Seg::Type(t) if out.is_empty() => out.push_str(t),
                Seg::Type(_) => {}
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k.strip_prefix('_').unwrap_or(k));
                }
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        if out.is_empty() { "$".into() } else { out }
    }
    fn error(&self, message: impl Into<String>) -> FhirError {
        FhirError::InvalidElement {
            expression: self.render(),
            message: message.into(),
        }
    }
}

struct Walker {
    defs: &'static Definitions,
}

impl Walker {
    fn resource(&self, obj: &Map<String, Value>, path: &Path<'_>) -> Result<(), FhirError> {
        let rt = match obj.get("resourceType") {
            None => return Err(path.error("missing resourceType")),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(path
                    .then(Seg::Key("resourceType"))
                    .error("resourceType must be a string"));
            }
        };
        let Some(def) = self.defs.type_def(rt).filter(|t| t.resource) else {
            return Err(FhirError::UnknownResourceType(format!(
                "{rt} is not a FHIR {} resource type (at {}.resourceType)",
                self.defs.fhir_version(),
                path.render()
            )));
        };
        let here = path.then(Seg::Type(rt));
        match obj.get("id") {
            None | Some(Value::String(_)) => {}
            Some(_) => {
                return Err(here.then(Seg::Key("id")).error("must be a string"));
            }
        }
        if let Some(Value::String(id)) = obj.get("id")
            && !is_valid_id(id)
        {
            return Err(here
                .then(Seg::Key("id"))
                .error(format!("'{id}' is not a valid id ([A-Za-z0-9-.]{{1,64}})")));
        }
        self.object(def.node, obj, &here, true)
    }

    fn object(
        &self,
        node: u32,
        obj: &Map<String, Value>,
        path: &Path<'_>,
        is_resource: bool,
    ) -> Result<(), FhirError> {
        if obj.is_empty() {
            return Err(path.error("empty object is not allowed"));
        }
        let Some(def) = self.defs.nodes.get(node as usize) else {
            return Ok(());
        };
        let mut present: u64 = 0;
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            let here = path.then(Seg::Key(key));
            let (name, extension_of_primitive) = match key.strip_prefix('_') {
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let Some(child) = def.children.get(name) else {
                return Err(here.error("unknown element"));
            };
            if let Some(bit) = child.required {
                present |= 1 << bit;
            }
            if extension_of_primitive {
                if !matches!(child.kind, Kind::Primitive(_)) {
                    return Err(here.error(format!(
                        "'_{name}' is only allowed beside a primitive element"
                    )));
                }
                let paired = || obj.get(name).is_some_and(Value::is_array);
                self.repeat(child.many, value, &here, paired, |item, at| match item {
                    Value::Object(o) => self.object(self.defs.element_node, o, at, false),
                    _ => Err(at.error("a primitive's extension sibling must be a JSON object")),
                })?;
            } else {
                let paired = || obj.get(&format!("_{name}")).is_some_and(Value::is_array);
                self.repeat(child.many, value, &here, paired, |item, at| {
                    self.item(child.kind, child.value_set, item, at)
                })?;
            }
        }
        if present.count_ones() as usize != def.required.len().min(64) {
            for (bit, name) in def.required.iter().enumerate().take(64) {
                if present & (1 << bit) == 0 {
                    return Err(path
                        .then(Seg::Key(name))
                        .error("required element is missing (min 1)"));
                }
            }
        }
        Ok(())
    }

    /// Cardinality: a repeating element is a non-empty array, a single one is not an array.
    /// Nulls in an array are placeholders only when the primitive's `_name` sibling array is
    /// there to line up with.
    fn repeat(
        &self,
        many: bool,
        value: &Value,
        path: &Path<'_>,
        paired: impl Fn() -> bool,
        each: impl Fn(&Value, &Path<'_>) -> Result<(), FhirError>,
    ) -> Result<(), FhirError> {
        match (many, value) {
            (true, Value::Array(items)) => {
                if items.is_empty() {
                    return Err(path.error("empty array is not allowed"));
                }
                let mut all_null = true;
                for (i, item) in items.iter().enumerate() {
                    let at = path.then(Seg::Index(i));
                    if item.is_null() {
                        if !paired() {
                            return Err(at.error("null is not allowed"));
                        }
                    } else {
                        all_null = false;
                        each(item, &at)?;
                    }
                }
                if all_null {
                    return Err(path.error("array contains only nulls"));
                }
                Ok(())
            }
            (true, _) => Err(path.error("must be a JSON array (the element repeats)")),
            (false, Value::Array(_)) => {
                Err(path.error("must not be an array (the element has max 1)"))
            }
            (false, Value::Null) => Err(path.error("null is not allowed")),
            (false, v) => each(v, path),
        }
    }

    fn item(
        &self,
        kind: Kind,
        value_set: Option<u32>,
        value: &Value,
        path: &Path<'_>,
    ) -> Result<(), FhirError> {
        match (kind, value) {
            (_, Value::Array(_)) => Err(path.error("nested arrays are not allowed")),
            (Kind::Primitive(p), v) => {
                p.check(v).map_err(|m| path.error(m))?;
                if let (Some(vs), Value::String(code)) = (value_set, v) {
                    let (id, codes) = self.defs.value_set(vs);
                    if codes.binary_search(&code.as_str()).is_err() {
                        let listed = if codes.len() <= 24 {
                            format!(": {}", codes.join(", "))
                        } else {
                            String::new()
                        };
                        return Err(path.error(format!(
                            "'{code}' is not a code of the required value set {id}{listed}"
                        )));
                    }
                }
                Ok(())
            }
            (Kind::Node(node), Value::Object(o)) => self.object(node, o, path, false),
            (Kind::Resource, Value::Object(o)) => self.resource(o, path),
            (_, other) => Err(path.error(format!(
                "must be a JSON object, not {}",
                match other {
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
