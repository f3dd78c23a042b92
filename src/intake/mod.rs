//! What happens to each alert that comes in: which deployment it is about (its
//! `deploymentId` label, or the registered deployment on its host), and what it does to that
//! deployment's report. The HTTP handler and the `diagnose` command both decide here.
//!
//! | the deployment's report | a firing alert | a resolved alert |
//! |---|---|---|
//! | none | a new report, diagnosed (`started`) | nothing (`skipped`) |
//! | `generating` | recorded on it; the diagnosis or its retry sees it (`attached`) | `resolvedAt` stamped (`resolved`) |
//! | `completed` | recorded on it; no new diagnosis (`recorded`) | `resolvedAt` stamped |
//! | `failed` | recorded, and the report diagnosed again, the failed version kept in history (`restarted`); within `Worker.RerunAfterSeconds` of the failure only recorded (`recorded`) | `resolvedAt` stamped |
//!
//! The same alert sent again (Alertmanager resends until answered) changes nothing
//! (`exists`).
//!
//! An analysis that says *rollback* raises an alert of its own ([`ANALYSIS_ALERT`]) when
//! the deployment's rollback policy and `Release.AutoRollback` ask the service to roll
//! back: the report it opens asks the platform through the durable outbox, once per tag,
//! and the team reads why. A completed report is diagnosed again for it.

pub mod webhook;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::AutoRollback;
use crate::metrics::Metrics;
use crate::model::alert::{Alert, AlertStatus, AlertTime, DeploymentId};
use crate::model::deployment::{host_key, Deployment};
use crate::model::report::{Related, RelatedAlert, Report, ReportStatus};
use crate::model::verdict::Recommendation;
use crate::store::{DeploymentStore, Insert, Rediagnose, ReportStore, Restart, StoreError, Wake};

/// Why an alert is about no deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The alert is neither firing nor resolved.
    NotFiring(String),
    /// A `deploymentId` label that cannot be used.
    BadDeploymentId(String),
}

impl Skip {
    /// Its code for responses and metrics.
    pub fn code(&self) -> SkipCode {
        match self {
            Skip::NotFiring(_) => SkipCode::NotFiring,
            Skip::BadDeploymentId(_) => SkipCode::BadDeploymentId,
        }
    }

    /// A sentence for people.
    pub fn reason(&self) -> String {
        match self {
            Skip::NotFiring(status) => {
                format!("alert status is {status:?}, neither \"firing\" nor \"resolved\"")
            }
            Skip::BadDeploymentId(why) => format!("labels.deploymentId is unusable: {why}"),
        }
    }
}

/// Why an alert was skipped, as the metric labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipCode {
    /// Neither firing nor resolved, or resolved with no report.
    NotFiring,
    /// No `deploymentId` label and no registered deployment on its hosts.
    NoDeploymentId,
    /// A `deploymentId` label that cannot be used.
    BadDeploymentId,
}

impl SkipCode {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipCode::NotFiring => "not_firing",
            SkipCode::NoDeploymentId => "no_deployment_id",
            SkipCode::BadDeploymentId => "bad_deployment_id",
        }
    }
}

/// What an alert did (the `outcome` of the intake answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertOutcome {
    /// A new report, queued for diagnosis.
    Started,
    /// A failed report, queued for diagnosis again.
    Restarted,
    /// Recorded on a report whose diagnosis is queued or running.
    Attached,
    /// Recorded on a completed report.
    Recorded,
    /// The same alert is on the report already.
    Exists,
    /// `resolvedAt` stamped.
    Resolved,
    /// About nothing (see the reason).
    Skipped,
}

impl AlertOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertOutcome::Started => "started",
            AlertOutcome::Restarted => "restarted",
            AlertOutcome::Attached => "attached",
            AlertOutcome::Recorded => "recorded",
            AlertOutcome::Exists => "exists",
            AlertOutcome::Resolved => "resolved",
            AlertOutcome::Skipped => "skipped",
        }
    }

    /// Whether it queued a diagnosis.
    pub fn queued(self) -> bool {
        matches!(self, AlertOutcome::Started | AlertOutcome::Restarted)
    }
}

