//! The raw quinn baseline, two processes with the cluster's TLS (mutual TLS 1.3, ALPN
//! `cortex/1`, the same rustls configs the transport uses), quinn's default transport
//! settings, and UDP socket buffers as large as the transport's (`--bench-udp-buffer=BYTES`,
//! default [`cortex_transport::DEFAULT_UDP_BUFFER`]; 0: the OS default), so that the two
//! sides of a comparison lose datagrams alike.
//!
//! `raw-server --certs DIR --name NAME` listens on 127.0.0.1 and prints its address. Per
//! connection it counts the 64-byte length-prefixed messages of every unidirectional
//! stream, and serves bidirectional streams whose first byte says what to do: `E` echoes
//! everything back, `R` waits until the unidirectional stream ended and answers the count.
//!
//! `raw-client --certs DIR --name NAME --server-name PEER --addr ADDR` measures, in order:
//! one-way throughput (one unidirectional stream, written 1,024 messages per write: the
//! stream ceiling), closed-loop ping-pong (one message outstanding), and open-loop
//! request/reply at `--rate` per second on one bidirectional stream.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cortex_transport::{TlsMaterial, tls};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::host::DriverOpts;
use crate::pacer::{Pacer, Pacing};
use crate::stats::{emit, summary};

const MSG: usize = 64;
const FRAME: usize = MSG + 4;

fn material(o: &DriverOpts) -> Result<TlsMaterial, String> {
    let dir = Path::new(o.text("certs").ok_or("--bench-certs=DIR is required")?);
    let name = o.text("name").ok_or("--bench-name=NAME is required")?;
    TlsMaterial::load(
        &dir.join("ca.crt"),
        &dir.join(format!("{name}.crt")),
        &dir.join(format!("{name}.key")),
    )
    .map_err(|e| e.to_string())
}

fn runtime(o: &DriverOpts) -> Result<tokio::runtime::Runtime, String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    // `--bench-workers=N`, as the nodes of the pair stage get it.
    if let n @ 1.. = o.get::<usize>("workers", 0)? {
        b.worker_threads(n);
    }
    b.enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A quinn endpoint on 127.0.0.1 whose socket has the transport's buffer sizes.
fn endpoint(
    o: &DriverOpts,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, String> {
    let buffer: usize = o.get("udp-buffer", cortex_transport::DEFAULT_UDP_BUFFER)?;
    let err = |e: std::io::Error| format!("raw quinn socket: {e}");
    let (socket, _) =
        cortex_transport::bind_udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)), buffer)
            .map_err(err)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(err)
}

/// `raw-server`.
pub(crate) fn server_main(o: &DriverOpts) -> Result<(), String> {
    let m = material(o)?;
    runtime(o)?.block_on(async move {
        let sc = tls::server_config(&m, false).map_err(|e| e.to_string())?;
        let sc =
            quinn::crypto::rustls::QuicServerConfig::try_from(sc).map_err(|e| e.to_string())?;
        let ep = endpoint(o, Some(quinn::ServerConfig::with_crypto(Arc::new(sc))))?;
        let addr = ep.local_addr().map_err(|e| e.to_string())?;
        emit("listening", json!({ "addr": addr.to_string() }));
        // Connections are served until the orchestrator kills this process.
        let mut conns = tokio::task::JoinSet::new();
        while let Some(incoming) = ep.accept().await {
            conns.spawn(async move {
                if let Ok(conn) = incoming.await {
                    serve(conn).await;
                }
            });
        }
        Ok(())
    })
}

async fn serve(conn: quinn::Connection) {
    let count = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = watch::channel(false);
    let done_tx = Arc::new(done_tx);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            uni = conn.accept_uni() => {
                let Ok(s) = uni else { break };
                let (count, done) = (count.clone(), done_tx.clone());
                tasks.spawn(async move {
                    count_stream(s, &count).await;
                    done.send_replace(true);
                });
            }
            bi = conn.accept_bi() => {
                let Ok((tx, rx)) = bi else { break };
                let (count, done) = (count.clone(), done_rx.clone());
                tasks.spawn(async move { bidi(tx, rx, &count, done).await; });
            }
        }
    }
}

async fn count_stream(mut s: quinn::RecvStream, count: &AtomicU64) {
    let mut carry: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = s.read_chunk(1 << 20, true).await {
        carry.extend_from_slice(&chunk.bytes);
        let mut at = 0;
        while carry.len() - at >= 4 {
            let len = u32::from_be_bytes([carry[at], carry[at + 1], carry[at + 2], carry[at + 3]])
                as usize;
            if carry.len() - at < 4 + len {
                break;
            }
            at += 4 + len;
            count.fetch_add(1, Ordering::Relaxed);
        }
        carry.drain(..at);
    }
}

async fn bidi(
    mut tx: quinn::SendStream,
    mut rx: quinn::RecvStream,
    count: &AtomicU64,
    mut done: watch::Receiver<bool>,
) {
    let mut mode = [0u8; 1];
    if rx.read_exact(&mut mode).await.is_err() {
        return;
    }
    if mode[0] == b'R' {
        let _ = tokio::time::timeout(Duration::from_secs(120), done.wait_for(|d| *d)).await;
        let _ = tx
            .write_all(&count.load(Ordering::Relaxed).to_be_bytes())
            .await;
        let _ = tx.finish();
        return;
    }
    while let Ok(Some(chunk)) = rx.read_chunk(1 << 16, true).await {
        if tx.write_all(&chunk.bytes).await.is_err() {
            return;
        }
    }
    let _ = tx.finish();
}

