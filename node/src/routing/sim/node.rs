//! One simulated node's routing state and what the async node does with it: the watch task
//! (membership → ring view → handover), request routing through [`decide`], the activation
//! gate, passivation, and the graceful leave. Each function names the node code it mirrors.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use cortex_protocol::{ActorId, ErrorCode, MemberState, NodeId};
use rand::RngExt;

use super::SimFailure;
use super::world::{Answer, AskRecord, Event, Msg, World, fnv};
use crate::MAX_HOPS;
use crate::membership::MembershipCore;
use crate::placement::PlacementState;
use crate::routing::decide::{Decision, decide};

/// What `transport_err` in `node/inner.rs` makes of a forwarded ask that got no reply in
/// time: `TransportError::AskTimeout` is not `TransportError::Timeout`, so it becomes
/// `Unreachable`.
const ASK_TIMEOUT_CODE: ErrorCode = ErrorCode::Unreachable;
/// The node passivates moved ids in chunks of this many (`handover` in `node/watch.rs`).
const HANDOVER_CHUNK: usize = 256;

pub(super) struct Act {
    pub(super) serial: u64,
    /// When its passivation completes, once begun.
    pub(super) stopping: Option<Duration>,
}

pub(super) enum ReplyTo {
    /// The ask was issued on this node (`Node::ask`, or a client connection).
    Client,
    /// Another node forwarded it and waits for the reply.
    Remote {
        slot: usize,
        generation: u64,
        req: u64,
    },
}

pub(super) enum ReqState {
    Routing,
    /// In `Placement::wait_settled`.
    Settling {
        token: u64,
    },
    /// Waiting for a passivating activation to stop before activating again.
    Stopping {
        token: u64,
        local_deadline: Duration,
    },
    /// Forwarded; waiting for the reply or the transport deadline.
    Forwarded,
}

pub(super) struct Req {
    pub(super) ask: u64,
    id: ActorId,
    hops: u8,
    /// This hop's deadline (`route_ask`: received budget from arrival).
    deadline: Duration,
    /// The budget as received.
    budget: Duration,
    reply: ReplyTo,
    state: ReqState,
}

impl Req {
    pub(super) fn is_client(&self) -> bool {
        matches!(self.reply, ReplyTo::Client)
    }
}

/// A handover in progress (`handover` in `node/watch.rs`).
pub(super) struct Job {
    /// Started by the graceful leave (`apply_view`) rather than the watch task.
    leave: bool,
    pending: VecDeque<ActorId>,
}

pub(super) struct SimNode {
    pub(super) core: MembershipCore,
    /// The id the node started with (`NodeInner::id`; membership may renew its incarnation).
    pub(super) me: NodeId,
    pub(super) placement: PlacementState,
    pub(super) acts: BTreeMap<ActorId, Act>,
    pub(super) reqs: BTreeMap<u64, Req>,
    /// The membership view's live ids and fingerprint.
    pub(super) live: Vec<NodeId>,
    pub(super) fingerprint: u64,
    signature: u64,
    watch_busy: bool,
    watch_dirty: bool,
    pub(super) jobs: BTreeMap<u64, Job>,
    pub(super) leaving: bool,
    /// Activations passivating.
    pub(super) stopping: usize,
}

