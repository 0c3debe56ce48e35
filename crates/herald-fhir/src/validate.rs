//! Owns structural validation of FHIR JSON resource bodies (envelope and FHIR JSON rules, not
//! profiles or element cardinalities).

use crate::{FhirError, FhirVersion, is_resource_type, is_valid_id};
use serde_json::{Map, Value};

/// Structural check of a resource body for `version`: JSON object, `resourceType` string and
/// known, `id` valid when present, `meta` an object when present, no nulls / empty objects / empty
/// arrays / empty strings anywhere (FHIR JSON rules), primitive extension siblings `_x` allowed
/// (and `null` placeholders inside a primitive array that has a `_x` sibling array). Nested
/// resources (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`) are checked
/// the same way. Date values reached by the resource's date search parameters must parse as FHIR
/// date/dateTime/instant (other primitive formats are not checked).
pub fn check_resource(version: FhirVersion, body: &Value) -> Result<(), FhirError> {
    let Some(obj) = body.as_object() else {
        return Err(FhirError::InvalidResource(
            "resource body must be a JSON object".into(),
        ));
    };
    let rt = check_envelope(version, obj, "$")?;
    check_object(version, obj, rt)?;
    let registry = crate::search::Registry::for_version(version);
    match crate::search::invalid_dates(registry, body).first() {
        None => Ok(()),
        Some((code, text)) => Err(FhirError::InvalidResource(format!(
            "{rt}: '{text}' is not a valid FHIR date, dateTime or instant (the element searched by '{code}')"
        ))),
    }
}

fn check_envelope<'a>(
    version: FhirVersion,
    obj: &'a Map<String, Value>,
    path: &str,
) -> Result<&'a str, FhirError> {
    let rt = match obj.get("resourceType") {
        None => {
            return Err(FhirError::InvalidResource(format!(
                "{path}: missing resourceType"
            )));
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(FhirError::InvalidResource(format!(
                "{path}.resourceType: must be a string"
            )));
        }
    };
    if !is_resource_type(version, rt) {
        return Err(FhirError::UnknownResourceType(format!(
            "{rt} is not a FHIR {} resource type (at {path}.resourceType)",
            version.fhir_version()
        )));
    }
    match obj.get("id") {
        None => {}
        Some(Value::String(id)) if is_valid_id(id) => {}
        Some(Value::String(id)) => {
            return Err(FhirError::InvalidResource(format!(
                "{rt}.id: '{id}' is not a valid id ([A-Za-z0-9-.]{{1,64}})"
            )));
        }
        Some(_) => {
            return Err(FhirError::InvalidResource(format!(
                "{rt}.id: must be a string"
            )));
        }
    }
    if let Some(meta) = obj.get("meta")
        && !meta.is_object()
    {
        return Err(FhirError::InvalidResource(format!(
            "{rt}.meta: must be an object"
        )));
    }
    Ok(rt)
}

fn check_object(
    version: FhirVersion,
    obj: &Map<String, Value>,
    path: &str,
) -> Result<(), FhirError> {
    if obj.is_empty() {
        return Err(FhirError::InvalidResource(format!(
            "{path}: empty object is not allowed"
        )));
    }
    for (key, value) in obj {
        if key.is_empty() {
            return Err(FhirError::InvalidResource(format!(
                "{path}: empty property name"
            )));
        }
        let child = format!("{path}.{key}");
        match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(FhirError::InvalidResource(format!(
                        "{child}: empty array is not allowed"
                    )));
                }
                // null placeholders are allowed when a primitive array is paired with `_key`
                // (or `key` when this is the `_key` array).
                let sibling = match key.strip_prefix('_') {
                    Some(k) => k.to_string(),
                    None => format!("_{key}"),
                };
                let paired = obj.get(&sibling).is_some_and(Value::is_array);
                let mut all_null = true;
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{child}[{i}]");
                    if item.is_null() {
                        if !paired {
                            return Err(FhirError::InvalidResource(format!(
                                "{p}: null is not allowed"
                            )));
                        }
                    } else {
                        all_null = false;
                        check_value(version, item, &p)?;
                    }
                }
                if all_null {
                    return Err(FhirError::InvalidResource(format!(
                        "{child}: array contains only nulls"
                    )));
                }
            }
            _ => check_value(version, value, &child)?,
        }
    }
    Ok(())
}

