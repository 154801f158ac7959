//! Salesforce mode: the REST query resource over the simulator's customers as Accounts
//! (<https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm>).
//!
//! - `GET /services/data/v60.0/query?q=<SOQL>` takes `SELECT <fields> FROM Account [WHERE
//!   SystemModstamp <op> <datetime literal>] [ORDER BY SystemModstamp | Id [ASC]]`. Fields:
//!   `Id`, `Name`, `SystemModstamp`, `CreatedDate`, `LastModifiedDate`. A datetime literal is
//!   unquoted, `YYYY-MM-DDThh:mm:ssZ` or with an offset (`+hh:mm`), as SOQL wants: a quoted
//!   or malformed one is a 400 `MALFORMED_QUERY`, an unknown field `INVALID_FIELD`.
//! - The header `Sforce-Query-Options: batchSize=N` (200 to 2000, default 2000) sets the
//!   records per page. The answer is `{"totalSize", "done", "nextRecordsUrl"?, "records"}`;
//!   `nextRecordsUrl` (`/services/data/v60.0/query/01g…-2000`, a path on the instance) only
//!   while `done` is false; `GET` it to continue. The locator carries the query and the last
//!   record read, so the rest of the result is read by keyset.
//! - A record: `{"attributes": {"type": "Account", "url"}, <the selected fields>}`; ids are 18
//!   characters (`001000000000042AAA`); times are `2024-01-01T00:00:00.000+0000` at whole
//!   seconds, as Salesforce stores them. Deleted accounts are not returned (that is
//!   `queryAll`'s job).
//! - Errors are Salesforce's: `[{"message", "errorCode"}]` with 400.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::data::Record;
use super::pagination::whole_in;
use super::providers::{self, Params, ProviderError, TruthStream};
use super::state::SimState;
use super::store::Store;

/// The API version served.
pub const VERSION: &str = "v60.0";

/// The Salesforce routes.
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/services/data/v60.0/query", get(query))
        .route("/services/data/v60.0/query/{locator}", get(more))
}

fn error(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError {
        status: StatusCode::BAD_REQUEST,
        body: json!([{ "message": message.into(), "errorCode": code }]),
    }
}

const FIELDS: [&str; 5] = [
    "Id",
    "Name",
    "SystemModstamp",
    "CreatedDate",
    "LastModifiedDate",
];

/// An account's 18-character id.
pub fn account_id(sim_id: &str) -> String {
    format!("001{:012}AAA", providers::number(sim_id))
}

/// `2024-01-01T00:00:00.000+0000` at whole seconds.
pub fn datetime(ms: i64) -> String {
    let text = super::clock::format_ms(providers::secs(ms) * 1000);
    format!("{}+0000", &text[..text.len() - 1])
}

/// An account with these fields, as a query returns it.
pub fn account(r: &Record, fields: &[String]) -> String {
    let (name, _, _) = providers::customer(r);
    let id = account_id(&r.id);
    let mut m = Map::new();
    m.insert(
        "attributes".into(),
        json!({ "type": "Account", "url": format!("/services/data/{VERSION}/sobjects/Account/{id}") }),
    );
    for f in fields {
        let v = match f.as_str() {
            "Id" => Value::from(id.clone()),
            "Name" => Value::from(name),
            "CreatedDate" => Value::from(datetime(r.created_ms)),
            _ => Value::from(datetime(r.updated_ms)),
        };
        m.insert(f.clone(), v);
    }
    Value::Object(m).to_string()
}

/// A parsed SOQL query (the part this simulator understands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Soql {
    fields: Vec<String>,
    /// `(operator, unix ms)` on `SystemModstamp`.
    filter: Option<(String, i64)>,
    /// Order by `SystemModstamp` (else by `Id`).
    by_modstamp: bool,
}

fn malformed(why: impl Into<String>) -> ProviderError {
    error("MALFORMED_QUERY", why)
}

