//! Tell and ask: typed on top, by name and encoded bytes underneath, with failover.
//!
//! Failover rules. A request that certainly did not run (no connection, circuit open,
//! refused before a handler, routing loop) is sent again, to another node if the first
//! could not be reached, until the deadline or the attempt cap. A request that may have
//! run (a connection died with it in flight, the owner unreachable from the node it went
//! to) is sent again only when it carries an idempotency key and retries are left: the
//! owner then runs it at most once.

use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{
    ActorId, Ask, Envelope, ErrorCode, MessageName, ReplyResult, RequestId, RequestMeta, Target,
    Tell,
};
use cortex_runtime::{Codec, RemoteMessage, decode_with, encode_with};
use tokio::time::Instant;

use crate::client::{Avoid, Client, budget_us};
use crate::config::AskOptions;
use crate::error::ClientError;

/// A remote timeout this long before the caller's own deadline cannot be that deadline.
const EARLY_TIMEOUT: Duration = Duration::from_millis(100);

/// A reply by name and encoded bytes, as [`Client::ask_raw`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawReply {
    /// The reply type's name.
    pub message: MessageName,
    /// The reply, encoded with the wire codec (bincode).
    pub payload: Bytes,
}

pub(crate) fn message_name(name: &str) -> Result<MessageName, ClientError> {
    MessageName::new(name).map_err(|e| ClientError::Encode {
        detail: e.to_string(),
    })
}

fn encode<M: serde::Serialize>(msg: &M) -> Result<Bytes, ClientError> {
    encode_with(msg, Codec::Bincode)
        .map(Bytes::from)
        .map_err(ClientError::from)
}

fn deadline_error(after: Duration, last: Option<ClientError>) -> ClientError {
    ClientError::Timeout {
        after,
        detail: match last {
            Some(e) => format!("the deadline passed; last attempt: {e}"),
            None => "the deadline passed before a node could be reached".into(),
        },
    }
}

impl Client {
    /// Asks actor `id` with the default deadline (and default retries).
    ///
    /// # Errors
    /// See [`Client::ask_with`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the ask; it may still run on the owner.
    pub async fn ask<M: RemoteMessage>(
        &self,
        id: &ActorId,
        msg: M,
    ) -> Result<M::Reply, ClientError> {
        let opts =
            AskOptions::new(self.inner.cfg.default_timeout).retries(self.inner.cfg.default_retries);
        self.ask_with(id, msg, opts).await
    }

    /// Asks actor `id` with explicit options.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when the deadline passes, [`ClientError::Unreachable`]
    /// when no node can be reached (or a connection died with the ask in flight and no
    /// retry was allowed), the owner's typed errors ([`ClientError::UnknownKind`],
    /// [`ClientError::ActorFailed`], ...), [`ClientError::Decode`] if the reply does not
    /// decode as `M::Reply`.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the ask; it may still run on the owner.
    pub async fn ask_with<M: RemoteMessage>(
        &self,
        id: &ActorId,
        msg: M,
        opts: AskOptions,
    ) -> Result<M::Reply, ClientError> {
        let payload = encode(&msg)?;
        let reply = self
            .ask_raw(id, &message_name(M::NAME)?, payload, opts)
            .await?;
        decode_with(&reply.payload, Codec::Bincode).map_err(|e| ClientError::Decode {
            detail: format!("reply {} to {}: {e}", reply.message, M::NAME),
        })
    }

