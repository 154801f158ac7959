//! `intake status`: one screen with what an operator asks first.
//!
//! - **streams**: the committed cursor of every configured stream (mode, whether its sync is
//!   complete, last sync and last full sync, records landed; a windowed backfill in progress:
//!   its windows done, running and left);
//! - **quota per token, live**: the configured quota beside the state its owner last saved in
//!   `intake.quota` (owner, limit and pace in force, remaining count and reset the upstream
//!   announced, pause after a 429, age of the record);
//! - **oauth2 tokens**: per token id of an `oauth2` source, what its owner last recorded in
//!   `intake.tokens` (owner, rotations of the refresh token, access token expiry, and why its
//!   streams are paused, if they are) — never the tokens themselves;
//! - **groups**: members and state of every stage's consumer group; **lag** of the consuming
//!   stages (validate, dedup): the committed records between the group's committed offsets and
//!   the high watermarks, counted by reading them (exact) up to [`EXACT_LAG_SPAN`] offsets, and
//!   estimated from offsets beyond that;
//! - **dead letters** by error kind and by stream;
//! - **jobs** by state, with the sums of their record counts.
//!
//! Everything is read from Kafka (`read_committed`), so it works from any machine that reaches
//! the brokers, whether or not intake runs there. `--json` prints the same [`Status`] as one
//! JSON document for machines.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::Config;
use crate::contract::DeadLetter;
use crate::fetch::cursor::CursorState;
use crate::headers;
use crate::kafka::{Kafka, Reader, reader};
use crate::quota::state::QuotaRecord;
use crate::stage::Stage;
use crate::topics::TopicNames;

/// Beyond this many offsets behind, a group's lag is estimated from offsets instead of
/// counted record by record.
pub const EXACT_LAG_SPAN: i64 = 200_000;
/// Longest one topic read may take (open transactions are waited for up to this).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
const QUERY: Duration = Duration::from_secs(10);

/// The status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Cursor per stream (`source/stream`), None when the stream never synced.
    pub cursors: BTreeMap<String, Option<CursorState>>,
    /// Quota per token id: configured, and live from `intake.quota`.
    pub quotas: BTreeMap<String, TokenQuota>,
    /// OAuth 2.0 token state per token id of the `oauth2` sources (from `intake.tokens`).
    pub oauth: BTreeMap<String, OAuthStatus>,
    /// Every stage's consumer group: members and state.
    pub groups: Vec<GroupInfo>,
    /// Lag of the consuming stages' groups.
    pub lag: Vec<GroupLag>,
    /// DLQ records in total.
    pub dlq_total: u64,
    /// DLQ records by error kind.
    pub dlq_by_kind: BTreeMap<String, u64>,
    /// DLQ records by stream (`source/stream`).
    pub dlq_by_stream: BTreeMap<String, u64>,
    /// Jobs in the registry.
    pub jobs: JobCounts,
}

/// The quota of one token.
#[derive(Debug, Serialize, PartialEq)]
pub struct TokenQuota {
    /// Sources that use the token.
    pub sources: Vec<String>,
    /// Configured requests per window (None: the token has no configured quota).
    pub requests: Option<u32>,
    /// The configured window in milliseconds.
    pub per_ms: Option<u64>,
    /// `central` or `naive`.
    pub mode: Option<String>,
    /// The state its owner last saved, None when none was ever saved.
    pub live: Option<LiveQuota>,
}

/// An OAuth 2.0 token's recorded state (no secret in it).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct OAuthStatus {
    /// `client_credentials` or `refresh_token`.
    pub grant: String,
    /// The process that owns (or last owned) the token; None when nothing was recorded yet.
    pub owner: Option<String>,
    /// Refresh tokens rotated and committed so far.
    pub rotations: u64,
    /// When the owner last recorded the token (RFC 3339).
    pub updated_at: Option<String>,
    /// When the last access token expires (RFC 3339).
    pub access_expires_at: Option<String>,
    /// Why the token's streams are paused (a refused grant, a 401 with a fresh token).
    pub paused: Option<String>,
}

