//! `Runner.Kind: native`: the diagnosis done in the service. Same prompt, same output
//! contract (logs, `#####`, the answer) and validation as the Python runner, without a
//! Python process per alert: the MCP sessions stay open and are shared by all diagnoses.
//!
//! Per turn, the model's tool calls run concurrently; an identical call repeated within a
//! diagnosis is answered from the first result; every result passes the size budget
//! (`AI.ToolResultMaxChars`) and says when it was cut; the last step offers no tools, so the
//! model must answer.

pub mod llm;
pub mod mcp;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::llm::{ChatClient, HttpChat, LlmError, Message, ToolOutput};
use self::mcp::{servers_for, ToolSet};
use super::{RunOutput, RunRequest, Runner, RunnerError};
use crate::config::Config;
use crate::report::Usage;

/// Told to the model on the last step, when no tools are offered.
const LAST_STEP_NOTE: &str =
    "工具调用次数已用完。请基于已获得的信息，立即按要求的 JSON 格式输出最终诊断报告。";

/// The agent loop in the service.
pub struct NativeRunner {
    chat: Arc<dyn ChatClient>,
    tools: Arc<ToolSet>,
    max_steps: u32,
    result_cap: usize,
    prometheus_url: String,
    http: reqwest::Client,
}

/// A failure with the Python runner's kinds, so both runners fail alike.
struct AgentError {
    kind: &'static str,
    message: String,
}

impl From<LlmError> for AgentError {
    fn from(e: LlmError) -> Self {
        Self {
            kind: e.kind,
            message: e.message,
        }
    }
}

/// The diagnosis's log, kept outside the future so a deadline does not lose it.
#[derive(Clone)]
struct Log(Arc<Mutex<(Instant, String)>>);

impl Log {
    fn new() -> Self {
        Self(Arc::new(Mutex::new((Instant::now(), String::new()))))
    }
    fn line(&self, text: impl AsRef<str>) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = guard.0.elapsed().as_secs_f64();
        let _ = writeln!(guard.1, "[{elapsed:7.3}s] {}", text.as_ref());
    }
    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

/// A result over the budget is cut, and says so, so the model knows it saw a part.
pub fn cap(text: String, limit: usize) -> String {
    let total = text.chars().count();
    if total <= limit {
        return text;
    }
    let mut cut: String = text.chars().take(limit).collect();
    let _ = write!(
        cut,
        "\n[truncated by deploy-diagnosis: showing {limit} of {total} characters]"
    );
    cut
}

impl NativeRunner {
    /// A runner for this configuration (sessions open on first use, or `warm_up`).
    pub fn new(config: &Config) -> Result<Self, RunnerError> {
        let chat = HttpChat::new(&config.ai).map_err(|e| RunnerError::Unavailable(e.message))?;
        Ok(Self::with_parts(
            config,
            Arc::new(chat),
            Arc::new(ToolSet::new(servers_for(config))),
        ))
    }

