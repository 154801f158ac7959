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

mod logical;
mod sink;
mod stream;

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

    /// Converts a field default (Avro JSON) once all nodes exist, in both forms.
    fn set_default(&mut self, pending: PendingDefault) -> Result<(), SchemaError> {
        let PendingDefault {
            record,
            field,
            default,
            path,
        } = pending;
        let node = match &self.nodes[record] {
            Node::Record { fields, .. } => fields[field].node,
            _ => unreachable!("defaults are only recorded for record fields"),
        };
        let bad = |e: &RecordError| SchemaError::BadDefault {
            path: path.clone(),
            detail: e.to_string(),
        };
        let mut walk = Walk::new(self, ValueSink, 1);
        walk.default = true;
        let value = walk
            .conv(node, &default)
            .ok_or_else(|| bad(&walk.errors[0]))?;
        let mut bytes = Vec::new();
        let mut walk = Walk::new(self, ByteSink { out: &mut bytes }, 1);
        walk.default = true;
        walk.conv(node, &default)
            .ok_or_else(|| bad(&walk.errors[0]))?;
        if let Node::Record { fields, .. } = &mut self.nodes[record] {
            let f = &mut fields[field];
            let filler = Filler { value, bytes };
            if f.null.is_none() {
                f.null = Some(filler.clone());
            }
            f.absent = Some(filler);
        }
        Ok(())
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

/// A field default waiting for the whole schema to be compiled.
struct PendingDefault {
    record: NodeId,
    field: usize,
    default: Json,
    path: String,
}

/// Schema → nodes.
#[derive(Default)]
struct Compiler {
    nodes: Vec<Node>,
    /// Full names of named types → their node.
    named: HashMap<String, NodeId>,
    defaults: Vec<PendingDefault>,
}

impl Compiler {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn define(&mut self, name: &Name, ns: Option<&str>, node: Node) -> NodeId {
        let id = self.push(node);
        self.named
            .insert(name.fully_qualified_name(ns).fullname(None), id);
        id
    }

    fn compile(
        &mut self,
        schema: &Schema,
        ns: Option<&str>,
        path: &str,
    ) -> Result<NodeId, SchemaError> {
        let unsupported = |what: &str| SchemaError::Unsupported {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        let node = match schema {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int => Node::Int(IntKind::Int),
            Schema::Date => Node::Int(IntKind::Date),
            Schema::TimeMillis => Node::Int(IntKind::TimeMillis),
            Schema::Long => Node::Long(LongKind::Long),
            Schema::TimeMicros => Node::Long(LongKind::TimeMicros),
            Schema::TimestampMillis => Node::Long(LongKind::TimestampMillis),
            Schema::TimestampMicros => Node::Long(LongKind::TimestampMicros),
            Schema::TimestampNanos => Node::Long(LongKind::TimestampNanos),
            Schema::LocalTimestampMillis => Node::Long(LongKind::LocalTimestampMillis),
            Schema::LocalTimestampMicros => Node::Long(LongKind::LocalTimestampMicros),
            Schema::LocalTimestampNanos => Node::Long(LongKind::LocalTimestampNanos),
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes => Node::Bytes,
            Schema::String => Node::String,
            Schema::Uuid(UuidSchema::Fixed(fixed)) => {
                return Ok(self.define(&fixed.name, ns, Node::Uuid(UuidRepr::Fixed)));
            }
            Schema::Uuid(UuidSchema::Bytes) => Node::Uuid(UuidRepr::Bytes),
            Schema::Uuid(UuidSchema::String) => Node::Uuid(UuidRepr::String),
            Schema::Fixed(fixed) => {
                let name = fixed.name.fully_qualified_name(ns).fullname(None);
                return Ok(self.define(
                    &fixed.name,
                    ns,
                    Node::Fixed {
                        name,
                        size: fixed.size,
                    },
                ));
            }
            Schema::Enum(e) => {
                let name = e.name.fully_qualified_name(ns).fullname(None);
                return Ok(self.define(
                    &e.name,
                    ns,
                    Node::Enum {
                        name,
                        symbols: e.symbols.clone(),
                    },
                ));
            }
            Schema::Array(a) => Node::Array(self.compile(&a.items, ns, &format!("{path}[]"))?),
            Schema::Map(m) => Node::Map(self.compile(&m.types, ns, &format!("{path}{{}}"))?),
            Schema::Union(u) => Node::Union(
                u.variants()
                    .iter()
                    .map(|v| self.compile(v, ns, path))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Record(r) => {
                let id = self.define(&r.name, ns, Node::Pending);
                let full = r.name.fully_qualified_name(ns);
                let record_ns = full.namespace();
                let mut fields = Vec::with_capacity(r.fields.len());
                for (i, f) in r.fields.iter().enumerate() {
                    let field_path = if path == "root" {
                        f.name.clone()
                    } else {
                        format!("{path}.{}", f.name)
                    };
                    let node = self.compile(&f.schema, record_ns, &field_path)?;
                    let null = self.null_filler(node);
                    if let Some(default) = &f.default {
                        self.defaults.push(PendingDefault {
                            record: id,
                            field: i,
                            default: default.clone(),
                            path: field_path,
                        });
                    }
                    fields.push(Field {
                        name: f.name.clone(),
                        node,
                        absent: null.clone(),
                        null,
                    });
                }
                let index = (fields.len() > SCAN_FIELDS).then(|| {
                    fields
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (f.name.clone(), i))
                        .collect()
                });
                self.nodes[id] = Node::Record {
                    name: full.fullname(None),
                    fields,
                    index,
                };
                return Ok(id);
            }
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns).fullname(None);
                return self
                    .named
                    .get(&full)
                    .copied()
                    .ok_or(SchemaError::UnresolvedName(full));
            }
            Schema::Decimal(d) => {
                let (precision, scale) = (d.precision, d.scale);
                return Ok(match &d.inner {
                    InnerDecimalSchema::Bytes => self.push(Node::Decimal {
                        name: None,
                        decimal: DecimalType {
                            precision,
                            scale,
                            size: None,
                        },
                    }),
                    InnerDecimalSchema::Fixed(fixed) => {
                        let name = fixed.name.fully_qualified_name(ns).fullname(None);
                        let decimal = DecimalType {
                            precision,
                            scale,
                            size: Some(fixed.size),
                        };
                        let node = Node::Decimal {
                            name: Some(name),
                            decimal,
                        };
                        self.define(&fixed.name, ns, node)
                    }
                });
            }
            Schema::BigDecimal => return Err(unsupported("big-decimal")),
            Schema::Duration(_) => return Err(unsupported("duration")),
        };
        Ok(self.push(node))
    }

    /// What JSON null becomes for a node, if the node admits null.
    fn null_filler(&self, node: NodeId) -> Option<Filler> {
        match &self.nodes[node] {
            Node::Null => Some(Filler {
                value: AvroValue::Null,
                bytes: Vec::new(),
            }),
            Node::Union(branches) => {
                let index = branches
                    .iter()
                    .position(|&b| matches!(self.nodes[b], Node::Null))?;
                let mut bytes = Vec::new();
                ByteSink { out: &mut bytes }.branch(index as u32);
                Some(Filler {
                    value: AvroValue::Union(index as u32, Box::new(AvroValue::Null)),
                    bytes,
                })
            }
            _ => None,
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

/// One conversion: the output, the path to the current value, and the errors so far.
struct Walk<'a, S> {
    v: &'a Validator,
    sink: S,
    path: Vec<Seg<'a>>,
    errors: Vec<RecordError>,
    /// Stop once this many errors are collected.
    limit: usize,
    /// The written text of the record's float-parsed numbers, when known.
    texts: Option<&'a NumberTexts<'a>>,
    /// Converting a field default (Avro JSON: a decimal's default is its bytes as a string).
    default: bool,
}

/// The JSON type of a value, for messages.
pub(super) fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

impl IntKind {
    /// Whether the kind also takes a string: a `date` an ISO 8601 date, a `time-millis` a time
    /// of day.
    fn takes_text(self) -> bool {
        self != IntKind::Int
    }

    /// The value of such a string, if it is one.
    fn parse_text(self, s: &str) -> Option<i32> {
        match self {
            IntKind::Int => None,
            IntKind::Date => date_days(s),
            IntKind::TimeMillis => i32::try_from(time_of_day_nanos(s)? / 1_000_000).ok(),
        }
    }

    /// What such a string must be, for messages.
    fn text_form(self) -> &'static str {
        match self {
            IntKind::Int => "an integer",
            IntKind::Date => "an ISO 8601 date (YYYY-MM-DD)",
            IntKind::TimeMillis => "a time of day (HH:MM:SS[.fraction])",
        }
    }
}

impl LongKind {
    /// Units per second of a UTC timestamp kind (which also takes RFC 3339 strings).
    fn per_second(self) -> Option<i128> {
        match self {
            LongKind::TimestampMillis => Some(1_000),
            LongKind::TimestampMicros => Some(1_000_000),
            LongKind::TimestampNanos => Some(1_000_000_000),
            _ => None,
        }
    }

    /// Whether the kind also takes a string: a UTC timestamp an RFC 3339 timestamp, a
    /// `time-micros` a time of day.
    fn takes_text(self) -> bool {
        self == LongKind::TimeMicros || self.per_second().is_some()
    }

    /// The value of such a string, if it is one (digits finer than the unit are dropped:
    /// rounded towards the past).
    fn parse_text(self, s: &str) -> Option<i64> {
        if self == LongKind::TimeMicros {
            return Some(time_of_day_nanos(s)? / 1_000);
        }
        let units = rfc3339_nanos(s)?
            .checked_mul(self.per_second()?)?
            .div_euclid(1_000_000_000);
        i64::try_from(units).ok()
    }

    /// What such a string must be, for messages.
    fn text_form(self) -> &'static str {
        if self == LongKind::TimeMicros {
            "a time of day (HH:MM:SS[.fraction])"
        } else {
            "an RFC 3339 timestamp"
        }
    }
}

