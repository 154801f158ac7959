//! HubSpot mode: `POST /crm/v3/objects/contacts/search`, HubSpot's CRM search
//! (<https://developers.hubspot.com/docs/api/crm/search>) over the simulator's customers.
//!
//! - The body is JSON: `limit` (1 to 200, default 10), `after` (the paging cursor: an offset,
//!   as a string or number), `sorts` (`[{"propertyName", "direction": "ASCENDING" |
//!   "DESCENDING"}]` or property names), `properties` (names to return), `filterGroups` (OR of
//!   groups, AND of filters within one; at most 5 groups of 6 filters) and `query` (refused
//!   here). Filters on `hs_lastmodifieddate`, `lastmodifieddate` and `createdate` take
//!   `EQ`, `GT`, `GTE`, `LT`, `LTE` with a value in **epoch milliseconds** (a string or number;
//!   anything else, such as an RFC 3339 time, is a 400); `hs_object_id` takes integers.
//! - The answer is `{"total": n, "results": [...], "paging": {"next": {"after", "link"}}}`,
//!   `paging` absent on the last page. Without sorts, results come by id.
//! - **At most 10 000 results per query**: `after` of 10 000 or more is a 400
//!   `VALIDATION_ERROR`, whatever `total` says, as HubSpot does.
//! - A contact: `{"id", "properties": {...}, "createdAt", "updatedAt", "archived": false}`;
//!   property values are strings, times RFC 3339 with milliseconds. Returned properties: those
//!   requested that exist (`email`, `firstname`, `lastname`, `hs_lastmodifieddate`,
//!   `lastmodifieddate`, `createdate`, `hs_object_id`, `hs_lead_status`) plus
//!   `createdate`, `hs_object_id` and `lastmodifieddate`; without `properties`, HubSpot's
//!   defaults (`firstname`, `lastname`, `email` and those three). Archived (deleted) contacts
//!   are not searchable.
//! - Errors are HubSpot's: `{"status": "error", "message", "correlationId", "category"}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::clock::format_ms;
use super::data::Record;
use super::providers::{self, ProviderError, TruthStream};
use super::state::SimState;
use super::store::Store;

/// Most results one search query can page through.
pub const RESULT_CAP: usize = 10_000;

/// Largest `limit`.
pub const MAX_LIMIT: usize = 200;

/// The HubSpot routes.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/crm/v3/objects/contacts/search", post(search))
}

fn error(category: &'static str, message: impl Into<String>) -> ProviderError {
    ProviderError {
        status: StatusCode::BAD_REQUEST,
        body: json!({
            "status": "error",
            "message": message.into(),
            "correlationId": "00000000-0000-4000-8000-000000000000",
            "category": category,
        }),
    }
}

fn invalid(message: impl Into<String>) -> ProviderError {
    error("VALIDATION_ERROR", message)
}

const KNOWN: [&str; 8] = [
    "email",
    "firstname",
    "lastname",
    "hs_lastmodifieddate",
    "lastmodifieddate",
    "createdate",
    "hs_object_id",
    "hs_lead_status",
];
const ALWAYS: [&str; 3] = ["createdate", "hs_object_id", "lastmodifieddate"];
const DEFAULTS: [&str; 3] = ["firstname", "lastname", "email"];

fn property(r: &Record, name: &str) -> Option<String> {
    let (full, email, status) = providers::customer(r);
    let (first, last) = providers::split_name(full);
    Some(match name {
        "email" => email.to_owned(),
        "firstname" => first.to_owned(),
        "lastname" => last.to_owned(),
        "hs_lastmodifieddate" | "lastmodifieddate" => format_ms(r.updated_ms),
        "createdate" => format_ms(r.created_ms),
        "hs_object_id" => providers::number(&r.id).to_string(),
        "hs_lead_status" => status.as_str().to_uppercase(),
        _ => return None,
    })
}

/// A contact as the search renders it, with these requested properties (`None`: defaults).
pub fn contact(r: &Record, requested: Option<&[String]>) -> String {
    let mut props = Map::new();
    let defaults: Vec<String> = DEFAULTS.iter().map(|s| (*s).to_owned()).collect();
    for name in requested
        .unwrap_or(defaults.as_slice())
        .iter()
        .map(String::as_str)
        .chain(ALWAYS)
    {
        if let Some(v) = property(r, name) {
            props.insert(name.to_owned(), Value::from(v));
        }
    }
    json!({
        "id": providers::number(&r.id).to_string(),
        "properties": props,
        "createdAt": format_ms(r.created_ms),
        "updatedAt": format_ms(r.updated_ms),
        "archived": false,
    })
    .to_string()
}