    /// Asks by message name with a payload already encoded with the wire codec.
    ///
    /// # Errors
    /// As [`Client::ask_with`], without the reply decoding.
    ///
    /// # Cancel safety
    /// As [`Client::ask_with`].
    pub async fn ask_raw(
        &self,
        id: &ActorId,
        message: &MessageName,
        payload: Bytes,
        opts: AskOptions,
    ) -> Result<RawReply, ClientError> {
        let inner = &self.inner;
        let deadline = Instant::now() + opts.timeout;
        let key = opts
            .idempotency_key
            .or_else(|| (opts.retries > 0).then(rand::random::<[u8; 16]>));
        let mut retries_left = opts.retries;
        let mut avoid = Avoid::new();
        let mut last = None;
        for attempt in 0..inner.cfg.max_attempts {
            if Instant::now() >= deadline {
                break;
            }
            let Some(route) = inner
                .route_or_back_off(id, &mut avoid, &mut last, attempt, deadline)
                .await?
            else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let ask = Ask {
                request: RequestId(0),
                target: Target::Virtual(id.clone()),
                message: message.clone(),
                payload: payload.clone(),
                meta: RequestMeta {
                    budget_us: budget_us(left),
                    trace: Default::default(),
                },
                epoch: route.digest,
                idempotency_key: key,
            };
            let mut route = route;
            let err = match route.conn.ask(ask, left).await {
                Ok(ReplyResult::Ok { message, payload }) => {
                    route.success();
                    return Ok(RawReply { message, payload });
                }
                Ok(ReplyResult::Err(e)) => {
                    route.success();
                    let early = deadline.saturating_duration_since(Instant::now());
                    if e.code == ErrorCode::Timeout && early > EARLY_TIMEOUT {
                        // The node gave up long before the budget it was sent: a timeout
                        // on its way to the owner (a dial to a dead node), not the
                        // caller's deadline. Like a lost connection, it may have run.
                        ClientError::Unreachable {
                            detail: format!("{}: {}", route.node, e.detail),
                            maybe_ran: true,
                        }
                    } else {
                        ClientError::from_remote(e, opts.timeout)
                    }
                }
                Err(e) => {
                    route.failure();
                    avoid.push(route.node.name().to_owned());
                    ClientError::from_in_flight(&e, opts.timeout)
                }
            };
            let again = if err.is_safe_to_retry() {
                true
            } else if matches!(err, ClientError::Unreachable { .. })
                && key.is_some()
                && retries_left > 0
            {
                retries_left -= 1;
                true
            } else {
                false
            };
            if !again {
                return Err(err);
            }
            tracing::debug!(%id, node = %route.node, attempt, error = %err, "ask failed over");
            last = Some(err);
            inner.backoff(attempt, deadline).await;
        }
        Err(match last {
            Some(e) if Instant::now() < deadline => e,
            last => deadline_error(opts.timeout, last),
        })
    }

    /// Tells actor `id` (at most once), waiting up to the default deadline for a route and
    /// room in the connection's queue.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] or [`ClientError::Unreachable`] if it could not be handed
    /// to a node; [`ClientError::Encode`] for an unencodable message. `Ok` means handed to
    /// a node, not handled.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled tell was not sent.
    pub async fn tell<M: RemoteMessage>(&self, id: &ActorId, msg: M) -> Result<(), ClientError> {
        let payload = encode(&msg)?;
        self.tell_raw(
            id,
            &message_name(M::NAME)?,
            payload,
            self.inner.cfg.default_timeout,
        )
        .await
    }

    /// Tells by message name with an encoded payload.
    ///
    /// # Errors
    /// As [`Client::tell`].
    ///
    /// # Cancel safety
    /// As [`Client::tell`].
    pub async fn tell_raw(
        &self,
        id: &ActorId,
        message: &MessageName,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        let target = Target::Virtual(id.clone());
        let lane = cortex_transport::lane_key(&target);
        let mut avoid = Avoid::new();
        let mut last = None;
        for attempt in 0..inner.cfg.max_attempts {
            if Instant::now() >= deadline {
                break;
            }
            let Some(route) = inner
                .route_or_back_off(id, &mut avoid, &mut last, attempt, deadline)
                .await?
            else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let env = Envelope::Tell(Tell {
                target: target.clone(),
                message: message.clone(),
                payload: payload.clone(),
                meta: RequestMeta {
                    budget_us: budget_us(left),
                    trace: Default::default(),
                },
                epoch: route.digest,
            });
            let mut route = route;
            match tokio::time::timeout_at(deadline, route.conn.send(env, lane)).await {
                Ok(Ok(())) => {
                    route.success();
                    return Ok(());
                }
                Ok(Err(e)) => {
                    // Not queued: the connection is gone, so another node may take it.
                    avoid.push(route.node.name().to_owned());
                    route.failure();
                    last = Some(ClientError::from_dial(&e));
                }
                Err(_) => break,
            }
        }
        Err(match last {
            Some(e) if Instant::now() < deadline => e,
            last => deadline_error(timeout, last),
        })
    }
}
