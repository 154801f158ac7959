//! The schemas records are checked against: the latest registered version of a stream's
//! subject, compiled and cached; a first schema inferred and registered (drift policy
//! `evolve`); each schema mirrored under the curated topic's subject; and the key schema of a
//! stream with `key_format = "avro"`.

use super::*;

impl Validate {
    /// The key schema of a stream with `key_format = "avro"` for the value schema `active`:
    /// derived, compiled and registered under both key subjects once per value schema id.
    /// `Ok(Err(_))`: no key schema can be made (the reason, for the DLQ); `Err`: the registry
    /// is down (the batch is retried).
    pub(super) fn key_codec(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
    ) -> Result<Result<Arc<KeyCodec>, String>, Fail> {
        if let Some(c) = self
            .key_codecs
            .get(plan.valid_topic.as_str())
            .and_then(|m| m.get(&active.id))
        {
            return Ok(c.clone());
        }
        let codec = match compile_key_schema(&active.schema, &plan.config.primary_key) {
            Err(e) => Err(e),
            Ok((text, validator)) => match self.rt.block_on(registry::apply_key(
                &self.registry,
                plan.strategy,
                &plan.valid_topic,
                &plan.curated_topic,
                &text,
            )) {
                Ok((id, _)) => Ok(Arc::new(KeyCodec { id, validator })),
                Err(
                    e @ (RegistryError::Incompatible { .. } | RegistryError::InvalidSchema { .. }),
                ) => Err(e.to_string()),
                Err(e) => {
                    return Err(Fail::System(format!(
                        "registering the key schema of `{}`: {e}",
                        plan.valid_topic
                    )));
                }
            },
        };
        if let Err(e) = &codec {
            tracing::warn!(source = %plan.source, stream = %plan.stream, value_schema_id = active.id, error = %e,
                "no Avro key schema for this value schema: its records go to the DLQ");
        }
        self.key_codecs
            .entry(plan.valid_topic.clone())
            .or_default()
            .insert(active.id, codec.clone());
        Ok(codec)
    }

