//! Shared harness of the client tests: a local cluster of real `bank` host processes
//! (node/examples/bank.rs: the stock node plus the `account`, `counter` and `register`
//! kinds) on 127.0.0.1, certificates made with the binary's own `certs` command, and
//! helpers that poll conditions under deadlines (never fixed sleeps).
//!
//! The binaries come from `$CORTEX_BIN_DIR` or `target/debug`: build them first with
//! `cargo build --workspace --bins --examples` (what scripts/test.sh does).
#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use cortex_client::admin::{AdminClient, sum_metric};
use cortex_client::{Client, ClientBuilder};
use cortex_transport::TlsMaterial;
use tokio::time::Instant;

/// Where the workspace builds its debug binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CORTEX_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    // Invariant: cluster-tests is a direct member folder of the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests has a parent directory")
        .join("target/debug")
}

fn find(rel: &str, build: &str) -> PathBuf {
    let p = bin_dir().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: build it first with `{build}` (or set CORTEX_BIN_DIR)",
        p.display()
    );
    p
}

/// The bank host binary (a node with the example kinds).
pub fn bank_bin() -> PathBuf {
    find("examples/bank", "cargo build -p cortex-node --example bank")
}

/// The `cortex` CLI binary.
pub fn cli_bin() -> PathBuf {
    find("cortex", "cargo build -p cortex-client --bins")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Free ports from the OS: every socket of one call is held until all are chosen, so none
/// repeats within a call.
fn free_ports(n: usize) -> Vec<(u16, u16, u16)> {
    let mut held_udp = Vec::new();
    let mut held_tcp = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let q = UdpSocket::bind(loopback(0)).unwrap();
        let g = UdpSocket::bind(loopback(0)).unwrap();
        let h = TcpListener::bind(loopback(0)).unwrap();
        out.push((
            q.local_addr().unwrap().port(),
            g.local_addr().unwrap().port(),
            h.local_addr().unwrap().port(),
        ));
        held_udp.extend([q, g]);
        held_tcp.push(h);
    }
    out
}

/// One node process. Killed (SIGKILL) when dropped.
pub struct NodeProc {
    pub name: String,
    pub quic: SocketAddr,
    pub gossip: SocketAddr,
    pub http: SocketAddr,
    child: Option<Child>,
    /// The full `run` command line, for restarts.
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
    // Held open: the node runs with --exit-with-parent and stops when this pipe closes,
    // so no node outlives a crashed test.
    _stdin: Option<ChildStdin>,
}

impl NodeProc {
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&format!("http://{}", self.http)).unwrap()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process again under the same name, ports and data directory (a new
    /// incarnation). The log is appended to.
    pub fn restart(&mut self, bin: &Path) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(bin)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self._stdin = child.stdin.take();
        self.child = Some(child);
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running local cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    pub cluster_name: String,
    bin: PathBuf,
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Starts `n` bank nodes (node 0 seeds the others) with `extra` flags for every
    /// `run`, plus a CA, node certificates and a client certificate `app`.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_with(&bank_bin(), n, extra)
    }

    /// [`Cluster::start`] with another host binary (one that takes `cortex-node`'s
    /// command line).
    pub fn start_with(bin: &Path, n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        run_ok(
            Command::new(bin)
                .args(["certs", "init", "--cluster", "cortex", "--dir"])
                .arg(&ca),
        );
        run_ok(
            Command::new(bin)
                .args(["certs", "issue", "app", "--client", "--dir"])
                .arg(&ca),
        );
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
            cluster_name: "cortex".into(),
            bin: bin.to_path_buf(),
        };
        for _ in 0..n {
            cluster.add_node(extra);
        }
        cluster
    }

    /// Starts one more node (seeded by node 0) with `extra` flags; returns its index.
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let i = self.nodes.len();
        let (q, g, h) = free_ports(1)[0];
        let name = format!("n{i}");
        let ca = self.ca_dir();
        run_ok(
            Command::new(&self.bin)
                .args(["certs", "issue", &name, "--dir"])
                .arg(&ca),
        );
        let log = std::fs::File::create(self.log_path(i)).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--node-name", &name])
            .arg("--quic-bind")
            .arg(loopback(q).to_string())
            .arg("--gossip-bind")
            .arg(loopback(g).to_string())
            .arg("--http-bind")
            .arg(loopback(h).to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join(&name))
            .arg("--tls-dir")
            .arg(&ca)
            .args(["--settle-time", "500ms", "--exit-with-parent"]);
        if let Some(seed) = self.nodes.first() {
            cmd.arg("--seed").arg(seed.gossip.to_string());
        }
        cmd.args(extra);
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
        cmd.stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        self.nodes.push(NodeProc {
            name,
            quic: loopback(q),
            gossip: loopback(g),
            http: loopback(h),
            child: Some(child),
            args,
            log: self.log_path(i),
            _stdin: stdin,
        });
        i
    }

    /// Restarts node `i` (same name, ports and data directory; a new incarnation).
    pub fn restart(&mut self, i: usize) {
        let bin = self.bin.clone();
        self.nodes[i].restart(&bin);
    }

    /// Node `i`'s combined stdout and stderr.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}.log"))
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// The client certificate issued by the cluster CA.
    pub fn client_tls(&self) -> TlsMaterial {
        let ca = self.ca_dir();
        TlsMaterial::load(&ca.join("ca.crt"), &ca.join("app.crt"), &ca.join("app.key")).unwrap()
    }

    pub fn builder(&self, seed: usize) -> ClientBuilder {
        Client::builder()
            .seeds([self.nodes[seed].quic.to_string()])
            .cluster(self.cluster_name.clone())
            .tls(self.client_tls())
    }

    /// A client seeded with node `seed` only.
    pub async fn client(&self, seed: usize) -> Client {
        self.builder(seed).connect().await.unwrap()
    }

    /// The node logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let p = self.dir.path().join(format!("{}.log", n.name));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} (last lines) ---\n", n.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until every running node sees `expect` alive members and a settled ring.
    pub async fn wait_converged(&self, expect: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ok = true;
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let a = n.admin().with_timeout(Duration::from_secs(2));
                let alive = match a.members().await {
                    Ok(m) => m.iter().filter(|m| m.state == "alive").count(),
                    Err(_) => 0,
                };
                let ring = a.ring().await.ok();
                let settled = ring
                    .as_ref()
                    .is_some_and(|r| r.settled && r.shares.len() == expect);
                if alive != expect || !settled {
                    ok = false;
                    break;
                }
            }
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not converge on {expect} members within {timeout:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sum of `cortex_messages_forwarded_total` over the running nodes.
    pub async fn forwarded(&self) -> f64 {
        let mut total = 0.0;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let text = n.admin().metrics().await.unwrap();
            total += sum_metric(&text, "cortex_messages_forwarded_total");
        }
        total
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
