//! The workers: `Worker.Concurrency` tasks that claim `generating` reports from the
//! store, run the [`pipeline`](crate::pipeline) on each, and write what it produces; and
//! the evidence pool beside them. Intake only writes the report and wakes them; a report
//! nobody announced (left by a crash, or by another instance) is found by polling once its
//! lease has run out.
//!
//! - [`evidence`]: the evidence pool, and the one place evidence is stored.
//! - [`outbox`]: the deliveries of finished reports' notifications.
//! - [`lease`]: a claim kept alive, and the outcome written under it.
//! - [`budget`]: AI diagnoses per hour and tokens per day.
//! - [`gate`]: the `Worker.MaxQueue` check.
//! - [`pool`]: the one claim loop of every pool, and the supervision that restarts a
//!   task that panicked.

pub mod budget;
pub mod evidence;
pub mod gate;
mod lease;
pub mod outbox;
pub mod pool;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::{AutoRollback, WorkerConfig};
use crate::diagnosis::{Diagnosed, Outcome};
use crate::metrics::Metrics;
use crate::model::deployment::Deployment;
use crate::model::notify::Notification;
use crate::model::report::{Ending, FailureKind, Finish, Report};
use crate::model::verdict::{Recommendation, ReleaseVerdict};
use crate::notify::Sinks;
use crate::outside;
use crate::pipeline::{Job, KnownEvidence, Ledger, Output, Pipeline};
use crate::store::{Diagnosis, Lease, LeaseQueue, ReportStore, StoreError, Wake};
use budget::Budget;
use evidence::EvidenceContext;
use lease::{finish_with_retries, renew_lease, AbortOnDrop};
use pool::Queue;

/// What the workers share.
#[derive(Clone)]
pub struct WorkerContext {
    /// The reports.
    pub store: Arc<dyn ReportStore>,
    /// The diagnosis queue.
    pub diagnoses: Arc<dyn LeaseQueue<Diagnosis>>,
    /// The stages of a diagnosis.
    pub pipeline: Pipeline,
    /// The evidence pool's context, for a worker that waits for evidence or gathers it
    /// (`None`: `Evidence.Enabled` is false).
    pub evidence: Option<EvidenceContext>,
    /// The AI budgets.
    pub budget: Arc<Budget>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes a worker when a report is queued.
    pub wake: Arc<Wake>,
    /// The sinks a finished report is sent to (through the store's outbox).
    pub sinks: Arc<Sinks>,
    /// Settings.
    pub config: WorkerConfig,
    /// `Release.AutoRollback`.
    pub auto_rollback: AutoRollback,
}

/// The running pool.
pub struct WorkerPool {
    tasks: tokio::task::JoinHandle<()>,
    stop_claiming: CancellationToken,
    abort: CancellationToken,
    grace: Duration,
}

impl WorkerPool {
    /// Starts the workers.
    pub fn start(ctx: WorkerContext) -> Self {
        let stop_claiming = CancellationToken::new();
        let abort = CancellationToken::new();
        let (tasks, grace, metrics) = (
            ctx.config.concurrency.get(),
            ctx.config.shutdown_grace,
            ctx.metrics.clone(),
        );
        let queue = Diagnoses {
            ctx,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            abort: abort.clone(),
        };
        let tasks = pool::start(queue, tasks, metrics, stop_claiming.clone());
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
        if tokio::time::timeout(self.grace, &mut self.tasks)
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = self.grace.as_secs(),
                "in-flight diagnoses outlived the grace period; stopping them"
            );
            self.abort.cancel();
            let _ = self.tasks.await;
        }
    }
}

/// The diagnosis queue: `generating` reports no live worker holds.
#[derive(Clone)]
struct Diagnoses {
    ctx: WorkerContext,
    /// This process, in the owners of its claims.
    instance: String,
    /// Stops the diagnoses under way (after the grace period).
    abort: CancellationToken,
}

/// A claimed report and the owner its lease is held under.
struct Claimed {
    owner: String,
    report: Report,
}

#[async_trait]
impl Queue for Diagnoses {
    type Item = Claimed;
    const POOL: &'static str = "diagnosis";

