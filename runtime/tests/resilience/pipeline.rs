//! Composition: the order of the builder calls is the order of wrapping (outermost first), and
//! the same policies in a different order behave differently.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cortex_runtime::resilience::{
    Bulkhead, BulkheadConfig, CircuitBreakerConfig, CircuitState, LayerKind, Pipeline, PolicyError,
    RetryConfig, RetryPolicy, SharedCircuitBreaker,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

type Error = &'static str;

fn retry(max_attempts: u32) -> RetryPolicy<Error> {
    let cfg = RetryConfig {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        deadline: None,
    };
    RetryPolicy::new(cfg, SmallRng::seed_from_u64(11)).unwrap()
}

fn breaker(threshold: u32) -> SharedCircuitBreaker {
    let cfg = CircuitBreakerConfig {
        failure_threshold: threshold,
        reset_timeout: Duration::from_secs(60),
        ..CircuitBreakerConfig::default()
    };
    SharedCircuitBreaker::new("node", cfg).unwrap()
}

#[test]
fn layers_follow_builder_order() {
    let b = breaker(1);
    let bulkhead = Bulkhead::new(BulkheadConfig::default()).unwrap();
    let p = Pipeline::new()
        .timeout(Duration::from_secs(1))
        .retry(retry(3))
        .circuit_breaker(b.clone())
        .bulkhead(bulkhead.clone());
    assert_eq!(
        p.layers(),
        [
            LayerKind::Timeout,
            LayerKind::Retry,
            LayerKind::CircuitBreaker,
            LayerKind::Bulkhead
        ]
    );
    let q = Pipeline::<Error>::new()
        .bulkhead(bulkhead)
        .circuit_breaker(b)
        .retry(retry(3));
    assert_eq!(
        q.layers(),
        [
            LayerKind::Bulkhead,
            LayerKind::CircuitBreaker,
            LayerKind::Retry
        ]
    );
}

/// An operation whose first start hangs forever and whose later starts succeed.
async fn hangs_first_time(n: u32) -> Result<u32, Error> {
    if n == 0 {
        std::future::pending::<()>().await;
    }
    Ok(n)
}

