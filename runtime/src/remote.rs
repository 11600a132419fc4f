//! Messages that cross process boundaries: stable names, the two payload codecs, per-actor
//! message tables and [`ErasedRef`], the type-erased handle the node's router drives.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cortex_protocol::MessageName;
use futures::future::BoxFuture;
use rustc_hash::FxBuildHasher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::actor::{Actor, Handler, Message};
use crate::actor_ref::{ActorRef, AskFail};
use crate::error::{ActorError, SendError};

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// The wire codec ([`cortex_protocol::encode_payload`]); what nodes and the Rust client
    /// use.
    #[default]
    Bincode,
    /// JSON, accepted at the edges (HTTP, WebSocket, CLI).
    Json,
}

/// A message that can arrive by name from another process.
///
/// Implement it with [`message!`](crate::message), one line per type.
pub trait RemoteMessage:
    Message<Reply: Serialize + DeserializeOwned> + Serialize + DeserializeOwned
{
    /// Stable name on the wire, such as `bank.Deposit`.
    const NAME: &'static str;
    /// Name the reply travels under (by default `NAME` + `.Reply`).
    const REPLY_NAME: &'static str;
}

/// Encodes `value` with `codec`.
///
/// # Errors
/// [`ActorError::Encode`] if serde cannot represent the value.
pub fn encode_with<T: Serialize>(value: &T, codec: Codec) -> Result<Vec<u8>, ActorError> {
    match codec {
        Codec::Bincode => cortex_protocol::encode_payload(value).map_err(|e| ActorError::Encode {
            reason: e.to_string(),
        }),
        Codec::Json => serde_json::to_vec(value).map_err(|e| ActorError::Encode {
            reason: e.to_string(),
        }),
    }
}

/// Decodes `bytes` with `codec`, rejecting trailing bytes.
///
/// # Errors
/// [`ActorError::Decode`] naming the problem.
pub fn decode_with<T: DeserializeOwned>(bytes: &[u8], codec: Codec) -> Result<T, ActorError> {
    match codec {
        Codec::Bincode => cortex_protocol::decode_payload(bytes).map_err(|e| ActorError::Decode {
            reason: e.to_string(),
        }),
        Codec::Json => serde_json::from_slice(bytes).map_err(|e| ActorError::Decode {
            reason: e.to_string(),
        }),
    }
}

