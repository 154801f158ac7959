//! Keys with a schema (`key_format = "avro"`): the valid and curated topics' keys as
//! Confluent-framed Avro records of the primary key's field(s).
//!
//! - [`key_schema`]: the key record's schema, derived from the stream's value schema: one field
//!   per `primary_key` pointer, named by the pointer's last member name, typed as the value
//!   schema types that member (`string`, `int`, `long`, an enum, or a logical type on them such
//!   as `uuid`, `date` or `timestamp-micros`; a nullable member loses its `null`). The record is
//!   named `<value record full name>Key` (`intake.sim.OrderKey`), and the text is a pure
//!   function of the key fields' names and types: a value schema that evolves without touching
//!   them yields the same text, hence the same registry id, hence the same key bytes.
//! - [`KeyFields::json`]: a record's key fields as a JSON object text built from the record's
//!   raw member values (no tree is built), which the stage encodes with a
//!   [`Validator`](super::Validator) of the key schema — the same converter as values, so a key
//!   field is converted exactly as its value field is.
//! - [`KeyFields::text`]: the key as text (a one-field key: its value; a composite key: the
//!   fields' values joined by `/`, for logs and claim-check references).
//!
//! The default `key_format = "string"` does not use this module: its key stays the primary
//! key's UTF-8 text, byte for byte as before.

use std::borrow::Cow;

use apache_avro::Schema;
use serde_json::Value as Json;

use super::error::{DriftKind, RecordError};
use super::split::{JsonPointer, PointerError, members, resolve};
use crate::config::PrimaryKey;

/// A stream's key fields: where each is in a record and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFields {
    fields: Vec<(String, JsonPointer)>,
    /// The distinct top-level members the pointers start with (one scan finds them all).
    top: Vec<String>,
}

impl KeyFields {
    /// The key fields of a primary key.
    ///
    /// # Errors
    /// A pointer that does not parse or is empty.
    pub fn new(pk: &PrimaryKey) -> Result<Self, PointerError> {
        let mut fields = Vec::new();
        let mut top: Vec<String> = Vec::new();
        for p in pk.pointers() {
            let pointer = JsonPointer::parse(p)?;
            let (Some(first), Some(leaf)) = (pointer.tokens().first(), pointer.tokens().last())
            else {
                return Err(PointerError::EmptyFieldPointer("primary key"));
            };
            if !top.contains(first) {
                top.push(first.clone());
            }
            fields.push((leaf.clone(), pointer));
        }
        Ok(Self { fields, top })
    }

