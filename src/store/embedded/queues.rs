//! The three lease queues on the reports table: diagnoses (`lease_owner`, `lease_until`),
//! evidence gatherings (`evidence_owner`, `evidence_until`) and the outbox's deliveries
//! (`notify_owner`, `notify_until`), each apart from the others.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::rows::{content, ms, parse_json, raw_report, to_json, RawReport, COLUMNS};
use super::EmbeddedStore;
use crate::model::notify::{self, Notification};
use crate::model::report::{Engine, Finish, Report};
use crate::store::{Diagnosis, Evidence, Lease, LeaseQueue, Outbox, Settled, StoreError};

/// Versions still waiting for their evidence (the `reports_evidence_queue` index, named
/// in the claim: the planner otherwise took `reports_waiting` and sorted every generating
/// report, 50 ms at 100,000, inside the writer's batch).
const NEEDS_EVIDENCE: &str =
    "status = 'generating' AND evidence IS NULL AND evidence_error IS NULL";

impl EmbeddedStore {
    /// Claims with `sql` (an `UPDATE … RETURNING` the report's columns) and its `params`.
    async fn claim_with(
        &self,
        sql: String,
        params: impl rusqlite::Params + Send + 'static,
    ) -> Result<Option<Report>, StoreError> {
        self.with(move |conn| {
            conn.query_row(&sql, params, raw_report)
                .optional()?
                .map(RawReport::into_report)
                .transpose()
        })
        .await
    }

    /// Runs one `UPDATE` with `params`; whether it changed a row.
    async fn update_one(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params + Send + 'static,
    ) -> Result<bool, StoreError> {
        self.with(move |conn| Ok(conn.execute(sql, params)? == 1))
            .await
    }
}

#[async_trait]
impl LeaseQueue<Diagnosis> for EmbeddedStore {
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        self.claim_with(
            format!(
                "UPDATE reports SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1, \
                 started_time = ?3 WHERE id = (SELECT id FROM reports WHERE status = 'generating' \
                 AND (lease_until IS NULL OR lease_until < ?3) \
                 AND (?4 = 0 OR evidence IS NOT NULL OR evidence_error IS NOT NULL) \
                 ORDER BY updated_time LIMIT 1) RETURNING {COLUMNS}"
            ),
            (owner.to_owned(), ms(until), ms(now), self.evidence_first),
        )
        .await
    }

    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError> {
        self.update_one(
            "UPDATE reports SET lease_until = ?1 WHERE deployment_id = ?2 AND lease_owner = ?3 \
             AND status = 'generating'",
            (
                ms(until),
                lease.deployment_id.as_str().to_owned(),
                lease.owner.clone(),
            ),
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.update_one(
            "UPDATE reports SET lease_owner = NULL, lease_until = NULL, \
             attempts = MAX(attempts - 1, 0) WHERE deployment_id = ?1 \
             AND lease_owner = ?2 AND status = 'generating'",
            (lease.deployment_id.as_str().to_owned(), lease.owner.clone()),
        )
        .await
    }

    async fn complete(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        let (id, owner, f) = (
            lease.deployment_id.clone(),
            lease.owner.clone(),
            finish.clone(),
        );
        let usage = f
            .usage
            .as_ref()
            .map(|u| to_json(id.as_str(), u))
            .transpose()?;
        let content = content(id.as_str(), f.ending.body())?;
        let verdict = f.release.as_ref().map(|v| v.verdict.as_str());
        let release = f
            .release
            .as_ref()
            .map(|v| to_json(id.as_str(), v))
            .transpose()?;
        self.with(move |conn| {
            // The outbox gets this ending's notifications in the same write.
            let stored: Option<String> = conn
                .query_row(
                    "SELECT notifications FROM reports WHERE deployment_id = ?1",
                    params![id.as_str()],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            let mut outbox: Vec<Notification> =
                parse_json(id.as_str(), "notifications", stored.as_deref())?.unwrap_or_default();
            outbox.extend(f.notify.iter().cloned());
            let due = notify::due(&outbox).map(ms);
            let outbox = to_json(id.as_str(), &outbox)?;
            Ok(conn.execute(
                "UPDATE reports SET status = ?1, content = ?2, error = ?3, raw_output = ?4, runner = ?5, \
                 updated_time = ?6, duration_ms = ?7, usage = ?10, engine = ?11, ai_error = ?12, \
                 lease_owner = NULL, lease_until = NULL, release = COALESCE(?13, release), \
                 release_verdict = COALESCE(?14, release_verdict), notifications = ?15, notify_due = ?16 \
                 WHERE deployment_id = ?8 AND lease_owner = ?9 AND status = 'generating'",
                params![
                    f.status().as_str(),
                    content,
                    f.ending.error(),
                    f.raw_output,
                    f.runner.map(|r| r.as_str()),
                    ms(f.now),
                    f.duration_ms as i64,
                    id.as_str(),
                    owner,
                    usage,
                    f.ending.engine().map(Engine::as_str),
                    f.ending.ai_error(),
                    release,
                    verdict,
                    outbox,
                    due,
                ],
            )? == 1)
        })
        .await
    }
}

#[async_trait]
impl LeaseQueue<Evidence> for EmbeddedStore {
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        self.claim_with(
            format!(
                "UPDATE reports SET evidence_owner = ?1, evidence_until = ?2 WHERE id = \
                 (SELECT id FROM reports INDEXED BY reports_evidence_queue \
                 WHERE {NEEDS_EVIDENCE} AND (evidence_until IS NULL OR evidence_until < ?3) \
                 ORDER BY created_time LIMIT 1) RETURNING {COLUMNS}"
            ),
            (owner.to_owned(), ms(until), ms(now)),
        )
        .await
    }

    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE reports SET evidence_until = ?1 WHERE deployment_id = ?2 \
             AND version = ?3 AND evidence_owner = ?4 AND status = 'generating' \
             AND evidence IS NULL AND evidence_error IS NULL";
        self.update_one(
            SQL,
            (
                ms(until),
                lease.deployment_id.as_str().to_owned(),
                lease.version,
                lease.owner.clone(),
            ),
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE reports SET evidence_owner = NULL, evidence_until = NULL \
             WHERE deployment_id = ?1 AND version = ?2 AND evidence_owner = ?3 \
             AND status = 'generating' AND evidence IS NULL AND evidence_error IS NULL";
        self.update_one(
            SQL,
            (
                lease.deployment_id.as_str().to_owned(),
                lease.version,
                lease.owner.clone(),
            ),
        )
        .await
    }

    async fn complete(&self, lease: &Lease, settled: &Settled) -> Result<bool, StoreError> {
        let id = lease.deployment_id.clone();
        let version = lease.version;
        let (items, unmeasured, error) = match &settled.evidence {
            Ok(gathered) => (
                Some(to_json(id.as_str(), &gathered.items)?),
                gathered
                    .unmeasured
                    .as_ref()
                    .map(|u| to_json(id.as_str(), u))
                    .transpose()?,
                None,
            ),
            Err(why) => (None, None, Some(why.clone())),
        };
        let release = settled.release.as_ref();
        let verdict = release.map(|v| v.verdict.as_str());
        let release = release.map(|v| to_json(id.as_str(), v)).transpose()?;
        self.with(move |conn| {
            Ok(conn.execute(
                &format!(
                    "UPDATE reports SET evidence = ?1, evidence_error = ?2, evidence_until = NULL, \
                     evidence_owner = NULL, release = COALESCE(?5, release), \
                     release_verdict = COALESCE(?6, release_verdict), evidence_unmeasured = ?7 \
                     WHERE deployment_id = ?3 AND version = ?4 AND {NEEDS_EVIDENCE}"
                ),
                params![
                    items,
                    error,
                    id.as_str(),
                    version,
                    release,
                    verdict,
                    unmeasured
                ],
            )? == 1)
        })
        .await
    }
}

