//! Webhook events landed by serve: an upsert validated like a page's record (its version is
//! the event's sequence number), or a delete, keyed by the entity.

use super::*;

impl Validate {
    /// A webhook event: an upsert validated like a page record, or a delete.
    pub(super) fn on_event(&mut self, msg: &Consumed<'_>, sink: &mut Sink<'_>) -> Result<(), Fail> {
        // An event over serve's inline limit was stored by claim-check (`intake.blob`).
        let stored;
        let value = if headers::get(msg.headers(), headers::BLOB).is_some() {
            match self.read_blob(msg) {
                Ok(bytes) => {
                    stored = bytes;
                    &stored[..]
                }
                Err(Ok(why)) => {
                    return self.dead_letter(msg, sink, msg.payload(), &why, None, None);
                }
                Err(Err(fail)) => return Err(fail),
            }
        } else {
            msg.payload().unwrap_or_default()
        };
        let Some(source) = headers::get_str(msg.headers(), headers::SOURCE) else {
            let why = Rejection::whole(
                DriftKind::NotAPage,
                format!("event without a `{}` header", headers::SOURCE),
            );
            return self.dead_letter(msg, sink, Some(value), &why, None, None);
        };
        let Some(shape) = self.plans.events.get(source).cloned() else {
            let why = Rejection::whole(
                DriftKind::NoSchema,
                format!("source `{source}` is not in this process's configuration"),
            );
            return self.dead_letter(msg, sink, Some(value), &why, None, None);
        };
        let mapped = event_from_headers(msg);
        let event = match mapped.unwrap_or_else(|| parse_event(value, &shape)) {
            Ok(e) => e,
            Err(why) => return self.dead_letter(msg, sink, Some(value), &why, None, None),
        };
        let Some(plan) = self.plans.get(source, &event.stream) else {
            let why = Rejection::whole(
                DriftKind::NoSchema,
                format!(
                    "event for stream `{source}/{}`, which is not in this process's configuration",
                    event.stream
                ),
            );
            return self.dead_letter(msg, sink, Some(value), &why, None, None);
        };
        match event.op {
            EventOp::Delete => {
                let h = msg.headers();
                let hdrs = ValidStamp::delete(event.seq)
                    .write(
                        Headers::new()
                            .with(headers::SOURCE, &plan.source)
                            .with(headers::STREAM, &plan.stream),
                    )
                    .with(
                        headers::ORIGIN,
                        reject::origin(msg.topic(), msg.partition(), msg.offset(), None),
                    )
                    .with_opt(headers::FETCHED_AT, headers::get(h, headers::FETCHED_AT))
                    .with_opt(headers::SYNC_ID, headers::get(h, headers::SYNC_ID))
                    .build();
                let key = match &plan.key {
                    None => event.entity_id.unwrap_or_default().into_bytes(),
                    Some(_) => match self.delete_key(&plan, value, &shape)? {
                        Ok(k) => k,
                        Err(why) => {
                            return self.dead_letter_unversioned(
                                msg,
                                sink,
                                &plan,
                                Some(value),
                                &why,
                            );
                        }
                    },
                };
                sink.send(Outgoing {
                    topic: &plan.valid_topic,
                    key: Some(&key),
                    payload: None,
                    headers: hdrs,
                    partition: None,
                })
                .map_err(Fail::Kafka)?;
                metrics::counter!(crate::telemetry::metric::VALIDATE_RECORDS, "outcome" => "delete")
                    .increment(1);
                Ok(())
            }
            EventOp::Upsert => {
                let record = match plan.events.split(value) {
                    Ok(mut split) if split.len() == 1 => split.swap_remove(0),
                    not_one => {
                        let why: Rejection = match not_one {
                            Ok(_) => Rejection::whole(
                                DriftKind::NotAPage,
                                "an event's record (at the source's webhook.record) is one object",
                            ),
                            Err(e) => e.into(),
                        };
                        return self.dead_letter_unversioned(msg, sink, &plan, Some(value), &why);
                    }
                };
                let mut schema = self.schema(&plan)?;
                match record {
                    Ok(r) => {
                        let input = Input {
                            raw: r.bytes(),
                            key: &r.key,
                            version: Some(event.seq),
                            index: None,
                            dlq_value: value,
                        };
                        self.on_record(msg, &plan, &mut schema, &input, None, sink)
                    }
                    Err(bad) => {
                        let against = dlq_against(&plan, &schema);
                        self.dead_letter(
                            msg,
                            sink,
                            Some(value),
                            &(&bad.error).into(),
                            Some(against),
                            None,
                        )
                    }
                }
            }
        }
    }

