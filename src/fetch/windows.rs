//! Windowed, parallel backfill (`backfill = { start, step, concurrency, max_records_per_window }`).
//!
//! A stream's first sync (no high-water mark yet) does not read its whole history as one
//! sequential query: `[start, sync start)` is cut into windows of `step`, each read as an
//! incremental query bounded on both sides (`incremental.param` and `end_param`, or
//! `{since}`/`{until}`), `concurrency` windows at a time. Each window has its own cursor
//! (`<source>/<stream>@<window start>` in `intake.cursors`, in the stream cursor's partition)
//! committed with each of its pages, by one of `concurrency` window slots, each with its own
//! transactional id (`…-fetch-<source>-<stream>#w<slot>`, fenced by a new owner like the
//! stream's). Every slot takes its requests from the token's pacer, so the quota holds.
//!
//! **Splitting.** APIs read such queries in the order of the incremental field. A window that
//! has read `max_records_per_window` records while more follow (a search API that stops at
//! 10 000 results) ends there, and a new window starts at the last value it read, to the old
//! window's end, in the same transaction as its last page. Records at exactly that value may
//! land twice (dedup keeps one); a window holding more records than the cap at one instant
//! cannot split, and the stream pauses saying so.
//!
//! **Crash.** The stream's cursor holds the plan; a restart restores every window cursor of
//! the sync and goes on with the windows that are not complete, each from its own page. When
//! all are, the stream's cursor completes the sync (high-water mark: the sync's start). The
//! sync's markers are not a full sync's: records that moved between windows while the
//! backfill ran were not all seen, so no delete is concluded from it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::FetchError;
use super::cursor::{BackfillPlan, CursorState, Mode, format_time, next_stamp, parse_time};
use super::http::HttpError;
use super::paginate::PageCursor;
use super::request::Values;
use super::stream::{BatchError, Out, Place, StreamWorker, page_of, restore_cursors_with};
use crate::headers::{self, Headers};
use crate::kafka::TxnProducer;
use crate::kafka::txn;

/// One window's cursor, in `intake.cursors` at `<source>/<stream>@<since>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCursor {
    /// The backfill sync the window belongs to.
    pub sync_id: String,
    /// The window's start (RFC 3339, inclusive).
    pub since: String,
    /// The window's end (RFC 3339, exclusive).
    pub until: String,
    /// Where its next page is.
    pub page: PageCursor,
    /// Pages landed.
    pub pages: u64,
    /// Records landed.
    pub records: u64,
    /// Whether the window is read (to its end, or to a split).
    pub complete: bool,
    /// The largest incremental-field value read (RFC 3339).
    #[serde(default)]
    pub last_value: Option<String>,
    /// Where the window split: the rest is the window starting there.
    #[serde(default)]
    pub split_at: Option<String>,
    /// The stamp of its last page.
    #[serde(default)]
    pub stamp: i64,
    /// When this record was written.
    pub updated_at: String,
}

impl WindowCursor {
    fn new(sync_id: &str, since: time::OffsetDateTime, until: time::OffsetDateTime) -> Self {
        WindowCursor {
            sync_id: sync_id.to_owned(),
            since: format_time(since),
            until: format_time(until),
            page: PageCursor::Start,
            pages: 0,
            records: 0,
            complete: false,
            last_value: None,
            split_at: None,
            stamp: 0,
            updated_at: headers::now_rfc3339(),
        }
    }
}

/// The windows of `plan` as first cut (`[start, until)` every `step_s`).
pub fn cut(sync_id: &str, plan: &BackfillPlan) -> Vec<WindowCursor> {
    let (Some(start), Some(until)) = (parse_time(&plan.start), parse_time(&plan.until)) else {
        return Vec::new();
    };
    let step = time::Duration::seconds(i64::try_from(plan.step_s.max(1)).unwrap_or(i64::MAX));
    let mut out = Vec::new();
    let mut at = start;
    while at < until {
        let end = (at + step).min(until);
        out.push(WindowCursor::new(sync_id, at, end));
        at = end;
    }
    out
}

