//! Free ports, found by binding and letting go, below the kernel's ephemeral range so that no
//! outgoing connection takes them meanwhile; the harness retries with new ones when a node
//! still cannot bind them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use crate::HarnessError;

/// The three ports of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// QUIC (UDP).
    pub quic: u16,
    /// SWIM gossip (UDP).
    pub gossip: u16,
    /// Admin HTTP (TCP).
    pub http: u16,
}

/// Free ports on 127.0.0.1.
///
/// # Errors
/// [`HarnessError::Io`] if no socket can be bound.
pub fn free_ports() -> Result<Ports, HarnessError> {
    free_ports_on(&[IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

/// Ports that are free on every address of `ips` at once (a StatefulSet's pods all use the
/// same ports on different addresses). QUIC and gossip differ.
///
/// # Errors
/// [`HarnessError::Io`] if no socket can be bound; [`HarnessError::State`] if no common free
/// port turns up after many tries.
pub fn free_ports_on(ips: &[IpAddr]) -> Result<Ports, HarnessError> {
    let quic = common_port(ips, Proto::Udp, None)?;
    let gossip = common_port(ips, Proto::Udp, Some(quic))?;
    let http = common_port(ips, Proto::Tcp, None)?;
    Ok(Ports { quic, gossip, http })
}

#[derive(Clone, Copy)]
enum Proto {
    Udp,
    Tcp,
}

/// Ports handed out below the kernel's ephemeral range (32768 and up on Linux): a port the OS
/// picks for `bind(0)` is also the kind it picks for outgoing connections, so a node could
/// lose the port it was given to some process's client socket before it binds it.
const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn os_port(ip: IpAddr, proto: Proto) -> Result<u16, HarnessError> {
    // Spread test processes over the range by pid, then walk it.
    let span = u32::from(HIGH - LOW);
    let base = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = LOW + ((base + n * 13) % span) as u16;
        if free_on(ip, port, proto) {
            return Ok(port);
        }
    }
    let addr = SocketAddr::new(ip, 0);
    let port = match proto {
        Proto::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
        Proto::Tcp => TcpListener::bind(addr).and_then(|s| s.local_addr()),
    }
    .map_err(|e| HarnessError::io(format!("binding {addr}"), e))?
    .port();
    Ok(port)
}

fn free_on(ip: IpAddr, port: u16, proto: Proto) -> bool {
    let addr = SocketAddr::new(ip, port);
    match proto {
        Proto::Udp => UdpSocket::bind(addr).is_ok(),
        Proto::Tcp => TcpListener::bind(addr).is_ok(),
    }
}

fn common_port(ips: &[IpAddr], proto: Proto, avoid: Option<u16>) -> Result<u16, HarnessError> {
    let first = ips
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    for _ in 0..100 {
        let port = os_port(first, proto)?;
        if Some(port) != avoid && ips.iter().skip(1).all(|ip| free_on(*ip, port, proto)) {
            return Ok(port);
        }
    }
    Err(HarnessError::State(format!(
        "found no port free on all of {ips:?} after 100 tries"
    )))
}
