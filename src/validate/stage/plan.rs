//! How each configured stream is validated: its topics, subjects, key and splitters
//! ([`StreamPlan`], looked up by [`Plans`]), and the size limits of the valid topics
//! ([`Limits`]).

use super::*;

/// How one configured stream is validated.
#[derive(Debug)]
pub(super) struct StreamPlan {
    pub(super) source: String,
    pub(super) stream: String,
    /// `intake.<source>.<stream>.valid`.
    pub(super) valid_topic: String,
    /// `<valid topic>-value`.
    pub(super) subject: String,
    /// The curated topic, whose value subject downstream tools read (named by `strategy`):
    /// every schema validate uses is registered there too.
    pub(super) curated_topic: String,
    pub(super) strategy: SubjectStrategy,
    /// The primary key's field name (the last segment of its pointer), as a claim-check
    /// reference names it.
    pub(super) key_field: String,
    /// With `key_format = "avro"`: the key fields, written as an Avro record (`None`: the key
    /// is the primary key's UTF-8 text).
    pub(super) key: Option<KeyFields>,
    /// Pages: the stream's record selector, primary key and version pointers.
    pub(super) pages: Splitter,
    /// Pages of JSON Lines or CSV, once normalised (`split::normalize`): `pages` without its
    /// record selector.
    pub(super) rows: Splitter,
    /// Webhook events: the record is at the source's `webhook.record` (`/data`); the version
    /// is the event's `seq`.
    pub(super) events: Splitter,
    pub(super) drift: DriftPolicy,
    /// The stream's configuration (a first schema is named and keyed from it).
    pub(super) config: crate::config::StreamConfig,
}

impl StreamPlan {
    /// What a dead letter of the stream as a whole was checked against: its subject, no
    /// version (the record never reached a schema).
    pub(super) fn unversioned(&self) -> super::reject::Against<'_> {
        super::reject::Against {
            subject: &self.subject,
            version: None,
        }
    }
}

/// Where a source's webhook events keep their fields (JSON pointers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventShape {
    /// The entity id (the key of a delete).
    pub entity_id: String,
    /// The per-entity sequence number (the version).
    pub sequence: String,
    /// The stream name.
    pub stream: String,
}

impl Default for EventShape {
    fn default() -> Self {
        EventShape {
            entity_id: "/entity_id".into(),
            sequence: "/seq".into(),
            stream: "/stream".into(),
        }
    }
}

/// Every configured stream, by source then stream (looked up with `&str`, no allocation).
#[derive(Debug, Default)]
pub(super) struct Plans {
    pub(super) streams: HashMap<String, HashMap<String, Arc<StreamPlan>>>,
    pub(super) events: HashMap<String, EventShape>,
}

impl Plans {
    pub(super) fn from_config(cfg: &Config, names: &TopicNames) -> Result<Self, ValidateError> {
        let mut plans = Plans::default();
        for s in &cfg.sources {
            let shape = s
                .webhook
                .as_ref()
                .map_or_else(EventShape::default, |w| EventShape {
                    entity_id: w.entity_id.clone(),
                    sequence: w.sequence.clone(),
                    stream: w.stream_pointer.clone(),
                });
            plans.events.insert(s.name.clone(), shape);
            for st in &s.streams {
                let err = |source| ValidateError::Pointer {
                    stream: format!("{}/{}", s.name, st.name),
                    source,
                };
                let plan = StreamPlan {
                    source: s.name.clone(),
                    stream: st.name.clone(),
                    valid_topic: names.valid(&s.name, &st.name),
                    subject: names.subject(&s.name, &st.name),
                    curated_topic: names.curated(&s.name, &st.name),
                    strategy: cfg.registry.subject_strategy,
                    key_field: pointer_leaf(st.primary_key.first()),
                    key: match st.key_format {
                        KeyFormat::String => None,
                        KeyFormat::Avro => Some(KeyFields::new(&st.primary_key).map_err(err)?),
                    },
                    pages: Splitter::for_stream(st).map_err(err)?,
                    rows: Splitter::for_stream(st).map_err(err)?.rows(),
                    events: Splitter::new(
                        s.webhook.as_ref().map_or("/data", |w| w.record.as_str()),
                        st.primary_key.first(),
                        None,
                    )
                    .map_err(err)?,
                    drift: st.drift,
                    config: st.clone(),
                };
                plans
                    .streams
                    .entry(s.name.clone())
                    .or_default()
                    .insert(st.name.clone(), Arc::new(plan));
            }
        }
        Ok(plans)
    }

    pub(super) fn get(&self, source: &str, stream: &str) -> Option<Arc<StreamPlan>> {
        self.streams.get(source)?.get(stream).cloned()
    }
}

