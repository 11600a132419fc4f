//! `remote_bench bench`: runs every measurement as separate processes of this executable on
//! 127.0.0.1, one stage after another, and prints a JSON summary and a markdown table:
//! 1. raw quinn: `raw-server` and `raw-client` (the baselines);
//! 2. a two-node cluster whose node n0 runs the `pair` workload against n1 (remote tell
//!    throughput, ask round trips closed-loop and open-loop);
//! 3. a three-node cluster and `forward-client`: asks straight to the owner and through a
//!    node that forwards.
//!
//! Flags: `--bench-only=raw,pair,forward`, `--bench-tells`, `--bench-msgs` (raw messages),
//! `--bench-rate`, `--bench-secs`, `--bench-senders`, `--bench-actors`, `--bench-workers`
//! (tokio worker threads of every process of the raw and pair stages; default one per core),
//! `--bench-driver=single|tasks` (how the pair stage's open loop issues asks: from its own
//! task, like the raw baseline, by default; or a spawned task per ask; see `openloop.rs`),
//! `--bench-pacing=even|burst` (open loops: one request every `1/rate` s, by default, or
//! `rate/1000` at the start of every millisecond; see `pacer.rs`), `--bench-udp-buffer=BYTES`
//! (the UDP socket buffers of every process, nodes and raw quinn alike; default the
//! transport's, `cortex_transport::DEFAULT_UDP_BUFFER`; 0: the OS default).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cortex_transport::certs::CertRole;
use serde_json::{Value, json};

use crate::host::DriverOpts;
use crate::stats::PREFIX;

/// A child process of this executable whose `BENCH` lines arrive on a channel. Killed on drop.
struct Proc {
    name: String,
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Proc {
    fn spawn(name: &str, args: &[String], log: &Path) -> Result<Proc, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, events) = mpsc::sync_channel(1024);
        // The reader ends when the child's stdout closes (it exits or is killed).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(j) = line.strip_prefix(PREFIX)
                    && let Ok(v) = serde_json::from_str::<Value>(j)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            child,
            events,
        })
    }

    /// The next event named `want` (an `error` event fails), within `within`.
    fn wait_for(&self, want: &str, within: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == want => return Ok(v),
                Ok(v) if v["event"] == "error" => return Err(format!("{}: {v}", self.name)),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no {want} event within {within:?}", self.name));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{}: exited before its {want} event", self.name));
                }
            }
        }
    }
}

/// CPU time (user + system) a process has used so far, in microseconds: a figure that,
/// unlike throughput, does not depend on how busy the rest of the machine is.
fn cpu_us(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // /proc reports clock ticks of USER_HZ, which Linux fixes at 100 for user space.
    Ok(ticks * 10_000)
}

/// Context switches (voluntary: a thread parked, e.g. a tokio worker with nothing to do;
/// involuntary: preempted) of every thread of a process so far. Per message, the voluntary
/// count is roughly how many times a thread went to sleep and had to be woken (a futex or
/// epoll wake-up) to move the message on. Threads that exited are not counted.
fn ctx_switches(pid: u32) -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut sums = (0, 0);
    for t in dir.flatten() {
        let Ok(st) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for line in st.lines() {
            let num = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse().ok());
            if line.starts_with("voluntary_ctxt_switches") {
                sums.0 += num(line).unwrap_or(0);
            } else if line.starts_with("nonvoluntary_ctxt_switches") {
                sums.1 += num(line).unwrap_or(0);
            }
        }
    }
    sums
}

/// What a process had used at one moment: CPU µs, voluntary and involuntary switches.
#[derive(Clone, Copy)]
struct Usage {
    cpu_us: u64,
    vol: u64,
    invol: u64,
}

/// CPU microseconds and context switches per message used by `procs` together between two
/// samples.
fn cpu_per_msg(before: &[Usage], after: &[Usage], msgs: f64) -> Value {
    let d = |f: fn(&Usage) -> u64| -> Vec<u64> {
        after
            .iter()
            .zip(before)
            .map(|(a, b)| f(a).saturating_sub(f(b)))
            .collect()
    };
    let cpu = d(|u| u.cpu_us);
    let vol = d(|u| u.vol);
    let invol = d(|u| u.invol);
    let per = |v: &[u64]| ((v.iter().sum::<u64>() as f64 / msgs.max(1.0)) * 100.0).round() / 100.0;
    json!({
        "cpu_us_total": cpu.iter().sum::<u64>(),
        "cpu_us_per_msg": per(&cpu),
        "per_process_us": cpu,
        "voluntary_switches_per_msg": per(&vol),
        "involuntary_switches_per_msg": per(&invol),
        "voluntary_switches_per_process": vol,
    })
}

