//! The report model (the design's `Report`, made durable): its status, the stored JSON
//! answer, and what the worker needs to run it again after a crash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, DeploymentId};

/// The design's `ReportStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// Diagnosis waiting or running.
    Generating,
    /// The answer is stored.
    Completed,
    /// The diagnosis failed; `error` says why.
    Failed,
}

impl ReportStatus {
    /// All statuses.
    pub const ALL: [ReportStatus; 3] = [
        ReportStatus::Generating,
        ReportStatus::Completed,
        ReportStatus::Failed,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Generating => "generating",
            ReportStatus::Completed => "completed",
            ReportStatus::Failed => "failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// The validated answer of a diagnosis, the design's report format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBody {
    /// Queries of the anomalous metrics.
    #[serde(rename = "promQL")]
    pub prom_ql: Vec<String>,
    /// `【问题概述】…【根因分析】…【影响范围】…【解决方案】…`
    pub content: String,
}

/// What a diagnosis cost, as the runner counted it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    /// Input tokens, from the provider's usage fields.
    pub input_tokens: u64,
    /// Output tokens, from the provider's usage fields.
    pub output_tokens: u64,
    /// Model turns.
    pub steps: u64,
    /// Tool calls executed.
    pub tool_calls: u64,
    /// Tool calls answered from an identical earlier call.
    pub cached_tool_calls: u64,
}

/// One report per deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Report id.
    pub id: String,
    /// The deployment (unique).
    pub deployment_id: DeploymentId,
    /// Where it is in its life.
    pub status: ReportStatus,
    /// The answer as stored JSON (`{"promQL": [...], "content": "..."}`) once completed.
    pub content: String,
    /// Why it failed, for a person.
    pub error: Option<String>,
    /// The end of the runner's output when it could not be used, for debugging.
    pub raw_output: Option<String>,
    /// The alert that asked for it.
    pub alert: Alert,
    /// The runner kind that produced the current status.
    pub runner: Option<String>,
    /// Times a worker has taken it up for the current version.
    pub attempts: u32,
    /// 1 at first; each re-diagnosis adds one and keeps the old one as history.
    pub version: u32,
    /// When the report was first created.
    pub created_time: DateTime<Utc>,
    /// Last change.
    pub updated_time: DateTime<Utc>,
    /// When the current attempt started.
    pub started_time: Option<DateTime<Utc>>,
    /// How long the last finished diagnosis took, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Tokens, steps and tool calls of the last finished diagnosis.
    pub usage: Option<Usage>,
    /// The worker holding it.
    pub lease_owner: Option<String>,
    /// Until when that worker's claim lasts.
    pub lease_until: Option<DateTime<Utc>>,
}

impl Report {
    /// A new `generating` report for an alert.
    pub fn new(deployment_id: DeploymentId, alert: Alert, now: DateTime<Utc>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            deployment_id,
            status: ReportStatus::Generating,
            content: String::new(),
            error: None,
            raw_output: None,
            alert,
            runner: None,
            attempts: 0,
            version: 1,
            created_time: now,
            updated_time: now,
            started_time: None,
            duration_ms: None,
            usage: None,
            lease_owner: None,
            lease_until: None,
        }
    }

    /// The stored answer, parsed (`None` unless completed and well-formed).
    pub fn body(&self) -> Option<ReportBody> {
        if self.status != ReportStatus::Completed {
            return None;
        }
        serde_json::from_str(&self.content).ok()
    }

    /// The version as history keeps it.
    pub fn to_history(&self) -> HistoryEntry {
        HistoryEntry {
            deployment_id: self.deployment_id.clone(),
            version: self.version,
            status: self.status,
            content: self.content.clone(),
            error: self.error.clone(),
            runner: self.runner.clone(),
            attempts: self.attempts,
            created_time: self.created_time,
            updated_time: self.updated_time,
            duration_ms: self.duration_ms,
        }
    }
}

/// A previous version of a report, kept when it is diagnosed again.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// Which version this was.
    pub version: u32,
    /// Its final status.
    pub status: ReportStatus,
    /// Its stored answer.
    pub content: String,
    /// Its failure reason.
    pub error: Option<String>,
    /// The runner that produced it.
    pub runner: Option<String>,
    /// Attempts it took.
    pub attempts: u32,
    /// When the report was created.
    pub created_time: DateTime<Utc>,
    /// When that version was last changed.
    pub updated_time: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: Option<u64>,
}

/// How a diagnosis ended, as the worker writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// `Completed` or `Failed`.
    pub status: ReportStatus,
    /// The answer JSON (completed).
    pub content: String,
    /// The reason (failed).
    pub error: Option<String>,
    /// The runner output's tail (failed).
    pub raw_output: Option<String>,
    /// The runner kind.
    pub runner: String,
    /// When it ended.
    pub now: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// What it cost, when the runner counted it.
    pub usage: Option<Usage>,
}
