//! Shared test fixtures: a PKI in a tempdir, endpoints on 127.0.0.1:0, a recording handler.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{
    Ask, Envelope, MessageName, NodeId, PeerIdentity, ReplyResult, RequestId, RequestMeta, Target,
    Tell,
};
use cortex_transport::certs::{CertRole, CertifiedKey, generate_ca, issue, write_pem_files};
use cortex_transport::{Connection, Endpoint, EndpointConfig, Handler, Responder, TlsMaterial};
use parking_lot::Mutex;

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: CertifiedKey,
    pub ca_path: std::path::PathBuf,
}

impl Pki {
    pub fn new(cluster: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca(cluster).unwrap();
        let (ca_path, _) = write_pem_files(dir.path(), "ca", &ca).unwrap();
        Self { dir, ca, ca_path }
    }

    /// Issues a certificate, writes it to the tempdir and loads it back like a node would.
    pub fn material(&self, name: &str, role: CertRole) -> TlsMaterial {
        let ck = issue(&self.ca, name, role, &[]).unwrap();
        let (crt, key) = write_pem_files(self.dir.path(), name, &ck).unwrap();
        TlsMaterial::load(&self.ca_path, &crt, &key).unwrap()
    }

    pub fn ca_only(&self) -> TlsMaterial {
        TlsMaterial::load_ca_only(&self.ca_path).unwrap()
    }
}

#[derive(Default)]
pub struct TestHandler {
    pub tells: Mutex<Vec<u64>>,
    pub held: Mutex<Vec<Responder>>,
    pub asks_seen: AtomicUsize,
    pub connects: AtomicUsize,
    pub disconnects: AtomicUsize,
}

impl Handler for TestHandler {
    fn on_connection(&self, _conn: &Connection) {
        self.connects.fetch_add(1, Ordering::SeqCst);
    }
    fn on_envelope(&self, _conn: &Connection, env: Envelope) {
        if let Envelope::Tell(t) = env {
            let seq = u64::from_le_bytes(t.payload[..8].try_into().unwrap());
            self.tells.lock().push(seq);
        }
    }
    fn on_ask(&self, _conn: &Connection, ask: Ask, reply: Responder) {
        self.asks_seen.fetch_add(1, Ordering::SeqCst);
        if ask.message.as_str() == "test.Hold" {
            self.held.lock().push(reply);
        } else if ask.message.as_str() == "test.Later" {
            // Answered from the lane reader's task after a turn of the scheduler.
            reply.send_later(async move {
                tokio::task::yield_now().await;
                ReplyResult::Ok {
                    message: ask.message,
                    payload: ask.payload,
                }
            });
        } else {
            reply.send(ReplyResult::Ok {
                message: ask.message,
                payload: ask.payload,
            });
        }
    }
    fn on_disconnect(&self, _conn: &Connection) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn node_id(name: &str) -> NodeId {
    NodeId::new(name, 1).unwrap()
}

pub fn node_cfg(pki: &Pki, name: &str, cluster: &str) -> EndpointConfig {
    let mut cfg = EndpointConfig::new(
        localhost(),
        pki.material(name, CertRole::Node),
        PeerIdentity::Node(node_id(name)),
        cluster,
    );
    cfg.connect_timeout = Duration::from_secs(10);
    cfg.duplicate_linger = Duration::from_millis(50);
    cfg
}

pub fn client_cfg(tls: TlsMaterial, cluster: &str) -> EndpointConfig {
    let mut cfg = EndpointConfig::new(
        localhost(),
        tls,
        PeerIdentity::Client {
            name: "test-client".into(),
        },
        cluster,
    );
    cfg.connect_timeout = Duration::from_secs(10);
    cfg
}

pub fn start(cfg: EndpointConfig) -> (Endpoint, Arc<TestHandler>) {
    let h = Arc::new(TestHandler::default());
    let ep = Endpoint::bind(cfg, h.clone()).unwrap();
    (ep, h)
}

pub fn addr(ep: &Endpoint) -> SocketAddr {
    ep.local_addr().unwrap()
}

pub fn target() -> Target {
    Target::Virtual("test/1".parse().unwrap())
}

pub fn tell(seq: u64) -> Envelope {
    let mut payload = vec![0u8; 64];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    Envelope::Tell(Tell {
        target: target(),
        message: MessageName::new("test.Tell").unwrap(),
        payload: Bytes::from(payload),
        meta: RequestMeta::default(),
        epoch: 0,
    })
}

pub fn tell_sized(len: usize) -> Envelope {
    Envelope::Tell(Tell {
        target: target(),
        message: MessageName::new("test.Tell").unwrap(),
        payload: Bytes::from(vec![7u8; len]),
        meta: RequestMeta::default(),
        epoch: 0,
    })
}

pub fn ask(message: &str, payload: &[u8]) -> Ask {
    Ask {
        request: RequestId(0),
        target: target(),
        message: MessageName::new(message).unwrap(),
        payload: Bytes::copy_from_slice(payload),
        meta: RequestMeta::default(),
        epoch: 0,
        idempotency_key: None,
    }
}

/// Echo round trip through `conn`.
pub async fn echo(conn: &Connection, payload: &[u8]) {
    let r = conn
        .ask(ask("test.Echo", payload), Duration::from_secs(10))
        .await
        .unwrap();
    assert_echo(r, payload);
}

/// `r` is the echo of `payload`.
pub fn assert_echo(r: ReplyResult, payload: &[u8]) {
    match r {
        ReplyResult::Ok { payload: p, .. } => assert_eq!(&p[..], payload),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Polls `cond` every few milliseconds until it holds or `deadline` passes.
pub async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
