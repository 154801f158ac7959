//! The `intake` binary: parse flags, set up logging, run the command.

use clap::Parser;

/// jemalloc for Rust and, through its unprefixed `malloc`/`free`, for librdkafka: messages and
/// headers are allocated on a stage's thread and freed on librdkafka's, which glibc's malloc
/// pays for in fastbin consolidation on every ~1 KiB message (see Cargo.toml).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`MALLOC_CONF` in the environment still overrides
/// them). One arena instead of four per core: a page or message allocated on one thread and
/// freed on another (tokio's workers, librdkafka's broker threads, a stage's loop) otherwise
/// leaves free space behind in every arena that touched it. `scripts/bench`, peak RSS at full
/// speed: fetch 100 → 75 MiB, validate 115 → 98 MiB, at the same rates.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
pub static malloc_conf: &[u8; 10] = b"narenas:1\0";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    intake::telemetry::init();
    let cli = intake::cli::Cli::parse();
    match intake::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
