//! The `intake` command line: flags and dispatch only; the work lives in the stage modules.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::kafka::Kafka;
use crate::registry::{self, Registry};
use crate::topics;

/// intake: exactly-once ingestion of HTTP APIs, webhooks and batches into Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "intake", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Topics declared in `topics/`: create what is missing, align configs.
    Topics {
        /// Action.
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Pull the configured HTTP sources into the landing topic (long-running, or `--once`).
    Fetch(FetchArgs),
    /// Show the committed cursor of every stream, or reset one (`--reset STREAM`).
    Cursors {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Delete the cursor of this stream (`source/stream`): its next sync is a full sync.
        /// Fences a running owner of the stream, which then restarts from the reset cursor.
        #[arg(long, value_name = "STREAM")]
        reset: Option<String>,
    },
    /// Keep the latest version per primary key: valid topics → curated compacted topics,
    /// exactly once, with tombstones for deletes (long-running; scale by adding processes with
    /// distinct `INTAKE_INSTANCE_ID`s).
    Dedup {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
    },
    /// Validate landed pages against the registry: valid records to `*.valid`, the rest to the DLQ.
    Validate {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
    },
    /// Every stage in one process: fetch, validate, dedup and serve (applies topics and
    /// schemas first). The demo's main command.
    Run {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
    },
    /// Serve signed webhooks and idempotent batch jobs over HTTP (`serve.listen`).
    Serve {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
    },
    /// Run the simulated upstream SaaS API (data, quota, drift, faults, webhooks, ground truth).
    Sim(Box<crate::sim::SimArgs>),
    /// One screen: cursors and last sync per stream, lag per stage, DLQ counts, jobs.
    Status {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Compare the curated topics and the DLQ with a ground truth (the simulator's
    /// `/admin/truth`, as a file or URL); exit status 1 when they differ.
    Verify {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Source whose streams are compared.
        #[arg(long, default_value = "sim")]
        source: String,
        /// Truth document: a file path or an http(s) URL.
        #[arg(long)]
        truth: String,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// DLQ triage: `summary`, `show`, `replay` (re-land chosen dead letters after a fix).
    Dlq {
        /// Action.
        #[command(subcommand)]
        action: crate::dlq::DlqCommand,
    },
    /// Validate a stream's landed pages again with today's configuration and schemas, without
    /// a request to the API: copies its landing records (from `--from` on) to the landing
    /// topic, exactly once; validate and dedup take them from there. A killed run resumes when
    /// started again with the same id.
    Reprocess {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// The stream: `source/stream`, or its name alone when unique.
        #[arg(long)]
        stream: String,
        /// Only landing records from this time on: RFC 3339 or a date (midnight UTC).
        #[arg(long, value_parser = crate::reprocess::parse_from)]
        from: Option<time::OffsetDateTime>,
        /// The run's id; default `<source>.<stream>@<from or all>`. A finished id is a no-op.
        #[arg(long)]
        id: Option<String>,
        /// Landing records per transaction (default 200).
        #[arg(long)]
        batch: Option<usize>,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Regression fixtures from what landed: `export` writes one sync of a stream's pages, raw,
    /// with a manifest, for `intake sim --fixtures DIR` to serve back.
    Fixtures {
        /// Action.
        #[command(subcommand)]
        action: FixturesAction,
    },
    /// Avro schemas: `apply` registers those kept in `topics/schemas/`; `propose` infers a
    /// candidate from a stream's dead letters. (`intake schemas apply` is the older spelling.)
    #[command(alias = "schemas")]
    Schema {
        /// Action.
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// The claim-check blob store: `get` fetches the body of a record that a valid or curated
    /// topic carries by reference (docs/DOWNSTREAM.md).
    Blob {
        /// Action.
        #[command(subcommand)]
        action: BlobAction,
    },
    /// Check a config file and print what it resolves to (secrets redacted); with `--check`,
    /// also connect to Kafka and the registry and report what works (exit 1 if anything fails).
    Config {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Connect to Kafka and the schema registry with the configured settings.
        #[arg(long)]
        check: bool,
    },
}

/// `intake fetch`
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Config file.
    #[arg(long, short, env = "INTAKE_CONFIG")]
    pub config: PathBuf,
    /// Sync every stream to its current end, then exit (a progress bar on a terminal).
    #[arg(long)]
    pub once: bool,
    /// Start with a full sync (reconciliation) instead of an incremental one.
    #[arg(long)]
    pub full: bool,
    /// Only these streams (`source/stream`, repeatable); default: all.
    #[arg(long = "stream", value_name = "STREAM")]
    pub streams: Vec<String>,
}

/// `intake topics ...`
#[derive(Debug, Subcommand)]
pub enum TopicsAction {
    /// Create missing topics and align their configs; prints each change (none on a second run).
    Apply {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `intake fixtures ...`
#[derive(Debug, Subcommand)]
pub enum FixturesAction {
    /// Writes the landed pages of one sync of a stream (the last complete one by default) to
    /// DIR: `page-0001.body`, … exactly as landed (claim-checked pages read back from the blob
    /// store) and `manifest.json` (request path and query without secrets, status, sha256,
    /// bytes, records).
    Export {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// The stream, the sync and where to write it.
        #[command(flatten)]
        opts: crate::fixtures::ExportOptions,
    },
}

/// `intake blob ...`
#[derive(Debug, Subcommand)]
pub enum BlobAction {
    /// Fetch a blob by its URI (a claim-check reference's `uri`), check its sha256 and write
    /// it to stdout or `--out`: for a record's body, its Confluent-framed Avro.
    Get {
        /// Config file (`blob.url`, and the registry for `--json`).
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
        /// The blob's URI.
        uri: String,
        /// Its sha256 (hex); default: the URI's last segment, as content-addressed URIs
        /// (`…/sha256/<hex>`) end.
        #[arg(long)]
        sha256: Option<String>,
        /// Write the bytes here instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Decode the body (Confluent-framed Avro) with its schema from the registry and
        /// print it as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `intake schema ...`
#[derive(Debug, Subcommand)]
pub enum SchemaAction {
    /// Register every stream's schema (BACKWARD compatibility); refuses incompatible changes.
    Apply {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
    },
    /// Proposals from dead letters.
    #[command(flatten)]
    FromDeadLetters(crate::dlq::SchemaCommand),
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command failed with, with context for the operator.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topics {
            action: TopicsAction::Apply { config, dry_run },
        } => {
            let cfg = load(&config)?;
            kafka_reachable(&cfg).await?;
            let kafka = Kafka::new(&cfg.kafka)?;
            let specs = topics::declared_for(&cfg, &kafka).await?;
            let changes = topics::plan(&kafka, &specs)
                .await
                .context("reading topics from the broker")?;
            if changes.is_empty() {
                println!(
                    "topics: no change ({} topics match {})",
                    specs.len(),
                    cfg.topics.dir.display()
                );
                return Ok(());
            }
            for c in &changes {
                println!("{}{c}", if dry_run { "would " } else { "" });
            }
            if !dry_run {
                let actionable: Vec<_> = changes
                    .into_iter()
                    .filter(|c| !matches!(c, topics::Change::FewerPartitionsDeclared { .. }))
                    .collect();
                topics::apply(&kafka, &specs, &actionable, cfg.topics.replication_factor).await?;
                println!("topics: {} change(s) applied", actionable.len());
            }
            Ok(())
        }
        Command::Schema {
            action: SchemaAction::Apply { config },
        } => {
            let cfg = load(&config)?;
            // Refused credentials or an untrusted certificate end it here, naming the setting.
            registry_usable(&cfg).await?;
            let reg = Registry::new(&cfg.registry)?;
            // Idempotent, so a registry that blinks (busy, restarting, answering 5xx or not
            // at all) is waited out for a while, each retry logged with its reason; a
            // refusal (incompatible or invalid schema, bad credentials) ends it at once.
            let outcomes = crate::run::retrying(
                "applying schemas",
                registry::RegistryError::is_retriable,
                || registry::apply_schemas(&cfg, &reg),
            )
            .await?;
            for o in &outcomes {
                println!("{o}");
            }
            Ok(())
        }
        Command::Fetch(a) => {
            let (cfg, _metrics) = start_stage(&a.config, false, a.once).await?;
            let opts = crate::fetch::FetchOptions {
                once: a.once,
                full: a.full,
                streams: a.streams,
                progress: true,
            };
            let report = crate::fetch::run(cfg, opts, shutdown_signal()).await?;
            let mut keys: Vec<_> = report.keys().collect();
            keys.sort();
            for k in keys {
                let r = &report[k];
                println!(
                    "{k}: {} sync(s), {} page(s), {} record(s)",
                    r.syncs, r.pages, r.records
                );
            }
            Ok(())
        }
        Command::Cursors { config, reset } => {
            let cfg = load(&config)?;
            crate::fetch::admin::cursors(&cfg, reset.as_deref()).await
        }
        Command::Dedup { config } => {
            let (cfg, _metrics) = start_stage(&config, false, false).await?;
            crate::dedup::stage::run(cfg, shutdown_signal()).await?;
            Ok(())
        }
        Command::Validate { config } => {
            let (cfg, _metrics) = start_stage(&config, true, false).await?;
            crate::validate::stage::run(cfg, shutdown_signal()).await?;
            Ok(())
        }
        Command::Run { config } => {
            let (cfg, _metrics) = start_stage(&config, true, false).await?;
            crate::run::run(cfg, shutdown_signal()).await
        }
        Command::Serve { config } => {
            let (cfg, _metrics) = start_stage(&config, false, false).await?;
            let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
                .await
                .with_context(|| format!("binding serve.listen {}", cfg.serve.listen))?;
            println!(
                "intake serve listening on http://{}",
                listener.local_addr()?
            );
            crate::serve::run(cfg, listener, shutdown_signal()).await?;
            Ok(())
        }
        Command::Sim(args) => {
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("binding {}", args.listen))?;
            println!("intake sim listening on http://{}", listener.local_addr()?);
            crate::sim::run(*args, listener, shutdown_signal()).await?;
            Ok(())
        }
        Command::Status { config, json } => {
            let cfg = load(&config)?;
            let s = crate::status::gather(&cfg).await?;
            show(&s, json, crate::status::print)?;
            Ok(())
        }
        Command::Blob {
            action:
                BlobAction::Get {
                    config,
                    uri,
                    sha256,
                    out,
                    json,
                },
        } => {
            let cfg = load(&config)?;
            blob_get(&cfg, uri, sha256, out, json).await
        }
        Command::Verify {
            config,
            source,
            truth,
            json,
        } => {
            let cfg = load(&config)?;
            let doc: serde_json::Value =
                if truth.starts_with("http://") || truth.starts_with("https://") {
                    reqwest::get(&truth)
                        .await?
                        .error_for_status()?
                        .json()
                        .await?
                } else {
                    serde_json::from_slice(
                        &std::fs::read(&truth).with_context(|| format!("reading {truth}"))?,
                    )?
                };
            let report = crate::verify::compare(&cfg, &source, &doc).await?;
            show(&report, json, crate::verify::print)?;
            if report.ok() {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Dlq { action } => crate::dlq::run(action).await,
        Command::Reprocess {
            config,
            stream,
            from,
            id,
            batch,
            json,
        } => {
            let cfg = load(&config)?;
            kafka_reachable(&cfg).await?;
            let report = crate::reprocess::run(
                &cfg,
                crate::reprocess::Options {
                    stream,
                    from,
                    id,
                    batch,
                    progress: !json,
                },
            )
            .await?;
            show(&report, json, crate::reprocess::print)?;
            Ok(())
        }
        Command::Fixtures {
            action: FixturesAction::Export { config, opts },
        } => {
            let cfg = load(&config)?;
            kafka_reachable(&cfg).await?;
            println!("exporting the landed pages of {}", opts.stream);
            let opts = crate::fixtures::ExportOptions {
                progress: true,
                ..opts
            };
            let report = crate::fixtures::export(&cfg, &opts).await?;
            crate::fixtures::print(&report);
            Ok(())
        }
        Command::Schema {
            action: SchemaAction::FromDeadLetters(action),
        } => crate::dlq::run_schema(action).await,
        Command::Config { config, check } => {
            let cfg = load(&config)?;
            if !check {
                println!("{cfg:#?}");
                return Ok(());
            }
            if check_connections(&cfg).await {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

/// `intake blob get`.
async fn blob_get(
    cfg: &Config,
    uri: String,
    sha256: Option<String>,
    out: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let sha256 = match sha256 {
        Some(s) => s,
        None => uri
            .rsplit('/')
            .next()
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .context("the URI does not end in a sha256; pass --sha256")?,
    };
    let store = crate::blob::BlobStore::open(&cfg.blob)?;
    let reference = crate::blob::BlobRef {
        uri: uri.clone(),
        sha256,
        size: 0,
    };
    let bytes = store
        .get(&reference)
        .await
        .with_context(|| format!("reading {uri}"))?;
    let bytes = if json {
        let (id, datum) = registry::wire::unframe(&bytes)
            .with_context(|| format!("{uri} is not Confluent-framed Avro"))?;
        let schema = Registry::new(&cfg.registry)?
            .schema_by_id(id)
            .await
            .with_context(|| format!("schema id {id} of {uri}"))?;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .and_then(|r| r.read_value(&mut &datum[..]))
            .with_context(|| format!("decoding {uri} with schema id {id}"))?;
        let mut text = serde_json::to_vec(&serde_json::Value::try_from(value)?)?;
        text.push(b'\n');
        text
    } else {
        bytes.to_vec()
    };
    match out {
        Some(path) => {
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(())
}

/// Connects to Kafka before a command starts work: a wrong password or certificate ends
/// start-up here with the setting to fix; an unreachable cluster is waited for (with warnings).
async fn kafka_reachable(cfg: &Config) -> anyhow::Result<()> {
    if crate::faults::hit(crate::faults::Fault::SkipStartGate) {
        tracing::warn!("deliberate fault: Kafka is not asked before the stage starts");
        return Ok(());
    }
    let kafka = Kafka::new(&cfg.kafka)?;
    tokio::task::spawn_blocking(move || kafka.check_connection(None)).await??;
    Ok(())
}

/// Asks the registry before a stage that needs it starts: refused credentials or an untrusted
/// certificate end start-up naming the setting; a registry that is down is only a warning (the
/// stage waits for it record by record, as it does for any outage).
async fn registry_usable(cfg: &Config) -> anyhow::Result<()> {
    let reg = Registry::new(&cfg.registry)?;
    match reg.ping().await {
        Err(e @ registry::RegistryError::Misconfigured { .. }) => Err(e.into()),
        Err(e) => {
            tracing::warn!(url = %cfg.registry.url, error = %e, "the schema registry does not answer yet; starting anyway");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// `intake config --check`: one line per service, `ok` or the reason; true if all work.
async fn check_connections(cfg: &Config) -> bool {
    let sec = cfg.kafka.security();
    let how = match sec.sasl {
        Some(s) => format!(
            "{} {} as {}",
            sec.protocol.as_str(),
            s.mechanism.as_str(),
            match (&s.username, &s.client_id) {
                (Some(u), _) => u.clone(),
                (None, Some(c)) => format!("OAuth client {c}"),
                (None, None) => "?".to_owned(),
            }
        ),
        None => sec.protocol.as_str().to_owned(),
    };
    let kafka = match Kafka::new(&cfg.kafka) {
        Ok(k) => tokio::task::spawn_blocking(move || {
            k.check_connection(Some(std::time::Duration::from_secs(15)))
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r.map_err(anyhow::Error::from)),
        Err(e) => Err(e.into()),
    };
    let kafka_ok = match &kafka {
        Ok(r) => {
            println!(
                "kafka: ok — {} ({how}): {} broker(s), {} topic(s) visible",
                cfg.kafka.brokers, r.brokers, r.topics
            );
            true
        }
        Err(e) => {
            println!("kafka: FAILED — {e:#}");
            false
        }
    };
    let registry = match Registry::new(&cfg.registry) {
        Ok(r) => r.ping().await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    let registry_ok = match &registry {
        Ok(()) => {
            println!("registry: ok — {}", cfg.registry.url);
            true
        }
        Err(e) => {
            println!("registry: FAILED — {e:#}");
            false
        }
    };
    kafka_ok && registry_ok
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing in-flight transactions");
}

/// The Prometheus listener of a long-running command (`telemetry.metrics_addr`); none for a
/// one-shot run.
async fn metrics_unless(
    one_shot: bool,
    cfg: &Config,
) -> anyhow::Result<Option<crate::telemetry::MetricsServer>> {
    if one_shot {
        return Ok(None);
    }
    crate::telemetry::start_metrics(&cfg.telemetry).await
}

/// Prints a command's `report`: as pretty JSON with `--json`, otherwise as `print` writes it.
fn show<T: serde::Serialize>(report: &T, json: bool, print: fn(&T)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print(report);
    }
    Ok(())
}

/// The start of a long-running stage: loads the config at `path`, checks that Kafka answers
/// (and that the registry is usable when the stage `needs_registry`) and starts the metrics
/// endpoint unless the run is `one_shot`. The endpoint serves while the returned server lives.
async fn start_stage(
    path: &std::path::Path,
    needs_registry: bool,
    one_shot: bool,
) -> anyhow::Result<(
    std::sync::Arc<Config>,
    Option<crate::telemetry::MetricsServer>,
)> {
    let cfg = std::sync::Arc::new(load(path)?);
    kafka_reachable(&cfg).await?;
    if needs_registry {
        registry_usable(&cfg).await?;
    }
    let metrics = metrics_unless(one_shot, &cfg).await?;
    Ok((cfg, metrics))
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}
