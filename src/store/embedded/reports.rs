//! The report store in SQLite: the reports, their versions and history (the table's
//! lease queues are in [`super::queues`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{
    body, content, ms, parse_json, raw_report, runner, status, time, to_json, RawReport, COLUMNS,
};
use super::writer::{PendingInsert, Write};
use super::{select_one, EmbeddedStore, Stage, MIGRATIONS, SCHEMA};
use crate::model::alert::DeploymentId;
use crate::model::changes::Changes;
use crate::model::notify;
use crate::model::report::{
    Engine, Feedback, HistoryEntry, Related, RelatedAlert, Report, ReportStatus,
};
use crate::store::rules::{self, Merge};
use crate::store::{Insert, ListFilter, Rediagnose, ReportStore, Restart, StoreError};

/// Writes every field a version owns (all but the alert, related alerts, times of creation
/// and the deployment id) from `r`.
fn write_version(conn: &Connection, r: &Report) -> Result<(), StoreError> {
    let id = r.deployment_id.as_str();
    conn.execute(
        "UPDATE reports SET status = ?1, content = ?2, error = ?3, raw_output = ?4, runner = ?5, \
         attempts = ?6, version = ?7, updated_time = ?8, started_time = ?9, duration_ms = ?10, \
         usage = ?11, evidence = ?12, engine = ?13, ai_error = ?14, feedback = ?15, changes = ?16, \
         resolved_at = ?17, lease_owner = ?18, lease_until = ?19, evidence_error = ?20, \
         evidence_until = ?21, deployment = ?22, release = ?24, release_verdict = ?25, \
         notifications = ?26, notify_due = ?27, evidence_unmeasured = ?28 WHERE deployment_id = ?23",
        params![
            r.status().as_str(),
            content(id, r.body())?,
            r.error(),
            r.raw_output,
            r.runner.map(|k| k.as_str()),
            r.attempts,
            r.version,
            ms(r.updated_time),
            r.started_time.map(ms),
            r.duration_ms.map(|d| d as i64),
            r.usage.as_ref().map(|u| to_json(id, u)).transpose()?,
            r.evidence.as_ref().map(|e| to_json(id, e)).transpose()?,
            r.engine().map(Engine::as_str),
            r.ai_error(),
            r.feedback.as_ref().map(|f| to_json(id, f)).transpose()?,
            r.changes.as_ref().map(|c| to_json(id, c)).transpose()?,
            r.resolved_at.map(ms),
            r.lease_owner,
            r.lease_until.map(ms),
            r.evidence_error,
            r.evidence_until.map(ms),
            r.deployment.as_ref().map(|d| to_json(id, d)).transpose()?,
            id,
            r.release.as_ref().map(|v| to_json(id, v)).transpose()?,
            r.release.as_ref().map(|v| v.verdict.as_str()),
            to_json(id, &r.notifications)?,
            notify::due(&r.notifications).map(ms),
            r.unmeasured.as_ref().map(|u| to_json(id, u)).transpose()?,
        ],
    )?;
    Ok(())
}

