//! dedup: the latest version per primary key, independent of arrival order, with deletes.
//!
//! | file | role |
//! |---|---|
//! | [`merge`] | the merge rule ([`Stamp`] order, [`Decision`]) and the stable content hash |
//! | [`state`] | [`PartitionState`]: compact per-partition key → stamp map with full-sync delete detection |
//!
//! This is the pure core, with no Kafka in it; the stage that consumes the valid topics and
//! produces the curated ones drives one [`PartitionState`] per assigned partition.

pub mod merge;
pub mod state;

pub use merge::{Decision, Stamp, content_hash, decide};
pub use state::{PartitionState, SyncError, Tombstone};
