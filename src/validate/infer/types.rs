//! Avro types for what was observed: a field's type from its shape, element and record types,
//! shapes merged.

use super::*;

pub(super) fn admits_null(schema: &Schema) -> bool {
    match schema {
        Schema::Null => true,
        Schema::Union(u) => u.variants().iter().any(|v| matches!(v, Schema::Null)),
        _ => false,
    }
}

pub(super) fn type_name(schema: &Schema) -> String {
    match schema {
        Schema::Union(u) => {
            let names: Vec<String> = u.variants().iter().map(type_name).collect();
            format!("one of [{}]", names.join(", "))
        }
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Ref { name } => name.fullname(None),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| match v {
                Json::String(s) => Some(s),
                Json::Object(o) => o
                    .get("logicalType")
                    .or_else(|| o.get("type"))
                    .and_then(Json::as_str)
                    .map(str::to_owned),
                _ => None,
            })
            .unwrap_or_else(|| "an unnamed type".to_owned()),
    }
}

/// What building the types of new fields threads through every step: the namespace of the
/// record being extended, the record names taken so far (a new record gets a free one) and the
/// notes that explain each guess made.
pub(super) struct Typer<'a> {
    pub(super) ns: Option<&'a str>,
    pub(super) names: &'a mut HashSet<String>,
    pub(super) notes: &'a mut Vec<String>,
}

impl Typer<'_> {
    /// The type of a new optional field: `["null", ...]`.
    pub(super) fn field_type(&mut self, shape: &Shape, name: &str) -> Json {
        let mut variants = vec![json!("null")];
        variants.extend(self.non_null_types(shape, name));
        if variants.len() == 1 {
            self.notes
                .push("only null seen, so the type is a guess: string".to_owned());
            variants.push(json!("string"));
        }
        Json::Array(variants)
    }

    /// The non-null Avro types a shape needs, at most one per Avro kind, so they form a valid
    /// union.
    pub(super) fn non_null_types(&mut self, shape: &Shape, name: &str) -> Vec<Json> {
        let mut types = Vec::new();
        if shape.boolean {
            types.push(json!("boolean"));
        }
        if shape.float {
            types.push(json!("double"));
        } else if shape.integer {
            types.push(json!("long"));
        }
        if shape.string {
            types.push(string_type(shape, name, self.notes));
        }
        if let Some(items) = &shape.array {
            let items = self.element_type(items, name, "item");
            types.push(json!({"type": "array", "items": items}));
        }
        if let Some((members, _)) = &shape.object {
            if members.keys().all(|k| is_avro_name(k)) && !members.is_empty() {
                types.push(self.record_type(members, name));
            } else {
                let mut merged = Shape::default();
                for member in members.values() {
                    merge_shapes(&mut merged, member);
                }
                let values = self.element_type(&merged, name, "value");
                types.push(json!({"type": "map", "values": values}));
            }
        }
        types
    }

    /// The type of an array's items or a map's values (`what`): the non-null types seen, null
    /// first if seen, a union if more than one; a guessed string if no typed value was seen.
    pub(super) fn element_type(&mut self, shape: &Shape, name: &str, what: &str) -> Json {
        let mut types = self.non_null_types(shape, &format!("{name}_{what}"));
        if types.is_empty() {
            self.notes.push(format!(
                "`{name}` has no typed {what}s, so their type is a guess: string"
            ));
            types.push(json!("string"));
        }
        if shape.null {
            types.insert(0, json!("null"));
        }
        if types.len() == 1 {
            types.remove(0)
        } else {
            Json::Array(types)
        }
    }

    /// A new record for an object: every field optional with default null.
    pub(super) fn record_type(&mut self, members: &BTreeMap<String, Shape>, name: &str) -> Json {
        let base: String = {
            let mut chars = name.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        };
        let ns = self.ns;
        let full = |n: &str| ns.map_or_else(|| n.to_owned(), |ns| format!("{ns}.{n}"));
        let mut record_name = base.clone();
        let mut suffix = 2;
        while self.names.contains(&full(&record_name)) {
            record_name = format!("{base}{suffix}");
            suffix += 1;
        }
        self.names.insert(full(&record_name));
        let fields: Vec<Json> = members
            .iter()
            .map(|(field, shape)| json!({"name": field, "type": self.field_type(shape, field), "default": null}))
            .collect();
        let mut record = Map::new();
        record.insert("type".to_owned(), json!("record"));
        record.insert("name".to_owned(), json!(record_name));
        if let Some(ns) = ns {
            record.insert("namespace".to_owned(), json!(ns));
        }
        record.insert("fields".to_owned(), Json::Array(fields));
        Json::Object(record)
    }
}

/// The type of strings: a timestamp when every sample string is an RFC 3339 timestamp
/// (`timestamp-micros`, unless integers need the union's `long`), a `date` when every one is an
/// ISO 8601 date, else `string`.
pub(super) fn string_type(shape: &Shape, name: &str, notes: &mut Vec<String>) -> Json {
    let long_taken = shape.integer && !shape.float;
    if shape.timestamps == shape.strings && !long_taken {
        notes.push(format!(
            "every `{name}` string is an RFC 3339 timestamp, so timestamp-micros (digits finer \
             than microseconds are dropped)"
        ));
        json!({"type": "long", "logicalType": "timestamp-micros"})
    } else if shape.dates == shape.strings {
        notes.push(format!(
            "every `{name}` string is an ISO 8601 date, so date (days since 1970-01-01)"
        ));
        json!({"type": "int", "logicalType": "date"})
    } else {
        json!("string")
    }
}

/// Merges the observations of `other` into `into` (for map values).
pub(super) fn merge_shapes(into: &mut Shape, other: &Shape) {
    into.present += other.present;
    into.null |= other.null;
    into.boolean |= other.boolean;
    into.integer |= other.integer;
    into.float |= other.float;
    into.string |= other.string;
    into.strings += other.strings;
    into.timestamps += other.timestamps;
    into.dates += other.dates;
    if let Some(items) = &other.array {
        merge_shapes(into.array.get_or_insert_default(), items);
    }
    if let Some((members, seen)) = &other.object {
        let (into_members, into_seen) = into.object.get_or_insert_default();
        *into_seen += seen;
        for (name, shape) in members {
            merge_shapes(into_members.entry(name.clone()).or_default(), shape);
        }
    }
}
