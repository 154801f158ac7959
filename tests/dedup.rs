//! Issue 6: the dedup stage on the real broker, fed synthetic valid-topic records (the
//! valid-topic contract, written here by a transactional producer), so these tests do not
//! depend on the validate stage.
//!
//! What every test checks at the end, on the curated topic read with read_committed:
//! - the last record per key is the largest stamp (version, delete, content hash) ever
//!   committed to the valid topic for it: its value, or a tombstone;
//! - the stamps emitted per key are strictly increasing (so nothing is emitted twice and no
//!   stale or identical record is emitted);
//! - every output carries `intake.version`, `intake.hash` and `intake.op`, and lands in the
//!   partition its key has in the valid topic.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use intake::config::Config;
use intake::dedup::{Stamp, content_hash};
use intake::headers::{self, Headers};
use intake::kafka::{Outgoing, TxnProducer};
use intake::topics::TopicNames;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use support::*;

const SOURCE: &str = "src";
const STREAM: &str = "items";
/// Partitions of a valid topic (topics/topics.toml, per_stream).
const PARTITIONS: usize = 4;
/// Uncommitted input records on a victim's partitions that count as work in flight (a
/// drained partition counts its last transaction marker).
const IN_FLIGHT: i64 = 2;

/// One valid-topic record of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Valid {
    Upsert {
        key: String,
        version: i64,
        value: Vec<u8>,
    },
    Delete {
        key: String,
        version: i64,
    },
    Begin {
        sync_id: String,
        full: bool,
    },
    End {
        sync_id: String,
        full: bool,
    },
}

impl Valid {
    /// An upsert whose value is a (fake) Confluent-framed Avro body that depends only on key,
    /// version and `variant`: equal (key, version, variant) means equal bytes, equal hash.
    fn upsert(key: &str, version: i64, variant: u8) -> Self {
        let mut value = vec![0, 0, 0, 0, 1];
        value.extend_from_slice(format!("{key}@{version}#{variant}").as_bytes());
        Valid::Upsert {
            key: key.into(),
            version,
            value,
        }
    }

    fn delete(key: &str, version: i64) -> Self {
        Valid::Delete {
            key: key.into(),
            version,
        }
    }

    /// The key and stamp of a data record.
    fn stamp(&self) -> Option<(&str, Stamp)> {
        match self {
            Valid::Upsert {
                key,
                version,
                value,
            } => Some((key, Stamp::upsert(*version, content_hash(value)))),
            Valid::Delete { key, version } => Some((key, Stamp::delete(*version))),
            _ => None,
        }
    }
}

/// Writes valid-topic records in transactions, as validate would.
struct ValidWriter {
    producer: TxnProducer,
    topic: String,
    partitions: i32,
}

impl ValidWriter {
    fn new(cfg: &Config) -> Self {
        let producer = kafka(cfg).txn_producer(&unique("valid-writer")).unwrap();
        producer.init().unwrap();
        let topic = TopicNames::from_config(cfg).valid(SOURCE, STREAM);
        Self {
            producer,
            topic,
            partitions: 4,
        }
    }

    fn send_all(&self, recs: &[Valid]) {
        for r in recs {
            let common = Headers::new()
                .with(headers::SOURCE, SOURCE)
                .with(headers::STREAM, STREAM)
                .with(headers::FETCHED_AT, headers::now_rfc3339())
                .with(headers::ORIGIN, "test/0/0");
            match r {
                Valid::Upsert {
                    key,
                    version,
                    value,
                } => {
                    let h = common
                        .with(headers::OP, "upsert")
                        .with(headers::VERSION, version.to_string())
                        .with(headers::HASH, format!("{:016x}", content_hash(value)))
                        .with(headers::SYNC_ID, "sync-x");
                    self.send(Some(key.as_bytes()), Some(value), h, None);
                }
                Valid::Delete { key, version } => {
                    let h = common
                        .with(headers::OP, "delete")
                        .with(headers::VERSION, version.to_string())
                        .with(headers::HASH, "0000000000000000")
                        .with(headers::SYNC_ID, "sync-x");
                    self.send(Some(key.as_bytes()), None, h, None);
                }
                Valid::Begin { sync_id, full } | Valid::End { sync_id, full } => {
                    let kind = if matches!(r, Valid::Begin { .. }) {
                        "sync-begin"
                    } else {
                        "sync-end"
                    };
                    for p in 0..self.partitions {
                        let h = Headers::new()
                            .with(headers::SOURCE, SOURCE)
                            .with(headers::STREAM, STREAM)
                            .with(headers::KIND, kind)
                            .with(headers::SYNC_ID, sync_id)
                            .with(headers::MODE, if *full { "full" } else { "incremental" });
                        self.send(None, None, h, Some(p));
                    }
                }
            }
        }
    }

