//! # intake
//!
//! Exactly-once ingestion of third-party HTTP APIs, webhooks and pushed batches into Apache
//! Kafka. See `docs/ARCHITECTURE.md` for the data flow and `docs/INVARIANTS.md` for the
//! invariants and topic contracts this crate implements.
//!
//! # Layout
//!
//! | module        | what lives there |
//! |---------------|------------------|
//! | [`blob`]      | the claim-check blob store for payloads over the message limit (`object_store`) |
//! | [`cli`]       | the `intake` command line: flag parsing and dispatch only |
//! | [`config`]    | the TOML configuration, its defaults, validation and secrets |
//! | [`kafka`]     | every Kafka client is built here; transactions; error classification |
//! | [`headers`]   | the landing and DLQ header contract (names are the contract) |
//! | [`contract`]  | typed writers and readers of what crosses a topic: op, valid stamp, sync marker, dead letter |
//! | [`topics`]    | topics as code (`topics/*.toml`) and `intake topics apply` |
//! | [`run`]       | `intake run`: every stage in one process |
//! | [`registry`]  | the schema registry (Confluent API): schemas as code, lookups, encoding |
//! | [`stage`]     | the stages by name: one spelling for labels, groups, ids and `dlq.stage` |
//! | [`signing`]   | HMAC-SHA256 webhook signatures shared by `serve` and `sim` |
//! | [`status`]    | `intake status`: cursors, lag, DLQ counts, jobs on one screen |
//! | [`telemetry`] | tracing setup and metric names |
//! | [`testing`]   | test support for the unit tests and fuzz targets: configs from a few lines, shared fixtures |
//! | [`sim`]       | `intake sim`: a realistic upstream SaaS API with faults and a ground truth |
//! | [`fetch`]     | pulls HTTP sources and lands raw pages with their cursor in one transaction |
//! | [`quota`]     | per-token pacing owned centrally through Kafka group assignment |
//! | [`validate`]  | splits pages into records, validates against the registry, routes drift to the DLQ |
//! | [`dedup`]     | keeps the latest version per primary key in compacted topics |
//! | [`serve`]     | webhooks and idempotent batch jobs over HTTP |
//! | [`jobs`]      | the job registry in `intake.jobs` and the count deltas validate and replay write |
//! | [`verify`]    | `intake verify`: curated topics and DLQ against a ground truth, exactly |
//! | [`dlq`]       | DLQ triage: summary, show, replay, schema proposals |
//! | [`fixtures`]  | `intake fixtures export`: one landed sync of a stream as simulator fixtures (`intake sim --fixtures`) |

pub mod blob;
pub mod cli;
pub mod config;
pub mod contract;
pub mod dedup;
pub mod dlq;
pub mod faults;
pub mod fetch;
pub mod fixtures;
pub mod headers;
pub mod jobs;
pub mod kafka;
pub mod quota;
pub mod registry;
pub mod reprocess;
pub mod run;
pub mod serve;
pub mod signing;
pub mod sim;
pub mod stage;
pub mod status;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod topics;
pub mod validate;
pub mod verify;

/// The deliberate bugs of `scripts/fuzz --mutants` (fuzz/README.md), compiled only with the
/// `fuzz-mutants` feature and switched on one at a time at run time by `INTAKE_FUZZ_MUTANT`
/// (`split`, `convert` or `signing`), so one fuzz build serves both the fuzzing and the proof
/// that each oracle catches its mutant.
#[cfg(feature = "fuzz-mutants")]
pub(crate) fn fuzz_mutant(name: &str) -> bool {
    static ON: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ON.get_or_init(|| std::env::var("INTAKE_FUZZ_MUTANT").ok())
        .as_deref()
        == Some(name)
}

/// The direction of dependencies between the simulator and the stages, checked on the source
/// files: no stage reaches into `sim` (only the command line starts it), and `sim` uses only
/// what a third-party API would share with intake — webhook signing, the secret type and the
/// fixture format `intake fixtures export` writes — so
/// the simulator can never lean on a stage's internals to agree with it.
#[cfg(test)]
mod layout {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Every `crate::<path>` a file names, without its comment lines.
    fn crate_paths(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                let tail = &rest[i + "crate::".len()..];
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail.len());
                out.push(tail[..end].trim_end_matches(':').to_owned());
                rest = &tail[end..];
            }
        }
        out
    }

    #[test]
    fn the_simulator_stands_apart() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        assert!(files.len() > 50, "found only {} source files", files.len());
        let mut wrong = Vec::new();
        for f in &files {
            let rel = f
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(f).unwrap();
            for path in crate_paths(&text) {
                let in_sim = rel.starts_with("sim/");
                let ok = if in_sim {
                    path.starts_with("sim")
                        || path == "signing"
                        || path.starts_with("signing::")
                        || path == "config::SecretString"
                        // The fixture format `intake fixtures export` writes and the
                        // simulator serves.
                        || path == "fixtures"
                        || path.starts_with("fixtures::")
                } else {
                    !(path == "sim" || path.starts_with("sim::"))
                        || rel == "cli.rs"
                        || rel == "lib.rs"
                };
                if !ok {
                    wrong.push(format!("src/{rel}: crate::{path}"));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "dependencies across the simulator's border:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn crate_paths_are_found() {
        assert_eq!(
            crate_paths(
                "use crate::sim::{a, b};\n// crate::x\nlet y = crate::signing::sign(crate::config::SecretString::new());"
            ),
            ["sim", "signing::sign", "config::SecretString::new"]
        );
    }
}
