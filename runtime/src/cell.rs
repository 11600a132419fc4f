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
use crate::inline::{self, Home};
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
    let home = Box::new(Home {
        actor,
        ctx: Context {
            myself: ActorRef::from_mailbox(mb.clone()),
            sys: sys.clone(),
            virtual_id,
            extras: None,
        },
    });
    let cell = Cell {
        mb: mb.clone(),
        factory,
        parent,
        batch: Batch::default(),
        inline: opts.inline_asks,
    };
    let run = cell.run(home);
    let sys = sys.upgrade();
    let task = match sys.as_deref().and_then(|s| s.shards.as_ref()) {
        Some(shards) => shards.spawn(opts.shard, run),
        None => tokio::spawn(run),
    };
    (ActorRef::from_mailbox(mb), TaskGuard::new(task))
}

pub(crate) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The actor's task, besides its state ([`Home`], which inline asks borrow while the task
/// is parked).
struct Cell<A: Actor> {
    mb: Arc<Mailbox<A>>,
    factory: Option<Factory<A>>,
    parent: Arc<dyn Parent>,
    /// User messages taken from the mailbox in one go, handled before it is locked again.
    batch: Batch<A>,
    /// Lends the state to inline asks while parked ([`SpawnOptions::inline_asks`]).
    inline: bool,
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
    fn run(mut self, home: Box<Home<A>>) -> impl Future<Output = ()> + Send {
        async move {
            let mut home = home;
            let mut phase = Phase::Running;
            if let Err(p) = guarded(home.actor.started(&mut home.ctx)).await {
                self.report_failure(&home, panic_message(&p));
                phase = Phase::Suspended;
            }
            // The runtime this task runs on: inline asks must come from it (0: never lend).
            let rt = if self.inline { inline::current_rt() } else { 0 };
            let mut budget = BATCH;
            let exit = loop {
                // Before the stop check, as when the restart ran where its directive was
                // received: a restart clears a stop the failed instance had asked for.
                if phase == Phase::Restarting {
                    // Boxed: rare paths must not inflate every idle actor's task.
                    phase = if Box::pin(self.restart(&mut home)).await {
                        Phase::Running
                    } else {
                        Phase::Suspended
                    };
                }
                if home.ctx.stop_requested() {
                    break Exit::Stop;
                }
                let running = phase == Phase::Running;
                // The next message of the batch, while no control message waits: the
                // per-message path, with no future to build (measured: −11% on the one-actor
                // tell row through the receive future). Otherwise one `match` on the received
                // value, and no `.await` in its arms: a scrutinee or a binding kept across the
                // handler's await below would be stored in the task, and every idle actor
                // would pay for its bytes.
                let env = if running && let Some(env) = self.mb.pop_batch(&mut self.batch) {
                    env
                } else {
                    match self
                        .mb
                        .recv_lending(&mut self.batch, running, rt, home)
                        .await
                    {
                        (Item::Msg(env), h) => {
                            home = h;
                            env
                        }
                        (Item::Control(c), h) => {
                            home = h;
                            match c {
                                Control::Stop => break Exit::Stop,
                                Control::Drain { deadline } => break Exit::Drain(deadline),
                                Control::Restart => phase = Phase::Restarting,
                                Control::ChildFailed { id, reason } => {
                                    if self.on_child_failed(&mut home, id, reason) {
                                        phase = Phase::Suspended;
                                    }
                                }
                                Control::ChildTerminated { id } => forget_child(&mut home, id),
                                Control::Failed { reason } => {
                                    self.report_failure(&home, reason);
                                    phase = Phase::Suspended;
                                }
                            }
                            continue;
                        }
                    }
                };
                let (run, spare) = env.handle(&mut home.actor, &mut home.ctx);
                self.batch.spend(spare);
                if let Err(p) = run.await {
                    self.report_failure(&home, panic_message(&p));
                    phase = Phase::Suspended;
                }
                budget -= 1;
                if budget == 0 {
                    budget = BATCH;
                    tokio::task::yield_now().await;
                }
            };
            Box::pin(self.shutdown(home, exit, phase)).await;
        }
    }

    fn report_failure(&self, home: &Home<A>, reason: String) {
        tracing::warn!(actor = home.ctx.id(), %reason, "actor failed");
        self.parent.child_failed(home.ctx.id(), &*self.mb, reason);
    }

