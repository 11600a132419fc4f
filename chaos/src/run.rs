//! One chaos run, start to finish: topology, nodes, client, observer, workload, faults,
//! convergence wait, checkers, report. Everything it sets up is owned by values whose
//! destructors undo it (nodes killed, faults undone, namespaces deleted), so a panic or a
//! cancelled future (Ctrl-C in the binary) leaves nothing behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use cortex_client::Client;
use cortex_transport::TlsMaterial;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ChaosError;
use crate::check::{self, Verdict};
use crate::faults::{Injector, Nodes};
use crate::history::{History, Snapshot, now_us};
use crate::net::{Netns, Topology, netns_available};
use crate::nodes::{self, CLUSTER, Certs, NodesConfig};
use crate::observe::{self, Target};
use crate::report;
use crate::scenario::Scenario;
use crate::workload::{self, Live, LoadConfig};

/// How to run a scenario.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Report folder (created).
    pub out_dir: PathBuf,
    /// Use `short_duration`.
    pub short: bool,
    /// Stay on loopback even when namespaces work.
    pub force_loopback: bool,
    /// Counter retries without idempotency keys (deliberately broken client).
    pub dedupe_off: bool,
    /// Override the scenario's settle time (`Some(0)` is a deliberately broken setting).
    pub settle_time: Option<Duration>,
    /// More node flags.
    pub node_args: Vec<String>,
    /// More flags for single nodes: (index, flag); e.g. `(1, "--vnodes=40")`, a
    /// deliberately broken setting (nodes disagree on placement).
    pub node_args_for: Vec<(usize, String)>,
    /// Slow every workload actor's stop hook by this much (the bank host reads
    /// `BANK_STOP_DELAY_MS`): it widens the handover window in which a broken setting lets
    /// two nodes host one id, so that a check catches it every time.
    pub stop_delay: Option<Duration>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// This harness's binary (runs the NFQUEUE delay holder); default: current exe.
    pub holder_exe: Option<PathBuf>,
    /// The node host binary; default: found next to this executable.
    pub node_binary: Option<PathBuf>,
}

impl RunOptions {
    /// Short run, report in `out_dir`, no progress bar.
    pub fn short(out_dir: PathBuf) -> Self {
        Self {
            out_dir,
            short: true,
            force_loopback: false,
            dedupe_off: false,
            settle_time: None,
            node_args: Vec::new(),
            node_args_for: Vec::new(),
            stop_delay: None,
            progress: false,
            holder_exe: None,
            node_binary: None,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunOutcome {
    /// Scenario name.
    pub scenario: String,
    /// `netns` or `loopback (reason)`.
    pub topology: String,
    /// Checker verdicts.
    pub verdicts: Vec<Verdict>,
    /// The printed summary.
    pub summary: String,
    /// Report folder.
    pub report_dir: PathBuf,
    /// QUIC packets the running nodes declared lost (`cortex_peer_lost_packets_total`,
    /// summed at the end); `None` if no node answered.
    pub quic_lost_packets: Option<u64>,
}

impl RunOutcome {
    /// Every checker passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed || !v.gating)
    }

    /// The verdict of checker `name`.
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.name == name)
    }
}

