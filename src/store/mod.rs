//! Where reports live, split by job: the reports ([`ReportStore`], the design's
//! `ReportModel`), the deployments registry ([`DeploymentStore`]), the AI budgets
//! ([`BudgetStore`]), and three lease queues on the reports ([`LeaseQueue`]: diagnoses,
//! evidence gatherings, the outbox's deliveries), each part implemented by the two real
//! stores.
//!
//! A queue is the reports table itself: a report waiting for that job and held by no live
//! lease is ready; a pool's task claims it by setting a lease, renews the lease while it
//! works, gives it back or completes it; an item whose holder died becomes claimable again
//! when the lease runs out.

pub mod embedded;
pub mod mongo;
pub mod rules;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, StoreKind};
use crate::model::alert::DeploymentId;
use crate::model::budget::{Caps, Exhausted};
use crate::model::changes::Changes;
use crate::model::deployment::Deployment;
use crate::model::evidence::Gathered;
use crate::model::notify::Notification;
use crate::model::report::{
    Feedback, Finish, HistoryEntry, Related, RelatedAlert, Report, ReportStatus,
};
use crate::model::verdict::{Attribution, ReleaseVerdict};

/// What a store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("embedded store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// MongoDB failed.
    #[error("mongo store: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// The store's file or folder could not be made.
    #[error("embedded store file {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A stored row could not be read back.
    #[error("stored report {id} is unreadable: {message}")]
    Corrupt {
        /// The report or deployment id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A blocking task died.
    #[error("store task failed: {0}")]
    Task(String),
}

/// Result of inserting a new report.
#[derive(Debug, Clone, PartialEq)]
pub enum Insert {
    /// Stored.
    Inserted,
    /// The deployment already has a report (the unique index said so).
    Exists(ReportStatus),
}

/// Result of asking for a re-diagnosis.
#[derive(Debug, Clone, PartialEq)]
pub enum Rediagnose {
    /// No such report.
    NotFound,
    /// A diagnosis is running or waiting; nothing changed.
    InProgress,
    /// A failed report whose last diagnosis ended at this time, after the policy's
    /// `failed_before`: nothing changed.
    TooSoon(DateTime<Utc>),
    /// The old version is in history; the report is `generating` again.
    Restarted {
        /// The new version.
        report: Box<Report>,
        /// Versions dropped from the history past `Report.MaxHistory`.
        dropped: u64,
    },
}

/// What a re-diagnosis may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    /// Versions kept in history at most; the oldest go past it (`Report.MaxHistory`).
    pub max_history: u32,
    /// Restart a failed report only when its last diagnosis ended before this (a new
    /// alert's automatic re-run, at most once per `Worker.RerunAfterSeconds`); `None`:
    /// whenever asked (a person's re-diagnosis).
    pub failed_before: Option<DateTime<Utc>>,
    /// The deployment as registered now, read once for the new version: its snapshot
    /// (`None`: the report's is kept).
    pub deployment: Option<Deployment>,
}

/// Where a page of a listing ends: the last item's creation time and key (a report's id, a
/// deployment's id), so items created in the same millisecond are neither skipped nor
/// repeated at a page edge. Sent to clients as an opaque string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last item's `createdTime`.
    pub created_time: DateTime<Utc>,
    /// The last item's key.
    pub key: String,
}

impl Cursor {
    /// The opaque form (URL-safe base64 of `millis:key`).
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_time.timestamp_millis(),
            self.key
        ))
    }

    /// Reads the opaque form back; `None` when it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (ms, key) = raw.split_once(':')?;
        Some(Self {
            created_time: DateTime::from_timestamp_millis(ms.parse().ok()?)?,
            key: key.to_owned(),
        })
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Only items created before this time.
    pub before: Option<DateTime<Utc>>,
    /// Only items after this cursor (the previous page's `nextCursor`).
    pub after: Option<Cursor>,
    /// At most this many.
    pub limit: u32,
}

/// Listing filter for `GET /reports`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<ReportStatus>,
    /// Only reports whose release verdict is this.
    pub verdict: Option<Attribution>,
    /// Which page.
    pub page: Page,
}

/// Result of registering a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// A new deployment.
    Created,
    /// It was registered before; its fields are replaced, its `createdTime` kept.
    Updated,
}

