//! Renders records to the JSON the API serves, injecting drift and large `notes` per id.
//!
//! Whether an id drifts (and how), and whether it is large, is a pure function of the seed and
//! the id, so a drifted id stays drifted across updates and the truth can name it. Fields are
//! written in a fixed order, so a record always renders to the same bytes.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::args::DriftKind;
use super::clock::format_ms;
use super::data::{Body, CustomerStatus, EventType, OrderStatus, Record, Stream};
use super::seeded::{self, Rand};

/// The per-id decisions of the data set, fixed at start.
#[derive(Clone, Debug)]
pub struct RenderConfig {
    /// `--seed`.
    pub seed: u64,
    /// `--drift-rate`.
    pub drift_rate: f64,
    /// `--drift-kinds` (non-empty when `drift_rate` > 0).
    pub drift_kinds: Vec<DriftKind>,
    /// `--large-rate`.
    pub large_rate: f64,
    /// `--large-bytes`: the sizes a large record's `notes` take (one per id, seeded).
    pub large_bytes: Vec<u32>,
}

/// An object whose keys keep the order they were pushed in, whatever serde_json's map
/// features are.
struct Object(Vec<(&'static str, Value)>);

impl Object {
    fn set(&mut self, key: &'static str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| *k != key);
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

fn renamed_customer_status(status: CustomerStatus) -> &'static str {
    match status {
        CustomerStatus::Active => "enabled",
        CustomerStatus::Inactive => "disabled",
        CustomerStatus::Suspended => "blocked",
    }
}

fn renamed_order_status(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "awaiting_payment",
        OrderStatus::Paid => "settled",
        OrderStatus::Shipped => "dispatched",
        OrderStatus::Refunded => "reversed",
    }
}

fn renamed_event_type(kind: EventType) -> &'static str {
    match kind {
        EventType::PageView => "screen_view",
        EventType::Login => "sign_in",
        EventType::Logout => "sign_out",
        EventType::Purchase => "checkout",
    }
}

const TIERS: [&str; 3] = ["bronze", "silver", "gold"];
const CHANNELS: [&str; 3] = ["marketplace", "retail", "phone"];
const SOURCES: [&str; 3] = ["ios", "android", "web"];
const WORDS: [&str; 12] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
];

impl RenderConfig {
    /// The drift of `id`, if it drifts.
    pub fn drift_of(&self, id: &str) -> Option<DriftKind> {
        if self.drift_kinds.is_empty() || seeded::unit(self.seed, "drift", id) >= self.drift_rate {
            return None;
        }
        let pick = seeded::unit(self.seed, "drift-kind", id);
        let index = (pick * self.drift_kinds.len() as f64) as usize;
        Some(self.drift_kinds[index.min(self.drift_kinds.len() - 1)])
    }

    /// Whether `id` carries a large `notes` field.
    pub fn is_large(&self, id: &str) -> bool {
        seeded::unit(self.seed, "large", id) < self.large_rate
    }

    /// The size of a large record's `notes`: one of `large_bytes`, fixed by the id.
    pub fn large_size(&self, id: &str) -> usize {
        if self.large_bytes.is_empty() {
            return 0;
        }
        let pick = seeded::unit(self.seed, "large-size", id);
        let index = (pick * self.large_bytes.len() as f64) as usize;
        self.large_bytes[index.min(self.large_bytes.len() - 1)] as usize
    }

    /// The `notes` text of a large record: [`RenderConfig::large_size`] ASCII bytes fixed by
    /// the id.
    fn notes(&self, id: &str) -> String {
        let target = self.large_size(id);
        let mut rng = Rand::new(self.seed, "notes", id);
        let mut text = String::with_capacity(target + 16);
        while text.len() < target {
            text.push_str(rng.pick(&WORDS));
            text.push(' ');
        }
        text.truncate(target);
        text
    }

