//! How a stream's pages become landing records and commit: the page's headers and body
//! (inline or by claim-check), the transaction of pages, marker and cursor, and the fetch dead
//! letter of a page that cannot land.

use bytes::Bytes;

use super::super::cursor::{CursorState, Mode};
use super::super::http::Response;
use super::super::paginate::PageCursor;
use super::super::unchanged::Print;
use super::{BatchError, StreamWorker};
use crate::contract::{DeadLetter, LandedBody, LandingHeaders, SyncMarker};
use crate::headers::{self, Headers, Kind};
use crate::kafka::txn::{Outcome, Policy};
use crate::kafka::{Outgoing, TxnProducer};
use crate::stage::Stage;
use crate::telemetry::metric;

use super::super::FetchError;

/// Where a landed page was read: its position, its sync and its stamp (`intake.cursor`,
/// `intake.sync_id`, `intake.mode`, `intake.stamp`).
#[derive(Clone, Copy)]
pub(in crate::fetch) struct Place<'a> {
    pub page: &'a PageCursor,
    pub sync_id: &'a str,
    pub mode: Mode,
    pub stamp: i64,
}

impl CursorState {
    pub(in crate::fetch) fn place(&self) -> Place<'_> {
        Place {
            page: &self.page,
            sync_id: &self.sync_id,
            mode: self.mode,
            stamp: self.stamp,
        }
    }
}

impl Landed {
    /// This page with one more header.
    pub(in crate::fetch) fn with_header(mut self, key: &str, value: &str) -> Self {
        self.headers = std::mem::replace(&mut self.headers, Headers::new()).with(key, value);
        self
    }

    /// The landing record of this page, keyed by its stream.
    pub(in crate::fetch) fn into_out(self, landing: &str, key: &str) -> Out {
        Out {
            topic: landing.to_owned(),
            key: key.as_bytes().to_vec(),
            payload: Some(self.value),
            headers: self.headers.build(),
            partition: None,
        }
    }
}

/// One record of a fetch transaction.
pub(in crate::fetch) struct Out {
    pub topic: String,
    pub key: Vec<u8>,
    /// `None`: a tombstone.
    pub payload: Option<Bytes>,
    pub headers: rdkafka::message::OwnedHeaders,
    pub partition: Option<i32>,
}

/// A page ready to land.
pub(in crate::fetch) struct Landed {
    pub(super) value: Bytes,
    pub(super) headers: Headers,
    pub(super) records: u64,
    /// Its records, remembered once the page is committed (empty unless `skip_unchanged`).
    pub(super) prints: Vec<Print>,
}

impl StreamWorker {
    /// Keeps a page that cannot be landed in the DLQ (stage `fetch`), in its own transaction.
    /// A body over the inline limit goes to the blob store first and the DLQ holds its
    /// reference (`intake.blob`), as landing does.
    pub(super) async fn dead_letter(
        &self,
        producer: &TxnProducer,
        resp: &Response,
        kind: &str,
        mut detail: String,
    ) -> Result<(), BatchError> {
        let dlq = self.names.dlq();
        let key = self.key();
        let mut hdrs = Headers::new()
            .with(headers::SOURCE, &self.source.name)
            .with(headers::STREAM, &self.stream.name)
            .with(headers::REQUEST, &resp.url)
            .with(headers::STATUS, resp.status.to_string());
        let body = self.claim_check(resp).await?;
        if let Some(r) = body.blob() {
            detail.push_str(&format!(
                "; the body ({} bytes) is over the inline limit: the value is its blob reference",
                r.size
            ));
            // Inline, a page's dead letter has no `intake.kind`; stored, it says `blob-ref`.
            hdrs = body.write(hdrs, Kind::Page);
        }
        let value = body.value();
        let at = headers::now_rfc3339();
        let hdrs = DeadLetter::new(Stage::Fetch.name(), kind, &detail, &resp.url, &at)
            .write(hdrs)
            .build();
        producer
            .transaction(Policy::once(), move |p| {
                p.send(Outgoing {
                    topic: &dlq,
                    key: Some(key.as_bytes()),
                    payload: Some(&value),
                    headers: hdrs,
                    partition: None,
                })
            })
            .await
            .into_result()
            .map_err(|e| BatchError::Fatal(FetchError::Kafka(e)))
    }

    /// The page's body, inline or (over the inline limit) stored in the blob store.
    async fn claim_check(&self, resp: &Response) -> Result<LandedBody, BatchError> {
        LandedBody::land(
            &self.blobs,
            resp.body.clone(),
            self.cfg.blob.max_inline_bytes,
        )
        .await
        .map_err(BatchError::Blob)
    }

