//! Faults on demand: 5xx bursts, slow answers, connection resets and malformed pages.
//!
//! Faults only change what a response looks like, never the data: the truth is the same
//! whatever faults were injected. The rates can be changed at run time (`PUT /admin/faults`).

use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::seeded::Rand;

/// The fault rates in force; also the document `GET /admin/faults` answers and `PUT
/// /admin/faults` changes ([`Faults::apply`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability that a request starts a burst of 5xx answers.
    pub error_rate: f64,
    /// Requests answered 5xx per burst.
    pub error_burst: u32,
    /// Probability that a request is answered only after `slow_ms`.
    pub slow_rate: f64,
    /// Delay of a slow answer.
    pub slow_ms: u64,
    /// Probability that a request's connection is reset without an answer.
    pub reset_rate: f64,
    /// Probability that a list answer's body is cut short (invalid JSON).
    pub malformed_rate: f64,
}

impl FaultConfig {
    /// Checks the rules every change must keep: each rate in 0..=1 and bursts of at least one
    /// 5xx answer.
    ///
    /// # Errors
    ///
    /// A message naming the first bad field.
    fn check(&self) -> Result<(), String> {
        check_rate("error_rate", self.error_rate)?;
        if self.error_burst == 0 {
            return Err("error_burst must be at least 1".into());
        }
        check_rate("slow_rate", self.slow_rate)?;
        check_rate("reset_rate", self.reset_rate)?;
        check_rate("malformed_rate", self.malformed_rate)
    }
}

/// Faults injected so far.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// 5xx answers.
    pub errors: u64,
    /// Slow answers.
    pub slow: u64,
    /// Connections reset.
    pub resets: u64,
    /// Malformed list bodies.
    pub malformed: u64,
}

/// What to do to one request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Then reset the connection without an answer.
    pub reset: bool,
    /// Or answer this 5xx instead of the real answer.
    pub error: Option<StatusCode>,
}

/// The fault injector: rates, burst state and counters.
#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    /// 5xx answers left in the current burst.
    burst_left: u32,
    rng: Rand,
    counts: FaultCounts,
}

const STATUSES: [StatusCode; 4] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

fn check_rate(name: &str, value: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} must lie in 0..=1, got {value}"))
    }
}

impl Faults {
    /// An injector with `config`, its choices drawn from the seed.
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Self {
            config,
            burst_left: 0,
            rng: Rand::new(seed, "faults", ""),
            counts: FaultCounts::default(),
        }
    }

    /// The rates in force.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// Applies a partial change, the body of `PUT /admin/faults`: any of the [`FaultConfig`]
    /// fields (a field left out or `null` keeps its value). Nothing changes if a field is
    /// unknown, of the wrong type or out of range.
    ///
    /// # Errors
    ///
    /// A message naming the bad field.
    pub fn apply(&mut self, patch: &Map<String, Value>) -> Result<(), String> {
        let mut fields = match serde_json::to_value(&self.config) {
            Ok(Value::Object(fields)) => fields,
            _ => unreachable!("a FaultConfig serializes to a JSON object"),
        };
        for (name, value) in patch.iter().filter(|(_, value)| !value.is_null()) {
            fields.insert(name.clone(), value.clone());
        }
        let next: FaultConfig =
            serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())?;
        next.check()?;
        if next.error_rate == 0.0 {
            // Turning errors off ends a burst in progress too.
            self.burst_left = 0;
        }
        self.config = next;
        Ok(())
    }

    /// Plans the faults of one request and counts them.
    pub fn plan(&mut self) -> Plan {
        let delay = self
            .rng
            .chance(self.config.slow_rate)
            .then(|| Duration::from_millis(self.config.slow_ms));
        self.counts.slow += u64::from(delay.is_some());
        let reset = self.rng.chance(self.config.reset_rate);
        if reset {
            self.counts.resets += 1;
            return Plan {
                delay,
                reset,
                error: None,
            };
        }
        if self.burst_left == 0 && self.rng.chance(self.config.error_rate) {
            self.burst_left = self.config.error_burst;
        }
        let error = (self.burst_left > 0).then(|| {
            self.burst_left -= 1;
            self.counts.errors += 1;
            self.rng.pick(&STATUSES)
        });
        Plan {
            delay,
            reset,
            error,
        }
    }

    /// Whether to cut this list body short; counted when so.
    pub fn malformed(&mut self) -> bool {
        let cut = self.rng.chance(self.config.malformed_rate);
        self.counts.malformed += u64::from(cut);
        cut
    }
}