    /// The Avro key of a delete event (`key_format = "avro"`): the key fields from the event's
    /// `data` when it holds them all, else — for a one-field key — the event's entity id. A
    /// composite key whose fields the event does not carry cannot be made (`missing_key`).
    pub(super) fn delete_key(
        &mut self,
        plan: &StreamPlan,
        event: &[u8],
        shape: &EventShape,
    ) -> Result<Result<Vec<u8>, Rejection>, Fail> {
        let Some(fields) = &plan.key else {
            return Ok(Err(Rejection::whole(
                DriftKind::MissingKey,
                "the stream has no Avro key fields",
            )));
        };
        let active = match self.schema(plan)? {
            SchemaState::Ready(a) => a,
            SchemaState::Missing { why, .. } => return Ok(Err(why)),
        };
        let codec = match self.key_codec(plan, &active)? {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(Rejection::whole(
                    DriftKind::NoSchema,
                    format!("key_format = \"avro\": {e}"),
                )));
            }
        };
        // The envelope parsed before (`parse_event`), so it is JSON.
        let json: Json = serde_json::from_slice(event).unwrap_or(Json::Null);
        match fields.delete_json(&json, &shape.entity_id) {
            Ok(key) => Ok(encode_key(&codec, &key)),
            Err(e) => Ok(Err(e.into())),
        }
    }
}

/// What an event does to its entity (`created` or `updated`: an upsert whose `data` is the
/// record; `deleted`: no record).
pub use crate::contract::Op as EventOp;

/// The envelope of a webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    /// From `type`.
    pub op: EventOp,
    /// The stream the entity belongs to.
    pub stream: String,
    /// The entity id (required for a delete; strings as is, integers in decimal).
    pub entity_id: Option<String>,
    /// The sequence number: the version of the record.
    pub seq: i64,
}

/// The event as serve mapped it at landing (`intake.op`, `intake.stream`, `intake.seq` and the
/// key: see `serve::events`), or `None` for an event landed without a mapping (before serve
/// mapped events), whose envelope [`parse_event`] reads.
pub(super) fn event_from_headers(msg: &Consumed<'_>) -> Option<Result<EventEnvelope, Rejection>> {
    let h = msg.headers();
    let op = headers::get_str(h, headers::OP)?;
    let bad = |why: String| Rejection::whole(DriftKind::NotAPage, why);
    let Some(op) = EventOp::parse(op) else {
        return Some(Err(bad(format!("the event's `{}` is `{op}`", headers::OP))));
    };
    let Some(stream) = headers::get_str(h, headers::STREAM).filter(|s| !s.is_empty()) else {
        return Some(Err(bad(format!(
            "a mapped event without `{}`",
            headers::STREAM
        ))));
    };
    let Some(seq) = headers::get_str(h, headers::SEQ).and_then(|s| s.parse::<i64>().ok()) else {
        return Some(Err(Rejection::whole(
            DriftKind::BadVersion,
            format!("a mapped event without an integer `{}`", headers::SEQ),
        )));
    };
    let entity_id = msg
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    if op == EventOp::Delete && entity_id.is_none() {
        return Some(Err(Rejection::whole(
            DriftKind::MissingKey,
            "a mapped delete event without a key",
        )));
    }
    Some(Ok(EventEnvelope {
        op,
        stream: stream.to_owned(),
        entity_id,
        seq,
    }))
}

/// Parses a webhook event's envelope:
/// `{"event_id", "type": "created|updated|deleted", "stream", "entity_id", "seq", "data"}`
/// (entity id, sequence and stream at the source's configured pointers).
///
/// # Errors
/// The [`Rejection`] for the DLQ: `not_utf8`, `malformed_json`, `not_a_page` (not an object,
/// no stream, an unknown type), `bad_version` (the sequence), `missing_key` (a delete without
/// an entity id).
pub fn parse_event(value: &[u8], shape: &EventShape) -> Result<EventEnvelope, Rejection> {
    let text = std::str::from_utf8(value).map_err(|e| {
        Rejection::whole(
            DriftKind::NotUtf8,
            format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
        )
    })?;
    let json: Json = serde_json::from_str(text)
        .map_err(|e| Rejection::from(RecordError::malformed(&e, value)))?;
    if !json.is_object() {
        return Err(Rejection::whole(
            DriftKind::NotAPage,
            "an event is a JSON object",
        ));
    }
    let field = |pointer: &str| pointer.trim_start_matches('/').replace('/', ".");
    let stream = match json.pointer(&shape.stream) {
        Some(Json::String(s)) if !s.is_empty() => s.clone(),
        other => {
            return Err(Rejection::at(
                DriftKind::NotAPage,
                field(&shape.stream),
                format!("the event's stream {}", describe(other)),
            ));
        }
    };
    let op = match json.get("type") {
        Some(Json::String(t)) if t == "created" || t == "updated" => EventOp::Upsert,
        Some(Json::String(t)) if t == "deleted" => EventOp::Delete,
        other => {
            return Err(Rejection::at(
                DriftKind::NotAPage,
                "type",
                format!(
                    "the event type {}; expected created, updated or deleted",
                    describe(other)
                ),
            ));
        }
    };
    let seq = match json.pointer(&shape.sequence) {
        Some(v) => parse_version(&v.to_string()),
        None => Err("is absent".to_owned()),
    }
    .map_err(|why| Rejection::at(DriftKind::BadVersion, field(&shape.sequence), why))?;
    let entity_id = match json.pointer(&shape.entity_id) {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Json::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    };
    if op == EventOp::Delete && entity_id.is_none() {
        let found = describe(json.pointer(&shape.entity_id));
        return Err(Rejection::at(
            DriftKind::MissingKey,
            field(&shape.entity_id),
            format!("a delete event's entity id {found}"),
        ));
    }
    Ok(EventEnvelope {
        op,
        stream,
        entity_id,
        seq,
    })
}

