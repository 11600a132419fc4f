//! Circuit breaker: stop calling a target that keeps failing, probe it again after a pause.
//!
//! [`CircuitBreaker`] is the IO-free core: it never reads a clock, the caller passes `now`.
//! [`SharedCircuitBreaker`](super::SharedCircuitBreaker) wraps it for concurrent async use.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::ConfigError;

/// When a [`CircuitBreaker`] opens and how it recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures (in the closed state) that open the breaker. At least 1.
    pub failure_threshold: u32,
    /// Optionally also open when the failure rate over a recent window is too high.
    pub failure_rate: Option<FailureRateConfig>,
    /// How long the breaker stays open before it lets trial calls through.
    pub reset_timeout: Duration,
    /// Trial calls allowed in the half-open state; that many successes close the breaker,
    /// one failure reopens it. At least 1.
    pub half_open_max_calls: u32,
}

impl Default for CircuitBreakerConfig {
    /// Five consecutive failures open the breaker for ten seconds; one trial call decides.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: None,
            reset_timeout: Duration::from_secs(10),
            half_open_max_calls: 1,
        }
    }
}

/// Open the breaker when too many of the recent calls failed.
///
/// The window holds the outcomes recorded in the last `window` of time, at most the last
/// `window_calls` of them (which bounds memory). It is evaluated each time a failure is
/// recorded in the closed state, and emptied on every state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRateConfig {
    /// Open when `failures * 100 >= threshold_percent * calls` in the window. 1..=100.
    pub threshold_percent: u8,
    /// Do not judge the rate on fewer calls than this. At least 1.
    pub min_calls: u32,
    /// Outcomes older than this leave the window.
    pub window: Duration,
    /// At most this many of the most recent outcomes are kept. At least `min_calls`.
    pub window_calls: u32,
}

/// The three states of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are refused until the reset timeout elapses.
    Open,
    /// A limited number of trial calls probe whether the target recovered.
    HalfOpen,
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// A snapshot of a breaker's state and counters, for metrics and status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitStats {
    /// The current state (open becomes half-open lazily, on the next permission check).
    pub state: CircuitState,
    /// Consecutive failures recorded in the closed state.
    pub consecutive_failures: u32,
    /// Trial calls in flight (half-open state only, else 0).
    pub half_open_in_flight: u32,
    /// Successes recorded since creation (including stale ones).
    pub successes: u64,
    /// Failures recorded since creation (including stale ones).
    pub failures: u64,
    /// Calls refused because the breaker was open or its trial slots were taken.
    pub rejected: u64,
    /// How many times the breaker opened.
    pub times_opened: u64,
    /// Outcomes that arrived for a permit granted before the last state change, and were
    /// therefore counted but not allowed to change the state.
    pub stale: u64,
}

/// Permission to make one call, granted by [`CircuitBreaker::try_acquire`].
///
/// Hand it back exactly once: [`record_success`](CircuitBreaker::record_success),
/// [`record_failure`](CircuitBreaker::record_failure) or, if the call was abandoned without an
/// outcome, [`release`](CircuitBreaker::release). A permit that is never handed back holds a
/// half-open trial slot forever.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "hand the permit back with record_success, record_failure or release"]
pub struct CircuitPermit {
    generation: u64,
}

/// The call was refused: the breaker is open, or half-open with every trial slot taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "circuit breaker open: recent calls to this target failed; retry after {retry_after:?} or \
     route elsewhere"
)]
pub struct CircuitOpenError {
    /// How long until the breaker admits a trial call (zero when half-open).
    pub retry_after: Duration,
}

#[derive(Debug)]
enum Phase {
    Closed {
        consecutive: u32,
        /// `(when, failed)` of recent outcomes, oldest first; only used with a failure rate.
        window: VecDeque<(Instant, bool)>,
        window_failures: u32,
    },
    Open {
        since: Instant,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
    },
}

impl Phase {
    fn closed() -> Self {
        Phase::Closed {
            consecutive: 0,
            window: VecDeque::new(),
            window_failures: 0,
        }
    }
}

