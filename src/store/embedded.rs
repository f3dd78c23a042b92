//! The embedded store: one SQLite file (WAL, `synchronous=FULL`, so an accepted alert is
//! on disk before `202`), so the service runs with no database server.
//!
//! Two connections: the writer, and a reader for the reads (WAL lets them run while a
//! write commits). New reports are written by group commit: one writer thread takes every
//! insert waiting, commits them in one transaction, one fsync, and answers each caller
//! only after that commit; inserts that arrive meanwhile go in its next batch.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    DeploymentStore, Insert, ListFilter, Page, Rediagnose, ReportStore, StoreError, Upsert,
};
use crate::alert::DeploymentId;
use crate::changes::Changes;
use crate::config::RunnerKind;
use crate::deployment::Deployment;
use crate::evidence::EvidenceItem;
use crate::report::{
    alert_identity, Engine, Feedback, Finish, HistoryEntry, Related, RelatedAlert, Report,
    ReportStatus, MAX_RELATED_ALERTS,
};

/// A stored JSON column, read back.
fn parse_json<T: serde::de::DeserializeOwned>(
    id: &str,
    json: Option<&str>,
) -> Result<Option<T>, StoreError> {
    json.map(|j| serde_json::from_str(j).map_err(|e| corrupt(id, e.to_string())))
        .transpose()
}

const SCHEMA: &str = include_str!("../../migrations/sqlite/0001_reports.sql");
/// Later migrations, applied in order by `PRAGMA user_version` (0001 is idempotent and
/// always runs; a store it created has version 0 or 1).
const MIGRATIONS: &[(i64, &str)] = &[
    (2, include_str!("../../migrations/sqlite/0002_evidence.sql")),
    (3, include_str!("../../migrations/sqlite/0003_engine.sql")),
    (4, include_str!("../../migrations/sqlite/0004_feedback.sql")),
    (
        5,
        include_str!("../../migrations/sqlite/0005_deployments.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite/0006_alert_lifecycle.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/0007_queue_index.sql"),
    ),
];
const COLUMNS: &str =
    "id, deployment_id, status, content, error, raw_output, alert, runner, attempts, \
     version, created_time, updated_time, started_time, duration_ms, usage, lease_owner, lease_until, \
     evidence, engine, ai_error, feedback, deployment, changes, related_alerts, resolved_at";

/// Which versions a [`EmbeddedStore::set_json`] may change.
#[derive(Clone, Copy)]
enum Stage {
    Generating,
    Finished,
}

/// An insert waiting for the next group commit.
struct PendingInsert {
    report: Report,
    alert: String,
    deployment: Option<String>,
    reply: tokio::sync::oneshot::Sender<Result<Insert, StoreError>>,
}

/// SQLite behind mutexes; calls run on the blocking pool.
#[derive(Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// New reports, for the writer thread to commit in groups.
    inserts: std::sync::mpsc::Sender<PendingInsert>,
    /// Tells the checkpointer that something was written; dropped with the last handle
    /// (and the writer thread's), which stops it.
    wrote: std::sync::mpsc::Sender<()>,
}

impl EmbeddedStore {
    /// Stores `value` as JSON in `column` of version `version` while it is at `stage`;
    /// `false` when it is not (finished, deleted or diagnosed again meanwhile).
    async fn set_json(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        column: &'static str,
        stage: Stage,
        value: &impl serde::Serialize,
    ) -> Result<bool, StoreError> {
        let id = deployment_id.clone();
        let json = serde_json::to_string(value).map_err(|e| corrupt(id.as_str(), e.to_string()))?;
        let status = match stage {
            Stage::Generating => "= 'generating'",
            Stage::Finished => "!= 'generating'",
        };
        self.with(move |conn| {
            Ok(conn.execute(
                &format!(
                    "UPDATE reports SET {column} = ?1 WHERE deployment_id = ?2 AND version = ?3 \
                     AND status {status}"
                ),
                params![json, id.as_str(), version],
            )? == 1)
        })
        .await
    }

