//! Deterministic simulation of placement, routing and activation on top of simulated SWIM
//! membership.
//!
//! Every simulated node runs the node's real, IO-free decision code: a
//! [`MembershipCore`](crate::membership::MembershipCore) (the same cores the membership
//! simulation drives), a [`PlacementState`](crate::placement::PlacementState) fed with the
//! core's live members the way the node's watch task feeds it, and
//! [`decide_routed`](crate::routing::decide::decide_routed) for every request. Around them the simulation
//! models what the async node does (`node/inner.rs`, `node/watch.rs`), rule by rule:
//! - *the quorum rule* (`placement::quorum`, keep-majority): every turn of the watch loop
//!   first shows the membership view to the node's own
//!   [`QuorumState`](crate::placement::quorum::QuorumState) (members `Up`, `Suspect`, and
//!   removed as `Left`, as the node's watch loop reads them); the loop also wakes at the
//!   state's `next_deadline` (the base may drop members declared down) and ticks it. A lost
//!   quorum passivates every activation, in chunks like a handover, and the turn goes on to
//!   `apply_view` only once they are done; a regained one restarts the settle time (a new
//!   epoch over the same ring);
//! - *`apply_view`* (the watch loop, woken by a membership change, an admission verdict,
//!   when a refused member is due, or else every 2 s): the node has *joined* once its view
//!   holds another live member or its seeds resolve only to itself (here: it is the only
//!   running node); a member enters the ring once a QUIC handshake with it succeeds
//!   (*admission*: the dial retransmits until the connect timeout; a refused member is
//!   dialled again after a backoff of 100 ms, doubling up to 2 s); a change of the gossip
//!   set that leaves the admitted ring as it was *unsettles* the view (a new epoch, the
//!   settle time restarted); every turn keeps the *awaiting ring*, over this node, the
//!   admitted members and the live members awaiting admission for less than 5 s since this
//!   node first saw them live and not admitted (`ADMISSION_GRACE`), while there are any; a
//!   change of the gossip set while there are such members *hands over ahead*: the live ids
//!   those members own on the awaiting ring are passivated at once; a ring change (or
//!   unsettle) then starts a *handover*;
//! - *handover* (ahead of admission, then on the ring): passivation of ids the node does
//!   not own, in chunks, each taking a random time during which the activation still counts
//!   as live;
//! - *the activation gate*: only the owner, with quorum (asked first: from the loss on, the
//!   gate refuses while the passivations run), in a settled view, once joined, and not an
//!   id that a member awaiting admission owns on the awaiting ring (as of the last
//!   `apply_view`);
//! - *routing* (`resolve_at`, `forward_ask`): wait for the view to settle; a node that has not
//!   joined waits for the next ring epoch instead of delivering locally; forwarding over a
//!   lossy network with per-hop deadlines and hop counts;
//! - *graceful leaves*: drop out of the own ring, hand everything over, then leave.
//!
//! [`NodeModel`] can switch rules off to show that the checks catch a build without them.
//! Not modelled: tells (delivered inline by the inbound reader), idempotency keys, client
//! connections, the closing of a departed member's connections (a dial or a forward here
//! depends only on reachability and the view).
//!
//! One seeded RNG drives everything and time is virtual: a seed replays exactly. `tokio`'s
//! `Instant` is only built as `base + virtual time` from one `Instant` taken at start and used
//! as an opaque value, so no decision depends on the wall clock.
//!
//! # What is checked
//! *Agreement* holds when every running node's membership view has the same live set and
//! that set contains every running node's current id (it may still hold a crashed member not
//! yet detected). The checks:
//! 1. once agreement has held continuously for [`SimConfig::grace`] (the node's default
//!    settle time), no id has two live activations;
//! 2. in a *stable* state (agreement, every node's ring installed from the agreed set, no
//!    leave, handover or passivation in progress) every activation sits at its id's owner;
//! 3. every ask gets exactly one answer, a success or a typed error, no later than its
//!    deadline; once the faults have stopped and the cluster is stable, every ask succeeds;
//! 4. at any time, no double activation involves an activation started by a node that had
//!    not joined by the checks' own observation: no other live member ever in its view, and
//!    never the only running node (the join gate's promise).
//!
//! Double activations created outside those windows are counted, not failed: see
//! [`DoubleCounts`]. Without the quorum rule both sides of a partition serve (an AP
//! system cannot avoid those doubles); with it, the minority side should serve nothing,
//! and [`SimReport::doubles_with_quorum`] counts the doubles it let through anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::config::{DEFAULT_SETTLE_TIME, DEFAULT_VNODES};
use crate::membership::SwimTuning;
/// Fault actions taken (the same faults as the membership simulation's; a leave hands over
/// first).
pub use crate::membership::sim::FaultCounts;
use crate::membership::sim::harness;
use crate::placement::quorum::QuorumPolicy;

