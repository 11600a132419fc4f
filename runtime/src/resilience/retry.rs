//! Retry with exponential backoff and full jitter.
//!
//! The decision step ([`RetryPolicy::decide`]) is IO-free: it takes `now` and the deadline and
//! draws jitter from the injected RNG. [`RetryPolicy::run`] is the async driver around it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::{Rng, RngExt};

use super::{ConfigError, PolicyError};

/// How many times to try and how long to wait between tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Total attempts including the first one. At least 1.
    pub max_attempts: u32,
    /// The backoff envelope before retry `k` (0-based) is `min(max_delay, base_delay * 2^k)`.
    pub base_delay: Duration,
    /// The largest delay between two attempts.
    pub max_delay: Duration,
    /// Overall time budget for [`RetryPolicy::run`], from its start; `None` for no budget
    /// beyond the attempts themselves.
    pub deadline: Option<Duration>,
}

impl Default for RetryConfig {
    /// Three attempts, 50 ms base, 2 s cap, no overall deadline.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            deadline: None,
        }
    }
}

/// What to do after attempt `k` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then make attempt `k + 1`.
    RetryAfter(Duration),
    /// Stop and report the failure.
    GiveUp(GiveUpReason),
}

/// Why a retry policy stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The retry predicate said this error is not worth retrying.
    NotRetryable,
    /// `max_attempts` attempts were made.
    AttemptsExhausted,
    /// Waiting the drawn delay would reach the deadline.
    DeadlineReached,
}

type Predicate<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

/// Exponential backoff with full jitter: after attempt `k` (0-based) fails, wait a uniformly
/// random delay in `[0, min(max_delay, base_delay * 2^k)]`.
///
/// The RNG is injected so that runs replay: seed it (`SmallRng::seed_from_u64`) in tests and
/// simulations, seed it from the OS (`rand::make_rng()`) in production. The predicate (default:
/// retry every error) decides which errors are worth another attempt; only retry operations that
/// are safe to repeat (idempotent, or carrying an idempotency key).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rand::{SeedableRng, rngs::SmallRng};
/// use cortex_runtime::resilience::{PolicyError, RetryConfig, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = RetryConfig {
///     max_attempts: 4,
///     base_delay: Duration::from_millis(10),
///     max_delay: Duration::from_millis(100),
///     deadline: Some(Duration::from_secs(2)),
/// };
/// let retry = RetryPolicy::new(config, SmallRng::seed_from_u64(7))?
///     .retry_if(|e: &&str| *e != "permission denied");
///
/// // Fails twice, then succeeds on attempt 2 (0-based).
/// let answer = retry
///     .run(|attempt| async move { if attempt < 2 { Err("busy") } else { Ok(attempt) } })
///     .await;
/// assert_eq!(answer.ok(), Some(2));
///
/// // Errors the predicate rejects are returned at once.
/// let denied = retry.run(|_| async { Err::<(), _>("permission denied") }).await;
/// assert!(matches!(denied, Err(PolicyError::Inner("permission denied"))));
///
/// // Every delay stays within the envelope.
/// for (k, delay) in retry.delays().enumerate() {
///     assert!(delay <= retry.envelope(k as u32));
/// }
/// # Ok(())
/// # }
/// ```
pub struct RetryPolicy<E> {
    config: RetryConfig,
    rng: Mutex<Box<dyn Rng + Send>>,
    should_retry: Predicate<E>,
    retry_on_timeout: bool,
}

impl<E> fmt::Debug for RetryPolicy<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("config", &self.config)
            .field("retry_on_timeout", &self.retry_on_timeout)
            .finish_non_exhaustive()
    }
}

