//! The report model (the design's `Report`, made durable): its status, the answer, and
//! what the worker needs to run it again after a crash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alert::{Alert, DeploymentId};
use super::changes::Changes;
use super::deployment::Deployment;
use super::evidence::{EvidenceItem, Unmeasured};
use super::notify::Notification;
use super::verdict::ReleaseVerdict;

/// The design's `ReportStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// What wrote a completed report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The AI agent.
    Ai,
    /// The service, from the evidence alone (no AI configured, or the AI failed).
    Evidence,
}

impl Engine {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Ai => "ai",
            Engine::Evidence => "evidence",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Engine::Ai, Engine::Evidence]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// How a diagnosis runs (`Runner.Kind`), as stored on reports.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// The Python runner as a child process of the service.
    Process,
    /// The Python runner exec'd in the managed container, as in the design.
    Docker,
    /// The agent loop in the service, with MCP sessions kept open.
    #[default]
    Native,
}

impl RunnerKind {
    /// Every kind.
    pub const ALL: [RunnerKind; 3] = [RunnerKind::Process, RunnerKind::Docker, RunnerKind::Native];

    /// The name stored on reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerKind::Process => "process",
            RunnerKind::Docker => "docker",
            RunnerKind::Native => "native",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A person's judgement of a report version (design §7: 诊断报告评分).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feedback {
    /// 1 (useless) to 5 (exactly right).
    pub score: u8,
    /// Whether the report named the real root cause.
    pub root_cause_correct: bool,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// When it was given.
    pub at: DateTime<Utc>,
}

/// The validated answer of a diagnosis, the design's report format; stored as this JSON
/// in the design's `content` text, served as two fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBody {
    /// Queries of the anomalous metrics.
    #[serde(rename = "promQL")]
    pub prom_ql: Vec<String>,
    /// `【问题概述】…【根因分析】…【影响范围】…【解决方案】…`
    pub content: String,
}

/// Why a diagnosis failed: one list for the runners (the Python runner's kinds map onto it),
/// the diagnosis, the metrics (`runner_failures_total{reason}`) and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The AI service answered an error status.
    LlmStatus,
    /// The AI service could not be reached.
    LlmUnreachable,
    /// An AI request took longer than `AI.Timeout`.
    LlmTimeout,
    /// The AI service answered something that is not a chat answer.
    LlmBadResponse,
    /// The model's answer was cut at `AI.MaxTokens`, also after a follow-up asking for less.
    AnswerCutOff,
    /// On the last step the model asked for more tools instead of answering.
    ToolsAtStepLimit,
    /// The conversation does not fit the AI server's context (`AI.ContextTokens`).
    ContextExceeded,
    /// Prometheus could not be reached.
    PrometheusUnreachable,
    /// An MCP server could not be started or reached.
    McpFailed,
    /// The diagnosis ran past its deadline (2 x `AI.Timeout`) and was stopped.
    DeadlineExceeded,
    /// The runner could not run at all (interpreter, engine, image or container missing).
    RunnerUnavailable,
    /// Talking to the runner failed.
    RunnerIo,
    /// The runner ended without an answer or a reason.
    RunnerCrashed,
    /// The runner was given unusable input.
    BadInput,
    /// The model answered, but with no report in its answer.
    NoJson,
    /// Evidence-only mode, and no evidence could be gathered.
    NoEvidence,
    /// An AI budget (`Budget.*`) is spent.
    BudgetExhausted,
    /// The service stopped or crashed during every attempt.
    Abandoned,
    /// A bug: a state the agent loop should never reach.
    Internal,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 19] = [
        FailureKind::LlmStatus,
        FailureKind::LlmUnreachable,
        FailureKind::LlmTimeout,
        FailureKind::LlmBadResponse,
        FailureKind::AnswerCutOff,
        FailureKind::ToolsAtStepLimit,
        FailureKind::ContextExceeded,
        FailureKind::PrometheusUnreachable,
        FailureKind::McpFailed,
        FailureKind::DeadlineExceeded,
        FailureKind::RunnerUnavailable,
        FailureKind::RunnerIo,
        FailureKind::RunnerCrashed,
        FailureKind::BadInput,
        FailureKind::NoJson,
        FailureKind::NoEvidence,
        FailureKind::BudgetExhausted,
        FailureKind::Abandoned,
        FailureKind::Internal,
    ];

    /// The short code, as the Python runner prints it and `/metrics` labels it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::LlmStatus => "llm_status",
            FailureKind::LlmUnreachable => "llm_unreachable",
            FailureKind::LlmTimeout => "llm_timeout",
            FailureKind::LlmBadResponse => "llm_bad_response",
            FailureKind::AnswerCutOff => "answer_cut_off",
            FailureKind::ToolsAtStepLimit => "tools_at_step_limit",
            FailureKind::ContextExceeded => "context_exceeded",
            FailureKind::PrometheusUnreachable => "prometheus_unreachable",
            FailureKind::McpFailed => "mcp_failed",
            FailureKind::DeadlineExceeded => "deadline_exceeded",
            FailureKind::RunnerUnavailable => "runner_unavailable",
            FailureKind::RunnerIo => "runner_io",
            FailureKind::RunnerCrashed => "runner_crashed",
            FailureKind::BadInput => "bad_input",
            FailureKind::NoJson => "no_json",
            FailureKind::NoEvidence => "no_evidence",
            FailureKind::BudgetExhausted => "budget_exhausted",
            FailureKind::Abandoned => "abandoned",
            FailureKind::Internal => "internal",
        }
    }

    /// Parses a short code; `None` for one this service does not know.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == code)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a diagnosis cost, as the runner counted it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Tool calls not run: past `AI.MaxToolCallsPerTurn` in their turn.
    pub refused_tool_calls: u64,
    /// Tool results withheld: `AI.ToolResultBudgetChars` was spent.
    pub withheld_tool_results: u64,
}

