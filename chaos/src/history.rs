//! The history of a run: every operation with its invoke and complete times and outcome,
//! every fault, membership sample, activation record and pub-sub delivery. Times are unix
//! microseconds on this machine's clock, the clock the nodes' activation logs use too.

use std::io::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::ChaosError;

/// Now, unix microseconds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How an operation ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Answered; the reply as JSON.
    Ok {
        /// The reply.
        value: serde_json::Value,
    },
    /// Failed.
    Err {
        /// Error class (`timeout`, `unreachable`, `rejected`, ...).
        class: String,
        /// Whether it may have run anyway.
        maybe_ran: bool,
        /// The message.
        detail: String,
    },
}

impl Outcome {
    /// True for `Ok`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
}

/// One operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    /// Worker that issued it.
    pub worker: u32,
    /// `register/chaos-3`, `counter/chaos-1`.
    pub id: String,
    /// `read`, `write`, `cas`, `incr`, `get`.
    pub op: String,
    /// Argument (written value; CAS `expected->new`).
    pub arg: Option<serde_json::Value>,
    /// Sent.
    pub invoke_us: u64,
    /// Answered or failed.
    pub complete_us: u64,
    /// The caller's deadline.
    pub deadline_us: u64,
    /// Attempts (sends) made, retries included.
    pub attempts: u32,
    /// Result.
    pub outcome: Outcome,
}

/// A fault as executed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Kind name.
    pub kind: String,
    /// Human detail (nodes, groups, p, delay).
    pub detail: String,
    /// Applied.
    pub start_us: u64,
    /// Undone (== start for instantaneous faults).
    pub end_us: u64,
    /// Nodes it stopped or restarted (their activations end at `start_us`).
    pub downed: Vec<String>,
    /// Skipped (and why), e.g. a partition without namespaces.
    pub skipped: Option<String>,
}

/// One node's membership view at one time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberSample {
    /// Poll round (samples of one round are taken together).
    pub round: u64,
    /// When.
    pub t_us: u64,
    /// Whose view.
    pub node: String,
    /// Live members `name#incarnation`, sorted; `None` if the node did not answer.
    pub view: Option<Vec<String>>,
}

/// An activation record from a node's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActivationRec {
    /// Actor id.
    pub id: String,
    /// Node name.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Seq in that incarnation's log.
    pub seq: u64,
    /// Ring epoch.
    pub epoch: u64,
    /// Start.
    pub activated_us: u64,
    /// End, `None` if still live at the last poll.
    pub passivated_us: Option<u64>,
}

/// A pub-sub event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PubSubRec {
    /// Topic.
    pub topic: String,
    /// Message number (unique per topic).
    pub seq: u64,
    /// `publish` or `deliver`.
    pub what: String,
    /// Subscriber index for deliveries.
    pub subscriber: Option<u32>,
    /// When.
    pub t_us: u64,
    /// Publish accepted by a node.
    pub ok: bool,
}

/// Everything recorded, shared by the workload, fault and observer tasks.
#[derive(Debug, Default)]
pub struct History {
    /// Operations.
    pub ops: Mutex<Vec<Op>>,
    /// Faults.
    pub faults: Mutex<Vec<FaultRecord>>,
    /// Membership samples.
    pub members: Mutex<Vec<MemberSample>>,
    /// Activations, deduplicated by (node, incarnation, seq).
    pub activations: Mutex<Vec<ActivationRec>>,
    /// Index of `activations` by (node, incarnation, seq).
    act_index: Mutex<std::collections::HashMap<(String, u64, u64), usize>>,
    /// Pub-sub events.
    pub pubsub: Mutex<Vec<PubSubRec>>,
}

/// A frozen copy for the checkers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Operations.
    pub ops: Vec<Op>,
    /// Faults.
    pub faults: Vec<FaultRecord>,
    /// Membership samples.
    pub members: Vec<MemberSample>,
    /// Activations.
    pub activations: Vec<ActivationRec>,
    /// Pub-sub events.
    pub pubsub: Vec<PubSubRec>,
    /// Load start.
    pub start_us: u64,
    /// Load end.
    pub end_us: u64,
    /// When the last fault was undone.
    pub last_heal_us: u64,
    /// Node names.
    pub nodes: Vec<String>,
    /// Nodes running at the end (membership should converge to this many).
    pub expected_members: usize,
    /// The nodes ran with the majority quorum rule (`--quorum=majority`, the default) and
    /// the scenario relies on it (`quorum_holds`): the minority side of each partition
    /// serves nothing, so a partition excuses no overlap.
    pub quorum: bool,
}

impl History {
    /// Records an op.
    pub fn op(&self, op: Op) {
        self.ops.lock().push(op);
    }

