//! Kafka plumbing: every client intake uses is built here, from the one [`KafkaConfig`].
//!
//! - [`Kafka::txn_producer`]: a transactional producer (`murmur2_random` partitioner so Java
//!   clients and Kafka Streams co-partition with us; idempotence implied by transactions).
//! - [`Kafka::group_consumer`]: a consumer of a stage's group: `read_committed`, no auto
//!   commit (offsets are committed inside the output transaction), `cooperative-sticky`.
//! - [`Kafka::reader_consumer`]: a group-less `read_committed` [`Reader`] that restores state
//!   (cursors, dedup state, jobs) by reading partitions to their end; see [`reader`]. Its
//!   ends are the true high watermarks, asked of a shared `read_uncommitted` client.
//! - [`Kafka::metadata_consumer`]: a group-less client for metadata (partition counts).
//! - [`Kafka::admin`]: the admin client for `intake topics apply`.
//!
//! Errors are classified in [`error`] (retry / abort the transaction / fatal / bad record).

pub mod connect;
pub mod consumed;
pub mod eos;
pub mod error;
pub mod group;
pub mod partition;
pub mod reader;
pub mod retry;
pub mod txn;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaResult;

use crate::config::security::ResolvedSecurity;
use crate::config::{ConfigError, KafkaConfig};
use crate::stage::Stage;

pub use error::{ErrorClass, classify};
pub use reader::Reader;
pub use txn::{DeliveryContext, Outgoing, TxnProducer};

/// The producers' `message.max.bytes`: over the largest `max.message.bytes` intake sets on a
/// topic (a stream's limit and the DLQ's, 8 MiB at most) with room for batch framing, so the
/// topic's limit is what decides. A record over its topic's limit goes by claim-check before
/// it reaches a producer (validate); `kafka.properties` may lower it.
pub const PRODUCER_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The consumers' `fetch.max.bytes` (librdkafka's default, said here): over
/// [`PRODUCER_MAX_MESSAGE_BYTES`], as librdkafka requires when a client sets both.
const FETCH_MAX_BYTES: usize = 50 * 1024 * 1024;
/// The consumers' `max.partition.fetch.bytes`: a partition's first record batch is returned
/// whatever its size, but a larger per-partition budget fetches a partition holding records
/// of several MiB in one round trip instead of one batch per fetch.
const MAX_PARTITION_FETCH_BYTES: usize = 16 * 1024 * 1024;

/// The prefetch queue and fetch size of group-less readers ([`Kafka::reader_consumer`]), in
/// KiB.
const READER_QUEUE_KIB: usize = 8 * 1024;

/// The smallest queue [`Kafka::with_queues_for_batch`] sets, in KiB.
const MIN_QUEUE_KIB: usize = 4 * 1024;

/// `fetch.queue.backoff.ms` of consumers that read as fast as they can (see `group_consumer`).
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// `retry.backoff.ms` of transactional producers: the first wait before a request is retried
/// (doubling up to librdkafka's `retry.backoff.max.ms`, 1 s). Right after a commit, the
/// coordinator answers `CONCURRENT_TRANSACTIONS` to the next transaction's `AddOffsetsToTxn`
/// until it has written the last one's markers, a few milliseconds; librdkafka then waits this
/// long (its default, 100 ms) before asking again. validate's one-page transactions at half of
/// peak load met that wait in about one commit in twenty: `scripts/bench latency` measured
/// valid p99 147 ms and curated p99 186 ms with the default, 73 and 105 ms at 10 ms.
const TXN_RETRY_BACKOFF_MS: &str = "10";

