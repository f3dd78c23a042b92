//! The MongoDB store, as the design lays it out: collection `reports` with
//! `{deploymentId: 1}` unique, `{createdTime: -1}` and `{status: 1, updatedTime: -1}`
//! (definitions in `migrations/mongo/`), plus `report_history`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::rules::{self, Merge};
use super::{
    BudgetStore, DeploymentStore, Insert, ListFilter, Page, Rediagnose, ReportStore, Restart,
    StoreError, Upsert,
};
use crate::model::alert::{Alert, DeploymentId};
use crate::model::budget::{BudgetLedger, Caps, Exhausted};
use crate::model::changes::Changes;
use crate::model::deployment::{
    Deployment, Host, RedQueries, RollbackPolicy, Strategy, Thresholds,
};
use crate::model::evidence::{EvidenceItem, Gathered, Unmeasured};
use crate::model::notify::{self, Notification};
use crate::model::report::{
    Engine, Feedback, Finish, HistoryEntry, Related, RelatedAlert, Report, ReportBody,
    ReportStatus, RunnerKind, Usage,
};
use crate::model::verdict::ReleaseVerdict;

/// Index definitions, in order; creating an index that exists is a no-op.
const INDEXES: &[(&str, &str)] = &[
    (
        "migrations/mongo/0001_indexes.json",
        include_str!("../../migrations/mongo/0001_indexes.json"),
    ),
    (
        "migrations/mongo/0002_deployments.json",
        include_str!("../../migrations/mongo/0002_deployments.json"),
    ),
    (
        "migrations/mongo/0003_evidence_queue.json",
        include_str!("../../migrations/mongo/0003_evidence_queue.json"),
    ),
    (
        "migrations/mongo/0004_release_verdict.json",
        include_str!("../../migrations/mongo/0004_release_verdict.json"),
    ),
    (
        "migrations/mongo/0005_outbox.json",
        include_str!("../../migrations/mongo/0005_outbox.json"),
    ),
];
/// Compare-and-swap rounds before a change under contention gives up.
const MAX_CAS_ROUNDS: usize = 16;
const REPORTS: &str = "reports";
const HISTORY: &str = "report_history";
/// The one document readiness writes.
const LIVENESS: &str = "liveness";
const DEPLOYMENTS: &str = "deployments";
const BUDGET: &str = "budget";
/// The ledger's document.
const LEDGER: &str = "ai";

/// A deployment as stored in MongoDB: the design's Deployment collection, times as BSON
/// dates (for its `{createdTime: -1}` index and the attribution range query). A report's
/// snapshot has the same shape, so the insert can copy it from the collection as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentDoc {
    deployment_id: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    repo_address: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    previous_tag: String,
    #[serde(default)]
    commit: String,
    #[serde(default)]
    hosts: Vec<Host>,
    /// Hosts as attribution matches them.
    #[serde(default)]
    host_keys: Vec<String>,
    #[serde(default)]
    strategy: Strategy,
    #[serde(default)]
    environment: String,
    /// When the rollout started; named as before `startedAt` existed, for the
    /// `{hostKeys: 1, deployedAt: -1}` index.
    deployed_at: bson::DateTime,
    #[serde(default)]
    finished_at: Option<bson::DateTime>,
    #[serde(default)]
    red: Option<RedQueries>,
    #[serde(default)]
    thresholds: Option<Thresholds>,
    #[serde(default)]
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollback_policy: Option<RollbackPolicy>,
    /// The rollback policy's secret, beside the policy (which never serializes it); left
    /// out of a report's snapshot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    rollback_secret: String,
    created_time: bson::DateTime,
    updated_time: bson::DateTime,
}

/// A report's deployment snapshot as read: the collection's shape, or, in reports
/// written before the snapshot was copied server-side, the API's shape.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Snapshot {
    Doc(DeploymentDoc),
    Api(Deployment),
}