/// `true` when `s` is a valid [`MessageName`]; usable in `const` context (the
/// [`message!`](crate::message) macro checks names at compile time with it).
pub const fn valid_message_name(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > cortex_protocol::MAX_MESSAGE_NAME_LEN {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b':' || c == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares a message type, its reply type and its stable wire name, in one line.
///
/// Implements [`Message`] and [`RemoteMessage`]; the name is checked at compile time.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Deposit { amount: u64 }
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Balance(u64);
///
/// cortex_runtime::message!(Deposit => Balance, "bank.Deposit");
/// // or with an explicit reply name:
/// // cortex_runtime::message!(Deposit => Balance, "bank.Deposit", reply = "bank.Balance");
///
/// use cortex_runtime::RemoteMessage;
/// assert_eq!(Deposit::NAME, "bank.Deposit");
/// assert_eq!(Deposit::REPLY_NAME, "bank.Deposit.Reply");
/// ```
#[macro_export]
macro_rules! message {
    ($ty:ty => $reply:ty, $name:literal) => {
        $crate::message!($ty => $reply, $name, reply = concat!($name, ".Reply"));
    };
    ($ty:ty => $reply:ty, $name:expr, reply = $reply_name:expr) => {
        impl $crate::Message for $ty {
            type Reply = $reply;
        }
        impl $crate::RemoteMessage for $ty {
            const NAME: &'static str = $name;
            const REPLY_NAME: &'static str = $reply_name;
        }
        const _: () = ::core::assert!(
            $crate::valid_message_name($name),
            "message name must be 1 to 128 of [A-Za-z0-9._:-]"
        );
        const _: () = ::core::assert!(
            $crate::valid_message_name($reply_name),
            "reply name must be 1 to 128 of [A-Za-z0-9._:-]"
        );
    };
}

/// Why an erased send failed; `NotDelivered` means the message never reached a mailbox
/// (it was closed), so a retry on a fresh activation cannot duplicate it.
pub(crate) enum ErasedFail {
    NotDelivered,
    Failed(ActorError),
}

impl From<ErasedFail> for ActorError {
    fn from(e: ErasedFail) -> Self {
        match e {
            ErasedFail::NotDelivered => ActorError::Stopped,
            ErasedFail::Failed(e) => e,
        }
    }
}

type AskFn<A> =
    fn(&ActorRef<A>, &[u8], Codec, Instant) -> BoxFuture<'static, Result<Vec<u8>, ErasedFail>>;
type TellFn<A> =
    fn(&ActorRef<A>, &[u8], Codec, Option<Instant>) -> BoxFuture<'static, Result<(), ErasedFail>>;
type TryTellFn<A> = fn(&ActorRef<A>, &[u8], Codec) -> Result<bool, ErasedFail>;
type TranscodeFn = fn(&[u8], Codec, Codec) -> Result<Vec<u8>, ActorError>;

struct Entry<A: Actor> {
    ask: AskFn<A>,
    tell: TellFn<A>,
    try_tell: TryTellFn<A>,
    transcode: TranscodeFn,
    reply_name: MessageName,
}

/// The remote-capable messages one actor type handles, by name.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use cortex_runtime::{Actor, Context, Handler, MessageTable};
/// # #[derive(Serialize, Deserialize)] struct Deposit(u64);
/// # cortex_runtime::message!(Deposit => u64, "bank.Deposit");
/// struct Account(u64);
/// impl Actor for Account {}
/// impl Handler<Deposit> for Account {
///     async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 { self.0 += d.0; self.0 }
/// }
/// let table = MessageTable::<Account>::new().handles::<Deposit>();
/// assert!(table.contains("bank.Deposit"));
/// ```
pub struct MessageTable<A: Actor> {
    // Looked up once per remote message; the keys are fixed at registration, so a name
    // chosen by a peer can only miss, never slow the table down: a fast unkeyed hash is safe.
    entries: HashMap<String, Entry<A>, FxBuildHasher>,
}

impl<A: Actor> Default for MessageTable<A> {
    fn default() -> Self {
        Self {
            entries: HashMap::default(),
        }
    }
}

impl<A: Actor> fmt::Debug for MessageTable<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}

impl<A: Actor> MessageTable<A> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds message type `M` under [`RemoteMessage::NAME`] (replacing an earlier entry of
    /// that name).
    pub fn handles<M>(mut self) -> Self
    where
        M: RemoteMessage,
        A: Handler<M>,
    {
        // Invariant: RemoteMessage is implemented through message!, whose const assertion
        // checked REPLY_NAME with the same rules MessageName::new applies.
        let reply_name = MessageName::new(M::REPLY_NAME)
            .unwrap_or_else(|_| unreachable!("message! checked the reply name at compile time"));
        self.entries.insert(
            M::NAME.to_owned(),
            Entry {
                ask: ask_fn::<A, M>,
                tell: tell_fn::<A, M>,
                try_tell: try_tell_fn::<A, M>,
                transcode: transcode_fn::<M>,
                reply_name,
            },
        );
        self
    }

    /// True when a message of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Re-encodes a message of type `name` from `from` to `to` (for example JSON from an
    /// HTTP edge into the wire codec) by decoding it as the registered type; `None` when no
    /// type of that name is registered here.
    pub fn transcode(
        &self,
        name: &str,
        payload: &[u8],
        from: Codec,
        to: Codec,
    ) -> Option<Result<Vec<u8>, ActorError>> {
        self.entries
            .get(name)
            .map(|e| (e.transcode)(payload, from, to))
    }

    /// The registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn entry(&self, name: &str) -> Result<&Entry<A>, ActorError> {
        self.entries
            .get(name)
            .ok_or_else(|| ActorError::UnknownMessage {
                name: name.chars().take(128).collect(),
            })
    }
}

fn transcode_fn<M: RemoteMessage>(
    payload: &[u8],
    from: Codec,
    to: Codec,
) -> Result<Vec<u8>, ActorError> {
    encode_with(&decode_with::<M>(payload, from)?, to)
}

fn ask_fn<A, M>(
    r: &ActorRef<A>,
    payload: &[u8],
    codec: Codec,
    deadline: Instant,
) -> BoxFuture<'static, Result<Vec<u8>, ErasedFail>>
where
    A: Handler<M>,
    M: RemoteMessage,
{
    let decoded = decode_with::<M>(payload, codec);
    let r = r.clone();
    Box::pin(async move {
        let msg = decoded.map_err(ErasedFail::Failed)?;
        match r.ask_deadline(msg, deadline).await {
            Ok(reply) => encode_with(&reply, codec).map_err(ErasedFail::Failed),
            Err(AskFail::NotDelivered(_)) => Err(ErasedFail::NotDelivered),
            Err(AskFail::Failed(e)) => Err(ErasedFail::Failed(e)),
        }
    })
}