/// A token's saved state.
#[derive(Debug, Serialize, PartialEq)]
pub struct LiveQuota {
    /// The process that owns (or last owned) the token.
    pub owner: String,
    /// The limit in force per window: the configured one or a lower one the upstream announced.
    pub limit: u32,
    /// The pace in force, requests per second.
    pub requests_per_second: f64,
    /// The remaining count the upstream last announced.
    pub remaining: Option<u64>,
    /// When the upstream said its window resets (RFC 3339).
    pub reset_at: Option<String>,
    /// Paused until then after a 429 or an exhausted window (RFC 3339), if still in the future.
    pub paused_until: Option<String>,
    /// When the state was saved (RFC 3339); the owner saves it about every second while the
    /// token is busy, and on hand-over.
    pub updated_at: String,
    /// Milliseconds since then.
    pub age_ms: i64,
}

/// Members and state of a stage's group.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct GroupInfo {
    /// `fetch`, `validate`, `dedup`.
    pub stage: String,
    /// Group name.
    pub group: String,
    /// Processes in the group now.
    pub members: usize,
    /// The coordinator's group state (`Stable`, `Empty`, `Dead` for a group never used, ...).
    pub state: String,
}

/// Lag of one consumer group.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct GroupLag {
    /// `validate` or `dedup`.
    pub stage: String,
    /// Group name.
    pub group: String,
    /// Committed records the group has not consumed (from the beginning where it committed
    /// nothing yet). None when none of its input topics exists.
    pub lag: Option<i64>,
    /// Lag per input topic.
    pub by_topic: BTreeMap<String, i64>,
    /// Whether the lag was counted record by record (true) or estimated from offsets.
    pub exact: bool,
}

/// Jobs in the registry.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct JobCounts {
    /// Number of jobs.
    pub total: u64,
    /// Jobs by state (`landed`, `validating`, `validated`).
    pub by_state: BTreeMap<String, u64>,
    /// Records of every job, summed.
    pub records: crate::jobs::Counts,
}

/// Gathers the status.
///
/// # Errors
/// Kafka errors.
pub async fn gather(cfg: &Config) -> anyhow::Result<Status> {
    let kafka = Kafka::new(&cfg.kafka)?;
    let names = TopicNames::from_config(cfg);
    let keys: Vec<String> = crate::contract::stream_keys(cfg);
    let progress = crate::telemetry::spinner("reading cursors");
    let mut found = crate::fetch::stream::restore_cursors(&kafka, &names, &keys).await?;
    for c in found.values_mut() {
        crate::fetch::windows::progress(&kafka, &names, c).await?;
    }
    let cursors = keys
        .iter()
        .map(|k| (k.clone(), found.get(k).cloned()))
        .collect();

    if let Some(pb) = &progress {
        pb.set_message("reading the job registry");
    }
    let jobs = {
        let registry = crate::jobs::JobRegistry::restore(&kafka, &names.jobs()).await?;
        job_counts(&registry.all())
    };

    let k = kafka.clone();
    let cfg2 = cfg.clone();
    let pb = progress.clone();
    let blocking = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let names = TopicNames::from_config(&cfg2);
        let r = k.reader_consumer("status")?;
        if let Some(pb) = &pb {
            pb.set_message("reading the quota state");
        }
        let saved = read_latest::<QuotaRecord>(&r, &names.quota())?;
        let quotas = quotas(&cfg2, saved);
        let oauth = oauth(&cfg2, &r, &names.tokens())?;
        if let Some(pb) = &pb {
            pb.set_message("measuring lag");
        }
        let valid: Vec<String> = cfg2
            .sources
            .iter()
            .flat_map(|s| s.streams.iter().map(|st| names.valid(&s.name, &st.name)))
            .collect();
        let groups = [Stage::Fetch, Stage::Validate, Stage::Dedup]
            .into_iter()
            .map(|stage| group_info(&k, stage))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let lag = vec![
            group_lag(&k, &r, Stage::Validate, &[names.landing()])?,
            group_lag(&k, &r, Stage::Dedup, &valid)?,
        ];
        if let Some(pb) = &pb {
            pb.set_message("reading the DLQ");
        }
        let (dlq_total, dlq_by_kind, dlq_by_stream) = read_dlq(&r, &names.dlq(), pb.as_ref())?;
        Ok(Status {
            taken_at: headers::now_rfc3339(),
            cursors,
            quotas,
            oauth,
            groups,
            lag,
            dlq_total,
            dlq_by_kind,
            dlq_by_stream,
            jobs,
        })
    });
    let status = blocking.await??;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    Ok(status)
}