/// The deployment an alert without a `deploymentId` was attributed to, and by what.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMatch {
    /// The deployment.
    pub deployment: Deployment,
    /// The label that matched (`hostname` or `instance`).
    pub label: &'static str,
    /// Its value.
    pub host: String,
}

impl HostMatch {
    /// For the intake response: `hostname "web-1" within 60 minutes of deployment d-7`.
    pub fn describe(&self, watch_minutes: u64) -> String {
        format!(
            "no deploymentId label; attributed by {} {:?} to deployment {} (deployed {}, within \
             Deployments.WatchMinutes = {watch_minutes})",
            self.label,
            self.host,
            self.deployment.deployment_id,
            self.deployment.started_at.to_rfc3339(),
        )
    }
}

/// Whether an alert fires or ends, and the deployment it names (`None`: to be attributed
/// by host).
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// `firing` (else `resolved`).
    pub firing: bool,
    /// Its `deploymentId` label.
    pub deployment_id: Option<DeploymentId>,
}

/// What an alert is about, or why it is about nothing (no store needed).
pub fn subject(alert: &Alert) -> Result<Subject, Skip> {
    let firing = match &alert.status {
        AlertStatus::Firing => true,
        AlertStatus::Resolved => false,
        AlertStatus::Other(status) => return Err(Skip::NotFiring(status.clone())),
    };
    let deployment_id = match alert.labels.get("deploymentId") {
        None => None,
        Some(raw) => Some(DeploymentId::parse(raw).map_err(Skip::BadDeploymentId)?),
    };
    Ok(Subject {
        firing,
        deployment_id,
    })
}

/// How an alert without a `deploymentId` label was matched to a deployment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attributed {
    /// The deployment.
    pub deployment_id: String,
    /// The label that matched: `hostname` or `instance`.
    pub by: &'static str,
    /// Its value.
    pub host: String,
    /// The match, for people.
    pub reason: String,
}

/// One entry of the intake response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertResult {
    /// Its place in the request.
    pub index: usize,
    /// The deployment it was taken as about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// What it did.
    pub outcome: AlertOutcome,
    /// The new report's id (`started`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// The report's status after the alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ReportStatus>,
    /// Why, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How an alert without a `deploymentId` label was matched to a deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributed: Option<Attributed>,
    /// Why it was skipped.
    #[serde(skip)]
    pub skip: Option<SkipCode>,
}

impl AlertResult {
    fn new(index: usize, outcome: AlertOutcome) -> Self {
        Self {
            index,
            deployment_id: None,
            outcome,
            report_id: None,
            status: None,
            reason: None,
            attributed: None,
            skip: None,
        }
    }

    fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// The intake: stores, and what a new report sets going.
#[derive(Clone)]
pub struct Intake {
    /// Reports.
    pub store: Arc<dyn ReportStore>,
    /// The deployments registry.
    pub deployments: Arc<dyn DeploymentStore>,
    /// Wakes the workers and the evidence pool after a report is queued.
    pub wake: Arc<Wake>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `Deployments.WatchMinutes`.
    pub watch_minutes: u64,
    /// `Worker.RerunAfterSeconds`.
    pub rerun_after: std::time::Duration,
    /// `Report.MaxHistory`.
    pub max_history: u32,
    /// `Release.AutoRollback`.
    pub auto_rollback: AutoRollback,
}

/// The name of the alert an analysis raises when it says *rollback* and the deployment's
/// policy asks the service to roll back.
pub const ANALYSIS_ALERT: &str = "ReleaseAnalysisRollback";

impl Intake {
    /// What a re-diagnosis asked at `now` may do: a person's (`automatic` false) runs
    /// whenever asked; a new alert's re-run of a failed report waits
    /// `Worker.RerunAfterSeconds` after the last failure.
    pub fn restart(&self, now: DateTime<Utc>, automatic: bool) -> Restart {
        let rerun_after = chrono::Duration::from_std(self.rerun_after).unwrap_or_default();
        Restart {
            max_history: self.max_history,
            failed_before: automatic.then(|| now - rerun_after),
            deployment: None,
        }
    }

