//! The documents of the MongoDB store: reports, their history and deployments as BSON,
//! and the conversions to and from the model.

use chrono::{DateTime, TimeZone, Utc};
use mongodb::bson::{self, doc, Bson, Document};
use serde::{Deserialize, Serialize};

use crate::model::alert::{Alert, DeploymentId};
use crate::model::changes::Changes;
use crate::model::deployment::{
    Deployment, Host, RedQueries, RollbackPolicy, Strategy, Thresholds,
};
use crate::model::evidence::{EvidenceItem, Unmeasured};
use crate::model::notify::{self, Notification};
use crate::model::report::{
    Engine, Feedback, RelatedAlert, Report, ReportBody, ReportState, ReportStatus, RunnerKind,
    Usage,
};
use crate::model::verdict::ReleaseVerdict;
use crate::store::rules;
use crate::store::StoreError;

/// A deployment as stored in MongoDB: the design's Deployment collection, times as BSON
/// dates (for its `{createdTime: -1}` index and the attribution range query). A report's
/// snapshot has the same shape, so the insert can copy it from the collection as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeploymentDoc {
    pub(super) deployment_id: String,
    #[serde(default)]
    pub(super) service: String,
    #[serde(default)]
    pub(super) repo_address: String,
    #[serde(default)]
    pub(super) tag: String,
    #[serde(default)]
    pub(super) previous_tag: String,
    #[serde(default)]
    pub(super) commit: String,
    #[serde(default)]
    pub(super) hosts: Vec<Host>,
    /// Hosts as attribution matches them.
    #[serde(default)]
    pub(super) host_keys: Vec<String>,
    #[serde(default)]
    pub(super) strategy: Strategy,
    #[serde(default)]
    pub(super) environment: String,
    /// When the rollout started; named as before `startedAt` existed, for the
    /// `{hostKeys: 1, deployedAt: -1}` index.
    pub(super) deployed_at: bson::DateTime,
    #[serde(default)]
    pub(super) finished_at: Option<bson::DateTime>,
    #[serde(default)]
    pub(super) red: Option<RedQueries>,
    #[serde(default)]
    pub(super) thresholds: Option<Thresholds>,
    #[serde(default)]
    pub(super) url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) rollback_policy: Option<RollbackPolicy>,
    /// The rollback policy's secret, beside the policy (which never serializes it); left
    /// out of a report's snapshot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) rollback_secret: String,
    pub(super) created_time: bson::DateTime,
    pub(super) updated_time: bson::DateTime,
}

/// A report's deployment snapshot as read: the collection's shape, or, in reports
/// written before the snapshot was copied server-side, the API's shape.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Snapshot {
    Doc(DeploymentDoc),
    Api(Deployment),
}

pub(super) fn read_snapshot<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DeploymentDoc>, D::Error> {
    let snapshot = Option::<Snapshot>::deserialize(d)?;
    Ok(match snapshot {
        None => None,
        Some(Snapshot::Doc(doc)) => Some(doc),
        Some(Snapshot::Api(api)) => Some(DeploymentDoc::snapshot(&api)),
    })
}

impl DeploymentDoc {
    pub(super) fn from_deployment(d: &Deployment) -> Self {
        Self {
            deployment_id: d.deployment_id.as_str().to_owned(),
            service: d.service.clone(),
            repo_address: d.repo_address.clone(),
            tag: d.tag.clone(),
            previous_tag: d.previous_tag.clone(),
            commit: d.commit.clone(),
            hosts: d.hosts.clone(),
            host_keys: d.host_keys(),
            strategy: d.strategy,
            environment: d.environment.clone(),
            deployed_at: bdate(d.started_at),
            finished_at: d.finished_at.map(bdate),
            red: d.red.clone(),
            thresholds: d.thresholds,
            url: d.url.clone(),
            rollback_policy: d.rollback_policy.clone(),
            rollback_secret: d
                .rollback_policy
                .as_ref()
                .map(|p| p.secret.clone())
                .unwrap_or_default(),
            created_time: bdate(d.created_time),
            updated_time: bdate(d.updated_time),
        }
    }

    /// A report's copy: the same, without the rollback policy's secret.
    pub(super) fn snapshot(d: &Deployment) -> Self {
        Self {
            rollback_secret: String::new(),
            ..Self::from_deployment(d)
        }
    }

