//! Resilience policies for calls that can fail or hang: circuit breaker, retry with backoff,
//! bulkhead, timeout, and a [`Pipeline`] composing them in a chosen order.
//!
//! Actors use them around their own outgoing calls; the client SDK keeps one
//! [`SharedCircuitBreaker`] per node and retries `ask`s with a [`RetryPolicy`].
//!
//! The decision logic is IO-free and deterministic: [`CircuitBreaker`] takes `now` as an input
//! and [`RetryPolicy`] draws jitter from an injected, seedable RNG, so both can be driven by a
//! simulation. The async wrappers read tokio's clock, so paused-time tests control them.
//! Every failure is a typed [`PolicyError`] that says whether the call ran.

mod bulkhead;
mod circuit_breaker;
mod error;
mod pipeline;
mod retry;
mod shared_breaker;
mod timeout;

pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadError, BulkheadPermit};
pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, CircuitPermit, CircuitState,
    CircuitStats, FailureRateConfig,
};
pub use error::{ConfigError, PolicyError};
pub use pipeline::{LayerKind, Pipeline};
pub use retry::{Delays, GiveUpReason, RetryConfig, RetryDecision, RetryPolicy};
pub use shared_breaker::{CircuitGuard, SharedCircuitBreaker};
pub use timeout::TimeoutPolicy;

/// A deadline that never comes in practice (about 30 years out), used when adding a configured
/// duration to `now` overflows.
pub(crate) fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365 * 30)
}

// Policies are shared across tasks by the client SDK and actors.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SharedCircuitBreaker>();
    assert_send_sync::<Bulkhead>();
    assert_send_sync::<RetryPolicy<std::io::Error>>();
    assert_send_sync::<Pipeline<std::io::Error>>();
    assert_send_sync::<PolicyError<std::io::Error>>();
};
