//! Transport benchmark: raw quinn vs cortex-transport, measured in one run on loopback.
//!
//! Run with `cargo bench -p cortex-transport --bench transport`. Prints a markdown table:
//! one-way throughput of 64-byte messages (raw quinn: one stream, length-prefixed, written
//! in large buffers; cortex: Tell envelopes with 64-byte payloads through lanes with natural
//! batching) and ask round-trip latency vs raw quinn ping-pong on one bidirectional stream.
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cortex_protocol::{
    Ask, Envelope, MessageName, NodeId, PeerIdentity, ReplyResult, RequestId, RequestMeta, Target,
    Tell,
};
use cortex_transport::certs::{CertRole, generate_ca, issue};
use cortex_transport::{
    Connection, Endpoint, EndpointConfig, Handler, Responder, TlsMaterial, tls,
};

const MSG: usize = 64;
const TELLS: u64 = 2_000_000;
const ROUND_TRIPS: usize = 20_000;

struct Counter {
    tells: AtomicU64,
}

impl Handler for Counter {
    fn on_envelope(&self, _: &Connection, env: Envelope) {
        if matches!(env, Envelope::Tell(_)) {
            self.tells.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn on_ask(&self, _: &Connection, ask: Ask, reply: Responder) {
        reply.send(ReplyResult::Ok {
            message: ask.message,
            payload: ask.payload,
        });
    }
}

struct Pki {
    server: TlsMaterial,
    client: TlsMaterial,
}

fn pki() -> Pki {
    let ca = generate_ca("bench").unwrap();
    let a = issue(&ca, "a", CertRole::Node, &[]).unwrap();
    let b = issue(&ca, "b", CertRole::Node, &[]).unwrap();
    Pki {
        server: TlsMaterial::from_certified(&ca, &b),
        client: TlsMaterial::from_certified(&ca, &a),
    }
}

fn raw_endpoints(p: &Pki) -> (quinn::Endpoint, quinn::Endpoint) {
    let sc = tls::server_config(&p.server, false).unwrap();
    let sc = quinn::crypto::rustls::QuicServerConfig::try_from(sc).unwrap();
    // The transport's socket buffers, so that both sides of a ratio lose datagrams alike.
    let socket = || {
        let addr = "127.0.0.1:0".parse().unwrap();
        cortex_transport::bind_udp_socket(addr, cortex_transport::DEFAULT_UDP_BUFFER)
            .unwrap()
            .0
    };
    let runtime = || Arc::new(quinn::TokioRuntime);
    let server = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(quinn::ServerConfig::with_crypto(Arc::new(sc))),
        socket(),
        runtime(),
    )
    .unwrap();
    let cc = tls::client_config(&p.client).unwrap();
    let cc = quinn::crypto::rustls::QuicClientConfig::try_from(cc).unwrap();
    let mut client =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket(), runtime()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(cc)));
    (server, client)
}

/// Raw quinn: one uni stream, 4-byte length prefix + 64 bytes, written 1024 messages at a time.
async fn raw_throughput(p: &Pki) -> (f64, Duration) {
    let (server, client) = raw_endpoints(p);
    let saddr = server.local_addr().unwrap();
    let recv = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut s = conn.accept_uni().await.unwrap();
        let mut count = 0u64;
        let mut carry = Vec::new();
        while let Some(chunk) = s.read_chunk(1 << 20, true).await.unwrap() {
            carry.extend_from_slice(&chunk.bytes);
            let mut at = 0;
            while carry.len() - at >= 4 {
                let len = u32::from_be_bytes(carry[at..at + 4].try_into().unwrap()) as usize;
                if carry.len() - at < 4 + len {
                    break;
                }
                at += 4 + len;
                count += 1;
            }
            carry.drain(..at);
        }
        (count, server)
    });
    let conn = client.connect(saddr, "b").unwrap().await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let mut buf = Vec::with_capacity(1024 * (MSG + 4));
    for _ in 0..1024 {
        buf.extend_from_slice(&(MSG as u32).to_be_bytes());
        buf.extend_from_slice(&[7u8; MSG]);
    }
    let start = Instant::now();
    let rounds = TELLS / 1024;
    for _ in 0..rounds {
        s.write_all(&buf).await.unwrap();
    }
    s.finish().unwrap();
    let (count, _server) = recv.await.unwrap();
    let took = start.elapsed();
    assert_eq!(count, rounds * 1024);
    (count as f64 / took.as_secs_f64(), took)
}

