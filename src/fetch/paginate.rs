//! Pagination: where the next page is, for each of the seven styles.
//!
//! A [`PageCursor`] is the position inside one sync. It is stored in the cursor record after
//! every transaction, so a restarted fetch resumes at the first page not yet committed.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::request::Values;
use crate::config::{Pagination, StreamConfig};

/// The position of the next request within a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", content = "value", rename_all = "snake_case")]
pub enum PageCursor {
    /// The first page.
    Start,
    /// An opaque token from the previous body.
    Token(String),
    /// The URL of a `Link: rel="next"` header.
    Url(String),
    /// A 1-based page number.
    Page(u64),
    /// A record offset.
    Offset(u64),
    /// The last id seen (`starting_after`).
    After(String),
    /// The sync has read its last page.
    Done,
}

impl PageCursor {
    /// A short form for the `intake.cursor` headers.
    pub fn header_value(&self) -> String {
        match self {
            PageCursor::Start => "start".into(),
            PageCursor::Token(t) => format!("token:{t}"),
            PageCursor::Url(u) => format!("url:{u}"),
            PageCursor::Page(p) => format!("page:{p}"),
            PageCursor::Offset(o) => format!("offset:{o}"),
            PageCursor::After(a) => format!("after:{a}"),
            PageCursor::Done => "done".into(),
        }
    }
}

/// Why a next page cannot be determined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaginateError {
    /// The URL could not be built.
    #[error("cannot build request url: {0}")]
    Url(String),
    /// The `Link` header's next URL is not valid.
    #[error("Link header next url `{0}` is not valid")]
    BadLink(String),
    /// The last record has no id for `starting_after`.
    #[error("last record has no primary key at {0} for starting_after pagination")]
    NoLastId(String),
    /// A page with records points at itself as the next page: following it would land the
    /// same page forever.
    #[error("the page's next cursor `{0}` is the cursor that fetched it: pagination would loop")]
    NoProgress(String),
    /// A `Link` next URL on another origin than the source's base URL: following it would
    /// send the source's credentials to another host.
    #[error("next page url `{0}` leaves the source's origin `{1}`; not followed")]
    ForeignLink(String, String),
}

impl PageCursor {
    /// The value of the `{cursor}` placeholder at this position.
    pub fn token(&self) -> Option<&str> {
        match self {
            PageCursor::Token(t) | PageCursor::After(t) => Some(t),
            _ => None,
        }
    }

    /// The page number of `page` pagination at this position (1 before the first page).
    fn page(&self) -> u64 {
        match self {
            PageCursor::Page(n) => *n,
            _ => 1,
        }
    }

    /// The record offset of `offset` pagination at this position (0 before the first page).
    fn offset(&self) -> u64 {
        match self {
            PageCursor::Offset(n) => *n,
            _ => 0,
        }
    }

    /// The 1-based page number of the `{page}` placeholder at this position.
    pub fn page_number(&self, page_size: u32) -> u64 {
        match self {
            PageCursor::Page(n) => *n,
            PageCursor::Offset(o) => o / u64::from(page_size.max(1)) + 1,
            _ => 1,
        }
    }
}

