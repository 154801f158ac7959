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
    /// Avro schemas kept in `topics/schemas/`: register them in the registry.
    Schemas {
        /// Action.
        #[command(subcommand)]
        action: SchemasAction,
    },
    /// Check a config file and print what it resolves to (secrets redacted).
    Config {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
    },
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

/// `intake schemas ...`
#[derive(Debug, Subcommand)]
pub enum SchemasAction {
    /// Register every stream's schema (BACKWARD compatibility); refuses incompatible changes.
    Apply {
        /// Config file.
        #[arg(long, short, env = "INTAKE_CONFIG")]
        config: PathBuf,
    },
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command failed with, with context for the operator.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topics { action: TopicsAction::Apply { config, dry_run } } => {
            let cfg = load(&config)?;
            let kafka = Kafka::new(&cfg.kafka)?;
            let specs = topics::declared(&cfg)?;
            let changes = topics::plan(&kafka, &specs).await.context("reading topics from the broker")?;
            if changes.is_empty() {
                println!("topics: no change ({} topics match {})", specs.len(), cfg.topics.dir.display());
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
        Command::Schemas { action: SchemasAction::Apply { config } } => {
            let cfg = load(&config)?;
            let reg = Registry::new(&cfg.registry)?;
            let outcomes = registry::apply_schemas(&cfg, &reg).await?;
            for o in &outcomes {
                println!("{o}");
            }
            Ok(())
        }
        Command::Config { config } => {
            let cfg = load(&config)?;
            println!("{cfg:#?}");
            Ok(())
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}
