//! The six pagination styles: parsing a list request, reading its page from the store, and
//! writing the answer.
//!
//! | style    | request parameters                      | answer |
//! |----------|-----------------------------------------|--------|
//! | `cursor` | `cursor`, `limit`, `updated_since`, `updated_before` | `{"data":[…],"next_cursor":"<token>"\|null}` |
//! | `link`   | `cursor`, `limit`, `updated_since`, `updated_before` | `{"data":[…]}` and `Link: <url>; rel="next"` while more follow |
//! | `page`   | `page` (from 1), `per_page`, `updated_since`, `updated_before` | `{"data":[…],"page":p,"per_page":n,"total":t,"total_pages":k}` |
//! | `offset` | `offset` (from 0), `limit`, `updated_since`, `updated_before`  | `{"data":[…],"offset":o,"limit":n,"total":t}` |
//! | `after`  | `starting_after`, `limit`, `updated_since`, `updated_before`   | `{"data":[…],"has_more":bool}` |
//! | `next_url` | `cursor`, `limit`, `updated_since`, `updated_before` | `{"data":[…],"links":{"next":"<absolute url>"\|null}}` |
//!
//! `updated_since` and `updated_before` are RFC 3339 or whole seconds since the Unix epoch.
//! Without either, records come in id order; with them, only records whose
//! `updated_since <= updated_at < updated_before`, in `(updated_at, id)` order
//! (`updated_before` alone: from the epoch; `updated_since` alone: to the end). A window
//! whose `updated_before` is not after its `updated_since` is empty, not an error. The keyset
//! styles (`cursor`, `link`, `after`, `next_url`) resume strictly after the last record
//! served, so while nothing is written they yield every record exactly once. A cursor token
//! carries the `updated_since` and `updated_before` it was made under (a request that sends
//! the token with a different one is a 400), and how many records of its query were served
//! before it. Parameters of another style, unknown or repeated parameters, and bad values
//! are a 400 `invalid_parameter`: a client bug should fail loudly, not sync the wrong data.
//!
//! # Result cap (`--result-cap N`)
//!
//! As HubSpot's search stops at 10 000 results, a query (one `updated_since`/`updated_before`
//! pair) can then be read only up to its first `N` records. A page is placed in its query by
//! the records before it: the offset (`page` and `offset` styles), the count carried in the
//! cursor token (`cursor`, `link`, `next_url`), or the records of the query at or before the
//! `starting_after` record (`after`). A page that would start at or past `N` is a 400
//! `{"error":"result_cap","message":"this query matches more than N records; narrow it (e.g.
//! with updated_since/updated_before)"}` (counted as `result_cap_refusals` in
//! `GET /admin/stats`); a page that starts below `N` but would run past it is cut at `N` and
//! still says more follow (next token, `Link`, `has_more`, the full `total`), so a client
//! learns of the cap only from the next request's 400.

use std::ops::RangeInclusive;

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
    /// Records of this query served before this page: from the cursor token, the offset in
    /// the page and offset styles, looked up for `starting_after` (only with a result cap).
    served: usize,
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
        Style::Cursor | Style::NextUrl => &["cursor", "limit", "updated_since", "updated_before"],
        Style::Link => &[
            "cursor",
            "limit",
            "updated_since",
            "updated_before",
            "format",
        ],
        Style::Page => &[
            "page",
            "per_page",
            "updated_since",
            "updated_before",
            "format",
        ],
        Style::Offset => &[
            "offset",
            "limit",
            "updated_since",
            "updated_before",
            "format",
        ],
        Style::After => &["starting_after", "limit", "updated_since", "updated_before"],
    }
}

/// The error code of a page refused by `--result-cap`.
pub const RESULT_CAP_CODE: &str = "result_cap";

fn result_cap_error(cap: usize) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::BAD_REQUEST,
        code: RESULT_CAP_CODE,
        message: format!(
            "this query matches more than {cap} records; narrow it (e.g. with updated_since/updated_before)"
        ),
    }
}

