//! The diagnosis pipeline, written once: deployment → evidence → changes → diagnosis.
//! The worker runs it for every report and the `diagnose` command for one alert; each
//! gives it a [`Ledger`] that says what is already known (the registry, evidence gathered
//! elsewhere, the AI budget) and takes each stage's output as soon as it exists. The
//! stages return values; only the ledger persists them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::changes::ChangeSource;
use crate::diagnosis::{Cancelled, Diagnosed, Diagnoser, Facts};
use crate::evidence::Gatherer;
use crate::model::alert::{Alert, DeploymentId};
use crate::model::changes::{Changes, Release};
use crate::model::deployment::Deployment;
use crate::model::evidence::EvidenceItem;
use crate::model::report::{FailureKind, RelatedAlert};

/// Evidence as the ledger knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum KnownEvidence {
    /// Gathered (by the evidence pool, or by an earlier attempt).
    Gathered(Vec<EvidenceItem>),
    /// A gathering was tried and failed; why.
    Unavailable(String),
    /// Nobody has it and nobody is gathering it: this run gathers it.
    GatherHere,
}

/// A stage's output, for the ledger to keep.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// The registered deployment, when it differs from the report's snapshot.
    Deployment(&'a Deployment),
    /// The evidence this run gathered, or why it could not.
    Evidence(Result<&'a [EvidenceItem], &'a str>),
    /// The release's changes (or the record of why they were not read).
    Changes(&'a Changes),
}

/// What a run of the pipeline reads from and writes to outside itself.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// The deployment as registered now (`None`: not registered, or unknown).
    async fn registered(&self) -> Option<Deployment>;
    /// The evidence: gathered already (waiting for a gathering under way), or to be
    /// gathered here.
    async fn evidence(&self) -> KnownEvidence;
    /// Whether an AI diagnosis may run now: `Err(why)` when a budget is spent.
    async fn admit_ai(&self) -> Result<(), String>;
    /// Keeps a stage's output.
    async fn record(&self, output: Output<'_>);
}

/// What one run diagnoses.
#[derive(Debug, Clone)]
pub struct Job {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// The alert.
    pub alert: Alert,
    /// When the report was made (the incident's start for an alert without `startsAt`).
    pub received: DateTime<Utc>,
    /// The deployment snapshot the report has (taken at intake or by an earlier attempt).
    pub deployment: Option<Deployment>,
    /// Changes an earlier attempt read.
    pub changes: Option<Changes>,
    /// Further alerts of the deployment, newest last.
    pub related: Vec<RelatedAlert>,
}

/// The stages.
#[derive(Clone)]
pub struct Pipeline {
    /// Gathers evidence (`None`: `Evidence.Enabled` is false).
    pub gatherer: Option<Gatherer>,
    /// Reads the release's changes.
    pub changes: ChangeSource,
    /// Runs the diagnosis.
    pub diagnoser: Diagnoser,
}

impl Pipeline {
    /// Runs every stage in order; `Err(Cancelled)` when `cancel` fires first (nothing
    /// more is recorded then).
    pub async fn run(
        &self,
        job: Job,
        ledger: &dyn Ledger,
        cancel: CancellationToken,
    ) -> Result<Diagnosed, Cancelled> {
        let deployment = self.deployment(&job, ledger).await;
        let evidence =
            cancellable(&cancel, self.evidence(&job, deployment.as_ref(), ledger)).await?;
        let (release, changes) = cancellable(
            &cancel,
            self.changes(&job, deployment.as_ref(), evidence.as_deref(), ledger),
        )
        .await?;
        let facts = Facts {
            alert: &job.alert,
            deployment: deployment.as_ref(),
            evidence: evidence.as_deref(),
            changes: changes.as_ref(),
            release: release.as_ref(),
            related: &job.related,
        };
        if self.diagnoser.runner().is_some() {
            if let Err(why) = ledger.admit_ai().await {
                tracing::warn!(reason = %why, "diagnosing without AI");
                return Ok(self.diagnoser.without_ai(
                    &facts,
                    Some(FailureKind::BudgetExhausted),
                    &why,
                ));
            }
        }
        self.diagnoser
            .diagnose(&job.deployment_id, &facts, cancel)
            .await
    }

    /// The registry's current entry (a pipeline may register after the alert came), else
    /// the report's snapshot; a changed one is recorded.
    async fn deployment(&self, job: &Job, ledger: &dyn Ledger) -> Option<Deployment> {
        let Some(current) = ledger.registered().await else {
            return job.deployment.clone();
        };
        if job.deployment.as_ref() != Some(&current) {
            ledger.record(Output::Deployment(&current)).await;
        }
        Some(current)
    }

    async fn evidence(
        &self,
        job: &Job,
        deployment: Option<&Deployment>,
        ledger: &dyn Ledger,
    ) -> Option<Vec<EvidenceItem>> {
        let gatherer = self.gatherer.as_ref()?;
        match ledger.evidence().await {
            KnownEvidence::Gathered(items) => Some(items),
            KnownEvidence::Unavailable(_) => None,
            KnownEvidence::GatherHere => {
                let hosts = deployment.map(Deployment::host_names).unwrap_or_default();
                match gather(gatherer, &job.alert, &hosts, job.received).await {
                    Ok(items) => {
                        ledger.record(Output::Evidence(Ok(&items))).await;
                        Some(items)
                    }
                    Err(why) => {
                        ledger.record(Output::Evidence(Err(&why))).await;
                        None
                    }
                }
            }
        }
    }

    /// The release's changes: as an earlier attempt read them, or read now. The record of
    /// a release that may not be read is recorded too, so the report says why.
    async fn changes(
        &self,
        job: &Job,
        deployment: Option<&Deployment>,
        evidence: Option<&[EvidenceItem]>,
        ledger: &dyn Ledger,
    ) -> (Option<Release>, Option<Changes>) {
        let release = match self.changes.admit(deployment, &job.alert) {
            None => return (None, None),
            Some(Err(record)) => {
                ledger.record(Output::Changes(&record)).await;
                return (None, Some(record));
            }
            Some(Ok(release)) => release,
        };
        if let Some(stored) = job.changes.as_ref().filter(|c| c.read) {
            return (Some(release), Some(stored.clone()));
        }
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + self.diagnoser.deadline();
        let changes = self
            .changes
            .read(&release, evidence.unwrap_or_default(), deadline)
            .await;
        tracing::info!(
            repo = %changes.repo,
            range = %changes.range,
            prs = changes.prs.len(),
            notes = changes.notes.len(),
            ms = started.elapsed().as_millis() as u64,
            "change evidence read"
        );
        ledger.record(Output::Changes(&changes)).await;
        (Some(release), Some(changes))
    }
}

/// Gathers an alert's evidence now, on its hosts and its deployment's, with the incident
/// from its `startsAt` (`received` when it has none); the error as a sentence. Used by the
/// pipeline and by the evidence pool alike.
pub async fn gather(
    gatherer: &Gatherer,
    alert: &Alert,
    deployment_hosts: &[String],
    received: DateTime<Utc>,
) -> Result<Vec<EvidenceItem>, String> {
    let now = Utc::now();
    let starts_at = alert.starts_at.at().unwrap_or(received);
    let started = std::time::Instant::now();
    match gatherer
        .gather(alert, deployment_hosts, starts_at, now)
        .await
    {
        Ok(items) => {
            tracing::info!(
                items = items.len(),
                top = items.first().map_or("", |i| i.signal.as_str()),
                ms = started.elapsed().as_millis() as u64,
                "evidence gathered"
            );
            Ok(items)
        }
        Err(e) => {
            tracing::warn!(error = %e, "evidence could not be gathered");
            Err(e.to_string())
        }
    }
}

/// Runs `work` unless `cancel` fires first.
async fn cancellable<T>(
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Cancelled> {
    tokio::select! {
        out = work => Ok(out),
        _ = cancel.cancelled() => Err(Cancelled),
    }
}
