//! Free ports, chosen by binding port 0 and letting go: a node started right after is very
//! likely to get them, and the harness retries with new ones when it does not.

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

fn os_port(ip: IpAddr, proto: Proto) -> Result<u16, HarnessError> {
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
