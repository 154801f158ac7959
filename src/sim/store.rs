//! The simulator's state of record: every live record (typed, and rendered once per version),
//! the tombstones of deleted ones, and the writer's random stream.
//!
//! Two orders are indexed: by id, and by `(updated_at, id)` for `updated_since` queries. A
//! page is read by walking an index from an exclusive position, so keyset pagination yields
//! every record exactly once while nothing is written.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use serde::Serialize;

use super::args::DriftKind;
use super::data::{self, Population, Record, Stream};
use super::render::RenderConfig;
use super::seeded::Rand;

/// What the store needs to know from the flags.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `--records` per stream at start.
    pub records: u64,
    /// Per-id drift and size decisions (holds the seed).
    pub render: RenderConfig,
    /// `--create-share`.
    pub create_share: f64,
    /// `--delete-share`.
    pub delete_share: f64,
    /// `--backdate-rate`.
    pub backdate_rate: f64,
    /// `--backdate-min` in ms.
    pub backdate_min_ms: u64,
    /// `--backdate-max` in ms.
    pub backdate_max_ms: u64,
}

/// A live record.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The typed record.
    pub record: Record,
    /// Its JSON as served, rendered when this version was written.
    pub json: Arc<str>,
    /// Whether this version's `updated_at` was backdated.
    pub backdated: bool,
}

/// What is left of a deleted record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    /// The delete's version: one more than the last live version.
    pub version: u64,
    /// The last live `updated_at` (unix ms), so `starting_after` a deleted id still works.
    #[serde(skip)]
    pub updated_ms: i64,
    /// When the delete happened (unix ms).
    #[serde(skip)]
    pub deleted_ms: i64,
}

/// One stream's records.
#[derive(Default)]
struct StreamData {
    live: BTreeMap<String, Entry>,
    /// `(updated_ms, id)` of every live record.
    by_updated: BTreeSet<(i64, String)>,
    deleted: BTreeMap<String, Tombstone>,
    /// Records ever created; the next id is `created + 1`.
    created: u64,
}

impl StreamData {
    fn insert(&mut self, entry: Entry) {
        self.by_updated
            .insert((entry.record.updated_ms, entry.record.id.clone()));
        self.live.insert(entry.record.id.clone(), entry);
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.live.remove(id)?;
        self.by_updated
            .remove(&(entry.record.updated_ms, entry.record.id.clone()));
        Some(entry)
    }
}

/// A position in a stream's order: pages resume strictly after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// `updated_at` in unix ms; used (and needed) only in `updated_since` order.
    pub updated_ms: i64,
    /// The record id.
    pub id: String,
}

/// A record on a page.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Where it sits in the order.
    pub position: Position,
    /// Its JSON.
    pub json: Arc<str>,
}

/// Which records a list request sees, and in which order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// `updated_since` in unix ns: only records with `updated_at >= since`, ordered by
    /// `(updated_at, id)`. Without it, every live record, ordered by id.
    pub since_ns: Option<i128>,
}

/// What a write did.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new record.
    Created,
    /// A new version of a live record.
    Updated,
    /// A record removed; its version is the delete's.
    Deleted,
}

impl ChangeKind {
    /// The name used in webhook events.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// One write, as webhooks and the admin API report it.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Position of this write among all writes since start (from 1).
    pub seq: u64,
    /// The stream written.
    pub stream: Stream,
    /// What happened.
    pub kind: ChangeKind,
    /// The record id.
    pub id: String,
    /// The record's version after the write (the delete's version for a delete).
    pub version: u64,
    /// Whether an update was backdated.
    pub backdated: bool,
    /// Wall-clock time of the write, unix ms.
    #[serde(skip)]
    pub at_ms: i64,
    /// The record as now served; `None` for a delete.
    #[serde(skip)]
    pub json: Option<Arc<str>>,
}