#[async_trait]
impl ReportStore for EmbeddedStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.exclusive(|conn| {
            conn.execute_batch(SCHEMA)?;
            let tx = conn.transaction()?;
            let mut version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            for (target, sql) in MIGRATIONS {
                if version < *target {
                    tx.execute_batch(sql)?;
                    tx.execute_batch(&format!("PRAGMA user_version = {target}"))?;
                    version = *target;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let free = self.free_bytes()?;
        if free < super::MIN_FREE_BYTES {
            return Err(StoreError::Io {
                path: self.dir.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("{free} bytes free, fewer than {}", super::MIN_FREE_BYTES),
                ),
            });
        }
        let now = ms(Utc::now());
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO liveness (id, at) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                [now],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert(&self, report: &Report) -> Result<Insert, StoreError> {
        let r = report.clone();
        let alert = to_json(&r.id, &r.alert)?;
        let content = content(&r.id, r.body())?;
        let deployment = r
            .deployment
            .as_ref()
            .map(|d| to_json(&r.id, d))
            .transpose()?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        // A bounded queue: in a storm intake waits here for room, and nothing is dropped.
        self.send(Write::Insert(Box::new(PendingInsert {
            report: r,
            content,
            alert,
            deployment,
            reply,
        })))
        .await?;
        answer
            .await
            .map_err(|_| StoreError::Task("insert was dropped before its commit".into()))?
    }

    async fn get(&self, deployment_id: &DeploymentId) -> Result<Option<Report>, StoreError> {
        let id = deployment_id.clone();
        self.read(move |conn| select_one(conn, id.as_str())).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Report>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM reports WHERE (?1 IS NULL OR status = ?1) \
                 AND (?2 IS NULL OR created_time < ?2) \
                 AND (?3 IS NULL OR created_time < ?3 OR (created_time = ?3 AND id < ?4)) \
                 AND (?6 IS NULL OR release_verdict = ?6) \
                 ORDER BY created_time DESC, id DESC LIMIT ?5"
            ))?;
            let page = &filter.page;
            let rows = stmt.query_map(
                params![
                    filter.status.map(|s| s.as_str()),
                    page.before.map(ms),
                    page.after.as_ref().map(|c| ms(c.created_time)),
                    page.after.as_ref().map(|c| c.key.clone()),
                    page.limit,
                    filter.verdict.map(|v| v.as_str()),
                ],
                raw_report,
            )?;
            rows.map(|row| {
                row.map_err(StoreError::from)
                    .and_then(RawReport::into_report)
            })
            .collect()
        })
        .await
    }

    async fn set_changes(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        changes: &Changes,
    ) -> Result<bool, StoreError> {
        self.set_json(
            deployment_id,
            version,
            "changes",
            Stage::Generating,
            changes,
        )
        .await
    }

    async fn add_related(
        &self,
        deployment_id: &DeploymentId,
        related: &RelatedAlert,
    ) -> Result<Related, StoreError> {
        let (id, related) = (deployment_id.clone(), related.clone());
        self.with(move |conn| {
            let Some(report) = select_one(conn, id.as_str())? else {
                return Ok(Related::NoReport);
            };
            let all = match rules::merge_related(&report, related) {
                Merge::Duplicate => return Ok(Related::Duplicate(report.status())),
                Merge::Added(all) => all,
            };
            let json = to_json(id.as_str(), &all)?;
            conn.execute(
                "UPDATE reports SET related_alerts = ?1, resolved_at = NULL WHERE deployment_id = ?2",
                params![json, id.as_str()],
            )?;
            Ok(Related::Added(report.status()))
        })
        .await
    }

    async fn set_resolved(
        &self,
        deployment_id: &DeploymentId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = deployment_id.clone();
        self.with(move |conn| {
            Ok(conn.execute(
                "UPDATE reports SET resolved_at = ?1 WHERE deployment_id = ?2",
                params![ms(at), id.as_str()],
            )? == 1)
        })
        .await
    }

    async fn set_feedback(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        feedback: &Feedback,
    ) -> Result<bool, StoreError> {
        self.set_json(
            deployment_id,
            version,
            "feedback",
            Stage::Finished,
            feedback,
        )
        .await
    }

    async fn rediagnose(
        &self,
        deployment_id: &DeploymentId,
        now: DateTime<Utc>,
        restart: Restart,
    ) -> Result<Rediagnose, StoreError> {
        let id = deployment_id.clone();
        self.with(move |conn| {
            let Some(current) = select_one(conn, id.as_str())? else {
                return Ok(Rediagnose::NotFound);
            };
            if !rules::may_restart(&current) {
                return Ok(Rediagnose::InProgress);
            }
            if let Some(failed_at) = rules::too_soon(&current, restart.failed_before) {
                return Ok(Rediagnose::TooSoon(failed_at));
            }
            let h = current.to_history();
            let key = h.deployment_id.as_str();
            conn.execute(
                "INSERT OR IGNORE INTO report_history (deployment_id, version, status, content, error, \
                 runner, attempts, created_time, updated_time, duration_ms, feedback) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    key,
                    h.version,
                    h.status.as_str(),
                    content(key, h.body.as_ref())?,
                    h.error,
                    h.runner.map(|r| r.as_str()),
                    h.attempts,
                    ms(h.created_time),
                    ms(h.updated_time),
                    h.duration_ms.map(|d| d as i64),
                    h.feedback.as_ref().map(|f| to_json(key, f)).transpose()?,
                ],
            )?;
            let dropped = conn.execute(
                "DELETE FROM report_history WHERE deployment_id = ?1 AND version < ?2",
                params![key, rules::oldest_kept(h.version, restart.max_history)],
            )?;
            let restarted = rules::restart(&current, now, restart.deployment.as_ref());
            write_version(conn, &restarted)?;
            Ok(Rediagnose::Restarted {
                report: Box::new(restarted),
                dropped: dropped as u64,
            })
        })
        .await
    }

    async fn history(&self, deployment_id: &DeploymentId) -> Result<Vec<HistoryEntry>, StoreError> {
        let id = deployment_id.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT version, status, content, error, runner, attempts, created_time, updated_time, \
                 duration_ms, feedback FROM report_history WHERE deployment_id = ?1 ORDER BY version DESC",
            )?;
            let rows = stmt.query_map([id.as_str()], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, u32>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, i64>(7)?,
                    row.get::<_, Option<i64>>(8)?,
                    row.get::<_, Option<String>>(9)?,
                ))
            })?;
            rows.map(|row| {
                let (version, s, content, error, runner_name, attempts, created, updated, duration, feedback) =
                    row?;
                let status = status(id.as_str(), &s)?;
                Ok(HistoryEntry {
                    deployment_id: id.clone(),
                    version,
                    status,
                    body: body(id.as_str(), status, &content)?,
                    error,
                    runner: runner(id.as_str(), runner_name.as_deref())?,
                    attempts,
                    created_time: time(created),
                    updated_time: time(updated),
                    duration_ms: duration.map(|d| d.max(0) as u64),
                    feedback: parse_json(id.as_str(), "feedback", feedback.as_deref())?,
                })
            })
            .collect()
        })
        .await
    }

    async fn delete(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError> {
        let id = deployment_id.clone();
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM report_history WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            let deleted = conn.execute(
                "DELETE FROM reports WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn count_by_status(&self) -> Result<HashMap<ReportStatus, u64>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM reports GROUP BY status")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut counts = HashMap::new();
            for row in rows {
                let (s, n) = row?;
                counts.insert(status("count", &s)?, n.max(0) as u64);
            }
            Ok(counts)
        })
        .await
    }

    async fn queue_depth(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM reports WHERE status = 'generating' \
                 AND (lease_until IS NULL OR lease_until < ?1)",
                [ms(now)],
                |row| row.get(0),
            )?;
            Ok(n.max(0) as u64)
        })
        .await
    }
}