    fn send(&self, key: Option<&[u8]>, payload: Option<&[u8]>, h: Headers, partition: Option<i32>) {
        self.producer
            .send(Outgoing {
                topic: &self.topic,
                key,
                payload,
                headers: h.build(),
                partition,
            })
            .unwrap();
    }

    /// Writes `recs` in one committed transaction.
    fn commit(&self, recs: &[Valid]) {
        self.producer.begin().unwrap();
        self.send_all(recs);
        self.producer.commit().unwrap();
    }

    /// Writes `recs` in one aborted transaction: read_committed consumers never see them.
    fn abort(&self, recs: &[Valid]) {
        self.producer.begin().unwrap();
        self.send_all(recs);
        self.producer.flush().unwrap();
        self.producer.abort().unwrap();
    }
}

/// A stream block for the test config.
fn stream_config(detect_deletes: bool) -> String {
    keyed_source(
        SOURCE,
        "",
        &[(STREAM, &format!("detect_deletes = {detect_deletes}"))],
    )
}

/// The dedup stage running in this process.
struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), intake::dedup::stage::DedupError>>,
}

impl InProcess {
    fn start(cfg: &Arc<Config>) -> Self {
        let (stop, shutdown) = stop_signal();
        Self {
            stop,
            task: tokio::spawn(intake::dedup::stage::run(cfg.clone(), shutdown)),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("dedup stops")
            .unwrap()
            .unwrap();
    }
}

/// A curated record's stamp, from its headers (which every output must carry).
fn curated_stamp(r: &Rec) -> Stamp {
    let version: i64 = r
        .header("intake.version")
        .expect("intake.version on every output")
        .parse()
        .unwrap();
    let hash = u64::from_str_radix(
        r.header("intake.hash")
            .expect("intake.hash on every output"),
        16,
    )
    .unwrap();
    match r.header("intake.op").expect("intake.op on every output") {
        "delete" => {
            assert_eq!(r.value, None, "a delete is a tombstone");
            assert_eq!(hash, 0);
            Stamp::delete(version)
        }
        "upsert" => {
            assert_eq!(
                hash,
                content_hash(r.value.as_deref().expect("an upsert has a value")),
                "hash header matches"
            );
            Stamp::upsert(version, hash)
        }
        other => panic!("intake.op {other}"),
    }
}

/// The curated topic: per key, the stamps in output order and the last record.
struct Curated {
    emitted: BTreeMap<String, Vec<Stamp>>,
    last: BTreeMap<String, Rec>,
    partition: BTreeMap<String, i32>,
}

fn read_curated(cfg: &Config) -> Curated {
    let topic = TopicNames::from_config(cfg).curated(SOURCE, STREAM);
    let mut c = Curated {
        emitted: BTreeMap::new(),
        last: BTreeMap::new(),
        partition: BTreeMap::new(),
    };
    let mut recs = read_all(&topic, "read_committed");
    recs.sort_by_key(|r| (r.partition, r.offset));
    for r in recs {
        let key = r.key_str().to_owned();
        let p = *c.partition.entry(key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "{key}: one key, one partition");
        c.emitted
            .entry(key.clone())
            .or_default()
            .push(curated_stamp(&r));
        c.last.insert(key, r);
    }
    c
}

/// The largest stamp per key, and its record, over `recs`.
fn expected(recs: &[Valid]) -> BTreeMap<String, (Stamp, Option<Vec<u8>>)> {
    let mut out: BTreeMap<String, (Stamp, Option<Vec<u8>>)> = BTreeMap::new();
    for r in recs {
        let Some((key, stamp)) = r.stamp() else {
            continue;
        };
        let value = match r {
            Valid::Upsert { value, .. } => Some(value.clone()),
            _ => None,
        };
        match out.get(key) {
            Some((s, _)) if *s >= stamp => {}
            _ => {
                out.insert(key.to_owned(), (stamp, value));
            }
        }
    }
    out
}

/// Whether the curated topic's last record per key is exactly `want`.
fn matches(c: &Curated, want: &BTreeMap<String, (Stamp, Option<Vec<u8>>)>) -> bool {
    c.last.len() == want.len()
        && want.iter().all(|(k, (stamp, value))| {
            c.last
                .get(k)
                .is_some_and(|r| curated_stamp(r) == *stamp && r.value == *value)
        })
}

/// Polls the curated topic until it matches `want`; panics with the differences at the deadline.
async fn converge(
    cfg: &Config,
    want: &BTreeMap<String, (Stamp, Option<Vec<u8>>)>,
    within: Duration,
) -> Curated {
    let deadline = Instant::now() + within;
    loop {
        let c = read_curated(cfg);
        if matches(&c, want) {
            return c;
        }
        if Instant::now() > deadline {
            let diff: Vec<String> = want
                .iter()
                .filter(|(k, (s, _))| c.last.get(*k).map(curated_stamp) != Some(*s))
                .take(10)
                .map(|(k, (s, _))| {
                    format!(
                        "{k}: want {s:?}, have {:?}",
                        c.last.get(k).map(curated_stamp)
                    )
                })
                .collect();
            panic!(
                "curated topic did not converge: {} keys, want {}; first differences: {diff:#?}",
                c.last.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts strictly increasing stamps per key.
fn assert_strictly_increasing(c: &Curated) {
    for (k, stamps) in &c.emitted {
        assert!(
            stamps.windows(2).all(|w| w[0] < w[1]),
            "{k}: emitted stamps not strictly increasing: {stamps:?}"
        );
    }
}

/// Key → partition in the valid topic, to check that outputs stay in their key's partition.
fn valid_partitions(cfg: &Config) -> HashMap<String, i32> {
    let topic = TopicNames::from_config(cfg).valid(SOURCE, STREAM);
    read_all(&topic, "read_committed")
        .into_iter()
        .filter(|r| r.key.is_some())
        .map(|r| (r.key_str().to_owned(), r.partition))
        .collect()
}

/// The emissions a correct dedup makes per key for deliveries in this order: the running
/// maxima. (One producer and one key per partition keep the delivery order per key.)
fn running_maxima(order: &[Valid]) -> BTreeMap<String, Vec<Stamp>> {
    let mut out: BTreeMap<String, Vec<Stamp>> = BTreeMap::new();
    for r in order {
        let Some((key, stamp)) = r.stamp() else {
            continue;
        };
        let e = out.entry(key.to_owned()).or_default();
        if e.last().is_none_or(|last| stamp > *last) {
            e.push(stamp);
        }
    }
    out
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn with_deadline<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

/// [`converge`] on `want` within 60 s, under [`with_deadline`] (its failure naming `what`).
async fn converged(
    what: &str,
    cfg: &Config,
    want: &BTreeMap<String, (Stamp, Option<Vec<u8>>)>,
) -> Curated {
    with_deadline(what, converge(cfg, want, Duration::from_secs(60))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_duplicated_versions_keep_the_largest_per_key() {
    let cfg = Arc::new(config(&stream_config(false)));
    apply_topics(&cfg).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);

    // 400 keys, versions 1..=6 each; a quarter get an explicit delete (some resurrected by a
    // later version); 20 keys get two contents at their top version (the larger hash wins).
    let mut versions = Vec::new();
    for k in 0..400 {
        let key = format!("cus_{k:05}");
        for v in 1..=6 {
            versions.push(Valid::upsert(&key, v, 0));
        }
        if k % 4 == 0 {
            versions.push(Valid::delete(&key, if k % 8 == 0 { 6 } else { 3 }));
        }
        if k % 20 == 1 {
            versions.push(Valid::upsert(&key, 6, 1));
        }
    }
    // Every version delivered one to three times, in a random order.
    let mut order: Vec<Valid> = versions
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.clone(), rng.random_range(1..=3)))
        .collect();
    order.shuffle(&mut rng);
    let want = expected(&versions);

    let writer = Arc::new(
        blocking({
            let cfg = cfg.clone();
            move || ValidWriter::new(&cfg)
        })
        .await,
    );
    let (first, second) = order.split_at(order.len() / 2);
    let dedup = InProcess::start(&cfg);
    for chunk in first.chunks(300) {
        let (w, chunk) = (writer.clone(), chunk.to_vec());
        blocking(move || w.commit(&chunk)).await;
    }
    // Versions above everything, in an aborted transaction: never visible, never emitted.
    let aborted: Vec<Valid> = (0..50)
        .map(|k| Valid::upsert(&format!("cus_{k:05}"), 99, 0))
        .collect();
    blocking({
        let w = writer.clone();
        move || w.abort(&aborted)
    })
    .await;
    // A record that breaks the contract (no version) goes to the DLQ and changes nothing.
    blocking({
        let w = writer.clone();
        move || {
            w.producer.begin().unwrap();
            let h = Headers::new()
                .with(headers::OP, "upsert")
                .with(headers::HASH, "0000000000000001");
            w.send(Some(b"cus_00000"), Some(b"\0\0\0\0\x01bad"), h, None);
            w.producer.commit().unwrap();
        }
    })
    .await;
    converged("first half", &cfg, &expected(first)).await;

    // Restart: the second half is decided against the state restored from the curated topic.
    dedup.stop().await;
    for chunk in second.chunks(300) {
        let (w, chunk) = (writer.clone(), chunk.to_vec());
        blocking(move || w.commit(&chunk)).await;
    }
    let dedup = InProcess::start(&cfg);
    let curated = converged("second half", &cfg, &want).await;
    dedup.stop().await;

    assert_eq!(want.len(), 400);
    assert_strictly_increasing(&curated);
    // Exactly the running maxima were emitted: no stale, identical or duplicate output, and a
    // restart in the middle changed nothing.
    assert_eq!(curated.emitted, running_maxima(&order));
    let emitted: usize = curated.emitted.values().map(Vec::len).sum();
    assert!(
        emitted < order.len() / 2,
        "{emitted} outputs for {} inputs",
        order.len()
    );
    let partitions = valid_partitions(&cfg);
    for (k, p) in &curated.partition {
        assert_eq!(
            partitions[k], *p,
            "{k}: curated partition = valid partition"
        );
    }
    let tombstones = curated.last.values().filter(|r| r.value.is_none()).count();
    assert_eq!(
        tombstones, 50,
        "keys deleted at their top version stay deleted"
    );

    let dlq = read_all(&TopicNames::from_config(&cfg).dlq(), "read_committed");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].header("dlq.stage"), Some("dedup"));
    assert_eq!(dlq[0].header("dlq.error.kind"), Some("contract_violation"));
    assert!(
        dlq[0]
            .header("dlq.error.detail")
            .unwrap()
            .contains("intake.version")
    );
    assert_eq!(dlq[0].value.as_deref(), Some(&b"\0\0\0\0\x01bad"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_tombstones_unseen_keys_and_incremental_syncs_never_do() {
    let cfg = Arc::new(config(&stream_config(true)));
    apply_topics(&cfg).await;
    let writer = Arc::new(
        blocking({
            let cfg = cfg.clone();
            move || ValidWriter::new(&cfg)
        })
        .await,
    );
    let key = |k: usize| format!("cus_{k:05}");
    let mut all = Vec::new();
    let dedup = InProcess::start(&cfg);
    let commit = |recs: Vec<Valid>| {
        let w = writer.clone();
        blocking(move || w.commit(&recs))
    };
    let begin = |id: &str, full| Valid::Begin {
        sync_id: id.into(),
        full,
    };
    let end = |id: &str, full| Valid::End {
        sync_id: id.into(),
        full,
    };

    // 100 keys at version 1.
    let backfill: Vec<Valid> = (0..100).map(|k| Valid::upsert(&key(k), 1, 0)).collect();
    all.extend(backfill.clone());
    commit(backfill).await;
    converged("backfill", &cfg, &expected(&all)).await;

    // An incremental sync that sees 10 keys: it deletes nothing.
    let mut inc = vec![begin("inc-1", false)];
    inc.extend((0..10).map(|k| Valid::upsert(&key(k), 2, 0)));
    inc.push(end("inc-1", false));
    all.extend(inc.clone());
    commit(inc).await;
    converged("incremental", &cfg, &expected(&all)).await;

    // A full sync over two transactions that sees keys 0..60 (new, identical and stale
    // versions all count as seen) and an explicit delete of key 5: keys 60..100 are deleted.
    let mut full = vec![begin("full-1", true)];
    full.extend((0..30).map(|k| Valid::upsert(&key(k), if k < 10 { 2 } else { 3 }, 0)));
    commit(full.clone()).await;
    let mut rest: Vec<Valid> = (30..60)
        .map(|k| Valid::upsert(&key(k), if k < 45 { 1 } else { 0 }, 0))
        .collect();
    rest.push(Valid::delete(&key(5), 4));
    rest.push(end("full-1", true));
    full.extend(rest.clone());
    commit(rest).await;
    all.extend(full);
    let mut want = expected(&all);
    for k in 60..100 {
        want.insert(key(k), (Stamp::delete(1), None));
    }
    let c = converged("full sync", &cfg, &want).await;
    for k in 60..100 {
        let r = &c.last[&key(k)];
        assert_eq!(
            r.header("intake.version"),
            Some("1"),
            "a sync tombstone carries the stored version"
        );
        assert_eq!(r.header("intake.sync_id"), Some("full-1"));
        assert_eq!(
            c.emitted[&key(k)].len(),
            2,
            "{}: one upsert, one tombstone",
            key(k)
        );
    }
    let k5 = &c.emitted[&key(5)];
    assert_eq!(
        k5[k5.len() - 2..],
        [
            Stamp::upsert(2, content_hash(b"\0\0\0\0\x01cus_00005@2#0")),
            Stamp::delete(4)
        ]
    );
    assert_eq!(
        k5.len(),
        3,
        "v1, v2, then the explicit delete; not tombstoned again by the sync"
    );
    assert_strictly_increasing(&c);

    // The version a sync deleted stays deleted; a higher one resurrects the key. A sync-end
    // without its begin deletes nothing.
    let after = vec![
        Valid::upsert(&key(60), 1, 0),
        Valid::upsert(&key(61), 2, 0),
        end("never-begun", true),
    ];
    commit(after.clone()).await;
    want.insert(
        key(61),
        (
            Stamp::upsert(2, content_hash(b"\0\0\0\0\x01cus_00061@2#0")),
            Some(b"\0\0\0\0\x01cus_00061@2#0".to_vec()),
        ),
    );
    let c = converged("resurrect", &cfg, &want).await;
    assert_eq!(
        c.emitted[&key(60)].len(),
        2,
        "the stale version 1 of a deleted key is not emitted"
    );

    // The documented limit: a restart between a full sync's begin and end loses its seen
    // marks, so its end deletes nothing (late, never wrong).
    commit(vec![begin("full-2", true), Valid::upsert(&key(0), 3, 0)]).await;
    want.insert(
        key(0),
        (
            Stamp::upsert(3, content_hash(b"\0\0\0\0\x01cus_00000@3#0")),
            Some(b"\0\0\0\0\x01cus_00000@3#0".to_vec()),
        ),
    );
    converged("mid-sync", &cfg, &want).await;
    dedup.stop().await;
    let dedup = InProcess::start(&cfg);
    commit(vec![end("full-2", true)]).await;
    // And a complete full sync after the restart works again: only key 0 and the resurrected
    // key 61 are seen, so every other live key is deleted.
    commit(vec![
        begin("full-3", true),
        Valid::upsert(&key(0), 3, 0),
        Valid::upsert(&key(61), 2, 0),
        end("full-3", true),
    ])
    .await;
    for (k, (stamp, value)) in want.iter_mut() {
        if !stamp.is_delete() && k != &key(0) && k != &key(61) {
            *stamp = Stamp::delete(stamp.version());
            *value = None;
        }
    }
    let c = converged("after restart", &cfg, &want).await;
    dedup.stop().await;
    assert_strictly_increasing(&c);
    let live = c.last.values().filter(|r| r.value.is_some()).count();
    assert_eq!(live, 2);
    assert!(
        c.last
            .values()
            .all(|r| r.header("intake.sync_id") != Some("full-2")),
        "full-2 deleted nothing"
    );
}

/// A transaction the previous owner committed just before the hand-over can still be pending
/// on the curated topic (its markers are written after the commit returns). The restore must
/// wait for it: a state restored without its records would emit an older version after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_waits_for_a_pending_transaction_of_the_previous_owner() {
    let cfg = Arc::new(config(&stream_config(false)));
    apply_topics(&cfg).await;
    let names = TopicNames::from_config(&cfg);
    let writer = Arc::new(
        blocking({
            let cfg = cfg.clone();
            move || ValidWriter::new(&cfg)
        })
        .await,
    );
    let up = |key: &str, version: i64| match Valid::upsert(key, version, 0) {
        Valid::Upsert { value, .. } => {
            let h = Headers::new()
                .with(headers::OP, "upsert")
                .with(headers::VERSION, version.to_string())
                .with(headers::HASH, format!("{:016x}", content_hash(&value)));
            (value, h)
        }
        _ => unreachable!(),
    };

    // The "previous owner" writes version 5 of k to curated partition 0 and has not committed.
    let owner = kafka(&cfg).txn_producer(&unique("old-owner")).unwrap();
    let curated = names.curated(SOURCE, STREAM);
    let owner = blocking(move || {
        owner.init().unwrap();
        owner.begin().unwrap();
        let (value, h) = up("k", 5);
        owner
            .send(Outgoing {
                topic: &curated,
                key: Some(b"k"),
                payload: Some(&value),
                headers: h.build(),
                partition: Some(0),
            })
            .unwrap();
        owner.flush().unwrap();
        owner
    })
    .await;
    let dedup = InProcess::start(&cfg);
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocking(move || owner.commit().unwrap()).await;

    // Version 3 of k is stale against the restored version 5; k2 shows the stage consumed.
    blocking({
        let w = writer.clone();
        move || {
            w.producer.begin().unwrap();
            for (key, version) in [("k", 3), ("k2", 1)] {
                let (value, h) = up(key, version);
                w.send(Some(key.as_bytes()), Some(&value), h, Some(0));
            }
            w.producer.commit().unwrap();
        }
    })
    .await;
    let want: BTreeMap<String, (Stamp, Option<Vec<u8>>)> = [("k", 5), ("k2", 1)]
        .into_iter()
        .map(|(k, v)| {
            let (value, _) = up(k, v);
            (
                k.to_owned(),
                (Stamp::upsert(v, content_hash(&value)), Some(value)),
            )
        })
        .collect();
    let c = converged("restore", &cfg, &want).await;
    dedup.stop().await;
    assert_eq!(
        c.emitted["k"].len(),
        1,
        "version 3 was not emitted after version 5"
    );
}

/// Crash and scale test: the real `intake dedup` binary in child processes, SIGKILLed 24 times
/// at random moments while a producer keeps writing random versions (out of order,
/// duplicated, 5 % deletes) of 1 000 keys, scaled from one process to three and back to one.
///
/// Each process has its own `INTAKE_INSTANCE_ID`, reused by its restart: the stage derives its
/// transactional id and its static group membership from it, so the restart fences the dead
/// incarnation's open transaction and takes its partitions back at once. Every kill lands
/// while its process consumes (after it restored state, 0.3–2 s later). Scaling up is a
/// cooperative rebalance (the running process commits and hands partitions over); scaling down
/// kills two processes for good, so their partitions move after the session time-out.
///
/// At the end the curated topic holds exactly the largest stamp per key, and the stamps
/// emitted per key are strictly increasing. `CRASH_SEED=<n>` replays one kill schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_scaling_keep_exactly_the_largest_version_per_key() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use support::proc::{self, Proc};

    let seed = crash_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let base = config_text(&stream_config(false));
    let cfg = Arc::new(Config::from_toml(&base).unwrap());
    apply_topics(&cfg).await;
    let dir = support::test_tmp().join(unique("intake-dedup-crash-"));
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("logs in {}", dir.display());

    /// The processes by instance id; SIGKILLed on drop so a failing test leaves none behind.
    /// What a process owns and has left to do is asked of the broker (the group's assignment
    /// and committed offsets), never read from its log.
    struct Fleet {
        dir: std::path::PathBuf,
        config: std::path::PathBuf,
        lives: BTreeMap<String, Proc>,
        kills: usize,
        /// Kills that found the victim with work in flight: valid records on its partitions
        /// that it had not committed as processed.
        hits: usize,
        started: usize,
        group: String,
        view: support::group::GroupView,
        /// The member id of each instance's killed life (its next life joins under a new one).
        killed_member: BTreeMap<String, String>,
        /// Per kill: victim, its partitions, uncommitted input records on them after the kill.
        log: Vec<(String, usize, i64)>,
    }
    impl Fleet {
        fn spawn(&mut self, id: &str) {
            self.started += 1;
            let log = self.dir.join(format!("{:02}-{id}.log", self.started));
            let p = proc::intake(&["dedup"], log)
                .config(&self.config)
                .env("INTAKE_INSTANCE_ID", id)
                .spawn();
            self.lives.insert(id.to_owned(), p);
        }

        /// The member id and partitions of the current life of `id`, once it has joined the
        /// stable group and owns at least `min` partitions.
        fn owned(&self, id: &str, min: usize) -> Option<(String, Vec<support::group::Tp>)> {
            let (member, tps) = self.view.owned_by(&format!("{}-{id}", self.group))?;
            (self.killed_member.get(id) != Some(&member) && tps.len() >= min)
                .then_some((member, tps))
        }

        /// Waits until the current life of `id` owns at least `min` partitions.
        fn joined(&mut self, id: &str, min: usize) -> (String, Vec<support::group::Tp>) {
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(o) = self.owned(id, min) {
                    return o;
                }
                assert!(
                    Instant::now() < until,
                    "{id} got no {min} partitions in 60 s; logs in {}",
                    self.dir.display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        fn kill(&mut self, id: &str) {
            let mut life = self.lives.remove(id).expect("running");
            life.kill(); // SIGKILL; panics unless the process was running and died of it
            self.kills += 1;
        }

        /// Lets `id` consume for a random moment after it got partitions, waits until its
        /// partitions hold work it has not committed, then SIGKILLs and restarts it. A
        /// restarted static member gets its partitions back at once. Returns whether the kill
        /// found work in flight (uncommitted input on its partitions right after it died).
        fn life(&mut self, rng: &mut rand_chacha::ChaCha8Rng, id: &str) -> bool {
            self.joined(id, 1);
            std::thread::sleep(Duration::from_millis(rng.random_range(300..2000)));
            let until = Instant::now() + Duration::from_secs(60);
            let (member, tps) = loop {
                if let Some((member, tps)) = self.owned(id, 1)
                    && self.view.backlog(&tps).is_some_and(|b| b > IN_FLIGHT)
                {
                    break (member, tps);
                }
                assert!(
                    Instant::now() < until,
                    "{id} never had work waiting on its partitions; logs in {}",
                    self.dir.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            self.kill(id);
            self.killed_member.insert(id.to_owned(), member);
            let after = self.view.backlog(&tps).unwrap_or(0);
            self.log.push((id.to_owned(), tps.len(), after));
            let hit = after > IN_FLIGHT;
            self.hits += usize::from(hit);
            self.spawn(id);
            hit
        }

        /// Lives of `id` (or of a random one of `ids`) until `n` kills found work in flight.
        fn lives_until(&mut self, rng: &mut rand_chacha::ChaCha8Rng, ids: &[&str], n: usize) {
            let (mut hits, mut kills) = (0, 0);
            while hits < n {
                assert!(
                    kills < 3 * n,
                    "only {hits} of {kills} kills of {ids:?} found work in flight: {:?}",
                    self.log
                );
                let id = ids[rng.random_range(0..ids.len())];
                hits += usize::from(self.life(rng, id));
                kills += 1;
            }
        }
    }

    // The producer: transactions of 50 random records until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let (cfg, stop) = (cfg.clone(), stop.clone());
        move || {
            let writer = ValidWriter::new(&cfg);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            let mut all = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Valid> = (0..50)
                    .map(|_| {
                        let key = format!("k{:04}", rng.random_range(0..1000));
                        let version = rng.random_range(1..=400);
                        if rng.random_bool(0.05) {
                            Valid::delete(&key, version)
                        } else {
                            Valid::upsert(&key, version, 0)
                        }
                    })
                    .collect();
                writer.commit(&batch);
                all.extend(batch);
                std::thread::sleep(Duration::from_millis(20));
            }
            all
        }
    });

    let started = Instant::now();
    let config = write_config(&dir, &base);
    let group = kafka(&cfg).group(intake::stage::Stage::Dedup);
    let mut fleet = Fleet {
        dir: dir.clone(),
        config,
        lives: BTreeMap::new(),
        kills: 0,
        hits: 0,
        started: 0,
        view: support::group::GroupView::new(&group),
        group,
        killed_member: BTreeMap::new(),
        log: Vec::new(),
    };
    let fleet = tokio::task::spawn_blocking(move || {
        // One process, killed until 7 kills found it with work in flight.
        fleet.spawn("d0");
        fleet.lives_until(&mut rng, &["d0"], 7);
        // Scale to three while d0 consumes: a cooperative rebalance moves partitions from d0
        // (which commits its open transaction first) to the newcomers. Then kills of a random
        // one until 10 found work in flight.
        fleet.joined("d0", 1);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        fleet.spawn("d1");
        fleet.spawn("d2");
        fleet.lives_until(&mut rng, &["d0", "d1", "d2"], 10);
        // Back to one: d1 and d2 die for good while consuming; d0 takes their partitions over
        // after the session time-out (it owns all of them), consumes them, and is killed until
        // 5 more kills found work in flight.
        fleet.joined("d1", 1);
        fleet.joined("d2", 1);
        fleet.kill("d1");
        fleet.kill("d2");
        fleet.joined("d0", PARTITIONS);
        fleet.lives_until(&mut rng, &["d0"], 5);
        fleet
    })
    .await
    .unwrap();
    assert!(
        fleet.hits >= 22,
        "{} kills, {} with work in flight",
        fleet.kills,
        fleet.hits
    );
    let during = read_curated(&cfg)
        .emitted
        .values()
        .map(Vec::len)
        .sum::<usize>();
    stop.store(true, Ordering::Relaxed);
    let written = blocking(move || producer.join().unwrap()).await;
    eprintln!(
        "{} kills ({} with work in flight; victim, its partitions, uncommitted records after: {:?}), {} records written, {during} emitted during the kill phase, {:?}",
        fleet.kills,
        fleet.hits,
        fleet.log,
        written.len(),
        started.elapsed()
    );
    assert!(during > 0, "the stage made progress between kills");

    // The last process finishes the work.
    let want = expected(&written);
    let curated = with_deadline(
        "convergence",
        converge(&cfg, &want, Duration::from_secs(80)),
    )
    .await;
    drop(fleet);
    assert_strictly_increasing(&curated);
    let partitions = valid_partitions(&cfg);
    for (k, p) in &curated.partition {
        assert_eq!(
            partitions[k], *p,
            "{k}: curated partition = valid partition"
        );
    }
    let emitted: usize = curated.emitted.values().map(Vec::len).sum();
    eprintln!(
        "{} keys, {emitted} outputs for {} inputs, {:?}",
        want.len(),
        written.len(),
        started.elapsed()
    );
    // The process logs are kept only when the test fails.
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("removing {}: {e}", dir.display());
    }
}

/// A static member that dies between the two rounds of a cooperative rebalance, and is
/// restarted under its instance id, must not strand the partitions it was giving up.
///
/// Round one of a cooperative rebalance tells the current owner which partitions to give up
/// and assigns them to nobody; the owner revokes them and rejoins, and round two assigns
/// them. Here the owner `x` (a consumer in the stage's group, in this process) is stopped
/// inside its revoke callback (so it never rejoins) and replaced, like a SIGKILLed process
/// restarted at once, by `x2` under the same `group.instance.id`. The broker hands a static
/// member that rejoins a stable group its old assignment without a rebalance, so nothing
/// asks for round two: the partitions `x` gave up stay with no member while `x2` lives.
///
/// The real `intake dedup` process `d1`, whose join started the rebalance, must get them
/// anyway (the stage notices partitions that no member owns and makes the group rebalance),
/// and the curated topic must then hold exactly the largest version per key of every
/// partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_given_up_by_a_member_killed_mid_rebalance_are_not_stranded() {
    use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Mutex, mpsc};

    /// Blocks the polling thread in its first revoke callback until released.
    struct StuckOnRevoke {
        entered: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<mpsc::Receiver<()>>,
    }
    impl rdkafka::ClientContext for StuckOnRevoke {}
    impl ConsumerContext for StuckOnRevoke {
        fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
            if let Rebalance::Revoke(_) = r
                && let Some(entered) = self.entered.lock().unwrap().take()
            {
                let _ = entered.send(());
                let _ = self.release.lock().unwrap().recv();
            }
        }
    }

    /// Polls `c` on a thread until `stop`; returns its partition count through `owned`.
    fn keep_polling<C: ConsumerContext + 'static>(
        c: BaseConsumer<C>,
        stop: Arc<AtomicBool>,
        owned: Arc<AtomicUsize>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
                if let Ok(a) = c.assignment() {
                    owned.store(a.count(), Ordering::Relaxed);
                }
            }
        })
    }

    let base = config_text(&stream_config(false));
    let cfg = Arc::new(Config::from_toml(&base).unwrap());
    apply_topics(&cfg).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let recs: Vec<Valid> = (0..400)
        .map(|i| Valid::upsert(&format!("k{:03}", i % 200), rng.random_range(1..50), 0))
        .collect();
    ValidWriter::new(&cfg).commit(&recs);
    let want = expected(&recs);

    let k = kafka(&cfg);
    let group = k.group(intake::stage::Stage::Dedup);
    let valid = TopicNames::from_config(&cfg).valid(SOURCE, STREAM);
    let dir = support::test_tmp().join(unique("intake-dedup-strand-"));
    std::fs::create_dir_all(&dir).unwrap();

    // x owns all four partitions.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let x = k
        .group_consumer(
            &group,
            Some("x"),
            StuckOnRevoke {
                entered: Mutex::new(Some(entered_tx)),
                release: Mutex::new(release_rx),
            },
        )
        .unwrap();
    x.subscribe(&[valid.as_str()]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let x_owned = Arc::new(AtomicUsize::new(0));
    let x_thread = keep_polling(x, stop.clone(), x_owned.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while x_owned.load(Ordering::Relaxed) < 4 {
        assert!(Instant::now() < deadline, "x never got the 4 partitions");
        std::thread::sleep(Duration::from_millis(100));
    }

    // d1 joins: round one asks x to give partitions up, and x stops inside that callback.
    let config = write_config(&dir, &base);
    let mut d1 = support::proc::intake(&["dedup"], dir.join("d1.log"))
        .config(&config)
        .env("INTAKE_INSTANCE_ID", "d1")
        .spawn();
    entered_rx
        .recv_timeout(Duration::from_secs(40))
        .expect("x was asked to give partitions up");

    // x "restarts": x2 under the same instance id takes x's place (x is fenced) and gets x's
    // round-one assignment back, without a rebalance.
    let x2 = k
        .group_consumer(&group, Some("x"), rdkafka::consumer::DefaultConsumerContext)
        .unwrap();
    x2.subscribe(&[valid.as_str()]).unwrap();
    let x2_owned = Arc::new(AtomicUsize::new(0));
    let x2_thread = keep_polling(x2, stop.clone(), x2_owned.clone());
    let stranded_at = Instant::now();

    // d1 must get partitions while x2 lives (x2 never leaves: it polls and heartbeats).
    // Judged by the broker's group coordinator: a member other than x2 owns partitions.
    let view = support::group::GroupView::new(&group);
    let ok = blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d1_owns = view.assignments().is_some_and(|a| {
                a.iter()
                    .any(|(member, parts)| !member.starts_with("x-") && !parts.is_empty())
            });
            if d1_owns || Instant::now() >= deadline {
                return d1_owns;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await;
    assert!(
        ok,
        "d1 got no partitions while the restarted x2 (owning {}) lived: stranded; logs in {}",
        x2_owned.load(Ordering::Relaxed),
        dir.display()
    );
    assert!(x2_owned.load(Ordering::Relaxed) < 4, "x2 got everything");
    assert!(
        d1.saw("nudging the group to rebalance"),
        "d1 got partitions without its group watch nudging; logs in {}",
        dir.display()
    );
    eprintln!(
        "d1 got partitions {:?} after x2 joined",
        stranded_at.elapsed()
    );

    // x2 dies for good; d1 takes its partitions after the session time-out and finishes.
    stop.store(true, Ordering::Relaxed);
    let _ = release_tx.send(());
    blocking(move || {
        x2_thread.join().unwrap();
        x_thread.join().unwrap();
    })
    .await;
    let curated = with_deadline(
        "convergence",
        converge(&cfg, &want, Duration::from_secs(80)),
    )
    .await;
    assert_strictly_increasing(&curated);
    d1.kill();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("removing {}: {e}", dir.display());
    }
}
