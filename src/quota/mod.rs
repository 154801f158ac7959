//! Quota: requests per API token are paced centrally.
//!
//! Each token is owned by exactly one fetch process at a time (Kafka group assignment over
//! the partitions of `intake.quota`, see `fetch::ownership`); that process holds the one
//! [`Pacer`] for all of the token's streams.

pub mod pacer;

pub use pacer::{Pacer, DEFAULT_SAFETY};