/// "is absent", "is `x`", "is 3": for messages.
pub(super) fn describe(v: Option<&Json>) -> String {
    match v {
        None => "is absent".into(),
        Some(Json::Null) => "is null".into(),
        Some(Json::String(s)) if s.is_empty() => "is empty".into(),
        Some(Json::String(s)) => format!("is `{s}`"),
        Some(other) => format!("is {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> EventShape {
        EventShape::default()
    }

    #[test]
    fn created_and_updated_events_are_upserts_versioned_by_seq() {
        let e = parse_event(br#"{"event_id":"e1","type":"created","stream":"customers","entity_id":"c-1","seq":7,"data":{"id":"c-1"}}"#, &shape()).unwrap();
        assert_eq!(
            e,
            EventEnvelope {
                op: EventOp::Upsert,
                stream: "customers".into(),
                entity_id: Some("c-1".into()),
                seq: 7
            }
        );
        let e = parse_event(br#"{"type":"updated","stream":"orders","entity_id":42,"seq":"2024-01-01T00:00:00Z","data":{}}"#, &shape()).unwrap();
        assert_eq!(e.op, EventOp::Upsert);
        assert_eq!(e.entity_id.as_deref(), Some("42"));
        assert_eq!(e.seq, 1_704_067_200_000_000);
    }

    #[test]
    fn deleted_events_need_an_entity_id() {
        let e = parse_event(br#"{"event_id":"e2","type":"deleted","stream":"customers","entity_id":"c-1","seq":9,"data":null}"#, &shape()).unwrap();
        assert_eq!(
            e,
            EventEnvelope {
                op: EventOp::Delete,
                stream: "customers".into(),
                entity_id: Some("c-1".into()),
                seq: 9
            }
        );
        let err = parse_event(
            br#"{"type":"deleted","stream":"customers","seq":9,"data":null}"#,
            &shape(),
        )
        .unwrap_err();
        assert_eq!(err.kind, "missing_key");
        assert_eq!(err.field.as_deref(), Some("entity_id"));
        assert_eq!(
            err.detail,
            "missing primary key at field `entity_id`: a delete event's entity id is absent"
        );
    }

    #[test]
    fn broken_envelopes_are_classified_and_name_the_field() {
        let cases: [(&[u8], &str, Option<&str>); 7] = [
            (b"\xff\xfe", "not_utf8", None),
            (b"{\"type\":", "malformed_json", None),
            (b"[1,2]", "not_a_page", None),
            (
                br#"{"type":"created","seq":1,"data":{}}"#,
                "not_a_page",
                Some("stream"),
            ),
            (
                br#"{"type":"renamed","stream":"s","seq":1}"#,
                "not_a_page",
                Some("type"),
            ),
            (
                br#"{"type":"created","stream":"s","seq":1.5}"#,
                "bad_version",
                Some("seq"),
            ),
            (
                br#"{"type":"created","stream":"s"}"#,
                "bad_version",
                Some("seq"),
            ),
        ];
        for (input, kind, field) in cases {
            let err = parse_event(input, &shape()).unwrap_err();
            assert_eq!(
                (err.kind, err.field.as_deref()),
                (kind, field),
                "{}",
                String::from_utf8_lossy(input)
            );
            if let Some(f) = field {
                assert!(err.detail.contains(&format!("`{f}`")), "{}", err.detail);
            }
        }
    }

    #[test]
    fn configured_pointers_are_used() {
        let shape = EventShape {
            entity_id: "/entity/id".into(),
            sequence: "/meta/seq".into(),
            stream: "/meta/stream".into(),
        };
        let e = parse_event(
            br#"{"type":"deleted","entity":{"id":"x"},"meta":{"seq":3,"stream":"orders"}}"#,
            &shape,
        )
        .unwrap();
        assert_eq!(
            e,
            EventEnvelope {
                op: EventOp::Delete,
                stream: "orders".into(),
                entity_id: Some("x".into()),
                seq: 3
            }
        );
        let err =
            parse_event(br#"{"type":"created","meta":{"stream":"orders"}}"#, &shape).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("meta.seq"));
    }

    #[test]
    fn an_event_record_is_its_data_member_with_raw_bytes_kept() {
        let splitter = Splitter::new("/data", "/id", None).unwrap();
        let event = br#"{"type":"created","stream":"s","seq":1,"data": {"id":"c-1", "n":1} }"#;
        let split = splitter.split(event).unwrap();
        let r = split[0].as_ref().unwrap();
        assert_eq!(r.raw, r#"{"id":"c-1", "n":1}"#);
        assert_eq!(r.key, "c-1");
        let null_data = splitter
            .split(br#"{"type":"created","data":null}"#)
            .unwrap_err();
        assert_eq!(null_data.kind, DriftKind::NotAPage);
    }
}
