//! What validate writes: a valid record (Avro, or a claim-check reference when it is too
//! large for its topic), a dead letter, a sync marker copied to every partition; and the
//! claim-checked pages it reads.

use super::*;

impl Validate {
    /// Sends `self.buf` (already encoded) to the stream's valid topic, or the record to the DLQ
    /// as `too_large` if the topic cannot take it.
    pub(super) fn send_valid(
        &mut self,
        msg: &Consumed<'_>,
        plan: &StreamPlan,
        active: &Active,
        input: &Input<'_>,
        key: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(), Fail> {
        let hdrs = ValidStamp::upsert(input.version, content_hash(input.raw))
            .write(
                Headers::with_capacity(VALID_HEADERS)
                    .with(headers::SOURCE, &plan.source)
                    .with(headers::STREAM, &plan.stream),
            )
            .with(headers::ORIGIN, &self.prov.origin)
            .with_opt(headers::FETCHED_AT, self.prov.fetched_at.as_deref())
            .with_opt(headers::SYNC_ID, self.prov.sync_id.as_deref());
        let size = key.len() + self.buf.len() + hdrs.bytes() + FRAMING;
        let limit = self.limits.valid(&plan.valid_topic);
        let against = Against {
            subject: &plan.subject,
            version: Some(active.version),
        };
        let sent = if size > limit {
            let reference =
                match self.claim_check(plan, active, input, key.len() + hdrs.bytes(), limit)? {
                    Ok(r) => r,
                    Err(why) => return self.reject(msg, sink, input, &why, against),
                };
            let (value, blob) = reference;
            // `intake.blob` marks the reference (`intake.kind` is for sync markers here).
            let hdrs = hdrs.with(headers::BLOB, blob.header_value()).build();
            sink.send(Outgoing {
                topic: &plan.valid_topic,
                key: Some(key),
                payload: Some(&value),
                headers: hdrs,
                partition: None,
            })
        } else {
            sink.send(Outgoing {
                topic: &plan.valid_topic,
                key: Some(key),
                payload: Some(&self.buf),
                headers: hdrs.build(),
                partition: None,
            })
        };
        match sent {
            Ok(()) => {
                self.valid_counter.increment(1);
                self.tally.valid();
                Ok(())
            }
            Err(e) if classify(&e) == ErrorClass::BadRecord => {
                let why = Rejection::whole(
                    DriftKind::TooLarge,
                    format!(
                        "the producer refused the Avro record for `{}`: {e}",
                        plan.valid_topic
                    ),
                );
                self.reject(msg, sink, input, &why, against)
            }
            Err(e) => Err(Fail::Kafka(e)),
        }
    }

    /// Stores the record in `self.buf` (framed Avro over the topic's `limit`) in the blob store
    /// and returns its framed [`ClaimCheck`] reference (`key_and_header_bytes`: what the key
    /// and headers add to the message). `Ok(Err(_))`: the record cannot be
    /// stored at all (`too_large`, naming the limit); `Err`: the registry or blob store is
    /// down (the batch is retried).
    pub(super) fn claim_check(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
        input: &Input<'_>,
        key_and_header_bytes: usize,
        limit: usize,
    ) -> Result<Result<(Vec<u8>, BlobRef), Rejection>, Fail> {
        if input.raw.len() > self.max_record_bytes {
            return Ok(Err(Rejection::whole(
                DriftKind::TooLarge,
                format!(
                    "the record is {} bytes; blob.max_record_bytes (the largest record stored by claim-check) is {}",
                    input.raw.len(),
                    self.max_record_bytes
                ),
            )));
        }
        let claim_id = self.claim_check_id(plan)?;
        let blob = match self
            .rt
            .block_on(self.blobs.put(Bytes::copy_from_slice(&self.buf)))
        {
            Ok(b) => b,
            Err(e) => {
                return Err(Fail::System(format!(
                    "storing a {} byte record of `{}` by claim-check: {e}",
                    self.buf.len(),
                    plan.valid_topic
                )));
            }
        };
        let reference = ClaimCheck {
            key: match &plan.key {
                // Every key field by name (the record's key was made from them just before).
                Some(fields) => std::str::from_utf8(input.raw)
                    .ok()
                    .and_then(|t| fields.raw_values(t).ok())
                    .map(|v| fields.texts(&v).into_iter().collect())
                    .unwrap_or_default(),
                None => [(plan.key_field.clone(), input.key.to_owned())].into(),
            },
            version: input.version,
            blob: blob.clone(),
            schema_id: active.id,
        };
        let value = crate::registry::wire::frame(claim_id, &reference.to_datum());
        // The reference carries two more headers than an inline record.
        let size = value.len() + key_and_header_bytes + blob.uri.len() + 160 + FRAMING;
        if size > limit {
            return Ok(Err(Rejection::whole(
                DriftKind::TooLarge,
                format!(
                    "even the claim-check reference is {size} bytes; `{}` takes at most {limit} (max_message_bytes)",
                    plan.valid_topic
                ),
            )));
        }
        metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "claim_checked")
            .increment(1);
        Ok(Ok((value, blob)))
    }

