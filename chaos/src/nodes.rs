//! The node processes: certificates, start, signals, restart under the same name. Each node
//! runs with `--exit-with-parent` (its stdin is a pipe from here), so no node outlives a
//! harness that dies without running destructors.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};

use crate::ChaosError;
use crate::net::{Topology, sh};

/// Ports of one node.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// QUIC.
    pub quic: u16,
    /// SWIM gossip.
    pub gossip: u16,
    /// Admin HTTP.
    pub http: u16,
}

/// One node process (the current run of a name).
#[derive(Debug)]
pub struct Node {
    /// `--node-name`.
    pub name: String,
    /// Bound address.
    pub ip: IpAddr,
    /// Ports.
    pub ports: Ports,
    namespace: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    binary: PathBuf,
    logs: PathBuf,
    runs: usize,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    paused: bool,
}

impl Node {
    /// Admin base URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", SocketAddr::new(self.ip, self.ports.http))
    }

    /// QUIC address.
    pub fn quic(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports.quic)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(_)) = c.try_wait()
        {
            self.child = None;
            self.stdin = None;
        }
        self.child.is_some()
    }

    /// True while SIGSTOPped by us.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts a run (a new incarnation under the same name and data directory).
    ///
    /// # Errors
    /// [`ChaosError::Io`] if it cannot be spawned.
    pub fn start(&mut self) -> Result<(), ChaosError> {
        if self.is_running() {
            return Ok(());
        }
        let log = self.logs.join(format!("{}.{}.log", self.name, self.runs));
        self.runs += 1;
        let f = File::create(&log).map_err(|e| ChaosError::io(&log, e))?;
        let f2 = f.try_clone().map_err(|e| ChaosError::io(&log, e))?;
        let mut cmd = match &self.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CORTEX_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().map_err(|e| ChaosError::io(&self.binary, e))?;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| Pid::from_raw(i32::try_from(c.id()).ok()?))
    }

    fn signal(&mut self, sig: Signal) -> Result<(), ChaosError> {
        if !self.is_running() {
            return Err(ChaosError::State(format!(
                "{} is not running: cannot signal it",
                self.name
            )));
        }
        if let Some(pid) = self.pid() {
            rustix::process::kill_process(pid, sig)
                .map_err(|e| ChaosError::State(format!("signalling {}: {e}", self.name)))?;
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            // kill fails only when already reaped; wait settles it either way.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP.
    ///
    /// # Errors
    /// [`ChaosError::State`] if not running.
    pub fn pause(&mut self) -> Result<(), ChaosError> {
        self.signal(Signal::STOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    ///
    /// # Errors
    /// [`ChaosError::State`] if not running.
    pub fn resume(&mut self) -> Result<(), ChaosError> {
        self.paused = false;
        self.signal(Signal::CONT)
    }

    /// SIGTERM (graceful leave), then waits up to `timeout` for the exit, then SIGKILL.
    /// Returns whether it left on its own.
    pub async fn stop_gracefully(&mut self, timeout: Duration) -> bool {
        if self.paused {
            let _ = self.resume();
        }
        if self.signal(Signal::TERM).is_err() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill9();
        false
    }

    /// Where its log files are (`NAME.RUN.log`).
    pub fn log_dir(&self) -> &Path {
        &self.logs
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.resume();
        }
        self.kill9();
    }
}

/// How to build the nodes.
#[derive(Debug, Clone)]
pub struct NodesConfig {
    /// The host binary (`target/debug/examples/bank`).
    pub binary: PathBuf,
    /// Working directory: certificates, data and logs.
    pub dir: PathBuf,
    /// `--settle-time`.
    pub settle_time: Duration,
    /// Extra `run` flags.
    pub extra_args: Vec<String>,
    /// Extra `run` flags for single nodes: (node index, flag).
    pub node_args: Vec<(usize, String)>,
    /// Environment of every node process.
    pub env: Vec<(String, String)>,
}

/// The CA directory and client certificate paths.
#[derive(Debug, Clone)]
pub struct Certs {
    /// `ca.crt`.
    pub ca: PathBuf,
    /// `chaos.crt` (client).
    pub client_cert: PathBuf,
    /// `chaos.key`.
    pub client_key: PathBuf,
}

/// Cluster name every node and client uses.
pub const CLUSTER: &str = "chaos";

/// Makes the CA and certificates, then the `Node`s (not started).
///
/// # Errors
/// [`ChaosError`] if the certificate commands fail or no ports are free.
pub fn build(
    cfg: &NodesConfig,
    topo: &Topology,
    n: usize,
) -> Result<(Vec<Node>, Certs), ChaosError> {
    let ca = cfg.dir.join("ca");
    let ca_s = ca.display().to_string();
    let bin = cfg.binary.display().to_string();
    sh(
        &bin,
        &["certs", "init", "--dir", &ca_s, "--cluster", CLUSTER],
    )?;
    sh(
        &bin,
        &["certs", "issue", "chaos", "--client", "--dir", &ca_s],
    )?;
    let logs = cfg.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| ChaosError::io(&logs, e))?;
    let ports: Vec<Ports> = match topo {
        Topology::Loopback => free_ports(n)?,
        Topology::Netns(_) => vec![
            Ports {
                quic: 7400,
                gossip: 7401,
                http: 7480
            };
            n
        ],
    };
    let mut nodes = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let name = format!("n{i}");
        let ip = topo.node_ip(i);
        sh(
            &bin,
            &[
                "certs",
                "issue",
                &name,
                "--san",
                &ip.to_string(),
                "--dir",
                &ca_s,
            ],
        )?;
        let mut args = vec![
            "run".to_owned(),
            "--exit-with-parent".to_owned(),
            format!("--node-name={name}"),
            format!("--cluster-name={CLUSTER}"),
            format!("--quic-bind={}", SocketAddr::new(ip, p.quic)),
            format!("--gossip-bind={}", SocketAddr::new(ip, p.gossip)),
            format!("--http-bind={}", SocketAddr::new(ip, p.http)),
            format!("--tls-dir={ca_s}"),
            format!("--data-dir={}", cfg.dir.join("data").join(&name).display()),
            format!("--settle-time={}ms", cfg.settle_time.as_millis()),
            "--leave-timeout=3s".to_owned(),
        ];
        // `--node-arg=--log-level=...` (to debug a run) replaces the default.
        if !cfg.extra_args.iter().any(|a| a.starts_with("--log-level")) {
            args.push("--log-level=info".to_owned());
        }
        // Everyone joins through node 0 and node 1 (either may be down at a restart).
        for (s, sp) in ports.iter().enumerate().take(2) {
            if s != i {
                args.push(format!(
                    "--seed={}",
                    SocketAddr::new(topo.node_ip(s), sp.gossip)
                ));
            }
        }
        args.extend(cfg.extra_args.iter().cloned());
        args.extend(
            cfg.node_args
                .iter()
                .filter(|(n, _)| *n == i)
                .map(|(_, a)| a.clone()),
        );
        nodes.push(Node {
            name,
            ip,
            ports: *p,
            namespace: topo.namespace(i),
            args,
            env: cfg.env.clone(),
            binary: cfg.binary.clone(),
            logs: logs.clone(),
            runs: 0,
            child: None,
            stdin: None,
            paused: false,
        });
    }
    Ok((
        nodes,
        Certs {
            ca: ca.join("ca.crt"),
            client_cert: ca.join("chaos.crt"),
            client_key: ca.join("chaos.key"),
        },
    ))
}

