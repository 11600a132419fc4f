//! The shared, async circuit breaker on tokio's paused clock.

use std::time::Duration;

use cortex_runtime::resilience::{
    CircuitBreakerConfig, CircuitState, PolicyError, SharedCircuitBreaker,
};
use tokio::task::JoinSet;

fn breaker(threshold: u32, reset: Duration, trials: u32) -> SharedCircuitBreaker {
    SharedCircuitBreaker::new(
        "test",
        CircuitBreakerConfig {
            failure_threshold: threshold,
            failure_rate: None,
            reset_timeout: reset,
            half_open_max_calls: trials,
        },
    )
    .unwrap()
}

async fn fail(b: &SharedCircuitBreaker) -> Result<(), PolicyError<&'static str>> {
    b.call(async { Err("refused") }).await
}

#[tokio::test(start_paused = true)]
async fn opens_refuses_then_recovers_after_reset_timeout() {
    let b = breaker(3, Duration::from_secs(2), 1);
    let observer = b.clone();
    for _ in 0..3 {
        assert!(matches!(fail(&b).await, Err(PolicyError::Inner("refused"))));
    }
    assert_eq!(observer.state(), CircuitState::Open);

    tokio::time::advance(Duration::from_millis(500)).await;
    let mut ran = false;
    let refused = b
        .call(async {
            ran = true;
            Ok::<_, &str>(())
        })
        .await;
    let Err(PolicyError::CircuitOpen { retry_after }) = refused else {
        panic!("expected CircuitOpen, got {refused:?}");
    };
    assert!(!ran, "a refused call must not run");
    assert_eq!(retry_after, Duration::from_millis(1500));

    tokio::time::advance(retry_after).await;
    assert_eq!(b.call(async { Ok::<_, &str>(7) }).await.unwrap(), 7);
    let stats = observer.stats();
    assert_eq!(stats.state, CircuitState::Closed);
    assert_eq!((stats.failures, stats.successes, stats.rejected), (3, 1, 1));
    assert_eq!(stats.times_opened, 1);
}

#[tokio::test(start_paused = true)]
async fn failed_trial_reopens_for_a_full_reset_timeout() {
    let b = breaker(1, Duration::from_secs(1), 1);
    let _ = fail(&b).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let _ = fail(&b).await; // the trial
    assert_eq!(b.state(), CircuitState::Open);
    let refused = b.call(async { Ok::<_, &str>(()) }).await;
    assert!(matches!(
        refused,
        Err(PolicyError::CircuitOpen { retry_after }) if retry_after == Duration::from_secs(1)
    ));
    assert_eq!(b.stats().times_opened, 2);
}

#[tokio::test(start_paused = true)]
async fn cancelled_trial_frees_its_slot() {
    let b = breaker(1, Duration::from_secs(1), 1);
    let _ = fail(&b).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    {
        let trial = b.call(std::future::pending::<Result<(), &str>>());
        tokio::pin!(trial);
        assert!(futures::poll!(trial.as_mut()).is_pending());
        assert_eq!(b.stats().half_open_in_flight, 1);
        // The only trial slot is taken.
        assert!(matches!(
            b.call(async { Ok::<_, &str>(()) }).await,
            Err(PolicyError::CircuitOpen {
                retry_after: Duration::ZERO
            })
        ));
    }
    assert_eq!(b.stats().half_open_in_flight, 0);
    b.call(async { Ok::<_, &str>(()) }).await.unwrap();
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_max_trials_concurrently() {
    let b = breaker(1, Duration::from_secs(1), 2);
    let _ = fail(&b).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut tasks = JoinSet::new();
    for _ in 0..5 {
        let b = b.clone();
        tasks.spawn(async move {
            b.call(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, &str>(())
            })
            .await
        });
    }
    let mut admitted = 0;
    let mut refused = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(()) => admitted += 1,
            Err(PolicyError::CircuitOpen { .. }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((admitted, refused), (2, 3));
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn errors_the_predicate_excuses_count_as_successes() {
    let b = breaker(1, Duration::from_secs(1), 1);
    for _ in 0..3 {
        let outcome = b
            .call_with(async { Err::<(), _>("unknown actor kind") }, |e| {
                *e != "unknown actor kind"
            })
            .await;
        assert!(matches!(outcome, Err(PolicyError::Inner(_))));
    }
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(b.stats().successes, 3);
}

#[tokio::test(start_paused = true)]
async fn guard_dropped_without_outcome_records_nothing() {
    let b = breaker(1, Duration::from_secs(1), 1);
    drop(b.try_acquire().unwrap());
    let stats = b.stats();
    assert_eq!((stats.successes, stats.failures), (0, 0));
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), CircuitState::Open);
}