/// Runs `scenario`.
///
/// # Errors
/// [`ChaosError`] if the cluster cannot be set up (binary missing, namespaces failing,
/// nodes not converging before the load starts). Checker failures are in the outcome.
pub async fn run(scenario: &Scenario, opts: RunOptions) -> Result<RunOutcome, ChaosError> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| ChaosError::io(&opts.out_dir, e))?;
    let work = opts.out_dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| ChaosError::io(&work, e))?;
    let binary = match &opts.node_binary {
        Some(b) => b.clone(),
        None => nodes::find_host_binary()?,
    };
    let holder_exe = match &opts.holder_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| ChaosError::io("current exe", e))?,
    };
    let needs_net = scenario
        .plan(opts.short)
        .iter()
        .any(|p| p.kind.needs_network());
    let (topo, topo_name) = if opts.force_loopback {
        (Topology::Loopback, "loopback (asked for)".to_owned())
    } else {
        match netns_available() {
            Ok(()) => (
                Topology::Netns(Netns::create(scenario.nodes)?),
                "netns".to_owned(),
            ),
            Err(why) => (
                Topology::Loopback,
                format!("loopback ({why}; packet faults skipped)"),
            ),
        }
    };
    if needs_net && !topo.has_network_faults() {
        tracing::warn!("{topo_name}: this scenario's partitions, loss and delay will be skipped");
    }
    let topo = Arc::new(topo);
    let settle = opts.settle_time.unwrap_or(scenario.settle_time);
    let mut extra = scenario.node_args.clone();
    extra.extend(opts.node_args.iter().cloned());
    let quorum = scenario.quorum_holds && !quorum_off(&extra);
    let cfg = NodesConfig {
        binary,
        dir: work.clone(),
        settle_time: settle,
        extra_args: extra,
        node_args: opts.node_args_for.clone(),
        env: opts
            .stop_delay
            .map(|d| ("BANK_STOP_DELAY_MS".to_owned(), d.as_millis().to_string()))
            .into_iter()
            .collect(),
    };
    let (mut list, certs) = nodes::build(&cfg, &topo, scenario.nodes)?;
    for n in &mut list {
        n.start()?;
    }
    let targets: Vec<Target> = list
        .iter()
        .map(|n| Target {
            name: n.name.clone(),
            url: n.http_url(),
        })
        .collect();
    let quics: Vec<String> = list.iter().map(|n| n.quic().to_string()).collect();
    let names: Vec<String> = list.iter().map(|n| n.name.clone()).collect();
    let nodes: Nodes = Arc::new(Mutex::new(list));
    wait_formed(&targets, scenario.nodes, Duration::from_secs(60)).await?;

    let spec = scenario.workload.clone();
    let client = connect(&certs, &quics, spec.ask_timeout, "chaos-load").await?;
    client
        .wait_for_topology(Duration::from_secs(20), |v| {
            v.members().len() == scenario.nodes
        })
        .await
        .map_err(|e| ChaosError::State(format!("the client got no full topology: {e}")))?;
    let mut subs = Vec::new();
    if spec.topics > 0 {
        for (i, q) in quics.iter().enumerate() {
            subs.push(
                connect(
                    &certs,
                    std::slice::from_ref(q),
                    spec.ask_timeout,
                    &format!("chaos-sub{i}"),
                )
                .await?,
            );
        }
    }

    let history = Arc::new(History::default());
    let live = Arc::new(Live::default());
    let stop_obs = CancellationToken::new();
    let stop_load = CancellationToken::new();
    let tasks = TaskTracker::new();
    let obs = tokio::spawn(observe::run(
        targets.clone(),
        history.clone(),
        Duration::from_millis(250),
        stop_obs.clone(),
    ));
    let _obs_guard = AbortOnDrop(obs);

    let len = scenario.length(opts.short);
    let plan = scenario.plan(opts.short);
    let start = tokio::time::Instant::now();
    let start_us = now_us();
    workload::spawn(
        client.clone(),
        subs.clone(),
        LoadConfig {
            spec: spec.clone(),
            dedupe_off: opts.dedupe_off,
            seed: scenario.random.as_ref().map(|r| r.seed).unwrap_or(1),
        },
        history.clone(),
        live.clone(),
        stop_load.clone(),
        &tasks,
    );
    tasks.close();

    let bar = progress_bar(opts.progress, len, &scenario.name);
    let mut injector = Injector::new(nodes.clone(), topo.clone(), history.clone(), holder_exe);
    let inject_stop = CancellationToken::new();
    let mut last_heal = {
        let run_faults = injector.run(&plan, start, inject_stop.clone());
        tokio::pin!(run_faults);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut heal = None;
        loop {
            tokio::select! {
                h = &mut run_faults, if heal.is_none() => heal = Some(h),
                _ = tick.tick() => {
                    let el = start.elapsed();
                    bar.set_position(el.as_secs().min(len.as_secs()));
                    let active = history.faults.lock().iter().filter(|f| f.end_us == f.start_us || f.end_us > now_us()).count();
                    bar.set_message(format!("ok {} failed {} faults {}", live.ok.load(Relaxed), live.failed.load(Relaxed), active));
                    if el >= len && heal.is_some() {
                        break;
                    }
                }
            }
        }
        heal.unwrap_or_else(now_us)
    };
    if plan.is_empty() {
        last_heal = start_us;
    }
    stop_load.cancel();
    if tokio::time::timeout(spec.ask_timeout * 3, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some workload tasks did not stop in time");
    }
    let end_us = now_us();
    bar.set_message("waiting for membership to converge");

    // Keep observing until every running node agrees, or the bound passes.
    let expected = {
        let mut g = nodes.lock().await;
        g.iter_mut().map(|n| n.is_running()).filter(|r| *r).count()
    };
    let bound = tokio::time::Instant::now() + scenario.converge_within + Duration::from_secs(2);
    loop {
        let mut snap = history.snapshot();
        snap.last_heal_us = last_heal;
        snap.expected_members = expected;
        snap.quorum = quorum;
        if check::convergence(&snap, u64::MAX).passed || tokio::time::Instant::now() >= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    workload::final_reads(&client, &spec, &history, &live).await;
    observe::final_activations(&targets, &history).await;
    let quic_lost_packets = observe::quic_lost_packets(&targets).await;
    stop_obs.cancel();
    bar.finish_and_clear();

    let mut snap: Snapshot = history.snapshot();
    snap.start_us = start_us;
    snap.end_us = end_us;
    snap.last_heal_us = last_heal;
    snap.nodes = names;
    snap.expected_members = expected;
    snap.quorum = quorum;
    let verdicts = check::all(&snap, scenario.converge_within.as_micros() as u64);
    let mut summary = report::summary_text(scenario, &topo_name, &snap, &verdicts, opts.short);
    if let Some(n) = quic_lost_packets {
        summary.push_str(&format!(
            "QUIC packets lost and resent (running nodes): {n}\n"
        ));
    }
    snap.write_jsonl(&opts.out_dir.join("history.jsonl"))?;
    let outcome = RunOutcome {
        scenario: scenario.name.clone(),
        topology: topo_name,
        verdicts,
        summary,
        report_dir: opts.out_dir.clone(),
        quic_lost_packets,
    };
    let json = serde_json::to_vec_pretty(&outcome).unwrap_or_default();
    let p = opts.out_dir.join("summary.json");
    std::fs::write(&p, json).map_err(|e| ChaosError::io(&p, e))?;
    report::write_html(&opts.out_dir.join("report.html"), scenario, &snap, &outcome)?;

    client.shutdown().await;
    for s in &subs {
        s.shutdown().await;
    }
    drop(injector);
    let mut g = nodes.lock().await;
    for n in g.iter_mut() {
        n.kill9();
    }
    drop(g);
    Ok(outcome)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// True when the node flags turn the quorum rule off (`--quorum=off` or `--quorum off`).
fn quorum_off(args: &[String]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        a == "--quorum=off" || (a == "--quorum" && args.get(i + 1).is_some_and(|v| v == "off"))
    })
}

