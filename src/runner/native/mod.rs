//! `Runner.Kind: native`: the diagnosis done in the service. Same prompt, same requests,
//! same failures as the Python runner, without a Python process per alert: the MCP
//! sessions stay open and are shared by all diagnoses.
//!
//! Per turn, the model's tool calls run concurrently; an identical call repeated within a
//! diagnosis is answered from the first result; every result passes the size budget
//! (`AI.ToolResultMaxChars`) and says when it was cut; range query results are summarised
//! per series first ([`super::summary`]). The last step forbids tool use, so
//! the model must answer; an answer cut at `AI.MaxTokens` gets one follow-up asking for the
//! report within the limit.

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

use self::llm::{
    ChatClient, HttpChat, LlmError, Message, ToolCall, ToolChoice, ToolOutput, ToolSpec,
};
use self::mcp::{servers_for, ToolSet};
use super::summary;
use super::{Cancelled, Failure, RunEnd, RunRequest, RunResult, Runner, RunnerError};
use crate::config::Config;
use crate::model::deployment::RepoName;
use crate::model::report::RunnerKind;
use crate::model::report::{FailureKind, Usage};
use crate::runner::calls;
use crate::runner::context;
use crate::runner::extract::{self, Answer};
use crate::runner::provider::Profile;

/// Told to the model with the results before its last step, when tool use is forbidden.
/// (The Python runner says the same.)
pub const LAST_STEP_NOTE: &str =
    "工具调用次数已用完。请基于已获得的信息，立即按要求的 JSON 格式输出最终诊断报告。";

/// Told to the model when its answer was cut at the token limit. (The Python runner says
/// the same.)
pub const CUT_OFF_NOTE: &str = "你的回答超出了长度上限，被截断了。请不要再调用工具，直接输出要求的 JSON 诊断报告（promQL 与 content），内容精简，确保完整。";

/// The follow-up to an answer that holds no readable report, after `{why}`; the Python
/// runner says the same (`FORMAT_NOTE`).
pub const FORMAT_NOTE: &str = "你的回答无法读取为要求的 JSON 报告（{why}）。请不要再调用工具，只输出一个 JSON 对象：{\"promQL\": [\"PromQL 查询\"], \"content\": \"【问题概述】…【根因分析】…【影响范围】…【解决方案】…\"}，字符串中的换行写作 \\n，引号写作 \\\"，不要代码块标记和其他文字。";

/// The agent loop in the service.
pub struct NativeRunner {
    chat: Arc<dyn ChatClient>,
    tools: Arc<ToolSet>,
    max_steps: u32,
    max_tokens: u32,
    result_cap: usize,
    calls_per_turn: usize,
    result_budget: usize,
    context_tokens: u32,
    profile: String,
    prometheus_url: String,
    http: reqwest::Client,
}

impl From<LlmError> for Failure {
    fn from(e: LlmError) -> Self {
        Failure::new(e.kind, e.message)
    }
}

/// What the model's text holds (read on a blocking thread).
async fn find_report(text: &str) -> Answer {
    let text = text.to_owned();
    tokio::task::spawn_blocking(move || extract::find_report(&text))
        .await
        .unwrap_or_else(|e| Answer::Unusable(format!("reading the model's answer failed: {e}")))
}

