//! Owns the element definitions of the FHIR core (R4 4.0.1, R4B 4.3.0, R5 5.0.0) that validation
//! walks: which elements each resource and data type has, their types, cardinality and required
//! code bindings.
//!
//! The tables in `data/definitions/<fhirVersion>.txt` are generated from the official HL7
//! StructureDefinitions and ValueSets (CC0) by `scripts/gen-fhir-definitions.py`; the format is
//! described there. They are embedded and parsed once per version on first use (a few ms), so a
//! release of FHIR is a data change, not a code change. The tables are keyed by the
//! `fhirVersion` string rather than by [`crate::FhirVersion`] so that a version can be served as
//! soon as its table exists.

pub(crate) mod primitive;

use std::collections::HashMap;
use std::sync::OnceLock;

pub(crate) use primitive::Prim;

static R4_TABLE: &str = include_str!("../data/definitions/4.0.1.txt");
static R4B_TABLE: &str = include_str!("../data/definitions/4.3.0.txt");
static R5_TABLE: &str = include_str!("../data/definitions/5.0.0.txt");

/// The `fhirVersion` strings that have definitions.
pub const FHIR_VERSIONS: [&str; 3] = ["4.0.1", "4.3.0", "5.0.0"];

/// The definitions of one FHIR version, or `None` for a version without a table.
pub fn for_fhir_version(fhir_version: &str) -> Option<&'static Definitions> {
    static CELLS: [OnceLock<Option<Definitions>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (cell, table) = match fhir_version {
        "4.0.1" => (&CELLS[0], R4_TABLE),
        "4.3.0" => (&CELLS[1], R4B_TABLE),
        "5.0.0" => (&CELLS[2], R5_TABLE),
        _ => return None,
    };
    cell.get_or_init(|| Definitions::parse(table).ok()).as_ref()
}

/// The element definitions of one FHIR version.
#[derive(Debug)]
pub struct Definitions {
    version: &'static str,
    types: HashMap<&'static str, TypeDef>,
    pub(crate) nodes: Vec<Node>,
    value_sets: Vec<(&'static str, Vec<&'static str>)>,
    /// The node of `Element` (`id`, `extension`): what a primitive's `_name` sibling holds.
    pub(crate) element_node: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct TypeDef {
    pub node: u32,
    pub resource: bool,
}

/// An element with children: a resource, a complex type or a backbone element.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// By JSON property name; a choice `value[x]` is listed under each `valueString`, ….
    pub children: HashMap<String, Child>,
    /// Names of the elements with min ≥ 1, indexed by [`Child::required`].
    pub required: Vec<&'static str>,
}

#[derive(Clone, Debug)]
pub(crate) struct Child {
    pub many: bool,
    pub kind: Kind,
    /// Bit in the node's presence mask when the element is required.
    pub required: Option<u8>,
    /// Index into the value sets when a required binding applies.
    pub value_set: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Primitive(Prim),
    /// A complex type or backbone element: its node.
    Node(u32),
    /// Any resource (`contained`, `Bundle.entry.resource`), typed by its `resourceType`.
    Resource,
}

/// The table could not be read (a generator or embedding bug; tests load every table).
#[derive(Debug)]
pub struct TableError(pub String);

