//! The `intake` binary: parse flags, set up logging, run the command.

use clap::Parser;

/// jemalloc for Rust and, through its unprefixed `malloc`/`free`, for librdkafka: messages and
/// headers are allocated on a stage's thread and freed on librdkafka's, which glibc's malloc
/// pays for in fastbin consolidation on every ~1 KiB message (see Cargo.toml).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
