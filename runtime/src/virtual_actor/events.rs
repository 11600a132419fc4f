//! The activation event stream and counters.

use std::time::SystemTime;

use cortex_protocol::ActorId;

/// Why an activation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PassivationReason {
    /// No message for the kind's idle timeout.
    Idle,
    /// The node reached its bound on live activations and this one was the least recently
    /// used.
    LeastRecentlyUsed,
    /// [`VirtualRegistry::passivate`](crate::VirtualRegistry::passivate) asked for it.
    Requested,
    /// It failed more often than its kind's restart limits allow.
    Failed,
    /// The actor stopped itself.
    Stopped,
    /// The system is shutting down.
    Shutdown,
}

impl PassivationReason {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            PassivationReason::Idle => 0,
            PassivationReason::LeastRecentlyUsed => 1,
            PassivationReason::Requested => 2,
            PassivationReason::Failed => 3,
            PassivationReason::Stopped => 4,
            PassivationReason::Shutdown => 5,
        }
    }
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => PassivationReason::Idle,
            1 => PassivationReason::LeastRecentlyUsed,
            2 => PassivationReason::Requested,
            3 => PassivationReason::Failed,
            5 => PassivationReason::Shutdown,
            _ => PassivationReason::Stopped,
        }
    }
}

/// What happened to an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VirtualEventKind {
    /// A new activation started.
    Activated,
    /// An activation ended; its state is gone.
    Passivated(PassivationReason),
}

/// One entry of [`VirtualRegistry::events`](crate::VirtualRegistry::events).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtualEvent {
    /// The actor.
    pub id: ActorId,
    /// What happened.
    pub event: VirtualEventKind,
    /// Wall-clock time of the event.
    pub at: SystemTime,
    /// The activation's ordinal on this node (1 for the first activation since start);
    /// an `Activated` and its `Passivated` carry the same number.
    pub activation: u64,
    /// Live activations right after the event.
    pub live: usize,
}

impl VirtualEvent {
    /// The actor kind (`id.kind()`).
    pub fn kind(&self) -> &str {
        self.id.kind()
    }
}

/// Counters of a [`VirtualRegistry`](crate::VirtualRegistry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtualStats {
    /// Live activations now.
    pub live: usize,
    /// Activations started since the registry was created.
    pub activations: u64,
    /// Activations ended since the registry was created.
    pub passivations: u64,
    /// Activations refused by the activation gate.
    pub gate_refusals: u64,
}
