//! LLM clients for both wire formats: Anthropic Messages and OpenAI-compatible chat
//! completions (OpenAI, DashScope/Qwen compatible-mode, ModelScope, Ollama, vLLM), plain
//! reqwest + serde. Retries 429, 5xx (Anthropic's 529 "overloaded" included) and connection
//! errors with backoff, honouring `Retry-After` in both its forms, but never past the
//! diagnosis's deadline.
//!
//! Requests follow each provider's documented rules (the tests' scripted LLM enforces
//! them): tools stay declared for as long as the conversation holds tool calls, and the
//! last step forbids their use with `tool_choice` instead of dropping them; no message is
//! sent with empty content; the token limit and extra fields come from the provider
//! profile ([`crate::runner::provider`]).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::config::{AiConfig, Protocol, Secret};
use crate::model::report::FailureKind;
use crate::runner::provider::{report_schema, Profile, Structured, SUBMIT_TOOL};
use crate::runner::{context, lenient};

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Tool name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The provider's id for the call.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments (a JSON object).
    pub arguments: Value,
}

/// The result of one tool call, for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The call it answers.
    pub call_id: String,
    /// Text for the model.
    pub content: String,
    /// Whether the tool failed.
    pub is_error: bool,
}

/// The conversation, independent of wire format.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// From the user.
    User(String),
    /// From the model: text and tool calls.
    Assistant {
        /// Text.
        text: String,
        /// Tool calls.
        calls: Vec<ToolCall>,
    },
    /// Results of the previous turn's tool calls, and a note for the model after them.
    ToolResults {
        /// One per call.
        results: Vec<ToolOutput>,
        /// Text sent with the results (in the same user turn).
        note: Option<String>,
    },
}

/// Whether the model may call tools in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The tools stay declared (the conversation may hold tool calls, and Anthropic
    /// rejects those without `tools`), but the model must answer in text.
    None,
}

/// One model answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Turn {
    /// Text.
    pub text: String,
    /// Tool calls (empty when the model answered).
    pub calls: Vec<ToolCall>,
    /// The answer was cut at the token limit (Anthropic `stop_reason: "max_tokens"`,
    /// OpenAI `finish_reason: "length"`).
    pub cut_off: bool,
    /// Input tokens the provider counted.
    pub input_tokens: u64,
    /// Output tokens the provider counted.
    pub output_tokens: u64,
}

/// Why a turn failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    /// `LlmStatus`, `LlmUnreachable`, `LlmTimeout` or `LlmBadResponse`.
    pub kind: FailureKind,
    /// For people.
    pub message: String,
}

/// A chat model with tools.
#[async_trait]
pub trait ChatClient: Send + Sync {
    /// One turn with these tools declared; `choice` says whether the model may call
    /// them. Retries stop before `deadline`.
    async fn turn(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        choice: ToolChoice,
        deadline: Instant,
    ) -> Result<Turn, LlmError>;
}

/// Most attempts of one request.
const MAX_ATTEMPTS: u32 = 5;

/// The HTTP client for either wire format.
pub struct HttpChat {
    profile: Profile,
    api_key: Secret,
    request_timeout: Duration,
    client: reqwest::Client,
}

impl HttpChat {
    /// A client for `AI.*`.
    pub fn new(ai: &AiConfig) -> Result<Self, LlmError> {
        let client = crate::tls::client()
            .timeout(ai.timeout)
            .build()
            .map_err(|e| LlmError {
                kind: FailureKind::LlmUnreachable,
                message: format!("HTTP client: {e}"),
            })?;
        Ok(Self {
            profile: Profile::new(ai),
            api_key: ai.api_key.clone(),
            request_timeout: ai.timeout,
            client,
        })
    }

    fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let request = self.client.post(&self.profile.url).json(body);
        match self.profile.protocol {
            Protocol::Anthropic => request
                .header("x-api-key", self.api_key.expose())
                .header("anthropic-version", "2023-06-01"),
            _ => request.bearer_auth(self.api_key.expose()),
        }
    }
}