mod checks;
mod node;
mod watch;
mod world;

/// How the simulated nodes behave. [`NodeModel::as_built`] mirrors the node's code; the
/// other knobs exist to show that the checks catch a broken build.
#[derive(Debug, Clone)]
pub struct NodeModel {
    /// Settle time of every node's placement.
    pub settle: Duration,
    /// Virtual nodes per member on the ring.
    pub vnodes: u32,
    /// Whether the activation gate requires a settled view (it does in the node).
    pub gate_requires_settled: bool,
    /// Whether a ring change passivates the ids a node no longer owns (it does).
    pub handover: bool,
    /// Whether a node activates nothing until it has joined: seen another live member, or
    /// found that its seeds resolve only to itself (`NodeInner::joined`; it does).
    pub join_gate: bool,
    /// Whether a change of the gossip member set that leaves the admitted ring as it was
    /// (a member awaiting admission) restarts the settle time (`PlacementState::unsettle`
    /// in `apply_view`; it does).
    pub unsettle_on_gossip_change: bool,
    /// Whether a change of the gossip member set that leaves members awaiting admission
    /// passivates at once the live activations those members own on the ring over this
    /// node, the admitted members and those awaiting admission for less than 5 s
    /// (`handover_ahead` in `apply_view`; it does).
    pub handover_ahead: bool,
    /// Whether the activation gate refuses an id that a live member awaiting admission for
    /// less than the admission grace (5 s) owns on the ring over this node, the admitted
    /// members and those awaiting members (`Admission::awaiting_owner`; it does). That
    /// ring is kept either way: `handover_ahead` passivates by it.
    pub awaiting_gate: bool,
    /// Range of the time one passivation takes (its stop hooks).
    pub passivation: (Duration, Duration),
    /// The quorum rule (`--quorum`; `Majority` in the node): a node that cannot reach a
    /// majority of the cluster it last knew passivates everything and activates nothing.
    /// Its `stable_after` is the node's, [`stable_after`](crate::placement::quorum::stable_after) of `settle`.
    pub quorum: QuorumPolicy,
}

impl NodeModel {
    /// The node as built: default settle time and vnodes, gate on settledness and on having
    /// joined and on owners awaiting admission, handover on, unsettle and hand over ahead of
    /// admission on a gossip change, passivations of 0 to 50 ms, the quorum rule on
    /// (keep-majority).
    pub fn as_built() -> Self {
        Self {
            settle: DEFAULT_SETTLE_TIME,
            vnodes: DEFAULT_VNODES,
            gate_requires_settled: true,
            handover: true,
            join_gate: true,
            unsettle_on_gossip_change: true,
            handover_ahead: true,
            awaiting_gate: true,
            passivation: (Duration::ZERO, Duration::from_millis(50)),
            quorum: QuorumPolicy::Majority,
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Node names `n0..`.
    pub slots: usize,
    /// Nodes running at the start.
    pub initial: usize,
    /// Length of the fault phase.
    pub fault_phase: Duration,
    /// Mean time between two fault actions.
    pub fault_interval: Duration,
    /// Asks keep coming this long after the faults stop.
    pub quiet_phase: Duration,
    /// Membership must converge this soon after the faults stop.
    pub convergence_limit: Duration,
    /// Gossip datagram loss during the fault phase.
    pub loss: f64,
    /// Loss of routing messages (asks, replies) during the fault phase: a broken connection.
    pub msg_loss: f64,
    /// One-way latency range of every message.
    pub latency: (Duration, Duration),
    /// Largest wall-clock offset of a node, either way.
    pub max_clock_offset: Duration,
    /// How often each node re-resolves its seeds (every running node's address).
    pub dns_interval: Duration,
    /// Distinct actor ids asked.
    pub ids: u32,
    /// Mean time between two asks (each from a random running node).
    pub ask_interval: Duration,
    /// Range of an ask's budget (deadline minus issue time).
    pub ask_budget: (Duration, Duration),
    /// How long agreement must hold before a double activation fails the run.
    pub grace: Duration,
    /// SWIM timing.
    pub tuning: SwimTuning,
    /// Node behaviour.
    pub model: NodeModel,
}

impl SimConfig {
    /// Defaults: 7 names, 5 running, 40 s of faults then 15 s of quiet, 1,000 ids asked
    /// every 20 ms on average with budgets of 1 to 4 s, the node as built.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            slots: 7,
            initial: 5,
            fault_phase: Duration::from_secs(40),
            fault_interval: Duration::from_millis(800),
            quiet_phase: Duration::from_secs(15),
            convergence_limit: Duration::from_secs(10),
            loss: 0.03,
            msg_loss: 0.01,
            latency: (Duration::from_millis(1), Duration::from_millis(25)),
            max_clock_offset: Duration::from_secs(2),
            dns_interval: Duration::from_secs(5),
            ids: 1000,
            ask_interval: Duration::from_millis(20),
            ask_budget: (Duration::from_secs(1), Duration::from_secs(4)),
            grace: DEFAULT_SETTLE_TIME,
            tuning: SwimTuning::default(),
            model: NodeModel::as_built(),
        }
    }
}