/// One report per deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Report id.
    pub id: String,
    /// The deployment (unique).
    pub deployment_id: DeploymentId,
    /// Where the current version is in its life, with what that state has: the answer of
    /// a completed one, the reason of a failed one.
    pub state: ReportState,
    /// The end of the runner's output when it could not be used, for debugging.
    pub raw_output: Option<String>,
    /// The alert that asked for it.
    pub alert: Alert,
    /// The runner kind that produced the current status.
    pub runner: Option<RunnerKind>,
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
    /// The evidence stage's ranked facts, once gathered (empty: nothing measurable).
    pub evidence: Option<Vec<EvidenceItem>>,
    /// Why no evidence could be gathered for this version, when a gathering failed.
    pub evidence_error: Option<String>,
    /// The hosts the evidence left out (past `Evidence.MaxHosts`).
    pub unmeasured: Option<Unmeasured>,
    /// The release verdict of this version, once measured.
    pub release: Option<ReleaseVerdict>,
    /// The outbox: notifications of this report's versions, delivered or not.
    pub notifications: Vec<Notification>,
    /// Until when a gathering holds this version's evidence lease.
    pub evidence_until: Option<DateTime<Utc>>,
    /// Feedback on the current version.
    pub feedback: Option<Feedback>,
    /// The registered deployment the current version is diagnosed with (a snapshot).
    pub deployment: Option<Deployment>,
    /// What the release changed, read from GitHub before the runner.
    pub changes: Option<Changes>,
    /// Further alerts of the deployment that came after the first, newest last.
    pub related_alerts: Vec<RelatedAlert>,
    /// When a resolved alert for the deployment came.
    pub resolved_at: Option<DateTime<Utc>>,
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
            state: ReportState::Generating,
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
            evidence: None,
            evidence_error: None,
            unmeasured: None,
            release: None,
            notifications: Vec::new(),
            evidence_until: None,
            feedback: None,
            deployment: None,
            changes: None,
            related_alerts: Vec::new(),
            resolved_at: None,
            lease_owner: None,
            lease_until: None,
        }
    }

    /// `generating`, `completed` or `failed`.
    pub fn status(&self) -> ReportStatus {
        self.state.status()
    }

    /// The answer (completed).
    pub fn body(&self) -> Option<&ReportBody> {
        self.state.ending().and_then(Ending::body)
    }

    /// Why it failed, for a person (failed).
    pub fn error(&self) -> Option<&str> {
        self.state.ending().and_then(Ending::error)
    }

    /// What wrote it (completed).
    pub fn engine(&self) -> Option<Engine> {
        self.state.ending().and_then(Ending::engine)
    }

    /// Why the AI did not write it, when the evidence did (completed).
    pub fn ai_error(&self) -> Option<&str> {
        self.state.ending().and_then(Ending::ai_error)
    }

    /// Whether this version still waits for its evidence: generating, and neither
    /// gathered nor known to be unavailable.
    pub fn needs_evidence(&self) -> bool {
        self.status() == ReportStatus::Generating
            && self.evidence.is_none()
            && self.evidence_error.is_none()
    }

    /// The version as history keeps it.
    pub fn to_history(&self) -> HistoryEntry {
        HistoryEntry {
            deployment_id: self.deployment_id.clone(),
            version: self.version,
            status: self.status(),
            body: self.body().cloned(),
            error: self.error().map(str::to_owned),
            runner: self.runner,
            attempts: self.attempts,
            created_time: self.created_time,
            updated_time: self.updated_time,
            duration_ms: self.duration_ms,
            feedback: self.feedback.clone(),
        }
    }
}

