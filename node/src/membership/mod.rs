//! SWIM membership of a Cortex node, on foca.
//!
//! Nodes find each other by gossip over UDP (default port 7401). Every datagram is
//! authenticated with a key derived from the cluster secret and carries a replay counter; see
//! the datagram layout in the `auth` module docs. Each member gossips a [`MemberIdentity`]:
//! its [`cortex_protocol::NodeId`] (name + incarnation), gossip address and [`MemberMeta`]
//! (QUIC and HTTP addresses, roles, protocol versions). A node restarted under the same name
//! comes back with a higher incarnation and replaces its previous incarnation everywhere.
//!
//! Layers:
//! - [`MembershipCore`]: IO-free state machine (bytes, timers and time in; datagrams,
//!   timers and [`MembershipEvent`]s out). Deterministic given its seed and inputs.
//! - [`Membership::start`] → [`MembershipHandle`]: a task that owns the UDP socket, the timer
//!   queue, seed re-resolution, and publishes the [`MembershipView`] and events.
//! - `sim` (hidden): a seeded network simulation that drives many cores in virtual time.

mod auth;
mod config;
mod driver;
mod identity;
mod machine;
#[doc(hidden)]
pub mod sim;
mod timers;
mod view;

pub use auth::{
    DATAGRAM_VERSION, MAX_DATAGRAM, MIN_SECRET_LEN, MembershipCounters, RejectCounts, RejectReason,
};
pub use config::{DEFAULT_GOSSIP_PORT, MembershipConfig, MembershipError, SeedSpec, SwimTuning};
pub use driver::{Membership, MembershipHandle};
pub use identity::{MAX_ROLE_LEN, MAX_ROLES, MemberIdentity, MemberMeta};
pub use machine::{CoreConfig, CoreTimer, MAX_IDENTITY_LEN, MembershipCore, Now, Transmit};
pub use timers::TimerQueue;
pub use view::{MAX_REMOVED, Member, MemberState, MembershipEvent, MembershipView};

#[cfg(test)]
mod tests;