/// Whether the model's text already holds the report as written, with nothing to repair
/// (looked for on a blocking thread: a pathological answer can take thousands of parse
/// attempts). An answer cut at the token limit reads as a report once closed, but a cut
/// one: it gets the follow-up asking for the whole report instead, as the Python runner's
/// strict check decides too.
async fn holds_report(text: &str) -> bool {
    let text = text.to_owned();
    tokio::task::spawn_blocking(move || {
        matches!(extract::find_report(&text), Answer::Report(_, repairs) if repairs.is_empty())
    })
        .await
        .unwrap_or(false)
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
        Self::with_parts(
            config,
            Arc::new(chat),
            Arc::new(ToolSet::new(
                servers_for(config),
                config.mcp.connect_timeout,
            )),
        )
    }

    /// A runner over a given chat client and tool set.
    pub fn with_parts(
        config: &Config,
        chat: Arc<dyn ChatClient>,
        tools: Arc<ToolSet>,
    ) -> Result<Self, RunnerError> {
        // Its readiness probe of Prometheus; a client without the timeout is never used.
        let http = crate::tls::client()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RunnerError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            chat,
            tools,
            max_steps: config.ai.max_turns.get(),
            max_tokens: config.ai.max_tokens,
            result_cap: config.ai.tool_result_max_chars as usize,
            calls_per_turn: config.ai.max_tool_calls_per_turn.get() as usize,
            result_budget: config.ai.tool_result_budget_chars as usize,
            context_tokens: Profile::new(&config.ai).context_tokens,
            profile: Profile::new(&config.ai).describe(),
            prometheus_url: config.ai.prometheus_url.to_string(),
            http,
        })
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

    async fn check_prometheus(&self) -> Result<(), Failure> {
        let url = format!("{}/api/v1/status/buildinfo", self.prometheus_url);
        let unreachable = |why: String| {
            Failure::new(
                FailureKind::PrometheusUnreachable,
                format!(
                    "Prometheus unreachable at {}: {why}",
                    crate::redact::redact_url_credentials(&self.prometheus_url)
                ),
            )
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(e.without_url().to_string()))?;
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
        repos: &[RepoName],
        deadline: Instant,
        log: &Log,
        usage: &Mutex<Usage>,
    ) -> Result<String, Failure> {
        log.line(&self.profile);
        self.check_prometheus().await?;
        let tools = self
            .tools
            .tools()
            .await
            .map_err(|e| Failure::new(FailureKind::McpFailed, e.to_string()))?;
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
        // Which call each tool output answered, so a call whose output was removed to fit
        // the context may be made again.
        let mut call_keys: HashMap<String, String> = HashMap::new();
        let budget = (self.context_tokens as usize).saturating_sub(self.max_tokens as usize);
        // Characters of tool output shown so far, and results withheld past the budget.
        let (mut spent, mut withheld) = (0usize, 0u64);
        let mut followed_up = false;
        // Whether an answer with no readable report got its one follow-up.
        let mut asked_for_format = false;
        let mut step = 0;
        loop {
            step += 1;
            // The last step, and a follow-up (to a cut-off answer, or to one with no
            // readable report), must answer in text.
            let last = step >= self.max_steps || followed_up || asked_for_format;
            let choice = if last {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            };
            match fit_context(&mut messages, &tools, budget) {
                Ok(removed) if !removed.is_empty() => {
                    log.line(format!(
                        "step {step}: {} earlier tool output(s) removed to fit AI.ContextTokens ({})",
                        removed.len(),
                        self.context_tokens
                    ));
                    for id in removed {
                        if let Some(k) = call_keys.remove(&id) {
                            answered.remove(&k);
                        }
                    }
                }
                Ok(_) => {}
                Err(needed) => {
                    return Err(Failure::new(
                        FailureKind::ContextExceeded,
                        format!(
                            "the conversation needs about {needed} tokens with no tool output left to remove, \
                             more than the {budget} the context leaves beside the answer; {}",
                            context::advice(self.context_tokens, self.max_tokens)
                        ),
                    ))
                }
            }
            let turn = self.chat.turn(&messages, &tools, choice, deadline).await?;
            {
                let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
                u.input_tokens += turn.input_tokens;
                u.output_tokens += turn.output_tokens;
                u.steps += 1;
            }
            if turn.cut_off {
                if holds_report(&turn.text).await {
                    log.line(format!(
                        "answer after {step} step(s), past the token limit but whole"
                    ));
                    return Ok(turn.text);
                }
                if followed_up {
                    // Cut again, but every section is there: the report is kept, closed
                    // where it was cut (the diagnosis says so on it), rather than lost.
                    if let Answer::Report(..) = find_report(&turn.text).await {
                        log.line(format!(
                            "answer after {step} step(s) cut off again at AI.MaxTokens ({}), \
                             but it reads as a report with its four sections: kept",
                            self.max_tokens
                        ));
                        return Ok(turn.text);
                    }
                    return Err(Failure::new(
                        FailureKind::AnswerCutOff,
                        format!(
                            "answer cut off at AI.MaxTokens ({}), also when asked for a shorter one; raise it",
                            self.max_tokens
                        ),
                    ));
                }
                log.line(format!(
                    "step {step}: answer cut off at AI.MaxTokens ({}); asking for the report within the limit",
                    self.max_tokens
                ));
                followed_up = true;
                // Tool calls of a cut answer may be cut too: only its text is kept.
                messages.push(Message::Assistant {
                    text: turn.text,
                    calls: Vec::new(),
                });
                messages.push(Message::User(CUT_OFF_NOTE.to_owned()));
                continue;
            }
            // Reasoning is the model's own: never in the answer nor in the next prompt.
            let mut turn = turn;
            turn.text = extract::without_reasoning(&turn.text);
            if turn.calls.is_empty() && !last {
                let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
                let written = calls::written(&turn.text, &names);
                if !written.is_empty() && !holds_report(&turn.text).await {
                    log.line(format!(
                        "step {step}: {} tool call(s) written as text, run as calls",
                        written.len()
                    ));
                    turn.calls = written
                        .into_iter()
                        .enumerate()
                        .map(|(i, w)| ToolCall {
                            id: format!("text_{step}_{i}"),
                            name: w.name,
                            arguments: w.arguments,
                        })
                        .collect();
                    // The conversation carries them as calls: the next turn sees its own
                    // calls answered, as a server with tool parsing would show them.
                    turn.text = String::new();
                }
            }
            if turn.calls.is_empty() {
                let unreadable = match find_report(&turn.text).await {
                    Answer::Unusable(why) => Some(why),
                    Answer::Report(..) => None,
                };
                match unreadable {
                    Some(why) if !asked_for_format => {
                        log.line(format!(
                            "step {step}: the answer holds no readable report ({why}); asking once for the JSON object alone"
                        ));
                        asked_for_format = true;
                        // The answer's text is kept in the conversation, so the model
                        // sees what it wrote and what was wrong with it.
                        messages.push(Message::Assistant {
                            text: turn.text,
                            calls: Vec::new(),
                        });
                        messages.push(Message::User(FORMAT_NOTE.replace("{why}", &why)));
                        continue;
                    }
                    _ => {
                        log.line(format!("answer after {step} step(s)"));
                        return Ok(turn.text);
                    }
                }
            }
            if last {
                if holds_report(&turn.text).await {
                    log.line(format!(
                        "answer after {step} step(s); the model also asked for tools, ignored"
                    ));
                    return Ok(turn.text);
                }
                return Err(Failure::new(
                    FailureKind::ToolsAtStepLimit,
                    format!(
                        "the model asked for more tools on its last step (AI.MaxTurns = {}) instead of answering, \
                         although tool use was switched off for that step; raise AI.MaxTurns, or use a model \
                         or server that honours tool_choice \"none\"",
                        self.max_steps
                    ),
                ));
            }
            let calls = turn.calls;
            messages.push(Message::Assistant {
                text: turn.text,
                calls: calls.clone(),
            });
            // Identical calls (same tool, same arguments) run once per diagnosis; at most
            // `AI.MaxToolCallsPerTurn` new ones run in a turn, the rest are answered "not run"
            // (every call needs an answer) and may be asked for again.
            let key = |name: &str, args: &Value| format!("{name}\u{0}{args}");
            let mut fresh: Vec<(String, String, Value)> = Vec::new();
            let mut refused: HashMap<String, (String, bool)> = HashMap::new();
            for call in &calls {
                let k = key(&call.name, &call.arguments);
                if fresh.iter().any(|(fk, _, _)| *fk == k) || refused.contains_key(&k) {
                    // The same call twice in one turn: it runs once and both get its result.
                    continue;
                }
                // What a real model gets wrong is answered, not run: a call it made
                // before (small models loop on one), a tool it was not given, arguments
                // that are no JSON object.
                if let Some(why) = call_problem(call, answered.contains_key(&k), &tools) {
                    log.line(format!("step {step}: tool {} not run: {why}", call.name));
                    refused.insert(k, (why, true));
                    continue;
                }
                if fresh.len() < self.calls_per_turn {
                    fresh.push((k, call.name.clone(), call.arguments.clone()));
                } else {
                    refused.insert(k, (format!(
                        "not run: at most {} tool calls a turn (AI.MaxToolCallsPerTurn); ask again for the ones that matter most",
                        self.calls_per_turn
                    ), true));
                }
            }
            if !refused.is_empty() {
                log.line(format!(
                    "step {step}: {} tool calls past AI.MaxToolCallsPerTurn ({}) not run",
                    refused.len(),
                    self.calls_per_turn
                ));
            }
            let cached = calls.len() - fresh.len() - refused.len();
            for (_, name, args) in &fresh {
                log.line(format!(
                    "step {step}: tool {name} {}",
                    truncate_chars(&args.to_string(), 200)
                ));
            }
            let results = join_all(
                fresh
                    .iter()
                    .map(|(_, name, args)| self.tools.call(name, args, repos)),
            )
            .await;
            for ((k, name, _), result) in fresh.into_iter().zip(results) {
                if result.is_error {
                    log.line(format!(
                        "step {step}: tool {name} returned an error: {}",
                        truncate_chars(&result.text, 200)
                    ));
                }
                let text = match name.as_str() {
                    summary::RANGE_TOOL if !result.is_error => {
                        summary::summarise_range(&result.text).unwrap_or(result.text)
                    }
                    _ => result.text,
                };
                let text = cap(text, self.result_cap);
                let size = text.chars().count();
                let text = if spent + size > self.result_budget {
                    withheld += 1;
                    format!(
                        "not shown: this diagnosis's tool output budget (AI.ToolResultBudgetChars = {}) is spent; answer with what you have",
                        self.result_budget
                    )
                } else {
                    spent += size;
                    text
                };
                answered.insert(k, (text, result.is_error));
            }
            {
                let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
                u.tool_calls += (calls.len() - cached - refused.len()) as u64;
                u.cached_tool_calls += cached as u64;
                u.refused_tool_calls += refused.len() as u64;
                u.withheld_tool_results = withheld;
            }
            let outputs = calls
                .iter()
                .map(|c| {
                    let k = key(&c.name, &c.arguments);
                    let (content, is_error) =
                        refused.get(&k).unwrap_or_else(|| &answered[&k]).clone();
                    if !refused.contains_key(&k) {
                        call_keys.insert(c.id.clone(), k);
                    }
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
    }
}

/// Tokens a message is estimated to take.
fn message_tokens(message: &Message) -> usize {
    context::PER_MESSAGE
        + match message {
            Message::User(text) => context::estimate(text),
            Message::Assistant { text, calls } => {
                context::estimate(text)
                    + calls
                        .iter()
                        .map(|c| {
                            context::estimate(&c.name) + context::estimate(&c.arguments.to_string())
                        })
                        .sum::<usize>()
            }
            Message::ToolResults { results, note } => {
                results
                    .iter()
                    .map(|r| context::PER_MESSAGE + context::estimate(&r.content))
                    .sum::<usize>()
                    + note.as_deref().map_or(0, context::estimate)
            }
        }
}

/// Fits the conversation into `budget` tokens by replacing tool outputs with a note,
/// oldest first; the ids of the calls whose output was removed, or the tokens still
/// needed when nothing is left to remove.
fn fit_context(
    messages: &mut [Message],
    tools: &[ToolSpec],
    budget: usize,
) -> Result<Vec<String>, usize> {
    let declared: usize = tools
        .iter()
        .map(|t| {
            context::estimate(&t.name)
                + context::estimate(&t.description)
                + context::estimate(&t.input_schema.to_string())
        })
        .sum();
    let mut total = declared + messages.iter().map(message_tokens).sum::<usize>();
    let mut removed = Vec::new();
    let note = context::estimate(context::TRIMMED_NOTE);
    for message in messages.iter_mut() {
        if context::fits(total, budget) {
            break;
        }
        let Message::ToolResults { results, .. } = message else {
            continue;
        };
        for r in results.iter_mut() {
            if context::fits(total, budget) {
                break;
            }
            let size = context::estimate(&r.content);
            if r.content == context::TRIMMED_NOTE || size <= note {
                continue;
            }
            r.content = context::TRIMMED_NOTE.to_owned();
            total -= size - note;
            removed.push(r.call_id.clone());
        }
    }
    if !context::fits(total, budget) {
        return Err(total + total / 10);
    }
    Ok(removed)
}

/// Why a call is answered with an error instead of being run; `None`: run it.
fn call_problem(call: &ToolCall, answered_before: bool, tools: &[ToolSpec]) -> Option<String> {
    if answered_before {
        return Some(format!(
            "already answered above: you called {} with these arguments in an earlier step; \
             use that result, call another tool or other arguments, or write the report",
            call.name
        ));
    }
    if !tools.iter().any(|t| t.name == call.name) {
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        return Some(format!(
            "no tool named {:?}; the tools are: {}",
            call.name,
            names.join(", ")
        ));
    }
    if !call.arguments.is_object() {
        return Some(format!(
            "the arguments are not a JSON object ({}); call {} again with an object that \
             matches its input schema",
            truncate_chars(&call.arguments.to_string(), 200),
            call.name
        ));
    }
    None
}

fn truncate_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[async_trait]
impl Runner for NativeRunner {
    fn kind(&self) -> RunnerKind {
        RunnerKind::Native
    }

    async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunResult, Cancelled> {
        let log = Log::new();
        let usage = Mutex::new(Usage::default());
        let deadline = Instant::now() + request.deadline;
        let work = self.agent(
            &request.prompt,
            &request.github_repos,
            deadline,
            &log,
            &usage,
        );
        let result = tokio::select! {
            r = tokio::time::timeout_at(deadline, work) => r,
            _ = cancel.cancelled() => return Err(Cancelled),
        };
        let end = match result {
            Err(_elapsed) => RunEnd::Failed(Failure::deadline(request.deadline)),
            Ok(Ok(answer)) => RunEnd::Answer(answer),
            Ok(Err(failure)) => {
                log.line(format!(
                    "diagnosis failed: {}: {}",
                    failure.kind, failure.message
                ));
                RunEnd::Failed(failure)
            }
        };
        let usage = usage.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(RunResult {
            end,
            log: log.text(),
            usage: Some(usage),
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
    use super::*;

    fn results(id: &str, content: String) -> Message {
        Message::ToolResults {
            results: vec![ToolOutput {
                call_id: id.into(),
                content,
                is_error: false,
            }],
            note: None,
        }
    }

    #[test]
    fn the_oldest_tool_output_goes_first_and_a_prompt_too_long_is_refused() {
        let call = |id: &str| Message::Assistant {
            text: String::new(),
            calls: vec![ToolCall {
                id: id.into(),
                name: "execute_query".into(),
                arguments: json!({"query": "up"}),
            }],
        };
        let mut messages = vec![
            Message::User("提示".repeat(100)),
            call("a"),
            results("a", "x".repeat(3000)),
            call("b"),
            results("b", "y".repeat(3000)),
        ];
        let all: usize = messages.iter().map(message_tokens).sum();
        let all = all + all / 10;
        assert_eq!(fit_context(&mut messages, &[], all), Ok(vec![]));
        // One output's worth less: the older one goes.
        assert_eq!(
            fit_context(&mut messages, &[], all - 900),
            Ok(vec!["a".to_owned()])
        );
        assert!(
            matches!(&messages[2], Message::ToolResults { results, .. } if results[0].content == context::TRIMMED_NOTE)
        );
        assert!(
            matches!(&messages[4], Message::ToolResults { results, .. } if results[0].content.starts_with('y'))
        );
        // Removed once, not again; then the newer one.
        assert_eq!(fit_context(&mut messages, &[], all - 900), Ok(vec![]));
        assert_eq!(
            fit_context(&mut messages, &[], all - 1900),
            Ok(vec!["b".to_owned()])
        );
        // Nothing left to remove: the estimate of what it needs.
        assert!(matches!(fit_context(&mut messages, &[], 100), Err(n) if n > 200));
    }

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
