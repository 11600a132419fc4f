//! The client's view of the cluster: the latest [`TopologySnapshot`] any node sent, and the
//! placement ring built from it with the node's own function ([`Ring`]), so the client
//! computes the same owner as the nodes and sends each request straight there.

use std::sync::Arc;

use cortex_protocol::{ActorId, MemberInfo, MemberState, NodeId, Ring, TopologySnapshot};
use tokio::sync::watch;

/// One topology as a node described it, with the ring built from it.
///
/// ```
/// use cortex_client::TopologyView;
/// use cortex_protocol::{MemberInfo, MemberState, NodeId, TopologySnapshot};
/// let member = |name: &str, port: u16| MemberInfo {
///     node: NodeId::new(name, 1).unwrap(),
///     quic_addr: ([127, 0, 0, 1], port).into(),
///     http_addr: ([127, 0, 0, 1], port + 80).into(),
///     state: MemberState::Up,
///     roles: vec![],
/// };
/// let snap = TopologySnapshot { epoch: 3, vnodes: 160, members: vec![member("a", 7400), member("b", 7402)] };
/// let view = TopologyView::new(snap, None);
/// let owner = view.owner(&"order/1".parse().unwrap()).unwrap();
/// assert!(view.member(owner.name()).is_some());
/// ```
#[derive(Debug)]
pub struct TopologyView {
    epoch: u64,
    vnodes: u32,
    members: Vec<MemberInfo>,
    ring: Ring,
    source: Option<NodeId>,
}

impl TopologyView {
    /// Builds the view (and its ring) from a snapshot sent by `source`.
    pub fn new(snapshot: TopologySnapshot, source: Option<NodeId>) -> Self {
        let owners: Vec<NodeId> = snapshot
            .members
            .iter()
            .filter(|m| owns_ids(m.state))
            .map(|m| m.node.clone())
            .collect();
        let ring = Ring::new(owners, snapshot.vnodes);
        let mut members = snapshot.members;
        members.sort_by(|a, b| a.node.cmp(&b.node));
        Self {
            epoch: snapshot.epoch,
            vnodes: snapshot.vnodes,
            members,
            ring,
            source,
        }
    }

    /// The ring epoch of the node that sent it (a local counter of that node: epochs of
    /// different nodes are not comparable).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Virtual nodes per member.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The members, sorted by node id.
    pub fn members(&self) -> &[MemberInfo] {
        &self.members
    }

    /// Members that own ids (up or suspect).
    pub fn owners(&self) -> &[NodeId] {
        self.ring.members()
    }

    /// The member named `name`, if present.
    pub fn member(&self, name: &str) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.node.name() == name)
    }

    /// The owner of `id` in this view.
    pub fn owner(&self, id: &ActorId) -> Option<&NodeId> {
        self.ring.owner(id)
    }

    /// The ring digest (carried as the `epoch` of requests routed under this view).
    pub fn digest(&self) -> u64 {
        self.ring.digest()
    }

    /// The node that sent this view.
    pub fn source(&self) -> Option<&NodeId> {
        self.source.as_ref()
    }
}

fn owns_ids(state: MemberState) -> bool {
    matches!(state, MemberState::Up | MemberState::Suspect)
}

/// The latest view, shared by the connection handler (writer) and callers (readers).
#[derive(Debug)]
pub(crate) struct Topology {
    tx: watch::Sender<Option<Arc<TopologyView>>>,
}

impl Topology {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::channel(None).0,
        }
    }

    pub(crate) fn current(&self) -> Option<Arc<TopologyView>> {
        self.tx.borrow().clone()
    }

    /// The newest snapshot wins, whichever node sent it: every node pushes one on each ring
    /// change, so the last to arrive is the freshest news the client has.
    pub(crate) fn apply(&self, snapshot: TopologySnapshot, source: Option<NodeId>) {
        let view = TopologyView::new(snapshot, source);
        tracing::debug!(
            epoch = view.epoch,
            members = view.owners().len(),
            source = ?view.source,
            "topology updated"
        );
        self.tx.send_replace(Some(Arc::new(view)));
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Option<Arc<TopologyView>>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, state: MemberState) -> MemberInfo {
        MemberInfo {
            node: NodeId::new(name, 1).unwrap(),
            quic_addr: ([127, 0, 0, 1], 1).into(),
            http_addr: ([127, 0, 0, 1], 2).into(),
            state,
            roles: vec![],
        }
    }

    #[test]
    fn same_owner_as_the_nodes_ring() {
        let snap = TopologySnapshot {
            epoch: 5,
            vnodes: 160,
            members: vec![
                info("c", MemberState::Up),
                info("a", MemberState::Suspect),
                info("b", MemberState::Up),
                info("d", MemberState::Down),
            ],
        };
        let view = TopologyView::new(snap, None);
        let ring = Ring::new(
            ["a", "b", "c"]
                .iter()
                .map(|n| NodeId::new(*n, 1).unwrap())
                .collect(),
            160,
        );
        for i in 0..500 {
            let id = ActorId::new("acct", i.to_string()).unwrap();
            assert_eq!(view.owner(&id), ring.owner(&id));
        }
        assert_eq!(view.owners().len(), 3, "down members own nothing");
        assert_eq!(view.members().len(), 4);
        assert_eq!(view.digest(), ring.digest());
    }

    #[test]
    fn latest_snapshot_wins() {
        let t = Topology::new();
        assert!(t.current().is_none());
        let rx = t.watch();
        t.apply(
            TopologySnapshot {
                epoch: 9,
                vnodes: 16,
                members: vec![info("a", MemberState::Up)],
            },
            None,
        );
        t.apply(
            TopologySnapshot {
                epoch: 2,
                vnodes: 16,
                members: vec![info("a", MemberState::Up), info("b", MemberState::Up)],
            },
            None,
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(t.current().unwrap().owners().len(), 2);
    }
}
