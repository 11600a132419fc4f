//! `cortex-node dev` starts real node processes that find each other through node 0, and
//! its children never outlive it: not on SIGTERM (graceful) and not on SIGKILL (they
//! watch their stdin pipe).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cortex-node");
const DEADLINE: Duration = Duration::from_secs(90);

struct Dev {
    child: Child,
    admin: Vec<SocketAddr>,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(nodes: u16) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dev.log");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "dev",
        "--nodes",
        &nodes.to_string(),
        "--base-port",
        "0",
        "--stop-timeout",
        "30s",
    ])
    .arg("--dir")
    .arg(dir.path().join("state"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CORTEX_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Drains stdout for the whole run so that the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Receiver gone: keep draining.
            }
        }
    });
    let mut admin = Vec::new();
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no start-up banner; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        if let Some(rest) = line.split("admin http://").nth(1) {
            admin.push(rest.split('/').next().unwrap().parse().unwrap());
        }
        if line.contains("Ctrl-C stops them all") {
            break;
        }
    }
    assert_eq!(admin.len(), usize::from(nodes));
    Dev {
        child,
        admin,
        log,
        _dir: dir,
    }
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

fn poll<T>(what: &str, log: &std::path::Path, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} within {DEADLINE:?}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Pids whose parent is `ppid`, from /proc.
fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_string()) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// Gone, or a zombie waiting for whoever adopted it.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, a)| a.split_whitespace().next().map(|s| s == "Z" || s == "X"))
            .unwrap_or(true),
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

fn wait_cluster(dev: &Dev) -> Vec<u32> {
    for &addr in &dev.admin {
        poll("health", &dev.log, || {
            get(addr, "/health").filter(|(s, _)| *s == 200)
        });
    }
    let n = dev.admin.len();
    poll("every node in node 0's members", &dev.log, || {
        let (s, body) = get(dev.admin[0], "/cluster/members")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (s == 200 && v.as_array()?.len() == n).then_some(())
    });
    let kids = children_of(dev.child.id());
    assert_eq!(kids.len(), n, "one child process per node");
    kids
}

#[test]
fn sigterm_stops_every_node_gracefully() {
    let mut dev = start_dev(2);
    let kids = wait_cluster(&dev);
    signal(dev.child.id(), rustix::process::Signal::TERM);
    let log = dev.log.clone();
    let status = poll("dev to exit", &log, || dev.child.try_wait().unwrap());
    assert_eq!(
        status.code(),
        Some(0),
        "log:\n{}",
        std::fs::read_to_string(&dev.log).unwrap()
    );
    for pid in kids {
        assert!(is_gone(pid), "node process {pid} outlived dev");
    }
    let log = std::fs::read_to_string(&dev.log).unwrap();
    assert!(
        log.contains("[dev-0]") && log.contains("[dev-1]"),
        "logs are prefixed:\n{log}"
    );
    assert!(log.contains("dev-1 exited (exit status: 0)"), "{log}");
}

#[test]
fn children_stop_when_dev_is_killed() {
    let dev = start_dev(2);
    let kids = wait_cluster(&dev);
    signal(dev.child.id(), rustix::process::Signal::KILL);
    for pid in kids {
        poll(
            "node process to stop after dev was killed",
            &dev.log,
            || is_gone(pid).then_some(()),
        );
    }
}