/// Further alerts kept on one report.
pub const MAX_RELATED_ALERTS: usize = 50;

/// A further alert of a deployment that already has a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelatedAlert {
    /// The alert.
    pub alert: Alert,
    /// When it came.
    pub received_at: DateTime<Utc>,
}

/// Result of recording a further alert on a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Related {
    /// The deployment has no report.
    NoReport,
    /// The same alert is already on the report.
    Duplicate(ReportStatus),
    /// Recorded; the report's status at that moment.
    Added(ReportStatus),
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
    /// Its answer (completed).
    pub body: Option<ReportBody>,
    /// Its failure reason.
    pub error: Option<String>,
    /// The runner that produced it.
    pub runner: Option<RunnerKind>,
    /// Attempts it took.
    pub attempts: u32,
    /// When the report was created.
    pub created_time: DateTime<Utc>,
    /// When that version was last changed.
    pub updated_time: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// The feedback it had.
    pub feedback: Option<Feedback>,
}

/// How a diagnosis ended: a report, or a reason. A completed report always has its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The answer is stored.
    Completed {
        /// The answer.
        body: ReportBody,
        /// What wrote it.
        engine: Engine,
        /// Why the AI did not, when the evidence did.
        ai_error: Option<String>,
    },
    /// No report could be had.
    Failed {
        /// Why, for a person.
        error: String,
    },
}

impl Ending {
    /// `Completed` or `Failed`.
    pub fn status(&self) -> ReportStatus {
        match self {
            Ending::Completed { .. } => ReportStatus::Completed,
            Ending::Failed { .. } => ReportStatus::Failed,
        }
    }

    /// The answer (completed).
    pub fn body(&self) -> Option<&ReportBody> {
        match self {
            Ending::Completed { body, .. } => Some(body),
            Ending::Failed { .. } => None,
        }
    }

    /// The failure reason (failed).
    pub fn error(&self) -> Option<&str> {
        match self {
            Ending::Failed { error } => Some(error),
            Ending::Completed { .. } => None,
        }
    }

    /// What wrote it (completed).
    pub fn engine(&self) -> Option<Engine> {
        match self {
            Ending::Completed { engine, .. } => Some(*engine),
            Ending::Failed { .. } => None,
        }
    }

    /// Why the AI did not write it, when the evidence did.
    pub fn ai_error(&self) -> Option<&str> {
        match self {
            Ending::Completed { ai_error, .. } => ai_error.as_deref(),
            Ending::Failed { .. } => None,
        }
    }
}

