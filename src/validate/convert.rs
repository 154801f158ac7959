//! One JSON record → an Avro value and datum bytes, with strict drift detection.
//!
//! A [`Validator`] compiles an Avro schema once per schema version into a flat table of nodes
//! (named types resolved, field defaults converted, the value to use for an absent or null field
//! precomputed). [`Validator::convert`] then walks a record and its compiled schema together and
//! either builds the [`AvroValue`] or names the first thing wrong with the record:
//!
//! | kind            | when |
//! |-----------------|------|
//! | `missing_field` | a field is absent, or null, and is neither nullable nor has a default |
//! | `type_mismatch` | the JSON type does not fit the Avro type, or an int/long/float is out of range |
//! | `unknown_enum`  | an enum field holds a symbol the schema does not list |
//! | `unknown_field` | the record (or a nested record) has a member the schema does not declare |
//!
//! Field paths read `status`, `address.city`, `items[3].sku`, `attributes.color` (map keys that
//! are not plain words are quoted: `attributes["a b"]`).
//!
//! # Order of errors
//!
//! Deterministic for a given record and schema: fields in schema order, depth first; after a
//! record's declared fields, its unknown members in sorted order. So a renamed field reports
//! `missing_field` for the old name before `unknown_field` for the new one.
//! [`Validator::convert`] stops at the first error; [`Validator::errors`] collects up to
//! [`MAX_ERRORS`] of them (for triage), continuing past each one.
//!
//! # JSON → Avro mapping
//!
//! - `null`, `boolean`, `string`: the JSON type of the same name.
//! - `int`, `long`: JSON integers within range (a JSON number with a fraction or exponent, such
//!   as `1.0` or `1e3`, is a `type_mismatch`: serde_json reads it as a float).
//! - `float`, `double`: any JSON number; a `float` out of f32 range is a `type_mismatch`.
//! - `bytes`, `fixed`: a JSON string, taken as its UTF-8 bytes (`fixed` needs exactly `size`).
//! - `enum`: a JSON string naming a symbol (the enum's `default` is for readers, not for us).
//! - `array`, `map`: a JSON array, a JSON object.
//! - `record`: a JSON object; an absent field takes its default, else null if its type admits
//!   null; a null field takes null if admitted, else its default.
//! - unions: the branch is chosen by JSON type (`["null", T]` in either order is the common
//!   case). When several branches take that JSON type (`["int", "long"]`, two records), the first
//!   that converts without error wins.
//! - logical types (the underlying type's JSON integer is always taken as the encoded value):
//!   - `timestamp-millis`, `-micros`, `-nanos`: also an RFC 3339 string
//!     (`2024-03-01T13:45:01.250+01:00`; `T`, `t` or a space between date and time), converted
//!     to UTC units since the epoch; digits finer than the unit are dropped (rounded towards
//!     the past).
//!   - `date`: also an ISO 8601 date string, exactly `YYYY-MM-DD` → days since 1970-01-01.
//!   - `time-millis`, `time-micros`: also a time of day `HH:MM:SS` with an optional fraction of
//!     up to 9 digits (`13:45:01.250`), no offset → units since midnight (finer digits dropped).
//!   - `local-timestamp-*`: JSON integers only.
//!   - `uuid` (on string, bytes or fixed): a UUID string.
//!   - `decimal` (on `bytes` or a `fixed`): a JSON number or a string of one (`"-12.50"`, a
//!     leading `+` and an exponent are taken), converted **exactly** from its digits, never
//!     through a float: the unscaled value at the schema's scale, two's-complement big-endian
//!     (minimal length in `bytes`, sign-extended in a `fixed`). More fraction digits than the
//!     scale (other than trailing zeros), more digits than the precision, or a value too wide
//!     for the `fixed` is a `type_mismatch`. A JSON number is read from its text: on the raw
//!     paths ([`Validator::encode_raw_into`], [`Validator::encode_str_into`],
//!     [`Validator::convert_raw`], and the tree walk they fall back to, which notes each
//!     float-parsed number's text) always; from an already parsed
//!     `serde_json::Value` ([`Validator::convert`], [`Validator::encode_into`]) the float
//!     serde_json made of it is printed back, which is exact for up to 15 significant digits
//!     (send longer decimals as strings if you use those). A field default is, as the Avro
//!     specification writes it, the decimal's bytes as a string of code points 0–255.
//!   - `big-decimal` and `duration` have no JSON mapping here and make [`Validator::new`] fail.
//!
//!   A string that does not read as the logical type wants is a `type_mismatch` naming the
//!   field, like any other.
//!
//! # Cost
//!
//! Compilation is linear in the schema size, once per schema version. Per record, the walk is
//! one pass over the record: a lookup per declared field (member names are compared with the
//! schema's only when the record has members the schema lacks), a scan of an enum's symbols.
//!
//! Three ways in, fastest first:
//!
//! - [`Validator::encode_raw_into`]: raw record bytes (as split from the page) → Avro datum
//!   bytes in one pass of the JSON parser, without a `serde_json::Value` ([`stream`]); the
//!   record's bytes are copied once more to put members in schema order, array and map items
//!   once more to insert their count. Only a record that fails (or that the single pass cannot
//!   decide: a duplicate member, a union of two records) is parsed to a tree and walked again,
//!   for its error. This is the stage's hot path.
//! - [`Validator::encode_into`]: a parsed record → Avro datum bytes straight into the caller's
//!   buffer (after a Confluent header the caller wrote first, say), no `Value` built. The walk
//!   is generic over its output ([`sink`]), so the drift rules are written once.
//! - [`Validator::convert`] builds the `apache_avro::types::Value` (one allocation per field
//!   name, string and container, as that type requires); [`Encoder::encode_value`] encodes it
//!   with apache-avro's `GenericDatumWriter` (the non-deprecated form of `to_avro_datum`), which
//!   validates the value and hashes each record's field names again.
//!
//! All three produce the same datum (except for a decimal given as a JSON number of more than
//! 15 significant digits, which a parsed `serde_json::Value` holds as a float: the raw paths
//! read its digits, `convert` and `encode_into` on a `Value` the float's): the property tests
//! check the bytes against
//! `to_avro_datum(schema, convert(record))` on random schemas (equal byte for byte, except that
//! apache-avro writes map entries in `HashMap` order and we in the record's order, so our bytes
//! are deterministic), and the one-pass path against the tree walk on broken records.
//!
//! Measured with the `throughput` test (the 15-field test record: 225 bytes of JSON, nested
//! records, an array, a map, an RFC 3339 timestamp; release build, this project's 2-core machine
//! while other builds ran, so ±50 %): `encode_raw_into` ≈ 3 µs; JSON parse to a `Value` alone
//! ≈ 3.5 µs; parse + `encode_into` ≈ 6 µs; `convert` ≈ 4 µs + `encode_value` ≈ 4.5 µs.

