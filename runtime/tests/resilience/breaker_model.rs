//! The circuit breaker core against a tiny reference state machine: random sequences of
//! permission checks, outcomes (possibly stale) and time advances must give the same permit
//! decisions, states and counters.

use std::time::{Duration, Instant};

use cortex_runtime::resilience::{
    CircuitBreaker, CircuitBreakerConfig, CircuitPermit, CircuitState, FailureRateConfig,
};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelState {
    Closed,
    Open,
    HalfOpen,
}

/// The breaker as a table of rules, time in whole milliseconds. It keeps the full history of
/// outcomes since it last closed and filters it on every evaluation: no bounded queue, no
/// running counts.
struct Model {
    threshold: u32,
    rate: Option<(u64, u64, u64, usize)>, // percent, min_calls, window_ms, window_calls
    reset_ms: u64,
    max_trials: u32,
    state: ModelState,
    generation: u64,
    consecutive: u32,
    history: Vec<(u64, bool)>,
    opened_at: u64,
    trials_in_flight: u32,
    trial_successes: u32,
    successes: u64,
    failures: u64,
    rejected: u64,
    times_opened: u64,
    stale: u64,
    coverage: Coverage,
}

impl Model {
    fn new(c: &CircuitBreakerConfig) -> Self {
        Self {
            threshold: c.failure_threshold,
            rate: c.failure_rate.as_ref().map(|r| {
                (
                    u64::from(r.threshold_percent),
                    u64::from(r.min_calls),
                    r.window.as_millis() as u64,
                    r.window_calls as usize,
                )
            }),
            reset_ms: c.reset_timeout.as_millis() as u64,
            max_trials: c.half_open_max_calls,
            state: ModelState::Closed,
            generation: 0,
            consecutive: 0,
            history: Vec::new(),
            opened_at: 0,
            trials_in_flight: 0,
            trial_successes: 0,
            successes: 0,
            failures: 0,
            rejected: 0,
            times_opened: 0,
            stale: 0,
            coverage: Coverage::default(),
        }
    }

    fn go(&mut self, state: ModelState, t: u64) {
        self.state = state;
        self.generation += 1;
        self.consecutive = 0;
        self.history.clear();
        self.trials_in_flight = 0;
        self.trial_successes = 0;
        self.coverage.half_open |= state == ModelState::HalfOpen;
        if state == ModelState::Open {
            self.opened_at = t;
            self.times_opened += 1;
        }
    }

    fn would_permit(&self, t: u64) -> bool {
        match self.state {
            ModelState::Closed => true,
            ModelState::Open => t - self.opened_at >= self.reset_ms,
            ModelState::HalfOpen => self.trials_in_flight + self.trial_successes < self.max_trials,
        }
    }

    /// `Ok(generation)` if permitted, `Err(retry_after_ms)` if refused.
    fn acquire(&mut self, t: u64) -> Result<u64, u64> {
        if self.state == ModelState::Open && t - self.opened_at >= self.reset_ms {
            self.go(ModelState::HalfOpen, t);
        }
        match self.state {
            ModelState::Closed => Ok(self.generation),
            ModelState::HalfOpen
                if self.trials_in_flight + self.trial_successes < self.max_trials =>
            {
                self.trials_in_flight += 1;
                Ok(self.generation)
            }
            ModelState::HalfOpen => {
                self.rejected += 1;
                Err(0)
            }
            ModelState::Open => {
                self.rejected += 1;
                Err(self.reset_ms - (t - self.opened_at))
            }
        }
    }

    fn rate_tripped(&self, t: u64) -> bool {
        let Some((percent, min_calls, window_ms, window_calls)) = self.rate else {
            return false;
        };
        let recent: Vec<bool> = self
            .history
            .iter()
            .filter(|(at, _)| t - at < window_ms)
            .map(|(_, failed)| *failed)
            .collect();
        let recent = &recent[recent.len().saturating_sub(window_calls)..];
        let calls = recent.len() as u64;
        let failed = recent.iter().filter(|f| **f).count() as u64;
        calls >= min_calls && failed * 100 >= percent * calls
    }

