//! Issue 4, crash test: SIGKILL the fetch process at random moments, at least 20 times during
//! one backfill with the simulator's writer running; after a final run to completion,
//! committed landing holds every served (stream, id, version), no page twice, and no cursor
//! ahead of its data.
//!
//! How:
//! - An in-process simulator with the background writer on (creates, updates, deletes,
//!   appends at `WRITE_RATE`/s) and every answer slowed, so that one backfill of the three
//!   streams outlasts all the kills. Backdated writes are off: a backdated update is invisible
//!   to an incremental sync by design and is the subject of its own tests in `tests/fetch.rs`.
//!   The customers and orders streams sync incrementally with no look-back window: the cursor alone must
//!   carry the next sync's `updated_since` right, including after the full backfill, during
//!   which the writer updates records the backfill has already read.
//! - The real `intake` binary in a child process, killed with SIGKILL (`Child::kill`) at a
//!   uniformly random moment 0.3–2.5 s after it starts. Most lives run `fetch --once` (no
//!   group: the new process fences the dead one's open transactions at once through the
//!   per-stream transactional ids). A few run long-running `fetch`, which joins the Kafka group
//!   `<prefix>-fetch` and starts its streams only once the group assigns it the token's quota
//!   partition; for those the random moment is counted from the assignment (a dead member's
//!   partition is reassigned only after `session.timeout.ms`, so killing them before that
//!   would exercise nothing).
//! - Then the writer is paused, the slowness removed, and `intake fetch --once` runs to
//!   completion: it finishes the interrupted backfill and runs one sync of its own.
//! - Checks, exact: every (id, version) of the simulator's final truth is in committed
//!   landing; no page landed twice and every sync's pages are contiguous from 0; every cursor
//!   record ever committed (the history of `intake.cursors`) is backed by landed pages
//!   `0..pages` of its sync; every completed sync's cursor counts exactly its landed pages and
//!   records; one `sync-begin` per sync and one `sync-end` per completed sync; the backfill
//!   completed only after the last kill (so every kill hit the same backfill); each stream
//!   ran exactly two syncs (the backfill and the final run's own).
//!
//! `CRASH_SEED=<n>` replays the same kill delays (printed at the start of every run).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use intake::fetch::cursor::CursorState;
use rand::{Rng, SeedableRng};
use support::e2e::{cursor_history, parse_time};
use support::proc::{self, Proc};
use support::*;

/// Lives that are killed. Every one of them is a SIGKILL of a running process.
const LIVES: usize = 24;
/// Lives that run long-running `intake fetch` (group member) instead of `--once`.
const GROUP_LIVES: [usize; 3] = [6, 13, 20];
/// Records per stream at start. The backfill must outlast every kill, and that is certain by
/// arithmetic, not by the machine's speed: every answer takes `SLOW_MS` and a stream's pages
/// come one after the other, so a life fetches at most `MAX_LIFE_MS / SLOW_MS` pages of a
/// stream, all lives together at most `LIVES * MAX_LIFE_MS / SLOW_MS` = 300 (plus the last
/// life's wait for progress, at most `PROGRESS_WAIT / SLOW_MS` = 100): 10 000 records are
/// 500 pages of 20.
const RECORDS: &str = "10000";
/// The longest a life lives before its kill (from its start, or a group member's assignment).
const MAX_LIFE_MS: u64 = 2500;
/// How long the last life may wait for every stream's backfill to have committed pages.
const PROGRESS_WAIT: Duration = Duration::from_secs(20);
/// Background writes per second (all streams).
const WRITE_RATE: &str = "50";
/// Delay of every simulator answer during the kill phase.
const SLOW_MS: &str = "200";
const STREAMS: [&str; 3] = ["customers", "orders", "events"];

fn sources(sim: &intake::sim::SimHandle) -> String {
    let mut s = sim_source_head(sim);
    // (name, path, pagination, pages per transaction, incremental)
    for (name, path, style, ppt, incremental) in [
        ("customers", "/v1/customers", "cursor", 1, true),
        ("orders", "/v1/orders", "link", 2, true),
        ("events", "/v1/events", "after", 3, false),
    ] {
        s.push_str(&sim_stream(
            name,
            path,
            style,
            20,
            &format!("pages_per_transaction = {ppt}\npoll_interval = \"1s\""),
        ));
        if incremental {
            // The default look-back (none): the cursor alone must be right.
            s.push_str("incremental = { param = \"updated_since\", field = \"/updated_at\" }\n");
        }
    }
    s
}

