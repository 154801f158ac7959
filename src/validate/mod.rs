//! The validate stage: pages from `intake.landing` split into records, each validated against
//! its stream's Avro schema and encoded, or sent to the DLQ with a classified error.
//!
//! # Layout
//!
//! | module      | what lives there |
//! |-------------|------------------|
//! | [`split`]   | a raw page → records (raw bytes kept), primary key and version per record |
//! | [`convert`] | one JSON record → Avro value and datum bytes, with strict drift detection |
//! | [`key`]     | keys with a schema (`key_format = "avro"`): the key record's schema from the value schema, a record's key fields |
//! | [`infer`]   | a backward-compatible candidate schema from drifted samples (`evolve`, `schema propose`) |
//! | [`error`]   | [`DriftKind`] (the `dlq.error.kind` values) and [`RecordError`] |
//!
//! These five are pure logic: no Kafka, no HTTP, no registry.
//!
//! | module      | the stage on Kafka |
//! |-------------|--------------------|
//! | [`stage`]   | the exactly-once processor over `intake.landing` and [`stage::run`]: routing (`mod.rs`), per-stream plans (`plan.rs`), schemas (`schemas.rs`), webhook events (`events.rs`), outputs (`output.rs`) |
//! | [`reject`]  | dead letters: [`reject::Rejection`], the `dlq.*` headers, `dlq.origin` |
//! | `counts`    | per-job counts written to `intake.jobs` with the outputs |

pub mod convert;
mod counts;
pub mod error;
pub mod infer;
pub mod key;
pub mod reject;
pub mod split;
pub mod stage;

pub use convert::{Capture, Encoder, MAX_ERRORS, Validator};
pub use error::{DriftKind, RecordError, SchemaError, UnknownDriftKind};
pub use infer::{Proposal, propose};
pub use split::{
    BadRecord, Element, JsonPointer, MAX_DEPTH, PointerError, Record, Split, Splitter,
    parse_version, parse_version_as,
};
