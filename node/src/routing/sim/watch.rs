//! The node's watch task and handover (`node/watch.rs`): membership view → ring admission
//! → ring view → passivation of the ids that moved away, and the graceful leave.

use std::collections::VecDeque;
use std::time::Duration;

use cortex_protocol::{ActorId, MemberState, NodeId, Ring};
use rand::RngExt;

use super::SimFailure;
use super::node::{Admit, Job};
use super::world::{Event, World, fnv};
use crate::placement::quorum::{QuorumChange, Sighting};

/// How often the watch loop wakes when no refused member is due, and the longest wait
/// before a refused member is checked again (`ADMISSION_RETRY`).
const ADMISSION_RETRY: Duration = Duration::from_secs(2);
/// The wait after a first refusal, doubling up to `ADMISSION_RETRY`
/// (`ADMISSION_RETRY_FIRST`).
const ADMISSION_RETRY_FIRST: Duration = Duration::from_millis(100);
/// How long a dial to an unreachable member takes to fail (the transport's
/// `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a pending dial re-checks reachability (QUIC's handshake retransmission).
const DIAL_PROBE: Duration = Duration::from_millis(250);
/// How long a live member awaiting admission keeps its ids from being activated elsewhere
/// (`ADMISSION_GRACE`), counted from when `apply_view` first saw it live and not admitted.
const ADMISSION_GRACE: Duration = Duration::from_secs(5);
/// The node passivates moved ids in chunks of this many (`handover`).
const HANDOVER_CHUNK: usize = 256;

impl World {
    /// After every membership input: if the published view changed, the watch task wakes.
    pub(super) fn membership_changed(&mut self, slot: usize) -> Result<(), SimFailure> {
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let view = node.core.view();
        let mut sig = 0xcbf2_9ce4_8422_2325;
        for m in &view.members {
            fnv(&mut sig, m.id.name().as_bytes());
            fnv(&mut sig, &m.id.incarnation().to_le_bytes());
            fnv(&mut sig, &[u8::from(m.state == MemberState::Up)]);
        }
        if sig == node.signature {
            return Ok(());
        }
        node.signature = sig;
        node.live = view.live_ids();
        node.fingerprint = view.fingerprint;
        let me = node.me.name();
        node.saw_peer |= node.live.iter().any(|n| n.name() != me);
        self.checks.membership_dirty = true;
        self.wake_watch(slot)
    }

    /// Something the watch task waits on happened: run its loop now, or right after the
    /// handover it is in.
    fn wake_watch(&mut self, slot: usize) -> Result<(), SimFailure> {
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        if node.watch_busy {
            node.watch_dirty = true;
            return Ok(());
        }
        self.run_watch(slot)
    }

    /// One turn of the watch task's loop: the quorum observes the view (a loss passivates
    /// everything first), then `apply_view`, the handover ahead of admission, and (on a ring
    /// change) the handover.
    fn run_watch(&mut self, slot: usize) -> Result<(), SimFailure> {
        let now = self.instant(self.now);
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        node.watch_dirty = false;
        node.watch_token = 0;
        let seen = Sighting::from(&node.core.view());
        let change = node.quorum.observe(&seen, now);
        if self.on_quorum_change(slot, change)? {
            return Ok(());
        }
        self.finish_turn(slot)
    }

    /// The rest of a watch turn after the quorum: `apply_view` and the handovers.
    fn finish_turn(&mut self, slot: usize) -> Result<(), SimFailure> {
        let applied = self.apply_view(slot)?;
        if applied.changed || !applied.ahead.is_empty() {
            if let Some(node) = self.slots[slot].node.as_mut() {
                node.watch_busy = true;
            }
            if applied.changed {
                self.ring_changed(slot)?;
            }
            self.start_handover(slot, false, applied)
        } else {
            self.schedule_watch_tick(slot)
        }
    }