/// The deployments registry. Every method is one atomic change or one read.
#[async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Registers a deployment, replacing an earlier registration of the same id (whose
    /// `createdTime` is kept).
    async fn put_deployment(&self, deployment: &Deployment) -> Result<Upsert, StoreError>;
    /// A deployment by id.
    async fn get_deployment(
        &self,
        deployment_id: &DeploymentId,
    ) -> Result<Option<Deployment>, StoreError>;
    /// Deployments, newest registration first.
    async fn list_deployments(&self, page: &Page) -> Result<Vec<Deployment>, StoreError>;
    /// Removes a deployment; `false` if there was none. Its report stays.
    async fn delete_deployment(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError>;
    /// The most recently deployed deployment on any of these hosts (keys as
    /// [`crate::model::deployment::host_key`] makes them) that was deployed in `[from, to]`.
    async fn latest_on_hosts(
        &self,
        host_keys: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<Deployment>, StoreError>;
}

/// The AI budgets, shared by every instance on the store and kept across restarts. Each
/// method is one atomic change of the ledger ([`crate::model::budget::BudgetLedger`]).
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Takes one AI diagnosis at `now` within `caps`, or says which budget is spent.
    async fn admit_ai(
        &self,
        now: DateTime<Utc>,
        caps: Caps,
    ) -> Result<Result<(), Exhausted>, StoreError>;
    /// Records the tokens a diagnosis spent at `now`.
    async fn spend_ai(&self, now: DateTime<Utc>, tokens: u64) -> Result<(), StoreError>;
}

