//! One diagnosis, runner-independent: build the prompt, run it under the deadline, read
//! the answer, and turn every way it can go wrong into a reason a person can act on.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::alert::{Alert, DeploymentId};
use crate::config::Config;
use crate::extract::{self, Answer};
use crate::prompt::{self, PromptOptions};
use crate::report::{ReportBody, Usage};
use crate::runner::{RunOutput, RunRequest, Runner, RunnerError};

/// Bytes of runner output kept on a failed report.
const RAW_TAIL_BYTES: usize = 4096;

/// Replaces every configured secret in text that leaves the service (stored reports,
/// logs), whatever printed it.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Redacts these secrets (empty ones are ignored).
    pub fn new(secrets: Vec<String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// The text with every secret replaced by `[REDACTED]`.
    pub fn apply(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |t, s| t.replace(s.as_str(), "[REDACTED]"))
    }
}

/// How a diagnosis ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The answer, validated.
    Completed(ReportBody),
    /// No answer; `kind` is a short code for metrics, `reason` a sentence for people.
    Failed {
        /// Short code: `deadline_exceeded`, `llm_status`, `no_json`, ...
        kind: String,
        /// What happened and what to do about it.
        reason: String,
        /// The end of the runner's output, for debugging.
        raw_output: Option<String>,
    },
}

/// A diagnosis's outcome and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosed {
    /// How it ended.
    pub outcome: Outcome,
    /// Tokens, steps and tool calls, when the runner counted them.
    pub usage: Option<Usage>,
}

/// The diagnosis was stopped by shutdown; nothing should be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("diagnosis cancelled by shutdown")]
pub struct Cancelled;

/// Runs diagnoses with one runner.
#[derive(Clone)]
pub struct Diagnoser {
    runner: Arc<dyn Runner>,
    prompt_options: PromptOptions,
    deadline: Duration,
    redactor: Redactor,
}

impl Diagnoser {
    /// A diagnoser for this configuration and runner.
    pub fn new(config: &Config, runner: Arc<dyn Runner>) -> Self {
        Self {
            runner,
            prompt_options: PromptOptions {
                github_enabled: !config.ai.githubtoken.is_empty(),
            },
            deadline: config.ai.diagnosis_deadline(),
            redactor: Redactor::new(config.secrets()),
        }
    }

    /// The runner's kind.
    pub fn runner_kind(&self) -> &'static str {
        self.runner.kind()
    }

    /// The runner, for readiness checks.
    pub fn runner(&self) -> &Arc<dyn Runner> {
        &self.runner
    }

    /// The redactor for this configuration's secrets.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Diagnoses one alert.
    pub async fn diagnose(
        &self,
        deployment_id: &DeploymentId,
        alert: &Alert,
        cancel: CancellationToken,
    ) -> Result<Diagnosed, Cancelled> {
        let request = RunRequest {
            deployment_id: deployment_id.clone(),
            prompt: prompt::build(alert, self.prompt_options),
            deadline: self.deadline,
        };
        let mut usage = None;
        let outcome = match self.runner.run(request, cancel).await {
            Ok(output) => {
                usage = output
                    .usage
                    .clone()
                    .or_else(|| reported_usage(&output.stdout));
                self.read(&output)
            }
            Err(RunnerError::Cancelled) => return Err(Cancelled),
            Err(RunnerError::DeadlineExceeded { after, output }) => {
                usage = output.usage.clone();
                Outcome::Failed {
                kind: "deadline_exceeded".into(),
                reason: format!(
                    "deadline exceeded: the diagnosis ran longer than {}s (2 x AI.Timeout) and was stopped; \
                     the AI service or Prometheus answered too slowly, or the model kept calling tools",
                    after.as_secs()
                ),
                raw_output: raw_tail(&output),
            }
            }
            Err(e @ RunnerError::Spawn { .. }) => Outcome::Failed {
                kind: "runner_unavailable".into(),
                reason: format!("{e}; check Runner.Python and Runner.Script"),
                raw_output: None,
            },
            Err(RunnerError::Unavailable(reason)) => Outcome::Failed {
                kind: "runner_unavailable".into(),
                reason,
                raw_output: None,
            },
            Err(e @ RunnerError::Io(_)) => Outcome::Failed {
                kind: "runner_io".into(),
                reason: e.to_string(),
                raw_output: None,
            },
        };
        Ok(Diagnosed {
            outcome: self.scrub(outcome),
            usage,
        })
    }

    fn read(&self, output: &RunOutput) -> Outcome {
        match extract::answer(&output.stdout) {
            Answer::Report(body) => Outcome::Completed(body),
            Answer::RunnerError { kind, message } => Outcome::Failed {
                kind,
                reason: message,
                raw_output: raw_tail(output),
            },
            Answer::Unusable(why) => match output.exit_code {
                Some(0) => Outcome::Failed {
                    kind: "no_json".into(),
                    reason: why,
                    raw_output: raw_tail(output),
                },
                code => {
                    let last = output
                        .stderr
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("");
                    let status = code.map_or("a signal".to_owned(), |c| format!("status {c}"));
                    Outcome::Failed {
                        kind: "runner_crashed".into(),
                        reason: format!(
                            "runner exited with {status} without an answer: {}",
                            extract::truncate(last.trim(), 300)
                        ),
                        raw_output: raw_tail(output),
                    }
                }
            },
        }
    }

    fn scrub(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Completed(body) => Outcome::Completed(ReportBody {
                prom_ql: body
                    .prom_ql
                    .iter()
                    .map(|q| self.redactor.apply(q))
                    .collect(),
                content: self.redactor.apply(&body.content),
            }),
            Outcome::Failed {
                kind,
                reason,
                raw_output,
            } => Outcome::Failed {
                kind,
                reason: self.redactor.apply(&reason),
                raw_output: raw_output.map(|r| self.redactor.apply(&r)),
            },
        }
    }
}

/// The usage the Python runner prints in its logs (`DD-USAGE {json}`), before `#####`.
fn reported_usage(stdout: &str) -> Option<Usage> {
    let logs = extract::split(stdout).map(|(logs, _)| logs)?;
    logs.lines().rev().find_map(|line| {
        let json = &line[line.find("DD-USAGE ")? + "DD-USAGE ".len()..];
        serde_json::from_str(json).ok()
    })
}

fn raw_tail(output: &RunOutput) -> Option<String> {
    let mut raw = String::new();
    if !output.stdout.trim().is_empty() {
        raw.push_str("--- stdout (end) ---\n");
        raw.push_str(extract::tail(&output.stdout, RAW_TAIL_BYTES));
    }
    if !output.stderr.trim().is_empty() {
        raw.push_str("\n--- stderr (end) ---\n");
        raw.push_str(extract::tail(&output.stderr, RAW_TAIL_BYTES));
    }
    (!raw.is_empty()).then_some(raw)
}