/// Builds the URL of a request: the path and `query` values with their placeholders filled
/// in, the pagination parameters, and `filters` (the incremental parameters, already
/// formatted).
///
/// # Errors
/// When the base URL and path do not make a URL, or a next-page URL leaves the origin.
pub fn request_url(
    base_url: &str,
    stream: &StreamConfig,
    at: &PageCursor,
    values: &Values,
    filters: &[(&str, &str)],
) -> Result<Url, PaginateError> {
    if let PageCursor::Url(u) = at {
        let base = Url::parse(base_url).map_err(|e| PaginateError::Url(e.to_string()))?;
        let url = base
            .join(u)
            .map_err(|_| PaginateError::BadLink(u.clone()))?;
        // Credentials go with every request: never to a host the source did not name.
        if url.origin() != base.origin() {
            return Err(PaginateError::ForeignLink(
                u.clone(),
                base.origin().ascii_serialization(),
            ));
        }
        return Ok(url);
    }
    let path = stream
        .path
        .as_deref()
        .map(|p| values.fill_path(p))
        .unwrap_or_default();
    let mut url = Url::parse(&format!("{}{path}", base_url.trim_end_matches('/')))
        .map_err(|e| PaginateError::Url(e.to_string()))?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &stream.query {
            if let Some(v) = values.fill(v) {
                q.append_pair(k, &v);
            }
        }
        let size = stream.page_size.to_string();
        let mut pair = |k: &str, v: &str| {
            // An empty parameter name: the value travels through a placeholder instead.
            if !k.is_empty() {
                q.append_pair(k, v);
            }
        };
        if let Some(p) = size_param(&stream.pagination) {
            pair(p, &size);
        }
        if let Some((p, value)) = position_param(&stream.pagination, at) {
            pair(p, &value);
        }
        for (param, value) in filters {
            pair(param, value);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// The query parameter of the page size under `pagination`, where the style sends one.
fn size_param(pagination: &Pagination) -> Option<&str> {
    match pagination {
        Pagination::Cursor { size_param, .. }
        | Pagination::Page { size_param, .. }
        | Pagination::Offset { size_param, .. }
        | Pagination::After { size_param, .. } => Some(size_param),
        Pagination::Link { size_param } | Pagination::NextUrl { size_param, .. } => {
            size_param.as_deref()
        }
        Pagination::Graphql { .. } => None,
    }
}

/// The query parameter that carries the position `at` under `pagination`, with its value:
/// the page number or the offset (from the first page on), the token or the last id (once
/// the previous page gave one); none for the styles that follow a URL or post a body.
fn position_param<'a>(
    pagination: &'a Pagination,
    at: &'a PageCursor,
) -> Option<(&'a str, Cow<'a, str>)> {
    match (pagination, at) {
        (Pagination::Cursor { param, .. }, PageCursor::Token(t))
        | (Pagination::After { param, .. }, PageCursor::After(t)) => Some((param, t.into())),
        (Pagination::Page { param, .. }, _) => Some((param, at.page().to_string().into())),
        (Pagination::Offset { param, .. }, _) => Some((param, at.offset().to_string().into())),
        _ => None,
    }
}

/// What pagination needs to know about a response.
pub struct PageFacts<'a> {
    /// The parsed body (None when it was not JSON).
    pub body: Option<&'a Value>,
    /// The `Link` header, if any.
    pub link: Option<&'a str>,
    /// Number of records in the page.
    pub records: usize,
    /// Primary key of the last record (for `starting_after`).
    pub last_id: Option<String>,
}

impl<'a> PageFacts<'a> {
    /// The value at JSON pointer `pointer` of the body (None without one, or a body not JSON).
    fn value_at(&self, pointer: &str) -> Option<&'a Value> {
        self.body?.pointer(pointer)
    }

    /// The boolean at JSON pointer `pointer` of the body (a has-more or end flag), None
    /// where there is none.
    fn flag(&self, pointer: &str) -> Option<bool> {
        self.value_at(pointer)?.as_bool()
    }
}

/// The cursor after a page.
///
/// # Errors
/// When the response does not say where the next page is although it should.
pub fn next(
    stream: &StreamConfig,
    at: &PageCursor,
    facts: &PageFacts<'_>,
) -> Result<PageCursor, PaginateError> {
    let full = facts.records as u64 >= u64::from(stream.page_size);
    let after = match &stream.pagination {
        Pagination::Cursor { next_pointer, .. } => match facts.value_at(next_pointer) {
            Some(Value::String(s)) if !s.is_empty() => PageCursor::Token(s.clone()),
            Some(Value::Number(n)) => PageCursor::Token(n.to_string()),
            _ => PageCursor::Done,
        },
        Pagination::Link { .. } => match facts.link.and_then(next_link) {
            Some(u) => PageCursor::Url(u),
            None => PageCursor::Done,
        },
        Pagination::NextUrl {
            pointer,
            has_more,
            done,
            ..
        } => {
            let flag = |p: &Option<String>| p.as_deref().and_then(|p| facts.flag(p));
            if flag(has_more) == Some(false) || flag(done) == Some(true) {
                PageCursor::Done
            } else {
                match facts.value_at(pointer) {
                    Some(Value::String(u)) if !u.is_empty() => PageCursor::Url(u.clone()),
                    _ => PageCursor::Done,
                }
            }
        }
        Pagination::Graphql {
            end_cursor,
            has_next_page,
        } => {
            let more = facts.flag(has_next_page).unwrap_or(false);
            match facts.value_at(end_cursor) {
                Some(Value::String(c)) if more && !c.is_empty() => PageCursor::Token(c.clone()),
                _ => PageCursor::Done,
            }
        }
        Pagination::Page {
            has_more, total, ..
        } => {
            let n = at.page();
            let read = n.saturating_sub(1) * u64::from(stream.page_size) + facts.records as u64;
            if more_pages(facts, full, has_more.as_deref(), total.as_deref(), read) {
                PageCursor::Page(n + 1)
            } else {
                PageCursor::Done
            }
        }
        Pagination::Offset {
            has_more, total, ..
        } => {
            let n = at.offset();
            let read = n + facts.records as u64;
            if more_pages(facts, full, has_more.as_deref(), total.as_deref(), read) {
                PageCursor::Offset(read)
            } else {
                PageCursor::Done
            }
        }
        Pagination::After {
            has_more_pointer, ..
        } => {
            let more = facts.flag(has_more_pointer).unwrap_or(false);
            if more && facts.records > 0 {
                PageCursor::After(
                    facts
                        .last_id
                        .clone()
                        .ok_or_else(|| PaginateError::NoLastId(stream.primary_key.to_string()))?,
                )
            } else {
                PageCursor::Done
            }
        }
    };
    // A cursor that does not move: an empty page means "caught up", a page with records
    // would be fetched and landed again and again.
    if after != PageCursor::Done && &after == at {
        if facts.records == 0 {
            return Ok(PageCursor::Done);
        }
        return Err(PaginateError::NoProgress(after.header_value()));
    }
    Ok(after)
}

