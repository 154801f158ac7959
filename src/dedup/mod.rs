//! dedup: the latest version per primary key, independent of arrival order, with deletes.
//!
//! | file | role |
//! |---|---|
//! | [`merge`] | the merge rule ([`Stamp`] order, [`Decision`]) and the stable content hash |
//! | [`state`] | [`PartitionState`]: compact per-partition key → stamp map with full-sync delete detection |
//! | [`stage`] | the Kafka stage (`intake dedup`): valid topics → curated compacted topics, exactly once |
//!
//! `merge` and `state` are the pure core, with no Kafka in them; [`stage`] drives one
//! [`PartitionState`] per assigned input partition inside the shared exactly-once loop.

pub mod merge;
pub mod stage;
pub mod state;

pub use merge::{Decision, Stamp, content_hash, decide};
pub use state::{PartitionState, SyncError, Tombstone};