/// A time bound: RFC 3339, or whole seconds since the Unix epoch (as Stripe and Zendesk
/// filter), in unix ns.
fn time_param(name: &str, value: Option<&str>) -> Result<Option<i128>, ApiError> {
    value
        .map(|v| match v.parse::<i64>() {
            Ok(secs) => Ok(i128::from(secs) * 1_000_000_000),
            Err(_) => parse_rfc3339_ns(v).map_err(|e| ApiError::bad_param(format!("{name}: {e}"))),
        })
        .transpose()
}

/// `value` as a whole number in `range`; `None` when it is not one.
pub fn whole_in(value: &str, range: RangeInclusive<usize>) -> Option<usize> {
    value.parse::<usize>().ok().filter(|n| range.contains(n))
}

/// The parameter `name`'s `value` as a whole number in `min..=max`; a 400 naming it otherwise.
pub fn number(name: &str, value: &str, min: usize, max: usize) -> Result<usize, ApiError> {
    whole_in(value, min..=max).ok_or_else(|| {
        ApiError::bad_param(format!(
            "{name} must be a whole number in {min}..={max}, got '{value}'"
        ))
    })
}

/// Encodes a cursor token: opaque to clients, it carries the filter, the records of the
/// query served up to and including the last one, and the last position
/// (`2|since|before|served|updated_ms|id`, hex).
fn encode_cursor(filter: Filter, served: usize, position: &Position) -> String {
    let ns = |bound: Option<i128>| bound.map(|ns| ns.to_string()).unwrap_or_default();
    hex::encode(format!(
        "2|{}|{}|{served}|{}|{}",
        ns(filter.since_ns),
        ns(filter.before_ns),
        position.updated_ms,
        position.id
    ))
}