/// The windows of a sync: the plan's, replaced and joined by the committed window cursors of
/// that sync, by start.
pub fn windows_of(
    sync_id: &str,
    plan: &BackfillPlan,
    committed: impl IntoIterator<Item = WindowCursor>,
) -> BTreeMap<String, WindowCursor> {
    let mut all: BTreeMap<String, WindowCursor> = cut(sync_id, plan)
        .into_iter()
        .map(|w| (w.since.clone(), w))
        .collect();
    for w in committed {
        if w.sync_id == sync_id {
            all.insert(w.since.clone(), w);
        }
    }
    all
}

/// Fills in the window counts of a backfill sync in progress (`intake status`) from its
/// committed window cursors.
///
/// # Errors
/// Kafka errors.
pub async fn progress(
    kafka: &crate::kafka::Kafka,
    names: &crate::topics::TopicNames,
    cur: &mut CursorState,
) -> Result<(), FetchError> {
    let Some(plan) = cur.backfill.as_mut().filter(|_| !cur.complete) else {
        return Ok(());
    };
    let key = super::cursor::stream_key(&cur.source, &cur.stream);
    let prefix = format!("{key}@");
    let (_, restored, _) = restore_cursors_with(
        kafka,
        names,
        std::slice::from_ref(&key),
        std::slice::from_ref(&prefix),
    )
    .await?;
    let committed = restored
        .values()
        .filter_map(|v| serde_json::from_slice::<WindowCursor>(v).ok());
    let all = windows_of(&cur.sync_id, plan, committed);
    plan.windows = all.len() as u64;
    plan.done = all.values().filter(|w| w.complete).count() as u64;
    plan.running = all
        .values()
        .filter(|w| !w.complete && w.page != PageCursor::Start)
        .count() as u64;
    Ok(())
}

/// How much of a backfill's time span its windows have read: (seconds read, seconds in all).
/// A complete window counts whole (up to where it split: the rest is a window of its own), one
/// in progress up to the last value it read.
pub fn covered<'a>(windows: impl IntoIterator<Item = &'a WindowCursor>) -> (u64, u64) {
    let (mut done, mut total) = (0i64, 0i64);
    for w in windows {
        let (Some(since), Some(until)) = (parse_time(&w.since), parse_time(&w.until)) else {
            continue;
        };
        let end = match (w.complete, w.split_at.as_deref().and_then(parse_time)) {
            (true, Some(split)) => split.min(until),
            _ => until,
        };
        let span = (end - since).whole_seconds().max(0);
        total += span;
        done += if w.complete {
            span
        } else {
            w.last_value
                .as_deref()
                .and_then(parse_time)
                .map_or(0, |t| (t - since).whole_seconds().clamp(0, span))
        };
    }
    (done as u64, total as u64)
}

/// What a window's page did to it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// More pages follow.
    More,
    /// The window is read.
    Done,
    /// The window reached the cap: the rest starts at this value.
    Split(time::OffsetDateTime),
}

/// After a page that moved the window to `after` with `records` read in all: is it done, does
/// it go on, or does it split at the last value it read (`Err`: it cannot, every record it
/// read is at its start)?
pub fn step(w: &WindowCursor, after: &PageCursor, cap: u64) -> Result<Step, String> {
    if *after == PageCursor::Done {
        return Ok(Step::Done);
    }
    if cap == 0 || w.records < cap {
        return Ok(Step::More);
    }
    let since = parse_time(&w.since);
    match w.last_value.as_deref().and_then(parse_time) {
        Some(t) if since.is_none_or(|s| t > s) => Ok(Step::Split(t)),
        _ => Err(format!(
            "the window from {} holds more than max_records_per_window ({cap}) records at its first instant: it cannot split; raise the cap",
            w.since
        )),
    }
}

/// The queue the window slots share: windows to read, and how many are being read (a split
/// adds a window before its slot counts itself free, so no slot stops early), and what this
/// process landed.
struct Queue {
    todo: VecDeque<WindowCursor>,
    busy: usize,
    pages: u64,
    records: u64,
}

