//! Idempotent asks: the host runs an ask carrying an idempotency key at most once within a
//! window, and answers retries with the first reply (or joins them to the run in flight).
//!
//! Bounded in keys and in waiters per key. Keys live on the owner node and travel with the
//! actor: when a handover passivates an id here, the answered keys of that id are sent to its
//! new owner ([`Dedupe::export`], adopted there with [`Dedupe::adopt`] through the
//! `system/handover` actor), so a retry, or a copy of the request delayed in the network,
//! that reaches the new owner is answered from the window instead of running again. That
//! covers moves and the merge of twin activations after a partition, as long as the keys
//! arrive before the retry; persistent actors will fence the rest with journal sequence
//! numbers.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use cortex_protocol::{ActorId, ReplyResult};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Most callers that may wait on one key's run in flight.
const MAX_WAITERS: usize = 64;

enum Entry {
    Running(Vec<oneshot::Sender<ReplyResult>>),
    /// The answer, when it was given (the window counts from there), and the actor that
    /// gave it (so the key can follow the actor when it moves).
    Done(ReplyResult, Instant, Option<ActorId>),
}

/// An answered key on its way to an actor's new owner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MovedKey {
    /// The idempotency key.
    pub key: [u8; 16],
    /// The actor that answered it.
    pub actor: ActorId,
    /// The reply to replay.
    pub reply: ReplyResult,
    /// How long ago it was answered (the window keeps counting from then).
    pub age_ms: u64,
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

