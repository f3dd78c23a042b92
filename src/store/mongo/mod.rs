//! The MongoDB store, as the design lays it out: collection `reports` with
//! `{deploymentId: 1}` unique, `{createdTime: -1}` and `{status: 1, updatedTime: -1}`
//! (definitions in `migrations/mongo/`), plus `report_history`.

mod budget;
mod deployments;
mod queues;
mod reports;
mod rows;

use std::time::Duration;

use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use serde::{Deserialize, Serialize};

use super::{Page, StoreError};
use crate::model::alert::DeploymentId;
use rows::{bdate, DeploymentDoc, HistoryDoc, ReportDoc};

/// Index definitions, in order; creating an index that exists is a no-op.
const INDEXES: &[(&str, &str)] = &[
    (
        "migrations/mongo/0001_indexes.json",
        include_str!("../../../migrations/mongo/0001_indexes.json"),
    ),
    (
        "migrations/mongo/0002_deployments.json",
        include_str!("../../../migrations/mongo/0002_deployments.json"),
    ),
    (
        "migrations/mongo/0003_evidence_queue.json",
        include_str!("../../../migrations/mongo/0003_evidence_queue.json"),
    ),
    (
        "migrations/mongo/0004_release_verdict.json",
        include_str!("../../../migrations/mongo/0004_release_verdict.json"),
    ),
    (
        "migrations/mongo/0005_outbox.json",
        include_str!("../../../migrations/mongo/0005_outbox.json"),
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

#[derive(Deserialize)]
struct IndexDef {
    collection: String,
    name: String,
    keys: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    unique: bool,
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
    /// Whether a diagnosis waits for its report's evidence (the evidence stage is on).
    evidence_first: bool,
}

impl MongoStore {
    /// With `on`, the diagnosis queue claims a report only once its evidence is settled
    /// (gathered, or failed): for a service whose evidence stage is on.
    pub fn evidence_first(self, on: bool) -> Self {
        Self {
            evidence_first: on,
            ..self
        }
    }

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
            evidence_first: false,
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
