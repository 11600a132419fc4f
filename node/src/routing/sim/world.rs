//! The simulated world: node slots, the network, the event queue, membership driving and
//! the fault schedule. Requests live in `node.rs`, the watch task and handover in
//! `watch.rs`, the invariants in `checks.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cortex_protocol::{ActorId, ErrorCode, NodeId};
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::checks::Checks;
use super::node::SimNode;
use super::{FaultCounts, SimConfig, SimFailure, SimReport};
pub(super) use crate::membership::sim::harness::fnv;
use crate::membership::sim::harness::{self, Fault, Slot, Trace};
use crate::membership::{CoreTimer, MembershipEvent, Now, TimerQueue};
use crate::placement::PlacementState;
use crate::placement::quorum::{self, QuorumState};

const TRACE_LINES: usize = 300;

/// A request's outcome: success, or the error code and why.
pub(super) type Answer = Result<(), (ErrorCode, &'static str)>;

pub(super) enum Event {
    Gossip {
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
    EndFaults,
    NewAsk,
    Msg {
        to: usize,
        msg: Msg,
    },
    /// The transport deadline of a forwarded ask.
    Pending {
        slot: usize,
        generation: u64,
        req: u64,
    },
    /// A request waiting for the view to settle or for an activation to stop.
    Wake {
        slot: usize,
        generation: u64,
        req: u64,
        token: u64,
    },
    Passivated {
        slot: usize,
        generation: u64,
        id: ActorId,
        serial: u64,
    },
    /// A member's ring admission check finished.
    Admitted {
        slot: usize,
        generation: u64,
        member: NodeId,
        ok: bool,
        /// The backoff of the refusal before this check (zero: none).
        last_backoff: Duration,
    },
    /// A dial for an admission check retransmits its handshake.
    Dial {
        slot: usize,
        generation: u64,
        member: NodeId,
        give_up: Duration,
        last_backoff: Duration,
    },
    /// The watch loop's periodic wake.
    WatchTick {
        slot: usize,
        generation: u64,
        token: u64,
    },
    /// A handover chunk's passivations are all done.
    Chunk {
        slot: usize,
        generation: u64,
        job: u64,
    },
    End,
}

/// A routing message between two nodes.
pub(super) enum Msg {
    Ask {
        /// The sender's request id, echoed in the reply.
        req: u64,
        from: usize,
        from_generation: u64,
        ask: u64,
        id: ActorId,
        budget: Duration,
        hops: u8,
        /// The digest of the ring the sender chose the receiver on (`Ask::epoch`).
        epoch: u64,
    },
    Reply {
        req: u64,
        to_generation: u64,
        result: Answer,
    },
}

/// One client ask, as its caller sees it.
pub(super) struct AskRecord {
    pub(super) issued: Duration,
    pub(super) deadline: Duration,
    pub(super) answers: u32,
    pub(super) hops: u64,
    /// Issued while the cluster was quiet and stable: must succeed.
    pub(super) quiet: bool,
}

pub(super) struct World {
    pub(super) cfg: SimConfig,
    pub(super) rng: SmallRng,
    pub(super) now: Duration,
    /// The one real `Instant` of the run; every simulated instant is `base + now`.
    pub(super) base: Instant,
    queue: TimerQueue<Event>,
    pub(super) slots: Vec<Slot<SimNode>>,
    pub(super) by_name: BTreeMap<String, usize>,
    pub(super) groups: Option<Vec<u8>>,
    /// Partitions healed, and when.
    pub(super) healed: Vec<(Vec<u8>, Duration)>,
    pub(super) faults_on: bool,
    pub(super) faults_end: Duration,
    pub(super) steps: u64,
    pub(super) faults: FaultCounts,
    trace: Trace,
    pub(super) asks: Vec<AskRecord>,
    pub(super) next_id: u64,
    pub(super) checks: Checks,
    ended: bool,
}

impl World {
    pub(super) fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let slots = Slot::all(cfg.slots, cfg.max_clock_offset, &mut rng);
        let by_name = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Self {
            rng,
            now: Duration::ZERO,
            base: Instant::now(),
            queue: TimerQueue::new(1 << 22),
            slots,
            by_name,
            groups: None,
            healed: Vec::new(),
            faults_on: true,
            faults_end: cfg.fault_phase,
            steps: 0,
            faults: FaultCounts::default(),
            trace: Trace::new(TRACE_LINES),
            asks: Vec::new(),
            next_id: 1,
            checks: Checks::default(),
            ended: false,
            cfg,
        }
    }

    pub(super) fn fail(&self, reason: String) -> SimFailure {
        SimFailure {
            seed: self.cfg.seed,
            reason,
            trace: self.trace.lines(),
        }
    }

    pub(super) fn log(&mut self, line: String) {
        self.trace.log(self.now, line);
    }

    pub(super) fn at(&mut self, after: Duration, ev: Event) -> Result<(), SimFailure> {
        let t = self.now + after;
        self.queue
            .push(t, ev)
            .map_err(|_| self.fail("simulation event queue overflowed".to_owned()))
    }

    /// The simulated `Instant` of virtual time `t`.
    pub(super) fn instant(&self, t: Duration) -> Instant {
        self.base + t
    }

    pub(super) fn digest(&self) -> u64 {
        self.trace.digest()
    }

    pub(super) fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn now_of(&self, slot: usize) -> Now {
        self.slots[slot].now(self.now)
    }

    pub(super) fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].node.is_some())
            .collect()
    }

    pub(super) fn node(&self, slot: usize) -> Option<&SimNode> {
        self.slots[slot].node.as_ref()
    }

    pub(super) fn node_mut(&mut self, slot: usize) -> Option<&mut SimNode> {
        self.slots[slot].node.as_mut()
    }

    pub(super) fn separated(&self, a: usize, b: usize) -> bool {
        self.groups.as_ref().is_some_and(|g| g[a] != g[b])
    }

    /// `a` and `b` were on opposite sides of a partition healed less than `within` ago:
    /// their two sides may still be merging.
    pub(super) fn recently_separated(&self, a: usize, b: usize, within: Duration) -> bool {
        self.healed
            .iter()
            .rev()
            .take_while(|(_, at)| self.now < *at + within)
            .any(|(g, _)| g[a] != g[b])
    }

    pub(super) fn latency(&mut self) -> Duration {
        harness::latency(&mut self.rng, self.cfg.latency)
    }

    pub(super) fn run(mut self) -> Result<SimReport, SimFailure> {
        for i in 0..self.cfg.initial.min(self.slots.len()) {
            self.start(i)?;
        }
        self.at(self.cfg.dns_interval, Event::Dns)?;
        let first = self.fault_gap();
        self.at(first, Event::Fault)?;
        self.at(self.cfg.fault_phase, Event::EndFaults)?;
        self.at(Duration::ZERO, Event::NewAsk)?;
        let end = self.cfg.fault_phase
            + self.cfg.quiet_phase
            + self.cfg.ask_budget.1
            + Duration::from_secs(1);
        self.at(end, Event::End)?;
        while !self.ended {
            let Some(t) = self.queue.next_deadline() else {
                break;
            };
            let Some(ev) = self.queue.pop_due(t) else {
                break;
            };
            self.now = t;
            self.steps += 1;
            self.step(ev)?;
            self.check_step()?;
        }
        self.finish()
    }

    fn fault_gap(&mut self) -> Duration {
        let mean = self.cfg.fault_interval.as_millis().max(2) as u64;
        Duration::from_millis(self.rng.random_range(mean / 4..=mean * 7 / 4))
    }

    fn step(&mut self, ev: Event) -> Result<(), SimFailure> {
        match ev {
            Event::Gossip { to, from, bytes } => {
                let now = self.now_of(to);
                if let Some(node) = self.node_mut(to) {
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
                    if let Some(node) = self.node_mut(slot) {
                        node.core.handle_timer(timer, now);
                        self.pump(slot)?;
                    }
                }
            }
            Event::Dns => {
                let addrs: Vec<SocketAddr> =
                    self.running().iter().map(|&i| self.slots[i].addr).collect();
                for i in self.running() {
                    let now = self.now_of(i);
                    if let Some(node) = self.node_mut(i) {
                        node.core.set_seed_addrs(addrs.iter().copied(), now);
                        self.pump(i)?;
                    }
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
            Event::EndFaults => self.end_faults()?,
            Event::NewAsk => {
                if self.now < self.cfg.fault_phase + self.cfg.quiet_phase {
                    self.new_ask()?;
                    let mean = self.cfg.ask_interval.as_micros().max(2) as u64;
                    let gap = Duration::from_micros(self.rng.random_range(1..=2 * mean));
                    self.at(gap, Event::NewAsk)?;
                }
            }
            Event::Msg { to, msg } => self.on_msg(to, msg)?,
            Event::Pending {
                slot,
                generation,
                req,
            } => {
                if self.slots[slot].generation == generation {
                    self.on_pending_deadline(slot, req)?;
                }
            }
            Event::Wake {
                slot,
                generation,
                req,
                token,
            } => {
                if self.slots[slot].generation == generation {
                    self.on_wake(slot, req, token)?;
                }
            }
            Event::Passivated {
                slot,
                generation,
                id,
                serial,
            } => {
                if self.slots[slot].generation == generation {
                    self.on_passivated(slot, &id, serial);
                }
            }
            Event::Chunk {
                slot,
                generation,
                job,
            } => {
                if self.slots[slot].generation == generation {
                    self.run_chunk(slot, job)?;
                }
            }
            Event::Admitted {
                slot,
                generation,
                member,
                ok,
                last_backoff,
            } => {
                if self.slots[slot].generation == generation {
                    self.on_admitted(slot, member, ok, last_backoff)?;
                }
            }
            Event::Dial {
                slot,
                generation,
                member,
                give_up,
                last_backoff,
            } => {
                if self.slots[slot].generation == generation {
                    self.dial_probe(slot, member, give_up, last_backoff)?;
                }
            }
            Event::WatchTick {
                slot,
                generation,
                token,
            } => {
                if self.slots[slot].generation == generation {
                    self.on_watch_tick(slot, token)?;
                }
            }
            Event::End => self.ended = true,
        }
        Ok(())
    }

    fn end_faults(&mut self) -> Result<(), SimFailure> {
        self.faults_on = false;
        self.faults_end = self.now;
        if let Some(g) = self.groups.take() {
            self.faults.heals += 1;
            self.healed.push((g, self.now));
            self.log("heal (end of faults)".to_owned());
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
        let names: Vec<String> = self
            .running()
            .iter()
            .map(|&i| self.slots[i].name.clone())
            .collect();
        self.log(format!("faults end; running {names:?}"));
        Ok(())
    }

    pub(super) fn start(&mut self, slot: usize) -> Result<(), SimFailure> {
        let (id, core) = self.slots[slot]
            .start_core(&self.cfg.tuning, &mut self.rng, self.now)
            .map_err(|e| self.fail(e))?;
        let now = self.now_of(slot);
        let m = &self.cfg.model;
        let at = self.instant(self.now);
        let placement = PlacementState::new(id.clone(), m.vnodes, m.settle, at);
        let quorum = QuorumState::new(id.name(), m.quorum, quorum::stable_after(m.settle), at);
        self.slots[slot].node = Some(SimNode::new(core, id.clone(), placement, quorum));
        if self.now > Duration::ZERO {
            self.faults.restarts += 1;
        }
        self.log(format!("start {id}"));
        let addrs: Vec<SocketAddr> = self.running().iter().map(|&i| self.slots[i].addr).collect();
        if let Some(node) = self.node_mut(slot) {
            node.core.set_seed_addrs(addrs, now);
        }
        self.checks.membership_dirty = true;
        self.note_sole();
        self.pump(slot)
    }

    /// The process ends: its activations vanish with it, its callers see the connection drop.
    pub(super) fn stop(&mut self, slot: usize, verb: &str) -> Result<(), SimFailure> {
        let Some(node) = self.slots[slot].stop() else {
            return Ok(());
        };
        self.log(format!("{verb} {}", node.core.local_id()));
        for id in node.acts.keys() {
            self.checks.deactivated(id);
        }
        for req in node.reqs.values() {
            if req.is_client() {
                self.record_answer(
                    req.ask,
                    Err((ErrorCode::Unreachable, "origin node stopped")),
                )?;
            }
        }
        self.checks.membership_dirty = true;
        self.note_sole();
        Ok(())
    }

    fn fault(&mut self) -> Result<(), SimFailure> {
        let running = self.running();
        let idle: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&i| self.node(i).is_some_and(|n| !n.leaving))
            .collect();
        let stopped: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].node.is_none())
            .collect();
        let partitioned = self.groups.is_some();
        let n = self.slots.len();
        match harness::pick_fault(&mut self.rng, n, &running, &idle, &stopped, partitioned) {
            Fault::Crash(slot) => {
                self.faults.crashes += 1;
                self.stop(slot, "crash")?;
            }
            Fault::Leave(slot) => {
                self.faults.leaves += 1;
                self.begin_leave(slot)?;
            }
            Fault::Start(slot) => self.start(slot)?,
            Fault::Partition(groups) => {
                self.faults.partitions += 1;
                self.log(format!("partition {groups:?}"));
                self.groups = Some(groups);
            }
            Fault::Heal => {
                if let Some(g) = self.groups.take() {
                    self.faults.heals += 1;
                    self.healed.push((g, self.now));
                    self.log("heal".to_owned());
                }
            }
        }
        Ok(())
    }

    /// The membership core has left: the process stops.
    pub(super) fn finish_leave(&mut self, slot: usize) -> Result<(), SimFailure> {
        let now = self.now_of(slot);
        if let Some(node) = self.node_mut(slot) {
            node.core.leave(now);
            self.pump(slot)?;
        }
        self.stop(slot, "left")
    }

    /// Sends a routing message: lost across a partition, to a stopped node, or (during the
    /// faults) with probability `msg_loss`.
    pub(super) fn send_msg(&mut self, from: usize, to: usize, msg: Msg) -> Result<(), SimFailure> {
        if self.separated(from, to) || (self.faults_on && self.rng.random_bool(self.cfg.msg_loss)) {
            return Ok(());
        }
        let lat = self.latency();
        self.at(lat, Event::Msg { to, msg })
    }

    pub(super) fn pump(&mut self, slot: usize) -> Result<(), SimFailure> {
        let generation = self.slots[slot].generation;
        let from = self.slots[slot].addr;
        let Some(core) = self.slots[slot].core_mut() else {
            return Ok(());
        };
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
            let Some(to) = self.slots.iter().position(|s| s.addr == t.dst) else {
                continue;
            };
            if self.separated(slot, to) || (self.faults_on && self.rng.random_bool(self.cfg.loss)) {
                continue;
            }
            let lat = self.latency();
            self.at(
                lat,
                Event::Gossip {
                    to,
                    from,
                    bytes: t.payload,
                },
            )?;
        }
        for ev in events {
            if let MembershipEvent::Renewed { previous, current } = ev {
                self.log(format!("{previous}: renewed as {current}"));
            }
        }
        self.membership_changed(slot)
    }
}
