//! Timeout: give up on a call that takes too long.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{PolicyError, far_future};

/// Bounds how long one call may take, on tokio's clock.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cortex_runtime::resilience::{PolicyError, TimeoutPolicy};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let timeout = TimeoutPolicy::new(Duration::from_millis(100));
///
/// let fast = timeout.run(async { Ok::<_, std::io::Error>("done") }).await;
/// assert_eq!(fast.unwrap(), "done");
///
/// let slow = timeout
///     .run(async {
///         tokio::time::sleep(Duration::from_secs(5)).await;
///         Ok::<_, std::io::Error>("too late")
///     })
///     .await;
/// assert!(matches!(slow, Err(PolicyError::Timeout)));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    limit: Duration,
}

impl TimeoutPolicy {
    /// A policy allowing each call `limit`.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }

    /// The time each call is allowed.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The deadline for a call starting now (saturating far in the future on overflow).
    pub fn deadline_from_now(&self) -> Instant {
        Instant::now()
            .checked_add(self.limit)
            .unwrap_or_else(far_future)
    }

    /// Runs `fut`, abandoning it after the limit.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Timeout`] if the limit passed first (the future is dropped), else
    /// [`PolicyError::Inner`] with the future's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe to the extent `fut` is: dropping this drops `fut`.
    pub async fn run<T, E, Fut>(&self, fut: Fut) -> Result<T, PolicyError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        Self::run_until(self.deadline_from_now(), fut).await
    }

    /// Runs `fut` until `deadline`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Timeout`] if the deadline passed first (the future is dropped), else
    /// [`PolicyError::Inner`] with the future's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe to the extent `fut` is: dropping this drops `fut`.
    pub async fn run_until<T, E, Fut>(deadline: Instant, fut: Fut) -> Result<T, PolicyError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(outcome) => outcome.map_err(PolicyError::Inner),
            Err(_elapsed) => Err(PolicyError::Timeout),
        }
    }
}