/// Cuts a JSON object short so it no longer parses: a strict prefix of an object always lacks
/// its closing brace.
pub fn cut_short(body: &[u8]) -> Vec<u8> {
    body[..body.len() / 2].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change as `PUT /admin/faults` takes it.
    fn patch(change: Value) -> Map<String, Value> {
        match change {
            Value::Object(fields) => fields,
            other => panic!("a change is a JSON object, not {other}"),
        }
    }

    fn config() -> FaultConfig {
        FaultConfig {
            error_rate: 0.0,
            error_burst: 3,
            slow_rate: 0.0,
            slow_ms: 10,
            reset_rate: 0.0,
            malformed_rate: 0.0,
        }
    }

    #[test]
    fn no_rates_no_faults() {
        let mut f = Faults::new(config(), 1);
        for _ in 0..1000 {
            assert_eq!(
                f.plan(),
                Plan {
                    delay: None,
                    reset: false,
                    error: None
                }
            );
            assert!(!f.malformed());
        }
        assert_eq!(f.counts(), FaultCounts::default());
    }

    #[test]
    fn errors_come_in_bursts_of_the_configured_length() {
        let mut f = Faults::new(config(), 1);
        f.apply(&patch(serde_json::json!({"error_rate": 0.05})))
            .unwrap();
        let errors: Vec<bool> = (0..5000).map(|_| f.plan().error.is_some()).collect();
        let mut runs = Vec::new();
        let mut run = 0;
        for e in errors.iter().chain([&false]) {
            if *e {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
        assert!(!runs.is_empty());
        // Back-to-back bursts merge into runs of a multiple of the burst length.
        assert!(runs.iter().all(|r| r % 3 == 0), "{runs:?}");
        let total: u64 = runs.iter().sum::<u64>();
        assert_eq!(f.counts().errors, total);
    }

    #[test]
    fn every_fault_fires_at_rate_one() {
        let mut f = Faults::new(config(), 1);
        f.apply(&patch(serde_json::json!({
            "slow_rate": 1.0,
            "reset_rate": 1.0,
            "malformed_rate": 1.0,
        })))
        .unwrap();
        let plan = f.plan();
        assert_eq!(plan.delay, Some(Duration::from_millis(10)));
        assert!(plan.reset);
        assert!(f.malformed());
        assert_eq!(
            f.counts(),
            FaultCounts {
                errors: 0,
                slow: 1,
                resets: 1,
                malformed: 1
            }
        );
    }

    #[test]
    fn bad_patches_change_nothing() {
        let mut f = Faults::new(config(), 1);
        let err = f
            .apply(&patch(
                serde_json::json!({"slow_rate": 0.5, "reset_rate": 2.0}),
            ))
            .unwrap_err();
        assert!(err.contains("reset_rate"));
        assert_eq!(f.config(), &config());
        let err = f
            .apply(&patch(serde_json::json!({"eror_rate": 1})))
            .unwrap_err();
        assert!(err.contains("eror_rate"), "{err}");
        let err = f
            .apply(&patch(serde_json::json!({"slow_ms": "fast"})))
            .unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = f
            .apply(&patch(serde_json::json!({"error_burst": 0})))
            .unwrap_err();
        assert!(err.contains("error_burst"), "{err}");
        assert_eq!(f.config(), &config());
    }

    #[test]
    fn a_change_keeps_the_fields_it_leaves_out_or_nulls() {
        let mut f = Faults::new(config(), 1);
        f.apply(&patch(
            serde_json::json!({"error_burst": 5, "slow_ms": null, "reset_rate": 1}),
        ))
        .unwrap();
        assert_eq!(
            f.config(),
            &FaultConfig {
                error_burst: 5,
                reset_rate: 1.0,
                ..config()
            }
        );
    }

    #[test]
    fn cut_bodies_do_not_parse() {
        let body = br#"{"data":[{"id":"cus_000001"}],"next_cursor":null}"#;
        assert!(serde_json::from_slice::<serde_json::Value>(&cut_short(body)).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(&cut_short(b"{}")).is_err());
    }
}