    fn outcome(&mut self, generation: u64, ok: bool, t: u64) {
        if ok {
            self.successes += 1;
        } else {
            self.failures += 1;
        }
        if generation != self.generation {
            self.stale += 1;
            self.coverage.stale = true;
            return;
        }
        match (self.state, ok) {
            (ModelState::Closed, true) => {
                self.consecutive = 0;
                self.history.push((t, false));
            }
            (ModelState::Closed, false) => {
                self.consecutive += 1;
                self.history.push((t, true));
                let by_rate = self.rate_tripped(t);
                self.coverage.opened_by_rate |= by_rate && self.consecutive < self.threshold;
                if self.consecutive >= self.threshold || by_rate {
                    self.go(ModelState::Open, t);
                }
            }
            (ModelState::HalfOpen, true) => {
                self.trials_in_flight -= 1;
                self.trial_successes += 1;
                if self.trial_successes >= self.max_trials {
                    self.coverage.closed_by_trials = true;
                    self.go(ModelState::Closed, t);
                }
            }
            (ModelState::HalfOpen, false) => self.go(ModelState::Open, t),
            (ModelState::Open, _) => unreachable!("no permit has the generation of an open state"),
        }
    }

    fn release(&mut self, generation: u64) {
        if generation == self.generation && self.state == ModelState::HalfOpen {
            self.trials_in_flight -= 1;
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Succeed(usize),
    Fail(usize),
    Release(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Succeed),
        3 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Release),
        2 => (0u64..40).prop_map(Op::Advance),
    ]
}

fn config() -> impl Strategy<Value = CircuitBreakerConfig> {
    let rate = prop::option::of((1u8..=100, 1u32..6, 1u64..80, 0u32..6).prop_map(
        |(threshold_percent, min_calls, window_ms, extra)| FailureRateConfig {
            threshold_percent,
            min_calls,
            window: Duration::from_millis(window_ms),
            window_calls: min_calls + extra,
        },
    ));
    (1u32..6, rate, 0u64..60, 1u32..4).prop_map(
        |(failure_threshold, failure_rate, reset, trials)| CircuitBreakerConfig {
            failure_threshold,
            failure_rate,
            reset_timeout: Duration::from_millis(reset),
            half_open_max_calls: trials,
        },
    )
}

fn to_model_state(s: CircuitState) -> ModelState {
    match s {
        CircuitState::Closed => ModelState::Closed,
        CircuitState::Open => ModelState::Open,
        CircuitState::HalfOpen => ModelState::HalfOpen,
    }
}

/// What a run exercised, to check that the generators reach the interesting transitions.
#[derive(Debug, Default)]
struct Coverage {
    half_open: bool,
    closed_by_trials: bool,
    stale: bool,
    opened_by_rate: bool,
}

/// Runs `ops` on the breaker and the model side by side, comparing after every step.
fn check(cfg: &CircuitBreakerConfig, ops: Vec<Op>) -> Result<Coverage, TestCaseError> {
    let base = Instant::now();
    let mut breaker = CircuitBreaker::new(cfg.clone()).unwrap();
    let mut model = Model::new(cfg);
    let mut t = 0u64;
    let mut permits: Vec<(CircuitPermit, u64)> = Vec::new();

    for op in ops {
        let now = base + Duration::from_millis(t);
        prop_assert_eq!(breaker.would_permit(now), model.would_permit(t));
        match op {
            Op::Acquire => {
                let real = breaker.try_acquire(now);
                let expected = model.acquire(t);
                match (real, expected) {
                    (Ok(permit), Ok(generation)) => permits.push((permit, generation)),
                    (Err(open), Err(retry_ms)) => {
                        prop_assert_eq!(open.retry_after, Duration::from_millis(retry_ms));
                    }
                    (real, expected) => prop_assert!(
                        false,
                        "decision differs: real {:?}, model {:?}",
                        real,
                        expected
                    ),
                }
            }
            Op::Succeed(i) | Op::Fail(i) | Op::Release(i) if !permits.is_empty() => {
                let (permit, generation) = permits.swap_remove(i % permits.len());
                match op {
                    Op::Succeed(_) => {
                        breaker.record_success(permit, now);
                        model.outcome(generation, true, t);
                    }
                    Op::Fail(_) => {
                        breaker.record_failure(permit, now);
                        model.outcome(generation, false, t);
                    }
                    _ => {
                        breaker.release(permit);
                        model.release(generation);
                    }
                }
            }
            Op::Succeed(_) | Op::Fail(_) | Op::Release(_) => {}
            Op::Advance(ms) => t += ms,
        }

        let stats = breaker.stats();
        prop_assert_eq!(to_model_state(breaker.state()), model.state);
        prop_assert_eq!(to_model_state(stats.state), model.state);
        let expected_consecutive = if model.state == ModelState::Closed {
            model.consecutive
        } else {
            0
        };
        prop_assert_eq!(stats.consecutive_failures, expected_consecutive);
        let expected_trials = if model.state == ModelState::HalfOpen {
            model.trials_in_flight
        } else {
            0
        };
        prop_assert_eq!(stats.half_open_in_flight, expected_trials);
        prop_assert_eq!(stats.successes, model.successes);
        prop_assert_eq!(stats.failures, model.failures);
        prop_assert_eq!(stats.rejected, model.rejected);
        prop_assert_eq!(stats.times_opened, model.times_opened);
        prop_assert_eq!(stats.stale, model.stale);
    }
    Ok(model.coverage)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_reference_model(cfg in config(), ops in prop::collection::vec(op(), 1..250)) {
        check(&cfg, ops)?;
    }
}

