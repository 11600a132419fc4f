//! Deterministic simulation of many [`MembershipCore`](super::MembershipCore)s on a seeded
//! network and clock.
//!
//! One seeded RNG drives everything: latencies, loss, duplication, the fault schedule and
//! each core's own seed. Time is virtual (a [`TimerQueue`](super::TimerQueue) of events),
//! nothing reads the wall clock or a global RNG, and maps are ordered, so a seed replays
//! exactly.
//!
//! A run has two phases. During the *fault phase* random crashes, graceful leaves,
//! restarts (same name, next incarnation), partitions, heals, loss and duplication happen.
//! Then the network heals and turns loss-free, and every running node must converge to the
//! same live set, exactly the running nodes' current ids, all `Up`, within
//! `convergence_limit`, and stay so for `stability`. Throughout, no node may accept an
//! incarnation of a name older than one it already saw.

use std::fmt;
use std::time::Duration;

use super::config::SwimTuning;

pub(crate) mod harness;
mod world;

use world::World;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Node names `n0..` (each with a fixed address).
    pub slots: usize,
    /// Nodes running at the start.
    pub initial: usize,
    /// Length of the fault phase.
    pub fault_phase: Duration,
    /// Mean time between two fault actions.
    pub fault_interval: Duration,
    /// Loss probability per datagram during the fault phase.
    pub loss: f64,
    /// Duplication probability per datagram during the fault phase.
    pub duplication: f64,
    /// One-way latency range.
    pub latency: (Duration, Duration),
    /// Largest clock offset of a node from true time, either way.
    pub max_clock_offset: Duration,
    /// How often the simulated DNS (all running nodes' addresses) is re-read by each node.
    pub dns_interval: Duration,
    /// Deadline for convergence after the fault phase.
    pub convergence_limit: Duration,
    /// How long the converged state must then hold.
    pub stability: Duration,
    /// If set, a partition of the running nodes into two groups is forced this long before
    /// the fault phase ends and held (with no other fault) until it ends, so that
    /// convergence includes merging two groups that declared each other down.
    pub final_partition: Option<Duration>,
    /// `None`: seeds resolve to every running node (a Kubernetes headless Service).
    /// `Some(k)`: a static seed list, the addresses of the first `k` names, whether they
    /// run or not.
    pub static_seeds: Option<usize>,
    /// SWIM timing of every node.
    pub tuning: SwimTuning,
}

impl SimConfig {
    /// Defaults: 7 names, 5 running, 45 s of faults, then 30 s (60 probe periods) to converge.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            slots: 7,
            initial: 5,
            fault_phase: Duration::from_secs(45),
            fault_interval: Duration::from_millis(800),
            loss: 0.03,
            duplication: 0.02,
            latency: (Duration::from_millis(1), Duration::from_millis(25)),
            max_clock_offset: Duration::from_secs(2),
            dns_interval: Duration::from_secs(5),
            convergence_limit: Duration::from_secs(30),
            stability: Duration::from_secs(5),
            final_partition: Some(Duration::from_secs(6)),
            static_seeds: None,
            tuning: SwimTuning::default(),
        }
    }
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Events processed.
    pub steps: u64,
    /// Datagrams sent by cores.
    pub datagrams: u64,
    /// Datagrams dropped by loss or partitions.
    pub dropped: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// Crashes, leaves, starts, partitions, heals.
    pub faults: FaultCounts,
    /// Datagrams refused by receivers (replays of duplicates, mostly).
    pub rejected: u64,
    /// Identity renewals (a node declared down rejoining with the next incarnation).
    pub renewals: u64,
    /// Time from the end of the fault phase to convergence.
    pub converged_after: Duration,
    /// The same in probe periods.
    pub converged_after_periods: u64,
    /// Running nodes at the end.
    pub running: usize,
    /// A digest of the whole run (for replay checks).
    pub digest: u64,
}

/// Fault actions taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Processes killed without a farewell.
    pub crashes: u64,
    /// Graceful leaves.
    pub leaves: u64,
    /// Starts after the initial ones (restarts under the same name).
    pub restarts: u64,
    /// Partitions made.
    pub partitions: u64,
    /// Partitions healed.
    pub heals: u64,
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
        harness::write_failure(f, "simulation", self.seed, &self.reason, &self.trace)
    }
}

impl std::error::Error for SimFailure {}

/// Runs one simulation.
///
/// # Errors
/// [`SimFailure`] when convergence or an invariant fails.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut w = World::new(cfg.clone());
    w.run()
}

/// Measures how long a departure takes to reach every other node: starts `cfg.initial`
/// nodes on a loss-free network, waits for convergence, then crashes (or, if `graceful`,
/// stops with a leave) one random node at a random phase, and returns the time until no
/// running node lists it any more.
///
/// # Errors
/// [`SimFailure`] if the cluster does not form or the departure is not noticed within
/// `cfg.convergence_limit`.
pub fn measure_departure(cfg: &SimConfig, graceful: bool) -> Result<Duration, SimFailure> {
    World::measure_departure(cfg, graceful)
}