    /// Builds the landing record of a page; oversize bodies go to the blob store first.
    pub(in crate::fetch) async fn land(
        &self,
        resp: &Response,
        cur: Place<'_>,
        after: &PageCursor,
        seq: u64,
        records: u64,
    ) -> Result<Landed, BatchError> {
        let h = LandingHeaders::provenance(&self.source.name, &self.stream.name, &resp.url)
            .with(headers::STATUS, resp.status.to_string())
            .with(headers::CURSOR, cur.page.header_value())
            .with(headers::NEXT_CURSOR, after.header_value())
            .with(headers::SYNC_ID, cur.sync_id)
            .with(headers::MODE, cur.mode.as_str())
            .with(headers::SEQ, seq.to_string())
            .with(headers::STAMP, cur.stamp.to_string());
        let h = match self.stream.format {
            crate::config::Format::Json => h,
            other => h.with(headers::FORMAT, other.as_str()),
        };
        let body = self.claim_check(resp).await?;
        if let Some(r) = body.blob() {
            tracing::info!(source = %self.source.name, stream = %self.stream.name, size = r.size, sha256 = %r.sha256, "page over the inline limit: stored in the blob store, landing a blob-ref");
        }
        Ok(Landed {
            value: body.value(),
            headers: body.write(h, Kind::Page),
            records,
            prints: Vec::new(),
        })
    }

    /// One transaction: the pages, an optional sync marker, and the cursor record. The pages'
    /// bodies are moved out (left empty): each is freed once the producer has its copy.
    pub(in crate::fetch) async fn commit(
        &self,
        producer: &TxnProducer,
        pages: &mut [Landed],
        state: Option<&CursorState>,
        marker: Option<Kind>,
    ) -> Result<(), FetchError> {
        let landing = self.names.landing();
        let cursors = self.names.cursors();
        let key = self.key();
        let records_in: u64 = pages.iter().map(|p| p.records).sum();
        let records_out =
            (pages.len() + usize::from(marker.is_some()) + usize::from(state.is_some())) as u64;
        let lag = metrics::gauge!(metric::LAG, "stage" => Stage::Fetch.name());
        lag.increment(records_in as f64);
        let pages: Vec<(Bytes, rdkafka::message::OwnedHeaders)> = pages
            .iter_mut()
            .map(|p| (std::mem::take(&mut p.value), p.headers.clone_owned()))
            .collect();
        let cursor = state.map(|s| serde_json::to_vec(s).expect("serialisable"));
        let marker = marker.map(|k| {
            let s = state.expect("markers come with a cursor");
            let value = serde_json::json!({ "sync_id": s.sync_id, "mode": s.mode.as_str(), "pages": s.pages, "records": s.records });
            let marker = SyncMarker {
                begin: k == Kind::SyncBegin,
                sync_id: &s.sync_id,
                // A windowed backfill saw no record twice over but not every record that
                // moved between windows while it ran: it concludes no delete.
                full: s.mode == Mode::Full && s.backfill.is_none(),
            };
            let h = marker
                .write(
                    Headers::new()
                        .with(headers::SOURCE, &self.source.name)
                        .with(headers::STREAM, &self.stream.name),
                )
                .with(headers::SEQ, s.pages.to_string())
                .with(headers::FETCHED_AT, headers::now_rfc3339());
            (
                Bytes::from(serde_json::to_vec(&value).expect("serialisable")),
                h.build(),
            )
        });
        let mut outs: Vec<Out> = pages
            .into_iter()
            .chain(marker)
            .map(|(v, h)| Out {
                topic: landing.clone(),
                key: key.clone().into_bytes(),
                payload: Some(v),
                headers: h,
                partition: None,
            })
            .collect();
        if let Some(c) = cursor {
            outs.push(Out {
                topic: cursors,
                key: key.clone().into_bytes(),
                payload: Some(Bytes::from(c)),
                headers: Headers::new().build(),
                partition: None,
            });
        }
        let outcome = self.send(producer, outs).await;
        lag.decrement(records_in as f64);
        outcome?;
        metrics::counter!(metric::RECORDS_IN, "stage" => Stage::Fetch.name()).increment(records_in);
        metrics::counter!(metric::RECORDS_OUT, "stage" => Stage::Fetch.name())
            .increment(records_out);
        Ok(())
    }

    /// One transaction of `outs`, tried once: a failed commit is aborted and the worker
    /// restarts from the committed cursor.
    pub(in crate::fetch) async fn send(
        &self,
        producer: &TxnProducer,
        outs: Vec<Out>,
    ) -> Result<(), FetchError> {
        let started = std::time::Instant::now();
        let outcome = producer
            .transaction(Policy::once(), move |p| {
                // Each record is dropped once the producer has its copy: a page is not held
                // twice through the commit.
                for o in outs {
                    p.send(Outgoing {
                        topic: &o.topic,
                        key: Some(&o.key),
                        payload: o.payload.as_deref(),
                        headers: o.headers,
                        partition: o.partition,
                    })?;
                }
                Ok(())
            })
            .await;
        metrics::histogram!(metric::COMMIT_SECONDS, "stage" => Stage::Fetch.name())
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Committed { .. } => Ok(()),
            // Fatal too: the producer is unusable, and the worker's restart replaces it.
            Outcome::Fenced(e) | Outcome::Fatal(e) => Err(FetchError::Fenced {
                stream: self.key(),
                detail: e.to_string(),
            }),
            other => other.into_result().map_err(FetchError::Kafka),
        }
    }
}
