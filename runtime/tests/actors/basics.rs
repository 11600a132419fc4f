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
