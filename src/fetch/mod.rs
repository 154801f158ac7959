//! fetch: pulls HTTP sources and lands raw pages with their cursor in one transaction.
//!
//! - [`paginate`]: the five pagination styles; [`http`]: requests, retries, quota headers;
//!   [`cursor`]: the cursor record; [`stream`]: one stream's sync loop and transactions;
//!   [`ownership`]: which process owns which token (Kafka group assignment).
//! - [`run`] supervises: in `once` mode it owns every configured stream and returns when each
//!   has completed a sync; otherwise it joins the fetch group and runs the streams of the
//!   tokens assigned to it until shutdown.

pub mod admin;
pub mod cursor;
pub mod http;
pub mod ownership;
pub mod paginate;
pub mod stream;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::blob::{BlobError, BlobStore};
use crate::config::{Config, ConfigError, SourceConfig};
use crate::kafka::partition::partition_for;
use crate::kafka::Kafka;
use crate::quota::{Pacer, DEFAULT_SAFETY};
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
    pacers: HashMap<String, Arc<Pacer>>,
}

impl Shared {
    fn new(cfg: Arc<Config>) -> Result<Self, FetchError> {
        let kafka = Kafka::new(&cfg.kafka)?;
        let names = TopicNames::from_config(&cfg);
        let blobs = BlobStore::open(&cfg.blob)?;
        let mut clients = HashMap::new();
        let mut pacers: HashMap<String, Arc<Pacer>> = HashMap::new();
        for (i, s) in cfg.sources.iter().enumerate() {
            clients.insert(s.name.clone(), Arc::new(http::SourceClient::new(s, &format!("sources[{i}]"))?));
            pacers.entry(s.token_id().to_owned()).or_insert_with(|| {
                Arc::new(match &s.quota {
                    Some(q) => Pacer::new(q.requests, q.per, DEFAULT_SAFETY),
                    None => Pacer::unlimited(),
                })
            });
        }
        Ok(Self { cfg, kafka, names, blobs, clients, pacers })
    }

    fn worker(&self, src: &SourceConfig, stream: &crate::config::StreamConfig, opts: &FetchOptions, mp: Option<&indicatif::MultiProgress>) -> StreamWorker {
        let progress = mp.map(|mp| {
            let pb = mp.add(indicatif::ProgressBar::new_spinner());
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}] {pos} records ({per_sec})")
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
            pacer: self.pacers[src.token_id()].clone(),
            blobs: self.blobs.clone(),
            once: opts.once,
            force_full: opts.full,
            progress,
        }
    }
}

fn selected<'a>(cfg: &'a Config, opts: &FetchOptions) -> Result<Vec<(&'a SourceConfig, &'a crate::config::StreamConfig)>, FetchError> {
    if opts.streams.is_empty() {
        return Ok(cfg.sources.iter().flat_map(|s| s.streams.iter().filter(|st| st.path.is_some()).map(move |st| (s, st))).collect());
    }
    opts.streams.iter().map(|spec| cfg.stream(spec).ok_or_else(|| FetchError::UnknownStream(spec.clone()))).collect()
}

/// Runs fetch until `shutdown` resolves (or, with `once`, until every stream has synced).
///
/// # Errors
/// Configuration errors, and in `once` mode the first stream that failed.
pub async fn run(cfg: Arc<Config>, opts: FetchOptions, shutdown: impl Future<Output = ()> + Send) -> Result<FetchReport, FetchError> {
    let shared = Shared::new(cfg.clone())?;
    let streams = selected(&cfg, &opts)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mp = (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(indicatif::MultiProgress::new);
    if opts.once {
        let mut tasks: Vec<(String, JoinHandle<Result<StreamReport, FetchError>>)> = Vec::new();
        for (src, st) in streams {
            let w = shared.worker(src, st, &opts, mp.as_ref());
            tasks.push((cursor::stream_key(&src.name, &st.name), tokio::spawn(w.run(stop_rx.clone()))));
        }
        let all = async {
            let mut report = FetchReport::new();
            let mut first_err = None;
            for (k, t) in tasks {
                match t.await.unwrap_or_else(|e| panic!("fetch worker {k} panicked: {e}")) {
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
    supervise(shared, streams.into_iter().map(|(a, b)| (a.clone(), b.clone())).collect(), opts, mp, shutdown).await
}

/// Long-running mode: run the streams of the tokens this process owns.
async fn supervise(
    shared: Shared,
    streams: Vec<(SourceConfig, crate::config::StreamConfig)>,
    opts: FetchOptions,
    mp: Option<indicatif::MultiProgress>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<FetchReport, FetchError> {
    let quota_topic = shared.names.quota();
    let partitions = {
        let k = shared.kafka.clone();
        let t = quota_topic.clone();
        tokio::task::spawn_blocking(move || {
            let c = k.reader_consumer("meta")?;
            crate::kafka::reader::partition_count(&c, &t, std::time::Duration::from_secs(10))
        })
        .await
        .map_err(|_| FetchError::Kafka(rdkafka::error::KafkaError::Canceled))??
    };
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (mut events, thread) = ownership::spawn(&shared.kafka, &shared.kafka.group("fetch"), &quota_topic, stop_flag.clone())?;
    // partition -> running workers (stop sender, task)
    type Running = Vec<(String, watch::Sender<bool>, JoinHandle<Result<StreamReport, FetchError>>)>;
    let mut running: HashMap<i32, Running> = HashMap::new();
    let mut report = FetchReport::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ev = events.recv() => match ev {
                None => break,
                Some(ownership::OwnershipEvent::Assigned(parts)) => {
                    for p in parts {
                        let mine: Vec<_> = streams.iter().filter(|(s, _)| partition_for(s.token_id().as_bytes(), partitions) == p).collect();
                        tracing::info!(partition = p, streams = mine.len(), "quota partition assigned");
                        let entry = running.entry(p).or_default();
                        for (src, st) in mine {
                            let (tx, rx) = watch::channel(false);
                            let w = shared.worker(src, st, &opts, mp.as_ref());
                            let key = cursor::stream_key(&src.name, &st.name);
                            entry.push((key, tx, tokio::spawn(restarting(w, rx))));
                        }
                    }
                }
                Some(ownership::OwnershipEvent::Revoked(parts, ack)) => {
                    for p in parts {
                        for (key, tx, task) in running.remove(&p).unwrap_or_default() {
                            let _ = tx.send(true);
                            if let Ok(Ok(r)) = task.await {
                                report.insert(key, r);
                            }
                        }
                        tracing::info!(partition = p, "quota partition revoked; its streams stopped");
                    }
                    let _ = ack.send(());
                }
            }
        }
    }
    for (_, ws) in running.drain() {
        for (key, tx, task) in ws {
            let _ = tx.send(true);
            if let Ok(Ok(r)) = task.await {
                report.insert(key, r);
            }
        }
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

/// Runs a worker and restarts it after unexpected errors (not after fencing, which means a
/// newer owner exists: the group will tell us if the stream comes back).
async fn restarting(w: StreamWorker, stop: watch::Receiver<bool>) -> Result<StreamReport, FetchError> {
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