impl Soql {
    fn parse(q: &str) -> Result<Self, ProviderError> {
        let words: Vec<&str> = q.split_whitespace().collect();
        let upper = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
        if upper(0).as_deref() != Some("SELECT") {
            return Err(malformed("a query starts with SELECT"));
        }
        let from = (1..words.len())
            .find(|i| upper(*i).as_deref() == Some("FROM"))
            .ok_or_else(|| malformed("no FROM"))?;
        let fields: Vec<String> = words[1..from]
            .join(" ")
            .split(',')
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect();
        if fields.is_empty() {
            return Err(malformed("no fields selected"));
        }
        for f in &fields {
            if !FIELDS.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                return Err(error(
                    "INVALID_FIELD",
                    format!("No such column '{f}' on entity 'Account'"),
                ));
            }
        }
        let fields: Vec<String> = fields
            .iter()
            .map(|f| {
                FIELDS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(f))
                    .map(|k| (*k).to_owned())
                    .expect("checked")
            })
            .collect();
        if !words
            .get(from + 1)
            .is_some_and(|w| w.eq_ignore_ascii_case("Account"))
        {
            return Err(error(
                "INVALID_TYPE",
                "this simulator only has the sObject type 'Account'",
            ));
        }
        let mut i = from + 2;
        let mut filter = None;
        if upper(i).as_deref() == Some("WHERE") {
            let field = words.get(i + 1).ok_or_else(|| malformed("WHERE what?"))?;
            if !field.eq_ignore_ascii_case("SystemModstamp") {
                return Err(malformed(format!(
                    "this simulator filters on SystemModstamp only, not {field}"
                )));
            }
            let op = *words.get(i + 2).ok_or_else(|| malformed("no operator"))?;
            if !["=", ">", ">=", "<", "<="].contains(&op) {
                return Err(malformed(format!("unexpected token: '{op}'")));
            }
            let literal = *words.get(i + 3).ok_or_else(|| malformed("no value"))?;
            let ns = parse_literal(literal).ok_or_else(|| {
                malformed(format!(
                    "value of filter criterion for field 'SystemModstamp' must be of type dateTime and should not be enclosed in quotes: {literal}"
                ))
            })?;
            filter = Some((
                op.to_owned(),
                i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX),
            ));
            i += 4;
        }
        let mut by_modstamp = false;
        if upper(i).as_deref() == Some("ORDER") {
            if upper(i + 1).as_deref() != Some("BY") {
                return Err(malformed("ORDER without BY"));
            }
            match upper(i + 2).as_deref() {
                Some("SYSTEMMODSTAMP") => by_modstamp = true,
                Some("ID") => {}
                other => {
                    return Err(malformed(format!(
                        "this simulator orders by SystemModstamp or Id, not {other:?}"
                    )));
                }
            }
            i += 3;
            if upper(i).as_deref() == Some("ASC") {
                i += 1;
            }
        }
        if i < words.len() {
            return Err(malformed(format!("unexpected token: '{}'", words[i])));
        }
        Ok(Self {
            fields,
            filter,
            by_modstamp,
        })
    }

    fn accepts(&self, r: &Record) -> bool {
        let Some((op, at)) = &self.filter else {
            return true;
        };
        let x = providers::secs(r.updated_ms) * 1000;
        match op.as_str() {
            "=" => x == *at,
            ">" => x > *at,
            ">=" => x >= *at,
            "<" => x < *at,
            _ => x <= *at,
        }
    }

    fn key(&self, r: &Record) -> (i64, String) {
        let t = if self.by_modstamp {
            providers::secs(r.updated_ms)
        } else {
            0
        };
        (t, account_id(&r.id))
    }
}

/// A SOQL datetime literal: RFC 3339 without quotes.
fn parse_literal(s: &str) -> Option<i128> {
    if s.starts_with('\'') || s.starts_with('"') {
        return None;
    }
    super::clock::parse_rfc3339_ns(s).ok()
}

/// Where a `nextRecordsUrl` continues.
#[derive(Serialize, Deserialize)]
struct Locator {
    soql: Soql,
    batch: usize,
    /// The key of the last record read.
    after: (i64, String),
}

#[derive(Serialize)]
struct Answer {
    #[serde(rename = "totalSize")]
    total_size: usize,
    done: bool,
    #[serde(rename = "nextRecordsUrl", skip_serializing_if = "Option::is_none")]
    next_records_url: Option<String>,
    records: Vec<Box<RawValue>>,
}

