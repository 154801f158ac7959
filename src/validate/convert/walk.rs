//! The walk of one JSON record with its compiled schema: the value (or datum bytes) built into
//! a [`Sink`], and every drift named with its field path, in the order the module docs of
//! [`super`] give.

use super::*;

/// One step of a field path.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

/// One conversion: the output, the path to the current value, and the errors so far.
pub(super) struct Walk<'a, S> {
    pub(super) v: &'a Validator,
    pub(super) sink: S,
    pub(super) path: Vec<Seg<'a>>,
    pub(super) errors: Vec<RecordError>,
    /// Stop once this many errors are collected.
    pub(super) limit: usize,
    /// The written text of the record's float-parsed numbers, when known.
    pub(super) texts: Option<&'a NumberTexts<'a>>,
    /// Converting a field default (Avro JSON: a decimal's default is its bytes as a string).
    pub(super) default: bool,
}

/// The JSON type of a value, for messages.
pub(in crate::validate) fn json_kind(json: &Json) -> &'static str {
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
    pub(super) fn takes_text(self) -> bool {
        self != IntKind::Int
    }

    /// The value of such a string, if it is one.
    pub(super) fn parse_text(self, s: &str) -> Option<i32> {
        match self {
            IntKind::Int => None,
            IntKind::Date => date_days(s),
            IntKind::TimeMillis => i32::try_from(time_of_day_nanos(s)? / 1_000_000).ok(),
        }
    }

    /// What such a string must be, for messages.
    pub(super) fn text_form(self) -> &'static str {
        match self {
            IntKind::Int => "an integer",
            IntKind::Date => "an ISO 8601 date (YYYY-MM-DD)",
            IntKind::TimeMillis => "a time of day (HH:MM:SS[.fraction])",
        }
    }
}

impl LongKind {
    /// Units per second of a UTC timestamp kind (which also takes RFC 3339 strings).
    pub(super) fn per_second(self) -> Option<i128> {
        match self {
            LongKind::TimestampMillis => Some(1_000),
            LongKind::TimestampMicros => Some(1_000_000),
            LongKind::TimestampNanos => Some(1_000_000_000),
            _ => None,
        }
    }

    /// Whether the kind also takes a string: a UTC timestamp an RFC 3339 timestamp, a
    /// `time-micros` a time of day.
    pub(super) fn takes_text(self) -> bool {
        self == LongKind::TimeMicros || self.per_second().is_some()
    }

    /// The value of such a string, if it is one (digits finer than the unit are dropped:
    /// rounded towards the past).
    pub(super) fn parse_text(self, s: &str) -> Option<i64> {
        if self == LongKind::TimeMicros {
            return Some(time_of_day_nanos(s)? / 1_000);
        }
        let units = rfc3339_nanos(s)?
            .checked_mul(self.per_second()?)?
            .div_euclid(1_000_000_000);
        i64::try_from(units).ok()
    }

    /// What such a string must be, for messages.
    pub(super) fn text_form(self) -> &'static str {
        if self == LongKind::TimeMicros {
            "a time of day (HH:MM:SS[.fraction])"
        } else {
            "an RFC 3339 timestamp"
        }
    }
}

impl<'a, S: Sink> Walk<'a, S> {
    pub(super) fn new(v: &'a Validator, sink: S, limit: usize) -> Self {
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

    pub(super) fn full(&self) -> bool {
        self.errors.len() >= self.limit
    }

    pub(super) fn field_path(&self) -> Option<String> {
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
    pub(super) fn fail<T>(&mut self, kind: DriftKind, detail: String) -> Option<T> {
        self.errors.push(RecordError {
            kind,
            field: self.field_path(),
            detail,
        });
        None
    }

    pub(super) fn mismatch<T>(&mut self, node: NodeId, json: &Json) -> Option<T> {
        let detail = format!(
            "expected {}, found {}",
            self.v.describe(node),
            json_kind(json)
        );
        self.fail(DriftKind::TypeMismatch, detail)
    }

    /// An integer within `lo..=hi`.
    pub(super) fn integer(&mut self, node: NodeId, n: &Number, lo: i64, hi: i64) -> Option<i64> {
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

    pub(super) fn out_of_range<T>(&mut self, node: NodeId, n: &Number) -> Option<T> {
        let detail = format!("{n} is out of range for {}", self.v.describe(node));
        self.fail(DriftKind::TypeMismatch, detail)
    }

    /// The value of a logical type's string (`value`), or a `type_mismatch` saying what the
    /// string had to be (`form`).
    pub(super) fn text<T>(&mut self, node: NodeId, value: Option<T>, form: &str) -> Option<T> {
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
    pub(super) fn decimal(
        &mut self,
        node: NodeId,
        decimal: &DecimalType,
        json: &Json,
    ) -> Option<Vec<u8>> {
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

    pub(super) fn conv(&mut self, node: NodeId, json: &'a Json) -> Option<S::Value> {
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

    pub(super) fn record(
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

    pub(super) fn union(
        &mut self,
        node: NodeId,
        branches: &'a [NodeId],
        json: &'a Json,
    ) -> Option<S::Value> {
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
    pub(super) fn takes(&self, json: &Json) -> bool {
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
    pub(super) fn takes_decimal(&self, node: NodeId) -> bool {
        match &self.nodes[node] {
            Node::Decimal { .. } => true,
            Node::Union(branches) => branches
                .iter()
                .any(|&b| matches!(self.nodes[b], Node::Decimal { .. })),
            _ => false,
        }
    }

    /// The Avro type of a node, for messages.
    pub(super) fn describe(&self, node: NodeId) -> String {
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
