//! # intake
//!
//! Exactly-once ingestion of third-party HTTP APIs, webhooks and pushed batches into Apache
//! Kafka. See `docs/ARCHITECTURE.md` for the data flow and `docs/INVARIANTS.md` for the
//! invariants and topic contracts this crate implements.
//!
//! # Layout
//!
//! | module        | what lives there |
//! |---------------|------------------|
//! | [`blob`]      | the claim-check blob store for payloads over the message limit (`object_store`) |
//! | [`cli`]       | the `intake` command line: flag parsing and dispatch only |
//! | [`config`]    | the TOML configuration, its defaults, validation and secrets |
//! | [`kafka`]     | every Kafka client is built here; transactions; error classification |
//! | [`headers`]   | the landing and DLQ header contract (names are the contract) |
//! | [`topics`]    | topics as code (`topics/*.toml`) and `intake topics apply` |
//! | [`run`]       | `intake run`: every stage in one process |
//! | [`registry`]  | the schema registry (Confluent API): schemas as code, lookups, encoding |
//! | [`signing`]   | HMAC-SHA256 webhook signatures shared by `serve` and `sim` |
//! | [`status`]    | `intake status`: cursors, lag, DLQ counts, jobs on one screen |
//! | [`telemetry`] | tracing setup and metric names |
//! | [`sim`]       | `intake sim`: a realistic upstream SaaS API with faults and a ground truth |
//! | [`fetch`]     | pulls HTTP sources and lands raw pages with their cursor in one transaction |
//! | [`quota`]     | per-token pacing owned centrally through Kafka group assignment |
//! | [`validate`]  | splits pages into records, validates against the registry, routes drift to the DLQ |
//! | [`dedup`]     | keeps the latest version per primary key in compacted topics |
//! | [`serve`]     | webhooks and idempotent batch jobs over HTTP |
//! | [`verify`]    | `intake verify`: curated topics and DLQ against a ground truth, exactly |
//! | [`dlq`]       | DLQ triage: summary, show, replay, schema proposals |

pub mod blob;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod dlq;
pub mod faults;
pub mod fetch;
pub mod headers;
pub mod kafka;
pub mod quota;
pub mod registry;
pub mod run;
pub mod serve;
pub mod signing;
pub mod sim;
pub mod status;
pub mod telemetry;
pub mod topics;
pub mod validate;
pub mod verify;
