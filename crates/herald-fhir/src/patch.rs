//! Owns applying a PATCH body to a resource: JSON Patch (RFC 6902, through the `json-patch`
//! crate) and FHIRPath Patch (a `Parameters` of `operation`s: add, insert, delete, replace, move,
//! with paths in Herald's FHIRPath subset). Pure: the caller validates the result, checks that
//! `id` and `resourceType` are unchanged and writes it like any update.
//!
//! FHIRPath selects values, not places: the places are found by identity, i.e. which node of
//! the document each selected value *is* (`std::ptr::eq`), so every path the subset can
//! evaluate (`where()`, `first()`, indexes, …) can be patched without a second evaluator.

use serde_json::{Map, Value};

use crate::FhirError;
use crate::fhirpath::{Context, parse};

/// Applies a JSON Patch document (an array of operations) to a copy of `resource`.
pub fn apply_json_patch(resource: &Value, patch: &Value) -> Result<Value, FhirError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| FhirError::InvalidPatch(format!("not a JSON Patch document: {e}")))?;
    let mut doc = resource.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| FhirError::PatchFailed(e.to_string()))?;
    Ok(doc)
}

/// Applies a FHIRPath Patch `Parameters` to a copy of `resource`, operation by operation.
/// `fhir_version` ("4.0.1", "5.0.0", …) decides whether an `add`ed element repeats.
pub fn apply_fhirpath_patch(
    fhir_version: &str,
    resource: &Value,
    parameters: &Value,
) -> Result<Value, FhirError> {
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(FhirError::InvalidPatch(
            "a FHIRPath Patch is a Parameters resource".into(),
        ));
    }
    let ops = parameters
        .get("parameter")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| FhirError::InvalidPatch("Parameters has no operation".into()))?;
    let mut doc = resource.clone();
    for (i, op) in ops.iter().enumerate() {
        if op.get("name").and_then(Value::as_str) != Some("operation") {
            return Err(FhirError::InvalidPatch(format!(
                "parameter[{i}] must be named 'operation'"
            )));
        }
        let op = Operation::parse(op)
            .map_err(|m| FhirError::InvalidPatch(format!("operation {i}: {m}")))?;
        op.apply(fhir_version, &mut doc)
            .map_err(|m| FhirError::PatchFailed(format!("operation {i} ({}): {m}", op.kind)))?;
    }
    Ok(doc)
}

struct Operation<'a> {
    kind: &'a str,
    path: &'a str,
    name: Option<&'a str>,
    value: Option<Value>,
    index: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

