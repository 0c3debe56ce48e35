//! Owns parsing of FHIR reference strings (`Reference.reference`) into their parts.

use std::fmt;

/// The parts of a reference string.
///
/// * `Patient/1` → type `Patient`, id `1`.
/// * `Patient/1/_history/2` → plus version `2`.
/// * `http://x/fhir/Patient/1` → base `http://x/fhir`, type, id (and version when present).
/// * `urn:uuid:…`, `urn:oid:…` and absolute URLs without a `Type/id` tail → base = the whole
///   string, no type, no id.
/// * `#contained` → base `#`, id `contained` (see [`Reference::is_contained`]).
/// * `Patient?identifier=x` (conditional) → type `Patient`, no id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Service base URL (absolute references), the whole URI for URNs, or `#` for contained ones.
    pub base: Option<String>,
    /// The referenced resource type, when the string says it.
    pub resource_type: Option<String>,
    /// The logical id.
    pub id: Option<String>,
    /// The version id of a version-specific reference.
    pub version: Option<String>,
}

impl Reference {
    /// Is this a reference to a contained resource (`#id`)?
    pub fn is_contained(&self) -> bool {
        self.base.as_deref() == Some("#")
    }

    /// `Type/id` when both are known.
    pub fn relative(&self) -> Option<String> {
        match (&self.resource_type, &self.id) {
            (Some(t), Some(i)) if !self.is_contained() => Some(format!("{t}/{i}")),
            _ => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_contained() {
            return write!(f, "#{}", self.id.as_deref().unwrap_or_default());
        }
        match (&self.base, self.relative()) {
            (Some(b), Some(rel)) => write!(f, "{b}/{rel}")?,
            (None, Some(rel)) => f.write_str(&rel)?,
            (Some(b), None) => return f.write_str(b),
            (None, None) => {
                return f.write_str(self.resource_type.as_deref().unwrap_or_default());
            }
        }
        if let Some(v) = &self.version {
            write!(f, "/_history/{v}")?;
        }
        Ok(())
    }
}

fn looks_like_type(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Parses a reference string; never fails (unrecognised shapes keep the whole string as `base`).
pub fn parse(reference: &str) -> Reference {
    let r = reference.trim();
    if let Some(id) = r.strip_prefix('#') {
        return Reference {
            base: Some("#".into()),
            id: if id.is_empty() { None } else { Some(id.into()) },
            ..Reference::default()
        };
    }
    if r.starts_with("urn:") {
        return Reference {
            base: Some(r.into()),
            ..Reference::default()
        };
    }
    // Conditional reference: Type?query
    if let Some((ty, _)) = r.split_once('?')
        && looks_like_type(ty)
    {
        return Reference {
            resource_type: Some(ty.into()),
            ..Reference::default()
        };
    }
    let segs: Vec<&str> = r.split('/').collect();
    let n = segs.len();
    // [.., Type, id, _history, v]
    let (type_at, version) = if n >= 4 && segs[n - 2] == "_history" && looks_like_type(segs[n - 4])
    {
        (n - 4, Some(segs[n - 1].to_string()))
    } else if n >= 2 && looks_like_type(segs[n - 2]) {
        (n - 2, None)
    } else {
        return Reference {
            base: Some(r.into()),
            ..Reference::default()
        };
    };
    let id = segs[type_at + 1];
    if id.is_empty() {
        return Reference {
            base: Some(r.into()),
            ..Reference::default()
        };
    }
    let base = if type_at == 0 {
        None
    } else {
        let b = segs[..type_at].join("/");
        if !b.contains(':') {
            // "a/Patient/1" is not a valid relative reference; keep it whole.
            return Reference {
                base: Some(r.into()),
                ..Reference::default()
            };
        }
        Some(b)
    };
    Reference {
        base,
        resource_type: Some(segs[type_at].into()),
        id: Some(id.into()),
        version: version.filter(|v| !v.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: Option<&str>, t: Option<&str>, id: Option<&str>, v: Option<&str>) -> Reference {
        Reference {
            base: base.map(Into::into),
            resource_type: t.map(Into::into),
            id: id.map(Into::into),
            version: v.map(Into::into),
        }
    }

    #[test]
    fn relative_reference_has_type_and_id() {
        assert_eq!(
            parse("Patient/1"),
            r(None, Some("Patient"), Some("1"), None)
        );
        assert_eq!(parse("Patient/1").to_string(), "Patient/1");
    }

    #[test]
    fn versioned_reference_has_version() {
        let p = parse("Patient/1/_history/2");
        assert_eq!(p, r(None, Some("Patient"), Some("1"), Some("2")));
        assert_eq!(p.to_string(), "Patient/1/_history/2");
    }

    #[test]
    fn absolute_reference_keeps_base() {
        assert_eq!(
            parse("http://x/fhir/Patient/1"),
            r(Some("http://x/fhir"), Some("Patient"), Some("1"), None)
        );
        assert_eq!(
            parse("https://x/fhir/Task/t/_history/3"),
            r(Some("https://x/fhir"), Some("Task"), Some("t"), Some("3"))
        );
        assert_eq!(
            parse("http://x/fhir/Patient/1").relative().as_deref(),
            Some("Patient/1")
        );
    }

    #[test]
    fn urn_reference_is_whole_base() {
        let u = "urn:uuid:3b2e2d4a-7e7b-4b8e-9d2b-2b7f1f2f9a10";
        assert_eq!(parse(u), r(Some(u), None, None, None));
        assert_eq!(parse(u).to_string(), u);
    }

    #[test]
    fn contained_reference_is_flagged() {
        let c = parse("#med1");
        assert!(c.is_contained());
        assert_eq!(c.id.as_deref(), Some("med1"));
        assert_eq!(c.relative(), None);
        assert_eq!(c.to_string(), "#med1");
    }

    #[test]
    fn conditional_reference_has_only_type() {
        assert_eq!(
            parse("Patient?identifier=a|b"),
            r(None, Some("Patient"), None, None)
        );
    }

    #[test]
    fn unrecognised_url_is_whole_base() {
        let u = "http://example.org/something";
        assert_eq!(parse(u), r(Some(u), None, None, None));
    }
}
