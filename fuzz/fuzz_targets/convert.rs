//! The JSON → Avro conversion (`src/validate/convert.rs`) on arbitrary records.
//!
//! Input: the first byte picks a schema, the rest is the raw record. Never panics; the one-pass
//! raw path (`encode_raw_into`, the stage's hot path) gives exactly what the tree walk gives
//! (`encode_into` on the parsed record): the same value or the same error, and a failure leaves
//! the output buffer as it was; what it encodes decodes with apache-avro to `convert`'s value.
#![no_main]

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use intake::validate::{DriftKind, Validator};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A record with every kind of field the converter maps (the unit tests' order).
const ORDER: &str = r#"{
  "type": "record", "name": "Order", "namespace": "shop",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "qty", "type": "int"},
    {"name": "total", "type": "long"},
    {"name": "price", "type": "double"},
    {"name": "weight", "type": "float"},
    {"name": "paid", "type": "boolean"},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["active", "inactive"]}},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "address", "type": {"type": "record", "name": "Address", "fields": [
      {"name": "city", "type": "string"},
      {"name": "zip", "type": ["null", "string"], "default": null}
    ]}},
    {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
      {"name": "sku", "type": "string"},
      {"name": "n", "type": "int", "default": 1}
    ]}}},
    {"name": "attrs", "type": {"type": "map", "values": "string"}, "default": {}},
    {"name": "blob", "type": "bytes", "default": ""},
    {"name": "billing", "type": ["null", "Address"], "default": null},
    {"name": "created", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
  ]
}"#;

/// Ambiguous unions, a recursive type, fixed, uuid and dates.
const TRICKY: &str = r#"{
  "type": "record", "name": "Node",
  "fields": [
    {"name": "n", "type": ["int", "long", "double"]},
    {"name": "s", "type": ["null", "string", "boolean"], "default": null},
    {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 4}, "default": "abcd"},
    {"name": "u", "type": [{"type": "string", "logicalType": "uuid"}, "null"], "default": "00000000-0000-0000-0000-000000000000"},
    {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null},
    {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
    {"name": "kids", "type": {"type": "array", "items": "Node"}, "default": []},
    {"name": "next", "type": ["null", "Node"], "default": null},
    {"name": "m", "type": {"type": "map", "values": ["null", "long", "string"]}, "default": {}}
  ]
}"#;

/// The customers schema of the simulator, as shipped.
const CUSTOMERS: &str = include_str!("../../topics/schemas/sim/customers.avsc");

fn validators() -> &'static [(Schema, Validator)] {
    static V: OnceLock<Vec<(Schema, Validator)>> = OnceLock::new();
    V.get_or_init(|| {
        [ORDER, TRICKY, CUSTOMERS]
            .iter()
            .map(|text| {
                let schema = Schema::parse_str(text).unwrap();
                let v = Validator::new(&schema).unwrap();
                (schema, v)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let all = validators();
    let (schema, v) = &all[usize::from(pick) % all.len()];

    let mut raw_out = vec![0xA5];
    let raw_result = v.encode_raw_into(raw, &mut raw_out);
    match serde_json::from_slice::<Value>(raw) {
        Ok(record) => {
            let mut tree_out = vec![0xA5];
            let tree_result = v.encode_into(&record, &mut tree_out);
            assert_eq!(raw_result, tree_result, "raw path and tree walk disagree");
            assert_eq!(raw_result, v.convert_raw(raw).map(|_| ()));
            if raw_result.is_ok() {
                // The same value (map entries may come in another order: the raw path keeps
                // the record's, the tree its sorted keys).
                let value = v.convert(&record).expect("encodes, so converts");
                for out in [&raw_out, &tree_out] {
                    assert_eq!(out[0], 0xA5, "what was in the buffer stays");
                    let decoded = GenericDatumReader::builder(schema)
                        .build()
                        .unwrap()
                        .read_value(&mut &out[1..])
                        .expect("what we encode decodes");
                    assert_eq!(decoded, value);
                }
                let mut via_apache = Vec::new();
                v.encoder()
                    .unwrap()
                    .encode_value(&value, &mut via_apache)
                    .expect("apache-avro takes the converted value");
            }
        }
        Err(_) => {
            let e = raw_result
                .as_ref()
                .expect_err("the raw path accepted what is not JSON");
            assert_eq!(e.kind, DriftKind::MalformedJson, "{e}");
            assert_eq!(raw_out, [0xA5], "a failure leaves the buffer alone");
        }
    }
    if raw_result.is_err() {
        assert_eq!(raw_out, [0xA5], "a failure leaves the buffer alone");
    }
});