use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::Uuid;
use apache_avro::schema::{InnerDecimalSchema, Name, Schema, UuidSchema};
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use serde_json::{Map, Number, Value as Json};

use super::error::{DriftKind, RecordError, SchemaError};
use super::split::rfc3339_nanos;

mod compile;
mod logical;
mod sink;
mod stream;
mod walk;

use compile::Compiler;
use walk::Walk;
pub(super) use walk::json_kind;

pub(super) use logical::date_days;
use logical::{DecimalType, NumberTexts, note_number_texts, time_of_day_nanos};
use sink::{ByteSink, Filler, IntKind, LongKind, Sink, UuidRepr, ValueSink};

/// The most errors [`Validator::errors`] collects for one record.
pub const MAX_ERRORS: usize = 32;

/// At most this many enum symbols are listed in an `unknown_enum` detail.
const LISTED_SYMBOLS: usize = 20;

/// Records with more fields than this find a member's field through a hash map, not a scan.
const SCAN_FIELDS: usize = 16;

/// Index of a node in [`Validator::nodes`].
type NodeId = usize;

/// A schema compiled for converting JSON records. Build once per schema version and share
/// (it is `Send + Sync`).
#[derive(Debug)]
pub struct Validator {
    /// The schema as given, for [`Validator::encoder`].
    schema: Schema,
    /// The compiled schema; references to named types are indexes, so recursive types work.
    nodes: Vec<Node>,
    /// The top node.
    root: NodeId,
    /// Whether some node is a `decimal` (then a record that falls back to the tree walk has its
    /// number texts noted, see [`NumberTexts`]).
    decimals: bool,
}

