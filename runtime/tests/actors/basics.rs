//! tell, try_tell, ask, stop, lifecycle and the typed errors.

use std::sync::Arc;
use std::time::Duration;

use cortex_protocol::ErrorCode;
use cortex_runtime::{ActorError, SendError, SpawnOptions, System};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::common::*;

#[tokio::test]
async fn tell_then_ask_in_order() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    for i in 1..=100 {
        c.tell(Add(i)).await.unwrap();
    }
    assert_eq!(c.ask(Get, Duration::from_secs(5)).await, Ok(5050));
    let c2 = c.clone();
    assert_eq!(c, c2);
    system.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn try_tell_on_full_mailbox_fails_at_once() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn_with(Counter::new("c", &log), SpawnOptions::default().mailbox(2));
    let gate = Arc::new(Notify::new());
    c.tell(Block(gate.clone())).await.unwrap();
    // Wait until the handler holds the block, so the queue is empty again.
    assert!(settle(|| c.queued() == 0).await);
    c.try_tell(Add(1)).unwrap();
    c.try_tell(Add(2)).unwrap();
    let start = Instant::now();
    match c.try_tell(Add(3)) {
        Err(SendError::Full(Add(3))) => {}
        other => panic!("expected Full(Add(3)), got {other:?}"),
    }
    let err = c.try_tell(Add(4)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Rejected);
    assert_eq!(ActorError::from(err), ActorError::MailboxFull);
    assert_eq!(Instant::now(), start, "try_tell must not wait");

    // tell waits for room, then succeeds once the handler moves on.
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { c.tell(Add(10)).await })
    };
    assert!(!settle(|| waiting.is_finished()).await);
    // tell_timeout gives the message back when no room appears.
    match c.tell_timeout(Add(5), Duration::from_millis(50)).await {
        Err(SendError::Timeout(Add(5))) => {}
        other => panic!("expected Timeout(Add(5)), got {other:?}"),
    }
    gate.notify_one();
    waiting.await.unwrap().unwrap();
    assert_eq!(c.ask(Get, Duration::from_secs(1)).await, Ok(13));
    system.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn ask_to_stopped_actor_fails_before_deadline() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    c.stop();
    c.wait_stopped(Duration::from_secs(1)).await.unwrap();
    assert!(!c.is_alive());
    let start = Instant::now();
    let err = c.ask(Get, Duration::from_secs(60)).await.unwrap_err();
    assert_eq!(err, ActorError::Stopped);
    assert_eq!(err.code(), ErrorCode::ActorStopped);
    assert!(Instant::now() - start < Duration::from_millis(1));
    assert!(matches!(
        c.try_tell(Add(1)),
        Err(SendError::Stopped(Add(1)))
    ));
    assert!(matches!(
        c.tell(Add(1)).await,
        Err(SendError::Stopped(Add(1)))
    ));
}

#[tokio::test(start_paused = true)]
async fn queued_ask_fails_when_actor_stops() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    let gate = Arc::new(Notify::new());
    c.tell(Block(gate.clone())).await.unwrap();
    let asking = {
        let c = c.clone();
        tokio::spawn(async move { c.ask(Get, Duration::from_secs(60)).await })
    };
    assert!(settle(|| c.queued() == 1).await);
    let start = Instant::now();
    c.stop();
    gate.notify_one();
    assert_eq!(asking.await.unwrap(), Err(ActorError::Stopped));
    assert!(Instant::now() - start < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn ask_times_out() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    c.tell(Block(Arc::new(Notify::new()))).await.unwrap();
    let start = Instant::now();
    let err = c.ask(Get, Duration::from_millis(250)).await.unwrap_err();
    assert_eq!(err, ActorError::Timeout);
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert_eq!(Instant::now() - start, Duration::from_millis(250));
}

