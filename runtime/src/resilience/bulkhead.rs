//! Bulkhead: cap the calls running at once, queue a bounded number, reject the rest at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{ConfigError, PolicyError, far_future};

/// Limits of a [`Bulkhead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls allowed to run at once. At least 1.
    pub max_concurrent: usize,
    /// Calls allowed to wait for a slot; one more is rejected immediately. May be 0.
    pub max_queued: usize,
    /// Longest wait for a slot in [`Bulkhead::run`] and inside a [`Pipeline`](super::Pipeline)
    /// (an earlier deadline from an outer timeout wins).
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    /// 64 running, 128 waiting, 5 s maximum wait.
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_queued: 128,
            max_wait: Duration::from_secs(5),
        }
    }
}

/// Why [`Bulkhead::acquire`] gave no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkheadError {
    /// Every slot was busy and the queue was full; nothing waited.
    #[error(
        "bulkhead full: {max_concurrent} calls running and {max_queued} waiting; shed load or \
         raise the limits"
    )]
    Full {
        /// Configured concurrency limit.
        max_concurrent: usize,
        /// Configured queue limit.
        max_queued: usize,
    },
    /// The deadline passed while waiting in the queue.
    #[error("deadline passed while waiting for a bulkhead slot")]
    Timeout,
}

/// Concurrency limiter with a bounded FIFO wait queue. Clones share the limits.
///
/// Waiters are served in arrival order (tokio's semaphore is fair). A slot is held by a
/// [`BulkheadPermit`] and freed when the permit drops.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cortex_runtime::resilience::{Bulkhead, BulkheadConfig, BulkheadError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bulkhead = Bulkhead::new(BulkheadConfig {
///     max_concurrent: 1,
///     max_queued: 0,
///     max_wait: Duration::from_secs(1),
/// })?;
///
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
/// let permit = bulkhead.acquire(deadline).await?;
/// assert_eq!(bulkhead.in_flight(), 1);
///
/// // The only slot is taken and nobody may queue: rejected without waiting.
/// assert!(matches!(bulkhead.acquire(deadline).await, Err(BulkheadError::Full { .. })));
///
/// drop(permit);
/// let answer = bulkhead.run(async { Ok::<_, std::io::Error>(42) }).await?;
/// assert_eq!(answer, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BulkheadConfig,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
}

/// A running slot of a [`Bulkhead`]; dropping it frees the slot.
#[derive(Debug)]
#[must_use = "the slot is freed as soon as the permit is dropped"]
pub struct BulkheadPermit {
    _slot: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// A bulkhead with all slots free.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if `max_concurrent` is zero or above tokio's semaphore limit.
    pub fn new(config: BulkheadConfig) -> Result<Self, ConfigError> {
        if config.max_concurrent == 0 || config.max_concurrent > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "max_concurrent",
                "between 1 and tokio::sync::Semaphore::MAX_PERMITS",
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.max_concurrent)),
                queued: AtomicUsize::new(0),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BulkheadConfig {
        &self.inner.config
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.inner.config.max_concurrent - self.inner.slots.available_permits()
    }

    /// Calls waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Takes a free slot without waiting.
    ///
    /// # Errors
    ///
    /// [`BulkheadError::Full`] if no slot is free (queued callers keep their turn).
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadError> {
        match Arc::clone(&self.inner.slots).try_acquire_owned() {
            Ok(slot) => Ok(BulkheadPermit { _slot: slot }),
            Err(_) => Err(self.full()),
        }
    }

    /// Takes a slot, waiting in the queue until `deadline` if all are busy.
    ///
    /// # Errors
    ///
    /// [`BulkheadError::Full`] at once if the queue is full; [`BulkheadError::Timeout`] if the
    /// deadline passes while queued.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the queue and takes no slot.
    pub async fn acquire(&self, deadline: Instant) -> Result<BulkheadPermit, BulkheadError> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let _queued = self.enqueue()?;
        let slots = Arc::clone(&self.inner.slots);
        match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
            Ok(Ok(slot)) => Ok(BulkheadPermit { _slot: slot }),
            // The semaphore is never closed while `self` holds it; report a rejection rather
            // than panic should that ever change.
            Ok(Err(_closed)) => Err(self.full()),
            Err(_elapsed) => Err(BulkheadError::Timeout),
        }
    }

    /// Runs `fut` in a slot, waiting at most `max_wait` for one.
    ///
    /// # Errors
    ///
    /// [`PolicyError::BulkheadFull`] if no slot was obtained, because the queue was full or
    /// `max_wait` passed (then `fut` is dropped unpolled), else [`PolicyError::Inner`] with the
    /// future's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future frees the slot or the queue place.
    pub async fn run<T, E, Fut>(&self, fut: Fut) -> Result<T, PolicyError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now()
            .checked_add(self.inner.config.max_wait)
            .unwrap_or_else(far_future);
        let _permit = self.acquire(deadline).await.map_err(|_| self.rejection())?;
        fut.await.map_err(PolicyError::Inner)
    }

    /// The error reported when no slot was obtained, whether the queue was full or the wait
    /// ran out: either way the call never started, so it is a rejection, not a
    /// [`PolicyError::Timeout`] (which means the call may have taken effect).
    pub(crate) fn rejection<E>(&self) -> PolicyError<E> {
        PolicyError::BulkheadFull {
            max_concurrent: self.inner.config.max_concurrent,
            max_queued: self.inner.config.max_queued,
        }
    }

    fn enqueue(&self) -> Result<QueuePlace<'_>, BulkheadError> {
        let max = self.inner.config.max_queued;
        self.inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < max).then_some(queued + 1)
            })
            .map_err(|_| self.full())?;
        Ok(QueuePlace {
            queued: &self.inner.queued,
        })
    }

    fn full(&self) -> BulkheadError {
        BulkheadError::Full {
            max_concurrent: self.inner.config.max_concurrent,
            max_queued: self.inner.config.max_queued,
        }
    }
}

/// A place in the wait queue, given back on drop (including when the waiter is cancelled).
struct QueuePlace<'a> {
    queued: &'a AtomicUsize,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}