fn all_partitions(r: &Reader, topic: &str) -> anyhow::Result<Vec<i32>> {
    Ok((0..reader::partition_count(r, topic, QUERY)?).collect())
}

/// The latest JSON record per key of a compacted topic (`intake.quota`, `intake.tokens`), every
/// partition.
fn read_latest<T: serde::de::DeserializeOwned>(
    r: &Reader,
    topic: &str,
) -> anyhow::Result<BTreeMap<String, T>> {
    let partitions = all_partitions(r, topic)?;
    Ok(crate::quota::state::read_latest(
        r,
        topic,
        &partitions,
        READ_TIMEOUT,
    )?)
}

/// The recorded state of every `oauth2` token id of the config (the topic is read only when
/// there is one).
fn oauth(cfg: &Config, r: &Reader, topic: &str) -> anyhow::Result<BTreeMap<String, OAuthStatus>> {
    let grants: BTreeMap<&str, &'static str> = cfg
        .sources
        .iter()
        .filter_map(|s| match &s.auth {
            Some(crate::config::Auth::Oauth2(o)) => Some((
                s.token_id(),
                match o.grant {
                    crate::config::OAuth2Grant::ClientCredentials => "client_credentials",
                    crate::config::OAuth2Grant::RefreshToken => "refresh_token",
                },
            )),
            _ => None,
        })
        .collect();
    if grants.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut saved = read_latest::<crate::fetch::oauth::TokenRecord>(r, topic)?;
    Ok(grants
        .into_iter()
        .map(|(token, grant)| {
            let rec = saved.remove(token);
            (
                token.to_owned(),
                OAuthStatus {
                    grant: grant.to_owned(),
                    owner: rec.as_ref().map(|r| r.owner.clone()),
                    rotations: rec.as_ref().map_or(0, |r| r.rotations),
                    updated_at: rec.as_ref().map(|r| rfc3339_ms(r.updated_at)),
                    access_expires_at: rec
                        .as_ref()
                        .and_then(|r| r.access_expires_at)
                        .map(rfc3339_ms),
                    paused: rec.and_then(|r| r.paused),
                },
            )
        })
        .collect())
}

/// Configured quotas beside the saved state, per token id (tokens only seen in the topic, from
/// an older configuration, are shown too).
fn quotas(cfg: &Config, mut saved: BTreeMap<String, QuotaRecord>) -> BTreeMap<String, TokenQuota> {
    let now = unix_ms_now();
    let live = |r: QuotaRecord| LiveQuota {
        requests_per_second: if r.interval_ms > 0.0 {
            (1000.0 / r.interval_ms * 1000.0).round() / 1000.0
        } else {
            0.0
        },
        limit: r.limit,
        remaining: r.remaining,
        reset_at: r.reset_at.map(rfc3339_ms),
        paused_until: r.paused_until.filter(|p| *p > now).map(rfc3339_ms),
        updated_at: rfc3339_ms(r.updated_at),
        age_ms: now - r.updated_at,
        owner: r.owner,
    };
    let mut out: BTreeMap<String, TokenQuota> = BTreeMap::new();
    for s in &cfg.sources {
        let t = out
            .entry(s.token_id().to_owned())
            .or_insert_with(|| TokenQuota {
                sources: Vec::new(),
                requests: None,
                per_ms: None,
                mode: None,
                live: None,
            });
        t.sources.push(s.name.clone());
        if let Some(q) = &s.quota {
            t.requests = Some(q.requests);
            t.per_ms = Some(q.per.as_millis() as u64);
            t.mode = Some(if q.naive() { "naive" } else { "central" }.into());
        }
    }
    for (token, t) in &mut out {
        t.live = saved.remove(token).map(live);
    }
    for (token, r) in saved {
        out.insert(
            token,
            TokenQuota {
                sources: Vec::new(),
                requests: None,
                per_ms: None,
                mode: None,
                live: Some(live(r)),
            },
        );
    }
    out
}

