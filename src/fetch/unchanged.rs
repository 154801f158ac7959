//! What this stream worker already landed, so a page whose every record is unchanged is not
//! landed again.
//!
//! An incremental sync re-reads `lookback` before its high-water mark to catch late writes, and
//! a stream without an incremental filter re-reads everything each poll. With a one-minute
//! look-back polled every second, every record would be landed sixty times, and validate and
//! dedup would do sixty times the work for nothing. Each record of a committed page is
//! remembered as (key hash, content hash, its incremental timestamp or the time it was seen); a
//! later page whose records are all remembered with the same content is skipped (counted in
//! `intake_fetch_unchanged_pages_total`). One changed or unknown record lands the whole page,
//! raw as always.
//!
//! This is an optimisation that never loses data: full syncs of streams that detect deletes are
//! never skipped (dedup needs every key they see), memory starts empty after a restart or a
//! hand-over (the next sync lands everything once more, which dedup counts as identical), and a
//! record is remembered only after the transaction that landed it committed.

use std::hash::Hasher;
use std::io;

use serde_json::Value;
use std::collections::HashMap;
use xxhash_rust::xxh3::Xxh3;

/// One record as landed: which key, which content, and when the source says it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Print {
    key: u64,
    content: u64,
    /// The record's incremental field in unix seconds (what pruning compares with).
    at: i64,
}

/// Prints of the records landed by committed incremental pages, bounded in size.
#[derive(Debug)]
pub struct Unchanged {
    seen: HashMap<u64, (u64, i64)>,
    cap: usize,
}

impl Unchanged {
    /// Remembers at most `cap` records (about 32 bytes each); beyond that, new records are not
    /// remembered until pruning frees room, so more pages are landed, never fewer.
    pub fn new(cap: usize) -> Self {
        Self {
            seen: HashMap::new(),
            cap,
        }
    }

    /// Prints of a page's records, or `None` if one has no primary key (validate must see it).
    /// `field` is the incremental timestamp pruning goes by; without one, records count as
    /// changed `now`.
    pub fn prints(
        records: &[Value],
        primary_key: &str,
        field: Option<(&str, &crate::config::TimeFormat)>,
        now: i64,
    ) -> Option<Vec<Print>> {
        records
            .iter()
            .map(|r| {
                let key = r.pointer(primary_key).filter(|k| !k.is_null())?;
                let at = field
                    .and_then(|(f, format)| format.parse_json(r.pointer(f)?))
                    .map_or(now, time::OffsetDateTime::unix_timestamp);
                Some(Print {
                    key: hash_json(key),
                    content: hash_json(r),
                    at,
                })
            })
            .collect()
    }

    /// Whether every print is remembered with the same content (true for an empty page).
    pub fn all_seen(&self, prints: &[Print]) -> bool {
        prints
            .iter()
            .all(|p| self.seen.get(&p.key).is_some_and(|&(c, _)| c == p.content))
    }

    /// Remembers prints that a committed transaction landed.
    pub fn remember(&mut self, prints: &[Print]) {
        for p in prints {
            if self.seen.len() >= self.cap && !self.seen.contains_key(&p.key) {
                continue;
            }
            self.seen.insert(p.key, (p.content, p.at));
        }
    }

    /// Forgets records older than `before` (unix seconds): a sync that asks for records changed
    /// since then cannot return them unchanged.
    pub fn forget_before(&mut self, before: i64) {
        self.seen.retain(|_, &mut (_, at)| at >= before);
    }

    /// Records remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// A hash of a JSON value's compact serialisation (the same value always hashes the same).
fn hash_json(v: &Value) -> u64 {
    struct W<'a>(&'a mut Xxh3);
    impl io::Write for W<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut h = Xxh3::new();
    serde_json::to_writer(W(&mut h), v).expect("writing to a hasher cannot fail");
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    fn prints(v: Value) -> Vec<Print> {
        Unchanged::prints(
            &page(v),
            "/id",
            Some(("/updated_at", &crate::config::TimeFormat::Rfc3339)),
            0,
        )
        .unwrap()
    }