/// Consumer lag of `consumer`'s assignment: the high watermarks librdkafka last saw in fetch
/// responses (cached, no request) less the consumer's positions, summed over the partitions
/// that have both. `None` when no partition has.
pub fn consumer_lag<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let positions = consumer.position().ok()?;
    let mut lag = 0i64;
    let mut any = false;
    for e in positions.elements() {
        let Ok(topic) = std::ffi::CString::new(e.topic()) else {
            continue;
        };
        let (mut lo, mut hi) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid for the lifetime of `consumer`, the topic is a
        // NUL-terminated string that outlives the call, and `lo`/`hi` are valid out-pointers.
        // The call only reads librdkafka's cached offsets under its own locks.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                e.partition(),
                &mut lo,
                &mut hi,
            )
        };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0 {
            continue;
        }
        // No position yet (nothing fetched since the assignment): not known, not counted.
        let rdkafka::Offset::Offset(at) = e.offset() else {
            continue;
        };
        lag += (hi - at).max(0);
        any = true;
    }
    any.then_some(lag)
}

/// The fetch sizes of every consumer: records of several MiB (a stream's `max_message_bytes`,
/// whole pages in the DLQ) are read like small ones.
fn fetch_sizes(c: &mut ClientConfig) {
    c.set("fetch.max.bytes", FETCH_MAX_BYTES.to_string()).set(
        "max.partition.fetch.bytes",
        MAX_PARTITION_FETCH_BYTES.to_string(),
    );
}

/// Builds every Kafka client from one configuration.
#[derive(Clone)]
pub struct Kafka {
    cfg: KafkaConfig,
    /// `security.protocol`, TLS and SASL properties, secrets resolved. A `ClientConfig`
    /// holding them is never logged (its `Debug` would print them).
    security: Arc<ResolvedSecurity>,
    /// The `read_uncommitted` client every [`Reader`] of this `Kafka` (and its clones) asks
    /// for high watermarks; built on first use.
    watermarks: Arc<Mutex<Option<Arc<BaseConsumer>>>>,
    /// A stage's own settings over intake's defaults for its producers and its group
    /// consumers ([`Kafka::with_setting`]).
    own: Vec<(Role, String, String)>,
}

/// Which of a stage's clients a setting of its own ([`Kafka::with_setting`]) applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its transactional producers ([`Kafka::txn_producer`]).
    Producer,
    /// Its group consumers ([`Kafka::group_consumer`]).
    GroupConsumer,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.cfg.brokers)
            .finish_non_exhaustive()
    }
}

impl Kafka {
    /// Resolves the connection secrets (SASL password, key password) once.
    ///
    /// # Errors
    /// When a secret cannot be resolved (naming its field).
    pub fn new(cfg: &KafkaConfig) -> Result<Self, ConfigError> {
        let security = Arc::new(cfg.security().resolve()?);
        Ok(Self {
            cfg: cfg.clone(),
            security,
            watermarks: Arc::default(),
            own: Vec::new(),
        })
    }