impl<'a, S: Sink> Walk<'a, S> {
    fn new(v: &'a Validator, sink: S, limit: usize) -> Self {
        Walk {
            v,
            sink,
            path: Vec::new(),
            errors: Vec::new(),
            limit,
            texts: None,
            default: false,
        }
    }

    fn full(&self) -> bool {
        self.errors.len() >= self.limit
    }

    fn field_path(&self) -> Option<String> {
        if self.path.is_empty() {
            return None;
        }
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
                Seg::Key(key) => {
                    let plain = !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if plain {
                        out.push('.');
                        out.push_str(key);
                    } else {
                        let _ = write!(out, "[{}]", Json::String((*key).to_owned()));
                    }
                }
            }
        }
        Some(out)
    }

    /// Records an error at the current path; always `None`, for `return self.fail(..)`.
    fn fail<T>(&mut self, kind: DriftKind, detail: String) -> Option<T> {
        self.errors.push(RecordError {
            kind,
            field: self.field_path(),
            detail,
        });
        None
    }

    fn mismatch<T>(&mut self, node: NodeId, json: &Json) -> Option<T> {
        let detail = format!(
            "expected {}, found {}",
            self.v.describe(node),
            json_kind(json)
        );
        self.fail(DriftKind::TypeMismatch, detail)
    }

    /// An integer within `lo..=hi`.
    fn integer(&mut self, node: NodeId, n: &Number, lo: i64, hi: i64) -> Option<i64> {
        match n.as_i64() {
            Some(i) if (lo..=hi).contains(&i) => Some(i),
            Some(_) => self.out_of_range(node, n),
            None if n.is_u64() => self.out_of_range(node, n),
            None => {
                let detail = format!(
                    "expected {}, found a non-integer number",
                    self.v.describe(node)
                );
                self.fail(DriftKind::TypeMismatch, detail)
            }
        }
    }

    fn out_of_range<T>(&mut self, node: NodeId, n: &Number) -> Option<T> {
        let detail = format!("{n} is out of range for {}", self.v.describe(node));
        self.fail(DriftKind::TypeMismatch, detail)
    }

    /// The value of a logical type's string (`value`), or a `type_mismatch` saying what the
    /// string had to be (`form`).
    fn text<T>(&mut self, node: NodeId, value: Option<T>, form: &str) -> Option<T> {
        if value.is_none() {
            let detail = format!(
                "expected {}, found a string that is not {form}",
                self.v.describe(node)
            );
            return self.fail(DriftKind::TypeMismatch, detail);
        }
        value
    }

    /// A decimal from a JSON number (its written text when known, else its shortest text,
    /// which is exact for up to 15 significant digits) or a string.
    fn decimal(&mut self, node: NodeId, decimal: &DecimalType, json: &Json) -> Option<Vec<u8>> {
        let shortest;
        let text = match json {
            Json::String(s) if self.default => {
                let bytes = decimal.default_bytes(s);
                let form = "the decimal's bytes (code points 0-255, as Avro writes a default)";
                return self.text(node, bytes, form);
            }
            Json::String(s) => s.as_str(),
            Json::Number(n) => match self
                .texts
                .and_then(|t| t.get(&(n as *const Number as usize)))
            {
                Some(text) => *text,
                None => {
                    shortest = n.to_string();
                    &shortest
                }
            },
            _ => return self.mismatch(node, json),
        };
        match decimal.encode(text) {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                let shown: String = text.chars().take(40).collect();
                let ellipsis = if shown.len() < text.len() { "…" } else { "" };
                let detail = format!(
                    "expected {}, found {}{ellipsis}: {why}",
                    self.v.describe(node),
                    Json::String(shown)
                );
                self.fail(DriftKind::TypeMismatch, detail)
            }
        }
    }

    fn conv(&mut self, node: NodeId, json: &'a Json) -> Option<S::Value> {
        let v = self.v;
        match (&v.nodes[node], json) {
            (Node::Null, Json::Null) => Some(self.sink.null()),
            (Node::Boolean, Json::Bool(b)) => Some(self.sink.boolean(*b)),
            (Node::Int(kind), Json::Number(n)) => {
                let i = self.integer(node, n, i32::MIN.into(), i32::MAX.into())?;
                Some(self.sink.int(i as i32, *kind))
            }
            (Node::Int(kind), Json::String(s)) if kind.takes_text() => {
                let i = self.text(node, kind.parse_text(s), kind.text_form())?;
                Some(self.sink.int(i, *kind))
            }
            (Node::Long(kind), Json::Number(n)) => {
                let i = self.integer(node, n, i64::MIN, i64::MAX)?;
                Some(self.sink.long(i, *kind))
            }
            (Node::Long(kind), Json::String(s)) if kind.takes_text() => {
                let i = self.text(node, kind.parse_text(s), kind.text_form())?;
                Some(self.sink.long(i, *kind))
            }
            (Node::Decimal { decimal, .. }, Json::Number(_) | Json::String(_)) => {
                let bytes = self.decimal(node, decimal, json)?;
                Some(self.sink.decimal(bytes, decimal.size.is_some()))
            }
            (Node::Float, Json::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN) as f32;
                if f.is_finite() {
                    Some(self.sink.float(f))
                } else {
                    self.out_of_range(node, n)
                }
            }
            (Node::Double, Json::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() => Some(self.sink.double(x)),
                _ => self.out_of_range(node, n),
            },
            (Node::String, Json::String(s)) => Some(self.sink.string(s)),
            (Node::Bytes, Json::String(s)) => Some(self.sink.bytes(s.as_bytes())),
            (Node::Fixed { size, .. }, Json::String(s)) => {
                if s.len() == *size {
                    Some(self.sink.fixed(s.as_bytes()))
                } else {
                    let detail = format!(
                        "expected {}, found a string of {} bytes",
                        v.describe(node),
                        s.len()
                    );
                    self.fail(DriftKind::TypeMismatch, detail)
                }
            }
            (Node::Enum { symbols, .. }, Json::String(s)) => {
                match symbols.iter().position(|sym| sym == s) {
                    Some(i) => Some(self.sink.symbol(i as u32, s)),
                    None => {
                        let mut listed = symbols
                            .iter()
                            .take(LISTED_SYMBOLS)
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ");
                        if symbols.len() > LISTED_SYMBOLS {
                            let _ = write!(listed, ", … ({} more)", symbols.len() - LISTED_SYMBOLS);
                        }
                        let detail = format!(
                            "{} is not one of [{listed}] of {}",
                            Json::String(s.clone()),
                            v.describe(node)
                        );
                        self.fail(DriftKind::UnknownEnum, detail)
                    }
                }
            }
            (Node::Uuid(repr), Json::String(s)) => match Uuid::parse_str(s) {
                Ok(uuid) => Some(self.sink.uuid(uuid, *repr)),
                Err(_) => self.fail(
                    DriftKind::TypeMismatch,
                    "expected uuid, found a string that is not a UUID".to_owned(),
                ),
            },
            (Node::Array(items), Json::Array(elements)) => {
                let mut seq = self.sink.array_start(elements.len());
                let mut failed = false;
                for (i, element) in elements.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    let converted = self.conv(*items, element);
                    self.path.pop();
                    match converted {
                        Some(value) => self.sink.push(&mut seq, "", value),
                        None if self.full() => return None,
                        None => failed = true,
                    }
                }
                (!failed).then(|| self.sink.end(seq))
            }
            (Node::Map(values), Json::Object(members)) => {
                let mut seq = self.sink.map_start(members.len());
                let mut failed = false;
                for (key, member) in members {
                    self.sink.key(key);
                    self.path.push(Seg::Key(key));
                    let converted = self.conv(*values, member);
                    self.path.pop();
                    match converted {
                        Some(value) => self.sink.push(&mut seq, key, value),
                        None if self.full() => return None,
                        None => failed = true,
                    }
                }
                (!failed).then(|| self.sink.end(seq))
            }
            (Node::Record { name, fields, .. }, Json::Object(members)) => {
                self.record(name, fields, members)
            }
            (Node::Union(branches), _) => self.union(node, branches, json),
            (Node::Pending, _) => {
                unreachable!("a record is compiled before any value is converted")
            }
            _ => self.mismatch(node, json),
        }
    }

    fn record(
        &mut self,
        name: &'a str,
        fields: &'a [Field],
        members: &'a Map<String, Json>,
    ) -> Option<S::Value> {
        let mut seq = self.sink.record_start(fields.len());
        let mut failed = false;
        let mut matched = 0;
        for field in fields {
            let member = members.get(&field.name);
            matched += usize::from(member.is_some());
            self.path.push(Seg::Field(&field.name));
            let converted = match (member, &field.null, &field.absent) {
                (Some(Json::Null), Some(filler), _) | (None, _, Some(filler)) => {
                    Some(self.sink.fill(filler))
                }
                (Some(Json::Null), None, _) => self.fail(
                    DriftKind::MissingField,
                    "is null, but the field is not nullable and has no default".to_owned(),
                ),
                (None, _, None) => self.fail(
                    DriftKind::MissingField,
                    "is absent; the field is required and has no default".to_owned(),
                ),
                (Some(json), _, _) => self.conv(field.node, json),
            };
            self.path.pop();
            match converted {
                Some(value) => self.sink.push(&mut seq, &field.name, value),
                None if self.full() => return None,
                None => failed = true,
            }
        }
        if matched < members.len() {
            let mut unknown: Vec<&'a String> = members
                .keys()
                .filter(|key| !fields.iter().any(|f| &f.name == *key))
                .collect();
            unknown.sort();
            for key in unknown {
                self.path.push(Seg::Field(key));
                self.fail::<()>(
                    DriftKind::UnknownField,
                    format!("is not a field of record {name}"),
                );
                self.path.pop();
                if self.full() {
                    return None;
                }
            }
            failed = true;
        }
        (!failed).then(|| self.sink.end(seq))
    }

    fn union(&mut self, node: NodeId, branches: &'a [NodeId], json: &'a Json) -> Option<S::Value> {
        let nodes = &self.v.nodes;
        let mut candidates = branches
            .iter()
            .enumerate()
            .filter(|&(_, &b)| nodes[b].takes(json))
            .peekable();
        let Some((first_index, &first)) = candidates.next() else {
            return self.mismatch(node, json);
        };
        if candidates.peek().is_none() {
            self.sink.branch(first_index as u32);
            let value = self.conv(first, json)?;
            return Some(self.sink.union(first_index as u32, value));
        }
        // Several branches take this JSON type: the first that converts cleanly wins; if none
        // does, the first candidate's first error is reported.
        let (base, limit, mark) = (self.errors.len(), self.limit, self.sink.mark());
        self.limit = base + 1;
        let mut first_error = None;
        for (index, &branch) in std::iter::once((first_index, &first)).chain(candidates) {
            self.sink.branch(index as u32);
            if let Some(value) = self.conv(branch, json) {
                self.limit = limit;
                return Some(self.sink.union(index as u32, value));
            }
            if first_error.is_none() {
                first_error = self.errors.pop();
            }
            self.errors.truncate(base);
            self.sink.rollback(mark);
        }
        self.limit = limit;
        self.errors.extend(first_error);
        None
    }
}