impl Begin {
    /// Its name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Begin::Run => "run",
            Begin::Wait(_) => "wait",
            Begin::Done(_) => "done",
            Begin::Busy => "busy",
        }
    }
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

    /// Drops answers past their window, and the oldest answers while past the cap, walking
    /// the queue from its front. A run still in flight is never evicted: its waiters need the
    /// answer. Each key is queued at begin and again at finish (or adoption); only an answer
    /// older than the window (or room needed past the cap) lets it go.
    fn evict(
        &self,
        map: &mut HashMap<[u8; 16], Entry>,
        order: &mut VecDeque<([u8; 16], Instant)>,
        now: Instant,
    ) {
        while let Some((k, t)) = order.front() {
            if now.duration_since(*t) < self.window && map.len() <= self.cap {
                break;
            }
            let k = *k;
            order.pop_front();
            let expired = match map.get(&k) {
                Some(Entry::Done(_, at, _)) => {
                    now.duration_since(*at) >= self.window || map.len() > self.cap
                }
                _ => false,
            };
            if expired {
                map.remove(&k);
            }
        }
    }

    /// Registers an ask with `key` at `now`.
    pub fn begin(&self, key: [u8; 16], now: Instant) -> Begin {
        let mut g = self.inner.lock();
        let (map, order) = &mut *g;
        self.evict(map, order, now);
        // An answer past its window that the lazy eviction above has not reached yet (its
        // queue entry sits behind younger ones, as adopted keys do) is gone all the same.
        if matches!(map.get(&key), Some(Entry::Done(_, at, _)) if now.duration_since(*at) >= self.window)
        {
            map.remove(&key);
        }
        match map.get_mut(&key) {
            None => {
                map.insert(key, Entry::Running(Vec::new()));
                order.push_back((key, now));
                Begin::Run
            }
            Some(Entry::Done(r, _, _)) => Begin::Done(r.clone()),
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

    /// Stores the reply `actor` gave to a run started with [`Begin::Run`] and wakes its
    /// waiters.
    pub fn finish(
        &self,
        key: [u8; 16],
        actor: Option<&ActorId>,
        reply: &ReplyResult,
        now: Instant,
    ) {
        let mut g = self.inner.lock();
        let (map, order) = &mut *g;
        let done = Entry::Done(reply.clone(), now, actor.cloned());
        if let Some(Entry::Running(waiters)) = map.insert(key, done) {
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

    /// The answered keys, still inside the window, of the actors `moved` selects: what a
    /// handover sends to their new owners. Scans every key (bounded by the cap); called once
    /// per handover.
    pub fn export(&self, moved: impl Fn(&ActorId) -> bool, now: Instant) -> Vec<MovedKey> {
        let g = self.inner.lock();
        g.0.iter()
            .filter_map(|(key, e)| match e {
                Entry::Done(reply, at, Some(actor))
                    if moved(actor) && now.duration_since(*at) < self.window =>
                {
                    Some(MovedKey {
                        key: *key,
                        actor: actor.clone(),
                        reply: reply.clone(),
                        age_ms: now.duration_since(*at).as_millis() as u64,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Takes keys answered by an actor's previous owner. A key this node already holds
    /// (answered or running here) is kept as it is; the others replay the moved reply until
    /// their window, counted from the original answer, ends. Returns how many were taken.
    pub fn adopt(&self, keys: Vec<MovedKey>, now: Instant) -> usize {
        let mut g = self.inner.lock();
        let (map, order) = &mut *g;
        let mut taken = 0;
        for k in keys {
            // The cap holds for adopted keys too, even when no ask arrives to evict.
            self.evict(map, order, now);
            let age = Duration::from_millis(k.age_ms);
            if age >= self.window || map.contains_key(&k.key) {
                continue;
            }
            let at = now.checked_sub(age).unwrap_or(now);
            map.insert(k.key, Entry::Done(k.reply, at, Some(k.actor)));
            order.push_back((k.key, now));
            taken += 1;
        }
        taken
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
        d.finish([1; 16], None, &ok(7), t);
        assert_eq!(rx.await.unwrap(), ok(7));
        assert!(matches!(d.begin([1; 16], t), Begin::Done(r) if r == ok(7)));
        assert!(matches!(d.begin([2; 16], t), Begin::Run));
    }

    #[test]
    fn window_expires() {
        let d = Dedupe::new(Duration::from_secs(1), 100);
        let t = Instant::now();
        assert!(matches!(d.begin([1; 16], t), Begin::Run));
        d.finish([1; 16], None, &ok(1), t);
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
        d.finish([1; 16], None, &ok(1), t + Duration::from_secs(8));
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
            d.finish(k, None, &ok(i), t);
        }
        assert!(d.len() <= 12, "{}", d.len());
    }

    #[test]
    fn answered_keys_follow_their_actor_to_the_new_owner() {
        let old = Dedupe::new(Duration::from_secs(10), 100);
        let new = Dedupe::new(Duration::from_secs(10), 100);
        let t = Instant::now();
        let a: ActorId = "counter/a".parse().unwrap();
        let b: ActorId = "counter/b".parse().unwrap();
        for (k, id) in [([1; 16], &a), ([2; 16], &b)] {
            assert!(matches!(old.begin(k, t), Begin::Run));
            old.finish(k, Some(id), &ok(k[0]), t);
        }
        // A run still in flight is not exported: it has no answer to replay yet.
        assert!(matches!(old.begin([3; 16], t), Begin::Run));
        let later = t + Duration::from_secs(4);
        let moved = old.export(|id| id == &a, later);
        assert_eq!(moved.len(), 1);
        assert_eq!((moved[0].key, moved[0].age_ms), ([1; 16], 4000));
        assert_eq!(new.adopt(moved.clone(), later), 1);
        // The retry at the new owner replays the first answer instead of running again.
        assert!(matches!(new.begin([1; 16], later), Begin::Done(r) if r == ok(1)));
        // Adopting again changes nothing; the window still counts from the first answer.
        assert_eq!(new.adopt(moved, later), 0);
        assert!(matches!(
            new.begin([1; 16], t + Duration::from_secs(11)),
            Begin::Run
        ));
    }

    #[test]
    fn adopt_keeps_what_the_new_owner_already_holds() {
        let d = Dedupe::new(Duration::from_secs(10), 100);
        let t = Instant::now();
        let a: ActorId = "counter/a".parse().unwrap();
        assert!(matches!(d.begin([1; 16], t), Begin::Run));
        let k = MovedKey {
            key: [1; 16],
            actor: a,
            reply: ok(9),
            age_ms: 10,
        };
        assert_eq!(d.adopt(vec![k.clone()], t), 0);
        d.finish([1; 16], None, &ok(1), t);
        assert!(matches!(d.begin([1; 16], t), Begin::Done(r) if r == ok(1)));
        // Expired on the way: not taken.
        let old = MovedKey {
            key: [2; 16],
            age_ms: 10_000,
            ..k
        };
        assert_eq!(d.adopt(vec![old], t), 0);
    }

    #[test]
    fn adopted_keys_stay_within_the_cap() {
        let d = Dedupe::new(Duration::from_secs(600), 10);
        let t = Instant::now();
        let keys = (0..100u8)
            .map(|i| MovedKey {
                key: [i; 16],
                actor: "counter/a".parse().unwrap(),
                reply: ok(i),
                age_ms: 0,
            })
            .collect();
        assert_eq!(d.adopt(keys, t), 100);
        assert!(d.len() <= 11, "{}", d.len());
    }
}
