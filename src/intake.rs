//! What happens to each alert that comes in: which deployment it is about (its
//! `deploymentId` label, or the registered deployment on its host), and what it does to that
//! deployment's report. The HTTP handler and the `diagnose` command both decide here.
//!
//! | the deployment's report | a firing alert | a resolved alert |
//! |---|---|---|
//! | none | a new report, diagnosed (`started`) | nothing (`skipped`) |
//! | `generating` | recorded on it; the diagnosis or its retry sees it (`attached`) | `resolvedAt` stamped (`resolved`) |
//! | `completed` | recorded on it; no new diagnosis (`recorded`) | `resolvedAt` stamped |
//! | `failed` | recorded, and the report diagnosed again, the failed version kept in history (`restarted`) | `resolvedAt` stamped |
//!
//! The same alert sent again (Alertmanager resends until answered) changes nothing
//! (`exists`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::alert::{Alert, DeploymentId, Skip};
use crate::deployment::{self, Attribution};
use crate::evidence::Stage;
use crate::metrics::Metrics;
use crate::report::{Related, RelatedAlert, Report, ReportStatus};
use crate::store::{DeploymentStore, Insert, Rediagnose, ReportStore, StoreError};

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
    let firing = alert.status.eq_ignore_ascii_case("firing");
    if !firing && !alert.status.eq_ignore_ascii_case("resolved") {
        return Err(Skip::NotFiring(alert.status.clone()));
    }
    let deployment_id = match alert.labels.get("deploymentId") {
        None => None,
        Some(raw) => Some(DeploymentId::parse(raw).map_err(Skip::BadDeploymentId)?),
    };
    Ok(Subject {
        firing,
        deployment_id,
    })
}

/// One entry of the intake response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertResult {
    /// Its place in the request.
    pub index: usize,
    /// The deployment it was taken as about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// `started`, `restarted`, `attached`, `recorded`, `exists`, `resolved` or `skipped`.
    pub outcome: &'static str,
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
    pub attributed: Option<Value>,
    /// Why it was skipped, as a metric label (`not_firing`, `no_deployment_id`, ...).
    #[serde(skip)]
    pub skip_code: &'static str,
}

