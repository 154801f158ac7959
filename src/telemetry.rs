//! Logging setup, the Prometheus endpoint, progress bars and the names of every metric, in one
//! place.
//!
//! Logs are `tracing` events with key-value fields; on a terminal they are human-readable,
//! otherwise one JSON object per line. `RUST_LOG` filters as usual (default `info`).
//!
//! # Metrics
//!
//! Every stage records the same core set, labelled `stage` = `fetch` | `validate` | `dedup` |
//! `serve` (names in [`metric`]):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `intake_records_in_total` | counter | records taken in and committed: landing/valid records consumed (validate, dedup), records fetched (fetch), requests landed (serve) |
//! | `intake_records_out_total` | counter | records written in committed transactions |
//! | `intake_errors_total` | counter | errors, label `class` |
//! | `intake_commit_seconds` | histogram | transaction commit latency |
//! | `intake_transaction_open` | gauge | 1 while the process has a transaction open with records or offsets in it (from its first record until it asks for its commit or abort), label `transactional_id`: one stuck at 1 is a transaction that holds back every `read_committed` reader of its partitions |
//! | `intake_lag_records` | gauge | work waiting for the stage: records of the assigned input partitions not yet consumed (validate, dedup), requests queued for a landing transaction (serve), records fetched but not yet committed (fetch) |
//!
//! Counts are taken when a transaction commits, so after an abort and a rewind nothing is
//! counted twice: in a healthy run `intake_records_in_total{stage="validate"}` equals the
//! landing records the group consumed. Stage-specific metrics sit beside them (dedup's
//! emitted, stale, identical, tombstones and state size; validate's outcomes per kind; fetch's
//! 429s and retries; serve's refusals).
//!
//! One recorder per process ([`prometheus`]); [`start_metrics`] serves it on
//! `telemetry.metrics_addr` for every long-running command (`intake run` serves one endpoint
//! with every stage in it), and `intake serve` also keeps `/metrics` on its own listener.

use std::io::IsTerminal;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::TelemetryConfig;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.compact().try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// Buckets of [`metric::COMMIT_SECONDS`]: a loopback commit takes a few ms, a struggling
/// broker seconds.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's Prometheus recorder, installed on first use (call it before any stage
/// registers its metrics: handles taken before a recorder exists record nothing). A
/// background thread runs the recorder's upkeep, so histograms do not grow between scrapes.
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(metric::COMMIT_SECONDS.into()),
                COMMIT_BUCKETS,
            )
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests): then ours only renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        metric::describe();
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

/// The `GET /metrics` route (Prometheus text format), for any axum router.
pub fn metrics_router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                prometheus().render(),
            )
        }),
    )
}

/// The metrics listener of a long-running command; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the recorder and, when `telemetry.metrics_addr` is set, serves `GET /metrics` on
/// it until the returned server is dropped. Call it once per process, before the stages start.
///
/// # Errors
/// The address cannot be bound.
pub async fn start_metrics(cfg: &TelemetryConfig) -> anyhow::Result<Option<MetricsServer>> {
    use anyhow::Context as _;
    prometheus();
    let Some(addr) = &cfg.metrics_addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding telemetry.metrics_addr {addr}"))?;
    let addr = listener.local_addr()?;
    let app = metrics_router::<()>().route("/healthz", axum::routing::get(|| async { "ok" }));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    Ok(Some(MetricsServer { addr, task }))
}

/// A spinner with a message on stderr for long CLI work, when stderr is a terminal (`None`
/// otherwise: logs and pipes stay clean). `inc` it per record read.
pub fn spinner(
    message: impl Into<std::borrow::Cow<'static, str>>,
) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner().with_style(spinner_style());
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(120));
    Some(pb)
}

/// A progress bar of `len` steps on stderr for long CLI work, `{what}` naming the work and
/// `{unit}` its steps, when `enabled` and stderr is a terminal (hidden otherwise).
pub fn bar(enabled: bool, len: u64, what: &str, unit: &str) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}"
    )) {
        pb.set_style(style);
    }
    pb
}

fn spinner_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} {msg}: {human_pos} records ({per_sec}), {elapsed}",
    )
    .expect("valid template")
}

/// Metric names: the core set shared by every stage, then stage-specific ones.
pub mod metric {
    /// Records taken in by a stage, counted when their transaction commits (label `stage`).
    pub const RECORDS_IN: &str = "intake_records_in_total";
    /// Records written by a stage in committed transactions (label `stage`).
    pub const RECORDS_OUT: &str = "intake_records_out_total";
    /// Errors by stage and class (labels `stage`, `class`).
    pub const ERRORS: &str = "intake_errors_total";
    /// Transaction commit latency in seconds (label `stage`).
    pub const COMMIT_SECONDS: &str = "intake_commit_seconds";
    /// Work waiting for the stage, in records (label `stage`; see the module docs).
    pub const LAG: &str = "intake_lag_records";
    /// Times the group watch made a stage's group rebalance because partitions had no member
    /// (label `stage`; see `kafka::group`).
    pub const GROUP_NUDGES: &str = "intake_group_nudges_total";