/// Where a report version is in its life. A generating version has no answer and no
/// reason; an ended one has exactly what its [`Ending`] says.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportState {
    /// Diagnosis waiting or running.
    Generating,
    /// The diagnosis ended.
    Ended(Ending),
}

impl ReportState {
    /// `generating`, `completed` or `failed`.
    pub fn status(&self) -> ReportStatus {
        match self {
            ReportState::Generating => ReportStatus::Generating,
            ReportState::Ended(ending) => ending.status(),
        }
    }

    /// How it ended, once it has.
    pub fn ending(&self) -> Option<&Ending> {
        match self {
            ReportState::Generating => None,
            ReportState::Ended(ending) => Some(ending),
        }
    }

    /// The state the stored columns say (status, answer, reason, engine, the AI's error),
    /// or what is wrong with them: a completed version needs its answer and its engine, a
    /// failed one its reason, and a generating one has neither.
    pub fn from_parts(
        status: ReportStatus,
        body: Option<ReportBody>,
        error: Option<String>,
        engine: Option<Engine>,
        ai_error: Option<String>,
    ) -> Result<Self, String> {
        match status {
            ReportStatus::Generating => Ok(ReportState::Generating),
            ReportStatus::Completed => Ok(ReportState::Ended(Ending::Completed {
                body: body.ok_or("completed, but without an answer")?,
                engine: engine.ok_or("completed, but without an engine")?,
                ai_error,
            })),
            ReportStatus::Failed => Ok(ReportState::Ended(Ending::Failed {
                error: error.ok_or("failed, but without a reason")?,
            })),
        }
    }
}

/// How a diagnosis ended, as the worker writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// The report or the reason.
    pub ending: Ending,
    /// The runner output's tail (a failed report, or a failed AI under an evidence report).
    pub raw_output: Option<String>,
    /// The runner kind (`None` in evidence-only mode).
    pub runner: Option<RunnerKind>,
    /// When it ended.
    pub now: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// What it cost, when the runner counted it.
    pub usage: Option<Usage>,
    /// The release verdict the diagnosis used (`None`: leave the stored one).
    pub release: Option<ReleaseVerdict>,
    /// Notifications of this ending, added to the outbox in the same write.
    pub notify: Vec<Notification>,
}

impl Finish {
    /// `Completed` or `Failed`.
    pub fn status(&self) -> ReportStatus {
        self.ending.status()
    }
}

/// A report as the API (and the generic webhook) shows it: the design's `promQL` and
/// `content` at the top level.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportView {
    id: String,
    deployment_id: String,
    status: ReportStatus,
    #[serde(rename = "promQL")]
    prom_ql: Vec<String>,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_output: Option<String>,
    runner: Option<RunnerKind>,
    attempts: u32,
    version: u32,
    created_time: DateTime<Utc>,
    updated_time: DateTime<Utc>,
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    /// The evidence stage's ranked facts; `null` until gathered.
    evidence: Option<Vec<EvidenceItem>>,
    /// Why no evidence could be gathered, when a gathering failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence_error: Option<String>,
    /// The hosts the evidence did not measure (past `Evidence.MaxHosts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    unmeasured_hosts: Option<Unmeasured>,
    /// Was it this release, and what to do; `null` until measured.
    release: Option<ReleaseVerdict>,
    /// Where the report was sent, and how that went.
    notifications: Vec<Notification>,
    /// `ai` or `evidence` (completed reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<Engine>,
    /// Why the AI did not write the report, when the evidence did.
    #[serde(skip_serializing_if = "Option::is_none")]
    ai_error: Option<String>,
    /// A person's feedback on this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback: Option<Feedback>,
    /// The registered deployment it is diagnosed with.
    deployment: Option<Deployment>,
    /// What the release changed, and its suspects.
    changes: Option<Changes>,
    /// Further alerts of the deployment, newest last.
    related_alerts: Vec<RelatedAlert>,
    /// When a resolved alert for the deployment came.
    resolved_at: Option<DateTime<Utc>>,
    alert: Alert,
}