fn tell_fn<A, M>(
    r: &ActorRef<A>,
    payload: &[u8],
    codec: Codec,
    deadline: Option<Instant>,
) -> BoxFuture<'static, Result<(), ErasedFail>>
where
    A: Handler<M>,
    M: RemoteMessage,
{
    let decoded = decode_with::<M>(payload, codec);
    let r = r.clone();
    Box::pin(async move {
        let msg = decoded.map_err(ErasedFail::Failed)?;
        let sent = match deadline {
            None => r.try_tell(msg),
            Some(d) => {
                r.tell_timeout(msg, d.saturating_duration_since(Instant::now()))
                    .await
            }
        };
        match sent {
            Ok(()) => Ok(()),
            Err(SendError::Stopped(_)) => Err(ErasedFail::NotDelivered),
            Err(e) => Err(ErasedFail::Failed(e.error())),
        }
    })
}

/// [`tell_fn`] without waiting and without a future: `Ok(false)` when the mailbox is full
/// (the decoded message is dropped; the caller goes on with [`tell_fn`]).
fn try_tell_fn<A, M>(r: &ActorRef<A>, payload: &[u8], codec: Codec) -> Result<bool, ErasedFail>
where
    A: Handler<M>,
    M: RemoteMessage,
{
    let msg = decode_with::<M>(payload, codec).map_err(ErasedFail::Failed)?;
    match r.try_tell(msg) {
        Ok(()) => Ok(true),
        Err(SendError::Full(_)) => Ok(false),
        Err(SendError::Stopped(_)) => Err(ErasedFail::NotDelivered),
        Err(e) => Err(ErasedFail::Failed(e.error())),
    }
}

/// The pending reply bytes of an erased ask.
pub(crate) type ErasedAsk = BoxFuture<'static, Result<Vec<u8>, ErasedFail>>;

pub(crate) trait ErasedActor: Send + Sync {
    fn id(&self) -> u64;
    fn is_alive(&self) -> bool;
    fn queued(&self) -> usize;
    fn handles(&self, name: &str) -> bool;
    fn ask(
        &self,
        name: &str,
        payload: &[u8],
        codec: Codec,
        deadline: Instant,
    ) -> Result<(MessageName, ErasedAsk), ActorError>;
    fn tell(
        &self,
        name: &str,
        payload: &[u8],
        codec: Codec,
        deadline: Option<Instant>,
    ) -> Result<BoxFuture<'static, Result<(), ErasedFail>>, ActorError>;
    /// A tell that neither waits nor allocates a future; `Ok(false)` on a full mailbox.
    fn try_tell(&self, name: &str, payload: &[u8], codec: Codec) -> Result<bool, ErasedFail>;
    fn drain(&self, deadline: Instant);
    fn stop(&self);
    fn mark_terminated(&self);
    fn wait_terminated(&self, deadline: Instant) -> BoxFuture<'_, bool>;
    fn as_any(&self) -> &dyn Any;
}

struct Bound<A: Actor> {
    r: ActorRef<A>,
    table: Arc<MessageTable<A>>,
}

impl<A: Actor> ErasedActor for Bound<A> {
    fn id(&self) -> u64 {
        self.r.id()
    }
    fn is_alive(&self) -> bool {
        self.r.is_alive()
    }
    fn queued(&self) -> usize {
        self.r.queued()
    }
    fn handles(&self, name: &str) -> bool {
        self.table.contains(name)
    }
    fn ask(
        &self,
        name: &str,
        payload: &[u8],
        codec: Codec,
        deadline: Instant,
    ) -> Result<(MessageName, ErasedAsk), ActorError> {
        let e = self.table.entry(name)?;
        Ok((
            e.reply_name.clone(),
            (e.ask)(&self.r, payload, codec, deadline),
        ))
    }
    fn tell(
        &self,
        name: &str,
        payload: &[u8],
        codec: Codec,
        deadline: Option<Instant>,
    ) -> Result<BoxFuture<'static, Result<(), ErasedFail>>, ActorError> {
        let e = self.table.entry(name)?;
        Ok((e.tell)(&self.r, payload, codec, deadline))
    }
    fn try_tell(&self, name: &str, payload: &[u8], codec: Codec) -> Result<bool, ErasedFail> {
        let e = self.table.entry(name).map_err(ErasedFail::Failed)?;
        (e.try_tell)(&self.r, payload, codec)
    }
    fn drain(&self, deadline: Instant) {
        self.r
            .mb
            .push_control(crate::mailbox::Control::Drain { deadline });
    }
    fn stop(&self) {
        self.r.stop();
    }
    fn mark_terminated(&self) {
        self.r.mb.mark_terminated();
    }
    fn wait_terminated(&self, deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(self.r.mb.wait_terminated(deadline))
    }
    fn as_any(&self) -> &dyn Any {
        &self.r
    }
}

