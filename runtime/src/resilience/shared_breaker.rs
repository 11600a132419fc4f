//! A [`CircuitBreaker`] shared by many tasks, reading tokio's clock.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{
    CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, CircuitPermit, CircuitState,
    CircuitStats, ConfigError, PolicyError,
};

/// A cloneable handle to one circuit breaker (for instance, one per remote node), usable from
/// any number of tasks. Clones share the state.
///
/// Time comes from [`tokio::time::Instant::now`], so paused-time tests drive it. The lock is
/// held only for the bookkeeping, never across the guarded call.
///
/// # Examples
///
/// ```
/// use cortex_runtime::resilience::{
///     CircuitBreakerConfig, CircuitState, PolicyError, SharedCircuitBreaker,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = CircuitBreakerConfig { failure_threshold: 1, ..Default::default() };
/// let breaker = SharedCircuitBreaker::new("node-a", config)?;
///
/// let failed: Result<(), _> = breaker.call(async { Err::<(), &str>("connection reset") }).await;
/// assert!(matches!(failed, Err(PolicyError::Inner("connection reset"))));
/// assert_eq!(breaker.state(), CircuitState::Open);
///
/// // While open, calls are refused without running.
/// let refused = breaker.call(async { Ok::<_, &str>(42) }).await;
/// assert!(matches!(refused, Err(PolicyError::CircuitOpen { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedCircuitBreaker {
    inner: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    core: Mutex<CircuitBreaker>,
}

impl std::fmt::Debug for SharedCircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCircuitBreaker")
            .field("name", &self.inner.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SharedCircuitBreaker {
    /// A closed breaker; `name` labels its log lines (e.g. the node it guards).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] as for [`CircuitBreaker::new`].
    pub fn new(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
    ) -> Result<Self, ConfigError> {
        Ok(Self::from_core(name, CircuitBreaker::new(config)?))
    }

    /// Wraps an existing core.
    pub fn from_core(name: impl Into<Arc<str>>, core: CircuitBreaker) -> Self {
        Self {
            inner: Arc::new(Shared {
                name: name.into(),
                core: Mutex::new(core),
            }),
        }
    }

    /// The label given at construction.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.inner.core.lock().state()
    }

    /// State and counters.
    pub fn stats(&self) -> CircuitStats {
        self.inner.core.lock().stats()
    }

    /// Whether a call made now would be admitted; takes no permit (see
    /// [`CircuitBreaker::would_permit`]).
    pub fn would_permit(&self) -> bool {
        self.inner.core.lock().would_permit(now())
    }

    /// Asks for permission to make one call now. The guard records the outcome: call
    /// [`CircuitGuard::success`] or [`CircuitGuard::failure`]; dropping it releases the
    /// permit without an outcome.
    ///
    /// # Errors
    ///
    /// [`CircuitOpenError`] if the breaker refuses the call.
    pub fn try_acquire(&self) -> Result<CircuitGuard, CircuitOpenError> {
        let mut core = self.inner.core.lock();
        let before = core.state();
        let permit = core.try_acquire(now());
        let after = core.state();
        drop(core);
        log_transition(&self.inner.name, before, after);
        let permit = permit?;
        Ok(CircuitGuard {
            shared: Arc::clone(&self.inner),
            permit: Some(permit),
        })
    }

    /// Runs `fut` if the breaker permits it; an `Err` counts as a failure.
    ///
    /// # Errors
    ///
    /// [`PolicyError::CircuitOpen`] if refused (then `fut` is dropped unpolled), else
    /// [`PolicyError::Inner`] with the future's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future releases the permit without recording an outcome.
    pub async fn call<T, E, Fut>(&self, fut: Fut) -> Result<T, PolicyError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(fut, |_| true).await
    }

    /// Like [`call`](Self::call), but `is_failure` decides which errors count against the
    /// target; the others count as successes (the target answered, e.g. "unknown actor kind").
    ///
    /// # Errors
    ///
    /// As for [`call`](Self::call).
    ///
    /// # Cancel safety
    ///
    /// As for [`call`](Self::call).
    pub async fn call_with<T, E, Fut, P>(
        &self,
        fut: Fut,
        is_failure: P,
    ) -> Result<T, PolicyError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
        P: FnOnce(&E) -> bool,
    {
        let guard = self
            .try_acquire()
            .map_err(|open| PolicyError::CircuitOpen {
                retry_after: open.retry_after,
            })?;
        match fut.await {
            Ok(value) => {
                guard.success();
                Ok(value)
            }
            Err(e) => {
                if is_failure(&e) {
                    guard.failure();
                } else {
                    guard.success();
                }
                Err(PolicyError::Inner(e))
            }
        }
    }
}

/// One permitted call of a [`SharedCircuitBreaker`]. Dropping it without
/// [`success`](Self::success) or [`failure`](Self::failure) releases the permit (no outcome).
#[derive(Debug)]
#[must_use = "record the outcome with success() or failure()"]
pub struct CircuitGuard {
    shared: Arc<Shared>,
    permit: Option<CircuitPermit>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("name", &self.name).finish()
    }
}

impl CircuitGuard {
    /// Records that the call succeeded.
    pub fn success(mut self) {
        self.finish(true);
    }

    /// Records that the call failed.
    pub fn failure(mut self) {
        self.finish(false);
    }

    fn finish(&mut self, ok: bool) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut core = self.shared.core.lock();
        let before = core.state();
        if ok {
            core.record_success(permit, now());
        } else {
            core.record_failure(permit, now());
        }
        let after = core.state();
        drop(core);
        log_transition(&self.shared.name, before, after);
    }
}

impl Drop for CircuitGuard {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.shared.core.lock().release(permit);
        }
    }
}

fn log_transition(name: &str, before: CircuitState, after: CircuitState) {
    if before == after {
        return;
    }
    if after == CircuitState::Open {
        tracing::warn!(breaker = name, from = %before, "circuit breaker opened");
    } else {
        tracing::info!(breaker = name, from = %before, to = %after, "circuit breaker state changed");
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