    async fn claim(&self) -> Result<Option<Claimed>, StoreError> {
        // One owner a claim: a lease is never confused with an earlier one of this task.
        let owner = format!(
            "{}-{}",
            self.instance,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let now = Utc::now();
        let lease = outside::later(now, self.ctx.config.lease);
        let claimed = self.ctx.diagnoses.claim(&owner, now, lease).await?;
        Ok(claimed.map(|report| Claimed { owner, report }))
    }

    fn span(&self, claimed: &Claimed) -> tracing::Span {
        let report = &claimed.report;
        tracing::info_span!(
            "diagnosis",
            deployment_id = %report.deployment_id,
            report_id = %report.id,
            owner = %claimed.owner,
            attempt = report.attempts
        )
    }

    async fn work(&self, claimed: &Claimed) {
        process(&self.ctx, &claimed.owner, &claimed.report, &self.abort).await;
    }

    /// A diagnosis that panicked ends the report `failed` with the panic's message (a bug:
    /// running it again would most likely panic again), which ends its lease.
    async fn panicked(&self, claimed: &Claimed, why: &str) {
        let diagnosed = Diagnosed {
            outcome: Outcome::Failed {
                kind: FailureKind::Internal,
                reason: format!(
                    "the diagnosis stopped on a bug in the service ({why}); the log has the \
                     details; POST /reports/{}/rediagnose runs it again",
                    claimed.report.deployment_id
                ),
                raw_output: None,
            },
            usage: None,
            repairs: Vec::new(),
        };
        let run = Run {
            owner: &claimed.owner,
            report: &claimed.report,
            started: Instant::now(),
            lease_gone: &CancellationToken::new(),
        };
        conclude(&self.ctx, run, diagnosed, None).await;
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.ctx.wake.diagnosis
    }

    fn poll(&self) -> Duration {
        self.ctx.config.poll
    }
}

/// The pipeline's ledger for one claimed report: the registry, the evidence queue and the
/// budgets are read here, and every stage output is written to the report's version here.
struct ReportLedger<'a> {
    ctx: &'a WorkerContext,
    report: &'a Report,
    /// The diagnosis's owner.
    owner: &'a str,
}

#[async_trait]
impl Ledger for ReportLedger<'_> {
    async fn evidence(&self) -> KnownEvidence {
        match &self.ctx.evidence {
            Some(_) => evidence::known(self.report),
            None => KnownEvidence::Known {
                evidence: Err("Evidence.Enabled is false".into()),
                release: None,
            },
        }
    }

    async fn admit_ai(&self) -> Result<(), String> {
        self.ctx.budget.admit().await.map_err(|refused| {
            self.ctx.metrics.limit_hit(refused.label, 1);
            refused.reason
        })
    }

    async fn record(&self, output: Output<'_>) {
        let (store, id, version) = (
            self.ctx.store.as_ref(),
            &self.report.deployment_id,
            self.report.version,
        );
        let written = match output {
            Output::Measured(measured) => {
                if let Some(gatherings) = &self.ctx.evidence {
                    let lease = Lease::of(self.report, self.owner);
                    evidence::store(gatherings.queue.as_ref(), &self.ctx.wake, &lease, measured)
                        .await;
                }
                return;
            }
            Output::Changes(changes) => {
                self.ctx.metrics.change_evidence(changes);
                store.set_changes(id, version, changes).await
            }
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "storing a stage's output failed");
        }
    }
}

async fn process(ctx: &WorkerContext, owner: &str, report: &Report, abort: &CancellationToken) {
    let id = report.deployment_id.clone();
    let started = Instant::now();
    let runner = ctx.pipeline.diagnoser.runner_kind();

    // The lease is kept alive until the outcome is written (or the diagnosis is dropped).
    let cancel = abort.child_token();
    let heartbeat = tokio::spawn(renew_lease(
        ctx.clone(),
        Lease::of(report, owner),
        cancel.clone(),
    ));
    let _stop_heartbeat = AbortOnDrop(heartbeat);
    let (diagnosed, release) = if report.attempts > ctx.config.max_attempts.get() {
        let reason = format!(
            "gave up after {} attempts: the service stopped or crashed during each one (see its logs)",
            ctx.config.max_attempts.get()
        );
        let diagnosed = Diagnosed {
            outcome: Outcome::Failed {
                kind: FailureKind::Abandoned,
                reason,
                raw_output: None,
            },
            usage: None,
            repairs: Vec::new(),
        };
        (diagnosed, None)
    } else {
        tracing::info!(
            runner = runner.map_or("none (evidence-only)", |r| r.as_str()),
            "diagnosis started"
        );
        let job = Job {
            deployment_id: id.clone(),
            alert: report.alert.clone(),
            received: report.created_time,
            deployment: report.deployment.clone(),
            changes: report.changes.clone(),
            related: report.related_alerts.clone(),
        };
        let ledger = ReportLedger { ctx, report, owner };
        match ctx.pipeline.run(job, &ledger, cancel.clone()).await {
            Ok(ran) => (ran.diagnosed, Some(ran.release)),
            Err(_) => {
                // Shutdown, or the lease is gone: give the report back (if still ours) so
                // a worker takes it up at once, without counting this as an attempt.
                if let Err(e) = ctx.diagnoses.release(&Lease::of(report, owner)).await {
                    tracing::warn!(error = %e, "releasing the report failed; it is taken up after its lease");
                }
                tracing::info!("diagnosis stopped; it will run again");
                return;
            }
        }
    };
    let run = Run {
        owner,
        report,
        started,
        lease_gone: &cancel,
    };
    conclude(ctx, run, diagnosed, release).await;
}

