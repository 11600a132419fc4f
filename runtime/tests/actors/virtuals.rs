//! Virtual actors: activation, idle and LRU passivation, explicit passivation, the gate,
//! erased sends by kind, failures.

use std::sync::Arc;
use std::time::Duration;

use cortex_protocol::{ActorId, ErrorCode, MessageName, decode_payload, encode_payload};
use cortex_runtime::{
    ActorError, Codec, Kind, PassivationReason, RegisterError, SupervisorStrategy, System,
    SystemConfig, VirtualConfig, VirtualEvent, VirtualEventKind,
};
use tokio::sync::broadcast;

use super::common::*;

fn id(s: &str) -> ActorId {
    s.parse().unwrap()
}

fn name(s: &str) -> MessageName {
    MessageName::new(s).unwrap()
}

const T: Duration = Duration::from_secs(5);

/// A system with a `counter` kind whose activations count their drops.
fn setup(config: VirtualConfig, idle: Option<Duration>) -> (System, DropCounter, Log) {
    let system = System::new(SystemConfig::default().virtuals(config));
    let drops = DropCounter::default();
    let log = Log::default();
    let (d, l) = (drops.clone(), log.clone());
    let kind = Kind::new("counter", move |_id: &ActorId| {
        let mut c = Counter::new("v", &l);
        c._guard = Some(DropGuard(d.clone()));
        c
    })
    .handles::<Add>()
    .handles::<Get>()
    .handles::<Boom>()
    .idle_timeout(idle)
    .strategy(SupervisorStrategy::one_for_one(1, Duration::from_secs(60)));
    system.virtuals().register(kind).unwrap();
    (system, drops, log)
}