fn batch_size(headers: &HeaderMap) -> Result<usize, ProviderError> {
    let Some(v) = headers.get("sforce-query-options") else {
        return Ok(2000);
    };
    let text = v.to_str().unwrap_or_default();
    for part in text.split(',') {
        if let Some(n) = part.trim().strip_prefix("batchSize=") {
            return whole_in(n, 200..=2000).ok_or_else(|| {
                error(
                    "INVALID_QUERY_LOCATOR",
                    format!("batchSize must lie in 200..=2000, got `{n}`"),
                )
            });
        }
    }
    Ok(2000)
}

fn answer(
    state: &SimState,
    soql: Soql,
    batch: usize,
    after: Option<(i64, String)>,
) -> Result<Response, ProviderError> {
    let (total, records, last) = {
        let store = state.store();
        let mut matching = providers::customers_where(&store, |r| soql.accepts(r));
        matching.sort_by_key(|r| soql.key(r));
        let total = matching.len();
        let rest: Vec<&Record> = matching
            .into_iter()
            .filter(|r| after.as_ref().is_none_or(|a| soql.key(r) > *a))
            .collect();
        let page: Vec<&Record> = rest.iter().take(batch).copied().collect();
        let last = if rest.len() > page.len() {
            page.last().map(|r| soql.key(r))
        } else {
            None
        };
        (
            total,
            page.iter()
                .map(|r| account(r, &soql.fields))
                .collect::<Vec<_>>(),
            last,
        )
    };
    let next_records_url = last.map(|after| {
        let locator = Locator { soql, batch, after };
        let text = serde_json::to_string(&locator).expect("a locator serializes");
        format!(
            "/services/data/{VERSION}/query/01g{}-{batch}",
            hex::encode(text)
        )
    });
    let reply = Answer {
        total_size: total,
        done: next_records_url.is_none(),
        next_records_url,
        records: providers::raw(records),
    };
    Ok(providers::answered(
        state,
        &state.providers.salesforce,
        &reply,
    ))
}

async fn query(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ProviderError> {
    let p = Params::parse(query.as_deref())
        .map_err(|k| malformed(format!("the parameter {k} is given twice")))?;
    if let Some(k) = p.unknown(&["q"]) {
        return Err(malformed(format!("unknown parameter {k}")));
    }
    let q = p
        .get("q")
        .ok_or_else(|| malformed("the parameter q is required"))?;
    let soql = Soql::parse(q)?;
    answer(&state, soql, batch_size(&headers)?, None)
}

async fn more(
    State(state): State<Arc<SimState>>,
    Path(locator): Path<String>,
) -> Result<Response, ProviderError> {
    let invalid = || error("INVALID_QUERY_LOCATOR", "invalid query locator");
    let (hexed, _) = locator
        .strip_prefix("01g")
        .and_then(|l| l.rsplit_once('-'))
        .ok_or_else(invalid)?;
    let bytes = hex::decode(hexed).map_err(|_| invalid())?;
    let l: Locator = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    answer(&state, l.soql, l.batch, Some(l.after))
}

/// What the query serves now (every live account with `Id, Name, SystemModstamp`); version:
/// `SystemModstamp` in µs (whole seconds). Deleted accounts are only in `deleted`.
pub fn truth(store: &Store) -> Vec<(&'static str, TruthStream)> {
    let fields: Vec<String> = ["Id", "Name", "SystemModstamp"].map(str::to_owned).to_vec();
    let accounts = TruthStream::customers(
        store,
        account_id,
        |r| Some(providers::secs_us(r.updated_ms)),
        |r| account(r, &fields),
    );
    vec![("accounts", accounts)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_of_the_example_parses_and_bad_literals_are_refused() {
        let q = Soql::parse("SELECT Id, Name, SystemModstamp FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00Z ORDER BY SystemModstamp").unwrap();
        assert_eq!(q.fields, ["Id", "Name", "SystemModstamp"]);
        assert_eq!(q.filter, Some((">".into(), 1_704_067_200_000)));
        assert!(q.by_modstamp);
        for bad in [
            "SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
            "SELECT Id FROM Account WHERE SystemModstamp > 1704067200",
            "SELECT Nope FROM Account",
            "SELECT Id FROM Contact",
        ] {
            assert!(Soql::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(datetime(1_704_067_200_999), "2024-01-01T00:00:00.000+0000");
        assert_eq!(account_id("cus_000042").len(), 18);
    }
}
