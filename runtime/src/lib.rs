//! Cortex local actors: mailboxes, supervision, virtual actors, pub-sub, resilience.