    /// Opens (creating if needed) the store file and its folder.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_wal_limit(path, WAL_SIZE_LIMIT)
    }

    /// [`Self::open`], with the log restarted past `wal_limit` bytes.
    fn open_with_wal_limit(path: &Path, wal_limit: i64) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Checkpoints run on their own thread (`checkpoint_wal`), not inside a commit: one
        // in the commit path held every insert waiting behind it (p99 12 ms against 8 ms
        // under load). When the log is restarted it is cut back to this size.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", wal_limit)?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        let conn = Arc::new(Mutex::new(conn));
        let wal = Arc::new(Wal {
            limit: wal_limit,
            checkpointing: Mutex::default(),
            restart: AtomicBool::default(),
        });
        let (wrote, writes) = std::sync::mpsc::channel();
        let (inserts, queue) = std::sync::mpsc::channel();
        let (writer, writer_wal, writer_wrote) =
            (Arc::clone(&conn), Arc::clone(&wal), wrote.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_inserts(&writer, &queue, &writer_wal, &writer_wrote))
            .map_err(|e| StoreError::Task(format!("starting the store's writer: {e}")))?;
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_wal(&checkpointer, &writes, &wal))
            .map_err(|e| StoreError::Task(format!("starting the store's checkpointer: {e}")))?;
        Ok(Self {
            conn,
            reader: Arc::new(Mutex::new(reader)),
            inserts,
            wrote,
        })
    }

    /// Runs a read on the reader connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let guard = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs a write on the writer connection, then wakes the checkpointer.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-done transaction behind
            // (SQLite rolls it back), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        let _ = self.wrote.send(());
        result
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn corrupt(id: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: message.into(),
    }
}

fn status(id: &str, s: &str) -> Result<ReportStatus, StoreError> {
    ReportStatus::parse(s).ok_or_else(|| corrupt(id, format!("unknown status {s:?}")))
}

struct RawReport {
    id: String,
    deployment_id: String,
    status: String,
    content: String,
    error: Option<String>,
    raw_output: Option<String>,
    alert: String,
    runner: Option<String>,
    attempts: u32,
    version: u32,
    created_time: i64,
    updated_time: i64,
    started_time: Option<i64>,
    duration_ms: Option<i64>,
    usage: Option<String>,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    evidence: Option<String>,
    engine: Option<String>,
    ai_error: Option<String>,
    feedback: Option<String>,
    deployment: Option<String>,
    changes: Option<String>,
    related_alerts: Option<String>,
    resolved_at: Option<i64>,
}

fn raw_report(row: &Row<'_>) -> rusqlite::Result<RawReport> {
    Ok(RawReport {
        id: row.get(0)?,
        deployment_id: row.get(1)?,
        status: row.get(2)?,
        content: row.get(3)?,
        error: row.get(4)?,
        raw_output: row.get(5)?,
        alert: row.get(6)?,
        runner: row.get(7)?,
        attempts: row.get(8)?,
        version: row.get(9)?,
        created_time: row.get(10)?,
        updated_time: row.get(11)?,
        started_time: row.get(12)?,
        duration_ms: row.get(13)?,
        usage: row.get(14)?,
        lease_owner: row.get(15)?,
        lease_until: row.get(16)?,
        evidence: row.get(17)?,
        engine: row.get(18)?,
        ai_error: row.get(19)?,
        feedback: row.get(20)?,
        deployment: row.get(21)?,
        changes: row.get(22)?,
        related_alerts: row.get(23)?,
        resolved_at: row.get(24)?,
    })
}