fn read_snapshot<'de, D: serde::Deserializer<'de>>(
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
    fn from_deployment(d: &Deployment) -> Self {
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
    fn snapshot(d: &Deployment) -> Self {
        Self {
            rollback_secret: String::new(),
            ..Self::from_deployment(d)
        }
    }

    fn into_deployment(self) -> Result<Deployment, StoreError> {
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
struct ReportDoc {
    #[serde(rename = "_id")]
    id: String,
    deployment_id: String,
    content: String,
    status: ReportStatus,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    raw_output: Option<String>,
    alert: Alert,
    #[serde(default)]
    runner: Option<String>,
    attempts: u32,
    version: u32,
    created_time: bson::DateTime,
    updated_time: bson::DateTime,
    #[serde(default)]
    started_time: Option<bson::DateTime>,
    #[serde(default)]
    evidence_error: Option<String>,
    #[serde(default)]
    evidence_until: Option<bson::DateTime>,
    #[serde(default)]
    duration_ms: Option<i64>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    evidence: Option<Vec<EvidenceItem>>,
    #[serde(default)]
    evidence_unmeasured: Option<Unmeasured>,
    #[serde(default)]
    release: Option<ReleaseVerdict>,
    #[serde(default)]
    engine: Option<Engine>,
    #[serde(default)]
    ai_error: Option<String>,
    #[serde(default)]
    feedback: Option<Feedback>,
    #[serde(default, deserialize_with = "read_snapshot")]
    deployment: Option<DeploymentDoc>,
    #[serde(default)]
    changes: Option<Changes>,
    #[serde(default)]
    related_alerts: Vec<RelatedAlert>,
    /// Counts the changes of `relatedAlerts`: a further alert is added by compare-and-swap
    /// on it, following [`rules::merge_related`].
    #[serde(default)]
    related_rev: Option<i64>,
    /// The outbox: notifications of this report's versions.
    #[serde(default)]
    notifications: Vec<Notification>,
    /// When the earliest pending notification is due (absent: none; never `null`, which
    /// sorts below every date and would keep a finish's `$min` from lowering it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notify_due: Option<bson::DateTime>,
    /// Until when a delivery holds the notifications.
    #[serde(default)]
    notify_until: Option<bson::DateTime>,
    /// Counts the changes of `notifications`: a delivery writes them back by
    /// compare-and-swap on it, and a finished report adds to them by `$push`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notify_rev: Option<i64>,
    #[serde(default)]
    resolved_at: Option<bson::DateTime>,
    #[serde(default)]
    lease_owner: Option<String>,
    #[serde(default)]
    lease_until: Option<bson::DateTime>,
}

/// A previous version as stored in MongoDB.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryDoc {
    deployment_id: String,
    version: u32,
    status: ReportStatus,
    content: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    runner: Option<String>,
    attempts: u32,
    created_time: bson::DateTime,
    updated_time: bson::DateTime,
    #[serde(default)]
    duration_ms: Option<i64>,
    #[serde(default)]
    feedback: Option<Feedback>,
}

#[derive(Deserialize)]
struct IndexDef {
    collection: String,
    name: String,
    keys: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    unique: bool,
}

fn corrupt_doc(id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    }
}

/// The design's `content` text of a version ([`rules::content_text`]).
fn content(id: &str, body: Option<&ReportBody>) -> Result<String, StoreError> {
    rules::content_text(body).map_err(|e| corrupt_doc(id, e))
}

/// The answer in `content` ([`rules::body_of`]).
fn body(id: &str, status: ReportStatus, content: &str) -> Result<Option<ReportBody>, StoreError> {
    rules::body_of(status, content).map_err(|e| corrupt_doc(id, e))
}

/// A stored runner name ([`rules::runner_of`]).
fn runner(id: &str, stored: Option<&str>) -> Result<Option<RunnerKind>, StoreError> {
    rules::runner_of(stored).map_err(|e| corrupt_doc(id, e))
}

/// A stored report document, decoded; an error names the report.
fn decode(doc: Document) -> Result<ReportDoc, StoreError> {
    let id = doc.get("_id").map_or_else(
        || "(no _id)".to_owned(),
        |v| v.to_string().trim_matches('"').to_owned(),
    );
    serde_path_to_error::deserialize(bson::Deserializer::new(Bson::Document(doc)))
        .map_err(|e| corrupt_doc(&id, format!("{}: {}", e.path(), e.inner())))
}

/// A stored report document, as a report.
fn report_of(doc: Document) -> Result<Report, StoreError> {
    decode(doc)?.into_report()
}

fn bdate(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

fn cdate(t: bson::DateTime) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .unwrap_or_default()
}

impl ReportDoc {
    fn from_report(r: &Report) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id.clone(),
            deployment_id: r.deployment_id.as_str().to_owned(),
            content: content(&r.id, r.body.as_ref())?,
            status: r.status,
            error: r.error.clone(),
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
            engine: r.engine,
            ai_error: r.ai_error.clone(),
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

    fn into_report(self) -> Result<Report, StoreError> {
        let id = self.id;
        let deployment_id =
            DeploymentId::parse(&self.deployment_id).map_err(|e| corrupt_doc(&id, e))?;
        Ok(Report {
            body: body(&id, self.status, &self.content)?,
            runner: runner(&id, self.runner.as_deref())?,
            deployment: self
                .deployment
                .map(DeploymentDoc::into_deployment)
                .transpose()?,
            id,
            deployment_id,
            status: self.status,
            error: self.error,
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
            engine: self.engine,
            ai_error: self.ai_error,
            feedback: self.feedback,
            changes: self.changes,
            related_alerts: self.related_alerts,
            resolved_at: self.resolved_at.map(cdate),
            lease_owner: self.lease_owner,
            lease_until: self.lease_until.map(cdate),
        })
    }
}

/// Reports in MongoDB.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    reports: Collection<ReportDoc>,
    /// The same collection, read as plain documents: one that cannot be read back is an
    /// error naming its report, not a driver error naming nothing.
    docs: Collection<Document>,
    history: Collection<HistoryDoc>,
    deployments: Collection<DeploymentDoc>,
}

