//! `forward-client`: a non-member process with a client certificate that asks `sink`
//! actors owned by node C over cortex-transport, open-loop, twice: straight to C (one hop)
//! and through node B, which is not the owner and forwards to C (two hops: client -> B ->
//! C -> B -> client). B's `cortex_messages_forwarded_total` is read before and after, to
//! show that every request of the second run was really forwarded.
//!
//! Flags: `--bench-certs DIR --bench-name CLIENT` (a client certificate from the cluster
//! CA), `--bench-via NAME,QUIC,HTTP` (B), `--bench-owner NAME,QUIC,HTTP` (C),
//! `--bench-rate`, `--bench-secs`, `--bench-actors`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{
    ActorId, Ask, Envelope, MessageName, PeerIdentity, ReplyResult, RequestId, RequestMeta, Target,
};
use cortex_runtime::Codec;
use cortex_transport::{Connection, Endpoint, EndpointConfig, Handler, Responder, TlsMaterial};
use serde_json::json;

use crate::host::DriverOpts;
use crate::kinds::Echo;
use crate::pacer::Pacing;
use crate::stats::emit;

struct Peer {
    name: String,
    quic: SocketAddr,
    http: SocketAddr,
}

fn peer(o: &DriverOpts, key: &str) -> Result<Peer, String> {
    let v = o
        .text(key)
        .ok_or_else(|| format!("--bench-{key}=NAME,QUIC,HTTP is required"))?;
    let parts: Vec<&str> = v.split(',').collect();
    let [name, quic, http] = parts[..] else {
        return Err(format!(
            "--bench-{key}={v}: expected NAME,QUIC_ADDR,HTTP_ADDR"
        ));
    };
    let addr = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| format!("--bench-{key}: {s}: {e}"))
    };
    Ok(Peer {
        name: name.to_owned(),
        quic: addr(quic)?,
        http: addr(http)?,
    })
}

/// `GET path` on an admin endpoint; the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {head}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!(
            "GET {path}: chunked answers are not supported here"
        ));
    }
    Ok(body.to_owned())
}

fn forwarded_total(http: SocketAddr) -> Result<u64, String> {
    let text = http_get(http, "/metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("cortex_messages_forwarded_total") && l.contains("sink"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// Ids of kind `sink` that `via` says `owner` owns.
fn owned_ids(via: &Peer, owner: &str, count: usize) -> Result<Vec<ActorId>, String> {
    let mut out = Vec::new();
    for i in 0..count * 20 {
        let id = format!("sink/b{i}");
        let body = http_get(via.http, &format!("/cluster/ring?id={id}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let o = v["owner"].as_str().unwrap_or_default();
        if o.split('#').next() == Some(owner) {
            out.push(id.parse().map_err(|e| format!("{e}"))?);
            if out.len() == count {
                return Ok(out);
            }
        }
    }
    Err(format!("found only {} ids owned by {owner}", out.len()))
}

struct Ignore;
impl Handler for Ignore {
    fn on_envelope(&self, _: &Connection, _: Envelope) {}
    fn on_ask(&self, _: &Connection, _: Ask, reply: Responder) {
        reply.send(ReplyResult::Err(cortex_protocol::RemoteError {
            code: cortex_protocol::ErrorCode::Rejected,
            detail: "this bench client serves nothing".into(),
        }));
    }
}

/// `forward-client`.
pub(crate) fn main(o: &DriverOpts) -> Result<(), String> {
    let dir = Path::new(o.text("certs").ok_or("--bench-certs=DIR is required")?);
    let name = o.text("name").unwrap_or("bench-client");
    let tls = TlsMaterial::load(
        &dir.join("ca.crt"),
        &dir.join(format!("{name}.crt")),
        &dir.join(format!("{name}.key")),
    )
    .map_err(|e| e.to_string())?;
    let via = peer(o, "via")?;
    let owner = peer(o, "owner")?;
    let rate: u64 = o.get("rate", 10_000)?;
    let secs: u64 = o.get("secs", 10)?;
    let pacing: Pacing = o.get("pacing", Pacing::Burst)?;
    let actors: usize = o.get("actors", 200)?;
    let udp_buffer: usize = o.get("udp-buffer", cortex_transport::DEFAULT_UDP_BUFFER)?;
    let cluster = o.text("cluster").unwrap_or("bench").to_owned();
    let ids = Arc::new(owned_ids(&via, &owner.name, actors)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let before = forwarded_total(via.http)?;
    let (direct, forwarded) = rt.block_on(async {
        let mut cfg = EndpointConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            tls,
            PeerIdentity::Client {
                name: name.to_owned(),
            },
            cluster,
        );
        cfg.udp_buffer = udp_buffer;
        let ep = Endpoint::bind(cfg, Arc::new(Ignore)).map_err(|e| e.to_string())?;
        let to_owner = ep
            .connect(owner.quic, &owner.name)
            .await
            .map_err(|e| format!("connecting to {}: {e}", owner.name))?;
        let to_via = ep
            .connect(via.quic, &via.name)
            .await
            .map_err(|e| format!("connecting to {}: {e}", via.name))?;
        let direct = measure(&to_owner, &ids, rate, secs, pacing).await?;
        let forwarded = measure(&to_via, &ids, rate, secs, pacing).await?;
        ep.close().await;
        Ok::<_, String>((direct, forwarded))
    })?;
    let after = forwarded_total(via.http)?;
    emit(
        "forward",
        json!({
            "via": via.name,
            "owner": owner.name,
            "direct": direct,
            "forwarded": forwarded,
            "forwarded_by_via": after - before,
        }),
    );
    Ok(())
}

async fn measure(
    conn: &Connection,
    ids: &Arc<Vec<ActorId>>,
    rate: u64,
    secs: u64,
    pacing: Pacing,
) -> Result<serde_json::Value, String> {
    let payload: Bytes =
        cortex_runtime::encode_with(&Echo(crate::kinds::Payload(vec![7u8; 64])), Codec::Bincode)
            .map(Bytes::from)
            .unwrap_or_default();
    // A valid literal name: the check cannot fail.
    let message = MessageName::new("bench.Echo").ok();
    let timeout = Duration::from_secs(5);
    let load = crate::openloop::Load {
        rate,
        warm: Duration::from_secs(1),
        secs: Duration::from_secs(secs),
        max_inflight: 50_000,
        drain: Duration::from_secs(10),
        issue: crate::openloop::Issue::Tasks,
        pacing,
    };
    let ol = crate::openloop::run(load, |i| {
        let conn = conn.clone();
        let id = ids[i as usize % ids.len()].clone();
        let payload = payload.clone();
        let message = message.clone();
        async move {
            let message = message.ok_or("bad message name")?;
            let ask = Ask {
                request: RequestId(0),
                target: Target::Virtual(id),
                message,
                payload,
                meta: RequestMeta {
                    budget_us: timeout.as_micros() as u64,
                    trace: Default::default(),
                },
                epoch: 0,
                idempotency_key: None,
            };
            match conn.ask(ask, timeout).await {
                Ok(ReplyResult::Ok { .. }) => Ok(()),
                Ok(ReplyResult::Err(e)) => Err(format!("{:?}", e.code)),
                Err(e) => Err(format!("transport: {e}")),
            }
        }
    })
    .await?;
    Ok(ol.json(rate))
}