/// One filter: a property's time (or id) against a value.
#[derive(Debug)]
struct Filter {
    property: String,
    op: String,
    value: i64,
}

impl Filter {
    fn parse(v: &Value) -> Result<Self, ProviderError> {
        let property = v
            .get("propertyName")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a filter needs a propertyName"))?;
        let op = v
            .get("operator")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a filter needs an operator"))?;
        if !["EQ", "GT", "GTE", "LT", "LTE"].contains(&op) {
            return Err(invalid(format!(
                "operator {op} is not supported by this simulator"
            )));
        }
        if !matches!(
            property,
            "hs_lastmodifieddate" | "lastmodifieddate" | "createdate" | "hs_object_id"
        ) {
            return Err(invalid(format!(
                "filtering on {property} is not supported by this simulator"
            )));
        }
        let value = match v.get("value") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(format!(
                "{property}: the value {} is not epoch milliseconds",
                v.get("value").unwrap_or(&Value::Null)
            ))
        })?;
        Ok(Self {
            property: property.to_owned(),
            op: op.to_owned(),
            value,
        })
    }

    fn accepts(&self, r: &Record) -> bool {
        let x = match self.property.as_str() {
            "createdate" => r.created_ms,
            "hs_object_id" => providers::number(&r.id) as i64,
            _ => r.updated_ms,
        };
        match self.op.as_str() {
            "EQ" => x == self.value,
            "GT" => x > self.value,
            "GTE" => x >= self.value,
            "LT" => x < self.value,
            _ => x <= self.value,
        }
    }
}

/// A parsed search request.
#[derive(Debug)]
struct Search {
    limit: usize,
    after: usize,
    /// `(property, descending)`.
    sorts: Vec<(String, bool)>,
    properties: Option<Vec<String>>,
    /// OR of AND groups.
    groups: Vec<Vec<Filter>>,
}

impl Search {
    fn parse(body: &[u8]) -> Result<Self, ProviderError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("Invalid input JSON: {e}")))?;
        let o = v
            .as_object()
            .ok_or_else(|| invalid("Invalid input JSON: the body must be an object"))?;
        for k in o.keys() {
            if k == "query" {
                return Err(invalid("query is not supported by this simulator"));
            }
            if !["limit", "after", "sorts", "properties", "filterGroups"].contains(&k.as_str()) {
                return Err(invalid(format!("Invalid input JSON: unknown field {k}")));
            }
        }
        let limit = match o.get("limit") {
            None | Some(Value::Null) => 10,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|n| (1..=MAX_LIMIT as u64).contains(n))
                .ok_or_else(|| invalid(format!("limit must lie in 1..={MAX_LIMIT}")))?
                as usize,
            Some(other) => return Err(invalid(format!("limit {other} is not a number"))),
        };
        let after = match o.get("after") {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| invalid(format!("after `{s}` is not a paging cursor")))?,
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| invalid("after is not a paging cursor"))?
                as usize,
            Some(other) => return Err(invalid(format!("after {other} is not a paging cursor"))),
        };
        let mut sorts = Vec::new();
        for s in o
            .get("sorts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (name, desc) = match s {
                Value::String(name) => (name.clone(), false),
                Value::Object(m) => (
                    m.get("propertyName")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("a sort needs a propertyName"))?
                        .to_owned(),
                    m.get("direction").and_then(Value::as_str) == Some("DESCENDING"),
                ),
                _ => return Err(invalid("a sort is a property name or an object")),
            };
            if !KNOWN.contains(&name.as_str()) {
                return Err(invalid(format!("cannot sort by {name}")));
            }
            sorts.push((name, desc));
        }
        let properties = match o.get("properties") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|p| {
                        p.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| invalid("properties are names"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(invalid("properties is an array of names")),
        };
        let mut groups: Vec<Vec<Filter>> = Vec::new();
        let given = o
            .get("filterGroups")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if given.len() > 5 {
            return Err(invalid("at most 5 filterGroups"));
        }
        for g in &given {
            let filters = g
                .get("filters")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("a filterGroup needs filters"))?;
            if filters.len() > 6 {
                return Err(invalid("at most 6 filters in a filterGroup"));
            }
            groups.push(
                filters
                    .iter()
                    .map(Filter::parse)
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        Ok(Self {
            limit,
            after,
            sorts,
            properties,
            groups,
        })
    }

    fn accepts(&self, r: &Record) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g.iter().all(|f| f.accepts(r)))
    }
}

