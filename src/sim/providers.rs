//! Provider modes: the simulator's seeded records served in the shapes of real APIs, so that
//! `examples/sources/*.toml` run against it as written (only the base URL and credentials
//! change). Each provider lives in its own file; this one routes them and serves their truth.
//!
//! | provider | routes | shape | backed by |
//! |----------|--------|-------|-----------|
//! | [Stripe](super::stripe) | `GET /stripe/v1/customers`, `GET /stripe/v1/events` | `starting_after`/`has_more`, newest first, epoch-second `created[gte]`/`[lte]`, no versions | customers; events |
//! | [HubSpot](super::hubspot) | `POST /crm/v3/objects/contacts/search` | JSON body: `filterGroups` (epoch ms), `sorts`, `after` offset, 10 000-result cap (400 beyond) | customers |
//! | [Zendesk](super::zendesk) | `GET /api/v2/users`, `GET /api/v2/incremental/tickets/cursor.json` | `page[size]` with `links.next`/`meta.has_more`; `start_time` (epoch s) export with `after_url`/`end_of_stream`, deleted tickets included | customers; orders |
//! | [Salesforce](super::salesforce) | `GET /services/data/v60.0/query?q=SOQL`, `GET /services/data/v60.0/query/{locator}` | `Sforce-Query-Options: batchSize`, `nextRecordsUrl`, `…000+0000` timestamps | customers |
//! | [Shopify](super::shopify) | `POST /admin/api/{version}/graphql.json` | GraphQL `customers(first, after, query)` with `pageInfo { hasNextPage endCursor }`, errors as 200 | customers |
//!
//! Stripe's routes carry a `/stripe` prefix (its `/v1/customers` would be the simulator's
//! own); point a Stripe source's `base_url` at `http://<sim>/stripe`. Every route is behind the
//! same guard as `/v1` (bearer token, quota, faults) and counts in `pages` of
//! `/admin/stats`; each provider also counts its own requests (`provider_requests`).
//!
//! `GET /admin/providers/{provider}/truth` answers, in one read of the store, what the
//! provider serves now: per stream, every live record as its exact served text (`raw`) with
//! the version intake must derive from it in microseconds since the epoch (`version_us`,
//! computed from the typed record, not from the text; `null` for a stream without versions),
//! and the ids of deleted records that the stream no longer serves (`deleted`). HubSpot's
//! records depend on the requested properties: pass them as `?properties=a,b,c`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::data::{Body, CustomerStatus, Record, Stream};
use super::error::ApiError;
use super::state::SimState;
use super::store::Store;

/// Requests answered by provider routes, by provider (for `/admin/providers/{p}/truth`).
#[derive(Debug, Default)]
pub struct ProviderCounters {
    /// Stripe requests answered 200.
    pub stripe: AtomicU64,
    /// HubSpot requests answered 200.
    pub hubspot: AtomicU64,
    /// Zendesk requests answered 200.
    pub zendesk: AtomicU64,
    /// Salesforce requests answered 200.
    pub salesforce: AtomicU64,
    /// Shopify requests answered 200.
    pub shopify: AtomicU64,
}

/// Counts one answered page of a provider (its own counter and the simulator's `pages`).
pub fn count(state: &SimState, provider: &AtomicU64) {
    provider.fetch_add(1, Ordering::SeqCst);
    state.counters.pages.fetch_add(1, Ordering::SeqCst);
}

/// Counts one answered page of a provider (as [`count`]) and serves `body` as its 200 JSON.
pub fn answered<T: Serialize>(state: &SimState, provider: &AtomicU64, body: &T) -> Response {
    count(state, provider);
    ok_json(body)
}

/// The counters, shared by every simulator (a provider mode is stateless otherwise).
pub fn counters(state: &SimState) -> &ProviderCounters {
    &state.providers
}

/// One stream of a provider's truth.
#[derive(Debug, Default)]
pub struct TruthStream {
    /// `(id, version in µs, served text)` of every record the stream serves.
    pub live: Vec<(String, Option<i64>, String)>,
    /// Ids of deleted records the stream no longer serves.
    pub deleted: Vec<String>,
}

impl TruthStream {
    /// The store's customers as a provider serves them: every live customer as
    /// `(id(record id), version(record), render(record))`, and `id` of every deleted one.
    pub fn customers(
        store: &Store,
        id: impl Fn(&str) -> String,
        version: impl Fn(&Record) -> Option<i64>,
        render: impl Fn(&Record) -> String,
    ) -> Self {
        Self {
            live: store
                .live(Stream::Customers)
                .values()
                .map(|e| (id(&e.record.id), version(&e.record), render(&e.record)))
                .collect(),
            deleted: store
                .deleted(Stream::Customers)
                .keys()
                .map(|deleted| id(deleted))
                .collect(),
        }
    }
}

/// The provider routes (merged behind the `/v1` guard by [`super::api::router`]).
pub fn api() -> Router<Arc<SimState>> {
    Router::new()
        .merge(super::stripe::routes())
        .merge(super::hubspot::routes())
        .merge(super::zendesk::routes())
        .merge(super::salesforce::routes())
        .merge(super::shopify::routes())
}

