//! The node's shared state and its routing: every tell and ask addressed to an actor id
//! goes to the one owner in this node's view, locally without serialization or over QUIC.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{
    ActorId, Ask, ErrorCode, MessageName, NodeId, RemoteError, ReplyResult, RequestId, RequestMeta,
    Target, Tell, TopicId,
};
use cortex_runtime::{ActorError, Codec, Handler, PubSub, RemoteMessage, System};
use cortex_transport::{Connection, Endpoint, TransportError, TrySendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::pubsub::Published;
use crate::config::NodeConfig;
use crate::membership::MembershipHandle;
use crate::metrics::NodeMetrics;
use crate::placement::Placement;
use crate::routing::activations::ActivationLog;
use crate::routing::decide::{Decision, decide_routed};
use crate::routing::dedupe::{Begin, Dedupe};

/// Most times one request may be forwarded between nodes; past it the request fails with
/// [`ErrorCode::HopLimit`] instead of looping.
pub const MAX_HOPS: u8 = 4;

/// Least time an idempotent ask is allowed to run, whatever its caller's deadline, so that
/// retries find its answer.
const IDEMPOTENT_RUN_MIN: Duration = Duration::from_secs(10);

/// Deadline of a request that carries none (tells).
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) config: NodeConfig,
    pub(crate) system: System,
    pub(crate) placement: Placement,
    pub(crate) activations: ActivationLog,
    pub(crate) dedupe: Arc<Dedupe>,
    pub(crate) metrics: NodeMetrics,
    pub(crate) pubsub: PubSub<Published>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// Set once a graceful leave begins: the node drops itself from its own ring so that
    /// it hands every activation over before the others take its ids.
    pub(crate) leaving: std::sync::atomic::AtomicBool,
    pub(crate) clients: super::pubsub::Clients,
    pub(crate) events: super::watch::EventLog,
    pub(crate) peer_totals: super::scrape::PeerTotals,
    pub(crate) admission: super::watch::Admission,
    /// Set once this node has seen another member (or needs none): a node that has not
    /// joined activates nothing, since its view of one member is not the cluster's.
    pub(crate) joined: std::sync::atomic::AtomicBool,
    pub(crate) last_fingerprint: std::sync::atomic::AtomicU64,
    /// The split-brain rule's state, fed by the membership task (`watch.rs`).
    pub(crate) quorum: parking_lot::Mutex<crate::placement::quorum::QuorumState>,
    /// Mirrors `quorum.has_quorum()` for the activation gate and readiness: cleared
    /// before the passivations of a lost quorum start, so nothing is activated meanwhile.
    pub(crate) has_quorum: std::sync::atomic::AtomicBool,
    endpoint: OnceLock<Endpoint>,
    membership: OnceLock<MembershipHandle>,
    next_publish: std::sync::atomic::AtomicU64,
}

pub(crate) fn err(code: ErrorCode, detail: impl Into<String>) -> ReplyResult {
    ReplyResult::Err(RemoteError {
        code,
        detail: detail.into(),
    })
}

fn actor_err(e: &ActorError) -> ReplyResult {
    err(e.code(), e.to_string())
}

fn transport_err(e: &TransportError) -> ReplyResult {
    let code = match e {
        // The reply did not come in time: the request may have run.
        TransportError::AskTimeout { .. } => ErrorCode::Timeout,
        // Dialing or the handshake timed out: nothing was sent.
        _ => ErrorCode::Unreachable,
    };
    err(code, e.to_string())
}

/// Maps a wire error back to the runtime's typed error, so that callers see the same errors
/// whether the owner was local or remote.
pub(crate) fn to_actor_error(e: RemoteError) -> ActorError {
    match e.code {
        ErrorCode::Timeout => ActorError::Timeout,
        ErrorCode::ActorStopped => ActorError::Stopped,
        ErrorCode::ActorFailed => ActorError::Failed { reason: e.detail },
        ErrorCode::UnknownMessage => ActorError::UnknownMessage { name: e.detail },
        ErrorCode::UnknownKind => ActorError::UnknownKind { kind: e.detail },
        ErrorCode::Decode => ActorError::Decode { reason: e.detail },
        _ => ActorError::Rejected {
            reason: format!("{:?}: {}", e.code, e.detail),
        },
    }
}