/// One compiled schema type.
#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    Int(IntKind),
    Long(LongKind),
    Float,
    Double,
    Bytes,
    String,
    Fixed {
        name: String,
        size: usize,
    },
    Enum {
        name: String,
        symbols: Vec<String>,
    },
    Array(NodeId),
    Map(NodeId),
    Union(Vec<NodeId>),
    Record {
        name: String,
        fields: Vec<Field>,
        /// Field name → index, for records too wide to scan ([`SCAN_FIELDS`]).
        index: Option<HashMap<String, usize>>,
    },
    Uuid(UuidRepr),
    /// A `decimal` on `bytes` or on a `fixed` (named `name`).
    Decimal {
        name: Option<String>,
        decimal: DecimalType,
    },
    /// A record being compiled (only seen while compiling).
    Pending,
}

impl crate::validate::split::CellTypes for Validator {
    /// How a CSV cell of the top-level field `name` is written as JSON: by the field's type
    /// (a union by its branches: text first, then number, boolean, nested JSON); a field the
    /// schema lacks by the cell's look.
    fn cell(&self, name: &str) -> Option<crate::validate::split::Cell> {
        use crate::validate::split::Cell;
        let Node::Record { fields, .. } = &self.nodes[self.root] else {
            return None;
        };
        let field = fields.iter().find(|f| f.name == name)?;
        let kind = |node: NodeId| match &self.nodes[node] {
            Node::String
            | Node::Bytes
            | Node::Fixed { .. }
            | Node::Enum { .. }
            | Node::Uuid(_)
            | Node::Decimal { .. } => Some(Cell::Text),
            Node::Int(_) | Node::Long(_) | Node::Float | Node::Double => Some(Cell::Number),
            Node::Boolean => Some(Cell::Boolean),
            Node::Array(_) | Node::Map(_) | Node::Record { .. } => Some(Cell::Json),
            Node::Null | Node::Union(_) | Node::Pending => None,
        };
        let kinds: Vec<Cell> = match &self.nodes[field.node] {
            Node::Union(branches) => branches.iter().filter_map(|&b| kind(b)).collect(),
            _ => kind(field.node).into_iter().collect(),
        };
        Some(
            [Cell::Text, Cell::Number, Cell::Boolean, Cell::Json]
                .into_iter()
                .find(|c| kinds.contains(c))
                .unwrap_or(Cell::Any),
        )
    }
}

/// One compiled record field.
#[derive(Debug)]
struct Field {
    name: String,
    node: NodeId,
    /// What an absent member becomes: the default, else null if the type admits it.
    absent: Option<Filler>,
    /// What a JSON null becomes: null if the type admits it, else the default.
    null: Option<Filler>,
}

impl Validator {
    /// Compiles `schema` (any schema; a record in practice).
    ///
    /// # Errors
    ///
    /// [`SchemaError::Unsupported`] for `big-decimal` and `duration`;
    /// [`SchemaError::UnresolvedName`] for a reference to an undefined type;
    /// [`SchemaError::BadDefault`] when a field default does not fit its type;
    /// [`SchemaError::Avro`] if apache-avro cannot resolve the schema for writing.
    pub fn new(schema: &Schema) -> Result<Self, SchemaError> {
        GenericDatumWriter::builder(schema)
            .build()
            .map_err(|e| SchemaError::Avro(e.to_string()))?;
        let mut compiler = Compiler::default();
        let root = compiler.compile(schema, None, "root")?;
        let decimals = compiler
            .nodes
            .iter()
            .any(|n| matches!(n, Node::Decimal { .. }));
        let mut validator = Validator {
            schema: schema.clone(),
            nodes: compiler.nodes,
            root,
            decimals,
        };
        for pending in compiler.defaults {
            validator.set_default(pending)?;
        }
        Ok(validator)
    }

