//! One diagnosis, runner-independent: build the prompt, run it under the deadline, read
//! the answer, and turn every way it can go wrong into a reason a person can act on.
//!
//! - [`prompt`]: the design's prompt, with every outside text fenced as data.
//! - [`evidence_report`]: the report the service writes from the evidence when no AI
//!   analysis could be had.

pub mod evidence_report;
pub mod prompt;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::evidence::Prometheus;
use crate::model::alert::DeploymentId;
use crate::model::evidence::EvidenceItem;
use crate::model::report::{Engine, FailureKind, ReportBody, RunnerKind, Usage};
use crate::redact::Redactor;
use crate::runner::extract::{self, Answer};
use crate::runner::lenient::Repair;
use crate::runner::{RunEnd, RunRequest, Runner};
use prompt::PromptOptions;

pub use crate::runner::Cancelled;
pub use prompt::Facts;

/// The model's queries checked against Prometheus; more are kept unchecked.
const MAX_CHECKED_QUERIES: usize = 20;

/// Bytes of the run's log and of the model's answer kept on a failed report.
const RAW_TAIL_BYTES: usize = 4096;

/// Why the AI did not write a report the evidence wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct AiFailure {
    /// What kind of failure (`None` in evidence-only mode, where no AI was asked).
    pub kind: Option<FailureKind>,
    /// What happened.
    pub reason: String,
    /// The end of the run's log (and of the model's answer), for debugging.
    pub raw_output: Option<String>,
}

/// How a diagnosis ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A report: the model's, validated, or the one written from the evidence when no AI
    /// analysis could be had (then `ai_failure` says why).
    Completed {
        /// The report.
        body: ReportBody,
        /// What wrote it.
        engine: Engine,
        /// Why the AI did not, when the evidence did.
        ai_failure: Option<AiFailure>,
    },
    /// Neither the AI nor the evidence gave a report; `kind` for metrics and logs,
    /// `reason` a sentence for people.
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
    /// What the model's answer needed repaired to be read ([`crate::runner::lenient`]).
    pub repairs: Vec<Repair>,
}

/// Why a report has no AI analysis in evidence-only mode.
pub const EVIDENCE_ONLY: &str = "evidence-only mode: AI.BaseURL is empty";

/// Runs diagnoses with one runner, or from the evidence alone (evidence-only mode).
#[derive(Clone)]
pub struct Diagnoser {
    runner: Option<Arc<dyn Runner>>,
    prompt_options: PromptOptions,
    deadline: Duration,
    redactor: Redactor,
    prometheus: Prometheus,
}

impl Diagnoser {
    /// A diagnoser for this configuration and runner (`None`: evidence-only mode); the
    /// model's queries are checked against `prometheus`.
    pub fn new(config: &Config, runner: Option<Arc<dyn Runner>>, prometheus: Prometheus) -> Self {
        Self {
            runner,
            prompt_options: PromptOptions {
                github_enabled: !config.ai.github_token.is_empty(),
            },
            deadline: config.ai.diagnosis_deadline(),
            redactor: Redactor::new(config.secrets()),
            prometheus,
        }
    }

    /// The runner's kind (`None` in evidence-only mode).
    pub fn runner_kind(&self) -> Option<RunnerKind> {
        self.runner.as_ref().map(|r| r.kind())
    }

    /// The runner, for readiness checks (`None` in evidence-only mode).
    pub fn runner(&self) -> Option<&Arc<dyn Runner>> {
        self.runner.as_ref()
    }

    /// The Prometheus the model's queries are checked against (the service's one client).
    pub fn prometheus(&self) -> &Prometheus {
        &self.prometheus
    }