/// Whether a page or offset style sync goes on after a page: an empty page ends it; a
/// has-more flag that is false, or a total reached, ends it; otherwise a short page ends it,
/// unless a stop pointer says more follow.
fn more_pages(
    facts: &PageFacts<'_>,
    full: bool,
    has_more: Option<&str>,
    total: Option<&str>,
    read: u64,
) -> bool {
    if facts.records == 0 {
        return false;
    }
    let flag = has_more.and_then(|p| facts.flag(p));
    let total = total
        .and_then(|p| facts.value_at(p))
        .and_then(Value::as_u64);
    match (flag, total) {
        (Some(false), _) => false,
        (_, Some(t)) if read >= t => false,
        (Some(true), _) | (_, Some(_)) => true,
        (None, None) => full,
    }
}

/// A GraphQL answer's errors (its top-level `errors`, non-empty), as one line of their
/// messages: GraphQL servers answer 200 with errors instead of data, which must pause the
/// stream with the reason rather than land a page without records. `None` for any other
/// answer, and for streams not paged as GraphQL.
pub fn graphql_errors(stream: &StreamConfig, body: &Value) -> Option<String> {
    if !matches!(stream.pagination, Pagination::Graphql { .. }) {
        return None;
    }
    let errors = body.get("errors")?.as_array().filter(|e| !e.is_empty())?;
    let messages: Vec<String> = errors
        .iter()
        .map(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .map_or_else(|| e.to_string(), str::to_owned)
        })
        .collect();
    Some(format!(
        "GraphQL errors ({}): {}",
        errors.len(),
        messages.join("; ").chars().take(500).collect::<String>()
    ))
}

