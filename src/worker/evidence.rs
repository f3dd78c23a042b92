//! The evidence pool: `Evidence.Concurrency` tasks that claim reports still waiting for
//! their evidence from the store, oldest first, under an evidence lease of their own, and
//! gather it, apart from the AI workers: a burst of alerts gets its facts while the AI
//! queue is long, and no task or store read is queued per alert. An AI worker that claims
//! a report whose evidence is being gathered waits for it; one nobody holds it gathers
//! itself. Either way the result is stored here, by [`store`].

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

/// How often a waiting AI worker looks at the store when no gathering in this process
/// tells it (another instance may be gathering).
const WAIT_POLL: Duration = Duration::from_millis(250);

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
    wake.evidence_stored.notify_waiters();
}

/// The evidence of the version an AI worker claimed: as stored, waited for while a live
/// lease holds it (at most one lease, after which the holder is dead), or to be gathered
/// by the worker, whose claim on it is then taken.
pub async fn known(ctx: &EvidenceContext, claimed: &Report) -> KnownEvidence {
    let lease = ctx.lease();
    let until = tokio::time::Instant::now() + lease + Duration::from_secs(1);
    let mut report = claimed.clone();
    loop {
        let answer = |evidence: Result<Gathered, String>, report: &Report| KnownEvidence::Known {
            evidence,
            release: report.release.clone(),
        };
        if let Some(items) = &report.evidence {
            let gathered = Gathered {
                items: items.clone(),
                unmeasured: report.unmeasured.clone(),
            };
            return answer(Ok(gathered), &report);
        }
        if let Some(why) = &report.evidence_error {
            return answer(Err(why.clone()), &report);
        }
        if !report.needs_evidence() || report.version != claimed.version {
            return answer(Err("the report moved on".into()), &report);
        }
        let now = Utc::now();
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        match ctx
            .store
            .claim_evidence_of(&report.deployment_id, report.version, now, lease_until)
            .await
        {
            Ok(true) => return KnownEvidence::GatherHere,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "taking the evidence lease failed; gathering here");
                return KnownEvidence::GatherHere;
            }
        }
        if tokio::time::Instant::now() >= until {
            let why = format!(
                "a gathering of this report's evidence did not end within {}s",
                lease.as_secs()
            );
            return answer(Err(why), &report);
        }
        let stored = ctx.wake.evidence_stored.notified();
        tokio::select! {
            _ = stored => {}
            _ = tokio::time::sleep(WAIT_POLL) => {}
        }
        report = match ctx.store.get(&claimed.deployment_id).await {
            Ok(Some(current)) => current,
            Ok(None) => return answer(Err("the report was deleted".into()), &report),
            Err(e) => {
                tracing::warn!(error = %e, "reading the report failed while waiting for its evidence");
                report
            }
        };
    }
}
