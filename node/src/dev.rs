//! `cortex-node dev`: a local cluster of real `cortex-node run` processes on 127.0.0.1.
//!
//! A dev CA, a cluster secret and one certificate per node are made once under
//! `DIR/dev-ca/` and reused later. Node `i` is named `dev-i`, keeps its data in `DIR/dev-i/`
//! and, with base port P, listens on QUIC P+2i, gossip P+2i+1 and HTTP P+80+2i (P = 7400
//! gives node 0 the standard 7400/7401/7480). P+81+2i stays free for node i's gRPC port
//! (7481 by default), so a dev node's HTTP never takes another's gRPC port.
//! `--base-port 0` picks free ports instead.
//! Node 0 is the seed of the others. Their output is forwarded with a `[dev-i]` prefix.
//! The nodes share the machine's cores: each runs `cores / N` tokio workers (at least one)
//! unless the node arguments or the environment choose (`worker_share`).
//!
//! Children never outlive this process: on Ctrl-C or SIGTERM each gets SIGTERM and, past
//! `--stop-timeout`, SIGKILL; every exit path drops the children with `kill_on_drop`; and
//! each child runs with `--exit-with-parent`, watching its stdin (a pipe from here) so that
//! it stops even if this process is killed with SIGKILL. (PR_SET_PDEATHSIG would need an
//! unsafe `pre_exec`, which the workspace forbids.) Children run in their own process
//! groups so that a terminal's Ctrl-C reaches only this process, which then stops them in
//! order.

use std::ffi::OsString;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::certs_cmd::{self, CertsError};
use crate::config::HumanDuration;
use cortex_transport::certs::CertRole;

/// Most nodes `dev` starts (the port layout leaves room for 40).
pub const MAX_DEV_NODES: u16 = 40;
/// Longest forwarded line; longer output is split.
const MAX_LINE: usize = 16 * 1024;

/// `dev` arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DevArgs {
    /// How many nodes to run (1 to 40).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// First port: node i uses QUIC P+2i, gossip P+2i+1, HTTP P+80+2i (P+81+2i is kept for
    /// its gRPC port); 0 picks free ports.
    #[arg(long, default_value_t = crate::config::DEFAULT_QUIC_PORT)]
    pub base_port: u16,
    /// Directory for the dev CA (DIR/dev-ca) and the nodes' data (DIR/dev-0, ...).
    #[arg(long, default_value = ".cortex")]
    pub dir: PathBuf,
    /// How long nodes get to leave after SIGTERM before they are killed.
    #[arg(long, default_value = "20s", value_name = "DURATION")]
    pub stop_timeout: HumanDuration,
    /// Extra arguments for every `cortex-node run`, after `--` (e.g. -- --log-level debug).
    #[arg(last = true)]
    pub node_args: Vec<String>,
}

/// One planned node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevNode {
    /// Node name (`dev-i`).
    pub name: String,
    /// QUIC bind address.
    pub quic: SocketAddr,
    /// Gossip bind address.
    pub gossip: SocketAddr,
    /// Admin HTTP bind address.
    pub http: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
}

/// Why `dev` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// `--nodes` out of range.
    #[error("--nodes {0}: use 1 to {MAX_DEV_NODES}")]
    Nodes(u16),
    /// The port layout does not fit below 65536.
    #[error(
        "--base-port {0} leaves no room for the ports of {1} nodes; use a lower one, or 0 for free ports"
    )]
    Ports(u16, u16),
    /// Picking free ports or spawning failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Making the dev certificates failed.
    #[error(transparent)]
    Certs(#[from] CertsError),
}

