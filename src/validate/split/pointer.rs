//! RFC 6901 JSON pointers, parsed once per stream configuration.

use super::*;

/// An RFC 6901 JSON pointer, parsed once: `""` is the whole document, `/a/0/b~1c` has the
/// tokens `a`, `0`, `b/c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    /// The pointer as configured, for messages.
    pub(super) text: String,
    /// Unescaped reference tokens.
    pub(super) tokens: Vec<String>,
}

/// A JSON pointer that does not parse, or that cannot serve its role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("JSON pointer {0:?} must be empty or start with '/'")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("JSON pointer {0:?} has a '~' not followed by '0' or '1'")]
    BadEscape(String),
    /// A key or version pointer must name a member inside the record, not the record itself.
    #[error("the {0} pointer must not be empty: it names a field inside the record")]
    EmptyFieldPointer(&'static str),
}

impl JsonPointer {
    /// Parses a pointer.
    ///
    /// # Errors
    ///
    /// [`PointerError::NoLeadingSlash`] or [`PointerError::BadEscape`].
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Ok(JsonPointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| PointerError::NoLeadingSlash(text.to_owned()))?;
        let tokens = rest
            .split('/')
            .map(|token| {
                unescape_token(token).ok_or_else(|| PointerError::BadEscape(text.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(JsonPointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The pointer as a field path in the converter's notation (`customer.id`, `lines[0].sku`),
    /// so that DLQ summaries group key errors with field errors. All-digit tokens are shown as
    /// array indexes.
    pub fn field_path(&self) -> String {
        let mut out = String::new();
        for token in &self.tokens {
            if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
                out.push('[');
                out.push_str(token);
                out.push(']');
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(token);
            }
        }
        out
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

pub(super) fn unescape_token(token: &str) -> Option<String> {
    if !token.contains('~') {
        return Some(token.to_owned());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}
