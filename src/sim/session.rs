//! `--session-login USER:PASSWORD`: the API takes session tokens instead of the `--token`
//! names. `POST /v1/login` with `{"username": …, "password": …}` answers
//! `{"session": {"token": "<new token>"}}` (a wrong password: 401), and every list request
//! must carry one of the live session tokens as `Authorization: Bearer`; it counts against the
//! first `--token`'s quota. A session ends after `--session-max-requests` requests (0: never)
//! or when `POST /admin/sessions/expire` ends every live one; the next request with it is
//! refused 401, as a provider's session timeout would. `/admin/stats` counts `logins`,
//! `failed_logins` and `sessions_expired`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::state::SimState;

/// The live sessions and the counters.
pub struct Sessions {
    user: String,
    password: String,
    /// The `--token` whose quota session requests count against.
    pub quota_token: String,
    /// Live sessions and the requests each may still make (`u64::MAX`: unlimited).
    live: Mutex<HashMap<String, u64>>,
    max_requests: u64,
    next: AtomicU64,
    seed: u64,
    logins: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
}

/// The counters, for `/admin/stats`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SessionCounts {
    /// Successful logins.
    pub logins: u64,
    /// Logins refused (wrong user or password).
    pub failed_logins: u64,
    /// Sessions ended by `POST /admin/sessions/expire`.
    pub sessions_expired: u64,
}

impl Sessions {
    /// From `USER:PASSWORD`.
    pub fn new(login: &str, max_requests: u64, quota_token: &str, seed: u64) -> Self {
        let (user, password) = login.split_once(':').unwrap_or((login, ""));
        Self {
            user: user.to_owned(),
            password: password.to_owned(),
            quota_token: quota_token.to_owned(),
            live: Mutex::new(HashMap::new()),
            max_requests: if max_requests == 0 {
                u64::MAX
            } else {
                max_requests
            },
            next: AtomicU64::new(1),
            seed,
            logins: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    /// Whether `token` is a live session (a request with it uses one of its requests; the
    /// one past its last ends it).
    pub fn accepts(&self, token: &str) -> bool {
        let mut live = self.live.lock().expect("sessions lock");
        match live.get_mut(token) {
            None => false,
            Some(0) => {
                live.remove(token);
                self.expired.fetch_add(1, Ordering::SeqCst);
                false
            }
            Some(left) => {
                *left -= 1;
                true
            }
        }
    }

    /// The counters.
    pub fn counts(&self) -> SessionCounts {
        SessionCounts {
            logins: self.logins.load(Ordering::SeqCst),
            failed_logins: self.failed.load(Ordering::SeqCst),
            sessions_expired: self.expired.load(Ordering::SeqCst),
        }
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// `POST /v1/login` (outside the list API's guard).
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/admin/sessions/expire", post(expire))
}

fn off() -> ApiError {
    ApiError::not_found("sessions are off; start the simulator with --session-login USER:PASSWORD")
}

async fn login(
    State(state): State<Arc<SimState>>,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    let s = state.sessions.as_ref().ok_or_else(off)?;
    if body.username != s.user || body.password != s.password {
        s.failed.fetch_add(1, Ordering::SeqCst);
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "bad_credentials",
            message: "unknown user or wrong password".into(),
        });
    }
    let n = s.next.fetch_add(1, Ordering::SeqCst);
    let token = format!(
        "sess_{}_{n}",
        hex::encode(super::seeded::bytes16(s.seed, "session", n))
    );
    s.live
        .lock()
        .expect("sessions lock")
        .insert(token.clone(), s.max_requests);
    s.logins.fetch_add(1, Ordering::SeqCst);
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({ "session": { "token": token } })),
    )
        .into_response())
}

async fn expire(State(state): State<Arc<SimState>>) -> Result<Json<SessionCounts>, ApiError> {
    let s = state.sessions.as_ref().ok_or_else(off)?;
    let ended = {
        let mut live = s.live.lock().expect("sessions lock");
        let n = live.len() as u64;
        live.clear();
        n
    };
    s.expired.fetch_add(ended, Ordering::SeqCst);
    Ok(Json(s.counts()))
}