impl RawReport {
    fn into_report(self) -> Result<Report, StoreError> {
        let id = self.id;
        Ok(Report {
            deployment_id: DeploymentId::parse(&self.deployment_id).map_err(|e| corrupt(&id, e))?,
            status: status(&id, &self.status)?,
            alert: serde_json::from_str(&self.alert).map_err(|e| corrupt(&id, e.to_string()))?,
            content: self.content,
            error: self.error,
            raw_output: self.raw_output,
            runner: self.runner,
            attempts: self.attempts,
            version: self.version,
            created_time: time(self.created_time),
            updated_time: time(self.updated_time),
            started_time: self.started_time.map(time),
            duration_ms: self.duration_ms.map(|d| d.max(0) as u64),
            usage: self
                .usage
                .as_deref()
                .and_then(|u| serde_json::from_str(u).ok()),
            lease_owner: self.lease_owner,
            lease_until: self.lease_until.map(time),
            evidence: parse_json(&id, self.evidence.as_deref())?,
            engine: self.engine.as_deref().and_then(Engine::parse),
            ai_error: self.ai_error,
            feedback: parse_json(&id, self.feedback.as_deref())?,
            deployment: parse_json(&id, self.deployment.as_deref())?,
            changes: parse_json(&id, self.changes.as_deref())?,
            related_alerts: parse_json(&id, self.related_alerts.as_deref())?.unwrap_or_default(),
            resolved_at: self.resolved_at.map(time),
            id,
        })
    }
}

/// One insert of a group commit, inside its transaction.
fn insert_one(tx: &Connection, p: &PendingInsert) -> Result<Insert, StoreError> {
    let r = &p.report;
    let inserted = tx.execute(
        "INSERT INTO reports (id, deployment_id, status, content, alert, attempts, version, \
         created_time, updated_time, deployment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
         COALESCE(?10, (SELECT body FROM deployments WHERE deployment_id = ?2))) \
         ON CONFLICT (deployment_id) DO NOTHING",
        params![
            r.id,
            r.deployment_id.as_str(),
            r.status.as_str(),
            r.content,
            p.alert,
            r.attempts,
            r.version,
            ms(r.created_time),
            ms(r.updated_time),
            p.deployment,
        ],
    )?;
    if inserted == 1 {
        return Ok(Insert::Inserted);
    }
    let existing: String = tx.query_row(
        "SELECT status FROM reports WHERE deployment_id = ?1",
        [r.deployment_id.as_str()],
        |row| row.get(0),
    )?;
    Ok(Insert::Exists(status(r.deployment_id.as_str(), &existing)?))
}

/// The writer thread: takes every insert waiting when it looks, commits them together, and
/// looks again; it ends when the last handle on the store is dropped. One thread instead of
/// a blocking task per insert: under load those tasks queued on the connection's lock and
/// woke one by one to find their insert already committed.
///
/// The log is restarted here too, between two batches, when the checkpointer asks (past
/// [`WAL_SIZE_LIMIT`]): under steady writes a checkpoint never finds it fully copied at
/// the moment a commit starts, which is when SQLite would start it over, and it grew
/// without bound (4 GB in 45 s of load). The checkpointer has copied nearly all of it by
/// then, so the restart is a pause of a few milliseconds (longer only if a read is running:
/// a restart waits for readers), once per [`WAL_SIZE_LIMIT`] written.
fn write_inserts(
    conn: &Mutex<Connection>,
    queue: &std::sync::mpsc::Receiver<PendingInsert>,
    wal: &Wal,
    wrote: &std::sync::mpsc::Sender<()>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        // A panic while holding the lock cannot leave a half-done transaction behind
        // (SQLite rolls it back), so a poisoned lock is still usable.
        let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        commit_inserts(&mut guard, batch);
        let _ = wrote.send(());
        if wal.restart.swap(false, Ordering::Relaxed) {
            match wal.checkpointing.try_lock() {
                Ok(_checkpointing) => {
                    if let Err(e) = checkpoint(&guard, "RESTART") {
                        tracing::warn!(error = %e, "restarting the store's write-ahead log");
                    }
                }
                Err(_) => wal.restart.store(true, Ordering::Relaxed),
            }
        }
    }
}

/// What the writer and the checkpointer share about the write-ahead log.
struct Wal {
    /// [`WAL_SIZE_LIMIT`], but for tests.
    limit: i64,
    /// Held by whichever of them is checkpointing.
    checkpointing: Mutex<()>,
    /// Set by the checkpointer when the log is past [`WAL_SIZE_LIMIT`] and nearly all
    /// copied: the writer's cue to restart it.
    restart: AtomicBool,
}