impl NodeInner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: NodeId,
        config: NodeConfig,
        system: System,
        placement: Placement,
        activations: ActivationLog,
        dedupe: Dedupe,
        metrics: NodeMetrics,
        cancel: CancellationToken,
    ) -> Self {
        let quorum = crate::placement::quorum::QuorumState::new(
            id.name(),
            config.quorum,
            crate::placement::quorum::stable_after(config.settle_time),
            tokio::time::Instant::now(),
        );
        let serving = quorum.has_quorum();
        Self {
            quorum: parking_lot::Mutex::new(quorum),
            has_quorum: std::sync::atomic::AtomicBool::new(serving),
            id,
            config,
            system,
            placement,
            activations,
            dedupe: Arc::new(dedupe),
            metrics,
            pubsub: PubSub::new(),
            cancel,
            tasks: tokio_util::task::TaskTracker::new(),
            leaving: std::sync::atomic::AtomicBool::new(false),
            clients: Default::default(),
            events: Default::default(),
            peer_totals: Default::default(),
            admission: Default::default(),
            joined: std::sync::atomic::AtomicBool::new(false),
            last_fingerprint: std::sync::atomic::AtomicU64::new(0),
            endpoint: OnceLock::new(),
            membership: OnceLock::new(),
            next_publish: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub(crate) fn set_endpoint(&self, e: Endpoint) {
        let _ = self.endpoint.set(e);
    }
    pub(crate) fn set_membership(&self, m: MembershipHandle) {
        let _ = self.membership.set(m);
    }
    pub(crate) fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.get()
    }
    pub(crate) fn membership(&self) -> Option<&MembershipHandle> {
        self.membership.get()
    }

    /// Spawns a request task owned by the node: it stops when the node does.
    pub(crate) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    pub(crate) fn next_publish_id(&self) -> u64 {
        self.next_publish
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The live connection to `node`, dialing it if needed.
    pub(crate) async fn connection(&self, node: &NodeId) -> Result<Connection, ReplyResult> {
        let Some(ep) = self.endpoint() else {
            return Err(err(ErrorCode::Unreachable, "endpoint not started"));
        };
        // Hot path: the open connection to that name. Connections to processes that left
        // or were replaced are closed on every membership change (`watch::close_departed`),
        // so an open one reaches the member's current process.
        // `cached_connection` returns only connections that are still open.
        if let Some(c) = ep.cached_connection(node.name()) {
            return Ok(c);
        }
        // By name: `node` may be a gossip id (renewed incarnation) or a process id; the
        // connection goes to the member's running process, whose QUIC identity is
        // `name#process`.
        let member = self.membership().and_then(|m| {
            m.watch()
                .borrow()
                .members
                .iter()
                .find(|mem| mem.id.name() == node.name())
                .cloned()
        });
        let Some(member) = member else {
            return Err(err(
                ErrorCode::Unreachable,
                format!("{node} is not a live member"),
            ));
        };
        let addr = member.meta.quic_addr;
        let node = &member.transport_id();
        if let Some(c) = ep.cached_connection(node.name())
            && c.peer_node() == Some(node)
            && !c.is_closed()
        {
            return Ok(c);
        }
        // Dial outside the request's span: the connection's tasks (and their spans) live
        // as long as the connection, and a child span keeps its parent open, so a request
        // span that dialed would never end.
        let ep = ep.clone();
        let node = node.clone();
        let dial = tokio::spawn(async move { ep.connection_to(&node, addr).await });
        match dial.await {
            Ok(r) => r.map_err(|e| transport_err(&e)),
            Err(e) => Err(err(
                ErrorCode::Unreachable,
                format!("dial task failed: {e}"),
            )),
        }
    }

    /// Waits, up to `deadline`, until this node may activate `id` (it owns it in a settled
    /// view) or finds the owner elsewhere. `Ok(None)`: deliver locally; `Ok(Some(owner))`:
    /// forward.
    async fn resolve(&self, id: &ActorId, deadline: Instant) -> Result<Option<Owner>, ReplyResult> {
        self.resolve_at(id, 0, 0, deadline).await
    }

    /// For edge protocols (HTTP JSON): `Ok(None)` when this node may deliver, else the owner.
    pub(crate) async fn resolve_for_edge(
        &self,
        id: &ActorId,
        deadline: Instant,
    ) -> Result<Option<NodeId>, ReplyResult> {
        Ok(self.resolve_at(id, 0, 0, deadline).await?.map(|o| o.node))
    }

    /// [`Self::resolve`] for a request already forwarded `hops` times, that another member
    /// routed here under ring digest `routed` (0: none, or not trusted; see
    /// [`decide_routed`]).
    async fn resolve_at(
        &self,
        id: &ActorId,
        hops: u8,
        routed: u64,
        deadline: Instant,
    ) -> Result<Option<Owner>, ReplyResult> {
        loop {
            let live = self.system.virtuals().is_live(id);
            let (decision, digest) = self.decide_here(id, routed, live, hops);
            match decision {
                Decision::Local
                    if !live && !self.joined.load(std::sync::atomic::Ordering::Acquire) =>
                {
                    // Not joined yet: wait for the first real view.
                    let mut rx = self.placement.subscribe();
                    if tokio::time::timeout_at(deadline, rx.changed())
                        .await
                        .is_err()
                    {
                        return Err(err(
                            ErrorCode::Unreachable,
                            "this node has not joined a cluster yet: check its seeds",
                        ));
                    }
                }
                Decision::Local => return Ok(None),
                Decision::Forward(node) => {
                    return Ok(Some(Owner {
                        node,
                        epoch: digest,
                    }));
                }
                Decision::Fail(code, why) => return Err(err(code, why)),
                Decision::WaitUntil(_) => {
                    if self.placement.wait_settled(deadline).await.is_none() {
                        return Err(err(
                            ErrorCode::Timeout,
                            "the ring view did not settle before the deadline",
                        ));
                    }
                }
            }
        }
    }

    /// A known node as the destination of a request that needs no ring (a spawned or a
    /// system actor's), stamped with the current view's digest.
    fn owner_of_node(&self, node: &NodeId) -> Owner {
        Owner {
            node: node.clone(),
            epoch: self.placement.with_view(|v| v.digest),
        }
    }

    /// Routes an ask whose payload is already encoded. Answers with a typed error, never
    /// silence, by the deadline in `ask.meta`.
    // Not `async fn`: an async fn keeps a second copy of each argument (the 216-byte `Ask`)
    // in its future, and an inbound ask's future is allocated and moved whole.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn route_ask(
        &self,
        ask: Ask,
        hops: u8,
        origin: NodeId,
        received: bool,
    ) -> impl Future<Output = ReplyResult> + Send {
        async move {
            // Head sampling: an unsampled request creates no span at all, so tracing at 1%
            // costs about 1% of the span work.
            if !crate::trace::sampled(&ask.meta.trace) {
                return self.route_ask_in(ask, hops, origin, received).await;
            }
            let span = tracing::info_span!(
                target: crate::trace::TARGET,
                "cortex.route",
                otel.kind = "server",
                node = %self.id.name(),
                message = %ask.message,
                hops,
                trace_id = tracing::field::Empty,
            );
            if !span.is_disabled() {
                crate::trace::extract(&span, &ask.meta.trace);
                span.record("trace_id", crate::trace::trace_id(&span));
            }
            self.route_ask_in(ask, hops, origin, received)
                .instrument(span)
                .await
        }
    }

    #[allow(clippy::manual_async_fn)] // see route_ask
    fn route_ask_in(
        &self,
        ask: Ask,
        hops: u8,
        origin: NodeId,
        received: bool,
    ) -> impl Future<Output = ReplyResult> + Send {
        async move {
            let budget = budget_of(&ask.meta);
            let deadline = Instant::now() + budget;
            match &ask.target {
                Target::Virtual(id) => {
                    let id = id.clone();
                    // Only a received ask says which ring it was routed on (`deliver_ask` zeroes
                    // a client's).
                    let routed = if received { ask.epoch } else { 0 };
                    match self.resolve_at(&id, hops, routed, deadline).await {
                        Err(e) => e,
                        Ok(None) => self.local_ask(&id, ask, deadline).await,
                        Ok(Some(owner)) => {
                            if received {
                                self.metrics.message_forwarded(id.kind(), true);
                            } else {
                                self.metrics.message_sent(id.kind(), true);
                            }
                            // Boxed: a forward's state (2.2 KB) would otherwise size every
                            // inbound ask's future, which the owner allocates and moves whole.
                            Box::pin(
                                self.forward_ask(&owner, ask, hops, origin, deadline, received),
                            )
                            .await
                        }
                    }
                }
                Target::Spawned { node, local } => {
                    if node == &self.id {
                        match self.system.lookup_local(*local) {
                            Some(r) => reply_of(
                                r.ask(&ask.message, &ask.payload, Codec::Bincode, budget)
                                    .await,
                            ),
                            None => err(
                                ErrorCode::ActorStopped,
                                format!("no actor {local} on {node}"),
                            ),
                        }
                    } else if node.name() == self.id.name() {
                        err(
                            ErrorCode::StaleIncarnation,
                            format!("{node} has restarted as {}", self.id),
                        )
                    } else {
                        let owner = self.owner_of_node(node);
                        Box::pin(self.forward_ask(&owner, ask, hops, origin, deadline, received))
                            .await
                    }
                }
                Target::System { node, name } => {
                    if node.name() != self.id.name() {
                        let owner = self.owner_of_node(node);
                        return Box::pin(
                            self.forward_ask(&owner, ask, hops, origin, deadline, received),
                        )
                        .await;
                    }
                    match self.system.lookup(name) {
                        Some(r) => reply_of(
                            r.ask(&ask.message, &ask.payload, Codec::Bincode, budget)
                                .await,
                        ),
                        None => err(ErrorCode::UnknownKind, format!("no system actor {name}")),
                    }
                }
            }
        }
    }

    #[allow(clippy::manual_async_fn)] // see route_ask
    fn local_ask(
        &self,
        id: &ActorId,
        ask: Ask,
        deadline: Instant,
    ) -> impl Future<Output = ReplyResult> + Send {
        async move {
            let started = std::time::Instant::now();
            self.metrics.message_received(id.kind(), true);
            let key = ask.idempotency_key;
            if let Some(k) = key {
                let b = self.dedupe.begin(k, Instant::now());
                // Enabled with `--log-level=info,cortex_node::idempotency=debug`: follows one key
                // through retries, forwards and handovers (the chaos harness's counters).
                tracing::debug!(target: "cortex_node::idempotency", key = %key_label(&k), actor = %id, begin = b.name(), "idempotent ask arrives");
                match b {
                    Begin::Run => {}
                    Begin::Done(r) => return r,
                    Begin::Busy => {
                        return err(
                            ErrorCode::Rejected,
                            "too many retries in flight for one idempotency key",
                        );
                    }
                    Begin::Wait(rx) => {
                        return match tokio::time::timeout_at(deadline, rx).await {
                            Ok(Ok(r)) => r,
                            Ok(Err(_)) => {
                                err(ErrorCode::ActorStopped, "the first attempt was abandoned")
                            }
                            Err(_) => err(
                                ErrorCode::Timeout,
                                "deadline passed waiting for the first attempt",
                            ),
                        };
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(k) = key else {
                let r = reply_of(
                    self.system
                        .virtuals()
                        .send_erased(id, &ask.message, &ask.payload, Codec::Bincode, left)
                        .await,
                );
                self.metrics.record_ask(
                    id.kind(),
                    matches!(r, ReplyResult::Ok { .. }),
                    started.elapsed(),
                );
                return r;
            };
            // An idempotent ask runs to completion even if this caller gives up: a retry with
            // the same key then joins the run or gets its answer, instead of running it again
            // while the first attempt may still apply.
            let reg = self.system.virtuals().clone();
            let dedupe = self.dedupe.clone();
            let (id2, message, payload) = (id.clone(), ask.message.clone(), ask.payload.clone());
            let budget = left.max(IDEMPOTENT_RUN_MIN);
            let mut run: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(
                async move {
                    let r = reply_of(
                        reg.send_erased(&id2, &message, &payload, Codec::Bincode, budget)
                            .await,
                    );
                    tracing::debug!(target: "cortex_node::idempotency", key = %key_label(&k), actor = %id2, replayable = is_replayable(&r), "idempotent run ends");
                    if is_replayable(&r) {
                        dedupe.finish(k, Some(&id2), &r, Instant::now());
                    } else {
                        dedupe.abandon(k, &r);
                    }
                },
            );
            // Its first poll, here on the lane's reader, puts the ask in the actor's mailbox
            // (the common case), so tells that follow it on the lane stay behind it; only the
            // wait for the answer moves to a task.
            if run
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
                .is_pending()
            {
                self.spawn(run);
            }
            let r = match self.dedupe.begin(k, Instant::now()) {
                Begin::Wait(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => err(ErrorCode::ActorStopped, "the run was abandoned"),
                    Err(_) => err(
                        ErrorCode::Timeout,
                        "the actor did not answer before the deadline (the request may still apply; retry with the same idempotency key)",
                    ),
                },
                Begin::Done(r) => r,
                Begin::Busy => err(
                    ErrorCode::Rejected,
                    "too many retries in flight for one idempotency key",
                ),
                // The run already ended and was abandoned (refused before the handler ran).
                Begin::Run => {
                    self.dedupe
                        .abandon(k, &err(ErrorCode::Rejected, "abandoned"));
                    err(
                        ErrorCode::Rejected,
                        "the request was refused before it ran; retry",
                    )
                }
            };
            self.metrics.record_ask(
                id.kind(),
                matches!(r, ReplyResult::Ok { .. }),
                started.elapsed(),
            );
            r
        }
    }

    /// Sends `ask` to `owner`: as a plain ask when it starts here (`received` false), else
    /// as a `Forward` one hop further, so a loop between disagreeing views ends at the hop
    /// limit.
    #[allow(clippy::manual_async_fn)] // see route_ask
    fn forward_ask(
        &self,
        owner: &Owner,
        ask: Ask,
        hops: u8,
        origin: NodeId,
        deadline: Instant,
        received: bool,
    ) -> impl Future<Output = ReplyResult> + Send {
        let mut ask = ask;
        async move {
            if received && hops >= MAX_HOPS {
                return err(
                    ErrorCode::HopLimit,
                    format!(
                        "forwarded {hops} times without reaching the owner: the cluster views disagree"
                    ),
                );
            }
            let conn = match self.connection(&owner.node).await {
                Ok(c) => c,
                Err(e) => return e,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            ask.meta.budget_us = left.as_micros() as u64;
            ask.epoch = owner.epoch;
            // Trace the forward inside a traced request, or as the root of a new trace that
            // starts here and is sampled.
            let traced = if tracing::Span::current().is_disabled() {
                !received && crate::trace::sampled(&ask.meta.trace)
            } else {
                true
            };
            if !traced {
                let result = if received {
                    conn.forward_ask(hops + 1, origin, ask, left).await
                } else {
                    conn.ask(ask, left).await
                };
                return match result {
                    Ok(r) => r,
                    Err(e) => transport_err(&e),
                };
            }
            let span = tracing::info_span!(
                target: crate::trace::TARGET,
                "cortex.forward",
                otel.kind = "client",
                node = %self.id.name(),
                to = %owner.node.name(),
                message = %ask.message,
                hops,
            );
            if !span.is_disabled() {
                ask.meta.trace = crate::trace::inject(&span);
            }
            let result = if received {
                conn.forward_ask(hops + 1, origin, ask, left)
                    .instrument(span)
                    .await
            } else {
                conn.ask(ask, left).instrument(span).await
            };
            match result {
                Ok(r) => r,
                Err(e) => transport_err(&e),
            }
        }
    }

    /// Routes a tell. At most once: a failure is counted and logged, not retried.
    pub(crate) async fn route_tell(
        &self,
        tell: Tell,
        hops: u8,
        origin: NodeId,
        received: bool,
    ) -> Result<(), ReplyResult> {
        let budget = budget_of(&tell.meta);
        let deadline = Instant::now() + budget;
        let Target::Virtual(id) = &tell.target else {
            // Tells to spawned and system actors are delivered as asks without a reply.
            let ask = Ask {
                request: RequestId(0),
                target: tell.target.clone(),
                message: tell.message.clone(),
                payload: tell.payload.clone(),
                meta: tell.meta.clone(),
                epoch: tell.epoch,
                idempotency_key: None,
            };
            return match self.route_ask(ask, hops, origin, received).await {
                ReplyResult::Ok { .. } => Ok(()),
                e => Err(e),
            };
        };
        let id = id.clone();
        // The slow path of a received tell: the owner is looked up again in full.
        match self.resolve_at(&id, hops, 0, deadline).await? {
            None => {
                self.metrics.message_received(id.kind(), received);
                let left = deadline.saturating_duration_since(Instant::now());
                self.system
                    .virtuals()
                    .tell_erased(&id, &tell.message, &tell.payload, Codec::Bincode, left)
                    .await
                    .map_err(|e| actor_err(&e))
            }
            Some(owner) => {
                if hops >= MAX_HOPS {
                    return Err(err(ErrorCode::HopLimit, "tell forwarded too many times"));
                }
                if received {
                    self.metrics.message_forwarded(id.kind(), true);
                }
                self.send_tell(
                    &owner,
                    tell,
                    hops,
                    origin,
                    received,
                    TellDeadline::At(deadline),
                )
                .await
            }
        }
    }

    /// Sends `tell` to `owner` (already resolved): as a plain tell when it starts here
    /// (`received` false), else as a `Forward` one hop further.
    async fn send_tell(
        &self,
        owner: &Owner,
        mut tell: Tell,
        hops: u8,
        origin: NodeId,
        received: bool,
        deadline: TellDeadline,
    ) -> Result<(), ReplyResult> {
        let key = cortex_transport::lane_key(&tell.target);
        tell.epoch = owner.epoch;
        tell.meta.budget_us = deadline.left().as_micros() as u64;
        if tell.meta.trace.parent.is_none() {
            // A disabled span has no trace to carry; skipping it saves a context lookup
            // per message.
            let span = tracing::Span::current();
            if !span.is_disabled() {
                tell.meta.trace = crate::trace::inject(&span);
            }
        }
        let mut env = if !received {
            cortex_protocol::Envelope::Tell(tell)
        } else {
            cortex_protocol::Envelope::Forward(cortex_protocol::Forward {
                hops: hops + 1,
                origin,
                body: cortex_protocol::ForwardBody::Tell(tell),
            })
        };
        // The common case: the owner's connection is open and its lane has room. Queue
        // without building `connection`'s (dialing) future or cloning the connection, and
        // without moving the envelope: it is encoded from here.
        let fast = self.endpoint().and_then(|ep| {
            ep.with_cached_connection(owner.node.name(), |c| c.try_queue(&env, key))
        });
        if let Some(Ok(())) = fast {
            return Ok(());
        }
        // A full lane or a closed connection: wait for room, or dial again, below.
        let cached = self
            .endpoint()
            .and_then(|ep| ep.cached_connection(owner.node.name()));
        let (conn, deadline) = match cached {
            Some(c) => (c, deadline),
            None => {
                // Dialing takes time: from here on the budget is counted from a clock.
                let at = TellDeadline::At(deadline.at());
                let conn = self.connection(&owner.node).await?;
                set_tell_budget(&mut env, at.left());
                (conn, at)
            }
        };
        let env = match conn.try_send(env, key) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(env) | TrySendError::Closed(env)) => *env,
            Err(e) => return Err(err(ErrorCode::Unreachable, e.to_string())),
        };
        // Waiting for room is bounded by the tell's own deadline.
        match tokio::time::timeout_at(deadline.at(), conn.send(env, key)).await {
            Ok(sent) => sent.map_err(|e| transport_err(&e)),
            Err(_) => Err(err(
                ErrorCode::Timeout,
                "the owner's lane stayed full until the deadline",
            )),
        }
    }

    /// [`decide_routed`] on the current view, and that view's digest (the `epoch` to send a
    /// forwarded request with).
    fn decide_here(&self, id: &ActorId, routed: u64, live: bool, hops: u8) -> (Decision, u64) {
        self.placement.with_view(|view| {
            let d = decide_routed(
                &self.id,
                view,
                id,
                routed,
                live,
                hops,
                MAX_HOPS,
                Instant::now,
            );
            (d, view.digest)
        })
    }

    /// [`Self::resolve_at`] without waiting: `None` when it would wait (the view is not
    /// settled, or this node has not joined).
    pub(crate) fn resolve_now(
        &self,
        id: &ActorId,
        hops: u8,
        routed: u64,
    ) -> Option<Result<Option<Owner>, ReplyResult>> {
        // Liveness matters only when this node owns `id`: look it up only then.
        let live = || self.system.virtuals().is_live(id);
        let (decision, digest) = self.decide_here(id, routed, false, hops);
        match decision {
            Decision::Local => (self.joined.load(std::sync::atomic::Ordering::Acquire) || live())
                .then_some(Ok(None)),
            Decision::WaitUntil(_) => live().then_some(Ok(None)),
            Decision::Forward(node) => Some(Ok(Some(Owner {
                node,
                epoch: digest,
            }))),
            Decision::Fail(code, why) => Some(Err(err(code, why))),
        }
    }

    pub(crate) async fn ask_typed<A, M>(
        &self,
        id: &ActorId,
        msg: M,
        timeout: Duration,
    ) -> Result<M::Reply, ActorError>
    where
        A: Handler<M>,
        M: RemoteMessage,
    {
        let deadline = Instant::now() + timeout;
        let started = std::time::Instant::now();
        match self.resolve(id, deadline).await {
            Err(ReplyResult::Err(e)) => Err(to_actor_error(e)),
            Err(ReplyResult::Ok { .. }) => Err(ActorError::Stopped),
            Ok(None) => {
                // Local owner: no serialization at all.
                self.metrics.message_received(id.kind(), false);
                let r = self
                    .system
                    .virtuals()
                    .get::<A>(id.clone())
                    .ask(msg, deadline.saturating_duration_since(Instant::now()))
                    .await;
                self.metrics
                    .record_ask(id.kind(), r.is_ok(), started.elapsed());
                r
            }
            Ok(Some(owner)) => {
                self.metrics.message_sent(id.kind(), true);
                let payload = cortex_runtime::encode_with(&msg, Codec::Bincode)?;
                let name = message_name::<M>()?;
                let ask = new_ask(id, name, payload.into(), deadline);
                match self
                    .forward_ask(&owner, ask, 0, self.id.clone(), deadline, false)
                    .await
                {
                    ReplyResult::Ok { payload, .. } => {
                        self.metrics.record_ask(id.kind(), true, started.elapsed());
                        cortex_runtime::decode_with(&payload, Codec::Bincode)
                    }
                    ReplyResult::Err(e) => {
                        self.metrics.record_ask(id.kind(), false, started.elapsed());
                        Err(to_actor_error(e))
                    }
                }
            }
        }
    }

    pub(crate) async fn tell_typed<A, M>(
        &self,
        id: &ActorId,
        msg: M,
        timeout: Duration,
    ) -> Result<(), ActorError>
    where
        A: Handler<M>,
        M: RemoteMessage,
    {
        // Resolved without waiting (the common case), the whole timeout is still left:
        // no clock read on this path.
        let (resolved, deadline) = match self.resolve_now(id, 0, 0) {
            Some(r) => (r, TellDeadline::In(timeout)),
            None => {
                let at = Instant::now() + timeout;
                (self.resolve(id, at).await, TellDeadline::At(at))
            }
        };
        match resolved {
            Err(ReplyResult::Err(e)) => Err(to_actor_error(e)),
            Err(ReplyResult::Ok { .. }) => Err(ActorError::Stopped),
            Ok(None) => {
                self.metrics.message_received(id.kind(), false);
                self.system
                    .virtuals()
                    .get::<A>(id.clone())
                    .tell(msg, deadline.left())
                    .await
            }
            Ok(Some(owner)) => {
                self.metrics.message_sent(id.kind(), true);
                let payload = cortex_runtime::encode_with(&msg, Codec::Bincode)?;
                let name = message_name::<M>()?;
                let tell = Tell {
                    target: Target::Virtual(id.clone()),
                    message: name,
                    payload: payload.into(),
                    meta: RequestMeta {
                        budget_us: timeout.as_micros() as u64,
                        trace: Default::default(),
                    },
                    epoch: 0,
                };
                // Resolved once above: straight to the owner's connection.
                self.send_tell(&owner, tell, 0, self.id.clone(), false, deadline)
                    .await
                    .map_err(|e| match e {
                        ReplyResult::Err(e) => to_actor_error(e),
                        ReplyResult::Ok { .. } => ActorError::Stopped,
                    })
            }
        }
    }

    pub(crate) async fn ask_erased(
        &self,
        id: &ActorId,
        name: &MessageName,
        payload: Vec<u8>,
        codec: Codec,
        timeout: Duration,
    ) -> Result<(MessageName, Vec<u8>), ActorError> {
        let deadline = Instant::now() + timeout;
        match self.resolve(id, deadline).await {
            Err(ReplyResult::Err(e)) => Err(to_actor_error(e)),
            Err(ReplyResult::Ok { .. }) => Err(ActorError::Stopped),
            Ok(None) => {
                self.system
                    .virtuals()
                    .send_erased(id, name, &payload, codec, timeout)
                    .await
            }
            Ok(Some(owner)) => {
                // Remote hops speak bincode; JSON is converted at the edge by the caller.
                if codec != Codec::Bincode {
                    return Err(ActorError::Decode {
                        reason: "only bincode payloads travel between nodes".into(),
                    });
                }
                let ask = new_ask(id, name.clone(), payload.into(), deadline);
                match self
                    .forward_ask(&owner, ask, 0, self.id.clone(), deadline, false)
                    .await
                {
                    ReplyResult::Ok { message, payload } => Ok((message, payload.to_vec())),
                    ReplyResult::Err(e) => Err(to_actor_error(e)),
                }
            }
        }
    }

    /// Delivers to local subscribers and fans out to every other live member.
    pub(crate) async fn publish(&self, topic: &TopicId, message: MessageName, payload: Bytes) {
        let publish = cortex_protocol::Publish {
            topic: topic.clone(),
            message,
            payload,
            meta: RequestMeta::default(),
            publish_id: self.next_publish_id(),
        };
        self.deliver_local(&publish);
        let Some(m) = self.membership() else { return };
        let peers: Vec<NodeId> = m
            .view()
            .live_ids()
            .into_iter()
            .filter(|n| n.name() != self.id.name())
            .collect();
        // One copy per process, whatever incarnations the view lists.
        let mut peers = peers;
        peers.sort_by(|a, b| a.name().cmp(b.name()));
        peers.dedup_by(|a, b| a.name() == b.name());
        for peer in peers {
            match self.connection(&peer).await {
                Ok(conn) => {
                    let key = topic_lane(topic);
                    if let Err(e) = conn
                        .send(cortex_protocol::Envelope::Publish(publish.clone()), key)
                        .await
                    {
                        tracing::debug!(peer = %peer, error = %e, "publish not sent");
                    }
                }
                Err(e) => tracing::debug!(peer = %peer, error = ?e, "publish: peer unreachable"),
            }
        }
    }

    pub(crate) fn deliver_local(&self, p: &cortex_protocol::Publish) {
        self.pubsub.publish(
            &p.topic,
            Published {
                topic: p.topic.clone(),
                message: p.message.clone(),
                payload: p.payload.clone(),
            },
        );
    }
}

fn topic_lane(topic: &TopicId) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(topic)
}

/// The first 8 bytes of an idempotency key, in hex: enough to follow one key in the logs.
fn key_label(k: &[u8; 16]) -> String {
    k[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn budget_of(meta: &RequestMeta) -> Duration {
    if meta.budget_us == 0 {
        DEFAULT_BUDGET
    } else {
        Duration::from_micros(meta.budget_us)
    }
}

fn new_ask(id: &ActorId, name: MessageName, payload: Bytes, deadline: Instant) -> Ask {
    Ask {
        request: RequestId(0),
        target: Target::Virtual(id.clone()),
        message: name,
        payload,
        meta: RequestMeta {
            budget_us: deadline
                .saturating_duration_since(Instant::now())
                .as_micros() as u64,
            trace: Default::default(),
        },
        epoch: 0,
        idempotency_key: None,
    }
}

fn reply_of(r: Result<(MessageName, Vec<u8>), ActorError>) -> ReplyResult {
    match r {
        Ok((message, payload)) => ReplyResult::Ok {
            message,
            payload: payload.into(),
        },
        Err(e) => actor_err(&e),
    }
}

/// Whether a retry with the same key should get this reply again rather than run again:
/// anything the handler produced (an answer or its failure), but not a refusal before it ran.
fn is_replayable(r: &ReplyResult) -> bool {
    match r {
        ReplyResult::Ok { .. } => true,
        ReplyResult::Err(e) => matches!(
            e.code,
            ErrorCode::ActorFailed | ErrorCode::Decode | ErrorCode::UnknownMessage
        ),
    }
}

/// Sets the budget of the tell inside `env` (plain or forwarded).
fn set_tell_budget(env: &mut cortex_protocol::Envelope, left: Duration) {
    use cortex_protocol::{Envelope, ForwardBody};
    let tell = match env {
        Envelope::Tell(t) => t,
        Envelope::Forward(f) => match &mut f.body {
            ForwardBody::Tell(t) => t,
            ForwardBody::Ask(_) => return,
        },
        _ => return,
    };
    tell.meta.budget_us = left.as_micros() as u64;
}

/// `M`'s wire name. Names are constants, so the check is made once per thread and message
/// type in a row, not once per message (about 1% of a sender's CPU per remote tell).
pub(crate) fn message_name<M: RemoteMessage>() -> Result<MessageName, ActorError> {
    use std::any::TypeId;
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(TypeId, MessageName)>> = const { RefCell::new(None) };
    }
    let ty = TypeId::of::<M>();
    let hit = LAST.try_with(|last| {
        let last = last.try_borrow().ok()?;
        last.as_ref()
            .filter(|(t, _)| *t == ty)
            .map(|(_, n)| n.clone())
    });
    if let Ok(Some(name)) = hit {
        return Ok(name);
    }
    let name = MessageName::new(M::NAME).map_err(|e| ActorError::Encode {
        reason: e.to_string(),
    })?;
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = Some((ty, name.clone()));
        }
    });
    Ok(name)
}

