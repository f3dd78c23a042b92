//! The embedded store: one SQLite file (WAL, `synchronous=FULL`, so an accepted alert is
//! on disk before `202`), so the service runs with no database server.
//!
//! Two connections: the writer, and a reader for the reads (WAL lets them run while a
//! write commits). Every write is group-committed: one writer thread takes every write
//! waiting (a new report, a lease, evidence, an outcome, ...), runs each in a savepoint of
//! one transaction, commits once (one fsync), and answers each caller only after that
//! commit; writes that arrive meanwhile go in its next batch.
//!
//! - [`rows`]: the columns, and reading them back (an unreadable one names its report);
//! - `writer`: group commits and checkpoints;
//! - `reports`, `deployments` and `budget`: the store traits.

mod budget;
mod deployments;
mod queues;
mod reports;
pub mod rows;
mod writer;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::alert::DeploymentId;
use crate::model::report::Report;
use crate::store::StoreError;
use rows::{raw_report, to_json, RawReport, COLUMNS};
use writer::{
    checkpoint_wal, lost, write_all, Done, Wal, Write, MAX_PENDING_WRITES, WAL_SIZE_LIMIT,
};

const SCHEMA: &str = include_str!("../../../migrations/sqlite/0001_reports.sql");
/// Later migrations, applied in order by `PRAGMA user_version` (0001 is idempotent and
/// always runs; a store it created has version 0 or 1).
const MIGRATIONS: &[(i64, &str)] = &[
    (
        2,
        include_str!("../../../migrations/sqlite/0002_evidence.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_engine.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_feedback.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_deployments.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_alert_lifecycle.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_queue_index.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_evidence_queue.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/sqlite/0009_budget.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/sqlite/0010_release.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/sqlite/0011_outbox.sql"),
    ),
    (
        12,
        include_str!("../../../migrations/sqlite/0012_unmeasured.sql"),
    ),
    (
        13,
        include_str!("../../../migrations/sqlite/0013_liveness.sql"),
    ),
    (
        14,
        include_str!("../../../migrations/sqlite/0014_rollback_secret.sql"),
    ),
    (
        15,
        include_str!("../../../migrations/sqlite/0015_queue_owners.sql"),
    ),
];
/// Which versions a [`EmbeddedStore::set_json`] may change.
#[derive(Clone, Copy)]
enum Stage {
    Generating,
    Finished,
}

/// SQLite behind mutexes; calls run on the blocking pool.
#[derive(Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Every write, for the writer thread to commit in groups.
    writes: tokio::sync::mpsc::Sender<Write>,
    /// Tells the checkpointer that something was written; dropped with the last handle
    /// (and the writer thread's), which stops it.
    wrote: std::sync::mpsc::Sender<()>,
    /// The folder of the store's files, whose free space readiness checks.
    dir: Arc<std::path::PathBuf>,
    /// Whether a diagnosis waits for its report's evidence (the evidence stage is on).
    evidence_first: bool,
}

/// Free space below which the store is not ready: SQLite reuses its log's space, so a
/// small write can still pass on a disk too full for a new report (measured on a full
/// tmpfs: intake answered 503 while a one-row readiness write went through).
pub const MIN_FREE_BYTES: u64 = 1024 * 1024;

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
        let json = to_json(id.as_str(), value)?;
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

    /// With `on`, the diagnosis queue claims a report only once its evidence is settled
    /// (gathered, or failed): for a service whose evidence stage is on.
    pub fn evidence_first(self, on: bool) -> Self {
        Self {
            evidence_first: on,
            ..self
        }
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
        let (wrote, written) = std::sync::mpsc::channel();
        let (writes, queue) = tokio::sync::mpsc::channel(MAX_PENDING_WRITES);
        let (writer, writer_wal, writer_wrote) =
            (Arc::clone(&conn), Arc::clone(&wal), wrote.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_all(&writer, queue, &writer_wal, &writer_wrote))
            .map_err(|e| StoreError::Task(format!("starting the store's writer: {e}")))?;
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_wal(&checkpointer, &written, &wal))
            .map_err(|e| StoreError::Task(format!("starting the store's checkpointer: {e}")))?;
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.to_path_buf(),
            None => std::path::PathBuf::from("."),
        };
        Ok(Self {
            dir: Arc::new(dir),
            conn,
            reader: Arc::new(Mutex::new(reader)),
            writes,
            wrote,
            evidence_first: false,
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

    /// Runs a write in the writer thread's next group commit (in a savepoint of its own)
    /// and answers after that commit.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: writer::Job = Box::new(move |conn: &Connection| {
            let result = f(conn);
            Done {
                ok: result.is_ok(),
                deliver: Box::new(move |committed: Result<(), String>| {
                    let _ = reply.send(committed.map_err(lost).and(result));
                }),
            }
        });
        self.send(Write::Op(job)).await?;
        answer
            .await
            .map_err(|_| StoreError::Task("the write was dropped before its commit".into()))?
    }

    /// Bytes free for the store's files.
    fn free_bytes(&self) -> Result<u64, StoreError> {
        let stat = nix::sys::statvfs::statvfs(self.dir.as_path()).map_err(|e| StoreError::Io {
            path: self.dir.display().to_string(),
            source: e.into(),
        })?;
        Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
    }

    /// Queues a write for the writer thread, waiting for room.
    async fn send(&self, write: Write) -> Result<(), StoreError> {
        self.writes
            .send(write)
            .await
            .map_err(|_| StoreError::Task("the store's writer has stopped".into()))
    }

    /// Runs `f` on the writer connection alone, outside any batch (migrations: schema
    /// statements and `PRAGMA user_version` in a transaction of their own).
    async fn exclusive<T, F>(&self, f: F) -> Result<T, StoreError>
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Insert, ReportStore};

    /// Writes share a commit, not a fate: a failed one is rolled back alone, and one that
    /// panics neither takes the others nor stops the writer.
    #[tokio::test]
    async fn a_failed_write_rolls_back_alone_and_a_panicking_one_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("w.sqlite3")).unwrap();
        store.migrate().await.unwrap();
        let id = DeploymentId::parse("w-1").unwrap();
        let report = Report::new(id.clone(), Default::default(), chrono::Utc::now());
        assert_eq!(store.insert(&report).await.unwrap(), Insert::Inserted);
        let set = |column: &'static str, fail: bool, panic: bool| {
            let store = store.clone();
            async move {
                store
                    .with(move |conn| {
                        conn.execute(
                            &format!(
                                "UPDATE reports SET {column} = 'set' WHERE deployment_id = 'w-1'"
                            ),
                            [],
                        )?;
                        if panic {
                            panic!("a bug in a write");
                        }
                        if fail {
                            return Err(StoreError::Task("refused".into()));
                        }
                        Ok(())
                    })
                    .await
            }
        };
        let (failed, kept, panicked) = tokio::join!(
            set("error", true, false),
            set("raw_output", false, false),
            set("ai_error", false, true)
        );
        assert!(failed.is_err() && kept.is_ok() && panicked.is_err());
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            (got.error(), got.raw_output.as_deref(), got.ai_error()),
            (None, Some("set"), None)
        );
        let next = Report::new(
            DeploymentId::parse("w-2").unwrap(),
            Default::default(),
            chrono::Utc::now(),
        );
        assert_eq!(
            store.insert(&next).await.unwrap(),
            Insert::Inserted,
            "the writer lives"
        );
    }

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
                    let mut alert = crate::model::alert::Alert::default();
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
