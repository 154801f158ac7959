//! fetch: pulls HTTP sources and lands raw pages with their cursor in one transaction.
//!
//! - [`paginate`]: the five pagination styles; [`http`]: requests, retries, quota headers;
//!   [`cursor`]: the cursor record; [`stream`]: one stream's sync loop and transactions;
//!   [`ownership`]: which process owns which token (Kafka group assignment).
//! - [`run`] supervises: in `once` mode it owns every configured stream and returns when each
//!   has completed a sync; otherwise it joins the fetch group and runs the streams of the
//!   tokens assigned to it until shutdown. Each assigned partition of `intake.quota` gets a
//!   task ([`own_partition`]) that gives each token one fresh pacer for all its streams,
//!   restores their quota state ([`crate::quota::OwnedPartition`]), runs the streams, and
//!   stores the state about every second and once more when the partition is revoked.
//! - OAuth 2.0 tokens ([`oauth`]) belong to the same owner as the quota: `own_partition` arms
//!   the refresh-token grants of its tokens with the partition's fenced writer and the stored
//!   refresh tokens (read after fencing), and disarms them when the partition goes; a fenced
//!   state write drops them at once. `once` mode owns every token it runs.
//! - Sources in the benchmark-only `naive` quota mode are spread by stream instead of by
//!   token, each process pacing them with its own limiter at the full quota.

pub mod admin;
pub mod children;
pub mod cursor;
pub mod encoding;
mod export;
pub mod http;
pub mod oauth;
pub mod ownership;
pub mod paginate;
pub mod request;
pub mod session;
pub mod stream;
pub mod unchanged;
pub mod windows;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::blob::{BlobError, BlobStore};
use crate::config::{Config, ConfigError, SourceConfig};
use crate::kafka::Kafka;
use crate::kafka::partition::partition_for;
use crate::quota::{DEFAULT_SAFETY, OwnedPartition, Pacer, QuotaStore};
use crate::stage::Stage;
use crate::topics::TopicNames;

pub use stream::{StreamReport, StreamWorker};

/// fetch failures that stop a stream worker.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Configuration or secrets.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kafka failed in a way retries did not fix.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Another owner took the stream (or the producer hit a fatal error): stop writing.
    #[error("stream {stream}: fenced by a newer owner ({detail})")]
    Fenced {
        /// Stream key.
        stream: String,
        /// Kafka's message.
        detail: String,
    },
    /// The upstream refused (with `--once`; the long-running mode pauses and retries).
    #[error("upstream: {0}")]
    Http(#[from] http::HttpError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The config names a stream that does not exist.
    #[error("no stream `{0}` in the config")]
    UnknownStream(String),
    /// A child stream was selected: its root's worker reads it.
    #[error(
        "`{stream}` is a child stream: the worker of `{root}` reads it with its parents; select `{root}`"
    )]
    ChildStream {
        /// The child.
        stream: String,
        /// Its root.
        root: String,
    },
}

/// How [`run`] runs.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Own every stream, sync each to its current end, return.
    pub once: bool,
    /// Start with a full sync.
    pub full: bool,
    /// Only these streams (`source/stream` or `stream`); empty: all.
    pub streams: Vec<String>,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

/// What a run did, per stream key.
pub type FetchReport = HashMap<String, StreamReport>;

/// Shared pieces every worker of a process uses.
struct Shared {
    cfg: Arc<Config>,
    kafka: Kafka,
    names: TopicNames,
    blobs: BlobStore,
    clients: HashMap<String, Arc<http::SourceClient>>,
    /// One OAuth 2.0 token per token id (shared by the sources that use it).
    oauths: HashMap<String, Arc<oauth::OAuth2>>,
    /// One pacer per token for the whole process: what `once` mode and naive tokens use. In
    /// the long-running mode a central token gets a fresh pacer per ownership instead
    /// ([`Shared::fresh_pacer`]), seeded from the stored state.
    pacers: HashMap<String, Arc<Pacer>>,
}

impl Shared {
    fn new(cfg: Arc<Config>) -> Result<Self, FetchError> {
        let kafka = Kafka::new(&cfg.kafka)?;
        let names = TopicNames::from_config(&cfg);
        let blobs = BlobStore::open(&cfg.blob)?;
        let mut clients = HashMap::new();
        let mut pacers: HashMap<String, Arc<Pacer>> = HashMap::new();
        let mut oauths: HashMap<String, Arc<oauth::OAuth2>> = HashMap::new();
        for (i, s) in cfg.sources.iter().enumerate() {
            let at = format!("sources[{i}]");
            let shared = match &s.auth {
                Some(crate::config::Auth::Oauth2(o)) => Some(match oauths.get(s.token_id()) {
                    Some(x) => x.clone(),
                    None => {
                        let x =
                            Arc::new(oauth::OAuth2::new(o, s.token_id(), &format!("{at}.auth"))?);
                        oauths.insert(s.token_id().to_owned(), x.clone());
                        x
                    }
                }),
                _ => None,
            };
            clients.insert(
                s.name.clone(),
                Arc::new(http::SourceClient::with_oauth(s, &at, shared)?),
            );
            pacers
                .entry(s.token_id().to_owned())
                .or_insert_with(|| Arc::new(Self::fresh_pacer(s)));
        }
        Ok(Self {
            cfg,
            kafka,
            names,
            blobs,
            clients,
            oauths,
            pacers,
        })
    }

