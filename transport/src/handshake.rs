//! The protocol handshake on the first bidirectional stream of a connection.
//!
//! The dialer sends `Hello`; the acceptor checks versions, the cluster name and who the
//! dialer is (its certificate's names, or a token for certificate-less clients), then
//! answers `Welcome` or an `ErrorFrame` and closes the connection.

use std::net::SocketAddr;
use std::time::Duration;

use cortex_protocol::{
    Envelope, ErrorCode, ErrorFrame, Frame, FrameDecoder, Hello, NodeId, PeerIdentity,
    VersionRange, Welcome, encode,
};
use quinn::{RecvStream, SendStream};

use crate::config::EndpointConfig;
use crate::error::{TransportError, from_connection_error};
use crate::tls;

/// Largest handshake frame accepted.
const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// QUIC application close codes used by the transport.
pub(crate) mod code {
    use quinn::VarInt;
    /// Normal close by the application.
    pub(crate) const NORMAL: VarInt = VarInt::from_u32(0);
    /// The peer broke the protocol.
    pub(crate) const PROTOCOL_VIOLATION: VarInt = VarInt::from_u32(1);
    /// The handshake was refused.
    pub(crate) const REFUSED: VarInt = VarInt::from_u32(2);
    /// A duplicate connection lost the simultaneous-dial tie-break.
    pub(crate) const DUPLICATE: VarInt = VarInt::from_u32(3);
    /// A newer incarnation of the peer replaced this connection, or the peer is stale.
    pub(crate) const SUPERSEDED: VarInt = VarInt::from_u32(4);
    /// The endpoint is shutting down.
    pub(crate) const SHUTDOWN: VarInt = VarInt::from_u32(5);
}

/// What the handshake agreed on.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    pub(crate) version: u8,
    pub(crate) features: u64,
    pub(crate) peer: PeerIdentity,
}

fn stream_err(
    peer: SocketAddr,
    e: impl std::fmt::Display,
    conn: &quinn::Connection,
) -> TransportError {
    // A stream error caused by the connection closing carries the real cause (often a TLS
    // alert sent after the client considered its side of the handshake complete).
    match conn.close_reason() {
        Some(c) => from_connection_error(peer, &c),
        None => TransportError::Protocol {
            peer,
            reason: format!("handshake stream failed: {e}"),
        },
    }
}

async fn write_env(
    send: &mut SendStream,
    env: &Envelope,
    peer: SocketAddr,
    conn: &quinn::Connection,
) -> Result<(), TransportError> {
    let mut buf = Vec::new();
    encode(env, &mut buf).map_err(|e| TransportError::Encode {
        peer: peer.to_string(),
        reason: e.to_string(),
    })?;
    send.write_all(&buf)
        .await
        .map_err(|e| stream_err(peer, e, conn))
}

async fn read_env(
    recv: &mut RecvStream,
    peer: SocketAddr,
    conn: &quinn::Connection,
) -> Result<Envelope, TransportError> {
    let dec = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
    let mut head = [0u8; 4];
    recv.read_exact(&mut head)
        .await
        .map_err(|e| stream_err(peer, e, conn))?;
    let total = dec
        .frame_len(&head)
        .map_err(|e| TransportError::Protocol {
            peer,
            reason: e.to_string(),
        })?
        .unwrap_or(4);
    let mut buf = vec![0u8; total];
    buf[..4].copy_from_slice(&head);
    recv.read_exact(&mut buf[4..])
        .await
        .map_err(|e| stream_err(peer, e, conn))?;
    match dec.decode(&buf) {
        Ok(Some((Frame::Single(env), _))) => Ok(env),
        Ok(_) => Err(TransportError::Protocol {
            peer,
            reason: "expected a single handshake frame".into(),
        }),
        Err(e) => Err(TransportError::Protocol {
            peer,
            reason: e.to_string(),
        }),
    }
}