/// The request body for a profile: the conversation in its wire format, the token limit
/// under the profile's name, the extra fields merged last.
pub fn request_body(
    profile: &Profile,
    messages: &[Message],
    tools: &[ToolSpec],
    choice: ToolChoice,
) -> Value {
    let mut body = match profile.protocol {
        Protocol::Anthropic => anthropic_body(&profile.model, messages, tools, choice),
        _ => openai_body(&profile.model, messages, tools, choice),
    };
    if choice == ToolChoice::None {
        final_answer_form(profile, &mut body);
    }
    profile.finish(&mut body);
    Value::Object(body)
}

/// A turn that must answer asks for the report in the provider's structured form, and a
/// server that ignores `tool_choice` is not offered the tools at all.
fn final_answer_form(profile: &Profile, body: &mut Map<String, Value>) {
    if profile.omit_forbidden_tools {
        body.remove("tools");
        body.remove("tool_choice");
    }
    match profile.structured {
        Structured::Instruction => {}
        Structured::JsonSchema => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {
                    "name": "diagnosis_report", "strict": true, "schema": report_schema()}}),
            );
        }
        Structured::JsonObject => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Structured::SubmitTool => {
            let submit = json!({"name": SUBMIT_TOOL,
                "description": "Submit the diagnosis report: the PromQL of the anomalous metrics and the four-section content.",
                "input_schema": report_schema()});
            match body.get_mut("tools").and_then(Value::as_array_mut) {
                Some(tools) => tools.push(submit),
                None => {
                    body.insert("tools".into(), json!([submit]));
                }
            }
            body.insert(
                "tool_choice".into(),
                json!({"type": "tool", "name": SUBMIT_TOOL}),
            );
        }
    }
}

/// How long to wait before retrying: the server's `Retry-After` (delay-seconds, or an
/// HTTP-date), at most 60 s, else exponential backoff from 500 ms, at most 8 s.
fn backoff(attempt: u32, retry_after: Option<&str>) -> Duration {
    retry_after
        .and_then(|v| crate::outside::retry_after(v, chrono::Utc::now(), Duration::from_secs(60)))
        .unwrap_or_else(|| Duration::from_millis(500u64 << attempt.min(4)))
}

#[async_trait]
impl ChatClient for HttpChat {
    async fn turn(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        choice: ToolChoice,
        deadline: Instant,
    ) -> Result<Turn, LlmError> {
        let body = request_body(&self.profile, messages, tools, choice);
        let url = &self.profile.url;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, retry_after) = match self.request(&body).send().await {
                Ok(response) if response.status().is_success() => {
                    let data: Value = response.json().await.map_err(|e| LlmError {
                        kind: FailureKind::LlmBadResponse,
                        message: format!("AI endpoint {url} answered non-JSON: {e}"),
                    })?;
                    return match self.profile.protocol {
                        Protocol::Anthropic => parse_anthropic(&data),
                        _ => parse_openai(&data),
                    };
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let text = response.text().await.unwrap_or_default();
                    // A provider may echo the credential back in its error body.
                    let key = self.api_key.expose();
                    let text = if key.is_empty() {
                        text
                    } else {
                        text.replace(key, "[REDACTED]")
                    };
                    let detail: String = text
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .chars()
                        .take(300)
                        .collect();
                    let error = if status.is_client_error() && context::is_context_error(&text) {
                        LlmError {
                            kind: FailureKind::ContextExceeded,
                            message: format!(
                                "the request is longer than the AI server's context (status {} at {url}: {detail}); {}",
                                status.as_u16(),
                                context::advice(self.profile.context_tokens, self.profile.max_tokens),
                            ),
                        }
                    } else {
                        LlmError {
                            kind: FailureKind::LlmStatus,
                            message: format!(
                                "AI call failed with status {} at {url}: {detail}",
                                status.as_u16(),
                            ),
                        }
                    };
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) if e.is_timeout() => (
                    LlmError {
                        kind: FailureKind::LlmTimeout,
                        message: format!("AI call to {url} timed out"),
                    },
                    None,
                ),
                Err(e) => (
                    LlmError {
                        kind: FailureKind::LlmUnreachable,
                        message: format!("AI endpoint {url} unreachable: {e}"),
                    },
                    None,
                ),
            };
            let wait = backoff(attempt, retry_after.as_deref());
            // A request that timed out will likely time out again: it is retried only if a
            // whole request fits before the deadline, so the reason stays "timed out".
            let needed = match error.kind {
                FailureKind::LlmTimeout => wait + self.request_timeout,
                _ => wait,
            };
            if attempt >= MAX_ATTEMPTS || Instant::now() + needed >= deadline {
                return Err(error);
            }
            tracing::info!(attempt, wait_ms = wait.as_millis() as u64, reason = %error, "retrying the AI call");
            tokio::time::sleep(wait).await;
        }
    }
}