    /// The OAuth 2.0 tokens among `streams` that only their owner may refresh.
    fn owned_oauths<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a SourceConfig>,
    ) -> Vec<Arc<oauth::OAuth2>> {
        let mut out: Vec<Arc<oauth::OAuth2>> = Vec::new();
        for src in streams {
            if let Some(o) = self.oauths.get(src.token_id())
                && o.needs_owner()
                && !out.iter().any(|x| x.token_id() == o.token_id())
            {
                out.push(o.clone());
            }
        }
        out
    }

    /// Arms `oauths` with `store`'s partition: reads the stored tokens (the store's writer has
    /// fenced the previous owner's, so what is read is final) and makes this process their
    /// owner. A failed read leaves them unarmed (their streams pause, logged).
    async fn arm_oauths(&self, store: &QuotaStore, oauths: &[Arc<oauth::OAuth2>]) {
        if oauths.is_empty() {
            return;
        }
        let sink = oauth::TokenSink {
            store: store.clone(),
            topic: self.names.tokens(),
            owner: self.cfg.instance_id(),
        };
        let s = sink.clone();
        let read = stream::retry_blocking("read the stored oauth2 tokens", move || s.read()).await;
        match read {
            Ok(records) => {
                for o in oauths {
                    o.arm(sink.clone(), records.get(o.token_id())).await;
                }
            }
            Err(e) => {
                tracing::error!(partition = store.partition(), error = %e, "stored oauth2 tokens unreadable; their streams pause until the partition is assigned again");
            }
        }
    }

    /// A new pacer for a source's token: the quota with the safety margin; naive mode: the
    /// full quota (a per-worker limiter as a naive client would configure it).
    fn fresh_pacer(s: &SourceConfig) -> Pacer {
        match &s.quota {
            Some(q) if q.naive() => Pacer::new(q.requests, q.per, 1.0),
            Some(q) => Pacer::new(q.requests, q.per, DEFAULT_SAFETY),
            None => Pacer::unlimited(),
        }
    }

    /// The worker of `src`'s `stream`, its requests paced by `pacer` (the token's pacer, or
    /// the one restored with the token's quota partition), with a progress bar in `mp`.
    fn worker(
        &self,
        src: &SourceConfig,
        stream: &crate::config::StreamConfig,
        opts: &FetchOptions,
        mp: Option<&indicatif::MultiProgress>,
        pacer: Arc<Pacer>,
    ) -> StreamWorker {
        let progress = mp.map(|mp| {
            let pb = mp.add(indicatif::ProgressBar::new_spinner());
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{elapsed}] {pos} records ({per_sec})",
                )
                .expect("valid template"),
            );
            pb.enable_steady_tick(std::time::Duration::from_millis(200));
            pb.set_message(format!("{}/{}", src.name, stream.name));
            pb
        });
        StreamWorker {
            cfg: self.cfg.clone(),
            source: Arc::new(src.clone()),
            stream: Arc::new(stream.clone()),
            kafka: self.kafka.clone(),
            names: self.names.clone(),
            http: self.clients[&src.name].clone(),
            pacer,
            blobs: self.blobs.clone(),
            once: opts.once,
            force_full: opts.full,
            progress,
        }
    }
}

fn selected<'a>(
    cfg: &'a Config,
    opts: &FetchOptions,
) -> Result<Vec<(&'a SourceConfig, &'a crate::config::StreamConfig)>, FetchError> {
    if opts.streams.is_empty() {
        return Ok(cfg
            .sources
            .iter()
            .flat_map(|s| {
                s.streams
                    .iter()
                    .filter(|st| st.path.is_some() && st.parent.is_none())
                    .map(move |st| (s, st))
            })
            .collect());
    }
    opts.streams
        .iter()
        .map(|spec| {
            let (src, st) = cfg
                .stream(spec)
                .ok_or_else(|| FetchError::UnknownStream(spec.clone()))?;
            if st.parent.is_some() {
                let mut root = st;
                while let Some(p) = root.parent.as_ref().and_then(|p| src.stream(&p.stream)) {
                    root = p;
                }
                return Err(FetchError::ChildStream {
                    stream: st.name.clone(),
                    root: root.name.clone(),
                });
            }
            Ok((src, st))
        })
        .collect()
}

