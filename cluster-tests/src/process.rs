//! One node process: how it is started, observed, signalled, restarted and cleaned up.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{
    CertAuthority, HarnessError, HttpResponse, Member, Ports, free_ports_on, http_get, poll_until,
};

/// Timeout of one admin HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Launch attempts when harness-chosen ports turn out to be taken.
const LAUNCH_ATTEMPTS: usize = 4;
/// Log lines per run printed when a test panics.
const DUMP_LINES: usize = 200;

/// Which certificate a node presents.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TlsSource {
    /// A certificate from the cluster's own CA (issued on first start).
    #[default]
    Cluster,
    /// A certificate from this CA instead (issued on first start), e.g. another cluster's:
    /// the node trusts that CA and presents a certificate signed by it.
    Authority(CertAuthority),
}

/// How to run one node. Start from [`crate::TestCluster::spec`] (cluster defaults filled in)
/// or [`NodeSpec::new`] and adjust the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeSpec {
    /// `--node-name`.
    pub name: String,
    /// Address all three endpoints bind (and advertise).
    pub ip: IpAddr,
    /// Fixed ports; `None` lets the harness pick free ones (and pick again if one is taken
    /// by the time the node binds it).
    pub ports: Option<Ports>,
    /// `--seed` values (`host:port`).
    pub seeds: Vec<String>,
    /// Certificate to present.
    pub tls: TlsSource,
    /// `--cluster-secret-file`; `None` uses the `cluster.secret` of the CA in `tls`.
    pub secret_file: Option<PathBuf>,
    /// `--gossip-advertise`, when others must send gossip elsewhere (a relay).
    pub gossip_advertise: Option<SocketAddr>,
    /// `--cluster-name`.
    pub cluster_name: String,
    /// `--settle-time`.
    pub settle_time: Duration,
    /// `--leave-timeout`.
    pub leave_timeout: Duration,
    /// `--log-level`.
    pub log_level: String,
    /// More arguments after the harness's own.
    pub extra_args: Vec<String>,
    /// Extra environment variables (the harness removes every inherited `CORTEX_*`).
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    /// A node named `name` on 127.0.0.1 with harness-chosen ports, no seeds, the cluster CA,
    /// cluster `cortex-test`, settle time 500 ms, leave timeout 5 s, log level `info`.
    pub fn new(name: &str) -> Self {
        NodeSpec {
            name: name.to_owned(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: None,
            seeds: Vec::new(),
            tls: TlsSource::Cluster,
            secret_file: None,
            gossip_advertise: None,
            cluster_name: "cortex-test".to_owned(),
            settle_time: Duration::from_millis(500),
            leave_timeout: Duration::from_secs(5),
            log_level: "info".to_owned(),
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A node process. Dropping it kills the process (SIGKILL) and, while a test panics,
/// prints the end of each of its logs to stderr.
#[derive(Debug)]
pub struct NodeProcess {
    spec: NodeSpec,
    binary: PathBuf,
    ca: CertAuthority,
    dir: PathBuf,
    ports: Ports,
    child: Option<Child>,
    // Held so the node's stdin stays open; it runs with --exit-with-parent, so when this
    // process dies without running destructors the pipe closes and the node stops itself.
    stdin: Option<ChildStdin>,
    logs: Vec<PathBuf>,
    started_at: Option<Instant>,
}

impl NodeProcess {
    /// Spawns the node (without waiting for it): `binary run ...` with logs in
    /// `dir/NAME.RUN.log` and its data directory in `dir/data/NAME`. `ca` is the cluster CA
    /// (used unless `spec.tls` names another). Follow with [`NodeProcess::wait_healthy`].
    ///
    /// # Errors
    /// [`HarnessError`] if certificates cannot be issued, ports found or the process spawned.
    pub fn spawn(
        spec: NodeSpec,
        binary: &Path,
        ca: &CertAuthority,
        dir: &Path,
    ) -> Result<Self, HarnessError> {
        let ports = match spec.ports {
            Some(p) => p,
            None => free_ports_on(&[spec.ip])?,
        };
        let mut node = NodeProcess {
            spec,
            binary: binary.to_path_buf(),
            ca: ca.clone(),
            dir: dir.to_path_buf(),
            ports,
            child: None,
            stdin: None,
            logs: Vec::new(),
            started_at: None,
        };
        let authority = node.authority().clone();
        if !authority.cert(&node.spec.name).is_file() {
            authority.issue(&node.spec.name)?;
        }
        node.launch()?;
        Ok(node)
    }

    /// Spawns the node and waits until its admin endpoint answers (see
    /// [`NodeProcess::wait_healthy`]).
    ///
    /// # Errors
    /// As [`NodeProcess::spawn`] and [`NodeProcess::wait_healthy`].
    pub fn start(
        spec: NodeSpec,
        binary: &Path,
        ca: &CertAuthority,
        dir: &Path,
        timeout: Duration,
    ) -> Result<Self, HarnessError> {
        let mut node = Self::spawn(spec, binary, ca, dir)?;
        node.wait_healthy(timeout)?;
        Ok(node)
    }

    fn authority(&self) -> &CertAuthority {
        match &self.spec.tls {
            TlsSource::Cluster => &self.ca,
            TlsSource::Authority(a) => a,
        }
    }

    /// The full argument list of `run`.
    pub fn args(&self) -> Vec<String> {
        let s = &self.spec;
        let a = self.authority();
        let p = |x: PathBuf| x.display().to_string();
        let mut args = vec![
            "run".to_owned(),
            "--exit-with-parent".to_owned(),
            format!("--node-name={}", s.name),
            format!("--cluster-name={}", s.cluster_name),
            format!("--quic-bind={}", SocketAddr::new(s.ip, self.ports.quic)),
            format!("--gossip-bind={}", SocketAddr::new(s.ip, self.ports.gossip)),
            format!("--http-bind={}", SocketAddr::new(s.ip, self.ports.http)),
            format!("--tls-ca={}", p(a.ca_cert())),
            format!("--tls-cert={}", p(a.cert(&s.name))),
            format!("--tls-key={}", p(a.key(&s.name))),
            format!(
                "--cluster-secret-file={}",
                p(s.secret_file.clone().unwrap_or_else(|| a.secret_file()))
            ),
            format!("--data-dir={}", p(self.data_dir())),
            format!("--settle-time={}ms", s.settle_time.as_millis()),
            format!("--leave-timeout={}ms", s.leave_timeout.as_millis()),
            format!("--log-level={}", s.log_level),
        ];
        args.extend(s.seeds.iter().map(|x| format!("--seed={x}")));
        if let Some(adv) = s.gossip_advertise {
            args.push(format!("--gossip-advertise={adv}"));
        }
        args.extend(s.extra_args.iter().cloned());
        args
    }

    fn launch(&mut self) -> Result<(), HarnessError> {
        let run = self.logs.len();
        let log_path = self.dir.join(format!("{}.{run}.log", self.spec.name));
        let log = File::create(&log_path)
            .map_err(|e| HarnessError::io(format!("creating {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CORTEX_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.spec.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("starting {}", self.binary.display()), e))?;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.logs.push(log_path);
        self.started_at = Some(Instant::now());
        Ok(())
    }

    /// Waits until `GET /health` answers 200. If the process exits first because a
    /// harness-chosen port was taken meanwhile, it is started again on new ports.
    ///
    /// # Errors
    /// [`HarnessError::Exited`] with the log tail if it exits for another reason;
    /// [`HarnessError::Timeout`] if it does not answer within `timeout`.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        for attempt in 0..LAUNCH_ATTEMPTS {
            let what = format!("{} to answer GET /health", self.spec.name);
            let r = poll_until(timeout, &what, || match self.exit_status() {
                Some(status) => Ok(Some(status)),
                None => match self.get("/health") {
                    Ok(r) if r.status == 200 => Ok(None),
                    Ok(r) => Err(format!("status {}", r.status)),
                    Err(e) => Err(e.to_string()),
                },
            })?;
            let Some(status) = r else { return Ok(()) };
            let tail = self.log_tail(20);
            let port_taken = tail.contains("ddress already in use") || tail.contains("cannot bind");
            if !port_taken || self.spec.ports.is_some() || attempt + 1 == LAUNCH_ATTEMPTS {
                return Err(HarnessError::Exited {
                    name: self.spec.name.clone(),
                    status: status.to_string(),
                    during: "start-up".into(),
                    log_tail: tail,
                });
            }
            self.ports = free_ports_on(&[self.spec.ip])?;
            self.launch()?;
        }
        Err(HarnessError::State(
            "unreachable: launch attempts exhausted".into(),
        ))
    }

    /// Kills the process (if running) with SIGKILL and starts it again under the same name,
    /// data directory and ports (new ports if those were harness-chosen and got taken): the
    /// node comes back with a higher incarnation. Waits until it answers `/health`.
    ///
    /// # Errors
    /// As [`NodeProcess::wait_healthy`].
    pub fn restart(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        self.kill9()?;
        self.launch()?;
        self.wait_healthy(timeout)
    }

    /// The spec it runs with.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// Admin HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, self.ports.http)
    }

    /// Gossip (SWIM) address it binds.
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, self.ports.gossip)
    }

    /// QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        SocketAddr::new(self.spec.ip, self.ports.quic)
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data").join(&self.spec.name)
    }

    /// When the current run was spawned.
    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// The process id of the current run, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the current run has ended (reaping it), `None` while it runs or
    /// when no run is current.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.stdin = None;
        Some(status)
    }

    /// True while the current run has not exited.
    pub fn is_running(&mut self) -> bool {
        // exit_status reaps (and forgets) a run that has ended.
        let _ = self.exit_status();
        self.child.is_some()
    }

    /// SIGKILL, then reaps the process. Does nothing if it is not running.
    ///
    /// # Errors
    /// [`HarnessError::Io`] if waiting for it fails.
    pub fn kill9(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            // kill fails only if the process was already reaped; wait settles it either way.
            let _ = child.kill();
            // Only now close stdin: closed first, it would make the node (which runs with
            // --exit-with-parent) start a graceful leave before SIGKILL lands.
            self.stdin = None;
            child
                .wait()
                .map_err(|e| HarnessError::io(format!("waiting for {}", self.spec.name), e))?;
        }
        self.stdin = None;
        Ok(())
    }

    /// Sends SIGTERM (a graceful leave); see [`NodeProcess::wait_exit`].
    ///
    /// # Errors
    /// [`HarnessError::State`] if it is not running; [`HarnessError::Command`] if `kill` fails.
    pub fn terminate(&mut self) -> Result<(), HarnessError> {
        self.signal("TERM")
    }

    /// Sends SIGSTOP: the process freezes (and stops answering probes).
    ///
    /// # Errors
    /// As [`NodeProcess::terminate`].
    pub fn pause(&mut self) -> Result<(), HarnessError> {
        self.signal("STOP")
    }

    /// Sends SIGCONT after [`NodeProcess::pause`].
    ///
    /// # Errors
    /// As [`NodeProcess::terminate`].
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        self.signal("CONT")
    }

    /// Sends `signal` (a name `kill -s` knows: TERM, STOP, CONT, INT, ...) with the `kill`
    /// command, only to the current, not yet reaped run (so never to a reused pid).
    ///
    /// # Errors
    /// [`HarnessError::State`] if it is not running; [`HarnessError::Command`] if `kill` fails.
    pub fn signal(&mut self, signal: &str) -> Result<(), HarnessError> {
        if !self.is_running() {
            return Err(HarnessError::State(format!(
                "cannot send SIG{signal} to {}: it is not running",
                self.spec.name
            )));
        }
        let pid = self.pid().map(|p| p.to_string()).unwrap_or_default();
        let out = Command::new("kill")
            .args(["-s", signal, &pid])
            .output()
            .map_err(|e| HarnessError::io("running kill", e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HarnessError::Command {
                command: format!("kill -s {signal} {pid}"),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Waits until the current run exits and returns its status.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] if it still runs after `timeout`; [`HarnessError::State`]
    /// if no run is current.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        if self.child.is_none() {
            return Err(HarnessError::State(format!(
                "{} is not running",
                self.spec.name
            )));
        }
        let what = format!("{} to exit", self.spec.name);
        poll_until(timeout, &what, || {
            self.exit_status().ok_or_else(|| "still running".to_owned())
        })
    }

    /// `GET path` on its admin endpoint.
    ///
    /// # Errors
    /// [`HarnessError::Http`].
    pub fn get(&self, path: &str) -> Result<HttpResponse, HarnessError> {
        http_get(self.http_addr(), path, HTTP_TIMEOUT)
    }

    /// `GET /cluster/members`, parsed.
    ///
    /// # Errors
    /// [`HarnessError::Http`] if the request fails, answers non-200 or unparsable JSON.
    pub fn members(&self) -> Result<Vec<Member>, HarnessError> {
        let r = self.get("/cluster/members")?;
        let fail = |detail: String| HarnessError::Http {
            addr: self.http_addr(),
            path: "/cluster/members".into(),
            detail,
        };
        if r.status != 200 {
            return Err(fail(format!("status {}: {}", r.status, r.body)));
        }
        serde_json::from_str(&r.body).map_err(|e| fail(format!("bad JSON ({e}): {}", r.body)))
    }

    /// This node's own entry in its member list (name and incarnation of the current run).
    ///
    /// # Errors
    /// As [`NodeProcess::members`], or [`HarnessError::State`] if it does not list itself.
    pub fn own_member(&self) -> Result<Member, HarnessError> {
        self.members()?
            .into_iter()
            .find(|m| m.local)
            .ok_or_else(|| HarnessError::State(format!("{} does not list itself", self.spec.name)))
    }

    /// True if `GET /ready` answers 200 (joined and settled).
    pub fn is_ready(&self) -> bool {
        self.get("/ready").is_ok_and(|r| r.status == 200)
    }

    /// `GET /metrics` (Prometheus text).
    ///
    /// # Errors
    /// [`HarnessError::Http`].
    pub fn metrics(&self) -> Result<String, HarnessError> {
        let r = self.get("/metrics")?;
        if r.status == 200 {
            Ok(r.body)
        } else {
            Err(HarnessError::Http {
                addr: self.http_addr(),
                path: "/metrics".into(),
                detail: format!("status {}", r.status),
            })
        }
    }

    /// The log files, one per run, oldest first.
    pub fn log_paths(&self) -> &[PathBuf] {
        &self.logs
    }

    /// The log of the current (latest) run.
    pub fn log(&self) -> String {
        self.logs
            .last()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Every run's log, each under a `==== NAME run N ====` heading.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.logs.iter().enumerate() {
            out.push_str(&format!(
                "==== {} run {i} ({}) ====\n",
                self.spec.name,
                p.display()
            ));
            out.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        out
    }

    /// The last `n` lines of the current run's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    #[allow(clippy::print_stderr)] // shown by the test runner next to the failure
    fn dump(&self) {
        for (i, p) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            eprintln!(
                "==== {} run {i}: last {DUMP_LINES} lines of {} ====\n{}",
                self.spec.name,
                p.display(),
                tail(&text, DUMP_LINES)
            );
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
        if std::thread::panicking() {
            self.dump();
        }
    }
}