    /// The JSON text served for `record` of `stream`.
    pub fn render(&self, stream: Stream, record: &Record) -> Arc<str> {
        let mut object = base_object(record);
        if let Some(kind) = self.drift_of(&record.id) {
            let pick = seeded::unit(self.seed, "drift-value", &record.id);
            drift(&mut object, stream, record, kind, pick);
        }
        if self.is_large(&record.id) {
            object.set("notes", Value::from(self.notes(&record.id)));
        }
        serde_json::to_string(&object)
            .expect("a JSON object of strings and numbers serializes")
            .into()
    }
}

fn base_object(record: &Record) -> Object {
    let mut fields: Vec<(&'static str, Value)> = vec![("id", Value::from(record.id.as_str()))];
    match &record.body {
        Body::Customer {
            name,
            email,
            status,
        } => {
            fields.push(("name", Value::from(name.as_str())));
            fields.push(("email", Value::from(email.as_str())));
            fields.extend(lifecycle(status.as_str(), record));
        }
        Body::Order {
            customer_id,
            amount_cents,
            currency,
            status,
        } => {
            fields.push(("customer_id", Value::from(customer_id.as_str())));
            fields.push(("amount_cents", Value::from(*amount_cents)));
            fields.push(("currency", Value::from(*currency)));
            fields.extend(lifecycle(status.as_str(), record));
        }
        Body::Event {
            kind,
            entity_id,
            ip,
            user_agent,
        } => {
            fields.push(("type", Value::from(kind.as_str())));
            fields.push(("entity_id", Value::from(entity_id.as_str())));
            fields.push(("occurred_at", Value::from(format_ms(record.created_ms))));
            fields.push((
                "payload",
                serde_json::json!({ "ip": ip, "user_agent": user_agent }),
            ));
        }
    }
    fields.push(("version", Value::from(record.version)));
    Object(fields)
}

/// The fields a customer and an order both end with: `status`, `created_at`, `updated_at`.
fn lifecycle(status: &'static str, record: &Record) -> [(&'static str, Value); 3] {
    [
        ("status", Value::from(status)),
        ("created_at", Value::from(format_ms(record.created_ms))),
        ("updated_at", Value::from(format_ms(record.updated_ms))),
    ]
}