    /// The Confluent-framed Avro key of a record (`key_format = "avro"`) from its raw JSON.
    /// `Ok(Err(_))`: a key field is absent, null or of the wrong type, or no key schema can
    /// be made (for the DLQ, naming the field); `Err`: the registry is down.
    pub(super) fn avro_key(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
        raw: &[u8],
    ) -> Result<Result<Vec<u8>, Rejection>, Fail> {
        let Some(fields) = &plan.key else {
            return Ok(Err(Rejection::whole(
                DriftKind::MissingKey,
                "the stream has no Avro key fields",
            )));
        };
        let codec = match self.key_codec(plan, active)? {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(Rejection::whole(
                    DriftKind::NoSchema,
                    format!("key_format = \"avro\": {e}"),
                )));
            }
        };
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                return Ok(Err(Rejection::whole(
                    DriftKind::NotUtf8,
                    format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
                )));
            }
        };
        let values = match fields.raw_values(text) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(encode_key(&codec, &fields.json(&values)))
    }

    /// `self.buf` = the record in the Confluent wire format.
    pub(super) fn encode(&mut self, active: &Active, raw: &[u8]) -> Result<(), RecordError> {
        self.frame(active);
        active.validator.encode_raw_into(raw, &mut self.buf)
    }

    /// [`Validate::encode`] for a record split from a page (so UTF-8), noting members on the
    /// way (see [`Validator::encode_str_into`]).
    pub(super) fn encode_str(
        &mut self,
        active: &Active,
        raw: &str,
        capture: &mut Capture<'_>,
    ) -> Result<(), RecordError> {
        self.frame(active);
        active
            .validator
            .encode_str_into(raw, &mut self.buf, capture)
    }

    /// `self.buf` = the Confluent header (magic 0, schema id big-endian), written in place: no
    /// frame per record.
    pub(super) fn frame(&mut self, active: &Active) {
        self.buf.clear();
        self.buf.push(0);
        self.buf.extend_from_slice(&active.id.to_be_bytes());
    }

    /// Makes sure the curated topic's subject holds `latest` (the schema validate is about to
    /// use for a stream), so that tools looking schemas up by topic name find every schema the
    /// curated records carry, evolved ones included. `schemas apply` and evolve register both
    /// subjects with the same text (the same id); this repairs a process that died between the
    /// two, registering the schema unless the subject's latest version already is it. A
    /// registry that is down is retried like any lookup.
    pub(super) fn mirror(&mut self, plan: &StreamPlan, latest: &Latest) -> Result<(), Fail> {
        let subject = plan.subject.as_str();
        let downstream = match registry::downstream_subject(
            plan.strategy,
            &plan.curated_topic,
            &latest.text,
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(subject, error = %e, "no downstream subject for this schema under the configured registry.subject_strategy");
                self.mirrored.insert(subject.to_owned(), latest.id);
                return Ok(());
            }
        };
        let current = match self.rt.block_on(self.registry.latest(&downstream)) {
            Ok(l) => Some(l),
            Err(RegistryError::NotFound(_)) => None,
            Err(e) if e.is_retriable() => {
                return Err(Fail::System(format!("looking up `{downstream}`: {e}")));
            }
            Err(e) => {
                tracing::warn!(subject, downstream, error = %e, "cannot read the curated topic's subject");
                None
            }
        };
        let same = current.is_some_and(|c| {
            c.id == latest.id || c.schema.canonical_form() == latest.schema.canonical_form()
        });
        if !same {
            self.register_downstream(subject, &downstream, &latest.text)?;
        }
        self.mirrored.insert(subject.to_owned(), latest.id);
        Ok(())
    }

    /// Registers `text` under a stream's downstream subject (see `mirror`).
    pub(super) fn register_downstream(
        &self,
        subject: &str,
        downstream: &str,
        text: &str,
    ) -> Result<(), Fail> {
        match self.rt.block_on(self.registry.register(downstream, text)) {
            Ok(r) => {
                tracing::info!(
                    subject,
                    downstream,
                    id = r.id,
                    version = r.version,
                    "schema registered under the curated topic's subject"
                );
                Ok(())
            }
            Err(e) if e.is_retriable() => Err(Fail::System(format!(
                "registering the schema of `{subject}` under `{downstream}`: {e}"
            ))),
            Err(e) => {
                tracing::warn!(subject, downstream, error = %e, "the curated topic's subject refuses the schema validate uses: tools that look schemas up by topic name will not find it");
                Ok(())
            }
        }
    }

    /// The latest schema of a stream's subject, compiled (cached per schema id), once it is
    /// also registered under the curated topic's subject.
    pub(super) fn schema(&mut self, plan: &StreamPlan) -> Result<SchemaState, Fail> {
        let subject = plan.subject.as_str();
        let latest = match self.rt.block_on(self.registry.latest(subject)) {
            Ok(l) => l,
            Err(RegistryError::NotFound(_)) => {
                let why = Rejection::whole(
                    DriftKind::NoSchema,
                    format!("no schema is registered for subject `{subject}`"),
                );
                return Ok(SchemaState::Missing {
                    version: None,
                    why,
                    absent: true,
                });
            }
            Err(e @ RegistryError::InvalidSchema { .. }) => {
                let why = Rejection::whole(DriftKind::NoSchema, e.to_string());
                return Ok(SchemaState::Missing {
                    version: None,
                    why,
                    absent: false,
                });
            }
            Err(e) => return Err(Fail::System(format!("looking up `{subject}`: {e}"))),
        };
        if self.mirrored.get(subject) != Some(&latest.id) {
            self.mirror(plan, &latest)?;
        }
        let compiled = self
            .validators
            .entry(latest.id)
            .or_insert_with(|| {
                Validator::new(&latest.schema)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone();
        match compiled {
            Ok(validator) => Ok(SchemaState::Ready(Active {
                id: latest.id,
                version: latest.version,
                schema: latest.schema.clone(),
                validator,
            })),
            Err(e) => {
                let why = Rejection::whole(
                    DriftKind::NoSchema,
                    format!(
                        "schema id {} (version {}) of `{subject}` cannot validate JSON: {e}",
                        latest.id, latest.version
                    ),
                );
                Ok(SchemaState::Missing {
                    version: Some(latest.version),
                    why,
                    absent: false,
                })
            }
        }
    }

    /// The `evolve` drift policy for a stream with no schema yet: a first schema inferred from
    /// the record (key and version required, every other member optional), registered under
    /// both subjects. `None`: the record goes to the DLQ as `no_schema`.
    pub(super) fn first_schema(
        &mut self,
        plan: &StreamPlan,
        raw: &[u8],
    ) -> Result<Option<Active>, Fail> {
        let subject = plan.subject.clone();
        let Ok(sample) = serde_json::from_slice::<Json>(raw) else {
            return Ok(None);
        };
        let proposal = match infer::first_for(
            &plan.source,
            &plan.config,
            std::slice::from_ref(&sample),
        ) {
            Ok(p) if p.blockers.is_empty() => p,
            Ok(p) => {
                tracing::info!(subject, blockers = ?p.blockers, "drift policy evolve: no first schema accepts the record; dead-lettering it");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "drift policy evolve: cannot infer a first schema; dead-lettering the record");
                return Ok(None);
            }
        };
        match self.rt.block_on(registry::apply_one(
            &self.registry,
            &subject,
            &proposal.schema_json,
        )) {
            Ok(outcome) => {
                tracing::info!(subject, %outcome, changes = ?proposal.changes, "drift policy evolve: registered a first schema");
                if let Ok(downstream) = registry::downstream_subject(
                    plan.strategy,
                    &plan.curated_topic,
                    &proposal.schema_json,
                ) {
                    self.register_downstream(&subject, &downstream, &proposal.schema_json)?;
                }
            }
            Err(e) => {
                return evolve_failed(
                    &subject,
                    e,
                    "registering a first schema for",
                    "the first schema was refused",
                );
            }
        }
        self.registry.invalidate(&subject);
        match self.schema(plan)? {
            SchemaState::Ready(a) => Ok(Some(a)),
            SchemaState::Missing { .. } => Ok(None),
        }
    }

    /// The `evolve` drift policy: a BACKWARD-compatible schema that accepts the record,
    /// registered if the registry agrees. `None`: the record goes to the DLQ.
    pub(super) fn evolve(
        &mut self,
        plan: &StreamPlan,
        active: &Active,
        raw: &[u8],
        err: &RecordError,
    ) -> Result<Option<Active>, Fail> {
        let subject = plan.subject.as_str();
        let Ok(sample) = serde_json::from_slice::<Json>(raw) else {
            return Ok(None);
        };
        let proposal = match infer::propose(&active.schema, std::slice::from_ref(&sample)) {
            Ok(p) if p.is_complete() => p,
            Ok(p) => {
                tracing::info!(subject, kind = err.kind.as_str(), blockers = ?p.blockers, "drift policy evolve: no compatible change accepts the record; dead-lettering it");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "drift policy evolve: cannot propose a schema; dead-lettering the record");
                return Ok(None);
            }
        };
        match self
            .rt
            .block_on(self.registry.is_compatible(subject, &proposal.schema_json))
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(subject, changes = ?proposal.changes, "drift policy evolve: the registry refuses the proposed version; dead-lettering the record");
                return Ok(None);
            }
            Err(e) => {
                return evolve_failed(
                    subject,
                    e,
                    "checking compatibility of",
                    "compatibility check failed",
                );
            }
        }
        match self
            .rt
            .block_on(self.registry.register(subject, &proposal.schema_json))
        {
            Ok(r) => {
                tracing::info!(subject, id = r.id, version = r.version, changes = ?proposal.changes, "drift policy evolve: registered a new schema version");
                // The same text under the curated topic's subject: the same schema id there.
                if let Ok(downstream) = registry::downstream_subject(
                    plan.strategy,
                    &plan.curated_topic,
                    &proposal.schema_json,
                ) {
                    self.register_downstream(subject, &downstream, &proposal.schema_json)?;
                }
            }
            Err(e) => {
                return evolve_failed(
                    subject,
                    e,
                    "registering a version of",
                    "registration refused",
                );
            }
        }
        self.registry.invalidate(subject);
        match self.schema(plan)? {
            SchemaState::Ready(a) if a.id != active.id => Ok(Some(a)),
            _ => Ok(None),
        }
    }
}