impl DevError {
    /// 2 for usage errors, 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            DevError::Nodes(_) | DevError::Ports(..) => 2,
            DevError::Certs(e) => e.exit_code(),
            DevError::Io { .. } => 1,
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// The nodes `args` describes, with concrete ports.
///
/// # Errors
/// [`DevError`] for a bad count or port range, or if free ports cannot be found.
pub fn plan(args: &DevArgs) -> Result<Vec<DevNode>, DevError> {
    if !(1..=MAX_DEV_NODES).contains(&args.nodes) {
        return Err(DevError::Nodes(args.nodes));
    }
    let n = args.nodes;
    let ports: Vec<(u16, u16, u16)> = if args.base_port == 0 {
        free_ports(n)?
    } else {
        let p = u32::from(args.base_port);
        if p + 81 + 2 * u32::from(n) > u32::from(u16::MAX) {
            return Err(DevError::Ports(args.base_port, n));
        }
        // In range: checked just above.
        let at = |off: u32| u16::try_from(p + off).unwrap_or(u16::MAX);
        (0..u32::from(n))
            .map(|i| (at(2 * i), at(2 * i + 1), at(80 + 2 * i)))
            .collect()
    };
    Ok(ports
        .into_iter()
        .enumerate()
        .map(|(i, (q, g, h))| {
            let name = format!("dev-{i}");
            DevNode {
                data_dir: args.dir.join(&name),
                name,
                quic: loopback(q),
                gossip: loopback(g),
                http: loopback(h),
            }
        })
        .collect())
}

/// Asks the OS for distinct free ports, holding every socket until all are chosen so that
/// none repeats. Another process could still take one before the node binds it: a small
/// window, acceptable for a dev cluster.
fn free_ports(n: u16) -> Result<Vec<(u16, u16, u16)>, DevError> {
    let io = |source| DevError::Io {
        what: "cannot find free ports on 127.0.0.1".into(),
        source,
    };
    let mut held_udp = Vec::new();
    let mut held_tcp = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let q = std::net::UdpSocket::bind(loopback(0)).map_err(io)?;
        let g = std::net::UdpSocket::bind(loopback(0)).map_err(io)?;
        let h = std::net::TcpListener::bind(loopback(0)).map_err(io)?;
        out.push((
            q.local_addr().map_err(io)?.port(),
            g.local_addr().map_err(io)?.port(),
            h.local_addr().map_err(io)?.port(),
        ));
        held_udp.extend([q, g]);
        held_tcp.push(h);
    }
    Ok(out)
}

/// Makes the dev CA, cluster secret and node certificates in `ca_dir` where missing
/// (a new CA re-issues every node certificate). Returns true if anything was made.
///
/// # Errors
/// [`CertsError`] if generation or writing fails.
pub fn ensure_certs(ca_dir: &Path, names: &[String]) -> Result<bool, CertsError> {
    let mut made = false;
    let fresh_ca = !ca_dir.join("ca.key").exists() || !ca_dir.join("ca.crt").exists();
    if fresh_ca {
        certs_cmd::init(ca_dir, "dev", true)?;
        made = true;
    }
    for name in names {
        let have = ca_dir.join(format!("{name}.crt")).exists()
            && ca_dir.join(format!("{name}.key")).exists();
        if fresh_ca || !have {
            certs_cmd::issue_to(ca_dir, name, CertRole::Node, &[])?;
            made = true;
        }
    }
    Ok(made)
}

/// The `run` arguments of `node`, joining through `seed` if given.
pub fn run_args(
    node: &DevNode,
    seed: Option<SocketAddr>,
    ca_dir: &Path,
    extra: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "run".into(),
        "--node-name".into(),
        node.name.clone().into(),
        "--quic-bind".into(),
        node.quic.to_string().into(),
        "--gossip-bind".into(),
        node.gossip.to_string().into(),
        "--http-bind".into(),
        node.http.to_string().into(),
        "--data-dir".into(),
        node.data_dir.clone().into(),
        "--tls-dir".into(),
        ca_dir.into(),
        "--exit-with-parent".into(),
    ];
    if let Some(s) = seed {
        a.push("--seed".into());
        a.push(s.to_string().into());
    }
    a.extend(extra.iter().map(OsString::from));
    a
}

/// Tokio worker threads for each of `nodes` nodes sharing `cores`: the cores divided among
/// them, at least one each. `None` when the user may already have chosen: `--worker-threads`
/// or `--config` in `extra`, or `CORTEX_WORKER_THREADS` or `CORTEX_CONFIG` set (`env_set`). Each node defaults to
/// one worker per core, which for a local cluster means `nodes` times too many; on a VM the
/// surplus workers of one process mostly wake each other on one vCPU (BENCHMARKS.md, "Where
/// a burst of asks spends its time").
fn worker_share(nodes: usize, cores: usize, extra: &[String], env_set: bool) -> Option<usize> {
    let chosen = extra.iter().any(|a| {
        a == "--worker-threads"
            || a.starts_with("--worker-threads=")
            || a == "--config"
            || a.starts_with("--config=")
    });
    if chosen || env_set || nodes == 0 {
        return None;
    }
    Some((cores / nodes).max(1))
}

