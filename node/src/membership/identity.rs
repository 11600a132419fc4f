//! The identity every member gossips: who it is, where its gossip socket is, and its metadata.
//!
//! foca keeps one member per [`foca::Identity::addr`]; here that address is a digest of the
//! node *name*, so a restarted process (same name, higher incarnation) replaces its previous
//! incarnation instead of living beside it, and an older incarnation can never win back.

use std::net::SocketAddr;

use cortex_protocol::{NodeId, VersionRange};
use serde::{Deserialize, Serialize};

/// Most roles a member may carry (keeps the identity, sent in every datagram header, small).
pub const MAX_ROLES: usize = 16;
/// Longest role label in bytes.
pub const MAX_ROLE_LEN: usize = 32;

/// What a member tells the cluster about itself besides its id and gossip address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberMeta {
    /// Where peers reach it over QUIC (node-to-node and client traffic).
    pub quic_addr: SocketAddr,
    /// Its HTTP endpoint (health, metrics, gateway).
    pub http_addr: SocketAddr,
    /// Free-form labels, for example `gateway` or `wasm`.
    pub roles: Vec<String>,
    /// Protocol versions it speaks.
    pub versions: VersionRange,
    /// Incarnation of the running process: the one in its QUIC identity. A member declared
    /// down by mistake rejoins under a renewed gossip incarnation (foca needs a new identity)
    /// while its process, and so its certificate-checked QUIC identity, stays the same;
    /// peers dial `name#process`.
    pub process: u64,
}

impl MemberMeta {
    /// Checks the limits that keep an identity small enough for one datagram.
    ///
    /// # Errors
    /// A sentence naming the offending role and the limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.roles.len() > MAX_ROLES {
            return Err(format!(
                "{} roles given; at most {MAX_ROLES} are allowed: drop some roles",
                self.roles.len()
            ));
        }
        for role in &self.roles {
            if role.is_empty() || role.len() > MAX_ROLE_LEN || !role.chars().all(role_char) {
                return Err(format!(
                    "role {role:?} must be 1 to {MAX_ROLE_LEN} of ASCII letters, digits, '-', '_', '.'"
                ));
            }
        }
        if self.versions.min > self.versions.max {
            return Err(format!(
                "version range {}..={} is empty: min must not exceed max",
                self.versions.min, self.versions.max
            ));
        }
        Ok(())
    }
}

fn role_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A member as foca sees it: node id, gossip address and metadata.
///
/// Two identities with the same node name are the same *slot*; the one with the higher
/// incarnation wins ([`foca::Identity::win_addr_conflict`]), so a node restarted under the
/// same name replaces its previous incarnation everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberIdentity {
    /// Name + incarnation.
    pub id: NodeId,
    /// Where its SWIM socket listens (as advertised).
    pub gossip_addr: SocketAddr,
    /// QUIC and HTTP addresses, roles, versions.
    pub meta: MemberMeta,
}

/// foca's per-slot address: a stable 64-bit digest of the node name.
///
/// A digest rather than the name itself because foca compares addresses on every update it
/// applies; FNV-1a is fixed by its specification, so every build and every process agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(pub u64);

impl NameKey {
    /// The key of a node name.
    pub fn of(name: &str) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        Self(h)
    }
}

impl MemberIdentity {
    /// Deterministic total order used to break conflicts between two identities of one name.
    fn rank(&self) -> impl Ord + '_ {
        (
            self.id.incarnation(),
            self.gossip_addr,
            self.meta.quic_addr,
            self.meta.http_addr,
            &self.meta.roles,
            (self.meta.versions.min, self.meta.versions.max),
        )
    }
}

impl foca::Identity for MemberIdentity {
    type Addr = NameKey;

    /// A member declared down comes back as a *new* member: same name, next incarnation.
    fn renew(&self) -> Option<Self> {
        let next = self.id.incarnation().checked_add(1)?;
        // The name was valid in `self.id`, so rebuilding with it cannot fail.
        let id = NodeId::new(self.id.name(), next).ok()?;
        Some(Self {
            id,
            gossip_addr: self.gossip_addr,
            meta: self.meta.clone(),
        })
    }

    fn addr(&self) -> NameKey {
        NameKey::of(self.id.name())
    }

    /// The higher incarnation wins; equal incarnations fall back to a fixed order of the
    /// remaining fields so that every member picks the same winner.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.rank() > adversary.rank()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    pub(crate) fn ident(name: &str, inc: u64) -> MemberIdentity {
        MemberIdentity {
            id: NodeId::new(name, inc).unwrap(),
            gossip_addr: "127.0.0.1:7401".parse().unwrap(),
            meta: MemberMeta {
                quic_addr: "127.0.0.1:7400".parse().unwrap(),
                http_addr: "127.0.0.1:7480".parse().unwrap(),
                roles: vec![],
                versions: VersionRange { min: 1, max: 1 },
                process: inc,
            },
        }
    }

    #[test]
    fn newer_incarnation_wins_and_renew_bumps() {
        let a = ident("n", 5);
        let b = a.renew().unwrap();
        assert_eq!(b.id.incarnation(), 6);
        assert_eq!(a.addr(), b.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_ne!(NameKey::of("n"), NameKey::of("m"));
    }

    #[test]
    fn meta_limits() {
        let mut m = ident("n", 1).meta;
        assert!(m.validate().is_ok());
        m.roles = vec!["bad role".into()];
        assert!(m.validate().is_err());
        m.roles = vec!["r".into(); MAX_ROLES + 1];
        assert!(m.validate().is_err());
    }
}