fn check_value(version: FhirVersion, value: &Value, path: &str) -> Result<(), FhirError> {
    match value {
        Value::Null => Err(FhirError::InvalidResource(format!(
            "{path}: null is not allowed"
        ))),
        Value::String(s) if s.is_empty() => Err(FhirError::InvalidResource(format!(
            "{path}: empty string is not allowed"
        ))),
        Value::Array(_) => Err(FhirError::InvalidResource(format!(
            "{path}: nested arrays are not allowed"
        ))),
        Value::Object(o) => {
            if o.contains_key("resourceType") {
                let rt = check_envelope(version, o, path)?;
                check_object(version, o, &format!("{path}({rt})"))
            } else {
                check_object(version, o, path)
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        match check_resource(FhirVersion::R4, &v) {
            Err(e) => e.to_string(),
            Ok(()) => String::from("ok"),
        }
    }

    #[test]
    fn valid_task_passes() {
        let t = json!({"resourceType":"Task","id":"t1","meta":{"versionId":"1"},"status":"draft","intent":"order",
            "_status": {"extension":[{"url":"http://x","valueString":"y"}]},
            "contained":[{"resourceType":"Patient","id":"p"}]});
        assert_eq!(err(t), "ok");
    }

    #[test]
    fn non_object_body_is_invalid() {
        assert!(err(json!([1])).contains("JSON object"));
    }

    #[test]
    fn missing_resource_type_is_invalid() {
        assert!(err(json!({"id":"x"})).contains("missing resourceType"));
    }

    #[test]
    fn unknown_resource_type_is_reported_as_such() {
        let r = check_resource(
            FhirVersion::R4,
            &json!({"resourceType":"SubscriptionTopic"}),
        );
        assert!(matches!(r, Err(FhirError::UnknownResourceType(_))));
        assert!(
            check_resource(
                FhirVersion::R5,
                &json!({"resourceType":"SubscriptionTopic"})
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_id_is_invalid() {
        assert!(err(json!({"resourceType":"Task","id":"a b"})).contains("Task.id"));
        assert!(err(json!({"resourceType":"Task","id":5})).contains("Task.id"));
    }

    #[test]
    fn meta_must_be_object() {
        assert!(err(json!({"resourceType":"Task","meta":"x"})).contains("Task.meta"));
    }

    #[test]
    fn null_empty_string_empty_array_and_empty_object_name_their_path() {
        assert!(err(json!({"resourceType":"Task","status":null})).contains("Task.status: null"));
        assert!(
            err(json!({"resourceType":"Task","status":""})).contains("Task.status: empty string")
        );
        assert!(err(json!({"resourceType":"Task","input":[]})).contains("Task.input: empty array"));
        assert!(err(json!({"resourceType":"Task","code":{}})).contains("Task.code: empty object"));
        assert!(
            err(json!({"resourceType":"Task","identifier":[{"system":""}]}))
                .contains("Task.identifier[0].system")
        );
    }

    #[test]
    fn null_placeholders_allowed_only_with_extension_sibling() {
        let ok = json!({"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,{"id":"x"}]}]});
        assert_eq!(err(ok), "ok");
        let bad = json!({"resourceType":"Patient","name":[{"given":["a",null]}]});
        assert!(err(bad).contains("Patient.name[0].given[1]: null"));
    }

    #[test]
    fn nested_resources_are_checked() {
        let b = json!({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Nope"}}]});
        assert!(matches!(
            check_resource(FhirVersion::R4, &b),
            Err(FhirError::UnknownResourceType(_))
        ));
    }
}

#[cfg(test)]
mod date_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_malformed_date_in_a_searchable_element_is_invalid() {
        let err = check_resource(
            FhirVersion::R4,
            &json!({"resourceType":"Task","status":"requested","intent":"order","authoredOn":"yesterday"}),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("yesterday"), "{err}");
        assert!(
            check_resource(
                FhirVersion::R5,
                &json!({"resourceType":"Task","status":"requested","intent":"order","authoredOn":"2026-11-29"}),
            )
            .is_ok()
        );
    }
}