    /// The schema this validator was built from.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Converts a record to an Avro value, stopping at the first error.
    ///
    /// # Errors
    ///
    /// The first [`RecordError`] in the order described in the module documentation.
    pub fn convert(&self, record: &Json) -> Result<AvroValue, RecordError> {
        self.convert_tree(record, None)
    }

    /// [`Validator::convert`] with the record's raw text, when there is one (see
    /// [`Validator::encode_tree`]).
    fn convert_tree(&self, record: &Json, raw: Option<&str>) -> Result<AvroValue, RecordError> {
        let texts = self.number_texts(record, raw);
        let mut walk = Walk::new(self, ValueSink, 1);
        walk.texts = Some(&texts);
        match walk.conv(self.root, record) {
            Some(value) => Ok(value),
            None => Err(walk.errors.swap_remove(0)),
        }
    }

    /// Parses raw record bytes (as [`super::split::Record::raw`]) and converts them.
    ///
    /// # Errors
    ///
    /// `malformed_json` if the bytes are not JSON (or nested deeper than serde_json's limit),
    /// else as [`Validator::convert`].
    pub fn convert_raw(&self, raw: &[u8]) -> Result<AvroValue, RecordError> {
        self.convert_tree(&parse(raw)?, std::str::from_utf8(raw).ok())
    }

    /// The written text of a parsed record's float-parsed numbers, if the schema has decimals
    /// to read them.
    fn number_texts<'r>(&self, record: &Json, raw: Option<&'r str>) -> NumberTexts<'r> {
        let mut texts = NumberTexts::new();
        if let Some(raw) = raw.filter(|_| self.decimals) {
            note_number_texts(raw, record, &mut texts);
        }
        texts
    }

    /// Checks a record and appends its Avro datum bytes (no Confluent framing) to `out`,
    /// without building a `Value`. On error `out` is left as it was.
    ///
    /// # Errors
    ///
    /// As [`Validator::convert`]: the same checks, the same first error.
    pub fn encode_into(&self, record: &Json, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.encode_tree(record, None, out)
    }

    /// [`Validator::encode_into`] with the record's raw text, when there is one, so that
    /// decimals given as JSON numbers are read from what was written (a parsed tree holds
    /// floats).
    fn encode_tree(
        &self,
        record: &Json,
        raw: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let texts = self.number_texts(record, raw);
        let start = out.len();
        let mut walk = Walk::new(self, ByteSink { out: &mut *out }, 1);
        walk.texts = Some(&texts);
        match walk.conv(self.root, record) {
            Some(()) => Ok(()),
            None => {
                let error = walk.errors.swap_remove(0);
                out.truncate(start);
                Err(error)
            }
        }
    }

    /// [`Validator::encode_into`] a new buffer.
    ///
    /// # Errors
    ///
    /// As [`Validator::convert`].
    pub fn encode(&self, record: &Json) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::new();
        self.encode_into(record, &mut out)?;
        Ok(out)
    }

    /// Checks raw record bytes (as [`super::split::Record::raw`]) and appends their Avro datum
    /// bytes to `out`. The hot path of the stage: a valid record is encoded in one pass of the
    /// JSON parser, without a `serde_json::Value` ([`stream`]); a record that is not (or that the
    /// one pass cannot decide) is parsed and walked as by [`Validator::encode_into`], which
    /// gives the error. On error `out` is left as it was.
    ///
    /// # Errors
    ///
    /// `malformed_json` if the bytes are not JSON, else as [`Validator::convert`].
    pub fn encode_raw_into(&self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        let start = out.len();
        if let Ok(text) = std::str::from_utf8(raw)
            && stream::encode(self, text, out, None)
        {
            return Ok(());
        }
        out.truncate(start);
        self.encode_tree(&parse(raw)?, std::str::from_utf8(raw).ok(), out)
    }

    /// [`Validator::encode_raw_into`] for a record already known to be UTF-8 (as split from a
    /// page), noting on the way where the top-level members named by `capture` are, so that
    /// the caller need not scan the record again for its key and version. The capture is
    /// filled only when the one pass encoded the record ([`Capture::spans`]).
    ///
    /// # Errors
    ///
    /// As [`Validator::encode_raw_into`].
    pub fn encode_str_into(
        &self,
        raw: &str,
        out: &mut Vec<u8>,
        capture: &mut Capture<'_>,
    ) -> Result<(), RecordError> {
        let start = out.len();
        capture.reset();
        if stream::encode(self, raw, out, Some(capture)) {
            capture.done = true;
            return Ok(());
        }
        capture.reset();
        out.truncate(start);
        self.encode_tree(&parse(raw.as_bytes())?, Some(raw), out)
    }

    /// Every error of a record, up to [`MAX_ERRORS`], in the documented order; empty when the
    /// record converts.
    pub fn errors(&self, record: &Json) -> Vec<RecordError> {
        let mut scratch = Vec::new();
        let mut walk = Walk::new(self, ByteSink { out: &mut scratch }, MAX_ERRORS);
        walk.conv(self.root, record);
        walk.errors
    }

    /// An apache-avro encoder for [`AvroValue`]s (see [`Encoder`]).
    ///
    /// # Errors
    ///
    /// [`SchemaError::Avro`] if apache-avro cannot resolve the schema (checked already by
    /// [`Validator::new`], so not expected).
    pub fn encoder(&self) -> Result<Encoder<'_>, SchemaError> {
        let writer = GenericDatumWriter::builder(&self.schema)
            .build()
            .map_err(|e| SchemaError::Avro(e.to_string()))?;
        Ok(Encoder { writer })
    }
}