    /// How long a diagnosis may take (2 x `AI.Timeout`).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The redactor for this configuration's secrets.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Diagnoses one alert, starting from the evidence and the release's changes when
    /// there are some.
    pub async fn diagnose(
        &self,
        deployment_id: &DeploymentId,
        facts: &Facts<'_>,
        cancel: CancellationToken,
    ) -> Result<Diagnosed, Cancelled> {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        let alert = facts.alert;
        let evidence = facts.evidence.filter(|e| !e.is_empty());
        let Some(runner) = &self.runner else {
            return Ok(self.without_ai(facts, None, EVIDENCE_ONLY));
        };
        let request = RunRequest {
            deployment_id: deployment_id.clone(),
            prompt: prompt::build(facts, self.prompt_options),
            github_repos: facts.release.map(|r| r.repo.clone()).into_iter().collect(),
            deadline: self.deadline,
        };
        let result = runner.run(request, cancel).await?;
        let (kind, reason, raw) = match result.end {
            RunEnd::Answer(text) => match find_report(text.clone()).await {
                Answer::Report(body, repairs) => {
                    if !repairs.is_empty() {
                        let kinds: Vec<&str> = repairs.iter().map(|r| r.as_str()).collect();
                        tracing::info!(repairs = %kinds.join(","), "the model's answer was repaired to be read");
                    }
                    let body = self.check_queries(noted(body, &repairs), evidence).await;
                    return Ok(Diagnosed {
                        outcome: self.scrub(Outcome::Completed {
                            body,
                            engine: Engine::Ai,
                            ai_failure: None,
                        }),
                        usage: result.usage,
                        repairs,
                    });
                }
                Answer::Unusable(why) => (
                    FailureKind::NoJson,
                    why,
                    raw_output(&result.log, Some(&text)),
                ),
            },
            RunEnd::Failed(failure) => {
                (failure.kind, failure.message, raw_output(&result.log, None))
            }
        };
        // The AI failed after its retries: the evidence still makes a report.
        let outcome = match evidence {
            Some(items) => Outcome::Completed {
                body: evidence_report::write(
                    alert,
                    items,
                    facts.unmeasured,
                    facts.changes,
                    facts.verdict,
                    &self.redactor.apply(&reason),
                ),
                engine: Engine::Evidence,
                ai_failure: Some(AiFailure {
                    kind: Some(kind),
                    reason,
                    raw_output: raw,
                }),
            },
            None => Outcome::Failed {
                kind,
                reason,
                raw_output: raw,
            },
        };
        Ok(Diagnosed {
            outcome: self.scrub(outcome),
            usage: result.usage,
            repairs: Vec::new(),
        })
    }

    /// The report from the evidence alone, saying why no AI was asked (`kind`: the AI
    /// failure counted, `None` in evidence-only mode); failed when there is no evidence.
    pub fn without_ai(&self, facts: &Facts<'_>, kind: Option<FailureKind>, why: &str) -> Diagnosed {
        let outcome = match facts.evidence.filter(|e| !e.is_empty()) {
            Some(items) => Outcome::Completed {
                body: evidence_report::write(
                    facts.alert,
                    items,
                    facts.unmeasured,
                    facts.changes,
                    facts.verdict,
                    why,
                ),
                engine: Engine::Evidence,
                ai_failure: Some(AiFailure {
                    kind,
                    reason: why.to_owned(),
                    raw_output: None,
                }),
            },
            None => Outcome::Failed {
                kind: kind.unwrap_or(FailureKind::NoEvidence),
                reason: format!(
                    "{why}, and no evidence could be gathered from AI.PrometheusURL (see the \
                     service log)"
                ),
                raw_output: None,
            },
        };
        Diagnosed {
            outcome: self.scrub(outcome),
            usage: None,
            repairs: Vec::new(),
        }
    }

    /// Keeps the model's queries that Prometheus can parse; the others are dropped with a
    /// note at the end of the report, and when none remain the top evidence queries stand
    /// in for them.
    async fn check_queries(
        &self,
        body: ReportBody,
        evidence: Option<&[EvidenceItem]>,
    ) -> ReportBody {
        // A small model repeats its queries (Qwen2.5-Coder 1.5B wrote one CPU query five
        // times); each is kept once, in the order first written.
        let mut seen = std::collections::HashSet::new();
        let body = ReportBody {
            prom_ql: body
                .prom_ql
                .into_iter()
                .filter(|q| seen.insert(q.trim().to_owned()))
                .collect(),
            content: body.content,
        };
        let checks = join_all(
            body.prom_ql
                .iter()
                .take(MAX_CHECKED_QUERIES)
                .map(|q| self.prometheus.parses(q)),
        )
        .await;
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        let mut checks = checks.into_iter();
        for query in body.prom_ql {
            match checks.next() {
                Some(Err(why)) => dropped.push((query, why)),
                _ => kept.push(query),
            }
        }
        if dropped.is_empty() {
            return ReportBody {
                prom_ql: kept,
                content: body.content,
            };
        }
        tracing::info!(
            dropped = dropped.len(),
            "the model's promQL has queries Prometheus cannot parse"
        );
        let mut content = body.content;
        content.push_str(&dropped_note(&dropped));
        if kept.is_empty() {
            if let Some(items) = evidence {
                kept = evidence_report::queries(items);
                content.push_str("\n已改用实测证据中排名靠前的查询。");
            }
        }
        content.push('）');
        ReportBody {
            prom_ql: kept,
            content,
        }
    }

