//! Parent–child streams (`parent = { stream, key, as }`): a child's requests are made once per
//! parent record, and only for parents that are new or changed.
//!
//! The worker of the root stream (the ancestor without a parent) walks the whole tree: before a
//! page of a stream with children is committed, each of its records is compared with the
//! record its children were last read for (an XXH3 hash of the record's JSON). A new or changed
//! parent has all its children read again, page by page, each page committed with that
//! parent's **child cursor** (`<source>/<child>#<parent key>` in `intake.cursors`, in the
//! partition of the root's cursor) in one transaction, and a page of children is itself a page
//! of parents for the grandchildren. Only then is the parent page committed, so a crash
//! anywhere resumes: the parent page is read again, a parent whose children are done for this
//! very record costs nothing, and one whose children were half read goes on from its cursor.
//!
//! **Deletes.** A child cursor keeps the keys of the children its last complete read found
//! (up to [`MAX_TRACKED_KEYS`]). A child that is no longer listed is deleted, and so is every
//! child of a parent that is gone: its children answer 404, it is missing from a full sync of
//! the root read by this process from its start, or it was itself a deleted child. A delete
//! lands as a mapped delete event (`intake.op = delete`, keyed by the child's key, version the
//! stamp of the transaction, in microseconds) that validate passes on and dedup applies; the
//! parent's child cursor is then tombstoned.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cursor::{Mode, next_stamp, stream_key};
use super::http::HttpError;
use super::paginate::PageCursor;
use super::request::Values;
use super::stream::{BatchError, Out, Place, StreamWorker, key_string, page_of};
use crate::config::StreamConfig;
use crate::contract::LandingHeaders;
use crate::headers::{self, Headers, Kind};
use crate::telemetry::metric;

/// Children keys a child cursor remembers per parent; past it, deletes of that parent's
/// children are not detected (a warning says so), everything else works.
pub const MAX_TRACKED_KEYS: usize = 20_000;

/// A parent's child cursor, in `intake.cursors` at `<source>/<child>#<parent key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildCursor {
    /// The child stream.
    pub stream: String,
    /// The parent's key.
    pub parent_key: String,
    /// Hash of the parent record the read in progress (or the last complete one) is for.
    pub parent_hash: u64,
    /// The read of this parent's children (one sync id per read).
    pub sync_id: String,
    /// Whether that read reached its last page.
    pub complete: bool,
    /// Where its next page is.
    pub page: PageCursor,
    /// Pages landed by this read.
    pub pages: u64,
    /// Records landed by this read.
    pub records: u64,
    /// Keys of the children this read landed so far.
    #[serde(default)]
    pub seen: Vec<String>,
    /// Keys of the children of the last complete read (and of reads given up for a newer
    /// parent record): what a complete read that no longer lists one of them deletes.
    #[serde(default)]
    pub last: Vec<String>,
    /// More children than [`MAX_TRACKED_KEYS`]: their deletes are not detected.
    #[serde(default)]
    pub untracked: bool,
    /// The stamp of the last page landed for this parent.
    #[serde(default)]
    pub stamp: i64,
    /// When this record was written.
    pub updated_at: String,
}

impl ChildCursor {
    /// A new read of `parent_key`'s children for a parent record hashing to `parent_hash`,
    /// after `prev` (the parent's cursor, complete or not).
    pub fn begin(
        stream: &str,
        parent_key: &str,
        parent_hash: u64,
        prev: Option<&ChildCursor>,
    ) -> ChildCursor {
        let mut last: Vec<String> = prev.map(|p| p.last.clone()).unwrap_or_default();
        if let Some(p) = prev.filter(|p| !p.complete) {
            // A read given up half way landed children too: a later read must delete those
            // it no longer lists.
            let known: HashSet<&str> = last.iter().map(String::as_str).collect();
            let extra: Vec<String> = p
                .seen
                .iter()
                .filter(|k| !known.contains(k.as_str()))
                .cloned()
                .collect();
            last.extend(extra);
        }
        ChildCursor {
            stream: stream.to_owned(),
            parent_key: parent_key.to_owned(),
            parent_hash,
            sync_id: uuid::Uuid::new_v4().to_string(),
            complete: false,
            page: PageCursor::Start,
            pages: 0,
            records: 0,
            seen: Vec::new(),
            last,
            untracked: prev.is_some_and(|p| p.untracked),
            stamp: prev.map_or(0, |p| p.stamp),
            updated_at: headers::now_rfc3339(),
        }
    }