/// Raw quinn ping-pong on one bidirectional stream: 64-byte length-prefixed messages.
async fn raw_ping_pong(p: &Pki) -> Vec<Duration> {
    let (server, client) = raw_endpoints(p);
    let saddr = server.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut tx, mut rx) = conn.accept_bi().await.unwrap();
        let mut m = [0u8; MSG + 4];
        while rx.read_exact(&mut m).await.is_ok() {
            tx.write_all(&m).await.unwrap();
        }
        server
    });
    let conn = client.connect(saddr, "b").unwrap().await.unwrap();
    let (mut tx, mut rx) = conn.open_bi().await.unwrap();
    let mut m = [7u8; MSG + 4];
    m[..4].copy_from_slice(&(MSG as u32).to_be_bytes());
    let mut back = [0u8; MSG + 4];
    let mut lat = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 1000 {
        let t = Instant::now();
        tx.write_all(&m).await.unwrap();
        rx.read_exact(&mut back).await.unwrap();
        if i >= 1000 {
            lat.push(t.elapsed());
        }
    }
    tx.finish().unwrap();
    drop(conn);
    let _ = echo.await;
    lat
}

fn node(tlsm: TlsMaterial, name: &str, h: Arc<dyn Handler>) -> Endpoint {
    let cfg = EndpointConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tlsm,
        PeerIdentity::Node(NodeId::new(name, 1).unwrap()),
        "bench",
    );
    Endpoint::bind(cfg, h).unwrap()
}

fn tell(target: &Target, message: &MessageName, payload: &Bytes) -> Envelope {
    Envelope::Tell(Tell {
        target: target.clone(),
        message: message.clone(),
        payload: payload.clone(),
        meta: RequestMeta::default(),
        epoch: 0,
    })
}