    fn scrub(&self, outcome: Outcome) -> Outcome {
        let scrub = |s: &str| self.redactor.apply(s);
        match outcome {
            Outcome::Completed {
                body,
                engine,
                ai_failure,
            } => Outcome::Completed {
                body: ReportBody {
                    prom_ql: body.prom_ql.iter().map(|q| scrub(q)).collect(),
                    content: scrub(&body.content),
                },
                engine,
                ai_failure: ai_failure.map(|f| AiFailure {
                    kind: f.kind,
                    reason: scrub(&f.reason),
                    raw_output: f.raw_output.as_deref().map(scrub),
                }),
            },
            Outcome::Failed {
                kind,
                reason,
                raw_output,
            } => Outcome::Failed {
                kind,
                reason: scrub(&reason),
                raw_output: raw_output.as_deref().map(scrub),
            },
        }
    }
}

/// Said on a report whose JSON the model never closed: it was cut at the token limit or
/// stopped, and its last section may end early. The person reading it is told.
pub const UNCLOSED_NOTE: &str = "\n\n（服务注：模型的回答没有写完 JSON 就结束了，可能在 AI.MaxTokens 处被截断；以上为其原文，最后一节的结尾可能不完整。）";

/// Said on a report whose model wrote its four sections again after the first run (a
/// small model loops until its token limit): only the first run is shown.
pub const REPEATED_NOTE: &str =
    "\n\n（服务注：模型写完四节后又从头重复写了下去，可能陷入了循环；以上只保留第一遍。）";

/// Unparsable promQL listed in the note on the report; the rest are counted.
const DROPPED_LISTED: usize = 3;

/// The note on the queries dropped (each with Prometheus's reason), left open for what
/// follows it. The first few say what went wrong; a model that wrote its tools' names as
/// queries would otherwise bury the report under them.
fn dropped_note(dropped: &[(String, String)]) -> String {
    let mut note =
        "\n\n（服务注：模型给出的以下 PromQL 无法被 Prometheus 解析，已从 promQL 中移除："
            .to_owned();
    for (query, why) in dropped.iter().take(DROPPED_LISTED) {
        note.push_str(&format!("\n- {query}：{why}"));
    }
    if dropped.len() > DROPPED_LISTED {
        note.push_str(&format!(
            "\n- 另有 {} 条同样无法解析，未逐条列出",
            dropped.len() - DROPPED_LISTED
        ));
    }
    note
}

/// The body with the notes its reading took: [`UNCLOSED_NOTE`] when the model left its
/// JSON open, [`REPEATED_NOTE`] when it wrote the sections again (then the first run is
/// whole, wherever the repeats were cut).
fn noted(mut body: ReportBody, repairs: &[Repair]) -> ReportBody {
    if repairs.contains(&Repair::RepeatedSections) {
        body.content.push_str(REPEATED_NOTE);
    } else if repairs.contains(&Repair::Unclosed) {
        body.content.push_str(UNCLOSED_NOTE);
    }
    body
}

/// The report in the model's answer, looked for on a blocking thread: a pathological
/// answer can take thousands of parse attempts, which must not hold a runtime thread.
async fn find_report(text: String) -> Answer {
    tokio::task::spawn_blocking(move || extract::find_report(&text))
        .await
        .unwrap_or_else(|e| Answer::Unusable(format!("reading the model's answer failed: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_of_dropped_queries_is_cut_to_the_first_three_and_counted() {
        let dropped: Vec<(String, String)> = (1..=9)
            .map(|n| (format!("tool_{n}()"), "unknown function".to_owned()))
            .collect();
        let note = dropped_note(&dropped);
        assert!(note.contains("tool_1()：unknown function") && note.contains("tool_3()"));
        assert!(!note.contains("tool_4()"), "{note}");
        assert!(note.contains("另有 6 条同样无法解析"), "{note}");
        let one = dropped_note(&dropped[..1]);
        assert!(one.contains("tool_1()") && !one.contains("另有"), "{one}");
    }
}