    /// The key fields' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    /// The raw JSON value of every key field of `record`, in order.
    ///
    /// # Errors
    /// `missing_key` naming the field when one is absent or null; `malformed_json` when the
    /// record is not a JSON object.
    pub fn raw_values<'a>(&self, record: &'a str) -> Result<Vec<&'a str>, RecordError> {
        let malformed = |e: serde_json::Error| RecordError::malformed(&e, record.as_bytes());
        let wanted: Vec<&str> = self.top.iter().map(String::as_str).collect();
        let found = members(record, &wanted).map_err(malformed)?;
        let mut out = Vec::with_capacity(self.fields.len());
        for (_, pointer) in &self.fields {
            let tokens = pointer.tokens();
            let start = self
                .top
                .iter()
                .position(|t| *t == tokens[0])
                .and_then(|i| found[i])
                .map(serde_json::value::RawValue::get);
            let raw = resolve(start, &tokens[1..]).map_err(malformed)?;
            match raw.map(str::trim) {
                None => {
                    return Err(RecordError::at(
                        DriftKind::MissingKey,
                        pointer.field_path(),
                        "is absent",
                    ));
                }
                Some("null") => {
                    return Err(RecordError::at(
                        DriftKind::MissingKey,
                        pointer.field_path(),
                        "is null",
                    ));
                }
                Some(v) => out.push(v),
            }
        }
        Ok(out)
    }

    /// The key object's JSON text (`{"customer_id":"cus_1","id":"ord_1"}`) from the fields' raw
    /// values (as [`KeyFields::raw_values`] returns them).
    pub fn json(&self, raw_values: &[&str]) -> String {
        let mut out =
            String::with_capacity(2 + raw_values.iter().map(|v| v.len() + 16).sum::<usize>());
        out.push('{');
        for (i, ((name, _), v)) in self.fields.iter().zip(raw_values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Json::from(name.as_str()).to_string());
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        out
    }

    /// The key object's JSON text of a webhook **delete** event (`event`, parsed): the key
    /// fields from its `data` when that holds them all, else — for a one-field key — the value
    /// at `entity_id` (the event's entity id pointer).
    ///
    /// # Errors
    /// `missing_key` when neither gives the key: a composite key needs every field in `data`.
    pub fn delete_json(&self, event: &Json, entity_id: &str) -> Result<String, RecordError> {
        let data = event
            .get("data")
            .filter(|d| d.is_object())
            .map(Json::to_string);
        if let Some(values) = data.as_deref().and_then(|d| self.raw_values(d).ok()) {
            return Ok(self.json(&values));
        }
        match event.pointer(entity_id).filter(|v| !v.is_null()) {
            Some(id) if self.fields.len() == 1 => Ok(self.json(&[id.to_string().as_str()])),
            _ => Err(RecordError::at(
                DriftKind::MissingKey,
                "data",
                format!(
                    "a delete event of a stream whose primary key has the fields {} needs them in its `data`{}",
                    self.names().collect::<Vec<_>>().join(", "),
                    if self.fields.len() == 1 {
                        " or an entity id"
                    } else {
                        ""
                    }
                ),
            )),
        }
    }

    /// The key fields by name as text (a string as is, anything else as its JSON text).
    pub fn texts(&self, raw_values: &[&str]) -> Vec<(String, String)> {
        self.fields
            .iter()
            .zip(raw_values)
            .map(|((name, _), v)| (name.clone(), raw_text(v).into_owned()))
            .collect()
    }

    /// The key as one text: a one-field key's value; a composite key's values joined by `/`.
    pub fn text(&self, raw_values: &[&str]) -> String {
        raw_values
            .iter()
            .map(|v| raw_text(v))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// A decoded key record's fields by name as text, as [`KeyFields::texts`] gives them for the
/// JSON the key was made from (strings and integers exactly; enums by symbol; other logical
/// types as their number). `None` when the value is not a record of such fields.
pub fn decoded_texts(key: &apache_avro::types::Value) -> Option<Vec<(String, String)>> {
    use apache_avro::types::Value as A;
    let A::Record(fields) = key else {
        return None;
    };
    fields
        .iter()
        .map(|(name, v)| {
            let text = match v {
                A::String(s) => s.clone(),
                A::Enum(_, s) => s.clone(),
                A::Uuid(u) => u.to_string(),
                A::Int(n) | A::Date(n) | A::TimeMillis(n) => n.to_string(),
                A::Long(n)
                | A::TimeMicros(n)
                | A::TimestampMillis(n)
                | A::TimestampMicros(n)
                | A::TimestampNanos(n) => n.to_string(),
                _ => return None,
            };
            Some((name.clone(), text))
        })
        .collect()
}

/// A raw JSON value as text: a string unescaped, anything else as written.
fn raw_text(raw: &str) -> Cow<'_, str> {
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).map_or(Cow::Borrowed(raw), Cow::Owned)
    } else {
        Cow::Borrowed(raw)
    }
}