    /// fetch: responses with status 429.
    pub const FETCH_HTTP_429: &str = "intake_fetch_http_429_total";
    /// fetch: retried requests (5xx, time-outs, resets).
    pub const FETCH_HTTP_RETRIES: &str = "intake_fetch_http_retries_total";
    /// fetch: OAuth 2.0 access tokens fetched from a token endpoint (label `grant`).
    pub const FETCH_OAUTH_REFRESHES: &str = "intake_fetch_oauth_refreshes_total";
    /// fetch: unix time of the last completed sync (labels `source`, `stream`).
    pub const FETCH_LAST_SYNC: &str = "intake_fetch_last_sync_timestamp_seconds";
    /// fetch: look-back pages not landed because every record was landed unchanged before
    /// (labels `source`, `stream`).
    pub const FETCH_UNCHANGED_PAGES: &str = "intake_fetch_unchanged_pages_total";
    /// fetch: responses an `on_status` rule with `action = "skip"` passed over (labels
    /// `source`, `stream`, `status`).
    pub const FETCH_SKIPPED_PAGES: &str = "intake_fetch_skipped_pages_total";
    /// fetch: reads of one parent's children (a new or changed parent; labels `source`,
    /// `stream` = the child stream).
    pub const FETCH_CHILD_READS: &str = "intake_fetch_child_reads_total";
    /// fetch: parents whose children answered 404 (labels `source`, `stream` = the child
    /// stream): their children are deleted, the request is not retried.
    pub const FETCH_VANISHED_PARENTS: &str = "intake_fetch_vanished_parents_total";
    /// fetch: children deleted because they were no longer listed or their parent is gone
    /// (label `source`).
    pub const FETCH_CHILD_DELETES: &str = "intake_fetch_child_deletes_total";
    /// validate: records by outcome (labels `outcome` = `valid` | `dlq` | `marker` | `delete`,
    /// `kind` for the DLQ).
    pub const VALIDATE_RECORDS: &str = "intake_validate_records_total";
    /// validate: failures counted on an earlier dead letter instead of written again (the
    /// quiet DLQ, `dlq.quiet_for`; label `kind`). Also counted in `VALIDATE_RECORDS` as `dlq`.
    pub const DLQ_REPEATS: &str = "intake_validate_dlq_repeats_total";
    /// dedup: records emitted to the curated topic (labels `source`, `stream`).
    pub const DEDUP_EMITTED: &str = "intake_dedup_emitted_total";
    /// dedup: records dropped as older than the stored version.
    pub const DEDUP_STALE: &str = "intake_dedup_stale_total";
    /// dedup: records dropped as identical to the stored version.
    pub const DEDUP_IDENTICAL: &str = "intake_dedup_identical_total";
    /// dedup: tombstones emitted (deletes and keys a full sync did not see).
    pub const DEDUP_TOMBSTONES: &str = "intake_dedup_tombstones_total";
    /// dedup: full-sync ends skipped because their begin was not seen.
    pub const DEDUP_SYNCS_SKIPPED: &str = "intake_dedup_syncs_skipped_total";
    /// dedup: input records that broke the valid-topic contract (sent to the DLQ).
    pub const DEDUP_REJECTED: &str = "intake_dedup_rejected_total";
    /// dedup: keys held in state.
    pub const DEDUP_STATE_KEYS: &str = "intake_dedup_state_keys";
    /// dedup: approximate bytes of state.
    pub const DEDUP_STATE_BYTES: &str = "intake_dedup_state_bytes";
    /// serve: refused requests (label `code`).
    pub const SERVE_REJECTED: &str = "intake_serve_rejected_total";
    /// Whether a transaction is open (label `transactional_id`).
    pub const TXN_OPEN: &str = "intake_transaction_open";
    /// serve: verified webhooks of a type the source ignores (label `source`).
    pub const SERVE_WEBHOOKS_IGNORED: &str = "intake_serve_webhooks_ignored_total";

