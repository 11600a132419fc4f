//! A harness that starts real `cortex-node` processes on loopback addresses and polls them
//! from outside, for the multi-process tests in `tests/` and the bench binaries.
//!
//! The harness never links the node crate: it runs the built binaries (`cortex-node`, or the
//! `bank` example host) found by [`bin_dir`], talks to their admin HTTP endpoint with a tiny
//! HTTP/1.1 client ([`http_get`]) and sends signals with the `kill` command.
//!
//! - [`TestCluster::start`] makes a CA, certificates and a cluster secret in a temporary
//!   directory and starts N nodes (node 0 is the seed of the others).
//! - [`NodeProcess`] is one node: its ports, its logs (one file per run, dumped to stderr when
//!   a test panics), `kill -9`, SIGTERM, SIGSTOP/SIGCONT and restart under the same name.
//! - [`poll_until`] waits for a condition under a deadline; no fixed sleeps.
//! - [`HostsEntry`] adds lines to `/etc/hosts` for the life of a test (DNS-name seeds).
//! - [`GossipMeter`] counts the gossip bytes a node receives, through a UDP relay.
//!
//! Processes never outlive the harness: each child is killed (SIGKILL, by its own handle)
//! when its [`NodeProcess`] drops, also while a test panics, and is started with the node's
//! `--exit-with-parent` flag, so it stops by itself when the test process dies in a way that
//! runs no destructor (its stdin pipe closes).
//!
//! # Examples
//! ```no_run
//! use std::time::Duration;
//! use cortex_cluster_tests::{ClusterOptions, TestCluster};
//! let mut cluster = TestCluster::start(3, ClusterOptions::default()).unwrap();
//! let took = cluster.wait_converged(Duration::from_secs(30)).unwrap();
//! assert_eq!(cluster.node(1).members().unwrap().len(), 3);
//! # let _ = took;
//! ```

mod bins;
mod certs;
mod cluster;
mod error;
mod hosts;
mod http;
mod members;
mod meter;
mod poll;
mod ports;
mod process;

pub use bins::{Binary, bin_dir, binary_path};
pub use certs::CertAuthority;
pub use cluster::{ClusterOptions, KEEP_DIR_ENV, TestCluster};
pub use error::HarnessError;
pub use hosts::{HOSTS_FILE, HostsEntry};
pub use http::{HttpResponse, http_get};
pub use members::{Member, MemberState, views_agree};
pub use meter::{GossipMeter, MeterReading};
pub use poll::{POLL_INTERVAL, poll_until};
pub use ports::{Ports, free_ports, free_ports_on};
pub use process::{NodeProcess, NodeSpec, TlsSource};
