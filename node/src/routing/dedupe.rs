//! Idempotent asks: the host runs an ask carrying an idempotency key at most once within a
//! window, and answers retries with the first reply (or joins them to the run in flight).
//!
//! Bounded in keys and in waiters per key. Keys live on the owner node, so a retry that
//! reaches a new owner after a handover runs again: the window protects against client
//! retries and duplicate deliveries, not against ownership moves (persistent actors fence
//! those with journal sequence numbers).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use cortex_protocol::ReplyResult;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Most callers that may wait on one key's run in flight.
const MAX_WAITERS: usize = 64;

enum Entry {
    Running(Vec<oneshot::Sender<ReplyResult>>),
    /// The answer and when it was given: the window counts from there.
    Done(ReplyResult, Instant),
}

/// What to do with an ask.
#[derive(Debug)]
pub enum Begin {
    /// First time: run it, then call [`Dedupe::finish`].
    Run,
    /// A run is in flight: await its reply.
    Wait(oneshot::Receiver<ReplyResult>),
    /// Already answered: here is the reply.
    Done(ReplyResult),
    /// Too many duplicates waiting on one key: refuse.
    Busy,
}

/// Entries by key, and keys in the order they expire.
type Table = (HashMap<[u8; 16], Entry>, VecDeque<([u8; 16], Instant)>);

/// The dedupe table.
pub struct Dedupe {
    window: Duration,
    cap: usize,
    inner: Mutex<Table>,
}

impl std::fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedupe")
            .field("window", &self.window)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Dedupe {
    /// Keys are kept `window` long, at most `cap` of them (oldest evicted first).
    pub fn new(window: Duration, cap: usize) -> Self {
        Self {
            window,
            cap: cap.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Registers an ask with `key` at `now`.
    pub fn begin(&self, key: [u8; 16], now: Instant) -> Begin {
        let mut g = self.inner.lock();
        let (map, order) = &mut *g;
        while let Some((k, t)) = order.front() {
            if now.duration_since(*t) < self.window && map.len() <= self.cap {
                break;
            }
            let k = *k;
            order.pop_front();
            // A run still in flight is never evicted: its waiters need the answer.
            // Each key is queued at begin and again at finish; only an answer older than
            // the window (or room needed past the cap) lets it go.
            let expired = match map.get(&k) {
                Some(Entry::Done(_, at)) => {
                    now.duration_since(*at) >= self.window || map.len() > self.cap
                }
                _ => false,
            };
            if expired {
                map.remove(&k);
            }
        }
        match map.get_mut(&key) {
            None => {
                map.insert(key, Entry::Running(Vec::new()));
                order.push_back((key, now));
                Begin::Run
            }
            Some(Entry::Done(r, _)) => Begin::Done(r.clone()),
            Some(Entry::Running(waiters)) => {
                if waiters.len() >= MAX_WAITERS {
                    return Begin::Busy;
                }
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Begin::Wait(rx)
            }
        }
    }

    /// Stores the reply of a run started with [`Begin::Run`] and wakes its waiters.
    pub fn finish(&self, key: [u8; 16], reply: &ReplyResult, now: Instant) {
        let mut g = self.inner.lock();
        let (map, order) = &mut *g;
        if let Some(Entry::Running(waiters)) = map.insert(key, Entry::Done(reply.clone(), now)) {
            for w in waiters {
                let _ = w.send(reply.clone());
            }
        }
        // The window counts from the answer, so a slow run is deduplicated for a full window.
        order.push_back((key, now));
    }

    /// Forgets a run that did not produce an answer worth replaying (for example, the
    /// request was forwarded elsewhere), waking waiters with `reply`.
    pub fn abandon(&self, key: [u8; 16], reply: &ReplyResult) {
        let mut g = self.inner.lock();
        if let Some(Entry::Running(waiters)) = g.0.remove(&key) {
            for w in waiters {
                let _ = w.send(reply.clone());
            }
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.inner.lock().0.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cortex_protocol::MessageName;

    fn ok(n: u8) -> ReplyResult {
        ReplyResult::Ok {
            message: MessageName::new("r").unwrap(),
            payload: Bytes::from(vec![n]),
        }
    }

    #[tokio::test]
    async fn runs_once_and_replays() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let t = Instant::now();
        assert!(matches!(d.begin([1; 16], t), Begin::Run));
        let Begin::Wait(rx) = d.begin([1; 16], t) else {
            panic!("expected wait")
        };
        d.finish([1; 16], &ok(7), t);
        assert_eq!(rx.await.unwrap(), ok(7));
        assert!(matches!(d.begin([1; 16], t), Begin::Done(r) if r == ok(7)));
        assert!(matches!(d.begin([2; 16], t), Begin::Run));
    }

    #[test]
    fn window_expires() {
        let d = Dedupe::new(Duration::from_secs(1), 100);
        let t = Instant::now();
        assert!(matches!(d.begin([1; 16], t), Begin::Run));
        d.finish([1; 16], &ok(1), t);
        assert!(matches!(
            d.begin([1; 16], t + Duration::from_secs(2)),
            Begin::Run
        ));
    }

    #[test]
    fn window_counts_from_the_answer() {
        let d = Dedupe::new(Duration::from_secs(10), 100);
        let t = Instant::now();
        assert!(matches!(d.begin([1; 16], t), Begin::Run));
        // A slow run: answered 8 s after it began.
        d.finish([1; 16], &ok(1), t + Duration::from_secs(8));
        // 12 s after the begin but only 4 s after the answer: still deduplicated.
        assert!(matches!(
            d.begin([1; 16], t + Duration::from_secs(12)),
            Begin::Done(_)
        ));
        assert!(matches!(
            d.begin([1; 16], t + Duration::from_secs(19)),
            Begin::Run
        ));
    }

    #[test]
    fn bounded_keys() {
        let d = Dedupe::new(Duration::from_secs(600), 10);
        let t = Instant::now();
        for i in 0..100u8 {
            let mut k = [0; 16];
            k[0] = i;
            assert!(matches!(d.begin(k, t), Begin::Run));
            d.finish(k, &ok(i), t);
        }
        assert!(d.len() <= 12, "{}", d.len());
    }
}
