//! One simulated node's routing state and what the async node does with it: the watch task
//! (membership → ring view → handover), request routing through [`decide_routed`], the activation
//! gate, passivation, and the graceful leave. Each function names the node code it mirrors.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use cortex_protocol::{ActorId, ErrorCode, NodeId, Ring};
use rand::RngExt;

use super::SimFailure;
use super::world::{Answer, AskRecord, Event, Msg, World};
use crate::MAX_HOPS;
use crate::membership::MembershipCore;
use crate::membership::sim::harness::HoldsCore;
use crate::placement::PlacementState;
use crate::placement::quorum::QuorumState;
use crate::routing::decide::{Decision, decide_routed};

/// What `transport_err` in `node/inner.rs` makes of a forwarded ask that got no reply in
/// time (`TransportError::AskTimeout`: the request may have run).
const ASK_TIMEOUT_CODE: ErrorCode = ErrorCode::Timeout;

/// `resolve_at`'s answer when the node has not joined by the deadline.
const NOT_JOINED: (ErrorCode, &str) = (ErrorCode::Unreachable, "not joined by the deadline");

pub(super) struct Act {
    pub(super) serial: u64,
    /// When its passivation completes, once begun.
    pub(super) stopping: Option<Duration>,
    /// The checks' observation when it started: its node had never had another live member
    /// in its view and had never been the only running node, so it had not joined by any
    /// rule.
    pub(super) unjoined: bool,
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
    /// In `resolve_at`'s "not joined yet" wait for the next ring epoch.
    Joining {
        token: u64,
    },
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
    /// The ring digest it was routed here under (0 from a client: never trusted).
    epoch: u64,
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

/// A handover in progress: `handover_ahead` then `handover` in `node/watch.rs`, or the
/// passivation of everything on a lost quorum (`on_quorum_change`) and then the rest of that
/// watch turn.
pub(super) struct Job {
    /// Started by the graceful leave rather than the watch task.
    pub(super) leave: bool,
    /// `pending` holds every activation, passivated because the quorum was lost; once done,
    /// the watch turn goes on with `apply_view` (the node awaits the passivations first).
    pub(super) fencing: bool,
    pub(super) pending: VecDeque<ActorId>,
    /// The ring view changed: once `pending` (the ids handed over ahead of admission) is
    /// done, `handover` lists the ids this node no longer owns and passivates them.
    pub(super) then_handover: bool,
}

/// A member's ring admission on one node (`Admit` in `node/watch.rs`).
#[derive(Clone, Copy)]
pub(super) enum Admit {
    Pending,
    Ok,
    /// Refused at, and how long to wait before the next check.
    Refused(Duration, Duration),
}

pub(super) struct SimNode {
    pub(super) core: MembershipCore,
    /// The id the node started with (`NodeInner::id`; membership may renew its incarnation).
    pub(super) me: NodeId,
    pub(super) placement: PlacementState,
    /// `NodeInner::quorum`, fed by the watch loop. The gate reads `has_quorum()` where the
    /// node reads its `has_quorum` flag: the node updates that flag with no await after
    /// each change of the state, so the two never differ at an instant the sim can see.
    pub(super) quorum: QuorumState,
    pub(super) acts: BTreeMap<ActorId, Act>,
    pub(super) reqs: BTreeMap<u64, Req>,
    /// The membership view's live ids and fingerprint.
    pub(super) live: Vec<NodeId>,
    pub(super) fingerprint: u64,
    pub(super) signature: u64,
    pub(super) watch_busy: bool,
    pub(super) watch_dirty: bool,
    /// The pending timed wake of the watch loop (0: none).
    pub(super) watch_token: u64,
    pub(super) admission: BTreeMap<NodeId, Admit>,
    /// `Admission::first_seen`: when `apply_view` first saw each live member not yet
    /// admitted.
    pub(super) first_seen: BTreeMap<NodeId, Duration>,
    /// `Admission::awaiting`: the ring over this node, the admitted members and those
    /// awaiting admission within the grace, while there are any (as of the last
    /// `apply_view`).
    pub(super) awaiting: Option<Ring>,
    pub(super) jobs: BTreeMap<u64, Job>,
    pub(super) leaving: bool,
    /// Activations passivating.
    pub(super) stopping: usize,
    /// `NodeInner::joined`: set by `apply_view` once the view holds another live member or
    /// the seeds resolve only to this node; never cleared.
    pub(super) joined: bool,
    /// `NodeInner::last_fingerprint`: the gossip set `apply_view` saw last.
    pub(super) last_fingerprint: u64,
    /// Observed by the checks, not by the node: this node's view has held another live
    /// member, or it has been the only running node.
    pub(super) saw_peer: bool,
    pub(super) was_sole: bool,
}

impl HoldsCore for SimNode {
    fn core(&self) -> &MembershipCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut MembershipCore {
        &mut self.core
    }
}

impl SimNode {
    pub(super) fn new(
        core: MembershipCore,
        me: NodeId,
        placement: PlacementState,
        quorum: QuorumState,
    ) -> Self {
        Self {
            core,
            me,
            placement,
            quorum,
            acts: BTreeMap::new(),
            reqs: BTreeMap::new(),
            live: Vec::new(),
            fingerprint: 0,
            signature: 0,
            watch_busy: false,
            watch_dirty: false,
            watch_token: 0,
            admission: BTreeMap::new(),
            first_seen: BTreeMap::new(),
            awaiting: None,
            jobs: BTreeMap::new(),
            leaving: false,
            stopping: 0,
            joined: false,
            last_fingerprint: 0,
            saw_peer: false,
            was_sole: false,
        }
    }

