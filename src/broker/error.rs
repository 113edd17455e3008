//! `BrokerError`, the one error type of the broker core, and the `oneshot`
//! replies its actors answer on. The HTTP layer maps it to statuses
//! (`crate::http`); backends map their own failures into it.

use tokio::sync::oneshot;

/// Why the broker could not do what was asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    #[error("the broker already holds its maximum of {0} channels")]
    TooManyChannels(usize),
    #[error("{0}")]
    TooManySubscribers(String),
    #[error("no channel named {0:?}")]
    UnknownChannel(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("the broker did not answer")]
    Unavailable,
    /// The log a channel depends on (the durable store, or Redis in
    /// cluster mode) failed or is out of reach.
    #[error("the cluster store is unavailable: {0}")]
    StoreUnavailable(String),
    /// A publish brought an idempotency key remembered with another body.
    #[error(
        "the idempotency key was used for another request (another channel, event type or \
         data) within the window"
    )]
    IdempotencyKeyReused,
    /// A publish brought the idempotency key of a publish not settled yet
    /// (its event is on its way to disk).
    #[error("a publish with this idempotency key is still in progress: retry")]
    IdempotencyKeyInFlight,
}

/// The answer to a caller awaiting a broker message.
pub type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

/// Awaits a reply; a dropped sender means the actor is gone.
pub async fn await_reply<T>(
    rx: oneshot::Receiver<Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    rx.await.unwrap_or(Err(BrokerError::Unavailable))
}