/// Entry point of `cortex-node dev`.
#[allow(clippy::print_stderr)]
pub fn main(args: DevArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cortex-node: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cortex-node: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

struct Running {
    name: String,
    pid: Option<u32>,
    // Held open: the child exits when this pipe closes (`--exit-with-parent`).
    _stdin: Option<ChildStdin>,
    exited: bool,
}

#[allow(clippy::print_stdout)]
async fn run(args: DevArgs) -> Result<u8, DevError> {
    let nodes = plan(&args)?;
    let ca_dir = args.dir.join("dev-ca");
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    if ensure_certs(&ca_dir, &names)? {
        println!("made dev certificates in {}", ca_dir.display());
    }
    let exe = std::env::current_exe().map_err(|source| DevError::Io {
        what: "cannot find this executable".into(),
        source,
    })?;
    let seed = nodes.first().map(|n| n.gossip);
    let workers = worker_share(
        nodes.len(),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        &args.node_args,
        ["CORTEX_WORKER_THREADS", "CORTEX_CONFIG"]
            .iter()
            .any(|v| std::env::var_os(v).is_some()),
    );
    let kill = CancellationToken::new();
    let mut waits: JoinSet<(usize, std::io::Result<ExitStatus>)> = JoinSet::new();
    let mut forwards = JoinSet::new();
    let mut running = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let node_seed = if i == 0 { None } else { seed };
        let mut cmd = Command::new(&exe);
        cmd.args(run_args(node, node_seed, &ca_dir, &args.node_args));
        if let Some(n) = workers {
            cmd.arg("--worker-threads").arg(n.to_string());
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child: Child = cmd.spawn().map_err(|source| DevError::Io {
            what: format!("cannot start {} ({})", node.name, exe.display()),
            source,
        })?;
        let prefix = format!("[{}] ", node.name);
        if let Some(out) = child.stdout.take() {
            forwards.spawn(forward(out, prefix.clone(), false));
        }
        if let Some(err) = child.stderr.take() {
            forwards.spawn(forward(err, prefix, true));
        }
        running.push(Running {
            name: node.name.clone(),
            pid: child.id(),
            _stdin: child.stdin.take(),
            exited: false,
        });
        let kill = kill.clone();
        waits.spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                () = kill.cancelled() => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            (i, status)
        });
    }
    let threads = workers.map_or_else(
        || "worker threads as configured".to_owned(),
        |n| format!("{n} worker thread{} each", if n == 1 { "" } else { "s" }),
    );
    println!(
        "cortex dev cluster: {} nodes ({threads}), certificates in {}",
        nodes.len(),
        ca_dir.display()
    );
    for n in &nodes {
        println!(
            "  {:<7} admin http://{}/  dashboard http://{}/dashboard  quic {}  gossip {}",
            n.name, n.http, n.http, n.quic, n.gossip
        );
    }
    println!("Ctrl-C stops them all.");
    let _ = std::io::stdout().flush();

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DevError::Io {
            what: "cannot watch SIGTERM".into(),
            source,
        })?;
    let mut left = running.len();
    let mut code = 0u8;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            Some(done) = waits.join_next() => {
                if let Ok((i, status)) = done {
                    running[i].exited = true;
                    tracing::warn!(node = %running[i].name, status = ?status, "node exited");
                    report_exit(&running[i].name, &status);
                }
                left -= 1;
                if left == 0 {
                    code = 1;
                    break;
                }
            }
        }
    }
    stop_all(&mut running, &mut waits, args.stop_timeout.0, &kill).await;
    // Children are gone, so their pipes are at EOF: the forwarders end by themselves.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while forwards.join_next().await.is_some() {}
    })
    .await;
    forwards.shutdown().await;
    Ok(code)
}

#[allow(clippy::print_stderr)]
fn report_exit(name: &str, status: &std::io::Result<ExitStatus>) {
    match status {
        Ok(s) => eprintln!("cortex-node dev: {name} exited ({s})"),
        Err(e) => eprintln!("cortex-node dev: cannot wait for {name}: {e}"),
    }
}

/// SIGTERM to every live child, then SIGKILL past `deadline` (or on a second Ctrl-C);
/// returns when all are reaped.
async fn stop_all(
    running: &mut [Running],
    waits: &mut JoinSet<(usize, std::io::Result<ExitStatus>)>,
    deadline: Duration,
    kill: &CancellationToken,
) {
    for r in running.iter().filter(|r| !r.exited) {
        let pid = r
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let graceful = async {
        while let Some(done) = waits.join_next().await {
            if let Ok((i, status)) = done {
                running[i].exited = true;
                report_exit(&running[i].name, &status);
            }
        }
    };
    // A second Ctrl-C means "now": skip the rest of the grace period.
    let finished = tokio::select! {
        r = tokio::time::timeout(deadline, graceful) => r.is_ok(),
        _ = tokio::signal::ctrl_c() => false,
    };
    if !finished {
        kill.cancel();
        while let Some(done) = waits.join_next().await {
            if let Ok((i, status)) = done {
                report_exit(&running[i].name, &status);
            }
        }
    }
}

/// Copies lines from a child's pipe to ours, each with `prefix`.
async fn forward<R: AsyncRead + Unpin>(reader: R, prefix: String, to_stderr: bool) {
    let mut r = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        r.consume(take);
        if end || line.len() >= MAX_LINE {
            emit(&prefix, &line, to_stderr);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&prefix, &line, to_stderr);
    }
}

