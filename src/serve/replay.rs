//! Refusal of replayed webhooks: a correctly signed request is accepted once.
//!
//! The signature proves who sent a body and when it was signed, not that this is the first
//! time it arrives: anyone who saw a delivery could send it again, unchanged, until its
//! timestamp leaves the tolerance window (`serve.webhook_tolerance`). So serve remembers each
//! signed message (the timestamp and the body, hashed) that it landed, until the window has
//! passed, and answers the same message again with 200 `duplicate`, landing nothing: a sender
//! that lost the first answer and delivers again unchanged learns that it arrived, and an
//! attacker replaying it gains nothing. The same message arriving while its twin is being
//! landed gets 409 `in_flight` (try again). A message is remembered only once it landed: if
//! landing failed (503), the same request lands when sent again.
//!
//! The memory is this process's: a replay sent to another serve process, or after a restart
//! within the window, can land a second time — harmless downstream, where dedup keeps one
//! version per key — and memory stays bounded by the window times the webhook rate.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use sha2::{Digest, Sha256};

/// Seen signed messages: the message's hash → when it may be forgotten and whether it landed.
pub struct ReplayGuard {
    seen: DashMap<[u8; 32], (i64, bool)>,
    tolerance_secs: i64,
    pruned: std::sync::Mutex<Instant>,
}

/// Why a message is not landed again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// It was landed before.
    #[error("this signed request (signature time {0}) was landed before; nothing was landed again")]
    Landed(i64),
    /// The same message is being landed by a concurrent request.
    #[error(
        "this signed request (signature time {0}) is being landed by another request right now; nothing was landed twice"
    )]
    InFlight(i64),
}

/// A claimed message: forgotten again on drop unless [`Ticket::landed`] was called.
pub struct Ticket<'a> {
    guard: &'a ReplayGuard,
    key: [u8; 32],
    landed: bool,
}

impl Ticket<'_> {
    /// The message landed: remember it until its window has passed.
    pub fn landed(mut self) {
        if let Some(mut e) = self.guard.seen.get_mut(&self.key) {
            e.1 = true;
        }
        self.landed = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.guard.seen.remove(&self.key);
        }
    }
}

/// Prune forgotten entries at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

impl ReplayGuard {
    /// A guard for signatures accepted within `tolerance` of now.
    pub fn new(tolerance: Duration) -> Self {
        Self {
            seen: DashMap::new(),
            tolerance_secs: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
            pruned: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Claims the message signed at `t` with `body` (call after the signature verified),
    /// remembered for `window_secs` (the source's tolerance) past its signing time. A scheme
    /// that signs no timestamp (GitHub, Shopify) gives `None`: the body alone is the message,
    /// remembered for the window from now.
    ///
    /// # Errors
    /// [`Replay`] when the message landed before or is being landed now.
    pub fn claim(
        &self,
        t: Option<i64>,
        body: &[u8],
        now: i64,
        window_secs: i64,
    ) -> Result<Ticket<'_>, Replay> {
        self.prune(now);
        let mut h = Sha256::new();
        match t {
            Some(t) => h.update(t.to_string().as_bytes()),
            None => h.update(b"-"),
        }
        h.update(b".");
        h.update(body);
        let key: [u8; 32] = h.finalize().into();
        let shown = t.unwrap_or(now);
        // Past this, a signature is stale and `Scheme::verify` refuses it anyway.
        let forget_at = shown.saturating_add(window_secs.max(self.tolerance_secs));
        match self.seen.entry(key) {
            Entry::Occupied(e) if e.get().1 => Err(Replay::Landed(shown)),
            Entry::Occupied(_) => Err(Replay::InFlight(shown)),
            Entry::Vacant(v) => {
                v.insert((forget_at, false));
                Ok(Ticket {
                    guard: self,
                    key,
                    landed: false,
                })
            }
        }
    }

    /// Messages remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&self, now: i64) {
        let Ok(mut last) = self.pruned.try_lock() else {
            return;
        };
        if last.elapsed() < PRUNE_EVERY {
            return;
        }
        *last = Instant::now();
        self.seen.retain(|_, (forget_at, _)| *forget_at >= now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landed_message_is_refused_until_its_window_passed() {
        let g = ReplayGuard::new(Duration::from_secs(300));
        g.claim(Some(1000), b"{}", 1000, 300).unwrap().landed();
        assert_eq!(
            g.claim(Some(1000), b"{}", 1100, 300).err(),
            Some(Replay::Landed(1000))
        );
        // Signed afresh (a retry) or another body: a new message.
        g.claim(Some(1001), b"{}", 1100, 300).unwrap().landed();
        g.claim(Some(1000), b"{ }", 1100, 300).unwrap().landed();
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn a_message_that_did_not_land_may_come_again_and_one_in_flight_may_not() {
        let g = ReplayGuard::new(Duration::from_secs(300));
        let t = g.claim(Some(1000), b"{}", 1000, 300).unwrap();
        assert_eq!(
            g.claim(Some(1000), b"{}", 1000, 300).err(),
            Some(Replay::InFlight(1000))
        );
        drop(t); // landing failed
        g.claim(Some(1000), b"{}", 1000, 300).unwrap().landed();
    }

    #[test]
    fn unstamped_messages_are_the_body_alone() {
        let g = ReplayGuard::new(Duration::from_secs(300));
        g.claim(None, b"{}", 1000, 300).unwrap().landed();
        assert_eq!(
            g.claim(None, b"{}", 1200, 300).err(),
            Some(Replay::Landed(1200))
        );
        g.claim(None, b"{ }", 1200, 300).unwrap().landed();
        g.claim(Some(1000), b"{}", 1200, 300).unwrap().landed();
    }

    #[test]
    fn forgotten_after_the_window() {
        let g = ReplayGuard::new(Duration::from_secs(300));
        g.claim(Some(1000), b"{}", 1000, 300).unwrap().landed();
        *g.pruned.lock().unwrap() = Instant::now() - PRUNE_EVERY * 2;
        g.claim(Some(2000), b"x", 1301, 300).unwrap().landed();
        assert_eq!(g.len(), 1, "the first message's window ended at 1300");
    }
}