    /// Merges activation records polled from a node (updates passivation times).
    pub fn merge_activations(&self, recs: impl IntoIterator<Item = ActivationRec>) {
        let mut g = self.activations.lock();
        let mut idx = self.act_index.lock();
        for r in recs {
            let key = (r.node.clone(), r.incarnation, r.seq);
            match idx.get(&key).and_then(|&i| g.get_mut(i)) {
                Some(x) => {
                    if r.passivated_us.is_some() {
                        x.passivated_us = r.passivated_us;
                    }
                }
                None => {
                    idx.insert(key, g.len());
                    g.push(r);
                }
            }
        }
    }

    /// Closes every open activation of `node` (all incarnations) at `at_us`: it was killed.
    pub fn close_activations(&self, node: &str, at_us: u64) {
        for r in self.activations.lock().iter_mut() {
            if r.node == node && r.passivated_us.is_none() {
                r.passivated_us = Some(at_us.max(r.activated_us));
            }
        }
    }

    /// A copy.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            ops: self.ops.lock().clone(),
            faults: self.faults.lock().clone(),
            members: self.members.lock().clone(),
            activations: self.activations.lock().clone(),
            pubsub: self.pubsub.lock().clone(),
            ..Snapshot::default()
        }
    }
}

impl Snapshot {
    /// Writes `history.jsonl`: one `{"type": ..., ...}` object per line.
    ///
    /// # Errors
    /// [`ChaosError::Io`].
    pub fn write_jsonl(&self, path: &Path) -> Result<(), ChaosError> {
        let f = std::fs::File::create(path).map_err(|e| ChaosError::io(path, e))?;
        let mut w = std::io::BufWriter::new(f);
        let mut line = |kind: &str, v: serde_json::Value| -> Result<(), ChaosError> {
            let mut obj = serde_json::json!({ "type": kind });
            if let (Some(o), serde_json::Value::Object(m)) = (obj.as_object_mut(), v) {
                o.extend(m);
            }
            writeln!(w, "{obj}").map_err(|e| ChaosError::io(path, e))
        };
        let j = |v: &dyn erased::Ser| v.json();
        line(
            "run",
            serde_json::json!({"start_us": self.start_us, "end_us": self.end_us,
                "last_heal_us": self.last_heal_us, "nodes": self.nodes,
                "expected_members": self.expected_members, "quorum": self.quorum}),
        )?;
        for f in &self.faults {
            line("fault", j(f))?;
        }
        for o in &self.ops {
            line("op", j(o))?;
        }
        for m in &self.members {
            line("membership", j(m))?;
        }
        for a in &self.activations {
            line("activation", j(a))?;
        }
        for p in &self.pubsub {
            line("pubsub", j(p))?;
        }
        w.flush().map_err(|e| ChaosError::io(path, e))
    }
}

impl Snapshot {
    /// Reads a `history.jsonl` written by [`Snapshot::write_jsonl`], so that a recorded run
    /// can be judged again (`cortex-chaos check`).
    ///
    /// # Errors
    /// [`ChaosError::Io`] when unreadable; [`ChaosError::History`] for a malformed line.
    pub fn read_jsonl(path: &Path) -> Result<Self, ChaosError> {
        let text = std::fs::read_to_string(path).map_err(|e| ChaosError::io(path, e))?;
        let mut s = Snapshot::default();
        let bad = |line: usize, detail: String| ChaosError::History {
            path: path.to_path_buf(),
            line,
            detail,
        };
        for (i, l) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| bad(i + 1, e.to_string()))?;
            let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let de = |e: serde_json::Error| bad(i + 1, e.to_string());
            match kind {
                "run" => {
                    #[derive(Deserialize)]
                    struct Run {
                        start_us: u64,
                        end_us: u64,
                        last_heal_us: u64,
                        nodes: Vec<String>,
                        expected_members: Option<usize>,
                        // Histories from before the field: nodes without the rule.
                        #[serde(default)]
                        quorum: bool,
                    }
                    let r: Run = serde_json::from_value(v).map_err(de)?;
                    s.start_us = r.start_us;
                    s.end_us = r.end_us;
                    s.last_heal_us = r.last_heal_us;
                    // Histories from before the field was written: every node ran at the end.
                    s.expected_members = r.expected_members.unwrap_or(r.nodes.len());
                    s.nodes = r.nodes;
                    s.quorum = r.quorum;
                }
                "fault" => s.faults.push(serde_json::from_value(v).map_err(de)?),
                "op" => s.ops.push(serde_json::from_value(v).map_err(de)?),
                "membership" => s.members.push(serde_json::from_value(v).map_err(de)?),
                "activation" => s.activations.push(serde_json::from_value(v).map_err(de)?),
                "pubsub" => s.pubsub.push(serde_json::from_value(v).map_err(de)?),
                other => return Err(bad(i + 1, format!("unknown record type {other:?}"))),
            }
        }
        Ok(s)
    }
}

mod erased {
    pub(super) trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}
