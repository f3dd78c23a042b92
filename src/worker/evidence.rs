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
use crate::model::alert::DeploymentId;
use crate::model::evidence::Gathered;
use crate::model::report::Report;
use crate::model::verdict::ReleaseVerdict;
use crate::outside;
use crate::pipeline::{self, KnownEvidence, Measure, Measured};
use crate::store::{ReportStore, StoreError, Wake};

/// What the evidence pool needs.
#[derive(Clone)]
pub struct EvidenceContext {
    /// The store (and its evidence queue).
    pub store: Arc<dyn ReportStore>,
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

#[async_trait]
impl Queue for Gatherings {
    type Item = Report;
    const POOL: &'static str = "evidence";

    async fn claim(&self) -> Result<Option<Report>, StoreError> {
        let now = Utc::now();
        self.ctx
            .store
            .claim_evidence(now, outside::later(now, self.ctx.lease()))
            .await
    }

    fn span(&self, report: &Report) -> tracing::Span {
        tracing::info_span!(
            "gathering",
            deployment_id = %report.deployment_id,
            version = report.version
        )
    }

    async fn work(&self, report: &Report) {
        tokio::select! {
            _ = gather_and_store(&self.ctx, report) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// A gathering that panicked is stored as evidence that could not be had, which ends
    /// its lease: the diagnosis goes on without it instead of waiting for the lease.
    async fn panicked(&self, report: &Report, why: &str) {
        let why = format!("gathering the evidence stopped on a bug in the service: {why}");
        settle(
            self.ctx.store.as_ref(),
            &self.ctx.wake,
            &report.deployment_id,
            report.version,
            Err(&why),
            None,
        )
        .await;
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.ctx.wake.evidence
    }

    fn poll(&self) -> Duration {
        self.ctx.poll
    }
}

async fn gather_and_store(ctx: &EvidenceContext, report: &Report) {
    let measured = pipeline::gather(
        &ctx.measure,
        &report.alert,
        report.deployment.as_ref(),
        report.created_time,
    )
    .await;
    store(
        ctx.store.as_ref(),
        &ctx.wake,
        &report.deployment_id,
        report.version,
        &measured,
    )
    .await;
}

/// Stores a version's evidence (or why there is none) and its release verdict, and tells
/// whoever waits for them. The one place evidence is written.
pub async fn store(
    store: &dyn ReportStore,
    wake: &Wake,
    deployment_id: &DeploymentId,
    version: u32,
    measured: &Measured,
) {
    let evidence = measured.evidence.as_ref().map_err(String::as_str);
    settle(
        store,
        wake,
        deployment_id,
        version,
        evidence,
        Some(&measured.release),
    )
    .await;
}

async fn settle(
    store: &dyn ReportStore,
    wake: &Wake,
    deployment_id: &DeploymentId,
    version: u32,
    evidence: Result<&Gathered, &str>,
    release: Option<&ReleaseVerdict>,
) {
    match store
        .set_evidence(deployment_id, version, evidence, release)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("the report moved on (or had its evidence) before this was stored")
        }
        Err(e) => tracing::warn!(error = %e, "storing the evidence failed"),
    }
    wake.evidence_settled();
}

/// The evidence of the version an AI worker claimed. The worker claims a report only once
/// its evidence is settled (gathered, or failed: the store's `claim_next` with `settled`),
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