/// IO-free circuit breaker state machine.
///
/// # Driving contract
///
/// 1. Before each call, [`try_acquire(now)`](Self::try_acquire). On `Err`, don't make the call.
/// 2. After the call, hand the permit back with [`record_success`](Self::record_success) or
///    [`record_failure`](Self::record_failure) (with the `now` at completion), or
///    [`release`](Self::release) if the call was abandoned and says nothing about the target.
///
/// `now` should not go backwards; an earlier `now` than one already seen is treated as the
/// latest one seen. Open turns into half-open lazily, in the first `try_acquire` at least
/// `reset_timeout` after opening. Each state change starts a new *generation*: outcomes for
/// permits of an older generation are counted in the stats but change no state (a slow call
/// that started before the breaker opened must not close it again).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use cortex_runtime::resilience::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
///
/// let config = CircuitBreakerConfig {
///     failure_threshold: 2,
///     reset_timeout: Duration::from_secs(5),
///     ..CircuitBreakerConfig::default()
/// };
/// let mut breaker = CircuitBreaker::new(config)?;
/// let t0 = Instant::now(); // any base instant: the breaker never reads the clock itself
///
/// for _ in 0..2 {
///     let permit = breaker.try_acquire(t0).expect("closed breakers admit calls");
///     breaker.record_failure(permit, t0);
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert!(breaker.try_acquire(t0 + Duration::from_secs(1)).is_err());
///
/// // After the reset timeout one trial call goes through; its success closes the breaker.
/// let later = t0 + Duration::from_secs(5);
/// let trial = breaker.try_acquire(later).expect("reset timeout elapsed");
/// assert_eq!(breaker.state(), CircuitState::HalfOpen);
/// breaker.record_success(trial, later);
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// # Ok::<(), cortex_runtime::resilience::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    phase: Phase,
    generation: u64,
    last_now: Option<Instant>,
    successes: u64,
    failures: u64,
    rejected: u64,
    times_opened: u64,
    stale: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if a threshold is zero or the failure rate settings are out of range.
    pub fn new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        if config.failure_threshold == 0 {
            return Err(ConfigError::new("failure_threshold", "at least 1"));
        }
        if config.half_open_max_calls == 0 {
            return Err(ConfigError::new("half_open_max_calls", "at least 1"));
        }
        if let Some(rate) = &config.failure_rate {
            if !(1..=100).contains(&rate.threshold_percent) {
                return Err(ConfigError::new(
                    "failure_rate.threshold_percent",
                    "between 1 and 100",
                ));
            }
            if rate.min_calls == 0 {
                return Err(ConfigError::new("failure_rate.min_calls", "at least 1"));
            }
            if rate.window_calls < rate.min_calls {
                return Err(ConfigError::new(
                    "failure_rate.window_calls",
                    "at least failure_rate.min_calls",
                ));
            }
        }
        Ok(Self {
            config,
            phase: Phase::closed(),
            generation: 0,
            last_now: None,
            successes: 0,
            failures: 0,
            rejected: 0,
            times_opened: 0,
            stale: 0,
        })
    }

    /// The configuration this breaker was built with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// The current state. Open turns into half-open only inside [`try_acquire`](Self::try_acquire).
    pub fn state(&self) -> CircuitState {
        match self.phase {
            Phase::Closed { .. } => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// State and counters.
    pub fn stats(&self) -> CircuitStats {
        let (consecutive_failures, half_open_in_flight) = match &self.phase {
            Phase::Closed { consecutive, .. } => (*consecutive, 0),
            Phase::Open { .. } => (0, 0),
            Phase::HalfOpen { in_flight, .. } => (0, *in_flight),
        };
        CircuitStats {
            state: self.state(),
            consecutive_failures,
            half_open_in_flight,
            successes: self.successes,
            failures: self.failures,
            rejected: self.rejected,
            times_opened: self.times_opened,
            stale: self.stale,
        }
    }

    /// Whether [`try_acquire(now)`](Self::try_acquire) would grant a permit, without taking
    /// one or changing anything: for routing decisions such as skipping a node whose breaker
    /// is open.
    pub fn would_permit(&self, now: Instant) -> bool {
        let now = self.last_now.map_or(now, |last| last.max(now));
        match &self.phase {
            Phase::Closed { .. } => true,
            Phase::Open { since } => {
                now.saturating_duration_since(*since) >= self.config.reset_timeout
            }
            Phase::HalfOpen {
                in_flight,
                successes,
            } => in_flight + successes < self.config.half_open_max_calls,
        }
    }

    /// Asks whether a call may be made at `now`.
    ///
    /// # Errors
    ///
    /// [`CircuitOpenError`] if the breaker is open (and the reset timeout has not elapsed) or
    /// half-open with all trial slots taken. The refusal is counted in
    /// [`CircuitStats::rejected`].
    pub fn try_acquire(&mut self, now: Instant) -> Result<CircuitPermit, CircuitOpenError> {
        let now = self.observe(now);
        if let Phase::Open { since } = self.phase {
            let open_for = now.saturating_duration_since(since);
            if open_for < self.config.reset_timeout {
                self.rejected += 1;
                return Err(CircuitOpenError {
                    retry_after: self.config.reset_timeout - open_for,
                });
            }
            self.transition(Phase::HalfOpen {
                in_flight: 0,
                successes: 0,
            });
        }
        match &mut self.phase {
            Phase::Closed { .. } => Ok(self.permit()),
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                if *in_flight + *successes < self.config.half_open_max_calls {
                    *in_flight += 1;
                    Ok(self.permit())
                } else {
                    self.rejected += 1;
                    Err(CircuitOpenError {
                        retry_after: Duration::ZERO,
                    })
                }
            }
            // Handled above: an open phase either returned or became half-open.
            Phase::Open { .. } => {
                self.rejected += 1;
                Err(CircuitOpenError {
                    retry_after: Duration::ZERO,
                })
            }
        }
    }

    /// Records that the permitted call succeeded at `now`.
    pub fn record_success(&mut self, permit: CircuitPermit, now: Instant) {
        let now = self.observe(now);
        self.successes += 1;
        if permit.generation != self.generation {
            self.stale += 1;
            return;
        }
        let max_trials = self.config.half_open_max_calls;
        match &mut self.phase {
            Phase::Closed { consecutive, .. } => {
                *consecutive = 0;
                self.push_sample(now, false);
            }
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= max_trials {
                    self.transition(Phase::closed());
                }
            }
            // Permits are never issued while open (opening starts a new generation).
            Phase::Open { .. } => self.stale += 1,
        }
    }

    /// Records that the permitted call failed at `now`.
    pub fn record_failure(&mut self, permit: CircuitPermit, now: Instant) {
        let now = self.observe(now);
        self.failures += 1;
        if permit.generation != self.generation {
            self.stale += 1;
            return;
        }
        match &mut self.phase {
            Phase::Closed { consecutive, .. } => {
                *consecutive += 1;
                let too_many = *consecutive >= self.config.failure_threshold;
                self.push_sample(now, true);
                if too_many || self.rate_exceeded() {
                    self.open(now);
                }
            }
            Phase::HalfOpen { .. } => self.open(now),
            Phase::Open { .. } => self.stale += 1,
        }
    }

    /// Returns a permit whose call was abandoned (cancelled, or failed for a reason that says
    /// nothing about the target); frees its half-open trial slot.
    pub fn release(&mut self, permit: CircuitPermit) {
        if permit.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn permit(&self) -> CircuitPermit {
        CircuitPermit {
            generation: self.generation,
        }
    }

    fn observe(&mut self, now: Instant) -> Instant {
        let now = match self.last_now {
            Some(last) if last > now => last,
            _ => now,
        };
        self.last_now = Some(now);
        now
    }

    fn open(&mut self, now: Instant) {
        self.times_opened += 1;
        self.transition(Phase::Open { since: now });
    }

    fn transition(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }

    fn push_sample(&mut self, now: Instant, failed: bool) {
        let Some(rate) = &self.config.failure_rate else {
            return;
        };
        let Phase::Closed {
            window,
            window_failures,
            ..
        } = &mut self.phase
        else {
            return;
        };
        window.push_back((now, failed));
        *window_failures += u32::from(failed);
        while let Some(&(at, old_failed)) = window.front() {
            let expired = now.saturating_duration_since(at) >= rate.window;
            let over_cap = window.len() > rate.window_calls as usize;
            if !(expired || over_cap) {
                break;
            }
            window.pop_front();
            *window_failures -= u32::from(old_failed);
        }
    }

    fn rate_exceeded(&self) -> bool {
        let (
            Some(rate),
            Phase::Closed {
                window,
                window_failures,
                ..
            },
        ) = (&self.config.failure_rate, &self.phase)
        else {
            return false;
        };
        let calls = window.len() as u64;
        calls >= u64::from(rate.min_calls)
            && u64::from(*window_failures) * 100 >= u64::from(rate.threshold_percent) * calls
    }
}