    /// Re-diagnoses the report of `id` under `restart`: the deployment is read from the
    /// registry again for the new version (a pipeline may have registered it, or changed
    /// it, since), the new version is queued and the history it dropped counted.
    pub async fn rediagnose(
        &self,
        id: &DeploymentId,
        now: DateTime<Utc>,
        mut restart: Restart,
    ) -> Result<Rediagnose, StoreError> {
        restart.deployment = self.deployments.get_deployment(id).await?;
        let answer = self.store.rediagnose(id, now, restart).await?;
        if let Rediagnose::Restarted { dropped, .. } = &answer {
            self.wake.queued();
            if *dropped > 0 {
                self.metrics.history_dropped(*dropped);
            }
        }
        Ok(answer)
    }

    /// Takes one alert: every change it makes is stored before this returns (a `202`
    /// means it is on disk).
    pub async fn take(
        &self,
        index: usize,
        alert: Alert,
        now: DateTime<Utc>,
    ) -> Result<AlertResult, StoreError> {
        let result = self.decide(index, alert, now).await?;
        self.metrics.alert(match (result.outcome, result.skip) {
            (AlertOutcome::Skipped, Some(code)) => code.as_str(),
            (outcome, _) => outcome.as_str(),
        });
        Ok(result)
    }

    /// An analysis of `deployment` said *rollback* for `reasons`: when `Release.AutoRollback`
    /// and the deployment's `rollbackPolicy` ask the service to roll back, an alert
    /// ([`ANALYSIS_ALERT`]) opens its report, whose verdict asks the platform through the
    /// outbox; a completed report that did not say *rollback* is diagnosed again. Once per
    /// deployment and tag: `None` when nothing is asked, or it was asked already.
    pub async fn analysis_says_rollback(
        &self,
        deployment: &Deployment,
        reasons: &[String],
        now: DateTime<Utc>,
    ) -> Result<Option<AlertResult>, StoreError> {
        let asks = deployment
            .rollback_policy
            .as_ref()
            .is_some_and(|p| p.auto_rollback && !p.url.is_empty());
        if self.auto_rollback == AutoRollback::Off || !asks {
            return Ok(None);
        }
        let id = &deployment.deployment_id;
        let report = self.store.get(id).await?;
        if let Some(report) = &report {
            let raised = std::iter::once(&report.alert)
                .chain(report.related_alerts.iter().map(|r| &r.alert))
                .any(|a| a.alertname == ANALYSIS_ALERT && a.tag == deployment.tag);
            if raised {
                return Ok(None);
            }
        }
        let mut alert = Alert {
            // The tag in the key: a new release's alert is never the same alert again.
            key: format!("release_rollback:{}", deployment.tag),
            status: AlertStatus::Firing,
            desc: format!(
                "The release analysis of {} says rollback: {}",
                deployment.tag,
                reasons.join("; ")
            ),
            starts_at: AlertTime::parse(&now.to_rfc3339()),
            severity: "critical".into(),
            alertname: ANALYSIS_ALERT.into(),
            repo_address: deployment.repo_address.clone(),
            tag: deployment.tag.clone(),
            ..Alert::default()
        };
        alert.labels.insert("deploymentId".into(), id.to_string());
        alert.labels.insert("severity".into(), "critical".into());
        alert.annotations.insert(
            "summary".into(),
            "The release analysis says rollback".into(),
        );
        let mut result = self.take(0, alert, now).await?;
        tracing::warn!(
            deployment_id = %id,
            tag = %deployment.tag,
            outcome = result.outcome.as_str(),
            "the analysis says rollback and the deployment's policy asks for it: report opened"
        );
        let judged_rollback = report
            .and_then(|r| r.release)
            .is_some_and(|v| v.recommendation == Recommendation::Rollback);
        if result.outcome == AlertOutcome::Recorded && !judged_rollback {
            if let Rediagnose::Restarted { .. } =
                self.rediagnose(id, now, self.restart(now, false)).await?
            {
                result.outcome = AlertOutcome::Restarted;
            }
        }
        Ok(Some(result))
    }

