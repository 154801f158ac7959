//! Schema evolution: a BACKWARD-compatible candidate schema from records that drifted.
//!
//! [`propose`] serves the `evolve` drift policy (one drifted record at a time) and
//! `intake schema propose` (DLQ samples). It walks each sample along the current schema and:
//!
//! - adds each member the schema lacks as an optional field, `["null", T]` with
//!   `"default": null`, where T is inferred from every sample: integers → `long`, numbers with a
//!   fraction (or integers mixed with them) → `double`, strings → `string`, or the logical type
//!   `timestamp-micros` when every string is an RFC 3339 timestamp (unless integers need the
//!   union's `long`), `date` when every string is an ISO 8601 date (`2024-03-01`); objects →
//!   a new record (named after the field, in the enclosing record's namespace; all its fields
//!   optional too), objects whose
//!   member names are not Avro names → `map`, arrays → `array` of the merged item type, mixed
//!   types → a union of them (`["null", "long", "string"]`);
//! - appends unknown enum symbols to their enum, in sorted order, keeping its `default`;
//! - reports everything it cannot propose compatibly as a *blocker*, with why: a type change of
//!   an existing field, a required field absent or null in samples, a member or symbol that is
//!   not a valid Avro name. Those need a human (or a fix upstream).
//!
//! New fields are never required, even when every sample has them: a required field without a
//! default would not be BACKWARD compatible (a reader of the new version could not read data
//! written with the current one). The change list says so.
//!
//! The candidate is produced as JSON from the current schema's own serialisation (which keeps
//! field defaults, enum defaults, docs, aliases and custom attributes; `Schema::canonical_form`
//! would drop them), then parsed back and checked with apache-avro's
//! `SchemaCompatibility::can_read(current, candidate)` before it is returned. The registry has the
//! last word on compatibility when the lead registers it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde_json::{Map, Value as Json, json};

use super::convert::{date_days, json_kind};
use super::error::SchemaError;
use super::split::rfc3339_nanos;

mod edit;
mod observe;
mod types;

use edit::*;
use observe::*;
use types::*;

/// A candidate schema and what it changes.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The candidate as pretty-printed JSON (defaults kept), ready to register.
    pub schema_json: String,
    /// The candidate, parsed.
    pub schema: Schema,
    /// Human-readable changes, in a deterministic order. Empty when the samples need none.
    pub changes: Vec<String>,
    /// What the samples need that cannot be proposed as a BACKWARD-compatible change, and why.
    /// Sorted, without duplicates.
    pub blockers: Vec<String>,
}