fn sort_key(r: &Record, name: &str) -> i64 {
    match name {
        "createdate" => r.created_ms,
        "hs_lastmodifieddate" | "lastmodifieddate" => r.updated_ms,
        _ => providers::number(&r.id) as i64,
    }
}

#[derive(Serialize)]
struct Next {
    after: String,
    link: String,
}

#[derive(Serialize)]
struct Paging {
    next: Next,
}

#[derive(Serialize)]
struct Answer {
    total: usize,
    results: Vec<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paging: Option<Paging>,
}

async fn search(
    State(state): State<Arc<SimState>>,
    body: Bytes,
) -> Result<Response, ProviderError> {
    let search = Search::parse(&body)?;
    if search.after >= RESULT_CAP {
        return Err(invalid(format!(
            "paging past {RESULT_CAP} results is not supported: a search returns at most {RESULT_CAP} results (after={})",
            search.after
        )));
    }
    let (total, results) = {
        let store = state.store();
        let mut matching = providers::customers_where(&store, |r| search.accepts(r));
        matching.sort_by(|a, b| {
            for (name, desc) in &search.sorts {
                let o = sort_key(a, name).cmp(&sort_key(b, name));
                let o = if *desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            a.id.cmp(&b.id)
        });
        let results: Vec<String> = matching
            .iter()
            .skip(search.after)
            .take(search.limit)
            .map(|r| contact(r, search.properties.as_deref()))
            .collect();
        (matching.len(), results)
    };
    let next = search.after + results.len();
    let paging = (next < total && !results.is_empty()).then(|| Paging {
        next: Next {
            after: next.to_string(),
            link: format!("?after={next}"),
        },
    });
    let reply = Answer {
        total,
        results: providers::raw(results),
        paging,
    };
    Ok(providers::answered(
        &state,
        &state.providers.hubspot,
        &reply,
    ))
}

/// What the search serves now (every live contact, with `properties` as requested, comma
/// separated); version: `updatedAt` in µs.
pub fn truth(store: &Store, properties: Option<&str>) -> Vec<(&'static str, TruthStream)> {
    let requested: Option<Vec<String>> =
        properties.map(|p| p.split(',').map(str::to_owned).collect());
    let contacts = TruthStream::customers(
        store,
        |id| providers::number(id).to_string(),
        |r| Some(r.updated_ms * 1000),
        |r| contact(r, requested.as_deref()),
    );
    vec![("contacts", contacts)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::data::{Stream, initial};

    #[test]
    fn filters_want_epoch_milliseconds() {
        let ok = br#"{"limit": 100, "after": "200", "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}], "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1704067200000"}]}]}"#;
        let s = Search::parse(ok).unwrap();
        assert_eq!((s.limit, s.after), (100, 200));
        assert_eq!(s.groups[0][0].value, 1_704_067_200_000);
        let rfc = br#"{"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "2024-01-01T00:00:00Z"}]}]}"#;
        assert_eq!(
            Search::parse(rfc).unwrap_err().body["category"],
            "VALIDATION_ERROR"
        );
        assert!(Search::parse(br#"{"limit": 201}"#).is_err());
        assert!(Search::parse(br#"{"limitt": 2}"#).is_err());
    }

    #[test]
    fn contacts_carry_requested_properties_as_strings() {
        let r = initial(2, Stream::Customers, 7, 10);
        let requested = ["email".to_owned(), "nope".to_owned()];
        let c: Value = serde_json::from_str(&contact(&r, Some(&requested[..]))).unwrap();
        assert_eq!(c["id"], "7");
        let keys: Vec<&String> = c["properties"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["createdate", "email", "hs_object_id", "lastmodifieddate"]
        );
        assert!(c["updatedAt"].as_str().unwrap().ends_with('Z'));
    }
}
