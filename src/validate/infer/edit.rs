//! Applying the inferred additions to the schema document, and printing it in the schema
//! files' layout.

use super::*;

/// Additions to apply to the schema JSON, by full name.
#[derive(Default)]
pub(super) struct Edits {
    pub(super) fields: BTreeMap<String, Vec<Json>>,
    pub(super) symbols: BTreeMap<String, Vec<String>>,
}

/// Applies edits to the schema JSON (as apache-avro serialises it: named types defined once,
/// referenced by full name afterwards).
pub(super) fn apply(doc: &mut Json, ns: Option<&str>, edits: &Edits) {
    match doc {
        Json::Array(variants) => {
            for v in variants {
                apply(v, ns, edits);
            }
        }
        Json::Object(o) => {
            let kind = o
                .get("type")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned();
            let full = || {
                let name = o.get("name").and_then(Json::as_str).unwrap_or_default();
                if name.contains('.') {
                    return name.to_owned();
                }
                match o.get("namespace").and_then(Json::as_str).or(ns) {
                    Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
                    _ => name.to_owned(),
                }
            };
            match kind.as_str() {
                "record" => {
                    let full = full();
                    let inner_ns = full.rsplit_once('.').map(|(ns, _)| ns.to_owned());
                    if let Some(Json::Array(fields)) = o.get_mut("fields") {
                        for field in fields.iter_mut() {
                            if let Some(ty) = field.get_mut("type") {
                                apply(ty, inner_ns.as_deref(), edits);
                            }
                        }
                        if let Some(added) = edits.fields.get(&full) {
                            fields.extend(added.iter().cloned());
                        }
                    }
                }
                "enum" => {
                    let full = full();
                    if let (Some(added), Some(Json::Array(symbols))) =
                        (edits.symbols.get(&full), o.get_mut("symbols"))
                    {
                        symbols.extend(added.iter().map(|s| Json::String(s.clone())));
                    }
                }
                "array" => {
                    if let Some(items) = o.get_mut("items") {
                        apply(items, ns, edits);
                    }
                }
                "map" => {
                    if let Some(values) = o.get_mut("values") {
                        apply(values, ns, edits);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Where an attribute goes in [`pretty`]'s output: the order people write schemas in. A record
/// field starts with its name, a type definition with its type.
pub(super) fn key_rank(key: &str, is_field: bool) -> usize {
    const TYPE: [&str; 12] = [
        "type",
        "name",
        "namespace",
        "logicalType",
        "doc",
        "aliases",
        "size",
        "symbols",
        "items",
        "values",
        "fields",
        "default",
    ];
    const FIELD: [&str; 5] = ["name", "type", "doc", "aliases", "default"];
    let order: &[&str] = if is_field { &FIELD } else { &TYPE };
    order.iter().position(|k| *k == key).unwrap_or(order.len())
}

/// Pretty JSON with schema attributes in a readable order (serde_json's map sorts keys
/// alphabetically, which would put `default` before `name` and `fields` before `type`).
/// Arrays of strings (symbols, simple unions) stay on one line.
pub(super) fn pretty(value: &Json, indent: usize, out: &mut String) {
    pretty_in(value, indent, false, out);
}

pub(super) fn pretty_in(value: &Json, indent: usize, is_field: bool, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Json::Object(o) if !o.is_empty() => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_by_key(|k| (key_rank(k, is_field), k.as_str()));
            out.push_str("{\n");
            for (i, key) in keys.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&Json::String((*key).clone()).to_string());
                out.push_str(": ");
                match (key.as_str(), &o[key.as_str()]) {
                    ("fields", Json::Array(fields)) => {
                        out.push_str("[\n");
                        for (j, f) in fields.iter().enumerate() {
                            out.push_str(&pad(indent + 2));
                            pretty_in(f, indent + 2, true, out);
                            out.push_str(if j + 1 < fields.len() { ",\n" } else { "\n" });
                        }
                        out.push_str(&pad(indent + 1));
                        out.push(']');
                    }
                    (_, value) => pretty_in(value, indent + 1, false, out),
                }
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        Json::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                pretty_in(item, indent + 1, false, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(Json::to_string).collect();
            out.push('[');
            out.push_str(&items.join(", "));
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
