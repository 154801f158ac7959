//! The pipeline's stages by name: one spelling for metric labels (`stage="…"`), consumer
//! groups (`<group_prefix>-<stage>`), transactional ids, `dlq.stage` and log fields.

use std::fmt;

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Pulls HTTP sources and lands raw pages with their cursor.
    Fetch,
    /// Splits landed records, validates them against the registry, routes drift to the DLQ.
    Validate,
    /// Keeps the latest version per primary key in the curated topics.
    Dedup,
    /// Lands webhooks and batch jobs received over HTTP.
    Serve,
}

impl Stage {
    /// Every stage, in the order records pass them (serve lands beside fetch).
    pub const ALL: [Stage; 4] = [Stage::Fetch, Stage::Validate, Stage::Dedup, Stage::Serve];

    /// The stage's name, as every label, group and id spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Validate => "validate",
            Stage::Dedup => "dedup",
            Stage::Serve => "serve",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stage's processor failed a record. Bad data is never an error: it goes to the DLQ
/// with its reason and the record counts as processed. Either error aborts the open
/// transaction and rewinds its partitions to the last commit, so the batch is retried whole.
#[derive(Debug)]
pub enum StageError {
    /// A dependency the stage cannot work without is unavailable (the schema registry, the
    /// blob store, broker metadata, a state restore that gave up): the loop aborts, waits
    /// `retry_in` (the processor's backoff hint), and retries the batch.
    Unavailable {
        /// What is unavailable and why, for the log.
        what: String,
        /// How long to wait before the retry.
        retry_in: std::time::Duration,
    },
    /// A Kafka error (from the transaction's sink): the loop classifies it (retriable,
    /// fenced, fatal) as for its own calls.
    Kafka(rdkafka::error::KafkaError),
}

impl From<rdkafka::error::KafkaError> for StageError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Kafka(e)
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable { what, retry_in } => {
                write!(
                    f,
                    "unavailable: {what} (retry in {} ms)",
                    retry_in.as_millis()
                )
            }
            Self::Kafka(e) => write!(f, "kafka: {e}"),
        }
    }
}

impl std::error::Error for StageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_lower_case_words() {
        let names: std::collections::BTreeSet<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Stage::ALL.len());
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase()))
        );
        assert_eq!(Stage::Dedup.to_string(), "dedup");
    }
}
