//! `intake cursors`: show the committed cursors; reset one explicitly.

use crate::config::Config;
use crate::headers::Headers;
use crate::kafka::txn::{self, Policy};
use crate::kafka::{Kafka, Outgoing, TxnProducer};
use crate::topics::TopicNames;

use super::cursor::stream_key;
use super::stream::restore_cursors;

/// Prints every configured stream's cursor; with `reset`, deletes one first.
///
/// # Errors
/// Unknown stream, Kafka errors.
pub async fn cursors(cfg: &Config, reset: Option<&str>) -> anyhow::Result<()> {
    let kafka = Kafka::new(&cfg.kafka)?;
    let names = TopicNames::from_config(cfg);
    if let Some(spec) = reset {
        let (src, st) = cfg
            .stream(spec)
            .ok_or_else(|| anyhow::anyhow!("no stream `{spec}` in the config"))?;
        let key = stream_key(&src.name, &st.name);
        // Written with the stream's own transactional id: this fences a running owner, which
        // restarts from the reset cursor instead of overwriting it with its old position.
        let txn_id = txn::transactional_id(
            &cfg.kafka.group_prefix,
            txn::Writer::Fetch {
                source: &src.name,
                stream: &st.name,
            },
        );
        let p = kafka.txn_producer(&txn_id)?;
        p.blocking(TxnProducer::init).await?;
        let topic = names.cursors();
        let k = key.clone();
        p.transaction(Policy::once(), move |p| {
            p.send(Outgoing {
                topic: &topic,
                key: Some(k.as_bytes()),
                payload: None,
                headers: Headers::new().build(),
                partition: None,
            })
        })
        .await
        .into_result()
        .map_err(|e| anyhow::anyhow!("resetting the cursor of {key}: {e}"))?;
        tracing::warn!(stream = %key, "cursor reset by operator: the next sync of this stream is a full sync");
        println!("reset cursor of {key}");
    }
    let keys: Vec<String> = crate::contract::stream_keys(cfg);
    let found = restore_cursors(&kafka, &names, &keys).await?;
    println!(
        "{:<28} {:<12} {:<9} {:<8} {:>7} {:>9} {:<26} {:<26}",
        "stream", "mode", "state", "sync", "pages", "records", "last sync", "high water"
    );
    let children: std::collections::HashMap<String, &str> = cfg
        .sources
        .iter()
        .flat_map(|src| {
            src.streams.iter().filter_map(move |st| {
                let p = st.parent.as_ref()?;
                Some((stream_key(&src.name, &st.name), p.stream.as_str()))
            })
        })
        .collect();
    for k in &keys {
        match found.get(k) {
            None if children.contains_key(k) => println!(
                "{k:<28} (a child of {}: one cursor per parent, read with it)",
                children[k]
            ),
            None => println!("{k:<28} (no cursor: the next sync is full)"),
            Some(c) => println!(
                "{:<28} {:<12} {:<9} {:<8} {:>7} {:>9} {:<26} {:<26}",
                k,
                c.mode.as_str(),
                if c.complete { "complete" } else { "running" },
                &c.sync_id[..8.min(c.sync_id.len())],
                c.pages,
                c.records,
                c.last_sync_at.as_deref().unwrap_or("-"),
                c.committed_high_water.as_deref().unwrap_or("-"),
            ),
        }
    }
    Ok(())
}
