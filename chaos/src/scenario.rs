//! Scenarios: a TOML file naming the cluster size, the workload and a schedule of faults
//! (fixed, or drawn from a seed). [`Scenario::plan`] turns one into the concrete,
//! time-ordered fault list a run executes, scaled down for `--short` runs.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ChaosError;

/// A scenario file (`chaos/scenarios/*.toml`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Scenario {
    /// Name shown in reports.
    pub name: String,
    /// What it exercises, one line.
    #[serde(default)]
    pub description: String,
    /// Node processes.
    #[serde(default = "default_nodes")]
    pub nodes: usize,
    /// Length of the fault-and-load phase.
    #[serde(with = "humantime_serde_lite")]
    pub duration: Duration,
    /// Length of the `--short` form (fault times scale by `short_duration / duration`).
    #[serde(with = "humantime_serde_lite", default = "default_short")]
    pub short_duration: Duration,
    /// `--settle-time` of every node.
    #[serde(with = "humantime_serde_lite", default = "default_settle")]
    pub settle_time: Duration,
    /// The nodes' quorum rule must keep every partition of this scenario free of overlaps
    /// (the single-activation checker then excuses none). True for scenarios that cut a
    /// cluster whose membership was stable before: the rule's guarantee. Not for compound
    /// faults (random-mix), where members' quorum bases may differ at the cut.
    #[serde(default)]
    pub quorum_holds: bool,
    /// Membership must agree this soon after the last fault heals.
    #[serde(with = "humantime_serde_lite", default = "default_converge")]
    pub converge_within: Duration,
    /// Extra `run` flags for every node.
    #[serde(default)]
    pub node_args: Vec<String>,
    /// The load.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// Fixed faults.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Seeded random faults (added to `faults`).
    #[serde(default)]
    pub random: Option<RandomSpec>,
}

fn default_nodes() -> usize {
    3
}
fn default_short() -> Duration {
    Duration::from_secs(15)
}
fn default_settle() -> Duration {
    Duration::from_secs(1)
}
fn default_converge() -> Duration {
    Duration::from_secs(20)
}

/// The load: register, counter and pub-sub clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct WorkloadSpec {
    /// Register ids (`register/chaos-N`).
    pub registers: usize,
    /// Counter ids (`counter/chaos-N`).
    pub counters: usize,
    /// Concurrent register workers.
    pub register_workers: usize,
    /// Pub-sub topics (one publisher and one subscriber per node per topic).
    pub topics: usize,
    /// Publishes per second per topic.
    pub publish_rate: u32,
    /// Deadline of every ask.
    #[serde(with = "humantime_serde_lite")]
    pub ask_timeout: Duration,
    /// Client-side retries of an ask that may have run (same idempotency key each time).
    pub retries: u32,
    /// Pause between two ops of one worker.
    #[serde(with = "humantime_serde_lite")]
    pub think: Duration,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            registers: 32,
            counters: 8,
            register_workers: 4,
            topics: 1,
            publish_rate: 10,
            ask_timeout: Duration::from_secs(2),
            retries: 3,
            think: Duration::from_millis(5),
        }
    }
}

/// One fault at a fixed offset.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct FaultSpec {
    /// Offset from the start of the load.
    #[serde(with = "humantime_serde_lite")]
    pub at: Duration,
    /// How long it lasts (ignored by instantaneous faults: kill, restart).
    #[serde(with = "humantime_serde_lite", default)]
    pub duration: Duration,
    /// What.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// A fault. Node numbers are indexes `0..nodes`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FaultKind {
    /// SIGKILL; the node comes back (crash-restart under the same name) after `duration`
    /// unless it is zero.
    Kill {
        /// Nodes.
        nodes: Vec<usize>,
    },
    /// SIGSTOP, SIGCONT after `duration`.
    Pause {
        /// Nodes.
        nodes: Vec<usize>,
    },
    /// SIGTERM (graceful leave), then start again under the same name.
    Restart {
        /// Nodes.
        nodes: Vec<usize>,
    },
    /// Drop packets between the groups for `duration` (needs namespaces). One-way drops
    /// only traffic from later groups to the first one.
    Partition {
        /// Disjoint node groups; nodes in no group keep talking to everyone.
        groups: Vec<Vec<usize>>,
        /// Drop only what the first group receives from the others.
        #[serde(default)]
        one_way: bool,
    },
    /// Drop each incoming UDP datagram with probability `p` (needs namespaces).
    Loss {
        /// Nodes.
        nodes: Vec<usize>,
        /// 0..1.
        p: f64,
    },
    /// Hold each outgoing UDP datagram for `delay` (± `jitter`) (needs namespaces).
    Delay {
        /// Nodes.
        nodes: Vec<usize>,
        /// Added one-way latency.
        #[serde(with = "humantime_serde_lite")]
        delay: Duration,
        /// Uniform jitter around it.
        #[serde(with = "humantime_serde_lite", default)]
        jitter: Duration,
    },
    /// Stop and start every node in turn (graceful), `duration` apart.
    RollingRestart,
}