/// Largest record each output topic takes.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    /// The producer's `message.max.bytes`.
    pub(super) producer: usize,
    /// The DLQ's limit.
    pub(super) dlq: usize,
    /// Per valid topic: the smaller of its own limit and its curated topic's (dedup forwards
    /// the value unchanged), bounded by the producer's.
    pub(super) valid: HashMap<String, usize>,
}

impl Limits {
    /// Reads `max.message.bytes` of the DLQ and every valid and curated topic from the
    /// brokers, waiting for them while they cannot answer (until `stop`); a topic that does
    /// not exist counts with the broker default.
    pub(super) async fn read(
        kafka: &Kafka,
        cfg: &Config,
        names: &TopicNames,
        plans: &Plans,
        stop: &AtomicBool,
    ) -> Limits {
        let pairs: Vec<(String, String)> = plans
            .streams
            .values()
            .flat_map(|m| {
                m.values()
                    .map(|p| (p.valid_topic.clone(), p.curated_topic.clone()))
            })
            .collect();
        let mut topics = vec![names.dlq()];
        for (v, c) in &pairs {
            topics.push(v.clone());
            topics.push(c.clone());
        }
        let read = describe_max_bytes(kafka, &topics, stop).await;
        let limit_of = |t: &str| read.get(t).copied().unwrap_or(BROKER_DEFAULT_MAX);
        let producer = cfg
            .kafka
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(crate::kafka::PRODUCER_MAX_MESSAGE_BYTES);
        let valid = pairs
            .iter()
            .map(|(v, c)| (v.clone(), limit_of(v).min(limit_of(c)).min(producer)))
            .collect();
        Limits {
            producer,
            dlq: limit_of(&topics[0]).min(producer),
            valid,
        }
    }

    pub(super) fn valid(&self, topic: &str) -> usize {
        self.valid
            .get(topic)
            .copied()
            .unwrap_or(BROKER_DEFAULT_MAX.min(self.producer))
    }
}

/// `max.message.bytes` of each of `topics`, as the brokers say. While they cannot be asked
/// (a broker outage at start-up), this waits for them, until `stop`: a limit assumed in an
/// outage would differ from the one every other process uses, and a record kept whole by one
/// process would go by reference from another. A topic that does not exist, cannot be
/// described for another reason than the brokers' absence (no right to, say), or whose setting
/// does not parse, counts with the broker default (it is named in a warning).
async fn describe_max_bytes(
    kafka: &Kafka,
    topics: &[String],
    stop: &AtomicBool,
) -> HashMap<String, usize> {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    use rdkafka::types::RDKafkaErrorCode;
    let mut out = HashMap::new();
    let admin = match kafka.admin() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build an admin client; assuming the broker's default message size limit");
            return out;
        }
    };
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let mut backoff = crate::kafka::txn::Backoff::default();
    loop {
        let why = match admin
            .describe_configs(
                &specs,
                &AdminOptions::new().request_timeout(Some(META_TIMEOUT)),
            )
            .await
        {
            Ok(results) => {
                let mut transient = None;
                for (topic, r) in topics.iter().zip(results) {
                    match r {
                        Ok(r) => match r
                            .get("max.message.bytes")
                            .and_then(|e| e.value.as_deref())
                            .and_then(|v| v.parse::<usize>().ok())
                        {
                            Some(v) => {
                                out.insert(topic.clone(), v);
                            }
                            None => tracing::warn!(
                                topic,
                                "cannot read max.message.bytes; assuming the broker default"
                            ),
                        },
                        Err(
                            RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownTopic,
                        ) => tracing::warn!(
                            topic,
                            "the topic does not exist (run `intake topics apply`); assuming the broker's default message size limit"
                        ),
                        Err(code)
                            if crate::kafka::classify(&rdkafka::error::KafkaError::AdminOp(
                                code,
                            )) == crate::kafka::ErrorClass::Retry =>
                        {
                            transient = Some(format!("{topic}: {code}"));
                        }
                        // Not allowed to describe it, say: asking again will not help.
                        Err(code) => tracing::warn!(
                            topic,
                            error = %code,
                            "cannot read max.message.bytes; assuming the broker default"
                        ),
                    }
                }
                match transient {
                    None => return out,
                    Some(why) => why,
                }
            }
            Err(e) if crate::kafka::classify(&e) == crate::kafka::ErrorClass::Retry => {
                e.to_string()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot describe the topics; assuming the broker's default message size limit");
                return out;
            }
        };
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return out;
        }
        let pause = backoff.next_pause();
        tracing::warn!(error = %why, retry_in_ms = pause.as_millis() as u64, "cannot read the topics' message size limits; waiting for the brokers");
        tokio::time::sleep(pause).await;
    }
}
