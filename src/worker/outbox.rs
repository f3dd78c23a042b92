//! The outbox's deliveries: tasks that claim a report whose notifications are due (under a
//! delivery lease of their own, in the store), send each due one to its sink at once (a
//! slow or dead sink holds only its own message, for at most `Notify.TimeoutSeconds`),
//! and write back how each went. A message is retried with backoff until
//! `Notify.MaxAttempts`; a crash or `kill -9` leaves it in the store, and the lease runs
//! out, so it is sent after the restart: at least once, under an id that does not change.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::model::notify::{DeliveryState, Notification};
use crate::model::report::Report;
use crate::notify::{next_attempt, Retry, Sinks};
use crate::store::{ReportStore, Wake};

/// Deliveries at once (each sends every due message of one report, in parallel).
const DELIVERIES: usize = 4;

/// What the deliveries need.
#[derive(Clone)]
pub struct OutboxContext {
    /// The store (and its outbox).
    pub store: Arc<dyn ReportStore>,
    /// The sinks.
    pub sinks: Arc<Sinks>,
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
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl Outbox {
    /// Starts the deliveries.
    pub fn start(ctx: OutboxContext) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for n in 0..DELIVERIES {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            tasks.spawn(deliver_loop(ctx, stop).instrument(tracing::info_span!("outbox", n)));
        }
        Self { tasks, stop }
    }

    /// Stops: a delivery under way is dropped, its lease runs out, and its messages are
    /// sent after the restart (the same ids: receivers deduplicate).
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn deliver_loop(ctx: OutboxContext, stop: CancellationToken) {
    let lease =
        chrono::Duration::from_std(ctx.timeout + Duration::from_secs(5)).unwrap_or_default();
    while !stop.is_cancelled() {
        let now = Utc::now();
        match ctx.store.claim_notifications(now, now + lease).await {
            Ok(Some(report)) => {
                let span = tracing::info_span!("delivering", deployment_id = %report.deployment_id);
                tokio::select! {
                    _ = deliver_due(&ctx, &report).instrument(span) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "claiming due notifications failed; retrying"),
        }
        tokio::select! {
            _ = ctx.wake.outbox.notified() => {}
            _ = tokio::time::sleep(ctx.poll) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// A number in `[0, 1)` for the backoff's jitter.
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Sends every due message of one report at once and writes back how each went.
async fn deliver_due(ctx: &OutboxContext, report: &Report) {
    let now = Utc::now();
    let due: Vec<&Notification> = report
        .notifications
        .iter()
        .filter(|n| n.pending() && n.next_at <= now)
        .collect();
    let attempts = due.iter().map(|n| async move {
        if n.version != report.version {
            // A re-diagnosis began before it went out: the new version's ending is sent
            // instead of a report that is no longer the current one.
            return Err(crate::notify::Failure {
                retry: Retry::Never,
                why: format!(
                    "superseded: version {} was re-diagnosed before this was delivered",
                    n.version
                ),
            });
        }
        ctx.sinks.deliver(n, report, now).await
    });
    let results = join_all(attempts).await;
    let updates: Vec<Notification> = due
        .into_iter()
        .zip(results)
        .map(|(n, result)| {
            let mut n = n.clone();
            if let Err(crate::notify::Failure {
                retry: Retry::Deferred(wait),
                why,
            }) = &result
            {
                // Held back by the sink's rate limit: not an attempt.
                n.next_at = Utc::now() + chrono::Duration::from_std(*wait).unwrap_or_default();
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
        })
        .collect();
    if let Err(e) = ctx
        .store
        .update_notifications(&report.deployment_id, &updates)
        .await
    {
        tracing::warn!(error = %e, "writing back the notifications failed; they are sent again after the lease");
    }
}