fn emit(prefix: &str, line: &[u8], to_stderr: bool) {
    let mut text = Vec::with_capacity(prefix.len() + line.len() + 1);
    text.extend_from_slice(prefix.as_bytes());
    text.extend_from_slice(line);
    if !line.ends_with(b"\n") {
        text.push(b'\n');
    }
    // A closed terminal is no reason to stop the cluster: drop the line.
    let _ = if to_stderr {
        std::io::stderr().lock().write_all(&text)
    } else {
        std::io::stdout().lock().write_all(&text)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: u16, base_port: u16) -> DevArgs {
        DevArgs {
            nodes,
            base_port,
            dir: PathBuf::from("/tmp/x"),
            stop_timeout: HumanDuration(Duration::from_secs(1)),
            node_args: vec![],
        }
    }

    #[test]
    fn fixed_port_layout_starts_at_the_defaults() {
        let p = plan(&args(3, 7400)).unwrap();
        assert_eq!(p[0].quic, loopback(7400));
        assert_eq!(p[0].gossip, loopback(7401));
        assert_eq!(p[0].http, loopback(7480));
        assert_eq!(p[2].quic, loopback(7404));
        assert_eq!(p[2].gossip, loopback(7405));
        assert_eq!(p[2].http, loopback(7484));
        // Node 0's gRPC port (HTTP + 1, 7481 by default) is nobody's HTTP port.
        assert!(p.iter().all(|n| n.http != loopback(7481)));
        assert_eq!(p[1].name, "dev-1");
        assert_eq!(p[1].data_dir, Path::new("/tmp/x/dev-1"));
        let p = plan(&args(40, 7400)).unwrap();
        let mut all: Vec<u16> = p
            .iter()
            .flat_map(|n| [n.quic.port(), n.gossip.port(), n.http.port()])
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 120, "ports are distinct");
    }

    #[test]
    fn bad_counts_and_ports_are_usage_errors() {
        assert_eq!(plan(&args(0, 7400)).unwrap_err().exit_code(), 2);
        assert_eq!(plan(&args(41, 7400)).unwrap_err().exit_code(), 2);
        assert_eq!(plan(&args(3, 65500)).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn free_ports_are_distinct() {
        let p = plan(&args(4, 0)).unwrap();
        let mut udp: Vec<u16> = p
            .iter()
            .flat_map(|n| [n.quic.port(), n.gossip.port()])
            .collect();
        udp.sort_unstable();
        udp.dedup();
        assert_eq!(udp.len(), 8);
        assert!(p.iter().all(|n| n.http.port() != 0));
    }

    #[test]
    fn certs_are_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["dev-0".to_string(), "dev-1".to_string()];
        assert!(ensure_certs(dir.path(), &names).unwrap());
        let before = std::fs::read(dir.path().join("dev-1.crt")).unwrap();
        assert!(
            !ensure_certs(dir.path(), &names).unwrap(),
            "second run reuses"
        );
        assert_eq!(std::fs::read(dir.path().join("dev-1.crt")).unwrap(), before);
        assert!(dir.path().join("cluster.secret").exists());
        let more = vec![
            "dev-0".to_string(),
            "dev-1".to_string(),
            "dev-2".to_string(),
        ];
        assert!(ensure_certs(dir.path(), &more).unwrap());
        assert_eq!(std::fs::read(dir.path().join("dev-1.crt")).unwrap(), before);
    }

    #[test]
    fn nodes_share_the_cores_unless_the_user_chose() {
        assert_eq!(worker_share(3, 2, &[], false), Some(1));
        assert_eq!(worker_share(2, 8, &[], false), Some(4));
        assert_eq!(worker_share(3, 8, &[], false), Some(2));
        assert_eq!(worker_share(1, 4, &[], false), Some(4));
        let chose = |a: &str| worker_share(3, 8, &[a.to_string(), "4".into()], false);
        assert_eq!(chose("--worker-threads"), None);
        assert_eq!(chose("--worker-threads=4"), None);
        assert_eq!(chose("--config"), None);
        assert_eq!(
            worker_share(3, 8, &["--log-level".into(), "debug".into()], false),
            Some(2)
        );
        assert_eq!(worker_share(3, 8, &[], true), None);
    }

    #[test]
    fn run_args_seed_others_through_node_zero() {
        let p = plan(&args(2, 7400)).unwrap();
        let a = run_args(
            &p[1],
            Some(p[0].gossip),
            Path::new("/ca"),
            &["--log-level".into(), "debug".into()],
        );
        let a: Vec<String> = a.into_iter().map(|s| s.into_string().unwrap()).collect();
        let joined = a.join(" ");
        assert!(joined.starts_with("run --node-name dev-1 "), "{joined}");
        assert!(joined.contains("--seed 127.0.0.1:7401"), "{joined}");
        assert!(joined.contains("--tls-dir /ca"), "{joined}");
        assert!(joined.contains("--exit-with-parent"), "{joined}");
        assert!(joined.ends_with("--log-level debug"), "{joined}");
    }
}
