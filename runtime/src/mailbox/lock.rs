//! The mailbox lock: a spin lock whose unlock is a plain release store.
//!
//! Every tell takes the mailbox lock once, so its price is the sender's floor. A
//! `parking_lot` mutex costs two locked read-modify-write instructions (the acquiring
//! `cmpxchg` and another to release, since the release must learn whether anyone parked),
//! ~10 ns each on this VM even uncontended: measured, 73% of `try_push`'s samples sat on
//! those two. Here only the acquisition is a locked instruction; nobody ever parks on the
//! lock, so the release is a plain store.
//!
//! The trade-off is what a waiter does while the holder is off the CPU. The critical
//! sections are short (a queue push, a copy of at most a batch; inside, an allocation happens
//! only when a queue grows or no spare envelope fits, and frees only when an actor going
//! idle sheds spares), so a waiter normally finds the lock free within a few spins. But the
//! holder's thread can be preempted inside one whenever there are more runnable threads
//! than cores (the 2-worker rows, with two senders and two workers, or anything else on the
//! machine). A `parking_lot` waiter would then sleep in the kernel until woken by the
//! release. Here a waiter spins `SPINS` rounds, then calls `std::thread::yield_now`
//! between checks: its core goes to any other runnable thread, the preempted holder
//! included when it is queued there, but if that core has nothing else to run the waiter
//! keeps coming back, so it spends CPU in a loop of `sched_yield` calls for as long as the
//! holder stays preempted (up to a scheduler time slice, a few ms, in the worst case).
//! That is rare (a preemption has to land inside a critical section of tens of
//! nanoseconds) and costs CPU, never correctness: there is no wake-up to lose, the waiter
//! re-reads the flag. Async waits never happen on this lock: senders wait for room on a
//! `Notify` and the receiver parks its waker, both outside it.

use spin::mutex::{SpinMutex, SpinMutexGuard};

/// Rounds of `spin_loop` before a waiter starts yielding its thread between checks.
const SPINS: u32 = 128;

/// A mutual-exclusion lock for tiny critical sections (see the module doc).
pub(crate) struct Lock<T>(SpinMutex<T>);

/// Access to the locked data; releases on drop (a store).
pub(crate) type Guard<'a, T> = SpinMutexGuard<'a, T>;

impl<T> Lock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(SpinMutex::new(value))
    }

    /// Takes the lock: one locked `cmpxchg` when it is free.
    #[inline]
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        match self.0.try_lock() {
            Some(g) => g,
            None => self.contended(),
        }
    }

    #[cold]
    #[inline(never)]
    fn contended(&self) -> Guard<'_, T> {
        let mut spins = 0u32;
        loop {
            // Reading before retrying keeps the line shared while the holder works, instead
            // of pulling it away with failed `cmpxchg`s.
            while self.0.is_locked() {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    // The holder is probably off the CPU: let it (or anyone) run.
                    std::thread::yield_now();
                }
            }
            if let Some(g) = self.0.try_lock() {
                return g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// More threads than cores, so holders do get preempted inside the critical section.
    /// A non-atomic read-modify-write of the guarded counter loses updates unless the lock
    /// excludes; the `inside` flag catches two holders at once directly.
    #[test]
    fn excludes_under_oversubscription() {
        const THREADS: usize = 8;
        const EACH: u64 = 100_000;
        let lock = Arc::new(Lock::new(0u64));
        let inside = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(120);
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (lock, inside) = (lock.clone(), inside.clone());
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let mut g = lock.lock();
                        assert!(!inside.swap(true, Ordering::Relaxed), "two holders at once");
                        let v = *g;
                        if i % 1024 == 0 {
                            // Widen the window now and then.
                            std::thread::yield_now();
                        }
                        *g = v + 1;
                        inside.store(false, Ordering::Relaxed);
                        drop(g);
                        if i % 4096 == 0 {
                            assert!(Instant::now() < deadline, "lock throughput collapsed");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), THREADS as u64 * EACH);
    }
}
