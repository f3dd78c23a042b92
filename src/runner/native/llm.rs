//! LLM clients for both wire formats: Anthropic Messages and OpenAI-compatible chat
//! completions (OpenAI, DashScope/Qwen compatible-mode, ModelScope, Ollama, vLLM), plain
//! reqwest + serde. Retries 429, 5xx and connection errors with backoff, honouring
//! `Retry-After`, but never past the diagnosis's deadline.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::{AiConfig, Protocol, Secret};

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

/// One model answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Turn {
    /// Text.
    pub text: String,
    /// Tool calls (empty when the model answered).
    pub calls: Vec<ToolCall>,
    /// Input tokens the provider counted.
    pub input_tokens: u64,
    /// Output tokens the provider counted.
    pub output_tokens: u64,
}

/// Why a turn failed; `kind` matches the Python runner's failure kinds.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    /// `llm_status`, `llm_unreachable`, `llm_timeout`, `llm_bad_response`.
    pub kind: &'static str,
    /// For people.
    pub message: String,
}

/// A chat model with tools.
#[async_trait]
pub trait ChatClient: Send + Sync {
    /// One turn; `tools: None` offers no tools, so the model must answer. Retries stop
    /// before `deadline`.
    async fn turn(
        &self,
        messages: &[Message],
        tools: Option<&[ToolSpec]>,
        deadline: Instant,
    ) -> Result<Turn, LlmError>;
}

/// The wire format for a base URL: the configured one, or Anthropic for
/// `*.anthropic.com` and OpenAI-compatible otherwise.
pub fn protocol_for(base_url: &str, configured: Protocol) -> Protocol {
    match configured {
        Protocol::Auto => {
            let host = base_url
                .split("://")
                .nth(1)
                .unwrap_or("")
                .split(['/', ':'])
                .next()
                .unwrap_or("");
            if host.ends_with("anthropic.com") {
                Protocol::Anthropic
            } else {
                Protocol::Openai
            }
        }
        explicit => explicit,
    }
}

/// The request URL for a base URL as the design writes them (`…/v1`, or a bare host).
pub fn endpoint(base_url: &str, protocol: Protocol) -> String {
    let base = base_url.trim_end_matches('/');
    let path = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    match protocol {
        Protocol::Anthropic if path.ends_with("/v1") => format!("{base}/messages"),
        Protocol::Anthropic => format!("{base}/v1/messages"),
        _ if path.is_empty() => format!("{base}/v1/chat/completions"),
        _ => format!("{base}/chat/completions"),
    }
}

/// Most attempts of one request.
const MAX_ATTEMPTS: u32 = 5;

/// The HTTP client for either wire format.
pub struct HttpChat {
    protocol: Protocol,
    url: String,
    model: String,
    max_tokens: u32,
    api_key: Secret,
    client: reqwest::Client,
}

impl HttpChat {
    /// A client for `AI.*`.
    pub fn new(ai: &AiConfig) -> Result<Self, LlmError> {
        let protocol = protocol_for(&ai.baseurl, ai.protocol);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(ai.timeout))
            .build()
            .map_err(|e| LlmError {
                kind: "llm_unreachable",
                message: format!("HTTP client: {e}"),
            })?;
        Ok(Self {
            protocol,
            url: endpoint(&ai.baseurl, protocol),
            model: ai.model.clone(),
            max_tokens: 4096,
            api_key: ai.apikey.clone(),
            client,
        })
    }

    fn body(&self, messages: &[Message], tools: Option<&[ToolSpec]>) -> Value {
        match self.protocol {
            Protocol::Anthropic => anthropic_body(&self.model, self.max_tokens, messages, tools),
            _ => openai_body(&self.model, self.max_tokens, messages, tools),
        }
    }

    fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let request = self.client.post(&self.url).json(body);
        match self.protocol {
            Protocol::Anthropic => request
                .header("x-api-key", self.api_key.expose())
                .header("anthropic-version", "2023-06-01"),
            _ => request.bearer_auth(self.api_key.expose()),
        }
    }
}

