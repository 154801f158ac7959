//! The six pagination styles: parsing a list request, reading its page from the store, and
//! writing the answer.
//!
//! | style    | request parameters                      | answer |
//! |----------|-----------------------------------------|--------|
//! | `cursor` | `cursor`, `limit`, `updated_since`      | `{"data":[…],"next_cursor":"<token>"\|null}` |
//! | `link`   | `cursor`, `limit`, `updated_since`      | `{"data":[…]}` and `Link: <url>; rel="next"` while more follow |
//! | `page`   | `page` (from 1), `per_page`, `updated_since` | `{"data":[…],"page":p,"per_page":n,"total":t,"total_pages":k}` |
//! | `offset` | `offset` (from 0), `limit`, `updated_since`  | `{"data":[…],"offset":o,"limit":n,"total":t}` |
//! | `after`  | `starting_after`, `limit`, `updated_since`   | `{"data":[…],"has_more":bool}` |
//! | `next_url` | `cursor`, `limit`, `updated_since`    | `{"data":[…],"links":{"next":"<absolute url>"\|null}}` |
//!
//! `updated_since` is RFC 3339 or whole seconds since the Unix epoch. Without it records come
//! in id order; with it, only records whose
//! `updated_at >= updated_since`, in `(updated_at, id)` order. The keyset styles (`cursor`,
//! `link`, `after`, `next_url`) resume strictly after the last record served, so while nothing is written
//! they yield every record exactly once. A cursor token carries the `updated_since` it was
//! made under. Parameters of another style, unknown or repeated parameters, and bad values
//! are a 400 `invalid_parameter`: a client bug should fail loudly, not sync the wrong data.

use serde_json::Value;

use super::args::Style;
use super::clock::parse_rfc3339_ns;
use super::data::Stream;
use super::error::ApiError;
use super::store::{Filter, Listed, Position, Store};

/// Page sizes from the flags.
#[derive(Copy, Clone, Debug)]
pub struct PageSizes {
    /// `--page-size`.
    pub default: u32,
    /// `--max-page-size`.
    pub max: u32,
}

/// Where a keyset page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Start {
    /// At the beginning.
    Beginning,
    /// Strictly after a position (from a cursor).
    After(Position),
    /// Strictly after a record id (from `starting_after`; looked up in the store).
    AfterId(String),
}

/// A parsed list request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    style: Style,
    filter: Filter,
    limit: usize,
    start: Start,
    /// Records to skip (offset and page styles).
    offset: usize,
    /// The 1-based page (page style).
    page: usize,
    /// How the answer is written.
    format: BodyFormat,
}

/// A page read from the store, not yet written out.
#[derive(Debug)]
pub struct Fetched {
    request: ListRequest,
    records: Vec<Listed>,
    more: bool,
    total: usize,
}

/// How a list answer is written (`?format=`, in the link, page and offset styles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    /// `{"data": [...], ...}` (the default).
    #[default]
    Json,
    /// One record per line, nothing else (`application/x-ndjson`).
    Jsonl,
    /// A header row with every member name on the page, then one row per record
    /// (`text/csv`): null and absent members as empty cells, nested values as their JSON.
    Csv,
}

impl BodyFormat {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Json => "application/json",
            BodyFormat::Jsonl => "application/x-ndjson",
            BodyFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// The answer to a list request.
#[derive(Debug)]
pub struct PageAnswer {
    /// The body, in the request's format.
    pub body: Vec<u8>,
    /// Its format.
    pub format: BodyFormat,
    /// A `Link` header value (link style, while more follow).
    pub link: Option<String>,
}

fn accepted_params(style: Style) -> &'static [&'static str] {
    match style {
        Style::Cursor | Style::NextUrl => &["cursor", "limit", "updated_since"],
        Style::Link => &["cursor", "limit", "updated_since", "format"],
        Style::Page => &["page", "per_page", "updated_since", "format"],
        Style::Offset => &["offset", "limit", "updated_since", "format"],
        Style::After => &["starting_after", "limit", "updated_since"],
    }
}

fn number(name: &str, value: &str, min: usize, max: usize) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_param(format!(
                "{name} must be a whole number in {min}..={max}, got '{value}'"
            ))
        })
}