impl Definitions {
    /// The `fhirVersion` of these definitions.
    pub fn fhir_version(&self) -> &'static str {
        self.version
    }

    /// Is `name` a resource type defined here?
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.types.get(name).is_some_and(|t| t.resource)
    }

    /// The resource types defined here (unordered).
    pub fn resource_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types
            .iter()
            .filter(|(_, t)| t.resource)
            .map(|(name, _)| *name)
    }

    /// Does the element at `path` (element names below the resource, no indices) of
    /// `resource_type` repeat? `None` when the path is not defined (or crosses into a nested
    /// resource, whose type the path does not say).
    pub fn element_repeats(&self, resource_type: &str, path: &[&str]) -> Option<bool> {
        let mut node = self.types.get(resource_type)?.node;
        let mut many = None;
        for name in path {
            let child = self.nodes.get(node as usize)?.children.get(*name)?;
            many = Some(child.many);
            node = match child.kind {
                Kind::Node(n) => n,
                Kind::Primitive(_) | Kind::Resource => u32::MAX,
            };
        }
        many
    }

    pub(crate) fn type_def(&self, name: &str) -> Option<TypeDef> {
        self.types.get(name).copied()
    }

    pub(crate) fn value_set(&self, index: u32) -> (&'static str, &[&'static str]) {
        match self.value_sets.get(index as usize) {
            Some((id, codes)) => (id, codes),
            None => ("", &[]),
        }
    }

    /// The codes of the required value set `id`, when the table has it.
    pub fn value_set_codes(&self, id: &str) -> Option<&[&'static str]> {
        self.value_sets
            .iter()
            .find(|(vid, _)| *vid == id)
            .map(|(_, c)| c.as_slice())
    }

    fn parse(table: &'static str) -> Result<Self, TableError> {
        let bad = |line: &str| TableError(format!("bad definitions line: {line}"));
        let mut version = "";
        let mut primitives: HashMap<&'static str, Prim> = HashMap::new();
        let mut types: HashMap<&'static str, TypeDef> = HashMap::new();
        let mut nodes: Vec<Node> = Vec::new();
        // First pass: primitive names, type roots and value sets, so elements can name types
        // defined further down.
        let mut vs_index: HashMap<&'static str, u32> = HashMap::new();
        let mut value_sets = Vec::new();
        for line in table.lines() {
            let mut f = line.split(' ');
            match f.next() {
                Some("V") => version = f.next().ok_or_else(|| bad(line))?,
                Some("P") => {
                    let name = f.next().ok_or_else(|| bad(line))?;
                    primitives.insert(name, Prim::for_type(name));
                }
                Some("T") => {
                    let name = f.next().ok_or_else(|| bad(line))?;
                    let resource = f.next() == Some("R");
                    let node = u32::try_from(nodes.len()).map_err(|_| bad(line))?;
                    nodes.push(Node::default());
                    types.insert(name, TypeDef { node, resource });
                }
                Some("S") => {
                    let id = f.next().ok_or_else(|| bad(line))?;
                    let mut codes: Vec<&'static str> = f.collect();
                    codes.sort_unstable();
                    let index = u32::try_from(value_sets.len()).map_err(|_| bad(line))?;
                    vs_index.insert(id, index);
                    value_sets.push((id, codes));
                }
                _ => {}
            }
        }
        // Second pass: elements.
        let mut current: Option<&'static str> = None;
        let mut backbones: HashMap<(&'static str, &'static str), u32> = HashMap::new();
        let mut content_refs: Vec<(u32, &'static str, &'static str, &'static str)> = Vec::new();
        for line in table.lines() {
            let mut f = line.split(' ');
            match f.next() {
                Some("T") => current = f.next(),
                Some("E") => {
                    let tname = current.ok_or_else(|| bad(line))?;
                    let root = types.get(tname).ok_or_else(|| bad(line))?.node;
                    let path = f.next().ok_or_else(|| bad(line))?;
                    let min = f.next().ok_or_else(|| bad(line))?;
                    let many = f.next().ok_or_else(|| bad(line))? == "*";
                    let type_codes = f.next().ok_or_else(|| bad(line))?;
                    let value_set = f.next().and_then(|id| vs_index.get(id).copied());
                    let (parent, name) = match path.rsplit_once('.') {
                        None => (root, path),
                        Some((p, n)) => (*backbones.get(&(tname, p)).ok_or_else(|| bad(line))?, n),
                    };
                    let required = if min != "0" {
                        let list = &mut nodes[parent as usize].required;
                        let bit = u8::try_from(list.len()).ok().filter(|b| *b < 64);
                        list.push(name.trim_end_matches("[x]"));
                        bit
                    } else {
                        None
                    };
                    let add = |nodes: &mut Vec<Node>, key: String, kind: Kind| {
                        nodes[parent as usize].children.insert(
                            key,
                            Child {
                                many,
                                kind,
                                required,
                                value_set,
                            },
                        );
                    };
                    if type_codes == "@" {
                        let node = u32::try_from(nodes.len()).map_err(|_| bad(line))?;
                        nodes.push(Node::default());
                        backbones.insert((tname, path), node);
                        add(&mut nodes, name.to_owned(), Kind::Node(node));
                    } else if let Some(target) = type_codes.strip_prefix('#') {
                        let (ttype, tpath) = target.split_once('.').ok_or_else(|| bad(line))?;
                        content_refs.push((parent, name, ttype, tpath));
                        add(&mut nodes, name.to_owned(), Kind::Resource);
                    } else if let Some(stem) = name.strip_suffix("[x]") {
                        for code in type_codes.split('|') {
                            let kind =
                                kind_of(code, &primitives, &types).ok_or_else(|| bad(line))?;
                            add(&mut nodes, format!("{stem}{}", capitalised(code)), kind);
                        }
                    } else {
                        let code = type_codes.split('|').next().unwrap_or(type_codes);
                        let kind = kind_of(code, &primitives, &types).ok_or_else(|| bad(line))?;
                        add(&mut nodes, name.to_owned(), kind);
                    }
                }
                _ => {}
            }
        }
        for (parent, name, ttype, tpath) in content_refs {
            let node = *backbones.get(&(ttype, tpath)).ok_or_else(|| {
                TableError(format!("unresolved contentReference #{ttype}.{tpath}"))
            })?;
            if let Some(child) = nodes[parent as usize].children.get_mut(name) {
                child.kind = Kind::Node(node);
            }
        }
        let element_node = types
            .get("Element")
            .ok_or_else(|| TableError("no Element definition".into()))?
            .node;
        Ok(Definitions {
            version,
            types,
            nodes,
            value_sets,
            element_node,
        })
    }
}