    /// A runner over a given chat client and tool set.
    pub fn with_parts(config: &Config, chat: Arc<dyn ChatClient>, tools: Arc<ToolSet>) -> Self {
        Self {
            chat,
            tools,
            max_steps: config.ai.maxturns,
            result_cap: config.ai.toolresultmaxchars as usize,
            prometheus_url: config.ai.prometheusurl.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Opens the MCP sessions now, so the first diagnosis does not pay for it.
    pub async fn warm_up(&self) {
        match self.tools.tools().await {
            Ok(tools) => tracing::info!(tools = tools.len(), "MCP sessions open"),
            Err(e) => {
                tracing::warn!(error = %e, "MCP servers not ready; the first diagnosis retries")
            }
        }
    }

    async fn check_prometheus(&self) -> Result<(), AgentError> {
        let url = format!("{}/api/v1/status/buildinfo", self.prometheus_url);
        let unreachable = |why: String| AgentError {
            kind: "prometheus_unreachable",
            message: format!("Prometheus unreachable at {}: {why}", self.prometheus_url),
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(format!(
                "status {}",
                response.status().as_u16()
            )));
        }
        Ok(())
    }

    async fn agent(
        &self,
        prompt: &str,
        deadline: Instant,
        log: &Log,
        usage: &Mutex<Usage>,
    ) -> Result<String, AgentError> {
        self.check_prometheus().await?;
        let tools = self.tools.tools().await.map_err(|e| AgentError {
            kind: "mcp_failed",
            message: e.to_string(),
        })?;
        log.line(format!(
            "{} tools: {}",
            tools.len(),
            tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut messages = vec![Message::User(prompt.to_owned())];
        let mut answered: HashMap<String, (String, bool)> = HashMap::new();
        for step in 1..=self.max_steps {
            let last = step == self.max_steps;
            let turn = self
                .chat
                .turn(&messages, (!last).then_some(tools.as_slice()), deadline)
                .await?;
            {
                let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
                u.input_tokens += turn.input_tokens;
                u.output_tokens += turn.output_tokens;
                u.steps += 1;
            }
            let calls = if last { Vec::new() } else { turn.calls.clone() };
            messages.push(Message::Assistant {
                text: turn.text.clone(),
                calls: calls.clone(),
            });
            if calls.is_empty() {
                log.line(format!("answer after {step} step(s)"));
                return Ok(turn.text);
            }
            // Identical calls (same tool, same arguments) run once per diagnosis.
            let key = |name: &str, args: &Value| format!("{name}\u{0}{args}");
            let mut fresh: Vec<(String, String, Value)> = Vec::new();
            for call in &calls {
                let k = key(&call.name, &call.arguments);
                if !answered.contains_key(&k) && !fresh.iter().any(|(fk, _, _)| *fk == k) {
                    fresh.push((k, call.name.clone(), call.arguments.clone()));
                }
            }
            let cached = calls.len() - fresh.len();
            for (_, name, args) in &fresh {
                log.line(format!(
                    "step {step}: tool {name} {}",
                    truncate_chars(&args.to_string(), 200)
                ));
            }
            let results = join_all(
                fresh
                    .iter()
                    .map(|(_, name, args)| self.tools.call(name, args)),
            )
            .await;
            for ((k, name, _), result) in fresh.into_iter().zip(results) {
                if result.is_error {
                    log.line(format!(
                        "step {step}: tool {name} returned an error: {}",
                        truncate_chars(&result.text, 200)
                    ));
                }
                answered.insert(k, (cap(result.text, self.result_cap), result.is_error));
            }
            {
                let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
                u.tool_calls += (calls.len() - cached) as u64;
                u.cached_tool_calls += cached as u64;
            }
            let outputs = calls
                .iter()
                .map(|c| {
                    let (content, is_error) = answered[&key(&c.name, &c.arguments)].clone();
                    ToolOutput {
                        call_id: c.id.clone(),
                        content,
                        is_error,
                    }
                })
                .collect();
            messages.push(Message::ToolResults {
                results: outputs,
                note: (step + 1 == self.max_steps).then(|| LAST_STEP_NOTE.to_owned()),
            });
        }
        Err(AgentError {
            kind: "internal",
            message: "agent loop ended without an answer".into(),
        })
    }
}

fn truncate_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[async_trait]
impl Runner for NativeRunner {
    fn kind(&self) -> &'static str {
        "native"
    }

    async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let log = Log::new();
        let usage = Mutex::new(Usage::default());
        let deadline = Instant::now() + request.deadline;
        let work = self.agent(&request.prompt, deadline, &log, &usage);
        let result = tokio::select! {
            r = tokio::time::timeout_at(deadline, work) => r,
            _ = cancel.cancelled() => return Err(RunnerError::Cancelled),
        };
        let usage = Some(usage.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let (answer, exit_code) = match result {
            Err(_elapsed) => {
                let output = RunOutput {
                    stdout: log.text(),
                    stderr: String::new(),
                    exit_code: None,
                    usage,
                };
                return Err(RunnerError::DeadlineExceeded {
                    after: request.deadline,
                    output,
                });
            }
            Ok(Ok(answer)) => (answer, 0),
            Ok(Err(e)) => {
                log.line(format!("diagnosis failed: {}: {}", e.kind, e.message));
                (
                    json!({"error": {"kind": e.kind, "message": e.message}}).to_string(),
                    2,
                )
            }
        };
        Ok(RunOutput {
            stdout: format!("{}#####\n{answer}\n", log.text()),
            stderr: String::new(),
            exit_code: Some(exit_code),
            usage,
        })
    }

    async fn check(&self) -> Result<Value, String> {
        self.tools
            .tools()
            .await
            .map(|t| json!({ "tools": t.len() }))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn results_within_the_budget_pass_whole_and_longer_ones_say_they_were_cut() {
        assert_eq!(cap("短文本".into(), 10), "短文本");
        let cut = cap("指标".repeat(50), 10);
        assert!(cut.starts_with(&"指标".repeat(5)));
        assert!(
            cut.ends_with("[truncated by deploy-diagnosis: showing 10 of 100 characters]"),
            "{cut}"
        );
    }
}
