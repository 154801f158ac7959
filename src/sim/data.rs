//! The simulated data set: three streams of records, generated from the seed, and the changes
//! the background writer makes to them.
//!
//! | stream      | id           | fields (besides id, version)                                           |
//! |-------------|--------------|------------------------------------------------------------------------|
//! | `customers` | `cus_000001` | name, email, status `active\|inactive\|suspended`, created_at, updated_at |
//! | `orders`    | `ord_000001` | customer_id, amount_cents, currency, status `pending\|paid\|shipped\|refunded`, created_at, updated_at |
//! | `events`    | `evt_000001` | type `page_view\|login\|logout\|purchase`, entity_id, occurred_at, payload `{ip, user_agent}` |
//!
//! Every record carries an integer `version` that increments on each update (events are
//! append-only and stay at version 1). Ids are zero-padded to six digits and compared as
//! strings. An order's `customer_id` never changes, so `["/customer_id", "/id"]` is a composite
//! primary key of orders (`tests/pipeline.rs` keys orders by it with `key_format = "avro"`).

use std::str::FromStr;

use serde::Serialize;

use super::clock::BASE_MS;
use super::seeded::Rand;

/// One of the simulated streams.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Customer accounts: created, updated, deleted.
    Customers,
    /// Orders of customers: created, updated, deleted.
    Orders,
    /// Append-only activity events.
    Events,
}

impl Stream {
    /// Every stream, in index order.
    pub const ALL: [Stream; 3] = [Stream::Customers, Stream::Orders, Stream::Events];

    /// The path segment and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Customers => "customers",
            Stream::Orders => "orders",
            Stream::Events => "events",
        }
    }

    /// Position in [`Stream::ALL`], for per-stream arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The id of the `n`th record (from 1) of this stream.
    pub fn id(self, n: u64) -> String {
        let prefix = match self {
            Stream::Customers => "cus",
            Stream::Orders => "ord",
            Stream::Events => "evt",
        };
        format!("{prefix}_{n:06}")
    }

    /// Whether records of this stream are ever updated or deleted.
    pub fn mutable(self) -> bool {
        self != Stream::Events
    }
}

impl FromStr for Stream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        named(Stream::ALL, Stream::as_str, s)
            .ok_or_else(|| format!("unknown stream '{s}'; streams: customers, orders, events"))
    }
}

/// The member of `all` whose name (as `name` writes it) is `s`, for a `FromStr` of an enum.
pub fn named<T: Copy, const N: usize>(
    all: [T; N],
    name: fn(T) -> &'static str,
    s: &str,
) -> Option<T> {
    all.into_iter().find(|member| name(*member) == s)
}

/// Status of a customer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CustomerStatus {
    /// In good standing.
    Active,
    /// Dormant.
    Inactive,
    /// Blocked by the provider.
    Suspended,
}

impl CustomerStatus {
    const WEIGHTS: [(CustomerStatus, u32); 3] = [
        (CustomerStatus::Active, 7),
        (CustomerStatus::Inactive, 2),
        (CustomerStatus::Suspended, 1),
    ];

    /// The value as served.
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Active => "active",
            CustomerStatus::Inactive => "inactive",
            CustomerStatus::Suspended => "suspended",
        }
    }
}

/// Status of an order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// Awaiting payment.
    Pending,
    /// Paid, not yet shipped.
    Paid,
    /// On its way.
    Shipped,
    /// Money returned.
    Refunded,
}

impl OrderStatus {
    const WEIGHTS: [(OrderStatus, u32); 4] = [
        (OrderStatus::Pending, 3),
        (OrderStatus::Paid, 3),
        (OrderStatus::Shipped, 3),
        (OrderStatus::Refunded, 1),
    ];

    /// The value as served.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// The next status of an order's life: pending → paid → shipped, and sometimes a refund.
    fn advance(self, rng: &mut Rand) -> Self {
        match self {
            OrderStatus::Pending => OrderStatus::Paid,
            OrderStatus::Paid | OrderStatus::Shipped if rng.chance(0.2) => OrderStatus::Refunded,
            OrderStatus::Paid => OrderStatus::Shipped,
            other => other,
        }
    }
}

/// Type of an activity event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventType {
    /// A page was viewed.
    PageView,
    /// A customer logged in.
    Login,
    /// A customer logged out.
    Logout,
    /// A purchase was made.
    Purchase,
}

impl EventType {
    const ALL: [EventType; 4] = [
        EventType::PageView,
        EventType::Login,
        EventType::Logout,
        EventType::Purchase,
    ];

    /// The value as served.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PageView => "page_view",
            EventType::Login => "login",
            EventType::Logout => "logout",
            EventType::Purchase => "purchase",
        }
    }
}

