//! One diagnosis, runner-independent: build the prompt, run it under the deadline, read
//! the answer, and turn every way it can go wrong into a reason a person can act on.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::alert::{Alert, DeploymentId};
use crate::config::{Config, RunnerKind};
use crate::evidence::EvidenceItem;
use crate::extract::{self, Answer};
use crate::prompt::{self, PromptOptions};
use crate::report::{FailureKind, ReportBody, Usage};
use crate::runner::{RunEnd, RunRequest, Runner};

pub use crate::runner::Cancelled;

/// Bytes of the run's log and of the model's answer kept on a failed report.
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
    /// No answer; `kind` for metrics and logs, `reason` a sentence for people.
    Failed {
        /// What kind of failure.
        kind: FailureKind,
        /// What happened and what to do about it.
        reason: String,
        /// The end of the run's log (and of the model's answer), for debugging.
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
    pub fn runner_kind(&self) -> RunnerKind {
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

    /// Diagnoses one alert, starting from the evidence when there is some.
    pub async fn diagnose(
        &self,
        deployment_id: &DeploymentId,
        alert: &Alert,
        evidence: Option<&[EvidenceItem]>,
        cancel: CancellationToken,
    ) -> Result<Diagnosed, Cancelled> {
        let request = RunRequest {
            deployment_id: deployment_id.clone(),
            prompt: prompt::build(alert, evidence, self.prompt_options),
            deadline: self.deadline,
        };
        let result = self.runner.run(request, cancel).await?;
        let outcome = match result.end {
            RunEnd::Answer(text) => match extract::find_report(&text) {
                Answer::Report(body) => Outcome::Completed(body),
                Answer::Unusable(why) => Outcome::Failed {
                    kind: FailureKind::NoJson,
                    reason: why,
                    raw_output: raw_output(&result.log, Some(&text)),
                },
            },
            RunEnd::Failed(failure) => Outcome::Failed {
                kind: failure.kind,
                reason: failure.message,
                raw_output: raw_output(&result.log, None),
            },
        };
        Ok(Diagnosed {
            outcome: self.scrub(outcome),
            usage: result.usage,
        })
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

/// The end of the run's log and of the model's answer, for a failed report.
fn raw_output(log: &str, answer: Option<&str>) -> Option<String> {
    let mut raw = String::new();
    if !log.trim().is_empty() {
        raw.push_str("--- log (end) ---\n");
        raw.push_str(extract::tail(log, RAW_TAIL_BYTES));
    }
    if let Some(answer) = answer.filter(|a| !a.trim().is_empty()) {
        if !raw.is_empty() && !raw.ends_with('\n') {
            raw.push('\n');
        }
        raw.push_str("--- answer (end) ---\n");
        raw.push_str(extract::tail(answer, RAW_TAIL_BYTES));
    }
    (!raw.is_empty()).then_some(raw)
}