#[tokio::test]
async fn panic_during_ask_is_failed_and_actor_recovers() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    c.tell(Add(7)).await.unwrap();
    let err = c.ask(Boom, Duration::from_secs(5)).await.unwrap_err();
    match &err {
        ActorError::Failed { reason } => assert!(reason.contains("boom in c"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(err.code(), ErrorCode::ActorFailed);
    // Restarted in place (no factory): the state survives, the hook ran.
    assert_eq!(c.ask(Get, Duration::from_secs(5)).await, Ok(7));
    assert_eq!(log.count("c:restarted"), 1);
    system.shutdown(Duration::from_secs(5)).await;
}

/// A `handle` may do work before returning its future; a panic there is caught like one
/// inside the future (tell: the actor restarts; ask: `Failed`), not left to kill the task.
#[tokio::test]
async fn panic_before_the_handlers_future_is_caught() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    c.tell(Add(7)).await.unwrap();
    c.tell(BoomEarly).await.unwrap();
    assert_eq!(c.ask(Get, Duration::from_secs(5)).await, Ok(7));
    assert_eq!(log.count("c:restarted"), 1);
    let err = c.ask(BoomEarly, Duration::from_secs(5)).await.unwrap_err();
    match &err {
        ActorError::Failed { reason } => assert!(reason.contains("early boom in c"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(c.ask(Get, Duration::from_secs(5)).await, Ok(7));
    assert_eq!(log.count("c:restarted"), 2);
    system.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn lifecycle_hooks_run_in_order() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    c.tell(Add(2)).await.unwrap();
    c.tell(StopMe).await.unwrap();
    c.wait_stopped(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        log.entries(),
        vec!["c:started", "c:stopping", "c:stopped n=2"]
    );
    assert!(settle(|| system.top_level() == 0).await);
}

#[test]
fn error_codes() {
    use ActorError::*;
    let cases = [
        (Timeout, ErrorCode::Timeout),
        (MailboxFull, ErrorCode::Rejected),
        (Stopped, ErrorCode::ActorStopped),
        (Failed { reason: "x".into() }, ErrorCode::ActorFailed),
        (
            UnknownMessage { name: "x".into() },
            ErrorCode::UnknownMessage,
        ),
        (UnknownKind { kind: "x".into() }, ErrorCode::UnknownKind),
        (Decode { reason: "x".into() }, ErrorCode::Decode),
        (ActorError::rejected("no"), ErrorCode::Rejected),
    ];
    for (e, code) in cases {
        assert_eq!(e.code(), code, "{e}");
        assert!(!e.to_string().is_empty());
    }
}

/// Handler runs are held inline in the actor's task when small and boxed when not; both
/// kinds must suspend and resume, answer asks, keep message order and catch panics.
mod run_sizes {
    use cortex_runtime::{Actor, Context, Handler};

    /// Adds each message's value after yielding, so every run is polled more than once.
    pub(super) struct Summer {
        pub(super) sum: u64,
        pub(super) order: Vec<u64>,
    }
    impl Actor for Summer {}

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    pub(super) struct Small(pub(super) u64);
    cortex_runtime::message!(Small => u64, "test.run.Small");
    impl Handler<Small> for Summer {
        async fn handle(&mut self, m: Small, _: &mut Context<Self>) -> u64 {
            tokio::task::yield_now().await;
            self.sum += m.0;
            self.order.push(m.0);
            self.sum
        }
    }

    /// Holds 512 bytes across its await: far more than a run kept inline.
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    pub(super) struct Large(pub(super) u64);
    cortex_runtime::message!(Large => u64, "test.run.Large");
    impl Handler<Large> for Summer {
        async fn handle(&mut self, m: Large, _: &mut Context<Self>) -> u64 {
            let buf = [m.0; 64];
            tokio::task::yield_now().await;
            assert!(buf.iter().all(|&v| v == m.0));
            self.sum += m.0;
            self.order.push(m.0);
            if m.0 == 0 {
                panic!("large boom");
            }
            self.sum
        }
    }

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    pub(super) struct Order;
    cortex_runtime::message!(Order => Vec<u64>, "test.run.Order");
    impl Handler<Order> for Summer {
        async fn handle(&mut self, _: Order, _: &mut Context<Self>) -> Vec<u64> {
            self.order.clone()
        }
    }
}

#[tokio::test]
async fn small_and_large_handler_runs_suspend_answer_and_fail_alike() {
    use run_sizes::*;
    let system = System::new(Default::default());
    let s = system.spawn(Summer {
        sum: 0,
        order: Vec::new(),
    });
    let deadline = Duration::from_secs(5);
    for i in 1..=50 {
        if i % 2 == 0 {
            s.tell(Large(i)).await.unwrap();
        } else {
            s.tell(Small(i)).await.unwrap();
        }
    }
    assert_eq!(s.ask(Small(100), deadline).await, Ok(1275 + 100));
    assert_eq!(s.ask(Large(1000), deadline).await, Ok(2375));
    let order = s.ask(Order, deadline).await.unwrap();
    assert_eq!(order, (1..=50).chain([100, 1000]).collect::<Vec<_>>());
    // A panic in a boxed run fails the ask with a typed error; the actor restarts in place.
    let err = s.ask(Large(0), deadline).await.unwrap_err();
    match &err {
        ActorError::Failed { reason } => assert!(reason.contains("large boom"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(s.ask(Small(5), deadline).await, Ok(2380));
    system.shutdown(deadline).await;
}
