//! The worker pool: `Worker.Concurrency` tasks that claim `generating` reports from the
//! store, run them, and write the outcome. Intake only writes the report and wakes a
//! worker; a report nobody announced (left by a crash, or by another instance) is found by
//! polling once its lease has run out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::Budget;
use crate::changes::{Changes, Release};
use crate::config::WorkerConfig;
use crate::deployment::Deployment;
use crate::diagnosis::{Diagnosed, Diagnoser, Outcome};
use crate::evidence::Stage;
use crate::github::ChangeSource;
use crate::metrics::Metrics;
use crate::prompt::Facts;
use crate::report::{Engine, FailureKind, Finish, Report, ReportStatus};
use crate::store::{DeploymentStore, ReportStore};

/// What the workers share.
#[derive(Clone)]
pub struct WorkerContext {
    /// The store (and queue).
    pub store: Arc<dyn ReportStore>,
    /// The deployments registry.
    pub deployments: Arc<dyn DeploymentStore>,
    /// Change evidence from GitHub.
    pub changes: ChangeSource,
    /// The AI budgets.
    pub budget: Arc<Budget>,
    /// The evidence stage (`None`: disabled).
    pub evidence: Option<Stage>,
    /// Runs one diagnosis.
    pub diagnoser: Diagnoser,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes a worker when a report is written.
    pub wake: Arc<Notify>,
    /// Settings.
    pub config: WorkerConfig,
}

/// The running pool.
pub struct WorkerPool {
    tasks: JoinSet<()>,
    stop_claiming: CancellationToken,
    abort: CancellationToken,
    grace: Duration,
}

impl WorkerPool {
    /// Starts the workers.
    pub fn start(ctx: WorkerContext) -> Self {
        let stop_claiming = CancellationToken::new();
        let abort = CancellationToken::new();
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let mut tasks = JoinSet::new();
        for n in 0..ctx.config.concurrency.get() {
            let owner = format!("{}-{n}", &instance[..12]);
            let (ctx, stop, abort) = (ctx.clone(), stop_claiming.clone(), abort.clone());
            tasks.spawn(
                worker_loop(ctx, owner.clone(), stop, abort)
                    .instrument(tracing::info_span!("worker", %owner)),
            );
        }
        let grace = ctx.config.shutdown_grace;
        Self {
            tasks,
            stop_claiming,
            abort,
            grace,
        }
    }

