//! The report store in MongoDB: the reports, their versions and history (the
//! collection's lease queues are in [`super::queues`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use super::rows::{
    bdate, body, cdate, content, corrupt_doc, decode, report_of, runner, HistoryDoc, ReportDoc,
};
use super::{
    is_duplicate_key, page_query, IndexDef, MongoStore, DEPLOYMENTS, INDEXES, LIVENESS,
    MAX_CAS_ROUNDS, REPORTS,
};
use crate::model::alert::DeploymentId;
use crate::model::changes::Changes;
use crate::model::report::{Feedback, HistoryEntry, Related, RelatedAlert, Report, ReportStatus};
use crate::store::rules::{self, Merge};
use crate::store::{Insert, ListFilter, Rediagnose, ReportStore, Restart, StoreError};

/// Generating reports that no live diagnosis lease holds.
pub(super) fn live_lease_free(now: DateTime<Utc>) -> Document {
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
                Merge::Duplicate => return Ok(Related::Duplicate(report.status())),
                Merge::Added(all) => all,
            };
            let all = bson::to_bson(&all).map_err(|e| corrupt_doc(deployment_id.as_str(), e))?;
            let result = self
                .reports
                .update_one(
                    doc! {
                        "deploymentId": deployment_id.as_str(),
                        "relatedRev": rev,
                        "status": report.status().as_str(),
                    },
                    doc! {
                        "$set": { "relatedAlerts": all, "resolvedAt": Bson::Null, "relatedRev": next },
                    },
                )
                .await?;
            if result.matched_count == 1 {
                return Ok(Related::Added(report.status()));
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
                        "status": current.status().as_str(),
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
