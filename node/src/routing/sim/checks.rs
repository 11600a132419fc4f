//! The invariants: agreement tracking, the activation index and double activations, the
//! stable-state ownership check, and the accounting of every ask's answers.

use std::collections::BTreeMap;
use std::time::Duration;

use cortex_protocol::{ActorId, Ring};

use super::world::{Answer, World, fnv};
use super::{DoubleCounts, SimFailure, SimReport};

#[derive(Default)]
pub(super) struct Checks {
    /// Some membership view, or the set of running nodes, may have changed.
    pub(super) membership_dirty: bool,
    /// Live activations (passivating included) per id, over all nodes.
    count: BTreeMap<ActorId, u32>,
    /// Ids with two or more.
    doubled: usize,
    /// Since when agreement has held, on which live set.
    agree_since: Option<Duration>,
    agreed_fingerprint: u64,
    agreed_ring: u64,
    /// The agreed set is exactly the running nodes (no undetected crash).
    agreed_exact: bool,
    stable_since: Option<Duration>,
    converged_at: Option<Duration>,
    last_step: Duration,
    /// Agreement held, and how many ids were live twice, as of the last step.
    last_agreed: bool,
    last_doubled: usize,
    overlap_in_agreement: Duration,
    checked: Duration,
    doubles: DoubleCounts,
    activations: u64,
    pub(super) handovers: u64,
    pub(super) handovers_ahead: u64,
    pub(super) ring_changes: u64,
    pub(super) unsettles: u64,
    pub(super) awaiting_refusals: u64,
    pub(super) quorum_losses: u64,
    pub(super) fenced: u64,
    pub(super) quorum_refusals: u64,
    doubles_with_quorum: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    quiet_asks: u64,
    max_hops: u64,
    worst_latency: Duration,
}

impl Checks {
    fn activated(&mut self, id: &ActorId) {
        let c = self.count.entry(id.clone()).or_insert(0);
        *c += 1;
        if *c == 2 {
            self.doubled += 1;
        }
    }

    pub(super) fn deactivated(&mut self, id: &ActorId) {
        if let Some(c) = self.count.get_mut(id) {
            *c -= 1;
            if *c == 1 {
                self.doubled -= 1;
            }
            if *c == 0 {
                self.count.remove(id);
            }
        }
    }
}

impl World {
    fn refresh_agreement(&mut self) {
        if !self.checks.membership_dirty {
            return;
        }
        self.checks.membership_dirty = false;
        let running = self.running();
        let agreed = running.first().and_then(|&first| {
            let first = self.node(first)?;
            let all = running.iter().filter_map(|&i| self.node(i)).all(|n| {
                n.fingerprint == first.fingerprint && first.live.contains(n.core.local_id())
            });
            all.then(|| (first.fingerprint, first.live.clone()))
        });
        match agreed {
            Some((fp, live)) => {
                if self.checks.agree_since.is_none() || self.checks.agreed_fingerprint != fp {
                    self.checks.agree_since = Some(self.now);
                    self.checks.agreed_fingerprint = fp;
                    self.checks.agreed_exact = live.len() == running.len();
                    self.checks.agreed_ring = Ring::new(live, self.cfg.model.vnodes).digest();
                }
            }
            None => self.checks.agree_since = None,
        }
    }

    /// Agreement, every ring installed from the agreed set, nothing leaving, handing over
    /// or passivating.
    fn is_stable(&self) -> bool {
        self.checks.agree_since.is_some()
            && self
                .running()
                .iter()
                .filter_map(|&i| self.node(i))
                .all(|n| {
                    !n.leaving
                        && n.jobs.is_empty()
                        && n.stopping == 0
                        && n.placement.current().digest == self.checks.agreed_ring
                })
    }

    /// How long after a heal the two sides of a partition count as still merging: they
    /// find each other again through seed re-resolution, then must settle.
    fn merge_window(&self) -> Duration {
        self.cfg.dns_interval + self.cfg.grace
    }

    fn agreement_is_old(&self) -> bool {
        self.checks
            .agree_since
            .is_some_and(|s| self.now >= s + self.cfg.grace)
    }

    /// The slots other than `slot` holding a live activation of `id`.
    fn holders(&self, slot: usize, id: &ActorId) -> Vec<usize> {
        self.running()
            .into_iter()
            .filter(|&i| i != slot && self.node(i).is_some_and(|n| n.acts.contains_key(id)))
            .collect()
    }