/// Applies one drift kind; `pick` in `[0, 1)` chooses values, fixed per id.
fn drift(object: &mut Object, stream: Stream, record: &Record, kind: DriftKind, pick: f64) {
    let choose = |items: &[&'static str]| items[(pick * items.len() as f64) as usize];
    match (kind, &record.body) {
        (DriftKind::UnknownEnum, Body::Customer { status, .. }) => {
            object.set("status", Value::from(renamed_customer_status(*status)));
        }
        (DriftKind::UnknownEnum, Body::Order { status, .. }) => {
            object.set("status", Value::from(renamed_order_status(*status)));
        }
        (DriftKind::UnknownEnum, Body::Event { kind, .. }) => {
            object.set("type", Value::from(renamed_event_type(*kind)));
        }
        (DriftKind::UnknownField, _) => {
            let (key, values) = match stream {
                Stream::Customers => ("loyalty_tier", &TIERS),
                Stream::Orders => ("fulfillment_channel", &CHANNELS),
                Stream::Events => ("source", &SOURCES),
            };
            object.set(key, Value::from(choose(values)));
        }
        (DriftKind::TypeMismatch, Body::Customer { .. }) => {
            // The email turned into a number, as when an upstream starts sending a user id.
            object.set("email", Value::from((pick * 1e9) as u64));
        }
        (DriftKind::TypeMismatch, Body::Order { amount_cents, .. }) => {
            object.set("amount_cents", Value::from(amount_cents.to_string()));
        }
        (DriftKind::TypeMismatch, Body::Event { kind, .. }) => {
            object.set("type", Value::from(*kind as u64 + 1));
        }
        (DriftKind::MissingField, _) => object.remove(match stream {
            Stream::Customers => "email",
            Stream::Orders => "currency",
            Stream::Events => "entity_id",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::data::initial;

    fn config(drift_rate: f64, kinds: &[DriftKind], large_rate: f64) -> RenderConfig {
        RenderConfig {
            seed: 5,
            drift_rate,
            drift_kinds: kinds.to_vec(),
            large_rate,
            large_bytes: vec![2_000_000],
        }
    }

    fn parse(text: &str) -> serde_json::Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn clean_records_have_every_field_in_order() {
        let cfg = config(0.0, &DriftKind::ALL, 0.0);
        let text = cfg.render(Stream::Customers, &initial(5, Stream::Customers, 1, 10));
        assert!(text.starts_with(r#"{"id":"cus_000001","name":"#), "{text}");
        let keys: Vec<String> = parse(&text).keys().cloned().collect();
        let mut expected = vec![
            "created_at",
            "email",
            "id",
            "name",
            "status",
            "updated_at",
            "version",
        ];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
        let order = parse(&cfg.render(Stream::Orders, &initial(5, Stream::Orders, 1, 10)));
        assert!(order["amount_cents"].is_i64());
        assert!(order["currency"].is_string());
        let event = parse(&cfg.render(Stream::Events, &initial(5, Stream::Events, 1, 10)));
        assert_eq!(event["version"], 1);
        assert!(event["payload"]["ip"].is_string());
    }

    #[test]
    fn each_drift_kind_shows_in_every_stream() {
        for kind in DriftKind::ALL {
            let cfg = config(1.0, &[kind], 0.0);
            let clean = config(0.0, &[], 0.0);
            for stream in Stream::ALL {
                let record = initial(5, stream, 3, 10);
                assert_eq!(cfg.drift_of(&record.id), Some(kind));
                let drifted = parse(&cfg.render(stream, &record));
                let base = parse(&clean.render(stream, &record));
                assert_ne!(drifted, base, "{kind:?} {stream:?}");
                match kind {
                    DriftKind::UnknownField => assert_eq!(drifted.len(), base.len() + 1),
                    DriftKind::MissingField => assert_eq!(drifted.len(), base.len() - 1),
                    DriftKind::UnknownEnum | DriftKind::TypeMismatch => {
                        assert_eq!(drifted.len(), base.len())
                    }
                }
            }
        }
    }

    #[test]
    fn drift_and_size_are_per_id_and_near_the_rate() {
        let cfg = config(0.25, &DriftKind::ALL, 0.1);
        let ids: Vec<String> = (1..=4000).map(|n| Stream::Orders.id(n)).collect();
        let drifted = ids.iter().filter(|id| cfg.drift_of(id).is_some()).count();
        let large = ids.iter().filter(|id| cfg.is_large(id)).count();
        assert!((800..1200).contains(&drifted), "{drifted}");
        assert!((300..500).contains(&large), "{large}");
        for id in &ids {
            assert_eq!(cfg.drift_of(id), cfg.drift_of(id));
        }
        let kinds: std::collections::BTreeSet<_> =
            ids.iter().filter_map(|id| cfg.drift_of(id)).collect();
        assert_eq!(kinds.len(), 4);
    }

    #[test]
    fn large_records_carry_notes_of_the_configured_size() {
        let cfg = config(0.0, &[], 1.0);
        let record = initial(5, Stream::Customers, 2, 10);
        let text = cfg.render(Stream::Customers, &record);
        let notes = parse(&text)["notes"].as_str().unwrap().len();
        assert_eq!(notes, 2_000_000);
        assert_eq!(text, cfg.render(Stream::Customers, &record));
        // Several sizes: each id takes one of them, every one of them is taken.
        let cfg = RenderConfig {
            large_bytes: vec![1_000, 2_000, 3_000],
            ..cfg
        };
        let sizes: std::collections::BTreeSet<usize> = (0..200)
            .map(|n| cfg.large_size(&format!("cus_{n:06}")))
            .collect();
        assert_eq!(sizes, [1_000, 2_000, 3_000].into());
    }
}