    /// The id of the claim-check schema for a stream, registered under the claim-check subject
    /// of its valid and of its curated topic on first use (the same text, so the same id).
    pub(super) fn claim_check_id(&mut self, plan: &StreamPlan) -> Result<u32, Fail> {
        if let Some(id) = self.claim_ids.get(&plan.valid_topic) {
            return Ok(*id);
        }
        let mut id = 0;
        for topic in [&plan.valid_topic, &plan.curated_topic] {
            let subject = crate::blob::claim_check_subject(plan.strategy, topic);
            match self.rt.block_on(
                self.registry
                    .register(&subject, crate::blob::CLAIM_CHECK_SCHEMA),
            ) {
                Ok(r) => id = r.id,
                Err(e) => {
                    return Err(Fail::System(format!(
                        "registering the claim-check schema under `{subject}`: {e}"
                    )));
                }
            }
        }
        self.claim_ids.insert(plan.valid_topic.clone(), id);
        Ok(id)
    }

    /// One record to the DLQ: its own bytes (or the whole event), with its index in the page.
    pub(super) fn reject(
        &mut self,
        msg: &Consumed<'_>,
        sink: &mut Sink<'_>,
        input: &Input<'_>,
        why: &Rejection,
        against: Against<'_>,
    ) -> Result<(), Fail> {
        self.dead_letter(
            msg,
            sink,
            Some(input.dlq_value),
            why,
            Some(against),
            input.index,
        )
    }

    /// A dead letter of what failed as a whole before any schema was tried (a page or event
    /// that cannot be split, a blob that cannot be read): against the stream's subject with no
    /// version, and no record index.
    pub(super) fn dead_letter_unversioned(
        &mut self,
        msg: &Consumed<'_>,
        sink: &mut Sink<'_>,
        plan: &StreamPlan,
        value: Option<&[u8]>,
        why: &Rejection,
    ) -> Result<(), Fail> {
        self.dead_letter(msg, sink, value, why, Some(plan.unversioned()), None)
    }

