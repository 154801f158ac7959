//! Zendesk mode: users by cursor pagination and tickets by the cursor-based incremental export,
//! over the simulator's customers and orders
//! (<https://developer.zendesk.com/api-reference/introduction/pagination/>,
//! <https://developer.zendesk.com/documentation/ticketing/managing-tickets/using-the-incremental-export-api/>).
//!
//! - `GET /api/v2/users` with `page[size]` (1 to 100) and `page[after]`: users by id,
//!   `{"users": [...], "meta": {"has_more", "after_cursor", "before_cursor"}, "links": {"next",
//!   "prev"}}`. As Zendesk, `links.next` is a URL on every page that has users, the last one
//!   too: `meta.has_more` false is what says it is the last. Without `page[size]` the endpoint
//!   falls back to offset pagination (`{"users", "next_page", "previous_page", "count"}`,
//!   100 a page), as Zendesk does. Deleted users are not listed.
//! - `GET /api/v2/incremental/tickets/cursor.json` with `start_time` (epoch seconds; required
//!   on the first request, at least one minute in the past, an integer — `start_time=2024-…`
//!   is a 400) or `cursor`, and `per_page` (1 to 1000, default 1000): every ticket changed at or
//!   after `start_time`, **deleted ones included with `status: "deleted"`**, in
//!   `(updated_at, id)` order, as `{"tickets": [...], "after_cursor", "after_url",
//!   "before_cursor", "before_url", "end_of_stream"}`. `after_url` is set on every page, the
//!   last one too (it is where the next export starts); `end_of_stream` true marks the last.
//! - Times are RFC 3339 at whole seconds, as Zendesk writes them; ids are integers. A ticket's
//!   `status`: pending → `new`, paid → `open`, shipped → `solved`, refunded → `closed`.
//! - Errors: `{"error": "InvalidPaginationParameter" | …, "description": …}` with 400.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::clock;
use super::data::{Body, CustomerStatus, OrderStatus, Record, Stream};
use super::pagination::whole_in;
use super::providers::{self, Params, ProviderError, TruthStream};
use super::state::SimState;
use super::store::Store;

/// The Zendesk routes.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/api/v2/users", get(users))
        .route("/api/v2/users.json", get(users))
        .route("/api/v2/incremental/tickets/cursor.json", get(tickets))
        .route("/api/v2/incremental/tickets/cursor", get(tickets))
}

fn error(code: &str, description: impl Into<String>) -> ProviderError {
    ProviderError {
        status: StatusCode::BAD_REQUEST,
        body: json!({ "error": code, "description": description.into() }),
    }
}

/// A user as Zendesk renders one.
pub fn user(r: &Record, base: &str) -> String {
    let (name, email, status) = providers::customer(r);
    let id = providers::number(&r.id);
    json!({
        "id": id,
        "url": format!("{base}/api/v2/users/{id}.json"),
        "name": name,
        "email": email,
        "role": "end-user",
        "active": status != CustomerStatus::Inactive,
        "suspended": status == CustomerStatus::Suspended,
        "created_at": providers::rfc3339_s(r.created_ms),
        "updated_at": providers::rfc3339_s(r.updated_ms),
    })
    .to_string()
}

/// A ticket as the export renders one.
pub fn ticket(r: &Record, base: &str) -> String {
    let Body::Order {
        customer_id,
        amount_cents,
        currency,
        status,
    } = &r.body
    else {
        unreachable!("tickets are orders")
    };
    let id = providers::number(&r.id);
    let status = match status {
        OrderStatus::Pending => "new",
        OrderStatus::Paid => "open",
        OrderStatus::Shipped => "solved",
        OrderStatus::Refunded => "closed",
    };
    json!({
        "id": id,
        "url": format!("{base}/api/v2/tickets/{id}.json"),
        "subject": format!("Order {} of {amount_cents} {currency}", r.id),
        "status": status,
        "requester_id": providers::number(customer_id),
        "created_at": providers::rfc3339_s(r.created_ms),
        "updated_at": providers::rfc3339_s(r.updated_ms),
    })
    .to_string()
}

/// A deleted ticket as the export renders one: what is left of it.
pub fn deleted_ticket(id: &str, deleted_ms: i64, base: &str) -> String {
    let id = providers::number(id);
    json!({
        "id": id,
        "url": format!("{base}/api/v2/tickets/{id}.json"),
        "subject": null,
        "status": "deleted",
        "requester_id": null,
        "created_at": null,
        "updated_at": providers::rfc3339_s(deleted_ms),
    })
    .to_string()
}

