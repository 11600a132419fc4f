//! Typed failures of sends, asks and activations, each mapped to a wire [`ErrorCode`].

use std::fmt;

use cortex_protocol::ErrorCode;

/// Why a tell, ask or activation failed.
///
/// Every variant maps to a wire [`ErrorCode`] through [`ActorError::code`], so a failure
/// looks the same whether it happened in this process or on another node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// The deadline passed before the reply (or mailbox room) arrived. The message may or
    /// may not have been handled.
    #[error(
        "the actor did not answer before the deadline: retry with a longer timeout or check the actor for slow handlers"
    )]
    Timeout,
    /// The mailbox was full; nothing was enqueued.
    #[error("the actor's mailbox is full: slow down, retry later, or raise its mailbox capacity")]
    MailboxFull,
    /// The actor has stopped (or stopped before answering); nothing more will be handled.
    #[error(
        "the actor has stopped: get a fresh reference (virtual actors reactivate on the next message)"
    )]
    Stopped,
    /// The handler panicked (or its actor failed) while this request was in flight.
    #[error("the actor failed while handling the request: {reason}")]
    Failed {
        /// What the panic or failure said.
        reason: String,
    },
    /// No handler is registered under this message name for the actor's kind.
    #[error("message {name:?} is not registered for this actor: register it with .handles::<M>()")]
    UnknownMessage {
        /// The name that was asked for.
        name: String,
    },
    /// No virtual actor kind with this name is registered on this node.
    #[error(
        "actor kind {kind:?} is not registered on this node: register it with VirtualRegistry::register"
    )]
    UnknownKind {
        /// The kind that was asked for.
        kind: String,
    },
    /// The payload did not decode as the named message type.
    #[error("the payload does not decode as the named message: {reason}")]
    Decode {
        /// What the codec said.
        reason: String,
    },
    /// The reply could not be encoded.
    #[error("the reply could not be encoded: {reason}")]
    Encode {
        /// What the codec said.
        reason: String,
    },
    /// The request was refused before it reached a handler: the activation gate said no,
    /// or the runtime is shutting down.
    #[error("the request was refused: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
}

impl ActorError {
    /// The wire code for this failure.
    ///
    /// ```
    /// use cortex_runtime::ActorError;
    /// use cortex_protocol::ErrorCode;
    /// assert_eq!(ActorError::Timeout.code(), ErrorCode::Timeout);
    /// assert_eq!(ActorError::MailboxFull.code(), ErrorCode::Rejected);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            ActorError::Timeout => ErrorCode::Timeout,
            ActorError::MailboxFull | ActorError::Rejected { .. } => ErrorCode::Rejected,
            ActorError::Stopped => ErrorCode::ActorStopped,
            ActorError::Failed { .. } | ActorError::Encode { .. } => ErrorCode::ActorFailed,
            ActorError::UnknownMessage { .. } => ErrorCode::UnknownMessage,
            ActorError::UnknownKind { .. } => ErrorCode::UnknownKind,
            ActorError::Decode { .. } => ErrorCode::Decode,
        }
    }

    /// A [`ActorError::Rejected`] with the given reason (for activation gates).
    pub fn rejected(reason: impl Into<String>) -> Self {
        ActorError::Rejected {
            reason: reason.into(),
        }
    }
}

/// A failed tell, giving the message back (like tokio's `TrySendError`).
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum SendError<M> {
    /// The mailbox was full ([`ActorRef::try_tell`](crate::ActorRef::try_tell) only).
    Full(M),
    /// The actor has stopped.
    Stopped(M),
    /// No room appeared before the deadline ([`ActorRef::tell_timeout`](crate::ActorRef::tell_timeout)).
    Timeout(M),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Stopped(m) | SendError::Timeout(m) => m,
        }
    }
    /// The matching [`ActorError`].
    pub fn error(&self) -> ActorError {
        match self {
            SendError::Full(_) => ActorError::MailboxFull,
            SendError::Stopped(_) => ActorError::Stopped,
            SendError::Timeout(_) => ActorError::Timeout,
        }
    }
    /// The wire code for this failure.
    pub fn code(&self) -> ErrorCode {
        self.error().code()
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Stopped(_) => f.write_str("Stopped(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error(), f)
    }
}

impl<M> std::error::Error for SendError<M> {}

impl<M> From<SendError<M>> for ActorError {
    fn from(e: SendError<M>) -> Self {
        e.error()
    }
}