impl<'a> Operation<'a> {
    fn parse(op: &'a Value) -> Result<Self, String> {
        let parts = op
            .get("part")
            .and_then(Value::as_array)
            .ok_or("an operation has parts (type, path, …)")?;
        let part = |name: &str| {
            parts
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        };
        let text =
            |name: &str, key: &str| part(name).and_then(|p| p.get(key)).and_then(Value::as_str);
        let number = |name: &str| -> Result<Option<usize>, String> {
            match part(name).and_then(|p| p.get("valueInteger")) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| format!("'{name}' must be a non-negative valueInteger")),
            }
        };
        let kind = text("type", "valueCode").ok_or("the 'type' part (valueCode) is missing")?;
        if !matches!(kind, "add" | "insert" | "delete" | "replace" | "move") {
            return Err(format!("unknown operation type '{kind}'"));
        }
        let path = text("path", "valueString").ok_or("the 'path' part (valueString) is missing")?;
        let value = match part("value") {
            None => None,
            Some(p) => Some(value_of(p)?),
        };
        let op = Operation {
            kind,
            path,
            name: text("name", "valueString"),
            value,
            index: number("index")?,
            source: number("source")?,
            destination: number("destination")?,
        };
        let missing = match kind {
            "add" if op.name.is_none() => Some("name"),
            "add" | "insert" | "replace" if op.value.is_none() => Some("value"),
            "insert" if op.index.is_none() => Some("index"),
            "move" if op.source.is_none() => Some("source"),
            "move" if op.destination.is_none() => Some("destination"),
            _ => None,
        };
        match missing {
            Some(m) => Err(format!("a '{kind}' operation needs a '{m}' part")),
            None => Ok(op),
        }
    }

    fn apply(&self, fhir_version: &str, doc: &mut Value) -> Result<(), String> {
        let targets = locate_all(doc, self.path)?;
        let one = |targets: &[Vec<Step>]| match targets {
            [t] => Ok(t.clone()),
            [] => Err(format!("path '{}' selects nothing", self.path)),
            _ => Err(format!(
                "path '{}' selects {} elements; one is needed",
                self.path,
                targets.len()
            )),
        };
        match self.kind {
            "add" => {
                let at = one(&targets)?;
                let repeats = repeats(fhir_version, doc, &at, self.name.unwrap_or(""));
                let obj = node_mut(doc, &at)
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| {
                        format!(
                            "path '{}' does not select an element with children",
                            self.path
                        )
                    })?;
                add(
                    obj,
                    self.name.unwrap_or(""),
                    self.value.clone().unwrap_or(Value::Null),
                    repeats,
                )
            }
            "replace" => {
                let at = one(&targets)?;
                let slot = node_mut(doc, &at).ok_or("the selected element is gone")?;
                *slot = self.value.clone().unwrap_or(Value::Null);
                Ok(())
            }
            "delete" => match targets.as_slice() {
                [] => Ok(()),
                [at] => remove(doc, at),
                _ => Err(format!(
                    "path '{}' selects {} elements; delete takes one",
                    self.path,
                    targets.len()
                )),
            },
            "insert" | "move" => {
                let (list_at, len) = list_of(doc, &targets, self.path)?;
                let list = node_mut(doc, &list_at)
                    .and_then(Value::as_array_mut)
                    .ok_or("the selected list is gone")?;
                if self.kind == "insert" {
                    let index = self.index.unwrap_or(usize::MAX);
                    if index > len {
                        return Err(format!("index {index} is beyond the list's {len} items"));
                    }
                    list.insert(index, self.value.clone().unwrap_or(Value::Null));
                } else {
                    let (from, to) = (
                        self.source.unwrap_or(usize::MAX),
                        self.destination.unwrap_or(usize::MAX),
                    );
                    if from >= len || to >= len {
                        return Err(format!(
                            "source {from} or destination {to} is outside the list's {len} items"
                        ));
                    }
                    let item = list.remove(from);
                    list.insert(to, item);
                }
                Ok(())
            }
            other => Err(format!("unknown operation type '{other}'")),
        }
    }
}

/// One step from the root to a node: an object key or an array index.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The value of a `value` part: its one `value[x]`, or an object built from its `part`s (how
/// FHIRPath Patch gives a backbone element such as `Task.input`).
fn value_of(part: &Value) -> Result<Value, String> {
    let obj = part.as_object().ok_or("a part must be an object")?;
    if let Some(parts) = obj.get("part").and_then(Value::as_array) {
        let mut out = Map::new();
        for p in parts {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a value part has no name")?;
            let v = value_of(p)?;
            match out.get_mut(name) {
                Some(Value::Array(items)) => items.push(v),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, v]);
                }
                None => {
                    out.insert(name.to_owned(), v);
                }
            }
        }
        return Ok(Value::Object(out));
    }
    let mut values = obj.iter().filter(|(k, _)| k.starts_with("value"));
    match (values.next(), values.next()) {
        (Some((_, v)), None) => Ok(v.clone()),
        (None, _) => Err("a 'value' part needs a value[x] or parts".into()),
        (Some(_), Some(_)) => Err("a 'value' part has more than one value[x]".into()),
    }
}

