//! The cursor record of a stream in `intake.cursors` (compacted, key `<source>/<stream>`).
//!
//! It is written in the same transaction as the pages it describes, so the committed cursor
//! never points past committed data and committed data always has its cursor. It carries the
//! position inside the running sync (to resume after a crash without landing a page twice)
//! and the high-water mark of the last completed sync (the next incremental sync starts there,
//! less the look-back window).

use serde::{Deserialize, Serialize};

use super::paginate::PageCursor;

/// Sync modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every record (reconciliation: dedup tombstones keys it did not see).
    Full,
    /// Records changed since the last high-water mark less the look-back.
    Incremental,
}

impl Mode {
    /// Header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        }
    }
}

/// The cursor record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    /// Source name.
    pub source: String,
    /// Stream name.
    pub stream: String,
    /// The sync in progress, or the last one when `complete`.
    pub sync_id: String,
    /// Its mode.
    pub mode: Mode,
    /// Whether that sync read its last page.
    pub complete: bool,
    /// Where the next page of the sync is (Done when complete).
    pub page: PageCursor,
    /// The incremental filter value this sync was started with.
    #[serde(default)]
    pub since: Option<String>,
    /// When this sync started (RFC 3339, local clock). A full sync reads in id order, so a
    /// record it already read can change again before it ends: the next incremental sync
    /// starts no later than this (less the look-back), not at the full sync's high-water mark.
    /// Absent in cursors written before the field existed.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Highest incremental-field value seen in this sync so far.
    #[serde(default)]
    pub high_water: Option<String>,
    /// High-water mark of the last completed sync: where the next incremental sync starts.
    #[serde(default)]
    pub committed_high_water: Option<String>,
    /// When the last full sync completed (RFC 3339).
    #[serde(default)]
    pub last_full_sync_at: Option<String>,
    /// When the last sync (any mode) completed (RFC 3339).
    #[serde(default)]
    pub last_sync_at: Option<String>,
    /// Pages landed in this sync.
    pub pages: u64,
    /// Records landed in this sync.
    pub records: u64,
    /// Records landed by this stream since its cursor was created.
    #[serde(default)]
    pub total_records: u64,
    /// The last `intake.stamp` given to a landed page of this stream (0: none yet). The next
    /// is above it even if the clock of the process that owns the stream now is behind.
    #[serde(default)]
    pub stamp: i64,
    /// When this record was written.
    pub updated_at: String,
}

/// The stamp of the next landed page: the clock in microseconds since the Unix epoch, but
/// above `last` (the stream's last stamp, committed with its cursor), so stamps increase per
/// stream even when a new owner's clock is behind the old one's.
pub fn next_stamp(last: i64, now: time::OffsetDateTime) -> i64 {
    let micros = i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
    micros.max(last.saturating_add(1))
}

/// The key of a stream's cursor (and of its landing pages).
pub fn stream_key(source: &str, stream: &str) -> String {
    format!("{source}/{stream}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_even_when_the_clock_goes_back() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        assert_eq!(next_stamp(0, t), 1_767_225_600_000_000);
        // A successor whose clock is a minute behind still stamps above the committed stamp.
        let behind = t - time::Duration::minutes(1);
        assert_eq!(
            next_stamp(1_767_225_600_000_000, behind),
            1_767_225_600_000_001
        );
        assert_eq!(next_stamp(i64::MAX, t), i64::MAX);
    }

    #[test]
    fn round_trips_as_json() {
        let c = CursorState {
            source: "sim".into(),
            stream: "orders".into(),
            sync_id: "s1".into(),
            mode: Mode::Full,
            complete: false,
            page: PageCursor::Token("abc".into()),
            since: None,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            high_water: Some("2026-01-01T00:00:00Z".into()),
            committed_high_water: None,
            last_full_sync_at: None,
            last_sync_at: None,
            pages: 3,
            records: 300,
            total_records: 300,
            stamp: 1_767_225_600_000_000,
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains(r#""page":{"at":"token","value":"abc"}"#), "{j}");
        assert_eq!(serde_json::from_str::<CursorState>(&j).unwrap(), c);
    }
}