/// Runs the dialer's side. On success returns what was agreed and the acceptor's node id.
pub(crate) async fn dial(
    conn: &quinn::Connection,
    cfg: &EndpointConfig,
) -> Result<(Negotiated, NodeId), TransportError> {
    let peer = conn.remote_address();
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| from_connection_error(peer, &e))?;
    let hello = Hello {
        versions: cfg.hello_versions,
        cluster: cfg.cluster.clone(),
        identity: cfg.identity.clone(),
        features: cfg.features,
        token: cfg.token.clone(),
    };
    write_env(&mut send, &Envelope::Hello(hello), peer, conn).await?;
    // The stream carries nothing after the Hello; finishing only fails if it is reset.
    let _ = send.finish();
    match read_env(&mut recv, peer, conn).await? {
        Envelope::Welcome(w) => {
            if w.version < cfg.hello_versions.min || w.version > cfg.hello_versions.max {
                return Err(TransportError::Protocol {
                    peer,
                    reason: format!("peer chose version {} which we did not offer", w.version),
                });
            }
            check_node_name(conn, w.node.name(), peer)?;
            Ok((
                Negotiated {
                    version: w.version,
                    features: w.features & cfg.features,
                    peer: PeerIdentity::Node(w.node.clone()),
                },
                w.node,
            ))
        }
        Envelope::Error(e) => Err(match (e.code, e.supported) {
            (ErrorCode::VersionMismatch, Some(theirs)) => TransportError::VersionMismatch {
                peer,
                ours: cfg.hello_versions,
                theirs,
            },
            (code, _) => TransportError::Refused {
                peer,
                code,
                detail: e.detail,
            },
        }),
        other => Err(TransportError::Protocol {
            peer,
            reason: format!("expected Welcome, got {}", kind_name(&other)),
        }),
    }
}

fn kind_name(env: &Envelope) -> &'static str {
    match env {
        Envelope::Hello(_) => "Hello",
        Envelope::Welcome(_) => "Welcome",
        Envelope::Error(_) => "Error",
        _ => "a non-handshake envelope",
    }
}

/// Checks that a claimed node name is in the peer's certificate.
fn check_node_name(
    conn: &quinn::Connection,
    name: &str,
    peer: SocketAddr,
) -> Result<(), TransportError> {
    let names = match tls::peer_cert(conn) {
        Some(der) => tls::cert_names(&der).map_err(|e| TransportError::Protocol {
            peer,
            reason: format!("unreadable certificate: {e}"),
        })?,
        None => Vec::new(),
    };
    if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        Ok(())
    } else {
        Err(TransportError::IdentityMismatch {
            peer,
            claimed: name.to_string(),
            names,
        })
    }
}

fn token_ok(accepted: &[String], token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    // Compare every accepted token in full so timing reveals nothing about a near miss.
    accepted.iter().fold(false, |found, t| {
        let same = t.len() == token.len()
            && t.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        found | same
    })
}

/// Why the acceptor refuses a Hello.
fn refusal(code: ErrorCode, detail: String, supported: Option<VersionRange>) -> ErrorFrame {
    ErrorFrame {
        code,
        detail,
        supported,
    }
}

/// Decides whether to accept `hello` from a connection that did (or did not) present a
/// certificate. Pure, so the rules are tested without a network.
fn judge(
    cfg: &EndpointConfig,
    hello: &Hello,
    cert_names: Option<&[String]>,
) -> Result<Negotiated, ErrorFrame> {
    let Some(version) = cfg.hello_versions.negotiate(&hello.versions) else {
        let (o, t) = (cfg.hello_versions, hello.versions);
        return Err(refusal(
            ErrorCode::VersionMismatch,
            format!(
                "no common protocol version: we speak {}..={}, you speak {}..={}",
                o.min, o.max, t.min, t.max
            ),
            Some(cfg.hello_versions),
        ));
    };
    if hello.cluster != cfg.cluster {
        return Err(refusal(
            ErrorCode::Unauthorized,
            format!(
                "cluster name '{}' does not match '{}'",
                hello.cluster, cfg.cluster
            ),
            None,
        ));
    }
    match (cert_names, &hello.identity) {
        (Some(names), PeerIdentity::Node(id)) => {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(id.name())) {
                return Err(refusal(
                    ErrorCode::Unauthorized,
                    format!(
                        "node name '{}' is not in your certificate (it names {names:?})",
                        id.name()
                    ),
                    None,
                ));
            }
        }
        (Some(_), PeerIdentity::Client { .. }) => {}
        (None, PeerIdentity::Node(id)) => {
            return Err(refusal(
                ErrorCode::Unauthorized,
                format!(
                    "node '{}' presented no certificate; nodes need one",
                    id.name()
                ),
                None,
            ));
        }
        (None, PeerIdentity::Client { .. }) => {
            if !token_ok(&cfg.accepted_tokens, hello.token.as_deref()) {
                let detail = if hello.token.is_some() {
                    "the token is not accepted by this node"
                } else {
                    "no client certificate and no token; present one of them"
                };
                return Err(refusal(ErrorCode::Unauthorized, detail.into(), None));
            }
        }
    }
    Ok(Negotiated {
        version,
        features: hello.features & cfg.features,
        peer: hello.identity.clone(),
    })
}

