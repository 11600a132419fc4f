//! The actor kinds a bench node hosts: the bank example's kinds plus `sink`, whose actors
//! count tells in a process-wide counter and echo asks.

use std::sync::atomic::{AtomicU64, Ordering};

use cortex_node::NodeBuilder;
use cortex_runtime::{Actor, Context, Handler, Kind};
use serde::{Deserialize, Serialize};

/// Tells received by every `sink` actor of this process.
static TELLS_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Opaque bytes, declared to serde as bytes (what `serde_bytes` does): decoding copies them
/// in one go. A bare `Vec<u8>` is a sequence to serde, decoded one `u8` call at a time into
/// a vector that grows by doubling, which cost the receiving node ~12% of its CPU per
/// remote tell (BENCHMARKS.md, "Cluster routing"). The bincode encoding is the same either
/// way: a length, then the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload(pub(crate) Vec<u8>);

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Payload, E> {
                Ok(Payload(b.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, b: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(b))
            }
            // Self-describing formats (JSON) write bytes as a list of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Payload, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Payload(v))
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// A tell carrying a payload (64 bytes in the benchmarks).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Blob(pub(crate) Payload);
cortex_runtime::message!(Blob => (), "bench.Blob");

/// An ask answered with its own payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Echo(pub(crate) Payload);
cortex_runtime::message!(Echo => Payload, "bench.Echo");

/// Asks for the number of tells every `sink` actor of the hosting process has received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Received;
cortex_runtime::message!(Received => u64, "bench.Received");

/// The `sink` actor.
pub(crate) struct Sink;
impl Actor for Sink {}
impl Handler<Blob> for Sink {
    async fn handle(&mut self, _: Blob, _: &mut Context<Self>) {
        TELLS_RECEIVED.fetch_add(1, Ordering::Relaxed);
    }
}
impl Handler<Echo> for Sink {
    async fn handle(&mut self, e: Echo, _: &mut Context<Self>) -> Payload {
        e.0
    }
}
impl Handler<Received> for Sink {
    async fn handle(&mut self, _: Received, _: &mut Context<Self>) -> u64 {
        TELLS_RECEIVED.load(Ordering::Relaxed)
    }
}

/// Registers the bank kinds and `sink`.
pub(crate) fn kinds(builder: NodeBuilder) -> NodeBuilder {
    crate::actors::kinds(builder).kind(
        Kind::new("sink", |_| Sink)
            .handles::<Blob>()
            .handles::<Echo>()
            .handles::<Received>(),
    )
}
