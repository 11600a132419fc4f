//! The placement function: which member owns an actor id.
//!
//! Nodes and clients must agree on it byte for byte, so it lives here beside the wire format
//! (a client computes owners to send each request straight to the owner). It is a consistent
//! hash ring (`hashring`) of virtual nodes: member `name` contributes `vnodes` points, point
//! `i` at SipHash-2-4 (keys 0, 0) of the bytes `"{name}#{i}"`; an actor id `kind/key` hashes
//! the bytes `"{kind}/{key}"` and belongs to the first point at or after its hash (wrapping).
//! Points hash the stable *name*, not the incarnation, so a restarted node takes back the
//! same ids.

use std::hash::{Hash, Hasher};

use std::hash::BuildHasher;

use hashring::{DefaultHashBuilder, HashRing};

use crate::ids::{ActorId, NodeId};

/// Default virtual nodes per member: 160 gives every member of 5 within a few percent of a
/// fair share of 10,000 ids.
pub const DEFAULT_VNODES: u32 = 160;

#[derive(Clone, Debug)]
struct Point {
    name: String,
    index: u32,
    member: usize,
}

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(format!("{}#{}", self.name, self.index).as_bytes());
    }
}

struct IdKey<'a>(&'a ActorId);

impl Hash for IdKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.kind().as_bytes());
        state.write(b"/");
        state.write(self.0.key().as_bytes());
    }
}

/// An immutable ring over a set of members.
///
/// ```
/// use cortex_protocol::{NodeId, Ring, ActorId};
/// let members = vec![NodeId::new("a", 1).unwrap(), NodeId::new("b", 1).unwrap()];
/// let ring = Ring::new(members.clone(), 160);
/// let id: ActorId = "order/1".parse().unwrap();
/// let owner = ring.owner(&id).unwrap();
/// assert!(members.contains(owner));
/// // Same members in another order: same owner.
/// let again = Ring::new(members.into_iter().rev().collect(), 160);
/// assert_eq!(again.owner(&id), Some(owner));
/// ```
pub struct Ring {
    members: Vec<NodeId>,
    digest: u64,
    /// The points' hashes in ring order, and the member of each: `hashring`'s ring laid
    /// out for the lookup every sent message makes. Its own entries are 48 bytes (the key
    /// and a `Point`); 8 here, so a lookup's binary search touches a sixth of the cache
    /// lines (it was ~6% of a sending node's CPU in `perf`). `owners` is read once a lookup.
    keys: Vec<u64>,
    owners: Vec<usize>,
    vnodes: u32,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .field("vnodes", &self.vnodes)
            .finish()
    }
}

impl Ring {
    /// Builds the ring. Order of `members` does not matter; duplicate names keep the highest
    /// incarnation only.
    pub fn new(mut members: Vec<NodeId>, vnodes: u32) -> Self {
        // Sorting by name (then newest incarnation first) makes insertion order, and so the
        // tie-break between equal hashes, identical everywhere.
        members.sort_by(|a, b| {
            a.name()
                .cmp(b.name())
                .then(b.incarnation().cmp(&a.incarnation()))
        });
        members.dedup_by(|later, earlier| later.name() == earlier.name());
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity(members.len() * vnodes as usize);
        for (member, id) in members.iter().enumerate() {
            for index in 0..vnodes {
                points.push(Point {
                    name: id.name().to_owned(),
                    index,
                    member,
                });
            }
        }
        let mut ring = HashRing::new();
        ring.batch_add(points);
        // `hashring` keeps its points sorted by key (a stable sort), which is the order it
        // yields them in; each key is its `get_key`, the hasher's `hash_one` of the point.
        let (keys, owners) = ring
            .into_iter()
            .map(|p| (DefaultHashBuilder.hash_one(&p), p.member))
            .unzip();
        let mut h = DefaultHashBuilder.build_hasher();
        for m in &members {
            h.write(m.name().as_bytes());
            h.write_u8(b'#');
            h.write(&m.incarnation().to_be_bytes());
        }
        // Two rings over the same members but different vnode counts place ids differently:
        // equal digests must mean equal rings.
        h.write_u8(b'/');
        h.write(&vnodes.to_be_bytes());
        // 0 means "no view" on the wire, so it is never a digest.
        let digest = h.finish().max(1);
        Self {
            members,
            digest,
            keys,
            owners,
            vnodes,
        }
    }

