//! `GET /cluster/members` as the harness reads it, and the agreement check between views.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::Deserialize;

/// A member's state as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MemberState {
    /// Known, not yet in the ring.
    Joining,
    /// Alive.
    Alive,
    /// Missed probes.
    Suspect,
    /// Leaving gracefully.
    Leaving,
    /// Declared down by the failure detector.
    Down,
    /// Left gracefully.
    Left,
    /// A state this harness does not know (a newer node).
    #[serde(other)]
    Unknown,
}

/// One entry of `GET /cluster/members`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Incarnation of that run of the node.
    pub incarnation: u64,
    /// State as seen by the answering node.
    pub state: MemberState,
    /// True for the answering node itself.
    #[serde(default)]
    pub local: bool,
    /// Advertised QUIC address.
    pub quic: SocketAddr,
    /// Advertised gossip address.
    pub gossip: SocketAddr,
    /// Advertised HTTP address.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// When it entered its state, as observed by the answering node (ms since the epoch).
    #[serde(default)]
    pub since_unix_ms: u64,
}

impl Member {
    /// `name#incarnation`.
    pub fn id(&self) -> String {
        format!("{}#{}", self.name, self.incarnation)
    }
}

/// Checks that every view lists exactly `expected` (names) as alive, and that all views
/// agree on the incarnation of each. `Err` describes the first disagreement.
///
/// # Errors
/// A description of what differs, for [`crate::poll_until`].
pub fn views_agree(views: &[(String, Vec<Member>)], expected: &[&str]) -> Result<(), String> {
    let want: BTreeSet<&str> = expected.iter().copied().collect();
    let mut first: Option<(&str, BTreeSet<String>)> = None;
    for (node, members) in views {
        let alive: BTreeSet<&str> = members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.name.as_str())
            .collect();
        if alive != want {
            return Err(format!("{node} sees alive {alive:?}, want {want:?}"));
        }
        let ids: BTreeSet<String> = members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(Member::id)
            .collect();
        match &first {
            None => first = Some((node, ids)),
            Some((n0, ids0)) if *ids0 != ids => {
                return Err(format!("{n0} sees {ids0:?} but {node} sees {ids:?}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Vec<Member> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_the_node_json_and_compares_views() {
        let a = parse(
            r#"[{"name":"n0","incarnation":5,"state":"alive","local":true,"quic":"127.0.0.1:1","gossip":"127.0.0.1:2","http":"127.0.0.1:3","roles":[],"since":"x","since_unix_ms":7},
                {"name":"n1","incarnation":6,"state":"alive","local":false,"quic":"127.0.0.1:4","gossip":"127.0.0.1:5","http":null,"roles":["r"],"since":"x","since_unix_ms":8},
                {"name":"n2","incarnation":1,"state":"weird","quic":"127.0.0.1:4","gossip":"127.0.0.1:5"}]"#,
        );
        assert_eq!(a[2].state, MemberState::Unknown);
        assert_eq!(a[1].id(), "n1#6");
        let mut b = a.clone();
        views_agree(
            &[("a".into(), a.clone()), ("b".into(), b.clone())],
            &["n0", "n1"],
        )
        .unwrap();
        b[1].incarnation = 9;
        let e = views_agree(&[("a".into(), a.clone()), ("b".into(), b)], &["n0", "n1"]);
        assert!(e.unwrap_err().contains("n1#9"));
        assert!(views_agree(&[("a".into(), a)], &["n0"]).is_err());
    }
}
