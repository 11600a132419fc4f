//! The endpoint's UDP socket, with kernel buffers sized for bursts.
//!
//! Why: a node's one tokio thread both drains the socket and decodes what it read. While it
//! decodes a 64 KiB frame of tells, the peer keeps sending, and Linux's default UDP receive
//! buffer (208 KiB, `net.core.rmem_default`) fills in about 2 ms at 100 MB/s. Every datagram
//! dropped there is a QUIC loss: the sender's congestion controller halves its window and
//! both sides spend CPU on recovery. Measured between two node processes on loopback
//! (BENCHMARKS.md, "UDP socket buffers"): 100 to 250 datagrams dropped per 5 M tells with the
//! default, none with 4 MiB, and remote tell throughput up from ~1.1 to ~1.5 M/s.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel buffer sizes a socket actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// Receive buffer, as the kernel reports it (Linux reports twice the usable size).
    pub recv: usize,
    /// Send buffer, as the kernel reports it.
    pub send: usize,
}

/// Binds a UDP socket for quinn, as [`crate::Endpoint::bind`] does. `buffer` > 0 asks the
/// kernel for that much send and receive buffer (a warning is logged when the kernel grants
/// less); 0 keeps the OS defaults. An IPv6 address gets a dual-stack socket where the OS
/// allows it, as `quinn::Endpoint::client` does. Benchmarks use it to give a raw quinn
/// baseline the transport's socket.
///
/// ```
/// let (socket, got) = cortex_transport::bind_udp_socket(
///     "127.0.0.1:0".parse().unwrap(),
///     cortex_transport::DEFAULT_UDP_BUFFER,
/// )?;
/// assert_ne!(socket.local_addr()?.port(), 0);
/// assert!(got.recv > 0 && got.send > 0);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// The OS error if the socket cannot be made or bound (a refused size only logs a warning).
pub fn bind_udp_socket(addr: SocketAddr, buffer: usize) -> io::Result<(UdpSocket, SocketBuffers)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6()
        && let Err(e) = socket.set_only_v6(false)
    {
        tracing::debug!(error = %e, "UDP socket: cannot make it dual-stack");
    }
    if buffer > 0 {
        // The kernel silently caps these at net.core.{r,w}mem_max; checked below. A system
        // that refuses the option outright still gets a working socket with its defaults.
        for (which, set) in [
            ("receive", socket.set_recv_buffer_size(buffer)),
            ("send", socket.set_send_buffer_size(buffer)),
        ] {
            if let Err(e) = set {
                tracing::warn!(error = %e, requested = buffer, "UDP {which} buffer left at the OS default");
            }
        }
    }
    socket.bind(&addr.into())?;
    let got = SocketBuffers {
        recv: socket.recv_buffer_size()?,
        send: socket.send_buffer_size()?,
    };
    // Linux reports twice what it grants (the rest is its bookkeeping).
    let usable = if cfg!(target_os = "linux") {
        got.recv / 2
    } else {
        got.recv
    };
    if buffer > 0 && usable < buffer {
        tracing::warn!(
            requested = buffer,
            granted = usable,
            "UDP receive buffer capped by the kernel: bursts of traffic may be dropped and \
             retransmitted; raise it with `sysctl -w net.core.rmem_max={buffer}` (and \
             net.core.wmem_max), or ask for 0 (the OS default) to silence this \
             (a node's udp_buffer_size, a client's ClientBuilder::udp_buffer)"
        );
    } else {
        tracing::debug!(recv = got.recv, send = got.send, "UDP socket buffers");
    }
    Ok((socket.into(), got))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_of(path: &str) -> Option<usize> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    #[test]
    fn asked_buffers_are_granted_up_to_the_kernel_cap() {
        let want = 1 << 20;
        let (sock, got) = bind_udp_socket("127.0.0.1:0".parse().unwrap(), want).unwrap();
        assert_ne!(sock.local_addr().unwrap().port(), 0);
        // Linux grants min(asked, cap) and reports double; other systems report what they
        // grant. Either way at least min(asked, cap).
        let rcap = max_of("/proc/sys/net/core/rmem_max").unwrap_or(want);
        let wcap = max_of("/proc/sys/net/core/wmem_max").unwrap_or(want);
        assert!(got.recv >= want.min(rcap), "{got:?}");
        assert!(got.send >= want.min(wcap), "{got:?}");
    }

    #[test]
    fn zero_keeps_the_os_defaults() {
        let (_s, got) = bind_udp_socket("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let plain = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        assert_eq!(got.recv, plain.recv_buffer_size().unwrap());
        assert_eq!(got.send, plain.send_buffer_size().unwrap());
    }

    #[test]
    fn an_ipv6_bind_works_where_the_host_has_ipv6() {
        match bind_udp_socket("[::1]:0".parse().unwrap(), 1 << 16) {
            Ok((s, _)) => assert!(s.local_addr().unwrap().is_ipv6()),
            // A host without IPv6 refuses the bind; that is the OS's answer, not ours.
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
                ) || e.raw_os_error() == Some(97),
                "{e}"
            ),
        }
    }
}
