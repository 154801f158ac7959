//! The JSON → Avro conversion (`src/validate/convert.rs`), both ways.
//!
//! Input: the first byte picks a schema; the rest is used twice.
//!
//! - As the raw bytes of a record (anything, mostly not valid for the schema). Never panics;
//!   the one-pass raw path (`encode_raw_into`, the stage's hot path) gives exactly what the
//!   tree walk gives (`encode_into` on the parsed record; for a schema with decimals, which the
//!   raw paths read from a JSON number's digits while a parsed tree holds a float, the tree
//!   walk is compared with the raw path on the record written back from the tree, and the raw
//!   path with `convert_raw`, which reads the digits too): the same value or the same error,
//!   and a failure leaves the output buffer as it was; what it encodes decodes with apache-avro
//!   to `convert`'s value.
//! - As the choices of a generator that builds, from the schema itself, a JSON record that is
//!   valid for it together with the Avro value it stands for (every type the schemas have:
//!   unions, chosen by JSON type as the converter documents, enums, arrays, maps, nested and
//!   recursive records, fixed, uuid, timestamps as integers or RFC 3339 strings, dates and
//!   times as integers or ISO strings, decimals on bytes and fixed as strings or JSON numbers,
//!   fields left out or null that take their default). Both paths must accept that record, and
//!   apache-avro must decode what they wrote to that value. A converter that refuses a valid
//!   record, or writes the wrong bytes for one, fails here even if both paths agree.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{NamesRef, ResolvedSchema, UuidSchema};
use apache_avro::types::Value as Avro;
use intake::validate::{DriftKind, Validator};
use libfuzzer_sys::arbitrary::{Result as GenResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A record with every kind of field the converter maps (the unit tests' order).
const ORDER: &str = intake::testing::ORDER_SCHEMA;

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

/// Logical types read from strings: dates, times, decimals (on bytes and on a fixed).
const LOGICAL: &str = r#"{
  "type": "record", "name": "Ledger",
  "fields": [
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "at", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "at_us", "type": ["null", {"type": "long", "logicalType": "time-micros"}], "default": null},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 9}},
    {"name": "fee", "type": ["null", {"type": "fixed", "name": "Fee", "size": 5, "logicalType": "decimal", "precision": 11, "scale": 2}], "default": null},
    {"name": "rate", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 4}},
    {"name": "lines", "type": {"type": "array", "items": "Fee"}, "default": []}
  ]
}"#;

/// The customers schema of the simulator, as shipped.
const CUSTOMERS: &str = include_str!("../../topics/schemas/sim/customers.avsc");