/// `intake fetch` (`--once`, or a long-running group member) logging to `log`.
fn spawn_fetch(cfg: &Path, once: bool, log: PathBuf) -> Proc {
    let mut p = proc::intake(&["fetch"], log).config(cfg);
    if once {
        p = p.arg("--once");
    }
    p.spawn()
}

/// Asks `check` every `every` until it answers `Some`, and returns that answer; fails the test
/// with `what` and the tail of `life`'s log if none came within `within`.
async fn poll_until<T>(
    within: Duration,
    every: Duration,
    what: &str,
    life: &Proc,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(answer) = check().await {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}\n{}", life.tail(30));
        tokio::time::sleep(every).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_during_a_backfill_loses_and_doubles_nothing() {
    let started = Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(crash_seed());

    let sim = sim(&[
        "--records",
        RECORDS,
        "--write-rate",
        WRITE_RATE,
        "--backdate-rate",
        "0",
        "--slow-rate",
        "1",
        "--slow-ms",
        SLOW_MS,
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&sources(&sim));
    let cfg_path = write_config(dir.path(), &text);
    let cfg = intake::config::Config::from_toml(&text).unwrap();
    apply_topics(&cfg).await;

    // --- the kill phase ------------------------------------------------------------------
    let mut kills_once = 0;
    let mut kills_group = 0;
    let mut last_kill = time::OffsetDateTime::now_utc();
    let fetch_group = std::sync::Arc::new(support::group::GroupView::new(
        &kafka(&cfg).group(intake::stage::Stage::Fetch),
    ));
    let mut members_seen = std::collections::HashSet::new();
    for i in 0..LIVES {
        let group = GROUP_LIVES.contains(&i);
        let log = dir.path().join(format!("life-{i:02}.log"));
        let mut life = spawn_fetch(&cfg_path, !group, log);
        let born = Instant::now();
        if group {
            // Count the random moment from the group's assignment: before it, the process
            // only waits for the previous (dead) member's session to expire. The broker's group
            // coordinator says when the new life is the member owning the quota partitions.
            let member = poll_until(
                Duration::from_secs(60),
                Duration::from_millis(200),
                &format!("life {i}: the group never assigned the quota partitions to it"),
                &life,
                async || {
                    let view = fetch_group.clone();
                    let seen = members_seen.clone();
                    tokio::task::spawn_blocking(move || {
                        let a = view.assignments()?;
                        let (member, parts) = a.into_iter().next()?;
                        (!seen.contains(&member) && !parts.is_empty()).then_some(member)
                    })
                    .await
                    .unwrap()
                },
            )
            .await;
            members_seen.insert(member);
        }
        let delay = Duration::from_millis(rng.random_range(300..=MAX_LIFE_MS));
        tokio::time::sleep(delay).await;
        if i == LIVES - 1 {
            // The last life dies only once every stream's backfill has committed pages during
            // the kill phase (checked below): made sure, not left to the random delays.
            poll_until(
                PROGRESS_WAIT,
                Duration::from_millis(500),
                "the backfill committed no page of some stream during the kill phase",
                &life,
                async || {
                    let history = tokio::task::spawn_blocking({
                        let cfg = cfg.clone();
                        move || cursor_history(&cfg)
                    })
                    .await
                    .unwrap();
                    STREAMS
                        .iter()
                        .all(|s| history.iter().any(|h| h.stream == *s && h.pages > 0))
                        .then_some(())
                },
            )
            .await;
        }
        if let Some(status) = life.try_wait() {
            panic!(
                "life {i} ({}) ended by itself ({status}) before its kill: the backfill must outlast every kill\n{}",
                if group { "group" } else { "once" },
                life.tail(30)
            );
        }
        // SIGKILL; panics unless the process died of it.
        let status = life.kill();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "life {i}"
        );
        last_kill = time::OffsetDateTime::now_utc();
        if group {
            kills_group += 1;
        } else {
            kills_once += 1;
        }
        println!(
            "life {i:2}: {:5} SIGKILL after {:>5} ms{}",
            if group { "group" } else { "once" },
            born.elapsed().as_millis(),
            if group {
                format!(" ({} ms after assignment)", delay.as_millis())
            } else {
                String::new()
            }
        );
    }
    let kill_phase = started.elapsed();
    assert_eq!(kills_once + kills_group, LIVES);
    const { assert!(LIVES >= 20) };

    // --- the final run to completion -----------------------------------------------------
    let paused = sim_admin(&sim, "/admin/pause").await;
    let r = reqwest::Client::new()
        .put(sim.url("/admin/faults"))
        .json(&serde_json::json!({ "slow_rate": 0.0 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let final_started = Instant::now();
    let final_log = dir.path().join("final.log");
    let out = {
        let mut run = proc::intake(&["fetch", "--once"], &final_log)
            .config(&cfg_path)
            .capture_stdout()
            .spawn();
        tokio::task::spawn_blocking(move || run.wait_output(Duration::from_secs(120)))
            .await
            .unwrap()
    };
    assert!(
        out.0.success(),
        "the final run failed ({})\n{}",
        out.0,
        proc::tail(&final_log, 30)
    );
    let final_run = final_started.elapsed();
    print!("final run ({:.1} s):\n{}", final_run.as_secs_f64(), out.1);

    // --- checks ----------------------------------------------------------------------------
    let truth = truth(&sim).await;
    assert_eq!(truth["paused"], true);
    assert_eq!(
        truth["writes"], paused["writes"],
        "no write after the pause"
    );
    let pages = landed_pages(&cfg).await;
    let landing = read_landing(&cfg);
    let history = cursor_history(&cfg);

    // (b) no page twice, and every sync's pages contiguous from 0.
    assert_pages_unique_and_contiguous(&pages);

    // Per (stream, sync): landed page count and record count.
    let mut landed: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for p in &pages {
        let e = landed
            .entry((p.stream.as_str(), p.sync_id.as_str()))
            .or_default();
        e.0 += 1;
        e.1 += p.records.len() as u64;
    }

    // No cursor ahead of its data: every cursor record ever committed is backed by landed
    // pages 0..pages of its sync with exactly its record count (pages are contiguous from 0,
    // so counting them is enough), and a completed sync's cursor counts every landed page.
    let mut seqs: BTreeMap<(&str, &str), BTreeSet<u64>> = BTreeMap::new();
    for p in &pages {
        seqs.entry((p.stream.as_str(), p.sync_id.as_str()))
            .or_default()
            .insert(p.seq);
    }
    let mut records_by_seq: BTreeMap<(&str, &str, u64), u64> = BTreeMap::new();
    for p in &pages {
        records_by_seq.insert(
            (p.stream.as_str(), p.sync_id.as_str(), p.seq),
            p.records.len() as u64,
        );
    }
    for c in &history {
        let key = (c.stream.as_str(), c.sync_id.as_str());
        let have = seqs.get(&key).map_or(0, |s| s.len() as u64);
        assert!(
            c.pages <= have,
            "{}: a committed cursor of sync {} counts {} pages but only {have} landed",
            c.stream,
            c.sync_id,
            c.pages
        );
        let recs: u64 = (0..c.pages)
            .map(|s| records_by_seq[&(key.0, key.1, s)])
            .sum();
        assert_eq!(
            c.records, recs,
            "{}: cursor of sync {} at page {}: records",
            c.stream, c.sync_id, c.pages
        );
        if c.complete {
            assert_eq!(
                c.pages, have,
                "{}: completed sync {} counts {} pages, {have} landed",
                c.stream, c.sync_id, c.pages
            );
        }
    }

    // Markers: one sync-begin per sync, one sync-end per completed sync.
    let mut begins: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut ends: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &landing {
        let k = (
            r.header("intake.stream").unwrap().to_owned(),
            r.header("intake.sync_id").unwrap().to_owned(),
        );
        match r.header("intake.kind") {
            Some("sync-begin") => *begins.entry(k).or_default() += 1,
            Some("sync-end") => *ends.entry(k).or_default() += 1,
            _ => {}
        }
    }
    assert!(
        begins.values().all(|n| *n == 1),
        "a sync began twice: {begins:?}"
    );
    assert!(
        ends.values().all(|n| *n == 1),
        "a sync ended twice: {ends:?}"
    );

    let names = intake::topics::TopicNames::from_config(&cfg);
    let keys: Vec<String> = STREAMS.iter().map(|s| format!("sim/{s}")).collect();
    let cursors = intake::fetch::stream::restore_cursors(&kafka(&cfg), &names, &keys)
        .await
        .unwrap();
    let mut total_pages = 0;
    let mut total_records = 0;
    let mut total_truth = 0;
    println!(
        "kills: {} ({kills_once} of `fetch --once`, {kills_group} of group members), kill phase {:.1} s",
        kills_once + kills_group,
        kill_phase.as_secs_f64()
    );
    for s in STREAMS {
        // (c) the committed cursor: complete, and exactly its sync's landed pages.
        let c = &cursors[&format!("sim/{s}")];
        assert!(c.complete, "{s}: the final cursor is complete");
        let (n_pages, n_records) = landed
            .get(&(s, c.sync_id.as_str()))
            .copied()
            .unwrap_or_default();
        assert_eq!(
            c.pages, n_pages,
            "{s}: the cursor counts the landed pages of its sync"
        );
        assert_eq!(
            c.records, n_records,
            "{s}: the cursor counts the landed records of its sync"
        );

        // Every sync of the stream completed; exactly two: the backfill, spanning every kill,
        // and the final run's own.
        let syncs: Vec<&CursorState> = {
            let mut seen = BTreeSet::new();
            history
                .iter()
                .filter(|h| h.stream == s && seen.insert(h.sync_id.clone()))
                .collect()
        };
        assert_eq!(
            syncs.len(),
            2,
            "{s}: the backfill and the final run's sync: {:?}",
            syncs.iter().map(|h| &h.sync_id).collect::<Vec<_>>()
        );
        for sync in &syncs {
            let k = (s.to_owned(), sync.sync_id.clone());
            assert_eq!(
                begins.get(&k),
                Some(&1),
                "{s} sync {}: one sync-begin",
                sync.sync_id
            );
            assert_eq!(
                ends.get(&k),
                Some(&1),
                "{s} sync {}: one sync-end",
                sync.sync_id
            );
        }
        let backfill = history
            .iter()
            .find(|h| h.stream == s && h.sync_id == syncs[0].sync_id && h.complete)
            .expect("the backfill completed");
        assert_eq!(backfill.mode, intake::fetch::cursor::Mode::Full);
        assert!(
            parse_time(&backfill.updated_at) > last_kill,
            "{s}: the backfill completed before the last kill"
        );
        let backfill_pages = landed[&(s, backfill.sync_id.as_str())].0;
        // How far the backfill got while processes were being killed: its committed cursor
        // records (one per transaction) written before the last kill.
        let during: Vec<&CursorState> = history
            .iter()
            .filter(|h| {
                h.stream == s
                    && h.sync_id == backfill.sync_id
                    && parse_time(&h.updated_at) <= last_kill
            })
            .collect();
        let pages_during = during.iter().map(|h| h.pages).max().unwrap_or(0);
        assert!(
            pages_during > 0,
            "{s}: the backfill made no progress while processes were being killed"
        );

        // (a) every (id, version) the simulator holds at the end landed.
        let want = truth_versions(&truth, s);
        let have: BTreeSet<(&str, u64)> = pages
            .iter()
            .filter(|p| p.stream == s)
            .flat_map(|p| p.records.iter().map(|(id, v)| (id.as_str(), *v)))
            .collect();
        let missing: Vec<(&String, &u64)> = want
            .iter()
            .filter(|(id, v)| !have.contains(&(id.as_str(), **v)))
            .collect();
        if !missing.is_empty() {
            let detail: Vec<String> = missing
                .iter()
                .take(5)
                .map(|(id, v)| {
                    let at = &truth["streams"][s]["live"][id.as_str()]["record"]["updated_at"];
                    let seen: Vec<u64> = have
                        .iter()
                        .filter(|(i, _)| i == id)
                        .map(|(_, v)| *v)
                        .collect();
                    format!("{id} v{v} (updated_at {at}; landed versions {seen:?})")
                })
                .collect();
            panic!(
                "{s}: {} of {} live (id, version) never landed; the final sync ({:?}) asked for updated_since {:?}; e.g. {detail:#?}",
                missing.len(),
                want.len(),
                c.mode,
                c.since
            );
        }

        let stream_pages = pages.iter().filter(|p| p.stream == s).count();
        let stream_records: usize = pages
            .iter()
            .filter(|p| p.stream == s)
            .map(|p| p.records.len())
            .sum();
        println!(
            "{s:>9}: {} live (id, version) in the truth, all landed; {stream_pages} pages / {stream_records} records landed; \
             backfill {backfill_pages} pages ({pages_during} committed in {} transactions during the kill phase), \
             final run's own sync {} pages ({:?}); {} cursor records committed",
            want.len(),
            during.len(),
            c.pages,
            c.mode,
            history.iter().filter(|h| h.stream == s).count(),
        );
        total_pages += stream_pages;
        total_records += stream_records;
        total_truth += want.len();
    }
    println!(
        "totals: {total_pages} pages, {total_records} records landed for {total_truth} live (id, version); {} writes by the simulator; \
         kill phase {:.1} s, final run {:.1} s, whole test {:.1} s",
        paused["writes"],
        kill_phase.as_secs_f64(),
        final_run.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