    /// Notes the keys of a landed page's children.
    pub fn saw<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) {
        for k in keys {
            if self.seen.len() >= MAX_TRACKED_KEYS {
                self.untracked = true;
                return;
            }
            self.seen.push(k.to_owned());
        }
    }

    /// Completes the read: the children of the last read it did not list (none when some keys
    /// went untracked).
    pub fn finish(&mut self) -> Vec<String> {
        self.complete = true;
        let seen: HashSet<&str> = self.seen.iter().map(String::as_str).collect();
        let gone = if self.untracked {
            Vec::new()
        } else {
            self.last
                .iter()
                .filter(|k| !seen.contains(k.as_str()))
                .cloned()
                .collect()
        };
        self.last = std::mem::take(&mut self.seen);
        gone
    }

    /// Every child this parent may have landed.
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.last.clone();
        let known: HashSet<&str> = self.last.iter().map(String::as_str).collect();
        keys.extend(
            self.seen
                .iter()
                .filter(|k| !known.contains(k.as_str()))
                .cloned(),
        );
        keys
    }
}

/// The child cursors of a root stream's tree, as committed.
pub struct Tree {
    /// The partition of `intake.cursors` holding the root's cursor, and so every child cursor.
    pub partition: i32,
    /// By (child stream, parent key).
    pub cursors: HashMap<(String, String), ChildCursor>,
    /// The last stamp given to a page of the tree (every stream of it): stamps increase per
    /// stream because they increase across the tree.
    pub stamp: i64,
    /// Parent keys of the root's children seen by the root's full sync in progress, when this
    /// process read it from its start (`None`: it did not, so it detects no vanished parent).
    pub seen_roots: Option<HashMap<String, HashSet<String>>>,
    /// Child stream configurations by name.
    streams: HashMap<String, Arc<StreamConfig>>,
}

/// The cursor key of `parent_key`'s children in `child`.
pub fn child_key(source: &str, child: &str, parent_key: &str) -> String {
    format!("{}#{parent_key}", stream_key(source, child))
}

impl Tree {
    /// The tree of `root` from the committed child cursors (`restored`: every cursor record of
    /// the root's partition, by key).
    pub fn new(
        worker: &StreamWorker,
        partition: i32,
        restored: super::stream::Prefixed,
        root_stamp: i64,
    ) -> Tree {
        let mut streams = HashMap::new();
        let mut stack = vec![worker.stream.name.clone()];
        while let Some(name) = stack.pop() {
            for c in worker.source.children_of(&name) {
                streams.insert(c.name.clone(), Arc::new(c.clone()));
                stack.push(c.name.clone());
            }
        }
        let cursors: HashMap<(String, String), ChildCursor> = restored
            .into_iter()
            .filter_map(|(k, v)| match serde_json::from_slice::<ChildCursor>(&v) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(key = %k, error = %e, "unreadable child cursor ignored (its parent's children are read again)");
                    None
                }
            })
            .filter(|c| streams.contains_key(&c.stream))
            .map(|c| ((c.stream.clone(), c.parent_key.clone()), c))
            .collect();
        let stamp = cursors.values().map(|c| c.stamp).fold(root_stamp, i64::max);
        Tree {
            partition,
            cursors,
            stamp,
            seen_roots: None,
            streams,
        }
    }

    /// The key prefixes of this tree's child cursors.
    pub fn prefixes(worker: &StreamWorker) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![worker.stream.name.clone()];
        while let Some(name) = stack.pop() {
            for c in worker.source.children_of(&name) {
                out.push(child_key(&worker.source.name, &c.name, ""));
                stack.push(c.name.clone());
            }
        }
        out
    }

    fn next_stamp(&mut self) -> i64 {
        self.stamp = next_stamp(self.stamp, time::OffsetDateTime::now_utc());
        self.stamp
    }
}