impl Proposal {
    /// Whether the candidate differs from the current schema.
    pub fn changes_schema(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Whether the candidate accounts for every drift in the samples: something changes and
    /// nothing is blocked. The `evolve` policy registers only such a proposal.
    pub fn is_complete(&self) -> bool {
        self.changes_schema() && self.blockers.is_empty()
    }
}

/// Proposes a BACKWARD-compatible evolution of `current` (a record schema) that accepts the
/// `samples` (JSON records that failed validation against it).
///
/// # Errors
///
/// [`SchemaError::NotARecord`] if `current` is not a record; [`SchemaError::Avro`] if the
/// candidate does not parse or is not compatible (a bug here, not a property of the samples).
pub fn propose(current: &Schema, samples: &[Json]) -> Result<Proposal, SchemaError> {
    let Schema::Record(_) = current else {
        return Err(SchemaError::NotARecord(current.to_string()));
    };
    let mut observer = Observer::new(current);
    for (i, sample) in samples.iter().enumerate() {
        if sample.is_object() {
            observer.walk(current, sample, None, "");
        } else {
            observer.blockers.insert(format!(
                "sample {i} is not a JSON object, so it cannot be a record"
            ));
        }
    }

    let mut doc = serde_json::to_value(current).map_err(|e| SchemaError::Avro(e.to_string()))?;
    let mut changes = Vec::new();
    let mut names = observer.names.clone();
    let edits = observer.edits(&mut names, &mut changes);
    apply(&mut doc, None, &edits);

    let mut schema_json = String::new();
    pretty(&doc, 0, &mut schema_json);
    let schema = Schema::parse_str(&schema_json)
        .map_err(|e| SchemaError::Avro(format!("the candidate does not parse: {e}")))?;
    SchemaCompatibility::can_read(current, &schema)
        .map_err(|e| SchemaError::Avro(format!("the candidate is not BACKWARD compatible: {e}")))?;
    Ok(Proposal {
        schema_json,
        schema,
        changes,
        blockers: observer.blockers.into_iter().collect(),
    })
}

/// A first schema for a stream that has none, inferred from `samples` (its landed records): a
/// record `name` in `namespace` whose fields are every top-level member seen, typed as
/// [`propose`] types new fields, all optional — except the `required` members (the primary key
/// and the version), which must be present and non-null in every sample and are required, with
/// their null branch removed.
///
/// # Errors
/// As [`propose`]; [`SchemaError::Avro`] when `name` or `namespace` is not a valid Avro name.
pub fn first(
    name: &str,
    namespace: &str,
    samples: &[Json],
    required: &[&str],
) -> Result<Proposal, SchemaError> {
    let empty =
        serde_json::json!({"type": "record", "name": name, "namespace": namespace, "fields": []});
    let empty = Schema::parse(&empty).map_err(|e| SchemaError::Avro(e.to_string()))?;
    let mut p = propose(&empty, samples)?;
    let mut doc: Json =
        serde_json::from_str(&p.schema_json).map_err(|e| SchemaError::Avro(e.to_string()))?;
    let mut blockers: BTreeSet<String> = p.blockers.iter().cloned().collect();
    for field in required {
        let missing = samples
            .iter()
            .filter(|s| s.get(*field).is_none_or(Json::is_null))
            .count();
        if missing > 0 {
            blockers.insert(format!(
                "`{field}` (primary key or version) is absent or null in {missing} of {} samples, so it cannot be required",
                samples.len()
            ));
            continue;
        }
        let Some(f) = doc["fields"]
            .as_array_mut()
            .and_then(|fs| fs.iter_mut().find(|f| f["name"] == *field))
        else {
            continue;
        };
        if let Some(branches) = f["type"].as_array() {
            let kept: Vec<Json> = branches.iter().filter(|b| *b != "null").cloned().collect();
            f["type"] = if kept.len() == 1 {
                kept[0].clone()
            } else {
                Json::Array(kept)
            };
        }
        if let Some(obj) = f.as_object_mut() {
            obj.remove("default");
        }
    }
    let fields = doc["fields"].as_array().map_or(0, Vec::len);
    let mut schema_json = String::new();
    pretty(&doc, 0, &mut schema_json);
    p.schema = Schema::parse_str(&schema_json)
        .map_err(|e| SchemaError::Avro(format!("the first schema does not parse: {e}")))?;
    p.schema_json = schema_json;
    p.changes = vec![format!(
        "a first schema `{namespace}.{name}` with {fields} fields, from {} samples; required: {}; every other field optional (null by default)",
        samples.len(),
        required.join(", ")
    )];
    p.blockers = blockers.into_iter().collect();
    Ok(p)
}

/// [`first`] for a configured stream: the record is named after the stream (`line_items` →
/// `LineItems`) in the namespace `intake.<source>`, and its primary key and version members are
/// required (when their pointers name top-level members).
///
/// # Errors
/// As [`first`].
pub fn first_for(
    source: &str,
    stream: &crate::config::StreamConfig,
    samples: &[Json],
) -> Result<Proposal, SchemaError> {
    let required: Vec<String> = stream
        .primary_key
        .pointers()
        .iter()
        .map(|p| top_level(p))
        .chain([stream.version.as_deref().and_then(top_level)])
        .flatten()
        .collect();
    let required: Vec<&str> = required.iter().map(String::as_str).collect();
    first(
        &avro_name(&stream.name),
        &format!("intake.{}", avro_name(source).to_lowercase()),
        samples,
        &required,
    )
}

/// The member a one-token JSON pointer names (`/id` → `id`); None for deeper ones.
fn top_level(pointer: &str) -> Option<String> {
    let p = super::split::JsonPointer::parse(pointer).ok()?;
    match p.tokens() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// An Avro name from a stream or source name: `line_items` → `LineItems`.
fn avro_name(s: &str) -> String {
    let mut out = String::new();
    for part in s.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.push(c.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'S');
    }
    out
}

#[cfg(test)]
#[allow(deprecated)] // to_avro_datum/from_avro_datum: the reference the brief names.
mod tests {
    use super::*;
    use crate::validate::convert::Validator;

