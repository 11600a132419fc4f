//! Timer handles returned by [`Context::send_after`](crate::Context::send_after) and
//! [`Context::interval`](crate::Context::interval).

use tokio::task::AbortHandle;

/// Cancels a timer. Dropping the handle does not cancel it: the timer belongs to the
/// actor and ends with it.
#[derive(Debug, Clone)]
pub struct TimerHandle {
    abort: AbortHandle,
}

impl TimerHandle {
    pub(crate) fn new(abort: AbortHandle) -> Self {
        Self { abort }
    }
    /// Cancels the timer; a message not yet delivered will not be.
    pub fn cancel(&self) {
        self.abort.abort();
    }
    /// True once a one-shot timer fired or any timer was cancelled.
    pub fn is_finished(&self) -> bool {
        self.abort.is_finished()
    }
}
