//! Cortex local actors: mailboxes, supervision, virtual actors, pub-sub, resilience.
pub mod resilience;
