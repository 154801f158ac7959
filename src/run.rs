//! `intake run`: every stage in one process — fetch, validate, dedup and serve as separate
//! tasks with the same exactly-once semantics as separate processes (each keeps its own
//! transactional ids and consumer groups). Topics and schemas are applied first (idempotent).
//! SIGINT/SIGTERM stops every stage gracefully; a stage that fails stops the others.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::fetch::FetchOptions;
use crate::stage::Stage;

/// Runs all stages until `shutdown` resolves or one of them fails.
///
/// # Errors
/// Topics/schemas could not be applied, a listener could not bind, or a stage failed.
pub async fn run(
    cfg: Arc<Config>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let kafka = crate::kafka::Kafka::new(&cfg.kafka)?;
    // Applying topics and registering schemas are idempotent, so a cluster or registry that
    // blinks (a busy machine, a restart, a leader moving) is waited out for a while instead of
    // ending `intake run`; a refusal (invalid declarations, incompatible schema, bad
    // credentials) ends it at once.
    let changes = retrying(
        "applying topics",
        crate::topics::TopicsError::is_retriable,
        || crate::topics::ensure(&cfg, &kafka),
    )
    .await?;
    for c in changes {
        tracing::info!(change = %c, "topics");
    }
    let reg = crate::registry::Registry::new(&cfg.registry)?;
    let outcomes = retrying(
        "applying schemas",
        crate::registry::RegistryError::is_retriable,
        || crate::registry::apply_schemas(&cfg, &reg),
    )
    .await?;
    for o in outcomes {
        tracing::info!(outcome = %o, "schemas");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let listener = tokio::net::TcpListener::bind(&cfg.serve.listen)
        .await
        .with_context(|| format!("binding serve.listen {}", cfg.serve.listen))?;
    let mut tasks = tokio::task::JoinSet::new();
    // Each stage as a task, stopped by the same signal.
    spawn_stage(
        &mut tasks,
        Stage::Fetch,
        crate::fetch::run(
            cfg.clone(),
            FetchOptions::default(),
            stopped(stop_rx.clone()),
        ),
    );
    spawn_stage(
        &mut tasks,
        Stage::Validate,
        crate::validate::stage::run(cfg.clone(), stopped(stop_rx.clone())),
    );
    spawn_stage(
        &mut tasks,
        Stage::Dedup,
        crate::dedup::stage::run(cfg.clone(), stopped(stop_rx.clone())),
    );
    spawn_stage(
        &mut tasks,
        Stage::Serve,
        crate::serve::run(cfg.clone(), listener, stopped(stop_rx.clone())),
    );
    tracing::info!("all stages running");
    let mut first_error = None;
    tokio::select! {
        () = shutdown => {}
        Some(done) = tasks.join_next() => {
            match done {
                Ok((stage, Ok(()))) => tracing::warn!(stage, "stage ended; stopping the others"),
                Ok((stage, Err(e))) => {
                    tracing::error!(stage, error = %e, "stage failed; stopping the others");
                    first_error = Some(e.context(format!("stage {stage}")));
                }
                Err(e) => first_error = Some(anyhow::anyhow!("a stage panicked: {e}")),
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        if let Ok((stage, Err(e))) = done {
            tracing::error!(stage, error = %e, "stage failed while stopping");
        }
    }
    tracing::info!("all stages stopped");
    first_error.map_or(Ok(()), Err)
}

/// Spawns `stage` as a task on `tasks` that runs `run` and reports the stage's name with its
/// outcome (the value of a stage that ends well is dropped).
fn spawn_stage<T, E>(
    tasks: &mut tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
    stage: Stage,
    run: impl Future<Output = Result<T, E>> + Send + 'static,
) where
    E: Into<anyhow::Error>,
{
    tasks.spawn(async move { (stage.name(), run.await.map(drop).map_err(Into::into)) });
}

/// Runs the idempotent start-up step `step` until it succeeds, fails in a way `retriable` says
/// will not pass, or two minutes have gone by; the pauses double (the crate's one `Backoff`)
/// and each retry is logged. `intake run`'s start and `intake schema apply` use it.
pub(crate) async fn retrying<T, E, F>(
    what: &'static str,
    retriable: impl Fn(&E) -> bool,
    mut step: impl FnMut() -> F,
) -> anyhow::Result<T>
where
    F: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut backoff = crate::kafka::txn::Backoff::default();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match step().await {
            Err(e) if retriable(&e) && std::time::Instant::now() < give_up => {
                let pause = backoff.next_pause();
                tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "{what}: unavailable; retrying");
                tokio::time::sleep(pause).await;
            }
            r => return r.context(what),
        }
    }
}