impl FaultKind {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill { .. } => "kill",
            FaultKind::Pause { .. } => "pause",
            FaultKind::Restart { .. } => "restart",
            FaultKind::Partition { one_way: false, .. } => "partition",
            FaultKind::Partition { one_way: true, .. } => "one-way-partition",
            FaultKind::Loss { .. } => "loss",
            FaultKind::Delay { .. } => "delay",
            FaultKind::RollingRestart => "rolling-restart",
        }
    }

    /// True when it needs packet filtering (network namespaces).
    pub fn needs_network(&self) -> bool {
        matches!(
            self,
            FaultKind::Partition { .. } | FaultKind::Loss { .. } | FaultKind::Delay { .. }
        )
    }

    fn nodes(&self) -> Vec<usize> {
        match self {
            FaultKind::Kill { nodes }
            | FaultKind::Pause { nodes }
            | FaultKind::Restart { nodes }
            | FaultKind::Loss { nodes, .. }
            | FaultKind::Delay { nodes, .. } => nodes.clone(),
            FaultKind::Partition { groups, .. } => groups.iter().flatten().copied().collect(),
            FaultKind::RollingRestart => Vec::new(),
        }
    }
}

/// Seeded random faults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RandomSpec {
    /// The seed (print it; the same seed replays the same schedule).
    pub seed: u64,
    /// Mean gap between the end of one fault and the start of the next.
    #[serde(with = "humantime_serde_lite")]
    pub mean_gap: Duration,
    /// Longest fault.
    #[serde(with = "humantime_serde_lite")]
    pub max_fault: Duration,
    /// Kinds to draw from: kill, pause, restart, partition, one-way-partition, loss, delay.
    pub kinds: Vec<String>,
}

/// A planned fault: when it starts, when it is undone.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Planned {
    /// Offset of the start.
    pub at: Duration,
    /// Offset of the undo (== `at` for instantaneous faults).
    pub until: Duration,
    /// What.
    pub kind: FaultKind,
}

