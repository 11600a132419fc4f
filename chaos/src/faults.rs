//! Executes a planned fault schedule against the nodes and the network, recording each
//! fault in the history, and undoes whatever is still applied when dropped (resumes paused
//! nodes, deletes the iptables rules, stops delay holders), so a panic or Ctrl-C leaves no
//! fault behind. Deleting the namespaces ([`crate::net::Netns`]) removes any rule left too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::history::{FaultRecord, History, now_us};
use crate::net::{Netns, Topology};
use crate::nodes::Node;
use crate::scenario::{FaultKind, Planned};

/// The nodes, shared by the fault executor and the runner.
pub type Nodes = Arc<Mutex<Vec<Node>>>;

/// What must be undone.
#[derive(Debug, Default)]
struct Applied {
    /// (node index, iptables args after `-A`).
    rules: Vec<(usize, Vec<String>)>,
    /// Delay holder processes.
    holders: Vec<Child>,
    /// Paused node indexes.
    paused: Vec<usize>,
    /// Killed nodes to start again.
    killed: Vec<usize>,
}

/// The fault executor.
#[derive(Debug)]
pub struct Injector {
    nodes: Nodes,
    topo: Arc<Topology>,
    history: Arc<History>,
    holder_exe: PathBuf,
    next_queue: u16,
    /// Per planned fault: what it applied.
    applied: Vec<Option<(usize, Applied)>>,
}

enum Action {
    Apply(usize),
    Undo(usize),
}

impl Injector {
    /// A new executor. `holder_exe` is this harness's own binary (for `nfq-hold`).
    pub fn new(
        nodes: Nodes,
        topo: Arc<Topology>,
        history: Arc<History>,
        holder_exe: PathBuf,
    ) -> Self {
        Self {
            nodes,
            topo,
            history,
            holder_exe,
            next_queue: 7,
            applied: Vec::new(),
        }
    }