    /// Bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.cfg.brokers
    }

    /// Consumer-group name of a stage (`<group_prefix>-<stage>`).
    /// `kafka.transaction_timeout`: how long a transaction may stay open before its
    /// coordinator aborts it.
    pub const fn transaction_timeout(&self) -> std::time::Duration {
        self.cfg.transaction_timeout
    }

    pub fn group(&self, stage: Stage) -> String {
        format!("{}-{stage}", self.cfg.group_prefix)
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.cfg.brokers)
            .set(
                "client.id",
                format!("{}-{client_id}", self.cfg.group_prefix),
            )
            // Loopback brokers come and go in tests; do not spam logs while one restarts.
            .set("reconnect.backoff.max.ms", "2000")
            .set_log_level(RDKafkaLogLevel::Warning);
        c
    }

    /// Applies the connection settings (`kafka.security_protocol`, `kafka.tls`, `kafka.sasl`)
    /// and `kafka.properties` over a client's settings: last, so a user's tuning wins over
    /// intake's defaults. The settings exactly-once and security depend on cannot be set in
    /// `kafka.properties` ([`crate::config::KafkaConfig::RESERVED`] and
    /// [`crate::config::security::OWNED_PROPERTIES`], checked when the config loads).
    fn user(&self, c: &mut ClientConfig) {
        for (k, v) in self.security.properties() {
            c.set(k, v);
        }
        for (k, v) in &self.cfg.properties {
            c.set(k, v);
        }
    }

    /// This client with a setting of a stage's own for its producers or its group consumers,
    /// applied over intake's defaults (and under `kafka.properties`): validate and dedup size
    /// librdkafka's queues from their batch.
    #[must_use]
    pub fn with_setting(mut self, role: Role, key: &str, value: &str) -> Self {
        self.own.push((role, key.to_owned(), value.to_owned()));
        self
    }

    /// This client with librdkafka's queues sized from a consuming stage's batch of about
    /// `batch_kib` KiB, instead of librdkafka's defaults (a 64 MiB prefetch per consumer, a
    /// 1 GiB producer queue) that set the process's peak memory at full speed: the consumer
    /// prefetches half a batch (at least [`MIN_QUEUE_KIB`]) and asks for as much per fetch, so
    /// the next fetch is on its way while the stage works through the last; the producer
    /// queues up to two batches of output (a full queue makes `send` wait for deliveries).
    /// `scripts/bench validate`: a prefetch and fetch of 16 MiB gave validate a peak RSS of
    /// 182 MiB, 4 MiB gave 105 MiB at the same speed. A record larger than a fetch or the
    /// prefetch queue is still fetched (the broker returns a partition's first batch whatever
    /// its size, and librdkafka checks the queue before a fetch, not against it); the
    /// producer's queue always holds one record of [`PRODUCER_MAX_MESSAGE_BYTES`] with room to
    /// spare (librdkafka refuses, for good, a record that would not fit an empty queue).
    #[must_use]
    pub fn with_queues_for_batch(self, batch_kib: usize) -> Self {
        let consumer = (batch_kib / 2).max(MIN_QUEUE_KIB);
        let producer = (2 * batch_kib).max(PRODUCER_MAX_MESSAGE_BYTES / 1024 + MIN_QUEUE_KIB);
        self.with_setting(
            Role::GroupConsumer,
            "queued.max.messages.kbytes",
            &consumer.to_string(),
        )
        // One fetch response is buffered whole besides the queue: librdkafka's 50 MiB default
        // would outweigh it.
        .with_setting(
            Role::GroupConsumer,
            "fetch.max.bytes",
            &(consumer * 1024).to_string(),
        )
        .with_setting(
            Role::Producer,
            "queue.buffering.max.kbytes",
            &producer.to_string(),
        )
    }

    /// Applies the stage's own settings for `role`.
    fn own(&self, role: Role, c: &mut ClientConfig) {
        for (_, k, v) in self.own.iter().filter(|(r, _, _)| *r == role) {
            c.set(k, v);
        }
    }

    /// A transactional producer with the given `transactional.id`. Call
    /// [`TxnProducer::init`] before the first transaction.
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn txn_producer(&self, transactional_id: &str) -> KafkaResult<TxnProducer> {
        let c = self.txn_producer_config(transactional_id);
        let p = rdkafka::producer::ThreadedProducer::from_config_and_context(
            &c,
            DeliveryContext::default(),
        )?;
        Ok(TxnProducer::new(
            p,
            transactional_id,
            self.cfg.transaction_timeout,
        ))
    }

    /// The settings of [`Kafka::txn_producer`]: intake's defaults, the stage's own
    /// ([`Kafka::with_setting`]), then `kafka.properties`.
    fn txn_producer_config(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.base(&format!("producer-{transactional_id}"));
        c.set("transactional.id", transactional_id)
            .set(
                "transaction.timeout.ms",
                self.cfg.transaction_timeout.as_millis().to_string(),
            )
            .set("partitioner", "murmur2_random")
            .set("message.max.bytes", PRODUCER_MAX_MESSAGE_BYTES.to_string())
            .set("enable.idempotence", "true")
            .set("retry.backoff.ms", TXN_RETRY_BACKOFF_MS)
            // [`DeliveryContext`] only counts failures: a report for every delivered record
            // cost the producer's polling thread an event, a callback and a free per record.
            .set("delivery.report.only.error", "true")
            // Records go out while the stage is still working on its batch, so a commit
            // finds them on the broker already. validate's 50 ms (kept until 7 Dec 2026)
            // left a one-page transaction's records queued until its commit: mean commit
            // 14 -> 6-8 ms and curated p99 243-252 -> 181-232 ms at 22 500 records/s
            // (`scripts/bench latency`), with validate's throughput unchanged or better
            // (`scripts/bench validate`, medians 110 000 -> 120 000 records/s).
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.kbytes", "65536")
            // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
            .set(
                "message.timeout.ms",
                self.cfg.transaction_timeout.as_millis().to_string(),
            );
        self.own(Role::Producer, &mut c);
        self.user(&mut c);
        c
    }

    /// A consumer in a stage's group: `read_committed`, manual offsets committed inside the
    /// output transaction, cooperative-sticky assignment. The context receives rebalance
    /// callbacks (commit or abort the open transaction on revoke).
    ///
    /// `instance`: static group membership (`group.instance.id`). A restarted process that
    /// comes back under the same instance id takes its partitions back at once instead of
    /// stalling the group until its killed predecessor's session times out. Only consumers
    /// that join the group get it (a producer warns about it as an unknown property).
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn group_consumer<C: ConsumerContext + 'static>(
        &self,
        group: &str,
        instance: Option<&str>,
        ctx: C,
    ) -> KafkaResult<BaseConsumer<C>> {
        let mut c = self.base(&format!("consumer-{group}"));
        if let Some(id) = instance {
            c.set("group.instance.id", id);
        }
        c.set("group.id", group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "300000")
            .set("queued.max.messages.kbytes", "65536")
            // When the prefetch queue is full, librdkafka postpones the next fetch by this
            // long (default 1 s): validate drains 64 MiB of pages in about that time, so it
            // sat idle in `poll` for a quarter of `scripts/bench validate`.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        fetch_sizes(&mut c);
        self.own(Role::GroupConsumer, &mut c);
        self.user(&mut c);
        BaseConsumer::from_config_and_context(&c, ctx)
    }

    /// A group-less `read_committed` [`Reader`] for restoring state with explicit assignment
    /// ([`reader::read_to_end`]). It derefs to its consumer, so metadata calls work on it too.
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn reader_consumer(&self, purpose: &str) -> KafkaResult<Reader> {
        Ok(Reader::new(
            self.metadata_consumer(purpose)?,
            self.watermark_client()?,
        ))
    }

    /// A group-less `read_committed` consumer for metadata and explicit assignment.
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn metadata_consumer(&self, purpose: &str) -> KafkaResult<BaseConsumer> {
        let mut c = self.base(&format!("reader-{purpose}"));
        // librdkafka wants a group id even for assign(); it is never used to commit.
        c.set(
            "group.id",
            format!("{}-reader-unused", self.cfg.group_prefix),
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        fetch_sizes(&mut c);
        // A restore reads a whole topic as fast as it can: librdkafka's 64 MiB prefetch and
        // 50 MiB fetches would set the process's peak memory, and READER_QUEUE_KIB keeps it
        // reading at full speed (the next fetch is on its way while the last is worked through).
        c.set("queued.max.messages.kbytes", READER_QUEUE_KIB.to_string())
            .set("fetch.max.bytes", (READER_QUEUE_KIB * 1024).to_string());
        self.user(&mut c);
        c.create_with_context(rdkafka::consumer::DefaultConsumerContext)
    }

    /// The shared `read_uncommitted` client whose offset queries answer the true high
    /// watermark (a `read_committed` client's answer the last stable offset, which stops at the
    /// first open transaction of any producer).
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn watermark_client(&self) -> KafkaResult<Arc<BaseConsumer>> {
        let mut slot = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let mut c = self.base("watermarks");
        c.set("isolation.level", "read_uncommitted")
            .set("enable.auto.commit", "false");
        self.user(&mut c);
        let c: Arc<BaseConsumer> =
            Arc::new(c.create_with_context(rdkafka::consumer::DefaultConsumerContext)?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A consumer that joins no group but can read a group's committed offsets (status, lag).
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn reader_consumer_in_group(&self, group: &str) -> KafkaResult<BaseConsumer> {
        let mut c = self.base(&format!("status-{group}"));
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        self.user(&mut c);
        c.create_with_context(rdkafka::consumer::DefaultConsumerContext)
    }

    /// The admin client.
    ///
    /// # Errors
    /// Invalid client configuration.
    pub fn admin(&self) -> KafkaResult<AdminClient<DefaultClientContext>> {
        let mut c = self.base("admin");
        self.user(&mut c);
        c.create()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kafka.properties` win over intake's defaults and a stage's own settings.
    #[test]
    fn user_properties_are_applied_last() {
        let mut cfg: KafkaConfig = toml::from_str(
            r#"
brokers = "127.0.0.1:9092"
properties = { "linger.ms" = "20", "compression.type" = "zstd", "retry.backoff.ms" = "100" }
"#,
        )
        .unwrap();
        let kafka = Kafka::new(&cfg)
            .unwrap()
            .with_setting(Role::Producer, "linger.ms", "50")
            .with_setting(Role::Producer, "queue.buffering.max.kbytes", "1024")
            .with_setting(Role::GroupConsumer, "queued.max.messages.kbytes", "2048");
        let c = kafka.txn_producer_config("t-1");
        assert_eq!(c.get("linger.ms"), Some("20"));
        assert_eq!(c.get("compression.type"), Some("zstd"));
        assert_eq!(c.get("retry.backoff.ms"), Some("100"));
        assert_eq!(c.get("queue.buffering.max.kbytes"), Some("1024"));
        assert_eq!(c.get("transactional.id"), Some("t-1"));
        // A consumer's setting stays off the producer.
        assert_eq!(c.get("queued.max.messages.kbytes"), None);
        cfg.properties.clear();
        let c = Kafka::new(&cfg)
            .unwrap()
            .with_setting(Role::Producer, "linger.ms", "50")
            .txn_producer_config("t-1");
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("retry.backoff.ms"), Some(TXN_RETRY_BACKOFF_MS));
        assert_eq!(c.get("delivery.report.only.error"), Some("true"));
    }

    /// Queues follow the batch, but the producer's always takes the largest record whole
    /// (librdkafka would refuse it forever otherwise: `send` would wait for good).
    #[test]
    fn queues_are_sized_from_the_batch_and_hold_the_largest_record() {
        let cfg: KafkaConfig = toml::from_str("brokers = \"127.0.0.1:9092\"").unwrap();
        let kafka = Kafka::new(&cfg).unwrap();
        let big = kafka.clone().with_queues_for_batch(40 * 1024);
        let p = big.txn_producer_config("t-1");
        assert_eq!(p.get("queue.buffering.max.kbytes"), Some("81920"));
        assert_eq!(p.get("queued.max.messages.kbytes"), None);
        let small = kafka.with_queues_for_batch(1024);
        let p = small.txn_producer_config("t-1");
        let kib: usize = p
            .get("queue.buffering.max.kbytes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(kib * 1024 > PRODUCER_MAX_MESSAGE_BYTES, "{kib} KiB");
        let own: Vec<_> = small
            .own
            .iter()
            .filter(|(r, _, _)| *r == Role::GroupConsumer)
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            own,
            [
                ("queued.max.messages.kbytes", "4096"),
                ("fetch.max.bytes", "4194304")
            ]
        );
    }
}
