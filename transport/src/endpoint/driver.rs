//! The per-connection machinery behind [`super::Endpoint`]: dialing and accepting,
//! lane setup, registration with the simultaneous-dial tie-break, and the driver task that
//! owns a connection's lane tasks until it closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::EndpointInner;
use crate::connection::{Connection, LaneSpec, NewConn};
use crate::error::{TransportError, from_connection_error};
use crate::handshake::{self, Negotiated, code};
use crate::lane;
use crate::writer::Writer;

impl EndpointInner {
    pub(super) async fn dial(
        self: Arc<Self>,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, TransportError> {
        let connecting =
            self.quinn
                .connect(addr, server_name)
                .map_err(|e| TransportError::Connect {
                    peer: addr,
                    reason: e.to_string(),
                })?;
        let qc = connecting
            .await
            .map_err(|e| from_connection_error(addr, &e))?;
        let (neg, _) = match handshake::dial(&qc, &self.cfg).await {
            Ok(v) => v,
            Err(e) => {
                qc.close(code::REFUSED, b"handshake failed");
                return Err(e);
            }
        };
        self.establish(qc, neg, true).await
    }

    /// Sets up lanes and tasks for a handshaken connection, registers it and returns the
    /// connection to use for the peer (which is another one if this one lost a tie-break).
    async fn establish(
        self: Arc<Self>,
        qc: quinn::Connection,
        neg: Negotiated,
        dialed_by_us: bool,
    ) -> Result<Connection, TransportError> {
        let cfg = &self.cfg;
        let conn = Connection::new(
            NewConn {
                quinn: qc.clone(),
                peer: neg.peer,
                dialed_by_us,
                version: neg.version,
                features: neg.features,
                max_pending: cfg.max_pending_asks,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
            },
            &LaneSpec {
                lanes: cfg.lanes,
                queue: cfg.batch.queue,
                reply_queue: cfg.batch.reply_queue,
                batch_limit: cfg.batch_limit(),
                max_frame: cfg.max_frame,
            },
        );
        // The reply lane, when there is one, is the first stream opened (index 0 for the
        // peer) and the last in `streams`, matching the outboxes.
        let reply_lane = conn.inner.reply_lane;
        let mut streams = Vec::with_capacity(cfg.lanes + usize::from(reply_lane));
        for _ in 0..cfg.lanes + usize::from(reply_lane) {
            streams.push(
                qc.open_uni()
                    .await
                    .map_err(|e| from_connection_error(qc.remote_address(), &e))?,
            );
        }
        if reply_lane {
            streams.rotate_left(1);
        }
        let (winner, announce) = self.register(&conn);
        self.tracker
            .spawn(self.clone().drive(conn, streams, announce));
        Ok(winner)
    }

    /// Records `conn`; returns the connection to use for its peer and whether `conn` is it.
    fn register(&self, conn: &Connection) -> (Connection, bool) {
        self.conns.lock().insert(conn.id(), conn.clone());
        let Some(peer) = conn.peer_node().cloned() else {
            return (conn.clone(), true);
        };
        let mut peers = self.peers.lock();
        let old = match peers.get(peer.name()) {
            Some(old) if !old.is_closed() => old.clone(),
            _ => {
                peers.insert(peer.name().to_string(), conn.clone());
                self.peers_gen.fetch_add(1, Ordering::Release);
                return (conn.clone(), true);
            }
        };
        // Both ends hold the same pair of node ids, so they pick the same winner.
        let new_wins = match old.peer_node() {
            Some(o) if o.incarnation() != peer.incarnation() => {
                peer.incarnation() > o.incarnation()
            }
            _ => self.prefer(conn, &old),
        };
        if new_wins {
            peers.insert(peer.name().to_string(), conn.clone());
            self.peers_gen.fetch_add(1, Ordering::Release);
            drop(peers);
            tracing::debug!(peer = %peer, "connection {} replaces {}", conn.id(), old.id());
            old.supersede(conn);
            (conn.clone(), true)
        } else {
            drop(peers);
            tracing::debug!(peer = %peer, "connection {} loses to {}", conn.id(), old.id());
            conn.supersede(&old);
            (old, false)
        }
    }

    /// True when `a` should win over `b` (same peer, same incarnation): the connection
    /// dialed by the smaller node id wins; between two dialed by the same side, the newer.
    fn prefer(&self, a: &Connection, b: &Connection) -> bool {
        let dialer_is_smaller = |c: &Connection| match (&self.me, c.peer_node()) {
            (Some(me), Some(peer)) => c.dialed_by_us() == (me < peer),
            _ => true,
        };
        match (dialer_is_smaller(a), dialer_is_smaller(b)) {
            (true, false) => true,
            (false, true) => false,
            _ => a.inner.seq > b.inner.seq,
        }
    }

    async fn drive(
        self: Arc<Self>,
        conn: Connection,
        streams: Vec<quinn::SendStream>,
        announce: bool,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut writers = tokio::task::JoinSet::new();
        writers.spawn(
            Writer {
                streams,
                conn: conn.clone(),
            }
            .run(),
        );
        if announce {
            self.handler.on_connection(&conn);
        }
        tasks.spawn(lane::accept_lanes(
            conn.clone(),
            self.handler.clone(),
            self.cfg.max_frame,
        ));
        let qc = conn.inner.quinn.clone();
        let reason = tokio::select! {
            e = qc.closed() => describe_close(&e),
            _ = self.cancel.cancelled() => {
                // Flush what callers queued and wait for the peer to acknowledge it, then
                // close; bounded by drain_timeout.
                for o in &conn.inner.outboxes {
                    o.finish();
                }
                let drained = async { while writers.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(self.cfg.drain_timeout, drained).await;
                qc.close(code::SHUTDOWN, b"endpoint shutting down");
                "this endpoint shut down".to_string()
            }
            r = self.retire_when_superseded(&conn) => r,
        };
        tracing::debug!(peer = %conn.inner.peer_label, "connection {} closed: {reason}", conn.id());
        conn.mark_closed(reason);
        // Listed as closed before it leaves the live table: a scrape reading both in that
        // order cannot miss it.
        {
            let mut closed = self.closed.lock();
            if closed.len() >= super::MAX_CLOSED_KEPT {
                closed.pop_front();
            }
            closed.push_back(super::ClosedConnection {
                id: conn.id(),
                peer: conn.peer_node().cloned(),
                stats: conn.stats(),
            });
        }
        self.conns.lock().remove(&conn.id());
        {
            let mut peers = self.peers.lock();
            if let Some(name) = conn.peer_node().map(|n| n.name().to_string())
                && peers.get(&name).is_some_and(|c| c.same(&conn))
            {
                peers.remove(&name);
                self.peers_gen.fetch_add(1, Ordering::Release);
            }
        }
        if announce && conn.superseded_by().is_none() {
            self.handler.on_disconnect(&conn);
        }
        tasks.shutdown().await;
        writers.shutdown().await;
    }

    /// Once `conn` is superseded, lets in-flight traffic finish (linger, then until nothing
    /// is pending or the drain deadline passes) and closes it.
    async fn retire_when_superseded(&self, conn: &Connection) -> String {
        if conn.superseded_by().is_none() {
            conn.inner.superseded_notify.notified().await;
        }
        let cfg = &self.cfg;
        tokio::time::sleep(cfg.duplicate_linger).await;
        let deadline = Instant::now() + cfg.drain_timeout;
        while !conn.quiescent() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let same_incarnation = match (
            conn.peer_node(),
            conn.superseded_by()
                .as_ref()
                .and_then(|w| w.peer_node().cloned()),
        ) {
            (Some(a), Some(b)) => a.incarnation() == b.incarnation(),
            _ => true,
        };
        let (c, why) = if same_incarnation {
            (
                code::DUPLICATE,
                "duplicate connection closed after a simultaneous dial",
            )
        } else {
            (
                code::SUPERSEDED,
                "replaced by a newer incarnation of the peer",
            )
        };
        conn.inner.quinn.close(c, why.as_bytes());
        why.to_string()
    }
}

fn describe_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(a) => {
            let reason = String::from_utf8_lossy(&a.reason);
            let what = match a.error_code {
                c if c == code::NORMAL => "closed by the peer",
                c if c == code::PROTOCOL_VIOLATION => "the peer reported a protocol violation",
                c if c == code::REFUSED => "the peer refused the handshake",
                c if c == code::DUPLICATE => "duplicate connection closed by the peer",
                c if c == code::SUPERSEDED => "superseded",
                c if c == code::SHUTDOWN => "the peer shut down",
                _ => "closed by the peer with an unknown code",
            };
            if reason.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {reason}")
            }
        }
        quinn::ConnectionError::TimedOut => "idle timeout: the peer stopped answering".into(),
        other => other.to_string(),
    }
}