/// Bytes of write-ahead log past which the writer restarts it, and which it is cut to then.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The least time between two checkpoints; the checkpointer sleeps until a write.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// A checkpoint in `mode`; the log's size in bytes.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    let frames: i64 =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))?;
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(frames.max(0) * page)
}

/// A checkpoint pass this short has left little for the writer's restart to copy.
const CAUGHT_UP: std::time::Duration = std::time::Duration::from_millis(3);

/// The checkpointer thread: after writes, a passive checkpoint (it neither waits for nor
/// blocks the writer and the readers), at most one every [`CHECKPOINT_EVERY`]; it sleeps
/// while nothing is written and ends when the store is dropped. Once the
/// log is past [`WAL_SIZE_LIMIT`], it runs passes back to back, each copying what was
/// written during the one before, until one is short, and then asks the writer to restart
/// the log: the writer's pause is then 1 to 5 ms, not the 10 to 40 ms measured when it
/// restarted the log as soon as it passed the limit.
fn checkpoint_wal(conn: &Connection, writes: &std::sync::mpsc::Receiver<()>, wal: &Wal) {
    let pass = || {
        let _checkpointing = wal
            .checkpointing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = std::time::Instant::now();
        checkpoint(conn, "PASSIVE")
            .inspect_err(
                |e| tracing::warn!(error = %e, "checkpointing the store's write-ahead log"),
            )
            .ok()
            .map(|bytes| (bytes, started.elapsed()))
    };
    while writes.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_EVERY);
        // Every write until now is covered by this pass.
        writes.try_iter().for_each(drop);
        let Some((bytes, _)) = pass() else { continue };
        if bytes <= wal.limit || wal.restart.load(Ordering::Relaxed) {
            continue;
        }
        for _ in 0..8 {
            match pass() {
                Some((_, took)) if took > CAUGHT_UP => {}
                _ => break,
            }
        }
        wal.restart.store(true, Ordering::Relaxed);
    }
}

/// Writes a batch of inserts in one transaction (one fsync) and answers each caller only
/// after the commit: a `202` still means on disk. If the commit fails, every caller gets
/// the error and nothing of the batch is stored.
fn commit_inserts(conn: &mut Connection, batch: Vec<PendingInsert>) {
    let results = (|| {
        let tx = conn.transaction()?;
        let results: Vec<Result<Insert, StoreError>> =
            batch.iter().map(|p| insert_one(&tx, p)).collect();
        tx.commit()?;
        Ok::<_, StoreError>(results)
    })();
    match results {
        Ok(results) => {
            for (p, result) in batch.into_iter().zip(results) {
                let _ = p.reply.send(result);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for p in batch {
                let _ = p.reply.send(Err(StoreError::Task(format!(
                    "group commit failed: {message}"
                ))));
            }
        }
    }
}

fn select_one(conn: &Connection, deployment_id: &str) -> Result<Option<Report>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM reports WHERE deployment_id = ?1"),
        [deployment_id],
        raw_report,
    )
    .optional()?
    .map(RawReport::into_report)
    .transpose()
}