fn base(state: &SimState) -> String {
    format!("http://{}", state.local_addr)
}

#[derive(Serialize)]
struct Meta {
    has_more: bool,
    after_cursor: Option<String>,
    before_cursor: Option<String>,
}

#[derive(Serialize)]
struct Links {
    next: Option<String>,
    prev: Option<String>,
}

#[derive(Serialize)]
struct UsersPage {
    users: Vec<Box<RawValue>>,
    meta: Meta,
    links: Links,
}

#[derive(Serialize)]
struct UsersOffsetPage {
    users: Vec<Box<RawValue>>,
    next_page: Option<String>,
    previous_page: Option<String>,
    count: usize,
}

/// The query's parameters; a repeated one is an error `code`.
fn params(query: Option<&str>, code: &str) -> Result<Params, ProviderError> {
    Params::parse(query).map_err(|k| error(code, format!("{k} given twice")))
}

async fn users(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ProviderError> {
    let p = params(query.as_deref(), "InvalidPaginationParameter")?;
    let base = base(&state);
    let Some(size) = p.get("page[size]") else {
        // Offset pagination.
        let page: usize = match p.get("page") {
            None => 1,
            Some(v) => v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                error(
                    "InvalidPaginationParameter",
                    format!("page `{v}` is not a page number"),
                )
            })?,
        };
        let (users, count) = {
            let store = state.store();
            let live = store.live(Stream::Customers);
            let users: Vec<String> = live
                .values()
                .skip((page - 1) * 100)
                .take(100)
                .map(|e| user(&e.record, &base))
                .collect();
            (users, live.len())
        };
        let reply = UsersOffsetPage {
            next_page: (page * 100 < count)
                .then(|| format!("{base}/api/v2/users.json?page={}", page + 1)),
            previous_page: (page > 1)
                .then(|| format!("{base}/api/v2/users.json?page={}", page - 1)),
            users: providers::raw(users),
            count,
        };
        return Ok(providers::answered(
            &state,
            &state.providers.zendesk,
            &reply,
        ));
    };
    let size = whole_in(size, 1..=100).ok_or_else(|| {
        error(
            "InvalidPaginationParameter",
            format!("page[size] must be an integer from 1 to 100, got `{size}`"),
        )
    })?;
    if p.get("page[before]").is_some() {
        return Err(error(
            "InvalidPaginationParameter",
            "page[before] is not supported by this simulator",
        ));
    }
    let after = match p.get("page[after]") {
        None => None,
        Some(c) => Some(decode(c).ok_or_else(|| {
            error(
                "InvalidPaginationParameter",
                format!("page[after] `{c}` is not a cursor"),
            )
        })?),
    };
    let (page, more) = {
        let store = state.store();
        let live = store.live(Stream::Customers);
        let mut it: Box<dyn Iterator<Item = &super::store::Entry>> = match &after {
            Some(id) => Box::new(
                live.range::<str, _>((
                    std::ops::Bound::Excluded(id.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(_, e)| e),
            ),
            None => Box::new(live.values()),
        };
        let page: Vec<&Record> = it.by_ref().take(size).map(|e| &e.record).collect();
        let more = it.next().is_some();
        (
            page.iter()
                .map(|r| (r.id.clone(), user(r, &base)))
                .collect::<Vec<_>>(),
            more,
        )
    };
    let after_cursor = page.last().map(|(id, _)| encode(id));
    let before_cursor = page.first().map(|(id, _)| encode(id));
    let link = |param: &str, c: &str| {
        format!("{base}/api/v2/users.json?page%5Bsize%5D={size}&page%5B{param}%5D={c}")
    };
    let reply = UsersPage {
        links: Links {
            next: after_cursor.as_deref().map(|c| link("after", c)),
            prev: before_cursor.as_deref().map(|c| link("before", c)),
        },
        meta: Meta {
            has_more: more,
            after_cursor,
            before_cursor,
        },
        users: providers::raw(page.into_iter().map(|(_, u)| u).collect()),
    };
    Ok(providers::answered(
        &state,
        &state.providers.zendesk,
        &reply,
    ))
}

fn encode(text: &str) -> String {
    hex::encode(text)
}

fn decode(cursor: &str) -> Option<String> {
    String::from_utf8(hex::decode(cursor).ok()?).ok()
}

/// A ticket's place in the export: `(time in ms, id)`.
type Position = (i64, String);

fn encode_position((ms, id): &Position) -> String {
    encode(&format!("{ms}|{id}"))
}

fn decode_position(cursor: &str) -> Option<Position> {
    let text = decode(cursor)?;
    let (ms, id) = text.split_once('|')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

/// Every ticket the export knows, live or deleted, in `(time, id)` order with its text.
fn export(store: &Store, base: &str) -> Vec<(Position, String)> {
    let mut all: Vec<(Position, String)> = store
        .live(Stream::Orders)
        .values()
        .map(|e| {
            (
                (e.record.updated_ms, e.record.id.clone()),
                ticket(&e.record, base),
            )
        })
        .chain(store.deleted(Stream::Orders).iter().map(|(id, t)| {
            (
                (t.deleted_ms, id.clone()),
                deleted_ticket(id, t.deleted_ms, base),
            )
        }))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[derive(Serialize)]
struct TicketsPage {
    tickets: Vec<Box<RawValue>>,
    after_cursor: String,
    after_url: String,
    before_cursor: Option<String>,
    before_url: Option<String>,
    end_of_stream: bool,
}

async fn tickets(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ProviderError> {
    let p = params(query.as_deref(), "InvalidValue")?;
    let per_page: usize = match p.get("per_page") {
        None => 1000,
        Some(v) => whole_in(v, 1..=1000).ok_or_else(|| {
            error(
                "InvalidValue",
                format!("per_page `{v}` must lie in 1..=1000"),
            )
        })?,
    };
    // Strictly after this position; a start time is "at or after".
    let from: Position = match (p.get("cursor"), p.get("start_time")) {
        (Some(c), _) => decode_position(c)
            .ok_or_else(|| error("InvalidValue", format!("cursor `{c}` is not a cursor")))?,
        (None, Some(s)) => {
            let secs: i64 = s.parse().map_err(|_| {
                error(
                    "InvalidValue",
                    format!("start_time `{s}` is not an integer (epoch seconds)"),
                )
            })?;
            if secs > providers::secs(clock::now_ms()) - 60 {
                return Err(error(
                    "InvalidValue",
                    "Too recent start_time. Use a start_time older than 1 minute",
                ));
            }
            // Before every ticket of that second.
            (secs * 1000 - 1, "\u{10ffff}".to_owned())
        }
        (None, None) => {
            return Err(error("InvalidValue", "start_time or cursor is required"));
        }
    };
    let base = base(&state);
    let (page, more) = {
        let store = state.store();
        let all = export(&store, &base);
        let mut rest = all.into_iter().filter(|(pos, _)| *pos > from);
        let page: Vec<(Position, String)> = rest.by_ref().take(per_page).collect();
        let more = rest.next().is_some();
        (page, more)
    };
    let after_cursor = encode_position(page.last().map_or(&from, |(pos, _)| pos));
    let before_cursor = page.first().map(|(pos, _)| encode_position(pos));
    let url = |c: &str| format!("{base}/api/v2/incremental/tickets/cursor.json?cursor={c}");
    let reply = TicketsPage {
        after_url: url(&after_cursor),
        before_url: before_cursor.as_deref().map(url),
        after_cursor,
        before_cursor,
        end_of_stream: !more,
        tickets: providers::raw(page.into_iter().map(|(_, t)| t).collect()),
    };
    Ok(providers::answered(
        &state,
        &state.providers.zendesk,
        &reply,
    ))
}

/// What Zendesk serves now: users (version: `updated_at` in µs, whole seconds; deleted ones
/// unlisted) and tickets (deleted ones as `status: "deleted"`, versioned by the deletion).
pub fn truth(store: &Store, base: &str) -> Vec<(&'static str, TruthStream)> {
    let users = TruthStream::customers(
        store,
        |id| providers::number(id).to_string(),
        |r| Some(providers::secs_us(r.updated_ms)),
        |r| user(r, base),
    );
    let tickets = TruthStream {
        live: export(store, base)
            .into_iter()
            .map(|((ms, id), text)| {
                (
                    providers::number(&id).to_string(),
                    Some(providers::secs_us(ms)),
                    text,
                )
            })
            .collect(),
        deleted: Vec::new(),
    };
    vec![("users", users), ("tickets", tickets)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let p = (1_704_067_200_123, "ord_000001".to_owned());
        assert_eq!(decode_position(&encode_position(&p)), Some(p));
        assert_eq!(decode_position("zz"), None);
        assert_eq!(decode(&encode("cus_000002")).as_deref(), Some("cus_000002"));
    }
}
