//! Per-partition dedup state: primary key → ([`Stamp`], last full sync the key was seen in).
//!
//! One [`PartitionState`] belongs to one assigned input partition and is driven by one task, so
//! it takes `&mut self` and holds no locks.
//!
//! # Layout and memory
//!
//! The target is at most 64 bytes per key at 1 M and 10 M keys of 10–24 bytes. A key costs:
//!
//! | part | bytes per key | why |
//! |---|---|---|
//! | [`Entry`] in a chunked vector | 24 | version 8, content hash 8, key reference 4, deleted flag and sync generation 4; no padding |
//! | the key in a byte arena | 1 + key length | a one-byte length prefix (two bytes for keys of 128–1024 bytes) |
//! | hash index | 5 / load factor: 5.7 to 11.4 | a `u32` entry index and hashbrown's one control byte per bucket |
//!
//! so at most 47 bytes for `cus_0001234` (11 bytes) and 60 for a 24-byte key, at the worst load
//! factor. Measured from the allocator by `examples/dedup_state_mem.rs`: 46.5 and 59.5 bytes per
//! key at 1 M keys, 44.4 and 57.4 at 10 M. Entries and key bytes live in fixed-size chunks that
//! are never reallocated once full, so they carry no doubling slack; only the index (5 bytes a
//! bucket) doubles. The index is split into [`SHARDS`] hashbrown tables, so one resize rehashes
//! 1/32 of the keys instead of all of them at once (a shorter pause in the partition's loop), and
//! the old and new tables of a resize coexist for 1/32 of the index only.
//!
//! # Why real keys and not 128-bit key hashes
//!
//! A 128-bit hash of the key in place of the key (collision probability about n²/2¹²⁹, 10⁻²⁵ at
//! 10 M keys) would take 16 bytes where the arena takes 1 + length plus the 4-byte reference, so
//! it saves nothing for short keys like `cus_0001234` (16 against 16) and about 13 bytes for a
//! 24-byte key (59.5 against about 46 bytes per key). But full-sync delete detection must emit
//! tombstones with the **real key bytes**, which a hash cannot give back: a hash design needs the
//! keys anyway for streams with delete detection on (in a second map, or re-read from the output
//! topic at each sync end). Keeping the keys in a compact arena meets the target for keys up to
//! 24 bytes with one design for every stream, no collisions to reason about, and tombstones from
//! memory. Keys over [`MAX_ARENA_KEY`] bytes are boxed one by one: rare, correct, only larger.
//!
//! # Full-sync delete detection
//!
//! [`begin_sync`](PartitionState::begin_sync) opens a new generation; every key that passes
//! through [`apply`](PartitionState::apply) (whatever the decision: a stale or identical record
//! still proves the key exists upstream) or [`mark_seen`](PartitionState::mark_seen) records that
//! generation; [`end_sync`](PartitionState::end_sync) with the same sync id deletes every live key
//! not seen since, and returns the tombstones to emit. A sync tombstone carries the key's stored
//! version ([`Stamp::delete`] of it), so a later version of the key resurrects it while a
//! redelivery of the version the sync missed stays stale. The sync's completeness is therefore
//! the fetcher's job: a key skipped by a drifting pagination while unchanged stays deleted until
//! its next version.
//!
//! # Records that overtake a sync's begin marker
//!
//! Records of one key can reach this partition from other landing partitions than the stream's
//! pages and markers (webhooks are keyed by entity id), so a record fetched *after* a full sync
//! began can be applied *before* that sync's begin marker. The sync may not have seen such a key
//! (created after its pagination passed), and it must not be deleted. So the state remembers the
//! records it applied recently with the time they were fetched
//! ([`apply_observed`](PartitionState::apply_observed); a bounded ring of 8 bytes a record,
//! [`RECENT_CAP`] records or [`RECENT_WINDOW_SECS`] of fetch time), and
//! [`begin_sync_at`](PartitionState::begin_sync_at) counts every key fetched at or after the
//! sync's start (less [`SYNC_CLOCK_GRACE_SECS`] for clock skew between hosts) as seen. When the
//! ring no longer covers the sync's start (pruned, or the state was restored after it), the sync
//! deletes nothing: its deletes come with the next full sync, late but never wrong.
//!
//! Generations live only in memory. After a restart in the middle of a sync, a restored state
//! has no seen marks: the stage must either re-scan its input from the sync's begin marker
//! calling [`mark_seen`](PartitionState::mark_seen), or not end that sync (an
//! [`end_sync`](PartitionState::end_sync) without the matching begin is refused, never guessed).
//!
//! # Transactions
//!
//! The state is updated as soon as [`apply`](PartitionState::apply) returns
//! [`Decision::Emit`]. If the output transaction that carries those records aborts, the state is
//! ahead of the output: the stage must rebuild it (restore from the output topic) before going on.

use std::collections::VecDeque;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;

use super::merge::{Decision, Stamp, decide};

/// Most recently applied records remembered with their fetch time (8 bytes each).
pub const RECENT_CAP: usize = 262_144;

/// Fetch-time span of the remembered records, in seconds.
pub const RECENT_WINDOW_SECS: u32 = 900;

