//! The outbox's deliveries: tasks that claim a report whose notifications are due (under a
//! delivery lease of their own, in the store), send each due one to its sink at once (a
//! slow or dead sink holds only its own message, for at most `Notify.TimeoutSeconds`),
//! and write back how each went. A message is retried with backoff until
//! `Notify.MaxAttempts`; a crash or `kill -9` leaves it in the store, and the lease runs
//! out, so it is sent after the restart: at least once, under an id that does not change.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::future::join_all;
use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;

use super::pool::{self, Queue};
use crate::metrics::Metrics;
use crate::model::notify::{DeliveryState, Notification};
use crate::model::report::Report;
use crate::notify::{next_attempt, Retry, SendFailure, Sinks};
use crate::outside;
use crate::store::{DeploymentStore, Lease, LeaseQueue, Outbox as OutboxQueue, StoreError, Wake};

/// Deliveries at once (each sends every due message of one report, in parallel).
const DELIVERIES: usize = 4;

/// What the deliveries need.
#[derive(Clone)]
pub struct OutboxContext {
    /// The outbox.
    pub queue: Arc<dyn LeaseQueue<OutboxQueue>>,
    /// The sinks.
    pub sinks: Arc<Sinks>,
    /// The registry, for a rollback request's policy (read at each attempt).
    pub deployments: Arc<dyn DeploymentStore>,
    /// Woken when a report finishes.
    pub wake: Arc<Wake>,
    /// How often an idle delivery looks for due messages (`Worker.PollSeconds`).
    pub poll: Duration,
    /// Counts deliveries.
    pub metrics: Arc<Metrics>,
    /// How long one attempt may take (`Notify.TimeoutSeconds`).
    pub timeout: Duration,
}

/// The running deliveries.
pub struct Outbox {
    tasks: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl Outbox {
    /// Starts the deliveries.
    pub fn start(ctx: OutboxContext) -> Self {
        let stop = CancellationToken::new();
        let metrics = ctx.metrics.clone();
        let queue = Deliveries {
            ctx,
            stop: stop.clone(),
        };
        let tasks = pool::start(queue, DELIVERIES, metrics, stop.clone());
        Self { tasks, stop }
    }

    /// Stops: a delivery under way is dropped and its lease given back, and its messages
    /// are sent after the restart (the same ids: receivers deduplicate).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.tasks.await;
    }
}

/// The outbox as a queue of reports with due notifications.
#[derive(Clone)]
struct Deliveries {
    ctx: OutboxContext,
    stop: CancellationToken,
}

/// A claimed delivery: the report and the lease it is held under.
struct Delivery {
    lease: Lease,
    report: Report,
}

#[async_trait]
impl Queue for Deliveries {
    type Item = Delivery;
    const POOL: &'static str = "outbox";

    async fn claim(&self) -> Result<Option<Delivery>, StoreError> {
        let lease = self.ctx.timeout + Duration::from_secs(5);
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let now = Utc::now();
        let claimed = self
            .ctx
            .queue
            .claim(&owner, now, outside::later(now, lease))
            .await?;
        Ok(claimed.map(|report| Delivery {
            lease: Lease::of(&report, &owner),
            report,
        }))
    }

    fn span(&self, d: &Delivery) -> tracing::Span {
        tracing::info_span!("delivering", deployment_id = %d.report.deployment_id)
    }

    async fn work(&self, d: &Delivery) {
        tokio::select! {
            _ = deliver_due(&self.ctx, d) => {}
            _ = self.stop.cancelled() => {
                if let Err(e) = self.ctx.queue.release(&d.lease).await {
                    tracing::warn!(error = %e, "giving the delivery back failed; it is taken up after its lease");
                }
            }
        }
    }

    /// A delivery that panicked counts as a failed attempt of every due message (so a
    /// message that makes it panic each time is given up after `Notify.MaxAttempts`), and
    /// the delivery lease ends.
    async fn panicked(&self, d: &Delivery, why: &str) {
        let now = Utc::now();
        let failure = SendFailure {
            retry: Retry::Backoff,
            why: format!("the delivery stopped on a bug in the service: {why}"),
        };
        let updates: Vec<Notification> = due(&d.report, now)
            .map(|n| attempted(&self.ctx, n, Err(failure.clone())))
            .collect();
        write_back(&self.ctx, &d.lease, &updates).await;
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.ctx.wake.outbox
    }

    fn poll(&self) -> Duration {
        self.ctx.poll
    }
}

