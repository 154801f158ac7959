//! Classified errors for bad *data*: why one record (or one whole page) goes to the DLQ.
//!
//! [`DriftKind::as_str`] gives the exact `dlq.error.kind` header value (`docs/INVARIANTS.md`);
//! [`RecordError::field`] fills `dlq.error.field`, and [`RecordError`]'s `Display` (a sentence
//! naming the field) fills `dlq.error.detail`. Problems with a *schema* or a *configuration* (not
//! with data) are [`SchemaError`]: they are the operator's to fix, never a record's.

use std::fmt;
use std::str::FromStr;

/// Why a record (or page) was rejected. The string forms are a contract: DLQ consumers,
/// `intake dlq summary` and `intake dlq replay --kind` match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriftKind {
    /// The bytes are not JSON (syntax error, trailing garbage, or nested deeper than
    /// serde_json's recursion limit).
    MalformedJson,
    /// The page is not valid UTF-8, so it cannot be JSON.
    NotUtf8,
    /// The record selector points nowhere, or at something that is neither an array of records
    /// nor a single record object.
    NotAPage,
    /// The primary key is absent, null, empty, or not a string or an integer.
    MissingKey,
    /// The configured version field is absent, or neither an integer nor an RFC 3339 timestamp.
    BadVersion,
    /// A required field (not nullable, no default) is absent or null.
    MissingField,
    /// A field holds a JSON type the schema does not allow, or a number out of the range of its
    /// Avro type.
    TypeMismatch,
    /// An enum field holds a symbol the schema does not list.
    UnknownEnum,
    /// The record has a field the schema does not declare.
    UnknownField,
    /// No schema is registered for the stream (set by the stage, not by this module).
    NoSchema,
    /// The payload is over the size limit (set by the stage, not by this module).
    TooLarge,
    /// The converted value was refused by the Avro encoder. Conversion guarantees conformance,
    /// so this signals a bug in `intake`, not in the data; the record is kept all the same.
    EncodeFailed,
    /// A CSV row that cannot be read: another number of cells than the header, not UTF-8, or
    /// a quote left open (`format = "csv"`).
    MalformedCsv,
}

impl DriftKind {
    /// Every kind, in declaration order.
    pub const ALL: [DriftKind; 13] = [
        DriftKind::MalformedJson,
        DriftKind::NotUtf8,
        DriftKind::NotAPage,
        DriftKind::MissingKey,
        DriftKind::BadVersion,
        DriftKind::MissingField,
        DriftKind::TypeMismatch,
        DriftKind::UnknownEnum,
        DriftKind::UnknownField,
        DriftKind::NoSchema,
        DriftKind::TooLarge,
        DriftKind::EncodeFailed,
        DriftKind::MalformedCsv,
    ];

