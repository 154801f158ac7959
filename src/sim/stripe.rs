//! Stripe mode: `GET /stripe/v1/customers` and `GET /stripe/v1/events` as Stripe's API serves
//! lists (<https://docs.stripe.com/api/pagination>, <https://docs.stripe.com/api/events/list>).
//!
//! - A list is `{"object": "list", "url": …, "has_more": bool, "data": [...]}`, newest first
//!   (by `created`, then id); `limit` is 1 to 100 (default 10), `starting_after=<id>` continues
//!   after that object. `ending_before` is refused here (intake never pages backwards).
//! - Customers (the simulator's customers) carry no version and no update time: `created`
//!   (epoch seconds) never changes, so only a later read tells an update. `metadata.status`
//!   holds the simulator's status, `delinquent` is true for suspended ones. A deleted customer
//!   is no longer listed.
//! - Events (the simulator's append-only events) are immutable: `created` in epoch seconds,
//!   filtered by `created[gte]`, `created[gt]`, `created[lte]`, `created[lt]` (integers only,
//!   as Stripe: `created[gte]=2024-01-01T00:00:00Z` is a 400 `Invalid integer`), `type` a
//!   `charge.succeeded` for a purchase and `customer.updated` otherwise, `data.object` the
//!   charge or customer it is about.
//! - Errors are Stripe's: `{"error": {"type": "invalid_request_error", "message", "param"}}`
//!   with 400, also for an unknown parameter and for a `Stripe-Version` header that is not a
//!   date.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::data::{Body, CustomerStatus, EventType, Record, Stream};
use super::providers::{self, Params, ProviderError, TruthStream};
use super::state::SimState;
use super::store::{Entry, Store};

/// The API version events are rendered in (`api_version`).
pub const API_VERSION: &str = "2024-06-20";

/// The Stripe routes.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/stripe/v1/customers", get(customers))
        .route("/stripe/v1/events", get(events))
}

fn invalid(message: impl Into<String>, param: Option<&str>) -> ProviderError {
    ProviderError {
        status: StatusCode::BAD_REQUEST,
        body: json!({ "error": {
            "type": "invalid_request_error",
            "message": message.into(),
            "param": param,
        }}),
    }
}

/// A customer as Stripe renders one.
pub fn customer(r: &Record) -> String {
    let (name, email, status) = providers::customer(r);
    json!({
        "id": r.id,
        "object": "customer",
        "created": providers::secs(r.created_ms),
        "delinquent": status == CustomerStatus::Suspended,
        "email": email,
        "livemode": false,
        "metadata": { "status": status.as_str() },
        "name": name,
    })
    .to_string()
}

/// An event as Stripe renders one.
pub fn event(r: &Record) -> String {
    let Body::Event {
        kind, entity_id, ..
    } = &r.body
    else {
        unreachable!("events are events")
    };
    let (kind, object) = match kind {
        EventType::Purchase => ("charge.succeeded", "charge"),
        _ => ("customer.updated", "customer"),
    };
    json!({
        "id": r.id,
        "object": "event",
        "api_version": API_VERSION,
        "created": providers::secs(r.created_ms),
        "data": { "object": { "id": entity_id, "object": object } },
        "livemode": false,
        "pending_webhooks": 0,
        "request": { "id": null, "idempotency_key": null },
        "type": kind,
    })
    .to_string()
}

#[derive(Serialize)]
struct List {
    object: &'static str,
    url: &'static str,
    has_more: bool,
    data: Vec<Box<RawValue>>,
}

fn check_version(headers: &HeaderMap) -> Result<(), ProviderError> {
    let Some(v) = headers.get("stripe-version") else {
        return Ok(());
    };
    let date =
        time::format_description::parse_borrowed::<2>("[year]-[month]-[day]").expect("a format");
    let ok = v
        .to_str()
        .ok()
        .is_some_and(|v| time::Date::parse(v, &date).is_ok());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "Invalid Stripe API version: the Stripe-Version header must be a date such as 2024-06-20",
            None,
        ))
    }
}

fn params(query: Option<&str>, known: &[&str]) -> Result<Params, ProviderError> {
    let p = Params::parse(query)
        .map_err(|k| invalid(format!("Received {k} twice"), Some(k.as_str())))?;
    if let Some(k) = p.unknown(known) {
        return Err(invalid(format!("Received unknown parameter: {k}"), Some(k)));
    }
    if p.get("ending_before").is_some() {
        return Err(invalid(
            "ending_before is not supported by this simulator",
            Some("ending_before"),
        ));
    }
    Ok(p)
}

fn limit(p: &Params) -> Result<usize, ProviderError> {
    match p.get("limit") {
        None => Ok(10),
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| invalid(format!("Invalid integer: {v}"), Some("limit")))?;
            if (1..=100).contains(&n) {
                Ok(n as usize)
            } else {
                Err(invalid(
                    "This value must be greater than or equal to 1 and less than or equal to 100.",
                    Some("limit"),
                ))
            }
        }
    }
}

