//! Mutual TLS and the protocol handshake between real endpoints on loopback.

mod common;

use common::*;
use cortex_protocol::{ErrorCode, PeerIdentity, VersionRange};
use cortex_transport::TransportError;
use cortex_transport::certs::CertRole;

#[tokio::test]
async fn mutual_tls_handshake_ok() {
    let pki = Pki::new("c");
    let (b, bh) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    assert_eq!(conn.peer(), &PeerIdentity::Node(node_id("b")));
    assert_eq!(conn.version(), 1);
    echo(&conn, b"hi").await;
    eventually(
        "b sees the connection",
        std::time::Duration::from_secs(5),
        || bh.connects.load(std::sync::atomic::Ordering::SeqCst) == 1,
    )
    .await;
    let back = b.cached_connection("a").unwrap();
    assert_eq!(back.peer(), &PeerIdentity::Node(node_id("a")));
    // connection_to reuses the cached connection.
    let again = a.connection_to(&node_id("b"), addr(&b)).await.unwrap();
    assert_eq!(again.id(), conn.id());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn cert_from_another_ca_is_refused_in_tls() {
    let pki = Pki::new("c");
    let other = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    let (x, _) = start(node_cfg(&other, "x", "c"));
    // x's client certificate is not from b's CA.
    let err = x.connect(addr(&b), "b").await.unwrap_err();
    assert!(matches!(err, TransportError::TlsHandshake { .. }), "{err}");
    assert!(
        err.to_string().contains("not signed by the cluster CA"),
        "{err}"
    );
    // b does not trust x's server certificate either.
    let err = b.connect(addr(&x), "x").await.unwrap_err();
    assert!(matches!(err, TransportError::TlsHandshake { .. }), "{err}");
    assert!(
        err.to_string().contains("not signed by the cluster CA"),
        "{err}"
    );
}

#[tokio::test]
async fn certless_client_needs_a_valid_token() {
    let pki = Pki::new("c");
    // Without tokens configured, a client without a certificate fails in TLS.
    let (plain, _) = start(node_cfg(&pki, "plain", "c"));
    let (cli, _) = start(client_cfg(pki.ca_only(), "c"));
    let err = cli.connect(addr(&plain), "plain").await.unwrap_err();
    assert!(matches!(err, TransportError::TlsHandshake { .. }), "{err}");

    let mut cfg = node_cfg(&pki, "tok", "c");
    cfg.accepted_tokens = vec!["s3cret".into()];
    let (tok, _) = start(cfg);
    // No token.
    let err = cli.connect(addr(&tok), "tok").await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Refused {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{err}"
    );
    // Wrong token.
    let mut cfg = client_cfg(pki.ca_only(), "c");
    cfg.token = Some("guess".into());
    let (wrong, _) = start(cfg);
    let err = wrong.connect(addr(&tok), "tok").await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Refused {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{err}"
    );
    // Right token.
    let mut cfg = client_cfg(pki.ca_only(), "c");
    cfg.token = Some("s3cret".into());
    let (good, _) = start(cfg);
    let conn = good.connect(addr(&tok), "tok").await.unwrap();
    echo(&conn, b"token ok").await;
    // A certificate-less peer can never be a node, even with a valid token.
    let mut cfg = client_cfg(pki.ca_only(), "c");
    cfg.token = Some("s3cret".into());
    cfg.identity = PeerIdentity::Node(node_id("mallory"));
    assert!(
        cortex_transport::Endpoint::bind(cfg, std::sync::Arc::new(TestHandler::default())).is_err()
    );
    // A client with a certificate needs no token.
    let (certed, _) = start(client_cfg(pki.material("app", CertRole::Client), "c"));
    let conn = certed.connect(addr(&plain), "plain").await.unwrap();
    echo(&conn, b"cert ok").await;
}

#[tokio::test]
async fn cluster_name_mismatch_is_refused() {
    let pki = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "blue"));
    let (a, _) = start(node_cfg(&pki, "a", "green"));
    let err = a.connect(addr(&b), "b").await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Refused {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{err}"
    );
    let want = format!(
        "peer {} refused: cluster name 'green' does not match 'blue'",
        addr(&b)
    );
    assert_eq!(err.to_string(), want);
}

#[tokio::test]
async fn version_mismatch_names_supported_versions() {
    let pki = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    let mut cfg = node_cfg(&pki, "a", "c");
    cfg.hello_versions = VersionRange { min: 2, max: 3 };
    let (a, _) = start(cfg);
    let err = a.connect(addr(&b), "b").await.unwrap_err();
    match &err {
        TransportError::VersionMismatch { ours, theirs, .. } => {
            assert_eq!(*ours, VersionRange { min: 2, max: 3 });
            assert_eq!(*theirs, VersionRange { min: 1, max: 1 });
        }
        other => panic!("expected VersionMismatch, got {other}"),
    }
    assert!(
        err.to_string()
            .starts_with("no common protocol version: we speak 2..=3"),
        "{err}"
    );
    // The refusing node keeps working.
    let (c, _) = start(node_cfg(&pki, "c", "c"));
    echo(&c.connect(addr(&b), "b").await.unwrap(), b"still up").await;
}

#[tokio::test]
async fn node_name_must_match_its_certificate() {
    let pki = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    // A certificate for "a" used to claim to be "z".
    let mut cfg = node_cfg(&pki, "a", "c");
    cfg.identity = PeerIdentity::Node(node_id("z"));
    let (z, _) = start(cfg);
    let err = z.connect(addr(&b), "b").await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Refused {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("'z' is not in your certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn dial_failures_back_off() {
    let pki = Pki::new("c");
    let mut cfg = node_cfg(&pki, "a", "c");
    cfg.connect_timeout = std::time::Duration::from_millis(300);
    cfg.backoff_initial = std::time::Duration::from_secs(30);
    cfg.backoff_max = std::time::Duration::from_secs(60);
    let (a, _) = start(cfg);
    // Nothing listens there (a bound-then-dropped port).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let first = a.connection_to(&node_id("gone"), dead).await.unwrap_err();
    assert!(!matches!(first, TransportError::Backoff { .. }), "{first}");
    let second = a.connection_to(&node_id("gone"), dead).await.unwrap_err();
    assert!(matches!(second, TransportError::Backoff { .. }), "{second}");
}
