//! Resilience policies: the circuit breaker and retry cores checked against reference models,
//! backoff bounds, bulkhead limits, async wrappers and composition order. All async tests run
//! on tokio's paused clock; nothing waits on the wall clock.

#[path = "resilience/backoff.rs"]
mod backoff;
#[path = "resilience/breaker_async.rs"]
mod breaker_async;
#[path = "resilience/breaker_model.rs"]
mod breaker_model;
#[path = "resilience/bulkhead.rs"]
mod bulkhead;
#[path = "resilience/pipeline.rs"]
mod pipeline;
#[path = "resilience/retry_model.rs"]
mod retry_model;