    /// Runs `plan` (offsets from `start`) until done or `stop`; everything is undone on
    /// return. Returns when the last fault was undone (unix µs).
    pub async fn run(
        &mut self,
        plan: &[Planned],
        start: tokio::time::Instant,
        stop: CancellationToken,
    ) -> u64 {
        let plan = expand(plan, self.nodes.lock().await.len());
        self.applied = (0..plan.len()).map(|_| None).collect();
        let mut actions: Vec<(Duration, u8, Action)> = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            actions.push((p.at, 1, Action::Apply(i)));
            // An instantaneous fault is undone right after its own apply.
            let order = if p.until <= p.at { 2 } else { 0 };
            actions.push((p.until.max(p.at), order, Action::Undo(i)));
        }
        // At equal times, earlier faults' undos go before new applies.
        actions.sort_by_key(|(t, o, _)| (*t, *o));
        let mut last_heal = now_us();
        for (t, _, a) in actions {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(start + t) => {}
            }
            match a {
                Action::Apply(i) => self.apply(i, &plan[i]).await,
                Action::Undo(i) => {
                    self.undo(i).await;
                    last_heal = now_us();
                }
            }
        }
        for i in 0..self.applied.len() {
            if self.applied[i].is_some() {
                self.undo(i).await;
                last_heal = now_us();
            }
        }
        last_heal
    }

    async fn apply(&mut self, i: usize, p: &Planned) {
        let start_us = now_us();
        let mut rec = FaultRecord {
            kind: p.kind.name().into(),
            detail: detail(&p.kind),
            start_us,
            end_us: start_us,
            downed: Vec::new(),
            skipped: None,
        };
        let mut applied = Applied::default();
        let netns = match &*self.topo {
            Topology::Netns(n) => Some(n),
            Topology::Loopback => None,
        };
        if p.kind.needs_network() && netns.is_none() {
            rec.skipped = Some("needs network namespaces (root): running on loopback".into());
        }
        let mut nodes = self.nodes.lock().await;
        match &p.kind {
            FaultKind::Kill { nodes: which } => {
                for &n in which {
                    nodes[n].kill9();
                    self.history.close_activations(&nodes[n].name, start_us);
                    rec.downed.push(nodes[n].name.clone());
                    applied.killed.push(n);
                }
                if p.until == p.at {
                    applied.killed.clear();
                }
            }
            FaultKind::Pause { nodes: which } => {
                for &n in which {
                    if nodes[n].pause().is_ok() {
                        applied.paused.push(n);
                    }
                }
            }
            FaultKind::Restart { nodes: which } => {
                for &n in which {
                    let left = nodes[n].stop_gracefully(Duration::from_secs(8)).await;
                    self.history.close_activations(&nodes[n].name, now_us());
                    rec.downed.push(nodes[n].name.clone());
                    if !left {
                        rec.detail.push_str(" (did not leave within 8 s: killed)");
                    }
                    if let Err(e) = nodes[n].start() {
                        rec.detail.push_str(&format!(" (restart failed: {e})"));
                    }
                }
            }
            FaultKind::Partition { groups, one_way } => {
                if let Some(ns) = netns {
                    for (gi, g) in groups.iter().enumerate() {
                        if *one_way && gi > 0 {
                            break;
                        }
                        for (hi, h) in groups.iter().enumerate() {
                            if hi == gi {
                                continue;
                            }
                            for &a in g {
                                for &b in h {
                                    let src = ns.node_ip(b).to_string();
                                    let rule = vec!["INPUT".into(), "-s".into(), src];
                                    add_rule(ns, a, rule, "DROP", &mut applied, &mut rec);
                                }
                            }
                        }
                    }
                }
            }
            FaultKind::Loss {
                nodes: which,
                p: prob,
            } => {
                if let Some(ns) = netns {
                    for &n in which {
                        let rule = [
                            "INPUT",
                            "-p",
                            "udp",
                            "-m",
                            "statistic",
                            "--mode",
                            "random",
                            "--probability",
                        ]
                        .iter()
                        .map(|s| s.to_string())
                        .chain([format!("{prob:.4}")])
                        .collect();
                        add_rule(ns, n, rule, "DROP", &mut applied, &mut rec);
                    }
                }
            }
            FaultKind::Delay {
                nodes: which,
                delay,
                jitter,
            } => {
                if let Some(ns) = netns {
                    for &n in which {
                        let q = self.next_queue;
                        self.next_queue = self.next_queue.wrapping_add(1).max(7);
                        match self.spawn_holder(ns, n, q, *delay, *jitter) {
                            Ok(child) => applied.holders.push(child),
                            Err(e) => {
                                rec.detail.push_str(&format!(" (holder failed: {e})"));
                                continue;
                            }
                        }
                        let rule = vec!["OUTPUT".into(), "-p".into(), "udp".into()];
                        let target = format!("NFQUEUE --queue-num {q} --queue-bypass");
                        add_rule(ns, n, rule, &target, &mut applied, &mut rec);
                    }
                }
            }
            FaultKind::RollingRestart => {}
        }
        drop(nodes);
        tracing::info!(kind = %rec.kind, detail = %rec.detail, "fault applied");
        let mut faults = self.history.faults.lock();
        faults.push(rec);
        self.applied[i] = Some((faults.len() - 1, applied));
    }

    fn spawn_holder(
        &self,
        ns: &Netns,
        n: usize,
        queue: u16,
        delay: Duration,
        jitter: Duration,
    ) -> Result<Child, std::io::Error> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.ns(n)])
            .arg(&self.holder_exe)
            .args([
                "nfq-hold",
                "--queue",
                &queue.to_string(),
                "--delay-ms",
                &delay.as_millis().to_string(),
                "--jitter-ms",
                &jitter.as_millis().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        // The holder binds its queue before the rule sends packets there; --queue-bypass
        // lets packets through meanwhile, so a short head start is enough and harmless.
        crate::net::blocking(|| std::thread::sleep(Duration::from_millis(150)));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(std::io::Error::other(format!("nfq-hold exited: {status}")));
        }
        Ok(child)
    }

    async fn undo(&mut self, i: usize) {
        let Some((rec_i, mut a)) = self.applied.get_mut(i).and_then(Option::take) else {
            return;
        };
        let mut nodes = self.nodes.lock().await;
        for n in a.paused.drain(..) {
            let _ = nodes[n].resume();
        }
        if let Topology::Netns(ns) = &*self.topo {
            for (n, rule) in a.rules.drain(..) {
                let mut args = vec!["-D".to_owned()];
                args.extend(rule);
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                if let Err(e) = ns.iptables(n, &refs) {
                    tracing::warn!(error = %e, "removing a fault rule failed");
                }
            }
        }
        for mut h in a.holders.drain(..) {
            let _ = h.kill();
            let _ = h.wait();
        }
        for n in a.killed.drain(..) {
            if let Err(e) = nodes[n].start() {
                tracing::warn!(error = %e, node = %nodes[n].name, "restart after kill failed");
            }
        }
        drop(nodes);
        if let Some(r) = self.history.faults.lock().get_mut(rec_i) {
            r.end_us = now_us();
        }
    }

    /// Undoes everything synchronously (for Drop and signal paths).
    fn undo_all_blocking(&mut self) {
        let Ok(mut nodes) = self.nodes.try_lock() else {
            return;
        };
        for slot in &mut self.applied {
            let Some((_, a)) = slot.take() else { continue };
            for n in a.paused {
                let _ = nodes[n].resume();
            }
            if let Topology::Netns(ns) = &*self.topo {
                for (n, rule) in a.rules {
                    let mut args = vec!["-D".to_owned()];
                    args.extend(rule);
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    let _ = ns.iptables(n, &refs);
                }
            }
            for mut h in a.holders {
                let _ = h.kill();
                let _ = h.wait();
            }
        }
        nodes.iter_mut().for_each(|n| {
            if n.is_paused() {
                let _ = n.resume();
            }
        });
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.undo_all_blocking();
    }
}

