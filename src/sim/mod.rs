//! `intake sim`: a realistic upstream SaaS API with faults on demand and a ground truth.
//!
//! The simulator is the judge of every other stage, so it is deterministic (a seed fixes the
//! data set byte for byte, and the sequence of writes) and exact (its counters and its truth
//! agree with what it served). Nothing here talks to Kafka.
//!
//! # HTTP API
//!
//! - `GET /v1/{customers|orders|events}`: the stream in its configured pagination style;
//!   `GET /v1/styles/{cursor|link|page|offset|after}/{stream}`: any stream in any style. See
//!   [`pagination`] for parameters and answers, [`data`] for the records.
//! - `Authorization: Bearer <token>` with a token from `--token`; quota headers
//!   `X-RateLimit-Limit/-Remaining/-Reset` on every answer past auth, 429 with `Retry-After`
//!   over quota ([`quota`]). Errors are JSON: `{"error": "<code>", "message": "…"}`.
//! - `GET /repos/{owner}/{repo}/issues`: GitHub's issues list, shaped as GitHub serves it
//!   (bare array, `per_page`/`page`, `Link`, `since`, secondary rate limits), a view of the
//!   customers ([`github`]).
//! - `GET /v1/tree/repos`, `GET /v1/tree/repos/{repo}/issues`,
//!   `GET /v1/tree/issues/{issue}/comments`: a parent–child tree (repositories → issues →
//!   comments, `--tree-*`) with cursor pagination, mutated by `POST /admin/tree/mutate`
//!   ([`tree`]).
//! - Provider modes ([`providers`]): Stripe, HubSpot, Zendesk, Salesforce and Shopify (GraphQL)
//!   shapes of the same records (`/stripe/v1/…`, `/crm/v3/…`, `/api/v2/…`,
//!   `/services/data/v60.0/…`, `/admin/api/{version}/graphql.json`).
//! - `--fixtures DIR`: the pages `intake fixtures export` wrote, served at their recorded
//!   path and query behind the same guard ([`fixtures`]), `GET /admin/fixtures/stats`.
//! - `/admin/…`: truth, stats and run-time control ([`admin`]); `GET /healthz`.
//! - Webhooks to `--webhook-url` ([`webhooks`]), signed as [`crate::signing`] documents.
//!
//! # Layout
//!
//! | file            | role |
//! |-----------------|------|
//! | `args.rs`       | the flags ([`SimArgs`]) and their validation |
//! | `data.rs`       | streams, typed records, generation from the seed, mutations |
//! | `render.rs`     | records to JSON, with drift and large `notes` per id |
//! | `store.rs`      | live records, tombstones, indexes, the writes themselves |
//! | `writer.rs`     | the background writer task |
//! | `pagination.rs` | the six pagination styles |
//! | `quota.rs`      | fixed-window and token-bucket quota with exact counters |
//! | `faults.rs`     | 5xx bursts, slow answers, resets, malformed pages |
//! | `conn.rs`       | connections a handler can reset without answering |
//! | `webhooks.rs`   | signed, shuffled, duplicated, retried webhook delivery |
//! | `api.rs`        | `/v1` routes and the auth → quota → faults guard |
//! | `oidc.rs`       | `--oidc-issuer`: only the issuer's signed access tokens are accepted |
//! | `session.rs`    | `--session-login`: session tokens from `POST /v1/login`, expired on demand |
//! | `github.rs`     | GitHub-shaped issues list and secondary rate limits (`--github-*`) |
//! | `tree.rs`       | parent–child mode: repositories → issues → comments (`--tree-*`) |
//! | `fixtures.rs`   | `--fixtures DIR`: pages exported by `intake fixtures export`, served back |
//! | `admin.rs`      | `/admin` routes |
//! | `providers.rs`  | provider modes: real APIs' shapes over the same data, and their truth |
//! | `stripe.rs`, `hubspot.rs`, `zendesk.rs`, `salesforce.rs`, `shopify.rs` | one provider each |
//! | `state.rs`      | the shared state and why its locks are what they are |
//! | `seeded.rs`, `clock.rs` | version-stable randomness; time formats |
//!
//! # In tests
//!
//! ```no_run
//! # async fn demo() -> Result<(), intake::sim::SimError> {
//! let args = intake::sim::SimArgs::try_parse_from(["sim", "--records", "50", "--start-paused"])
//!     .expect("flags");
//! let sim = intake::sim::spawn(args).await?;
//! let url = sim.url("/v1/customers");
//! // … talk to it with any HTTP client, then:
//! sim.stop().await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod api;
mod args;
pub mod clock;
pub mod conn;
pub mod data;
mod error;
pub mod export;
pub mod faults;
pub mod fixtures;
pub mod github;
pub mod hubspot;
pub mod oidc;
pub mod pagination;
pub mod providers;
pub mod quota;
pub mod render;
pub mod salesforce;
pub mod seeded;
pub mod session;
pub mod shopify;
pub mod state;
pub mod store;
pub mod stripe;
pub mod tree;
pub mod webhooks;
pub mod writer;
pub mod zendesk;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::info;

