//! Erased sends by name: JSON and bincode, unknown names, bad bytes.

use std::sync::Arc;
use std::time::Duration;

use cortex_protocol::{ErrorCode, MessageName, decode_payload, encode_payload};
use cortex_runtime::{ActorError, Codec, ErasedRef, MessageTable, SpawnOptions, System};
use tokio::sync::Notify;

use super::common::*;

fn name(s: &str) -> MessageName {
    MessageName::new(s).unwrap()
}

fn erased(system: &System, cap: usize) -> (ErasedRef, cortex_runtime::ActorRef<Counter>) {
    let log = Log::default();
    let r = system.spawn_with(
        Counter::new("c", &log),
        SpawnOptions::default().mailbox(cap),
    );
    let table = Arc::new(
        MessageTable::<Counter>::new()
            .handles::<Add>()
            .handles::<Get>(),
    );
    (ErasedRef::new(r.clone(), table), r)
}

#[tokio::test]
async fn json_and_bincode_asks() {
    let system = System::new(Default::default());
    let (e, _) = erased(&system, 16);
    let t = Duration::from_secs(5);

    let (reply, bytes) = e
        .ask(&name("test.Add"), b"40", Codec::Json, t)
        .await
        .unwrap();
    assert_eq!(reply.as_str(), "test.Add.Reply");
    assert_eq!(serde_json::from_slice::<u64>(&bytes).unwrap(), 40);

    let payload = encode_payload(&Add(2)).unwrap();
    let (_, bytes) = e
        .ask(&name("test.Add"), &payload, Codec::Bincode, t)
        .await
        .unwrap();
    assert_eq!(decode_payload::<u64>(&bytes).unwrap(), 42);

    e.tell(&name("test.Add"), b"8", Codec::Json, t)
        .await
        .unwrap();
    let (_, bytes) = e
        .ask(&name("test.Get"), b"null", Codec::Json, t)
        .await
        .unwrap();
    assert_eq!(bytes, b"50");
    assert!(e.handles(&name("test.Get")));
    assert!(e.downcast::<Counter>().is_some());
}

#[tokio::test]
async fn unknown_names_and_bad_bytes_are_typed_errors() {
    let system = System::new(Default::default());
    let (e, r) = erased(&system, 16);
    let t = Duration::from_secs(5);
    let err = e
        .ask(&name("test.Nope"), b"1", Codec::Json, t)
        .await
        .unwrap_err();
    assert!(matches!(err, ActorError::UnknownMessage { ref name } if name == "test.Nope"));
    assert_eq!(err.code(), ErrorCode::UnknownMessage);

    let err = e
        .ask(&name("test.Add"), b"\"x\"", Codec::Json, t)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Decode);
    let err = e
        .ask(&name("test.Add"), &[0xff; 12], Codec::Bincode, t)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Decode);
    // Trailing bytes are refused too.
    let mut payload = encode_payload(&Add(1)).unwrap();
    payload.push(0);
    let err = e
        .ask(&name("test.Add"), &payload, Codec::Bincode, t)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Decode);
    // Nothing of the above reached the actor.
    assert_eq!(r.ask(Get, t).await, Ok(0));
}

#[tokio::test(start_paused = true)]
async fn erased_try_tell_on_full_mailbox() {
    let system = System::new(Default::default());
    let (e, r) = erased(&system, 1);
    let gate = Arc::new(Notify::new());
    r.tell(Block(gate.clone())).await.unwrap();
    assert!(settle(|| r.queued() == 0).await);
    e.try_tell(&name("test.Add"), b"1", Codec::Json)
        .await
        .unwrap();
    let err = e
        .try_tell(&name("test.Add"), b"1", Codec::Json)
        .await
        .unwrap_err();
    assert_eq!(err, ActorError::MailboxFull);
    let err = e
        .tell(
            &name("test.Add"),
            b"1",
            Codec::Json,
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
    assert_eq!(err, ActorError::Timeout);
    gate.notify_one();
    assert_eq!(r.ask(Get, Duration::from_secs(1)).await, Ok(1));
}

#[tokio::test]
async fn system_directory() {
    let system = System::new(Default::default());
    let (e, r) = erased(&system, 4);
    system.expose("metrics", e.clone());
    system.register_local(e.clone());
    assert_eq!(system.lookup("metrics").unwrap().id(), r.id());
    assert_eq!(system.lookup_local(r.id()).unwrap().id(), r.id());
    r.stop();
    r.wait_stopped(Duration::from_secs(5)).await.unwrap();
    assert!(system.lookup("metrics").is_none());
    assert!(system.lookup_local(r.id()).is_none());
}