/// Newest first (ids grow with `created`), strictly after `starting_after`.
fn newest_first<'a>(
    live: &'a BTreeMap<String, Entry>,
    starting_after: Option<&'a str>,
) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
    match starting_after {
        Some(id) => Box::new(
            live.range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(id)))
                .rev()
                .map(|(_, e)| e),
        ),
        None => Box::new(live.values().rev()),
    }
}

fn page<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    limit: usize,
    render: fn(&Record) -> String,
) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    for e in entries {
        if out.len() == limit {
            return (out, true);
        }
        out.push(render(&e.record));
    }
    (out, false)
}

async fn customers(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ProviderError> {
    check_version(&headers)?;
    let p = params(
        query.as_deref(),
        &["limit", "starting_after", "ending_before"],
    )?;
    let limit = limit(&p)?;
    let (data, has_more) = {
        let store = state.store();
        page(
            newest_first(store.live(Stream::Customers), p.get("starting_after")),
            limit,
            customer,
        )
    };
    providers::count(&state, &state.providers.stripe);
    Ok(providers::ok_json(&List {
        object: "list",
        url: "/v1/customers",
        has_more,
        data: providers::raw(data),
    }))
}

/// The bounds of `created[…]` filters, in epoch seconds (inclusive).
fn created_bounds(p: &Params) -> Result<(i64, i64), ProviderError> {
    let mut lo = i64::MIN;
    let mut hi = i64::MAX;
    for (param, adjust) in [
        ("created[gte]", 0),
        ("created[gt]", 1),
        ("created[lte]", 0),
        ("created[lt]", -1),
    ] {
        let Some(v) = p.get(param) else { continue };
        let n: i64 = v
            .parse()
            .map_err(|_| invalid(format!("Invalid integer: {v}"), Some(param)))?;
        if param.contains("[gt") {
            lo = lo.max(n + adjust);
        } else {
            hi = hi.min(n + adjust);
        }
    }
    Ok((lo, hi))
}

async fn events(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ProviderError> {
    check_version(&headers)?;
    let p = params(
        query.as_deref(),
        &[
            "limit",
            "starting_after",
            "ending_before",
            "created[gte]",
            "created[gt]",
            "created[lte]",
            "created[lt]",
            "type",
        ],
    )?;
    let limit = limit(&p)?;
    let (lo, hi) = created_bounds(&p)?;
    let kind = p.get("type").map(str::to_owned);
    let (data, has_more) = {
        let store = state.store();
        let matching = newest_first(store.live(Stream::Events), p.get("starting_after"))
            .filter(|e| (lo..=hi).contains(&providers::secs(e.record.created_ms)));
        let rendered = matching.map(|e| (e, event(&e.record))).filter(|(_, text)| {
            kind.as_deref()
                .is_none_or(|k| text.contains(&format!("\"type\":\"{k}\"")))
        });
        let mut out = Vec::new();
        let mut more = false;
        for (_, text) in rendered {
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(text);
        }
        (out, more)
    };
    providers::count(&state, &state.providers.stripe);
    Ok(providers::ok_json(&List {
        object: "list",
        url: "/v1/events",
        has_more,
        data: providers::raw(data),
    }))
}

/// What Stripe serves now: customers (no version; deleted ones unlisted) and events (version:
/// `created` in µs).
pub fn truth(store: &Store) -> Vec<(&'static str, TruthStream)> {
    let customers = TruthStream {
        live: store
            .live(Stream::Customers)
            .values()
            .map(|e| (e.record.id.clone(), None, customer(&e.record)))
            .collect(),
        deleted: store.deleted(Stream::Customers).keys().cloned().collect(),
    };
    let events = TruthStream {
        live: store
            .live(Stream::Events)
            .values()
            .map(|e| {
                (
                    e.record.id.clone(),
                    Some(providers::secs(e.record.created_ms) * 1_000_000),
                    event(&e.record),
                )
            })
            .collect(),
        deleted: Vec::new(),
    };
    vec![("customers", customers), ("events", events)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::data::initial;

    #[test]
    fn records_render_as_stripe_objects() {
        let c: serde_json::Value =
            serde_json::from_str(&customer(&initial(1, Stream::Customers, 3, 10))).unwrap();
        assert_eq!(c["object"], "customer");
        assert!(c["created"].is_i64());
        assert!(c.get("version").is_none() && c.get("updated_at").is_none());
        let e: serde_json::Value =
            serde_json::from_str(&event(&initial(1, Stream::Events, 3, 10))).unwrap();
        assert_eq!(e["object"], "event");
        assert!(e["created"].as_i64().unwrap() > 1_700_000_000);
    }

    #[test]
    fn created_filters_take_only_integers() {
        let p = Params::parse(Some("created[gte]=10&created[lt]=20")).unwrap();
        assert_eq!(created_bounds(&p).unwrap(), (10, 19));
        let p = Params::parse(Some("created[gte]=2024-01-01T00:00:00Z")).unwrap();
        let e = created_bounds(&p).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body["error"]["param"], "created[gte]");
    }
}