impl From<Report> for ReportView {
    fn from(r: Report) -> Self {
        let status = r.status();
        let (body, error, engine, ai_error) = match r.state {
            ReportState::Generating => (None, None, None, None),
            ReportState::Ended(Ending::Completed {
                body,
                engine,
                ai_error,
            }) => (Some(body), None, Some(engine), ai_error),
            ReportState::Ended(Ending::Failed { error }) => (None, Some(error), None, None),
        };
        let ReportBody { prom_ql, content } = body.unwrap_or(ReportBody {
            prom_ql: Vec::new(),
            content: String::new(),
        });
        Self {
            id: r.id,
            deployment_id: r.deployment_id.to_string(),
            status,
            prom_ql,
            content,
            error,
            raw_output: r.raw_output,
            runner: r.runner,
            attempts: r.attempts,
            version: r.version,
            created_time: r.created_time,
            updated_time: r.updated_time,
            duration_ms: r.duration_ms,
            usage: r.usage,
            evidence: r.evidence,
            evidence_error: r.evidence_error,
            unmeasured_hosts: r.unmeasured,
            release: r.release,
            notifications: r.notifications,
            engine,
            ai_error,
            feedback: r.feedback,
            deployment: r.deployment,
            changes: r.changes,
            related_alerts: r.related_alerts,
            resolved_at: r.resolved_at,
            alert: r.alert,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> ReportBody {
        ReportBody {
            prom_ql: vec!["up".into()],
            content: "【问题概述】x".into(),
        }
    }

    #[test]
    fn a_state_is_read_back_only_with_what_it_needs() {
        use ReportStatus::*;
        let completed =
            ReportState::from_parts(Completed, Some(body()), None, Some(Engine::Ai), None);
        assert_eq!(completed.as_ref().map(ReportState::status), Ok(Completed));
        assert_eq!(
            ReportState::from_parts(Completed, None, None, Some(Engine::Ai), None),
            Err("completed, but without an answer".into())
        );
        assert_eq!(
            ReportState::from_parts(Completed, Some(body()), None, None, None),
            Err("completed, but without an engine".into())
        );
        assert_eq!(
            ReportState::from_parts(Failed, None, None, None, None),
            Err("failed, but without a reason".into())
        );
        let failed =
            ReportState::from_parts(Failed, None, Some("boom".into()), None, None).unwrap();
        assert_eq!(failed.ending().and_then(Ending::error), Some("boom"));
        // What a generating version cannot have is not read into it.
        let generating =
            ReportState::from_parts(Generating, Some(body()), Some("old".into()), None, None);
        assert_eq!(generating, Ok(ReportState::Generating));
    }

    #[test]
    fn the_view_shows_the_states_fields_and_nothing_else() {
        let mut r = Report::new(
            DeploymentId::parse("d").unwrap(),
            Alert::default(),
            Utc::now(),
        );
        r.state = ReportState::Ended(Ending::Completed {
            body: body(),
            engine: Engine::Evidence,
            ai_error: Some("llm_timeout".into()),
        });
        let view = serde_json::to_value(ReportView::from(r.clone())).unwrap();
        assert_eq!(view["status"], "completed");
        assert_eq!(view["promQL"][0], "up");
        assert_eq!(
            (&view["engine"], &view["aiError"]),
            (&"evidence".into(), &"llm_timeout".into())
        );
        assert!(view.get("error").is_none());
        r.state = ReportState::Ended(Ending::Failed {
            error: "boom".into(),
        });
        let view = serde_json::to_value(ReportView::from(r)).unwrap();
        assert_eq!(
            (&view["status"], &view["error"], &view["content"]),
            (&"failed".into(), &"boom".into(), &"".into())
        );
        assert!(view.get("engine").is_none() && view.get("aiError").is_none());
    }
}
