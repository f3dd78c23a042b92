//! `Worker.MaxQueue`: whether intake may queue more work for the workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;

use crate::store::ReportStore;

/// How often [`QueueGate`] counts the waiting reports in the store.
const QUEUE_RECOUNT: std::time::Duration = std::time::Duration::from_millis(500);

/// `Worker.MaxQueue`: whether intake may queue more work. Counting the waiting reports is
/// a scan, far too slow for the request path under load, so a background task recounts
/// every [`QUEUE_RECOUNT`]; in between, reports this process queues are added.
pub struct QueueGate {
    max: u64,
    depth: AtomicU64,
}

impl QueueGate {
    /// A gate at `max` waiting reports (0: none); with a limit, the recount runs until
    /// the gate is dropped.
    pub fn start(max: u64, store: Arc<dyn ReportStore>) -> Arc<Self> {
        let gate = Arc::new(Self {
            max,
            depth: AtomicU64::new(0),
        });
        if max > 0 {
            let weak = Arc::downgrade(&gate);
            tokio::spawn(async move {
                loop {
                    let depth = store.queue_depth(Utc::now()).await;
                    let Some(gate) = weak.upgrade() else { return };
                    match depth {
                        Ok(n) => gate.depth.store(n, Ordering::Relaxed),
                        Err(e) => tracing::warn!(error = %e, "counting the queue failed"),
                    }
                    drop(gate);
                    tokio::time::sleep(QUEUE_RECOUNT).await;
                }
            });
        }
        gate
    }

    /// `Err(depth)` when at least `max` reports are waiting.
    pub fn check(&self) -> Result<(), u64> {
        let depth = self.depth.load(Ordering::Relaxed);
        if self.max > 0 && depth >= self.max {
            Err(depth)
        } else {
            Ok(())
        }
    }

    /// Counts reports this process just queued, until the next recount.
    pub fn queued(&self, n: u64) {
        self.depth.fetch_add(n, Ordering::Relaxed);
    }
}