/// Clock skew allowed between the hosts that stamp `intake.fetched_at` (fetch and serve).
pub const SYNC_CLOCK_GRACE_SECS: u32 = 60;

/// Number of hash index shards; a power of two.
pub const SHARDS: usize = 32;

/// Keys up to this many bytes are stored in the arena; longer ones are boxed one by one.
pub const MAX_ARENA_KEY: usize = 1024;

/// Entries per chunk of the entry vector (24 bytes each: 384 KiB a chunk).
const ENTRY_CHUNK_BITS: u32 = 14;
const ENTRY_CHUNK: usize = 1 << ENTRY_CHUNK_BITS;

/// Bytes per arena chunk. A key never spans two chunks.
const ARENA_CHUNK_BITS: u32 = 16;
const ARENA_CHUNK: usize = 1 << ARENA_CHUNK_BITS;

/// The top bit of a [`KeyRef`] marks a boxed (long) key; the other 31 bits address the arena.
const LONG_KEY_FLAG: u32 = 1 << 31;
const MAX_ARENA_CHUNKS: usize = (LONG_KEY_FLAG as usize) >> ARENA_CHUNK_BITS;

/// The top bit of [`Entry::mark`] is the deleted flag; the other 31 bits the sync generation.
const DELETED_FLAG: u32 = 1 << 31;
const GENERATION_MASK: u32 = DELETED_FLAG - 1;

/// A tombstone to emit for a key that a completed full sync did not see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The primary key, as the output topic's record key.
    pub key: Box<[u8]>,
    /// The delete stamp stored for the key: [`Stamp::delete`] at its last version.
    pub stamp: Stamp,
}

/// Why an [`end_sync`](PartitionState::end_sync) was refused. No key is deleted in either case:
/// without the matching begin, "not seen" cannot be told apart from "not looked for".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The state no longer remembers every record fetched since the sync began (see the module
    /// documentation), so keys it did not see may exist; nothing is deleted.
    #[error(
        "sync {sync_id} ended but records fetched since it began are no longer all remembered \
         (state restored or pruned after its start)"
    )]
    StartNotCovered {
        /// The sync id of the end marker.
        sync_id: String,
    },
    /// No full sync is open in this partition (its begin marker was not seen by this state).
    #[error("sync {sync_id} ended but no sync is open in this partition")]
    NoActiveSync {
        /// The sync id of the end marker.
        sync_id: String,
    },
    /// Another full sync is open: the end marker belongs to an older or unknown one.
    #[error("sync {sync_id} ended but sync {active} is open in this partition")]
    OtherSyncActive {
        /// The sync id of the end marker.
        sync_id: String,
        /// The sync id of the open sync, which stays open.
        active: String,
    },
}

/// Primary key → stamp and sync mark for one input partition. See the module documentation.
pub struct PartitionState {
    /// Hash index: entry numbers, found by the key's hash, compared by the key's bytes.
    shards: Box<[HashTable<u32>]>,
    /// One entry per key ever seen, deleted ones included (a delete must outrank an older
    /// upsert that arrives after it).
    entries: ChunkedEntries,
    /// The key bytes, referenced by [`Entry::key`].
    keys: KeyArena,
    /// Per-process random seed of the index hash, so crafted upstream keys cannot collide on
    /// purpose. The index hash is never persisted; only the content hash is.
    seed: u64,
    /// The full sync in progress, if any.
    sync: Option<ActiveSync>,
    /// The last generation handed out; 0 means "never seen in a sync".
    generation: u32,
    /// Keys whose stamp is not a delete.
    live: usize,
    /// Recently applied upserts: (entry index, fetch time in Unix seconds), in applied order.
    recent: VecDeque<(u32, u32)>,
    /// Every upsert applied with a fetch time at or after this is in `recent`.
    recent_complete_since: u32,
}

/// The full sync in progress.
#[derive(Debug)]
struct ActiveSync {
    id: Box<str>,
    generation: u32,
    /// False when the sync's start is not covered by `recent`: it deletes nothing.
    deletes: bool,
}

/// What is stored per key. 24 bytes, no padding.
#[derive(Debug, Clone, Copy)]
struct Entry {
    version: i64,
    content_hash: u64,
    key: KeyRef,
    /// [`DELETED_FLAG`] | the generation of the last sync that saw the key.
    mark: u32,
}

const _: () = assert!(size_of::<Entry>() == 24);

impl Entry {
    fn new(stamp: Stamp, key: KeyRef, generation: u32) -> Self {
        let mut entry = Self {
            version: 0,
            content_hash: 0,
            key,
            mark: generation,
        };
        entry.set_stamp(stamp);
        entry
    }

    fn stamp(&self) -> Stamp {
        Stamp::from_parts(self.version, self.content_hash, self.is_deleted())
    }

    fn set_stamp(&mut self, stamp: Stamp) {
        self.version = stamp.version();
        self.content_hash = stamp.content_hash();
        self.mark =
            (self.mark & GENERATION_MASK) | if stamp.is_delete() { DELETED_FLAG } else { 0 };
    }

    fn is_deleted(&self) -> bool {
        self.mark & DELETED_FLAG != 0
    }

    fn generation(&self) -> u32 {
        self.mark & GENERATION_MASK
    }

