//! Asynchronous exports (`export = { ... }` on a stream): bulk APIs that answer a request with
//! a job, not with records — Shopify bulk operations, Salesforce Bulk 2.0, HubSpot exports.
//!
//! A sync of such a stream moves through its cursor's [`ExportCursor`], one committed step at a
//! time, so a crash at any point resumes where the last commit left it:
//!
//! 1. the stream's own request (path, method, body, `{since}` for an incremental export) asks
//!    for an export; its id is committed with the cursor;
//! 2. `export.status_path` is polled every `poll_every` (each look through the token's pacer)
//!    until the state is `done`; the files it names are committed with the cursor;
//! 3. each file is downloaded and landed as a page of the stream's `format`, in one
//!    transaction with the cursor counting it (a file lands exactly once: a crash before the
//!    commit downloads it again, after it the next file);
//! 4. once every file has landed, the export is deleted (`cleanup`, best effort) and the sync
//!    completes.
//!
//! A `failed` state, no files after `max_wait`, or an export the API no longer knows (404 or
//! 410 on its state or a file: expired) clears the export from the cursor: the stream pauses
//! with the reason, and its next attempt asks for a new export (files already landed are
//! landed again by it; dedup keeps each record once).

use serde_json::Value;

use super::cursor::{CursorState, ExportCursor, next_stamp};
use super::http::HttpError;
use super::paginate::PageCursor;
use super::request::Shape;
use super::stream::{BatchError, Landed, StreamWorker};
use crate::config::ExportConfig;
use crate::kafka::TxnProducer;