    /// What kind of metric a name is.
    #[derive(Clone, Copy)]
    enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    /// Every metric's name, kind, unit and help text.
    const HELP: &[(&str, Kind, Option<metrics::Unit>, &str)] = {
        use Kind::{Counter, Gauge, Histogram};
        use metrics::Unit;
        &[
            (
                RECORDS_IN,
                Counter,
                None,
                "Records taken in by the stage, counted when their transaction commits",
            ),
            (
                RECORDS_OUT,
                Counter,
                None,
                "Records written by the stage in committed transactions",
            ),
            (ERRORS, Counter, None, "Errors by stage and class"),
            (
                COMMIT_SECONDS,
                Histogram,
                Some(Unit::Seconds),
                "Transaction commit latency",
            ),
            (
                TXN_OPEN,
                Gauge,
                None,
                "1 while a transaction of this transactional id holds records or offsets not yet committed or aborted",
            ),
            (
                LAG,
                Gauge,
                None,
                "Records waiting for the stage (consumer lag of validate and dedup)",
            ),
            (
                GROUP_NUDGES,
                Counter,
                None,
                "Rebalances the stage caused because partitions of its group had no member",
            ),
            (
                FETCH_HTTP_429,
                Counter,
                None,
                "Upstream responses with status 429",
            ),
            (
                FETCH_HTTP_RETRIES,
                Counter,
                None,
                "Retried upstream requests",
            ),
            (
                FETCH_OAUTH_REFRESHES,
                Counter,
                None,
                "OAuth 2.0 access tokens fetched from a token endpoint",
            ),
            (
                FETCH_LAST_SYNC,
                Gauge,
                Some(Unit::Seconds),
                "Unix time of the stream's last completed sync",
            ),
            (
                FETCH_SKIPPED_PAGES,
                Counter,
                None,
                "Upstream responses skipped by an on_status rule (nothing landed)",
            ),
            (
                FETCH_UNCHANGED_PAGES,
                Counter,
                None,
                "Look-back pages not landed: every record already landed unchanged",
            ),
            (
                FETCH_CHILD_READS,
                Counter,
                None,
                "Reads of a new or changed parent's children",
            ),
            (
                FETCH_VANISHED_PARENTS,
                Counter,
                None,
                "Parents whose children answered 404 (their children deleted)",
            ),
            (
                FETCH_CHILD_DELETES,
                Counter,
                None,
                "Children deleted: no longer listed, or their parent is gone",
            ),
            (
                VALIDATE_RECORDS,
                Counter,
                None,
                "Validated records by outcome",
            ),
            (
                DEDUP_EMITTED,
                Counter,
                None,
                "Records emitted to the curated topic",
            ),
            (
                DEDUP_STALE,
                Counter,
                None,
                "Records older than the stored version, dropped",
            ),
            (
                DEDUP_IDENTICAL,
                Counter,
                None,
                "Records identical to the stored version, dropped",
            ),
            (DEDUP_TOMBSTONES, Counter, None, "Tombstones emitted"),
            (
                DEDUP_SYNCS_SKIPPED,
                Counter,
                None,
                "Full-sync ends skipped because their begin was not seen",
            ),
            (
                DEDUP_REJECTED,
                Counter,
                None,
                "Input records that broke the valid-topic contract",
            ),
            (DEDUP_STATE_KEYS, Gauge, None, "Keys held in dedup state"),
            (
                DEDUP_STATE_BYTES,
                Gauge,
                Some(Unit::Bytes),
                "Approximate bytes of dedup state",
            ),
            (
                SERVE_REJECTED,
                Counter,
                None,
                "Refused HTTP requests by code",
            ),
            (
                SERVE_WEBHOOKS_IGNORED,
                Counter,
                None,
                "Verified webhooks of a type configured as ignored: acknowledged, not landed",
            ),
        ]
    };

    /// Registers the help text of every metric.
    pub(crate) fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        for &(name, kind, unit, help) in HELP {
            match (kind, unit) {
                (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
                (Kind::Counter, None) => describe_counter!(name, help),
                (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
                (Kind::Gauge, None) => describe_gauge!(name, help),
                (Kind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
                (Kind::Histogram, None) => describe_histogram!(name, help),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spinner_style_is_valid_and_draws() {
        let pb =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden())
                .with_style(spinner_style());
        pb.set_message("reading");
        pb.inc(3);
        assert_eq!(pb.position(), 3);
        pb.finish_and_clear();
    }

    #[test]
    fn the_recorder_renders_commit_latency_as_a_histogram() {
        let h = prometheus();
        metrics::histogram!(metric::COMMIT_SECONDS, "stage" => "unit-test").record(0.003);
        metrics::counter!(metric::RECORDS_IN, "stage" => "unit-test").increment(2);
        let text = h.render();
        assert!(
            text.contains("intake_commit_seconds_bucket{stage=\"unit-test\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("intake_records_in_total{stage=\"unit-test\"} 2"),
            "{text}"
        );
        assert!(text.contains("# HELP intake_records_in_total"), "{text}");
    }
}
