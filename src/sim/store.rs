//! The simulator's state of record: every live record (typed, and rendered once per version),
//! the tombstones of deleted ones, and the writer's random stream.
//!
//! Two orders are indexed: by id, and by `(updated_at, id)` for `updated_since` /
//! `updated_before` queries. A page is read by walking an index from an exclusive position
//! (a range on the `BTreeSet`, bounded by the filter's window at both ends), so keyset
//! pagination yields every record exactly once while nothing is written and costs
//! O(log n + page) whatever the data set's size. The offset styles (`page_at`) count the
//! window's matches for `total` and skip `offset` records: O(log n + matches + offset).

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
    /// `--span-days`: the initial creation times spread over at most this many days.
    pub span_days: u64,
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
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `updated_since` in unix ns: only records with `updated_at >= since`, ordered by
    /// `(updated_at, id)`. Without it (and without `before_ns`), every live record, ordered
    /// by id.
    pub since_ns: Option<i128>,
    /// `updated_before` in unix ns, exclusive: only records with `updated_at < before`,
    /// ordered by `(updated_at, id)`; without `since_ns` the window starts at the epoch.
    pub before_ns: Option<i128>,
}

/// A key of the `(updated_at, id)` index.
type UpdatedKey = (i64, String);

impl Filter {
    /// The window on the `(updated_at, id)` index as `[from, to)` keys, or `None` for id
    /// order (neither bound given).
    fn window(self) -> Option<(UpdatedKey, Option<UpdatedKey>)> {
        if self.since_ns.is_none() && self.before_ns.is_none() {
            return None;
        }
        // updated_ms * 1e6 >= since  <=>  updated_ms >= ceil(since / 1e6), and
        // updated_ms * 1e6 <  before <=>  updated_ms <  ceil(before / 1e6); "" is the least
        // id, so (ms, "") is the first key of that millisecond.
        let from = (ceil_ms(self.since_ns.unwrap_or(0)), String::new());
        let to = self.before_ns.map(|ns| (ceil_ms(ns), String::new()));
        Some((from, to))
    }
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
                let record = data::initial_over(seed, stream, n, config.records, config.span_days);
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