/// Encodes a cursor token: opaque to clients, it carries the filter and the last position.
fn encode_cursor(filter: Filter, position: &Position) -> String {
    let since = filter.since_ns.map(|ns| ns.to_string()).unwrap_or_default();
    hex::encode(format!("1|{since}|{}|{}", position.updated_ms, position.id))
}

fn decode_cursor(token: &str) -> Result<(Filter, Position), ApiError> {
    let invalid = || ApiError {
        status: axum::http::StatusCode::BAD_REQUEST,
        code: "invalid_cursor",
        message: "the cursor is not one this API issued".to_owned(),
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let parts: Vec<&str> = text.splitn(4, '|').collect();
    let ["1", since, updated_ms, id] = parts.as_slice() else {
        return Err(invalid());
    };
    let since_ns = if since.is_empty() {
        None
    } else {
        Some(since.parse().map_err(|_| invalid())?)
    };
    Ok((
        Filter { since_ns },
        Position {
            updated_ms: updated_ms.parse().map_err(|_| invalid())?,
            id: (*id).to_owned(),
        },
    ))
}

impl ListRequest {
    /// Parses the query string of a list request in `style`.
    ///
    /// # Errors
    ///
    /// A 400 naming the parameter that is unknown to the style, repeated or out of range.
    pub fn parse(style: Style, query: &str, sizes: PageSizes) -> Result<Self, ApiError> {
        let accepted = accepted_params(style);
        let mut given: Vec<(String, String)> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if !accepted.contains(&key.as_ref()) {
                return Err(ApiError::bad_param(format!(
                    "parameter '{key}' is not accepted by {} pagination; accepted: {}",
                    style.as_str(),
                    accepted.join(", ")
                )));
            }
            if given.iter().any(|(k, _)| *k == key) {
                return Err(ApiError::bad_param(format!(
                    "parameter '{key}' is repeated"
                )));
            }
            given.push((key.into_owned(), value.into_owned()));
        }
        let get = |name: &str| {
            given
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let max = sizes.max as usize;
        let size_param = if style == Style::Page {
            "per_page"
        } else {
            "limit"
        };
        let limit = match get(size_param) {
            Some(v) => number(size_param, v, 1, max)?,
            None => sizes.default as usize,
        };
        // RFC 3339, or whole seconds since the Unix epoch (as Stripe and Zendesk filter).
        let since_ns = get("updated_since")
            .map(|v| match v.parse::<i64>() {
                Ok(secs) => Ok(i128::from(secs) * 1_000_000_000),
                Err(_) => parse_rfc3339_ns(v)
                    .map_err(|e| ApiError::bad_param(format!("updated_since: {e}"))),
            })
            .transpose()?;
        let mut request = Self {
            style,
            filter: Filter { since_ns },
            limit,
            start: Start::Beginning,
            offset: 0,
            page: 1,
            format: match get("format") {
                None | Some("json") => BodyFormat::Json,
                Some("jsonl") => BodyFormat::Jsonl,
                Some("csv") => BodyFormat::Csv,
                Some(other) => {
                    return Err(ApiError::bad_param(format!(
                        "format must be json, jsonl or csv, got '{other}'"
                    )));
                }
            },
        };
        if let Some(token) = get("cursor") {
            let (filter, position) = decode_cursor(token)?;
            if since_ns.is_some() && since_ns != filter.since_ns {
                return Err(ApiError::bad_param(
                    "updated_since differs from the one the cursor was issued under",
                ));
            }
            request.filter = filter;
            request.start = Start::After(position);
        }
        if let Some(id) = get("starting_after") {
            if id.is_empty() {
                return Err(ApiError::bad_param("starting_after must be a record id"));
            }
            request.start = Start::AfterId(id.to_owned());
        }
        if let Some(page) = get("page") {
            request.page = number("page", page, 1, usize::MAX / max.max(1))?;
            request.offset = (request.page - 1) * limit;
        }
        if let Some(offset) = get("offset") {
            request.offset = number("offset", offset, 0, usize::MAX / 2)?;
        }
        Ok(request)
    }

    /// Reads the page from the store (under the caller's read lock: only clones `Arc`s).
    ///
    /// # Errors
    ///
    /// A 400 when `starting_after` names an id that never existed.
    pub fn fetch(self, store: &Store, stream: Stream) -> Result<Fetched, ApiError> {
        let (records, more, total) = match (&self.style, &self.start) {
            (Style::Page | Style::Offset, _) => {
                let (records, total) = store.page_at(stream, self.filter, self.offset, self.limit);
                let more = self.offset + records.len() < total;
                (records, more, total)
            }
            (_, start) => {
                let position = match start {
                    Start::Beginning => None,
                    Start::After(position) => Some(position.clone()),
                    Start::AfterId(id) => Some(store.position_of(stream, id).ok_or_else(|| {
                        ApiError::bad_param(format!(
                            "starting_after: no {} record '{id}' ever existed",
                            stream.as_str()
                        ))
                    })?),
                };
                let (records, more) =
                    store.page_after(stream, self.filter, position.as_ref(), self.limit);
                (records, more, 0)
            }
        };
        Ok(Fetched {
            request: self,
            records,
            more,
            total,
        })
    }
}

impl Fetched {
    /// Writes the answer. `self_url` is the absolute URL of the endpoint without query, for
    /// the `Link` header.
    pub fn answer(&self, self_url: &str) -> PageAnswer {
        let request = &self.request;
        let next_cursor = || {
            self.records
                .last()
                .filter(|_| self.more)
                .map(|last| encode_cursor(request.filter, &last.position))
        };
        let mut link = None;
        let next_url = || {
            next_cursor().map(|token| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query
                    .append_pair("limit", &request.limit.to_string())
                    .append_pair("cursor", &token);
                match request.format {
                    BodyFormat::Json => {}
                    BodyFormat::Jsonl => {
                        query.append_pair("format", "jsonl");
                    }
                    BodyFormat::Csv => {
                        query.append_pair("format", "csv");
                    }
                }
                let query = query.finish();
                format!("{self_url}?{query}")
            })
        };
        let extra: Vec<(&str, Value)> = match request.style {
            Style::Cursor => vec![(
                "next_cursor",
                next_cursor().map_or(Value::Null, Value::from),
            )],
            Style::Link => {
                link = next_url().map(|url| format!("<{url}>; rel=\"next\""));
                vec![]
            }
            Style::NextUrl => vec![("links", serde_json::json!({ "next": next_url() }))],
            Style::Page => vec![
                ("page", Value::from(request.page)),
                ("per_page", Value::from(request.limit)),
                ("total", Value::from(self.total)),
                (
                    "total_pages",
                    Value::from(self.total.div_ceil(request.limit)),
                ),
            ],
            Style::Offset => vec![
                ("offset", Value::from(request.offset)),
                ("limit", Value::from(request.limit)),
                ("total", Value::from(self.total)),
            ],
            Style::After => vec![("has_more", Value::from(self.more))],
        };
        let body = match request.format {
            BodyFormat::Json => body(&self.records, &extra),
            BodyFormat::Jsonl => jsonl(&self.records),
            BodyFormat::Csv => csv_body(&self.records),
        };
        PageAnswer {
            body,
            format: request.format,
            link,
        }
    }
}