/// Writes by kind since start.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriteCounts {
    /// Records created.
    pub creates: u64,
    /// Records updated (backdated included).
    pub updates: u64,
    /// Updates whose `updated_at` was backdated.
    pub backdated: u64,
    /// Records deleted.
    pub deletes: u64,
}

/// A copy of one stream's state for the truth endpoint.
#[derive(Debug, Default)]
pub struct StreamTruth {
    /// `(id, version, json)` of every live record, by id.
    pub live: Vec<(String, u64, Arc<str>)>,
    /// Deleted ids and their tombstones, by id.
    pub deleted: Vec<(String, Tombstone)>,
    /// Every id, live or deleted, whose records drift, with the kind.
    pub drifted: Vec<(String, DriftKind)>,
    /// Every id, live or deleted, whose records carry large `notes`.
    pub large: Vec<String>,
    /// Live ids whose current version was backdated.
    pub backdated: Vec<String>,
}

/// The whole data set and the writer's state.
pub struct Store {
    config: StoreConfig,
    streams: [StreamData; 3],
    /// The writer's random stream: with the seed it fixes the sequence of writes.
    rng: Rand,
    /// While set, the background writer makes no writes (admin writes still happen).
    pub paused: bool,
    counts: WriteCounts,
    writes: u64,
}