    /// Records in filter order strictly after `after` (from the start without it), up to the
    /// end of the filter's window.
    fn walk<'a>(
        &'a self,
        stream: Stream,
        filter: Filter,
        after: Option<&Position>,
    ) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        let data = &self.streams[stream.index()];
        match filter.window() {
            None => {
                let start = after.map_or(Bound::Unbounded, |p| Bound::Excluded(p.id.as_str()));
                Box::new(
                    data.live
                        .range::<str, _>((start, Bound::Unbounded))
                        .map(|(_, entry)| entry),
                )
            }
            Some((from, to)) => {
                let start = match after {
                    Some(p) if (p.updated_ms, p.id.as_str()) >= (from.0, from.1.as_str()) => {
                        Bound::Excluded((p.updated_ms, p.id.clone()))
                    }
                    _ => Bound::Included(from),
                };
                let end = match to {
                    Some(to) => {
                        // `range` panics on a start past the end (or an equal, excluded one):
                        // such a window is empty.
                        let start_key = match &start {
                            Bound::Included(k) | Bound::Excluded(k) => k,
                            Bound::Unbounded => unreachable!("the start is bounded"),
                        };
                        if *start_key >= to {
                            return Box::new(std::iter::empty());
                        }
                        Bound::Excluded(to)
                    }
                    None => Bound::Unbounded,
                };
                Box::new(
                    data.by_updated
                        .range((start, end))
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
        let total = match filter.window() {
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

    /// How many records of the filter's order lie at or before `position`, counting at most
    /// `max` (so O(log n + min(rank, max))): where a `starting_after` page starts in its
    /// query, for `--result-cap`.
    pub fn rank_at_most(
        &self,
        stream: Stream,
        filter: Filter,
        position: &Position,
        max: usize,
    ) -> usize {
        let by_updated = filter.window().is_some();
        self.walk(stream, filter, None)
            .take(max)
            .take_while(|e| {
                if by_updated {
                    (e.record.updated_ms, e.record.id.as_str())
                        <= (position.updated_ms, position.id.as_str())
                } else {
                    e.record.id.as_str() <= position.id.as_str()
                }
            })
            .count()
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
        self.counts.creates += 1;
        self.put_live(stream, ChangeKind::Created, record, false, now_ms)
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
        self.counts.updates += 1;
        self.counts.backdated += u64::from(backdated);
        self.put_live(stream, ChangeKind::Updated, record, backdated, now_ms)
    }

    /// Renders a created or updated `record`, makes it its stream's live version and answers
    /// the change that wrote it (`seq` 0: [`Store::write`] numbers it).
    fn put_live(
        &mut self,
        stream: Stream,
        kind: ChangeKind,
        record: Record,
        backdated: bool,
        now_ms: i64,
    ) -> Change {
        let json = self.config.render.render(stream, &record);
        let change = Change {
            seq: 0,
            stream,
            kind,
            id: record.id.clone(),
            version: record.version,
            backdated,
            at_ms: now_ms,
            json: Some(Arc::clone(&json)),
        };
        self.streams[stream.index()].insert(Entry {
            record,
            json,
            backdated,
        });
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
                span_days: data::DEFAULT_SPAN_DAYS,
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
            let all = walk_all(&s, stream, Filter::default(), 10);
            let mut sorted = all.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(all, sorted, "by id, no repeats");
            assert_eq!(all.len(), s.live_count(stream));

            let filter = Filter {
                since_ns: Some(0),
                before_ns: None,
            };
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
        let (all, _) = s.page_at(
            Stream::Customers,
            Filter {
                since_ns: Some(0),
                before_ns: None,
            },
            0,
            100,
        );
        let pivot = &all[10].position;
        let at = i128::from(pivot.updated_ms) * 1_000_000;
        let (from, total) = s.page_at(
            Stream::Customers,
            Filter {
                since_ns: Some(at),
                before_ns: None,
            },
            0,
            100,
        );
        assert_eq!(from[0].position.updated_ms, pivot.updated_ms);
        assert!(total >= 20);
        let (later, _) = s.page_at(
            Stream::Customers,
            Filter {
                since_ns: Some(at + 1),
                before_ns: None,
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

    fn window(since_ms: i64, before_ms: i64) -> Filter {
        Filter {
            since_ns: Some(i128::from(since_ms) * 1_000_000),
            before_ns: Some(i128::from(before_ms) * 1_000_000),
        }
    }

    #[test]
    fn narrow_windows_page_every_record_once() {
        let s = store(200_000);
        for stream in [Stream::Orders, Stream::Events] {
            let all: Vec<(i64, String)> = s
                .by_updated(stream)
                .map(|e| (e.record.updated_ms, e.record.id.clone()))
                .collect();
            let (first, last) = (all[0].0, all[all.len() - 1].0);
            // About 280 records per window: 200 000 records over 180 days.
            let width = 21_600_000;
            let (mut from, mut windows, mut pages, mut seen) = (first - 7, 0, 0u64, 0);
            let mut paging = std::time::Duration::ZERO;
            while from <= last {
                let to = from + width;
                let filter = window(from, to);
                let lo = all.partition_point(|(ms, _)| *ms < from);
                let hi = all.partition_point(|(ms, _)| *ms < to);
                let expected: Vec<String> = all[lo..hi].iter().map(|(_, id)| id.clone()).collect();
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let started = std::time::Instant::now();
                    let (page, more) = s.page_after(stream, filter, after.as_ref(), 50);
                    paging += started.elapsed();
                    pages += 1;
                    assert!(
                        page.iter()
                            .all(|l| (from..to).contains(&l.position.updated_ms))
                    );
                    got.extend(ids(&page));
                    after = page.last().map(|l| l.position.clone());
                    if !more {
                        break;
                    }
                }
                assert_eq!(got, expected, "window {from}..{to}, once each, in order");
                if windows % 50 == 0 {
                    let (page, total) = s.page_at(stream, filter, 10, 1000);
                    assert_eq!(total, expected.len());
                    assert_eq!(ids(&page), expected[10.min(total)..]);
                    // Without updated_since the window starts at the epoch.
                    let open = Filter {
                        since_ns: None,
                        ..filter
                    };
                    assert_eq!(s.page_at(stream, open, 0, 0).1, hi);
                }
                seen += got.len();
                windows += 1;
                from = to;
            }
            assert_eq!(seen, all.len(), "every record in some window");
            // Unoptimized and on a shared machine, still far above 1 000 pages a second.
            let rate = pages as f64 / paging.as_secs_f64();
            println!("{stream:?}: {windows} windows, {pages} pages, {rate:.0} pages/s");
            assert!(rate > 1000.0, "{rate:.0} pages/s");
        }
    }

    #[test]
    fn windows_are_exact_to_the_nanosecond() {
        let s = store(300);
        let all: Vec<(i64, String)> = s
            .by_updated(Stream::Customers)
            .map(|e| (e.record.updated_ms, e.record.id.clone()))
            .collect();
        let (a, b) = (all[40].0, all[90].0);
        let count = |since_ns, before_ns| {
            let filter = Filter {
                since_ns,
                before_ns,
            };
            let (page, total) = s.page_at(Stream::Customers, filter, 0, 10_000);
            assert_eq!(page.len(), total);
            let mut after = None;
            let mut keyset = Vec::new();
            loop {
                let (page, more) = s.page_after(Stream::Customers, filter, after.as_ref(), 3);
                keyset.extend(ids(&page));
                after = page.last().map(|l| l.position.clone());
                if !more {
                    break;
                }
            }
            assert_eq!(keyset, ids(&page));
            total
        };
        let ns = |ms: i64| i128::from(ms) * 1_000_000;
        let in_ms = |lo: i64, hi: i64| all.iter().filter(|(m, _)| (lo..hi).contains(m)).count();
        assert_eq!(count(Some(ns(a)), Some(ns(b))), in_ms(a, b));
        assert_eq!(count(Some(ns(a)), Some(ns(b) + 1)), in_ms(a, b + 1));
        assert_eq!(count(Some(ns(a)), Some(ns(b) - 1)), in_ms(a, b));
        assert_eq!(count(Some(ns(a) + 1), Some(ns(b))), in_ms(a + 1, b));
        assert_eq!(count(None, Some(ns(b))), in_ms(i64::MIN, b));
        // Empty and inverted windows are empty, not a panic.
        assert_eq!(count(Some(ns(a)), Some(ns(a))), 0);
        assert_eq!(count(Some(ns(b)), Some(ns(a))), 0);
        assert_eq!(count(None, Some(0)), 0);
        // Resuming after a position at or past the window's end yields nothing.
        let end = Position {
            updated_ms: b,
            id: String::new(),
        };
        let filter = Filter {
            since_ns: Some(ns(a)),
            before_ns: Some(ns(b)),
        };
        assert!(
            s.page_after(Stream::Customers, filter, Some(&end), 5)
                .0
                .is_empty()
        );
        let past = Position {
            updated_ms: b + 1,
            id: "x".into(),
        };
        assert!(
            s.page_after(Stream::Customers, filter, Some(&past), 5)
                .0
                .is_empty()
        );
        // rank_at_most counts the window's records up to a position.
        let p = s.position_of(Stream::Customers, &all[50].1).unwrap();
        assert_eq!(s.rank_at_most(Stream::Customers, filter, &p, 1000), 11);
        assert_eq!(s.rank_at_most(Stream::Customers, filter, &p, 4), 4);
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