fn sample(procs: &[&Proc]) -> Result<Vec<Usage>, String> {
    procs
        .iter()
        .map(|p| {
            let pid = p.child.id();
            let (vol, invol) = ctx_switches(pid);
            Ok(Usage {
                cpu_us: cpu_us(pid)?,
                vol,
                invol,
            })
        })
        .collect()
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stage of the run: it adds its results to the summary.
type Stage = fn(&Env, &DriverOpts, &mut serde_json::Map<String, Value>) -> Result<(), String>;

struct NodePorts {
    quic: SocketAddr,
    gossip: SocketAddr,
    http: SocketAddr,
}

fn free_ports() -> Result<NodePorts, String> {
    let udp = || {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| e.to_string())
    };
    let http = TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| e.to_string())?;
    Ok(NodePorts {
        quic: udp()?,
        gossip: udp()?,
        http,
    })
}

struct Env {
    dir: PathBuf,
    certs: PathBuf,
    /// `--bench-udp-buffer`, given to every node as `--udp-buffer-size`.
    udp_buffer: Option<String>,
}

impl Env {
    fn node_args(&self, name: &str, p: &NodePorts, seed: Option<SocketAddr>) -> Vec<String> {
        let c = |f: &str| self.certs.join(f).display().to_string();
        let mut a = vec![
            "run".to_owned(),
            "--exit-with-parent".to_owned(),
            format!("--node-name={name}"),
            "--cluster-name=bench".to_owned(),
            format!("--quic-bind={}", p.quic),
            format!("--gossip-bind={}", p.gossip),
            format!("--http-bind={}", p.http),
            format!("--tls-ca={}", c("ca.crt")),
            format!("--tls-cert={}", c(&format!("{name}.crt"))),
            format!("--tls-key={}", c(&format!("{name}.key"))),
            format!("--cluster-secret-file={}", c("cluster.secret")),
            format!("--data-dir={}", self.dir.join("data").join(name).display()),
            "--settle-time=300ms".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        if let Some(s) = seed {
            a.push(format!("--seed={s}"));
        }
        if let Some(b) = &self.udp_buffer {
            a.push(format!("--udp-buffer-size={b}"));
        }
        a
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }
}

fn pass_on(o: &DriverOpts, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| o.text(k).map(|v| format!("--bench-{k}={v}")))
        .collect()
}

