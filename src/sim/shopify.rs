//! Shopify mode: the GraphQL Admin API's `customers` connection over the simulator's customers
//! (<https://shopify.dev/docs/api/admin-graphql>, cursor-based pagination with `pageInfo`).
//!
//! - `POST /admin/api/{version}/graphql.json` with `{"query": "...", "variables": {...}}`. The
//!   document must query `customers(first: $first, after: $after, query: $query …)`; this
//!   simulator reads the arguments from the variables `first` (1 to 250), `after` (an
//!   `endCursor` it issued) and `query` (Shopify's search syntax, of which it understands
//!   `updated_at:>=…`, `updated_at:>…`, `updated_at:<=…`, `updated_at:<…` with an RFC 3339 time,
//!   quoted or not), and `sortKey: UPDATED_AT` in the document (else customers come by id). It
//!   does not evaluate the selection: every node has `id` (`gid://shopify/Customer/42`),
//!   `email`, `firstName`, `lastName`, `state`, `createdAt`, `updatedAt` (RFC 3339 at whole
//!   seconds).
//! - The answer: `{"data": {"customers": {"nodes": [...], "pageInfo": {"hasNextPage",
//!   "endCursor"}}}, "extensions": {"cost": …}}`. As GraphQL does, a bad query or variable is
//!   answered **200** with `{"errors": [{"message"}]}` and no `data`. Deleted customers are not
//!   returned.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::data::{CustomerStatus, Record};
use super::providers::{self, TruthStream};
use super::state::SimState;
use super::store::Store;

/// The Shopify routes.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/admin/api/{version}/graphql.json", post(graphql))
}

/// A customer node.
pub fn node(r: &Record) -> String {
    let (name, email, status) = providers::customer(r);
    let (first, last) = providers::split_name(name);
    let state = match status {
        CustomerStatus::Active => "ENABLED",
        CustomerStatus::Inactive => "DISABLED",
        CustomerStatus::Suspended => "DECLINED",
    };
    json!({
        "id": gid(&r.id),
        "email": email,
        "firstName": first,
        "lastName": last,
        "state": state,
        "createdAt": providers::rfc3339_s(r.created_ms),
        "updatedAt": providers::rfc3339_s(r.updated_ms),
    })
    .to_string()
}

/// `gid://shopify/Customer/<n>`.
pub fn gid(sim_id: &str) -> String {
    format!("gid://shopify/Customer/{}", providers::number(sim_id))
}

fn errors(message: impl Into<String>) -> Response {
    providers::ok_json(&json!({ "errors": [{ "message": message.into() }] }))
}

/// `(op, unix ms)` bounds on `updated_at` from Shopify's search syntax.
fn search(q: &str) -> Result<Vec<(String, i64)>, String> {
    let mut out = Vec::new();
    for term in q.split_whitespace() {
        if term.eq_ignore_ascii_case("AND") {
            continue;
        }
        let Some(rest) = term.strip_prefix("updated_at:") else {
            return Err(format!(
                "this simulator searches by updated_at only, not `{term}`"
            ));
        };
        let (op, value) = [">=", "<=", ">", "<"]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v)))
            .ok_or_else(|| format!("`{term}`: expected updated_at:>=<time>"))?;
        let value = value.trim_matches(|c| c == '\'' || c == '"');
        let ns = super::clock::parse_rfc3339_ns(value)
            .map_err(|_| format!("`{value}` is not a date and time"))?;
        out.push((
            op.to_owned(),
            i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX),
        ));
    }
    Ok(out)
}

#[derive(Serialize)]
struct PageInfo {
    #[serde(rename = "hasNextPage")]
    has_next_page: bool,
    #[serde(rename = "endCursor")]
    end_cursor: Option<String>,
}

#[derive(Serialize)]
struct Connection {
    nodes: Vec<Box<RawValue>>,
    #[serde(rename = "pageInfo")]
    page_info: PageInfo,
}

#[derive(Serialize)]
struct Data {
    customers: Connection,
}

