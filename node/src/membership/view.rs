//! The membership as the rest of the node sees it: members, states, the ring epoch, events.
//!
//! [`ViewTracker`] turns foca's member list into this view by diffing it after every input,
//! which also yields the `Suspect`/`AliveAgain` transitions foca itself does not announce.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

pub use cortex_protocol::MemberState;
use cortex_protocol::{MemberInfo, NodeId};

use super::identity::{MemberIdentity, MemberMeta};

/// Most recently removed members kept in the view.
pub const MAX_REMOVED: usize = 128;
/// Names whose highest incarnation is remembered (to refuse resurrected old incarnations).
const MAX_NAMES: usize = 4096;
/// Ids remembered as having left gracefully.
const MAX_LEFT: usize = 1024;

/// One member of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name + incarnation.
    pub id: NodeId,
    /// Its SWIM address.
    pub gossip_addr: SocketAddr,
    /// QUIC/HTTP addresses, roles, versions.
    pub meta: MemberMeta,
    /// `Up` or `Suspect` while live; `Down` or `Left` once removed.
    pub state: MemberState,
    /// When this node saw it enter `state`.
    pub since: SystemTime,
}

impl Member {
    fn from_identity(ident: &MemberIdentity, state: MemberState, since: SystemTime) -> Self {
        Self {
            id: ident.id.clone(),
            gossip_addr: ident.gossip_addr,
            meta: ident.meta.clone(),
            state,
            since,
        }
    }

    /// True for `Up` and `Suspect`: the member still owns its share of the ring.
    pub fn is_live(&self) -> bool {
        matches!(self.state, MemberState::Up | MemberState::Suspect)
    }

    /// The QUIC identity of the member's process (name and process incarnation), which is
    /// what connections to it present; differs from [`Member::id`] after a renewal.
    pub fn transport_id(&self) -> NodeId {
        NodeId::new(self.id.name(), self.meta.process).unwrap_or_else(|_| self.id.clone())
    }

    /// The wire form clients receive in topology snapshots: the member's QUIC identity, which
    /// clients dial.
    pub fn to_info(&self) -> MemberInfo {
        MemberInfo {
            node: self.transport_id(),
            quic_addr: self.meta.quic_addr,
            http_addr: self.meta.http_addr,
            state: self.state,
            roles: self.meta.roles.clone(),
        }
    }
}

/// A snapshot of the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    /// This node's current id (it changes if the node had to renew its incarnation).
    pub local: NodeId,
    /// Live members (`Up` or `Suspect`), this node included, sorted by name.
    pub members: Vec<Member>,
    /// Recently removed members (`Down` or `Left`), newest last; bounded by [`MAX_REMOVED`]
    /// and by the configured retention.
    pub removed: Vec<Member>,
    /// Ring epoch: grows by one with every change of the set of live members. Local to this
    /// node: two nodes may number the same set differently (compare `fingerprint` instead).
    pub epoch: u64,
    /// A digest of the live member ids: equal on two nodes exactly when (up to a 2^-64
    /// collision) they see the same live set.
    pub fingerprint: u64,
}

impl MembershipView {
    /// The live member with this id.
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    /// The ids of the live members, sorted by name.
    pub fn live_ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    /// True when `id` is a live member.
    pub fn is_live(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }
}

/// A change in the membership, as broadcast to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A new member (or a new incarnation of a name) is live.
    Joined(Member),
    /// A live member failed a probe; it keeps its place until declared down or refuted.
    Suspect(Member),
    /// A suspected member refuted the suspicion.
    AliveAgain(Member),
    /// A member was declared failed (or replaced by a newer incarnation of its name).
    Down(Member),
    /// A member left gracefully.
    Left(Member),
    /// This node was declared down by the cluster and rejoined under a new incarnation.
    Renewed {
        /// The id it had.
        previous: NodeId,
        /// The id it has now.
        current: NodeId,
    },
}

impl MembershipEvent {
    /// The member the event is about (`None` for [`MembershipEvent::Renewed`]).
    pub fn member(&self) -> Option<&Member> {
        match self {
            Self::Joined(m)
            | Self::Suspect(m)
            | Self::AliveAgain(m)
            | Self::Down(m)
            | Self::Left(m) => Some(m),
            Self::Renewed { .. } => None,
        }
    }
}

/// The state of one foca member, reduced to what the tracker needs.
pub(crate) struct Observed<'a> {
    pub(crate) ident: &'a MemberIdentity,
    pub(crate) active: bool,
    pub(crate) suspect: bool,
}

/// Keeps the view and derives events from successive foca member lists.
#[derive(Debug)]
pub(crate) struct ViewTracker {
    local: Member,
    live: BTreeMap<String, Member>,
    removed: VecDeque<Member>,
    retention: Duration,
    highest: BTreeMap<String, u64>,
    left: BTreeSet<NodeId>,
    left_order: VecDeque<NodeId>,
    epoch: u64,
    fingerprint: u64,
    events: VecDeque<MembershipEvent>,
}

