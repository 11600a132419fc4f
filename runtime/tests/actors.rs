//! Behaviour tests of the actor runtime: one binary, one module per concern.

mod actors {
    pub(crate) mod basics;
    pub(crate) mod common;
    pub(crate) mod inline;
    pub(crate) mod inline_stress;
    pub(crate) mod pubsub;
    pub(crate) mod remote;
    pub(crate) mod sharded;
    pub(crate) mod shutdown;
    pub(crate) mod supervision;
    pub(crate) mod timers;
    pub(crate) mod virtuals;
}