/// Runs the acceptor's side. On refusal the error frame is delivered and the connection
/// closed before returning the error.
pub(crate) async fn accept(
    conn: &quinn::Connection,
    cfg: &EndpointConfig,
    me: &NodeId,
) -> Result<Negotiated, TransportError> {
    let peer = conn.remote_address();
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| from_connection_error(peer, &e))?;
    let hello = match read_env(&mut recv, peer, conn).await? {
        Envelope::Hello(h) => h,
        other => {
            let reason = format!("expected Hello, got {}", kind_name(&other));
            conn.close(code::PROTOCOL_VIOLATION, reason.as_bytes());
            return Err(TransportError::Protocol { peer, reason });
        }
    };
    let names = match tls::peer_cert(conn) {
        Some(der) => Some(tls::cert_names(&der).map_err(|e| TransportError::Protocol {
            peer,
            reason: format!("unreadable certificate: {e}"),
        })?),
        None => None,
    };
    match judge(cfg, &hello, names.as_deref()) {
        Ok(n) => {
            let welcome = Welcome {
                version: n.version,
                node: me.clone(),
                features: n.features,
            };
            write_env(&mut send, &Envelope::Welcome(welcome), peer, conn).await?;
            let _ = send.finish();
            Ok(n)
        }
        Err(frame) => {
            let err = TransportError::Refused {
                peer,
                code: frame.code,
                detail: frame.detail.clone(),
            };
            let _ = write_env(&mut send, &Envelope::Error(frame), peer, conn).await;
            let _ = send.finish();
            // Wait (briefly) until the dialer has the error frame, so the close that follows
            // cannot overtake it.
            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
            conn.close(code::REFUSED, b"handshake refused");
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TlsMaterial;

    fn cfg(tokens: &[&str]) -> EndpointConfig {
        let mut c = EndpointConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            TlsMaterial::ca_only(String::new()),
            PeerIdentity::Node(NodeId::new("me", 1).unwrap()),
            "prod",
        );
        c.accepted_tokens = tokens.iter().map(|s| s.to_string()).collect();
        c
    }

    fn hello(cluster: &str, identity: PeerIdentity, token: Option<&str>) -> Hello {
        Hello {
            versions: cortex_protocol::SUPPORTED_VERSIONS,
            cluster: cluster.into(),
            identity,
            features: 1,
            token: token.map(String::from),
        }
    }

    #[test]
    fn rules() {
        let node = PeerIdentity::Node(NodeId::new("n2", 3).unwrap());
        let client = PeerIdentity::Client { name: "c".into() };
        let names = vec!["n2".to_string(), "localhost".to_string()];
        let c = cfg(&["s3cret"]);
        assert!(judge(&c, &hello("prod", node.clone(), None), Some(&names)).is_ok());
        let e = judge(&c, &hello("dev", node.clone(), None), Some(&names)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert_eq!(e.detail, "cluster name 'dev' does not match 'prod'");
        let other = vec!["n9".to_string()];
        assert!(judge(&c, &hello("prod", node.clone(), None), Some(&other)).is_err());
        assert!(judge(&c, &hello("prod", node, Some("s3cret")), None).is_err());
        assert!(judge(&c, &hello("prod", client.clone(), Some("s3cret")), None).is_ok());
        assert!(judge(&c, &hello("prod", client.clone(), Some("s3cre")), None).is_err());
        assert!(judge(&c, &hello("prod", client.clone(), None), None).is_err());
        assert!(judge(&cfg(&[]), &hello("prod", client, Some("")), None).is_err());
        let mut h = hello("prod", PeerIdentity::Client { name: "c".into() }, None);
        h.versions = VersionRange { min: 2, max: 3 };
        let e = judge(&c, &h, Some(&names)).unwrap_err();
        assert_eq!(e.code, ErrorCode::VersionMismatch);
        assert_eq!(e.supported, Some(VersionRange { min: 1, max: 1 }));
    }
}
