//! The actor's task: lifecycle hooks, the message loop, supervision decisions and the
//! stop sequence (drain, `stopping`, children, timers, `stopped`, drop, report).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cortex_protocol::ActorId;
use futures::FutureExt;
use tokio::time::Instant;

use crate::actor::{Actor, RestartScope};
use crate::actor_ref::ActorRef;
use crate::context::Context;
use crate::envelope::{Panic, panic_message};
use crate::mailbox::{Batch, Control, Item, Mailbox};
use crate::supervision::{Parent, TaskGuard};
use crate::system::{SpawnOptions, SystemInner};

/// Builds a fresh actor instance for a restart.
pub(crate) type Factory<A> = Box<dyn FnMut() -> A + Send>;

/// Messages handled before the loop yields to the scheduler, so that one busy actor
/// cannot starve the others sharing its worker thread.
const BATCH: u32 = 128;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Spawns the task of a new actor, which reports failures and its end to `parent`.
pub(crate) fn spawn_actor<A: Actor>(
    sys: &Weak<SystemInner>,
    actor: A,
    factory: Option<Factory<A>>,
    opts: &SpawnOptions,
    parent: Arc<dyn Parent>,
    virtual_id: Option<Arc<ActorId>>,
) -> (ActorRef<A>, TaskGuard) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mb = Arc::new(Mailbox::new(id, opts.mailbox));
    let cell = Cell {
        actor,
        factory,
        ctx: Context {
            myself: ActorRef::from_mailbox(mb.clone()),
            sys: sys.clone(),
            virtual_id,
            extras: None,
            stop_requested: false,
        },
        parent,
        batch: Batch::default(),
    };
    let run = cell.run();
    let sys = sys.upgrade();
    let task = match sys.as_deref().and_then(|s| s.shards.as_ref()) {
        Some(shards) => shards.spawn(opts.shard, run),
        None => tokio::spawn(run),
    };
    (ActorRef::from_mailbox(mb), TaskGuard::new(task))
}

pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

struct Cell<A: Actor> {
    actor: A,
    factory: Option<Factory<A>>,
    ctx: Context<A>,
    parent: Arc<dyn Parent>,
    /// User messages taken from the mailbox in one go, handled before it is locked again.
    batch: Batch<A>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Failed; waits for its supervisor's directive and handles no user message.
    Suspended,
    /// Its supervisor decided on a restart, which the loop runs next.
    Restarting,
}

enum Exit {
    Stop,
    Drain(Instant),
}

/// Runs a hook behind the panic boundary. Boxed at once (not inside an async fn) so the
/// hook's state never inflates every idle actor's task.
fn guarded<'a, F>(f: F) -> impl Future<Output = Result<(), Panic>> + Send + 'a
where
    F: Future<Output = ()> + Send + 'a,
{
    let boxed: Pin<Box<dyn Future<Output = ()> + Send + 'a>> = Box::pin(f);
    AssertUnwindSafe(boxed).catch_unwind()
}