fn wait_ready(http: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match crate::forward::http_get(http, "/ready") {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(format!("{http} not ready: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn raw(env: &Env, o: &DriverOpts, out: &mut serde_json::Map<String, Value>) -> Result<(), String> {
    let certs = format!("--bench-certs={}", env.certs.display());
    let mut server_args = vec!["raw-server".into(), certs.clone(), "--bench-name=n1".into()];
    server_args.extend(pass_on(o, &["workers"]));
    let server = Proc::spawn("raw-server", &server_args, &env.log("raw-server"))?;
    let addr = server.wait_for("listening", Duration::from_secs(30))?;
    let mut args = vec![
        "raw-client".into(),
        certs,
        "--bench-name=n0".into(),
        "--bench-server-name=n1".into(),
        format!("--bench-addr={}", addr["addr"].as_str().unwrap_or_default()),
    ];
    args.extend(pass_on(
        o,
        &[
            "msgs",
            "rate",
            "secs",
            "round-trips",
            "workers",
            "pacing",
            "udp-buffer",
        ],
    ));
    let client = Proc::spawn("raw-client", &args, &env.log("raw-client"))?;
    let long = Duration::from_secs(600);
    client.wait_for("throughput_start", long)?;
    let c0 = sample(&[&server, &client])?;
    let mut t = client.wait_for("raw_throughput", long)?;
    let c1 = sample(&[&server, &client])?;
    t["cpu"] = cpu_per_msg(&c0, &c1, t["counted"].as_f64().unwrap_or(0.0));
    out.insert("raw_throughput".into(), t);
    out.insert("raw_closed".into(), client.wait_for("raw_closed", long)?);
    let c2 = sample(&[&server, &client])?;
    let mut o = client.wait_for("raw_open", long)?;
    let c3 = sample(&[&server, &client])?;
    o["cpu"] = cpu_per_msg(&c2, &c3, o["ok"].as_f64().unwrap_or(0.0) * 1.1);
    out.insert("raw_open".into(), o);
    Ok(())
}

fn pair(env: &Env, o: &DriverOpts, out: &mut serde_json::Map<String, Value>) -> Result<(), String> {
    let p1 = free_ports()?;
    let mut args1 = env.node_args("n1", &p1, None);
    args1.extend(pass_on(o, &["workers"]));
    let n1 = Proc::spawn("n1", &args1, &env.log("pair-n1"))?;
    let p0 = free_ports()?;
    let mut args = env.node_args("n0", &p0, Some(p1.gossip));
    args.extend(["--workload=pair".into(), "--bench-peer=n1".into()]);
    args.extend(pass_on(
        o,
        &[
            "tells",
            "senders",
            "actors",
            "rate",
            "secs",
            "round-trips",
            "driver",
            "workers",
            "pacing",
        ],
    ));
    let n0 = Proc::spawn("n0", &args, &env.log("pair-n0"))?;
    let long = Duration::from_secs(600);
    n0.wait_for("tell_start", long)?;
    let c0 = sample(&[&n0, &n1])?;
    let mut t = n0.wait_for("tell", long)?;
    let c1 = sample(&[&n0, &n1])?;
    t["cpu"] = cpu_per_msg(&c0, &c1, t["delivered"].as_f64().unwrap_or(0.0));
    out.insert("tell".into(), t);
    out.insert("ask_closed".into(), n0.wait_for("ask_closed", long)?);
    let c2 = sample(&[&n0, &n1])?;
    let mut o = n0.wait_for("ask_open", long)?;
    let c3 = sample(&[&n0, &n1])?;
    // The open loop's warm-up second is inside the sample: 11 s of asks for 10 measured.
    o["cpu"] = cpu_per_msg(&c2, &c3, o["ok"].as_f64().unwrap_or(0.0) * 1.1);
    out.insert("ask_open".into(), o);
    Ok(())
}

fn forward(
    env: &Env,
    o: &DriverOpts,
    out: &mut serde_json::Map<String, Value>,
) -> Result<(), String> {
    let ports: Vec<NodePorts> = (0..3).map(|_| free_ports()).collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let name = format!("n{i}");
        let seed = (i > 0).then_some(ports[0].gossip);
        nodes.push(Proc::spawn(
            &name,
            &env.node_args(&name, p, seed),
            &env.log(&format!("fwd-{name}")),
        )?);
    }
    for p in &ports {
        wait_ready(p.http, Duration::from_secs(60))?;
    }
    let peer = |i: usize| format!("n{i},{},{}", ports[i].quic, ports[i].http);
    let mut args = vec![
        "forward-client".into(),
        format!("--bench-certs={}", env.certs.display()),
        "--bench-name=bench-client".into(),
        "--bench-cluster=bench".into(),
        format!("--bench-via={}", peer(1)),
        format!("--bench-owner={}", peer(2)),
    ];
    args.extend(pass_on(o, &["rate", "secs", "pacing", "udp-buffer"]));
    let client = Proc::spawn("forward-client", &args, &env.log("forward-client"))?;
    out.insert(
        "forward".into(),
        client.wait_for("forward", Duration::from_secs(600))?,
    );
    drop(nodes);
    Ok(())
}

/// `bench`.
pub(crate) fn main(o: &DriverOpts) -> Result<(), String> {
    let only = o.text("only").unwrap_or("raw,pair,forward").to_owned();
    let tmp = tempfile::Builder::new()
        .prefix("remote-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let env = Env {
        dir: tmp.path().to_path_buf(),
        certs: tmp.path().join("certs"),
        udp_buffer: o.text("udp-buffer").map(str::to_owned),
    };
    cortex_node::certs_cmd::init(&env.certs, "bench", false).map_err(|e| e.to_string())?;
    for n in ["n0", "n1", "n2"] {
        cortex_node::certs_cmd::issue_to(&env.certs, n, CertRole::Node, &[])
            .map_err(|e| e.to_string())?;
    }
    cortex_node::certs_cmd::issue_to(&env.certs, "bench-client", CertRole::Client, &[])
        .map_err(|e| e.to_string())?;
    let mut out = serde_json::Map::new();
    let stages: [(&str, Stage); 3] = [("raw", raw), ("pair", pair), ("forward", forward)];
    for (name, stage) in stages {
        if only.split(',').any(|s| s == name) {
            eprintln!("remote_bench: stage {name} ...");
            if let Err(e) = stage(&env, o, &mut out) {
                eprintln!(
                    "remote_bench: stage {name} failed: {e} (logs in {})",
                    env.dir.display()
                );
                if o.text("keep").is_some() {
                    let _ = tmp.keep();
                }
                return Err(e);
            }
        }
    }
    let out = Value::Object(out);
    crate::stats::emit("summary", out.clone());
    println!("{}", crate::report::markdown(&out));
    Ok(())
}

/// Runs `bench` and prints `json!` on failure (for the main dispatcher).
pub(crate) fn run(o: &DriverOpts) -> Result<(), String> {
    main(o).inspect_err(|e| crate::stats::emit("error", json!({ "error": e })))
}
