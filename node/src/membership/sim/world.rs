//! The simulated world: node slots, the network, the event queue and the fault schedule.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, UNIX_EPOCH};

use cortex_protocol::{NodeId, VersionRange};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

use super::{FaultCounts, SimConfig, SimFailure, SimReport};
use crate::membership::identity::{MemberIdentity, MemberMeta};
use crate::membership::machine::{CoreConfig, CoreTimer, MembershipCore, Now};
use crate::membership::timers::TimerQueue;
use crate::membership::view::MembershipEvent;

mod checks;

const SECRET: &[u8] = b"simulated cluster secret";
const TRACE_LINES: usize = 400;
/// Virtual epoch of the simulated wall clocks (2023-11-14), so counters look realistic.
const WALL_BASE_SECS: u64 = 1_700_000_000;

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

struct Slot {
    name: String,
    addr: SocketAddr,
    offset_ms: i64,
    next_incarnation: u64,
    generation: u64,
    node: Option<Node>,
}

struct Node {
    core: MembershipCore,
    /// Highest incarnation per name this node has accepted (to catch resurrections).
    seen: BTreeMap<String, u64>,
}

pub(super) struct World {
    cfg: SimConfig,
    rng: SmallRng,
    now: Duration,
    queue: TimerQueue<Event>,
    slots: Vec<Slot>,
    groups: Option<Vec<u8>>,
    faults_on: bool,
    partition_pinned: bool,
    steps: u64,
    datagrams: u64,
    dropped: u64,
    duplicated: u64,
    renewals: u64,
    faults: FaultCounts,
    digest: u64,
    trace: VecDeque<String>,
    converged_since: Option<Duration>,
    faults_end: Duration,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

impl World {
    pub(super) fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let max_off = i64::try_from(cfg.max_clock_offset.as_millis()).unwrap_or(0);
        let slots = (0..cfg.slots)
            .map(|i| {
                let ip = Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8);
                Slot {
                    name: format!("n{i}"),
                    addr: SocketAddr::V4(SocketAddrV4::new(ip, 7401)),
                    offset_ms: rng.random_range(-max_off..=max_off),
                    next_incarnation: 1,
                    generation: 0,
                    node: None,
                }
            })
            .collect();
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
            digest: 0xcbf2_9ce4_8422_2325,
            trace: VecDeque::new(),
            converged_since: None,
            faults_end: cfg.fault_phase,
            cfg,
        }
    }

    fn fail(&self, reason: String) -> SimFailure {
        SimFailure {
            seed: self.cfg.seed,
            reason,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn log(&mut self, line: String) {
        fnv(&mut self.digest, line.as_bytes());
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>9.3}s {line}", self.now.as_secs_f64()));
    }

    fn at(&mut self, after: Duration, ev: Event) -> Result<(), SimFailure> {
        let t = self.now + after;
        self.queue
            .push(t, ev)
            .map_err(|_| self.fail("simulation event queue overflowed".to_owned()))
    }

    fn now_of(&self, slot: usize) -> Now {
        let base = UNIX_EPOCH + Duration::from_secs(WALL_BASE_SECS) + self.now;
        let off = self.slots[slot].offset_ms;
        let wall = if off >= 0 {
            base + Duration::from_millis(off.unsigned_abs())
        } else {
            base - Duration::from_millis(off.unsigned_abs())
        };
        Now {
            mono: self.now,
            wall,
        }
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
        let s = &mut self.slots[slot];
        let inc = s.next_incarnation;
        s.next_incarnation += 1;
        s.generation += 1;
        let id = NodeId::new(s.name.clone(), inc).map_err(|e| SimFailure {
            seed: self.cfg.seed,
            reason: format!("bad simulated node id: {e}"),
            trace: Vec::new(),
        })?;
        let ip = s.addr.ip();
        let identity = MemberIdentity {
            id: id.clone(),
            gossip_addr: s.addr,
            meta: MemberMeta {
                quic_addr: SocketAddr::new(ip, 7400),
                http_addr: SocketAddr::new(ip, 7480),
                roles: vec!["sim".to_owned()],
                versions: VersionRange { min: 1, max: 1 },
                process: id.incarnation(),
            },
        };
        let mut cc = CoreConfig::new(identity, "sim", SECRET);
        cc.tuning = self.cfg.tuning.clone();
        let seed = self.rng.next_u64();
        let now = self.now_of(slot);
        let core = MembershipCore::new(cc, seed, now)
            .map_err(|e| self.fail(format!("core did not start: {e}")))?;
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
        if let Some(node) = self.slots[slot].node.take() {
            let inc = node.core.local_id().incarnation();
            let s = &mut self.slots[slot];
            s.next_incarnation = s.next_incarnation.max(inc + 1);
            s.generation += 1;
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
        match self.rng.random_range(0..10u32) {
            0..=2 if running.len() > 1 => {
                let slot = running[self.rng.random_range(0..running.len())];
                self.faults.crashes += 1;
                self.stop(slot, false)?;
            }
            3 | 4 if running.len() > 1 => {
                let slot = running[self.rng.random_range(0..running.len())];
                self.faults.leaves += 1;
                self.stop(slot, true)?;
            }
            5..=7 if !stopped.is_empty() => {
                let slot = stopped[self.rng.random_range(0..stopped.len())];
                self.start(slot)?;
            }
            8 if self.groups.is_none() => {
                let groups: Vec<u8> = (0..self.slots.len())
                    .map(|_| u8::from(self.rng.random_bool(0.5)))
                    .collect();
                self.faults.partitions += 1;
                self.log(format!("partition {groups:?}"));
                self.groups = Some(groups);
            }
            _ => {
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
        let mut sends = Vec::new();
        let mut timers = Vec::new();
        let mut events = Vec::new();
        let mut local = None;
        if let Some(node) = self.slots[slot].node.as_mut() {
            while let Some(t) = node.core.poll_transmit() {
                sends.push(t);
            }
            while let Some(t) = node.core.poll_timer() {
                timers.push(t);
            }
            while let Some(e) = node.core.poll_event() {
                events.push(e);
            }
            local = Some(node.core.local_id().clone());
        }
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
                let (lo, hi) = self.cfg.latency;
                let lat = Duration::from_micros(self.rng.random_range(
                    lo.as_micros() as u64..=hi.as_micros().max(lo.as_micros()) as u64,
                ));
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
        let Some(local) = local else { return Ok(()) };
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