/// The stream-specific fields of a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A customer.
    Customer {
        /// Full name.
        name: String,
        /// Unique email address.
        email: String,
        /// Account status.
        status: CustomerStatus,
    },
    /// An order.
    Order {
        /// The customer's id (which may since have been deleted, as in real systems).
        customer_id: String,
        /// Amount in the currency's minor unit.
        amount_cents: i64,
        /// ISO 4217 code.
        currency: &'static str,
        /// Order status.
        status: OrderStatus,
    },
    /// An activity event.
    Event {
        /// What happened.
        kind: EventType,
        /// The customer or order it happened to.
        entity_id: String,
        /// Client address.
        ip: String,
        /// Client software.
        user_agent: &'static str,
    },
}

/// A record in its typed form; the served JSON is rendered from it by `render`.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Primary key.
    pub id: String,
    /// Starts at 1, +1 per update (and the delete takes the next one).
    pub version: u64,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last change time, unix ms; may lie in the past for backdated updates.
    pub updated_ms: i64,
    /// Stream-specific fields.
    pub body: Body,
}

const FIRST: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tony",
    "Margaret",
    "Dennis",
    "Hedy",
    "Linus",
    "Katherine",
    "John",
];
const LAST: [&str; 16] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
    "Hoare", "Hamilton", "Ritchie", "Lamarr", "Torvalds", "Johnson", "McCarthy",
];
const DOMAINS: [&str; 4] = ["example.com", "example.org", "example.net", "mail.example"];
const CURRENCIES: [&str; 4] = ["USD", "EUR", "GBP", "JPY"];
const AGENTS: [&str; 3] = ["Mozilla/5.0", "curl/8.5.0", "okhttp/4.12.0"];

/// How many records of each stream exist, for picking references.
#[derive(Copy, Clone, Debug)]
pub struct Population {
    /// Customers ever created.
    pub customers: u64,
    /// Orders ever created.
    pub orders: u64,
}

fn body(rng: &mut Rand, stream: Stream, n: u64, population: Population) -> Body {
    match stream {
        Stream::Customers => {
            let first = rng.pick(&FIRST);
            let last = rng.pick(&LAST);
            let domain = rng.pick(&DOMAINS);
            Body::Customer {
                name: format!("{first} {last}"),
                email: format!(
                    "{}.{}{n}@{domain}",
                    first.to_lowercase(),
                    last.to_lowercase()
                ),
                status: rng.weighted(&CustomerStatus::WEIGHTS),
            }
        }
        Stream::Orders => Body::Order {
            customer_id: Stream::Customers.id(rng.between(1, population.customers.max(1))),
            amount_cents: i64::try_from(rng.between(100, 250_000)).expect("small"),
            currency: rng.pick(&CURRENCIES),
            status: rng.weighted(&OrderStatus::WEIGHTS),
        },
        Stream::Events => {
            let kind = rng.pick(&EventType::ALL);
            let entity_id = if kind == EventType::Purchase {
                Stream::Orders.id(rng.between(1, population.orders.max(1)))
            } else {
                Stream::Customers.id(rng.between(1, population.customers.max(1)))
            };
            let ip = format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                rng.between(1, 254)
            );
            Body::Event {
                kind,
                entity_id,
                ip,
                user_agent: rng.pick(&AGENTS),
            }
        }
    }
}

/// The `n`th (from 1) record of the initial data set of `records` per stream over the default
/// span ([`DEFAULT_SPAN_DAYS`]): a pure function of the seed. Creation times advance with `n`
/// from [`BASE_MS`] over at most 180 days; mutable records start with a short history
/// (version 1 to 4). See [`initial_over`].
pub fn initial(seed: u64, stream: Stream, n: u64, records: u64) -> Record {
    initial_over(seed, stream, n, records, DEFAULT_SPAN_DAYS)
}

/// `--span-days` by default: the span of the data set before the flag existed.
pub const DEFAULT_SPAN_DAYS: u64 = 180;

/// Longest spacing of two initial records' creation times: 10 minutes.
const MAX_SPACING_MS: u64 = 600_000;