async fn next_event(rx: &mut broadcast::Receiver<VirtualEvent>) -> VirtualEvent {
    // Long enough for idle passivation under paused time.
    tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn activates_on_first_message_and_passivates_when_idle() {
    let (system, drops, log) = setup(VirtualConfig::default(), Some(Duration::from_secs(30)));
    let reg = system.virtuals();
    let mut events = reg.events();
    let a = id("counter/a");
    assert!(!reg.is_live(&a));
    let r = reg.get::<Counter>(a.clone());
    assert_eq!(r.ask(Add(5), T).await, Ok(5));
    let ev = next_event(&mut events).await;
    assert_eq!(
        (ev.id.clone(), ev.event, ev.activation),
        (a.clone(), VirtualEventKind::Activated, 1)
    );
    assert_eq!(ev.kind(), "counter");
    assert_eq!(reg.live_ids(), vec![a.clone()]);

    // Idle for the timeout (plus one sweep): passivated, state dropped.
    let ev = next_event(&mut events).await;
    assert_eq!(
        ev.event,
        VirtualEventKind::Passivated(PassivationReason::Idle)
    );
    assert_eq!(ev.activation, 1);
    assert_eq!(drops.get(), 1);
    assert_eq!(log.count("v:stopped n=5"), 1);
    assert!(reg.live_ids().is_empty());
    assert_eq!(reg.stats().live, 0);

    // The next message reactivates with fresh state.
    assert_eq!(r.ask(Get, T).await, Ok(0));
    let ev = next_event(&mut events).await;
    assert_eq!((ev.event, ev.activation), (VirtualEventKind::Activated, 2));
    assert_eq!(reg.stats().activations, 2);
    assert_eq!(reg.stats().passivations, 1);
}

#[tokio::test(start_paused = true)]
async fn messages_keep_an_actor_alive() {
    let (system, drops, _) = setup(VirtualConfig::default(), Some(Duration::from_secs(30)));
    let r = system.virtuals().get::<Counter>(id("counter/busy"));
    for _ in 0..10 {
        r.tell(Add(1), T).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert_eq!(r.ask(Get, T).await, Ok(10));
    assert_eq!(drops.get(), 0);
}

#[tokio::test]
async fn explicit_passivation_runs_stop_hooks_and_drops_state() {
    let (system, drops, log) = setup(VirtualConfig::default(), None);
    let reg = system.virtuals();
    let a = id("counter/x");
    reg.get::<Counter>(a.clone()).tell(Add(3), T).await.unwrap();
    assert!(reg.passivate(&a).await.unwrap());
    // Queued work was finished before the stop.
    assert_eq!(log.count("v:stopped n=3"), 1);
    assert_eq!(drops.get(), 1);
    assert!(!reg.passivate(&a).await.unwrap());
    assert_eq!(reg.get::<Counter>(a).ask(Get, T).await, Ok(0));
}

#[tokio::test]
async fn lru_bound_passivates_least_recently_used() {
    let (system, drops, _) = setup(VirtualConfig::default().max_activations(2), None);
    let reg = system.virtuals();
    let mut events = reg.events();
    let (a, b, c) = (id("counter/a"), id("counter/b"), id("counter/c"));
    reg.get::<Counter>(a.clone()).tell(Add(1), T).await.unwrap();
    reg.get::<Counter>(b.clone()).tell(Add(1), T).await.unwrap();
    // `a` is used again, so `b` is now the least recently used.
    reg.get::<Counter>(a.clone()).tell(Add(1), T).await.unwrap();
    reg.get::<Counter>(c.clone()).tell(Add(1), T).await.unwrap();
    let passivated = loop {
        let ev = next_event(&mut events).await;
        if let VirtualEventKind::Passivated(reason) = ev.event {
            break (ev.id, reason);
        }
    };
    assert_eq!(
        passivated,
        (b.clone(), PassivationReason::LeastRecentlyUsed)
    );
    assert_eq!(drops.get(), 1);
    let mut live = reg.live_ids();
    live.sort();
    assert_eq!(live, vec![a.clone(), c]);
    assert_eq!(reg.get::<Counter>(a).ask(Get, T).await, Ok(2));
}

#[tokio::test]
async fn activation_gate_refusal_is_a_typed_error() {
    let (system, _, _) = setup(VirtualConfig::default(), None);
    let reg = system.virtuals();
    reg.set_activation_gate(Arc::new(|id: &ActorId| {
        if id.key().starts_with("remote") {
            Err(ActorError::rejected(format!(
                "{id} is owned by another node"
            )))
        } else {
            Ok(())
        }
    }));
    let err = reg
        .send_erased(
            &id("counter/remote-1"),
            &name("test.Add"),
            b"1",
            Codec::Json,
            T,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ActorError::Rejected { ref reason } if reason.contains("another node")));
    assert_eq!(err.code(), ErrorCode::Rejected);
    assert!(reg.live_ids().is_empty());
    assert_eq!(reg.stats().gate_refusals, 1);
    // Allowed ids still activate; an already live activation is not re-checked.
    assert_eq!(
        reg.get::<Counter>(id("counter/local")).ask(Add(1), T).await,
        Ok(1)
    );
    reg.clear_activation_gate();
    assert_eq!(
        reg.get::<Counter>(id("counter/remote-1"))
            .ask(Add(1), T)
            .await,
        Ok(1)
    );
}

#[tokio::test]
async fn erased_sends_by_kind_in_json_and_bincode() {
    let (system, _, _) = setup(VirtualConfig::default(), None);
    let reg = system.virtuals();
    let a = id("counter/e");
    let (reply, bytes) = reg
        .send_erased(&a, &name("test.Add"), b"2", Codec::Json, T)
        .await
        .unwrap();
    assert_eq!(
        (reply.as_str(), bytes.as_slice()),
        ("test.Add.Reply", &b"2"[..])
    );
    let payload = encode_payload(&Add(3)).unwrap();
    reg.tell_erased(&a, &name("test.Add"), &payload, Codec::Bincode, T)
        .await
        .unwrap();
    let (_, bytes) = reg
        .send_erased(
            &a,
            &name("test.Get"),
            &encode_payload(&Get).unwrap(),
            Codec::Bincode,
            T,
        )
        .await
        .unwrap();
    assert_eq!(decode_payload::<u64>(&bytes).unwrap(), 5);
}

#[tokio::test]
async fn unknown_kind_and_message_do_not_activate() {
    let (system, _, _) = setup(VirtualConfig::default(), None);
    let reg = system.virtuals();
    let err = reg
        .send_erased(&id("nope/1"), &name("test.Add"), b"1", Codec::Json, T)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ActorError::UnknownKind {
            kind: "nope".into()
        }
    );
    assert_eq!(err.code(), ErrorCode::UnknownKind);
    let err = reg
        .send_erased(&id("counter/1"), &name("test.Other"), b"1", Codec::Json, T)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMessage);
    let err = reg
        .send_erased(&id("counter/1"), &name("test.Add"), b"oops", Codec::Json, T)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Decode);
    assert_eq!(
        reg.stats().activations,
        1,
        "only the decode attempt activated"
    );
    assert_eq!(
        reg.register(Kind::new("counter", |_| Counter::new("x", &Log::default()))),
        Err(RegisterError::Duplicate("counter".into()))
    );
    assert!(matches!(
        reg.register(Kind::new("bad kind", |_| Counter::new(
            "x",
            &Log::default()
        ))),
        Err(RegisterError::InvalidKind(_))
    ));
}