    fn owned_by_holder(&self, slot: usize, id: &ActorId) -> bool {
        let Some(n) = self.node(slot) else {
            return true;
        };
        // Every ring is the agreed one in a stable state.
        n.placement
            .current()
            .owner(id)
            .is_some_and(|o| o.name() == self.slots[slot].name)
    }

    /// After a node starts or stops: the one node left running counts as joined from now
    /// on (its seeds resolve only to itself).
    pub(super) fn note_sole(&mut self) {
        if let [only] = self.running()[..]
            && let Some(node) = self.node_mut(only)
        {
            node.was_sole = true;
        }
    }

    /// Holders of `id` (among `slot` and `others`) whose activation began before their node
    /// had joined by the checks' observation.
    fn unjoined_holders(&self, slot: usize, others: &[usize], id: &ActorId) -> Vec<String> {
        std::iter::once(slot)
            .chain(others.iter().copied())
            .filter(|&h| {
                self.node(h)
                    .and_then(|n| n.acts.get(id))
                    .is_some_and(|a| a.unjoined)
            })
            .map(|h| self.slots[h].name.clone())
            .collect()
    }

    /// `slot` has just activated `id`: count or fail a double activation.
    pub(super) fn on_activation(&mut self, slot: usize, id: &ActorId) -> Result<(), SimFailure> {
        self.checks.activations += 1;
        self.checks.activated(id);
        let holders = self.holders(slot, id);
        let name = self.slots[slot].name.clone();
        self.log(format!("{name}: activate {id}"));
        self.refresh_agreement();
        if !holders.is_empty() {
            let who: Vec<&str> = holders
                .iter()
                .map(|&h| self.slots[h].name.as_str())
                .collect();
            let line = format!("double activation of {id} on {name}, also live on {who:?}");
            let unjoined = self.unjoined_holders(slot, &holders, id);
            if !unjoined.is_empty() {
                return Err(self.fail(format!(
                    "{line}: {unjoined:?} activated it before joining (no other live member \
                     ever in its view, never the only running node)"
                )));
            }
            if self.agreement_is_old() {
                return Err(self.fail(format!(
                    "{line} while membership has agreed for at least {:?}",
                    self.cfg.grace
                )));
            }
            let all_quorate = std::iter::once(slot)
                .chain(holders.iter().copied())
                .all(|h| self.node(h).is_some_and(|n| n.quorum.has_quorum()));
            if all_quorate {
                self.checks.doubles_with_quorum += 1;
            }
            if self.checks.agree_since.is_some() {
                self.checks.doubles.young_agreement += 1;
            } else if holders.iter().any(|&h| self.separated(slot, h)) {
                self.checks.doubles.partitioned += 1;
            } else if holders
                .iter()
                .any(|&h| self.recently_separated(slot, h, self.merge_window()))
            {
                self.checks.doubles.merging += 1;
            } else {
                self.checks.doubles.unpartitioned += 1;
            }
            self.log(line);
        }
        if self.is_stable() && !self.owned_by_holder(slot, id) {
            return Err(self.fail(format!(
                "{} activated {id} in a stable state but does not own it",
                self.slots[slot].name
            )));
        }
        Ok(())
    }

    /// After every event.
    pub(super) fn check_step(&mut self) -> Result<(), SimFailure> {
        if self.checks.last_agreed {
            let span = self.now - self.checks.last_step;
            self.checks.overlap_in_agreement += span * self.checks.last_doubled as u32;
        }
        if let Some(s) = self.checks.agree_since {
            let from = (s + self.cfg.grace).max(self.checks.last_step);
            if self.now > from {
                self.checks.checked += self.now - from;
            }
        }
        self.checks.last_step = self.now;
        self.refresh_agreement();
        self.checks.last_agreed = self.checks.agree_since.is_some();
        self.checks.last_doubled = self.checks.doubled;
        if self.agreement_is_old() && self.checks.doubled > 0 {
            let doubled: Vec<String> = self
                .checks
                .count
                .iter()
                .filter(|(_, c)| **c > 1)
                .map(|(id, _)| format!("{id}@{:?}", self.holders(usize::MAX, id)))
                .collect();
            return Err(self.fail(format!(
                "membership has agreed for at least {:?} but ids are live twice: {doubled:?}",
                self.cfg.grace
            )));
        }
        if self.is_stable() {
            if self.checks.stable_since.is_none() {
                self.checks.stable_since = Some(self.now);
                for slot in self.running() {
                    let ids: Vec<ActorId> = self
                        .node(slot)
                        .map(|n| n.acts.keys().cloned().collect())
                        .unwrap_or_default();
                    if let Some(id) = ids.iter().find(|id| !self.owned_by_holder(slot, id)) {
                        return Err(self.fail(format!(
                            "stable state, yet {} holds {id} which it does not own",
                            self.slots[slot].name
                        )));
                    }
                }
            }
        } else {
            self.checks.stable_since = None;
        }
        if !self.faults_on && self.checks.converged_at.is_none() {
            if self.checks.agree_since.is_some() && self.checks.agreed_exact {
                self.checks.converged_at = Some(self.now);
            } else if self.now > self.faults_end + self.cfg.convergence_limit {
                return Err(self.fail(format!(
                    "membership did not converge within {:?} after the faults stopped",
                    self.cfg.convergence_limit
                )));
            }
        }
        Ok(())
    }

