//! The diagnosis pipeline, written once: deployment → evidence → changes → diagnosis.
//! The worker runs it for every report and the `diagnose` command for one alert; each
//! gives it a [`Ledger`] that says what is already known (the registry, evidence gathered
//! elsewhere, the AI budget) and takes each stage's output as soon as it exists. The
//! stages return values; only the ledger persists them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::changes::ChangeSource;
use crate::diagnosis::prompt::verdict_opinion;
use crate::diagnosis::Outcome;
use crate::diagnosis::{Cancelled, Diagnosed, Diagnoser, Facts};
use crate::evidence::Gatherer;
use crate::model::alert::{Alert, DeploymentId};
use crate::model::changes::{Changes, Release};
use crate::model::deployment::Deployment;
use crate::model::evidence::{EvidenceItem, Gathered, Reading, Resource, Scored};
use crate::model::report::Engine;
use crate::model::report::{FailureKind, RelatedAlert};
use crate::model::verdict::{ModelOpinion, ReleaseVerdict};
use crate::verdict::{rules, Judge};

/// Evidence as the ledger knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum KnownEvidence {
    /// Gathered, or tried and failed (`Err(why)`), by the evidence pool or an earlier
    /// attempt; with the release verdict stored with it, if any.
    Known {
        /// The items, or why there are none.
        evidence: Result<Gathered, String>,
        /// The release verdict measured with them.
        release: Option<ReleaseVerdict>,
    },
    /// Nobody has it and nobody is gathering it: this run gathers it.
    GatherHere,
}

/// What the measuring stage produced: the evidence (or why there is none) and the release
/// verdict (always: an unmeasured one says why).
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The ranked items (and the hosts left out), or why none could be gathered.
    pub evidence: Result<Gathered, String>,
    /// Was it this release, and what to do.
    pub release: ReleaseVerdict,
}

/// The measuring stages: evidence, and the release verdict.
#[derive(Clone)]
pub struct Measure {
    /// Gathers evidence.
    pub gatherer: Gatherer,
    /// Measures the release.
    pub judge: Judge,
}

/// A finished run: the diagnosis, and the release verdict it used.
#[derive(Debug, Clone)]
pub struct Ran {
    /// How the diagnosis ended.
    pub diagnosed: Diagnosed,
    /// The release verdict.
    pub release: ReleaseVerdict,
}