    /// `on_quorum_change`: a loss passivates every activation (in a job the watch turn
    /// waits for; true when one started), a regain restarts the settle time.
    fn on_quorum_change(&mut self, slot: usize, change: QuorumChange) -> Result<bool, SimFailure> {
        let now = self.instant(self.now);
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(false);
        };
        match change {
            QuorumChange::Same => Ok(false),
            QuorumChange::Lost => {
                let st = node.quorum.status();
                let all: VecDeque<ActorId> = node.acts.keys().cloned().collect();
                let line = format!(
                    "{}: lost quorum (reaches {:?} of {:?}), passivating {}",
                    node.me,
                    st.reachable,
                    st.base,
                    all.len()
                );
                node.watch_busy = true;
                self.checks.quorum_losses += 1;
                self.log(line);
                let job_id = self.fresh_id();
                if let Some(node) = self.node_mut(slot) {
                    node.jobs.insert(
                        job_id,
                        Job {
                            leave: false,
                            fencing: true,
                            pending: all,
                            then_handover: false,
                        },
                    );
                }
                self.run_chunk(slot, job_id)?;
                Ok(true)
            }
            QuorumChange::Regained => {
                node.placement.unsettle(now);
                let line = format!("{}: regained quorum", node.me);
                self.log(line);
                // The node's `unsettle` publishes a new epoch: settle waits decide again.
                self.ring_changed(slot)?;
                Ok(false)
            }
        }
    }

    /// The watch loop also wakes when the earliest refused member is due for another
    /// check, or `ADMISSION_RETRY` after its last turn if none is (`Admission::next_retry`),
    /// and when the quorum's base may drop members declared down (`next_deadline`).
    fn schedule_watch_tick(&mut self, slot: usize) -> Result<(), SimFailure> {
        let token = self.fresh_id();
        let generation = self.slots[slot].generation;
        let t = self.now;
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        node.watch_token = token;
        let due = node
            .admission
            .values()
            .filter_map(|a| match a {
                Admit::Refused(at, backoff) => Some(*at + *backoff),
                _ => None,
            })
            .min()
            .unwrap_or(t + ADMISSION_RETRY);
        let due = match node.quorum.next_deadline() {
            Some(at) => due.min(at.saturating_duration_since(self.base)),
            None => due,
        };
        self.at(
            due.saturating_sub(t),
            Event::WatchTick {
                slot,
                generation,
                token,
            },
        )
    }

    pub(super) fn on_watch_tick(&mut self, slot: usize, token: u64) -> Result<(), SimFailure> {
        let now = self.instant(self.now);
        let Some(node) = self.node_mut(slot) else {
            return Ok(());
        };
        if node.watch_token != token || node.watch_busy {
            return Ok(());
        }
        // The node's quorum branch ticks, acts on the change, then loops.
        if node.quorum.next_deadline().is_some_and(|at| at <= now) {
            let change = node.quorum.tick(now);
            if self.on_quorum_change(slot, change)? {
                return Ok(());
            }
        }
        self.run_watch(slot)
    }

    /// `apply_view`: joins once the view holds another member (or the seeds resolve only to
    /// this node); the live members (without this node while it leaves), only those
    /// admitted, plus this node, installed as the ring; the settle time restarted when the
    /// gossip set changed but the ring did not; the ring with the members awaiting admission
    /// within the grace kept for the activation gate; when the gossip set changed and there
    /// are such members, the live activations they own on that ring listed for
    /// `handover_ahead`.
    fn apply_view(&mut self, slot: usize) -> Result<Applied, SimFailure> {
        let now = self.instant(self.now);
        let t = self.now;
        let unsettle = self.cfg.model.unsettle_on_gossip_change;
        let ahead_on = self.cfg.model.handover_ahead;
        let vnodes = self.cfg.model.vnodes;
        // `seeds_are_only_me`: the seeds resolve to every running node's address.
        let seeds_only_me = self.running() == [slot];
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(Applied::default());
        };
        let me = node.me.clone();
        let leaving = node.leaving;
        let mut live: Vec<NodeId> = node
            .live
            .iter()
            .filter(|n| !(leaving && n.name() == me.name()))
            .cloned()
            .collect();
        let joins = !node.joined && (live.iter().any(|n| n.name() != me.name()) || seeds_only_me);
        node.joined |= joins;
        let gossip_changed = node.last_fingerprint != node.fingerprint;
        node.last_fingerprint = node.fingerprint;
        let mut gossip_live = live.clone();
        // `admit`: only this node and members that passed their QUIC/TLS check; a refused
        // member is checked again once its backoff has passed.
        node.admission.retain(|n, _| live.contains(n));
        let mut to_check = Vec::new();
        live.retain(|n| {
            if n.name() == me.name() {
                return true;
            }
            match node.admission.get(n).copied() {
                Some(Admit::Ok) => true,
                Some(Admit::Pending) => false,
                Some(Admit::Refused(at, backoff)) if t < at + backoff => false,
                prev => {
                    let last_backoff = match prev {
                        Some(Admit::Refused(_, b)) => b,
                        _ => Duration::ZERO,
                    };
                    node.admission.insert(n.clone(), Admit::Pending);
                    to_check.push((n.clone(), last_backoff));
                    false
                }
            }
        });
        if !leaving && !live.iter().any(|n| n.name() == me.name()) {
            live.push(me.clone());
            gossip_live.push(me.clone());
        }
        let changed = match node.placement.update(live, now) {
            Some(_) => true,
            // A member awaits admission: other nodes may already count it.
            None if unsettle && gossip_changed => {
                node.placement.unsettle(now);
                self.checks.unsettles += 1;
                true
            }
            None => false,
        };
        // `Admission::awaiting_ring`: this node, the admitted members and those awaiting
        // admission for less than `ADMISSION_GRACE` since this node first saw them live
        // and not admitted; kept for the activation gate while there are such members.
        let admission = &node.admission;
        node.first_seen
            .retain(|n, _| gossip_live.contains(n) && !matches!(admission.get(n), Some(Admit::Ok)));
        let mut members = Vec::with_capacity(gossip_live.len());
        let mut awaiting = 0;
        for n in &gossip_live {
            if n.name() == me.name() || matches!(admission.get(n), Some(Admit::Ok)) {
                members.push(n.clone());
                continue;
            }
            let first = *node.first_seen.entry(n.clone()).or_insert(t);
            if t - first < ADMISSION_GRACE {
                members.push(n.clone());
                awaiting += 1;
            }
        }
        node.awaiting = (awaiting > 0).then(|| Ring::new(members, vnodes));
        // `handover_ahead`: the ids those members own on that ring (compared by name); they
        // may already host them.
        let ahead: VecDeque<ActorId> = match &node.awaiting {
            Some(full) if ahead_on && gossip_changed => node
                .acts
                .iter()
                .filter(|(id, a)| {
                    a.stopping.is_none() && full.owner(id).map(|o| o.name()) != Some(me.name())
                })
                .map(|(id, _)| id.clone())
                .collect(),
            _ => VecDeque::new(),
        };
        if !ahead.is_empty() {
            self.checks.handovers_ahead += ahead.len() as u64;
            let line = format!(
                "{}: handing over {} ids ahead of admission",
                self.slots[slot].name,
                ahead.len()
            );
            self.log(line);
        }
        if joins {
            self.log(format!("{}: joined", self.slots[slot].name));
        }
        for (member, last_backoff) in to_check {
            self.check_admission(slot, member, last_backoff)?;
        }
        Ok(Applied { changed, ahead })
    }

    /// The admission check dials the member. QUIC retransmits its handshake, so the dial
    /// succeeds one round trip after the member becomes reachable, or fails at the connect
    /// timeout; reachability is probed every `DIAL_PROBE` meanwhile.
    fn check_admission(
        &mut self,
        slot: usize,
        member: NodeId,
        last_backoff: Duration,
    ) -> Result<(), SimFailure> {
        let give_up = self.now + CONNECT_TIMEOUT;
        self.dial_probe(slot, member, give_up, last_backoff)
    }

    pub(super) fn dial_probe(
        &mut self,
        slot: usize,
        member: NodeId,
        give_up: Duration,
        last_backoff: Duration,
    ) -> Result<(), SimFailure> {
        let generation = self.slots[slot].generation;
        let target = self.by_name.get(member.name()).copied();
        let reachable =
            target.is_some_and(|to| self.node(to).is_some() && !self.separated(slot, to));
        let ev = if reachable {
            let rtt = self.latency() + self.latency();
            (
                rtt,
                Event::Admitted {
                    slot,
                    generation,
                    member,
                    ok: true,
                    last_backoff,
                },
            )
        } else if self.now >= give_up {
            (
                Duration::ZERO,
                Event::Admitted {
                    slot,
                    generation,
                    member,
                    ok: false,
                    last_backoff,
                },
            )
        } else {
            let next = DIAL_PROBE.min(give_up - self.now);
            (
                next,
                Event::Dial {
                    slot,
                    generation,
                    member,
                    give_up,
                    last_backoff,
                },
            )
        };
        self.at(ev.0, ev.1)
    }

    pub(super) fn on_admitted(
        &mut self,
        slot: usize,
        member: NodeId,
        ok: bool,
        last_backoff: Duration,
    ) -> Result<(), SimFailure> {
        let now = self.now;
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let Some(state) = node.admission.get_mut(&member) else {
            return Ok(());
        };
        *state = if ok {
            Admit::Ok
        } else {
            let backoff = (last_backoff * 2).clamp(ADMISSION_RETRY_FIRST, ADMISSION_RETRY);
            Admit::Refused(now, backoff)
        };
        self.wake_watch(slot)
    }

    /// A new ring view: log it and wake the requests in `wait_settled` (epoch subscription).
    fn ring_changed(&mut self, slot: usize) -> Result<(), SimFailure> {
        let Some(node) = self.node(slot) else {
            return Ok(());
        };
        let view = node.placement.current().clone();
        let members: Vec<String> = view.ring.members().iter().map(|m| m.to_string()).collect();
        let waiting = node.epoch_waiters();
        let line = format!("{}: ring epoch {} {members:?}", node.me, view.epoch);
        self.log(line);
        self.checks.ring_changes += 1;
        for req in waiting {
            self.on_epoch(slot, req)?;
        }
        Ok(())
    }

    /// `Node::shutdown`: set `leaving`, `apply_view` (the ring without this node) and hand
    /// everything over, and only then leave the membership.
    pub(super) fn begin_leave(&mut self, slot: usize) -> Result<(), SimFailure> {
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        node.leaving = true;
        let name = node.me.name().to_owned();
        self.log(format!("{name}: leaving"));
        let applied = self.apply_view(slot)?;
        if applied.changed || !applied.ahead.is_empty() {
            if applied.changed {
                self.ring_changed(slot)?;
            }
            self.start_handover(slot, true, applied)
        } else {
            self.finish_leave(slot)
        }
    }

    /// Passivates the ids handed over ahead of admission, then (on a ring change) runs
    /// `handover`.
    fn start_handover(
        &mut self,
        slot: usize,
        leave: bool,
        applied: Applied,
    ) -> Result<(), SimFailure> {
        let job_id = self.fresh_id();
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let job = Job {
            leave,
            fencing: false,
            pending: applied.ahead,
            then_handover: applied.changed,
        };
        node.jobs.insert(job_id, job);
        self.run_chunk(slot, job_id)
    }

    /// `handover`: the live ids this node does not own on its current ring.
    fn moved_ids(&self, slot: usize) -> VecDeque<ActorId> {
        let Some(node) = self.node(slot) else {
            return VecDeque::new();
        };
        if !self.cfg.model.handover {
            return VecDeque::new();
        }
        let view = node.placement.current();
        let me = node.me.name();
        node.acts
            .iter()
            .filter(|(id, a)| a.stopping.is_none() && view.owner(id).map(|o| o.name()) != Some(me))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Passivates the next chunk of a handover and waits for all of it; moves on from the
    /// ids handed over ahead of admission to `handover`'s, and finishes the job when
    /// nothing is left.
    pub(super) fn run_chunk(&mut self, slot: usize, job_id: u64) -> Result<(), SimFailure> {
        if self
            .node(slot)
            .and_then(|n| n.jobs.get(&job_id))
            .is_some_and(|j| j.pending.is_empty() && j.fencing)
        {
            if let Some(job) = self.node_mut(slot).and_then(|n| n.jobs.get_mut(&job_id)) {
                job.fencing = false;
            }
            let applied = self.apply_view(slot)?;
            if applied.changed {
                self.ring_changed(slot)?;
            }
            if let Some(job) = self.node_mut(slot).and_then(|n| n.jobs.get_mut(&job_id)) {
                job.pending = applied.ahead;
                job.then_handover = applied.changed;
            }
        }
        if self
            .node(slot)
            .and_then(|n| n.jobs.get(&job_id))
            .is_some_and(|j| j.pending.is_empty() && j.then_handover)
        {
            let moved = self.moved_ids(slot);
            if let Some(job) = self.node_mut(slot).and_then(|n| n.jobs.get_mut(&job_id)) {
                job.then_handover = false;
                job.pending = moved;
            }
        }
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let Some(job) = node.jobs.get_mut(&job_id) else {
            return Ok(());
        };
        let n = job.pending.len().min(HANDOVER_CHUNK);
        let chunk: Vec<ActorId> = job.pending.drain(..n).collect();
        let fencing = job.fencing;
        if chunk.is_empty() {
            let leave = job.leave;
            node.jobs.remove(&job_id);
            return if leave {
                self.finish_leave(slot)
            } else {
                node.watch_busy = false;
                if node.watch_dirty {
                    self.run_watch(slot)
                } else {
                    self.schedule_watch_tick(slot)
                }
            };
        }
        let mut end = self.now;
        for id in &chunk {
            if let Some(done) = self.begin_passivation(slot, id, fencing)? {
                end = end.max(done);
            }
        }
        let generation = self.slots[slot].generation;
        self.at(
            end - self.now,
            Event::Chunk {
                slot,
                generation,
                job: job_id,
            },
        )
    }

    /// `VirtualRegistry::passivate`: begins stopping `id` (if live) and returns when it will
    /// be done; `None` if it is not there. `fencing`: on a lost quorum, not a handover.
    fn begin_passivation(
        &mut self,
        slot: usize,
        id: &ActorId,
        fencing: bool,
    ) -> Result<Option<Duration>, SimFailure> {
        let (lo, hi) = self.cfg.model.passivation;
        let delay = Duration::from_micros(
            self.rng
                .random_range(lo.as_micros() as u64..=hi.as_micros().max(lo.as_micros()) as u64),
        );
        let done = self.now + delay;
        let generation = self.slots[slot].generation;
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(None);
        };
        let Some(act) = node.acts.get_mut(id) else {
            return Ok(None);
        };
        if let Some(until) = act.stopping {
            return Ok(Some(until));
        }
        act.stopping = Some(done);
        node.stopping += 1;
        let serial = act.serial;
        if fencing {
            self.checks.fenced += 1;
        } else {
            self.checks.handovers += 1;
        }
        self.at(
            delay,
            Event::Passivated {
                slot,
                generation,
                id: id.clone(),
                serial,
            },
        )?;
        Ok(Some(done))
    }

    pub(super) fn on_passivated(&mut self, slot: usize, id: &ActorId, serial: u64) {
        let Some(node) = self.slots[slot].node.as_mut() else {
            return;
        };
        if node.acts.get(id).is_some_and(|a| a.serial == serial) {
            node.acts.remove(id);
            node.stopping -= 1;
            self.checks.deactivated(id);
        }
    }
}

/// What one `apply_view` asks the watch task to do next.
#[derive(Default)]
struct Applied {
    /// The ring view changed (or was unsettled): `handover` follows.
    changed: bool,
    /// The ids `handover_ahead` passivates first.
    ahead: VecDeque<ActorId>,
}
