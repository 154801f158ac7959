//! The fast path: raw JSON bytes → Avro datum bytes in one pass of the parser, without building
//! a `serde_json::Value`.
//!
//! It only answers "this record is valid, here are its bytes" or "not here": any drift, any
//! doubt (a duplicate member, a union whose branch cannot be chosen from the first token: two
//! records, or a record and a map) makes it give up, and [`super::Validator::encode_raw_into`]
//! redoes the record on the tree walk, which owns every error message and its order. So the
//! rules stay in one place; this file only has to never accept what the tree walk rejects (a
//! differential property test checks both on arbitrary JSON).
//!
//! JSON members come in document order, Avro fields must be written in schema order: each
//! record's field bytes are written where they land, their ranges noted, and the record is put
//! in schema order at its end (one copy of the record's bytes, absent fields filled from the
//! precomputed defaults). Array and map counts are only known at their end: the count is
//! inserted before the items then (one move of the items' bytes), so the output is byte for byte
//! what `to_avro_datum` writes for the same value (map entries in document order).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use apache_avro::Uuid;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::sink::{ByteSink, Filler, Sink};
use super::{Capture, Field, Node, NodeId, Validator};
use crate::validate::split::MemberName;

/// Encodes `raw` into `out`; `false` (with `out` possibly extended: the caller truncates) when
/// the record must go to the tree walk.
pub(super) fn encode(
    v: &Validator,
    raw: &str,
    out: &mut Vec<u8>,
    capture: Option<&mut Capture<'_>>,
) -> bool {
    // The reordering buffers are reused across records of a thread (taken out of the cell while
    // in use, so there is no borrow to conflict).
    thread_local! {
        static BUFFERS: Cell<(Vec<u8>, Vec<Span>)> = Cell::default();
    }
    let (scratch, spans) = BUFFERS.take();
    let mut state = State {
        v,
        out,
        scratch,
        spans,
        // Noted in the first record read, which is the top level only when the schema's root
        // is a record.
        capture: capture
            .filter(|_| matches!(v.nodes[v.root], Node::Record { .. }))
            .map(|c| (raw.as_ptr() as usize, c)),
    };
    // From a `str`: strings are not validated as UTF-8 again.
    let mut de = serde_json::Deserializer::from_str(raw);
    let ok = (Seed {
        state: &mut state,
        node: v.root,
        null: None,
    })
    .deserialize(&mut de)
    .is_ok()
        && de.end().is_ok();
    state.spans.clear();
    BUFFERS.set((state.scratch, state.spans));
    ok
}

/// The byte range of a record field's value in the output, once read.
type Span = Option<(usize, usize)>;

/// Shared by the nested seeds.
struct State<'v, 'o, 'c, 'n> {
    v: &'v Validator,
    out: &'o mut Vec<u8>,
    /// Where a record is reordered.
    scratch: Vec<u8>,
    /// Field byte ranges of the records being read, innermost last.
    spans: Vec<Span>,
    /// The input's address and the members to note, taken by the top-level record.
    capture: Option<(usize, &'c mut Capture<'n>)>,
}

impl State<'_, '_, '_, '_> {
    fn sink(&mut self) -> ByteSink<'_> {
        ByteSink { out: self.out }
    }

    /// Inserts the block count of the `count` items written since `start`, and the end marker.
    fn close_block(&mut self, start: usize, count: usize) {
        if count > 0 {
            let mut prefix = Vec::with_capacity(10);
            ByteSink { out: &mut prefix }.array_start(count);
            self.out.splice(start..start, prefix);
        }
        self.out.push(0);
    }
}

/// "Give up" (the message is never shown: the tree walk reports the real error).
fn give_up<E: de::Error>() -> E {
    E::custom("")
}

/// Converts one value of the node's type.
struct Seed<'s, 'v, 'o, 'c, 'n> {
    state: &'s mut State<'v, 'o, 'c, 'n>,
    node: NodeId,
    /// For a record field: what JSON null becomes (null if admitted, else the default).
    null: Option<&'v Filler>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_, '_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if !(self.state.v.decimals && self.state.v.takes_decimal(self.node)) {
            return deserializer.deserialize_any(self);
        }
        // A decimal is read from the number's text, which the parser's `visit_f64` no longer
        // has: the value is taken raw (borrowed from the input), then read.
        let raw: &'de RawValue = de::Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return self.decimal_number(text);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        de::Deserializer::deserialize_any(&mut de, self).map_err(|_| give_up())
    }
}

