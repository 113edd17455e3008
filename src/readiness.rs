//! Readiness: the checks behind `GET /readyz`, run concurrently, each within
//! a timeout.
//!
//! A check is anything that can say "I can serve" quickly: the broker's own
//! (its registry answers and it is not draining), the durable store's (no
//! commit failed), the cluster's (Redis answers). `startup` builds the list;
//! nothing here or in the handler changes when a backend adds one. A leaf:
//! the backends implement [`ReadinessCheck`], this module knows none of them.

use std::{sync::Arc, time::Duration};

use futures_util::future::{BoxFuture, join_all};
use serde::Serialize;

/// One thing the broker needs to serve requests.
pub trait ReadinessCheck: Send + Sync {
    /// Short, stable name shown in the `/readyz` body.
    fn name(&self) -> &'static str;
    /// `Ok` when ready; `Err` says why not. Must not block.
    fn check(&self) -> BoxFuture<'static, Result<(), String>>;
}

/// Every readiness check and how long each may take.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    timeout: Duration,
}

/// The outcome of one check, as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Readiness {
    pub fn new(timeout: Duration) -> Self {
        Self {
            checks: Vec::new(),
            timeout,
        }
    }

    /// Adds a check; all of them must pass for the broker to be ready.
    pub fn with(mut self, check: impl ReadinessCheck + 'static) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Runs every check at once; a check that does not answer within the
    /// timeout fails.
    pub async fn evaluate(&self) -> Vec<CheckResult> {
        let timeout = self.timeout;
        join_all(self.checks.iter().map(|check| {
            let name = check.name();
            let run = check.check();
            async move {
                let outcome = match tokio::time::timeout(timeout, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                CheckResult {
                    name,
                    ok: outcome.is_ok(),
                    error: outcome.err(),
                }
            }
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NeverAnswers;

    impl ReadinessCheck for NeverAnswers {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn check(&self) -> BoxFuture<'static, Result<(), String>> {
            Box::pin(futures_util::future::pending())
        }
    }

    /// A check that hangs fails after the timeout instead of hanging `/readyz`.
    #[actix::test]
    async fn hanging_check_fails_after_timeout() {
        let readiness = Readiness::new(Duration::from_millis(50)).with(NeverAnswers);
        let results = readiness.evaluate().await;
        assert_eq!(results.len(), 1);
        assert!(!results[0].ok);
        assert_eq!(results[0].name, "stuck");
    }
}
