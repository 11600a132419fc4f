//! [`Context`]: what a handler can do besides touching its state: reach itself, spawn
//! supervised children, set timers, stop.

use std::sync::{Arc, Weak};
use std::time::Duration;

use cortex_protocol::ActorId;
use tokio::task::JoinHandle;

use crate::actor::{Actor, Handler, Message};
use crate::actor_ref::ActorRef;
use crate::cell::{Factory, spawn_actor};
use crate::mailbox::ControlSink;
use crate::supervision::{ChildEntry, Children, Parent};
use crate::system::{SpawnOptions, SystemInner};
use crate::timer::TimerHandle;

/// The actor's view of the runtime, passed to every hook and handler.
pub struct Context<A: Actor> {
    pub(crate) myself: ActorRef<A>,
    pub(crate) sys: Weak<SystemInner>,
    pub(crate) virtual_id: Option<Arc<ActorId>>,
    /// Children, timers and a requested stop, allocated on first use so an idle leaf actor
    /// stays small.
    pub(crate) extras: Option<Box<Extras>>,
}

#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) children: Children,
    pub(crate) timers: Vec<JoinHandle<()>>,
    /// The actor asked to stop ([`Context::stop`]); the loop ends after the handler.
    pub(crate) stop_requested: bool,
}

impl Drop for Extras {
    fn drop(&mut self) {
        // Timers belong to the actor: they die with it. Children die through their guards.
        for t in &self.timers {
            t.abort();
        }
    }
}

impl<A: Actor> Context<A> {
    /// A ref to this actor.
    pub fn myself(&self) -> &ActorRef<A> {
        &self.myself
    }

    /// This actor's node-local number.
    pub fn id(&self) -> u64 {
        self.myself.id()
    }

    /// The virtual actor id, when this is a virtual activation.
    pub fn virtual_id(&self) -> Option<&ActorId> {
        self.virtual_id.as_deref()
    }

    /// The shard this actor runs on, in a sharded system ([`Executor::Shards`]); `None`
    /// with [`Executor::Ambient`].
    ///
    /// [`Executor::Shards`]: crate::Executor::Shards
    /// [`Executor::Ambient`]: crate::Executor::Ambient
    pub fn shard(&self) -> Option<usize> {
        crate::shards::current_index()
    }

    /// Stops this actor after the current handler returns. Queued messages are dropped.
    pub fn stop(&mut self) {
        self.extras().stop_requested = true;
    }

    /// True once [`Context::stop`] was called (and no restart cleared it).
    pub(crate) fn stop_requested(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.stop_requested)
    }

    /// Live children.
    pub fn children(&self) -> usize {
        self.extras.as_ref().map_or(0, |e| e.children.map.len())
    }

    pub(crate) fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    /// Spawns a child supervised by this actor with default options.
    ///
    /// The child is stopped before this actor finishes stopping, and is restarted or
    /// stopped according to [`Actor::supervisor_strategy`] when it fails.
    pub fn spawn<C: Actor>(&mut self, child: C) -> ActorRef<C> {
        self.spawn_inner(child, None, &SpawnOptions::default())
    }

    /// Spawns a child with explicit options.
    pub fn spawn_with<C: Actor>(&mut self, child: C, opts: SpawnOptions) -> ActorRef<C> {
        self.spawn_inner(child, None, &opts)
    }

    /// Spawns a child built by `factory`; a restart builds a fresh instance with it.
    pub fn spawn_factory<C, F>(&mut self, mut factory: F, opts: SpawnOptions) -> ActorRef<C>
    where
        C: Actor,
        F: FnMut() -> C + Send + 'static,
    {
        let first = factory();
        self.spawn_inner(first, Some(Box::new(factory)), &opts)
    }

    fn spawn_inner<C: Actor>(
        &mut self,
        child: C,
        factory: Option<Factory<C>>,
        opts: &SpawnOptions,
    ) -> ActorRef<C> {
        let parent: Arc<dyn Parent> = self.myself.mb.clone();
        let sys = self.sys.clone();
        let (r, task) = spawn_actor(&sys, child, factory, opts, parent, None);
        let ctl: Arc<dyn ControlSink> = r.mb.clone();
        self.extras().children.map.insert(
            r.id(),
            ChildEntry {
                ctl,
                task,
                history: None,
            },
        );
        r
    }

    /// Delivers `msg` to this actor after `delay`. The timer dies with the actor (and is
    /// cancelled by a restart).
    pub fn send_after<M>(&mut self, msg: M, delay: Duration) -> TimerHandle
    where
        A: Handler<M>,
        M: Message,
    {
        let me = self.myself.clone();
        self.add_timer(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.tell(msg).await;
        }))
    }

    /// Delivers a clone of `msg` to this actor every `period`, first after one period.
    /// A tick that finds the mailbox full waits for room; missed ticks are not replayed.
    pub fn interval<M>(&mut self, msg: M, period: Duration) -> TimerHandle
    where
        A: Handler<M>,
        M: Message + Clone,
    {
        let me = self.myself.clone();
        let period = period.max(Duration::from_millis(1));
        self.add_timer(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if me.tell(msg.clone()).await.is_err() {
                    return;
                }
            }
        }))
    }

    fn add_timer(&mut self, h: JoinHandle<()>) -> TimerHandle {
        let handle = TimerHandle::new(h.abort_handle());
        let timers = &mut self.extras().timers;
        if timers.len() >= 8 {
            timers.retain(|t| !t.is_finished());
        }
        timers.push(h);
        handle
    }

    pub(crate) fn cancel_timers(&mut self) {
        if let Some(e) = &mut self.extras {
            for t in e.timers.drain(..) {
                t.abort();
            }
        }
    }

    /// Live timers (not yet fired or cancelled).
    pub fn timers(&self) -> usize {
        self.extras
            .as_ref()
            .map_or(0, |e| e.timers.iter().filter(|t| !t.is_finished()).count())
    }
}
