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
use axum::routing::{MethodRouter, get};
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
        .route("/stripe/v1/customers", list_route(&CUSTOMERS))
        .route("/stripe/v1/events", list_route(&EVENTS))
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

/// The first `limit` texts, and whether more follow.
fn first(texts: impl Iterator<Item = String>, limit: usize) -> Page {
    let mut out = Vec::new();
    for text in texts {
        if out.len() == limit {
            return (out, true);
        }
        out.push(text);
    }
    (out, false)
}

/// Checks a list request: the `Stripe-Version` header, then the parameters (of `known`, each
/// once), then `limit`; answers the parameters and the limit.
fn list_request(
    headers: &HeaderMap,
    query: Option<&str>,
    known: &[&str],
) -> Result<(Params, usize), ProviderError> {
    check_version(headers)?;
    let p = params(query, known)?;
    let limit = limit(&p)?;
    Ok((p, limit))
}

/// One page of a list: the records' texts and whether more follow.
type Page = (Vec<String>, bool);

/// A list endpoint: its `url` (as the list object names it), the parameters it knows, and
/// its page of the store for the checked parameters and limit.
struct Endpoint {
    url: &'static str,
    known: &'static [&'static str],
    page: fn(&Store, &Params, usize) -> Result<Page, ProviderError>,
}

/// The route of a list endpoint: checks the request ([`list_request`]), reads the page, counts
/// it and serves it as a list object.
fn list_route(endpoint: &'static Endpoint) -> MethodRouter<Arc<SimState>> {
    get(
        move |State(state): State<Arc<SimState>>, RawQuery(query): RawQuery, headers: HeaderMap| async move {
            let (p, limit) = list_request(&headers, query.as_deref(), endpoint.known)?;
            let (data, has_more) = (endpoint.page)(&state.store(), &p, limit)?;
            let reply = List {
                object: "list",
                url: endpoint.url,
                has_more,
                data: providers::raw(data),
            };
            Ok::<_, ProviderError>(providers::answered(&state, &state.providers.stripe, &reply))
        },
    )
}

/// `GET /v1/customers`: newest first.
const CUSTOMERS: Endpoint = Endpoint {
    url: "/v1/customers",
    known: &["limit", "starting_after", "ending_before"],
    page: |store, p, limit| {
        let newest = newest_first(store.live(Stream::Customers), p.get("starting_after"));
        Ok(first(newest.map(|e| customer(&e.record)), limit))
    },
};

/// `GET /v1/events`: newest first, filtered by `created[…]` and `type`.
const EVENTS: Endpoint = Endpoint {
    url: "/v1/events",
    known: &[
        "limit",
        "starting_after",
        "ending_before",
        "created[gte]",
        "created[gt]",
        "created[lte]",
        "created[lt]",
        "type",
    ],
    page: |store, p, limit| {
        let (lo, hi) = created_bounds(p)?;
        let kind = p.get("type");
        let matching = newest_first(store.live(Stream::Events), p.get("starting_after"))
            .filter(|e| (lo..=hi).contains(&providers::secs(e.record.created_ms)));
        let rendered = matching
            .map(|e| event(&e.record))
            .filter(|text| kind.is_none_or(|k| text.contains(&format!("\"type\":\"{k}\""))));
        Ok(first(rendered, limit))
    },
};

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

/// What Stripe serves now: customers (no version; deleted ones unlisted) and events (version:
/// `created` in µs).
pub fn truth(store: &Store) -> Vec<(&'static str, TruthStream)> {
    let customers = TruthStream::customers(store, str::to_owned, |_| None, customer);
    let events = TruthStream {
        live: store
            .live(Stream::Events)
            .values()
            .map(|e| {
                (
                    e.record.id.clone(),
                    Some(providers::secs_us(e.record.created_ms)),
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