impl<E> RetryPolicy<E> {
    /// A policy retrying every error, drawing jitter from `rng`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if `max_attempts` is zero.
    pub fn new(config: RetryConfig, rng: impl Rng + Send + 'static) -> Result<Self, ConfigError> {
        if config.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts", "at least 1"));
        }
        Ok(Self {
            config,
            rng: Mutex::new(Box::new(rng)),
            should_retry: Arc::new(|_| true),
            retry_on_timeout: true,
        })
    }

    /// Retry only errors for which `predicate` returns true.
    pub fn retry_if(mut self, predicate: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.should_retry = Arc::new(predicate);
        self
    }

    /// Inside a [`Pipeline`](super::Pipeline), whether a [`PolicyError::Timeout`] from an inner
    /// layer is retried (default true). Circuit-open and bulkhead-full rejections never are.
    pub fn retry_on_timeout(mut self, retry: bool) -> Self {
        self.retry_on_timeout = retry;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Whether the predicate wants `error` retried.
    pub fn should_retry(&self, error: &E) -> bool {
        (self.should_retry)(error)
    }

    pub(crate) fn retries_timeouts(&self) -> bool {
        self.retry_on_timeout
    }

    /// The upper bound of the delay after attempt `attempt` fails:
    /// `min(max_delay, base_delay * 2^attempt)`, saturating instead of overflowing.
    pub fn envelope(&self, attempt: u32) -> Duration {
        let cap = self.config.max_delay;
        let base = self.config.base_delay.as_nanos();
        if base == 0 {
            return Duration::ZERO;
        }
        // With a non-zero base, a shift past 127 bits or an overflowing product is far above
        // any `Duration`, hence above the cap.
        let doubled = 1u128
            .checked_shl(attempt)
            .and_then(|factor| base.checked_mul(factor));
        match doubled {
            Some(nanos) if nanos < cap.as_nanos() => duration_from_nanos(nanos),
            _ => cap,
        }
    }

    /// Draws the delay after attempt `attempt` fails, uniformly in `[0, envelope(attempt)]`.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        let envelope = self.envelope(attempt);
        let max_nanos = u64::try_from(envelope.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.lock().random_range(0..=max_nanos))
    }

    /// The delays a run that fails every attempt would wait (`max_attempts - 1` of them),
    /// drawn from the policy's RNG.
    pub fn delays(&self) -> Delays<'_, E> {
        Delays {
            policy: self,
            attempt: 0,
        }
    }

    /// The IO-free decision step: attempt `failed_attempt` (0-based) just failed with `error`
    /// at `now`; should another attempt follow, and after how long?
    ///
    /// Checks, in order: the predicate, the attempt budget, then draws a delay (consuming the
    /// RNG) and gives up if `now + delay` would reach `deadline`.
    pub fn decide(
        &self,
        failed_attempt: u32,
        error: &E,
        now: Instant,
        deadline: Option<Instant>,
    ) -> RetryDecision {
        self.decide_retryable(failed_attempt, self.should_retry(error), now, deadline)
    }

    /// [`decide`](Self::decide) with the predicate already evaluated.
    pub(crate) fn decide_retryable(
        &self,
        failed_attempt: u32,
        retryable: bool,
        now: Instant,
        deadline: Option<Instant>,
    ) -> RetryDecision {
        if !retryable {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable);
        }
        if failed_attempt.saturating_add(1) >= self.config.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted);
        }
        let delay = self.next_delay(failed_attempt);
        if let Some(deadline) = deadline {
            // An overflowing `now + delay` is past any deadline.
            if now.checked_add(delay).is_none_or(|wake| wake >= deadline) {
                return RetryDecision::GiveUp(GiveUpReason::DeadlineReached);
            }
        }
        RetryDecision::RetryAfter(delay)
    }

    /// Calls `make(attempt)` (attempt = 0, 1, ...) until it succeeds or the policy gives up,
    /// within the configured overall deadline if any.
    ///
    /// # Errors
    ///
    /// - [`PolicyError::Inner`]: an error the predicate does not retry.
    /// - [`PolicyError::RetriesExhausted`]: out of attempts, or the next delay would reach the
    ///   deadline; `last` is the last attempt's error.
    /// - [`PolicyError::Timeout`]: the deadline passed during an attempt.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the attempt in flight; nothing else is left behind.
    pub async fn run<T, F, Fut>(&self, make: F) -> Result<T, PolicyError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = self
            .config
            .deadline
            .and_then(|budget| tokio::time::Instant::now().checked_add(budget));
        self.drive(deadline, make).await
    }

    /// [`run`](Self::run) with an explicit deadline (the earlier of it and the configured
    /// budget applies), e.g. the deadline of an `ask`.
    ///
    /// # Errors
    ///
    /// As for [`run`](Self::run).
    ///
    /// # Cancel safety
    ///
    /// As for [`run`](Self::run).
    pub async fn run_until<T, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        make: F,
    ) -> Result<T, PolicyError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let own = self
            .config
            .deadline
            .and_then(|budget| tokio::time::Instant::now().checked_add(budget));
        let deadline = own.map_or(deadline, |own| own.min(deadline));
        self.drive(Some(deadline), make).await
    }

    async fn drive<T, F, Fut>(
        &self,
        deadline: Option<tokio::time::Instant>,
        mut make: F,
    ) -> Result<T, PolicyError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0u32;
        loop {
            let outcome = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, make(attempt)).await {
                    Ok(outcome) => outcome,
                    Err(_elapsed) => return Err(PolicyError::Timeout),
                },
                None => make(attempt).await,
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let now = tokio::time::Instant::now();
            let decision = self.decide(
                attempt,
                &error,
                now.into_std(),
                deadline.map(tokio::time::Instant::into_std),
            );
            match decision {
                RetryDecision::RetryAfter(delay) => {
                    tracing::debug!(attempt, ?delay, "attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                RetryDecision::GiveUp(GiveUpReason::NotRetryable) => {
                    return Err(PolicyError::Inner(error));
                }
                RetryDecision::GiveUp(reason) => {
                    tracing::debug!(attempts = attempt + 1, ?reason, "giving up");
                    return Err(PolicyError::RetriesExhausted {
                        last: Box::new(PolicyError::Inner(error)),
                        attempts: attempt + 1,
                    });
                }
            }
        }
    }
}

/// Iterator over the backoff delays of a [`RetryPolicy`]; see [`RetryPolicy::delays`].
#[derive(Debug)]
pub struct Delays<'a, E> {
    policy: &'a RetryPolicy<E>,
    attempt: u32,
}

impl<E> Iterator for Delays<'_, E> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt.saturating_add(1) >= self.policy.config.max_attempts {
            return None;
        }
        let delay = self.policy.next_delay(self.attempt);
        self.attempt += 1;
        Some(delay)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .policy
            .config
            .max_attempts
            .saturating_sub(self.attempt.saturating_add(1)) as usize;
        (left, Some(left))
    }
}

impl<E> ExactSizeIterator for Delays<'_, E> {}

/// `nanos` must be below some `Duration`'s nanosecond count, so the seconds fit in a `u64`.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // Below one second's worth of nanoseconds, so it fits in a u32.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, subsec)
}