#[tokio::test]
async fn failing_activation_is_restarted_then_passivated() {
    let (system, drops, _) = setup(VirtualConfig::default(), None);
    let reg = system.virtuals();
    let mut events = reg.events();
    let a = id("counter/f");
    let r = reg.get::<Counter>(a.clone());
    r.tell(Add(4), T).await.unwrap();
    let err = r.ask(Boom, T).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ActorFailed);
    // Restarted from the factory: fresh state, same activation.
    assert_eq!(r.ask(Get, T).await, Ok(0));
    // Second failure in the window: the activation ends with reason Failed.
    let _ = r.ask(Boom, T).await;
    let ev = loop {
        let ev = next_event(&mut events).await;
        if matches!(ev.event, VirtualEventKind::Passivated(_)) {
            break ev;
        }
    };
    assert_eq!(
        ev.event,
        VirtualEventKind::Passivated(PassivationReason::Failed)
    );
    assert!(
        settle(|| drops.get() == 2).await,
        "restart dropped one, the end another"
    );
    assert_eq!(r.ask(Add(1), T).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_messages_make_one_activation() {
    let (system, _, _) = setup(VirtualConfig::default(), None);
    let reg = system.virtuals().clone();
    let a = id("counter/race");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let r = reg.get::<Counter>(a.clone());
            tokio::spawn(async move { r.ask(Add(1), T).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(reg.stats().activations, 1);
    assert_eq!(reg.get::<Counter>(a).ask(Get, T).await, Ok(32));
}

#[tokio::test]
async fn passivation_racing_with_messages_loses_none() {
    let (system, _, log) = setup(VirtualConfig::default(), None);
    let reg = system.virtuals().clone();
    let a = id("counter/p");
    let r = reg.get::<Counter>(a.clone());
    let mut total = 0;
    for round in 0..20u64 {
        let sender = {
            let r = r.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    r.tell(Add(1), T).await.unwrap();
                }
            })
        };
        if round % 2 == 0 {
            reg.passivate(&a).await.unwrap();
        }
        sender.await.unwrap();
        total += 10;
    }
    reg.passivate(&a).await.unwrap();
    // Every activation reported its count when it stopped; together they saw every tell.
    let seen: u64 = log
        .entries()
        .iter()
        .filter_map(|e| e.strip_prefix("v:stopped n="))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(seen, total);
}

#[tokio::test]
async fn try_tell_erased_delivers_at_once_or_queues_nothing() {
    let system = System::new(SystemConfig::default());
    let reg = system.virtuals();
    let kind = Kind::new("small", |_id: &ActorId| Counter::new("s", &Log::default()))
        .handles::<Add>()
        .handles::<Get>()
        .mailbox(2);
    reg.register(kind).unwrap();
    let a = id("small/1");
    let add = name("test.Add");
    let one = encode_payload(&Add(1)).unwrap();
    // The first tell activates the id and is queued at once.
    assert_eq!(
        reg.try_tell_erased(&a, &add, &one, Codec::Bincode),
        Ok(true)
    );
    assert!(reg.is_live(&a));
    // A held handler and a full mailbox (capacity 2: that Add and this Block).
    let gate = Arc::new(tokio::sync::Notify::new());
    reg.get::<Counter>(a.clone())
        .tell(Block(gate.clone()), T)
        .await
        .unwrap();
    assert_eq!(
        reg.try_tell_erased(&a, &add, &one, Codec::Bincode),
        Ok(false),
        "a full mailbox says wait"
    );
    assert_eq!(
        reg.try_tell_erased(&a, &name("test.Nope"), &one, Codec::Bincode)
            .unwrap_err()
            .code(),
        ErrorCode::UnknownMessage
    );
    gate.notify_one();
    assert_eq!(
        reg.get::<Counter>(a.clone()).ask(Get, T).await,
        Ok(1),
        "the refused tell was not queued"
    );
    assert_eq!(
        reg.try_tell_erased(&a, &add, &one, Codec::Bincode),
        Ok(true)
    );
    assert_eq!(reg.get::<Counter>(a).ask(Get, T).await, Ok(2));
}
