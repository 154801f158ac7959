//! Logging setup and the names of every metric, in one place.
//!
//! Logs are `tracing` events with key-value fields; on a terminal they are human-readable,
//! otherwise one JSON object per line. `RUST_LOG` filters as usual (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests): then ours only renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Metric names: `intake_<stage>_<what>`, the same core set for every stage.
pub mod metric {
    /// Records read by a stage (label `stage`).
    pub const RECORDS_IN: &str = "intake_records_in_total";
    /// Records written by a stage (labels `stage`, `topic_kind`).
    pub const RECORDS_OUT: &str = "intake_records_out_total";
    /// Errors by stage and class.
    pub const ERRORS: &str = "intake_errors_total";
    /// Transaction commit latency in seconds.
    pub const COMMIT_SECONDS: &str = "intake_commit_seconds";
    /// Consumer lag in records.
    pub const LAG: &str = "intake_lag_records";
}
