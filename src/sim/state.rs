//! The state every handler and task of one simulator shares.
//!
//! Locks are `std::sync` ones, never held across an `.await`: each critical section is a few
//! map operations (a page read clones `Arc`s; a write renders one record), far shorter than a
//! context switch, and std locks are cheaper than tokio's there. The store is behind an
//! `RwLock` because page reads, the common case, can run side by side; writes, pause and the
//! truth snapshot take it briefly. Quota and faults are behind `Mutex`es: every request
//! changes them, and each decision must be counted in the same critical section.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::args::{QuotaMode, SimArgs, Style};
use super::clock;
use super::data::Stream;
use super::faults::{FaultConfig, Faults};
use super::pagination::PageSizes;
use super::quota::Quotas;
use super::render::RenderConfig;
use super::store::{Change, Store, StoreConfig};
use super::webhooks::WebhookQueue;

/// Counters of the list API that belong to no other part.
#[derive(Debug, Default)]
pub struct ApiCounters {
    /// Requests refused 401 (missing or unknown token): they never reach the quota check.
    pub unauthorized: AtomicU64,
    /// Requests whose token the `--oidc-issuer` check accepted.
    pub oidc_accepted: AtomicU64,
    /// List pages answered 200 (malformed ones included).
    pub pages: AtomicU64,
    /// Answers of the list APIs sent with a `Content-Encoding` (`--compress`).
    pub compressed: AtomicU64,
    /// List pages refused 400 `result_cap` (`--result-cap`).
    pub result_cap_refusals: AtomicU64,
}

/// Shared state of one simulator.
pub struct SimState {
    store: RwLock<Store>,
    quotas: Mutex<Quotas>,
    faults: Mutex<Faults>,
    /// The webhook queue, when `--webhook-url` is set.
    pub webhooks: Option<WebhookQueue>,
    /// Style of `GET /v1/{stream}`, by stream index.
    pub styles: [Style; 3],
    /// Page sizes.
    pub sizes: PageSizes,
    /// `--result-cap` (0: none).
    pub result_cap: usize,
    /// `--seed`.
    pub seed: u64,
    /// `--quota-mode`, for stats.
    pub quota_mode: QuotaMode,
    /// `--quota-window` in ms, for stats and messages.
    pub quota_window_ms: u64,
    /// The bound address, for `Link` URLs when a request has no `Host`.
    pub local_addr: SocketAddr,
    /// List API counters.
    pub counters: ApiCounters,
    /// Start time, for uptime.
    pub started: std::time::Instant,
    /// `--oidc-issuer`: the issuer's token check.
    pub oidc: Option<super::oidc::Oidc>,
    /// `--session-login`: the live sessions.
    pub sessions: Option<super::session::Sessions>,
    /// Requests answered by each provider mode (`sim::providers`).
    pub providers: super::providers::ProviderCounters,
    /// Asynchronous exports (`sim::export`).
    pub exports: super::export::Exports,
}

const POISONED: &str =
    "a sim lock was poisoned by an earlier panic; the simulator cannot be trusted";

impl SimState {
    /// Builds the state (and the initial data set) from validated flags.
    pub fn new(args: &SimArgs, local_addr: SocketAddr, webhooks: Option<WebhookQueue>) -> Self {
        let render = RenderConfig {
            seed: args.seed,
            drift_rate: args.drift_rate,
            drift_kinds: args.drift_kinds.clone(),
            large_rate: args.large_rate,
            large_bytes: args.large_bytes.clone(),
        };
        let store = Store::new(
            StoreConfig {
                records: u64::from(args.records),
                span_days: u64::from(args.span_days),
                render,
                create_share: args.create_share,
                delete_share: args.delete_share,
                backdate_rate: args.backdate_rate,
                backdate_min_ms: args.backdate_min.as_millis() as u64,
                backdate_max_ms: args.backdate_max.as_millis() as u64,
            },
            args.start_paused,
        );
        let faults = Faults::new(
            FaultConfig {
                error_rate: args.error_rate,
                error_burst: args.error_burst,
                slow_rate: args.slow_rate,
                slow_ms: args.slow_ms,
                reset_rate: args.reset_rate,
                malformed_rate: args.malformed_rate,
            },
            args.seed,
        );
        let quotas = Quotas::new(
            args.quota_mode,
            args.quota_window,
            args.stats_retention,
            &args.tokens,
            clock::now(),
        );
        Self {
            store: RwLock::new(store),
            quotas: Mutex::new(quotas),
            faults: Mutex::new(faults),
            webhooks,
            styles: [
                args.customers_pagination,
                args.orders_pagination,
                args.events_pagination,
            ],
            sizes: PageSizes {
                default: args.page_size,
                max: args.max_page_size,
            },
            result_cap: args.result_cap,
            seed: args.seed,
            quota_mode: args.quota_mode,
            quota_window_ms: args.quota_window.as_millis() as u64,
            local_addr,
            counters: ApiCounters::default(),
            started: std::time::Instant::now(),
            providers: Default::default(),
            exports: super::export::Exports::new(args.export_polls, args.export_file_records),
            sessions: args.session_login.as_deref().map(|login| {
                super::session::Sessions::new(
                    login,
                    args.session_max_requests,
                    args.tokens.first().map_or("demo", |t| t.token.as_str()),
                    args.seed,
                )
            }),
            oidc: args.oidc_issuer.as_deref().map(|issuer| {
                super::oidc::Oidc::new(
                    issuer,
                    args.oidc_quota_token
                        .as_deref()
                        .unwrap_or(args.tokens.first().map_or("demo", |t| t.token.as_str())),
                )
            }),
        }
    }

    /// Reads the store.
    pub fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().expect(POISONED)
    }

    /// Changes the store.
    pub fn store_mut(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().expect(POISONED)
    }

    /// The quota state.
    pub fn quotas(&self) -> MutexGuard<'_, Quotas> {
        self.quotas.lock().expect(POISONED)
    }

    /// The fault injector.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().expect(POISONED)
    }

    /// Makes `n` writes to streams picked from `streams` now, paused or not, and sends their
    /// webhooks.
    pub async fn write_now(&self, streams: &[Stream], n: usize) -> Vec<Change> {
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            let change = self.store_mut().write(streams, clock::now_ms());
            self.notify(&change).await;
            changes.push(change);
        }
        changes
    }

    /// Sends the webhook of a change, when webhooks are on.
    pub async fn notify(&self, change: &Change) {
        if let Some(queue) = &self.webhooks {
            queue.enqueue(change).await;
        }
    }
}