impl AlertResult {
    fn new(index: usize, outcome: &'static str) -> Self {
        Self {
            index,
            deployment_id: None,
            outcome,
            report_id: None,
            status: None,
            reason: None,
            attributed: None,
            skip_code: "",
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
    /// Gathers a new report's evidence in the background (`None`: disabled).
    pub evidence: Option<Stage>,
    /// Wakes a worker after a report is written.
    pub wake: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `Deployments.WatchMinutes`.
    pub watch_minutes: u64,
}

/// How often [`QueueGate`] counts the waiting reports in the store.
const QUEUE_RECOUNT: std::time::Duration = std::time::Duration::from_millis(500);

/// `Worker.MaxQueue`: whether intake may queue more work. Counting the waiting reports is
/// a scan, far too slow for the request path under load, so a background task recounts
/// every [`QUEUE_RECOUNT`]; in between, reports this process queues are added.
pub struct QueueGate {
    max: u64,
    depth: std::sync::atomic::AtomicU64,
}

impl QueueGate {
    /// A gate at `max` waiting reports (0: none); with a limit, the recount runs until
    /// the gate is dropped.
    pub fn start(max: u64, store: Arc<dyn ReportStore>) -> Arc<Self> {
        let gate = Arc::new(Self {
            max,
            depth: std::sync::atomic::AtomicU64::new(0),
        });
        if max > 0 {
            let weak = Arc::downgrade(&gate);
            tokio::spawn(async move {
                loop {
                    let depth = store.queue_depth(Utc::now()).await;
                    let Some(gate) = weak.upgrade() else { return };
                    match depth {
                        Ok(n) => gate.depth.store(n, std::sync::atomic::Ordering::Relaxed),
                        Err(e) => tracing::warn!(error = %e, "counting the queue failed"),
                    }
                    drop(gate);
                    tokio::time::sleep(QUEUE_RECOUNT).await;
                }
            });
        }
        gate
    }

    /// `Err(depth)` when at least `max` reports are waiting.
    pub fn check(&self) -> Result<(), u64> {
        let depth = self.depth.load(std::sync::atomic::Ordering::Relaxed);
        if self.max > 0 && depth >= self.max {
            Err(depth)
        } else {
            Ok(())
        }
    }

    /// Counts reports this process just queued, until the next recount.
    pub fn queued(&self, n: u64) {
        self.depth
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A time of an alert (RFC 3339); Alertmanager's zero time and bad text are `None`.
fn alert_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0)
}

impl Intake {
    /// Takes one alert: every change it makes is stored before this returns (a `202`
    /// means it is on disk).
    pub async fn take(
        &self,
        index: usize,
        alert: Alert,
        now: DateTime<Utc>,
    ) -> Result<AlertResult, StoreError> {
        let result = self.decide(index, alert, now).await?;
        self.metrics.alert(match result.outcome {
            "skipped" => result.skip_code,
            outcome => outcome,
        });
        Ok(result)
    }

    async fn decide(
        &self,
        index: usize,
        alert: Alert,
        now: DateTime<Utc>,
    ) -> Result<AlertResult, StoreError> {
        let labelled = alert.labels.get("deploymentId").cloned();
        let skipped = |code: &'static str, reason: String| {
            let mut r = AlertResult::new(index, "skipped").reason(reason);
            r.deployment_id = labelled.clone();
            r.skip_code = code;
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
                        "no_deployment_id",
                        self.unattributed_reason(&alert),
                    ))
                }
            },
        };
        let mut result = AlertResult::new(index, "skipped");
        result.skip_code = "not_firing";
        result.deployment_id = Some(id.to_string());
        result.attributed = attribution.as_ref().map(|a| {
            json!({
                "deploymentId": a.deployment.deployment_id,
                "by": a.label,
                "host": a.host,
                "reason": a.describe(self.watch_minutes),
            })
        });

        if !subject.firing {
            let at = alert_time(&alert.ends_at).unwrap_or(now);
            return Ok(if self.store.set_resolved(&id, at).await? {
                tracing::info!(deployment_id = %id, "resolved alert stamped on the report");
                AlertResult {
                    outcome: "resolved",
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
                    outcome: "exists",
                    status: Some(status),
                    ..result
                },
            },
            Related::Duplicate(status) => AlertResult {
                outcome: "exists",
                status: Some(status),
                ..result
            }
            .reason(format!(
                "this alert is already on the report ({}); {rediagnose}",
                status.as_str()
            )),
            Related::Added(ReportStatus::Generating) => AlertResult {
                outcome: "attached",
                status: Some(ReportStatus::Generating),
                ..result
            }
            .reason("a diagnosis is queued or running; the alert is recorded on the report for it and any retry"),
            Related::Added(ReportStatus::Completed) => AlertResult {
                outcome: "recorded",
                status: Some(ReportStatus::Completed),
                ..result
            }
            .reason(format!(
                "the report is completed; the alert is recorded on it as related; {rediagnose}"
            )),
            Related::Added(ReportStatus::Failed) => match self.store.rediagnose(&id, now).await? {
                Rediagnose::Restarted(restarted) => {
                    self.set_going(&restarted);
                    tracing::info!(deployment_id = %id, version = restarted.version, "failed report diagnosed again for a new alert");
                    AlertResult {
                        outcome: "restarted",
                        status: Some(ReportStatus::Generating),
                        ..result
                    }
                    .reason(format!(
                        "the last diagnosis failed; running it again (version {}, the failed one is in history)",
                        restarted.version
                    ))
                }
                Rediagnose::InProgress => AlertResult {
                    outcome: "attached",
                    status: Some(ReportStatus::Generating),
                    ..result
                }
                .reason("the failed report was restarted meanwhile; the alert is recorded on it"),
                Rediagnose::NotFound => AlertResult {
                    outcome: "exists",
                    ..result
                }
                .reason("the report was deleted meanwhile; send the alert again"),
            },
        })
    }

    fn set_going(&self, report: &Report) {
        if let Some(stage) = &self.evidence {
            stage.spawn(report);
        }
        self.wake.notify_one();
    }

    fn started(&self, result: AlertResult, report: &Report) -> AlertResult {
        self.set_going(report);
        tracing::info!(
            deployment_id = %report.deployment_id,
            report_id = %report.id,
            attributed = result.attributed.is_some(),
            "diagnosis queued"
        );
        AlertResult {
            outcome: "started",
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
    ) -> Result<Option<Attribution>, StoreError> {
        let hosts = deployment::alert_hosts(alert);
        if hosts.is_empty() {
            return Ok(None);
        }
        let started = alert_time(&alert.starts_at).unwrap_or(now);
        let watch = chrono::Duration::minutes(self.watch_minutes as i64);
        let keys: Vec<String> = hosts.iter().map(|(_, h)| deployment::host_key(h)).collect();
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
            .find(|(_, h)| found_keys.contains(&deployment::host_key(h)))
            .unwrap_or(("hostname", String::new()));
        Ok(Some(Attribution {
            deployment: found,
            label,
            host,
        }))
    }

    fn unattributed_reason(&self, alert: &Alert) -> String {
        let hosts = deployment::alert_hosts(alert);
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
            status: status.into(),
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
            "not_firing"
        );
        assert_eq!(
            subject(&alert("firing", Some("a/b"))).unwrap_err().code(),
            "bad_deployment_id"
        );
    }

    #[test]
    fn alertmanagers_zero_time_is_no_time() {
        assert!(alert_time("0001-01-01T00:00:00Z").is_none());
        assert!(alert_time("2026-11-25T10:00:00Z").is_some());
        assert!(alert_time("soon").is_none());
    }
}
