//! The JSON shape of one cluster member, as `GET /cluster/members` shows it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::time::rfc3339_millis;

/// Where a member stands, as the local node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MemberState {
    /// Known but not yet part of the ring (still joining or settling).
    Joining,
    /// Alive and owning its share of the ring.
    Alive,
    /// Missed probes; may be declared down soon.
    Suspect,
    /// Leaving gracefully.
    Leaving,
    /// Declared down by the failure detector.
    Down,
    /// Left the cluster.
    Left,
}

/// One member in `GET /cluster/members`. Serialized with both `since` (RFC 3339) and
/// `since_unix_ms`.
///
/// ```
/// use cortex_node::http::{MemberJson, MemberState};
/// let m = MemberJson {
///     name: "n1".into(), incarnation: 7, state: MemberState::Alive, local: true,
///     quic: "10.0.0.1:7400".parse().unwrap(), gossip: "10.0.0.1:7401".parse().unwrap(),
///     http: Some("10.0.0.1:7480".parse().unwrap()), roles: vec!["web".into()],
///     since: std::time::UNIX_EPOCH,
/// };
/// let json = serde_json::to_value(&m).unwrap();
/// assert_eq!(json["state"], "alive");
/// assert_eq!(json["since"], "1970-01-01T00:00:00.000Z");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub struct MemberJson {
    /// Node name.
    pub name: String,
    /// Incarnation of the run the node is in.
    pub incarnation: u64,
    /// State as seen from here.
    pub state: MemberState,
    /// True for the node answering the request.
    pub local: bool,
    /// Advertised QUIC address.
    pub quic: SocketAddr,
    /// Advertised gossip address.
    pub gossip: SocketAddr,
    /// Advertised admin HTTP address, if the member published one.
    pub http: Option<SocketAddr>,
    /// Roles the member offers.
    pub roles: Vec<String>,
    /// When the member entered its current state (as observed locally).
    pub since: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    name: String,
    incarnation: u64,
    state: MemberState,
    #[serde(default)]
    local: bool,
    quic: SocketAddr,
    gossip: SocketAddr,
    #[serde(default)]
    http: Option<SocketAddr>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default, skip_deserializing)]
    since: String,
    since_unix_ms: u64,
}

impl From<MemberJson> for Wire {
    fn from(m: MemberJson) -> Wire {
        Wire {
            since: rfc3339_millis(m.since),
            since_unix_ms: m
                .since
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            name: m.name,
            incarnation: m.incarnation,
            state: m.state,
            local: m.local,
            quic: m.quic,
            gossip: m.gossip,
            http: m.http,
            roles: m.roles,
        }
    }
}

impl From<Wire> for MemberJson {
    fn from(w: Wire) -> MemberJson {
        MemberJson {
            name: w.name,
            incarnation: w.incarnation,
            state: w.state,
            local: w.local,
            quic: w.quic,
            gossip: w.gossip,
            http: w.http,
            roles: w.roles,
            since: UNIX_EPOCH + Duration::from_millis(w.since_unix_ms),
        }
    }
}