    fn set_generation(&mut self, generation: u32) {
        self.mark = (self.mark & DELETED_FLAG) | generation;
    }
}

impl Default for PartitionState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PartitionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionState")
            .field("len", &self.len())
            .field("live", &self.live)
            .field("sync", &self.sync)
            .field("approx_bytes", &self.approx_bytes())
            .finish_non_exhaustive()
    }
}

impl PartitionState {
    /// An empty state. Allocates nothing until the first key.
    #[must_use]
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
            entries: ChunkedEntries::default(),
            keys: KeyArena::default(),
            seed: rand::random(),
            sync: None,
            generation: 0,
            live: 0,
            recent: VecDeque::new(),
            recent_complete_since: 0,
        }
    }

    /// Decides an incoming record for `key` with the merge rule and stores its stamp if the
    /// decision is [`Decision::Emit`] (the only decision that changes the stored stamp). Whatever
    /// the decision, the key counts as seen by the open full sync, if any.
    pub fn apply(&mut self, key: &[u8], stamp: Stamp) -> Decision {
        let generation = self.sync.as_ref().map(|s| s.generation);
        self.merge(key, stamp, generation).0
    }

    /// [`apply`](Self::apply) for a record fetched at `fetched_at` (Unix seconds), which is
    /// remembered for full syncs that begin later but started before it was fetched.
    pub fn apply_observed(&mut self, key: &[u8], stamp: Stamp, fetched_at: u32) -> Decision {
        let generation = self.sync.as_ref().map(|s| s.generation);
        let (decision, index) = self.merge(key, stamp, generation);
        if !stamp.is_delete() {
            let newest = fetched_at.max(self.recent.back().map_or(0, |r| r.1));
            self.recent.push_back((index, fetched_at));
            while let Some(&(_, at)) = self.recent.front() {
                if self.recent.len() <= RECENT_CAP
                    && at.saturating_add(RECENT_WINDOW_SECS) >= newest
                {
                    break;
                }
                self.recent.pop_front();
                self.recent_complete_since = self.recent_complete_since.max(at.saturating_add(1));
            }
        }
        decision
    }

    /// Declares that records fetched before `since` (Unix seconds) may have been applied without
    /// being remembered (a state restored from the output topic): full syncs that started
    /// before it delete nothing.
    pub fn forget_before(&mut self, since: u32) {
        self.recent_complete_since = self.recent_complete_since.max(since);
    }

    /// Stores a stamp read back from the compacted output topic (version and content hash from
    /// its headers; deleted for a tombstone) while rebuilding the state. Keeps the larger stamp
    /// if the key is already known, since an uncompacted topic can still hold older versions.
    /// Does not count as seen by a sync.
    pub fn restore(&mut self, key: &[u8], stamp: Stamp) {
        self.merge(key, stamp, None);
    }

    /// The stored stamp of `key`, a delete for a deleted key; `None` if the key is unknown.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<Stamp> {
        let hash = self.hash(key);
        let index = self.shards[shard_of(hash)]
            .find(hash, |&i| self.keys.get(self.entries.get(i).key) == key)?;
        Some(self.entries.get(*index).stamp())
    }

    /// Number of keys held, deleted ones included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Number of keys whose current stamp is not a delete.
    #[must_use]
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Bytes allocated by this state, computed from the capacities of its parts (for the state
    /// size metric; the `dedup_state_mem` example checks it against the allocator).
    #[must_use]
    pub fn approx_bytes(&self) -> usize {
        let index: usize = self.shards.iter().map(HashTable::allocation_size).sum();
        size_of::<Self>()
            + self.shards.len() * size_of::<HashTable<u32>>()
            + index
            + self.entries.allocated_bytes()
            + self.keys.allocated_bytes()
            + self.recent.capacity() * size_of::<(u32, u32)>()
    }

    /// Every key held, with its stamp, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Stamp)> + '_ {
        self.entries
            .iter()
            .map(|e| (self.keys.get(e.key), e.stamp()))
    }

    /// Opens full sync `sync_id`: from now on every key applied or marked counts as seen by it.
    /// An open sync is abandoned (its end will be refused) and its id returned, for the log.
    pub fn begin_sync(&mut self, sync_id: &str) -> Option<Box<str>> {
        self.begin_sync_at(sync_id, None)
    }

    /// [`begin_sync`](Self::begin_sync) of a sync that started at `started_at` (Unix seconds, the
    /// begin marker's fetch time): keys of remembered records fetched since then (less
    /// [`SYNC_CLOCK_GRACE_SECS`]) count as seen, since they may have overtaken the marker. If
    /// the remembered records do not reach back that far, the sync will delete nothing.
    pub fn begin_sync_at(&mut self, sync_id: &str, started_at: Option<u32>) -> Option<Box<str>> {
        if self.generation == GENERATION_MASK {
            // 2³¹ syncs in one process: forget every mark and count again. Correct because no
            // sync is open across this point (the open one, if any, is being abandoned).
            self.entries.for_each_mut(|e| e.set_generation(0));
            self.generation = 0;
        }
        self.generation += 1;
        let generation = self.generation;
        let mut deletes = true;
        if let Some(started) = started_at {
            let from = started.saturating_sub(SYNC_CLOCK_GRACE_SECS);
            if from < self.recent_complete_since {
                deletes = false;
            } else {
                for &(index, at) in &self.recent {
                    if at >= from {
                        self.entries.get_mut(index).set_generation(generation);
                    }
                }
            }
        }
        let previous = self.sync.replace(ActiveSync {
            id: sync_id.into(),
            generation,
            deletes,
        });
        previous.map(|s| s.id)
    }

    /// The id of the open full sync, if any.
    #[must_use]
    pub fn active_sync(&self) -> Option<&str> {
        self.sync.as_ref().map(|s| &*s.id)
    }

    /// Records that the open full sync saw `key`, without applying a record (used to rebuild the
    /// marks after a restart in the middle of a sync). Returns whether the key is known; an
    /// unknown key needs no mark, as it has nothing to delete.
    pub fn mark_seen(&mut self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        let Some(&index) = self.shards[shard_of(hash)]
            .find(hash, |&i| self.keys.get(self.entries.get(i).key) == key)
        else {
            return false;
        };
        if let Some(sync) = &self.sync {
            self.entries.get_mut(index).set_generation(sync.generation);
        }
        true
    }

    /// Closes full sync `sync_id`: every live key not seen since its
    /// [`begin_sync`](Self::begin_sync) is deleted at its stored version, and the tombstones to
    /// emit are returned, in insertion order.
    ///
    /// # Errors
    ///
    /// [`SyncError`] if `sync_id` is not the open sync; nothing is deleted then, and an open
    /// sync with another id stays open.
    pub fn end_sync(&mut self, sync_id: &str) -> Result<Vec<Tombstone>, SyncError> {
        let generation = match &self.sync {
            None => {
                return Err(SyncError::NoActiveSync {
                    sync_id: sync_id.to_owned(),
                });
            }
            Some(active) if &*active.id != sync_id => {
                return Err(SyncError::OtherSyncActive {
                    sync_id: sync_id.to_owned(),
                    active: active.id.to_string(),
                });
            }
            Some(active) if !active.deletes => {
                self.sync = None;
                return Err(SyncError::StartNotCovered {
                    sync_id: sync_id.to_owned(),
                });
            }
            Some(active) => active.generation,
        };
        self.sync = None;
        let mut tombstones = Vec::new();
        let keys = &self.keys;
        self.entries.for_each_mut(|e| {
            if !e.is_deleted() && e.generation() != generation {
                let stamp = Stamp::delete(e.version);
                e.set_stamp(stamp);
                tombstones.push(Tombstone {
                    key: keys.get(e.key).into(),
                    stamp,
                });
            }
        });
        self.live -= tombstones.len();
        Ok(tombstones)
    }

    /// The merge shared by [`apply`](Self::apply) (marking the key seen by `generation`) and
    /// [`restore`](Self::restore) (`generation` is `None`).
    fn merge(&mut self, key: &[u8], stamp: Stamp, generation: Option<u32>) -> (Decision, u32) {
        let hash = self.hash(key);
        let seed = self.seed;
        let slot = self.shards[shard_of(hash)].entry(
            hash,
            |&i| self.keys.get(self.entries.get(i).key) == key,
            |&i| hash_key(seed, self.keys.get(self.entries.get(i).key)),
        );
        match slot {
            Slot::Occupied(occupied) => {
                let index = *occupied.get();
                let entry = self.entries.get_mut(index);
                if let Some(generation) = generation {
                    entry.set_generation(generation);
                }
                let decision = decide(Some(entry.stamp()), stamp);
                if decision == Decision::Emit {
                    match (entry.is_deleted(), stamp.is_delete()) {
                        (false, true) => self.live -= 1,
                        (true, false) => self.live += 1,
                        _ => {}
                    }
                    entry.set_stamp(stamp);
                }
                (decision, index)
            }
            Slot::Vacant(vacant) => {
                let key = self.keys.push(key);
                let index = self
                    .entries
                    .push(Entry::new(stamp, key, generation.unwrap_or(0)));
                vacant.insert(index);
                if !stamp.is_delete() {
                    self.live += 1;
                }
                (decide(None, stamp), index)
            }
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        hash_key(self.seed, key)
    }

    /// Test hook: jump the generation counter to exercise its wrap.
    #[cfg(test)]
    fn set_generation_for_test(&mut self, generation: u32) {
        self.generation = generation;
    }
}

