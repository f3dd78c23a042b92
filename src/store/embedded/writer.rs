//! The writer thread and the checkpointer. Every write of the store is group-committed:
//! the writer takes every write waiting (new reports, leases, evidence, outcomes, ...),
//! runs each in a savepoint of one transaction, commits once (one fsync), and answers each
//! caller only after that commit. No other code writes, so no fsync of one small write
//! holds the others back. The write-ahead log is kept bounded by checkpoints apart from the
//! commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rusqlite::{params, Connection, TransactionBehavior};

use super::rows::{ms, status};
use crate::model::report::Report;
use crate::store::{Insert, StoreError};

/// Writes waiting for the writer at most; past it, a caller (intake) waits for room: it
/// never drops one, and memory stays bounded in a storm.
pub(super) const MAX_PENDING_WRITES: usize = 4096;

/// A write for the writer thread.
pub(super) enum Write {
    /// A new report.
    Insert(Box<PendingInsert>),
    /// Any other change: run on the batch's transaction, in a savepoint of its own.
    Op(Job),
}

/// A change to run on the writer's connection; it answers with whether it succeeded and
/// how to tell its caller, once the batch's commit is known.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

/// Tells a caller how its write ended, once the commit is known (`Err(why)`: it failed).
pub(super) type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A job's outcome, waiting for the commit.
pub(super) struct Done {
    /// Whether the job succeeded (else its savepoint is rolled back).
    pub(super) ok: bool,
    /// Tells the caller.
    pub(super) deliver: Deliver,
}

/// An insert waiting for the next group commit.
pub(super) struct PendingInsert {
    pub(super) report: Report,
    pub(super) content: String,
    pub(super) alert: String,
    pub(super) deployment: Option<String>,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<Insert, StoreError>>,
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
            r.status().as_str(),
            p.content,
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
pub(super) fn write_all(
    conn: &Mutex<Connection>,
    mut queue: tokio::sync::mpsc::Receiver<Write>,
    wal: &Wal,
    wrote: &std::sync::mpsc::Sender<()>,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        // A panic while holding the lock cannot leave a half-done transaction behind
        // (SQLite rolls it back), so a poisoned lock is still usable.
        let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        commit(&mut guard, batch);
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
pub(super) struct Wal {
    /// [`WAL_SIZE_LIMIT`], but for tests.
    pub(super) limit: i64,
    /// Held by whichever of them is checkpointing.
    pub(super) checkpointing: Mutex<()>,
    /// Set by the checkpointer when the log is past [`WAL_SIZE_LIMIT`] and nearly all
    /// copied: the writer's cue to restart it.
    pub(super) restart: AtomicBool,
}

/// Bytes of write-ahead log past which the writer restarts it, and which it is cut to then.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

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
pub(super) fn checkpoint_wal(conn: &Connection, writes: &std::sync::mpsc::Receiver<()>, wal: &Wal) {
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

/// Runs one write in a savepoint of the batch's transaction, so a failed one leaves the
/// others intact; what its caller is told once the commit is known.
fn run_one(tx: &Connection, write: Write) -> Deliver {
    let savepoint = |sql: &str| {
        if let Err(e) = tx.execute_batch(sql) {
            tracing::error!(error = %e, sql, "store savepoint");
        }
    };
    savepoint("SAVEPOINT w");
    let (ok, deliver): (bool, Deliver) = match write {
        Write::Insert(p) => {
            let result = insert_one(tx, &p);
            let ok = result.is_ok();
            let reply = p.reply;
            (
                ok,
                Box::new(move |committed: Result<(), String>| {
                    let _ = reply.send(committed.map_err(lost).and(result));
                }),
            )
        }
        // A job that panics (a bug) must not take the writer thread, and every later
        // write, with it: its savepoint is rolled back, and its caller, whose answer
        // went down with it, sees the write dropped.
        Write::Op(job) => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(tx))) {
                Ok(done) => (done.ok, done.deliver),
                Err(_) => {
                    tracing::error!("a store write panicked; rolled back");
                    (false, Box::new(|_| {}))
                }
            }
        }
    };
    savepoint(if ok {
        "RELEASE w"
    } else {
        "ROLLBACK TO w; RELEASE w"
    });
    deliver
}

/// The error a write gets when its batch's commit failed.
pub(super) fn lost(message: String) -> StoreError {
    StoreError::Task(format!("group commit failed: {message}"))
}

/// Runs a batch of writes in one immediate transaction (one fsync) and answers each caller
/// only after the commit: a `202` still means on disk. If the commit fails, every caller
/// gets the error and nothing of the batch is stored.
fn commit(conn: &mut Connection, batch: Vec<Write>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            for write in batch {
                let deliver = match write {
                    Write::Insert(p) => {
                        let _ = p.reply.send(Err(lost(message.clone())));
                        continue;
                    }
                    Write::Op(job) => job,
                };
                // The job is never run; its caller's answer is dropped with it, which it
                // sees as the writer having stopped.
                drop(deliver);
            }
            return;
        }
    };
    let deliveries: Vec<_> = batch.into_iter().map(|w| run_one(&tx, w)).collect();
    let committed = tx.commit().map_err(|e| e.to_string());
    for deliver in deliveries {
        deliver(committed.clone());
    }
}
