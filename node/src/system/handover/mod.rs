//! `system/handover`: what moves with an actor besides its id when a handover passivates it
//! on one node so that another activates it next.
//!
//! Today that is the idempotency window (see [`crate::routing::dedupe`]): the old owner sends
//! the keys its actor answered, and the new owner replays those answers to retries instead of
//! running them again. Every node runs this actor (it is not optional: handover correctness
//! depends on it), exposed as `system/handover`.
//!
//! Messages:
//! - `system.handover.AdoptKeys` → `u32`: the answered idempotency keys of actors that moved
//!   here; answers how many were taken (keys this node already holds are kept as they are).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cortex_node::routing::dedupe::{Begin, Dedupe, MovedKey};
//! use cortex_node::system::handover::{self, AdoptKeys};
//! let system = cortex_runtime::System::new(Default::default());
//! let dedupe = Arc::new(Dedupe::new(Duration::from_secs(60), 1000));
//! handover::spawn(&system, dedupe.clone(), cortex_node::metrics::NodeMetrics::new("n1"));
//! let reply = cortex_protocol::ReplyResult::Ok {
//!     message: cortex_protocol::MessageName::new("u64").unwrap(),
//!     payload: vec![1].into(),
//! };
//! let moved = AdoptKeys(vec![MovedKey {
//!     key: [7; 16],
//!     actor: "counter/a".parse().unwrap(),
//!     reply,
//!     age_ms: 5,
//! }]);
//! let r = system.lookup("handover").unwrap();
//! let name = cortex_protocol::MessageName::new("system.handover.AdoptKeys").unwrap();
//! let payload = cortex_runtime::encode_with(&moved, cortex_runtime::Codec::Bincode).unwrap();
//! r.ask(&name, &payload, cortex_runtime::Codec::Bincode, Duration::from_secs(1)).await.unwrap();
//! // A retry of key [7; 16] here now replays the moved answer.
//! assert!(matches!(dedupe.begin([7; 16], tokio::time::Instant::now()), Begin::Done(_)));
//! # });
//! ```

use std::sync::Arc;

use cortex_runtime::{Actor, Context, ErasedRef, Handler, MessageTable, System};
use serde::{Deserialize, Serialize};

use crate::metrics::NodeMetrics;
use crate::routing::dedupe::{Dedupe, MovedKey};

/// Name under which the actor is exposed (`system/handover`).
pub const NAME: &str = "handover";

/// Most keys in one message (a handover sends several when more moved).
pub const MAX_KEYS_PER_MESSAGE: usize = 2048;

/// About the most bytes of keys and replies in one message, far below the frame limit.
pub const MAX_BYTES_PER_MESSAGE: usize = 256 * 1024;

/// Answered idempotency keys of actors that moved to this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdoptKeys(pub Vec<MovedKey>);
cortex_runtime::message!(AdoptKeys => u32, "system.handover.AdoptKeys");

/// The actor: a handle on the node's idempotency window.
#[derive(Debug)]
pub struct HandoverActor {
    dedupe: Arc<Dedupe>,
    metrics: NodeMetrics,
}

impl Actor for HandoverActor {}

impl Handler<AdoptKeys> for HandoverActor {
    async fn handle(&mut self, msg: AdoptKeys, _: &mut Context<Self>) -> u32 {
        // Bounded by the frame size on the wire and by the table's cap once adopted.
        self.metrics.message_received(crate::metrics::SYSTEM, false);
        let n = self.dedupe.adopt(msg.0, tokio::time::Instant::now());
        self.metrics.idempotency_keys_adopted(n as u64);
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// Spawns the handover actor under the system's root supervisor and exposes it as
/// `handover` (reached as `system/handover`).
pub fn spawn(system: &System, dedupe: Arc<Dedupe>, metrics: NodeMetrics) {
    let table = MessageTable::<HandoverActor>::new().handles::<AdoptKeys>();
    let r = system.spawn_factory(
        move || HandoverActor {
            dedupe: dedupe.clone(),
            metrics: metrics.clone(),
        },
        Default::default(),
    );
    system.expose(NAME, ErasedRef::new(r, Arc::new(table)));
}
