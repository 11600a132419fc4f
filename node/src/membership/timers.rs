//! A bounded timer queue on an abstract clock (a `Duration` since an origin the owner picks).
//!
//! The async driver sleeps until [`TimerQueue::next_deadline`]; the simulation pops timers in
//! virtual time. Same queue, same order, so both deliver foca's timers identically.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

/// Timers held at most by default. foca keeps a handful of timers per member (probe,
/// suspicion, removal), so this bound is reached only with tens of thousands of members
/// churning within the removal delay.
pub(crate) const DEFAULT_TIMER_CAPACITY: usize = 1 << 16;

struct Entry<T> {
    at: Duration,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Timers ordered by deadline, then by insertion (so equal deadlines fire in order).
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
    capacity: usize,
}

impl<T> std::fmt::Debug for TimerQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerQueue")
            .field("len", &self.heap.len())
            .field("next", &self.next_deadline())
            .finish()
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue holding at most `capacity` timers.
    pub fn new(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
            capacity,
        }
    }

    /// Adds a timer due at `at`.
    ///
    /// # Errors
    /// Gives the timer back when the queue is full.
    pub fn push(&mut self, at: Duration, item: T) -> Result<(), T> {
        if self.heap.len() >= self.capacity {
            return Err(item);
        }
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
        Ok(())
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<T> {
        if self.next_deadline()? <= now {
            self.heap.pop().map(|Reverse(e)| e.item)
        } else {
            None
        }
    }

    /// Timers held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no timer is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_bound() {
        let ms = Duration::from_millis;
        let mut q = TimerQueue::new(3);
        q.push(ms(5), "b").unwrap();
        q.push(ms(1), "a").unwrap();
        q.push(ms(5), "c").unwrap();
        assert_eq!(q.push(ms(0), "x"), Err("x"));
        assert_eq!(q.next_deadline(), Some(ms(1)));
        assert_eq!(q.pop_due(ms(0)), None);
        assert_eq!(q.pop_due(ms(9)), Some("a"));
        assert_eq!(q.pop_due(ms(9)), Some("b"));
        assert_eq!(q.pop_due(ms(9)), Some("c"));
        assert!(q.is_empty());
    }
}
