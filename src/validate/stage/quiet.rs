//! The quiet DLQ: input that arrives again unchanged and fails the same way is counted on its
//! dead letter instead of being written again.
//!
//! A full sync lands every page again, and a drifted record fails again each time; without
//! this, a DLQ grows by every drifted record every sync and its counts stop meaning "how many
//! problems". Here a dead letter is identified by its stream, `dlq.error.kind`,
//! `dlq.error.field` and the hash of its value (a record's bytes as received, or a whole
//! page's): while an entry for it in `<prefix>.dlq-index` is younger than `dlq.quiet_for`, a
//! repeat only updates the entry (occurrences, last seen), in the same transaction as the
//! landing offsets; otherwise the dead letter is written, and its entry with it. A changed
//! record (another hash) or another failure (kind, field) is a new dead letter.
//!
//! Exactly once: the entries are state of the landing partition whose input they describe
//! (partition p of the index holds landing partition p's, modulo the index's partition count),
//! restored by the partition's owner on assignment ([`Quiet::restore`]) and again after an
//! aborted transaction, whose repeats and dead letters never happened.
//!
//! Never quieted: replayed input (`intake dlq replay`: a record that fails again after a
//! replay is a new dead letter, so it can be replayed again) and input whose stream is unknown.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::KafkaResult;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::contract::{DlqRepeat, hash_hex};
use crate::kafka::reader::{self, Reader};

/// How long restoring the index may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// What to do with a dead letter about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Write it, and this entry (its first occurrence) to the index.
    Write(DlqRepeat),
    /// A repeat: write only this entry (one more occurrence).
    Repeat(DlqRepeat),
}

/// What a dead letter is, for [`Quiet::judge`].
pub(super) struct Failure<'a> {
    pub source: &'a str,
    pub stream: &'a str,
    pub landing_partition: i32,
    pub kind: &'a str,
    pub field: Option<&'a str>,
    pub value: &'a [u8],
    pub origin: &'a str,
}

/// The entries of the landing partitions this process owns.
pub(super) struct Quiet {
    topic: String,
    quiet_for: Duration,
    reader: Option<Reader>,
    /// Landing partition → entry key → entry.
    seen: HashMap<i32, HashMap<String, DlqRepeat>>,
}

impl Quiet {
    /// The quiet DLQ over `topic` (`dlq.quiet_for`; zero: off), restoring through `reader`.
    pub(super) fn new(topic: String, quiet_for: Duration, reader: Option<Reader>) -> Self {
        Self {
            topic,
            quiet_for,
            reader,
            seen: HashMap::new(),
        }
    }

    /// The index topic.
    pub(super) fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether repeats are counted at all.
    pub(super) fn on(&self) -> bool {
        !self.quiet_for.is_zero()
    }

    /// Reads the entries of landing `partitions` back (replacing what was held for them).
    ///
    /// # Errors
    /// Kafka errors while reading (the caller's loop retries).
    pub(super) fn restore(&mut self, partitions: &[i32]) -> KafkaResult<()> {
        let Some(reader) = self.reader.as_ref().filter(|_| !self.quiet_for.is_zero()) else {
            return Ok(());
        };
        if partitions.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let n = match reader::partition_count(reader, &self.topic, Duration::from_secs(10)) {
            Ok(n) => n.max(1),
            Err(rdkafka::error::KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopic
                | rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            )) => {
                // An older deployment: every failure is written, as before, until the topic
                // exists and this process restarts.
                tracing::error!(topic = %self.topic, "the dlq-index topic does not exist: run `intake topics apply`; until then repeated failures are written to the DLQ again (the quiet DLQ is off)");
                self.quiet_for = Duration::ZERO;
                self.seen.clear();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut index_partitions: Vec<i32> = partitions.iter().map(|p| p % n).collect();
        index_partitions.sort_unstable();
        index_partitions.dedup();
        let mut restored: HashMap<i32, HashMap<String, DlqRepeat>> =
            partitions.iter().map(|p| (*p, HashMap::new())).collect();
        let mut skipped = 0u64;
        let read = reader::read_to_end(
            reader,
            &self.topic,
            &index_partitions,
            RESTORE_TIMEOUT,
            |m| {
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    skipped += 1;
                    return;
                };
                let Some(value) = m.payload() else {
                    // A tombstone: the entry is gone.
                    for entries in restored.values_mut() {
                        entries.remove(key);
                    }
                    return;
                };
                match DlqRepeat::parse(value) {
                    Ok(e) => {
                        if let Some(entries) = restored.get_mut(&e.landing_partition) {
                            entries.insert(key.to_owned(), e);
                        }
                    }
                    Err(why) => {
                        skipped += 1;
                        tracing::warn!(topic = %self.topic, partition = m.partition(), offset = m.offset(), error = %why, "dlq-index record skipped");
                    }
                }
            },
        )?;
        let entries: usize = restored.values().map(HashMap::len).sum();
        tracing::info!(topic = %self.topic, ?partitions, records = read, entries, skipped, elapsed_ms = started.elapsed().as_millis() as u64, "dead letters seen restored");
        self.seen.extend(restored);
        Ok(())
    }