/// The `n`th (from 1) record of the initial data set of `records` per stream spread over
/// `span_days` (`--span-days`): a pure function of the seed. Creation times advance with `n`
/// from [`BASE_MS`], `span_days × 86 400 000 / records` ms apart but at most 10 minutes
/// (so the set covers at most `span_days`, less when `records` is small: `records` × 10
/// minutes), each jittered within its spacing; mutable records start with a short history
/// (version 1 to 4), the last version up to 30 days after creation. With
/// [`DEFAULT_SPAN_DAYS`] this is [`initial`], byte for byte.
pub fn initial_over(seed: u64, stream: Stream, n: u64, records: u64, span_days: u64) -> Record {
    let id = stream.id(n);
    let mut rng = Rand::new(seed, stream.as_str(), &id);
    let spacing = (span_days * 86_400_000 / records.max(1)).clamp(1, MAX_SPACING_MS);
    let created_ms = BASE_MS + i64::try_from(n * spacing + rng.below(spacing)).expect("small");
    let population = Population {
        customers: records,
        orders: records,
    };
    let body = body(&mut rng, stream, n, population);
    let version = if stream.mutable() {
        rng.between(1, 4)
    } else {
        1
    };
    let updated_ms = if version == 1 {
        created_ms
    } else {
        created_ms + i64::try_from(rng.between(1, 30 * 86_400_000)).expect("small")
    };
    Record {
        id,
        version,
        created_ms,
        updated_ms,
        body,
    }
}

/// A record the writer creates at `now_ms` as the `n`th of its stream.
pub fn created(
    rng: &mut Rand,
    stream: Stream,
    n: u64,
    now_ms: i64,
    population: Population,
) -> Record {
    Record {
        id: stream.id(n),
        version: 1,
        created_ms: now_ms,
        updated_ms: now_ms,
        body: body(rng, stream, n, population),
    }
}