/// `GET /admin/providers/{provider}/truth`.
pub fn admin() -> Router<Arc<SimState>> {
    Router::new().route("/admin/providers/{provider}/truth", get(truth))
}

#[derive(Serialize)]
struct LiveOut {
    version_us: Option<i64>,
    raw: String,
}

#[derive(Serialize)]
struct StreamOut {
    live: BTreeMap<String, LiveOut>,
    deleted: Vec<String>,
}

#[derive(Serialize)]
struct TruthOut {
    provider: String,
    requests: u64,
    streams: BTreeMap<&'static str, StreamOut>,
}

async fn truth(
    State(state): State<Arc<SimState>>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let c = counters(&state);
    let (streams, requests) = {
        let store = state.store();
        let base = format!("http://{}", state.local_addr);
        match provider.as_str() {
            "stripe" => (super::stripe::truth(&store), &c.stripe),
            "hubspot" => (
                super::hubspot::truth(&store, params.get("properties").map(String::as_str)),
                &c.hubspot,
            ),
            "zendesk" => (super::zendesk::truth(&store, &base), &c.zendesk),
            "salesforce" => (super::salesforce::truth(&store), &c.salesforce),
            "shopify" => (super::shopify::truth(&store), &c.shopify),
            other => {
                return Err(ApiError::not_found(format!(
                    "no provider '{other}'; providers: stripe, hubspot, zendesk, salesforce, shopify"
                )));
            }
        }
    };
    let out = TruthOut {
        provider,
        requests: requests.load(Ordering::SeqCst),
        streams: streams
            .into_iter()
            .map(|(name, s)| {
                (
                    name,
                    StreamOut {
                        live: s
                            .live
                            .into_iter()
                            .map(|(id, version_us, raw)| (id, LiveOut { version_us, raw }))
                            .collect(),
                        deleted: s.deleted,
                    },
                )
            })
            .collect(),
    };
    let body = serde_json::to_vec(&out).expect("the truth serializes");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The number of a simulator id (`cus_000042` → 42).
pub fn number(id: &str) -> u64 {
    id.rsplit('_')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Whole seconds of unix milliseconds (towards the past).
pub fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Unix milliseconds cut to whole seconds, in microseconds: the version of a provider that
/// writes its times at whole seconds.
pub fn secs_us(ms: i64) -> i64 {
    secs(ms) * 1_000_000
}

/// `YYYY-MM-DDTHH:MM:SSZ`: RFC 3339 at whole seconds, as Zendesk writes times.
pub fn rfc3339_s(ms: i64) -> String {
    let text = super::clock::format_ms(secs(ms) * 1000);
    // `…:SS.000Z` → `…:SSZ`
    format!("{}Z", &text[..text.len() - 5])
}

/// A customer record's name, email and status (each provider renders them its own way).
pub fn customer(r: &Record) -> (&str, &str, CustomerStatus) {
    match &r.body {
        Body::Customer {
            name,
            email,
            status,
        } => (name, email, *status),
        _ => unreachable!("{} is not a customer", r.id),
    }
}

/// The live customers of `store` that `keep` accepts, in id order.
pub fn customers_where(store: &Store, keep: impl Fn(&Record) -> bool) -> Vec<&Record> {
    store
        .live(Stream::Customers)
        .values()
        .map(|e| &e.record)
        .filter(|r| keep(r))
        .collect()
}

/// First and last name of a full name.
pub fn split_name(name: &str) -> (&str, &str) {
    name.split_once(' ').unwrap_or((name, ""))
}

/// Records' texts as raw JSON values, to be spliced into an envelope byte for byte.
pub fn raw(records: Vec<String>) -> Vec<Box<RawValue>> {
    records
        .into_iter()
        .map(|r| RawValue::from_string(r).expect("a rendered record is JSON"))
        .collect()
}

/// A 200 JSON answer.
pub fn ok_json<T: Serialize>(body: &T) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("an answer serializes"),
    )
        .into_response()
}

/// An error answer in a provider's own format.
#[derive(Debug)]
pub struct ProviderError {
    /// The status.
    pub status: StatusCode,
    /// The body, as the provider writes errors.
    pub body: Value,
}

impl IntoResponse for ProviderError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body.to_string(),
        )
            .into_response()
    }
}

/// The query parameters of a request, each at most once.
pub struct Params(pub BTreeMap<String, String>);

impl Params {
    /// Parses a raw query; `Err(name)` for a parameter given twice.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(k.into_owned());
            }
        }
        Ok(Self(out))
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The first parameter not in `known`.
    pub fn unknown(&self, known: &[&str]) -> Option<&str> {
        self.0
            .keys()
            .map(String::as_str)
            .find(|k| !known.contains(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(number("cus_000042"), 42);
        assert_eq!(secs(1_704_067_200_999), 1_704_067_200);
        assert_eq!(secs(-1), -1);
        assert_eq!(rfc3339_s(1_704_067_201_999), "2024-01-01T00:00:01Z");
        let p = Params::parse(Some("a=1&b=x%20y")).unwrap();
        assert_eq!(p.get("b"), Some("x y"));
        assert_eq!(p.unknown(&["a"]), Some("b"));
        assert_eq!(Params::parse(Some("a=1&a=2")).err().as_deref(), Some("a"));
    }
}