    /// The `dlq.error.kind` header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DriftKind::MalformedJson => "malformed_json",
            DriftKind::NotUtf8 => "not_utf8",
            DriftKind::NotAPage => "not_a_page",
            DriftKind::MissingKey => "missing_key",
            DriftKind::BadVersion => "bad_version",
            DriftKind::MissingField => "missing_field",
            DriftKind::TypeMismatch => "type_mismatch",
            DriftKind::UnknownEnum => "unknown_enum",
            DriftKind::UnknownField => "unknown_field",
            DriftKind::NoSchema => "no_schema",
            DriftKind::TooLarge => "too_large",
            DriftKind::EncodeFailed => "encode_failed",
            DriftKind::MalformedCsv => "malformed_csv",
        }
    }

    /// Words for a sentence ("unknown enum symbol at field `status`: ...").
    const fn phrase(self) -> &'static str {
        match self {
            DriftKind::MalformedJson => "malformed JSON",
            DriftKind::NotUtf8 => "page is not UTF-8",
            DriftKind::NotAPage => "not a page of records",
            DriftKind::MissingKey => "missing primary key",
            DriftKind::BadVersion => "bad version",
            DriftKind::MissingField => "missing required field",
            DriftKind::TypeMismatch => "type mismatch",
            DriftKind::UnknownEnum => "unknown enum symbol",
            DriftKind::UnknownField => "unknown field",
            DriftKind::NoSchema => "no schema registered",
            DriftKind::TooLarge => "payload too large",
            DriftKind::EncodeFailed => "Avro encoding failed",
            DriftKind::MalformedCsv => "malformed CSV row",
        }
    }

    /// Whether the `evolve` drift policy can fix this kind by adding to the schema (a new
    /// optional field, a new enum symbol). Every other kind goes to the DLQ under any policy.
    pub const fn is_evolvable(self) -> bool {
        matches!(self, DriftKind::UnknownField | DriftKind::UnknownEnum)
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header value that is not one of [`DriftKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown DLQ error kind {0:?}")]
pub struct UnknownDriftKind(pub String);

impl FromStr for DriftKind {
    type Err = UnknownDriftKind;

    /// Parses a `dlq.error.kind` header value (as `intake dlq replay --kind` takes it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DriftKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownDriftKind(s.to_owned()))
    }
}

/// One record (or one page) that cannot go to the valid topic, and why.
///
/// `Display` is a sentence naming the field, e.g.
/// ``type mismatch at field `items[3].sku`: expected string, found integer``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Sentence(self))]
pub struct RecordError {
    /// The classification (the `dlq.error.kind` header).
    pub kind: DriftKind,
    /// Path of the field at fault: `status`, `address.city`, `items[3].sku`, `tags["a b"]`.
    /// `None` when the error is about the record or page as a whole.
    pub field: Option<String>,
    /// What was wrong, without repeating the kind or the field.
    pub detail: String,
}

impl RecordError {
    /// An error about a named field.
    pub fn at(kind: DriftKind, field: impl Into<String>, detail: impl Into<String>) -> Self {
        RecordError {
            kind,
            field: Some(field.into()),
            detail: detail.into(),
        }
    }

    /// An error about the record or page as a whole.
    pub fn whole(kind: DriftKind, detail: impl Into<String>) -> Self {
        RecordError {
            kind,
            field: None,
            detail: detail.into(),
        }
    }

    /// A `malformed_json` error from serde_json, with the byte offset, line and column of the
    /// fault in `input` (serde_json reports line and column only; the offset is recomputed).
    pub fn malformed(err: &serde_json::Error, input: &[u8]) -> Self {
        let offset = byte_offset(input, err.line(), err.column());
        // serde's own message already ends in "at line L column C".
        RecordError::whole(
            DriftKind::MalformedJson,
            format!("{err} (byte offset {offset})"),
        )
    }
}

/// Renders `RecordError` as one sentence.
struct Sentence<'a>(&'a RecordError);

impl fmt::Display for Sentence<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        match &e.field {
            Some(field) => write!(f, "{} at field `{field}`: {}", e.kind.phrase(), e.detail),
            None => write!(f, "{}: {}", e.kind.phrase(), e.detail),
        }
    }
}

/// The byte offset of serde_json's 1-based `line` and `column` (its column counts bytes from the
/// start of the line, and points at the offending byte; 0 means "before the first byte", as for
/// an error at end of input right after a newline). Clamped to the input length.
pub(crate) fn byte_offset(input: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    if line > 1 {
        let mut seen = 1;
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' {
                seen += 1;
                if seen == line {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    (start + column.saturating_sub(1)).min(input.len())
}

/// A schema (or pointer configuration) that this module cannot work with. The operator's to fix;
/// never a reason to reject one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema uses a type that has no JSON mapping here.
    #[error("schema type at `{path}` is not supported for JSON input: {what}")]
    Unsupported {
        /// Where in the schema (`root`, `address.city`, ...).
        path: String,
        /// Which type, and why.
        what: String,
    },
    /// A named type is referenced but never defined.
    #[error("schema references undefined type `{0}`")]
    UnresolvedName(String),
    /// A field's default does not fit the field's type.
    #[error("default of field `{path}` does not fit its type: {detail}")]
    BadDefault {
        /// The field.
        path: String,
        /// The conversion error.
        detail: String,
    },
    /// Schema inference expects a record at the top.
    #[error("the schema must be a record, found {0}")]
    NotARecord(String),
    /// apache-avro refused a schema (for a proposed schema this is a bug in `infer`).
    #[error("invalid Avro schema: {0}")]
    Avro(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_the_design_header_values() {
        let got: Vec<&str> = DriftKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            got,
            [
                "malformed_json",
                "not_utf8",
                "not_a_page",
                "missing_key",
                "bad_version",
                "missing_field",
                "type_mismatch",
                "unknown_enum",
                "unknown_field",
                "no_schema",
                "too_large",
                "encode_failed",
                "malformed_csv",
            ]
        );
        for kind in DriftKind::ALL {
            assert_eq!(kind.as_str().parse::<DriftKind>(), Ok(kind));
        }
        assert_eq!(
            "nope".parse::<DriftKind>(),
            Err(UnknownDriftKind("nope".to_owned()))
        );
    }

    #[test]
    fn display_is_a_sentence_naming_the_field() {
        let e = RecordError::at(
            DriftKind::TypeMismatch,
            "items[3].sku",
            "expected string, found integer",
        );
        assert_eq!(
            e.to_string(),
            "type mismatch at field `items[3].sku`: expected string, found integer"
        );
        let e = RecordError::whole(DriftKind::NotAPage, "selector `/data` not found");
        assert_eq!(
            e.to_string(),
            "not a page of records: selector `/data` not found"
        );
    }

    #[test]
    fn malformed_reports_serde_position_and_byte_offset() {
        let input = b"{\"a\": 1,\n \"b\": tru }";
        let err = serde_json::from_slice::<serde_json::Value>(input).unwrap_err();
        let e = RecordError::malformed(&err, input);
        assert_eq!(e.kind, DriftKind::MalformedJson);
        assert_eq!(e.field, None);
        assert_eq!(
            e.detail,
            "expected ident at line 2 column 10 (byte offset 18)"
        );
        assert_eq!(input[18], b' ');
    }

    #[test]
    fn byte_offset_walks_lines() {
        assert_eq!(byte_offset(b"abc", 1, 1), 0);
        assert_eq!(byte_offset(b"abc", 1, 3), 2);
        assert_eq!(byte_offset(b"a\nbc", 2, 2), 3);
        assert_eq!(byte_offset(b"a\n", 2, 0), 2);
        assert_eq!(byte_offset(b"a", 1, 9), 1);
    }
}