    pub(super) fn into_deployment(self) -> Result<Deployment, StoreError> {
        Ok(Deployment {
            deployment_id: DeploymentId::parse(&self.deployment_id)
                .map_err(|e| corrupt_doc(&self.deployment_id, e))?,
            service: self.service,
            repo_address: self.repo_address,
            tag: self.tag,
            previous_tag: self.previous_tag,
            commit: self.commit,
            hosts: self.hosts,
            strategy: self.strategy,
            environment: self.environment,
            started_at: cdate(self.deployed_at),
            finished_at: self.finished_at.map(cdate),
            red: self.red,
            thresholds: self.thresholds,
            url: self.url,
            rollback_policy: self.rollback_policy.map(|p| RollbackPolicy {
                secret: self.rollback_secret,
                ..p
            }),
            created_time: cdate(self.created_time),
            updated_time: cdate(self.updated_time),
        })
    }
}

/// A report as stored in MongoDB.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReportDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) deployment_id: String,
    pub(super) content: String,
    pub(super) status: ReportStatus,
    #[serde(default)]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) raw_output: Option<String>,
    pub(super) alert: Alert,
    #[serde(default)]
    pub(super) runner: Option<String>,
    pub(super) attempts: u32,
    pub(super) version: u32,
    pub(super) created_time: bson::DateTime,
    pub(super) updated_time: bson::DateTime,
    #[serde(default)]
    pub(super) started_time: Option<bson::DateTime>,
    #[serde(default)]
    pub(super) evidence_error: Option<String>,
    #[serde(default)]
    pub(super) evidence_until: Option<bson::DateTime>,
    #[serde(default)]
    pub(super) duration_ms: Option<i64>,
    #[serde(default)]
    pub(super) usage: Option<Usage>,
    #[serde(default)]
    pub(super) evidence: Option<Vec<EvidenceItem>>,
    #[serde(default)]
    pub(super) evidence_unmeasured: Option<Unmeasured>,
    #[serde(default)]
    pub(super) release: Option<ReleaseVerdict>,
    #[serde(default)]
    pub(super) engine: Option<Engine>,
    #[serde(default)]
    pub(super) ai_error: Option<String>,
    #[serde(default)]
    pub(super) feedback: Option<Feedback>,
    #[serde(default, deserialize_with = "read_snapshot")]
    pub(super) deployment: Option<DeploymentDoc>,
    #[serde(default)]
    pub(super) changes: Option<Changes>,
    #[serde(default)]
    pub(super) related_alerts: Vec<RelatedAlert>,
    /// Counts the changes of `relatedAlerts`: a further alert is added by compare-and-swap
    /// on it, following [`rules::merge_related`].
    #[serde(default)]
    pub(super) related_rev: Option<i64>,
    /// The outbox: notifications of this report's versions.
    #[serde(default)]
    pub(super) notifications: Vec<Notification>,
    /// When the earliest pending notification is due (absent: none; never `null`, which
    /// sorts below every date and would keep a finish's `$min` from lowering it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) notify_due: Option<bson::DateTime>,
    /// Until when a delivery holds the notifications.
    #[serde(default)]
    pub(super) notify_until: Option<bson::DateTime>,
    /// Counts the changes of `notifications`: a delivery writes them back by
    /// compare-and-swap on it, and a finished report adds to them by `$push`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) notify_rev: Option<i64>,
    #[serde(default)]
    pub(super) resolved_at: Option<bson::DateTime>,
    #[serde(default)]
    pub(super) lease_owner: Option<String>,
    #[serde(default)]
    pub(super) lease_until: Option<bson::DateTime>,
}

/// A previous version as stored in MongoDB.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HistoryDoc {
    pub(super) deployment_id: String,
    pub(super) version: u32,
    pub(super) status: ReportStatus,
    pub(super) content: String,
    #[serde(default)]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) runner: Option<String>,
    pub(super) attempts: u32,
    pub(super) created_time: bson::DateTime,
    pub(super) updated_time: bson::DateTime,
    #[serde(default)]
    pub(super) duration_ms: Option<i64>,
    #[serde(default)]
    pub(super) feedback: Option<Feedback>,
}

pub(super) fn corrupt_doc(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    }
}

/// The design's `content` text of a version ([`rules::content_text`]).
pub(super) fn content(id: &str, body: Option<&ReportBody>) -> Result<String, StoreError> {
    rules::content_text(body).map_err(|e| corrupt_doc(id, e))
}