/// What a vanished parent takes with it: delete events for its children (and theirs), and
/// the child cursors to tombstone.
#[derive(Default)]
struct Vanished {
    deletes: Vec<(String, String)>,
    cursors: Vec<(String, String)>,
}

impl StreamWorker {
    /// This worker's view of `stream` (a child of its tree): same source, client, pacer.
    fn for_stream(&self, stream: Arc<StreamConfig>) -> StreamWorker {
        StreamWorker {
            stream,
            ..self.clone()
        }
    }

    /// Reads the children of every new or changed parent among `recs` (records of
    /// `parent`), committing each page of them with its child cursor, before the caller
    /// commits the parent page.
    pub(super) fn descend<'a>(
        &'a self,
        tree: &'a mut Tree,
        parent: &'a StreamConfig,
        recs: &'a [Value],
        producer: &'a crate::kafka::TxnProducer,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BatchError>> + Send + 'a>>
    {
        Box::pin(async move {
            let children: Vec<Arc<StreamConfig>> = self
                .source
                .children_of(&parent.name)
                .filter_map(|c| tree.streams.get(&c.name).cloned())
                .collect();
            for child in children {
                let link = child.parent.as_ref().expect("a child has a parent");
                let pointer = link.key_in(parent);
                for r in recs {
                    let Some(key) = r.pointer(pointer).filter(|v| !v.is_null()).map(key_string)
                    else {
                        tracing::warn!(source = %self.source.name, stream = %parent.name, child = %child.name, pointer, "a parent record without its key: its children are not read (the record itself lands, and validate names what it lacks)");
                        continue;
                    };
                    if parent.name == self.stream.name
                        && let Some(seen) = tree.seen_roots.as_mut()
                    {
                        seen.entry(child.name.clone())
                            .or_default()
                            .insert(key.clone());
                    }
                    let hash = crate::dedup::merge::content_hash(
                        &serde_json::to_vec(r).expect("a JSON value serialises"),
                    );
                    let done = tree
                        .cursors
                        .get(&(child.name.clone(), key.clone()))
                        .is_some_and(|c| c.complete && c.parent_hash == hash);
                    if done {
                        continue;
                    }
                    self.read_children(tree, &child, &key, hash, producer)
                        .await?;
                }
            }
            Ok(())
        })
    }