/// Runs fetch until `shutdown` resolves (or, with `once`, until every stream has synced).
///
/// # Errors
/// Configuration errors, and in `once` mode the first stream that failed.
pub async fn run(
    cfg: Arc<Config>,
    opts: FetchOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<FetchReport, FetchError> {
    let shared = Shared::new(cfg.clone())?;
    let streams = selected(&cfg, &opts)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mp = (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);
    if opts.once {
        // `once` owns every token it runs: the refresh-token grants are armed with their
        // partition's writer (which fences a running owner, as the streams' writers do).
        let oauths = shared.owned_oauths(streams.iter().map(|(s, _)| *s));
        if !oauths.is_empty() {
            let partitions = quota_partitions(&shared).await?;
            for o in &oauths {
                let p = partition_for(o.token_id().as_bytes(), partitions);
                let owned = OwnedPartition::open(
                    &shared.kafka,
                    &shared.cfg.kafka.group_prefix,
                    &shared.names.quota(),
                    p,
                    shared.cfg.instance_id(),
                    HashMap::new(),
                    true,
                )
                .await;
                if let Some(store) = owned.store() {
                    shared.arm_oauths(store, std::slice::from_ref(o)).await;
                }
            }
        }
        let mut tasks: Vec<(String, JoinHandle<Result<StreamReport, FetchError>>)> = Vec::new();
        for (src, st) in streams {
            let pacer = shared.pacers[src.token_id()].clone();
            let w = shared.worker(src, st, &opts, mp.as_ref(), pacer);
            tasks.push((
                cursor::stream_key(&src.name, &st.name),
                tokio::spawn(w.run(stop_rx.clone())),
            ));
        }
        let all = async {
            let mut report = FetchReport::new();
            let mut first_err = None;
            for (k, t) in tasks {
                match t
                    .await
                    .unwrap_or_else(|e| panic!("fetch worker {k} panicked: {e}"))
                {
                    Ok(r) => {
                        report.insert(k, r);
                    }
                    Err(e) => {
                        tracing::error!(stream = %k, error = %e, "stream failed");
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(report),
            }
        };
        tokio::pin!(all);
        tokio::select! {
            r = &mut all => return r,
            () = shutdown => {
                let _ = stop_tx.send(true);
            }
        }
        return all.await;
    }
    supervise(
        shared,
        streams
            .into_iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect(),
        opts,
        mp,
        shutdown,
    )
    .await
}

/// The quota partition a stream belongs to: its token's (central), or its own key's (naive).
fn partition_of(src: &SourceConfig, st: &crate::config::StreamConfig, partitions: i32) -> i32 {
    if src
        .quota
        .as_ref()
        .is_some_and(crate::config::QuotaConfig::naive)
    {
        partition_for(
            cursor::stream_key(&src.name, &st.name).as_bytes(),
            partitions,
        )
    } else {
        partition_for(src.token_id().as_bytes(), partitions)
    }
}

/// The partition count of `intake.quota` (the unit of token ownership). Started while the
/// brokers are away, fetch waits for them here (logged) instead of ending.
async fn quota_partitions(shared: &Shared) -> Result<i32, FetchError> {
    let k = shared.kafka.clone();
    let t = shared.names.quota();
    stream::retry_blocking("count the quota partitions", move || {
        let c = k.reader_consumer("meta")?;
        crate::kafka::reader::partition_count(&c, &t, std::time::Duration::from_secs(10))
    })
    .await
}

/// Reports of the streams a partition task ran.
type PartitionReport = Vec<(String, StreamReport)>;

/// Long-running mode: run the streams of the tokens this process owns.
async fn supervise(
    shared: Shared,
    streams: Vec<(SourceConfig, crate::config::StreamConfig)>,
    opts: FetchOptions,
    mp: Option<indicatif::MultiProgress>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<FetchReport, FetchError> {
    let shared = Arc::new(shared);
    let quota_topic = shared.names.quota();
    let partitions = quota_partitions(&shared).await?;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (mut events, thread) = ownership::spawn(
        &shared.kafka,
        &shared.kafka.group(Stage::Fetch),
        &quota_topic,
        stop_flag.clone(),
    )?;
    // partition -> its task (stop sender, task)
    let mut running: HashMap<i32, (watch::Sender<bool>, JoinHandle<PartitionReport>)> =
        HashMap::new();
    let mut report = FetchReport::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ev = events.recv() => match ev {
                None => break,
                Some(ownership::OwnershipEvent::Assigned(parts)) => {
                    for p in parts {
                        let mine: Vec<_> = streams.iter().filter(|(s, st)| partition_of(s, st, partitions) == p).cloned().collect();
                        tracing::info!(partition = p, streams = mine.len(), "quota partition assigned");
                        let (tx, rx) = watch::channel(false);
                        let task = tokio::spawn(own_partition(shared.clone(), p, mine, opts.clone(), mp.clone(), rx));
                        running.insert(p, (tx, task));
                    }
                }
                Some(ownership::OwnershipEvent::Revoked(parts, ack)) => {
                    for p in parts {
                        if let Some((tx, task)) = running.remove(&p) {
                            let _ = tx.send(true);
                            report.extend(task.await.unwrap_or_default());
                        }
                        tracing::info!(partition = p, "quota partition revoked; its streams stopped");
                    }
                    let _ = ack.send(());
                }
            }
        }
    }
    for (_, (tx, task)) in running.drain() {
        let _ = tx.send(true);
        report.extend(task.await.unwrap_or_default());
    }
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    // Answer revocations that arrive while the consumer leaves the group.
    let drain = tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let ownership::OwnershipEvent::Revoked(_, ack) = ev {
                let _ = ack.send(());
            }
        }
    });
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    drain.abort();
    Ok(report)
}