fn hash_key(seed: u64, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, seed)
}

/// The shard of a key hash. hashbrown takes the bucket from the low bits and its control tag
/// from the top 7, so the shard uses bits 32..37, which neither touches below 2³² buckets.
fn shard_of(hash: u64) -> usize {
    ((hash >> 32) as usize) & (SHARDS - 1)
}

/// A vector of [`Entry`] in chunks of [`ENTRY_CHUNK`]. A full chunk is never reallocated, so
/// growth costs no doubling slack beyond the last chunk and no copy of the whole vector.
#[derive(Default)]
struct ChunkedEntries {
    chunks: Vec<Vec<Entry>>,
    len: usize,
}

impl ChunkedEntries {
    fn len(&self) -> usize {
        self.len
    }

    /// Appends an entry and returns its number.
    ///
    /// # Panics
    ///
    /// Past 2³² - 1 entries in one partition (about 150 GiB of state).
    fn push(&mut self, entry: Entry) -> u32 {
        let index = u32::try_from(self.len)
            .ok()
            .filter(|&i| i != u32::MAX)
            .expect("dedup state: more than 4 billion keys in one partition");
        if self.len & (ENTRY_CHUNK - 1) == 0 {
            self.chunks.push(Vec::new());
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        grow_within(last, ENTRY_CHUNK, 1);
        last.push(entry);
        self.len += 1;
        index
    }

    fn get(&self, index: u32) -> &Entry {
        let index = index as usize;
        &self.chunks[index >> ENTRY_CHUNK_BITS][index & (ENTRY_CHUNK - 1)]
    }

    fn get_mut(&mut self, index: u32) -> &mut Entry {
        let index = index as usize;
        &mut self.chunks[index >> ENTRY_CHUNK_BITS][index & (ENTRY_CHUNK - 1)]
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten()
    }

    fn for_each_mut(&mut self, f: impl FnMut(&mut Entry)) {
        self.chunks.iter_mut().flatten().for_each(f);
    }

    fn allocated_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Vec<Entry>>()
            + self
                .chunks
                .iter()
                .map(|c| c.capacity() * size_of::<Entry>())
                .sum::<usize>()
    }
}