impl Node {
    /// Whether a JSON value's type can be this node at all (values may still be out of range).
    fn takes(&self, json: &Json) -> bool {
        match (self, json) {
            (Node::Null, Json::Null) | (Node::Boolean, Json::Bool(_)) => true,
            (Node::Int(_) | Node::Long(_), Json::Number(n)) => n.is_i64() || n.is_u64(),
            (Node::Int(kind), Json::String(_)) => kind.takes_text(),
            (Node::Long(kind), Json::String(_)) => kind.takes_text(),
            (Node::Decimal { .. }, Json::Number(_) | Json::String(_)) => true,
            (Node::Float | Node::Double, Json::Number(_)) => true,
            (
                Node::String | Node::Bytes | Node::Fixed { .. } | Node::Enum { .. } | Node::Uuid(_),
                Json::String(_),
            ) => true,
            (Node::Array(_), Json::Array(_)) => true,
            (Node::Map(_) | Node::Record { .. }, Json::Object(_)) => true,
            _ => false,
        }
    }
}

impl Validator {
    /// Whether a node is a `decimal` or a union with one (which read a number from its text).
    fn takes_decimal(&self, node: NodeId) -> bool {
        match &self.nodes[node] {
            Node::Decimal { .. } => true,
            Node::Union(branches) => branches
                .iter()
                .any(|&b| matches!(self.nodes[b], Node::Decimal { .. })),
            _ => false,
        }
    }