/// A handle to a local actor that takes messages by name and bytes: what the node's router
/// uses for requests from the network. Cheap to clone.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use cortex_protocol::MessageName;
/// use cortex_runtime::{Actor, Codec, Context, ErasedRef, Handler, MessageTable, System};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Deposit(u64);
/// # cortex_runtime::message!(Deposit => u64, "bank.Deposit");
/// struct Account(u64);
/// impl Actor for Account {}
/// impl Handler<Deposit> for Account {
///     async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 { self.0 += d.0; self.0 }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let system = System::new(Default::default());
/// let table = Arc::new(MessageTable::new().handles::<Deposit>());
/// let erased = ErasedRef::new(system.spawn(Account(0)), table);
/// let name = MessageName::new("bank.Deposit").unwrap();
/// let (reply_name, bytes) = erased
///     .ask(&name, b"5", Codec::Json, Duration::from_secs(1))
///     .await
///     .unwrap();
/// assert_eq!(reply_name.as_str(), "bank.Deposit.Reply");
/// assert_eq!(bytes, b"5");
/// # });
/// ```
#[derive(Clone)]
pub struct ErasedRef {
    pub(crate) inner: Arc<dyn ErasedActor>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<ErasedRef>();
};

impl fmt::Debug for ErasedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErasedRef")
            .field("id", &self.inner.id())
            .finish()
    }
}

impl ErasedRef {
    /// Binds a typed ref to the table of messages it accepts by name.
    pub fn new<A: Actor>(r: ActorRef<A>, table: Arc<MessageTable<A>>) -> Self {
        Self {
            inner: Arc::new(Bound { r, table }),
        }
    }

    /// The actor's node-local number.
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    /// True until the actor has stopped or begun stopping.
    pub fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    /// True when the actor accepts messages of this name.
    pub fn handles(&self, name: &MessageName) -> bool {
        self.inner.handles(name.as_str())
    }

    /// The typed ref, if the actor is of type `A`.
    pub fn downcast<A: Actor>(&self) -> Option<ActorRef<A>> {
        self.inner.as_any().downcast_ref::<ActorRef<A>>().cloned()
    }

    /// Decodes `payload` as the message registered under `name`, asks the actor, and
    /// returns the reply's name and bytes, encoded with the same `codec`.
    ///
    /// # Errors
    /// [`ActorError::UnknownMessage`], [`ActorError::Decode`], [`ActorError::Encode`], and
    /// everything [`ActorRef::ask`] returns.
    pub async fn ask(
        &self,
        name: &MessageName,
        payload: &[u8],
        codec: Codec,
        timeout: Duration,
    ) -> Result<(MessageName, Vec<u8>), ActorError> {
        let (reply_name, fut) =
            self.inner
                .ask(name.as_str(), payload, codec, Instant::now() + timeout)?;
        Ok((reply_name, fut.await?))
    }

    /// Decodes and tells, waiting up to `timeout` for mailbox room.
    ///
    /// # Errors
    /// [`ActorError::UnknownMessage`], [`ActorError::Decode`], [`ActorError::Timeout`],
    /// [`ActorError::Stopped`].
    pub async fn tell(
        &self,
        name: &MessageName,
        payload: &[u8],
        codec: Codec,
        timeout: Duration,
    ) -> Result<(), ActorError> {
        let deadline = Instant::now() + timeout;
        Ok(self
            .inner
            .tell(name.as_str(), payload, codec, Some(deadline))?
            .await?)
    }

    /// Decodes and tells only if the mailbox has room now.
    ///
    /// # Errors
    /// [`ActorError::MailboxFull`] and as [`ErasedRef::tell`].
    pub async fn try_tell(
        &self,
        name: &MessageName,
        payload: &[u8],
        codec: Codec,
    ) -> Result<(), ActorError> {
        Ok(self
            .inner
            .tell(name.as_str(), payload, codec, None)?
            .await?)
    }

    /// Asks the actor to stop (see [`ActorRef::stop`]).
    pub fn stop(&self) {
        self.inner.stop();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
    struct Probe {
        a: u64,
        b: String,
        c: Vec<u32>,
    }

    #[test]
    fn names() {
        assert!(valid_message_name("bank.Deposit"));
        assert!(valid_message_name("a:b-c_d.e"));
        assert!(!valid_message_name(""));
        assert!(!valid_message_name("no spaces"));
        assert!(!valid_message_name(&"x".repeat(129)));
    }

    #[test]
    fn round_trips() {
        let p = Probe {
            a: 7,
            b: "x".into(),
            c: vec![1, 2],
        };
        for codec in [Codec::Bincode, Codec::Json] {
            let bytes = encode_with(&p, codec).unwrap();
            assert_eq!(decode_with::<Probe>(&bytes, codec).unwrap(), p);
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for codec in [Codec::Bincode, Codec::Json] {
                if let Err(e) = decode_with::<Probe>(&bytes, codec) {
                    prop_assert_eq!(e.code(), cortex_protocol::ErrorCode::Decode);
                }
            }
        }
    }
}
