//! SMART scopes (v2 `system/Task.cruds`, and the v1 forms `system/Task.read`, `.write`, `.*`)
//! as a set of permissions per resource type.

use std::collections::HashMap;

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// create
    Create,
    /// read, vread, history, operations that read
    Read,
    /// update
    Update,
    /// delete
    Delete,
    /// search
    Search,
}

impl Perm {
    fn bit(self) -> u8 {
        match self {
            Perm::Create => 1,
            Perm::Read => 2,
            Perm::Update => 4,
            Perm::Delete => 8,
            Perm::Search => 16,
        }
    }

    /// The SMART v2 letter.
    pub fn letter(self) -> char {
        match self {
            Perm::Create => 'c',
            Perm::Read => 'r',
            Perm::Update => 'u',
            Perm::Delete => 'd',
            Perm::Search => 's',
        }
    }
}

/// Permissions by resource type (`*` for all types).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    by_type: HashMap<String, u8>,
}

impl Scopes {
    /// Every permission on every type.
    pub fn all() -> Scopes {
        Scopes {
            by_type: HashMap::from([("*".to_owned(), 31)]),
        }
    }

    /// Parses a space-separated scope string; scopes that are not `system/…` resource scopes
    /// (`openid`, `launch`, `user/…`) are ignored. Returns an error naming a malformed one.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut by_type: HashMap<String, u8> = HashMap::new();
        for s in text.split_whitespace() {
            let Some(rest) = s.strip_prefix("system/") else {
                continue;
            };
            let Some((ty, perms)) = rest.split_once('.') else {
                return Err(format!("scope '{s}' has no permissions after the type"));
            };
            let perms = perms.split('?').next().unwrap_or_default();
            let bits = match perms {
                "read" => Perm::Read.bit() | Perm::Search.bit(),
                "write" => Perm::Create.bit() | Perm::Update.bit() | Perm::Delete.bit(),
                "*" => 31,
                p => {
                    let mut b = 0;
                    for c in p.chars() {
                        b |= match c {
                            'c' => 1,
                            'r' => 2,
                            'u' => 4,
                            'd' => 8,
                            's' => 16,
                            _ => return Err(format!("scope '{s}': unknown permission '{c}'")),
                        };
                    }
                    b
                }
            };
            if ty.is_empty() {
                return Err(format!("scope '{s}' names no resource type"));
            }
            *by_type.entry(ty.to_owned()).or_default() |= bits;
        }
        Ok(Scopes { by_type })
    }

    /// Whether `perm` on `resource_type` is granted.
    pub fn allows(&self, resource_type: &str, perm: Perm) -> bool {
        let bit = perm.bit();
        self.by_type
            .get(resource_type)
            .is_some_and(|b| b & bit != 0)
            || self.by_type.get("*").is_some_and(|b| b & bit != 0)
    }

    /// What both grant.
    pub fn intersect(&self, other: &Scopes) -> Scopes {
        let mut by_type = HashMap::new();
        let types: Vec<&String> = self.by_type.keys().chain(other.by_type.keys()).collect();
        for t in types {
            let mine = self.by_type.get(t).copied().unwrap_or(0)
                | self.by_type.get("*").copied().unwrap_or(0);
            let theirs = other.by_type.get(t).copied().unwrap_or(0)
                | other.by_type.get("*").copied().unwrap_or(0);
            let both = mine & theirs;
            if both != 0 {
                by_type.insert(t.clone(), both);
            }
        }
        Scopes { by_type }
    }

    /// As a SMART v2 scope string (sorted).
    pub fn render(&self) -> String {
        let mut parts: Vec<String> = self
            .by_type
            .iter()
            .map(|(t, b)| {
                let letters: String = [
                    Perm::Create,
                    Perm::Read,
                    Perm::Update,
                    Perm::Delete,
                    Perm::Search,
                ]
                .into_iter()
                .filter(|p| b & p.bit() != 0)
                .map(Perm::letter)
                .collect();
                format!("system/{t}.{letters}")
            })
            .collect();
        parts.sort();
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_letters_and_v1_words_grant_what_they_say() {
        let s = Scopes::parse("system/Task.cruds system/Subscription.rs openid").expect("parse");
        assert!(s.allows("Task", Perm::Delete));
        assert!(s.allows("Subscription", Perm::Search));
        assert!(!s.allows("Subscription", Perm::Create));
        assert!(!s.allows("Patient", Perm::Read));
        let v1 = Scopes::parse("system/*.read system/Task.write").expect("parse");
        assert!(v1.allows("Patient", Perm::Read) && v1.allows("Patient", Perm::Search));
        assert!(!v1.allows("Patient", Perm::Create));
        assert!(v1.allows("Task", Perm::Update));
    }

    #[test]
    fn malformed_scopes_are_refused() {
        assert!(Scopes::parse("system/Task").is_err());
        assert!(Scopes::parse("system/Task.xyz").is_err());
        assert!(Scopes::parse("system/.r").is_err());
    }

    #[test]
    fn a_token_gets_only_what_both_the_request_and_the_registration_allow() {
        let registered = Scopes::parse("system/Task.rs system/Subscription.cruds").expect("p");
        let asked = Scopes::parse("system/*.cruds").expect("p");
        let granted = registered.intersect(&asked);
        assert!(granted.allows("Task", Perm::Read));
        assert!(!granted.allows("Task", Perm::Create));
        assert!(!granted.allows("Patient", Perm::Read));
        assert_eq!(granted.render(), "system/Subscription.cruds system/Task.rs");
    }
}