    /// Requests waiting for the next ring epoch: in `wait_settled`, or not joined yet.
    pub(super) fn epoch_waiters(&self) -> Vec<u64> {
        self.reqs
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.state,
                    ReqState::Settling { .. } | ReqState::Joining { .. }
                )
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether this node has joined by the checks' own observation (see [`Act::unjoined`]).
    pub(super) fn observed_joined(&self) -> bool {
        self.saw_peer || self.was_sole
    }
}

impl World {
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
            epoch: 0,
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
        let decision = decide_routed(
            &node.me,
            view,
            &req.id,
            req.epoch,
            live,
            req.hops,
            MAX_HOPS,
            || now,
        );
        let digest = view.digest;
        let unjoined = self.cfg.model.join_gate && !node.joined;
        match decision {
            Decision::Local if !live && unjoined => self.join_wait(slot, req_id),
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
            Decision::Forward(owner) => self.forward(slot, req_id, &owner, digest),
            Decision::WaitUntil(_) => self.settle_wait(slot, req_id),
            Decision::Fail(code, why) => self.answer(slot, req_id, Err((code, why))),
        }
    }

    /// `resolve_at` on a node that has not joined: wait for the next ring epoch (an
    /// `apply_view` that changed the ring or unsettled it), then decide again; at the
    /// deadline, fail with `Unreachable`.
    fn join_wait(&mut self, slot: usize, req_id: u64) -> Result<(), SimFailure> {
        let t = self.now;
        let token = self.fresh_id();
        let generation = self.slots[slot].generation;
        let Some(req) = self.node_mut(slot).and_then(|n| n.reqs.get_mut(&req_id)) else {
            return Ok(());
        };
        if t >= req.deadline {
            return self.answer(slot, req_id, Err(NOT_JOINED));
        }
        req.state = ReqState::Joining { token };
        let wake = req.deadline - t;
        self.at(
            wake,
            Event::Wake {
                slot,
                generation,
                req: req_id,
                token,
            },
        )
    }

    /// `Placement::wait_settled`: re-decide once the current view is settled, fail with
    /// `Timeout` at the deadline, wake early on a ring change.
    pub(super) fn settle_wait(&mut self, slot: usize, req_id: u64) -> Result<(), SimFailure> {
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
        let gate_joined = self.cfg.model.join_gate;
        let gate_awaiting = self.cfg.model.awaiting_gate;
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
                let settled = !gate_settled || view.is_settled(now);
                let joined = !gate_joined || node.joined;
                let unjoined = !node.observed_joined();
                // The gate's first question once the id is ours: fenced nodes host nothing.
                if mine && !node.quorum.has_quorum() {
                    self.checks.quorum_refusals += 1;
                    return self.answer(slot, req_id, Err((ErrorCode::Rejected, "no quorum")));
                }
                // `Admission::awaiting_owner`: a member still being admitted owns it on the
                // ring with awaiting members and may already host it.
                let admitting = mine
                    && node
                        .awaiting
                        .as_ref()
                        .is_some_and(|r| r.owner(&id).is_some_and(|o| o.name() != node.me.name()));
                if admitting && settled && joined {
                    // The rest of the gate would let it through.
                    self.checks.awaiting_refusals += 1;
                }
                if admitting && gate_awaiting {
                    self.answer(
                        slot,
                        req_id,
                        Err((ErrorCode::Rejected, "owner still being admitted")),
                    )
                } else if mine && settled && joined {
                    let serial = self.fresh_id();
                    if let Some(node) = self.slots[slot].node.as_mut() {
                        node.acts.insert(
                            id.clone(),
                            Act {
                                serial,
                                stopping: None,
                                unjoined,
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
    fn forward(
        &mut self,
        slot: usize,
        req_id: u64,
        owner: &NodeId,
        epoch: u64,
    ) -> Result<(), SimFailure> {
        let t = self.now;
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
        // A request received from another node goes on as a `Forward` with one more hop; one
        // that starts here goes out as a plain ask.
        let received = !req.is_client();
        if received && req.hops >= MAX_HOPS {
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
            hops: if received { req.hops + 1 } else { req.hops },
            epoch,
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
                epoch,
            } => {
                if self.node(to).is_none() {
                    return Ok(());
                }
                let r = Req {
                    ask,
                    id,
                    hops,
                    epoch,
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

    /// The ring epoch changed: requests waiting in `wait_settled` or for the join decide
    /// again.
    pub(super) fn on_epoch(&mut self, slot: usize, req_id: u64) -> Result<(), SimFailure> {
        match self
            .node(slot)
            .and_then(|n| n.reqs.get(&req_id))
            .map(|r| &r.state)
        {
            Some(ReqState::Settling { .. }) => self.settle_wait(slot, req_id),
            Some(ReqState::Joining { .. }) => self.route(slot, req_id),
            _ => Ok(()),
        }
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
            ReqState::Joining { token: t } if t == token => {
                self.answer(slot, req_id, Err(NOT_JOINED))
            }
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
