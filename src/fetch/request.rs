//! Request shaping: a stream's method, headers and body with their placeholders filled in.
//!
//! Placeholders — `{cursor}`, `{since}`, `{until}`, `{page_size}`, `{page}` — may appear in the
//! path, in `query` values, in header values (the source's and the stream's) and in the body.
//! A query value or header value that is exactly a placeholder without a value (`{cursor}` on
//! the first page) is not sent; in a JSON body, a string that is exactly such a placeholder is
//! removed with its member (or array element), and one that is exactly `{page_size}` or
//! `{page}` becomes a JSON number. In a full sync `{since}` is the Unix epoch, in the
//! stream's `incremental.format`; `{until}` is the time the sync started.

use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Body, Method, SourceConfig, StatusRule, StreamConfig};

/// The values placeholders take for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    /// The pagination token (cursor, graphql and after styles), if the request has one.
    pub cursor: Option<String>,
    /// The incremental filter, formatted.
    pub since: Option<String>,
    /// The window's end, formatted.
    pub until: Option<String>,
    /// The page size.
    pub page_size: u32,
    /// The 1-based page number.
    pub page: u64,
    /// A child stream's placeholder and its parent's key (`("repo", "intake")` fills
    /// `{repo}`).
    pub parent: Option<(String, String)>,
}