impl<A: Actor> Cell<A> {
    /// The actor's whole life. A plain fn around an `async move` block: an `async fn` would
    /// keep a second copy of `self` in the task, which every idle actor would pay for.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see above
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let mut phase = Phase::Running;
            if let Err(p) = guarded(self.actor.started(&mut self.ctx)).await {
                self.report_failure(panic_message(&p));
                phase = Phase::Suspended;
            }
            let mut budget = BATCH;
            let exit = loop {
                // Before the stop check, as when the restart ran where its directive was
                // received: a restart clears a stop the failed instance had asked for.
                if phase == Phase::Restarting {
                    // Boxed: rare paths must not inflate every idle actor's task.
                    phase = if Box::pin(self.restart()).await {
                        Phase::Running
                    } else {
                        Phase::Suspended
                    };
                }
                if self.ctx.stop_requested {
                    break Exit::Stop;
                }
                // Not a local clone of the mailbox `Arc`: 8 bytes more in every idle task.
                let running = phase == Phase::Running;
                // No `.await` inside this `match`: its scrutinee would be kept in the task
                // across that await, and every idle actor would pay for its bytes.
                let env = match self.ctx.myself.mb.recv(&mut self.batch, running).await {
                    Item::Msg(env) => env,
                    Item::Control(Control::Stop) => break Exit::Stop,
                    Item::Control(Control::Drain { deadline }) => break Exit::Drain(deadline),
                    Item::Control(Control::Restart) => {
                        phase = Phase::Restarting;
                        continue;
                    }
                    Item::Control(Control::ChildFailed { id, reason }) => {
                        if self.on_child_failed(id, reason) {
                            phase = Phase::Suspended;
                        }
                        continue;
                    }
                    Item::Control(Control::ChildTerminated { id }) => {
                        self.forget_child(id);
                        continue;
                    }
                };
                let (run, spare) = env.handle(&mut self.actor, &mut self.ctx);
                self.batch.spend(spare);
                if let Err(p) = run.await {
                    self.report_failure(panic_message(&p));
                    phase = Phase::Suspended;
                }
                budget -= 1;
                if budget == 0 {
                    budget = BATCH;
                    tokio::task::yield_now().await;
                }
            };
            Box::pin(self.shutdown(exit, phase)).await;
        }
    }

    /// Read when needed rather than stored: every idle actor would carry it.
    fn stop_timeout(&self) -> Duration {
        self.ctx
            .sys
            .upgrade()
            .map_or(DEFAULT_STOP_TIMEOUT, |s| s.config.stop_timeout)
    }

    fn report_failure(&self, reason: String) {
        tracing::warn!(actor = self.ctx.id(), %reason, "actor failed");
        self.parent
            .child_failed(self.ctx.id(), &*self.ctx.myself.mb, reason);
    }

    fn forget_child(&mut self, id: u64) {
        if let Some(e) = self.ctx.extras.as_mut()
            && let Some(entry) = e.children.map.remove(&id)
        {
            entry.task.detach();
        }
    }

    /// Returns true when the instance is running again.
    async fn restart(&mut self) -> bool {
        let deadline = Instant::now() + self.stop_timeout();
        if let Some(e) = self.ctx.extras.as_mut() {
            e.children.stop_all(|| Control::Stop, deadline).await;
        }
        self.ctx.cancel_timers();
        self.ctx.stop_requested = false;
        if let Some(f) = self.factory.as_mut() {
            match std::panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(fresh) => self.actor = fresh,
                Err(p) => {
                    self.report_failure(panic_message(&p));
                    return false;
                }
            }
        }
        match guarded(self.actor.restarted(&mut self.ctx)).await {
            Ok(()) => true,
            Err(p) => {
                self.report_failure(panic_message(&p));
                false
            }
        }
    }

    /// Applies this actor's strategy to a failed child; true when it escalated (this actor
    /// has failed in turn).
    fn on_child_failed(&mut self, id: u64, reason: String) -> bool {
        let strategy = self.actor.supervisor_strategy();
        let now = Instant::now();
        let my_id = self.ctx.id();
        let Some(children) = self.ctx.extras.as_mut().map(|e| &mut e.children) else {
            return false;
        };
        let Some(entry) = children.map.get_mut(&id) else {
            // Already stopped or forgotten: nothing to decide.
            return false;
        };
        let allowed = match strategy.scope {
            RestartScope::AllForOne => children.group.allow(now, &strategy),
            _ => entry
                .history
                .get_or_insert_with(Default::default)
                .allow(now, &strategy),
        };
        let directive = || {
            if allowed {
                Control::Restart
            } else {
                Control::Stop
            }
        };
        match strategy.scope {
            RestartScope::AllForOne => {
                for c in children.map.values() {
                    c.ctl.push_control(directive());
                }
            }
            _ => entry.ctl.push_control(directive()),
        }
        if allowed {
            tracing::debug!(actor = my_id, child = id, %reason, "restarting child");
            return false;
        }
        self.report_failure(format!(
            "child {id} failed more than {} times within {:?} (last: {reason})",
            strategy.max_restarts, strategy.within
        ));
        true
    }

    async fn drain(&mut self, deadline: Instant) {
        let mb = self.ctx.myself.mb.clone();
        while Instant::now() < deadline && !self.ctx.stop_requested {
            match mb.try_recv(&mut self.batch, true) {
                None => return,
                Some(Item::Msg(env)) => {
                    let (run, spare) = env.handle(&mut self.actor, &mut self.ctx);
                    self.batch.spend(spare);
                    match tokio::time::timeout_at(deadline, run).await {
                        Ok(Ok(())) => {}
                        Ok(Err(p)) => tracing::warn!(
                            actor = mb.id(),
                            reason = %panic_message(&p),
                            "handler failed while draining"
                        ),
                        Err(_) => return,
                    }
                }
                Some(Item::Control(Control::Stop)) => return,
                Some(Item::Control(Control::ChildTerminated { id })) => self.forget_child(id),
                Some(Item::Control(Control::ChildFailed { id, .. })) => {
                    if let Some(e) = self.ctx.extras.as_ref()
                        && let Some(c) = e.children.map.get(&id)
                    {
                        c.ctl.push_control(Control::Stop);
                    }
                }
                Some(Item::Control(Control::Drain { .. } | Control::Restart)) => {}
            }
        }
    }

    async fn shutdown(mut self, exit: Exit, phase: Phase) {
        let mb = self.ctx.myself.mb.clone();
        mb.close();
        let deadline = match exit {
            Exit::Drain(deadline) => {
                if phase == Phase::Running {
                    self.drain(deadline).await;
                }
                deadline
            }
            Exit::Stop => Instant::now() + self.stop_timeout(),
        };
        if let Err(p) = guarded(self.actor.stopping(&mut self.ctx)).await {
            tracing::warn!(actor = mb.id(), reason = %panic_message(&p), "stopping hook failed");
        }
        if let Some(e) = self.ctx.extras.as_mut() {
            let drain = matches!(exit, Exit::Drain(_));
            let make = move || {
                if drain {
                    Control::Drain { deadline }
                } else {
                    Control::Stop
                }
            };
            // A child that does not finish in time is aborted, so a parent always ends.
            e.children.stop_all(make, deadline).await;
        }
        self.ctx.cancel_timers();
        if let Err(p) = guarded(self.actor.stopped(&mut self.ctx)).await {
            tracing::warn!(actor = mb.id(), reason = %panic_message(&p), "stopped hook failed");
        }
        mb.clear();
        self.batch.clear();
        let Cell {
            actor, ctx, parent, ..
        } = self;
        // State goes before anyone hears of the end, so "stopped" means "memory released".
        drop(actor);
        drop(ctx);
        parent.child_terminated(mb.id());
        mb.mark_terminated();
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::InlineParent;

    struct Idle;
    impl Actor for Idle {}

    /// tokio allocates a task in a 128-byte-aligned cell: with a future of up to ~152 bytes
    /// (a stateless actor) the cell is 256 bytes, past that 384, which would put an idle
    /// actor over its 512-byte budget. This guards the loop's own state from growing.
    #[tokio::test]
    async fn an_idle_actors_task_stays_small() {
        let mb = Arc::new(Mailbox::<Idle>::new(1, 8));
        let cell = Cell {
            actor: Idle,
            factory: None,
            ctx: Context {
                myself: ActorRef::from_mailbox(mb),
                sys: Weak::new(),
                virtual_id: None,
                extras: None,
                stop_requested: false,
            },
            parent: Arc::new(InlineParent::new(Default::default(), |_, _| {})),
            batch: Batch::default(),
        };
        let size = std::mem::size_of_val(&cell.run());
        assert!(size <= 152, "the actor loop's future grew to {size} bytes");
    }
}
