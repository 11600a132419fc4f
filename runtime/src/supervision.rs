//! Supervision plumbing: restart bookkeeping, task ownership and the parent links a
//! failing actor reports to.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::actor::{Actor, SupervisorStrategy};
use crate::mailbox::{Control, ControlSink, Mailbox};

/// Where an actor reports failure and termination.
pub(crate) trait Parent: Send + Sync {
    /// The child failed and now waits for a `Restart` or `Stop` on its control lane
    /// (`lane`: passed in rather than kept, so a parent shared by many actors stays one
    /// object).
    fn child_failed(&self, child: u64, lane: &dyn ControlSink, reason: String);
    /// The child's task has ended.
    fn child_terminated(&self, child: u64);
}

/// An actor parent decides on its own task: the report goes through its control lane.
impl<A: Actor> Parent for Mailbox<A> {
    fn child_failed(&self, child: u64, _lane: &dyn ControlSink, reason: String) {
        self.push_control(Control::ChildFailed { id: child, reason });
    }
    fn child_terminated(&self, child: u64) {
        self.push_control(Control::ChildTerminated { id: child });
    }
}

/// Failure times inside the strategy's sliding window.
#[derive(Debug, Default)]
pub(crate) struct RestartHistory {
    times: VecDeque<Instant>,
}

impl RestartHistory {
    /// Records a failure at `now`; true when the strategy still allows a restart.
    pub(crate) fn allow(&mut self, now: Instant, s: &SupervisorStrategy) -> bool {
        while let Some(&t) = self.times.front() {
            if now.saturating_duration_since(t) > s.within {
                self.times.pop_front();
            } else {
                break;
            }
        }
        if self.times.len() >= s.max_restarts as usize {
            return false;
        }
        self.times.push_back(now);
        true
    }
}

/// Owns a task: aborts it when dropped unless detached.
#[derive(Debug)]
pub(crate) struct TaskGuard(Option<JoinHandle<()>>);

impl TaskGuard {
    pub(crate) fn new(h: JoinHandle<()>) -> Self {
        Self(Some(h))
    }
    /// Lets a finished (or finishing) task go without aborting it.
    pub(crate) fn detach(mut self) {
        self.0.take();
    }
    /// Waits for the task until `deadline`, then aborts it. True if it ended by itself.
    pub(crate) async fn join_until(mut self, deadline: Instant) -> bool {
        let Some(mut h) = self.0.take() else {
            return true;
        };
        match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(_) => true,
            Err(_) => {
                h.abort();
                false
            }
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// A supervisor that decides inline, for actors without an actor parent: top-level actors
/// of a [`System`](crate::System) and virtual activations. Past the limits the child is
/// stopped, since there is no one to escalate to.
pub(crate) struct InlineParent<F> {
    strategy: SupervisorStrategy,
    history: Mutex<RestartHistory>,
    gave_up: AtomicBool,
    on_terminated: F,
}

impl<F: Fn(u64, bool) + Send + Sync> InlineParent<F> {
    /// `on_terminated(child, gave_up)` runs on the child's task as it ends. Generic rather
    /// than boxed: one allocation less per top-level or virtual actor.
    pub(crate) fn new(strategy: SupervisorStrategy, on_terminated: F) -> Self {
        Self {
            strategy,
            history: Mutex::new(RestartHistory::default()),
            gave_up: AtomicBool::new(false),
            on_terminated,
        }
    }
}

impl<F: Fn(u64, bool) + Send + Sync> Parent for InlineParent<F> {
    fn child_failed(&self, child: u64, sink: &dyn ControlSink, reason: String) {
        let allowed = self.history.lock().allow(Instant::now(), &self.strategy);
        if allowed {
            tracing::warn!(actor = child, %reason, "actor failed; restarting");
            sink.push_control(Control::Restart);
        } else {
            tracing::error!(
                actor = child,
                %reason,
                max_restarts = self.strategy.max_restarts,
                within = ?self.strategy.within,
                "actor failed too often; stopping it"
            );
            self.gave_up.store(true, Ordering::Relaxed);
            sink.push_control(Control::Stop);
        }
    }
    fn child_terminated(&self, child: u64) {
        (self.on_terminated)(child, self.gave_up.load(Ordering::Relaxed));
    }
}

/// A child as its actor parent sees it.
pub(crate) struct ChildEntry {
    pub(crate) ctl: Arc<dyn ControlSink>,
    pub(crate) task: TaskGuard,
    /// Allocated at the first failure: most children never fail.
    pub(crate) history: Option<Box<RestartHistory>>,
}

/// The children of one actor, plus the shared history used by all-for-one.
#[derive(Default)]
pub(crate) struct Children {
    pub(crate) map: HashMap<u64, ChildEntry>,
    pub(crate) group: RestartHistory,
}

impl Children {
    /// Sends `make()` to every child, then waits for all of them until `deadline`;
    /// stragglers are aborted. Returns how many ended by themselves.
    pub(crate) async fn stop_all(
        &mut self,
        make: impl Fn() -> Control,
        deadline: Instant,
    ) -> usize {
        if self.map.is_empty() {
            return 0;
        }
        for e in self.map.values() {
            e.ctl.push_control(make());
        }
        let joins = self.map.drain().map(|(_, e)| e.task.join_until(deadline));
        futures::future::join_all(joins)
            .await
            .into_iter()
            .filter(|ended| *ended)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn restart_history_slides() {
        let s = SupervisorStrategy::one_for_one(2, Duration::from_secs(10));
        let mut h = RestartHistory::default();
        let t0 = Instant::now();
        assert!(h.allow(t0, &s));
        assert!(h.allow(t0 + Duration::from_secs(1), &s));
        assert!(!h.allow(t0 + Duration::from_secs(2), &s));
        // The first failure leaves the window.
        assert!(h.allow(t0 + Duration::from_secs(11), &s));
        assert!(!RestartHistory::default().allow(t0, &SupervisorStrategy::never()));
    }
}
