//! The runner boundary: a prompt and a deadline in, the runner's raw output out. What the
//! output means is decided by [`crate::diagnosis`], the same way for every runner.

pub mod docker;
pub mod native;
pub mod process;

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::alert::DeploymentId;

/// One diagnosis for a runner to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The deployment (for logs and process labels).
    pub deployment_id: DeploymentId,
    /// The full prompt.
    pub prompt: String,
    /// How long the run may take before it is killed.
    pub deadline: Duration,
}

/// What a runner printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    /// Standard output (logs, `#####`, the answer), capped.
    pub stdout: String,
    /// Standard error (the runner's and its MCP servers' diagnostics), capped.
    pub stderr: String,
    /// Exit status; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Tokens, steps and tool calls, when the runner reported them.
    pub usage: Option<crate::report::Usage>,
}

/// Why a run produced no output to read.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The deadline passed; the run was killed. What it had printed is kept.
    #[error("deadline exceeded after {}s", after.as_secs())]
    DeadlineExceeded {
        /// The deadline.
        after: Duration,
        /// Output up to the kill.
        output: RunOutput,
    },
    /// The service asked the run to stop (shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The runner could not be started.
    #[error("could not start the runner {program}: {source}")]
    Spawn {
        /// What was started.
        program: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The runner's environment is not usable (engine down, image missing, ...).
    #[error("{0}")]
    Unavailable(String),
    /// Talking to the runner failed.
    #[error("runner i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Something that can run one diagnosis.
#[async_trait]
pub trait Runner: Send + Sync {
    /// The name stored on reports (`process`, ...).
    fn kind(&self) -> &'static str;
    /// Runs one diagnosis to its end, its deadline, or `cancel`.
    async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError>;
    /// Whether the runner can run at all (for `/readyz`): details when it can, what is
    /// missing when it cannot.
    async fn check(&self) -> Result<serde_json::Value, String>;
}
