//! Composition: several policies around one operation, in a chosen order.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{
    Bulkhead, GiveUpReason, PolicyError, RetryDecision, RetryPolicy, SharedCircuitBreaker,
    far_future,
};

type FailurePredicate<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

enum Layer<E> {
    Timeout(Duration),
    Retry(Arc<RetryPolicy<E>>),
    CircuitBreaker {
        breaker: SharedCircuitBreaker,
        is_failure: FailurePredicate<E>,
    },
    Bulkhead(Bulkhead),
}

impl<E> Clone for Layer<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Timeout(limit) => Self::Timeout(*limit),
            Self::Retry(policy) => Self::Retry(Arc::clone(policy)),
            Self::CircuitBreaker {
                breaker,
                is_failure,
            } => Self::CircuitBreaker {
                breaker: breaker.clone(),
                is_failure: Arc::clone(is_failure),
            },
            Self::Bulkhead(bulkhead) => Self::Bulkhead(bulkhead.clone()),
        }
    }
}

impl<E> Layer<E> {
    fn kind(&self) -> LayerKind {
        match self {
            Self::Timeout(_) => LayerKind::Timeout,
            Self::Retry(_) => LayerKind::Retry,
            Self::CircuitBreaker { .. } => LayerKind::CircuitBreaker,
            Self::Bulkhead(_) => LayerKind::Bulkhead,
        }
    }
}

/// Which policy a [`Pipeline`] layer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerKind {
    /// [`Pipeline::timeout`].
    Timeout,
    /// [`Pipeline::retry`].
    Retry,
    /// [`Pipeline::circuit_breaker`].
    CircuitBreaker,
    /// [`Pipeline::bulkhead`].
    Bulkhead,
}

/// Policies stacked around an operation. **The order of the builder calls is the order of
/// wrapping, outermost first**: `Pipeline::new().timeout(t).retry(r)` bounds the whole retry
/// loop by `t`, while `Pipeline::new().retry(r).timeout(t)` gives every attempt its own `t`.
///
/// How the layers see each other's outcomes:
/// - **timeout** fails with [`PolicyError::Timeout`] when its time is up and passes its
///   deadline inward: an inner retry gives up ([`PolicyError::RetriesExhausted`]) rather than
///   sleep past it, an inner bulkhead waits no longer than it.
/// - **retry** re-runs everything inside it. It retries [`PolicyError::Inner`] errors its
///   predicate accepts and [`PolicyError::Timeout`] (unless
///   [`RetryPolicy::retry_on_timeout`]`(false)`); it never retries rejections
///   ([`PolicyError::CircuitOpen`], [`PolicyError::BulkheadFull`]): they fail fast. Each
///   attempt counts once in a breaker *inside* the retry; a breaker *outside* sees one outcome
///   for the whole retried call.
/// - **circuit breaker** counts [`PolicyError::Inner`] errors its predicate accepts (all by
///   default), timeouts and exhausted retries as failures; other inner errors as successes
///   (the target answered); rejections from inner layers as no outcome. A call still running
///   when an enclosing timeout expires counts as a failure, so hung targets open the breaker.
/// - **bulkhead** holds a slot for everything inside it, waiting at most
///   [`BulkheadConfig::max_wait`](super::BulkheadConfig::max_wait) (or the outer deadline).
///
/// A typical client stack is `timeout(overall).retry(..).circuit_breaker(node).bulkhead(..)
/// .timeout(per_attempt)`.
///
/// The pipeline is cheap to clone (the policies inside are shared) and `Send + Sync`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use rand::{SeedableRng, rngs::SmallRng};
/// use cortex_runtime::resilience::{
///     CircuitBreakerConfig, LayerKind, Pipeline, PolicyError, RetryConfig, RetryPolicy,
///     SharedCircuitBreaker,
/// };
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = SharedCircuitBreaker::new("node-a", CircuitBreakerConfig::default())?;
/// let retry = RetryPolicy::new(RetryConfig::default(), SmallRng::seed_from_u64(1))?;
/// let pipeline = Pipeline::new()
///     .timeout(Duration::from_secs(5))
///     .retry(retry)
///     .circuit_breaker(breaker.clone())
///     .timeout(Duration::from_millis(500));
/// assert_eq!(
///     pipeline.layers(),
///     [LayerKind::Timeout, LayerKind::Retry, LayerKind::CircuitBreaker, LayerKind::Timeout]
/// );
///
/// // The first attempt hangs and hits the per-attempt timeout; the retry's second attempt works.
/// let answer = pipeline
///     .run(|attempt| async move {
///         if attempt == 0 {
///             std::future::pending::<()>().await;
///         }
///         Ok::<_, std::io::Error>("pong")
///     })
///     .await?;
/// assert_eq!(answer, "pong");
/// assert_eq!(breaker.stats().failures, 1); // the timed-out attempt
/// # Ok(())
/// # }
/// ```
pub struct Pipeline<E> {
    layers: Vec<Layer<E>>,
}