/// The `rel="next"` target of a `Link` header (RFC 8288), if any.
pub fn next_link(header: &str) -> Option<String> {
    for link in header.split(',') {
        let mut parts = link.split(';');
        let target = parts.next()?.trim();
        let target = target.strip_prefix('<')?.strip_suffix('>')?;
        let is_next = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|v| {
                    v.trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .unwrap_or(false)
        });
        if is_next {
            return Some(target.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values = Values {
        cursor: None,
        since: None,
        until: None,
        page_size: 2,
        page: 1,
        parent: None,
    };

    fn stream(pagination: &str) -> StreamConfig {
        stream_with(pagination, "")
    }

    /// A stream of `pagination` (path `/v1/a`, page size 2) with `extra` lines.
    fn stream_with(pagination: &str, extra: &str) -> StreamConfig {
        crate::testing::stream(
            "http://h",
            &format!("page_size = 2\npagination = {pagination}\n{extra}"),
        )
    }

    /// The cursor after a page at `at` of `stream` with `body` and `records` records (no
    /// `Link` header, no last id).
    fn after_page(
        stream: &StreamConfig,
        at: &PageCursor,
        body: &Value,
        records: usize,
    ) -> PageCursor {
        next(
            stream,
            at,
            &PageFacts {
                body: Some(body),
                link: None,
                records,
                last_id: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn link_header_parsing() {
        assert_eq!(
            next_link(r#"<https://a/b?p=2>; rel="next", <https://a/b?p=9>; rel="last""#).as_deref(),
            Some("https://a/b?p=2")
        );
        assert_eq!(next_link(r#"<https://a/b?p=9>; rel="last""#), None);
        assert_eq!(
            next_link(r#"</rel?x=1>; rel="prev next""#).as_deref(),
            Some("/rel?x=1")
        );
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn urls_per_style() {
        let s = stream(r#"{ style = "page" }"#);
        let u = request_url(
            "http://h",
            &s,
            &PageCursor::Page(3),
            &Values::default(),
            &[("updated_since", "2026-01-01T00:00:00Z")],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://h/v1/a?per_page=2&page=3&updated_since=2026-01-01T00%3A00%3A00Z"
        );
        let s = stream(r#"{ style = "cursor" }"#);
        assert_eq!(
            request_url("http://h/", &s, &PageCursor::Token("x y".into()), &V, &[])
                .unwrap()
                .as_str(),
            "http://h/v1/a?limit=2&cursor=x+y"
        );
        let s = stream(r#"{ style = "link" }"#);
        assert_eq!(
            request_url(
                "http://h",
                &s,
                &PageCursor::Url("/v1/a?after=5".into()),
                &V,
                &[]
            )
            .unwrap()
            .as_str(),
            "http://h/v1/a?after=5"
        );
    }

    #[test]
    fn a_cursor_that_does_not_move_ends_or_fails_instead_of_looping() {
        let body = serde_json::json!({"data": [1, 2], "next_cursor": "same", "has_more": true, "next": "/v1/a?p=2"});
        let full = PageFacts {
            body: Some(&body),
            link: Some(r#"</v1/a?p=2>; rel="next""#),
            records: 2,
            last_id: Some("same".into()),
        };
        let cases = [
            (r#"{ style = "cursor" }"#, PageCursor::Token("same".into())),
            (r#"{ style = "after" }"#, PageCursor::After("same".into())),
            (r#"{ style = "link" }"#, PageCursor::Url("/v1/a?p=2".into())),
            (
                r#"{ style = "next_url", pointer = "/next" }"#,
                PageCursor::Url("/v1/a?p=2".into()),
            ),
        ];
        for (style, at) in cases {
            let s = stream(style);
            assert_eq!(
                next(&s, &at, &full),
                Err(PaginateError::NoProgress(at.header_value())),
                "{style}"
            );
            let empty = PageFacts {
                body: Some(&body),
                link: full.link,
                records: 0,
                last_id: None,
            };
            // An empty page that points at itself: caught up (the after style ends on an empty page anyway).
            assert_eq!(next(&s, &at, &empty), Ok(PageCursor::Done), "{style}");
        }
        // Offset pagination with a page size of zero cannot loop either.
        let mut s = stream(r#"{ style = "offset" }"#);
        s.page_size = 0;
        let none = PageFacts {
            body: None,
            link: None,
            records: 0,
            last_id: None,
        };
        assert_eq!(
            next(&s, &PageCursor::Offset(4), &none),
            Ok(PageCursor::Done)
        );
    }

    #[test]
    fn link_urls_never_leave_the_source_origin() {
        let s = stream(r#"{ style = "link" }"#);
        for foreign in [
            "https://evil.example/v1/a?p=2",
            "//evil.example/v1/a",
            "http://h:8080/v1/a",
            "https://h/v1/a",
        ] {
            assert_eq!(
                request_url("http://h", &s, &PageCursor::Url(foreign.into()), &V, &[]),
                Err(PaginateError::ForeignLink(
                    foreign.into(),
                    "http://h".into()
                )),
                "{foreign}"
            );
        }
        assert_eq!(
            request_url(
                "http://h/api",
                &s,
                &PageCursor::Url("http://h/v1/a?p=2".into()),
                &V,
                &[]
            )
            .unwrap()
            .as_str(),
            "http://h/v1/a?p=2"
        );
    }

    #[test]
    fn next_per_style() {
        let body = serde_json::json!({"data": [1, 2], "next_cursor": "abc", "has_more": true});
        let facts = PageFacts {
            body: Some(&body),
            link: None,
            records: 2,
            last_id: Some("id2".into()),
        };
        let cases = [
            ("cursor", PageCursor::Start, PageCursor::Token("abc".into())),
            ("page", PageCursor::Page(4), PageCursor::Page(5)),
            ("offset", PageCursor::Offset(10), PageCursor::Offset(12)),
            ("after", PageCursor::Start, PageCursor::After("id2".into())),
            ("link", PageCursor::Start, PageCursor::Done),
        ];
        for (style, at, then) in cases {
            let s = stream(&format!(r#"{{ style = "{style}" }}"#));
            assert_eq!(next(&s, &at, &facts), Ok(then), "{style}");
        }
        let last = serde_json::json!({"data": [1], "next_cursor": null, "has_more": false});
        let facts = PageFacts {
            body: Some(&last),
            link: None,
            records: 1,
            last_id: Some("id3".into()),
        };
        for style in ["cursor", "page", "offset", "after"] {
            assert_eq!(
                next(
                    &stream(&format!(r#"{{ style = "{style}" }}"#)),
                    &PageCursor::Start,
                    &facts
                ),
                Ok(PageCursor::Done),
                "{style}"
            );
        }
    }

    #[test]
    fn link_and_next_url_send_a_size_parameter_only_when_configured() {
        for style in [
            r#"{ style = "link" }"#,
            r#"{ style = "next_url", pointer = "/links/next" }"#,
        ] {
            let u = request_url("http://h", &stream(style), &PageCursor::Start, &V, &[]).unwrap();
            assert_eq!(u.as_str(), "http://h/v1/a", "{style}");
        }
        let s = stream(r#"{ style = "link", size_param = "per_page" }"#);
        let u = request_url("http://h", &s, &PageCursor::Start, &V, &[("since", "x")]).unwrap();
        assert_eq!(u.as_str(), "http://h/v1/a?per_page=2&since=x");
        // The next link is followed as given.
        let u = request_url(
            "http://h",
            &s,
            &PageCursor::Url("/v1/a?page=2".into()),
            &V,
            &[],
        )
        .unwrap();
        assert_eq!(u.as_str(), "http://h/v1/a?page=2");
    }

    #[test]
    fn next_url_in_the_body_absolute_or_relative_same_origin_only() {
        let s = stream(r#"{ style = "next_url", pointer = "/links/next" }"#);
        let facts = |b: &'static str| -> PageCursor {
            let body: Value = serde_json::from_str(b).unwrap();
            after_page(&s, &PageCursor::Start, &body, 2)
        };
        assert_eq!(
            facts(r#"{"links": {"next": "http://h/v1/a?page[after]=x"}}"#),
            PageCursor::Url("http://h/v1/a?page[after]=x".into())
        );
        assert_eq!(
            facts(r#"{"links": {"next": "/v1/a?p=2"}}"#),
            PageCursor::Url("/v1/a?p=2".into())
        );
        assert_eq!(facts(r#"{"links": {"next": null}}"#), PageCursor::Done);
        assert_eq!(facts(r#"{"links": {"next": ""}}"#), PageCursor::Done);
        assert_eq!(facts(r#"{}"#), PageCursor::Done);
        assert_eq!(
            request_url(
                "http://h",
                &s,
                &PageCursor::Url("https://evil.example/v1/a".into()),
                &V,
                &[]
            ),
            Err(PaginateError::ForeignLink(
                "https://evil.example/v1/a".into(),
                "http://h".into()
            ))
        );
    }

    #[test]
    fn next_url_stop_flags_end_a_sync_whose_last_page_still_links_on() {
        let run =
            |style: &str, body: Value| after_page(&stream(style), &PageCursor::Start, &body, 2);
        let users =
            r#"{ style = "next_url", pointer = "/links/next", has_more = "/meta/has_more" }"#;
        let page = |more: bool| serde_json::json!({"links": {"next": "/v1/a?page[after]=x"}, "meta": {"has_more": more}});
        assert_eq!(
            run(users, page(true)),
            PageCursor::Url("/v1/a?page[after]=x".into())
        );
        assert_eq!(run(users, page(false)), PageCursor::Done);
        let export = r#"{ style = "next_url", pointer = "/after_url", done = "/end_of_stream" }"#;
        let page =
            |end: bool| serde_json::json!({"after_url": "/v1/a?cursor=c", "end_of_stream": end});
        assert_eq!(
            run(export, page(false)),
            PageCursor::Url("/v1/a?cursor=c".into())
        );
        assert_eq!(run(export, page(true)), PageCursor::Done);
        // Without the flags the URL is followed as before.
        assert_eq!(
            run(
                r#"{ style = "next_url", pointer = "/after_url" }"#,
                page(true)
            ),
            PageCursor::Url("/v1/a?cursor=c".into())
        );
    }

    #[test]
    fn graphql_errors_are_named_and_only_for_graphql_streams() {
        let gql = stream_with(
            r#"{ style = "graphql", end_cursor = "/data/c/pageInfo/endCursor", has_next_page = "/data/c/pageInfo/hasNextPage" }"#,
            r#"method = "POST"
body = { graphql = { query = "q", variables = { after = "{cursor}" } } }"#,
        );
        let body: Value = serde_json::from_str(
            r#"{"errors": [{"message": "Throttled"}, {"message": "Field 'x' doesn't exist"}], "data": null}"#,
        )
        .unwrap();
        let why = graphql_errors(&gql, &body).unwrap();
        assert!(
            why.contains("GraphQL errors (2)") && why.contains("Throttled") && why.contains("'x'"),
            "{why}"
        );
        let ok: Value = serde_json::from_str(r#"{"errors": [], "data": {"c": {}}}"#).unwrap();
        assert_eq!(graphql_errors(&gql, &ok), None);
        let rest = stream(r#"{ style = "cursor" }"#);
        assert_eq!(graphql_errors(&rest, &body), None);
    }

    #[test]
    fn graphql_page_info() {
        let s = stream_with(
            r#"{ style = "graphql", end_cursor = "/data/orders/pageInfo/endCursor", has_next_page = "/data/orders/pageInfo/hasNextPage" }"#,
            r#"records = "/data/orders/nodes"
method = "POST"
body = { graphql = { query = "q", variables = { after = "{cursor}" } } }"#,
        );
        let page = |more: bool, cursor: Value| {
            let body = serde_json::json!({"data": {"orders": {"nodes": [{"id": 1}], "pageInfo": {"endCursor": cursor, "hasNextPage": more}}}});
            after_page(&s, &PageCursor::Start, &body, 1)
        };
        assert_eq!(page(true, "c1".into()), PageCursor::Token("c1".into()));
        assert_eq!(page(false, "c1".into()), PageCursor::Done);
        assert_eq!(page(true, Value::Null), PageCursor::Done);
        // No query parameters: the cursor goes in the body.
        let u = request_url("http://h", &s, &PageCursor::Token("c1".into()), &V, &[]).unwrap();
        assert_eq!(u.as_str(), "http://h/v1/a");
    }

    #[test]
    fn page_and_offset_stop_pointers() {
        use PageCursor::{Done, Offset, Page};
        use serde_json::json;
        let has_more = r#"{ style = "page", has_more = "/has_more" }"#;
        let total = r#"{ style = "page", total = "/total" }"#;
        let offset = r#"{ style = "offset", total = "/meta/total" }"#;
        let bare_offset = r#"{ style = "offset" }"#;
        // (style, cursor, the page, its records, the cursor after it)
        let cases = [
            // A short page with has_more = true goes on; a full one with false ends.
            (has_more, Page(1), json!({"has_more": true}), 1, Page(2)),
            (has_more, Page(1), json!({"has_more": false}), 2, Done),
            // page_size 2: page 2 full, 4 of 4 read: done without asking for an empty page 3.
            (total, Page(2), json!({"total": 4}), 2, Done),
            (total, Page(2), json!({"total": 5}), 2, Page(3)),
            (offset, Offset(2), json!({"meta": {"total": 4}}), 2, Done),
            (
                offset,
                Offset(2),
                json!({"meta": {"total": 9}}),
                1,
                Offset(3),
            ),
            // Without stop pointers a short page ends, as before; an empty page always ends.
            (bare_offset, Offset(2), json!({}), 1, Done),
            (total, Page(2), json!({"total": 50}), 0, Done),
        ];
        for (style, at, body, records, after) in cases {
            assert_eq!(
                after_page(&stream(style), &at, &body, records),
                after,
                "{style} at {at:?}: {body}"
            );
        }
    }
}