/// What stands in for a tool's empty output: no provider accepts empty content.
const NO_OUTPUT: &str = "(no output)";

fn non_empty(text: &str) -> &str {
    if text.trim().is_empty() {
        NO_OUTPUT
    } else {
        text
    }
}

/// Anthropic Messages. Every message has non-empty content ("all messages must have
/// non-empty content except for the optional final assistant message"); a turn's
/// `tool_result` blocks open the user message that follows its `tool_use` blocks, and a
/// note or follow-up for the model comes after them in the same message (consecutive
/// same-role messages are merged, as the API itself would merge them).
fn anthropic_body(
    model: &str,
    messages: &[Message],
    tools: &[ToolSpec],
    choice: ToolChoice,
) -> Map<String, Value> {
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m {
            Message::User(text) => (
                "user",
                (!text.trim().is_empty())
                    .then(|| json!({"type": "text", "text": text}))
                    .into_iter()
                    .collect::<Vec<_>>(),
            ),
            Message::Assistant { text, calls } => {
                let mut blocks = Vec::new();
                if !text.trim().is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for c in calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
                }
                ("assistant", blocks)
            }
            Message::ToolResults { results, note } => {
                let mut blocks: Vec<Value> = results
                    .iter()
                    .map(|r| {
                        json!({"type": "tool_result", "tool_use_id": r.call_id,
                        "content": non_empty(&r.content), "is_error": r.is_error})
                    })
                    .collect();
                if let Some(note) = note.as_deref().filter(|n| !n.trim().is_empty()) {
                    blocks.push(json!({"type": "text", "text": note}));
                }
                ("user", blocks)
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), messages.into());
    if !tools.is_empty() {
        body.insert(
            "tools".into(),
            tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
                .collect(),
        );
        if choice == ToolChoice::None {
            body.insert("tool_choice".into(), json!({"type": "none"}));
        }
    }
    body
}