impl SimNode {
    pub(super) fn new(core: MembershipCore, me: NodeId, placement: PlacementState) -> Self {
        Self {
            core,
            me,
            placement,
            acts: BTreeMap::new(),
            reqs: BTreeMap::new(),
            live: Vec::new(),
            fingerprint: 0,
            signature: 0,
            watch_busy: false,
            watch_dirty: false,
            jobs: BTreeMap::new(),
            leaving: false,
            stopping: 0,
        }
    }
}

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
        self.checks.membership_dirty = true;
        if node.watch_busy {
            node.watch_dirty = true;
            return Ok(());
        }
        self.run_watch(slot)
    }

    /// One turn of the watch task's loop (`start` in `node/watch.rs`): live members plus this
    /// node's own id (it does not look at `leaving`), then handover on a ring change.
    fn run_watch(&mut self, slot: usize) -> Result<(), SimFailure> {
        let now = self.instant(self.now);
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        node.watch_dirty = false;
        let mut live = node.live.clone();
        if !live.contains(&node.me) {
            live.push(node.me.clone());
        }
        if node.placement.update(live, now).is_some() {
            node.watch_busy = true;
            self.ring_changed(slot)?;
            self.start_handover(slot, false)?;
        }
        Ok(())
    }

    /// A new ring view: log it and wake the requests in `wait_settled` (epoch subscription).
    fn ring_changed(&mut self, slot: usize) -> Result<(), SimFailure> {
        let Some(node) = self.node(slot) else {
            return Ok(());
        };
        let view = node.placement.current().clone();
        let members: Vec<String> = view.ring.members().iter().map(|m| m.to_string()).collect();
        let waiting: Vec<u64> = node
            .reqs
            .iter()
            .filter(|(_, r)| matches!(r.state, ReqState::Settling { .. }))
            .map(|(k, _)| *k)
            .collect();
        let line = format!("{}: ring epoch {} {members:?}", node.me, view.epoch);
        self.log(line);
        self.checks.ring_changes += 1;
        for req in waiting {
            self.settle_wait(slot, req)?;
        }
        Ok(())
    }

    /// `Node::shutdown`: set `leaving`, install the ring without this node (`apply_view`),
    /// hand everything over, and only then leave the membership.
    pub(super) fn begin_leave(&mut self, slot: usize) -> Result<(), SimFailure> {
        let now = self.instant(self.now);
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        node.leaving = true;
        let name = node.me.name().to_owned();
        let live: Vec<NodeId> = node
            .live
            .iter()
            .filter(|n| n.name() != name)
            .cloned()
            .collect();
        let changed = node.placement.update(live, now).is_some();
        self.log(format!("{name}: leaving"));
        if changed {
            self.ring_changed(slot)?;
            self.start_handover(slot, true)
        } else {
            self.finish_leave(slot)
        }
    }

    fn start_handover(&mut self, slot: usize, leave: bool) -> Result<(), SimFailure> {
        let handover = self.cfg.model.handover;
        let job_id = self.fresh_id();
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let view = node.placement.current().clone();
        let me = node.me.name().to_owned();
        let pending: VecDeque<ActorId> = if handover {
            node.acts
                .iter()
                .filter(|(id, a)| {
                    a.stopping.is_none() && view.owner(id).map(|o| o.name()) != Some(me.as_str())
                })
                .map(|(id, _)| id.clone())
                .collect()
        } else {
            VecDeque::new()
        };
        node.jobs.insert(job_id, Job { leave, pending });
        self.run_chunk(slot, job_id)
    }

    /// Passivates the next chunk of a handover and waits for all of it; finishes the job
    /// when nothing is left.
    pub(super) fn run_chunk(&mut self, slot: usize, job_id: u64) -> Result<(), SimFailure> {
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let Some(job) = node.jobs.get_mut(&job_id) else {
            return Ok(());
        };
        let n = job.pending.len().min(HANDOVER_CHUNK);
        let chunk: Vec<ActorId> = job.pending.drain(..n).collect();
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
                    Ok(())
                }
            };
        }
        let mut end = self.now;
        for id in &chunk {
            if let Some(done) = self.begin_passivation(slot, id)? {
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
    /// be done; `None` if it is not there.
    fn begin_passivation(
        &mut self,
        slot: usize,
        id: &ActorId,
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
        self.checks.handovers += 1;
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

    /// A client ask arrives at a random running node (`NodeInner::ask_erased`).
    pub(super) fn new_ask(&mut self) -> Result<(), SimFailure> {
        let running = self.running();
        if running.is_empty() {
            return Ok(());
        }
        let slot = running[self.rng.random_range(0..running.len())];
        let key = self.rng.random_range(0..self.cfg.ids);
        let id = ActorId::new("sim", key.to_string())
            .map_err(|e| self.fail(format!("bad simulated actor id: {e}")))?;
        let (lo, hi) = self.cfg.ask_budget;
        let budget = Duration::from_millis(
            self.rng
                .random_range(lo.as_millis() as u64..=hi.as_millis().max(lo.as_millis()) as u64),
        );
        let quiet = self.quiet_and_stable();
        let ask = self.asks.len() as u64;
        self.asks.push(AskRecord {
            issued: self.now,
            deadline: self.now + budget,
            answers: 0,
            hops: 0,
            quiet,
        });
        let req = Req {
            ask,
            id,
            hops: 0,
            deadline: self.now + budget,
            budget,
            reply: ReplyTo::Client,
            state: ReqState::Routing,
        };
        self.admit(slot, req)
    }

    fn admit(&mut self, slot: usize, req: Req) -> Result<(), SimFailure> {
        let req_id = self.fresh_id();
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        node.reqs.insert(req_id, req);
        self.route(slot, req_id)
    }

    /// `NodeInner::resolve_at`, one turn: decide with the current view.
    fn route(&mut self, slot: usize, req_id: u64) -> Result<(), SimFailure> {
        let t = self.now;
        let now = self.instant(t);
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let Some(req) = node.reqs.get_mut(&req_id) else {
            return Ok(());
        };
        req.state = ReqState::Routing;
        let view = node.placement.current();
        let live = node.acts.get(&req.id).is_some_and(|a| a.stopping.is_none());
        let decision = decide(&node.me, view, &req.id, live, req.hops, MAX_HOPS, now);
        match decision {
            Decision::Local => {
                // `ask_erased` hands the local registry the caller's whole timeout, even after
                // waiting in `resolve`; `route_ask` hands it what is left of the deadline.
                let local_deadline = if req.is_client() {
                    t + req.budget
                } else {
                    req.deadline
                };
                self.deliver_local(slot, req_id, local_deadline)
            }
            Decision::Forward(owner) => self.forward(slot, req_id, &owner),
            Decision::WaitUntil(_) => self.settle_wait(slot, req_id),
            Decision::Fail(code, why) => self.answer(slot, req_id, Err((code, why))),
        }
    }

    /// `Placement::wait_settled`: re-decide once the current view is settled, fail with
    /// `Timeout` at the deadline, wake early on a ring change.
    fn settle_wait(&mut self, slot: usize, req_id: u64) -> Result<(), SimFailure> {
        let (t, base) = (self.now, self.base);
        let now = self.instant(t);
        let token = self.fresh_id();
        let generation = self.slots[slot].generation;
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let view = node.placement.current().clone();
        let Some(req) = node.reqs.get_mut(&req_id) else {
            return Ok(());
        };
        if view.is_settled(now) {
            return self.route(slot, req_id);
        }
        if t >= req.deadline {
            return self.answer(
                slot,
                req_id,
                Err((ErrorCode::Timeout, "view not settled by the deadline")),
            );
        }
        req.state = ReqState::Settling { token };
        let wake = view
            .settled_at
            .saturating_duration_since(base)
            .min(req.deadline);
        self.at(
            wake.saturating_sub(t),
            Event::Wake {
                slot,
                generation,
                req: req_id,
                token,
            },
        )
    }

    /// `VirtualRegistry::get_or_activate` behind `send_erased`: deliver to a live
    /// activation, wait for a passivating one to stop, or activate through the gate.
    fn deliver_local(
        &mut self,
        slot: usize,
        req_id: u64,
        local_deadline: Duration,
    ) -> Result<(), SimFailure> {
        let t = self.now;
        let now = self.instant(t);
        let gate_settled = self.cfg.model.gate_requires_settled;
        let token = self.fresh_id();
        let generation = self.slots[slot].generation;
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let Some(req) = node.reqs.get_mut(&req_id) else {
            return Ok(());
        };
        let id = req.id.clone();
        match node.acts.get(&id).map(|a| a.stopping) {
            Some(None) => self.answer(slot, req_id, Ok(())),
            Some(Some(until)) => {
                if t >= local_deadline {
                    return self.answer(
                        slot,
                        req_id,
                        Err((
                            ErrorCode::Timeout,
                            "activation still stopping at the deadline",
                        )),
                    );
                }
                req.state = ReqState::Stopping {
                    token,
                    local_deadline,
                };
                let wake = until.min(local_deadline);
                self.at(
                    wake - t,
                    Event::Wake {
                        slot,
                        generation,
                        req: req_id,
                        token,
                    },
                )
            }
            None => {
                // The activation gate installed by `node/watch.rs`.
                let view = node.placement.current();
                let mine = view.owner(&id).is_some_and(|o| o.name() == node.me.name());
                if mine && (!gate_settled || view.is_settled(now)) {
                    let serial = self.fresh_id();
                    if let Some(node) = self.slots[slot].node.as_mut() {
                        node.acts.insert(
                            id.clone(),
                            Act {
                                serial,
                                stopping: None,
                            },
                        );
                    }
                    self.on_activation(slot, &id)?;
                    self.answer(slot, req_id, Ok(()))
                } else {
                    self.answer(slot, req_id, Err((ErrorCode::Rejected, "activation gate")))
                }
            }
        }
    }

    /// `NodeInner::forward_ask`: the owner must be a live member (`connection`), then the
    /// ask goes out with what is left of the deadline and the transport waits until then.
    fn forward(&mut self, slot: usize, req_id: u64, owner: &NodeId) -> Result<(), SimFailure> {
        let t = self.now;
        let increment = self.cfg.model.ask_hops_increment;
        let generation = self.slots[slot].generation;
        let Some(&to) = self.by_name.get(owner.name()) else {
            return self.answer(slot, req_id, Err((ErrorCode::Unreachable, "unknown name")));
        };
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let connectable = node.live.contains(owner);
        let Some(req) = node.reqs.get_mut(&req_id) else {
            return Ok(());
        };
        if req.hops >= MAX_HOPS {
            return self.answer(
                slot,
                req_id,
                Err((ErrorCode::HopLimit, "forward_ask hop limit")),
            );
        }
        if !connectable {
            return self.answer(
                slot,
                req_id,
                Err((ErrorCode::Unreachable, "owner not a live member")),
            );
        }
        req.state = ReqState::Forwarded;
        let msg = Msg::Ask {
            req: req_id,
            from: slot,
            from_generation: generation,
            ask: req.ask,
            id: req.id.clone(),
            budget: req.deadline.saturating_sub(t),
            hops: if increment { req.hops + 1 } else { req.hops },
        };
        let (deadline, ask) = (req.deadline, req.ask as usize);
        if let Some(rec) = self.asks.get_mut(ask) {
            rec.hops += 1;
        }
        self.send_msg(slot, to, msg)?;
        self.at(
            deadline - self.now,
            Event::Pending {
                slot,
                generation,
                req: req_id,
            },
        )
    }

    pub(super) fn on_msg(&mut self, to: usize, msg: Msg) -> Result<(), SimFailure> {
        match msg {
            Msg::Ask {
                req,
                from,
                from_generation,
                ask,
                id,
                budget,
                hops,
            } => {
                if self.node(to).is_none() {
                    return Ok(());
                }
                let r = Req {
                    ask,
                    id,
                    hops,
                    deadline: self.now + budget,
                    budget,
                    reply: ReplyTo::Remote {
                        slot: from,
                        generation: from_generation,
                        req,
                    },
                    state: ReqState::Routing,
                };
                self.admit(to, r)
            }
            Msg::Reply {
                req,
                to_generation,
                result,
            } => {
                if self.slots[to].generation != to_generation {
                    return Ok(());
                }
                let forwarded = self
                    .node(to)
                    .and_then(|n| n.reqs.get(&req))
                    .is_some_and(|r| matches!(r.state, ReqState::Forwarded));
                if forwarded {
                    self.answer(to, req, result)?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn on_pending_deadline(&mut self, slot: usize, req: u64) -> Result<(), SimFailure> {
        let forwarded = self
            .node(slot)
            .and_then(|n| n.reqs.get(&req))
            .is_some_and(|r| matches!(r.state, ReqState::Forwarded));
        if forwarded {
            self.answer(
                slot,
                req,
                Err((ASK_TIMEOUT_CODE, "no reply by the deadline")),
            )?;
        }
        Ok(())
    }

    pub(super) fn on_wake(
        &mut self,
        slot: usize,
        req_id: u64,
        token: u64,
    ) -> Result<(), SimFailure> {
        let Some(req) = self.node(slot).and_then(|n| n.reqs.get(&req_id)) else {
            return Ok(());
        };
        match req.state {
            ReqState::Settling { token: t } if t == token => self.settle_wait(slot, req_id),
            ReqState::Stopping {
                token: t,
                local_deadline,
            } if t == token => self.deliver_local(slot, req_id, local_deadline),
            _ => Ok(()),
        }
    }

    /// Completes a request on this node: to its caller, or back to the forwarding node.
    fn answer(&mut self, slot: usize, req_id: u64, result: Answer) -> Result<(), SimFailure> {
        let Some(req) = self.slots[slot]
            .node
            .as_mut()
            .and_then(|n| n.reqs.remove(&req_id))
        else {
            return Ok(());
        };
        match req.reply {
            ReplyTo::Client => self.record_answer(req.ask, result),
            ReplyTo::Remote {
                slot: to,
                generation,
                req,
            } => self.send_msg(
                slot,
                to,
                Msg::Reply {
                    req,
                    to_generation: generation,
                    result,
                },
            ),
        }
    }
}