/// The generators reach every kind of transition often (fixed seed, so deterministic).
#[test]
fn generated_cases_cover_every_transition() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (config(), prop::collection::vec(op(), 1..250));
    let mut totals = [0u32; 4];
    for _ in 0..256 {
        let (cfg, ops) = strategy.new_tree(&mut runner).unwrap().current();
        let c = check(&cfg, ops).unwrap();
        for (total, hit) in
            totals
                .iter_mut()
                .zip([c.half_open, c.closed_by_trials, c.stale, c.opened_by_rate])
        {
            *total += u32::from(hit);
        }
    }
    // half-open reached, closed again by trials, stale outcomes, opened by the failure rate.
    assert!(totals.iter().all(|&n| n >= 10), "coverage {totals:?}");
}

#[test]
fn failure_rate_opens_before_consecutive_threshold() {
    let cfg = CircuitBreakerConfig {
        failure_threshold: 100,
        failure_rate: Some(FailureRateConfig {
            threshold_percent: 50,
            min_calls: 4,
            window: Duration::from_secs(10),
            window_calls: 10,
        }),
        reset_timeout: Duration::from_secs(1),
        half_open_max_calls: 1,
    };
    let mut breaker = CircuitBreaker::new(cfg).unwrap();
    let t = Instant::now();
    // success, failure, success: 1 of 3, below min_calls.
    for ok in [true, false, true] {
        let p = breaker.try_acquire(t).unwrap();
        if ok {
            breaker.record_success(p, t)
        } else {
            breaker.record_failure(p, t)
        }
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    // A fourth call failing makes 2 of 4 = 50%.
    let p = breaker.try_acquire(t).unwrap();
    breaker.record_failure(p, t);
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.stats().times_opened, 1);
}

#[test]
fn old_failures_leave_the_rate_window() {
    let cfg = CircuitBreakerConfig {
        failure_threshold: 100,
        failure_rate: Some(FailureRateConfig {
            threshold_percent: 50,
            min_calls: 2,
            window: Duration::from_secs(10),
            window_calls: 10,
        }),
        ..CircuitBreakerConfig::default()
    };
    let mut breaker = CircuitBreaker::new(cfg).unwrap();
    let t0 = Instant::now();
    let p = breaker.try_acquire(t0).unwrap();
    breaker.record_failure(p, t0);
    // 10 s later the first failure has left the window: 1 failure of 2 calls would be 50%,
    // but only 1 call is in the window.
    let t1 = t0 + Duration::from_secs(10);
    let p = breaker.try_acquire(t1).unwrap();
    breaker.record_failure(p, t1);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn stale_outcome_cannot_close_a_reopened_breaker() {
    let cfg = CircuitBreakerConfig {
        failure_threshold: 1,
        reset_timeout: Duration::from_secs(1),
        ..CircuitBreakerConfig::default()
    };
    let mut breaker = CircuitBreaker::new(cfg).unwrap();
    let t0 = Instant::now();
    let slow = breaker.try_acquire(t0).unwrap();
    let fast = breaker.try_acquire(t0).unwrap();
    breaker.record_failure(fast, t0);
    assert_eq!(breaker.state(), CircuitState::Open);
    let t1 = t0 + Duration::from_secs(1);
    let trial = breaker.try_acquire(t1).unwrap();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    // The call started before opening succeeds late: counted, but not a trial success.
    breaker.record_success(slow, t1);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(breaker.stats().stale, 1);
    breaker.record_success(trial, t1);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn invalid_configs_are_refused_with_the_field_named() {
    let zero = CircuitBreakerConfig {
        failure_threshold: 0,
        ..CircuitBreakerConfig::default()
    };
    assert_eq!(
        CircuitBreaker::new(zero).unwrap_err().field,
        "failure_threshold"
    );
    let bad_rate = CircuitBreakerConfig {
        failure_rate: Some(FailureRateConfig {
            threshold_percent: 0,
            min_calls: 1,
            window: Duration::from_secs(1),
            window_calls: 1,
        }),
        ..CircuitBreakerConfig::default()
    };
    let err = CircuitBreaker::new(bad_rate).unwrap_err();
    assert_eq!(err.field, "failure_rate.threshold_percent");
    assert!(err.to_string().contains("between 1 and 100"));
}
