//! The simulated world: node slots, the network, the event queue and the fault schedule.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cortex_protocol::NodeId;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::harness::{self, Fault, HoldsCore, Slot, Trace, fnv};
use super::{FaultCounts, SimConfig, SimFailure, SimReport};
use crate::membership::machine::{CoreTimer, MembershipCore, Now};
use crate::membership::timers::TimerQueue;
use crate::membership::view::MembershipEvent;

mod checks;

const TRACE_LINES: usize = 400;

pub(super) enum Event {
    Deliver {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        slot: usize,
        generation: u64,
        timer: CoreTimer,
    },
    Dns,
    Fault,
    FinalPartition,
    EndFaults,
    Check,
}

struct Node {
    core: MembershipCore,
    /// Highest incarnation per name this node has accepted (to catch resurrections).
    seen: BTreeMap<String, u64>,
}

impl HoldsCore for Node {
    fn core(&self) -> &MembershipCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut MembershipCore {
        &mut self.core
    }
}

pub(super) struct World {
    cfg: SimConfig,
    rng: SmallRng,
    now: Duration,
    queue: TimerQueue<Event>,
    slots: Vec<Slot<Node>>,
    groups: Option<Vec<u8>>,
    faults_on: bool,
    partition_pinned: bool,
    steps: u64,
    datagrams: u64,
    dropped: u64,
    duplicated: u64,
    renewals: u64,
    faults: FaultCounts,
    trace: Trace,
    converged_since: Option<Duration>,
    faults_end: Duration,
}