/// A number in `[0, 1)` for the backoff's jitter.
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// The report's pending notifications that are due at `now`.
fn due(report: &Report, now: chrono::DateTime<Utc>) -> impl Iterator<Item = &Notification> {
    report
        .notifications
        .iter()
        .filter(move |n| n.pending() && n.next_at <= now)
}

/// Sends every due message of one report at once and writes back how each went.
async fn deliver_due(ctx: &OutboxContext, Delivery { lease, report }: &Delivery) {
    let now = Utc::now();
    let due: Vec<&Notification> = due(report, now).collect();
    let attempts = due.iter().map(|n| async move {
        if n.is_rollback() {
            let deployment = ctx
                .deployments
                .get_deployment(&report.deployment_id)
                .await
                .map_err(|e| SendFailure {
                    retry: Retry::Backoff,
                    why: format!("the registry could not be read: {e}"),
                })?;
            return AssertUnwindSafe(ctx.sinks.rollback(n, report, deployment.as_ref(), now))
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| {
                    let why = pool::panic_text(payload.as_ref());
                    ctx.metrics.task_panic(Deliveries::POOL);
                    Err(SendFailure {
                        retry: Retry::Backoff,
                        why: format!("the delivery stopped on a bug in the service: {why}"),
                    })
                });
        }
        if n.version != report.version {
            // A re-diagnosis began before it went out: the new version's ending is sent
            // instead of a report that is no longer the current one.
            return Err(SendFailure {
                retry: Retry::Never,
                why: format!(
                    "superseded: version {} was re-diagnosed before this was delivered",
                    n.version
                ),
            });
        }
        // One sink's answer that trips a bug costs that message an attempt, not the
        // other sinks their delivery.
        AssertUnwindSafe(ctx.sinks.deliver(n, report, now))
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| {
                let why = pool::panic_text(payload.as_ref());
                ctx.metrics.task_panic(Deliveries::POOL);
                tracing::error!(sink = %n.sink, panic = %why, "a delivery attempt panicked");
                Err(SendFailure {
                    retry: Retry::Backoff,
                    why: format!("the delivery stopped on a bug in the service: {why}"),
                })
            })
    });
    let results = join_all(attempts).await;
    let updates: Vec<Notification> = due
        .into_iter()
        .zip(results)
        .map(|(n, result)| attempted(ctx, n, result))
        .collect();
    write_back(ctx, lease, &updates).await;
}

/// The notification after an attempt that ended with `result`.
fn attempted(
    ctx: &OutboxContext,
    n: &Notification,
    result: Result<(), SendFailure>,
) -> Notification {
    let mut n = n.clone();
    if let Err(SendFailure {
        retry: Retry::Deferred(wait),
        why,
    }) = &result
    {
        // Held back by the sink's rate limit: not an attempt.
        n.next_at = outside::later(Utc::now(), *wait);
        n.last_error = Some(why.clone());
        ctx.metrics.notification(&n.sink, "deferred");
        return n;
    }
    n.attempts += 1;
    let outcome = match result {
        Ok(()) => {
            n.state = DeliveryState::Delivered;
            n.delivered_at = Some(Utc::now());
            n.last_error = None;
            tracing::info!(sink = %n.sink, id = %n.id, attempts = n.attempts, "notification delivered");
            "delivered"
        }
        Err(failure) => {
            n.last_error = Some(failure.why.clone());
            let outcome = match failure.retry {
                Retry::Never => {
                    n.state = DeliveryState::Failed;
                    tracing::error!(
                        sink = %n.sink,
                        id = %n.id,
                        reason = %failure.why,
                        "the sink refused the notification for good: check its configuration"
                    );
                    "failed"
                }
                Retry::Disable => {
                    n.state = DeliveryState::Disabled;
                    "disabled"
                }
                _ if n.attempts >= ctx.sinks.max_attempts() => {
                    n.state = DeliveryState::Failed;
                    "failed"
                }
                retry => {
                    n.next_at = next_attempt(Utc::now(), n.attempts, retry, jitter());
                    "retry"
                }
            };
            tracing::warn!(
                sink = %n.sink,
                id = %n.id,
                attempts = n.attempts,
                outcome,
                reason = %failure.why,
                "notification not delivered"
            );
            outcome
        }
    };
    ctx.metrics.notification(&n.sink, outcome);
    n
}

/// Writes a delivery's outcome back and ends its lease.
async fn write_back(ctx: &OutboxContext, lease: &Lease, updates: &[Notification]) {
    if let Err(e) = ctx.queue.complete(lease, updates).await {
        tracing::warn!(error = %e, "writing back the notifications failed; they are sent again after the lease");
    }
}
