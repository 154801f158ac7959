//! Reading a stream's committed cursor back (read_committed), with its child and window
//! cursors.

use std::time::Duration;

use super::super::FetchError;
use super::super::children::Tree;
use super::super::cursor::CursorState;
use super::StreamWorker;
use crate::kafka::{Kafka, partition::partition_for, reader};
use crate::topics::TopicNames;

impl StreamWorker {
    /// Reads this stream's last committed cursor.
    pub(super) async fn restore(&self) -> Result<(Option<CursorState>, Option<Tree>), FetchError> {
        let key = self.key();
        let prefixes = Tree::prefixes(self);
        let (mut roots, children, partition) = restore_cursors_with(
            &self.kafka,
            &self.names,
            std::slice::from_ref(&key),
            &prefixes,
        )
        .await?;
        let state = roots.remove(&key);
        let tree = (!prefixes.is_empty()).then(|| {
            Tree::new(
                self,
                partition,
                children,
                state.as_ref().map_or(0, |s| s.stamp),
            )
        });
        Ok((state, tree))
    }
}

/// Reads the last committed cursor of each key (read_committed, only the partitions that hold them).
///
/// # Errors
/// Kafka errors.
pub async fn restore_cursors(
    kafka: &Kafka,
    names: &TopicNames,
    keys: &[String],
) -> Result<std::collections::HashMap<String, CursorState>, FetchError> {
    restore_cursors_with(kafka, names, keys, &[])
        .await
        .map(|(m, _, _)| m)
}

/// The records read back with a stream's cursor whose keys start with a prefix (child
/// cursors, window cursors), by key: the value of the last one.
pub(in crate::fetch) type Prefixed = std::collections::HashMap<String, Vec<u8>>;

/// Reads the last committed cursor of each key, and every record whose key starts with one of
/// `prefixes` in the partition of the first key (where a tree's child cursors and a backfill's
/// window cursors are written), with that partition.
pub(in crate::fetch) async fn restore_cursors_with(
    kafka: &Kafka,
    names: &TopicNames,
    keys: &[String],
    prefixes: &[String],
) -> Result<
    (
        std::collections::HashMap<String, CursorState>,
        Prefixed,
        i32,
    ),
    FetchError,
> {
    let kafka = kafka.clone();
    let topic = names.cursors();
    let keys = keys.to_vec();
    let prefixes = prefixes.to_vec();
    tokio::task::spawn_blocking(move || {
        use rdkafka::Message;
        let consumer = kafka.reader_consumer("cursors")?;
        let n = reader::partition_count(&consumer, &topic, Duration::from_secs(10))?;
        let mut parts: Vec<i32> = keys.iter().map(|k| partition_for(k.as_bytes(), n)).collect();
        parts.sort_unstable();
        parts.dedup();
        let first = keys.first().map_or(0, |k| partition_for(k.as_bytes(), n));
        let mut out = std::collections::HashMap::new();
        let mut children = Prefixed::new();
        reader::read_to_end(&consumer, &topic, &parts, Duration::from_secs(60), |m| {
            let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { return };
            if prefixes.iter().any(|p| k.starts_with(p.as_str())) {
                match m.payload() {
                    None => children.remove(k),
                    Some(v) => children.insert(k.to_owned(), v.to_vec()),
                };
                return;
            }
            if !keys.iter().any(|x| x == k) {
                return;
            }
            match m.payload() {
                None => {
                    out.remove(k);
                }
                Some(v) => match serde_json::from_slice::<CursorState>(v) {
                    Ok(c) => {
                        out.insert(k.to_owned(), c);
                    }
                    Err(e) => tracing::error!(key = k, offset = m.offset(), error = %e, "unreadable cursor record ignored"),
                },
            }
        })?;
        Ok((out, children, first))
    })
    .await
    .map_err(|_| FetchError::Kafka(rdkafka::error::KafkaError::Canceled))?
}
