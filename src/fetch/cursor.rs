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
    /// When this record was written.
    pub updated_at: String,
}

/// The key of a stream's cursor (and of its landing pages).
pub fn stream_key(source: &str, stream: &str) -> String {
    format!("{source}/{stream}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains(r#""page":{"at":"token","value":"abc"}"#), "{j}");
        assert_eq!(serde_json::from_str::<CursorState>(&j).unwrap(), c);
    }
}