/// Double activations (an activation starting while another of the same id is live,
/// passivating included) that were counted rather than failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoubleCounts {
    /// Outside agreement, the two holders on opposite sides of a partition.
    pub partitioned: u64,
    /// Outside agreement, the two holders on opposite sides of a partition healed less
    /// than a seed re-resolution interval plus the grace period ago: the two sides, each
    /// settled on its own membership, are still merging.
    pub merging: u64,
    /// Outside agreement, no partition between the two holders recently: disagreement
    /// outlasted the settle time (a join not yet seen, a slow failure detection, a node whose
    /// view lost every other member). These are the ones a longer settle time would prevent.
    /// A node alone in its view because it has not joined yet activates nothing (the join
    /// gate): check 4 fails such a double rather than counting it.
    pub unpartitioned: u64,
    /// While agreement held, but for less than the grace period (the tail of an earlier
    /// disagreement).
    pub young_agreement: u64,
}

impl DoubleCounts {
    /// All counted double activations.
    pub fn total(&self) -> u64 {
        self.partitioned + self.merging + self.unpartitioned + self.young_agreement
    }
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub steps: u64,
    /// Asks issued.
    pub asks: u64,
    /// Asks answered with success.
    pub ok: u64,
    /// Asks answered with an error, by error code.
    pub errors: BTreeMap<String, u64>,
    /// Asks issued in the stable quiet phase (all of them succeeded).
    pub quiet_asks: u64,
    /// Most network hops one ask took.
    pub max_hops: u64,
    /// Longest time from issue to answer.
    pub worst_latency: Duration,
    /// Activations started.
    pub activations: u64,
    /// Passivations by handover.
    pub handovers: u64,
    /// Of those, activations handed over ahead of a member's admission.
    pub handovers_ahead: u64,
    /// Ring view changes over all nodes.
    pub ring_changes: u64,
    /// Of those, views that only restarted the settle time (the gossip set moved, the
    /// admitted ring did not).
    pub unsettles: u64,
    /// Activations in a settled view, once joined, of an id that a member awaiting
    /// admission owns on the ring with awaiting members: refused by
    /// [`NodeModel::awaiting_gate`], let through without it.
    pub awaiting_refusals: u64,
    /// Quorum losses over all nodes (each passivates the node's activations).
    pub quorum_losses: u64,
    /// Activations passivated on a lost quorum.
    pub fenced: u64,
    /// Activations the gate refused because the node had no quorum (it owned the id).
    pub quorum_refusals: u64,
    /// Double activations counted outside the checked windows.
    pub doubles: DoubleCounts,
    /// Of those, the ones where every holder had quorum: the rule let both serve (all of
    /// them with [`QuorumPolicy::Off`]).
    pub doubles_with_quorum: u64,
    /// How long ids were live twice while membership agreed, summed over ids (the tail of
    /// doubles from before the agreement, within the grace period).
    pub overlap_in_agreement: Duration,
    /// Virtual time agreement held with the grace period over (the checked window).
    pub checked_agreement: Duration,
    /// Fault actions taken.
    pub faults: FaultCounts,
    /// Time from the end of the faults to membership convergence.
    pub converged_after: Duration,
    /// A digest of the run (for replay checks).
    pub digest: u64,
}

/// A failed run: the seed, what went wrong and the end of the trace.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed (replay with `CORTEX_SIM_SEED=<seed>`).
    pub seed: u64,
    /// What went wrong.
    pub reason: String,
    /// The last trace lines.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        harness::write_failure(
            f,
            "routing simulation",
            self.seed,
            &self.reason,
            &self.trace,
        )
    }
}

impl std::error::Error for SimFailure {}

/// Runs one simulation.
///
/// # Errors
/// [`SimFailure`] when an invariant fails or membership does not converge.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    world::World::new(cfg.clone()).run()
}

#[cfg(test)]
mod tests;