fn progress_bar(show: bool, len: Duration, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len.as_secs());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len}s {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(name.to_owned());
    bar
}

async fn connect(
    certs: &Certs,
    seeds: &[String],
    timeout: Duration,
    name: &str,
) -> Result<Client, ChaosError> {
    let tls = TlsMaterial::load(&certs.ca, &certs.client_cert, &certs.client_key)
        .map_err(|e| ChaosError::State(format!("client TLS material: {e}")))?;
    Client::builder()
        .seeds(seeds.iter().cloned())
        .cluster(CLUSTER)
        .tls(tls)
        .name(name)
        .default_timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .idle_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| ChaosError::State(format!("client {name} could not connect: {e}")))
}

/// Waits until every node answers and sees `n` live members.
async fn wait_formed(targets: &[Target], n: usize, timeout: Duration) -> Result<(), ChaosError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut ok = 0;
        for t in targets {
            let Ok(a) = cortex_client::admin::AdminClient::new(&t.url) else {
                continue;
            };
            match a.with_timeout(Duration::from_secs(1)).members().await {
                Ok(ms) => {
                    let live = ms.iter().filter(|m| m.state == "alive").count();
                    if live == n {
                        ok += 1;
                    } else {
                        last = format!("{} sees {live} of {n} members", t.name);
                    }
                }
                Err(e) => last = format!("{}: {e}", t.name),
            }
        }
        if ok == targets.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ChaosError::State(format!(
        "the cluster did not form within {timeout:?}: {last} (node logs under the report's work/logs)"
    )))
}
