#!/usr/bin/env python3
"""Generates Herald's compact FHIR definition tables from the official HL7 definitions (CC0).

Usage: scripts/gen-fhir-definitions.py SOURCE_DIR VERSION OUT_FILE

SOURCE_DIR holds the official JSON definitions of one FHIR version, in either form the
specification publishes them: the bundles of `definitions.json.zip` (profiles-resources.json,
profiles-types.json, valuesets.json) or one file per StructureDefinition / ValueSet / CodeSystem
(the `*.profile.json`, `valueset-*.json`, `codesystem-*.json` files of the spec's downloads). Every
*.json below SOURCE_DIR is read; Bundles are opened.

The table (read by crates/herald-fhir/src/definitions) has one record a line, fields separated by
one space:
  V <fhirVersion>
  P <primitive type>                      a primitive type
  T <type> <C|R>                          a complex type or a resource; its elements follow
  E <path> <min> <1|*> <types> [<vs>]     an element (path without the type name; `.` between
                                          levels). types: `|`-separated type codes, `@` for an
                                          element with children of its own (BackboneElement),
                                          `#<Type>.<path>` for a contentReference.
                                          vs: the id of a required value set (codes below).
  S <vs> <code> <code> ...                the codes of a required value set that can be enumerated
Only the base definitions (derivation specialization, plus Element/Resource) are kept; profiles
(constraints) are not Herald's business. Required bindings are kept for elements of type `code`
whose value set lists its codes or includes whole CodeSystems given here (no filters, no other
value sets by reference beyond one level), so validation never guesses at a terminology.
"""
import json
import os
import sys

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


def load(src):
    out = []
    for root, _dirs, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(root, name), encoding="utf-8") as f:
                try:
                    res = json.load(f)
                except ValueError:
                    continue
            if not isinstance(res, dict):
                continue
            if res.get("resourceType") == "Bundle":
                out.extend(e["resource"] for e in res.get("entry", []) if "resource" in e)
            else:
                out.append(res)
    return out


def type_code(t):
    for ext in t.get("extension", []):
        if ext.get("url") == FHIR_TYPE_EXT:
            return ext.get("valueUrl") or ext.get("valueUri")
    code = t["code"]
    return SYSTEM_TYPES.get(code, code)


def canonical(url):
    return url.split("|", 1)[0]


def codes_of_system(cs):
    found = []

    def walk(concepts):
        for c in concepts:
            found.append(c["code"])
            walk(c.get("concept", []))

    walk(cs.get("concept", []))
    return found


def expand(vs, codesystems, valuesets, depth=0):
    """The codes of `vs`, or None when they cannot be enumerated from what is here."""
    if depth > 3:
        return None
    compose = vs.get("compose")
    if not compose or "exclude" in compose:
        return None
    codes = []
    for inc in compose.get("include", []):
        if "filter" in inc:
            return None
        part = None
        if "concept" in inc:
            part = [c["code"] for c in inc["concept"]]
        elif "system" in inc:
            cs = codesystems.get(inc["system"])
            if cs is None or cs.get("content") not in (None, "complete"):
                return None
            part = codes_of_system(cs)
        for ref in inc.get("valueSet", []):
            inner = valuesets.get(canonical(ref))
            sub = expand(inner, codesystems, valuesets, depth + 1) if inner else None
            if sub is None:
                return None
            part = sub if part is None else [c for c in part if c in set(sub)]
        if not part:
            return None
        codes.extend(part)
    return codes or None


def main():
    src, version, out_file = sys.argv[1], sys.argv[2], sys.argv[3]
    resources = load(src)
    sds = {}
    codesystems = {}
    valuesets = {}
    for r in resources:
        rt = r.get("resourceType")
        if rt == "StructureDefinition":
            if r.get("derivation", "specialization") != "specialization":
                continue
            if r.get("kind") not in ("primitive-type", "complex-type", "resource"):
                continue
            if "snapshot" not in r:
                continue
            # type == id for the base definitions; profiles of a type have other ids.
            if r.get("type") != r.get("id") and r.get("id") not in ("Element", "Resource"):
                continue
            sds[r["type"]] = r
        elif rt == "CodeSystem":
            codesystems[r["url"]] = r
        elif rt == "ValueSet":
            valuesets[r["url"]] = r

    lines = [f"V {version}"]
    primitives = sorted(t for t, sd in sds.items() if sd["kind"] == "primitive-type")
    for p in primitives:
        lines.append(f"P {p}")
    used_vs = {}
    vs_ids = {}
    for tname in sorted(sds):
        sd = sds[tname]
        if sd["kind"] == "primitive-type" or sd.get("abstract") and tname not in ("Element", "BackboneElement"):
            continue
        kind = "R" if sd["kind"] == "resource" else "C"
        lines.append(f"T {tname} {kind}")
        elements = sd["snapshot"]["element"]
        parents = {e["path"] for e in elements}
        for e in elements[1:]:
            path = e["path"]
            if ":" in e.get("id", ""):
                continue  # slices: the base element covers them
            rel = path.split(".", 1)[1]
            has_children = any(p.startswith(path + ".") for p in parents)
            if "contentReference" in e:
                types = "#" + e["contentReference"].lstrip("#").split("#")[-1]
            elif has_children:
                types = "@"
            else:
                codes = []
                for t in e.get("type", []):
                    c = type_code(t)
                    if c not in codes:
                        codes.append(c)
                if not codes:
                    continue
                types = "|".join(codes)
            fields = [f"E {rel}", str(e.get("min", 0)), "1" if e.get("max") == "1" else "*", types]
            if e.get("max") == "0":
                continue  # prohibited in the base: not an element at all
            b = e.get("binding")
            if b and b.get("strength") == "required" and "valueSet" in b and "code" in types.split("|"):
                url = canonical(b["valueSet"])
                if url not in vs_ids and url in valuesets:
                    codes = expand(valuesets[url], codesystems, valuesets)
                    if codes:
                        vid = valuesets[url].get("id") or str(len(vs_ids))
                        vs_ids[url] = vid
                        used_vs[vid] = sorted(set(codes))
                if url in vs_ids:
                    fields.append(vs_ids[url])
            lines.append(" ".join(fields))
    for vid in sorted(used_vs):
        codes = [c for c in used_vs[vid] if " " not in c]
        lines.append("S " + vid + " " + " ".join(codes))
    with open(out_file, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