impl Scenario {
    /// Reads and validates a scenario file.
    ///
    /// # Errors
    /// [`ChaosError::Scenario`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, ChaosError> {
        let text = std::fs::read_to_string(path).map_err(|e| ChaosError::Scenario {
            path: path.display().to_string(),
            detail: format!("cannot read it: {e}"),
        })?;
        let s: Scenario = toml::from_str(&text).map_err(|e| ChaosError::Scenario {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        s.validate().map_err(|detail| ChaosError::Scenario {
            path: path.display().to_string(),
            detail,
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.nodes > 32 {
            return Err(format!("nodes = {}: use 1 to 32", self.nodes));
        }
        if self.duration.is_zero() || self.short_duration.is_zero() {
            return Err("duration and short_duration must be above zero".into());
        }
        for f in &self.faults {
            if let Some(n) = f.kind.nodes().into_iter().find(|n| *n >= self.nodes) {
                return Err(format!(
                    "fault {} at {:?} names node {n}, but nodes are 0..{}",
                    f.kind.name(),
                    f.at,
                    self.nodes
                ));
            }
            if let FaultKind::Loss { p, .. } = f.kind
                && !(0.0..=1.0).contains(&p)
            {
                return Err(format!("loss p = {p}: use 0 to 1"));
            }
        }
        if let Some(r) = &self.random {
            for k in &r.kinds {
                if !RANDOM_KINDS.contains(&k.as_str()) {
                    return Err(format!(
                        "random kind {k:?} unknown: use {}",
                        RANDOM_KINDS.join(", ")
                    ));
                }
            }
            if r.kinds.is_empty() || r.max_fault.is_zero() {
                return Err("random needs kinds and a max_fault above zero".into());
            }
        }
        Ok(())
    }

    /// The load phase length.
    pub fn length(&self, short: bool) -> Duration {
        if short {
            self.short_duration
        } else {
            self.duration
        }
    }

    /// The concrete schedule, time-ordered. `short` scales offsets and fault lengths by
    /// `short_duration / duration` (fault lengths no shorter than 3 s, so failure detection
    /// still happens).
    pub fn plan(&self, short: bool) -> Vec<Planned> {
        let scale = if short {
            self.short_duration.as_secs_f64() / self.duration.as_secs_f64()
        } else {
            1.0
        };
        let len = self.length(short);
        let sc = |d: Duration| d.mul_f64(scale.min(1.0));
        let min_fault = Duration::from_secs(3);
        let mut out = Vec::new();
        for f in &self.faults {
            let at = sc(f.at);
            let d = if f.duration.is_zero() {
                Duration::ZERO
            } else {
                sc(f.duration).max(min_fault.min(f.duration))
            };
            out.push(Planned {
                at,
                until: at + d,
                kind: f.kind.clone(),
            });
        }
        if let Some(r) = &self.random {
            out.extend(random_plan(r, self.nodes, len, scale.min(1.0)));
        }
        out.retain(|p| p.at < len);
        for p in &mut out {
            // Every fault ends inside the load phase, so convergence is measured after it.
            p.until = p.until.min(len.saturating_sub(Duration::from_millis(500)));
        }
        out.sort_by_key(|p| p.at);
        out
    }
}

const RANDOM_KINDS: &[&str] = &[
    "kill",
    "pause",
    "restart",
    "partition",
    "one-way-partition",
    "loss",
    "delay",
];

/// SplitMix64: a tiny seeded generator, so a seed replays the same schedule on any build.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn random_plan(r: &RandomSpec, nodes: usize, len: Duration, scale: f64) -> Vec<Planned> {
    let mut rng = SplitMix::new(r.seed);
    let mut out = Vec::new();
    let mut t = r.mean_gap.mul_f64(scale).max(Duration::from_secs(2));
    let n = nodes as u64;
    // A minority: faults that take nodes out never take a majority at once.
    let minority = ((nodes.saturating_sub(1)) / 2).max(1) as u64;
    while t < len {
        let kind_name = &r.kinds[rng.below(r.kinds.len() as u64) as usize];
        let dur = Duration::from_secs(3)
            + r.max_fault
                .saturating_sub(Duration::from_secs(3))
                .mul_f64(rng.unit() * scale);
        let pick = |rng: &mut SplitMix, k: u64| -> Vec<usize> {
            let mut all: Vec<usize> = (0..nodes).collect();
            for i in (1..all.len()).rev() {
                all.swap(i, rng.below(i as u64 + 1) as usize);
            }
            all.truncate(k.clamp(1, n) as usize);
            all
        };
        let k = 1 + rng.below(minority);
        let kind = match kind_name.as_str() {
            "kill" => FaultKind::Kill {
                nodes: pick(&mut rng, k),
            },
            "pause" => FaultKind::Pause {
                nodes: pick(&mut rng, k),
            },
            "restart" => FaultKind::Restart {
                nodes: pick(&mut rng, 1),
            },
            "partition" | "one-way-partition" => {
                let mut all = pick(&mut rng, n);
                let rest = all.split_off(k as usize);
                FaultKind::Partition {
                    groups: vec![all, rest],
                    one_way: kind_name == "one-way-partition",
                }
            }
            "loss" => FaultKind::Loss {
                nodes: pick(&mut rng, k),
                p: 0.05 + 0.25 * rng.unit(),
            },
            _ => FaultKind::Delay {
                nodes: pick(&mut rng, k),
                delay: Duration::from_millis(20 + rng.below(180)),
                jitter: Duration::from_millis(rng.below(20)),
            },
        };
        let instant = matches!(kind, FaultKind::Restart { .. });
        let until = if instant { t } else { t + dur };
        out.push(Planned { at: t, until, kind });
        let gap = r.mean_gap.mul_f64(scale * (0.5 + rng.unit()));
        t = until + gap.max(Duration::from_secs(1));
    }
    out
}

/// `"10s"`, `"250ms"`, `"2m"`, `"1.5s"` durations in TOML.
mod humantime_serde_lite {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses `"250ms"`, `"10s"`, `"2m"`, `"1.5s"`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("duration {s:?}: write e.g. \"250ms\", \"10s\" or \"2m\""))?;
    let secs = match unit.trim() {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => {
            return Err(format!(
                "duration {s:?}: unknown unit {u:?}; use ms, s, m or h"
            ));
        }
    };
    if !(0.0..1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn random_plan_replays_and_keeps_a_majority() {
        let r = RandomSpec {
            seed: 7,
            mean_gap: Duration::from_secs(5),
            max_fault: Duration::from_secs(10),
            kinds: RANDOM_KINDS.iter().map(|s| s.to_string()).collect(),
        };
        let a = random_plan(&r, 5, Duration::from_secs(600), 1.0);
        let b = random_plan(&r, 5, Duration::from_secs(600), 1.0);
        assert_eq!(a, b);
        assert!(a.len() > 10);
        for p in &a {
            if let FaultKind::Kill { nodes } | FaultKind::Pause { nodes } = &p.kind {
                assert!(nodes.len() <= 2, "{p:?}");
            }
            assert!(p.until >= p.at);
        }
    }
}