#[async_trait]
impl LeaseQueue<Outbox> for EmbeddedStore {
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        self.claim_with(
            format!(
                "UPDATE reports SET notify_owner = ?1, notify_until = ?2 WHERE id = \
                 (SELECT id FROM reports INDEXED BY reports_outbox \
                 WHERE notify_due <= ?3 AND (notify_until IS NULL OR notify_until < ?3) \
                 ORDER BY notify_due LIMIT 1) RETURNING {COLUMNS}"
            ),
            (owner.to_owned(), ms(until), ms(now)),
        )
        .await
    }

    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError> {
        self.update_one(
            "UPDATE reports SET notify_until = ?1 WHERE deployment_id = ?2 AND notify_owner = ?3",
            (
                ms(until),
                lease.deployment_id.as_str().to_owned(),
                lease.owner.clone(),
            ),
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.update_one(
            "UPDATE reports SET notify_owner = NULL, notify_until = NULL \
             WHERE deployment_id = ?1 AND notify_owner = ?2",
            (lease.deployment_id.as_str().to_owned(), lease.owner.clone()),
        )
        .await
    }

    async fn complete(&self, lease: &Lease, updates: &[Notification]) -> Result<bool, StoreError> {
        let (id, updates) = (lease.deployment_id.clone(), updates.to_vec());
        self.with(move |conn| {
            let Some(stored) = conn
                .query_row(
                    "SELECT notifications FROM reports WHERE deployment_id = ?1",
                    params![id.as_str()],
                    |row| row.get::<_, Option<String>>(0),
                )
                .optional()?
            else {
                return Ok(false);
            };
            let stored: Vec<Notification> =
                parse_json(id.as_str(), "notifications", stored.as_deref())?.unwrap_or_default();
            let merged = notify::merge(&stored, &updates);
            Ok(conn.execute(
                "UPDATE reports SET notifications = ?1, notify_due = ?2, notify_until = NULL, \
                 notify_owner = NULL WHERE deployment_id = ?3",
                params![
                    to_json(id.as_str(), &merged)?,
                    notify::due(&merged).map(ms),
                    id.as_str()
                ],
            )? == 1)
        })
        .await
    }
}