impl Values {
    /// The values of a request for the page at `page` of a stream of `page_size`, with the
    /// formatted incremental filter `since` and window end `until` (no parent).
    pub fn at_page(
        page: &crate::fetch::paginate::PageCursor,
        page_size: u32,
        since: Option<String>,
        until: Option<String>,
    ) -> Self {
        Self {
            cursor: page.token().map(str::to_owned),
            since,
            until,
            page_size,
            page: page.page_number(page_size),
            parent: None,
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        match name {
            "cursor" => self.cursor.clone(),
            "since" => self.since.clone(),
            "until" => self.until.clone(),
            "page_size" => Some(self.page_size.to_string()),
            "page" => Some(self.page.to_string()),
            _ => self
                .parent
                .as_ref()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
        }
    }

    fn known(&self, name: &str) -> bool {
        crate::config::PLACEHOLDERS.contains(&name)
            || self.parent.as_ref().is_some_and(|(n, _)| n == name)
    }

    /// A path with its placeholders filled in; the parent's key is percent-encoded as one
    /// path segment, so a key holding `/`, `?` or `#` cannot change which resource is asked for.
    pub fn fill_path(&self, path: &str) -> String {
        match &self.parent {
            None => self.fill(path).unwrap_or_default(),
            Some((n, v)) => {
                let encoded: String = v
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                let safe = Values {
                    parent: Some((n.clone(), encoded)),
                    ..self.clone()
                };
                safe.fill(path).unwrap_or_default()
            }
        }
    }

    /// `text` with its placeholders filled in; `None` when it is exactly a placeholder
    /// without a value (the caller leaves it out). A placeholder without a value inside
    /// longer text becomes empty.
    pub fn fill(&self, text: &str) -> Option<String> {
        if let Some(name) = whole_placeholder(text).filter(|n| self.known(n)) {
            return self.get(name);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) if self.known(&after[..close]) => {
                    out.push_str(&self.get(&after[..close]).unwrap_or_default());
                    rest = &after[close + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Some(out)
    }

    /// A JSON value with placeholders filled in; `None`: leave it out.
    fn fill_json(&self, v: &Value) -> Option<Value> {
        Some(match v {
            Value::String(s) => {
                if let Some(name @ ("page_size" | "page")) = whole_placeholder(s) {
                    let n: u64 = self.get(name)?.parse().ok()?;
                    Value::from(n)
                } else {
                    Value::String(self.fill(s)?)
                }
            }
            Value::Array(a) => Value::Array(a.iter().filter_map(|x| self.fill_json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter_map(|(k, x)| Some((k.clone(), self.fill_json(x)?)))
                    .collect(),
            ),
            other => other.clone(),
        })
    }
}

/// The placeholder name when `text` is exactly one placeholder (known or not).
fn whole_placeholder(text: &str) -> Option<&str> {
    text.strip_prefix('{')?.strip_suffix('}')
}

/// A request's method, extra headers and body (the URL is built by `paginate`).
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// POST instead of GET.
    pub post: bool,
    /// DELETE instead of GET (an export's cleanup); no body.
    pub delete: bool,
    /// Headers beyond authentication, in order (the source's, then the stream's).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Content type and bytes of the body.
    pub body: Option<(&'static str, Bytes)>,
    /// Status rules: the stream's, then the source's.
    pub on_status: Vec<StatusRule>,
}

/// Why a request cannot be shaped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot build the request: {0}")]
pub struct ShapeError(pub String);

/// The method, headers and body of one request of `stream`.
///
/// # Errors
/// A header value that is not one once filled in.
pub fn shape(
    source: &SourceConfig,
    stream: &StreamConfig,
    values: &Values,
) -> Result<Shape, ShapeError> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for (k, v) in source.headers.iter().chain(&stream.headers) {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| ShapeError(format!("`{k}` is not a header name")))?;
        // A stream's header replaces the source's of the same name.
        headers.retain(|(n, _)| n != name);
        let Some(value) = values.fill(v) else {
            continue;
        };
        let value = HeaderValue::from_str(&value)
            .map_err(|_| ShapeError(format!("header `{k}` has an invalid value")))?;
        headers.push((name, value));
    }
    let body = match &stream.body {
        None => None,
        Some(Body::Json(v)) => {
            let filled = values.fill_json(v).unwrap_or(Value::Null);
            Some(("application/json", Bytes::from(filled.to_string())))
        }
        Some(Body::Form(f)) => {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in f {
                if let Some(v) = values.fill(v) {
                    ser.append_pair(k, &v);
                }
            }
            Some((
                "application/x-www-form-urlencoded",
                Bytes::from(ser.finish()),
            ))
        }
        Some(Body::Graphql { query, variables }) => {
            let vars = values
                .fill_json(&Value::Object(variables.clone()))
                .unwrap_or_default();
            let doc = serde_json::json!({ "query": query, "variables": vars });
            Some(("application/json", Bytes::from(doc.to_string())))
        }
    };
    Ok(Shape {
        post: stream.method == Method::Post,
        delete: false,
        headers,
        body,
        on_status: stream
            .on_status
            .iter()
            .chain(&source.on_status)
            .cloned()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Source `s` (at `http://h`, with `extra_source` lines) whose one stream `a` (at
    /// `/v1/a`) has `extra_stream` lines.
    fn source(extra_stream: &str, extra_source: &str) -> SourceConfig {
        crate::testing::config(&format!(
            "{}{}",
            crate::testing::source_toml("s", "http://h", extra_source),
            crate::testing::stream_toml("a", "/v1/a", extra_stream)
        ))
        .sources[0]
            .clone()
    }

    fn values(cursor: Option<&str>) -> Values {
        Values {
            cursor: cursor.map(str::to_owned),
            since: Some("1700000000".into()),
            until: Some("1700003600".into()),
            page_size: 100,
            page: 3,
            parent: None,
        }
    }

    #[test]
    fn a_parent_key_fills_its_placeholder_and_is_one_path_segment() {
        let v = Values {
            parent: Some(("repo".into(), "a/b?c#d é".into())),
            ..values(None)
        };
        assert_eq!(v.fill("q={repo}").as_deref(), Some("q=a/b?c#d é"));
        assert_eq!(v.fill("{repo}").as_deref(), Some("a/b?c#d é"));
        assert_eq!(
            v.fill_path("/v1/repos/{repo}/issues"),
            "/v1/repos/a%2Fb%3Fc%23d%20%C3%A9/issues"
        );
        // Not a child: `{repo}` is no placeholder and stays as written.
        assert_eq!(values(None).fill("{repo}").as_deref(), Some("{repo}"));
    }

    #[test]
    fn fill_substitutes_and_leaves_out_valueless_whole_placeholders() {
        let v = values(None);
        assert_eq!(v.fill("{cursor}"), None);
        assert_eq!(v.fill("{page_size}").as_deref(), Some("100"));
        assert_eq!(
            v.fill("created>={since} and <{until}, p{page} {x} {")
                .as_deref(),
            Some("created>=1700000000 and <1700003600, p3 {x} {")
        );
        assert_eq!(v.fill("after={cursor}").as_deref(), Some("after="));
    }

    #[test]
    fn hubspot_style_json_search_body() {
        let src = source(
            r#"method = "POST"
body = { json = { limit = "{page_size}", after = "{cursor}", sorts = ["hs_lastmodifieddate"], filterGroups = [{ filters = [{ propertyName = "hs_lastmodifieddate", operator = "GTE", value = "{since}" }] }] } }
headers = { "X-Page" = "{page}", "X-After" = "{cursor}" }"#,
            r#"headers = { "X-Page" = "source", "X-Api-Version" = "2026-01" }"#,
        );
        let st = &src.streams[0];
        let first = shape(&src, st, &values(None)).unwrap();
        assert!(first.post);
        let (ct, body) = first.body.unwrap();
        assert_eq!(ct, "application/json");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"limit": 100, "sorts": ["hs_lastmodifieddate"], "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1700000000"}]}]})
        );
        // The stream's X-Page replaces the source's; X-After is left out without a cursor.
        let h: Vec<(String, String)> = first
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            h,
            [
                ("x-api-version".to_owned(), "2026-01".to_owned()),
                ("x-page".to_owned(), "3".to_owned())
            ]
        );
        let next = shape(&src, st, &values(Some("200"))).unwrap();
        let body: Value = serde_json::from_slice(&next.body.unwrap().1).unwrap();
        assert_eq!(body["after"], "200");
        assert_eq!(next.headers.len(), 3);
    }

    #[test]
    fn graphql_and_form_bodies() {
        let src = source(
            r#"method = "POST"
body = { graphql = { query = "query($n: Int!, $after: String) { orders(first: $n, after: $after) { nodes { id } } }", variables = { n = "{page_size}", after = "{cursor}" } } }
pagination = { style = "graphql", end_cursor = "/data/orders/pageInfo/endCursor", has_next_page = "/data/orders/pageInfo/hasNextPage" }"#,
            "",
        );
        let s = shape(&src, &src.streams[0], &values(Some("Y3Vy"))).unwrap();
        let body: Value = serde_json::from_slice(&s.body.unwrap().1).unwrap();
        assert_eq!(
            body["variables"],
            serde_json::json!({"n": 100, "after": "Y3Vy"})
        );
        assert!(body["query"].as_str().unwrap().starts_with("query("));
        let first = shape(&src, &src.streams[0], &values(None)).unwrap();
        let body: Value = serde_json::from_slice(&first.body.unwrap().1).unwrap();
        assert_eq!(body["variables"], serde_json::json!({"n": 100}));

        let src = source(
            r#"method = "POST"
body = { form = { q = "updated>{since}", after = "{cursor}" } }"#,
            "",
        );
        let s = shape(&src, &src.streams[0], &values(None)).unwrap();
        let (ct, body) = s.body.unwrap();
        assert_eq!(ct, "application/x-www-form-urlencoded");
        assert_eq!(&body[..], b"q=updated%3E1700000000");
    }

    #[test]
    fn config_refuses_unknown_placeholders_bodies_on_get_and_graphql_without_cursor() {
        let bad = [
            (
                r#"query = { q = "{sinc}" }"#,
                "query.q",
                "unknown placeholder `{sinc}`",
            ),
            (
                r#"body = { json = { a = 1 } }"#,
                "body",
                "method = \"POST\"",
            ),
            (
                r#"method = "POST"
body = { graphql = { query = "{ x }" } }
pagination = { style = "graphql", end_cursor = "/e", has_next_page = "/h" }"#,
                "pagination",
                "{cursor}",
            ),
            (
                r#"headers = { "bad header" = "x" }"#,
                "headers.bad header",
                "header name",
            ),
            (
                r#"version_format = "epoch_s""#,
                "version_format",
                "needs a `version`",
            ),
            (r#"version = """#, "version", "must point inside"),
            (
                r#"incremental = { param = "", field = "/u" }"#,
                "incremental.param",
                "{since}",
            ),
            (
                r#"version = "/v"
version_format = "%Q""#,
                "version_format",
                "strftime",
            ),
        ];
        for (extra, field, why) in bad {
            let text = format!(
                "[kafka]\nbrokers = \"x:1\"\n[[sources]]\nname = \"s\"\nbase_url = \"http://h\"\n[[sources.streams]]\nname = \"a\"\npath = \"/a\"\nprimary_key = \"/id\"\n{extra}\n"
            );
            let err = Config::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(why), "{extra}: {err}");
        }
    }
}