/// Where a record's top-level members of some names are (at most [`Capture::MAX`] names), as
/// noted by [`Validator::encode_str_into`].
#[derive(Debug)]
pub struct Capture<'n> {
    names: &'n [&'n str],
    /// Byte range of each named member's value in the record, when present.
    found: [Option<(usize, usize)>; Capture::MAX],
    /// The one pass read the whole record (so `found` is complete).
    done: bool,
}

impl<'n> Capture<'n> {
    /// The most names a capture notes.
    pub const MAX: usize = 2;

    /// A capture of the members named `names` (beyond [`Capture::MAX`] are ignored).
    pub fn new(names: &'n [&'n str]) -> Self {
        Capture {
            names: &names[..names.len().min(Self::MAX)],
            found: [None; Self::MAX],
            done: false,
        }
    }

    fn reset(&mut self) {
        self.found = [None; Self::MAX];
        self.done = false;
    }

    /// The slot of a member name, if captured.
    pub(crate) fn slot(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    pub(crate) fn note(&mut self, slot: usize, span: (usize, usize)) {
        self.found[slot] = Some(span);
    }

    /// The raw value of each name (in the order of the names; `None` when absent), or `None`
    /// when the record was not read in one pass (then nothing is known).
    pub fn spans<'a>(&self, raw: &'a str) -> Option<[Option<&'a str>; Capture::MAX]> {
        self.done.then(|| {
            self.found
                .map(|f| f.and_then(|(from, to)| raw.get(from..to)))
        })
    }
}

fn parse(raw: &[u8]) -> Result<Json, RecordError> {
    serde_json::from_slice(raw).map_err(|e| RecordError::malformed(&e, raw))
}

/// Encodes [`AvroValue`]s with apache-avro, resolving the schema's names once for many values.
/// Borrowed from a [`Validator`]. For JSON records prefer [`Validator::encode_into`].
pub struct Encoder<'v> {
    writer: GenericDatumWriter<'v>,
}

impl Encoder<'_> {
    /// Appends the Avro datum bytes of a value to `out` (apache-avro validates it first). On
    /// error `out` is left as it was.
    ///
    /// # Errors
    ///
    /// `encode_failed` if apache-avro refuses the value (it does not fit the schema).
    pub fn encode_value(&self, value: &AvroValue, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let len = out.len();
        self.writer
            .write_value_ref(out, value)
            .map(drop)
            .map_err(|e| {
                out.truncate(len);
                RecordError::whole(
                    DriftKind::EncodeFailed,
                    format!("the Avro encoder refused the value: {e}"),
                )
            })
    }
}

#[cfg(test)]
#[allow(deprecated)] // to_avro_datum/from_avro_datum: the reference the brief names.
mod tests;