    #[test]
    fn stream_names_become_avro_names() {
        assert_eq!(avro_name("line_items"), "LineItems");
        assert_eq!(avro_name("orders"), "Orders");
        assert_eq!(avro_name("2fa-events"), "S2faEvents");
        assert_eq!(avro_name("--"), "S");
        assert_eq!(top_level("/id").as_deref(), Some("id"));
        assert_eq!(top_level("/meta/id"), None);
    }

    #[test]
    fn a_first_schema_requires_key_and_version_and_accepts_every_sample() {
        let samples: Vec<Json> = (0..30)
            .map(|i| {
                let mut v = json!({
                    "id": format!("r{i}"),
                    "updated_at": format!("2024-05-{:02}T10:00:00Z", 1 + i % 28),
                    "amount": i * 100,
                    "ratio": 0.5,
                    "paid": i % 2 == 0,
                    "day": "2024-03-01",
                    "address": {"city": "Oslo", "zip": "0150"},
                    "tags": ["a", "b"],
                });
                if i % 3 == 0 {
                    v["note"] = json!(null);
                } else {
                    v["note"] = json!("text");
                }
                v
            })
            .collect();
        let p = first("Wide", "intake.test", &samples, &["id", "updated_at"]).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let doc: Json = serde_json::from_str(&p.schema_json).unwrap();
        let field = |n: &str| {
            doc["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == n)
                .unwrap_or_else(|| panic!("no field {n}: {doc}"))
                .clone()
        };
        assert_eq!(field("id")["type"], json!("string"));
        assert!(field("id").get("default").is_none());
        assert_eq!(
            field("updated_at")["type"],
            json!({"type": "long", "logicalType": "timestamp-micros"})
        );
        assert_eq!(field("amount")["type"], json!(["null", "long"]));
        assert_eq!(field("note")["default"], json!(null));
        assert_eq!(doc["fields"].as_array().unwrap().len(), 9);
        let v = Validator::new(&p.schema).unwrap();
        for s in &samples {
            v.convert(s).unwrap();
        }
        // A record without its key is not accepted; nor is a key that some sample lacks.
        assert!(
            v.convert(&json!({"updated_at": "2024-05-01T10:00:00Z"}))
                .is_err()
        );
        let mut gappy = samples.clone();
        gappy[3].as_object_mut().unwrap().remove("updated_at");
        let p = first("Wide", "intake.test", &gappy, &["id", "updated_at"]).unwrap();
        assert_eq!(p.blockers.len(), 1, "{:?}", p.blockers);
        assert!(p.blockers[0].contains("`updated_at`"), "{:?}", p.blockers);
    }
    use apache_avro::types::Value as AvroValue;
    use apache_avro::{from_avro_datum, to_avro_datum};

    const CUSTOMER: &str = r#"{
      "type": "record", "name": "Customer", "namespace": "crm",
      "fields": [
        {"name": "id", "type": "string"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["active", "inactive", "unknown"], "default": "unknown"}},
        {"name": "address", "type": ["null", {"type": "record", "name": "Address", "fields": [
          {"name": "city", "type": "string"}
        ]}], "default": null},
        {"name": "score", "type": "long", "default": 0, "doc": "kept"}
      ]
    }"#;

    fn current() -> Schema {
        Schema::parse_str(CUSTOMER).unwrap()
    }