impl ViewTracker {
    pub(crate) fn new(local: &MemberIdentity, retention: Duration, wall: SystemTime) -> Self {
        let local = Member::from_identity(local, MemberState::Up, wall);
        let mut t = Self {
            local,
            live: BTreeMap::new(),
            removed: VecDeque::new(),
            retention,
            highest: BTreeMap::new(),
            left: BTreeSet::new(),
            left_order: VecDeque::new(),
            epoch: 1,
            fingerprint: 0,
            events: VecDeque::new(),
        };
        t.fingerprint = t.compute_fingerprint();
        t
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn pop_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// Remembers that `id` announced its graceful departure.
    pub(crate) fn mark_left(&mut self, id: NodeId) {
        if self.left.insert(id.clone()) {
            self.left_order.push_back(id);
            if self.left_order.len() > MAX_LEFT
                && let Some(old) = self.left_order.pop_front()
            {
                self.left.remove(&old);
            }
        }
    }

    /// Records the newest incarnation seen for a name. Returns false if `id` is older than
    /// one already seen (a stale incarnation that must not come back).
    pub(crate) fn note_incarnation(&mut self, id: &NodeId) -> bool {
        if let Some(h) = self.highest.get_mut(id.name()) {
            if id.incarnation() < *h {
                return false;
            }
            *h = id.incarnation();
            return true;
        }
        if self.highest.len() >= MAX_NAMES {
            // Forget names that are not live; if every name is live the map may exceed
            // the bound by the live set, which is bounded by the cluster itself.
            let live = &self.live;
            self.highest.retain(|name, _| live.contains_key(name));
        }
        self.highest.insert(id.name().to_owned(), id.incarnation());
        true
    }

    /// The local identity changed (renewal after being declared down).
    pub(crate) fn renew_local(&mut self, ident: &MemberIdentity, wall: SystemTime) {
        let previous = self.local.id.clone();
        self.local = Member::from_identity(ident, MemberState::Up, wall);
        self.note_incarnation(&ident.id);
        self.events.push_back(MembershipEvent::Renewed {
            previous,
            current: ident.id.clone(),
        });
        self.bump();
    }

    /// Diffs foca's member list against the view. Returns identities foca still holds
    /// active although a newer incarnation of their name was seen: the caller declares
    /// them down.
    pub(crate) fn sync<'a>(
        &mut self,
        observed: impl Iterator<Item = Observed<'a>>,
        wall: SystemTime,
    ) -> Vec<MemberIdentity> {
        let mut stale = Vec::new();
        let mut now: BTreeMap<String, Observed<'a>> = BTreeMap::new();
        for o in observed {
            if o.ident.id.name() == self.local.id.name() {
                continue;
            }
            if !self.note_incarnation(&o.ident.id) {
                if o.active {
                    stale.push(o.ident.clone());
                }
                continue;
            }
            now.insert(o.ident.id.name().to_owned(), o);
        }

        let mut changed = false;
        let names: Vec<String> = self.live.keys().cloned().collect();
        for name in names {
            let still = now
                .get(&name)
                .filter(|o| o.active && self.live.get(&name).is_some_and(|m| m.id == o.ident.id));
            match still {
                Some(o) => {
                    let Some(m) = self.live.get_mut(&name) else {
                        continue;
                    };
                    let want = if o.suspect {
                        MemberState::Suspect
                    } else {
                        MemberState::Up
                    };
                    if m.state != want {
                        m.state = want;
                        m.since = wall;
                        let ev = if o.suspect {
                            MembershipEvent::Suspect(m.clone())
                        } else {
                            MembershipEvent::AliveAgain(m.clone())
                        };
                        self.events.push_back(ev);
                    }
                }
                None => {
                    if let Some(mut m) = self.live.remove(&name) {
                        m.state = if self.left.contains(&m.id) {
                            MemberState::Left
                        } else {
                            MemberState::Down
                        };
                        m.since = wall;
                        self.events.push_back(if m.state == MemberState::Left {
                            MembershipEvent::Left(m.clone())
                        } else {
                            MembershipEvent::Down(m.clone())
                        });
                        self.push_removed(m);
                        changed = true;
                    }
                }
            }
        }

        for (name, o) in &now {
            if o.active && !self.live.contains_key(name) {
                let state = if o.suspect {
                    MemberState::Suspect
                } else {
                    MemberState::Up
                };
                let m = Member::from_identity(o.ident, state, wall);
                self.events.push_back(MembershipEvent::Joined(m.clone()));
                self.live.insert(name.clone(), m);
                changed = true;
            }
        }

        if changed {
            self.bump();
        }
        self.prune_removed(wall);
        stale
    }

    fn bump(&mut self) {
        self.epoch += 1;
        self.fingerprint = self.compute_fingerprint();
    }

    fn push_removed(&mut self, m: Member) {
        self.removed.push_back(m);
        while self.removed.len() > MAX_REMOVED {
            self.removed.pop_front();
        }
    }

    fn prune_removed(&mut self, wall: SystemTime) {
        while let Some(front) = self.removed.front() {
            let expired = wall
                .duration_since(front.since)
                .is_ok_and(|age| age > self.retention);
            if !expired {
                break;
            }
            self.removed.pop_front();
        }
    }

    fn compute_fingerprint(&self) -> u64 {
        let mut ids: Vec<&NodeId> = self.live.values().map(|m| &m.id).collect();
        ids.push(&self.local.id);
        ids.sort();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for id in ids {
            eat(id.name().as_bytes());
            eat(&[0]);
            eat(&id.incarnation().to_be_bytes());
        }
        h
    }

    pub(crate) fn snapshot(&self) -> MembershipView {
        let mut members: Vec<Member> = self.live.values().cloned().collect();
        members.push(self.local.clone());
        members.sort_by(|a, b| a.id.cmp(&b.id));
        MembershipView {
            local: self.local.id.clone(),
            members,
            removed: self.removed.iter().cloned().collect(),
            epoch: self.epoch,
            fingerprint: self.fingerprint,
        }
    }
}