impl MongoStore {
    /// Sets `field` of version `version` while its status matches `status`; `false` when
    /// it does not (finished, deleted or diagnosed again meanwhile).
    async fn set_field(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        status: Bson,
        field: &str,
        value: &impl Serialize,
    ) -> Result<bool, StoreError> {
        let value = bson::to_bson(value).map_err(|e| StoreError::Corrupt {
            id: deployment_id.to_string(),
            message: e.to_string(),
        })?;
        let result = self
            .reports
            .update_one(
                doc! { "deploymentId": deployment_id.as_str(), "version": i64::from(version), "status": status },
                doc! { "$set": { field: value } },
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    /// Connects (lazily: the first operation reaches the server).
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url).await?;
        options
            .app_name
            .get_or_insert_with(|| "deploy-diagnosis".into());
        // The driver's 30 s default would make /readyz and every request hang that long
        // when the server is down; five seconds tells the same story sooner.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        let db = Client::with_options(options)?.database(database);
        Ok(Self {
            reports: db.collection(REPORTS),
            docs: db.collection(REPORTS),
            history: db.collection(HISTORY),
            deployments: db.collection(DEPLOYMENTS),
            db,
        })
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == 11000,
        ErrorKind::Command(ce) => ce.code == 11000,
        _ => false,
    }
}

/// The filter of a page: created before `before`, and after the cursor by
/// `(createdTime, key)`.
fn page_query(page: &Page, key: &str) -> Document {
    let mut clauses = Vec::new();
    if let Some(before) = page.before {
        clauses.push(doc! { "createdTime": { "$lt": bdate(before) } });
    }
    if let Some(after) = &page.after {
        let t = bdate(after.created_time);
        clauses.push(doc! { "$or": [
            { "createdTime": { "$lt": t } },
            { "createdTime": t, key: { "$lt": &after.key } },
        ] });
    }
    match clauses.len() {
        0 => Document::new(),
        _ => doc! { "$and": clauses },
    }
}

/// A finished report's update: `fields`, its release verdict, and its notifications
/// pushed onto the outbox in the same write (`notifyDue` lowered to the earliest).
fn finish_update(
    fields: Document,
    deployment_id: &DeploymentId,
    f: &Finish,
) -> Result<Document, StoreError> {
    let mut update = set_release(fields, deployment_id, f.release.as_ref())?;
    if let Some(due) = notify::due(&f.notify) {
        let each = bson::to_bson(&f.notify).map_err(|e| corrupt_doc(deployment_id.as_str(), e))?;
        update.insert("$push", doc! { "notifications": { "$each": each } });
        update.insert("$min", doc! { "notifyDue": bdate(due) });
        update.insert("$inc", doc! { "notifyRev": 1_i64 });
    }
    Ok(update)
}

/// A `$set` of `fields`, and of the release verdict when there is one (else the stored
/// one stays).
fn set_release(
    mut fields: Document,
    deployment_id: &DeploymentId,
    release: Option<&ReleaseVerdict>,
) -> Result<Document, StoreError> {
    if let Some(release) = release {
        let value = bson::to_bson(release).map_err(|e| corrupt_doc(deployment_id.as_str(), e))?;
        fields.insert("release", value);
    }
    Ok(doc! { "$set": fields })
}