/// Grows `chunk` so that `additional` more items fit, doubling but never past `limit`, so that a
/// small state stays small and a full chunk is exactly `limit` long.
fn grow_within<T>(chunk: &mut Vec<T>, limit: usize, additional: usize) {
    let needed = chunk.len() + additional;
    if needed > chunk.capacity() {
        let target = (chunk.capacity() * 2).max(needed).max(16).min(limit);
        chunk.reserve_exact(target - chunk.len());
    }
}

/// Where a key's bytes are: an arena offset (chunk number << [`ARENA_CHUNK_BITS`] | offset in
/// the chunk), or with [`LONG_KEY_FLAG`] an index into the boxed long keys.
#[derive(Debug, Clone, Copy)]
struct KeyRef(u32);

/// Key bytes, each behind a LEB128 length, in chunks of [`ARENA_CHUNK`] bytes.
#[derive(Default)]
struct KeyArena {
    chunks: Vec<Vec<u8>>,
    /// Keys over [`MAX_ARENA_KEY`] bytes, and every key once the arena's 2 GiB are used.
    long: Vec<Box<[u8]>>,
}

impl KeyArena {
    fn push(&mut self, key: &[u8]) -> KeyRef {
        let needed = leb128_len(key.len()) + key.len();
        if key.len() <= MAX_ARENA_KEY {
            let fits = self
                .chunks
                .last()
                .is_some_and(|c| c.len() + needed <= ARENA_CHUNK);
            if fits || self.chunks.len() < MAX_ARENA_CHUNKS {
                if !fits {
                    self.chunks.push(Vec::new());
                }
                let chunk_index = self.chunks.len() - 1;
                let chunk = self.chunks.last_mut().expect("a chunk was just ensured");
                let offset = chunk.len();
                grow_within(chunk, ARENA_CHUNK, needed);
                write_leb128(chunk, key.len());
                chunk.extend_from_slice(key);
                // Both parts are bounded by the constants checked above, so this fits 31 bits.
                return KeyRef(((chunk_index << ARENA_CHUNK_BITS) | offset) as u32);
            }
        }
        let index = u32::try_from(self.long.len())
            .ok()
            .filter(|&i| i < LONG_KEY_FLAG)
            .expect("dedup state: more than 2 billion long keys in one partition");
        self.long.push(key.into());
        KeyRef(LONG_KEY_FLAG | index)
    }

    fn get(&self, key: KeyRef) -> &[u8] {
        if key.0 & LONG_KEY_FLAG != 0 {
            return &self.long[(key.0 & !LONG_KEY_FLAG) as usize];
        }
        let chunk = &self.chunks[(key.0 >> ARENA_CHUNK_BITS) as usize];
        let at = &chunk[(key.0 as usize) & (ARENA_CHUNK - 1)..];
        let (len, prefix) = read_leb128(at);
        &at[prefix..prefix + len]
    }

    fn allocated_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Vec<u8>>()
            + self.chunks.iter().map(Vec::capacity).sum::<usize>()
            + self.long.capacity() * size_of::<Box<[u8]>>()
            + self.long.iter().map(|k| k.len()).sum::<usize>()
    }
}