    /// Stops taking work, lets in-flight diagnoses finish within the grace period, then
    /// stops the rest; their reports stay `generating` and are picked up at the next start.
    pub async fn shutdown(mut self) {
        self.stop_claiming.cancel();
        let drained = tokio::time::timeout(self.grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_s = self.grace.as_secs(),
                "in-flight diagnoses outlived the grace period; stopping them"
            );
            self.abort.cancel();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

async fn worker_loop(
    ctx: WorkerContext,
    owner: String,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let lease = ctx.config.lease;
    let poll = ctx.config.poll;
    while !stop.is_cancelled() {
        let now = Utc::now();
        let claimed = ctx.store.claim_next(&owner, now, now + lease).await;
        match claimed {
            Ok(Some(report)) => {
                let span = tracing::info_span!(
                    "diagnosis",
                    deployment_id = %report.deployment_id,
                    report_id = %report.id,
                    attempt = report.attempts
                );
                process(&ctx, &owner, report, &abort).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "claiming a report failed; retrying"),
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// The deployment a report is diagnosed with: the registry's current entry (a pipeline may
/// register after the alert came), else the snapshot taken at intake. A changed one is
/// stored as the version's snapshot.
async fn deployment_of(ctx: &WorkerContext, report: &Report) -> Option<Deployment> {
    let registered = match ctx.deployments.get_deployment(&report.deployment_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "reading the deployments registry failed; using the report's snapshot");
            None
        }
    };
    let Some(current) = registered else {
        return report.deployment.clone();
    };
    if report.deployment.as_ref() != Some(&current) {
        if let Err(e) = ctx
            .store
            .set_deployment(&report.deployment_id, report.version, &current)
            .await
        {
            tracing::warn!(error = %e, "storing the deployment snapshot failed");
        }
    }
    Some(current)
}

/// The release's changes: as stored by an earlier attempt, or read now and stored. The
/// record of a release that may not be read is stored too, so the report says why.
async fn changes_of(
    ctx: &WorkerContext,
    report: &Report,
    deployment: Option<&Deployment>,
    evidence: &[crate::evidence::EvidenceItem],
) -> (Option<Release>, Option<Changes>) {
    let release = match ctx.changes.admit(deployment, &report.alert) {
        None => return (None, None),
        Some(Err(record)) => {
            store_changes(ctx, report, &record).await;
            return (None, Some(record));
        }
        Some(Ok(release)) => release,
    };
    if let Some(stored) = report.changes.as_ref().filter(|c| c.read) {
        return (Some(release), Some(stored.clone()));
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + ctx.diagnoser.deadline();
    let changes = ctx.changes.read(&release, evidence, deadline).await;
    tracing::info!(
        repo = %changes.repo,
        range = %changes.range,
        prs = changes.prs.len(),
        notes = changes.notes.len(),
        ms = started.elapsed().as_millis() as u64,
        "change evidence read"
    );
    store_changes(ctx, report, &changes).await;
    (Some(release), Some(changes))
}

async fn store_changes(ctx: &WorkerContext, report: &Report, changes: &Changes) {
    ctx.metrics.change_evidence(changes);
    if let Err(e) = ctx
        .store
        .set_changes(&report.deployment_id, report.version, changes)
        .await
    {
        tracing::warn!(error = %e, "storing the change evidence failed");
    }
}

async fn process(ctx: &WorkerContext, owner: &str, report: Report, abort: &CancellationToken) {
    let id = report.deployment_id.clone();
    let started = Instant::now();
    let runner = ctx.diagnoser.runner_kind();

    // The lease is kept alive until the outcome is written (or the diagnosis is dropped).
    let cancel = abort.child_token();
    let heartbeat = tokio::spawn(renew_lease(
        ctx.clone(),
        owner.to_owned(),
        report.clone(),
        cancel.clone(),
    ));
    let _stop_heartbeat = AbortOnDrop(heartbeat);
    let Diagnosed { outcome, usage } = if report.attempts > ctx.config.max_attempts.get() {
        let reason = format!(
            "gave up after {} attempts: the service stopped or crashed during each one (see its logs)",
            ctx.config.max_attempts.get()
        );
        let outcome = Outcome::Failed {
            kind: FailureKind::Abandoned,
            reason,
            raw_output: None,
        };
        Diagnosed {
            outcome,
            usage: None,
        }
    } else {
        tracing::info!(
            runner = runner.map_or("none (evidence-only)", |r| r.as_str()),
            "diagnosis started"
        );
        let mut report = report;
        report.deployment = deployment_of(ctx, &report).await;
        let evidence = match &ctx.evidence {
            Some(stage) => stage.evidence_for(&report).await,
            None => None,
        };
        let (release, changes) = tokio::select! {
            found = changes_of(ctx, &report, report.deployment.as_ref(), evidence.as_deref().unwrap_or(&[])) => found,
            _ = cancel.cancelled() => (None, None),
        };
        let facts = Facts {
            alert: &report.alert,
            deployment: report.deployment.as_ref(),
            evidence: evidence.as_deref(),
            changes: changes.as_ref(),
            release: release.as_ref(),
            related: &report.related_alerts,
        };
        let result = match ctx
            .diagnoser
            .runner()
            .map(|_| ctx.budget.admit(Instant::now()))
        {
            Some(Err(spent)) => {
                ctx.metrics.limit_hit(spent.label(), 1);
                tracing::warn!(reason = %spent.reason(), "diagnosing without AI");
                Ok(ctx.diagnoser.without_ai(
                    &facts,
                    Some(FailureKind::BudgetExhausted),
                    &spent.reason(),
                ))
            }
            _ => ctx.diagnoser.diagnose(&id, &facts, cancel.clone()).await,
        };
        if let Ok(Diagnosed {
            usage: Some(usage), ..
        }) = &result
        {
            ctx.budget.spend(Instant::now(), usage);
        }
        match result {
            Ok(diagnosed) => diagnosed,
            Err(_) => {
                // Shutdown, or the lease is gone: give the report back (if still ours) so
                // a worker takes it up at once, without counting this as an attempt.
                if let Err(e) = ctx.store.release(&id, owner).await {
                    tracing::warn!(error = %e, "releasing the report failed; it is taken up after its lease");
                }
                tracing::info!("diagnosis stopped; it will run again");
                return;
            }
        }
    };

    let duration = started.elapsed();
    let mut finish = Finish {
        status: ReportStatus::Failed,
        content: String::new(),
        error: None,
        raw_output: None,
        runner,
        now: Utc::now(),
        duration_ms: duration.as_millis() as u64,
        usage,
        engine: None,
        ai_error: None,
    };
    // The failure counted in the metrics: the report's, or the AI's under an evidence report.
    let kind = match outcome {
        Outcome::Completed {
            body,
            engine,
            ai_failure,
        } => {
            finish.status = ReportStatus::Completed;
            finish.content = serde_json::to_string(&body).unwrap_or_default();
            finish.engine = Some(engine);
            let kind = ai_failure.as_ref().and_then(|f| f.kind);
            if let Some(f) = ai_failure {
                finish.ai_error = Some(f.reason);
                finish.raw_output = f.raw_output;
            }
            kind
        }
        Outcome::Failed {
            kind,
            reason,
            raw_output,
        } => {
            finish.error = Some(reason);
            finish.raw_output = raw_output;
            Some(kind)
        }
    };
    match finish_with_retries(ctx, &id, owner, &finish, &cancel).await {
        Ok(true) => {
            ctx.metrics
                .diagnosis(finish.status, duration.as_secs_f64(), kind);
            if let Some(usage) = &finish.usage {
                ctx.metrics.usage(usage);
            }
            match &finish.error {
                None => tracing::info!(
                    duration_ms = finish.duration_ms,
                    engine = finish.engine.map_or("", Engine::as_str),
                    ai_error = finish.ai_error.as_deref().unwrap_or(""),
                    "diagnosis completed"
                ),
                Some(reason) => tracing::warn!(
                    duration_ms = finish.duration_ms,
                    kind = kind.map_or("", FailureKind::as_str),
                    reason = %reason,
                    "diagnosis failed"
                ),
            }
        }
        Ok(false) => {
            tracing::warn!("report was deleted or taken over while diagnosing; outcome dropped")
        }
        Err(e) => {
            tracing::error!(error = %e, "writing the outcome failed after retries; the report runs again after its lease")
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes the outcome, retrying a failing store with backoff (the heartbeat keeps the
/// lease meanwhile) until the lease is gone: a completed diagnosis is not dropped for one
/// failed write.
async fn finish_with_retries(
    ctx: &WorkerContext,
    id: &crate::alert::DeploymentId,
    owner: &str,
    finish: &Finish,
    lease_gone: &CancellationToken,
) -> Result<bool, crate::store::StoreError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match ctx.store.finish(id, owner, finish).await {
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
async fn renew_lease(ctx: WorkerContext, owner: String, report: Report, cancel: CancellationToken) {
    let lease = ctx.config.lease;
    let mut held_until = Instant::now() + lease;
    loop {
        tokio::time::sleep(lease / 3).await;
        match ctx
            .store
            .renew_lease(&report.deployment_id, &owner, Utc::now() + lease)
            .await
        {
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
