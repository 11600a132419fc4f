//! Counting the gossip a node receives: a UDP relay in front of its gossip socket.
//!
//! The node is started with `--gossip-advertise` set to the relay's address, so every peer
//! sends its gossip there; the relay forwards each datagram to the node's real gossip socket
//! and counts it. SWIM replies go to the address a member advertises, never to a datagram's
//! source, so the relay sees all inbound gossip and nothing else. Summed over all nodes,
//! bytes received equal bytes sent, which gives gossip bytes per node per second.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::HarnessError;

/// Bytes of IPv4 + UDP headers per datagram, for on-the-wire estimates.
const IP_UDP_HEADERS: u64 = 28;

/// What a [`GossipMeter`] counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterReading {
    /// Datagrams forwarded to the node.
    pub datagrams: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

impl MeterReading {
    /// Payload plus IPv4 and UDP headers.
    pub fn wire_bytes(&self) -> u64 {
        self.bytes + self.datagrams * IP_UDP_HEADERS
    }

    /// The difference `self - earlier`.
    pub fn since(&self, earlier: &MeterReading) -> MeterReading {
        MeterReading {
            datagrams: self.datagrams.saturating_sub(earlier.datagrams),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

#[derive(Default)]
struct Counts {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

/// A counting UDP relay to one node's gossip socket; stops when dropped.
pub struct GossipMeter {
    relay: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GossipMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipMeter")
            .field("relay", &self.relay)
            .field("reading", &self.reading())
            .finish()
    }
}

impl GossipMeter {
    /// Binds a relay on `bind` (port 0: any) that forwards to `target`. Give the node
    /// `--gossip-advertise` = [`GossipMeter::relay_addr`] and its real socket at `target`.
    ///
    /// # Errors
    /// [`HarnessError::Io`] if the socket cannot be bound or its thread started.
    pub fn start(bind: SocketAddr, target: SocketAddr) -> Result<Self, HarnessError> {
        let socket =
            UdpSocket::bind(bind).map_err(|e| HarnessError::io(format!("binding {bind}"), e))?;
        let relay = socket
            .local_addr()
            .map_err(|e| HarnessError::io("relay address", e))?;
        // The thread checks `stop` at least this often.
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| HarnessError::io("relay read timeout", e))?;
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("gossip-meter-{relay}"))
            .spawn(move || relay_loop(&socket, target, &c, &s))
            .map_err(|e| HarnessError::io("starting the relay thread", e))?;
        Ok(GossipMeter {
            relay,
            counts,
            stop,
            thread: Some(thread),
        })
    }

    /// The address to advertise.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay
    }

    /// Counts so far.
    pub fn reading(&self) -> MeterReading {
        MeterReading {
            datagrams: self.counts.datagrams.load(Ordering::Relaxed),
            bytes: self.counts.bytes.load(Ordering::Relaxed),
        }
    }
}

fn relay_loop(socket: &UdpSocket, target: SocketAddr, counts: &Counts, stop: &AtomicBool) {
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        // Something the node sent to the relay's address (a reply to a source address)
        // would loop back to it: drop it.
        if from == target {
            continue;
        }
        if socket.send_to(&buf[..n], target).is_ok() {
            counts.datagrams.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for GossipMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
