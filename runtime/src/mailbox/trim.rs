//! Deferred release of what an idle mailbox holds beyond its idle allowance.
//!
//! An actor that goes idle after a burst holds a grown queue and up to `SPARE_BUSY` spare
//! envelopes. Releasing them at once made every burst of an actor fed in bursts regrow
//! them, and on glibc each regrowth of a kilobyte or more consolidates every small block
//! freed since (malloc's rule for large requests): with many such actors that was a third
//! of the CPU. So a pause only registers the mailbox here, and one thread releases it
//! [`TRIM_AFTER`] to twice that later if the actor has not run since; an actor still busy
//! registers again at its next pause.
//!
//! The thread starts with the first registration and ends once a round finds nothing
//! registered, so an idle process runs no trim thread. Registrations are bounded
//! ([`MAX_PENDING`]); past the bound, or if no thread can be started, the caller releases
//! at once, as before.

use std::sync::{Mutex, Weak};
use std::time::Duration;

/// How long an actor must stay idle before what it held for a burst is released.
pub(crate) const TRIM_AFTER: Duration = Duration::from_millis(500);

/// Mailboxes registered at most; one entry per mailbox (`trim_queued`).
pub(crate) const MAX_PENDING: usize = 1 << 16;

/// A mailbox that can release its burst's worth.
pub(crate) trait Trim: Send + Sync {
    /// Releases if the receiver stayed idle since it registered at take count `epoch`;
    /// `Some(count)` asks to be checked again a round later from that count (it was busy
    /// in between and is idle again).
    fn trim(&self, epoch: u32) -> Option<u32>;
    /// Releases now (registration refused).
    fn release(&self);
}

struct Pending {
    entries: Vec<(Weak<dyn Trim>, u32)>,
    /// The trim thread is running (it empties `entries` every round).
    running: bool,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    entries: Vec::new(),
    running: false,
});

/// Why a mailbox was not registered: release now.
#[derive(Debug)]
pub(crate) struct Refused;

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    // A panic while holding this lock can only come from an allocation failure in `push`;
    // the data (a list of weak refs) is valid whatever happened, so poisoning is ignored.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers `mb` for a release after [`TRIM_AFTER`] if it stays idle since its `epoch`th
/// pause.
pub(crate) fn defer(mb: Weak<dyn Trim>, epoch: u32) -> Result<(), Refused> {
    let mut p = pending();
    if p.entries.len() >= MAX_PENDING {
        return Err(Refused);
    }
    p.entries.push((mb, epoch));
    if !p.running {
        let started = std::thread::Builder::new()
            .name("cortex-trim".into())
            .spawn(run);
        if started.is_err() {
            p.entries.pop();
            return Err(Refused);
        }
        p.running = true;
    }
    Ok(())
}

/// The trim thread: every [`TRIM_AFTER`], releases what was registered before; ends when
/// a round finds nothing.
fn run() {
    loop {
        std::thread::sleep(TRIM_AFTER);
        let due = {
            let mut p = pending();
            if p.entries.is_empty() {
                p.running = false;
                return;
            }
            std::mem::take(&mut p.entries)
        };
        let mut again = Vec::new();
        for (weak, epoch) in due {
            if let Some(mb) = weak.upgrade()
                && let Some(epoch) = mb.trim(epoch)
            {
                again.push((weak, epoch));
            }
        }
        if !again.is_empty() {
            // Registrations made during this round count against the bound too: what does
            // not fit is released now, as a refused registration is.
            let over = {
                let mut p = pending();
                let room = MAX_PENDING.saturating_sub(p.entries.len());
                let over = again.split_off(room.min(again.len()));
                p.entries.append(&mut again);
                over
            };
            for (weak, _) in over {
                if let Some(mb) = weak.upgrade() {
                    mb.release();
                }
            }
        }
    }
}
