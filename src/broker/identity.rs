//! Who a subscriber is, when its credential says: the user id of its
//! token's `sub` or of the application's hook answer, and optionally a
//! small JSON object about it (`info`) that the application chose to show.
//! Set on the [`Subscriber`](super::subscriber::Subscriber) when its stream
//! opens; revocation (`POST /users/{user}/disconnect`) ends the streams of
//! one user, and presence lists the users of a channel.

use std::sync::Arc;

use serde_json::value::RawValue;

/// A subscriber's identity (see the module docs). Shared: every channel of
/// a multi-channel stream holds the same one.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id, as the token or the application gave it.
    pub user: Arc<str>,
    /// A JSON object about the user, as given (bounded where it is read).
    pub info: Option<Arc<RawValue>>,
}