/// The report store. Every method is one atomic change or one read.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Creates tables/collections and indexes (deployments' too); safe to run again.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Answers when the store can be written: a tiny write by the path every write takes
    /// (a store that reads but cannot write, a full disk, refuses every alert).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Stores a new `generating` report unless the deployment has one. A report without a
    /// deployment snapshot gets the registered deployment's, when there is one.
    async fn insert(&self, report: &Report) -> Result<Insert, StoreError>;
    /// The report of a deployment.
    async fn get(&self, deployment_id: &DeploymentId) -> Result<Option<Report>, StoreError>;
    /// Reports, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Report>, StoreError>;
    /// Stores the change evidence of version `version` while it is `generating`; `false`
    /// otherwise.
    async fn set_changes(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        changes: &Changes,
    ) -> Result<bool, StoreError>;
    /// Records a further alert of the deployment on its report, as
    /// [`rules::merge_related`] says, and clears `resolvedAt` (it fires again).
    async fn add_related(
        &self,
        deployment_id: &DeploymentId,
        related: &RelatedAlert,
    ) -> Result<Related, StoreError>;
    /// Stamps `resolvedAt` on the deployment's report; `false` if it has none.
    async fn set_resolved(
        &self,
        deployment_id: &DeploymentId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Stores feedback on version `version` while that version is finished (completed or
    /// failed); `false` otherwise. Later feedback on the same version replaces earlier.
    async fn set_feedback(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        feedback: &Feedback,
    ) -> Result<bool, StoreError>;
    /// Keeps the current version as history (dropping the oldest past
    /// `restart.max_history`) and makes the report `generating` again as
    /// [`rules::restart`] says, unless it is generating already or `restart` says it is too
    /// soon ([`rules::too_soon`]).
    async fn rediagnose(
        &self,
        deployment_id: &DeploymentId,
        now: DateTime<Utc>,
        restart: Restart,
    ) -> Result<Rediagnose, StoreError>;
    /// Previous versions, newest first.
    async fn history(&self, deployment_id: &DeploymentId) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Deletes the report and its history; `false` if there was none.
    async fn delete(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError>;
    /// Reports per status.
    async fn count_by_status(&self) -> Result<HashMap<ReportStatus, u64>, StoreError>;
    /// `generating` reports that no live worker holds.
    async fn queue_depth(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// One kind of lease queue on the reports, and what completing one of its items writes.
pub trait QueueKind: Send + Sync + 'static {
    /// What completing an item writes.
    type Done: Send + Sync + ?Sized;
}

/// The diagnosis queue: `generating` reports. Claiming counts an attempt and stamps
/// `startedTime`; where the evidence stage is on (the store's `evidence_first`), only a
/// report whose evidence is settled (gathered, or failed) is claimed. Completing writes how
/// the diagnosis ended, while the lease is held.
pub enum Diagnosis {}

impl QueueKind for Diagnosis {
    type Done = Finish;
}

/// The evidence queue: `generating` reports whose evidence is neither gathered nor known to
/// be unavailable, apart from the diagnosis lease (the evidence of a report waiting for an
/// AI worker is gathered meanwhile), oldest first. Completing stores the version's
/// evidence and release verdict whoever holds the lease, once: the first gathering stored
/// wins, and any is as good.
pub enum Evidence {}

impl QueueKind for Evidence {
    type Done = Settled;
}

/// The outbox: reports whose earliest pending notification is due, earliest first.
/// Completing applies the deliveries' updates to the notifications by id (notifications
/// added meanwhile are kept, as [`crate::model::notify::merge`] says) whoever holds the
/// lease: a delivery that was made is recorded.
pub enum Outbox {}

impl QueueKind for Outbox {
    type Done = [Notification];
}

/// A version's evidence (the items, or why none could be had) and its release verdict.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The evidence, or why there is none.
    pub evidence: Result<Gathered, String>,
    /// The release verdict measured with it (`None`: none was).
    pub release: Option<ReleaseVerdict>,
}

/// A held claim: the report, its version when claimed, and the owner the lease is held
/// under (one owner a claim, so that a lease is never confused with an earlier one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The report's deployment.
    pub deployment_id: DeploymentId,
    /// The version claimed.
    pub version: u32,
    /// Who holds it.
    pub owner: String,
}

impl Lease {
    /// The lease `owner` holds on the `report` it claimed.
    pub fn of(report: &Report, owner: &str) -> Self {
        Self {
            deployment_id: report.deployment_id.clone(),
            version: report.version,
            owner: owner.to_owned(),
        }
    }
}

/// A lease queue of kind `K` on the reports. Every method is one atomic change.
#[async_trait]
pub trait LeaseQueue<K: QueueKind>: Send + Sync {
    /// Claims the next ready item for `owner`, holding it until `until`.
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError>;
    /// Extends the lease until `until`; `false` if it is no longer held.
    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Gives the item back without completing it (shutdown), so that the next claim takes
    /// it at once; `false` if it is no longer held. A diagnosis's attempt is taken back.
    async fn release(&self, lease: &Lease) -> Result<bool, StoreError>;
    /// Writes what was done and ends the lease, as the kind says; `false` when it was not
    /// written.
    async fn complete(&self, lease: &Lease, done: &K::Done) -> Result<bool, StoreError>;
}

/// Wakes the store's consumers in this process when a report is queued (intake, a
/// re-diagnosis): the AI workers and the evidence pool. Work queued by another instance is
/// found by their polling.
#[derive(Debug, Default)]
pub struct Wake {
    /// An AI worker.
    pub diagnosis: tokio::sync::Notify,
    /// An evidence gathering.
    pub evidence: tokio::sync::Notify,
    /// A delivery of the outbox: a report finished with notifications.
    pub outbox: tokio::sync::Notify,
}

impl Wake {
    /// A report was queued: one AI worker and one gathering look for it.
    pub fn queued(&self) {
        self.evidence.notify_one();
        self.diagnosis.notify_one();
    }

    /// A report's evidence was settled: one AI worker may claim it now.
    pub fn evidence_settled(&self) {
        self.diagnosis.notify_one();
    }
}

/// Every part of a store.
pub trait Store:
    ReportStore
    + DeploymentStore
    + BudgetStore
    + LeaseQueue<Diagnosis>
    + LeaseQueue<Evidence>
    + LeaseQueue<Outbox>
    + 'static
{
}

impl<S> Store for S where
    S: ReportStore
        + DeploymentStore
        + BudgetStore
        + LeaseQueue<Diagnosis>
        + LeaseQueue<Evidence>
        + LeaseQueue<Outbox>
        + 'static
{
}

/// The parts of one store, by job: they live in the same database.
#[derive(Clone)]
pub struct Stores {
    /// The reports.
    pub reports: Arc<dyn ReportStore>,
    /// The deployments registry.
    pub deployments: Arc<dyn DeploymentStore>,
    /// The AI budgets.
    pub budget: Arc<dyn BudgetStore>,
    /// The diagnosis queue.
    pub diagnoses: Arc<dyn LeaseQueue<Diagnosis>>,
    /// The evidence queue.
    pub gatherings: Arc<dyn LeaseQueue<Evidence>>,
    /// The outbox.
    pub outbox: Arc<dyn LeaseQueue<Outbox>>,
}

impl Stores {
    /// One store object serving every part.
    pub fn of<S: Store>(store: S) -> Self {
        let store = Arc::new(store);
        Self {
            reports: store.clone(),
            deployments: store.clone(),
            budget: store.clone(),
            diagnoses: store.clone(),
            gatherings: store.clone(),
            outbox: store,
        }
    }
}

/// The store the configuration names, migrated.
pub async fn open(config: &Config) -> Result<Stores, StoreError> {
    let evidence_first = config.evidence.enabled;
    let stores = match config.store.kind {
        StoreKind::Embedded => Stores::of(
            embedded::EmbeddedStore::open(&config.store.path)?.evidence_first(evidence_first),
        ),
        StoreKind::Mongo => Stores::of(
            mongo::MongoStore::connect(&config.mongo.url, &config.mongo.database)
                .await?
                .evidence_first(evidence_first),
        ),
    };
    stores.reports.migrate().await?;
    Ok(stores)
}
