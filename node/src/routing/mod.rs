//! Routing: delivering tells and asks addressed to actor ids to their one owner.
pub mod activations;
pub mod decide;
pub mod dedupe;
#[doc(hidden)]
pub mod sim;
