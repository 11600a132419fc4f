//! Typed errors shared by every policy.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Why a call guarded by a resilience policy did not produce a value.
///
/// `E` is the error type of the guarded operation. The variants say whether the operation ran:
/// [`CircuitOpen`](Self::CircuitOpen) and [`BulkheadFull`](Self::BulkheadFull) are local
/// rejections (the operation was never started, so no state changed at the target);
/// [`Timeout`](Self::Timeout) means the operation was abandoned mid-flight (it may or may not have
/// taken effect); [`Inner`](Self::Inner) and [`RetriesExhausted`](Self::RetriesExhausted) carry
/// what the operation itself reported.
#[derive(Debug)]
#[non_exhaustive]
pub enum PolicyError<E> {
    /// The circuit breaker refused the call without running it: the target has been failing.
    CircuitOpen {
        /// How long until the breaker lets a trial call through (zero while trial calls are
        /// already in flight in the half-open state).
        retry_after: Duration,
    },
    /// The bulkhead refused the call without running it: every slot was busy and the wait
    /// queue was full, or no slot freed up before the wait deadline.
    BulkheadFull {
        /// Calls the bulkhead lets run at once.
        max_concurrent: usize,
        /// Calls the bulkhead lets wait for a slot.
        max_queued: usize,
    },
    /// The deadline passed first; the operation (if it had started) was dropped and may or
    /// may not have taken effect.
    Timeout,
    /// The operation ran and failed with this error.
    Inner(E),
    /// A retry policy gave up: the attempts or the time budget ran out.
    RetriesExhausted {
        /// The failure of the last attempt.
        last: Box<PolicyError<E>>,
        /// How many attempts were made (at least one).
        attempts: u32,
    },
}

impl<E> PolicyError<E> {
    /// True if the operation was never started (circuit open or bulkhead full): nothing
    /// changed at the target, so the call is always safe to repeat later.
    pub fn is_rejection(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. } | Self::BulkheadFull { .. })
    }

    /// The operation's own error, looking through [`RetriesExhausted`](Self::RetriesExhausted).
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::RetriesExhausted { last, .. } => last.inner(),
            _ => None,
        }
    }

    /// Consumes the error and returns the operation's own error, looking through
    /// [`RetriesExhausted`](Self::RetriesExhausted).
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::RetriesExhausted { last, .. } => last.into_inner(),
            _ => None,
        }
    }

    /// Maps the operation's error type, keeping the policy outcome.
    pub fn map_inner<F, G>(self, f: G) -> PolicyError<F>
    where
        G: FnOnce(E) -> F,
    {
        match self {
            Self::CircuitOpen { retry_after } => PolicyError::CircuitOpen { retry_after },
            Self::BulkheadFull {
                max_concurrent,
                max_queued,
            } => PolicyError::BulkheadFull {
                max_concurrent,
                max_queued,
            },
            Self::Timeout => PolicyError::Timeout,
            Self::Inner(e) => PolicyError::Inner(f(e)),
            Self::RetriesExhausted { last, attempts } => PolicyError::RetriesExhausted {
                last: Box::new(last.map_inner(f)),
                attempts,
            },
        }
    }
}

impl<E: fmt::Display> fmt::Display for PolicyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CircuitOpen { retry_after } => write!(
                f,
                "circuit breaker open: recent calls to this target failed, so the call was not \
                 attempted; retry after {retry_after:?} or route elsewhere"
            ),
            Self::BulkheadFull {
                max_concurrent,
                max_queued,
            } => write!(
                f,
                "bulkhead full: no slot of {max_concurrent} freed up in time (up to {max_queued} \
                 may wait), so the call was not attempted; shed load or raise the limits"
            ),
            Self::Timeout => write!(
                f,
                "deadline passed before the call completed; it may or may not have taken effect"
            ),
            Self::Inner(e) => e.fmt(f),
            Self::RetriesExhausted { attempts, .. } => {
                write!(f, "gave up after {attempts} attempt(s)")
            }
        }
    }
}

impl<E: Error + 'static> Error for PolicyError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            // `Inner` displays as the inner error, so its source is the inner error's source
            // (printing the inner error twice in a report chain would be noise).
            Self::Inner(e) => e.source(),
            Self::RetriesExhausted { last, .. } => Some(&**last),
            _ => None,
        }
    }
}

/// A policy configuration value is out of range; nothing was built. Fix the named field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resilience configuration: `{field}` must be {requirement}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What the field must satisfy.
    pub requirement: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, requirement: &'static str) -> Self {
        Self { field, requirement }
    }
}