/// A registry call of the `evolve` policy that failed: one that may pass later fails the
/// batch (`doing` names the call, before the subject); any other failure sends the record to
/// the DLQ, logged as `refused`.
fn evolve_failed(
    subject: &str,
    e: registry::RegistryError,
    doing: &str,
    refused: &str,
) -> Result<Option<Active>, Fail> {
    if e.is_retriable() {
        return Err(Fail::System(format!("{doing} `{subject}`: {e}")));
    }
    tracing::warn!(subject, error = %e, "drift policy evolve: {refused}; dead-lettering the record");
    Ok(None)
}

/// The last segment of a JSON pointer, unescaped (`/id` → `id`).
pub(super) fn pointer_leaf(pointer: &str) -> String {
    pointer
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .replace("~1", "/")
        .replace("~0", "~")
}

/// The key schema a value schema implies for a primary key ([`key::key_schema`]), with its
/// compiled validator.
pub(super) fn compile_key_schema(
    value: &Schema,
    pk: &crate::config::PrimaryKey,
) -> Result<(String, Validator), String> {
    let text = key::key_schema(value, pk)?;
    let schema = Schema::parse_str(&text).map_err(|e| e.to_string())?;
    let validator = Validator::new(&schema).map_err(|e| e.to_string())?;
    Ok((text, validator))
}

/// A key object's JSON text encoded with the key schema and framed (magic 0, key schema id).
pub(super) fn encode_key(codec: &KeyCodec, json: &str) -> Result<Vec<u8>, Rejection> {
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(0);
    out.extend_from_slice(&codec.id.to_be_bytes());
    codec
        .validator
        .encode_raw_into(json.as_bytes(), &mut out)
        .map(|()| out)
        .map_err(Rejection::from)
}
