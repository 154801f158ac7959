//! Test support shared by the unit tests and the fuzz targets (a separate crate that links
//! this library): configs written from the few lines a test cares about, and the fixtures
//! more than one of them checks against. Nothing in the stages uses it.

use crate::config::{Config, StreamConfig};

/// The config of `body` (TOML) behind the `[kafka]` table every config needs, naming a broker
/// that is never dialled.
///
/// # Panics
///
/// If the text is not a valid config.
pub fn config(body: &str) -> Config {
    Config::from_toml(&format!("[kafka]\nbrokers = \"x:1\"\n{body}")).unwrap()
}

/// A `[[sources]]` table (TOML) of source `name` at `base_url`, with `extra` lines in it.
pub fn source_toml(name: &str, base_url: &str, extra: &str) -> String {
    format!("[[sources]]\nname = \"{name}\"\nbase_url = \"{base_url}\"\n{extra}\n")
}

/// A `[[sources.streams]]` table (TOML) of stream `name` at `path`, keyed by `/id` and
/// versioned by `/v`, with `extra` lines in it.
pub fn stream_toml(name: &str, path: &str, extra: &str) -> String {
    format!(
        "[[sources.streams]]\nname = \"{name}\"\npath = \"{path}\"\nprimary_key = \"/id\"\nversion = \"/v\"\n{extra}\n"
    )
}

/// Stream `a` (path `/v1/a`, with `extra` lines) of a config whose only source, `s`, is at
/// `base_url`.
///
/// # Panics
///
/// If the text is not a valid config.
pub fn stream(base_url: &str, extra: &str) -> StreamConfig {
    let cfg = config(&format!(
        "{}{}",
        source_toml("s", base_url, ""),
        stream_toml("a", "/v1/a", extra)
    ));
    cfg.sources[0].streams[0].clone()
}

/// An Avro record schema with every kind of field the JSON → Avro converter maps: primitives,
/// an enum, an optional string, a nested and a named-again record, arrays, a map, bytes and a
/// timestamp (the converter's unit tests and the `convert` fuzz target read records of it).
pub const ORDER_SCHEMA: &str = r#"{
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
