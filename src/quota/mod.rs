//! Quota: requests per API token are paced centrally.
//!
//! Each token is owned by exactly one fetch process at a time (Kafka group assignment over
//! the partitions of `intake.quota`, see `fetch::ownership`); that process holds the one
//! [`Pacer`] for all of the token's streams and keeps the token's state in `intake.quota`
//! ([`state`]) so that the next owner starts where it stopped; [`owned`] is that lifecycle
//! for one owned partition (restore, store while used, store as it goes).

pub mod owned;
pub mod pacer;
pub mod state;

pub use owned::OwnedPartition;
pub use pacer::{DEFAULT_SAFETY, Observed, Pacer, Permit, Snapshot};
pub use state::{QuotaRecord, QuotaStore};
