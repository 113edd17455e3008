//! The `[publish]` section: idempotent publishing (`Idempotency-Key`, see
//! `crate::broker::idempotency` and docs/api.md). Every key is documented
//! in `config/default.toml`.

use std::time::Duration;

use serde::Deserialize;

/// `[publish]`: idempotent publishing (`Idempotency-Key`, see
/// `crate::broker::idempotency`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    /// How long a publish's idempotency key is remembered: a retry within
    /// it is answered the first publish's id and stores nothing.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Most idempotency keys remembered at once in memory, for the whole
    /// broker (memory and durable history; in cluster mode Redis keeps
    /// them, each for the window): beyond it the oldest is forgotten.
    pub idempotency_max_keys: usize,
}

impl PublishSettings {
    /// The rules of the `[publish]` section.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.idempotency_window.is_zero() {
            return Err("publish.idempotency_window must be greater than 0".into());
        }
        if self.idempotency_max_keys == 0 {
            return Err("publish.idempotency_max_keys must be at least 1".into());
        }
        Ok(())
    }
}