fn ceil_ms(ns: i128) -> i64 {
    let ms = ns.div_euclid(1_000_000) + i128::from(ns.rem_euclid(1_000_000) != 0);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

impl Store {
    /// Generates the initial data set.
    pub fn new(config: StoreConfig, paused: bool) -> Self {
        let seed = config.render.seed;
        let mut streams: [StreamData; 3] = Default::default();
        for stream in Stream::ALL {
            let data = &mut streams[stream.index()];
            for n in 1..=config.records {
                let record = data::initial(seed, stream, n, config.records);
                let json = config.render.render(stream, &record);
                data.insert(Entry {
                    record,
                    json,
                    backdated: false,
                });
            }
            data.created = config.records;
        }
        Self {
            rng: Rand::new(seed, "writer", ""),
            config,
            streams,
            paused,
            counts: WriteCounts::default(),
            writes: 0,
        }
    }

    /// Writes since start, by kind.
    pub fn counts(&self) -> WriteCounts {
        self.counts
    }

    /// Writes since start.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The number of live records of a stream.
    pub fn live_count(&self, stream: Stream) -> usize {
        self.streams[stream.index()].live.len()
    }

    /// The live records of a stream by id, for provider modes that order and page them
    /// their own way (`sim::providers`).
    pub fn live(&self, stream: Stream) -> &BTreeMap<String, Entry> {
        &self.streams[stream.index()].live
    }

    /// The live records of a stream in `(updated_at, id)` order.
    pub fn by_updated(&self, stream: Stream) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        let data = &self.streams[stream.index()];
        data.by_updated.iter().map(move |(_, id)| &data.live[id])
    }

    /// The deleted ids of a stream with their tombstones, by id.
    pub fn deleted(&self, stream: Stream) -> &BTreeMap<String, Tombstone> {
        &self.streams[stream.index()].deleted
    }

    /// Records in filter order strictly after `after` (from the start without it).
    fn walk<'a>(
        &'a self,
        stream: Stream,
        filter: Filter,
        after: Option<&Position>,
    ) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        let data = &self.streams[stream.index()];
        match filter.since_ns {
            None => {
                let start = after.map_or(Bound::Unbounded, |p| Bound::Excluded(p.id.as_str()));
                Box::new(
                    data.live
                        .range::<str, _>((start, Bound::Unbounded))
                        .map(|(_, entry)| entry),
                )
            }
            Some(since_ns) => {
                let since = (ceil_ms(since_ns), String::new());
                let start = match after {
                    Some(p) if (p.updated_ms, p.id.as_str()) >= (since.0, since.1.as_str()) => {
                        Bound::Excluded((p.updated_ms, p.id.clone()))
                    }
                    _ => Bound::Included(since),
                };
                Box::new(
                    data.by_updated
                        .range((start, Bound::Unbounded))
                        .map(|(_, id)| &data.live[id]),
                )
            }
        }
    }

    fn listed(entry: &Entry) -> Listed {
        Listed {
            position: Position {
                updated_ms: entry.record.updated_ms,
                id: entry.record.id.clone(),
            },
            json: Arc::clone(&entry.json),
        }
    }

    /// Up to `limit` records after `after`, and whether more follow.
    pub fn page_after(
        &self,
        stream: Stream,
        filter: Filter,
        after: Option<&Position>,
        limit: usize,
    ) -> (Vec<Listed>, bool) {
        let mut walk = self.walk(stream, filter, after);
        let page: Vec<Listed> = walk.by_ref().take(limit).map(Self::listed).collect();
        let more = walk.next().is_some();
        (page, more)
    }

    /// Up to `limit` records from the `offset`th, and how many match in all.
    pub fn page_at(
        &self,
        stream: Stream,
        filter: Filter,
        offset: usize,
        limit: usize,
    ) -> (Vec<Listed>, usize) {
        let total = match filter.since_ns {
            None => self.live_count(stream),
            Some(_) => self.walk(stream, filter, None).count(),
        };
        let page = self
            .walk(stream, filter, None)
            .skip(offset)
            .take(limit)
            .map(Self::listed)
            .collect();
        (page, total)
    }

    /// Where `id` sits in the order, for `starting_after`: a live record's position, or a
    /// deleted one's last position. `None` for an id that never existed.
    pub fn position_of(&self, stream: Stream, id: &str) -> Option<Position> {
        let data = &self.streams[stream.index()];
        let updated_ms = match data.live.get(id) {
            Some(entry) => entry.record.updated_ms,
            None => data.deleted.get(id)?.updated_ms,
        };
        Some(Position {
            updated_ms,
            id: id.to_owned(),
        })
    }

    /// Makes one write to a stream picked from `streams` (non-empty) at wall time `now_ms`,
    /// paused or not: events are appended; customers and orders are created, updated or
    /// deleted by `--create-share`/`--delete-share`.
    pub fn write(&mut self, streams: &[Stream], now_ms: i64) -> Change {
        let stream = self.rng.pick(streams);
        let roll = self.rng.unit();
        let empty = self.streams[stream.index()].live.is_empty();
        let change = if !stream.mutable() || empty || roll < self.config.create_share {
            self.create(stream, now_ms)
        } else if roll < self.config.create_share + self.config.delete_share {
            let id = self.pick_live(stream);
            self.delete(stream, &id, now_ms)
        } else {
            let id = self.pick_live(stream);
            self.update(stream, &id, now_ms)
        };
        self.writes += 1;
        Change {
            seq: self.writes,
            ..change
        }
    }

    /// A live id of a (non-empty) stream, spread over the id range.
    fn pick_live(&mut self, stream: Stream) -> String {
        let data = &self.streams[stream.index()];
        let probe = stream.id(self.rng.between(1, data.created.max(1)));
        data.live
            .range::<str, _>((Bound::Included(probe.as_str()), Bound::Unbounded))
            .next()
            .or_else(|| data.live.iter().next())
            .map(|(id, _)| id.clone())
            .expect("the stream has a live record")
    }

    fn create(&mut self, stream: Stream, now_ms: i64) -> Change {
        let population = Population {
            customers: self.streams[Stream::Customers.index()].created,
            orders: self.streams[Stream::Orders.index()].created,
        };
        let data = &mut self.streams[stream.index()];
        data.created += 1;
        let record = data::created(&mut self.rng, stream, data.created, now_ms, population);
        let json = self.config.render.render(stream, &record);
        let change = Change {
            seq: 0,
            stream,
            kind: ChangeKind::Created,
            id: record.id.clone(),
            version: record.version,
            backdated: false,
            at_ms: now_ms,
            json: Some(Arc::clone(&json)),
        };
        data.insert(Entry {
            record,
            json,
            backdated: false,
        });
        self.counts.creates += 1;
        change
    }

    fn update(&mut self, stream: Stream, id: &str, now_ms: i64) -> Change {
        let data = &mut self.streams[stream.index()];
        let mut record = data.remove(id).expect("a live id").record;
        data::mutate(&mut self.rng, &mut record);
        record.version += 1;
        let backdated = self.rng.chance(self.config.backdate_rate);
        record.updated_ms = if backdated {
            let age = self
                .rng
                .between(self.config.backdate_min_ms, self.config.backdate_max_ms);
            (now_ms - i64::try_from(age).unwrap_or(i64::MAX)).max(record.created_ms)
        } else {
            now_ms
        };
        let json = self.config.render.render(stream, &record);
        let change = Change {
            seq: 0,
            stream,
            kind: ChangeKind::Updated,
            id: record.id.clone(),
            version: record.version,
            backdated,
            at_ms: now_ms,
            json: Some(Arc::clone(&json)),
        };
        data.insert(Entry {
            record,
            json,
            backdated,
        });
        self.counts.updates += 1;
        self.counts.backdated += u64::from(backdated);
        change
    }

    fn delete(&mut self, stream: Stream, id: &str, now_ms: i64) -> Change {
        let data = &mut self.streams[stream.index()];
        let record = data.remove(id).expect("a live id").record;
        let tombstone = Tombstone {
            version: record.version + 1,
            updated_ms: record.updated_ms,
            deleted_ms: now_ms,
        };
        let change = Change {
            seq: 0,
            stream,
            kind: ChangeKind::Deleted,
            id: record.id.clone(),
            version: tombstone.version,
            backdated: false,
            at_ms: now_ms,
            json: None,
        };
        data.deleted.insert(record.id, tombstone);
        self.counts.deletes += 1;
        change
    }

    /// A copy of a stream's state, for the truth endpoint.
    pub fn truth(&self, stream: Stream) -> StreamTruth {
        let data = &self.streams[stream.index()];
        let render = &self.config.render;
        let mut ids: Vec<&String> = data.live.keys().chain(data.deleted.keys()).collect();
        ids.sort();
        StreamTruth {
            live: data
                .live
                .iter()
                .map(|(id, e)| (id.clone(), e.record.version, Arc::clone(&e.json)))
                .collect(),
            deleted: data
                .deleted
                .iter()
                .map(|(id, t)| (id.clone(), t.clone()))
                .collect(),
            drifted: ids
                .iter()
                .filter_map(|id| render.drift_of(id).map(|kind| ((*id).clone(), kind)))
                .collect(),
            large: ids
                .iter()
                .filter(|id| render.is_large(id))
                .map(|id| (*id).clone())
                .collect(),
            backdated: data
                .live
                .iter()
                .filter(|(_, e)| e.backdated)
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::clock::BASE_MS;

    fn store(records: u64) -> Store {
        Store::new(
            StoreConfig {
                records,
                render: RenderConfig {
                    seed: 11,
                    drift_rate: 0.0,
                    drift_kinds: vec![],
                    large_rate: 0.0,
                    large_bytes: Vec::new(),
                },
                create_share: 0.2,
                delete_share: 0.2,
                backdate_rate: 0.5,
                backdate_min_ms: 3_600_000,
                backdate_max_ms: 3 * 86_400_000,
            },
            false,
        )
    }

    fn ids(listed: &[Listed]) -> Vec<String> {
        listed.iter().map(|l| l.position.id.clone()).collect()
    }

    fn walk_all(store: &Store, stream: Stream, filter: Filter, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = store.page_after(stream, filter, after.as_ref(), limit);
            out.extend(ids(&page));
            after = page.last().map(|l| l.position.clone());
            if !more {
                return out;
            }
        }
    }

    #[test]
    fn keyset_walks_see_every_record_once_in_order() {
        let mut s = store(57);
        for i in 0..200 {
            s.write(&Stream::ALL, BASE_MS + 400 * 86_400_000 + i);
        }
        for stream in Stream::ALL {
            let all = walk_all(&s, stream, Filter { since_ns: None }, 10);
            let mut sorted = all.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(all, sorted, "by id, no repeats");
            assert_eq!(all.len(), s.live_count(stream));

            let filter = Filter { since_ns: Some(0) };
            let by_time = walk_all(&s, stream, filter, 7);
            let mut set = by_time.clone();
            set.sort();
            assert_eq!(set, sorted, "the same records in updated order");
            let (offset_page, total) = s.page_at(stream, filter, 0, 10_000);
            assert_eq!(ids(&offset_page), by_time);
            assert_eq!(total, by_time.len());
        }
    }

    #[test]
    fn updated_since_is_inclusive_to_the_nanosecond() {
        let s = store(30);
        let (all, _) = s.page_at(Stream::Customers, Filter { since_ns: Some(0) }, 0, 100);
        let pivot = &all[10].position;
        let at = i128::from(pivot.updated_ms) * 1_000_000;
        let (from, total) = s.page_at(Stream::Customers, Filter { since_ns: Some(at) }, 0, 100);
        assert_eq!(from[0].position.updated_ms, pivot.updated_ms);
        assert!(total >= 20);
        let (later, _) = s.page_at(
            Stream::Customers,
            Filter {
                since_ns: Some(at + 1),
            },
            0,
            100,
        );
        assert!(
            later
                .iter()
                .all(|l| l.position.updated_ms > pivot.updated_ms)
        );
    }

    #[test]
    fn writes_keep_versions_and_tombstones_exact() {
        let mut s = store(20);
        let now = BASE_MS + 400 * 86_400_000;
        let mut last_version: BTreeMap<(Stream, String), u64> = BTreeMap::new();
        for stream in Stream::ALL {
            for (id, version, _) in s.truth(stream).live {
                last_version.insert((stream, id), version);
            }
        }
        for i in 0..500 {
            let change = s.write(
                &[Stream::Customers, Stream::Orders, Stream::Events],
                now + i,
            );
            assert_eq!(change.seq, i as u64 + 1);
            let key = (change.stream, change.id.clone());
            let expected = match change.kind {
                ChangeKind::Created => 1,
                _ => last_version[&key] + 1,
            };
            assert_eq!(change.version, expected, "{change:?}");
            if change.backdated {
                assert_eq!(change.kind, ChangeKind::Updated);
                let updated = s.position_of(change.stream, &change.id).unwrap().updated_ms;
                assert!(
                    updated < change.at_ms,
                    "a backdated update lies in the past"
                );
            }
            last_version.insert(key, change.version);
        }
        let counts = s.counts();
        assert_eq!(counts.creates + counts.updates + counts.deletes, 500);
        assert!(counts.deletes > 0 && counts.backdated > 0);
        for stream in Stream::ALL {
            let truth = s.truth(stream);
            for (id, version, json) in &truth.live {
                assert_eq!(last_version[&(stream, id.clone())], *version);
                let value: serde_json::Value = serde_json::from_str(json).unwrap();
                assert_eq!(value["version"], *version);
            }
            for (id, tomb) in &truth.deleted {
                assert_eq!(last_version[&(stream, id.clone())], tomb.version);
                assert!(s.position_of(stream, id).is_some());
            }
            if stream == Stream::Events {
                assert!(truth.deleted.is_empty());
            }
        }
        assert!(s.position_of(Stream::Customers, "cus_999999").is_none());
    }

    #[test]
    fn the_same_seed_writes_the_same_sequence() {
        let mut a = store(10);
        let mut b = store(10);
        for i in 0..100 {
            let (x, y) = (a.write(&Stream::ALL, i), b.write(&Stream::ALL, i));
            assert_eq!(
                (x.stream, x.kind, &x.id, x.version),
                (y.stream, y.kind, &y.id, y.version)
            );
            assert_eq!(x.json, y.json);
        }
    }
}