fn group_info(kafka: &Kafka, stage: Stage) -> anyhow::Result<GroupInfo> {
    let group = kafka.group(stage);
    let c: BaseConsumer = kafka.reader_consumer_in_group(&group)?;
    let list = c.fetch_group_list(Some(&group), QUERY)?;
    let (members, state) = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map_or((0, "Dead".to_owned()), |g| {
            (g.members().len(), g.state().to_owned())
        });
    Ok(GroupInfo {
        stage: stage.name().to_owned(),
        group,
        members,
        state,
    })
}

fn group_lag(
    kafka: &Kafka,
    r: &Reader,
    stage: Stage,
    topics: &[String],
) -> anyhow::Result<GroupLag> {
    let group = kafka.group(stage);
    let c: BaseConsumer = kafka.reader_consumer_in_group(&group)?;
    let mut tpl = TopicPartitionList::new();
    let mut existing = Vec::new();
    for t in topics {
        let Ok(n) = reader::partition_count(&c, t, Duration::from_secs(5)) else {
            continue;
        };
        existing.push(t.clone());
        for p in 0..n {
            tpl.add_partition(t, p);
        }
    }
    if tpl.count() == 0 {
        return Ok(GroupLag {
            stage: stage.name().to_owned(),
            group,
            lag: None,
            by_topic: BTreeMap::new(),
            exact: true,
        });
    }
    // A read_committed offset fetch waits until no transaction with offsets is pending.
    let committed = c.committed_offsets(tpl, QUERY)?;
    let mut starts: BTreeMap<String, Vec<(i32, Offset)>> = BTreeMap::new();
    let mut span = BTreeMap::new();
    for e in committed.elements() {
        let (lo, hi) = r.high_watermarks(e.topic(), e.partition(), QUERY)?;
        let from = match e.offset() {
            Offset::Offset(o) => o.max(lo),
            _ => lo,
        };
        starts
            .entry(e.topic().to_owned())
            .or_default()
            .push((e.partition(), Offset::Offset(from)));
        *span.entry(e.topic().to_owned()).or_insert(0i64) += (hi - from).max(0);
    }
    let exact = span.values().sum::<i64>() <= EXACT_LAG_SPAN;
    let mut by_topic = BTreeMap::new();
    for t in existing {
        let n = match (exact, starts.get(&t)) {
            (true, Some(s)) => reader::read_from(r, &t, s, READ_TIMEOUT, |_| {})? as i64,
            (false, Some(_)) => span[&t],
            (_, None) => 0,
        };
        by_topic.insert(t, n);
    }
    Ok(GroupLag {
        stage: stage.name().to_owned(),
        group,
        lag: Some(by_topic.values().sum()),
        by_topic,
        exact,
    })
}

type DlqCounts = (u64, BTreeMap<String, u64>, BTreeMap<String, u64>);