impl Seed<'_, '_, '_, '_, '_> {
    /// A JSON number (its text) for a node that takes a decimal. Only a union whose other
    /// branches take no number is decided here.
    fn decimal_number<E: de::Error>(mut self, text: &str) -> Result<(), E> {
        let v = self.state.v;
        // serde_json refuses a number beyond f64's range (the tree walk reports it).
        let in_range = text.parse::<f64>().is_ok_and(f64::is_finite);
        if !in_range {
            return Err(give_up());
        }
        if let Node::Union(branches) = &v.nodes[self.node]
            && branches.iter().any(|&b| {
                matches!(
                    v.nodes[b],
                    Node::Int(_) | Node::Long(_) | Node::Float | Node::Double
                )
            })
        {
            return Err(give_up());
        }
        let b = self
            .branch(|n| match n {
                Node::Decimal { decimal, .. } => Some(decimal.encode(text).is_ok()),
                _ => None,
            })
            .ok_or_else(give_up)?;
        decimal_into(&v.nodes[b], text, &mut self.state.sink())
    }

    /// The node that converts the value: this node if it `accepts` it, or for a union the first
    /// branch that does (writing the branch index), as the tree walk chooses. `accepts` says
    /// `None` for "not this JSON type", `Some(clean)` for "takes this JSON type, and converts
    /// this value without error" — the tree walk keeps the first clean type-taking branch.
    fn branch(&mut self, accepts: impl Fn(&Node) -> Option<bool>) -> Option<NodeId> {
        let v = self.state.v;
        let Node::Union(branches) = &v.nodes[self.node] else {
            return (accepts(&v.nodes[self.node]) == Some(true)).then_some(self.node);
        };
        for (index, &b) in branches.iter().enumerate() {
            if accepts(&v.nodes[b]) == Some(true) {
                self.state.sink().branch(index as u32);
                return Some(b);
            }
        }
        None
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_, '_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the schema's type")
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        if let Some(filler) = self.null {
            self.state.out.extend_from_slice(&filler.bytes);
            return Ok(());
        }
        self.branch(|n| matches!(n, Node::Null).then_some(true))
            .ok_or_else(give_up)
            .map(drop)
    }

    fn visit_bool<E: de::Error>(mut self, b: bool) -> Result<(), E> {
        self.branch(|n| matches!(n, Node::Boolean).then_some(true))
            .ok_or_else(give_up)?;
        self.state.sink().boolean(b);
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, i: i64) -> Result<(), E> {
        let accepts = |n: &Node| match n {
            Node::Int(_) => Some(i32::try_from(i).is_ok()),
            Node::Long(_) | Node::Double => Some(true),
            Node::Float => Some((i as f64 as f32).is_finite()),
            _ => None,
        };
        let b = self.branch(accepts).ok_or_else(give_up)?;
        let v = self.state.v;
        let mut sink = self.state.sink();
        match &v.nodes[b] {
            Node::Int(kind) => sink.int(i as i32, *kind),
            Node::Long(kind) => sink.long(i, *kind),
            Node::Float => sink.float(i as f64 as f32),
            Node::Double => sink.double(i as f64),
            _ => return Err(give_up()),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<(), E> {
        match i64::try_from(u) {
            Ok(i) => self.visit_i64(i),
            // Beyond i64: only float and double take it; leave that rarity to the tree walk.
            Err(_) => Err(give_up()),
        }
    }

    fn visit_f64<E: de::Error>(mut self, x: f64) -> Result<(), E> {
        let accepts = |n: &Node| match n {
            Node::Float => Some((x as f32).is_finite()),
            Node::Double => Some(x.is_finite()),
            _ => None,
        };
        let b = self.branch(accepts).ok_or_else(give_up)?;
        match &self.state.v.nodes[b] {
            Node::Float => self.state.sink().float(x as f32),
            _ => self.state.sink().double(x),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(mut self, s: &str) -> Result<(), E> {
        let accepts = |n: &Node| match n {
            Node::String | Node::Bytes => Some(true),
            Node::Fixed { size, .. } => Some(s.len() == *size),
            Node::Enum { symbols, .. } => Some(symbols.iter().any(|sym| sym == s)),
            Node::Uuid(_) => Some(Uuid::parse_str(s).is_ok()),
            Node::Int(kind) if kind.takes_text() => Some(kind.parse_text(s).is_some()),
            Node::Long(kind) if kind.takes_text() => Some(kind.parse_text(s).is_some()),
            Node::Decimal { decimal, .. } => Some(decimal.encode(s).is_ok()),
            _ => None,
        };
        let b = self.branch(accepts).ok_or_else(give_up)?;
        let v = self.state.v;
        let node = &v.nodes[b];
        let mut sink = self.state.sink();
        match node {
            Node::String => sink.string(s),
            Node::Bytes => sink.bytes(s.as_bytes()),
            Node::Fixed { .. } => sink.fixed(s.as_bytes()),
            Node::Enum { symbols, .. } => {
                let index = symbols
                    .iter()
                    .position(|sym| sym == s)
                    .ok_or_else(give_up)?;
                sink.symbol(index as u32, s);
            }
            Node::Uuid(repr) => sink.uuid(Uuid::parse_str(s).map_err(|_| give_up())?, *repr),
            Node::Int(kind) => sink.int(kind.parse_text(s).ok_or_else(give_up)?, *kind),
            Node::Long(kind) => sink.long(kind.parse_text(s).ok_or_else(give_up)?, *kind),
            Node::Decimal { .. } => decimal_into(node, s, &mut sink)?,
            _ => return Err(give_up()),
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let b = self
            .branch(|n| matches!(n, Node::Array(_)).then_some(true))
            .ok_or_else(give_up)?;
        let Node::Array(items) = self.state.v.nodes[b] else {
            return Err(give_up());
        };
        let start = self.state.out.len();
        let mut count = 0;
        while seq
            .next_element_seed(Seed {
                state: &mut *self.state,
                node: items,
                null: None,
            })?
            .is_some()
        {
            count += 1;
        }
        self.state.close_block(start, count);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // Only a union with one object-taking branch is decided here.
        let v = self.state.v;
        if let Node::Union(branches) = &v.nodes[self.node] {
            let takers = branches
                .iter()
                .filter(|&&b| matches!(v.nodes[b], Node::Map(_) | Node::Record { .. }))
                .count();
            if takers != 1 {
                return Err(give_up());
            }
        }
        let b = self
            .branch(|n| matches!(n, Node::Map(_) | Node::Record { .. }).then_some(true))
            .ok_or_else(give_up)?;
        match &v.nodes[b] {
            Node::Map(values) => {
                let start = self.state.out.len();
                let mut count = 0;
                while let Some(key) = map.next_key::<MemberName<'de>>()? {
                    self.state.sink().key(&key.0);
                    map.next_value_seed(Seed {
                        state: &mut *self.state,
                        node: *values,
                        null: None,
                    })?;
                    count += 1;
                }
                self.state.close_block(start, count);
                Ok(())
            }
            Node::Record { fields, index, .. } => record(self.state, fields, index.as_ref(), map),
            _ => Err(give_up()),
        }
    }
}

/// Writes a decimal node's value of `text` (a number's text or a string).
fn decimal_into<E: de::Error>(node: &Node, text: &str, sink: &mut ByteSink<'_>) -> Result<(), E> {
    let Node::Decimal { decimal, .. } = node else {
        return Err(give_up());
    };
    let bytes = decimal.encode(text).map_err(|_| give_up())?;
    sink.decimal(bytes, decimal.size.is_some());
    Ok(())
}

/// Reads a record's members, then writes its fields in schema order.
fn record<'de, 'v, A: MapAccess<'de>>(
    state: &mut State<'v, '_, '_, '_>,
    fields: &'v [Field],
    by_name: Option<&'v HashMap<String, usize>>,
    mut map: A,
) -> Result<(), A::Error> {
    let start = state.out.len();
    let base = state.spans.len();
    state.spans.resize(base + fields.len(), None);
    let mut in_order = true;
    let mut last = None;
    // Only the top-level record notes members for the caller.
    let mut capture = state.capture.take();
    while let Some(key) = map.next_key::<MemberName<'de>>()? {
        // Members mostly come in schema order: the field after the last one is tried first.
        let next = last.map_or(0, |l| l + 1);
        let index = match (fields.get(next), by_name) {
            (Some(f), _) if f.name == key.0 => Some(next),
            (_, Some(by_name)) => by_name.get(key.0.as_ref()).copied(),
            (_, None) => fields.iter().position(|f| f.name == key.0),
        }
        .ok_or_else(give_up)?;
        if state.spans[base + index].is_some() {
            return Err(give_up()); // a duplicate member: the tree walk keeps the last one
        }
        in_order &= last.is_none_or(|l| l < index);
        last = Some(index);
        let from = state.out.len();
        let field = &fields[index];
        let seed = Seed {
            state: &mut *state,
            node: field.node,
            null: field.null.as_ref(),
        };
        match capture
            .as_mut()
            .and_then(|(base, c)| Some((*base, c.slot(&key.0)?, c)))
        {
            // A noted member: its raw value first (a borrowed slice of the input), then
            // converted from that slice. Only small members are noted (key and version).
            Some((base, slot, c)) => {
                let value: &'de RawValue = map.next_value()?;
                let text = value.get();
                let at = text.as_ptr() as usize - base;
                c.note(slot, (at, at + text.len()));
                let mut de = serde_json::Deserializer::from_str(text);
                seed.deserialize(&mut de).map_err(|_| give_up())?;
            }
            None => map.next_value_seed(seed)?,
        }
        state.spans[base + index] = Some((from, state.out.len()));
    }
    let complete = state.spans[base..].iter().all(Option::is_some);
    if !(in_order && complete) {
        state.scratch.clear();
        state.scratch.extend_from_slice(&state.out[start..]);
        state.out.truncate(start);
        for (index, field) in fields.iter().enumerate() {
            match state.spans[base + index] {
                Some((from, to)) => state
                    .out
                    .extend_from_slice(&state.scratch[from - start..to - start]),
                None => match &field.absent {
                    Some(filler) => state.out.extend_from_slice(&filler.bytes),
                    None => return Err(give_up()),
                },
            }
        }
    }
    state.spans.truncate(base);
    Ok(())
}
