//! The evidence pool: `Evidence.Concurrency` tasks that claim reports still waiting for
//! their evidence from the store, oldest first, under an evidence lease of their own, and
//! gather it, apart from the AI workers: a burst of alerts gets its facts while the AI
//! queue is long, and no task or store read is queued per alert. An AI worker claims a
//! report only once its evidence is settled, and is woken when it is: nobody else gathers,
//! and nobody polls for it. The result is stored here, by [`store`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::pool::{self, Queue};
use crate::metrics::Metrics;
use crate::model::evidence::Gathered;
use crate::model::report::Report;
use crate::outside;
use crate::pipeline::{self, KnownEvidence, Measure, Measured};
use crate::store::{Evidence, Lease, LeaseQueue, Settled, StoreError, Wake};

/// What the evidence pool needs.
#[derive(Clone)]
pub struct EvidenceContext {
    /// The evidence queue.
    pub queue: Arc<dyn LeaseQueue<Evidence>>,
    /// Gathers evidence and measures the release.
    pub measure: Measure,
    /// Wakes the pool when a report is queued; told when evidence is stored.
    pub wake: Arc<Wake>,
    /// Gatherings at once (`Evidence.Concurrency`).
    pub concurrency: usize,
    /// How often an idle gathering looks for unannounced work (`Worker.PollSeconds`).
    pub poll: Duration,
}

impl EvidenceContext {
    /// How long an evidence lease lasts: a gathering ends within its timeout, so a lease
    /// still held after this belongs to a gathering that died.
    pub fn lease(&self) -> Duration {
        self.measure.gatherer.timeout() + Duration::from_secs(5)
    }
}

/// The running pool.
pub struct EvidencePool {
    tasks: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl EvidencePool {
    /// Starts the gatherings.
    pub fn start(ctx: EvidenceContext, metrics: Arc<Metrics>) -> Self {
        let stop = CancellationToken::new();
        let tasks = ctx.concurrency;
        let queue = Gatherings {
            ctx,
            stop: stop.clone(),
        };
        let tasks = pool::start(queue, tasks, metrics, stop.clone());
        Self { tasks, stop }
    }

    /// Stops: a gathering under way is dropped, and its lease runs out, so the next start
    /// (or another instance) gathers it.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.tasks.await;
    }
}

/// The evidence queue: reports whose evidence is still to be gathered.
#[derive(Clone)]
struct Gatherings {
    ctx: EvidenceContext,
    stop: CancellationToken,
}

/// A claimed gathering: the report and the lease it is held under.
struct Gathering {
    lease: Lease,
    report: Report,
}

#[async_trait]
impl Queue for Gatherings {
    type Item = Gathering;
    const POOL: &'static str = "evidence";

    async fn claim(&self) -> Result<Option<Gathering>, StoreError> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let now = Utc::now();
        let claimed = self
            .ctx
            .queue
            .claim(&owner, now, outside::later(now, self.ctx.lease()))
            .await?;
        Ok(claimed.map(|report| Gathering {
            lease: Lease::of(&report, &owner),
            report,
        }))
    }

    fn span(&self, g: &Gathering) -> tracing::Span {
        tracing::info_span!(
            "gathering",
            deployment_id = %g.report.deployment_id,
            version = g.report.version
        )
    }

    async fn work(&self, g: &Gathering) {
        tokio::select! {
            _ = gather_and_store(&self.ctx, g) => {}
            _ = self.stop.cancelled() => {
                // Given back: the next start (or another instance) gathers it at once.
                if let Err(e) = self.ctx.queue.release(&g.lease).await {
                    tracing::warn!(error = %e, "giving the gathering back failed; it is taken up after its lease");
                }
            }
        }
    }

    /// A gathering that panicked is stored as evidence that could not be had, which ends
    /// its lease: the diagnosis goes on without it instead of waiting for the lease.
    async fn panicked(&self, g: &Gathering, why: &str) {
        let why = format!("gathering the evidence stopped on a bug in the service: {why}");
        let settled = Settled {
            evidence: Err(why),
            release: None,
        };
        settle(self.ctx.queue.as_ref(), &self.ctx.wake, &g.lease, &settled).await;
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.ctx.wake.evidence
    }

    fn poll(&self) -> Duration {
        self.ctx.poll
    }
}

async fn gather_and_store(ctx: &EvidenceContext, g: &Gathering) {
    let report = &g.report;
    let measured = pipeline::gather(
        &ctx.measure,
        &report.alert,
        report.deployment.as_ref(),
        report.created_time,
    )
    .await;
    store(ctx.queue.as_ref(), &ctx.wake, &g.lease, &measured).await;
}

/// Stores a version's evidence (or why there is none) and its release verdict, and tells
/// whoever waits for them. The one place evidence is written.
pub async fn store(
    queue: &dyn LeaseQueue<Evidence>,
    wake: &Wake,
    lease: &Lease,
    measured: &Measured,
) {
    let settled = Settled {
        evidence: measured.evidence.clone(),
        release: Some(measured.release.clone()),
    };
    settle(queue, wake, lease, &settled).await;
}

async fn settle(queue: &dyn LeaseQueue<Evidence>, wake: &Wake, lease: &Lease, settled: &Settled) {
    match queue.complete(lease, settled).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("the report moved on (or had its evidence) before this was stored")
        }
        Err(e) => tracing::warn!(error = %e, "storing the evidence failed"),
    }
    wake.evidence_settled();
}

/// The evidence of the version an AI worker claimed. The worker claims a report only once
/// its evidence is settled (gathered, or failed: the store's diagnosis queue, evidence first),
/// so it is on the claimed report; the evidence pool is its only gatherer.
pub fn known(claimed: &Report) -> KnownEvidence {
    let evidence = match (&claimed.evidence, &claimed.evidence_error) {
        (Some(items), _) => Ok(Gathered {
            items: items.clone(),
            unmeasured: claimed.unmeasured.clone(),
        }),
        (None, Some(why)) => Err(why.clone()),
        (None, None) => {
            Err("the evidence of this version was not settled when it was claimed".into())
        }
    };
    KnownEvidence::Known {
        evidence,
        release: claimed.release.clone(),
    }
}