/// Each schema, its validator, and whether it has a decimal (which the raw paths read from a
/// JSON number's text).
fn validators() -> &'static [(Schema, Validator, bool)] {
    static V: OnceLock<Vec<(Schema, Validator, bool)>> = OnceLock::new();
    V.get_or_init(|| {
        [ORDER, TRICKY, CUSTOMERS, LOGICAL]
            .iter()
            .map(|text| {
                let schema = Schema::parse_str(text).unwrap();
                let v = Validator::new(&schema).unwrap();
                (schema, v, text.contains(r#""logicalType": "decimal""#))
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let all = validators();
    let (schema, v, decimals) = &all[usize::from(pick) % all.len()];
    generated(schema, v, raw);
    arbitrary(schema, v, *decimals, raw);
});

/// A record generated from the schema converts, and decodes to the value it was made for.
fn generated(schema: &Schema, v: &Validator, choices: &[u8]) {
    let resolved = ResolvedSchema::new(schema).unwrap();
    let mut generator = Generator {
        u: Unstructured::new(choices),
        names: resolved.get_names(),
        depth: 0,
    };
    let Ok((record, expected)) = generator.value(schema) else {
        return;
    };
    let text = serde_json::to_string(&record).unwrap();
    let mut raw_out = vec![0xA5];
    if let Err(e) = v.encode_raw_into(text.as_bytes(), &mut raw_out) {
        panic!("the converter refuses a record made from its schema: {e}\nrecord: {text}");
    }
    // The tree as the stage would have it: parsed from the text.
    let record: Value = serde_json::from_str(&text).unwrap();
    let mut tree_out = vec![0xA5];
    if let Err(e) = v.encode_into(&record, &mut tree_out) {
        panic!("the tree walk refuses a record made from its schema: {e}\nrecord: {text}");
    }
    for (path, out) in [("raw path", &raw_out), ("tree walk", &tree_out)] {
        assert_eq!(out[0], 0xA5, "what was in the buffer stays");
        let decoded = GenericDatumReader::builder(schema)
            .build()
            .unwrap()
            .read_value(&mut &out[1..])
            .unwrap_or_else(|e| panic!("{path}: what we encode decodes: {e}\nrecord: {text}"));
        assert_eq!(
            decoded, expected,
            "{path}: the datum decodes to another value\nrecord: {text}"
        );
    }
}

/// Arbitrary bytes as a record: the raw path and the tree walk agree.
fn arbitrary(schema: &Schema, v: &Validator, decimals: bool, raw: &[u8]) {
    let mut raw_out = vec![0xA5];
    let raw_result = v.encode_raw_into(raw, &mut raw_out);
    match serde_json::from_slice::<Value>(raw) {
        Ok(record) => {
            let mut tree_out = vec![0xA5];
            let tree_result = v.encode_into(&record, &mut tree_out);
            // A parsed tree holds a decimal's JSON number as a float: `encode_into` on it reads
            // the float's digits, the raw paths what was written. The tree walk sees what the
            // raw path sees when the record is written back from the tree.
            let written_back = serde_json::to_string(&record).unwrap();
            let mut back_out = vec![0xA5];
            let back_result = v.encode_raw_into(written_back.as_bytes(), &mut back_out);
            assert_eq!(back_result, tree_result, "raw path and tree walk disagree");
            if !decimals {
                assert_eq!(raw_result, tree_result, "raw path and tree walk disagree");
            }
            let converted = v.convert_raw(raw);
            assert_eq!(
                raw_result,
                converted.as_ref().map(|_| ()).map_err(Clone::clone)
            );
            if raw_result.is_ok() {
                // The same value (map entries may come in another order: the raw path keeps
                // the record's, the tree its sorted keys).
                let value = converted.expect("encodes, so converts");
                let tree_out = if decimals { &raw_out } else { &tree_out };
                for out in [&raw_out, tree_out] {
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
}

/// Builds a JSON record valid for a schema, and the Avro value it converts to, from the fuzz
/// input's bytes (each byte a choice: a branch, a length, a number). Deep recursive types end
/// in empty arrays and null branches.
struct Generator<'u, 'n> {
    u: Unstructured<'u>,
    names: &'n NamesRef<'n>,
    depth: usize,
}

/// Deeper than this, containers are empty and unions take their null branch if they have one.
const MAX_GEN_DEPTH: usize = 4;

impl Generator<'_, '_> {
    fn value(&mut self, schema: &Schema) -> GenResult<(Value, Avro)> {
        let u = &mut self.u;
        Ok(match schema {
            Schema::Null => (Value::Null, Avro::Null),
            Schema::Boolean => {
                let b: bool = u.arbitrary()?;
                (Value::Bool(b), Avro::Boolean(b))
            }
            Schema::Int => integer(u, Avro::Int)?,
            Schema::Date => {
                if u.ratio(1, 2)? {
                    // Years 0001 to 9999, as the date's text.
                    let days = u.int_in_range(-719_162..=2_932_896)?;
                    let date = time::Date::from_julian_day(days + 2_440_588).unwrap();
                    let text = format!(
                        "{:04}-{:02}-{:02}",
                        date.year(),
                        u8::from(date.month()),
                        date.day()
                    );
                    return Ok((text.into(), Avro::Date(days)));
                }
                integer(u, Avro::Date)?
            }
            Schema::TimeMillis => {
                if u.ratio(1, 2)? {
                    let (text, nanos) = time_of_day(u)?;
                    return Ok((text.into(), Avro::TimeMillis((nanos / 1_000_000) as i32)));
                }
                integer(u, Avro::TimeMillis)?
            }
            Schema::Long => integer(u, Avro::Long)?,
            Schema::TimeMicros => {
                if u.ratio(1, 2)? {
                    let (text, nanos) = time_of_day(u)?;
                    return Ok((text.into(), Avro::TimeMicros(nanos / 1_000)));
                }
                integer(u, Avro::TimeMicros)?
            }
            Schema::Decimal(d) => {
                // The unscaled value within the precision (at most 38 digits here), written
                // out by integer arithmetic at the scale; a JSON number when a float holds
                // it (the tree walk reads a parsed number's float).
                let max = 10_i128.pow(d.precision as u32) - 1;
                let unscaled = u.int_in_range(-max..=max)?;
                let digits = format!("{:0>w$}", unscaled.unsigned_abs(), w = d.scale + 1);
                let (int, frac) = digits.split_at(digits.len() - d.scale);
                let sign = if unscaled < 0 { "-" } else { "" };
                let point = if d.scale > 0 { "." } else { "" };
                let text = format!("{sign}{int}{point}{frac}");
                let json = if unscaled.unsigned_abs() < 10_u128.pow(15) && u.arbitrary()? {
                    serde_json::from_str(&text).unwrap()
                } else {
                    Value::String(text)
                };
                let avro = Avro::Decimal(apache_avro::Decimal::from(unscaled.to_be_bytes()));
                (json, avro)
            }
            Schema::LocalTimestampMillis => integer(u, Avro::LocalTimestampMillis)?,
            Schema::LocalTimestampMicros => integer(u, Avro::LocalTimestampMicros)?,
            Schema::LocalTimestampNanos => integer(u, Avro::LocalTimestampNanos)?,
            Schema::TimestampMillis => {
                let (json, i) = timestamp(u, 1_000_000)?;
                (json, Avro::TimestampMillis(i))
            }
            Schema::TimestampMicros => {
                let (json, i) = timestamp(u, 1_000)?;
                (json, Avro::TimestampMicros(i))
            }
            Schema::TimestampNanos => {
                let (json, i) = timestamp(u, 1)?;
                (json, Avro::TimestampNanos(i))
            }
            Schema::Float => {
                let x: f32 = u.arbitrary()?;
                let x = if x.is_finite() { x } else { 0.5 };
                let (json, read) = number(x.into());
                (json, Avro::Float(read as f32))
            }
            Schema::Double => {
                let x: f64 = u.arbitrary()?;
                let x = if x.is_finite() { x } else { -0.25 };
                let (json, read) = number(x);
                (json, Avro::Double(read))
            }
            Schema::String => {
                let s: String = u.arbitrary()?;
                (s.clone().into(), Avro::String(s))
            }
            Schema::Bytes => {
                let s: String = u.arbitrary()?;
                (s.clone().into(), Avro::Bytes(s.into_bytes()))
            }
            Schema::Uuid(UuidSchema::String) => {
                let id = apache_avro::Uuid::from_bytes(u.arbitrary()?);
                (id.hyphenated().to_string().into(), Avro::Uuid(id))
            }
            Schema::Fixed(fixed) => {
                // `size` bytes of UTF-8: ASCII, with a two-byte character now and then.
                let mut s = String::new();
                while s.len() < fixed.size {
                    if fixed.size - s.len() >= 2 && u.ratio(1, 8)? {
                        s.push('é');
                    } else {
                        s.push(char::from(u.int_in_range(0x20..=0x7e)?));
                    }
                }
                (s.clone().into(), Avro::Fixed(fixed.size, s.into_bytes()))
            }
            Schema::Enum(e) => {
                let i = u.choose_index(e.symbols.len())?;
                let symbol = e.symbols[i].clone();
                (symbol.clone().into(), Avro::Enum(i as u32, symbol))
            }
            Schema::Array(array) => {
                let n = self.len()?;
                self.depth += 1;
                let items = (0..n)
                    .map(|_| self.value(&array.items))
                    .collect::<GenResult<Vec<_>>>()?;
                self.depth -= 1;
                let (json, avro) = items.into_iter().unzip();
                (Value::Array(json), Avro::Array(avro))
            }
            Schema::Map(map) => {
                let n = self.len()?;
                self.depth += 1;
                let mut json = Map::new();
                let mut avro = HashMap::new();
                for _ in 0..n {
                    let key: String = self.u.arbitrary()?;
                    let (j, a) = self.value(&map.types)?;
                    json.insert(key.clone(), j);
                    avro.insert(key, a);
                }
                self.depth -= 1;
                (Value::Object(json), Avro::Map(avro))
            }
            Schema::Record(record) => {
                self.depth += 1;
                let mut json = Map::new();
                let mut avro = Vec::new();
                for field in &record.fields {
                    let default = field
                        .default
                        .as_ref()
                        .and_then(|d| self.from_default(&field.schema, d));
                    let value = match default {
                        // Left out, or null where null is no value of the type: the default.
                        Some(default) if self.u.ratio(1, 4)? => {
                            if !self.admits_null(&field.schema) && self.u.arbitrary()? {
                                json.insert(field.name.clone(), Value::Null);
                            }
                            default
                        }
                        _ => {
                            let (j, a) = self.value(&field.schema)?;
                            json.insert(field.name.clone(), j);
                            a
                        }
                    };
                    avro.push((field.name.clone(), value));
                }
                self.depth -= 1;
                (Value::Object(json), Avro::Record(avro))
            }
            Schema::Union(union) => {
                let branches = union.variants();
                let null = branches.iter().position(|b| matches!(b, Schema::Null));
                let chosen = match null {
                    Some(null) if self.depth > MAX_GEN_DEPTH => null,
                    _ => self.u.choose_index(branches.len())?,
                };
                let (json, avro) = self.value(&branches[chosen])?;
                // The converter takes the first branch that takes the JSON value (an integer
                // that fits an int goes to "int" before "long"); branches of other JSON types
                // do not take it.
                let (index, avro) = branches[..chosen]
                    .iter()
                    .enumerate()
                    .find_map(|(i, b)| scalar_as(b, &json).map(|a| (i, a)))
                    .unwrap_or((chosen, avro));
                (json, Avro::Union(index as u32, Box::new(avro)))
            }
            Schema::Ref { name } => {
                let schema = self.names[name];
                return self.value(schema);
            }
            other => panic!("the generator does not know {other:?}"),
        })
    }

    fn len(&mut self) -> GenResult<usize> {
        if self.depth > MAX_GEN_DEPTH {
            return Ok(0);
        }
        self.u.int_in_range(0..=3)
    }

    fn admits_null(&self, schema: &Schema) -> bool {
        match schema {
            Schema::Null => true,
            Schema::Union(u) => u.variants().iter().any(|b| matches!(b, Schema::Null)),
            _ => false,
        }
    }

    /// A field's default (JSON, as the schema gives it) as its Avro value (a union's default is
    /// its first branch's); `None` where this generator does not model it (the field is then
    /// always written).
    fn from_default(&self, schema: &Schema, json: &Value) -> Option<Avro> {
        Some(match (schema, json) {
            (Schema::Union(u), _) => {
                Avro::Union(0, Box::new(self.from_default(&u.variants()[0], json)?))
            }
            (Schema::Ref { name }, _) => self.from_default(self.names[name], json)?,
            (Schema::Bytes, Value::String(s)) => Avro::Bytes(s.clone().into_bytes()),
            (Schema::Fixed(f), Value::String(s)) if s.len() == f.size => {
                Avro::Fixed(f.size, s.clone().into_bytes())
            }
            (Schema::Uuid(UuidSchema::String), Value::String(s)) => {
                Avro::Uuid(apache_avro::Uuid::parse_str(s).ok()?)
            }
            (Schema::Enum(e), Value::String(s)) => {
                let i = e.symbols.iter().position(|sym| sym == s)?;
                Avro::Enum(i as u32, s.clone())
            }
            (Schema::Array(a), Value::Array(items)) => Avro::Array(
                items
                    .iter()
                    .map(|item| self.from_default(&a.items, item))
                    .collect::<Option<_>>()?,
            ),
            (Schema::Map(m), Value::Object(members)) => Avro::Map(
                members
                    .iter()
                    .map(|(k, v)| Some((k.clone(), self.from_default(&m.types, v)?)))
                    .collect::<Option<_>>()?,
            ),
            (schema, json) => scalar_as(schema, json)?,
        })
    }
}

/// A double as JSON (its shortest decimal form, which reads back as itself when rounded
/// correctly), and the double that serde_json reads from that text. intake's serde_json is
/// built without its `float_roundtrip` feature, so its parsing is best effort: now and then a
/// unit or two in the last place off the nearest double (`1.0491763471849627e-153` reads as
/// `1.0491763471849629e-153`). The converter is expected to give what serde_json reads, and
/// that to be within a relative 1e-14 of the exact value.
fn number(x: f64) -> (Value, f64) {
    let json = Value::Number(Number::from_f64(x).unwrap());
    let read: f64 = serde_json::from_str(&json.to_string()).unwrap();
    assert!(
        read == x || ((read - x) / x).abs() <= 1e-14,
        "serde_json reads {json} as {read:e}"
    );
    (json, read)
}

/// A JSON scalar as a scalar Avro type, if that type takes it (the converter's mapping: int and
/// long from integers within range, float and double from any number, strings as strings).
fn scalar_as(schema: &Schema, json: &Value) -> Option<Avro> {
    let int = || match json {
        Value::Number(n) if !n.is_f64() => n.as_i64(),
        _ => None,
    };
    Some(match (schema, json) {
        (Schema::Null, Value::Null) => Avro::Null,
        (Schema::Boolean, Value::Bool(b)) => Avro::Boolean(*b),
        (Schema::Int, _) => Avro::Int(i32::try_from(int()?).ok()?),
        (Schema::Long, _) => Avro::Long(int()?),
        (Schema::Float, Value::Number(n)) => Avro::Float(n.as_f64()? as f32),
        (Schema::Double, Value::Number(n)) => Avro::Double(n.as_f64()?),
        (Schema::String, Value::String(s)) => Avro::String(s.clone()),
        _ => return None,
    })
}

/// An arbitrary integer as a JSON number, with the Avro value `avro` makes of it.
fn integer<'u, T>(u: &mut Unstructured<'u>, avro: fn(T) -> Avro) -> GenResult<(Value, Avro)>
where
    T: libfuzzer_sys::arbitrary::Arbitrary<'u> + Into<Value> + Copy,
{
    let i: T = u.arbitrary()?;
    Ok((i.into(), avro(i)))
}

/// A time of day as `HH:MM:SS` with 0 to 9 fraction digits, and its nanoseconds since midnight
/// (the digits written; finer ones are not there).
fn time_of_day(u: &mut Unstructured<'_>) -> GenResult<(String, i64)> {
    let nanos: i64 = u.int_in_range(0..=86_399_999_999_999)?;
    let digits: u32 = u.int_in_range(0..=9)?;
    let kept = nanos - nanos % 10_i64.pow(9 - digits);
    let secs = kept / 1_000_000_000;
    let mut text = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if digits > 0 {
        text.push('.');
        text.push_str(&format!("{:09}", kept % 1_000_000_000)[..digits as usize]);
    }
    Ok((text, kept))
}

/// A UTC timestamp in units of `nanos_per_unit` nanoseconds: a JSON integer, or (one time in
/// four) an RFC 3339 string of the same instant, in UTC or at an offset.
fn timestamp(u: &mut Unstructured<'_>, nanos_per_unit: i64) -> GenResult<(Value, i64)> {
    if u.ratio(3, 4)? {
        let i: i64 = u.arbitrary()?;
        return Ok((i.into(), i));
    }
    // Years 0001 to 9998, so that any offset keeps the local date within RFC 3339's range
    // (nanoseconds: what an i64 holds, 1677 to 2262).
    let seconds = if nanos_per_unit == 1 {
        u.int_in_range(-9_223_372_035_i64..=9_223_372_035)?
    } else {
        u.int_in_range(-62_135_596_800_i64..=253_370_764_799)?
    };
    let units = u.int_in_range(0..=1_000_000_000 / nanos_per_unit - 1)?;
    let nanos = i128::from(seconds) * 1_000_000_000 + i128::from(units * nanos_per_unit);
    let offset =
        time::UtcOffset::from_whole_seconds(u.int_in_range(-23 * 3600..=23 * 3600)? / 60 * 60)
            .unwrap();
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap()
        .to_offset(offset);
    let text = at.format(&Rfc3339).unwrap();
    let value = i64::try_from(nanos / i128::from(nanos_per_unit)).unwrap();
    Ok((text.into(), value))
}