pub(super) async fn accept_loop(inner: Arc<EndpointInner>) {
    let slots = Arc::new(Semaphore::new(inner.cfg.max_concurrent_handshakes));
    loop {
        let incoming = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            i = inner.quinn.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(from = %incoming.remote_address(), "refusing connection: too many handshakes in progress");
            incoming.refuse();
            continue;
        };
        let inner2 = inner.clone();
        inner.tracker.spawn(async move {
            let _permit = permit;
            let from = incoming.remote_address();
            let after = inner2.cfg.connect_timeout;
            let cancel = inner2.cancel.clone();
            let work = tokio::time::timeout(after, inner2.accept_one(incoming));
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = work => r,
            };
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::info!(%from, "inbound connection refused: {e}"),
                Err(_) => tracing::info!(%from, "inbound handshake timed out after {after:?}"),
            }
        });
    }
}

impl EndpointInner {
    async fn accept_one(
        self: Arc<Self>,
        incoming: quinn::Incoming,
    ) -> Result<Connection, TransportError> {
        let from = incoming.remote_address();
        let qc = incoming
            .await
            .map_err(|e| from_connection_error(from, &e))?;
        let Some(me) = self.me.clone() else {
            return Err(TransportError::Unsupported("accept connections"));
        };
        let neg = handshake::accept(&qc, &self.cfg, &me).await?;
        self.establish(qc, neg, false).await
    }
}
