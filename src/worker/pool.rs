//! One claim loop for every pool (diagnoses, evidence, the outbox's deliveries), and the
//! supervision that keeps a pool at its size.
//!
//! Each task claims an item from its queue in the store, works on it, and looks again at
//! once; with nothing to claim it waits to be woken, for the poll interval, or for the stop.
//! A panic while working on an item is caught: counted in
//! `deploy_diagnosis_task_panics_total{pool}`, logged, and the item handed to the queue's
//! [`Queue::panicked`] so that its lease does not hold it until it runs out; the task goes
//! on. A task that panics anywhere else is started again by the pool's supervisor and
//! counted the same way: a pool never shrinks silently.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt as _;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::store::StoreError;

/// One kind of work a pool's tasks claim from the store and do.
#[async_trait]
pub trait Queue: Clone + Send + Sync + 'static {
    /// What a claim hands over.
    type Item: Send + Sync;
    /// The pool's name in logs and metrics.
    const POOL: &'static str;
    /// Claims the next item, if any is ready.
    async fn claim(&self) -> Result<Option<Self::Item>, StoreError>;
    /// The span the item's work runs in.
    fn span(&self, item: &Self::Item) -> tracing::Span;
    /// Works on a claimed item (and stops itself when its pool is told to).
    async fn work(&self, item: &Self::Item);
    /// The work on `item` panicked with `why`: give it back or end it, so that nobody
    /// waits for its lease.
    async fn panicked(&self, item: &Self::Item, why: &str);
    /// Wakes an idle task when work is queued in this process.
    fn woken(&self) -> &tokio::sync::Notify;
    /// How often an idle task looks for work nobody announced.
    fn poll(&self) -> Duration;
}

/// The text of a panic's payload.
pub(super) fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Starts `tasks` tasks claiming from `queue` until `stop`; the handle ends when they all
/// have. A task that panics outside an item's work is started again (unless stopping).
pub fn start<Q: Queue>(
    queue: Q,
    tasks: usize,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let mut set = JoinSet::new();
            let mut numbers = HashMap::new();
            let spawn = |set: &mut JoinSet<()>, numbers: &mut HashMap<_, _>, n: usize| {
                let task = claim_loop(queue.clone(), metrics.clone(), stop.clone())
                    .instrument(tracing::info_span!("task", pool = Q::POOL, n));
                numbers.insert(set.spawn(task).id(), n);
            };
            for n in 0..tasks {
                spawn(&mut set, &mut numbers, n);
            }
            while let Some(ended) = set.join_next_with_id().await {
                match ended {
                    Ok((id, ())) => {
                        numbers.remove(&id);
                    }
                    Err(e) if e.is_panic() => {
                        let n = numbers.remove(&e.id()).unwrap_or_default();
                        metrics.task_panic(Q::POOL);
                        tracing::error!(
                            pool = Q::POOL,
                            n,
                            panic = %panic_text(e.into_panic().as_ref()),
                            "a task of the pool panicked; starting it again"
                        );
                        if !stop.is_cancelled() {
                            spawn(&mut set, &mut numbers, n);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        .instrument(span),
    )
}

async fn claim_loop<Q: Queue>(queue: Q, metrics: Arc<Metrics>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        match queue.claim().await {
            Ok(Some(item)) => {
                let span = queue.span(&item);
                let worked = AssertUnwindSafe(queue.work(&item))
                    .catch_unwind()
                    .instrument(span.clone())
                    .await;
                if let Err(payload) = worked {
                    let why = panic_text(payload.as_ref());
                    metrics.task_panic(Q::POOL);
                    tracing::error!(parent: &span, pool = Q::POOL, panic = %why, "work on an item panicked; the item is handed back and the task goes on");
                    queue.panicked(&item, &why).instrument(span).await;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, pool = Q::POOL, "claiming failed; retrying"),
        }
        tokio::select! {
            _ = queue.woken().notified() => {}
            _ = tokio::time::sleep(queue.poll()) => {}
            _ = stop.cancelled() => {}
        }
    }
}