/// Where each value selected by `path` sits in `doc`.
fn locate_all(doc: &Value, path: &str) -> Result<Vec<Vec<Step>>, String> {
    let expr = parse(path).map_err(|e| e.to_string())?;
    let found = expr
        .evaluate_refs(&Context::on(doc))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(found.len());
    for v in &found {
        let std::borrow::Cow::Borrowed(v) = v else {
            return Err(format!(
                "path '{path}' selects a computed value, not an element"
            ));
        };
        let mut steps = Vec::new();
        if !find(doc, v, &mut steps) {
            return Err(format!(
                "path '{path}' selects a value outside the resource"
            ));
        }
        out.push(steps);
    }
    Ok(out)
}

fn find(at: &Value, target: &Value, steps: &mut Vec<Step>) -> bool {
    if std::ptr::eq(at, target) {
        return true;
    }
    match at {
        Value::Object(o) => {
            for (k, v) in o {
                steps.push(Step::Key(k.clone()));
                if find(v, target, steps) {
                    return true;
                }
                steps.pop();
            }
            false
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                steps.push(Step::Index(i));
                if find(v, target, steps) {
                    return true;
                }
                steps.pop();
            }
            false
        }
        _ => false,
    }
}

fn node_mut<'a>(doc: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    let mut at = doc;
    for s in steps {
        at = match s {
            Step::Key(k) => at.as_object_mut()?.get_mut(k)?,
            Step::Index(i) => at.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(at)
}

/// Whether `name` repeats below the element at `steps`, by the definitions (element names
/// only; a path into a nested resource is not followed and counts as single).
fn repeats(fhir_version: &str, doc: &Value, steps: &[Step], name: &str) -> bool {
    let Some(rt) = doc.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    let mut names: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    names.push(name);
    crate::definitions::for_fhir_version(fhir_version)
        .and_then(|d| d.element_repeats(rt, &names))
        .unwrap_or(false)
}

fn add(
    obj: &mut Map<String, Value>,
    name: &str,
    value: Value,
    repeats: bool,
) -> Result<(), String> {
    match obj.get_mut(name) {
        Some(Value::Array(items)) => {
            items.push(value);
            Ok(())
        }
        Some(_) => Err(format!("'{name}' is already there (use replace)")),
        None => {
            obj.insert(
                name.to_owned(),
                if repeats {
                    Value::Array(vec![value])
                } else {
                    value
                },
            );
            Ok(())
        }
    }
}

fn remove(doc: &mut Value, at: &[Step]) -> Result<(), String> {
    let Some((last, parent_steps)) = at.split_last() else {
        return Err("the resource itself cannot be deleted by a patch".into());
    };
    let parent = node_mut(doc, parent_steps).ok_or("the selected element is gone")?;
    match (last, parent) {
        (Step::Key(k), Value::Object(o)) => {
            o.remove(k);
            Ok(())
        }
        (Step::Index(i), Value::Array(items)) => {
            items.remove(*i);
            if items.is_empty()
                && let Some((Step::Key(k), grand)) = parent_steps.split_last()
                && let Some(Value::Object(o)) = node_mut(doc, grand)
            {
                o.remove(k);
            }
            Ok(())
        }
        _ => Err("the selected element is gone".into()),
    }
}

/// The list that `targets` are the items of (all of one array), and its length.
fn list_of(
    doc: &mut Value,
    targets: &[Vec<Step>],
    path: &str,
) -> Result<(Vec<Step>, usize), String> {
    let Some(first) = targets.first() else {
        return Err(format!("path '{path}' selects no list items"));
    };
    let Some((Step::Index(_), list)) = first.split_last() else {
        return Err(format!("path '{path}' does not select the items of a list"));
    };
    if targets
        .iter()
        .any(|t| t.len() != first.len() || t[..t.len() - 1] != *list)
    {
        return Err(format!("path '{path}' selects items of more than one list"));
    }
    let len = node_mut(doc, list)
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    Ok((list.to_vec(), len))
}

#[cfg(test)]
mod tests;