    /// Sends rejected bytes to the DLQ with the landing key and headers and the `dlq.*` ones.
    pub(super) fn dead_letter(
        &mut self,
        msg: &Consumed<'_>,
        sink: &mut Sink<'_>,
        value: Option<&[u8]>,
        why: &Rejection,
        against: Option<Against<'_>>,
        index: Option<usize>,
    ) -> Result<(), Fail> {
        let origin = reject::origin(msg.topic(), msg.partition(), msg.offset(), index);
        let at = headers::now_rfc3339();
        let mut hdrs = reject::headers(msg.headers(), why, against, &origin, &at);
        // The failure's identity (for the quiet DLQ) is the record's own bytes, however the
        // dead letter stores them.
        let received = value;
        let mut value = value;
        let key_len = msg.key().map_or(0, <[u8]>::len);
        let size = key_len + value.map_or(0, <[u8]>::len) + reject::header_bytes(&hdrs) + FRAMING;
        if size > self.limits.dlq && index.is_some() {
            // One record of a claim-checked page, too large even for the DLQ: keep it by
            // reference to the landing record it came from (`dlq.origin` has its index).
            let noted = why.clone().with_note(&format!(
                "the record is over the DLQ's {} byte limit: the value is the landing value it came from; record #{} of it",
                self.limits.dlq,
                index.unwrap_or_default()
            ));
            hdrs = reject::headers(msg.headers(), &noted, against, &origin, &at);
            value = msg.payload();
        }
        self.tally.dead_letter(index);
        metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "dlq", "kind" => why.kind)
            .increment(1);
        let landing = LandingHeaders::read(msg.headers());
        let quiet = match (landing.source, landing.stream) {
            (Some(source), Some(stream))
                if self.quiet.on()
                    && headers::get(msg.headers(), headers::REPLAY_ID).is_none()
                    && self.plans.get(source, stream).is_some() =>
            {
                let failure = quiet::Failure {
                    source,
                    stream,
                    landing_partition: msg.partition(),
                    kind: why.kind,
                    field: why.field.as_deref(),
                    value: received.unwrap_or_default(),
                    origin: &origin,
                };
                Some(self.quiet.judge(&failure, time::OffsetDateTime::now_utc()))
            }
            _ => None,
        };
        let entry = match quiet {
            Some(quiet::Verdict::Repeat(entry)) => {
                tracing::debug!(kind = why.kind, field = why.field.as_deref(), origin = %origin, occurrences = entry.occurrences, "dead letter repeated: counted, not written again");
                metrics::counter!(crate::telemetry::metric::DLQ_REPEATS, "kind" => why.kind)
                    .increment(1);
                return self.send_dlq_entry(msg, sink, &entry);
            }
            Some(quiet::Verdict::Write(entry)) => Some(entry),
            None => None,
        };
        tracing::debug!(kind = why.kind, field = why.field.as_deref(), origin = %origin, "dead letter");
        let sent = sink.send(Outgoing {
            topic: &self.dlq,
            key: msg.key(),
            payload: value,
            headers: hdrs,
            partition: None,
        });
        sent.map_err(|e| {
            tracing::error!(error = %e, origin = %origin, kind = why.kind, "cannot write a dead letter; the batch is retried (operator needed if this persists)");
            Fail::Kafka(e)
        })?;
        match entry {
            Some(entry) => self.send_dlq_entry(msg, sink, &entry),
            None => Ok(()),
        }
    }

    /// Writes a dead letter's entry to the dlq-index partition of its landing partition.
    fn send_dlq_entry(
        &mut self,
        msg: &Consumed<'_>,
        sink: &mut Sink<'_>,
        entry: &crate::contract::DlqRepeat,
    ) -> Result<(), Fail> {
        let topic = self.quiet.topic().to_owned();
        let n = self.partition_count(&topic)?.max(1);
        let key = entry.key();
        let value = entry.to_json();
        sink.send(Outgoing {
            topic: &topic,
            key: Some(key.as_bytes()),
            payload: Some(&value),
            headers: Headers::new().build(),
            partition: Some(msg.partition() % n),
        })
        .map_err(Fail::Kafka)
    }

    /// One copy of a sync marker to every partition of the stream's valid topic.
    pub(super) fn on_marker(
        &mut self,
        msg: &Consumed<'_>,
        plan: &StreamPlan,
        sink: &mut Sink<'_>,
    ) -> Result<(), Fail> {
        let n = self.partition_count(&plan.valid_topic)?;
        let h = msg.headers();
        for p in 0..n {
            let hdrs = SyncMarker::copy(h, Headers::new())
                // Dedup takes a full sync's start from it (records can overtake the marker).
                .with_opt(headers::FETCHED_AT, headers::get(h, headers::FETCHED_AT))
                .with(headers::SOURCE, &plan.source)
                .with(headers::STREAM, &plan.stream)
                .build();
            sink.send(Outgoing {
                topic: &plan.valid_topic,
                key: msg.key(),
                payload: msg.payload(),
                headers: hdrs,
                partition: Some(p),
            })
            .map_err(Fail::Kafka)?;
        }
        metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "marker")
            .increment(1);
        Ok(())
    }

    /// The claim-checked page of a `blob-ref`. `Err(Ok)`: unreadable for good (bad data);
    /// `Err(Err)`: the store is unavailable (retry).
    pub(super) fn read_blob(&self, msg: &Consumed<'_>) -> Result<Bytes, Result<Rejection, Fail>> {
        let from_header = crate::contract::LandedBody::read_blob(msg.headers());
        let reference = from_header
            .or_else(|| serde_json::from_slice::<BlobRef>(msg.payload().unwrap_or_default()).ok());
        let Some(reference) = reference else {
            return Err(Ok(Rejection::blob_unreadable(format!(
                "no `{}` header or reference value to read",
                headers::BLOB
            ))));
        };
        match self.rt.block_on(self.blobs.get(&reference)) {
            Ok(bytes) => Ok(bytes),
            Err(
                e @ (BlobError::Corrupt { .. } | BlobError::Foreign(_) | BlobError::Url { .. }),
            ) => Err(Ok(Rejection::blob_unreadable(e))),
            Err(BlobError::Store(object_store::Error::NotFound { path, .. })) => {
                Err(Ok(Rejection::blob_unreadable(format!(
                    "blob {} not found (path {path})",
                    reference.uri
                ))))
            }
            Err(e) => Err(Err(Fail::System(format!(
                "reading blob {}: {e}",
                reference.uri
            )))),
        }
    }
}