/// `{"data":[<records>],<extra>…}`: records are spliced in as stored, byte for byte.
fn body(records: &[Listed], extra: &[(&str, Value)]) -> Vec<u8> {
    let size: usize = records.iter().map(|r| r.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(b"{\"data\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(record.json.as_bytes());
    }
    out.push(b']');
    for (key, value) in extra {
        out.push(b',');
        serde_json::to_writer(&mut out, key).expect("a string serializes");
        out.push(b':');
        serde_json::to_writer(&mut out, value).expect("a JSON value serializes");
    }
    out.push(b'}');
    out
}

/// Records written in `format` alone (no pagination members): an export's file.
pub(super) fn write_records(records: &[Listed], format: BodyFormat) -> Vec<u8> {
    match format {
        BodyFormat::Json => body(records, &[]),
        BodyFormat::Jsonl => jsonl(records),
        BodyFormat::Csv => csv_body(records),
    }
}

fn jsonl(records: &[Listed]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.json.len() + 1).sum());
    for record in records {
        out.extend_from_slice(record.json.as_bytes());
        out.push(b'\n');
    }
    out
}

fn csv_body(records: &[Listed]) -> Vec<u8> {
    if records.is_empty() {
        return Vec::new(); // no records, no columns to name
    }
    let rows: Vec<serde_json::Map<String, Value>> = records
        .iter()
        .filter_map(|r| serde_json::from_str(&r.json).ok())
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for row in &rows {
        for name in row.keys() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&names).expect("writing to memory");
    for row in &rows {
        let cells = names.iter().map(|n| match row.get(*n) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        });
        w.write_record(cells).expect("writing to memory");
    }
    w.into_inner().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: PageSizes = PageSizes {
        default: 100,
        max: 1000,
    };

    #[test]
    fn cursors_round_trip() {
        let position = Position {
            updated_ms: 1_704_067_200_123,
            id: "cus_000042".into(),
        };
        for since_ns in [None, Some(1_704_067_200_000_000_001)] {
            let filter = Filter { since_ns };
            let token = encode_cursor(filter, &position);
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(decode_cursor(&token).unwrap(), (filter, position.clone()));
        }
        assert_eq!(decode_cursor("zz").unwrap_err().code, "invalid_cursor");
        assert_eq!(
            decode_cursor(&hex::encode("2|||x")).unwrap_err().code,
            "invalid_cursor"
        );
    }

    #[test]
    fn each_style_accepts_only_its_parameters() {
        for style in Style::ALL {
            for (param, value) in [
                ("cursor", "00"),
                ("limit", "5"),
                ("page", "2"),
                ("per_page", "5"),
                ("offset", "5"),
                ("starting_after", "cus_000001"),
            ] {
                let ok = accepted_params(style).contains(&param);
                let result = ListRequest::parse(style, &format!("{param}={value}"), SIZES);
                let err = result.as_ref().err().map(|e| e.code);
                if ok {
                    assert_ne!(err, Some("invalid_parameter"), "{style:?} {param}");
                } else {
                    assert_eq!(err, Some("invalid_parameter"), "{style:?} {param}");
                }
            }
        }
        let err = ListRequest::parse(Style::Cursor, "limit=1&limit=2", SIZES).unwrap_err();
        assert!(err.message.contains("repeated"));
        let err = ListRequest::parse(Style::Cursor, "updated_after=x", SIZES).unwrap_err();
        assert!(err.message.contains("updated_after"));
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(
            ListRequest::parse(Style::Cursor, "", SIZES).unwrap().limit,
            100
        );
        assert_eq!(
            ListRequest::parse(Style::Offset, "limit=1000", SIZES)
                .unwrap()
                .limit,
            1000
        );
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=x"] {
            assert!(
                ListRequest::parse(Style::After, bad, SIZES).is_err(),
                "{bad}"
            );
        }
        assert!(ListRequest::parse(Style::Page, "page=0", SIZES).is_err());
        let request = ListRequest::parse(Style::Page, "page=3&per_page=10", SIZES).unwrap();
        assert_eq!((request.offset, request.limit), (20, 10));
    }

    #[test]
    fn a_cursor_keeps_its_filter() {
        let filter = Filter {
            since_ns: Some(1_704_067_200_000_000_000),
        };
        let position = Position {
            updated_ms: 1,
            id: "x".into(),
        };
        let token = encode_cursor(filter, &position);
        let request = ListRequest::parse(Style::Link, &format!("cursor={token}"), SIZES).unwrap();
        assert_eq!(request.filter, filter);
        let same = format!("cursor={token}&updated_since=2024-01-01T00:00:00Z");
        assert!(ListRequest::parse(Style::Link, &same, SIZES).is_ok());
        let other = format!("cursor={token}&updated_since=2024-01-02T00:00:00Z");
        assert!(ListRequest::parse(Style::Link, &other, SIZES).is_err());
    }

    #[test]
    fn bodies_splice_records_verbatim() {
        let records = vec![Listed {
            position: Position {
                updated_ms: 0,
                id: "a".into(),
            },
            json: r#"{"id":"a"}"#.into(),
        }];
        let out = body(&records, &[("has_more", Value::from(false))]);
        assert_eq!(out, br#"{"data":[{"id":"a"}],"has_more":false}"#);
        assert_eq!(body(&[], &[]), br#"{"data":[]}"#);
    }
}
