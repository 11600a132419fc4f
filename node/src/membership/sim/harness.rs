//! What drives simulated membership cores, shared by this simulation and the routing
//! simulation (`crate::routing::sim`): named slots with fixed addresses and skewed clocks,
//! starting a core under a name's next incarnation, draining a core's outputs, the random
//! fault pick, and the bounded trace with its digest. Every random draw goes through the
//! caller's RNG, in a fixed order, so a seed still replays exactly.

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, UNIX_EPOCH};

use cortex_protocol::{NodeId, VersionRange};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt};

use crate::membership::{
    CoreConfig, CoreTimer, MemberIdentity, MemberMeta, MembershipCore, MembershipEvent, Now,
    SwimTuning, Transmit,
};

const SECRET: &[u8] = b"simulated cluster secret";
/// Virtual epoch of the simulated wall clocks (2023-11-14), so counters look realistic.
const WALL_BASE_SECS: u64 = 1_700_000_000;

/// FNV-1a step, for run digests.
pub(crate) fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// A simulated process built around a membership core.
pub(crate) trait HoldsCore {
    fn core(&self) -> &MembershipCore;
    fn core_mut(&mut self) -> &mut MembershipCore;
}

/// One node name `n<i>` with its fixed gossip address and clock offset, and the process
/// running under it, if any.
pub(crate) struct Slot<N> {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    offset_ms: i64,
    next_incarnation: u64,
    /// Bumped at every start and stop, so that events meant for an earlier process are
    /// ignored.
    pub(crate) generation: u64,
    pub(crate) node: Option<N>,
}

impl<N> Slot<N> {
    /// `count` slots on 10.0.x.y:7401, each with a clock offset within `max_clock_offset`
    /// either way (one draw each, in order).
    pub(crate) fn all(count: usize, max_clock_offset: Duration, rng: &mut SmallRng) -> Vec<Self> {
        let max_off = i64::try_from(max_clock_offset.as_millis()).unwrap_or(0);
        (0..count)
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
            .collect()
    }

    /// This node's clocks at virtual time `now`: the monotonic clock is shared, the wall
    /// clock skewed by the slot's offset.
    pub(crate) fn now(&self, now: Duration) -> Now {
        let base = UNIX_EPOCH + Duration::from_secs(WALL_BASE_SECS) + now;
        let off = self.offset_ms;
        let wall = if off >= 0 {
            base + Duration::from_millis(off.unsigned_abs())
        } else {
            base - Duration::from_millis(off.unsigned_abs())
        };
        Now { mono: now, wall }
    }

    /// A core for the name's next incarnation (one draw: the core's seed). The caller
    /// installs its node in [`Slot::node`] and gives the core its seeds.
    pub(crate) fn start_core(
        &mut self,
        tuning: &SwimTuning,
        rng: &mut SmallRng,
        now: Duration,
    ) -> Result<(NodeId, MembershipCore), String> {
        let inc = self.next_incarnation;
        self.next_incarnation += 1;
        self.generation += 1;
        let id = NodeId::new(self.name.clone(), inc)
            .map_err(|e| format!("bad simulated node id: {e}"))?;
        let ip = self.addr.ip();
        let identity = MemberIdentity {
            id: id.clone(),
            gossip_addr: self.addr,
            meta: MemberMeta {
                quic_addr: SocketAddr::new(ip, 7400),
                http_addr: SocketAddr::new(ip, 7480),
                roles: vec!["sim".to_owned()],
                versions: VersionRange { min: 1, max: 1 },
                process: inc,
            },
        };
        let mut cc = CoreConfig::new(identity, "sim", SECRET);
        cc.tuning = tuning.clone();
        let seed = rng.next_u64();
        let core = MembershipCore::new(cc, seed, self.now(now))
            .map_err(|e| format!("core did not start: {e}"))?;
        Ok((id, core))
    }

    /// The running process's core.
    pub(crate) fn core_mut(&mut self) -> Option<&mut MembershipCore>
    where
        N: HoldsCore,
    {
        self.node.as_mut().map(HoldsCore::core_mut)
    }