#[tokio::test(start_paused = true)]
async fn timeout_outside_retry_bounds_the_whole_loop() {
    let p = Pipeline::new()
        .timeout(Duration::from_millis(200))
        .retry(retry(3));
    let start = Instant::now();
    let outcome = p.run(hangs_first_time).await;
    assert!(matches!(outcome, Err(PolicyError::Timeout)), "{outcome:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn timeout_inside_retry_bounds_each_attempt() {
    let p = Pipeline::new()
        .retry(retry(3))
        .timeout(Duration::from_millis(200));
    let start = Instant::now();
    let outcome = p.run(hangs_first_time).await;
    assert_eq!(
        outcome.unwrap(),
        1,
        "attempt 0 timed out, attempt 1 succeeded"
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_millis(211));
}

#[tokio::test(start_paused = true)]
async fn breaker_inside_retry_counts_every_attempt_and_stops_the_retries() {
    let b = breaker(3);
    let p = Pipeline::new().retry(retry(5)).circuit_breaker(b.clone());
    let calls = AtomicU32::new(0);
    let outcome: Result<(), _> = p
        .run(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err("node down") }
        })
        .await;
    // Three failures open the breaker; the fourth attempt is refused and not retried.
    assert!(
        matches!(outcome, Err(PolicyError::CircuitOpen { .. })),
        "{outcome:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stats = b.stats();
    assert_eq!(
        (stats.state, stats.failures, stats.rejected),
        (CircuitState::Open, 3, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_outside_retry_sees_one_outcome_per_call() {
    let b = breaker(3);
    let p = Pipeline::new().circuit_breaker(b.clone()).retry(retry(5));
    let calls = AtomicU32::new(0);
    let outcome: Result<(), _> = p
        .run(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err("node down") }
        })
        .await;
    let Err(PolicyError::RetriesExhausted { last, attempts }) = outcome else {
        panic!("expected RetriesExhausted, got {outcome:?}");
    };
    assert_eq!(attempts, 5);
    assert!(matches!(*last, PolicyError::Inner("node down")));
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let stats = b.stats();
    assert_eq!((stats.state, stats.failures), (CircuitState::Closed, 1));
}

#[tokio::test(start_paused = true)]
async fn bulkhead_outside_retry_holds_the_slot_through_backoff() {
    // One slot. Outside the retry, the slot stays taken while the retry sleeps between
    // attempts; inside, it is free during the sleep.
    for bulkhead_outside in [true, false] {
        let bulkhead = Bulkhead::new(BulkheadConfig {
            max_concurrent: 1,
            max_queued: 0,
            max_wait: Duration::from_secs(1),
        })
        .unwrap();
        let slow_retry = RetryPolicy::new(
            RetryConfig {
                max_attempts: 2,
                base_delay: Duration::from_secs(10),
                max_delay: Duration::from_secs(10),
                deadline: None,
            },
            // Delays are drawn in [0, 10 s]: this seed draws more than the 1 ms probe below.
            SmallRng::seed_from_u64(1),
        )
        .unwrap();
        let p = if bulkhead_outside {
            Pipeline::new().bulkhead(bulkhead.clone()).retry(slow_retry)
        } else {
            Pipeline::new().retry(slow_retry).bulkhead(bulkhead.clone())
        };
        let call = tokio::spawn(async move {
            p.run(|n| async move { if n == 0 { Err("flaky") } else { Ok(n) } })
                .await
        });
        // Let attempt 0 fail and the retry start sleeping.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(bulkhead.in_flight(), usize::from(bulkhead_outside));
        assert_eq!(call.await.unwrap().unwrap(), 1);
        assert_eq!(bulkhead.in_flight(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn outer_timeout_makes_inner_retry_give_up_instead_of_oversleeping() {
    let slow_retry = RetryPolicy::new(
        RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            deadline: None,
        },
        SmallRng::seed_from_u64(2),
    )
    .unwrap();
    let p = Pipeline::new()
        .timeout(Duration::from_millis(100))
        .retry(slow_retry);
    let start = Instant::now();
    let outcome: Result<(), _> = p.run(|_| async { Err("busy") }).await;
    // Every drawn delay in [0, 1 s] that would pass the 100 ms deadline ends the loop at once.
    match outcome {
        Err(PolicyError::RetriesExhausted { attempts, .. }) => {
            assert!(attempts >= 1);
            assert!(start.elapsed() < Duration::from_millis(100));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_ignores_excused_errors_and_bulkhead_rejections() {
    let b = breaker(1);
    let bulkhead = Bulkhead::new(BulkheadConfig {
        max_concurrent: 1,
        max_queued: 0,
        max_wait: Duration::from_secs(1),
    })
    .unwrap();
    let p = Pipeline::new()
        .circuit_breaker_with(b.clone(), |e: &Error| *e != "unknown kind")
        .bulkhead(bulkhead.clone());

    let excused: Result<(), _> = p.run(|_| async { Err("unknown kind") }).await;
    assert!(matches!(excused, Err(PolicyError::Inner("unknown kind"))));

    let held = bulkhead.try_acquire().unwrap();
    let rejected: Result<(), _> = p.run(|_| async { Ok(()) }).await;
    assert!(
        rejected.as_ref().is_err_and(PolicyError::is_rejection),
        "{rejected:?}"
    );
    drop(held);

    let stats = b.stats();
    assert_eq!(stats.state, CircuitState::Closed);
    assert_eq!((stats.successes, stats.failures), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn run_until_applies_the_callers_deadline() {
    let p: Pipeline<Error> = Pipeline::new().retry(retry(3));
    let deadline = Instant::now() + Duration::from_millis(40);
    let started = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&started);
    let outcome = p
        .run_until(deadline, move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), Error>>()
        })
        .await;
    assert!(matches!(outcome, Err(PolicyError::Timeout)));
    assert_eq!(Instant::now(), deadline);
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn call_hanging_until_an_outer_timeout_counts_against_the_breaker() {
    let b = breaker(2);
    let p = Pipeline::new()
        .timeout(Duration::from_millis(100))
        .circuit_breaker(b.clone());
    for _ in 0..2 {
        let outcome = p.run(|_| std::future::pending::<Result<(), Error>>()).await;
        assert!(matches!(outcome, Err(PolicyError::Timeout)), "{outcome:?}");
    }
    let stats = b.stats();
    assert_eq!((stats.state, stats.failures), (CircuitState::Open, 2));
}