    fn field<'a>(schema: &'a Json, path: &[&str]) -> &'a Json {
        let mut record = schema;
        let mut found = &Json::Null;
        for (i, name) in path.iter().enumerate() {
            found = record["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == *name)
                .unwrap();
            if i + 1 < path.len() {
                record = match &found["type"] {
                    Json::Array(variants) => variants.iter().find(|v| v.is_object()).unwrap(),
                    other => other,
                };
            }
        }
        found
    }

    #[test]
    fn unknown_field_becomes_optional_and_old_data_reads_with_the_new_schema() {
        let sample = json!({"id": "c1", "status": "active", "country": "FR", "score": 3});
        let old = current();
        let p = propose(&old, std::slice::from_ref(&sample)).unwrap();
        assert_eq!(
            p.changes,
            [
                "added optional field `country` of type [\"null\",\"string\"] with default null (present in every \
              sample, but added as optional: a required field without a default would not be BACKWARD compatible)"
            ]
        );
        assert!(p.blockers.is_empty());
        assert!(p.is_complete());
        let doc: Json = serde_json::from_str(&p.schema_json).unwrap();
        assert_eq!(
            field(&doc, &["country"]),
            &json!({"name": "country", "type": ["null", "string"], "default": null})
        );
        // Defaults, docs and the enum default survive.
        assert_eq!(
            field(&doc, &["score"]),
            &json!({"name": "score", "type": "long", "default": 0, "doc": "kept"})
        );
        assert_eq!(
            field(&doc, &["status"])["type"]["default"],
            json!("unknown")
        );
        let reparsed = Schema::parse_str(&p.schema_json).unwrap();
        assert_eq!(reparsed.canonical_form(), p.schema.canonical_form());

        // Data written with the current schema reads with the candidate as reader.
        let old_value = Validator::new(&old)
            .unwrap()
            .convert(&json!({"id": "c0", "status": "active"}))
            .unwrap();
        let bytes = to_avro_datum(&old, old_value).unwrap();
        let read = from_avro_datum(&old, &mut &bytes[..], Some(&p.schema)).unwrap();
        let AvroValue::Record(fields) = read else {
            panic!()
        };
        assert_eq!(
            fields.last().unwrap(),
            &(
                "country".to_owned(),
                AvroValue::Union(0, Box::new(AvroValue::Null))
            )
        );

        // And the drifted sample now validates.
        assert!(Validator::new(&old).unwrap().convert(&sample).is_err());
        assert!(Validator::new(&p.schema).unwrap().convert(&sample).is_ok());
    }

    #[test]
    fn new_enum_symbol_is_appended_keeping_the_default() {
        let samples = [
            json!({"id": "1", "status": "suspended"}),
            json!({"id": "2", "status": "archived"}),
            json!({"id": "3", "status": "suspended"}),
        ];
        let p = propose(&current(), &samples).unwrap();
        assert_eq!(
            p.changes,
            [
                "appended symbols \"archived\", \"suspended\" to enum crm.Status (field `status`); its default \
              \"unknown\" is kept, so readers of older versions read new symbols as it"
            ]
        );
        let doc: Json = serde_json::from_str(&p.schema_json).unwrap();
        assert_eq!(
            field(&doc, &["status"])["type"],
            json!({"type": "enum", "namespace": "crm", "name": "Status", "symbols": ["active", "inactive", "unknown", "archived", "suspended"], "default": "unknown"})
        );
        let old = current();
        let old_value = Validator::new(&old)
            .unwrap()
            .convert(&json!({"id": "0", "status": "inactive"}))
            .unwrap();
        let bytes = to_avro_datum(&old, old_value).unwrap();
        let AvroValue::Record(fields) =
            from_avro_datum(&old, &mut &bytes[..], Some(&p.schema)).unwrap()
        else {
            panic!()
        };
        assert_eq!(fields[1].1, AvroValue::Enum(1, "inactive".to_owned()));
        for sample in &samples {
            assert!(Validator::new(&p.schema).unwrap().convert(sample).is_ok());
        }
    }

    #[test]
    fn nested_objects_mixed_types_and_nested_records() {
        let samples = [
            json!({"id": "1", "status": "active", "address": {"city": "Lyon", "geo": {"lat": 45, "lon": 4.8}},
                   "tags": ["a"], "n": 1, "v": "x", "labels": {"a b": 1}}),
            json!({"id": "2", "status": "active", "n": 2.5, "v": 3, "tags": [], "maybe": null}),
        ];
        let p = propose(&current(), &samples).unwrap();
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let doc: Json = serde_json::from_str(&p.schema_json).unwrap();
        assert_eq!(field(&doc, &["n"])["type"], json!(["null", "double"]));
        assert_eq!(
            field(&doc, &["v"])["type"],
            json!(["null", "long", "string"])
        );
        assert_eq!(
            field(&doc, &["tags"])["type"],
            json!(["null", {"type": "array", "items": "string"}])
        );
        assert_eq!(field(&doc, &["maybe"])["type"], json!(["null", "string"]));
        assert_eq!(
            field(&doc, &["labels"])["type"],
            json!(["null", {"type": "map", "values": "long"}])
        );
        assert_eq!(
            field(&doc, &["address", "geo"]),
            &json!({"name": "geo", "default": null, "type": ["null", {"type": "record", "name": "Geo", "namespace": "crm", "fields": [
                {"name": "lat", "type": ["null", "long"], "default": null},
                {"name": "lon", "type": ["null", "double"], "default": null}]}]})
        );
        assert_eq!(
            p.changes,
            [
                "added optional field `address.geo` of type [\"null\",{\"fields\":[{\"default\":null,\"name\":\"lat\",\"type\":[\"null\",\"long\"]},{\"default\":null,\"name\":\"lon\",\"type\":[\"null\",\"double\"]}],\"name\":\"Geo\",\"namespace\":\"crm\",\"type\":\"record\"}] with default null (present in every sample, but added as optional: a required field without a default would not be BACKWARD compatible)",
                "added optional field `labels` of type [\"null\",{\"type\":\"map\",\"values\":\"long\"}] with default null",
                "added optional field `maybe` of type [\"null\",\"string\"] with default null (only null seen, so the type is a guess: string)",
                "added optional field `n` of type [\"null\",\"double\"] with default null (present in every sample, but added as optional: a required field without a default would not be BACKWARD compatible)",
                "added optional field `tags` of type [\"null\",{\"items\":\"string\",\"type\":\"array\"}] with default null (present in every sample, but added as optional: a required field without a default would not be BACKWARD compatible)",
                "added optional field `v` of type [\"null\",\"long\",\"string\"] with default null (present in every sample, but added as optional: a required field without a default would not be BACKWARD compatible)",
            ]
        );
        let v = Validator::new(&p.schema).unwrap();
        for sample in &samples {
            v.convert(sample).unwrap();
        }
    }

    #[test]
    fn incompatible_needs_are_blockers_not_changes() {
        let samples = [
            json!({"id": 5, "status": "active"}),
            json!({"status": "active", "score": "high", "bad-name": 1}),
            json!({"id": "x", "status": "not valid!", "address": {"city": null}}),
            json!(["not", "a", "record"]),
        ];
        let p = propose(&current(), &samples).unwrap();
        assert!(p.changes.is_empty());
        assert!(!p.is_complete());
        assert_eq!(
            p.blockers,
            [
                "enum symbol \"not valid!\" at `status` is not a valid Avro name ([A-Za-z_][A-Za-z0-9_]*)",
                "field `id` is string, and samples hold integer: changing the type of an existing field is not proposed (it breaks readers of the current version); fix upstream, or evolve the schema by hand",
                "field `score` is long, and samples hold string: changing the type of an existing field is not proposed (it breaks readers of the current version); fix upstream, or evolve the schema by hand",
                "new member \"bad-name\" of `the record` is not a valid Avro field name ([A-Za-z_][A-Za-z0-9_]*)",
                "required field `address.city` is null in samples: making it optional changes its type, which is not proposed; fix upstream, or give it a default by hand",
                "required field `id` is absent in samples: making it optional changes its type, which is not proposed; fix upstream, or give it a default by hand",
                "sample 3 is not a JSON object, so it cannot be a record",
            ]
        );
        assert_eq!(p.schema.canonical_form(), current().canonical_form());
    }

    #[test]
    fn candidate_text_is_readable_and_keeps_defaults() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["a"]},"default":"a"}]}"#,
        )
        .unwrap();
        let p = propose(&schema, &[json!({"e": "b", "x": 1})]).unwrap();
        assert_eq!(
            p.schema_json,
            r#"{
  "type": "record",
  "name": "R",
  "fields": [
    {
      "name": "e",
      "type": {
        "type": "enum",
        "name": "E",
        "symbols": ["a", "b"]
      },
      "default": "a"
    },
    {
      "name": "x",
      "type": ["null", "long"],
      "default": null
    }
  ]
}"#
        );
    }

    #[test]
    fn fields_added_through_a_reference_land_in_the_definition() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"Order","namespace":"shop","fields":[
                {"name":"ship","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}},
                {"name":"bill","type":["null","Address"],"default":null}]}"#,
        )
        .unwrap();
        let sample = json!({"ship": {"city": "a"}, "bill": {"city": "b", "zip": "75001"}});
        let p = propose(&schema, std::slice::from_ref(&sample)).unwrap();
        assert_eq!(
            p.changes,
            ["added optional field `bill.zip` of type [\"null\",\"string\"] with default null"]
        );
        let doc: Json = serde_json::from_str(&p.schema_json).unwrap();
        assert_eq!(
            field(&doc, &["ship", "zip"]),
            &json!({"name": "zip", "type": ["null", "string"], "default": null})
        );
        assert_eq!(
            field(&doc, &["bill"])["type"],
            json!(["null", "shop.Address"])
        );
        Validator::new(&p.schema).unwrap().convert(&sample).unwrap();
    }

    #[test]
    fn timestamp_and_date_strings_get_logical_types() {
        let samples = [
            json!({"id": "1", "status": "active", "shipped_at": "2024-03-01T13:45:01.250Z",
                   "birthday": "1990-02-28", "label": "2024-03-01", "mixed": "2024-03-01T00:00:00Z",
                   "tags": ["2024-01-01T00:00:00+01:00"]}),
            json!({"id": "2", "status": "active", "shipped_at": "2024-03-02T00:00:00+02:00",
                   "birthday": null, "label": "soon", "mixed": 7}),
        ];
        let p = propose(&current(), &samples).unwrap();
        assert!(p.is_complete(), "{:?}", p.blockers);
        let doc: Json = serde_json::from_str(&p.schema_json).unwrap();
        let ty = |name: &str| field(&doc, &[name])["type"].clone();
        let micros = json!({"type": "long", "logicalType": "timestamp-micros"});
        assert_eq!(ty("shipped_at"), json!(["null", micros]));
        assert_eq!(
            ty("birthday"),
            json!(["null", {"type": "int", "logicalType": "date"}])
        );
        // Not every string a date: a string. Integers too: the union's long is taken, so the
        // timestamps stay strings.
        assert_eq!(ty("label"), json!(["null", "string"]));
        assert_eq!(ty("mixed"), json!(["null", "long", "string"]));
        assert_eq!(
            ty("tags"),
            json!(["null", {"type": "array", "items": micros}])
        );
        assert!(
            p.changes
                .iter()
                .any(|c| c.starts_with("added optional field `shipped_at`")
                    && c.contains("every `shipped_at` string is an RFC 3339 timestamp")),
            "{:?}",
            p.changes
        );
        // The candidate converts the samples: the strings become their instants and days.
        let v = Validator::new(&p.schema).unwrap();
        let AvroValue::Record(fields) = v.convert(&samples[0]).unwrap() else {
            panic!("a record")
        };
        let get = |name: &str| fields.iter().find(|(f, _)| f == name).unwrap().1.clone();
        assert_eq!(
            get("shipped_at"),
            AvroValue::Union(
                1,
                Box::new(AvroValue::TimestampMicros(1_709_300_701_250_000))
            )
        );
        assert_eq!(
            get("birthday"),
            AvroValue::Union(1, Box::new(AvroValue::Date(7_363)))
        );
        v.convert(&samples[1]).unwrap();
    }

    #[test]
    fn fitting_samples_change_nothing_and_names_do_not_collide() {
        let p = propose(
            &current(),
            &[json!({"id": "1", "status": "active", "address": {"city": "x"}})],
        )
        .unwrap();
        assert!(!p.changes_schema());
        assert!(p.blockers.is_empty());
        // A new object field called `address` inside Address must not reuse the name crm.Address.
        let p = propose(&current(), &[json!({"id": "1", "status": "active", "address": {"city": "x", "address": {"line": "1"}}})]).unwrap();
        let doc: Json = serde_json::from_str(&p.schema_json).unwrap();
        assert_eq!(
            field(&doc, &["address", "address"])["type"][1]["name"],
            json!("Address2")
        );
        assert!(propose(&Schema::String, &[]).is_err());
    }
}