    /// Returns true when the instance is running again.
    async fn restart(&mut self, home: &mut Home<A>) -> bool {
        let deadline = Instant::now() + stop_timeout(home);
        if let Some(e) = home.ctx.extras.as_mut() {
            e.children.stop_all(|| Control::Stop, deadline).await;
        }
        home.ctx.cancel_timers();
        if let Some(e) = home.ctx.extras.as_mut() {
            e.stop_requested = false;
        }
        if let Some(f) = self.factory.as_mut() {
            match std::panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(fresh) => home.actor = fresh,
                Err(p) => {
                    self.report_failure(home, panic_message(&p));
                    return false;
                }
            }
        }
        match guarded(home.actor.restarted(&mut home.ctx)).await {
            Ok(()) => true,
            Err(p) => {
                self.report_failure(home, panic_message(&p));
                false
            }
        }
    }

    /// Applies this actor's strategy to a failed child; true when it escalated (this actor
    /// has failed in turn).
    fn on_child_failed(&mut self, home: &mut Home<A>, id: u64, reason: String) -> bool {
        let strategy = home.actor.supervisor_strategy();
        let now = Instant::now();
        let my_id = home.ctx.id();
        let Some(children) = home.ctx.extras.as_mut().map(|e| &mut e.children) else {
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
        self.report_failure(
            home,
            format!(
                "child {id} failed more than {} times within {:?} (last: {reason})",
                strategy.max_restarts, strategy.within
            ),
        );
        true
    }

    async fn drain(&mut self, home: &mut Home<A>, deadline: Instant) {
        let mb = self.mb.clone();
        while Instant::now() < deadline && !home.ctx.stop_requested() {
            match mb.try_recv(&mut self.batch, true) {
                None => return,
                Some(Item::Msg(env)) => {
                    let (run, spare) = env.handle(&mut home.actor, &mut home.ctx);
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
                Some(Item::Control(Control::ChildTerminated { id })) => forget_child(home, id),
                Some(Item::Control(Control::ChildFailed { id, .. })) => {
                    if let Some(e) = home.ctx.extras.as_ref()
                        && let Some(c) = e.children.map.get(&id)
                    {
                        c.ctl.push_control(Control::Stop);
                    }
                }
                Some(Item::Control(Control::Failed { reason })) => tracing::warn!(
                    actor = mb.id(),
                    %reason,
                    "handler failed while draining"
                ),
                Some(Item::Control(Control::Drain { .. } | Control::Restart)) => {}
            }
        }
    }

    async fn shutdown(mut self, mut home: Box<Home<A>>, exit: Exit, phase: Phase) {
        let mb = self.mb.clone();
        mb.close();
        let deadline = match exit {
            Exit::Drain(deadline) => {
                if phase == Phase::Running {
                    self.drain(&mut home, deadline).await;
                }
                deadline
            }
            Exit::Stop => Instant::now() + stop_timeout(&home),
        };
        if let Err(p) = guarded(home.actor.stopping(&mut home.ctx)).await {
            tracing::warn!(actor = mb.id(), reason = %panic_message(&p), "stopping hook failed");
        }
        if let Some(e) = home.ctx.extras.as_mut() {
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
        home.ctx.cancel_timers();
        if let Err(p) = guarded(home.actor.stopped(&mut home.ctx)).await {
            tracing::warn!(actor = mb.id(), reason = %panic_message(&p), "stopped hook failed");
        }
        mb.clear();
        self.batch.clear();
        let Cell { parent, .. } = self;
        // State goes before anyone hears of the end, so "stopped" means "memory released".
        drop(home);
        parent.child_terminated(mb.id());
        mb.mark_terminated();
    }
}
/// Read when needed rather than stored: every idle actor would carry it.
fn stop_timeout<A: Actor>(home: &Home<A>) -> Duration {
    home.ctx
        .sys
        .upgrade()
        .map_or(DEFAULT_STOP_TIMEOUT, |s| s.config.stop_timeout)
}

fn forget_child<A: Actor>(home: &mut Home<A>, id: u64) {
    if let Some(e) = home.ctx.extras.as_mut()
        && let Some(entry) = e.children.map.remove(&id)
    {
        entry.task.detach();
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
        let home = Box::new(Home {
            actor: Idle,
            ctx: Context {
                myself: ActorRef::from_mailbox(mb.clone()),
                sys: Weak::new(),
                virtual_id: None,
                extras: None,
            },
        });
        let cell = Cell {
            mb,
            factory: None,
            parent: Arc::new(InlineParent::new(Default::default(), |_, _| {})),
            batch: Batch::default(),
            inline: true,
        };
        let size = std::mem::size_of_val(&cell.run(home));
        assert!(size <= 152, "the actor loop's future grew to {size} bytes");
    }
}