/// How often an owner stores the state of its active tokens.
const STATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Owns one partition of `intake.quota` until `stop`: restores the state of its central
/// tokens before their first request, runs their streams (one fresh pacer per token, shared
/// by all its streams), stores the state of active tokens every [`STATE_EVERY`] and of every
/// token once the streams have stopped.
async fn own_partition(
    shared: Arc<Shared>,
    partition: i32,
    mine: Vec<(SourceConfig, crate::config::StreamConfig)>,
    opts: FetchOptions,
    mp: Option<indicatif::MultiProgress>,
    mut stop: watch::Receiver<bool>,
) -> PartitionReport {
    let central = |s: &SourceConfig| s.quota.as_ref().is_some_and(|q| !q.naive());
    let mut pacers: HashMap<String, Arc<Pacer>> = HashMap::new();
    for (src, _) in mine.iter().filter(|(s, _)| central(s)) {
        pacers
            .entry(src.token_id().to_owned())
            .or_insert_with(|| Arc::new(Shared::fresh_pacer(src)));
    }
    let oauths = shared.owned_oauths(mine.iter().map(|(s, _)| s));
    let open_writer = !(pacers.is_empty() && oauths.is_empty());
    let mut quota = OwnedPartition::open(
        &shared.kafka,
        &shared.cfg.kafka.group_prefix,
        &shared.names.quota(),
        partition,
        shared.cfg.instance_id(),
        pacers,
        open_writer,
    )
    .await;
    if let Some(s) = quota.store() {
        shared.arm_oauths(s, &oauths).await;
    }
    if *stop.borrow() {
        for o in &oauths {
            o.disarm().await;
        }
        return Vec::new();
    }
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (src, st) in &mine {
        let pacer = quota
            .pacer(src.token_id())
            .unwrap_or_else(|| shared.pacers[src.token_id()].clone());
        let w = shared.worker(src, st, &opts, mp.as_ref(), pacer);
        tasks.push((
            cursor::stream_key(&src.name, &st.name),
            tokio::spawn(restarting(w, rx.clone())),
        ));
    }
    let mut tick = tokio::time::interval(STATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
            _ = tick.tick() => {
                if quota.store_active().await {
                    // Fenced: a newer owner has the partition; its tokens are not ours to use.
                    for o in &oauths {
                        o.fenced().await;
                    }
                }
            }
        }
    }
    let _ = tx.send(true);
    let mut out = Vec::new();
    for (key, t) in tasks {
        if let Ok(Ok(r)) = t.await {
            out.push((key, r));
        }
    }
    quota.close().await;
    for o in &oauths {
        o.disarm().await;
    }
    out
}

/// Runs a worker and restarts it after unexpected errors (not after fencing, which means a
/// newer owner exists: the group will tell us if the stream comes back).
async fn restarting(
    w: StreamWorker,
    stop: watch::Receiver<bool>,
) -> Result<StreamReport, FetchError> {
    let mut total = StreamReport::default();
    loop {
        match w.clone().run(stop.clone()).await {
            Ok(r) => {
                total.pages += r.pages;
                total.records += r.records;
                total.syncs += r.syncs;
                return Ok(total);
            }
            Err(e @ FetchError::Fenced { .. }) => {
                tracing::warn!(error = %e, "stream fenced: another process owns it now");
                return Err(e);
            }
            Err(e) => {
                tracing::error!(source = %w.source.name, stream = %w.stream.name, error = %e, "stream worker failed; restarting in 5 s");
                if *stop.borrow() {
                    return Err(e);
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}