/// The answer in `content` ([`rules::body_of`]).
pub(super) fn body(
    id: &str,
    status: ReportStatus,
    content: &str,
) -> Result<Option<ReportBody>, StoreError> {
    rules::body_of(status, content).map_err(|e| corrupt_doc(id, e))
}

/// A stored runner name ([`rules::runner_of`]).
pub(super) fn runner(id: &str, stored: Option<&str>) -> Result<Option<RunnerKind>, StoreError> {
    rules::runner_of(stored).map_err(|e| corrupt_doc(id, e))
}

/// A stored report document, decoded; an error names the report.
pub(super) fn decode(doc: Document) -> Result<ReportDoc, StoreError> {
    let id = doc.get("_id").map_or_else(
        || "(no _id)".to_owned(),
        |v| v.to_string().trim_matches('"').to_owned(),
    );
    serde_path_to_error::deserialize(bson::Deserializer::new(Bson::Document(doc)))
        .map_err(|e| corrupt_doc(&id, format!("{}: {}", e.path(), e.inner())))
}

/// A stored report document, as a report.
pub(super) fn report_of(doc: Document) -> Result<Report, StoreError> {
    decode(doc)?.into_report()
}

pub(super) fn bdate(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

pub(super) fn cdate(t: bson::DateTime) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .unwrap_or_default()
}

impl ReportDoc {
    pub(super) fn from_report(r: &Report) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id.clone(),
            deployment_id: r.deployment_id.as_str().to_owned(),
            content: content(&r.id, r.body())?,
            status: r.status(),
            error: r.error().map(str::to_owned),
            raw_output: r.raw_output.clone(),
            alert: r.alert.clone(),
            runner: r.runner.map(|k| k.as_str().to_owned()),
            attempts: r.attempts,
            version: r.version,
            created_time: bdate(r.created_time),
            updated_time: bdate(r.updated_time),
            started_time: r.started_time.map(bdate),
            evidence_error: r.evidence_error.clone(),
            evidence_until: r.evidence_until.map(bdate),
            duration_ms: r.duration_ms.map(|d| d as i64),
            usage: r.usage.clone(),
            evidence: r.evidence.clone(),
            evidence_unmeasured: r.unmeasured.clone(),
            release: r.release.clone(),
            engine: r.engine(),
            ai_error: r.ai_error().map(str::to_owned),
            feedback: r.feedback.clone(),
            deployment: r.deployment.as_ref().map(DeploymentDoc::snapshot),
            changes: r.changes.clone(),
            related_alerts: r.related_alerts.clone(),
            related_rev: None,
            notifications: r.notifications.clone(),
            notify_due: notify::due(&r.notifications).map(bdate),
            notify_until: None,
            notify_rev: None,
            resolved_at: r.resolved_at.map(bdate),
            lease_owner: r.lease_owner.clone(),
            lease_until: r.lease_until.map(bdate),
        })
    }

    pub(super) fn into_report(self) -> Result<Report, StoreError> {
        let id = self.id;
        let deployment_id =
            DeploymentId::parse(&self.deployment_id).map_err(|e| corrupt_doc(&id, e))?;
        let state = ReportState::from_parts(
            self.status,
            body(&id, self.status, &self.content)?,
            self.error,
            self.engine,
            self.ai_error,
        )
        .map_err(|e| corrupt_doc(&id, e))?;
        Ok(Report {
            state,
            runner: runner(&id, self.runner.as_deref())?,
            deployment: self
                .deployment
                .map(DeploymentDoc::into_deployment)
                .transpose()?,
            id,
            deployment_id,
            raw_output: self.raw_output,
            alert: self.alert,
            attempts: self.attempts,
            version: self.version,
            created_time: cdate(self.created_time),
            updated_time: cdate(self.updated_time),
            started_time: self.started_time.map(cdate),
            duration_ms: self.duration_ms.map(|d| d.max(0) as u64),
            usage: self.usage,
            evidence: self.evidence,
            unmeasured: self.evidence_unmeasured,
            release: self.release,
            notifications: self.notifications,
            evidence_error: self.evidence_error,
            evidence_until: self.evidence_until.map(cdate),
            feedback: self.feedback,
            changes: self.changes,
            related_alerts: self.related_alerts,
            resolved_at: self.resolved_at.map(cdate),
            lease_owner: self.lease_owner,
            lease_until: self.lease_until.map(cdate),
        })
    }
}
