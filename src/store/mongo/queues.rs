//! The three lease queues on the reports collection: diagnoses (`leaseOwner`,
//! `leaseUntil`), evidence gatherings (`evidenceOwner`, `evidenceUntil`) and the outbox's
//! deliveries (`notifyOwner`, `notifyUntil`), each apart from the others.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::ReturnDocument;

use super::reports::live_lease_free;
use super::rows::{bdate, content, corrupt_doc, decode, report_of};
use super::{MongoStore, MAX_CAS_ROUNDS};
use crate::model::alert::DeploymentId;
use crate::model::notify::{self, Notification};
use crate::model::report::{Finish, Report, ReportStatus};
use crate::model::verdict::ReleaseVerdict;
use crate::store::{Diagnosis, Evidence, Lease, LeaseQueue, Outbox, Settled, StoreError};

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

impl MongoStore {
    /// Claims the first report `filter` matches in `sort` order with `update`.
    async fn claim_with(
        &self,
        filter: Document,
        update: Document,
        sort: Document,
    ) -> Result<Option<Report>, StoreError> {
        self.docs
            .find_one_and_update(filter, update)
            .sort(sort)
            .return_document(ReturnDocument::After)
            .await?
            .map(report_of)
            .transpose()
    }

    /// Applies `update` to the one report `filter` matches; whether one did.
    async fn update_one(&self, filter: Document, update: Document) -> Result<bool, StoreError> {
        Ok(self.reports.update_one(filter, update).await?.matched_count == 1)
    }
}

#[async_trait]
impl LeaseQueue<Diagnosis> for MongoStore {
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        let mut filter = live_lease_free(now);
        if self.evidence_first {
            filter = doc! { "$and": [
                filter,
                { "$or": [ { "evidence": { "$ne": Bson::Null } }, { "evidenceError": { "$ne": Bson::Null } } ] },
            ] };
        }
        self.claim_with(
            filter,
            doc! {
                "$set": { "leaseOwner": owner, "leaseUntil": bdate(until), "startedTime": bdate(now) },
                "$inc": { "attempts": 1 },
            },
            doc! { "updatedTime": 1 },
        )
        .await
    }

    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError> {
        self.update_one(
            doc! { "deploymentId": lease.deployment_id.as_str(), "leaseOwner": &lease.owner, "status": "generating" },
            doc! { "$set": { "leaseUntil": bdate(until) } },
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.update_one(
            doc! { "deploymentId": lease.deployment_id.as_str(), "leaseOwner": &lease.owner, "status": "generating" },
            // Not an attempt: the claim counted one, given back here. (Claims only
            // happen with attempts >= 1, so this never goes below zero.)
            doc! { "$set": { "leaseOwner": Bson::Null, "leaseUntil": Bson::Null }, "$inc": { "attempts": -1 } },
        )
        .await
    }

    async fn complete(&self, lease: &Lease, f: &Finish) -> Result<bool, StoreError> {
        let deployment_id = &lease.deployment_id;
        let usage = match &f.usage {
            Some(u) => bson::to_bson(u).map_err(|e| corrupt_doc(deployment_id.as_str(), e))?,
            None => Bson::Null,
        };
        let opt = |s: Option<&str>| s.map_or(Bson::Null, |s| Bson::String(s.to_owned()));
        self.update_one(
            doc! { "deploymentId": deployment_id.as_str(), "leaseOwner": &lease.owner, "status": "generating" },
            finish_update(doc! {
                "status": f.status().as_str(),
                "content": content(deployment_id.as_str(), f.ending.body())?,
                "error": opt(f.ending.error()),
                "rawOutput": opt(f.raw_output.as_deref()),
                "runner": f.runner.map_or(Bson::Null, |r| Bson::String(r.as_str().into())),
                "updatedTime": bdate(f.now),
                "durationMs": f.duration_ms as i64,
                "usage": usage,
                "engine": f.ending.engine().map_or(Bson::Null, |e| Bson::String(e.as_str().into())),
                "aiError": opt(f.ending.ai_error()),
                "leaseOwner": Bson::Null,
                "leaseUntil": Bson::Null,
            }, deployment_id, f)?,
        )
        .await
    }
}