/// OpenAI-compatible chat completions. Each `tool` message answers a call of the assistant
/// message just before it; an assistant message without text carries `content: null`
/// (its tool calls are its content); `tool_choice` is only sent with `tools`.
fn openai_body(
    model: &str,
    messages: &[Message],
    tools: &[ToolSpec],
    choice: ToolChoice,
) -> Map<String, Value> {
    let mut out = Vec::new();
    for m in messages {
        match m {
            Message::User(text) if text.trim().is_empty() => {}
            Message::User(text) => out.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, calls } if text.trim().is_empty() && calls.is_empty() => {}
            Message::Assistant { text, calls } => {
                let content = if text.trim().is_empty() {
                    Value::Null
                } else {
                    text.as_str().into()
                };
                let mut msg = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    msg["tool_calls"] = calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                        })
                        .collect();
                }
                out.push(msg);
            }
            Message::ToolResults { results, note } => {
                out.extend(results.iter().map(|r| {
                    json!({"role": "tool", "tool_call_id": r.call_id, "content": non_empty(&r.content)})
                }));
                if let Some(note) = note.as_deref().filter(|n| !n.trim().is_empty()) {
                    out.push(json!({"role": "user", "content": note}));
                }
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), out.into());
    if !tools.is_empty() {
        body.insert(
            "tools".into(),
            tools
                .iter()
                .map(|t| json!({"type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
                .collect(),
        );
        if choice == ToolChoice::None {
            body.insert("tool_choice".into(), "none".into());
        }
    }
    body
}

fn bad(message: &str) -> LlmError {
    LlmError {
        kind: FailureKind::LlmBadResponse,
        message: message.to_owned(),
    }
}

fn parse_anthropic(data: &Value) -> Result<Turn, LlmError> {
    let blocks = data["content"]
        .as_array()
        .ok_or_else(|| bad("AI answer has no content blocks"))?;
    let mut turn = Turn {
        cut_off: data["stop_reason"] == "max_tokens",
        input_tokens: data["usage"]["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: data["usage"]["output_tokens"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    let mut submitted = None;
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => turn.text.push_str(block["text"].as_str().unwrap_or("")),
            // The report, submitted through the tool the last step forces.
            Some("tool_use") if block["name"] == SUBMIT_TOOL => {
                submitted = Some(block["input"].to_string());
            }
            Some("tool_use") => turn.calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or("").to_owned(),
                name: block["name"].as_str().unwrap_or("").to_owned(),
                arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            _ => {}
        }
    }
    if let Some(report) = submitted {
        turn.text = report;
    }
    Ok(turn)
}

fn parse_openai(data: &Value) -> Result<Turn, LlmError> {
    let choice = data["choices"]
        .get(0)
        .ok_or_else(|| bad("AI answer has no choices[0].message"))?;
    let message = &choice["message"];
    let mut turn = Turn {
        cut_off: choice["finish_reason"] == "length",
        text: message["content"].as_str().unwrap_or("").to_owned(),
        input_tokens: data["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: data["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let raw = &call["function"]["arguments"];
        // Arguments that are no object, even read leniently, stay as written: the loop
        // answers the call with an error instead of running it.
        let arguments = match raw {
            Value::String(s) if s.trim().is_empty() => json!({}),
            Value::String(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object)
                .or_else(|| lenient::object(s.trim()).map(|(v, _)| v))
                .unwrap_or_else(|| raw.clone()),
            Value::Object(_) => raw.clone(),
            Value::Null => json!({}),
            other => other.clone(),
        };
        turn.calls.push(ToolCall {
            id: call["id"].as_str().unwrap_or("").to_owned(),
            name: call["function"]["name"].as_str().unwrap_or("").to_owned(),
            arguments,
        });
    }
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::provider::testing;

    fn profile(base_url: &str, model: &str) -> Profile {
        crate::runner::provider::testing::profile(base_url, model, "")
    }

    fn tool() -> ToolSpec {
        ToolSpec {
            name: "execute_query".into(),
            description: "PromQL".into(),
            input_schema: json!({"type": "object"}),
        }
    }

    /// A conversation at its last step: a tool call answered, then the step-limit note.
    fn conversation() -> Vec<Message> {
        vec![
            Message::User("hi".into()),
            Message::Assistant {
                text: String::new(),
                calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "execute_query".into(),
                    arguments: json!({"query": "up"}),
                }],
            },
            Message::ToolResults {
                results: vec![ToolOutput {
                    call_id: "c1".into(),
                    content: String::new(),
                    is_error: false,
                }],
                note: Some("answer now".into()),
            },
        ]
    }

    #[test]
    fn retry_after_wins_over_backoff_in_both_its_forms() {
        assert_eq!(backoff(1, Some("2")), Duration::from_secs(2));
        assert_eq!(backoff(1, None), Duration::from_millis(1000));
        assert_eq!(backoff(9, Some("soon")), Duration::from_millis(8000));
        let at = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let wait = backoff(1, Some(&at));
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(
            backoff(1, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::ZERO,
            "a date in the past means now"
        );
    }

    #[test]
    fn the_last_step_keeps_the_tools_and_forbids_their_use_in_both_formats() {
        let a = request_body(
            &profile("https://api.anthropic.com/v1", "claude-sonnet-4-5"),
            &conversation(),
            &[tool()],
            ToolChoice::None,
        );
        // Anthropic's last step forces the report's own tool, which also forbids the others.
        assert_eq!(
            a["tool_choice"],
            json!({"type": "tool", "name": SUBMIT_TOOL})
        );
        assert_eq!(a["tools"][0]["name"], "execute_query");
        assert_eq!(a["tools"][1]["name"], SUBMIT_TOOL);
        assert_eq!(a["tools"][1]["input_schema"], report_schema());
        assert_eq!(a["max_tokens"], 4096);
        let o = request_body(
            &profile("https://api.openai.com/v1", "gpt-4o"),
            &conversation(),
            &[tool()],
            ToolChoice::None,
        );
        assert_eq!(o["tool_choice"], "none");
        assert_eq!(o["response_format"]["type"], "json_schema");
        assert_eq!(o["response_format"]["json_schema"]["strict"], true);
        assert_eq!(
            o["response_format"]["json_schema"]["schema"],
            report_schema()
        );
        assert_eq!(o["max_completion_tokens"], 4096);
        assert!(o.get("max_tokens").is_none());
        let auto = request_body(
            &profile("https://api.openai.com/v1", "gpt-4o"),
            &conversation(),
            &[tool()],
            ToolChoice::Auto,
        );
        assert!(auto.get("tool_choice").is_none());
        assert!(
            auto.get("response_format").is_none(),
            "a step that may call tools is free"
        );
        let none = request_body(
            &profile("https://api.openai.com/v1", "gpt-4o"),
            &[Message::User("hi".into())],
            &[],
            ToolChoice::None,
        );
        assert!(
            none.get("tool_choice").is_none() && none.get("tools").is_none(),
            "tool_choice only with tools"
        );
    }

    #[test]
    fn the_final_answer_is_asked_for_in_the_form_each_provider_guarantees() {
        let last = |base: &str, model: &str, yaml: &str| {
            request_body(
                &testing::profile(base, model, yaml),
                &conversation(),
                &[tool()],
                ToolChoice::None,
            )
        };
        let dashscope = last(
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
            "qwen-plus",
            "",
        );
        assert_eq!(dashscope["response_format"], json!({"type": "json_object"}));
        for server in ["vllm", "llamacpp", "sglang"] {
            let body = last(
                "http://10.0.0.5:8000/v1",
                "qwen2.5-coder",
                &format!("  Provider: {server}\n"),
            );
            assert_eq!(body["response_format"]["type"], "json_schema", "{server}");
            assert_eq!(
                (body["tool_choice"].as_str(), body["max_tokens"].as_u64()),
                (Some("none"), Some(4096)),
                "{server}"
            );
        }
        // Ollama ignores tool_choice: the tools are left out of a step that must answer.
        let ollama = last("http://127.0.0.1:11434/v1", "qwen2.5-coder:7b", "");
        assert_eq!(ollama["response_format"]["type"], "json_schema");
        assert!(ollama.get("tools").is_none() && ollama.get("tool_choice").is_none());
        // An unknown server, ModelScope, and AI.StructuredOutput: off get the instruction
        // alone.
        for body in [
            last("https://llm.internal/v1", "qwen2.5-coder", ""),
            last(
                "https://api-inference.modelscope.cn",
                "Qwen/Qwen2.5-72B-Instruct",
                "",
            ),
            last(
                "https://api.openai.com/v1",
                "gpt-4o",
                "  StructuredOutput: off\n",
            ),
        ] {
            assert!(body.get("response_format").is_none(), "{body}");
            assert_eq!(body["tool_choice"], "none");
        }
        // Anthropic refuses a forced tool with extended thinking.
        let thinking = last(
            "https://api.anthropic.com/v1",
            "claude-sonnet-4-5",
            "  ExtraBody:\n    thinking: {type: enabled, budget_tokens: 1024}\n",
        );
        assert_eq!(thinking["tool_choice"], json!({"type": "none"}));
        assert_eq!(thinking["tools"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_report_submitted_through_the_tool_is_the_answer() {
        let turn = parse_anthropic(&json!({
            "content": [{"type": "tool_use", "id": "toolu_1", "name": SUBMIT_TOOL,
                "input": {"promQL": ["up"], "content": "【问题概述】x"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5}
        }))
        .unwrap();
        assert!(turn.calls.is_empty());
        let report: Value = serde_json::from_str(&turn.text).unwrap();
        assert_eq!(report["promQL"], json!(["up"]));
    }

    #[test]
    fn no_message_is_sent_with_empty_content() {
        let mut messages = conversation();
        // A cut-off answer with no text, then the follow-up for the model.
        messages.push(Message::Assistant {
            text: String::new(),
            calls: vec![],
        });
        messages.push(Message::User("shorter, please".into()));
        let a = request_body(
            &profile("https://api.anthropic.com/v1", "claude-sonnet-4-5"),
            &messages,
            &[tool()],
            ToolChoice::None,
        );
        let sent = a["messages"].as_array().unwrap();
        assert_eq!(sent.len(), 3, "{a:#}");
        assert_eq!(
            sent[1]["content"].as_array().unwrap().len(),
            1,
            "no empty text block"
        );
        let last = sent[2]["content"].as_array().unwrap();
        assert_eq!(last[0]["type"], "tool_result");
        assert_eq!(last[0]["content"], NO_OUTPUT);
        assert_eq!(
            (last[1]["text"].as_str(), last[2]["text"].as_str()),
            (Some("answer now"), Some("shorter, please")),
            "notes follow the tool results in the same user message"
        );
        let o = request_body(
            &profile("https://api.openai.com/v1", "gpt-4o"),
            &messages,
            &[tool()],
            ToolChoice::None,
        );
        let sent = o["messages"].as_array().unwrap();
        assert_eq!(sent.len(), 5, "{o:#}");
        assert_eq!(sent[1]["content"], Value::Null);
        assert_eq!(sent[2]["content"], NO_OUTPUT);
        assert!(sent.iter().all(|m| m["role"] != "assistant"
            || m.get("tool_calls").is_some()
            || m["content"].is_string()));
    }

    #[test]
    fn answers_are_parsed_with_usage_and_cut_offs_in_both_formats() {
        let reply = json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "x", "arguments": "{\"a\":1}"}}]},
            "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}});
        let turn = parse_openai(&reply).unwrap();
        assert_eq!(
            (
                turn.calls[0].arguments.clone(),
                turn.input_tokens,
                turn.output_tokens,
                turn.cut_off
            ),
            (json!({"a": 1}), 7, 3, false)
        );
        let cut = json!({"choices": [{"message": {"content": "{\"promQL\": ["}, "finish_reason": "length"}]});
        assert!(parse_openai(&cut).unwrap().cut_off);
        let reply = json!({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 5, "output_tokens": 2}});
        let turn = parse_anthropic(&reply).unwrap();
        assert_eq!((turn.text.as_str(), turn.cut_off), ("ok", false));
        let cut = json!({"content": [{"type": "text", "text": "{"}], "stop_reason": "max_tokens"});
        assert!(parse_anthropic(&cut).unwrap().cut_off);
    }
}
