//! Small private helpers for reading FHIR JSON leniently (extensions, `value[x]`, primitives
//! given as numbers or strings) with errors that name the element.

use serde_json::{Map, Value};

use crate::SubscriptionError;

/// The object, or an `Invalid` error naming `element`.
pub(crate) fn object<'a>(
    v: &'a Value,
    element: &str,
) -> Result<&'a Map<String, Value>, SubscriptionError> {
    v.as_object().ok_or_else(|| SubscriptionError::Invalid {
        element: element.to_owned(),
        reason: "expected a JSON object".to_owned(),
    })
}

/// Checks `resourceType`.
pub(crate) fn expect_resource_type(v: &Value, expected: &str) -> Result<(), SubscriptionError> {
    let found = v.get("resourceType").and_then(Value::as_str);
    if found == Some(expected) {
        Ok(())
    } else {
        Err(SubscriptionError::WrongResourceType {
            expected: expected.to_owned(),
            found: found.unwrap_or("nothing").to_owned(),
        })
    }
}

/// An optional string member; a present non-string is an error.
pub(crate) fn opt_str(
    obj: &Map<String, Value>,
    key: &str,
    element: &str,
) -> Result<Option<String>, SubscriptionError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SubscriptionError::Invalid {
            element: format!("{element}.{key}"),
            reason: "expected a string".to_owned(),
        }),
    }
}

/// A required string member.
pub(crate) fn req_str(
    obj: &Map<String, Value>,
    key: &str,
    element: &str,
) -> Result<String, SubscriptionError> {
    opt_str(obj, key, element)?.ok_or_else(|| SubscriptionError::Missing {
        element: format!("{element}.{key}"),
    })
}

/// An optional array of strings.
pub(crate) fn str_array(
    obj: &Map<String, Value>,
    key: &str,
    element: &str,
) -> Result<Vec<String>, SubscriptionError> {
    array(obj, key, element)?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| SubscriptionError::Invalid {
                    element: format!("{element}.{key}"),
                    reason: "expected strings".to_owned(),
                })
        })
        .collect()
}

/// An optional array member (absent = empty).
pub(crate) fn array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    element: &str,
) -> Result<&'a [Value], SubscriptionError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a.as_slice()),
        Some(_) => Err(SubscriptionError::Invalid {
            element: format!("{element}.{key}"),
            reason: "expected an array".to_owned(),
        }),
    }
}

/// A non-negative integer given as a JSON number or a numeric string (lenient reading).
pub(crate) fn as_u32(v: &Value, element: &str) -> Result<u32, SubscriptionError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| SubscriptionError::Invalid {
            element: element.to_owned(),
            reason: format!("expected a non-negative integer, found {v}"),
        })
}

/// An optional non-negative integer member.
pub(crate) fn opt_u32(
    obj: &Map<String, Value>,
    key: &str,
    element: &str,
) -> Result<Option<u32>, SubscriptionError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_u32(v, &format!("{element}.{key}")).map(Some),
    }
}

/// The `value[x]` of an extension, whatever its type suffix.
pub(crate) fn ext_value(ext: &Value) -> Option<&Value> {
    ext.as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(_, v)| v)
}

/// The extensions of `obj` (its `extension` array; empty when absent).
pub(crate) fn extensions(obj: &Value) -> &[Value] {
    obj.get("extension")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The extensions on the primitive `key` of `obj`, i.e. `obj._key.extension`.
pub(crate) fn primitive_extensions<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    obj.get(&format!("_{key}")).map(extensions).unwrap_or(&[])
}

/// The extensions of `list` with the given URL.
pub(crate) fn with_url<'a>(
    list: &'a [Value],
    url: &'a str,
) -> impl Iterator<Item = &'a Value> + 'a {
    list.iter()
        .filter(move |e| e.get("url").and_then(Value::as_str) == Some(url))
}

/// Builds `{"url": url, <value_key>: value}`.
pub(crate) fn ext(url: &str, value_key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert("url".to_owned(), Value::String(url.to_owned()));
    m.insert(value_key.to_owned(), value);
    Value::Object(m)
}

/// Builds `{"url": url, "extension": children}`.
pub(crate) fn complex_ext(url: &str, children: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("url".to_owned(), Value::String(url.to_owned()));
    m.insert("extension".to_owned(), Value::Array(children));
    Value::Object(m)
}