/// The key record's schema text for a stream whose value schema is `value` and whose key
/// fields are `pk` (see the module documentation).
///
/// # Errors
/// The value schema is not a record, a key pointer names no field of it (or passes through a
/// non-record), or a key field's type cannot be a key; the message names the field.
pub fn key_schema(value: &Schema, pk: &PrimaryKey) -> Result<String, String> {
    let Schema::Record(root) = value else {
        return Err("the value schema is not a record, so it has no key fields".into());
    };
    let mut fields = Vec::new();
    for p in pk.pointers() {
        let pointer = JsonPointer::parse(p).map_err(|e| e.to_string())?;
        let mut record = root;
        let tokens = pointer.tokens();
        let mut found = None;
        for (i, token) in tokens.iter().enumerate() {
            let field = record
                .fields
                .iter()
                .find(|f| f.name == *token)
                .ok_or_else(|| {
                    format!(
                        "key field `{}`: the value schema `{}` has no field `{token}`",
                        pointer.field_path(),
                        record.name.fullname(None)
                    )
                })?;
            let schema = non_null(&field.schema);
            if i + 1 == tokens.len() {
                found = Some(schema);
            } else if let Schema::Record(inner) = schema {
                record = inner;
            } else {
                return Err(format!(
                    "key field `{}`: `{token}` is not a record in the value schema",
                    pointer.field_path()
                ));
            }
        }
        let schema = found.ok_or_else(|| format!("key pointer `{p}` names no field"))?;
        let allowed = matches!(
            schema,
            Schema::String
                | Schema::Int
                | Schema::Long
                | Schema::Uuid(_)
                | Schema::Date
                | Schema::TimeMillis
                | Schema::TimeMicros
                | Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::Enum(_)
        );
        if !allowed {
            return Err(format!(
                "key field `{}` is of type {:?}; a key field is a string, int, long, enum or a logical type on them",
                pointer.field_path(),
                apache_avro::schema::SchemaKind::from(schema)
            ));
        }
        let leaf = tokens.last().cloned().unwrap_or_default();
        let ty = serde_json::to_value(schema).map_err(|e| e.to_string())?;
        fields.push(serde_json::json!({ "name": leaf, "type": ty }));
    }
    let mut key = serde_json::json!({
        "type": "record",
        "name": format!("{}Key", root.name.name()),
        "fields": fields,
    });
    if let Some(ns) = root.name.namespace() {
        key["namespace"] = Json::from(ns);
    }
    Ok(key.to_string())
}

