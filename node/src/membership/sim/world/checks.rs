//! Measurements and convergence checks over the simulated world.

use std::collections::BTreeSet;
use std::time::Duration;

use cortex_protocol::NodeId;
use rand::RngExt;

use super::{Event, World, fnv};
use crate::membership::sim::{SimConfig, SimFailure, SimReport};
use crate::membership::view::MemberState;

impl World {
    pub(in crate::membership::sim) fn measure_departure(
        cfg: &SimConfig,
        graceful: bool,
    ) -> Result<Duration, SimFailure> {
        let mut w = Self::new(cfg.clone());
        w.faults_on = false;
        for i in 0..cfg.initial.min(w.slots.len()) {
            w.start(i)?;
        }
        w.at(cfg.dns_interval, Event::Dns)?;
        let limit = cfg.convergence_limit;
        if w.advance_until(limit, Self::converged)?.is_none() {
            return Err(w.fail(format!("cluster did not form: {}", w.describe_views())));
        }
        // Random phase relative to the probe schedule.
        let phase = Duration::from_micros(w.rng.random_range(0..1_000_000));
        w.advance_until(phase, |_| false)?;
        let running = w.running();
        let victim_slot = running[w.rng.random_range(0..running.len())];
        let victim = w.slots[victim_slot]
            .node
            .as_ref()
            .map(|n| n.core.local_id().clone())
            .ok_or_else(|| w.fail("victim not running".to_owned()))?;
        w.stop(victim_slot, graceful)?;
        let start = w.now;
        let gone = |w: &Self| {
            w.running()
                .iter()
                .filter_map(|&i| w.slots[i].node.as_ref())
                .all(|n| !n.core.view().is_live(&victim))
        };
        match w.advance_until(limit, gone)? {
            Some(t) => Ok(t - start),
            None => Err(w.fail(format!(
                "{victim} still listed {limit:?} after it stopped: {}",
                w.describe_views()
            ))),
        }
    }

    /// Processes events for at most `limit`, stopping as soon as `done` holds (checked every
    /// 10 ms of virtual time). Returns the time it held, or `None` at the limit.
    pub(super) fn advance_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<Option<Duration>, SimFailure> {
        let end = self.now + limit;
        let tick = Duration::from_millis(10);
        let mut next_check = self.now;
        loop {
            if self.now >= next_check {
                if done(self) {
                    return Ok(Some(self.now));
                }
                next_check = self.now + tick;
            }
            let Some(t) = self.queue.next_deadline() else {
                return Ok(None);
            };
            if t > end {
                self.now = end;
                return Ok(done(self).then_some(end));
            }
            let Some(ev) = self.queue.pop_due(t) else {
                return Ok(None);
            };
            self.now = t;
            self.steps += 1;
            self.step(ev)?;
        }
    }

    pub(super) fn periods(&self, d: Duration) -> u64 {
        let p = self.cfg.tuning.probe_period.as_micros().max(1);
        u64::try_from(d.as_micros().div_ceil(p)).unwrap_or(u64::MAX)
    }

    pub(super) fn report(&self, since: Duration) -> SimReport {
        let converged_after = since.saturating_sub(self.faults_end);
        let rejected = self
            .running()
            .iter()
            .filter_map(|&i| self.slots[i].node.as_ref())
            .map(|n| n.core.counters().rejected.total())
            .sum();
        let mut digest = self.trace.digest();
        fnv(&mut digest, &self.steps.to_le_bytes());
        fnv(&mut digest, &self.datagrams.to_le_bytes());
        SimReport {
            seed: self.cfg.seed,
            steps: self.steps,
            datagrams: self.datagrams,
            dropped: self.dropped,
            duplicated: self.duplicated,
            faults: self.faults.clone(),
            rejected,
            renewals: self.renewals,
            converged_after,
            converged_after_periods: self.periods(converged_after),
            running: self.running().len(),
            digest,
        }
    }

    pub(super) fn running_names(&self) -> Vec<String> {
        self.running()
            .iter()
            .filter_map(|&i| self.slots[i].node.as_ref())
            .map(|n| n.core.local_id().to_string())
            .collect()
    }

    pub(super) fn converged(&self) -> bool {
        let truth: BTreeSet<NodeId> = self
            .running()
            .iter()
            .filter_map(|&i| self.slots[i].node.as_ref())
            .map(|n| n.core.local_id().clone())
            .collect();
        self.running()
            .iter()
            .filter_map(|&i| self.slots[i].node.as_ref())
            .all(|n| {
                let v = n.core.view();
                v.members.iter().all(|m| m.state == MemberState::Up)
                    && v.members
                        .iter()
                        .map(|m| m.id.clone())
                        .collect::<BTreeSet<_>>()
                        == truth
            })
    }

    pub(super) fn describe_views(&self) -> String {
        let mut s = format!("running {:?};", self.running_names());
        for &i in &self.running() {
            if let Some(n) = self.slots[i].node.as_ref() {
                let v = n.core.view();
                let ms: Vec<String> = v
                    .members
                    .iter()
                    .map(|m| format!("{}:{:?}", m.id, m.state))
                    .collect();
                s.push_str(&format!(" [{} sees {}]", n.core.local_id(), ms.join(" ")));
            }
        }
        s
    }
}
