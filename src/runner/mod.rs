//! The runner boundary: a prompt and a deadline in, a typed result out: the model's answer
//! text or a typed failure, the run's log, and what it cost. What the answer means (the
//! report pulled out of it) is decided by [`crate::diagnosis`], the same way for every
//! runner.
//!
//! - [`native`]: the agent loop in the service.
//! - [`python`]: the Python runner's stdout protocol (`#####`), arguments and output capture,
//!   shared by [`process`] (a child process) and [`docker`] (an exec in the managed
//!   container).
//! - [`summary`]: range query results summarised for the model, as both loops do it.
//! - [`provider`]: what each AI provider needs in a request; [`extract`]: the report pulled
//!   out of the model's answer; [`context`]: what a request takes of the server's context.

pub mod calls;
pub mod context;
pub mod docker;
pub mod extract;
pub mod lenient;
pub mod native;
pub mod process;
pub mod provider;
pub mod python;
pub mod summary;

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::model::alert::DeploymentId;
use crate::model::deployment::RepoName;
use crate::model::report::RunnerKind;
use crate::model::report::{FailureKind, Usage};

/// Environment variables a child process (the Python runner, a stdio MCP server) gets
/// from the service; everything else is cleared, so the service's own settings (the AI
/// key, `DD_*` secrets) do not leak into it.
pub const PASSTHROUGH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// One diagnosis for a runner to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The deployment (for logs and process labels).
    pub deployment_id: DeploymentId,
    /// The full prompt.
    pub prompt: String,
    /// How long the run may take before it is killed.
    pub deadline: Duration,
    /// The repositories (`owner/name`) the GitHub MCP tools may read in this run: the
    /// admitted release's. Empty: none.
    pub github_repos: Vec<RepoName>,
}

/// Why a run gave no answer, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened and what to do about it.
    pub message: String,
}

impl Failure {
    /// A failure of this kind.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The run was stopped at its deadline.
    pub fn deadline(after: Duration) -> Self {
        Self::new(
            FailureKind::DeadlineExceeded,
            format!(
                "deadline exceeded: the diagnosis ran longer than {}s (2 x AI.Timeout) and was stopped; \
                 the AI service or Prometheus answered too slowly, or the model kept calling tools",
                after.as_secs()
            ),
        )
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The model's final answer, as text (the report is somewhere in it).
    Answer(String),
    /// No answer.
    Failed(Failure),
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// How it ended.
    pub end: RunEnd,
    /// The run's log (steps, tool calls, the runner's diagnostics), capped, for debugging a
    /// failed report.
    pub log: String,
    /// Tokens, steps and tool calls, when the runner counted them (also on failure).
    pub usage: Option<Usage>,
}

impl From<Failure> for RunResult {
    /// A run that failed before it logged anything.
    fn from(failure: Failure) -> Self {
        Self {
            end: RunEnd::Failed(failure),
            log: String::new(),
            usage: None,
        }
    }
}

/// The service asked the run to stop (shutdown, or the report was taken over); nothing
/// should be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("run cancelled")]
pub struct Cancelled;

/// A runner could not be set up at all.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The runner's environment is not usable (engine down, image missing, ...).
    #[error("{0}")]
    Unavailable(String),
}

/// Something that can run one diagnosis.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Which runner this is (stored on reports).
    fn kind(&self) -> RunnerKind;
    /// Runs one diagnosis to its answer, a failure, its deadline, or `cancel`.
    async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunResult, Cancelled>;
    /// Whether the runner can run at all (for `/readyz`): details when it can, what is
    /// missing when it cannot.
    async fn check(&self) -> Result<serde_json::Value, String>;
}