    /// Takes the process out of the slot: the name's next start uses a higher incarnation
    /// than any this one reached (renewals included).
    pub(crate) fn stop(&mut self) -> Option<N>
    where
        N: HoldsCore,
    {
        let node = self.node.take()?;
        let inc = node.core().local_id().incarnation();
        self.next_incarnation = self.next_incarnation.max(inc + 1);
        self.generation += 1;
        Some(node)
    }
}

/// Everything a core has queued since it was last drained.
pub(crate) struct Outputs {
    pub(crate) sends: Vec<Transmit>,
    /// Timer deadlines on the monotonic clock.
    pub(crate) timers: Vec<(Duration, CoreTimer)>,
    pub(crate) events: Vec<MembershipEvent>,
}

/// Drains `core`'s datagrams, timers and events.
pub(crate) fn drain(core: &mut MembershipCore) -> Outputs {
    let mut out = Outputs {
        sends: Vec::new(),
        timers: Vec::new(),
        events: Vec::new(),
    };
    while let Some(t) = core.poll_transmit() {
        out.sends.push(t);
    }
    while let Some(t) = core.poll_timer() {
        out.timers.push(t);
    }
    while let Some(e) = core.poll_event() {
        out.events.push(e);
    }
    out
}

/// A latency drawn uniformly from `range` (one draw).
pub(crate) fn latency(rng: &mut SmallRng, range: (Duration, Duration)) -> Duration {
    let (lo, hi) = (range.0.as_micros() as u64, range.1.as_micros() as u64);
    Duration::from_micros(rng.random_range(lo..=hi.max(lo)))
}

/// One fault action of the fault phase.
pub(crate) enum Fault {
    Crash(usize),
    /// A graceful leave.
    Leave(usize),
    Start(usize),
    /// Split the slots into groups 0 and 1.
    Partition(Vec<u8>),
    /// Heal the partition, if there is one.
    Heal,
}

/// Picks a fault: crash 30%, leave 20% (of `leavable`), start 30%, partition 10% (when
/// not `partitioned`), heal otherwise or when the pick does not apply.
pub(crate) fn pick_fault(
    rng: &mut SmallRng,
    slots: usize,
    running: &[usize],
    leavable: &[usize],
    stopped: &[usize],
    partitioned: bool,
) -> Fault {
    match rng.random_range(0..10u32) {
        0..=2 if running.len() > 1 => Fault::Crash(running[rng.random_range(0..running.len())]),
        3 | 4 if leavable.len() > 1 => Fault::Leave(leavable[rng.random_range(0..leavable.len())]),
        5..=7 if !stopped.is_empty() => Fault::Start(stopped[rng.random_range(0..stopped.len())]),
        8 if !partitioned => {
            Fault::Partition((0..slots).map(|_| u8::from(rng.random_bool(0.5))).collect())
        }
        _ => Fault::Heal,
    }
}

/// The end of a run's trace, and a digest of all of it.
pub(crate) struct Trace {
    lines: VecDeque<String>,
    keep: usize,
    digest: u64,
}

impl Trace {
    /// Keeps the last `keep` lines.
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            keep,
            digest: 0xcbf2_9ce4_8422_2325,
        }
    }

    pub(crate) fn log(&mut self, now: Duration, line: String) {
        fnv(&mut self.digest, line.as_bytes());
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines
            .push_back(format!("{:>9.3}s {line}", now.as_secs_f64()));
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }
}

/// How both simulations print a failed run: what failed, how to replay it, the trace.
pub(crate) fn write_failure(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    seed: u64,
    reason: &str,
    trace: &[String],
) -> fmt::Result {
    writeln!(f, "{what} seed {seed} failed: {reason}")?;
    writeln!(f, "replay with CORTEX_SIM_SEED={seed}")?;
    writeln!(f, "--- last {} trace lines ---", trace.len())?;
    for line in trace {
        writeln!(f, "{line}")?;
    }
    Ok(())
}