fn free_ports(n: usize) -> Result<Vec<Ports>, ChaosError> {
    let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let mut held_u = Vec::new();
    let mut held_t = Vec::new();
    let mut out = Vec::new();
    let port_err = |e: std::io::Error| ChaosError::State(format!("no free port on 127.0.0.1: {e}"));
    for _ in 0..n {
        let q = UdpSocket::bind(lo).map_err(port_err)?;
        let g = UdpSocket::bind(lo).map_err(port_err)?;
        let h = TcpListener::bind(lo).map_err(port_err)?;
        out.push(Ports {
            quic: q.local_addr().map_err(port_err)?.port(),
            gossip: g.local_addr().map_err(port_err)?.port(),
            http: h.local_addr().map_err(port_err)?.port(),
        });
        held_u.extend([q, g]);
        held_t.push(h);
    }
    Ok(out)
}

/// The node host binary: `$CORTEX_CHAOS_NODE_BIN`, else `BIN_DIR/examples/bank` where
/// `BIN_DIR` is `$CORTEX_BIN_DIR` or the `target/debug` beside this executable.
///
/// # Errors
/// [`ChaosError::MissingBinary`] when the file is not there.
pub fn find_host_binary() -> Result<PathBuf, ChaosError> {
    if let Some(p) = std::env::var_os("CORTEX_CHAOS_NODE_BIN") {
        return existing(PathBuf::from(p));
    }
    let dir = match std::env::var_os("CORTEX_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let exe = std::env::current_exe().map_err(|e| ChaosError::io("current exe", e))?;
            // target/debug/cortex-chaos or target/debug/deps/test-binary
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    existing(dir.join("examples").join("bank"))
}

fn existing(p: PathBuf) -> Result<PathBuf, ChaosError> {
    if p.is_file() {
        Ok(p)
    } else {
        Err(ChaosError::MissingBinary { path: p })
    }
}