impl World {
    pub(super) fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let slots = Slot::all(cfg.slots, cfg.max_clock_offset, &mut rng);
        Self {
            rng,
            now: Duration::ZERO,
            queue: TimerQueue::new(1 << 22),
            slots,
            groups: None,
            faults_on: true,
            partition_pinned: false,
            steps: 0,
            datagrams: 0,
            dropped: 0,
            duplicated: 0,
            renewals: 0,
            faults: FaultCounts::default(),
            trace: Trace::new(TRACE_LINES),
            converged_since: None,
            faults_end: cfg.fault_phase,
            cfg,
        }
    }

    fn fail(&self, reason: String) -> SimFailure {
        SimFailure {
            seed: self.cfg.seed,
            reason,
            trace: self.trace.lines(),
        }
    }

    fn log(&mut self, line: String) {
        self.trace.log(self.now, line);
    }

    fn at(&mut self, after: Duration, ev: Event) -> Result<(), SimFailure> {
        let t = self.now + after;
        self.queue
            .push(t, ev)
            .map_err(|_| self.fail("simulation event queue overflowed".to_owned()))
    }

    fn now_of(&self, slot: usize) -> Now {
        self.slots[slot].now(self.now)
    }

    fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].node.is_some())
            .collect()
    }

    pub(super) fn run(&mut self) -> Result<SimReport, SimFailure> {
        for i in 0..self.cfg.initial.min(self.slots.len()) {
            self.start(i)?;
        }
        self.at(self.cfg.dns_interval, Event::Dns)?;
        let first = self.fault_gap();
        self.at(first, Event::Fault)?;
        self.at(self.cfg.fault_phase, Event::EndFaults)?;
        if let Some(before) = self.cfg.final_partition
            && before < self.cfg.fault_phase
        {
            self.at(self.cfg.fault_phase - before, Event::FinalPartition)?;
        }
        let hard_end = self.cfg.fault_phase + self.cfg.convergence_limit + self.cfg.stability;
        while let Some(t) = self.queue.next_deadline() {
            if t > hard_end {
                break;
            }
            let Some(ev) = self.queue.pop_due(t) else {
                break;
            };
            self.now = t;
            self.steps += 1;
            if let Some(report) = self.step(ev)? {
                return Ok(report);
            }
        }
        Err(self.fail(format!(
            "no convergence within {:?} after the faults stopped: {}",
            self.cfg.convergence_limit,
            self.describe_views()
        )))
    }

    fn fault_gap(&mut self) -> Duration {
        let mean = self.cfg.fault_interval.as_millis().max(2) as u64;
        Duration::from_millis(self.rng.random_range(mean / 4..=mean * 7 / 4))
    }

    fn step(&mut self, ev: Event) -> Result<Option<SimReport>, SimFailure> {
        match ev {
            Event::Deliver { to, from, bytes } => {
                let now = self.now_of(to);
                if let Some(node) = self.slots[to].node.as_mut() {
                    node.core.handle_datagram(from, &bytes, now);
                    self.pump(to)?;
                }
            }
            Event::Timer {
                slot,
                generation,
                timer,
            } => {
                if self.slots[slot].generation == generation {
                    let now = self.now_of(slot);
                    if let Some(node) = self.slots[slot].node.as_mut() {
                        node.core.handle_timer(timer, now);
                        self.pump(slot)?;
                    }
                }
            }
            Event::Dns => {
                let addrs = self.seed_addrs();
                for i in self.running() {
                    let now = self.now_of(i);
                    if let Some(node) = self.slots[i].node.as_mut() {
                        node.core.set_seed_addrs(addrs.iter().copied(), now);
                    }
                    self.pump(i)?;
                }
                self.at(self.cfg.dns_interval, Event::Dns)?;
            }
            Event::Fault => {
                if self.faults_on {
                    self.fault()?;
                    let gap = self.fault_gap();
                    self.at(gap, Event::Fault)?;
                }
            }
            Event::FinalPartition => {
                // Two non-empty groups of running nodes, when there are two to split.
                let running = self.running();
                let mut groups: Vec<u8> = (0..self.slots.len())
                    .map(|_| u8::from(self.rng.random_bool(0.5)))
                    .collect();
                if running.len() >= 2 {
                    groups[running[0]] = 0;
                    groups[running[1]] = 1;
                }
                self.faults.partitions += 1;
                self.partition_pinned = true;
                self.log(format!("final partition {groups:?}"));
                self.groups = Some(groups);
            }
            Event::EndFaults => {
                self.faults_on = false;
                self.faults_end = self.now;
                if self.groups.take().is_some() {
                    self.faults.heals += 1;
                    self.log("heal (end of faults)".to_owned());
                }
                // A node can only join through a running seed: with a static list, bring
                // the seeds back first (operators keep seeds up).
                for slot in 0..self.cfg.static_seeds.unwrap_or(0).min(self.slots.len()) {
                    if self.slots[slot].node.is_none() {
                        self.start(slot)?;
                    }
                }
                // Leave at least half of the names running so convergence means something.
                let want = self.slots.len().div_ceil(2);
                let mut stopped: Vec<usize> = (0..self.slots.len())
                    .filter(|&i| self.slots[i].node.is_none())
                    .collect();
                while self.running().len() < want && !stopped.is_empty() {
                    let k = self.rng.random_range(0..stopped.len());
                    let slot = stopped.swap_remove(k);
                    self.start(slot)?;
                }
                self.log(format!("faults end; running {:?}", self.running_names()));
                self.at(Duration::from_millis(100), Event::Check)?;
            }
            Event::Check => {
                let converged = self.converged();
                match (converged, self.converged_since) {
                    (true, None) => self.converged_since = Some(self.now),
                    (false, Some(since)) => {
                        return Err(self.fail(format!(
                            "converged at {:.3}s but diverged again: {}",
                            since.as_secs_f64(),
                            self.describe_views()
                        )));
                    }
                    _ => {}
                }
                if let Some(since) = self.converged_since
                    && self.now >= since + self.cfg.stability
                {
                    return Ok(Some(self.report(since)));
                }
                if self.converged_since.is_none()
                    && self.now > self.faults_end + self.cfg.convergence_limit
                {
                    return Err(self.fail(format!(
                        "no convergence within {:?} ({} probe periods) after the faults stopped: {}",
                        self.cfg.convergence_limit,
                        self.periods(self.cfg.convergence_limit),
                        self.describe_views()
                    )));
                }
                self.at(Duration::from_millis(100), Event::Check)?;
            }
        }
        Ok(None)
    }

    fn start(&mut self, slot: usize) -> Result<(), SimFailure> {
        let (id, core) = self.slots[slot]
            .start_core(&self.cfg.tuning, &mut self.rng, self.now)
            .map_err(|e| self.fail(e))?;
        let now = self.now_of(slot);
        self.slots[slot].node = Some(Node {
            core,
            seen: BTreeMap::new(),
        });
        if self.now > Duration::ZERO {
            self.faults.restarts += 1;
        }
        self.log(format!("start {id}"));
        // A starting node resolves its seeds once before its first periodic refresh.
        let addrs = self.seed_addrs();
        if let Some(node) = self.slots[slot].node.as_mut() {
            node.core.set_seed_addrs(addrs, now);
        }
        self.pump(slot)
    }

    fn stop(&mut self, slot: usize, graceful: bool) -> Result<(), SimFailure> {
        let now = self.now_of(slot);
        if graceful && let Some(node) = self.slots[slot].node.as_mut() {
            node.core.leave(now);
            self.pump(slot)?;
        }
        if let Some(node) = self.slots[slot].stop() {
            let verb = if graceful { "leave" } else { "crash" };
            self.log(format!("{verb} {}", node.core.local_id()));
        }
        Ok(())
    }

    fn fault(&mut self) -> Result<(), SimFailure> {
        if self.partition_pinned {
            return Ok(());
        }
        let running = self.running();
        let stopped: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].node.is_none())
            .collect();
        let partitioned = self.groups.is_some();
        let n = self.slots.len();
        match harness::pick_fault(&mut self.rng, n, &running, &running, &stopped, partitioned) {
            Fault::Crash(slot) => {
                self.faults.crashes += 1;
                self.stop(slot, false)?;
            }
            Fault::Leave(slot) => {
                self.faults.leaves += 1;
                self.stop(slot, true)?;
            }
            Fault::Start(slot) => self.start(slot)?,
            Fault::Partition(groups) => {
                self.faults.partitions += 1;
                self.log(format!("partition {groups:?}"));
                self.groups = Some(groups);
            }
            Fault::Heal => {
                if self.groups.take().is_some() {
                    self.faults.heals += 1;
                    self.log("heal".to_owned());
                }
            }
        }
        Ok(())
    }

    /// What a node's seed resolution returns: every running node (a headless Service), or
    /// the fixed addresses of the first `static_seeds` names, running or not.
    fn seed_addrs(&self) -> Vec<SocketAddr> {
        match self.cfg.static_seeds {
            Some(k) => self.slots.iter().take(k).map(|s| s.addr).collect(),
            None => self.running().iter().map(|&i| self.slots[i].addr).collect(),
        }
    }

    fn slot_of(&self, addr: SocketAddr) -> Option<usize> {
        self.slots.iter().position(|s| s.addr == addr)
    }

    fn pump(&mut self, slot: usize) -> Result<(), SimFailure> {
        let generation = self.slots[slot].generation;
        let from = self.slots[slot].addr;
        let Some(core) = self.slots[slot].core_mut() else {
            return Ok(());
        };
        let local = core.local_id().clone();
        let harness::Outputs {
            sends,
            timers,
            events,
        } = harness::drain(core);
        for (at, timer) in timers {
            let after = at.saturating_sub(self.now);
            self.at(
                after,
                Event::Timer {
                    slot,
                    generation,
                    timer,
                },
            )?;
        }
        for t in sends {
            self.datagrams += 1;
            let Some(to) = self.slot_of(t.dst) else {
                self.dropped += 1;
                continue;
            };
            if let Some(g) = &self.groups
                && g[to] != g[slot]
            {
                self.dropped += 1;
                continue;
            }
            if self.faults_on && self.rng.random_bool(self.cfg.loss) {
                self.dropped += 1;
                continue;
            }
            let copies = if self.faults_on && self.rng.random_bool(self.cfg.duplication) {
                self.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let lat = harness::latency(&mut self.rng, self.cfg.latency);
                self.at(
                    lat,
                    Event::Deliver {
                        to,
                        from,
                        bytes: t.payload.clone(),
                    },
                )?;
            }
        }
        for ev in events {
            self.check_event(slot, &local, &ev)?;
            let line = match &ev {
                MembershipEvent::Joined(m) => format!("{local}: joined {}", m.id),
                MembershipEvent::Suspect(m) => format!("{local}: suspect {}", m.id),
                MembershipEvent::AliveAgain(m) => format!("{local}: alive {}", m.id),
                MembershipEvent::Down(m) => format!("{local}: down {}", m.id),
                MembershipEvent::Left(m) => format!("{local}: left {}", m.id),
                MembershipEvent::Renewed { previous, current } => {
                    self.renewals += 1;
                    format!("{previous}: renewed as {current}")
                }
            };
            self.log(line);
        }
        Ok(())
    }

    /// No node may accept an incarnation older than one it has already seen for that name.
    fn check_event(
        &mut self,
        slot: usize,
        local: &NodeId,
        ev: &MembershipEvent,
    ) -> Result<(), SimFailure> {
        let Some(m) = ev.member() else { return Ok(()) };
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let seen = node.seen.entry(m.id.name().to_owned()).or_insert(0);
        let inc = m.id.incarnation();
        if matches!(ev, MembershipEvent::Joined(_)) && inc < *seen {
            let msg = format!(
                "{local} accepted {} after having seen incarnation {}",
                m.id, *seen
            );
            return Err(self.fail(msg));
        }
        *seen = (*seen).max(inc);
        Ok(())
    }
}
