//! Holding a claimed report: the lease renewed while its diagnosis runs, and the outcome
//! written while the lease is still held.

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::WorkerContext;
use crate::model::report::Finish;
use crate::store::{Lease, StoreError};

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes the outcome, retrying a failing store with backoff (the heartbeat keeps the
/// lease meanwhile) until the lease is gone: a completed diagnosis is not dropped for one
/// failed write.
pub(super) async fn finish_with_retries(
    ctx: &WorkerContext,
    lease: &Lease,
    finish: &Finish,
    lease_gone: &CancellationToken,
) -> Result<bool, StoreError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match ctx.diagnoses.complete(lease, finish).await {
            Err(e) if !lease_gone.is_cancelled() => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "writing the outcome failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = lease_gone.cancelled() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Keeps the claim alive while the diagnosis runs and its outcome is written. If the claim
/// is lost (another worker owns the report now), or cannot be renewed before it runs out
/// (the store is unreachable, so another worker may take it), the diagnosis is stopped.
pub(super) async fn renew_lease(ctx: WorkerContext, held: Lease, cancel: CancellationToken) {
    let lease = ctx.config.lease;
    let mut held_until = Instant::now() + lease;
    loop {
        tokio::time::sleep(lease / 3).await;
        match ctx.diagnoses.renew(&held, Utc::now() + lease).await {
            Ok(true) => held_until = Instant::now() + lease,
            Ok(false) => {
                tracing::warn!("lost the claim on the report; stopping this diagnosis");
                cancel.cancel();
                return;
            }
            Err(e) if Instant::now() + lease / 3 < held_until => {
                tracing::warn!(error = %e, "renewing the lease failed; will retry before it runs out")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the lease could not be renewed before it ran out; stopping this diagnosis");
                cancel.cancel();
                return;
            }
        }
    }
}