/// The rollback request a *rollback* verdict makes, when `Release.AutoRollback` allows it
/// and the deployment's `rollbackPolicy.autoRollback` is true: once per
/// deployment and tag (a report that asked for this tag already asks nothing more). Under
/// `dry-run` it is recorded and not sent.
async fn rollback_request(
    ctx: &WorkerContext,
    report: &Report,
    finish: &Finish,
) -> Option<Notification> {
    if ctx.auto_rollback == AutoRollback::Off
        || finish.release.as_ref()?.recommendation != Recommendation::Rollback
    {
        return None;
    }
    // The deployment as intake read it: the same the verdict judged. The outbox reads the
    // URL and the secret from the registry at each attempt.
    let deployment = report.deployment.as_ref()?;
    let policy = deployment.rollback_policy.as_ref()?;
    if !policy.auto_rollback || policy.url.is_empty() {
        return None;
    }
    let request = Notification::rollback(
        &report.id,
        report.version,
        &rollback_key(deployment),
        ctx.auto_rollback == AutoRollback::DryRun,
        finish.now,
    );
    if report.notifications.iter().any(|n| n.id == request.id) {
        return None;
    }
    tracing::warn!(
        tag = %deployment.tag,
        dry_run = ctx.auto_rollback == AutoRollback::DryRun,
        "the verdict is rollback and the deployment's policy asks for it: rollback requested"
    );
    Some(request)
}

/// The release a rollback request names, as a header-safe key: the tag (else the time the
/// rollout started) as one URL path segment.
fn rollback_key(d: &Deployment) -> String {
    let raw = if d.tag.is_empty() {
        d.started_at.timestamp_millis().to_string()
    } else {
        d.tag.clone()
    };
    outside::path_segment(&raw)
}

/// The diagnosis of one claim, for its conclusion.
struct Run<'a> {
    owner: &'a str,
    report: &'a Report,
    started: Instant,
    /// Cancelled when the claim is lost.
    lease_gone: &'a CancellationToken,
}

/// Writes how a diagnosis ended while the claim is held, with its notifications; counts
/// and logs it.
async fn conclude(
    ctx: &WorkerContext,
    run: Run<'_>,
    Diagnosed {
        outcome,
        usage,
        repairs,
    }: Diagnosed,
    release: Option<ReleaseVerdict>,
) {
    let Run {
        owner,
        report,
        started,
        lease_gone,
    } = run;
    let runner = ctx.pipeline.diagnoser.runner_kind();
    if let Some(usage) = &usage {
        ctx.budget.spend(usage).await;
    }

    let duration = started.elapsed();
    // The failure counted in the metrics: the report's, or the AI's under an evidence report.
    let (ending, raw_output, kind) = match outcome {
        Outcome::Completed {
            body,
            engine,
            ai_failure,
        } => {
            let kind = ai_failure.as_ref().and_then(|f| f.kind);
            let (ai_error, raw_output) = match ai_failure {
                Some(f) => (Some(f.reason), f.raw_output),
                None => (None, None),
            };
            let ending = Ending::Completed {
                body,
                engine,
                ai_error,
            };
            (ending, raw_output, kind)
        }
        Outcome::Failed {
            kind,
            reason,
            raw_output,
        } => (Ending::Failed { error: reason }, raw_output, Some(kind)),
    };
    let finish = Finish {
        ending,
        raw_output,
        runner,
        now: Utc::now(),
        duration_ms: duration.as_millis() as u64,
        usage,
        release,
        notify: Vec::new(),
    };
    let mut notify = ctx.sinks.for_finish(report, &finish);
    notify.extend(rollback_request(ctx, report, &finish).await);
    let finish = Finish { notify, ..finish };
    match finish_with_retries(ctx, &Lease::of(report, owner), &finish, lease_gone).await {
        Ok(true) => {
            if !finish.notify.is_empty() {
                ctx.wake.outbox.notify_one();
            }
            let status = finish.status();
            ctx.metrics.diagnosis(status, duration.as_secs_f64(), kind);
            for repair in &repairs {
                ctx.metrics.answer_repair(repair.as_str());
            }
            if let Some(usage) = &finish.usage {
                ctx.metrics.usage(usage);
            }
            if let Some(release) = &finish.release {
                ctx.metrics.release_verdict(release);
                tracing::info!(
                    verdict = release.verdict.as_str(),
                    recommendation = release.recommendation.as_str(),
                    confidence = release.confidence,
                    "release verdict"
                );
            }
            match &finish.ending {
                Ending::Completed {
                    engine, ai_error, ..
                } => tracing::info!(
                    duration_ms = finish.duration_ms,
                    engine = engine.as_str(),
                    ai_error = ai_error.as_deref().unwrap_or(""),
                    "diagnosis completed"
                ),
                Ending::Failed { error } => tracing::warn!(
                    duration_ms = finish.duration_ms,
                    kind = kind.map_or("", FailureKind::as_str),
                    reason = %error,
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