    /// Reads all children of one parent, page by page.
    async fn read_children(
        &self,
        tree: &mut Tree,
        child: &Arc<StreamConfig>,
        parent_key: &str,
        parent_hash: u64,
        producer: &crate::kafka::TxnProducer,
    ) -> Result<(), BatchError> {
        let id = (child.name.clone(), parent_key.to_owned());
        let mut cur = match tree.cursors.get(&id) {
            Some(c) if !c.complete && c.parent_hash == parent_hash => c.clone(),
            prev => ChildCursor::begin(&child.name, parent_key, parent_hash, prev),
        };
        let w = self.for_stream(Arc::clone(child));
        let link = child.parent.as_ref().expect("a child has a parent");
        metrics::counter!(metric::FETCH_CHILD_READS, "source" => self.source.name.clone(), "stream" => child.name.clone())
            .increment(1);
        while !cur.complete {
            let values = Values {
                cursor: cur.page.token().map(str::to_owned),
                since: None,
                until: None,
                page_size: child.page_size,
                page: cur.page.page_number(child.page_size),
                parent: Some((link.placeholder.clone(), parent_key.to_owned())),
            };
            let (url, shape) = self.shaped(child, &cur.page, &values, &[])?;
            let (resp, body) = match w.get_parsed(&url, &shape, producer).await {
                Err(BatchError::Http(HttpError::Client {
                    status: 404, url, ..
                })) => {
                    tracing::info!(source = %self.source.name, stream = %child.name, parent = parent_key, url = %url, "the parent is gone (404): its children are deleted, nothing is retried");
                    metrics::counter!(metric::FETCH_VANISHED_PARENTS, "source" => self.source.name.clone(), "stream" => child.name.clone())
                        .increment(1);
                    return self
                        .vanish(
                            tree,
                            &[(child.name.clone(), parent_key.to_owned())],
                            producer,
                        )
                        .await;
                }
                other => other?,
            };
            let (recs, after) = page_of(child, &cur.page, &resp, &body);
            let recs: &[Value] = recs.map_or(&[], Vec::as_slice);
            let count = recs.len();
            let key_pointer = child.primary_key.first();
            let after = after.map_err(|e| {
                BatchError::Http(HttpError::Client {
                    url: resp.url.clone(),
                    status: resp.status,
                    body: format!("cannot paginate past this page of children: {e}"),
                })
            })?;
            // Grandchildren first: this page's records are their parents.
            if !resp.skipped && self.source.children_of(&child.name).next().is_some() {
                self.descend(tree, child, recs, producer).await?;
            }
            let mut outs = Vec::new();
            let mut gone = Vanished::default();
            let stamp = tree.next_stamp();
            let mut next = cur.clone();
            if !resp.skipped {
                next.saw(
                    recs.iter()
                        .filter_map(|r| r.pointer(key_pointer))
                        .map(key_string)
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str),
                );
                let place = Place {
                    page: &cur.page,
                    sync_id: &cur.sync_id,
                    mode: Mode::Incremental,
                    stamp,
                };
                let landed = w
                    .land(&resp, place, &after, next.pages, count as u64)
                    .await?;
                outs.push(landed.into_out(
                    &self.names.landing(),
                    &stream_key(&self.source.name, &child.name),
                ));
                next.pages += 1;
                next.records += count as u64;
            }
            next.page = after;
            next.stamp = stamp;
            next.updated_at = headers::now_rfc3339();
            if next.page == PageCursor::Done {
                let deleted = next.finish();
                if next.untracked {
                    tracing::warn!(source = %self.source.name, stream = %child.name, parent = parent_key, max = MAX_TRACKED_KEYS, "a parent with more children than intake tracks: deletes of its children are not detected");
                }
                for k in deleted {
                    gone.deletes.push((child.name.clone(), k.clone()));
                    for g in self.source.children_of(&child.name) {
                        self.collect_vanished(tree, &g.name, &k, &mut gone);
                    }
                }
            }
            self.vanished_outs(&gone, stamp, tree.partition, &mut outs);
            let cursor_key = child_key(&self.source.name, &child.name, parent_key);
            outs.push(Out {
                topic: self.names.cursors(),
                key: cursor_key.into_bytes(),
                payload: Some(Bytes::from(
                    serde_json::to_vec(&next).expect("serialisable"),
                )),
                headers: Headers::new().build(),
                partition: Some(tree.partition),
            });
            self.send(producer, outs).await.map_err(BatchError::Fatal)?;
            metrics::counter!(metric::FETCH_CHILD_DELETES, "source" => self.source.name.clone())
                .increment(gone.deletes.len() as u64);
            for id in &gone.cursors {
                tree.cursors.remove(id);
            }
            tree.cursors.insert(id.clone(), next.clone());
            cur = next;
        }
        Ok(())
    }

    /// Deletes the children of `parents` (child stream, parent key), and theirs, in one
    /// transaction with the tombstones of their child cursors.
    pub(super) async fn vanish(
        &self,
        tree: &mut Tree,
        parents: &[(String, String)],
        producer: &crate::kafka::TxnProducer,
    ) -> Result<(), BatchError> {
        let mut gone = Vanished::default();
        for (child, key) in parents {
            self.collect_vanished(tree, child, key, &mut gone);
        }
        if gone.cursors.is_empty() {
            return Ok(());
        }
        let stamp = tree.next_stamp();
        let mut outs = Vec::new();
        self.vanished_outs(&gone, stamp, tree.partition, &mut outs);
        self.send(producer, outs).await.map_err(BatchError::Fatal)?;
        metrics::counter!(metric::FETCH_CHILD_DELETES, "source" => self.source.name.clone())
            .increment(gone.deletes.len() as u64);
        for id in &gone.cursors {
            tree.cursors.remove(id);
        }
        Ok(())
    }

    /// At the end of a full sync of the root read from its start here: the children of root
    /// records it did not see.
    pub(super) async fn vanish_unseen_roots(
        &self,
        tree: &mut Tree,
        producer: &crate::kafka::TxnProducer,
    ) -> Result<(), BatchError> {
        let Some(seen) = tree.seen_roots.take() else {
            return Ok(());
        };
        let root_children: HashSet<String> = self
            .source
            .children_of(&self.stream.name)
            .map(|c| c.name.clone())
            .collect();
        let unseen: Vec<(String, String)> = tree
            .cursors
            .keys()
            .filter(|(c, k)| {
                root_children.contains(c) && !seen.get(c).is_some_and(|s| s.contains(k))
            })
            .cloned()
            .collect();
        if !unseen.is_empty() {
            tracing::info!(source = %self.source.name, stream = %self.stream.name, parents = unseen.len(), "a full sync did not list some parents: their children are deleted");
        }
        self.vanish(tree, &unseen, producer).await
    }

    /// Collects `key`'s children in `child` and, recursively, theirs.
    fn collect_vanished(&self, tree: &Tree, child: &str, key: &str, gone: &mut Vanished) {
        let id = (child.to_owned(), key.to_owned());
        let Some(c) = tree.cursors.get(&id) else {
            return;
        };
        gone.cursors.push(id);
        for k in c.all_keys() {
            for g in self.source.children_of(child) {
                self.collect_vanished(tree, &g.name, &k, gone);
            }
            gone.deletes.push((child.to_owned(), k));
        }
    }

    /// The delete events and cursor tombstones of `gone`.
    fn vanished_outs(&self, gone: &Vanished, stamp: i64, partition: i32, outs: &mut Vec<Out>) {
        let landing = self.names.landing();
        for (stream, key) in &gone.deletes {
            let event = serde_json::json!({
                "type": "deleted", "stream": stream, "entity_id": key, "seq": stamp, "data": null,
            });
            let h = LandingHeaders::mapped_event(
                &self.source.name,
                stream,
                "parent-child",
                &format!("{stream}:{key}:{stamp}"),
                stamp,
                "delete",
            );
            outs.push(Out {
                topic: landing.clone(),
                key: key.clone().into_bytes(),
                payload: Some(Bytes::from(event.to_string())),
                headers: h.with(headers::KIND, Kind::Event.as_str()).build(),
                partition: None,
            });
        }
        for (child, key) in &gone.cursors {
            outs.push(Out {
                topic: self.names.cursors(),
                key: child_key(&self.source.name, child, key).into_bytes(),
                payload: None,
                headers: Headers::new().build(),
                partition: Some(partition),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_read_deletes_what_it_no_longer_lists() {
        let mut c = ChildCursor::begin("comments", "7", 1, None);
        c.saw(["a", "b", "c"]);
        assert!(c.finish().is_empty());
        let mut next = ChildCursor::begin("comments", "7", 2, Some(&c));
        next.saw(["a", "c", "d"]);
        assert_eq!(next.finish(), vec!["b".to_owned()]);
        assert_eq!(next.last, vec!["a", "c", "d"]);
    }

    #[test]
    fn a_read_given_up_half_way_counts_its_children_as_landed() {
        let mut c = ChildCursor::begin("comments", "7", 1, None);
        c.saw(["a"]);
        c.finish();
        let mut half = ChildCursor::begin("comments", "7", 2, Some(&c));
        half.saw(["x"]);
        // The parent changed again before the read ended: the next read starts over, and
        // deletes `x` too if it no longer lists it.
        let mut again = ChildCursor::begin("comments", "7", 3, Some(&half));
        again.saw(["a"]);
        assert_eq!(again.finish(), vec!["x".to_owned()]);
        assert_eq!(half.all_keys(), vec!["a".to_owned(), "x".to_owned()]);
    }

    #[test]
    fn untracked_children_delete_nothing() {
        let mut c = ChildCursor::begin("comments", "7", 1, None);
        let many: Vec<String> = (0..=MAX_TRACKED_KEYS).map(|i| i.to_string()).collect();
        c.saw(many.iter().map(String::as_str));
        assert!(c.untracked);
        assert!(c.finish().is_empty());
        let mut next = ChildCursor::begin("comments", "7", 2, Some(&c));
        next.saw(["1"]);
        assert!(next.finish().is_empty());
    }
}