/// Versions still waiting for their evidence.
fn needs_evidence() -> Document {
    doc! {
        "status": ReportStatus::Generating.as_str(),
        "evidence": Bson::Null,
        "evidenceError": Bson::Null,
    }
}

fn evidence_lease_free(now: DateTime<Utc>) -> Document {
    doc! { "$or": [ { "evidenceUntil": Bson::Null }, { "evidenceUntil": { "$lt": bdate(now) } } ] }
}

fn live_lease_free(now: DateTime<Utc>) -> Document {
    doc! {
        "status": ReportStatus::Generating.as_str(),
        "$or": [ { "leaseUntil": Bson::Null }, { "leaseUntil": { "$lt": bdate(now) } } ],
    }
}

#[async_trait]
impl ReportStore for MongoStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut defs: Vec<IndexDef> = Vec::new();
        for (file, json) in INDEXES {
            defs.extend(serde_json::from_str::<Vec<IndexDef>>(json).map_err(|e| {
                StoreError::Corrupt {
                    id: (*file).into(),
                    message: e.to_string(),
                }
            })?);
        }
        for def in defs {
            let keys = bson::to_document(&def.keys).map_err(|e| StoreError::Corrupt {
                id: def.name.clone(),
                message: e.to_string(),
            })?;
            let options = IndexOptions::builder()
                .name(def.name)
                .unique(def.unique.then_some(true))
                .build();
            let model = IndexModel::builder().keys(keys).options(options).build();
            self.db
                .collection::<Document>(&def.collection)
                .create_index(model)
                .await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A write, acknowledged as every other one is: a primary that cannot take writes
        // (no majority, a full disk) is not ready, whatever `ping` says.
        self.db
            .collection::<Document>(LIVENESS)
            .update_one(
                doc! { "_id": "readiness" },
                doc! { "$set": { "at": bdate(Utc::now()) } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn insert(&self, report: &Report) -> Result<Insert, StoreError> {
        let id = report.deployment_id.as_str();
        let entry =
            bson::to_document(&ReportDoc::from_report(report)?).map_err(|e| corrupt_doc(id, e))?;
        // One server-side command takes the registered deployment's snapshot and inserts
        // the report, so a registration cannot fall between a read and the insert: the
        // report document is looked up against `deployments` and merged into `reports` on
        // the unique `deploymentId`, keeping a report that is there already.
        let mut pipeline = vec![doc! { "$documents": [entry] }];
        if report.deployment.is_none() {
            pipeline.extend([
                doc! { "$lookup": {
                    "from": DEPLOYMENTS, "localField": "deploymentId",
                    "foreignField": "deploymentId", "as": "registered",
                } },
                doc! { "$set": { "deployment": { "$arrayElemAt": ["$registered", 0] } } },
                doc! { "$unset": ["registered", "deployment._id", "deployment.rollbackSecret"] },
            ]);
        }
        pipeline.push(doc! { "$merge": {
            "into": REPORTS, "on": "deploymentId",
            "whenMatched": "keepExisting", "whenNotMatched": "insert",
        } });
        match self.db.aggregate(pipeline).await {
            Ok(_) => {}
            // Two inserts of one deployment at once: the other one won.
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(
            match self.docs.find_one(doc! { "deploymentId": id }).await? {
                Some(existing) if existing.get_str("_id").ok() != Some(report.id.as_str()) => {
                    let status = existing.get_str("status").unwrap_or_default();
                    Insert::Exists(
                        ReportStatus::parse(status)
                            .ok_or_else(|| corrupt_doc(id, format!("unknown status {status:?}")))?,
                    )
                }
                // Ours (or deleted at once after it was stored).
                _ => Insert::Inserted,
            },
        )
    }

    async fn get(&self, deployment_id: &DeploymentId) -> Result<Option<Report>, StoreError> {
        self.docs
            .find_one(doc! { "deploymentId": deployment_id.as_str() })
            .await?
            .map(report_of)
            .transpose()
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Report>, StoreError> {
        let mut query = page_query(&filter.page, "_id");
        if let Some(status) = filter.status {
            query.insert("status", status.as_str());
        }
        if let Some(verdict) = filter.verdict {
            query.insert("release.verdict", verdict.as_str());
        }
        let docs: Vec<Document> = self
            .docs
            .find(query)
            .sort(doc! { "createdTime": -1, "_id": -1 })
            .limit(i64::from(filter.page.limit))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(report_of).collect()
    }

    async fn claim_next(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        settled: bool,
    ) -> Result<Option<Report>, StoreError> {
        let mut filter = live_lease_free(now);
        if settled {
            filter = doc! { "$and": [
                filter,
                { "$or": [ { "evidence": { "$ne": Bson::Null } }, { "evidenceError": { "$ne": Bson::Null } } ] },
            ] };
        }
        self.docs
            .find_one_and_update(
                filter,
                doc! {
                    "$set": { "leaseOwner": owner, "leaseUntil": bdate(lease_until), "startedTime": bdate(now) },
                    "$inc": { "attempts": 1 },
                },
            )
            .sort(doc! { "updatedTime": 1 })
            .return_document(ReturnDocument::After)
            .await?
            .map(report_of)
            .transpose()
    }

    async fn renew_lease(
        &self,
        deployment_id: &DeploymentId,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .reports
            .update_one(
                doc! { "deploymentId": deployment_id.as_str(), "leaseOwner": owner, "status": "generating" },
                doc! { "$set": { "leaseUntil": bdate(lease_until) } },
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn claim_evidence(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        self.docs
            .find_one_and_update(
                doc! { "$and": [needs_evidence(), evidence_lease_free(now)] },
                doc! { "$set": { "evidenceUntil": bdate(lease_until) } },
            )
            .sort(doc! { "createdTime": 1 })
            .return_document(ReturnDocument::After)
            .await?
            .map(report_of)
            .transpose()
    }

    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        self.docs
            .find_one_and_update(
                doc! {
                    "notifyDue": { "$lte": bdate(now) },
                    "$or": [ { "notifyUntil": Bson::Null }, { "notifyUntil": { "$lt": bdate(now) } } ],
                },
                doc! { "$set": { "notifyUntil": bdate(lease_until) } },
            )
            .sort(doc! { "notifyDue": 1 })
            .return_document(ReturnDocument::After)
            .await?
            .map(report_of)
            .transpose()
    }

    async fn update_notifications(
        &self,
        deployment_id: &DeploymentId,
        updates: &[Notification],
    ) -> Result<bool, StoreError> {
        for _ in 0..MAX_CAS_ROUNDS {
            let Some(current) = self
                .docs
                .find_one(doc! { "deploymentId": deployment_id.as_str() })
                .await?
            else {
                return Ok(false);
            };
            let current = decode(current)?;
            let merged = notify::merge(&current.notifications, updates);
            let due = notify::due(&merged);
            let merged =
                bson::to_bson(&merged).map_err(|e| corrupt_doc(deployment_id.as_str(), e))?;
            let rev = current.notify_rev.map_or(Bson::Null, Bson::Int64);
            let mut update = doc! {
                "$set": { "notifications": merged, "notifyUntil": Bson::Null },
                "$inc": { "notifyRev": 1_i64 },
            };
            match due {
                Some(due) => {
                    if let Ok(set) = update.get_document_mut("$set") {
                        set.insert("notifyDue", bdate(due));
                    }
                }
                None => {
                    update.insert("$unset", doc! { "notifyDue": "" });
                }
            }
            let result = self
                .reports
                .update_one(
                    doc! { "deploymentId": deployment_id.as_str(), "notifyRev": rev },
                    update,
                )
                .await?;
            if result.matched_count == 1 {
                return Ok(true);
            }
        }
        Err(StoreError::Task(format!(
            "updating the notifications of {deployment_id}: they kept changing"
        )))
    }

    async fn set_evidence(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        evidence: Result<&Gathered, &str>,
        release: Option<&ReleaseVerdict>,
    ) -> Result<bool, StoreError> {
        let corrupt = |e| corrupt_doc(deployment_id.as_str(), e);
        let (items, unmeasured, error) = match evidence {
            Ok(gathered) => (
                bson::to_bson(&gathered.items).map_err(corrupt)?,
                bson::to_bson(&gathered.unmeasured).map_err(corrupt)?,
                Bson::Null,
            ),
            Err(why) => (Bson::Null, Bson::Null, Bson::String(why.to_owned())),
        };
        let result = self
            .reports
            .update_one(
                doc! { "$and": [
                    { "deploymentId": deployment_id.as_str(), "version": i64::from(version) },
                    needs_evidence(),
                ] },
                set_release(
                    doc! {
                        "evidence": items,
                        "evidenceUnmeasured": unmeasured,
                        "evidenceError": error,
                        "evidenceUntil": Bson::Null,
                    },
                    deployment_id,
                    release,
                )?,
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn set_changes(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        changes: &Changes,
    ) -> Result<bool, StoreError> {
        let generating = Bson::String("generating".into());
        self.set_field(deployment_id, version, generating, "changes", changes)
            .await
    }

    async fn add_related(
        &self,
        deployment_id: &DeploymentId,
        related: &RelatedAlert,
    ) -> Result<Related, StoreError> {
        // The rule is applied here and written back only if nothing changed the related
        // alerts or the status meanwhile (compare-and-swap on `relatedRev`).
        for _ in 0..MAX_CAS_ROUNDS {
            let Some(current) = self
                .docs
                .find_one(doc! { "deploymentId": deployment_id.as_str() })
                .await?
            else {
                return Ok(Related::NoReport);
            };
            let current = decode(current)?;
            let next = current.related_rev.unwrap_or(0) + 1;
            let rev = current.related_rev.map_or(Bson::Null, Bson::Int64);
            let report = current.into_report()?;
            let all = match rules::merge_related(&report, related.clone()) {
                Merge::Duplicate => return Ok(Related::Duplicate(report.status)),
                Merge::Added(all) => all,
            };
            let all = bson::to_bson(&all).map_err(|e| corrupt_doc(deployment_id.as_str(), e))?;
            let result = self
                .reports
                .update_one(
                    doc! {
                        "deploymentId": deployment_id.as_str(),
                        "relatedRev": rev,
                        "status": report.status.as_str(),
                    },
                    doc! {
                        "$set": { "relatedAlerts": all, "resolvedAt": Bson::Null, "relatedRev": next },
                    },
                )
                .await?;
            if result.matched_count == 1 {
                return Ok(Related::Added(report.status));
            }
        }
        Err(StoreError::Task(format!(
            "adding a related alert to {deployment_id}: the report kept changing"
        )))
    }

    async fn set_resolved(
        &self,
        deployment_id: &DeploymentId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .reports
            .update_one(
                doc! { "deploymentId": deployment_id.as_str() },
                doc! { "$set": { "resolvedAt": bdate(at) } },
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn set_feedback(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        feedback: &Feedback,
    ) -> Result<bool, StoreError> {
        let finished = Bson::Document(doc! { "$ne": "generating" });
        self.set_field(deployment_id, version, finished, "feedback", feedback)
            .await
    }

    async fn release(&self, deployment_id: &DeploymentId, owner: &str) -> Result<bool, StoreError> {
        let result = self
            .reports
            .update_one(
                doc! { "deploymentId": deployment_id.as_str(), "leaseOwner": owner, "status": "generating" },
                // Not an attempt: the claim counted one, given back here. (Claims only
                // happen with attempts >= 1, so this never goes below zero.)
                doc! { "$set": { "leaseOwner": Bson::Null, "leaseUntil": Bson::Null }, "$inc": { "attempts": -1 } },
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn finish(
        &self,
        deployment_id: &DeploymentId,
        owner: &str,
        f: &Finish,
    ) -> Result<bool, StoreError> {
        let usage = match &f.usage {
            Some(u) => bson::to_bson(u).map_err(|e| StoreError::Corrupt {
                id: deployment_id.to_string(),
                message: e.to_string(),
            })?,
            None => Bson::Null,
        };
        let opt = |s: Option<&str>| s.map_or(Bson::Null, |s| Bson::String(s.to_owned()));
        let result = self
            .reports
            .update_one(
                doc! { "deploymentId": deployment_id.as_str(), "leaseOwner": owner, "status": "generating" },
                finish_update(doc! {
                    "status": f.status().as_str(),
                    "content": content(deployment_id.as_str(), f.body())?,
                    "error": opt(f.error()),
                    "rawOutput": opt(f.raw_output.as_deref()),
                    "runner": f.runner.map_or(Bson::Null, |r| Bson::String(r.as_str().into())),
                    "updatedTime": bdate(f.now),
                    "durationMs": f.duration_ms as i64,
                    "usage": usage,
                    "engine": f.engine().map_or(Bson::Null, |e| Bson::String(e.as_str().into())),
                    "aiError": opt(f.ai_error()),
                    "leaseOwner": Bson::Null,
                    "leaseUntil": Bson::Null,
                }, deployment_id, f)?,
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn rediagnose(
        &self,
        deployment_id: &DeploymentId,
        now: DateTime<Utc>,
        restart: Restart,
    ) -> Result<Rediagnose, StoreError> {
        for _ in 0..MAX_CAS_ROUNDS {
            let Some(doc) = self
                .docs
                .find_one(doc! { "deploymentId": deployment_id.as_str() })
                .await?
            else {
                return Ok(Rediagnose::NotFound);
            };
            let doc = decode(doc)?;
            let rev = doc.related_rev;
            let notify_rev = doc.notify_rev;
            let current = doc.into_report()?;
            if !rules::may_restart(&current) {
                return Ok(Rediagnose::InProgress);
            }
            if let Some(failed_at) = rules::too_soon(&current, restart.failed_before) {
                return Ok(Rediagnose::TooSoon(failed_at));
            }
            // History first (idempotent on {deploymentId, version}), then the conditional
            // switch: a crash in between leaves a history entry and an unchanged report,
            // and a retry of the request finishes the job. Nothing is lost either way.
            let h = current.to_history();
            let entry = HistoryDoc {
                deployment_id: h.deployment_id.as_str().to_owned(),
                version: h.version,
                status: h.status,
                content: content(deployment_id.as_str(), h.body.as_ref())?,
                error: h.error,
                runner: h.runner.map(|r| r.as_str().to_owned()),
                attempts: h.attempts,
                created_time: bdate(h.created_time),
                updated_time: bdate(h.updated_time),
                duration_ms: h.duration_ms.map(|d| d as i64),
                feedback: h.feedback,
            };
            match self.history.insert_one(entry).await {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let restarted = rules::restart(&current, now, restart.deployment.as_ref());
            let mut replacement = ReportDoc::from_report(&restarted)?;
            replacement.related_rev = rev;
            replacement.notify_rev = notify_rev;
            let result = self
                .reports
                .replace_one(
                    doc! {
                        "deploymentId": deployment_id.as_str(),
                        "version": i64::from(current.version),
                        "status": current.status.as_str(),
                        "relatedRev": rev.map_or(Bson::Null, Bson::Int64),
                        "notifyRev": notify_rev.map_or(Bson::Null, Bson::Int64),
                    },
                    replacement,
                )
                .await?;
            if result.matched_count == 1 {
                // Past the cap, the oldest versions go (a crash before this leaves them
                // until the next re-diagnosis: a longer history, nothing lost).
                let oldest = rules::oldest_kept(current.version, restart.max_history);
                let dropped = self
                    .history
                    .delete_many(doc! {
                        "deploymentId": deployment_id.as_str(),
                        "version": { "$lt": i64::from(oldest) },
                    })
                    .await?
                    .deleted_count;
                return Ok(Rediagnose::Restarted {
                    report: Box::new(restarted),
                    dropped,
                });
            }
        }
        // Restarted by someone else, or its related alerts kept changing: either way a
        // diagnosis is under way or the caller may ask again.
        Ok(Rediagnose::InProgress)
    }

    async fn history(&self, deployment_id: &DeploymentId) -> Result<Vec<HistoryEntry>, StoreError> {
        let docs: Vec<HistoryDoc> = self
            .history
            .find(doc! { "deploymentId": deployment_id.as_str() })
            .sort(doc! { "version": -1 })
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(|d| {
                Ok(HistoryEntry {
                    deployment_id: deployment_id.clone(),
                    version: d.version,
                    status: d.status,
                    body: body(deployment_id.as_str(), d.status, &d.content)?,
                    error: d.error,
                    runner: runner(deployment_id.as_str(), d.runner.as_deref())?,
                    attempts: d.attempts,
                    created_time: cdate(d.created_time),
                    updated_time: cdate(d.updated_time),
                    duration_ms: d.duration_ms.map(|x| x.max(0) as u64),
                    feedback: d.feedback,
                })
            })
            .collect()
    }

    async fn delete(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError> {
        // History first: a crash in between leaves the report, and deleting again finishes
        // the job; the other order could leave history no report points to.
        self.history
            .delete_many(doc! { "deploymentId": deployment_id.as_str() })
            .await?;
        let result = self
            .reports
            .delete_one(doc! { "deploymentId": deployment_id.as_str() })
            .await?;
        Ok(result.deleted_count == 1)
    }

    async fn count_by_status(&self) -> Result<HashMap<ReportStatus, u64>, StoreError> {
        let mut counts = HashMap::new();
        for status in ReportStatus::ALL {
            let n = self
                .reports
                .count_documents(doc! { "status": status.as_str() })
                .await?;
            counts.insert(status, n);
        }
        Ok(counts)
    }

    async fn queue_depth(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(self.reports.count_documents(live_lease_free(now)).await?)
    }
}

/// The AI budgets' ledger document: changed by compare-and-swap on `rev`, so instances
/// sharing the database take diagnoses from one budget.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerDoc {
    #[serde(rename = "_id")]
    id: String,
    rev: i64,
    ledger: BudgetLedger,
}

impl MongoStore {
    /// Applies `change` to the ledger by compare-and-swap and returns its result.
    async fn change_ledger<T>(
        &self,
        mut change: impl FnMut(&mut BudgetLedger) -> T,
    ) -> Result<T, StoreError> {
        let budget = self.db.collection::<LedgerDoc>(BUDGET);
        for _ in 0..MAX_CAS_ROUNDS {
            let current = budget.find_one(doc! { "_id": LEDGER }).await?;
            let (rev, mut ledger) = match current {
                Some(doc) => (Some(doc.rev), doc.ledger),
                None => (None, BudgetLedger::default()),
            };
            let result = change(&mut ledger);
            let next = LedgerDoc {
                id: LEDGER.into(),
                rev: rev.unwrap_or(0) + 1,
                ledger,
            };
            let written = match rev {
                // The first change: whoever inserts first wins, the other tries again.
                None => match budget.insert_one(&next).await {
                    Ok(_) => true,
                    Err(e) if is_duplicate_key(&e) => false,
                    Err(e) => return Err(e.into()),
                },
                Some(rev) => {
                    budget
                        .replace_one(doc! { "_id": LEDGER, "rev": rev }, &next)
                        .await?
                        .matched_count
                        == 1
                }
            };
            if written {
                return Ok(result);
            }
        }
        Err(StoreError::Task(
            "the AI budget ledger kept changing under this instance".into(),
        ))
    }
}

#[async_trait]
impl BudgetStore for MongoStore {
    async fn admit_ai(
        &self,
        now: DateTime<Utc>,
        caps: Caps,
    ) -> Result<Result<(), Exhausted>, StoreError> {
        self.change_ledger(|ledger| ledger.admit(now, caps)).await
    }

    async fn spend_ai(&self, now: DateTime<Utc>, tokens: u64) -> Result<(), StoreError> {
        self.change_ledger(|ledger| ledger.spend(now, tokens)).await
    }
}

#[async_trait]
impl DeploymentStore for MongoStore {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<Upsert, StoreError> {
        let id = deployment.deployment_id.as_str();
        let mut fields = bson::to_document(&DeploymentDoc::from_deployment(deployment))
            .map_err(|e| corrupt_doc(id, e))?;
        // The first registration's creation time stays.
        let mut on_insert = Document::new();
        if let Some(created) = fields.remove("createdTime") {
            on_insert.insert("createdTime", created);
        }
        let result = self
            .db
            .collection::<Document>(DEPLOYMENTS)
            .update_one(
                doc! { "deploymentId": id },
                doc! { "$set": fields, "$setOnInsert": on_insert },
            )
            .upsert(true)
            .await?;
        Ok(if result.upserted_id.is_some() {
            Upsert::Created
        } else {
            Upsert::Updated
        })
    }

    async fn get_deployment(
        &self,
        deployment_id: &DeploymentId,
    ) -> Result<Option<Deployment>, StoreError> {
        self.deployments
            .find_one(doc! { "deploymentId": deployment_id.as_str() })
            .await?
            .map(DeploymentDoc::into_deployment)
            .transpose()
    }

    async fn list_deployments(&self, page: &Page) -> Result<Vec<Deployment>, StoreError> {
        let docs: Vec<DeploymentDoc> = self
            .deployments
            .find(page_query(page, "deploymentId"))
            .sort(doc! { "createdTime": -1, "deploymentId": -1 })
            .limit(i64::from(page.limit))
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(DeploymentDoc::into_deployment)
            .collect()
    }

    async fn delete_deployment(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError> {
        let result = self
            .deployments
            .delete_one(doc! { "deploymentId": deployment_id.as_str() })
            .await?;
        Ok(result.deleted_count == 1)
    }

    async fn latest_on_hosts(
        &self,
        host_keys: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<Deployment>, StoreError> {
        if host_keys.is_empty() {
            return Ok(None);
        }
        self.deployments
            .find_one(doc! {
                "hostKeys": { "$in": host_keys },
                "deployedAt": { "$gte": bdate(from), "$lte": bdate(to) },
            })
            .sort(doc! { "deployedAt": -1, "deploymentId": -1 })
            .await?
            .map(DeploymentDoc::into_deployment)
            .transpose()
    }
}