fn read_dlq(
    r: &Reader,
    topic: &str,
    pb: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<DlqCounts> {
    let mut by_kind = BTreeMap::new();
    let mut by_stream = BTreeMap::new();
    let n = reader::read_to_end(r, topic, &all_partitions(r, topic)?, READ_TIMEOUT, |m| {
        let h = m.headers();
        let kind = DeadLetter::read(h).kind.to_owned();
        let stream = format!(
            "{}/{}",
            headers::get_str(h, headers::SOURCE).unwrap_or("?"),
            headers::get_str(h, headers::STREAM).unwrap_or("?")
        );
        *by_kind.entry(kind).or_insert(0) += 1;
        *by_stream.entry(stream).or_insert(0) += 1;
        if let Some(pb) = pb {
            pb.inc(1);
        }
    })?;
    Ok((n, by_kind, by_stream))
}

fn job_counts(jobs: &[crate::jobs::Job]) -> JobCounts {
    let mut c = JobCounts {
        total: jobs.len() as u64,
        ..JobCounts::default()
    };
    for j in jobs {
        *c.by_state.entry(j.state.clone()).or_insert(0) += 1;
        c.records.landed += j.counts.landed;
        c.records.valid += j.counts.valid;
        c.records.dead_lettered += j.counts.dead_lettered;
        c.records.replayed += j.counts.replayed;
        c.records.pending += j.counts.pending;
    }
    c
}

fn unix_ms_now() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Prints the status for a person.
pub fn print(s: &Status) {
    println!("intake status at {}", s.taken_at);
    println!("streams");
    for (k, c) in &s.cursors {
        match c {
            None => println!("  {k:<28} never synced"),
            Some(c) => println!(
                "  {k:<28} {:<11} {:<8} last sync {:<26} last full sync {:<26} {} records in total",
                c.mode.as_str(),
                if c.complete { "idle" } else { "syncing" },
                c.last_sync_at.as_deref().unwrap_or("-"),
                c.last_full_sync_at.as_deref().unwrap_or("-"),
                c.total_records
            ),
        }
        if let Some(b) = c
            .as_ref()
            .and_then(|c| c.backfill.as_ref().filter(|_| !c.complete))
        {
            println!(
                "  {:<28} backfill: {} of {} windows done, {} running, {} left",
                "",
                b.done,
                b.windows,
                b.running,
                b.windows - b.done - b.running
            );
        }
    }
    println!("quota per token (configured | live, from intake.quota)");
    for (t, q) in &s.quotas {
        let configured = match (q.requests, q.per_ms) {
            (Some(r), Some(p)) => format!(
                "{r} per {}{}",
                humantime::format_duration(Duration::from_millis(p)),
                if q.mode.as_deref() == Some("naive") {
                    " (naive)"
                } else {
                    ""
                }
            ),
            _ => "no quota configured".into(),
        };
        let live = match &q.live {
            None => "no state saved yet".into(),
            Some(l) => format!(
                "owner {}, limit {}, pace {}/s, remaining {}, resets {}, {}, saved {:.1} s ago",
                l.owner,
                l.limit,
                l.requests_per_second,
                l.remaining.map_or("-".into(), |r| r.to_string()),
                l.reset_at.as_deref().unwrap_or("-"),
                l.paused_until
                    .as_deref()
                    .map_or("not paused".into(), |p| format!("PAUSED until {p}")),
                l.age_ms as f64 / 1000.0
            ),
        };
        println!("  {t:<28} {configured} | {live}");
    }
    if !s.oauth.is_empty() {
        println!("oauth2 tokens (from intake.tokens)");
    }
    for (t, o) in &s.oauth {
        println!(
            "  {t:<28} {}, owner {}, {} rotation(s), access token until {}, recorded {}{}",
            o.grant,
            o.owner.as_deref().unwrap_or("-"),
            o.rotations,
            o.access_expires_at.as_deref().unwrap_or("-"),
            o.updated_at.as_deref().unwrap_or("never"),
            o.paused
                .as_deref()
                .map_or(String::new(), |p| format!(", PAUSED: {p}"))
        );
    }
    println!("stage groups");
    for g in &s.groups {
        let lag = s.lag.iter().find(|l| l.stage == g.stage);
        let lag = match lag {
            None => String::new(),
            Some(GroupLag { lag: None, .. }) => ", input topics missing".into(),
            Some(l) => format!(
                ", lag {}{} records",
                if l.exact { "" } else { "~" },
                l.lag.unwrap_or(0)
            ),
        };
        println!(
            "  {:<28} {} member(s), {}{lag}",
            g.group, g.members, g.state
        );
    }
    println!("dead letters: {}", s.dlq_total);
    for (k, n) in &s.dlq_by_kind {
        println!("  {k:<28} {n}");
    }
    if !s.dlq_by_stream.is_empty() {
        println!("  by stream");
    }
    for (k, n) in &s.dlq_by_stream {
        println!("    {k:<26} {n}");
    }
    let states: Vec<String> = s
        .jobs
        .by_state
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    println!(
        "jobs: {}{}; records landed {}, valid {}, dead-lettered {}, replayed {}, pending {}",
        s.jobs.total,
        if states.is_empty() {
            String::new()
        } else {
            format!(" ({})", states.join(", "))
        },
        s.jobs.records.landed,
        s.jobs.records.valid,
        s.jobs.records.dead_lettered,
        s.jobs.records.replayed,
        s.jobs.records.pending
    );
}