fn add_rule(
    ns: &Netns,
    node: usize,
    mut rule: Vec<String>,
    target: &str,
    applied: &mut Applied,
    rec: &mut FaultRecord,
) {
    rule.extend(["-m", "comment", "--comment"].iter().map(|s| s.to_string()));
    rule.push(ns.rule_comment());
    rule.push("-j".into());
    rule.extend(target.split(' ').map(str::to_owned));
    let mut args = vec!["-A".to_owned()];
    args.extend(rule.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match ns.iptables(node, &refs) {
        Ok(()) => applied.rules.push((node, rule)),
        Err(e) => rec.detail.push_str(&format!(" (rule failed: {e})")),
    }
}

/// Expands rolling restarts into one restart per node, spread over the fault's duration.
fn expand(plan: &[Planned], nodes: usize) -> Vec<Planned> {
    let mut out = Vec::new();
    for p in plan {
        if p.kind == FaultKind::RollingRestart {
            let span = p.until.saturating_sub(p.at);
            let step = span / nodes.max(1) as u32;
            for n in 0..nodes {
                let at = p.at + step * n as u32;
                out.push(Planned {
                    at,
                    until: at,
                    kind: FaultKind::Restart { nodes: vec![n] },
                });
            }
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Human detail of a fault.
pub fn detail(k: &FaultKind) -> String {
    let names = |v: &[usize]| {
        v.iter()
            .map(|n| format!("n{n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    match k {
        FaultKind::Kill { nodes } | FaultKind::Pause { nodes } | FaultKind::Restart { nodes } => {
            names(nodes)
        }
        FaultKind::Partition { groups, one_way } => {
            let g: Vec<String> = groups.iter().map(|g| format!("[{}]", names(g))).collect();
            if *one_way {
                format!("{} hears nothing from {}", g[0], g[1..].join(" "))
            } else {
                g.join(" | ")
            }
        }
        FaultKind::Loss { nodes, p } => format!("{} p={p:.2}", names(nodes)),
        FaultKind::Delay {
            nodes,
            delay,
            jitter,
        } => format!(
            "{} +{}ms ±{}ms",
            names(nodes),
            delay.as_millis(),
            jitter.as_millis()
        ),
        FaultKind::RollingRestart => "every node in turn".into(),
    }
}
