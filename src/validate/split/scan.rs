//! Reading a raw page without building a tree: the depth check, the JSON type of a raw value,
//! pointer navigation, and the visitors that find a selector's elements and a record's
//! top-level members.

use super::*;

/// Rejects input nested deeper than [`MAX_DEPTH`], without recursion.
///
/// Strings are skipped with `memchr2` (to the next quote or backslash) rather than byte by
/// byte: records are mostly string bytes, and this scan of the whole page was the stage's
/// largest single cost when it looked at every byte.
pub(super) fn check_depth(text: &str) -> Result<(), RecordError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // To the byte after the closing quote; an escape skips the byte it escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        Some(p) if bytes[i + p] == b'\\' => i = (i + p + 2).min(bytes.len()),
                        Some(p) => {
                            i += p + 1;
                            break;
                        }
                        // Unterminated: the parser reports it.
                        None => return Ok(()),
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let line = 1 + bytes[..i].iter().filter(|&&b| b == b'\n').count();
                    let line_start = bytes[..i]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                    return Err(RecordError::whole(
                        DriftKind::MalformedJson,
                        format!(
                            "nested deeper than {MAX_DEPTH} levels (serde_json's recursion limit) \
                             at line {line} column {} (byte offset {i})",
                            i - line_start + 1
                        ),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The JSON type of a raw value, told by its first byte after JSON whitespace. Used to choose
/// how to read a value and in messages ("the record is an array").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JsonKind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    pub(super) fn of(raw: &str) -> JsonKind {
        let first = raw
            .bytes()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        match first {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b'"') => JsonKind::String,
            Some(b'n') => JsonKind::Null,
            Some(b't' | b'f') => JsonKind::Boolean,
            _ => JsonKind::Number,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Boolean => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        })
    }
}

/// One step of pointer navigation.
pub(super) enum Step<'a> {
    Found(&'a RawValue),
    /// The container has no such member or index.
    Absent,
    /// The parent is not a container.
    Scalar(JsonKind),
    /// The parent is an array and the token is not an index (RFC 6901: digits, no leading zero).
    NotIndex,
}

/// The member `token` of an object, or the element at index `token` of an array.
pub(super) fn child<'a>(raw: &'a str, token: &str) -> Result<Step<'a>, serde_json::Error> {
    match JsonKind::of(raw) {
        JsonKind::Object => Ok(members(raw, &[token])?[0].map_or(Step::Absent, Step::Found)),
        JsonKind::Array => match token.parse::<usize>() {
            // RFC 6901: no leading zeros, no signs.
            Ok(index) if token == index.to_string() => {
                let mut de = serde_json::Deserializer::from_str(raw);
                let found = de::Deserializer::deserialize_seq(&mut de, ElementAt(index))?;
                de.end()?;
                Ok(found.map_or(Step::Absent, Step::Found))
            }
            // Not an index, but is it JSON at all? (The first step is a page's only check.)
            _ => {
                let _: IgnoredAny = serde_json::from_str(raw)?;
                Ok(Step::NotIndex)
            }
        },
        kind => {
            // Not a container, but is it JSON at all? (The first step is a page's only check.)
            let _: IgnoredAny = serde_json::from_str(raw)?;
            Ok(Step::Scalar(kind))
        }
    }
}

/// Follows `rest` from `start`; `None` as soon as a step is absent or a parent is a scalar.
pub(in crate::validate) fn resolve<'a>(
    start: Option<&'a str>,
    rest: &[String],
) -> Result<Option<&'a str>, serde_json::Error> {
    let Some(mut current) = start else {
        return Ok(None);
    };
    for token in rest {
        match child(current, token)? {
            Step::Found(raw) => current = raw.get(),
            Step::Absent | Step::Scalar(_) | Step::NotIndex => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// The raw values of the members named in `wanted` (one scan of the object; if a name occurs
/// twice, the last occurrence wins, as in `serde_json::Value`).
pub(in crate::validate) fn members<'a>(
    raw: &'a str,
    wanted: &[&str],
) -> Result<Vec<Option<&'a RawValue>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let found = de::Deserializer::deserialize_map(&mut de, Members(wanted))?;
    de.end()?;
    Ok(found)
}

/// Visitor behind [`members`].
pub(super) struct Members<'w>(pub(super) &'w [&'w str]);

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.0.len()];
        while let Some(MemberName(name)) = map.next_key()? {
            if self.0.contains(&name.as_ref()) {
                let value: &'de RawValue = map.next_value()?;
                for (slot, wanted) in found.iter_mut().zip(self.0) {
                    if *wanted == name.as_ref() {
                        *slot = Some(value);
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A member name, borrowed from the input unless it contains escapes.
pub(crate) struct MemberName<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// The value a record selector points at, as read in one pass: an array's elements (raw), or
/// only the kind of anything else (an object is read again as one raw value: it is one record).
pub(super) enum Target<'a> {
    Array(Vec<&'a RawValue>),
    Object,
    Scalar(JsonKind),
}

impl<'de> Deserialize<'de> for Target<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TargetVisitor)
    }
}

pub(super) struct TargetVisitor;

impl<'de> Visitor<'de> for TargetVisitor {
    type Value = Target<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            items.push(raw);
        }
        Ok(Target::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Target::Object)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Null))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Boolean))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Number))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Number))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::Number))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Target::Scalar(JsonKind::String))
    }
}

/// Visitor of an object reading the member `0` as a [`Target`] (the last one, if repeated) and
/// skipping the others.
pub(super) struct TargetMember<'t>(pub(super) &'t str);

impl<'de> Visitor<'de> for TargetMember<'_> {
    type Value = Option<Target<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(MemberName(name)) = map.next_key()? {
            if name == self.0 {
                found = Some(map.next_value::<Target<'de>>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Visitor picking the element at an index of an array (and skipping the rest).
pub(super) struct ElementAt(pub(super) usize);

impl<'de> Visitor<'de> for ElementAt {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        while i <= self.0 {
            match seq.next_element::<&'de RawValue>()? {
                Some(raw) if i == self.0 => found = Some(raw),
                Some(_) => {}
                None => return Ok(None),
            }
            i += 1;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(found)
    }
}

impl<'de> DeserializeSeed<'de> for ElementAt {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}