/// The evidence lease `lease` names, while its version still waits for its evidence.
fn evidence_held(lease: &Lease) -> Document {
    doc! { "$and": [
        {
            "deploymentId": lease.deployment_id.as_str(),
            "version": i64::from(lease.version),
            "evidenceOwner": &lease.owner,
        },
        needs_evidence(),
    ] }
}

#[async_trait]
impl LeaseQueue<Evidence> for MongoStore {
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        self.claim_with(
            doc! { "$and": [needs_evidence(), evidence_lease_free(now)] },
            doc! { "$set": { "evidenceOwner": owner, "evidenceUntil": bdate(until) } },
            doc! { "createdTime": 1 },
        )
        .await
    }

    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError> {
        self.update_one(
            evidence_held(lease),
            doc! { "$set": { "evidenceUntil": bdate(until) } },
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.update_one(
            evidence_held(lease),
            doc! { "$set": { "evidenceOwner": Bson::Null, "evidenceUntil": Bson::Null } },
        )
        .await
    }

    async fn complete(&self, lease: &Lease, settled: &Settled) -> Result<bool, StoreError> {
        let deployment_id = &lease.deployment_id;
        let corrupt = |e| corrupt_doc(deployment_id.as_str(), e);
        let (items, unmeasured, error) = match &settled.evidence {
            Ok(gathered) => (
                bson::to_bson(&gathered.items).map_err(corrupt)?,
                bson::to_bson(&gathered.unmeasured).map_err(corrupt)?,
                Bson::Null,
            ),
            Err(why) => (Bson::Null, Bson::Null, Bson::String(why.clone())),
        };
        self.update_one(
            doc! { "$and": [
                { "deploymentId": deployment_id.as_str(), "version": i64::from(lease.version) },
                needs_evidence(),
            ] },
            set_release(
                doc! {
                    "evidence": items,
                    "evidenceUnmeasured": unmeasured,
                    "evidenceError": error,
                    "evidenceUntil": Bson::Null,
                    "evidenceOwner": Bson::Null,
                },
                deployment_id,
                settled.release.as_ref(),
            )?,
        )
        .await
    }
}

#[async_trait]
impl LeaseQueue<Outbox> for MongoStore {
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        self.claim_with(
            doc! {
                "notifyDue": { "$lte": bdate(now) },
                "$or": [ { "notifyUntil": Bson::Null }, { "notifyUntil": { "$lt": bdate(now) } } ],
            },
            doc! { "$set": { "notifyOwner": owner, "notifyUntil": bdate(until) } },
            doc! { "notifyDue": 1 },
        )
        .await
    }

    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError> {
        self.update_one(
            doc! { "deploymentId": lease.deployment_id.as_str(), "notifyOwner": &lease.owner },
            doc! { "$set": { "notifyUntil": bdate(until) } },
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.update_one(
            doc! { "deploymentId": lease.deployment_id.as_str(), "notifyOwner": &lease.owner },
            doc! { "$set": { "notifyOwner": Bson::Null, "notifyUntil": Bson::Null } },
        )
        .await
    }

    async fn complete(&self, lease: &Lease, updates: &[Notification]) -> Result<bool, StoreError> {
        let deployment_id = &lease.deployment_id;
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
                "$set": { "notifications": merged, "notifyUntil": Bson::Null, "notifyOwner": Bson::Null },
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
            let written = self
                .update_one(
                    doc! { "deploymentId": deployment_id.as_str(), "notifyRev": rev },
                    update,
                )
                .await?;
            if written {
                return Ok(true);
            }
        }
        Err(StoreError::Task(format!(
            "updating the notifications of {deployment_id}: they kept changing"
        )))
    }
}