pub use args::{DriftKind, QuotaMode, SimArgs, Style, TokenSpec};
pub use error::{ApiError, SimError};

use conn::{ConnHandle, ResettableListener};
use state::SimState;
use webhooks::WebhookConfig;

fn webhook_config(args: &SimArgs) -> Option<WebhookConfig> {
    Some(WebhookConfig {
        url: args.webhook_url.clone()?,
        secrets: args.webhook_secrets.clone(),
        shuffle_window: args.webhook_shuffle_window as usize,
        dup_rate: args.webhook_dup_rate,
        max_attempts: args.webhook_max_attempts,
        retry_base: args.webhook_retry_base,
        retry_max: args.webhook_retry_max,
        linger: args.webhook_linger,
        timeout: args.webhook_timeout,
        max_pending: args.webhook_max_pending as usize,
    })
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see `intake sim --help` and the sim module docs")
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this endpoint does not take that method".into(),
    }
}

/// Serves the simulator on `listener` until `shutdown` resolves, then stops the writer and
/// the webhook deliverer.
///
/// # Errors
///
/// [`SimError::Config`] for bad flags (checked before anything starts),
/// [`SimError::WebhookClient`] when the webhook client cannot be built, [`SimError::Io`] when
/// serving fails.
pub async fn run(
    args: SimArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    args.validate()?;
    let fixtures = Arc::new(
        fixtures::Fixtures::load(&args.fixtures).map_err(|e| SimError::config("--fixtures", e))?,
    );
    let local_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (webhooks, deliverer) = match webhook_config(&args) {
        Some(config) => {
            let (queue, task) = webhooks::start(config, args.seed, stop_rx.clone())?;
            (Some(queue), Some(task))
        }
        None => (None, None),
    };
    let state = Arc::new(SimState::new(&args, local_addr, webhooks));
    let writer = tokio::spawn(writer::run(Arc::clone(&state), args.write_rate, stop_rx));
    info!(
        addr = %local_addr,
        seed = args.seed,
        records = args.records,
        write_rate = args.write_rate,
        paused = args.start_paused,
        webhooks = args.webhook_url.is_some(),
        "intake sim listening"
    );
    let app: Router = api::router(Arc::clone(&state), args.compress)
        .merge(admin::router())
        .merge(providers::admin())
        .merge(session::router())
        .merge(github::router(Arc::clone(&state), &args.github))
        .merge(tree::router(Arc::clone(&state), &args.tree))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::clone(&state));
    // Fixture requests are answered before any route sees them.
    let app = if fixtures.is_empty() {
        app
    } else {
        app.layer(axum::middleware::from_fn_with_state(
            fixtures::Intercept {
                sim: state,
                fixtures,
            },
            fixtures::intercept,
        ))
    };
    let served = axum::serve(
        ResettableListener(listener),
        app.into_make_service_with_connect_info::<ConnHandle>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // The receivers may be gone already; either way the tasks stop.
    let _ = stop_tx.send(true);
    let _ = writer.await;
    if let Some(task) = deliverer {
        let _ = task.await;
    }
    info!(addr = %local_addr, "intake sim stopped");
    served.map_err(SimError::Io)
}

/// A simulator running in this process, for tests. Dropping it stops the simulator too (without
/// waiting); [`SimHandle::stop`] waits.
pub struct SimHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), SimError>>>,
}

impl SimHandle {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the simulator and waits for it.
    ///
    /// # Errors
    ///
    /// What [`run`] returned.
    pub async fn stop(mut self) -> Result<(), SimError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| SimError::Io(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a simulator on `127.0.0.1:0` (ignoring `--listen`) in a task of this runtime.
///
/// # Errors
///
/// [`SimError::Config`] for bad flags, [`SimError::Io`] when binding fails.
pub async fn spawn(args: SimArgs) -> Result<SimHandle, SimError> {
    args.validate()?;
    spawn_on(args, TcpListener::bind("127.0.0.1:0").await?)
}

/// [`spawn`] on the caller's listener (a fixed port, e.g. the upstream a proxy forwards to).
///
/// # Errors
///
/// [`SimError::Config`] for bad flags, [`SimError::Io`] when the listener has no address.
pub fn spawn_on(args: SimArgs, listener: TcpListener) -> Result<SimHandle, SimError> {
    args.validate()?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(args, listener, async move {
        let _ = rx.await;
    }));
    Ok(SimHandle {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}