/// Changes one or two business fields of a record, as an update would (version and times are
/// the caller's).
pub fn mutate(rng: &mut Rand, record: &mut Record) {
    let n = record.id.rsplit('_').next().unwrap_or("0").to_owned();
    match &mut record.body {
        Body::Customer {
            name,
            email,
            status,
        } => match rng.below(3) {
            0 => {
                let others: Vec<CustomerStatus> = CustomerStatus::WEIGHTS
                    .iter()
                    .map(|(s, _)| *s)
                    .filter(|s| s != status)
                    .collect();
                *status = rng.pick(&others);
            }
            1 => {
                let local = name.to_lowercase().replace(' ', ".");
                let current = email.rsplit('@').next().unwrap_or("").to_owned();
                let domains: Vec<&str> = DOMAINS.into_iter().filter(|d| *d != current).collect();
                *email = format!("{local}{n}@{}", rng.pick(&domains));
            }
            _ => {
                let mut parts = name.splitn(2, ' ');
                let first = parts.next().unwrap_or("Ada").to_owned();
                let current = parts.next().unwrap_or("").to_owned();
                let lasts: Vec<&str> = LAST.into_iter().filter(|l| *l != current).collect();
                *name = format!("{first} {}", rng.pick(&lasts));
            }
        },
        Body::Order {
            amount_cents,
            status,
            ..
        } => {
            let next = status.advance(rng);
            if next == *status {
                // A settled order can still have its amount corrected.
                let corrected = i64::try_from(rng.between(100, 250_000)).expect("small");
                *amount_cents = if corrected == *amount_cents {
                    corrected + 1
                } else {
                    corrected
                };
            } else {
                *status = next;
            }
        }
        Body::Event { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_records_are_a_function_of_the_seed() {
        for stream in Stream::ALL {
            for n in 1..50 {
                assert_eq!(initial(9, stream, n, 50), initial(9, stream, n, 50));
            }
        }
        assert_ne!(
            initial(9, Stream::Customers, 1, 50),
            initial(10, Stream::Customers, 1, 50)
        );
    }

    #[test]
    fn initial_records_are_plausible() {
        let mut last_created = 0;
        for n in 1..=200 {
            let r = initial(1, Stream::Orders, n, 200);
            assert_eq!(r.id, Stream::Orders.id(n));
            assert!(
                r.created_ms > last_created,
                "created_at advances with the id"
            );
            last_created = r.created_ms;
            assert!((1..=4).contains(&r.version));
            assert!(r.updated_ms >= r.created_ms);
            assert_eq!(r.version == 1, r.updated_ms == r.created_ms);
            let Body::Order { customer_id, .. } = &r.body else {
                panic!("an order")
            };
            assert!(customer_id.as_str() <= Stream::Customers.id(200).as_str());
            let e = initial(1, Stream::Events, n, 200);
            assert_eq!(e.version, 1);
        }
    }

    /// The default data set (seed 42, 1000 records) as it was before `--span-days`: the 1st
    /// and the 1000th record of each stream, and the ends of a million customers.
    #[test]
    fn the_default_span_keeps_the_data_set() {
        let pinned = [
            (
                Stream::Customers,
                1,
                1000,
                r#"Record { id: "cus_000001", version: 4, created_ms: 1704067958442, updated_ms: 1704826145488, body: Customer { name: "Hedy Torvalds", email: "hedy.torvalds1@example.org", status: Inactive } }"#,
            ),
            (
                Stream::Customers,
                1000,
                1000,
                r#"Record { id: "cus_001000", version: 3, created_ms: 1704667215429, updated_ms: 1707201050076, body: Customer { name: "John Lovelace", email: "john.lovelace1000@example.com", status: Suspended } }"#,
            ),
            (
                Stream::Orders,
                1,
                1000,
                r#"Record { id: "ord_000001", version: 4, created_ms: 1704067984292, updated_ms: 1706374191440, body: Order { customer_id: "cus_000576", amount_cents: 62155, currency: "USD", status: Pending } }"#,
            ),
            (
                Stream::Orders,
                1000,
                1000,
                r#"Record { id: "ord_001000", version: 4, created_ms: 1704667444335, updated_ms: 1706293610656, body: Order { customer_id: "cus_000849", amount_cents: 235545, currency: "JPY", status: Pending } }"#,
            ),
            (
                Stream::Events,
                1,
                1000,
                r#"Record { id: "evt_000001", version: 1, created_ms: 1704067837245, updated_ms: 1704067837245, body: Event { kind: Purchase, entity_id: "ord_000940", ip: "10.86.28.156", user_agent: "okhttp/4.12.0" } }"#,
            ),
            (
                Stream::Events,
                1000,
                1000,
                r#"Record { id: "evt_001000", version: 1, created_ms: 1704667648010, updated_ms: 1704667648010, body: Event { kind: Logout, entity_id: "cus_000187", ip: "10.238.82.108", user_agent: "Mozilla/5.0" } }"#,
            ),
            (
                Stream::Customers,
                1,
                1_000_000,
                r#"Record { id: "cus_000001", version: 4, created_ms: 1704067219658, updated_ms: 1704825406704, body: Customer { name: "Hedy Torvalds", email: "hedy.torvalds1@example.org", status: Inactive } }"#,
            ),
            (
                Stream::Customers,
                1_000_000,
                1_000_000,
                r#"Record { id: "cus_1000000", version: 4, created_ms: 1719619203212, updated_ms: 1720672674178, body: Customer { name: "Donald Turing", email: "donald.turing1000000@mail.example", status: Inactive } }"#,
            ),
        ];
        for (stream, n, records, before) in pinned {
            let record = initial(42, stream, n, records);
            assert_eq!(format!("{record:?}"), before);
            assert_eq!(
                initial_over(42, stream, n, records, DEFAULT_SPAN_DAYS),
                record
            );
        }
    }

    #[test]
    fn the_span_spreads_creation_times() {
        // 1 000 000 records over 1095 days: 94 608 ms apart, each jittered within its slot.
        let spacing = 1095 * 86_400_000 / 1_000_000;
        assert_eq!(spacing, 94_608);
        for n in [1, 2, 500_000, 999_999, 1_000_000] {
            let r = initial_over(42, Stream::Orders, n, 1_000_000, 1095);
            let offset = r.created_ms - BASE_MS;
            assert!(
                (n as i64 * spacing..(n as i64 + 1) * spacing).contains(&offset),
                "{n}: {offset}"
            );
            assert!(r.updated_ms >= r.created_ms);
            assert!(r.updated_ms - r.created_ms <= 30 * 86_400_000);
        }
        let last = initial_over(42, Stream::Events, 1_000_000, 1_000_000, 1095);
        assert!(last.created_ms - BASE_MS > 1094 * 86_400_000);
        // Spacing is at most 10 minutes: a small set covers records × 10 minutes.
        let small = initial_over(42, Stream::Events, 100, 100, 1095);
        assert!(small.created_ms - BASE_MS <= 101 * 600_000);
        // One day, many records: 1 ms apart at least.
        let dense = initial_over(42, Stream::Events, 200_000_000, 200_000_000, 1);
        assert!(dense.created_ms - BASE_MS <= 200_000_001);
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(Stream::Customers.id(1), "cus_000001");
        assert_eq!(Stream::Events.id(1234567), "evt_1234567");
        assert_eq!("orders".parse::<Stream>(), Ok(Stream::Orders));
        assert!("order".parse::<Stream>().is_err());
    }

    #[test]
    fn mutation_changes_something() {
        let mut rng = Rand::new(3, "t", "");
        for n in 1..100 {
            for stream in [Stream::Customers, Stream::Orders] {
                let before = initial(3, stream, n, 100);
                let mut after = before.clone();
                mutate(&mut rng, &mut after);
                assert_ne!(before.body, after.body, "{stream:?} {n}");
            }
        }
    }
}