fn leb128_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn write_leb128(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Returns (value, bytes read).
fn read_leb128(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    unreachable!("the arena only holds complete length prefixes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::merge::property::{Outcome, check_order_independence, permuted};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn up(version: i64, hash: u64) -> Stamp {
        Stamp::upsert(version, hash)
    }

    fn del(version: i64) -> Stamp {
        Stamp::delete(version)
    }

    fn tombstone(key: &[u8], version: i64) -> Tombstone {
        Tombstone {
            key: key.into(),
            stamp: del(version),
        }
    }

    #[test]
    fn apply_emits_newer_and_changes_state_only_on_emit() {
        let mut state = PartitionState::new();
        assert!(state.is_empty());
        assert_eq!(state.apply(b"cus_1", up(2, 10)), Decision::Emit);
        assert_eq!(state.apply(b"cus_1", up(1, 99)), Decision::Stale);
        assert_eq!(state.get(b"cus_1"), Some(up(2, 10)));
        assert_eq!(state.apply(b"cus_1", up(2, 10)), Decision::Identical);
        assert_eq!(state.apply(b"cus_1", up(2, 9)), Decision::Stale);
        assert_eq!(state.get(b"cus_1"), Some(up(2, 10)));
        assert_eq!(state.apply(b"cus_1", up(2, 11)), Decision::Emit);
        assert_eq!(state.get(b"cus_1"), Some(up(2, 11)));
        assert_eq!(state.apply(b"cus_2", up(1, 1)), Decision::Emit);
        assert_eq!(state.get(b"cus_3"), None);
        assert_eq!((state.len(), state.live_len()), (2, 2));
    }

    #[test]
    fn delete_then_resurrect_and_live_count() {
        let mut state = PartitionState::new();
        state.apply(b"k", up(3, 1));
        assert_eq!(state.apply(b"k", del(3)), Decision::Emit);
        assert_eq!((state.len(), state.live_len()), (1, 0));
        assert_eq!(state.apply(b"k", up(3, u64::MAX)), Decision::Stale);
        assert_eq!(state.apply(b"k", del(3)), Decision::Identical);
        assert_eq!(state.apply(b"k", up(4, 0)), Decision::Emit);
        assert_eq!(state.get(b"k"), Some(up(4, 0)));
        assert_eq!(state.live_len(), 1);
        // A delete for a key never seen is stored, so the older upsert arriving later is stale.
        assert_eq!(state.apply(b"new", del(5)), Decision::Emit);
        assert_eq!(state.apply(b"new", up(4, 7)), Decision::Stale);
        assert_eq!((state.len(), state.live_len()), (2, 1));
    }

    #[test]
    fn restore_keeps_the_largest_stamp() {
        let mut state = PartitionState::new();
        state.restore(b"a", up(5, 1));
        state.restore(b"a", up(4, 1));
        state.restore(b"b", up(1, 1));
        state.restore(b"b", del(2));
        assert_eq!(state.get(b"a"), Some(up(5, 1)));
        assert_eq!(state.get(b"b"), Some(del(2)));
        assert_eq!((state.len(), state.live_len()), (2, 1));
        assert_eq!(state.apply(b"a", up(5, 1)), Decision::Identical);
        assert_eq!(state.apply(b"b", up(2, 3)), Decision::Stale);
    }

    #[test]
    fn records_fetched_after_a_sync_started_but_applied_before_its_begin_are_kept() {
        let mut state = PartitionState::new();
        assert_eq!(
            state.apply_observed(b"old", up(1, 1), 1_000),
            Decision::Emit
        );
        assert_eq!(
            state.apply_observed(b"gone", up(1, 2), 1_000),
            Decision::Emit
        );
        // Created upstream after the sync started at 2 000, its webhook overtakes the marker.
        assert_eq!(
            state.apply_observed(b"new", up(1, 3), 2_005),
            Decision::Emit
        );
        // Fetched within the clock grace before the start: kept too.
        assert_eq!(
            state.apply_observed(b"edge", up(1, 4), 2_000 - SYNC_CLOCK_GRACE_SECS),
            Decision::Emit
        );
        assert_eq!(state.begin_sync_at("s", Some(2_000)), None);
        assert_eq!(state.apply(b"old", up(1, 1)), Decision::Identical);
        assert_eq!(state.end_sync("s"), Ok(vec![tombstone(b"gone", 1)]));
        assert_eq!(state.get(b"new"), Some(up(1, 3)));
        assert_eq!(state.get(b"edge"), Some(up(1, 4)));
    }

    #[test]
    fn a_sync_whose_start_is_no_longer_remembered_deletes_nothing() {
        // Pruned by the window: records fetched before the newest minus the window are gone.
        let mut state = PartitionState::new();
        state.apply_observed(b"a", up(1, 1), 1_000);
        state.apply_observed(b"b", up(1, 1), 1_000 + RECENT_WINDOW_SECS + 1);
        state.begin_sync_at("s", Some(1_000 + SYNC_CLOCK_GRACE_SECS));
        assert_eq!(
            state.end_sync("s"),
            Err(SyncError::StartNotCovered {
                sync_id: "s".into()
            })
        );
        assert_eq!(state.live_len(), 2);
        // A start after the pruned records is covered again.
        state.begin_sync_at(
            "t",
            Some(1_000 + RECENT_WINDOW_SECS + SYNC_CLOCK_GRACE_SECS),
        );
        assert_eq!(state.end_sync("t"), Ok(vec![tombstone(b"a", 1)]));

        // Restored after the sync started: records applied before the restore are unknown.
        let mut state = PartitionState::new();
        state.restore(b"a", up(1, 1));
        state.forget_before(5_000);
        state.begin_sync_at("s", Some(4_000));
        assert!(matches!(
            state.end_sync("s"),
            Err(SyncError::StartNotCovered { .. })
        ));
        state.begin_sync_at("t", Some(5_000 + SYNC_CLOCK_GRACE_SECS));
        assert_eq!(state.end_sync("t"), Ok(vec![tombstone(b"a", 1)]));
    }

    #[test]
    fn the_remembered_records_are_bounded() {
        let mut state = PartitionState::new();
        for i in 0..(RECENT_CAP as u32 + 10) {
            state.apply_observed(format!("k{i}").as_bytes(), up(1, 1), 1_000);
        }
        assert_eq!(state.recent.len(), RECENT_CAP);
        assert_eq!(state.recent_complete_since, 1_001);
    }

    #[test]
    fn sync_tombstones_live_keys_not_seen() {
        let mut state = PartitionState::new();
        for key in [
            &b"seen"[..],
            b"stale",
            b"identical",
            b"marked",
            b"gone",
            b"deleted",
        ] {
            state.restore(key, up(5, 5));
        }
        state.restore(b"deleted", del(6));
        assert_eq!(state.begin_sync("s1"), None);
        assert_eq!(state.active_sync(), Some("s1"));
        assert_eq!(state.apply(b"seen", up(6, 0)), Decision::Emit);
        // Stale and identical records prove the key exists: they count as seen.
        assert_eq!(state.apply(b"stale", up(4, 0)), Decision::Stale);
        assert_eq!(state.apply(b"identical", up(5, 5)), Decision::Identical);
        assert!(state.mark_seen(b"marked"));
        assert!(!state.mark_seen(b"unknown"));
        assert_eq!(state.apply(b"fresh", up(1, 1)), Decision::Emit);
        // "deleted" is not live, so it needs no tombstone; "gone" was not seen.
        assert_eq!(state.end_sync("s1"), Ok(vec![tombstone(b"gone", 5)]));
        assert_eq!(state.active_sync(), None);
        assert_eq!(state.get(b"gone"), Some(del(5)));
        assert_eq!((state.len(), state.live_len()), (7, 5));
        // The version the sync missed stays deleted; a newer one resurrects.
        assert_eq!(state.apply(b"gone", up(5, 5)), Decision::Stale);
        assert_eq!(state.apply(b"gone", up(6, 1)), Decision::Emit);
    }

    #[test]
    fn key_deleted_then_recreated_across_syncs() {
        let mut state = PartitionState::new();
        state.apply(b"a", up(1, 1));
        state.apply(b"b", up(1, 1));

        state.begin_sync("s1");
        state.apply(b"a", up(1, 1));
        assert_eq!(state.end_sync("s1"), Ok(vec![tombstone(b"b", 1)]));

        // Recreated by a newer version after the sync deleted it; seen by the next sync.
        assert_eq!(state.apply(b"b", up(2, 1)), Decision::Emit);
        state.begin_sync("s2");
        state.apply(b"a", up(1, 1));
        state.apply(b"b", up(2, 1));
        assert_eq!(state.end_sync("s2"), Ok(vec![]));

        // Not seen by the third: deleted again, at its new version.
        state.begin_sync("s3");
        state.apply(b"a", up(1, 1));
        assert_eq!(state.end_sync("s3"), Ok(vec![tombstone(b"b", 2)]));
        assert_eq!(state.live_len(), 1);
    }

    #[test]
    fn key_deleted_and_recreated_within_a_sync_is_kept() {
        let mut state = PartitionState::new();
        state.apply(b"a", up(1, 1));
        state.apply(b"b", up(1, 1));
        state.begin_sync("s1");
        assert_eq!(state.apply(b"a", del(2)), Decision::Emit);
        assert_eq!(state.apply(b"a", up(3, 1)), Decision::Emit);
        // An explicit delete during the sync: already a tombstone, not returned again.
        assert_eq!(state.apply(b"b", del(2)), Decision::Emit);
        assert_eq!(state.end_sync("s1"), Ok(vec![]));
        assert_eq!(state.get(b"a"), Some(up(3, 1)));
        assert_eq!(state.get(b"b"), Some(del(2)));
    }

    #[test]
    fn seen_marks_do_not_carry_over_to_the_next_sync() {
        let mut state = PartitionState::new();
        state.apply(b"a", up(1, 1));
        state.begin_sync("s1");
        state.apply(b"a", up(1, 1));
        state.end_sync("s1").unwrap();
        // Applied between syncs: not seen by s2.
        state.apply(b"a", up(1, 1));
        state.begin_sync("s2");
        assert_eq!(state.end_sync("s2"), Ok(vec![tombstone(b"a", 1)]));
    }

    #[test]
    fn end_sync_without_its_begin_deletes_nothing() {
        let mut state = PartitionState::new();
        state.apply(b"a", up(1, 1));
        assert_eq!(
            state.end_sync("s1"),
            Err(SyncError::NoActiveSync {
                sync_id: "s1".into()
            })
        );
        state.begin_sync("s1");
        assert_eq!(state.begin_sync("s2"), Some("s1".into()));
        assert_eq!(
            state.end_sync("s1"),
            Err(SyncError::OtherSyncActive {
                sync_id: "s1".into(),
                active: "s2".into()
            })
        );
        assert_eq!(state.active_sync(), Some("s2"));
        assert_eq!(state.get(b"a"), Some(up(1, 1)));
        assert_eq!(state.end_sync("s2"), Ok(vec![tombstone(b"a", 1)]));
    }

    #[test]
    fn generation_wrap_forgets_old_marks() {
        let mut state = PartitionState::new();
        state.apply(b"a", up(1, 1));
        state.apply(b"b", up(1, 1));
        state.set_generation_for_test(GENERATION_MASK - 1);
        state.begin_sync("last");
        state.apply(b"a", up(1, 1));
        state.apply(b"b", up(1, 1));
        assert_eq!(state.end_sync("last"), Ok(vec![]));
        // The next begin wraps to generation 1; the old marks must not count as seen by it.
        state.begin_sync("wrapped");
        state.apply(b"a", up(1, 1));
        assert_eq!(state.end_sync("wrapped"), Ok(vec![tombstone(b"b", 1)]));
    }

    #[test]
    fn keys_of_any_length_round_trip() {
        let mut state = PartitionState::new();
        let lengths = [0, 1, 127, 128, MAX_ARENA_KEY, MAX_ARENA_KEY + 1, 100_000];
        for (i, &len) in lengths.iter().enumerate() {
            let key = vec![b'k' ^ (i as u8); len];
            assert_eq!(
                state.apply(&key, up(i as i64, 1)),
                Decision::Emit,
                "len {len}"
            );
        }
        for (i, &len) in lengths.iter().enumerate() {
            let key = vec![b'k' ^ (i as u8); len];
            assert_eq!(state.get(&key), Some(up(i as i64, 1)), "len {len}");
        }
        let held: Vec<usize> = state.iter().map(|(k, _)| k.len()).collect();
        assert_eq!(held, lengths);
    }

    #[test]
    fn many_keys_across_chunks_and_resizes() {
        // More than one entry chunk and several arena chunks; every key is found again.
        let mut state = PartitionState::new();
        let n = ENTRY_CHUNK * 2 + 17;
        for i in 0..n {
            let key = format!("cus_{i:07}");
            assert_eq!(state.apply(key.as_bytes(), up(i as i64, 0)), Decision::Emit);
        }
        for i in 0..n {
            let key = format!("cus_{i:07}");
            assert_eq!(
                state.apply(key.as_bytes(), up(i as i64, 0)),
                Decision::Identical
            );
        }
        assert_eq!((state.len(), state.live_len()), (n, n));
        assert!(state.keys.chunks.len() > 5);
        assert_eq!(state.keys.chunks[0].capacity(), ARENA_CHUNK);
        assert_eq!(state.entries.chunks[0].capacity(), ENTRY_CHUNK);
        let per_key = state.approx_bytes() as f64 / n as f64;
        assert!(per_key < 64.0, "{per_key} bytes per key");
        // Syncing with nothing seen deletes everything, in insertion order.
        state.begin_sync("s");
        let tombstones = state.end_sync("s").unwrap();
        assert_eq!(tombstones.len(), n);
        assert_eq!(
            &*tombstones[n - 1].key,
            format!("cus_{:07}", n - 1).as_bytes()
        );
        assert_eq!(state.live_len(), 0);
    }

    #[test]
    fn an_empty_state_allocates_little() {
        let state = PartitionState::new();
        assert_eq!(
            state.approx_bytes(),
            size_of::<PartitionState>() + SHARDS * size_of::<HashTable<u32>>()
        );
        let mut state = PartitionState::new();
        state.apply(b"cus_0000001", up(1, 1));
        assert!(state.approx_bytes() < 4096, "{}", state.approx_bytes());
    }

    #[test]
    fn leb128_round_trips() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            MAX_ARENA_KEY,
            usize::MAX >> 1,
        ] {
            let mut buf = Vec::new();
            write_leb128(&mut buf, n);
            assert_eq!(buf.len(), leb128_len(n));
            assert_eq!(read_leb128(&buf), (n, buf.len()));
        }
    }

    /// Keys of varied lengths, some long enough to be boxed.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0u8..6).prop_map(|k| format!("cus_{k:07}").into_bytes()),
            (0u8..2).prop_map(|k| vec![k; MAX_ARENA_KEY + 3]),
        ]
    }

    /// Applies deliveries in order to a [`PartitionState`]; returns its final state and the
    /// stamps emitted per key.
    fn run(order: &[(Vec<u8>, Stamp)]) -> Outcome<Vec<u8>> {
        let mut state = PartitionState::new();
        let mut emitted: BTreeMap<Vec<u8>, Vec<Stamp>> = BTreeMap::new();
        for (key, stamp) in order {
            if state.apply(key, *stamp) == Decision::Emit {
                emitted.entry(key.clone()).or_default().push(*stamp);
            }
        }
        let live = state.iter().filter(|(_, s)| !s.is_delete()).count();
        assert_eq!(live, state.live_len());
        let held = state.iter().map(|(k, s)| (k.to_vec(), s)).collect();
        (held, emitted)
    }

    proptest! {
        /// The state-level twin of the merge rule's property: any permutation with duplicates
        /// gives the same final state, the largest stamp per key, and strictly increasing
        /// emitted stamps per key.
        #[test]
        fn order_does_not_matter((original, shuffled) in permuted(key(), 60)) {
            check_order_independence(&original, &shuffled, run)?;
        }
    }
}
