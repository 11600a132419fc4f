//! Bulkhead limits on tokio's paused clock: never more than `max_concurrent` running, rejection
//! exactly when the queue is full, queue deadlines, cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_runtime::resilience::{Bulkhead, BulkheadConfig, BulkheadError, PolicyError};
use proptest::prelude::*;
use tokio::task::JoinSet;
use tokio::time::Instant;

fn bulkhead(max_concurrent: usize, max_queued: usize) -> Bulkhead {
    Bulkhead::new(BulkheadConfig {
        max_concurrent,
        max_queued,
        max_wait: Duration::from_secs(3600),
    })
    .unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Ran,
    Rejected,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Callers arrive at random times and hold their slot for random durations. At every
    /// instant at most `max_concurrent` run; a caller is rejected only when, at its arrival,
    /// every slot is taken and the queue is full, and then without waiting.
    #[test]
    fn never_exceeds_limits(
        max_concurrent in 1usize..5,
        max_queued in 0usize..5,
        callers in prop::collection::vec((0u64..50, 1u64..40), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let fates = rt.block_on(async move {
            let b = bulkhead(max_concurrent, max_queued);
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let mut tasks = JoinSet::new();
            for (arrive_ms, hold_ms) in callers {
                let (b, running, peak) = (b.clone(), Arc::clone(&running), Arc::clone(&peak));
                tasks.spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_millis(arrive_ms)).await;
                    let arrived = Instant::now();
                    match b.acquire(arrived + Duration::from_secs(3600)).await {
                        Ok(_permit) => {
                            let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now_running, Ordering::SeqCst);
                            assert!(now_running <= max_concurrent, "{now_running} running");
                            // Slots just handed to waiters that have not run yet count too.
                            assert!((now_running..=max_concurrent).contains(&b.in_flight()));
                            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Fate::Ran
                        }
                        Err(BulkheadError::Full { .. }) => {
                            assert_eq!(Instant::now(), arrived, "rejection must not wait");
                            assert_eq!(b.in_flight(), max_concurrent);
                            assert_eq!(b.queued(), max_queued);
                            Fate::Rejected
                        }
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                });
            }
            let mut fates = Vec::new();
            while let Some(fate) = tasks.join_next().await {
                fates.push(fate.unwrap());
            }
            assert!(peak.load(Ordering::SeqCst) <= max_concurrent);
            assert_eq!(b.in_flight(), 0);
            assert_eq!(b.queued(), 0);
            fates
        });
        prop_assert!(fates.contains(&Fate::Ran));
    }
}

#[tokio::test(start_paused = true)]
async fn rejects_past_max_queued_and_serves_queue_in_order() {
    let b = bulkhead(2, 3);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for i in 0..7 {
        let (b, order) = (b.clone(), Arc::clone(&order));
        tasks.spawn(async move {
            // Stagger arrivals by 1 ms so their order is fixed.
            tokio::time::sleep(Duration::from_millis(i)).await;
            b.run(async {
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, std::io::Error>(i)
            })
            .await
        });
    }
    let mut ran = Vec::new();
    let mut rejected = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(i) => ran.push(i),
            Err(PolicyError::BulkheadFull {
                max_concurrent: 2,
                max_queued: 3,
            }) => rejected += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        rejected, 2,
        "2 running + 3 queued, so callers 5 and 6 are turned away"
    );
    ran.sort_unstable();
    assert_eq!(ran, [0, 1, 2, 3, 4]);
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4], "queue is FIFO");
}

#[tokio::test(start_paused = true)]
async fn queued_caller_times_out_at_its_deadline() {
    let b = bulkhead(1, 1);
    let _held = b.try_acquire().unwrap();
    let deadline = Instant::now() + Duration::from_millis(250);
    let outcome = b.acquire(deadline).await;
    assert!(matches!(outcome, Err(BulkheadError::Timeout)));
    assert_eq!(Instant::now(), deadline);
    assert_eq!(b.queued(), 0, "the timed-out waiter left the queue");
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_frees_its_queue_place() {
    let b = bulkhead(1, 1);
    let held = b.try_acquire().unwrap();
    let far = Instant::now() + Duration::from_secs(60);
    {
        let waiting = b.acquire(far);
        tokio::pin!(waiting);
        // Poll once so the caller joins the queue, then drop it.
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert_eq!(b.queued(), 1);
        assert!(matches!(
            b.acquire(far).await,
            Err(BulkheadError::Full { .. })
        ));
    }
    assert_eq!(b.queued(), 0);
    drop(held);
    let permit = b.acquire(far).await.unwrap();
    assert_eq!(b.in_flight(), 1);
    drop(permit);
    assert_eq!(b.in_flight(), 0);
}

#[test]
fn zero_concurrency_is_a_config_error() {
    let err = Bulkhead::new(BulkheadConfig {
        max_concurrent: 0,
        ..BulkheadConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.field, "max_concurrent");
}