/// A nullable type's other branch (`["null", "string"]` → `string`); any other type as is.
fn non_null(s: &Schema) -> &Schema {
    match s {
        Schema::Union(u) => {
            let branches: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|b| !matches!(b, Schema::Null))
                .collect();
            match branches.as_slice() {
                [one] => one,
                _ => s,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Validator;

    fn pk(ps: &[&str]) -> PrimaryKey {
        PrimaryKey::new(ps.iter().map(|p| (*p).to_owned()).collect())
    }

    const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"intake.sim","fields":[
        {"name":"id","type":"string"},
        {"name":"customer_id","type":["null","string"],"default":null},
        {"name":"line","type":"int"},
        {"name":"seq","type":"long"},
        {"name":"day","type":{"type":"int","logicalType":"date"}},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["a","b"]}},
        {"name":"amount","type":"double"},
        {"name":"meta","type":{"type":"record","name":"Meta","fields":[{"name":"tenant","type":"string"}]}}
    ]}"#;

    fn encode(value: &str, pk: &PrimaryKey, record: &str) -> Result<Vec<u8>, RecordError> {
        let value = Schema::parse_str(value).unwrap();
        let key = Schema::parse_str(&key_schema(&value, pk).unwrap()).unwrap();
        let fields = KeyFields::new(pk).unwrap();
        let raw = fields.raw_values(record)?;
        Validator::new(&key)
            .unwrap()
            .encode(&serde_json::from_str(&fields.json(&raw)).unwrap())
    }

    fn decode(value: &str, pk: &PrimaryKey, datum: &[u8]) -> apache_avro::types::Value {
        let value = Schema::parse_str(value).unwrap();
        let key = Schema::parse_str(&key_schema(&value, pk).unwrap()).unwrap();
        apache_avro::reader::datum::GenericDatumReader::builder(&key)
            .build()
            .and_then(|r| r.read_value(&mut &datum[..]))
            .unwrap()
    }

    #[test]
    fn a_composite_key_is_a_record_of_its_fields_typed_as_in_the_value_schema() {
        use apache_avro::types::Value as A;
        let k = pk(&[
            "/customer_id",
            "/id",
            "/line",
            "/seq",
            "/day",
            "/at",
            "/status",
            "/meta/tenant",
        ]);
        let text = key_schema(&Schema::parse_str(ORDER).unwrap(), &k).unwrap();
        let parsed: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["name"], "OrderKey");
        assert_eq!(parsed["namespace"], "intake.sim");
        let names: Vec<&str> = parsed["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "customer_id",
                "id",
                "line",
                "seq",
                "day",
                "at",
                "status",
                "tenant"
            ]
        );
        // The nullable member is required in the key.
        assert_eq!(parsed["fields"][0]["type"], "string");
        let record = r#"{"id":"ord_1","seq":9007199254740993,"customer_id":"cus_\u00e9","line":-3,
            "day":"2024-03-01","at":"2024-03-01T00:00:00.000001Z","status":"b","amount":1.5,
            "meta":{"tenant":"t1"}}"#;
        let datum = encode(ORDER, &k, record).unwrap();
        let A::Record(fields) = decode(ORDER, &k, &datum) else {
            panic!("a record")
        };
        assert_eq!(
            fields,
            vec![
                ("customer_id".into(), A::String("cus_é".into())),
                ("id".into(), A::String("ord_1".into())),
                ("line".into(), A::Int(-3)),
                ("seq".into(), A::Long(9_007_199_254_740_993)),
                ("day".into(), A::Date(19_783)),
                ("at".into(), A::TimestampMicros(1_709_251_200_000_001)),
                ("status".into(), A::Enum(1, "b".into())),
                ("tenant".into(), A::String("t1".into())),
            ]
        );
        // Field order is the pointers' order, not the record's: the bytes are exactly the
        // fields' encodings one after the other.
        let two = pk(&["/customer_id", "/id"]);
        let datum = encode(ORDER, &two, record).unwrap();
        assert_eq!(
            datum,
            [&[12][..], "cus_é".as_bytes(), &[10], b"ord_1"].concat()
        );
    }

    #[test]
    fn the_key_schema_depends_only_on_the_key_fields() {
        let k = pk(&["/customer_id", "/id"]);
        let a = key_schema(&Schema::parse_str(ORDER).unwrap(), &k).unwrap();
        let evolved = ORDER.replace(
            r#"{"name":"amount","type":"double"},"#,
            r#"{"name":"amount","type":"double"},{"name":"note","type":["null","string"],"default":null},"#,
        );
        let b = key_schema(&Schema::parse_str(&evolved).unwrap(), &k).unwrap();
        assert_eq!(
            a, b,
            "an evolution of other fields keeps the key schema's text"
        );
    }

    #[test]
    fn keys_that_cannot_be_made_are_refused_naming_the_field() {
        let k = pk(&["/customer_id", "/id"]);
        let fields = KeyFields::new(&k).unwrap();
        let err = fields.raw_values(r#"{"id":"o"}"#).unwrap_err();
        assert_eq!(
            (err.kind, err.field.as_deref()),
            (DriftKind::MissingKey, Some("customer_id"))
        );
        let err = fields
            .raw_values(r#"{"id":"o","customer_id":null}"#)
            .unwrap_err();
        assert_eq!(err.kind, DriftKind::MissingKey);
        // A value the key field's type does not take: the converter's own error.
        let err = encode(ORDER, &pk(&["/line"]), r#"{"line":"x"}"#).unwrap_err();
        assert_eq!(
            (err.kind, err.field.as_deref()),
            (DriftKind::TypeMismatch, Some("line"))
        );
        // Schemas that cannot key: no such field, a double, a record.
        let value = Schema::parse_str(ORDER).unwrap();
        for (p, want) in [
            ("/nope", "has no field `nope`"),
            ("/amount", "key field `amount` is of type Double"),
            ("/meta", "key field `meta` is of type Record"),
            ("/id/x", "`id` is not a record"),
        ] {
            let e = key_schema(&value, &pk(&[p])).unwrap_err();
            assert!(e.contains(want), "{p}: {e}");
        }
    }

    #[test]
    fn a_delete_event_is_keyed_by_its_data_or_for_one_field_by_its_entity_id() {
        let composite = KeyFields::new(&pk(&["/customer_id", "/id"])).unwrap();
        let single = KeyFields::new(&pk(&["/id"])).unwrap();
        let event = |data: &str| -> Json {
            serde_json::from_str(&format!(
                r#"{{"type":"deleted","entity_id":"ord_1","seq":3,"data":{data}}}"#
            ))
            .unwrap()
        };
        let with_data = event(r#"{"id":"ord_1","customer_id":"cus_9","version":3}"#);
        assert_eq!(
            composite.delete_json(&with_data, "/entity_id").unwrap(),
            r#"{"customer_id":"cus_9","id":"ord_1"}"#
        );
        assert_eq!(
            single.delete_json(&with_data, "/entity_id").unwrap(),
            r#"{"id":"ord_1"}"#
        );
        // Without data: the entity id keys a one-field key; a composite key cannot be made.
        let bare = event("null");
        assert_eq!(
            single.delete_json(&bare, "/entity_id").unwrap(),
            r#"{"id":"ord_1"}"#
        );
        let err = composite.delete_json(&bare, "/entity_id").unwrap_err();
        assert_eq!(
            (err.kind, err.field.as_deref()),
            (DriftKind::MissingKey, Some("data"))
        );
        assert!(err.detail.contains("customer_id, id"), "{}", err.detail);
        let partial = event(r#"{"id":"ord_1"}"#);
        assert!(composite.delete_json(&partial, "/entity_id").is_err());
        // An integer entity id stays a number (for an int or long key field).
        let numeric: Json = serde_json::from_str(r#"{"entity_id":42,"data":null}"#).unwrap();
        assert_eq!(
            single.delete_json(&numeric, "/entity_id").unwrap(),
            r#"{"id":42}"#
        );
        // Encoded with the key schema, a delete's key has the bytes of the record's key.
        let value = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"customer_id","type":"string"}]}"#;
        let k = pk(&["/customer_id", "/id"]);
        let key = Schema::parse_str(&key_schema(&Schema::parse_str(value).unwrap(), &k).unwrap())
            .unwrap();
        let v = Validator::new(&key).unwrap();
        let from_delete = v
            .encode(
                &serde_json::from_str(&composite.delete_json(&with_data, "/entity_id").unwrap())
                    .unwrap(),
            )
            .unwrap();
        let record = r#"{"id":"ord_1","customer_id":"cus_9"}"#;
        let from_record = v
            .encode(
                &serde_json::from_str(&composite.json(&composite.raw_values(record).unwrap()))
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(from_delete, from_record);
    }

    #[test]
    fn key_texts_name_each_field() {
        let fields = KeyFields::new(&pk(&["/customer_id", "/line"])).unwrap();
        let raw = fields
            .raw_values(r#"{"line":7,"customer_id":"c\"1"}"#)
            .unwrap();
        assert_eq!(raw, [r#""c\"1""#, "7"]);
        assert_eq!(fields.text(&raw), "c\"1/7");
        assert_eq!(
            fields.texts(&raw),
            [
                ("customer_id".into(), "c\"1".into()),
                ("line".into(), "7".into())
            ]
        );
        assert_eq!(fields.json(&raw), r#"{"customer_id":"c\"1","line":7}"#);
    }
}