/// How long to wait before retrying: the server's `Retry-After` (seconds), else
/// exponential backoff from 500 ms, at most 8 s.
fn backoff(attempt: u32, retry_after: Option<&str>) -> Duration {
    retry_after
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(60.0)))
        .unwrap_or_else(|| Duration::from_millis(500u64 << attempt.min(4)))
}

#[async_trait]
impl ChatClient for HttpChat {
    async fn turn(
        &self,
        messages: &[Message],
        tools: Option<&[ToolSpec]>,
        deadline: Instant,
    ) -> Result<Turn, LlmError> {
        let body = self.body(messages, tools);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, retry_after) = match self.request(&body).send().await {
                Ok(response) if response.status().is_success() => {
                    let data: Value = response.json().await.map_err(|e| LlmError {
                        kind: "llm_bad_response",
                        message: format!("AI endpoint {} answered non-JSON: {e}", self.url),
                    })?;
                    return match self.protocol {
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
                    let error = LlmError {
                        kind: "llm_status",
                        message: format!(
                            "AI call failed with status {} at {}: {detail}",
                            status.as_u16(),
                            self.url
                        ),
                    };
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) if e.is_timeout() => (
                    LlmError {
                        kind: "llm_timeout",
                        message: format!("AI call to {} timed out", self.url),
                    },
                    None,
                ),
                Err(e) => (
                    LlmError {
                        kind: "llm_unreachable",
                        message: format!("AI endpoint {} unreachable: {e}", self.url),
                    },
                    None,
                ),
            };
            let wait = backoff(attempt, retry_after.as_deref());
            if attempt >= MAX_ATTEMPTS || Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::info!(attempt, wait_ms = wait.as_millis() as u64, reason = %error, "retrying the AI call");
            tokio::time::sleep(wait).await;
        }
    }
}

fn anthropic_body(
    model: &str,
    max_tokens: u32,
    messages: &[Message],
    tools: Option<&[ToolSpec]>,
) -> Value {
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| match m {
            Message::User(text) => json!({"role": "user", "content": text}),
            Message::Assistant { text, calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for c in calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}));
                }
                json!({"role": "assistant", "content": blocks})
            }
            Message::ToolResults { results, note } => {
                let mut blocks: Vec<Value> = results
                    .iter()
                    .map(|r| json!({"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error}))
                    .collect();
                if let Some(note) = note {
                    blocks.push(json!({"type": "text", "text": note}));
                }
                json!({"role": "user", "content": blocks})
            }
        })
        .collect();
    let mut body = json!({"model": model, "max_tokens": max_tokens, "messages": messages});
    if let Some(tools) = tools.filter(|t| !t.is_empty()) {
        body["tools"] = tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect();
    }
    body
}

