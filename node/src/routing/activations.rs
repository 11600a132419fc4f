//! The activation log: every activation and passivation of a virtual actor on this node,
//! with the fencing token it ran under (this node's incarnation and ring epoch).
//!
//! Tests and the chaos harness collect the logs of all nodes and check single activation:
//! no id live on two nodes at once. Bounded: the oldest closed records go first.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use cortex_protocol::{ActorId, NodeId};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

/// One activation, open until it is passivated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivationRecord {
    /// Sequence number on this node, from 1.
    pub seq: u64,
    /// The actor.
    pub id: String,
    /// The hosting node (name and incarnation: the fencing token's first half).
    pub node: String,
    /// Incarnation of the hosting node.
    pub incarnation: u64,
    /// Ring epoch on this node when it activated (the fencing token's second half).
    pub epoch: u64,
    /// Wall-clock activation time, unix microseconds.
    pub activated_us: u64,
    /// Wall-clock passivation time, unix microseconds; `None` while live.
    pub passivated_us: Option<u64>,
}

/// Activation and passivation events, as they happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationEvent {
    /// An activation started.
    Activated(ActivationRecord),
    /// An activation ended.
    Passivated(ActivationRecord),
}

#[derive(Debug)]
struct Inner {
    records: VecDeque<ActivationRecord>,
    open: HashMap<ActorId, u64>,
    next_seq: u64,
}

/// The log. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ActivationLog {
    node: NodeId,
    cap: usize,
    inner: Mutex<Inner>,
    events: broadcast::Sender<ActivationEvent>,
}

/// Wall-clock now in unix microseconds (0 if the clock is before 1970).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ActivationLog {
    /// A log for `node` keeping at most `cap` records.
    pub fn new(node: NodeId, cap: usize) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            node,
            cap: cap.max(16),
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                open: HashMap::new(),
                next_seq: 1,
            }),
            events,
        }
    }

    /// Records an activation of `id` under ring epoch `epoch`, now.
    pub fn activated(&self, id: &ActorId, epoch: u64) {
        self.activated_at(id, epoch, unix_micros());
    }

    /// Records an activation of `id` under ring epoch `epoch` at `at_us` (unix µs).
    pub fn activated_at(&self, id: &ActorId, epoch: u64, at_us: u64) {
        let mut g = self.inner.lock();
        let seq = g.next_seq;
        g.next_seq += 1;
        let rec = ActivationRecord {
            seq,
            id: id.to_string(),
            node: self.node.name().to_owned(),
            incarnation: self.node.incarnation(),
            epoch,
            activated_us: at_us,
            passivated_us: None,
        };
        g.open.insert(id.clone(), seq);
        g.records.push_back(rec.clone());
        self.trim(&mut g);
        drop(g);
        let _ = self.events.send(ActivationEvent::Activated(rec));
    }

    /// Records the end of the live activation of `id`, if any, now.
    pub fn passivated(&self, id: &ActorId) {
        self.passivated_at(id, unix_micros());
    }

    /// Records the end of the live activation of `id`, if any, at `now` (unix µs).
    pub fn passivated_at(&self, id: &ActorId, now: u64) {
        let mut g = self.inner.lock();
        let Some(seq) = g.open.remove(id) else {
            return;
        };
        let first = g.records.front().map(|r| r.seq).unwrap_or(seq);
        let rec = seq
            .checked_sub(first)
            .and_then(|i| g.records.get_mut(i as usize))
            .filter(|r| r.seq == seq)
            .map(|r| {
                r.passivated_us = Some(now);
                r.clone()
            });
        drop(g);
        if let Some(rec) = rec {
            let _ = self.events.send(ActivationEvent::Passivated(rec));
        }
    }

    fn trim(&self, g: &mut Inner) {
        while g.records.len() > self.cap {
            // Records are in seq order; dropping the front keeps seq - first a valid index.
            let Some(old) = g.records.pop_front() else {
                break;
            };
            if old.passivated_us.is_none() {
                // Still live: keep it findable by moving it to the back would break the
                // index; instead close its entry so the map cannot dangle.
                if let Ok(id) = old.id.parse::<ActorId>() {
                    g.open.remove(&id);
                }
            }
        }
    }

    /// Records with `seq > since`, oldest first.
    pub fn since(&self, since: u64) -> Vec<ActivationRecord> {
        let g = self.inner.lock();
        g.records
            .iter()
            .filter(|r| r.seq > since)
            .cloned()
            .collect()
    }

    /// Ids live now.
    pub fn live(&self) -> usize {
        self.inner.lock().open.len()
    }

    /// Live events.
    pub fn subscribe(&self) -> broadcast::Receiver<ActivationEvent> {
        self.events.subscribe()
    }
}

/// Checks records from many nodes for two activations of one id that overlap in time.
/// Open records count as live until `now_us`. Returns the offending pairs.
pub fn overlapping(
    records: &[ActivationRecord],
    now_us: u64,
) -> Vec<(ActivationRecord, ActivationRecord)> {
    let mut by_id: HashMap<&str, Vec<&ActivationRecord>> = HashMap::new();
    for r in records {
        by_id.entry(&r.id).or_default().push(r);
    }
    let mut out = Vec::new();
    for (_, mut rs) in by_id {
        rs.sort_by_key(|r| r.activated_us);
        for (i, a) in rs.iter().enumerate() {
            let a_end = a.passivated_us.unwrap_or(now_us);
            for b in &rs[i + 1..] {
                if b.activated_us >= a_end {
                    break;
                }
                if (a.node.as_str(), a.incarnation) != (b.node.as_str(), b.incarnation) {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_open_and_close() {
        let log = ActivationLog::new(NodeId::new("a", 1).unwrap(), 100);
        let id: ActorId = "k/1".parse().unwrap();
        log.activated(&id, 3);
        assert_eq!(log.live(), 1);
        log.passivated(&id);
        let recs = log.since(0);
        assert_eq!(recs.len(), 1);
        assert!(recs[0].passivated_us.is_some());
        assert_eq!(recs[0].epoch, 3);
        assert_eq!(log.live(), 0);
    }

    #[test]
    fn bounded() {
        let log = ActivationLog::new(NodeId::new("a", 1).unwrap(), 16);
        for i in 0..100 {
            let id: ActorId = format!("k/{i}").parse().unwrap();
            log.activated(&id, 1);
            log.passivated(&id);
        }
        assert_eq!(log.since(0).len(), 16);
        assert_eq!(log.since(0)[0].seq, 85);
    }

    fn rec(node: &str, inc: u64, from: u64, to: Option<u64>) -> ActivationRecord {
        ActivationRecord {
            seq: 1,
            id: "k/1".into(),
            node: node.into(),
            incarnation: inc,
            epoch: 1,
            activated_us: from,
            passivated_us: to,
        }
    }

    #[test]
    fn overlap_checker() {
        let ok = [rec("a", 1, 0, Some(10)), rec("b", 1, 10, None)];
        assert!(overlapping(&ok, 100).is_empty());
        let bad = [rec("a", 1, 0, None), rec("b", 1, 10, Some(20))];
        assert_eq!(overlapping(&bad, 100).len(), 1);
    }
}