    /// The Avro type of a node, for messages.
    fn describe(&self, node: NodeId) -> String {
        match &self.nodes[node] {
            Node::Null => "null".to_owned(),
            Node::Boolean => "boolean".to_owned(),
            Node::Int(IntKind::Int) => "int".to_owned(),
            Node::Int(IntKind::Date) => "date (int or ISO 8601 date string)".to_owned(),
            Node::Int(IntKind::TimeMillis) => "time-millis (int or time-of-day string)".to_owned(),
            Node::Long(kind) => match kind {
                LongKind::Long => "long",
                LongKind::TimeMicros => "time-micros (long or time-of-day string)",
                LongKind::TimestampMillis => "timestamp-millis (long or RFC 3339 string)",
                LongKind::TimestampMicros => "timestamp-micros (long or RFC 3339 string)",
                LongKind::TimestampNanos => "timestamp-nanos (long or RFC 3339 string)",
                LongKind::LocalTimestampMillis => "local-timestamp-millis (long)",
                LongKind::LocalTimestampMicros => "local-timestamp-micros (long)",
                LongKind::LocalTimestampNanos => "local-timestamp-nanos (long)",
            }
            .to_owned(),
            Node::Float => "float".to_owned(),
            Node::Double => "double".to_owned(),
            Node::Bytes => "bytes".to_owned(),
            Node::String => "string".to_owned(),
            Node::Fixed { name, size } => format!("fixed {name} ({size} bytes)"),
            Node::Enum { name, .. } => format!("enum {name}"),
            Node::Array(items) => format!("array of {}", self.describe(*items)),
            Node::Map(values) => format!("map of {}", self.describe(*values)),
            Node::Union(branches) => {
                let names: Vec<String> = branches.iter().map(|&b| self.describe(b)).collect();
                format!("one of [{}]", names.join(", "))
            }
            Node::Record { name, .. } => format!("record {name}"),
            Node::Uuid(_) => "uuid".to_owned(),
            Node::Decimal { name, decimal } => {
                let on = name
                    .as_ref()
                    .map_or_else(|| "bytes".to_owned(), |n| format!("fixed {n}"));
                format!(
                    "decimal({}, {}) on {on} (number or decimal string)",
                    decimal.precision, decimal.scale
                )
            }
            Node::Pending => "record".to_owned(),
        }
    }
}

#[cfg(test)]
#[allow(deprecated)] // to_avro_datum/from_avro_datum: the reference the brief names.
mod tests;