    async fn decide(
        &self,
        index: usize,
        alert: Alert,
        now: DateTime<Utc>,
    ) -> Result<AlertResult, StoreError> {
        let labelled = alert.labels.get("deploymentId").cloned();
        let skipped = |code: SkipCode, reason: String| {
            let mut r = AlertResult::new(index, AlertOutcome::Skipped).reason(reason);
            r.deployment_id = labelled.clone();
            r.skip = Some(code);
            r
        };
        let subject = match subject(&alert) {
            Ok(s) => s,
            Err(skip) => return Ok(skipped(skip.code(), skip.reason())),
        };
        let (id, attribution) = match subject.deployment_id {
            Some(id) => (id, None),
            None => match self.attribute(&alert, now).await? {
                Some(found) => (found.deployment.deployment_id.clone(), Some(found)),
                None => {
                    return Ok(skipped(
                        SkipCode::NoDeploymentId,
                        self.unattributed_reason(&alert),
                    ))
                }
            },
        };
        let mut result = AlertResult::new(index, AlertOutcome::Skipped);
        result.skip = Some(SkipCode::NotFiring);
        result.deployment_id = Some(id.to_string());
        result.attributed = attribution.as_ref().map(|a| Attributed {
            deployment_id: a.deployment.deployment_id.to_string(),
            by: a.label,
            host: a.host.clone(),
            reason: a.describe(self.watch_minutes),
        });

        if !subject.firing {
            let at = alert.ends_at.at().unwrap_or(now);
            return Ok(if self.store.set_resolved(&id, at).await? {
                tracing::info!(deployment_id = %id, "resolved alert stamped on the report");
                AlertResult {
                    outcome: AlertOutcome::Resolved,
                    ..result
                }
                .reason(format!("resolvedAt set to {}", at.to_rfc3339()))
            } else {
                result.reason(format!(
                    "alert is resolved and deployment {id} has no report: nothing to do"
                ))
            });
        }

        // The store snapshots the registered deployment on the new report (in the same
        // write), so the evidence gathered for it already covers its hosts.
        let mut report = Report::new(id.clone(), alert, now);
        report.deployment = attribution.map(|a| a.deployment);
        if let Insert::Inserted = self.store.insert(&report).await? {
            return Ok(self.started(result, &report));
        }
        let related = RelatedAlert {
            alert: report.alert.clone(),
            received_at: now,
        };
        let rediagnose = format!("POST /reports/{id}/rediagnose to run it again");
        Ok(match self.store.add_related(&id, &related).await? {
            // Deleted between the two writes: this alert starts it afresh.
            Related::NoReport => match self.store.insert(&report).await? {
                Insert::Inserted => self.started(result, &report),
                Insert::Exists(status) => AlertResult {
                    outcome: AlertOutcome::Exists,
                    status: Some(status),
                    ..result
                },
            },
            Related::Duplicate(status) => AlertResult {
                outcome: AlertOutcome::Exists,
                status: Some(status),
                ..result
            }
            .reason(format!(
                "this alert is already on the report ({}); {rediagnose}",
                status.as_str()
            )),
            Related::Added(ReportStatus::Generating) => AlertResult {
                outcome: AlertOutcome::Attached,
                status: Some(ReportStatus::Generating),
                ..result
            }
            .reason("a diagnosis is queued or running; the alert is recorded on the report for it and any retry"),
            Related::Added(ReportStatus::Completed) => AlertResult {
                outcome: AlertOutcome::Recorded,
                status: Some(ReportStatus::Completed),
                ..result
            }
            .reason(format!(
                "the report is completed; the alert is recorded on it as related; {rediagnose}"
            )),
            Related::Added(ReportStatus::Failed) => match self
                .rediagnose(&id, now, self.restart(now, true))
                .await?
            {
                Rediagnose::Restarted {
                    report: restarted, ..
                } => {
                    tracing::info!(deployment_id = %id, version = restarted.version, "failed report diagnosed again for a new alert");
                    AlertResult {
                        outcome: AlertOutcome::Restarted,
                        status: Some(ReportStatus::Generating),
                        ..result
                    }
                    .reason(format!(
                        "the last diagnosis failed; running it again (version {}, the failed one is in history)",
                        restarted.version
                    ))
                }
                Rediagnose::InProgress => AlertResult {
                    outcome: AlertOutcome::Attached,
                    status: Some(ReportStatus::Generating),
                    ..result
                }
                .reason("the failed report was restarted meanwhile; the alert is recorded on it"),
                Rediagnose::NotFound => AlertResult {
                    outcome: AlertOutcome::Exists,
                    ..result
                }
                .reason("the report was deleted meanwhile; send the alert again"),
                Rediagnose::TooSoon(failed_at) => AlertResult {
                    outcome: AlertOutcome::Recorded,
                    status: Some(ReportStatus::Failed),
                    ..result
                }
                .reason(format!(
                    "the last diagnosis failed at {}; a new alert runs it again at most once \
                     in {} s (Worker.RerunAfterSeconds), so the alert is recorded on it; \
                     {rediagnose}",
                    failed_at.to_rfc3339(),
                    self.rerun_after.as_secs()
                )),
            },
        })
    }