impl<E> Clone for Pipeline<E> {
    fn clone(&self) -> Self {
        Self {
            layers: self.layers.clone(),
        }
    }
}

impl<E> Default for Pipeline<E> {
    fn default() -> Self {
        Self { layers: Vec::new() }
    }
}

impl<E> fmt::Debug for Pipeline<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field(
                "layers",
                &self.layers.iter().map(Layer::kind).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What an inner layer tells an outer one while the call runs.
#[derive(Debug, Clone, Copy)]
struct Context {
    /// The earliest deadline imposed by an enclosing layer.
    deadline: Option<Instant>,
}

impl Context {
    fn tighten(self, deadline: Instant) -> Self {
        Self {
            deadline: Some(self.deadline.map_or(deadline, |d| d.min(deadline))),
        }
    }
}

impl<E: Send + 'static> Pipeline<E> {
    /// An empty pipeline: runs the operation once, unguarded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a timeout of `limit` around the layers added after it.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.layers.push(Layer::Timeout(limit));
        self
    }

    /// Adds a retry loop around the layers added after it.
    pub fn retry(mut self, policy: RetryPolicy<E>) -> Self {
        self.layers.push(Layer::Retry(Arc::new(policy)));
        self
    }

    /// Adds a circuit breaker around the layers added after it; every [`PolicyError::Inner`]
    /// error counts as a failure.
    pub fn circuit_breaker(self, breaker: SharedCircuitBreaker) -> Self {
        self.circuit_breaker_with(breaker, |_| true)
    }

    /// Like [`circuit_breaker`](Self::circuit_breaker), counting only the
    /// [`PolicyError::Inner`] errors for which `is_failure` is true.
    pub fn circuit_breaker_with(
        mut self,
        breaker: SharedCircuitBreaker,
        is_failure: impl Fn(&E) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.layers.push(Layer::CircuitBreaker {
            breaker,
            is_failure: Arc::new(is_failure),
        });
        self
    }

    /// Adds a bulkhead around the layers added after it.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.layers.push(Layer::Bulkhead(bulkhead));
        self
    }

    /// The layers, outermost first.
    pub fn layers(&self) -> Vec<LayerKind> {
        self.layers.iter().map(Layer::kind).collect()
    }

    /// Runs the operation through every layer. `make(n)` builds the operation's future for
    /// the `n`-th time it is started within this run (0-based; only retries start it again).
    ///
    /// # Errors
    ///
    /// Whatever the layers report; see [`PolicyError`] and the type-level docs.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the attempt in flight and releases breaker permits and
    /// bulkhead slots.
    pub async fn run<T, F, Fut>(&self, make: F) -> Result<T, PolicyError<E>>
    where
        T: Send,
        F: FnMut(u32) -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        let mut make = make;
        let mut started = 0;
        self.exec(0, Context { deadline: None }, &mut make, &mut started)
            .await
    }

    /// [`run`](Self::run) inside an outer `deadline` (e.g. an `ask`'s), as if the pipeline
    /// began with a timeout ending then.
    ///
    /// # Errors
    ///
    /// As for [`run`](Self::run); [`PolicyError::Timeout`] when `deadline` passes.
    ///
    /// # Cancel safety
    ///
    /// As for [`run`](Self::run).
    pub async fn run_until<T, F, Fut>(
        &self,
        deadline: Instant,
        make: F,
    ) -> Result<T, PolicyError<E>>
    where
        T: Send,
        F: FnMut(u32) -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        let mut make = make;
        let mut started = 0;
        let ctx = Context {
            deadline: Some(deadline),
        };
        let inner = self.exec(0, ctx, &mut make, &mut started);
        match tokio::time::timeout_at(deadline, inner).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => Err(PolicyError::Timeout),
        }
    }

    fn exec<'a, T, F, Fut>(
        &'a self,
        index: usize,
        ctx: Context,
        make: &'a mut F,
        started: &'a mut u32,
    ) -> BoxFuture<'a, Result<T, PolicyError<E>>>
    where
        T: Send,
        F: FnMut(u32) -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        Box::pin(async move {
            let Some(layer) = self.layers.get(index) else {
                let n = *started;
                *started = started.saturating_add(1);
                return make(n).await.map_err(PolicyError::Inner);
            };
            let next = index + 1;
            match layer {
                Layer::Timeout(limit) => {
                    let deadline = Instant::now()
                        .checked_add(*limit)
                        .unwrap_or_else(far_future);
                    let inner = self.exec(next, ctx.tighten(deadline), make, started);
                    match tokio::time::timeout_at(deadline, inner).await {
                        Ok(outcome) => outcome,
                        Err(_elapsed) => Err(PolicyError::Timeout),
                    }
                }
                Layer::Retry(policy) => self.exec_retry(policy, next, ctx, make, started).await,
                Layer::CircuitBreaker {
                    breaker,
                    is_failure,
                } => {
                    let guard = breaker
                        .try_acquire()
                        .map_err(|open| PolicyError::CircuitOpen {
                            retry_after: open.retry_after,
                        })?;
                    // Enforce the enclosing deadline here too, so that a call hanging until
                    // an outer timeout fires is booked as a failure instead of being dropped
                    // unrecorded (this timer fires first: the outer one polls us before its own).
                    let inner = self.exec(next, ctx, make, started);
                    let outcome = match ctx.deadline {
                        Some(deadline) => match tokio::time::timeout_at(deadline, inner).await {
                            Ok(outcome) => outcome,
                            Err(_elapsed) => Err(PolicyError::Timeout),
                        },
                        None => inner.await,
                    };
                    match &outcome {
                        Ok(_) => guard.success(),
                        Err(error) => match counts_as_failure(error, &**is_failure) {
                            Some(true) => guard.failure(),
                            Some(false) => guard.success(),
                            None => drop(guard),
                        },
                    }
                    outcome
                }
                Layer::Bulkhead(bulkhead) => {
                    let own = Instant::now()
                        .checked_add(bulkhead.config().max_wait)
                        .unwrap_or_else(far_future);
                    let wait_until = ctx.deadline.map_or(own, |d| d.min(own));
                    let _slot = bulkhead
                        .acquire(wait_until)
                        .await
                        .map_err(|_| bulkhead.rejection())?;
                    self.exec(next, ctx, make, started).await
                }
            }
        })
    }

    async fn exec_retry<T, F, Fut>(
        &self,
        policy: &RetryPolicy<E>,
        next: usize,
        ctx: Context,
        make: &mut F,
        started: &mut u32,
    ) -> Result<T, PolicyError<E>>
    where
        T: Send,
        F: FnMut(u32) -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        let own = policy.config().deadline.map(|budget| {
            Instant::now()
                .checked_add(budget)
                .unwrap_or_else(far_future)
        });
        let ctx = match own {
            Some(own) => ctx.tighten(own),
            None => ctx,
        };
        let mut attempt = 0u32;
        loop {
            let inner = self.exec(next, ctx, &mut *make, &mut *started);
            let outcome = match own {
                Some(own) => match tokio::time::timeout_at(own, inner).await {
                    Ok(outcome) => outcome,
                    Err(_elapsed) => Err(PolicyError::Timeout),
                },
                None => inner.await,
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let retryable = match &error {
                PolicyError::Inner(e) => policy.should_retry(e),
                PolicyError::Timeout => policy.retries_timeouts(),
                _ => false,
            };
            let decision = policy.decide_retryable(
                attempt,
                retryable,
                Instant::now().into_std(),
                ctx.deadline.map(Instant::into_std),
            );
            match decision {
                RetryDecision::RetryAfter(delay) => {
                    tracing::debug!(attempt, ?delay, "pipeline attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                RetryDecision::GiveUp(GiveUpReason::NotRetryable) => return Err(error),
                RetryDecision::GiveUp(_) => {
                    return Err(PolicyError::RetriesExhausted {
                        last: Box::new(error),
                        attempts: attempt + 1,
                    });
                }
            }
        }
    }
}

/// How a breaker layer books an inner error: `Some(true)` failure, `Some(false)` success (the
/// target answered), `None` no outcome (the call never reached the target).
fn counts_as_failure<E>(
    error: &PolicyError<E>,
    is_failure: &(dyn Fn(&E) -> bool + Send + Sync),
) -> Option<bool> {
    match error {
        PolicyError::Inner(e) => Some(is_failure(e)),
        PolicyError::Timeout => Some(true),
        PolicyError::RetriesExhausted { last, .. } => counts_as_failure(last, is_failure),
        PolicyError::CircuitOpen { .. } | PolicyError::BulkheadFull { .. } => None,
    }
}