impl StreamWorker {
    /// One step of the export the sync at `next` reads (see the module docs); `create` and
    /// `shape` are the stream's request, which asks for a new export.
    pub(super) async fn export_step(
        &self,
        mut next: CursorState,
        export: &ExportConfig,
        create: &url::Url,
        shape: &Shape,
        producer: &TxnProducer,
    ) -> Result<(Vec<Landed>, CursorState), BatchError> {
        let Some(job) = next.export.clone() else {
            let (resp, body) = self.get_parsed_json(create, shape).await?;
            let id = match body.pointer(&export.id) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(self.refused(
                        &resp.url,
                        resp.status,
                        format!(
                            "the answer that created the export has no id at `{}`",
                            export.id
                        ),
                    ));
                }
            };
            tracing::info!(source = %self.source.name, stream = %self.stream.name, export = %id, "export requested");
            next.export = Some(ExportCursor {
                id,
                files: None,
                landed: 0,
            });
            return Ok((Vec::new(), next));
        };
        let status = self.export_url(&export.status_path.replace("{id}", &job.id))?;
        let Some(files) = job.files.clone() else {
            return self
                .wait_for_files(next, export, &job, &status, &read_shape(shape), producer)
                .await;
        };
        if job.landed >= files.len() {
            if export.cleanup {
                self.delete_export(&status, shape, &job.id).await;
            }
            next.passed(PageCursor::Done, None);
            next.finish_if_done(time::OffsetDateTime::now_utc());
            return Ok((Vec::new(), next));
        }
        let file = self.export_url(&files[job.landed])?;
        let (resp, body) = match self.get_parsed(&file, &read_shape(shape), producer).await {
            Err(BatchError::Http(HttpError::Client {
                status: 404 | 410,
                url,
                ..
            })) => {
                let why = format!(
                    "file {} of export {} is gone ({url})",
                    job.landed + 1,
                    job.id
                );
                return self.abandon(next, producer, why).await;
            }
            other => other?,
        };
        let recs = body
            .pointer(self.stream.records_pointer())
            .and_then(Value::as_array);
        let count = recs.map_or(0, Vec::len) as u64;
        self.saw_records(recs, &mut next);
        next.stamp = next_stamp(next.stamp, time::OffsetDateTime::now_utc());
        let seq = next.pages;
        let landed = self
            .land(&resp, next.place(), &next.page, seq, count)
            .await?;
        tracing::info!(source = %self.source.name, stream = %self.stream.name, export = %job.id, file = job.landed + 1, files = files.len(), records = count, "export file landed");
        let page = next.page.clone();
        next.passed(page, Some(count));
        if let Some(e) = next.export.as_mut() {
            e.landed += 1;
        }
        Ok((vec![landed], next))
    }

    /// Polls the export's state until its files are ready (committed with the cursor), or it
    /// failed.
    async fn wait_for_files(
        &self,
        mut next: CursorState,
        export: &ExportConfig,
        job: &ExportCursor,
        status: &url::Url,
        shape: &Shape,
        producer: &TxnProducer,
    ) -> Result<(Vec<Landed>, CursorState), BatchError> {
        let started = std::time::Instant::now();
        loop {
            let (resp, body) = match self.get_parsed_json(status, shape).await {
                Err(BatchError::Http(HttpError::Client {
                    status: 404 | 410,
                    url,
                    ..
                })) => {
                    let why = format!("export {} is gone ({url})", job.id);
                    return self.abandon(next, producer, why).await;
                }
                other => other?,
            };
            let state = body
                .pointer(&export.state)
                .and_then(Value::as_str)
                .unwrap_or_default();
            if export.done.iter().any(|d| d == state) {
                let files = files_of(body.pointer(&export.files));
                tracing::info!(source = %self.source.name, stream = %self.stream.name, export = %job.id, files = files.len(), waited_s = started.elapsed().as_secs(), "export ready");
                if let Some(e) = next.export.as_mut() {
                    e.files = Some(files);
                }
                return Ok((Vec::new(), next));
            }
            if export.failed.iter().any(|f| f == state) {
                let why = format!("export {} ended `{state}` ({})", job.id, resp.url);
                return self.abandon(next, producer, why).await;
            }
            if started.elapsed() >= export.max_wait {
                let why = format!(
                    "export {} still `{state}` after {} s",
                    job.id,
                    export.max_wait.as_secs()
                );
                return self.abandon(next, producer, why).await;
            }
            tracing::debug!(source = %self.source.name, stream = %self.stream.name, export = %job.id, state, "export not ready yet");
            tokio::time::sleep(export.poll_every).await;
        }
    }

    /// Clears the export from the cursor (committed at once) and pauses the stream with `why`;
    /// its next attempt asks for a new export.
    async fn abandon(
        &self,
        mut next: CursorState,
        producer: &TxnProducer,
        why: String,
    ) -> Result<(Vec<Landed>, CursorState), BatchError> {
        tracing::warn!(source = %self.source.name, stream = %self.stream.name, reason = %why, "export abandoned: the next attempt asks for a new one");
        next.export = None;
        self.commit(producer, &mut [], Some(&next), None)
            .await
            .map_err(BatchError::Fatal)?;
        Err(self.refused("", 0, why))
    }

    /// Deletes a finished export; a failure is only logged (the API expires exports anyway).
    async fn delete_export(&self, status: &url::Url, shape: &Shape, id: &str) {
        let shape = Shape {
            delete: true,
            ..read_shape(shape)
        };
        match self.http.request(status, &shape, &self.pacer).await {
            Ok(r) => {
                tracing::info!(source = %self.source.name, stream = %self.stream.name, export = %id, status = r.status, "export deleted")
            }
            Err(e) => {
                tracing::warn!(source = %self.source.name, stream = %self.stream.name, export = %id, error = %e, "deleting the export failed; the API expires it")
            }
        }
    }

    /// A JSON answer about the export (its creation or state), not landed.
    async fn get_parsed_json(
        &self,
        url: &url::Url,
        shape: &Shape,
    ) -> Result<(super::http::Response, Value), BatchError> {
        let resp = self
            .http
            .request(url, shape, &self.pacer)
            .await
            .map_err(BatchError::Http)?;
        match serde_json::from_slice(&resp.body) {
            Ok(v) => Ok((resp, v)),
            Err(e) => Err(self.refused(
                &resp.url,
                resp.status,
                format!("the export's answer is not JSON: {e}"),
            )),
        }
    }

    /// A URL below the source's base URL, or an absolute one.
    fn export_url(&self, at: &str) -> Result<url::Url, BatchError> {
        let base = self.source.base_url.as_deref().unwrap_or_default();
        url::Url::parse(base)
            .and_then(|b| b.join(at))
            .map_err(|e| self.refused(base, 0, format!("export URL `{at}`: {e}")))
    }

    fn refused(&self, url: &str, status: u16, why: String) -> BatchError {
        BatchError::Http(HttpError::Client {
            url: url.to_owned(),
            status,
            body: why,
        })
    }
}

/// The stream's request shape for reading the export (its state, its files): its headers and
/// status rules, as a GET without a body.
fn read_shape(shape: &Shape) -> Shape {
    Shape {
        post: false,
        delete: false,
        body: None,
        ..shape.clone()
    }
}

/// The file URLs of a status answer: an array of strings or of objects with `url`, or one
/// string.
fn files_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("url").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_as_strings_objects_or_one_url() {
        let v: Value = serde_json::json!(["/a", {"url": "https://cdn/b"}, 3, {"x": 1}]);
        assert_eq!(files_of(Some(&v)), ["/a", "https://cdn/b"]);
        assert_eq!(files_of(Some(&Value::from("/one"))), ["/one"]);
        assert!(files_of(None).is_empty());
        assert!(files_of(Some(&Value::Null)).is_empty());
    }
}