    /// Faults over, every running node agreed on exactly the running set, and stable for
    /// the settle time: every ask must succeed.
    pub(super) fn quiet_and_stable(&self) -> bool {
        !self.faults_on
            && self.checks.agreed_exact
            && self
                .checks
                .stable_since
                .is_some_and(|s| self.now >= s + self.cfg.model.settle)
    }

    pub(super) fn record_answer(&mut self, ask: u64, result: Answer) -> Result<(), SimFailure> {
        let now = self.now;
        let stable_since = self.checks.stable_since;
        let Some(rec) = self.asks.get_mut(ask as usize) else {
            return Err(self.fail(format!("answer to unknown ask {ask}")));
        };
        rec.answers += 1;
        let (answers, issued, deadline, quiet, hops) =
            (rec.answers, rec.issued, rec.deadline, rec.quiet, rec.hops);
        if answers > 1 {
            return Err(self.fail(format!("ask {ask} answered twice ({result:?})")));
        }
        if now > deadline {
            return Err(self.fail(format!(
                "ask {ask} answered {:?} after its deadline ({result:?})",
                now - deadline
            )));
        }
        self.checks.worst_latency = self.checks.worst_latency.max(now - issued);
        self.checks.max_hops = self.checks.max_hops.max(hops);
        match result {
            Ok(()) => self.checks.ok += 1,
            Err((code, why)) => {
                if quiet && stable_since.is_some_and(|s| s <= issued) {
                    return Err(self.fail(format!(
                        "ask {ask} failed with {code:?} ({why}) in a stable, fault-free cluster"
                    )));
                }
                *self
                    .checks
                    .errors
                    .entry(format!("{code:?}: {why}"))
                    .or_insert(0) += 1;
            }
        }
        if quiet {
            self.checks.quiet_asks += 1;
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<SimReport, SimFailure> {
        if let Some((i, a)) = self.asks.iter().enumerate().find(|(_, a)| a.answers != 1) {
            return Err(self.fail(format!(
                "ask {i} (issued at {:?}, deadline {:?}) got {} answers",
                a.issued, a.deadline, a.answers
            )));
        }
        let Some(converged) = self.checks.converged_at else {
            return Err(self.fail("membership never converged".to_owned()));
        };
        let c = &self.checks;
        let mut digest = self.digest();
        fnv(&mut digest, &self.steps.to_le_bytes());
        fnv(&mut digest, &c.ok.to_le_bytes());
        Ok(SimReport {
            seed: self.cfg.seed,
            steps: self.steps,
            asks: self.asks.len() as u64,
            ok: c.ok,
            errors: c.errors.clone(),
            quiet_asks: c.quiet_asks,
            max_hops: c.max_hops,
            worst_latency: c.worst_latency,
            activations: c.activations,
            handovers: c.handovers,
            handovers_ahead: c.handovers_ahead,
            ring_changes: c.ring_changes,
            unsettles: c.unsettles,
            awaiting_refusals: c.awaiting_refusals,
            quorum_losses: c.quorum_losses,
            fenced: c.fenced,
            quorum_refusals: c.quorum_refusals,
            doubles_with_quorum: c.doubles_with_quorum,
            doubles: c.doubles.clone(),
            overlap_in_agreement: c.overlap_in_agreement,
            checked_agreement: c.checked,
            faults: self.faults.clone(),
            converged_after: converged.saturating_sub(self.faults_end),
            digest,
        })
    }
}