/// Decodes a cursor token into its filter, the records served before the page it asks for,
/// and the position the page starts after. Tokens of the first format
/// (`1|since|updated_ms|id`, before `updated_before`) still decode, as served from 0.
fn decode_cursor(token: &str) -> Result<(Filter, usize, Position), ApiError> {
    let invalid = || ApiError {
        status: axum::http::StatusCode::BAD_REQUEST,
        code: "invalid_cursor",
        message: "the cursor is not one this API issued".to_owned(),
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let bound = |s: &str| -> Result<Option<i128>, ApiError> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| invalid())
        }
    };
    let (since, before, served, updated_ms, id) = match text.split_once('|') {
        Some(("1", rest)) => {
            let parts: Vec<&str> = rest.splitn(3, '|').collect();
            let [since, updated_ms, id] = parts.as_slice() else {
                return Err(invalid());
            };
            (*since, "", "0", *updated_ms, *id)
        }
        Some(("2", rest)) => {
            let parts: Vec<&str> = rest.splitn(5, '|').collect();
            let [since, before, served, updated_ms, id] = parts.as_slice() else {
                return Err(invalid());
            };
            (*since, *before, *served, *updated_ms, *id)
        }
        _ => return Err(invalid()),
    };
    Ok((
        Filter {
            since_ns: bound(since)?,
            before_ns: bound(before)?,
        },
        served.parse().map_err(|_| invalid())?,
        Position {
            updated_ms: updated_ms.parse().map_err(|_| invalid())?,
            id: id.to_owned(),
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
        let since_ns = time_param("updated_since", get("updated_since"))?;
        let before_ns = time_param("updated_before", get("updated_before"))?;
        let mut request = Self {
            style,
            filter: Filter {
                since_ns,
                before_ns,
            },
            served: 0,
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
            let (filter, served, position) = decode_cursor(token)?;
            if since_ns.is_some() && since_ns != filter.since_ns {
                return Err(ApiError::bad_param(
                    "updated_since differs from the one the cursor was issued under",
                ));
            }
            if before_ns.is_some() && before_ns != filter.before_ns {
                return Err(ApiError::bad_param(
                    "updated_before differs from the one the cursor was issued under",
                ));
            }
            request.filter = filter;
            request.served = served;
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
        if matches!(style, Style::Page | Style::Offset) {
            request.served = request.offset;
        }
        Ok(request)
    }

    /// Reads the page from the store (under the caller's read lock: only clones `Arc`s).
    /// `cap` is `--result-cap` (0: none).
    ///
    /// # Errors
    ///
    /// A 400 when `starting_after` names an id that never existed; a 400 `result_cap` when
    /// the page would start at or past the `cap`th record of its query.
    pub fn fetch(mut self, store: &Store, stream: Stream, cap: usize) -> Result<Fetched, ApiError> {
        let position = match &self.start {
            Start::Beginning => None,
            Start::After(position) => Some(position.clone()),
            Start::AfterId(id) => Some(store.position_of(stream, id).ok_or_else(|| {
                ApiError::bad_param(format!(
                    "starting_after: no {} record '{id}' ever existed",
                    stream.as_str()
                ))
            })?),
        };
        if cap > 0
            && let (Start::AfterId(_), Some(position)) = (&self.start, &position)
        {
            self.served = store.rank_at_most(stream, self.filter, position, cap);
        }
        let limit = match cap {
            0 => self.limit,
            cap if self.served >= cap => return Err(result_cap_error(cap)),
            cap => self.limit.min(cap - self.served),
        };
        let (records, more, total) = match self.style {
            Style::Page | Style::Offset => {
                let (records, total) = store.page_at(stream, self.filter, self.offset, limit);
                let more = self.offset + records.len() < total;
                (records, more, total)
            }
            _ => {
                let (records, more) =
                    store.page_after(stream, self.filter, position.as_ref(), limit);
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
            self.records.last().filter(|_| self.more).map(|last| {
                encode_cursor(
                    request.filter,
                    request.served + self.records.len(),
                    &last.position,
                )
            })
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
    use super::super::clock;
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
            for before_ns in [None, Some(1_704_153_600_000_000_000)] {
                let filter = Filter {
                    since_ns,
                    before_ns,
                };
                let token = encode_cursor(filter, 17, &position);
                assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
                assert_eq!(
                    decode_cursor(&token).unwrap(),
                    (filter, 17, position.clone())
                );
            }
        }
        // A token of the first format (no updated_before, no count) still decodes.
        let old = hex::encode(format!("1|5|{}|{}", position.updated_ms, position.id));
        assert_eq!(
            decode_cursor(&old).unwrap(),
            (
                Filter {
                    since_ns: Some(5),
                    before_ns: None
                },
                0,
                position.clone()
            )
        );
        assert_eq!(decode_cursor("zz").unwrap_err().code, "invalid_cursor");
        for bad in ["2|||x", "1|||", "2||||1|x", "2|||-1|1|x", "3|||0|1|x"] {
            assert_eq!(
                decode_cursor(&hex::encode(bad)).unwrap_err().code,
                "invalid_cursor",
                "{bad}"
            );
        }
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
                ("updated_since", "1704067200"),
                ("updated_before", "2024-01-02T00:00:00Z"),
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
            before_ns: Some(1_704_153_600_000_000_000),
        };
        let position = Position {
            updated_ms: 1,
            id: "x".into(),
        };
        let token = encode_cursor(filter, 3, &position);
        for style in [Style::Cursor, Style::Link, Style::NextUrl] {
            let request = ListRequest::parse(style, &format!("cursor={token}"), SIZES).unwrap();
            assert_eq!(request.filter, filter, "the token's bounds, none sent");
            assert_eq!(request.served, 3);
            for same in [
                "updated_since=2024-01-01T00:00:00Z",
                "updated_before=2024-01-02T00:00:00Z",
                "updated_since=1704067200&updated_before=1704153600",
            ] {
                let query = format!("cursor={token}&{same}");
                assert_eq!(
                    ListRequest::parse(style, &query, SIZES).unwrap().filter,
                    filter
                );
            }
            for (other, name) in [
                ("updated_since=2024-01-02T00:00:00Z", "updated_since"),
                ("updated_before=2024-01-03T00:00:00Z", "updated_before"),
                ("updated_before=2024-01-01T23:59:59.999Z", "updated_before"),
            ] {
                let err = ListRequest::parse(style, &format!("cursor={token}&{other}"), SIZES)
                    .unwrap_err();
                assert_eq!(err.code, "invalid_parameter");
                assert!(err.message.contains(name), "{}", err.message);
            }
        }
        // A token issued without updated_before refuses one sent later.
        let open = encode_cursor(
            Filter {
                since_ns: Some(0),
                before_ns: None,
            },
            0,
            &position,
        );
        let query = format!("cursor={open}&updated_before=1704153600");
        assert!(ListRequest::parse(Style::Cursor, &query, SIZES).is_err());
        // The bound is parsed as updated_since is.
        let request = ListRequest::parse(Style::Page, "updated_before=1704153600", SIZES).unwrap();
        assert_eq!(
            request.filter,
            Filter {
                since_ns: None,
                before_ns: Some(1_704_153_600_000_000_000)
            }
        );
        let err = ListRequest::parse(Style::After, "updated_before=yesterday", SIZES).unwrap_err();
        assert!(err.message.starts_with("updated_before"), "{}", err.message);
    }

    fn store(records: u64) -> Store {
        use super::super::render::RenderConfig;
        use super::super::store::StoreConfig;
        Store::new(
            StoreConfig {
                records,
                span_days: super::super::data::DEFAULT_SPAN_DAYS,
                render: RenderConfig {
                    seed: 5,
                    drift_rate: 0.0,
                    drift_kinds: vec![],
                    large_rate: 0.0,
                    large_bytes: Vec::new(),
                },
                create_share: 0.2,
                delete_share: 0.1,
                backdate_rate: 0.0,
                backdate_min_ms: 0,
                backdate_max_ms: 0,
            },
            true,
        )
    }

    /// One page: its ids and its answer as JSON (with the `Link` header as `"link"`).
    fn page(
        s: &Store,
        style: Style,
        query: &str,
        cap: usize,
    ) -> Result<(Vec<String>, Value), ApiError> {
        let fetched = ListRequest::parse(style, query, SIZES)?.fetch(s, Stream::Customers, cap)?;
        let ids = fetched
            .records
            .iter()
            .map(|l| l.position.id.clone())
            .collect();
        let answer = fetched.answer("http://sim/v1/customers");
        let mut body: Value = serde_json::from_slice(&answer.body).unwrap();
        body["link"] = answer.link.map_or(Value::Null, Value::from);
        Ok((ids, body))
    }

    /// The query of the next page a keyset answer points to, if any.
    fn next_query(style: Style, body: &Value, limit: usize) -> Option<String> {
        let url = |u: &str| u.split_once('?').unwrap().1.to_owned();
        match style {
            Style::Cursor => body["next_cursor"]
                .as_str()
                .map(|t| format!("limit={limit}&cursor={t}")),
            Style::Link => body["link"]
                .as_str()
                .map(|l| url(l.trim_start_matches('<').split_once('>').unwrap().0)),
            Style::NextUrl => body["links"]["next"].as_str().map(url),
            _ => unreachable!("a keyset style with a token"),
        }
    }

    #[test]
    fn the_result_cap_cuts_keyset_queries() {
        let s = store(50);
        let cap = 12;
        let all: Vec<String> = s.live(Stream::Customers).keys().cloned().collect();
        let (by_time, _) = s.page_at(
            Stream::Customers,
            Filter {
                since_ns: Some(0),
                before_ns: None,
            },
            0,
            100,
        );
        let by_time: Vec<String> = by_time.into_iter().map(|l| l.position.id).collect();
        for style in [Style::Cursor, Style::Link, Style::NextUrl] {
            for (first, expected) in [("limit=5", &all), ("limit=5&updated_since=0", &by_time)] {
                let mut query = first.to_owned();
                let mut served = Vec::new();
                let mut sizes = Vec::new();
                let err = loop {
                    match page(&s, style, &query, cap) {
                        Ok((ids, body)) => {
                            sizes.push(ids.len());
                            served.extend(ids);
                            query = next_query(style, &body, 5)
                                .expect("more follow, even on the cut page");
                        }
                        Err(err) => break err,
                    }
                };
                assert_eq!(sizes, [5, 5, 2], "{style:?} {first}");
                assert_eq!(served, expected[..cap], "{style:?} {first}");
                assert_eq!(err.code, RESULT_CAP_CODE);
                assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
                assert_eq!(
                    err.message,
                    "this query matches more than 12 records; narrow it (e.g. with updated_since/updated_before)"
                );
            }
            // Without a cap, or under a cap the query never reaches, every record comes.
            for cap in [0, 50, 1000] {
                let mut query = "limit=7".to_owned();
                let mut served = Vec::new();
                loop {
                    let (ids, body) = page(&s, style, &query, cap).unwrap();
                    served.extend(ids);
                    match next_query(style, &body, 7) {
                        Some(next) => query = next,
                        None => break,
                    }
                }
                assert_eq!(served, all, "{style:?} cap {cap}");
            }
        }
        // starting_after: placed by the records of the query at or before it.
        let (ids, body) = page(
            &s,
            Style::After,
            &format!("limit=5&starting_after={}", all[9]),
            cap,
        )
        .unwrap();
        assert_eq!(ids, all[10..12]);
        assert_eq!(body["has_more"], true);
        let err = page(
            &s,
            Style::After,
            &format!("limit=5&starting_after={}", all[11]),
            cap,
        )
        .unwrap_err();
        assert_eq!(err.code, RESULT_CAP_CODE);
        let (ids, _) = page(
            &s,
            Style::After,
            &format!("limit=5&starting_after={}", all[11]),
            0,
        )
        .unwrap();
        assert_eq!(ids, all[12..17]);
        // A narrower window is a new query, counted from its own first record.
        let pivot = s
            .position_of(Stream::Customers, &by_time[20])
            .unwrap()
            .updated_ms;
        let window = format!("limit=100&updated_since={}", clock::format_ms(pivot));
        let (ids, body) = page(&s, Style::Cursor, &window, cap).unwrap();
        assert_eq!(ids, by_time[20..32]);
        assert!(body["next_cursor"].is_string());
    }

    #[test]
    fn the_result_cap_cuts_page_and_offset_queries() {
        let s = store(50);
        let all: Vec<String> = s.live(Stream::Customers).keys().cloned().collect();
        let (ids, body) = page(&s, Style::Page, "page=2&per_page=5", 12).unwrap();
        assert_eq!(ids, all[5..10]);
        let (ids, body3) = page(&s, Style::Page, "page=3&per_page=5", 12).unwrap();
        assert_eq!(ids, all[10..12], "cut at the cap");
        for b in [&body, &body3] {
            assert_eq!(b["total"], 50, "the full count, as HubSpot's");
            assert_eq!(b["total_pages"], 10);
        }
        let err = page(&s, Style::Page, "page=4&per_page=5", 12).unwrap_err();
        assert_eq!(err.code, RESULT_CAP_CODE);
        assert!(page(&s, Style::Page, "page=4&per_page=5", 0).is_ok());

        let (ids, body) = page(&s, Style::Offset, "offset=11&limit=5", 12).unwrap();
        assert_eq!(ids, all[11..12]);
        assert_eq!(body["total"], 50);
        for refused in ["offset=12&limit=5", "offset=40&limit=5"] {
            let err = page(&s, Style::Offset, refused, 12).unwrap_err();
            assert_eq!(err.code, RESULT_CAP_CODE, "{refused}");
        }
        // Windows: each its own query.
        let (window, _) = s.page_at(
            Stream::Customers,
            Filter {
                since_ns: Some(0),
                before_ns: None,
            },
            20,
            30,
        );
        let since = clock::format_ms(window[0].position.updated_ms);
        let before = clock::format_ms(window[29].position.updated_ms);
        let query = format!("offset=0&limit=100&updated_since={since}&updated_before={before}");
        let (ids, body) = page(&s, Style::Offset, &query, 12).unwrap();
        assert_eq!(ids.len(), 12);
        let total = body["total"].as_u64().unwrap();
        assert!(
            (25..=29).contains(&total),
            "the window's records only: {total}"
        );
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