fn openai_body(
    model: &str,
    max_tokens: u32,
    messages: &[Message],
    tools: Option<&[ToolSpec]>,
) -> Value {
    let mut out = Vec::new();
    for m in messages {
        match m {
            Message::User(text) => out.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, calls } => {
                let mut msg = json!({"role": "assistant", "content": text});
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
                out.extend(results.iter().map(
                    |r| json!({"role": "tool", "tool_call_id": r.call_id, "content": r.content}),
                ));
                if let Some(note) = note {
                    out.push(json!({"role": "user", "content": note}));
                }
            }
        }
    }
    let mut body = json!({"model": model, "max_tokens": max_tokens, "messages": out});
    if let Some(tools) = tools.filter(|t| !t.is_empty()) {
        body["tools"] = tools
            .iter()
            .map(|t| json!({"type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
            .collect();
    }
    body
}

fn bad(message: &str) -> LlmError {
    LlmError {
        kind: "llm_bad_response",
        message: message.to_owned(),
    }
}

fn parse_anthropic(data: &Value) -> Result<Turn, LlmError> {
    let blocks = data["content"]
        .as_array()
        .ok_or_else(|| bad("AI answer has no content blocks"))?;
    let mut turn = Turn {
        input_tokens: data["usage"]["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: data["usage"]["output_tokens"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => turn.text.push_str(block["text"].as_str().unwrap_or("")),
            Some("tool_use") => turn.calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or("").to_owned(),
                name: block["name"].as_str().unwrap_or("").to_owned(),
                arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            _ => {}
        }
    }
    Ok(turn)
}

fn parse_openai(data: &Value) -> Result<Turn, LlmError> {
    let message = data["choices"]
        .get(0)
        .map(|c| &c["message"])
        .ok_or_else(|| bad("AI answer has no choices[0].message"))?;
    let mut turn = Turn {
        text: message["content"].as_str().unwrap_or("").to_owned(),
        input_tokens: data["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: data["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let raw = &call["function"]["arguments"];
        let arguments = match raw {
            Value::String(s) => {
                serde_json::from_str(s).unwrap_or_else(|_| json!({"_unparsed_arguments": s}))
            }
            Value::Object(_) => raw.clone(),
            _ => json!({}),
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

    #[test]
    fn the_designs_providers_map_to_their_endpoints() {
        let cases = [
            (
                "https://api.openai.com/v1",
                Protocol::Openai,
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.anthropic.com/v1",
                Protocol::Anthropic,
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://api.anthropic.com",
                Protocol::Anthropic,
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://dashscope.aliyuncs.com/compatible-mode/v1",
                Protocol::Openai,
                "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
            ),
            (
                "https://api-inference.modelscope.cn",
                Protocol::Openai,
                "https://api-inference.modelscope.cn/v1/chat/completions",
            ),
            (
                "http://localhost:11434/v1/",
                Protocol::Openai,
                "http://localhost:11434/v1/chat/completions",
            ),
        ];
        for (base, protocol, url) in cases {
            assert_eq!(protocol_for(base, Protocol::Auto), protocol, "{base}");
            assert_eq!(endpoint(base, protocol), url, "{base}");
        }
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        assert_eq!(backoff(1, Some("2")), Duration::from_secs(2));
        assert_eq!(backoff(1, None), Duration::from_millis(1000));
        assert_eq!(backoff(9, Some("soon")), Duration::from_millis(8000));
    }

    #[test]
    fn both_formats_round_trip_a_tool_conversation() {
        let call = ToolCall {
            id: "c1".into(),
            name: "execute_query".into(),
            arguments: json!({"query": "up"}),
        };
        let messages = vec![
            Message::User("hi".into()),
            Message::Assistant {
                text: String::new(),
                calls: vec![call.clone()],
            },
            Message::ToolResults {
                results: vec![ToolOutput {
                    call_id: "c1".into(),
                    content: "1".into(),
                    is_error: false,
                }],
                note: None,
            },
        ];
        let a = anthropic_body("m", 10, &messages, None);
        assert_eq!(
            a["messages"][1]["content"][0]["input"],
            json!({"query": "up"})
        );
        assert_eq!(a["messages"][2]["content"][0]["tool_use_id"], "c1");
        assert!(a.get("tools").is_none());
        let o = openai_body("m", 10, &messages, None);
        assert_eq!(
            o["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"query\":\"up\"}"
        );
        assert_eq!(o["messages"][2]["role"], "tool");

        let reply = json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "x", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}});
        let turn = parse_openai(&reply).unwrap();
        assert_eq!(
            (
                turn.calls[0].arguments.clone(),
                turn.input_tokens,
                turn.output_tokens
            ),
            (json!({"a": 1}), 7, 3)
        );
        let reply = json!({"content": [{"type": "text", "text": "ok"}], "usage": {"input_tokens": 5, "output_tokens": 2}});
        assert_eq!(parse_anthropic(&reply).unwrap().text, "ok");
    }
}
