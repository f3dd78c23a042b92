//! Rows and columns: how a report, a history entry and a deployment are laid out in SQLite
//! and read back. A value that cannot be read back is an error naming the report, never a
//! silent default.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Row;

use crate::model::alert::DeploymentId;
use crate::model::deployment::Deployment;
use crate::model::report::{Engine, Report, ReportBody, ReportState, ReportStatus, RunnerKind};
use crate::store::{rules, StoreError};

/// The columns of a report, in [`raw_report`]'s order.
pub(super) const COLUMNS: &str =
    "id, deployment_id, status, content, error, raw_output, alert, runner, attempts, \
     version, created_time, updated_time, started_time, duration_ms, usage, lease_owner, lease_until, \
     evidence, engine, ai_error, feedback, deployment, changes, related_alerts, resolved_at, \
     evidence_error, evidence_until, release, notifications, evidence_unmeasured";

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(super) fn corrupt(id: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: message.into(),
    }
}

pub(super) fn status(id: &str, s: &str) -> Result<ReportStatus, StoreError> {
    ReportStatus::parse(s).ok_or_else(|| corrupt(id, format!("unknown status {s:?}")))
}

/// A stored JSON column, read back.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    id: &str,
    column: &str,
    json: Option<&str>,
) -> Result<Option<T>, StoreError> {
    json.map(|j| serde_json::from_str(j).map_err(|e| corrupt(id, format!("{column}: {e}"))))
        .transpose()
}

/// A value as a JSON column.
pub(super) fn to_json(id: &str, value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(id, e.to_string()))
}

/// The design's `content` text of a version ([`rules::content_text`]).
pub(super) fn content(id: &str, body: Option<&ReportBody>) -> Result<String, StoreError> {
    rules::content_text(body).map_err(|e| corrupt(id, e))
}

/// The answer in a `content` column ([`rules::body_of`]).
pub(super) fn body(
    id: &str,
    status: ReportStatus,
    content: &str,
) -> Result<Option<ReportBody>, StoreError> {
    rules::body_of(status, content).map_err(|e| corrupt(id, e))
}

/// A stored runner name ([`rules::runner_of`]).
pub(super) fn runner(id: &str, stored: Option<&str>) -> Result<Option<RunnerKind>, StoreError> {
    rules::runner_of(stored).map_err(|e| corrupt(id, e))
}

fn engine(id: &str, stored: Option<&str>) -> Result<Option<Engine>, StoreError> {
    stored
        .map(|e| Engine::parse(e).ok_or_else(|| corrupt(id, format!("unknown engine {e:?}"))))
        .transpose()
}

/// A report row as stored.
pub(super) struct RawReport {
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
    evidence_error: Option<String>,
    evidence_until: Option<i64>,
    release: Option<String>,
    notifications: Option<String>,
    evidence_unmeasured: Option<String>,
}

/// Reads a row selected with [`COLUMNS`].
pub(super) fn raw_report(row: &Row<'_>) -> rusqlite::Result<RawReport> {
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
        evidence_error: row.get(25)?,
        evidence_until: row.get(26)?,
        release: row.get(27)?,
        notifications: row.get(28)?,
        evidence_unmeasured: row.get(29)?,
    })
}

impl RawReport {
    /// The report, or an error naming it and the column that cannot be read.
    pub(super) fn into_report(self) -> Result<Report, StoreError> {
        let id = self.id;
        let status = status(&id, &self.status)?;
        let state = ReportState::from_parts(
            status,
            body(&id, status, &self.content)?,
            self.error,
            engine(&id, self.engine.as_deref())?,
            self.ai_error,
        )
        .map_err(|e| corrupt(&id, e))?;
        Ok(Report {
            deployment_id: DeploymentId::parse(&self.deployment_id).map_err(|e| corrupt(&id, e))?,
            state,
            alert: serde_json::from_str(&self.alert)
                .map_err(|e| corrupt(&id, format!("alert: {e}")))?,
            raw_output: self.raw_output,
            runner: runner(&id, self.runner.as_deref())?,
            attempts: self.attempts,
            version: self.version,
            created_time: time(self.created_time),
            updated_time: time(self.updated_time),
            started_time: self.started_time.map(time),
            duration_ms: self.duration_ms.map(|d| d.max(0) as u64),
            usage: parse_json(&id, "usage", self.usage.as_deref())?,
            lease_owner: self.lease_owner,
            lease_until: self.lease_until.map(time),
            evidence: parse_json(&id, "evidence", self.evidence.as_deref())?,
            evidence_error: self.evidence_error,
            unmeasured: parse_json(
                &id,
                "evidence_unmeasured",
                self.evidence_unmeasured.as_deref(),
            )?,
            evidence_until: self.evidence_until.map(time),
            release: parse_json(&id, "release", self.release.as_deref())?,
            notifications: parse_json(&id, "notifications", self.notifications.as_deref())?
                .unwrap_or_default(),
            feedback: parse_json(&id, "feedback", self.feedback.as_deref())?,
            deployment: parse_json(&id, "deployment", self.deployment.as_deref())?,
            changes: parse_json(&id, "changes", self.changes.as_deref())?,
            related_alerts: parse_json(&id, "related_alerts", self.related_alerts.as_deref())?
                .unwrap_or_default(),
            resolved_at: self.resolved_at.map(time),
            id,
        })
    }
}

/// A deployment row: its id and JSON body.
/// A registry row: its id, `body` and `rollback_secret` (kept out of `body`).
pub(super) fn raw_deployment(row: &Row<'_>) -> rusqlite::Result<(String, String, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

pub(super) fn into_deployment(
    (id, body, secret): (String, String, String),
) -> Result<Deployment, StoreError> {
    let mut d: Deployment = serde_json::from_str(&body).map_err(|e| corrupt(&id, e.to_string()))?;
    if let Some(policy) = d.rollback_policy.as_mut() {
        policy.secret = secret;
    }
    Ok(d)
}