    /// Forgets the entries of `partitions` (revoked).
    pub(super) fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.seen.remove(p);
        }
    }

    /// Decides whether `failure` is written or counted as a repeat at `now`, and notes the
    /// entry (the caller writes it to [`Quiet::topic`] in the same transaction).
    pub(super) fn judge(&mut self, failure: &Failure<'_>, now: OffsetDateTime) -> Verdict {
        let hash =
            String::from_utf8_lossy(&hash_hex(crate::dedup::merge::content_hash(failure.value)))
                .into_owned();
        let key = DlqRepeat::key_of(
            failure.source,
            failure.stream,
            failure.kind,
            failure.field,
            &hash,
        );
        let at = now.format(&Rfc3339).unwrap_or_default();
        let entries = self.seen.entry(failure.landing_partition).or_default();
        if let Some(e) = entries.get_mut(&key) {
            let fresh = OffsetDateTime::parse(&e.dead_letter_at, &Rfc3339)
                .is_ok_and(|t| now - t < self.quiet_for);
            if fresh {
                e.occurrences += 1;
                e.last_seen = at;
                return Verdict::Repeat(e.clone());
            }
        }
        let e = DlqRepeat {
            source: failure.source.to_owned(),
            stream: failure.stream.to_owned(),
            landing_partition: failure.landing_partition,
            hash,
            kind: failure.kind.to_owned(),
            field: failure.field.map(str::to_owned),
            dead_letter_at: at.clone(),
            origin: failure.origin.to_owned(),
            occurrences: 1,
            last_seen: at,
        };
        entries.insert(key, e.clone());
        Verdict::Write(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure<'a>(value: &'a [u8], kind: &'a str, field: Option<&'a str>) -> Failure<'a> {
        Failure {
            source: "s",
            stream: "a",
            landing_partition: 2,
            kind,
            field,
            value,
            origin: "intake.landing/2/10#0",
        }
    }

    #[test]
    fn repeats_within_the_window_are_counted_changes_and_later_ones_written() {
        let mut q = Quiet::new("t".into(), Duration::from_secs(3600), None);
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let first = q.judge(&failure(b"{\"id\":1}", "unknown_enum", Some("status")), t0);
        let Verdict::Write(e) = first else {
            panic!("{first:?}")
        };
        assert_eq!((e.occurrences, e.landing_partition), (1, 2));
        for n in 2..=4 {
            let v = q.judge(
                &failure(b"{\"id\":1}", "unknown_enum", Some("status")),
                t0 + Duration::from_secs(60 * n),
            );
            let Verdict::Repeat(r) = v else {
                panic!("{v:?}")
            };
            assert_eq!(r.occurrences, n);
            assert_eq!(r.key(), e.key());
            assert_eq!(r.dead_letter_at, e.dead_letter_at, "counted on the first");
        }
        // Another value, another kind, another field: new dead letters.
        for f in [
            failure(b"{\"id\":1,\"x\":2}", "unknown_enum", Some("status")),
            failure(b"{\"id\":1}", "missing_field", Some("status")),
            failure(b"{\"id\":1}", "unknown_enum", Some("kind")),
        ] {
            assert!(matches!(q.judge(&f, t0), Verdict::Write(_)));
        }
        // Past the window: written again, and counted on the new one from then.
        let later = t0 + Duration::from_secs(3600);
        let again = q.judge(
            &failure(b"{\"id\":1}", "unknown_enum", Some("status")),
            later,
        );
        let Verdict::Write(e2) = again else {
            panic!("{again:?}")
        };
        assert_eq!(e2.occurrences, 1);
        assert!(matches!(
            q.judge(&failure(b"{\"id\":1}", "unknown_enum", Some("status")), later),
            Verdict::Repeat(r) if r.occurrences == 2
        ));
        // A revoked partition's entries are forgotten.
        q.forget(&[2]);
        assert!(matches!(
            q.judge(
                &failure(b"{\"id\":1}", "unknown_enum", Some("status")),
                later
            ),
            Verdict::Write(_)
        ));
    }
}