#[derive(Serialize)]
struct Answer {
    data: Data,
    extensions: Value,
}

async fn graphql(
    State(state): State<Arc<SimState>>,
    Path(_version): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return errors("the body is not JSON");
    };
    let Some(doc) = request.get("query").and_then(Value::as_str) else {
        return errors("no query document");
    };
    if !doc.contains("customers(") {
        return errors("this simulator answers `customers` connections only");
    }
    let vars = request.get("variables").cloned().unwrap_or(Value::Null);
    let first = match vars.get("first") {
        Some(Value::Number(n)) => match n.as_u64().filter(|n| (1..=250).contains(n)) {
            Some(n) => n as usize,
            None => return errors("first must lie between 1 and 250"),
        },
        _ => return errors("Variable $first of type Int! was provided invalid value"),
    };
    let after = match vars.get("after") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => match decode(c) {
            Some(p) => Some(p),
            None => return errors(format!("Invalid cursor for current pagination: {c}")),
        },
        Some(_) => return errors("Variable $after of type String was provided invalid value"),
    };
    let bounds = match vars.get("query").and_then(Value::as_str) {
        None => Vec::new(),
        Some(q) => match search(q) {
            Ok(b) => b,
            Err(e) => return errors(e),
        },
    };
    let by_updated = doc.contains("sortKey: UPDATED_AT");
    let key = |r: &Record| {
        (
            if by_updated {
                providers::secs(r.updated_ms)
            } else {
                0
            },
            providers::number(&r.id),
        )
    };
    let (nodes, more, end) = {
        let store = state.store();
        let mut matching = providers::customers_where(&store, |r| {
            let t = providers::secs(r.updated_ms) * 1000;
            bounds.iter().all(|(op, at)| match op.as_str() {
                ">=" => t >= *at,
                ">" => t > *at,
                "<=" => t <= *at,
                _ => t < *at,
            })
        });
        matching.sort_by_key(|r| key(r));
        let mut rest = matching
            .into_iter()
            .filter(|r| after.is_none_or(|a| key(r) > a));
        let page: Vec<&Record> = rest.by_ref().take(first).collect();
        let more = rest.next().is_some();
        let end = page.last().map(|r| encode(key(r)));
        (page.into_iter().map(node).collect::<Vec<_>>(), more, end)
    };
    let cost = 2 + nodes.len();
    let reply = Answer {
        data: Data {
            customers: Connection {
                nodes: providers::raw(nodes),
                page_info: PageInfo {
                    has_next_page: more,
                    end_cursor: end,
                },
            },
        },
        extensions: json!({ "cost": {
            "requestedQueryCost": 2 + first,
            "actualQueryCost": cost,
            "throttleStatus": { "maximumAvailable": 2000.0, "currentlyAvailable": 2000 - cost, "restoreRate": 100.0 },
        }}),
    };
    providers::answered(&state, &state.providers.shopify, &reply)
}

fn encode((t, n): (i64, u64)) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(format!("{{\"last_id\":{n},\"last_value\":{t}}}"))
}

fn decode(cursor: &str) -> Option<(i64, u64)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some((v["last_value"].as_i64()?, v["last_id"].as_u64()?))
}

/// What the connection serves now; version: `updatedAt` in µs (whole seconds). Deleted
/// customers are only in `deleted`.
pub fn truth(store: &Store) -> Vec<(&'static str, TruthStream)> {
    let customers =
        TruthStream::customers(store, gid, |r| Some(providers::secs_us(r.updated_ms)), node);
    vec![("customers", customers)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_syntax_and_cursors() {
        assert_eq!(
            search("updated_at:>='2024-01-01T00:00:00Z'").unwrap(),
            [(">=".to_owned(), 1_704_067_200_000)]
        );
        assert!(search("updated_at:>=1704067200").is_err());
        assert!(search("email:x").is_err());
        assert_eq!(decode(&encode((5, 42))), Some((5, 42)));
        assert_eq!(decode("nope"), None);
    }
}