    #[test]
    fn a_page_is_unchanged_only_when_every_record_was_landed_with_the_same_content() {
        let mut u = Unchanged::new(100);
        let a = prints(json!([
            {"id": "a", "n": 1, "updated_at": "2026-01-01T00:00:00Z"},
            {"id": "b", "n": 1, "updated_at": "2026-01-01T00:00:01Z"}
        ]));
        assert!(!u.all_seen(&a), "nothing landed yet");
        u.remember(&a);
        assert!(u.all_seen(&a));
        assert_eq!(u.len(), 2);
        // One record changed (same timestamp, other content): the page lands.
        let changed = prints(json!([
            {"id": "a", "n": 2, "updated_at": "2026-01-01T00:00:00Z"},
            {"id": "b", "n": 1, "updated_at": "2026-01-01T00:00:01Z"}
        ]));
        assert!(!u.all_seen(&changed));
        // A new key: the page lands.
        let new = prints(json!([{"id": "c", "n": 1, "updated_at": "2026-01-01T00:00:02Z"}]));
        assert!(!u.all_seen(&new));
        // A subset of what landed is unchanged; so is an empty page.
        assert!(u.all_seen(&prints(
            json!([{"id": "b", "n": 1, "updated_at": "2026-01-01T00:00:01Z"}])
        )));
        assert!(u.all_seen(&[]));
    }

    #[test]
    fn keys_are_compared_as_json_so_a_number_and_a_string_differ() {
        let mut u = Unchanged::new(100);
        u.remember(&prints(json!([{"id": 1, "updated_at": "x"}])));
        assert!(!u.all_seen(&prints(json!([{"id": "1", "updated_at": "x"}]))));
        assert!(u.all_seen(&prints(json!([{"id": 1, "updated_at": "x"}]))));
    }

    #[test]
    fn a_record_without_a_key_makes_the_page_land() {
        assert!(Unchanged::prints(&page(json!([{"id": "a"}, {"n": 1}])), "/id", None, 0).is_none());
        assert!(Unchanged::prints(&page(json!([{"id": null}])), "/id", None, 0).is_none());
    }

    #[test]
    fn forgetting_drops_records_older_than_the_window_and_the_cap_bounds_memory() {
        let mut u = Unchanged::new(2);
        let old = prints(json!([{"id": "a", "updated_at": "2026-01-01T00:00:00Z"}]));
        let new = prints(json!([{"id": "b", "updated_at": "2026-01-01T00:01:00Z"}]));
        u.remember(&old);
        u.remember(&new);
        let cutoff = time::OffsetDateTime::parse(
            "2026-01-01T00:00:30Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        u.forget_before(cutoff);
        assert!(!u.all_seen(&old));
        assert!(u.all_seen(&new));
        // A record without a parsable timestamp counts as changed `now`.
        let untimed = Unchanged::prints(
            &page(json!([{"id": "z", "updated_at": 5}])),
            "/id",
            Some(("/updated_at", &crate::config::TimeFormat::Rfc3339)),
            77,
        )
        .unwrap();
        assert_eq!(untimed[0].at, 77);
        // At the cap, new keys are not remembered (their pages keep landing); known keys update.
        u.remember(&prints(
            json!([{"id": "c", "updated_at": "2026-01-01T00:02:00Z"}]),
        ));
        u.remember(&prints(
            json!([{"id": "d", "updated_at": "2026-01-01T00:02:00Z"}]),
        ));
        assert_eq!(u.len(), 2);
        assert!(!u.all_seen(&prints(
            json!([{"id": "d", "updated_at": "2026-01-01T00:02:00Z"}])
        )));
        let b2 = prints(json!([{"id": "b", "n": 2, "updated_at": "2026-01-01T00:03:00Z"}]));
        u.remember(&b2);
        assert!(u.all_seen(&b2));
    }
}