    fn started(&self, result: AlertResult, report: &Report) -> AlertResult {
        self.wake.queued();
        tracing::info!(
            deployment_id = %report.deployment_id,
            report_id = %report.id,
            attributed = result.attributed.is_some(),
            "diagnosis queued"
        );
        AlertResult {
            outcome: AlertOutcome::Started,
            report_id: Some(report.id.clone()),
            status: Some(ReportStatus::Generating),
            ..result
        }
    }

    /// The registered deployment an alert without a `deploymentId` label belongs to: the
    /// most recent one on any of its hosts deployed at most `Deployments.WatchMinutes`
    /// before the alert started.
    async fn attribute(
        &self,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<Option<HostMatch>, StoreError> {
        let hosts = alert.hosts();
        if hosts.is_empty() {
            return Ok(None);
        }
        let started = alert.starts_at.at().unwrap_or(now);
        let watch = chrono::Duration::minutes(self.watch_minutes as i64);
        let keys: Vec<String> = hosts.iter().map(|(_, h)| host_key(h)).collect();
        let Some(found) = self
            .deployments
            .latest_on_hosts(&keys, started - watch, started)
            .await?
        else {
            return Ok(None);
        };
        let found_keys = found.host_keys();
        let (label, host) = hosts
            .into_iter()
            .find(|(_, h)| found_keys.contains(&host_key(h)))
            .unwrap_or(("hostname", String::new()));
        Ok(Some(HostMatch {
            deployment: found,
            label,
            host,
        }))
    }

    fn unattributed_reason(&self, alert: &Alert) -> String {
        let hosts = alert.hosts();
        if hosts.is_empty() {
            return "alert has no labels.deploymentId, and no hostname or instance label to \
                    attribute it to a registered deployment"
                .into();
        }
        let named: Vec<String> = hosts.iter().map(|(l, h)| format!("{l} {h:?}")).collect();
        format!(
            "alert has no labels.deploymentId, and no registered deployment on {} was deployed \
             within Deployments.WatchMinutes ({}) before it started",
            named.join(", "),
            self.watch_minutes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(status: &str, id: Option<&str>) -> Alert {
        let mut a = Alert {
            status: AlertStatus::parse(status),
            ..Default::default()
        };
        if let Some(id) = id {
            a.labels.insert("deploymentId".into(), id.into());
        }
        a
    }

    #[test]
    fn firing_and_resolved_alerts_have_a_subject_others_do_not() {
        let s = subject(&alert("Firing", Some("d-1"))).unwrap();
        assert!(s.firing);
        assert_eq!(s.deployment_id.unwrap().as_str(), "d-1");
        let s = subject(&alert("resolved", None)).unwrap();
        assert!(!s.firing && s.deployment_id.is_none());
        assert_eq!(
            subject(&alert("pending", Some("d"))).unwrap_err().code(),
            SkipCode::NotFiring
        );
        assert_eq!(
            subject(&alert("firing", Some("a/b"))).unwrap_err().code(),
            SkipCode::BadDeploymentId
        );
    }
}