    /// The owner of `id`, or `None` for an empty ring.
    pub fn owner(&self, id: &ActorId) -> Option<&NodeId> {
        // `HashRing::get`'s lookup, on the same keys in the same order: the first point at
        // or after the id's hash, wrapping (the same comparisons, so the same point even
        // among equal keys).
        let k = DefaultHashBuilder.hash_one(IdKey(id));
        let n = match self.keys.binary_search(&k) {
            Ok(n) | Err(n) => n,
        };
        let n = if n == self.keys.len() { 0 } else { n };
        self.members.get(*self.owners.get(n)?)
    }

    /// A digest of the ring (member names and incarnations, and the vnode count),
    /// independent of the order members were given in: SipHash-2-4 with zero keys over
    /// `name '#' incarnation(u64 BE)` for each member sorted by name, then `'/' vnodes(u32
    /// BE)`. Two rings with equal digests place every id on the same member. Carried as the
    /// `epoch` of routed messages so a receiver can tell a message routed under another
    /// view (and skip looking up an owner the sender computed on the same ring); never 0.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The members, sorted by name.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Virtual nodes per member.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// True when the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The compact lookup answers as `HashRing::get` does on the ring it was built from.
        #[test]
        fn owner_is_hashrings_answer(
            names in proptest::collection::btree_set("[a-z][a-z0-9-]{0,12}", 1..8),
            vnodes in prop_oneof![Just(1u32), Just(7), Just(DEFAULT_VNODES)],
            keys in proptest::collection::vec("[a-z0-9]{1,12}", 50),
        ) {
            let members: Vec<NodeId> =
                names.iter().map(|n| NodeId::new(n.clone(), 1).unwrap()).collect();
            let ring = Ring::new(members, vnodes);
            let mut reference = HashRing::new();
            reference.batch_add(
                ring.members()
                    .iter()
                    .enumerate()
                    .flat_map(|(member, id)| {
                        (0..vnodes).map(move |index| Point { name: id.name().to_owned(), index, member })
                    })
                    .collect(),
            );
            for key in keys {
                let id = ActorId::new("acct", key).unwrap();
                let want = reference.get(&IdKey(&id)).map(|p| &ring.members()[p.member]);
                prop_assert_eq!(ring.owner(&id), want);
            }
        }
    }

    fn ids(n: usize) -> Vec<ActorId> {
        (0..n)
            .map(|i| ActorId::new("acct", i.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn fair_share_5_nodes_10k_ids() {
        let members: Vec<_> = (0..5)
            .map(|i| NodeId::new(format!("cortex-{i}"), 1).unwrap())
            .collect();
        let ring = Ring::new(members.clone(), DEFAULT_VNODES);
        let mut counts = std::collections::HashMap::new();
        for id in ids(10_000) {
            *counts.entry(ring.owner(&id).unwrap().clone()).or_insert(0) += 1;
        }
        for m in &members {
            let c = counts[m];
            assert!((1800..=2200).contains(&c), "{m} got {c} of 10000");
        }
    }

    #[test]
    fn restart_keeps_placement_and_removal_moves_only_its_ids() {
        let a = NodeId::new("a", 1).unwrap();
        let b = NodeId::new("b", 1).unwrap();
        let c = NodeId::new("c", 1).unwrap();
        let full = Ring::new(vec![a.clone(), b.clone(), c.clone()], 64);
        let b2 = NodeId::new("b", 2).unwrap();
        let restarted = Ring::new(vec![a.clone(), b2.clone(), c.clone()], 64);
        let without_b = Ring::new(vec![a.clone(), c.clone()], 64);
        for id in ids(2000) {
            let o = full.owner(&id).unwrap();
            let r = restarted.owner(&id).unwrap();
            assert_eq!(o.name(), r.name());
            if o != &b {
                assert_eq!(without_b.owner(&id), Some(o));
            }
        }
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let ring = Ring::new(vec![], 10);
        assert!(ring.owner(&"a/b".parse().unwrap()).is_none());
    }
}