/// What a backfill run did: the sync's cursor once every window is read (`None`: stopped
/// first), and the pages and records this process landed.
pub struct Backfilled {
    /// The completed sync's cursor.
    pub complete: Option<CursorState>,
    /// Pages landed here.
    pub pages: u64,
    /// Records landed here.
    pub records: u64,
}

impl StreamWorker {
    /// The key of a window's cursor.
    fn window_key(&self, since: &str) -> String {
        format!("{}@{since}", self.key())
    }

    /// Reads the windows of the backfill sync `cur` that are not complete, `concurrency` at a
    /// time, and returns the sync's cursor complete (to be committed with its end marker).
    pub(super) async fn backfill(
        &self,
        cur: &CursorState,
        stop: &watch::Receiver<bool>,
    ) -> Result<Backfilled, BatchError> {
        let cfg = self.stream.backfill.as_ref().expect("a backfill stream");
        let plan = cur.backfill.as_ref().expect("a backfill sync");
        let mut producers = Vec::new();
        for slot in 0..cfg.concurrency {
            let id = txn::transactional_id(
                &self.cfg.kafka.group_prefix,
                txn::Writer::FetchWindow {
                    source: &self.source.name,
                    stream: &self.stream.name,
                    slot,
                },
            );
            let p = self.kafka.txn_producer(&id).map_err(|e| fatal(e.into()))?;
            crate::kafka::retry::retrying("init transactions", || {
                let p = p.clone();
                async move { p.blocking(|p| p.init()).await }
            })
            .await
            .map_err(|e| fatal(e.into()))?;
            producers.push(p);
        }
        // After every slot fenced its previous owner: what was committed.
        let key = self.key();
        let prefix = format!("{key}@");
        let (_, restored, partition) = restore_cursors_with(
            &self.kafka,
            &self.names,
            std::slice::from_ref(&key),
            std::slice::from_ref(&prefix),
        )
        .await
        .map_err(BatchError::Fatal)?;
        let committed = restored.into_iter().filter_map(|(k, v)| {
            serde_json::from_slice::<WindowCursor>(&v)
                .map_err(|e| tracing::error!(key = %k, error = %e, "unreadable window cursor ignored (the window is read again)"))
                .ok()
        });
        let all = windows_of(&cur.sync_id, plan, committed);
        let stamp = Arc::new(AtomicI64::new(
            all.values().map(|w| w.stamp).fold(cur.stamp, i64::max),
        ));
        let todo: VecDeque<WindowCursor> = all.values().filter(|w| !w.complete).cloned().collect();
        tracing::info!(source = %self.source.name, stream = %self.stream.name, sync_id = %cur.sync_id,
            windows = all.len(), left = todo.len(), concurrency = cfg.concurrency, "backfill: reading windows");
        let queue = Arc::new(Mutex::new(Queue {
            todo,
            busy: 0,
            pages: 0,
            records: 0,
        }));
        if let (Some(pb), Some(start), Some(until)) = (
            &self.progress,
            parse_time(&plan.start),
            parse_time(&plan.until),
        ) {
            super::stream::time_bar(pb, (until - start).whole_seconds().max(1) as u64);
            pb.set_position(covered(all.values()).0);
        }
        let done = Arc::new(Mutex::new(all));
        let mut slots = tokio::task::JoinSet::new();
        for p in producers {
            let w = self.clone();
            let (queue, done, stamp, stop) = (
                Arc::clone(&queue),
                Arc::clone(&done),
                Arc::clone(&stamp),
                stop.clone(),
            );
            let sync_id = cur.sync_id.clone();
            slots.spawn(async move {
                w.window_slot(&p, &sync_id, partition, queue, done, stamp, stop)
                    .await
            });
        }
        let mut failed = None;
        while let Some(r) = slots.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // One slot failed: the others stop at their next page.
                    queue.lock().expect("queue").todo.clear();
                    failed.get_or_insert(e);
                }
                Err(join) => {
                    failed.get_or_insert(BatchError::Fatal(FetchError::Kafka(
                        rdkafka::error::KafkaError::Canceled,
                    )));
                    tracing::error!(error = %join, "a window slot panicked");
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let all = done.lock().expect("windows").clone();
        let (pages, records) = {
            let q = queue.lock().expect("queue");
            (q.pages, q.records)
        };
        if *stop.borrow() || all.values().any(|w| !w.complete) {
            return Ok(Backfilled {
                complete: None,
                pages,
                records,
            });
        }
        let mut next = cur.clone();
        next.page = PageCursor::Done;
        next.pages = all.values().map(|w| w.pages).sum();
        next.records = all.values().map(|w| w.records).sum();
        next.total_records = cur.total_records + next.records;
        next.stamp = stamp.load(Ordering::SeqCst);
        next.high_water = Some(plan.until.clone());
        if let Some(p) = next.backfill.as_mut() {
            p.windows = all.len() as u64;
            p.done = p.windows;
        }
        next.finish_if_done(time::OffsetDateTime::now_utc());
        next.updated_at = headers::now_rfc3339();
        tracing::info!(source = %self.source.name, stream = %self.stream.name, sync_id = %cur.sync_id,
            windows = all.len(), pages = next.pages, records = next.records, "backfill: every window read");
        Ok(Backfilled {
            complete: Some(next),
            pages,
            records,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn window_slot(
        &self,
        producer: &TxnProducer,
        sync_id: &str,
        partition: i32,
        queue: Arc<Mutex<Queue>>,
        done: Arc<Mutex<BTreeMap<String, WindowCursor>>>,
        stamp: Arc<AtomicI64>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), BatchError> {
        loop {
            let next = {
                let mut q = queue.lock().expect("queue");
                match q.todo.pop_front() {
                    Some(w) => {
                        q.busy += 1;
                        Some(w)
                    }
                    None if q.busy == 0 => return Ok(()),
                    None => None,
                }
            };
            let Some(mut w) = next else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let read = self
                .read_window(producer, sync_id, partition, &mut w, &stamp, &stop, &queue)
                .await;
            {
                let mut all = done.lock().expect("windows");
                all.insert(w.since.clone(), w.clone());
                if let Some(pb) = &self.progress {
                    pb.set_message(format!(
                        "{}/{}: backfill, {} of {} windows read",
                        self.source.name,
                        self.stream.name,
                        all.values().filter(|w| w.complete).count(),
                        all.len()
                    ));
                    pb.set_position(covered(all.values()).0);
                }
            }
            queue.lock().expect("queue").busy -= 1;
            read?;
            if *stop.borrow() {
                return Ok(());
            }
        }
    }

    /// Reads one window to its end or its split, a page per transaction with its cursor.
    #[allow(clippy::too_many_arguments)]
    async fn read_window(
        &self,
        producer: &TxnProducer,
        sync_id: &str,
        partition: i32,
        w: &mut WindowCursor,
        stamp: &AtomicI64,
        stop: &watch::Receiver<bool>,
        queue: &Mutex<Queue>,
    ) -> Result<(), BatchError> {
        let inc = self
            .stream
            .incremental
            .as_ref()
            .expect("a backfill stream is incremental");
        let cap = self
            .stream
            .backfill
            .as_ref()
            .map_or(0, |b| b.max_records_per_window);
        let base = self.source.base_url.as_deref().unwrap_or_default();
        let fmt = |s: &str| parse_time(s).map(|t| inc.format.format(t));
        while !w.complete {
            if *stop.borrow() {
                return Ok(());
            }
            let (since, until) = (fmt(&w.since), fmt(&w.until));
            let mut filters: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = since.as_deref() {
                filters.push((inc.param.as_str(), s));
            }
            if let (Some(end), Some(u)) = (&inc.end_param, until.as_deref()) {
                filters.push((end.as_str(), u));
            }
            let values = Values {
                cursor: w.page.token().map(str::to_owned),
                since: since.clone(),
                until: until.clone(),
                page_size: self.stream.page_size,
                page: w.page.page_number(self.stream.page_size),
                parent: None,
            };
            let refused = |why: String| {
                BatchError::Http(HttpError::Client {
                    url: base.to_owned(),
                    status: 0,
                    body: why,
                })
            };
            let (url, shape) = self.shaped(&self.stream, &w.page, &values, &filters)?;
            let (resp, body) = self.get_parsed(&url, &shape, producer).await?;
            let (recs, after) = page_of(&self.stream, &w.page, &resp, &body);
            let recs: &[Value] = recs.map_or(&[], Vec::as_slice);
            let count = recs.len();
            let after = after.map_err(|e| {
                refused(format!(
                    "cannot paginate past a page of window {}: {e}",
                    w.since
                ))
            })?;
            let mut next = w.clone();
            for r in recs {
                if let Some(t) = r
                    .pointer(&inc.field)
                    .and_then(|v| inc.field_format().parse_json(v))
                {
                    let t = format_time(t);
                    if next
                        .last_value
                        .as_deref()
                        .and_then(parse_time)
                        .is_none_or(|l| parse_time(&t).is_some_and(|x| x > l))
                    {
                        next.last_value = Some(t);
                    }
                }
            }
            let page_stamp = {
                let mut prev = stamp.load(Ordering::SeqCst);
                loop {
                    let n = next_stamp(prev, time::OffsetDateTime::now_utc());
                    match stamp.compare_exchange(prev, n, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => break n,
                        Err(now) => prev = now,
                    }
                }
            };
            let mut outs = Vec::new();
            if !resp.skipped {
                let place = Place {
                    page: &w.page,
                    sync_id,
                    mode: Mode::Full,
                    stamp: page_stamp,
                };
                let landed = self
                    .land(&resp, place, &after, w.pages, count as u64)
                    .await?
                    .with_header(headers::WINDOW, &w.since);
                outs.push(landed.into_out(&self.names.landing(), &self.key()));
                next.pages += 1;
                next.records += count as u64;
            }
            let mut split = None;
            match step(&next, &after, cap).map_err(refused)? {
                Step::More => {}
                Step::Done => next.complete = true,
                Step::Split(t) => {
                    let rest = WindowCursor::new(sync_id, t, parse_time(&w.until).unwrap_or(t));
                    next.complete = true;
                    next.split_at = Some(rest.since.clone());
                    tracing::info!(source = %self.source.name, stream = %self.stream.name, window = %w.since, records = next.records, split_at = %rest.since, "backfill: window reached max_records_per_window; the rest is a new window");
                    outs.push(self.window_out(&rest, partition));
                    split = Some(rest);
                }
            }
            next.page = after;
            next.stamp = page_stamp;
            next.updated_at = headers::now_rfc3339();
            outs.push(self.window_out(&next, partition));
            self.send(producer, outs).await.map_err(BatchError::Fatal)?;
            let landed = u64::from(!resp.skipped);
            *w = next;
            let mut q = queue.lock().expect("queue");
            q.pages += landed;
            q.records += landed * count as u64;
            if let Some(rest) = split {
                q.todo.push_back(rest);
            }
        }
        Ok(())
    }

    fn window_out(&self, w: &WindowCursor, partition: i32) -> Out {
        Out {
            topic: self.names.cursors(),
            key: self.window_key(&w.since).into_bytes(),
            payload: Some(Bytes::from(serde_json::to_vec(w).expect("serialisable"))),
            headers: Headers::new().build(),
            partition: Some(partition),
        }
    }
}

fn fatal(e: FetchError) -> BatchError {
    BatchError::Fatal(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BackfillPlan {
        BackfillPlan {
            start: "2024-01-01T00:00:00Z".into(),
            until: "2024-01-31T12:00:00Z".into(),
            step_s: 7 * 86_400,
            done: 0,
            windows: 0,
            running: 0,
        }
    }

    #[test]
    fn a_plan_is_cut_into_adjacent_windows_ending_at_the_sync_start() {
        let w = cut("s", &plan());
        assert_eq!(w.len(), 5);
        assert_eq!(w[0].since, "2024-01-01T00:00:00Z");
        for pair in w.windows(2) {
            assert_eq!(pair[0].until, pair[1].since);
        }
        assert_eq!(w[4].until, "2024-01-31T12:00:00Z");
    }

    #[test]
    fn committed_windows_of_the_sync_replace_and_join_the_plan() {
        let mut first = cut("s", &plan()).remove(0);
        first.complete = true;
        first.split_at = Some("2024-01-03T00:00:00Z".into());
        let mut rest = first.clone();
        rest.since = "2024-01-03T00:00:00Z".into();
        rest.complete = false;
        let mut other = first.clone();
        other.sync_id = "old".into();
        other.since = "2023-01-01T00:00:00Z".into();
        let all = windows_of("s", &plan(), [first, rest, other]);
        assert_eq!(
            all.len(),
            6,
            "the plan's five and the split's rest; not another sync's"
        );
        assert!(all["2024-01-01T00:00:00Z"].complete);
        assert!(!all["2024-01-03T00:00:00Z"].complete);
    }

    #[test]
    fn coverage_counts_read_windows_whole_split_ones_to_the_split_and_open_ones_to_their_last_value()
     {
        let mut w = cut("s", &plan());
        let day = 86_400;
        // 30.5 days in all, nothing read.
        assert_eq!(covered(&w), (0, 30 * day + day / 2));
        // The first week read; the second split after 2 days (its rest a window of its own,
        // read a day in); the third 3 days in.
        w[0].complete = true;
        w[1].complete = true;
        w[1].split_at = Some("2024-01-10T00:00:00Z".into());
        let mut rest = w[1].clone();
        rest.since = "2024-01-10T00:00:00Z".into();
        rest.complete = false;
        rest.split_at = None;
        rest.last_value = Some("2024-01-11T00:00:00Z".into());
        w[2].last_value = Some("2024-01-18T00:00:00Z".into());
        w.push(rest);
        assert_eq!(covered(&w), ((7 + 2 + 1 + 3) * day, 30 * day + day / 2));
    }

    #[test]
    fn a_window_at_the_cap_splits_at_its_last_value_unless_all_is_at_its_start() {
        let mut w = cut("s", &plan()).remove(0);
        let more = PageCursor::Token("t".into());
        w.records = 10;
        assert_eq!(step(&w, &more, 0), Ok(Step::More));
        assert_eq!(step(&w, &more, 11), Ok(Step::More));
        assert_eq!(step(&w, &PageCursor::Done, 10), Ok(Step::Done));
        w.last_value = Some("2024-01-02T10:00:00Z".into());
        assert_eq!(
            step(&w, &more, 10),
            Ok(Step::Split(parse_time("2024-01-02T10:00:00Z").unwrap()))
        );
        w.last_value = Some(w.since.clone());
        assert!(step(&w, &more, 10).unwrap_err().contains("cannot split"));
    }

    #[test]
    fn reads_and_writes_the_stored_json() {
        let full = r#"{"sync_id":"s1","since":"2024-01-01T00:00:00Z","until":"2024-01-08T00:00:00Z","page":{"at":"page","value":3},"pages":2,"records":200,"complete":false,"last_value":"2024-01-03T00:00:00Z","split_at":"2024-01-05T00:00:00Z","stamp":1767225600000000,"updated_at":"2026-01-02T00:00:00Z"}"#;
        crate::contract::assert_record_json::<WindowCursor>(full, full);
        crate::contract::assert_record_json::<WindowCursor>(
            r#"{"sync_id":"s1","since":"2024-01-01T00:00:00Z","until":"2024-01-08T00:00:00Z","page":{"at":"start"},"pages":0,"records":0,"complete":true,"updated_at":"2026-01-02T00:00:00Z"}"#,
            r#"{"sync_id":"s1","since":"2024-01-01T00:00:00Z","until":"2024-01-08T00:00:00Z","page":{"at":"start"},"pages":0,"records":0,"complete":true,"last_value":null,"split_at":null,"stamp":0,"updated_at":"2026-01-02T00:00:00Z"}"#,
        );
    }
}