#[async_trait]
impl ReportStore for EmbeddedStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.with(|conn| {
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
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn insert(&self, report: &Report) -> Result<Insert, StoreError> {
        let r = report.clone();
        let alert = serde_json::to_string(&r.alert).map_err(|e| corrupt(&r.id, e.to_string()))?;
        let deployment = r
            .deployment
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| corrupt(&r.id, e.to_string()))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inserts
            .send(PendingInsert {
                report: r,
                alert,
                deployment,
                reply,
            })
            .map_err(|_| StoreError::Task("the store's writer has stopped".into()))?;
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
                 ORDER BY created_time DESC, id DESC LIMIT ?5"
            ))?;
            let page = &filter.page;
            let rows = stmt.query_map(
                params![
                    filter.status.map(|s| s.as_str()),
                    page.before.map(ms),
                    page.after.as_ref().map(|c| ms(c.created_time)),
                    page.after.as_ref().map(|c| c.key.clone()),
                    page.limit
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

    async fn claim_next(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        let owner = owner.to_owned();
        self.with(move |conn| {
            conn.query_row(
                &format!(
                    "UPDATE reports SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1, \
                     started_time = ?3 WHERE id = (SELECT id FROM reports WHERE status = 'generating' \
                     AND (lease_until IS NULL OR lease_until < ?3) ORDER BY updated_time LIMIT 1) \
                     RETURNING {COLUMNS}"
                ),
                params![owner, ms(lease_until), ms(now)],
                raw_report,
            )
            .optional()?
            .map(RawReport::into_report)
            .transpose()
        })
        .await
    }

    async fn renew_lease(
        &self,
        deployment_id: &DeploymentId,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (id, owner) = (deployment_id.clone(), owner.to_owned());
        self.with(move |conn| {
            Ok(conn.execute(
                "UPDATE reports SET lease_until = ?1 WHERE deployment_id = ?2 AND lease_owner = ?3 \
                 AND status = 'generating'",
                params![ms(lease_until), id.as_str(), owner],
            )? == 1)
        })
        .await
    }

    async fn set_evidence(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        evidence: &[EvidenceItem],
    ) -> Result<bool, StoreError> {
        self.set_json(
            deployment_id,
            version,
            "evidence",
            Stage::Generating,
            &evidence,
        )
        .await
    }

    async fn set_deployment(
        &self,
        deployment_id: &DeploymentId,
        version: u32,
        deployment: &Deployment,
    ) -> Result<bool, StoreError> {
        self.set_json(
            deployment_id,
            version,
            "deployment",
            Stage::Generating,
            deployment,
        )
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
            let tx = conn.transaction()?;
            let Some(report) = select_one(&tx, id.as_str())? else {
                return Ok(Related::NoReport);
            };
            let identity = alert_identity(&related.alert);
            if alert_identity(&report.alert) == identity
                || report
                    .related_alerts
                    .iter()
                    .any(|r| alert_identity(&r.alert) == identity)
            {
                return Ok(Related::Duplicate(report.status));
            }
            let mut all = report.related_alerts;
            all.push(related);
            let excess = all.len().saturating_sub(MAX_RELATED_ALERTS);
            all.drain(..excess);
            let json = serde_json::to_string(&all).map_err(|e| corrupt(id.as_str(), e.to_string()))?;
            tx.execute(
                "UPDATE reports SET related_alerts = ?1, resolved_at = NULL WHERE deployment_id = ?2",
                params![json, id.as_str()],
            )?;
            tx.commit()?;
            Ok(Related::Added(report.status))
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

    async fn release(&self, deployment_id: &DeploymentId, owner: &str) -> Result<bool, StoreError> {
        let (id, owner) = (deployment_id.clone(), owner.to_owned());
        self.with(move |conn| {
            Ok(conn.execute(
                "UPDATE reports SET lease_owner = NULL, lease_until = NULL, \
                 attempts = MAX(attempts - 1, 0) WHERE deployment_id = ?1 \
                 AND lease_owner = ?2 AND status = 'generating'",
                params![id.as_str(), owner],
            )? == 1)
        })
        .await
    }

    async fn finish(
        &self,
        deployment_id: &DeploymentId,
        owner: &str,
        finish: &Finish,
    ) -> Result<bool, StoreError> {
        let (id, owner, f) = (deployment_id.clone(), owner.to_owned(), finish.clone());
        let usage = f.usage.as_ref().and_then(|u| serde_json::to_string(u).ok());
        self.with(move |conn| {
            Ok(conn.execute(
                "UPDATE reports SET status = ?1, content = ?2, error = ?3, raw_output = ?4, runner = ?5, \
                 updated_time = ?6, duration_ms = ?7, usage = ?10, engine = ?11, ai_error = ?12, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE deployment_id = ?8 AND lease_owner = ?9 AND status = 'generating'",
                params![
                    f.status.as_str(),
                    f.content,
                    f.error,
                    f.raw_output,
                    f.runner.map(RunnerKind::as_str),
                    ms(f.now),
                    f.duration_ms as i64,
                    id.as_str(),
                    owner,
                    usage,
                    f.engine.map(Engine::as_str),
                    f.ai_error,
                ],
            )? == 1)
        })
        .await
    }

    async fn rediagnose(
        &self,
        deployment_id: &DeploymentId,
        now: DateTime<Utc>,
    ) -> Result<Rediagnose, StoreError> {
        let id = deployment_id.clone();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let Some(current) = select_one(&tx, id.as_str())? else {
                return Ok(Rediagnose::NotFound);
            };
            if current.status == ReportStatus::Generating {
                return Ok(Rediagnose::InProgress);
            }
            let h = current.to_history();
            tx.execute(
                "INSERT OR IGNORE INTO report_history (deployment_id, version, status, content, error, \
                 runner, attempts, created_time, updated_time, duration_ms, feedback) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    h.deployment_id.as_str(),
                    h.version,
                    h.status.as_str(),
                    h.content,
                    h.error,
                    h.runner,
                    h.attempts,
                    ms(h.created_time),
                    ms(h.updated_time),
                    h.duration_ms.map(|d| d as i64),
                    h.feedback
                        .as_ref()
                        .and_then(|f| serde_json::to_string(f).ok()),
                ],
            )?;
            tx.execute(
                "UPDATE reports SET status = 'generating', content = '', error = NULL, raw_output = NULL, \
                 attempts = 0, version = version + 1, updated_time = ?1, started_time = NULL, \
                 duration_ms = NULL, usage = NULL, evidence = NULL, engine = NULL, ai_error = NULL, \
                 feedback = NULL, changes = NULL, resolved_at = NULL, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE deployment_id = ?2",
                params![ms(now), id.as_str()],
            )?;
            let updated = select_one(&tx, id.as_str())?
                .ok_or_else(|| corrupt(id.as_str(), "vanished during re-diagnosis"))?;
            tx.commit()?;
            Ok(Rediagnose::Restarted(Box::new(updated)))
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
                let (version, s, content, error, runner, attempts, created, updated, duration, feedback) =
                    row?;
                Ok(HistoryEntry {
                    deployment_id: id.clone(),
                    version,
                    status: status(id.as_str(), &s)?,
                    content,
                    error,
                    runner,
                    attempts,
                    created_time: time(created),
                    updated_time: time(updated),
                    duration_ms: duration.map(|d| d.max(0) as u64),
                    feedback: parse_json(id.as_str(), feedback.as_deref())?,
                })
            })
            .collect()
        })
        .await
    }

    async fn delete(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError> {
        let id = deployment_id.clone();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM report_history WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            let deleted = tx.execute(
                "DELETE FROM reports WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            tx.commit()?;
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

fn raw_deployment(row: &Row<'_>) -> rusqlite::Result<(String, String)> {
    Ok((row.get(0)?, row.get(1)?))
}

fn into_deployment((id, body): (String, String)) -> Result<Deployment, StoreError> {
    serde_json::from_str(&body).map_err(|e| corrupt(&id, e.to_string()))
}

#[async_trait]
impl DeploymentStore for EmbeddedStore {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<Upsert, StoreError> {
        let mut d = deployment.clone();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let created: Option<i64> = tx
                .query_row(
                    "SELECT created_time FROM deployments WHERE deployment_id = ?1",
                    [d.deployment_id.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(created) = created {
                d.created_time = time(created);
            }
            let id = d.deployment_id.as_str().to_owned();
            let body = serde_json::to_string(&d).map_err(|e| corrupt(&id, e.to_string()))?;
            tx.execute(
                "INSERT INTO deployments (deployment_id, body, deployed_at, created_time, updated_time) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (deployment_id) DO UPDATE SET \
                 body = excluded.body, deployed_at = excluded.deployed_at, updated_time = excluded.updated_time",
                params![id, body, ms(d.deployed_at), ms(d.created_time), ms(d.updated_time)],
            )?;
            tx.execute("DELETE FROM deployment_hosts WHERE deployment_id = ?1", [&id])?;
            for host in d.host_keys() {
                tx.execute(
                    "INSERT INTO deployment_hosts (host, deployment_id, deployed_at) VALUES (?1, ?2, ?3)",
                    params![host, id, ms(d.deployed_at)],
                )?;
            }
            tx.commit()?;
            Ok(if created.is_some() {
                Upsert::Updated
            } else {
                Upsert::Created
            })
        })
        .await
    }

    async fn get_deployment(
        &self,
        deployment_id: &DeploymentId,
    ) -> Result<Option<Deployment>, StoreError> {
        let id = deployment_id.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT deployment_id, body FROM deployments WHERE deployment_id = ?1",
                [id.as_str()],
                raw_deployment,
            )
            .optional()?
            .map(into_deployment)
            .transpose()
        })
        .await
    }

    async fn list_deployments(&self, page: &Page) -> Result<Vec<Deployment>, StoreError> {
        let page = page.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT deployment_id, body FROM deployments WHERE (?1 IS NULL OR created_time < ?1) \
                 AND (?2 IS NULL OR created_time < ?2 OR (created_time = ?2 AND deployment_id < ?3)) \
                 ORDER BY created_time DESC, deployment_id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![
                    page.before.map(ms),
                    page.after.as_ref().map(|c| ms(c.created_time)),
                    page.after.as_ref().map(|c| c.key.clone()),
                    page.limit
                ],
                raw_deployment,
            )?;
            rows.map(|row| row.map_err(StoreError::from).and_then(into_deployment))
                .collect()
        })
        .await
    }

    async fn delete_deployment(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError> {
        let id = deployment_id.clone();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM deployment_hosts WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            let deleted = tx.execute(
                "DELETE FROM deployments WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            tx.commit()?;
            Ok(deleted == 1)
        })
        .await
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
        let hosts =
            serde_json::to_string(host_keys).map_err(|e| corrupt("hosts", e.to_string()))?;
        self.read(move |conn| {
            conn.query_row(
                "SELECT d.deployment_id, d.body FROM deployment_hosts h \
                 JOIN deployments d ON d.deployment_id = h.deployment_id \
                 WHERE h.host IN (SELECT value FROM json_each(?1)) AND h.deployed_at BETWEEN ?2 AND ?3 \
                 ORDER BY h.deployed_at DESC, d.deployment_id DESC LIMIT 1",
                params![hosts, ms(from), ms(to)],
                raw_deployment,
            )
            .optional()?
            .map(into_deployment)
            .transpose()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under steady inserts the log is restarted past its limit instead of growing: the
    /// same inserts without the restart leave a log of some 20 MB.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_near_its_limit_under_steady_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.sqlite3");
        let store = EmbeddedStore::open_with_wal_limit(&path, 256 * 1024).unwrap();
        store.migrate().await.unwrap();
        let wal = dir.path().join("reports.sqlite3-wal");
        // Sixteen callers inserting one report after another: a commit is always waiting.
        let callers = (0..16).map(|caller| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..150 {
                    let mut alert = crate::alert::Alert::default();
                    alert
                        .annotations
                        .insert("description".into(), "x".repeat(2000));
                    let id = DeploymentId::parse(&format!("dep-{caller}-{n}")).unwrap();
                    let report = Report::new(id, alert, chrono::Utc::now());
                    assert_eq!(store.insert(&report).await.unwrap(), Insert::Inserted);
                }
            })
        });
        let all = futures_util::future::join_all(callers);
        tokio::pin!(all);
        let mut largest = 0;
        loop {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::select! {
                done = &mut all => {
                    done.into_iter().for_each(|r| r.unwrap());
                    break;
                }
                () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
            }
        }
        assert!(largest < 8 * 1024 * 1024, "the log reached {largest} bytes");
    }
}