fn kind_of(
    code: &str,
    primitives: &HashMap<&'static str, Prim>,
    types: &HashMap<&'static str, TypeDef>,
) -> Option<Kind> {
    if code == "Resource" {
        return Some(Kind::Resource);
    }
    if let Some(p) = primitives.get(code) {
        return Some(Kind::Primitive(*p));
    }
    types.get(code).map(|t| Kind::Node(t.node))
}

fn capitalised(code: &str) -> String {
    let mut c = code.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FhirVersion, resource_types};

    #[test]
    fn every_table_loads_and_names_its_version() {
        for v in FHIR_VERSIONS {
            let defs = for_fhir_version(v).expect("table loads");
            assert_eq!(defs.fhir_version(), v);
        }
        assert!(for_fhir_version("3.0.2").is_none());
    }

    #[test]
    fn every_resource_type_herald_accepts_has_a_definition() {
        for version in [FhirVersion::R4, FhirVersion::R5] {
            let defs = for_fhir_version(version.fhir_version()).expect("table");
            for rt in resource_types(version) {
                assert!(defs.is_resource_type(rt), "{rt} in {version}");
            }
            assert_eq!(defs.resource_types().count(), resource_types(version).len());
        }
    }

    #[test]
    fn element_repeats_follows_backbone_elements() {
        let defs = for_fhir_version("4.0.1").expect("table");
        assert_eq!(defs.element_repeats("Task", &["note"]), Some(true));
        assert_eq!(defs.element_repeats("Task", &["owner"]), Some(false));
        assert_eq!(
            defs.element_repeats("Task", &["input", "valueString"]),
            Some(false)
        );
        assert_eq!(defs.element_repeats("Task", &["nope"]), None);
    }

    #[test]
    fn workflow_value_sets_are_enumerated() {
        for v in FHIR_VERSIONS {
            let defs = for_fhir_version(v).expect("table");
            for vs in [
                "task-status",
                "task-intent",
                "request-status",
                "request-intent",
                "subscription-status",
            ] {
                assert!(
                    defs.value_set_codes(vs).is_some_and(|c| !c.is_empty()),
                    "{vs} in {v}"
                );
            }
            assert!(
                defs.value_set_codes("task-status")
                    .is_some_and(|c| c.contains(&"requested"))
            );
        }
    }

    #[test]
    fn every_primitive_type_has_a_known_format() {
        for v in FHIR_VERSIONS {
            let table = match v {
                "4.0.1" => R4_TABLE,
                "4.3.0" => R4B_TABLE,
                _ => R5_TABLE,
            };
            for line in table.lines().filter(|l| l.starts_with("P ")) {
                let name = &line[2..];
                assert!(
                    Prim::known(name),
                    "primitive {name} of {v} has no format check"
                );
            }
        }
    }
}