/// A stage's output, for the ledger to keep.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// The evidence this run gathered (or why it could not), and the release verdict.
    Measured(&'a Measured),
    /// The release's changes (or the record of why they were not read).
    Changes(&'a Changes),
}

/// What a run of the pipeline reads from and writes to outside itself.
#[async_trait]
pub trait Ledger: Send + Sync {
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
    /// Gathers evidence and measures the release (`None`: `Evidence.Enabled` is false).
    pub measure: Option<Measure>,
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
    ) -> Result<Ran, Cancelled> {
        // Read once, at intake (a re-diagnosis reads the registry again): the evidence
        // pool gathered with the same snapshot.
        let deployment = job.deployment.clone();
        let (evidence, verdict) =
            cancellable(&cancel, self.evidence(&job, deployment.as_ref(), ledger)).await?;
        let items = evidence.as_ref().map(|g| g.items.as_slice());
        let ranking = ranking_evidence(items.unwrap_or_default(), &verdict);
        let (release, changes) = cancellable(
            &cancel,
            self.changes(&job, deployment.as_ref(), Some(&ranking), ledger),
        )
        .await?;
        let facts = Facts {
            alert: &job.alert,
            deployment: deployment.as_ref(),
            evidence: items,
            unmeasured: evidence.as_ref().and_then(|g| g.unmeasured.as_ref()),
            changes: changes.as_ref(),
            release: release.as_ref(),
            verdict: Some(&verdict),
            related: &job.related,
        };
        if self.diagnoser.runner().is_some() {
            if let Err(why) = ledger.admit_ai().await {
                tracing::warn!(reason = %why, "diagnosing without AI");
                let diagnosed =
                    self.diagnoser
                        .without_ai(&facts, Some(FailureKind::BudgetExhausted), &why);
                return Ok(Ran {
                    diagnosed,
                    release: verdict,
                });
            }
        }
        let diagnosed = self
            .diagnoser
            .diagnose(&job.deployment_id, &facts, cancel)
            .await?;
        let mut release = verdict;
        if let Outcome::Completed {
            body,
            engine: Engine::Ai,
            ..
        } = &diagnosed.outcome
        {
            release.model =
                verdict_opinion(&body.content).map(|(agrees, says)| ModelOpinion { agrees, says });
            if release.model.as_ref().is_some_and(|m| !m.agrees) {
                tracing::info!(
                    verdict = release.verdict.as_str(),
                    "the model disagrees with the release verdict"
                );
            }
        }
        Ok(Ran { diagnosed, release })
    }

    /// The evidence (`None`: none could be had) and the release verdict: as stored, or
    /// measured here.
    async fn evidence(
        &self,
        job: &Job,
        deployment: Option<&Deployment>,
        ledger: &dyn Ledger,
    ) -> (Option<Gathered>, ReleaseVerdict) {
        let Some(measure) = self.measure.as_ref() else {
            let under_way = deployment.is_none_or(Deployment::under_way);
            let why = "Evidence.Enabled is false: nothing was measured";
            return (None, rules::unmeasured(under_way, why));
        };
        match ledger.evidence().await {
            KnownEvidence::Known {
                evidence,
                release: Some(release),
            } => (evidence.ok(), release),
            KnownEvidence::Known {
                evidence,
                release: None,
            } => (
                evidence.ok(),
                measure.judge.judge(deployment, Utc::now()).await,
            ),
            KnownEvidence::GatherHere => {
                let measured = gather(measure, &job.alert, deployment, job.received).await;
                ledger.record(Output::Measured(&measured)).await;
                (measured.evidence.ok(), measured.release)
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

/// Gathers an alert's evidence now, on its hosts and its deployment's, with the windows
/// anchored on the release when the deployment is known (else on the alert's `startsAt`,
/// `received` when it has none), and measures the release meanwhile; the error as a
/// sentence. Used by the pipeline and by the evidence pool alike.
pub async fn gather(
    measure: &Measure,
    alert: &Alert,
    deployment: Option<&Deployment>,
    received: DateTime<Utc>,
) -> Measured {
    let now = Utc::now();
    let starts_at = alert.starts_at.at().unwrap_or(received);
    let (evidence, release) = tokio::join!(
        gather_evidence(&measure.gatherer, alert, deployment, starts_at, now),
        measure.judge.judge(deployment, now)
    );
    tracing::info!(
        verdict = release.verdict.as_str(),
        recommendation = release.recommendation.as_str(),
        confidence = release.confidence,
        "release measured"
    );
    Measured { evidence, release }
}

async fn gather_evidence(
    gatherer: &Gatherer,
    alert: &Alert,
    deployment: Option<&Deployment>,
    starts_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Gathered, String> {
    let started = std::time::Instant::now();
    match gatherer.gather(alert, deployment, starts_at, now).await {
        Ok(gathered) => {
            tracing::info!(
                items = gathered.items.len(),
                top = gathered.items.first().map_or("", |i| i.signal.as_str()),
                unmeasured = gathered.unmeasured.as_ref().map_or(0, |u| u.total),
                ms = started.elapsed().as_millis() as u64,
                "evidence gathered"
            );
            Ok(gathered)
        }
        Err(e) => {
            tracing::warn!(error = %e, "evidence could not be gathered");
            Err(e.to_string())
        }
    }
}

/// What change suspects are ranked against: the signals that made the release verdict
/// first (an application's errors and latency rank network and client code; a host's CPU
/// or memory, theirs), then the measured evidence.
fn ranking_evidence(evidence: &[EvidenceItem], verdict: &ReleaseVerdict) -> Vec<EvidenceItem> {
    let findings = verdict
        .comparisons
        .iter()
        .filter(|c| c.released_host && c.worse && !c.pre_existing)
        .map(|c| EvidenceItem {
            resource: match c.signal.as_str() {
                s if s.starts_with("CPU") || s.starts_with("load") => Resource::Cpu,
                s if s.starts_with("memory") => Resource::Memory,
                _ => Resource::Network,
            },
            signal: c.signal.clone(),
            instance: c.host.clone(),
            query: c.query.clone(),
            unit: c.unit.clone(),
            scored: Scored {
                baseline: Some(c.control),
                baseline_p95: None,
                incident: c.released,
                change: Some(c.released - c.control),
                peak: c.released,
                last: c.released,
                score: 10.0,
                verdict: Reading::Anomalous,
            },
            pre_existing: false,
            no_baseline: false,
            series_start: None,
        });
    findings.chain(evidence.iter().cloned()).collect()
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