/// Where a request for a virtual actor goes from here: the owner, and the digest of the
/// ring view it was chosen on, sent as the request's `epoch` (the owner then need not look
/// itself up again: [`decide_routed`]). Stamping the digest of the view read *for the
/// decision*, not a later one, is what makes that sound.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) node: NodeId,
    pub(crate) epoch: u64,
}

/// How long a tell may take: from a clock reading, or a whole timeout that nothing has
/// waited on yet (so the fast path of a tell reads no clock).
#[derive(Debug, Clone, Copy)]
enum TellDeadline {
    At(Instant),
    In(Duration),
}

impl TellDeadline {
    fn at(self) -> Instant {
        match self {
            TellDeadline::At(at) => at,
            TellDeadline::In(left) => Instant::now() + left,
        }
    }
    fn left(self) -> Duration {
        match self {
            TellDeadline::At(at) => at.saturating_duration_since(Instant::now()),
            TellDeadline::In(left) => left,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Good;
    cortex_runtime::message!(Good => (), "test.Good");

    #[derive(Serialize, Deserialize)]
    struct Bad;
    impl cortex_runtime::Message for Bad {
        type Reply = ();
    }
    impl RemoteMessage for Bad {
        const NAME: &'static str = "not a name";
        const REPLY_NAME: &'static str = "not a name.Reply";
    }

    #[test]
    fn message_names_are_checked_once_and_per_type() {
        assert_eq!(message_name::<Good>().unwrap().as_str(), "test.Good");
        assert_eq!(message_name::<Good>().unwrap().as_str(), "test.Good");
        // Another type after the cached one is checked on its own, every time.
        assert!(matches!(
            message_name::<Bad>(),
            Err(ActorError::Encode { .. })
        ));
        assert!(matches!(
            message_name::<Bad>(),
            Err(ActorError::Encode { .. })
        ));
        assert_eq!(message_name::<Good>().unwrap().as_str(), "test.Good");
    }
}