/// `raw-client`.
pub(crate) fn client_main(o: &DriverOpts) -> Result<(), String> {
    let m = material(o)?;
    let addr: SocketAddr = o
        .text("addr")
        .ok_or("--bench-addr=HOST:PORT is required")?
        .parse()
        .map_err(|e| format!("--bench-addr: {e}"))?;
    let server_name = o.text("server-name").unwrap_or("n1").to_owned();
    let msgs: u64 = o.get("msgs", 4_000_000)?;
    let round_trips: usize = o.get("round-trips", 20_000)?;
    let rate: u64 = o.get("rate", 10_000)?;
    let secs: u64 = o.get("secs", 10)?;
    let pacing: Pacing = o.get("pacing", Pacing::Burst)?;
    runtime(o)?.block_on(async move {
        let cc = tls::client_config(&m).map_err(|e| e.to_string())?;
        let cc =
            quinn::crypto::rustls::QuicClientConfig::try_from(cc).map_err(|e| e.to_string())?;
        let mut ep = endpoint(o, None)?;
        ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(cc)));
        let conn = ep
            .connect(addr, &server_name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        throughput(&conn, msgs).await?;
        closed_loop(&conn, round_trips).await?;
        open_loop(&conn, rate, secs, pacing).await?;
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        Ok(())
    })
}

fn frame() -> [u8; FRAME] {
    let mut m = [7u8; FRAME];
    m[..4].copy_from_slice(&(MSG as u32).to_be_bytes());
    m
}

async fn throughput(conn: &quinn::Connection, msgs: u64) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut buf = Vec::with_capacity(1024 * FRAME);
    for _ in 0..1024 {
        buf.extend_from_slice(&frame());
    }
    let rounds = msgs / 1024;
    emit("throughput_start", json!({}));
    let start = Instant::now();
    let mut s = conn.open_uni().await.map_err(|x| e(&x))?;
    for _ in 0..rounds {
        s.write_all(&buf).await.map_err(|x| e(&x))?;
    }
    s.finish().map_err(|x| e(&x))?;
    let (mut tx, mut rx) = conn.open_bi().await.map_err(|x| e(&x))?;
    tx.write_all(b"R").await.map_err(|x| e(&x))?;
    let mut n = [0u8; 8];
    rx.read_exact(&mut n).await.map_err(|x| e(&x))?;
    let took = start.elapsed().as_secs_f64();
    let counted = u64::from_be_bytes(n);
    emit(
        "raw_throughput",
        json!({
            "msgs": rounds * 1024,
            "counted": counted,
            "secs": took,
            "rate": (counted as f64 / took).round(),
            "mb_per_s": (counted as f64 * FRAME as f64 / took / 1e6 * 10.0).round() / 10.0,
        }),
    );
    Ok(())
}

async fn closed_loop(conn: &quinn::Connection, round_trips: usize) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let (mut tx, mut rx) = conn.open_bi().await.map_err(|x| e(&x))?;
    tx.write_all(b"E").await.map_err(|x| e(&x))?;
    let m = frame();
    let mut back = [0u8; FRAME];
    let mut lat = Vec::with_capacity(round_trips);
    for i in 0..round_trips + 1_000 {
        let t = Instant::now();
        tx.write_all(&m).await.map_err(|x| e(&x))?;
        rx.read_exact(&mut back).await.map_err(|x| e(&x))?;
        if i >= 1_000 {
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    let _ = tx.finish();
    emit("raw_closed", json!({ "latency": summary(lat) }));
    Ok(())
}

/// Open loop on one stream: each message carries its scheduled and its actual send time
/// (µs since the start) and the echo's arrival is measured against both (see openloop.rs).
async fn open_loop(
    conn: &quinn::Connection,
    rate: u64,
    secs: u64,
    pacing: Pacing,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let (mut tx, mut rx) = conn.open_bi().await.map_err(|x| e(&x))?;
    tx.write_all(b"E").await.map_err(|x| e(&x))?;
    let warm_n = rate;
    let total = warm_n + secs * rate;
    let mut pacer = Pacer::start(rate, total, pacing)?;
    let start = pacer.due(0);
    let warm_start_us = pacer.due(warm_n).duration_since(start).as_micros() as u64;
    let reader = tokio::spawn(async move {
        let mut back = [0u8; FRAME];
        let mut lat = Vec::with_capacity((secs * rate) as usize);
        let mut from_schedule = Vec::with_capacity((secs * rate) as usize);
        for _ in 0..total {
            if rx.read_exact(&mut back).await.is_err() {
                break;
            }
            let at = |i: usize| {
                let mut t = [0u8; 8];
                t.copy_from_slice(&back[i..i + 8]);
                u64::from_be_bytes(t)
            };
            let (scheduled, sent) = (at(4), at(12));
            if scheduled >= warm_start_us {
                let now = start.elapsed().as_micros() as u64;
                lat.push(now.saturating_sub(sent));
                from_schedule.push(now.saturating_sub(scheduled));
            }
        }
        (lat, from_schedule)
    });
    let mut m = frame();
    while let Some(i) = pacer.next().await {
        let due = pacer.due(i).duration_since(start).as_micros() as u64;
        m[4..12].copy_from_slice(&due.to_be_bytes());
        let sent = start.elapsed().as_micros() as u64;
        m[12..20].copy_from_slice(&sent.to_be_bytes());
        tx.write_all(&m).await.map_err(|x| e(&x))?;
    }
    let (lat, from_schedule) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .map_err(|_| "open-loop replies did not all arrive within 30 s".to_owned())?
        .map_err(|x| e(&x))?;
    let _ = tx.finish();
    emit(
        "raw_open",
        json!({
            "target_rate": rate,
            "ok": lat.len(),
            "latency": summary(lat),
            "from_schedule": summary(from_schedule),
        }),
    );
    Ok(())
}