/// Cortex tells from `senders` tasks, each on its own lane key.
async fn cortex_throughput(
    conn: &Connection,
    counter: &Counter,
    senders: u64,
) -> (f64, Duration, u64) {
    let before = counter.tells.load(Ordering::Relaxed);
    let bytes_before = conn.stats().bytes_sent;
    let start = Instant::now();
    let per = TELLS / senders;
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let target = Target::Virtual(format!("bench/{s}").parse().unwrap());
                let message = MessageName::new("bench.Tell").unwrap();
                let payload = Bytes::from(vec![7u8; MSG]);
                for _ in 0..per {
                    conn.send(tell(&target, &message, &payload), s)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let want = before + per * senders;
    while counter.tells.load(Ordering::Relaxed) < want {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = start.elapsed();
    let wire = conn.stats().bytes_sent - bytes_before;
    ((per * senders) as f64 / took.as_secs_f64(), took, wire)
}

async fn cortex_ping_pong(conn: &Connection) -> Vec<Duration> {
    let target = Target::Virtual("bench/pp".parse().unwrap());
    let message = MessageName::new("bench.Ping").unwrap();
    let payload = Bytes::from(vec![7u8; MSG]);
    let mut lat = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 1000 {
        let ask = Ask {
            request: RequestId(0),
            target: target.clone(),
            message: message.clone(),
            payload: payload.clone(),
            meta: RequestMeta::default(),
            epoch: 0,
            idempotency_key: None,
        };
        let t = Instant::now();
        conn.ask(ask, Duration::from_secs(10)).await.unwrap();
        if i >= 1000 {
            lat.push(t.elapsed());
        }
    }
    lat
}

/// The codec alone, single-threaded: BatchWriter encode plus FrameDecoder decode of the
/// same tells. A floor for what a lane costs per message.
/// Returns (encode-only rate, decode-only rate), both in envelopes per second.
fn codec_only() -> (f64, f64) {
    use cortex_protocol::{BatchWriter, Frame, FrameDecoder};
    let target = Target::Virtual("bench/0".parse().unwrap());
    let message = MessageName::new("bench.Tell").unwrap();
    let payload = Bytes::from(vec![7u8; MSG]);
    let dec = FrameDecoder::default();
    let mut enc_time = Duration::ZERO;
    let mut dec_time = Duration::ZERO;
    let mut n = 0u64;
    let mut out = Vec::new();
    let mut b = BatchWriter::new();
    while n < TELLS {
        let t = Instant::now();
        while b.encoded_len() < 64 * 1024 {
            b.push(&tell(&target, &message, &payload)).unwrap();
        }
        out.clear();
        b.finish(&mut out).unwrap();
        enc_time += t.elapsed();
        let t = Instant::now();
        let (frame, _) = dec.decode(&out).unwrap().unwrap();
        if let Frame::Batch(v) = frame {
            n += v.len() as u64;
        }
        dec_time += t.elapsed();
    }
    (
        n as f64 / enc_time.as_secs_f64(),
        n as f64 / dec_time.as_secs_f64(),
    )
}

fn pct(lat: &mut [Duration], p: f64) -> Duration {
    lat.sort_unstable();
    let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat[i]
}

fn main() {
    tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (enc_rate, dec_rate) = codec_only();
    rt.block_on(async {
        let p = pki();
        let (raw_rate, raw_took) = raw_throughput(&p).await;
        let mut raw_lat = raw_ping_pong(&p).await;

        let counter = Arc::new(Counter { tells: AtomicU64::new(0) });
        let b = node(p.server.clone(), "b", counter.clone());
        let a = node(p.client.clone(), "a", counter.clone());
        let conn = a.connect(b.local_addr().unwrap(), "b").await.unwrap();
        // Warm up.
        let _ = cortex_throughput(&conn, &counter, 1).await;
        let (one_rate, one_took, one_wire) = cortex_throughput(&conn, &counter, 1).await;
        let (four_rate, four_took, four_wire) = cortex_throughput(&conn, &counter, 4).await;
        let mut ask_lat = cortex_ping_pong(&conn).await;
        a.close().await;
        b.close().await;

        let mb = |rate: f64| rate * MSG as f64 / 1e6;
        println!("| measurement | msgs/s | payload MB/s | time | ratio to raw quinn |");
        println!("|---|---|---|---|---|");
        println!(
            "| raw quinn, 1 uni stream, 64 B length-prefixed, {TELLS} msgs | {:.0} | {:.1} | {:.2?} | 1.00 |",
            raw_rate, mb(raw_rate), raw_took
        );
        println!(
            "| cortex tell, 1 sender, 1 lane, {TELLS} msgs | {:.0} | {:.1} | {:.2?} | {:.2} |",
            one_rate, mb(one_rate), one_took, one_rate / raw_rate
        );
        println!(
            "| cortex tell, 4 senders, 4 lanes, {TELLS} msgs | {:.0} | {:.1} | {:.2?} | {:.2} |",
            four_rate, mb(four_rate), four_took, four_rate / raw_rate
        );
        println!(
            "| codec only: build + encode tells (1 thread, no I/O) | {:.0} | {:.1} | | {:.2} |",
            enc_rate, mb(enc_rate), enc_rate / raw_rate
        );
        println!(
            "| codec only: decode + drop tells (1 thread, no I/O) | {:.0} | {:.1} | | {:.2} |",
            dec_rate, mb(dec_rate), dec_rate / raw_rate
        );
        println!(
            "\nwire bytes per tell (batched, incl. framing): {:.1} (1 lane), {:.1} (4 lanes)",
            one_wire as f64 / TELLS as f64,
            four_wire as f64 / TELLS as f64
        );
        let (r50, r99) = (pct(&mut raw_lat, 0.5), pct(&mut raw_lat, 0.99));
        let (c50, c99) = (pct(&mut ask_lat, 0.5), pct(&mut ask_lat, 0.99));
        println!("\n| round trip ({ROUND_TRIPS} sequential, 64 B) | p50 | p99 | p50 ratio |");
        println!("|---|---|---|---|");
        println!("| raw quinn ping-pong, 1 bidi stream | {r50:.1?} | {r99:.1?} | 1.00 |");
        println!(
            "| cortex ask/reply | {c50:.1?} | {c99:.1?} | {:.2} |",
            c50.as_secs_f64() / r50.as_secs_f64()
        );
    });
}
