//! The one fake: a scripted LLM speaking both wire formats, Anthropic Messages and
//! OpenAI-compatible chat completions, as five providers at once (one path prefix each).
//! It records every request so tests can see what the runner sent.
//!
//! It rejects what the real providers reject: each request is checked against the rules
//! the providers document, and a request that breaks one is answered with that provider's
//! real error status and body (quoted from its API responses), so a request the real API
//! would refuse fails a test here. The rule is cited next to each check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Which provider a route plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI's own API (`/openai/v1/chat/completions`).
    OpenAi,
    /// DashScope compatible mode (`/dashscope/compatible-mode/v1/chat/completions`).
    DashScope,
    /// ModelScope API-Inference, whose design URL is a bare host: a listener of its own
    /// (`/v1/chat/completions`).
    ModelScope,
    /// A local OpenAI-compatible server of no named kind (`/v1/chat/completions`).
    Local,
    /// vLLM (`/vllm/v1/chat/completions`), with a context of [`SERVER_CONTEXT`] tokens.
    Vllm,
    /// llama.cpp's server (`/llamacpp/v1/chat/completions`), [`SERVER_CONTEXT`] tokens.
    LlamaCpp,
    /// SGLang (`/sglang/v1/chat/completions`), [`SERVER_CONTEXT`] tokens.
    SgLang,
    /// Ollama's OpenAI-compatible API (`/ollama/v1/chat/completions`): it ignores
    /// `tool_choice` and fields it does not know, and drops the start of a prompt longer
    /// than its context.
    Ollama,
}

/// The context of the self-hosted servers the fake plays, in its own token count
/// ([`tokens`]).
pub const SERVER_CONTEXT: usize = 16384;

impl Provider {
    /// `AI.Provider` for this provider (the fake's host is 127.0.0.1, so it is named).
    pub fn setting(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::DashScope => "dashscope",
            Provider::ModelScope => "modelscope",
            Provider::Local => "auto",
            Provider::Vllm => "vllm",
            Provider::LlamaCpp => "llamacpp",
            Provider::SgLang => "sglang",
            Provider::Ollama => "ollama",
        }
    }

    fn self_hosted(self) -> bool {
        matches!(
            self,
            Provider::Vllm | Provider::LlamaCpp | Provider::SgLang | Provider::Ollama
        )
    }
}

/// How the fake answers.
#[derive(Clone, Debug)]
pub enum Script {
    /// Ask for `execute_query(query)`, then answer with a report quoting the tool result.
    ToolThenReport { query: String },
    /// Answer with this status and a body that echoes the credential it was sent.
    Status(u16),
    /// Never answer.
    Hang,
    /// While tool use is allowed, always ask for one more `execute_query`.
    ToolLoop,
    /// Answer in prose, with no JSON at all.
    Prose,
    /// Answer in prose first, then (asked for the object alone) with a report.
    ProseThenReport,
    /// Ask for every query at once in one turn, then answer quoting all the results.
    Parallel(Vec<String>),
    /// Answer the first request `429` with `Retry-After: 1` (seconds), then as
    /// `ToolThenReport`.
    RateLimitedOnce { query: String },
    /// Answer the first request Anthropic's `529 overloaded_error` with `Retry-After` as an
    /// HTTP date two seconds ahead, then as `ToolThenReport`.
    OverloadedOnce { query: String },
    /// One tool call, then this status.
    ToolThenStatus { query: String, status: u16 },
    /// A model that ignores `tool_choice: none` and keeps calling tools; on a step where
    /// tools are forbidden its text holds the report when `report` is set.
    IgnoresToolChoice { report: bool },
    /// Ask for `execute_range_query` of `query` over the last 30 minutes (step 15 s), then
    /// answer with a report quoting the tool result.
    RangeThenReport { query: String },
    /// Answers at once with a report whose `promQL` are these queries.
    ReportWithQueries(Vec<String>),
    /// Answers at once with a report of this content.
    ReportWithContent(String),
    /// Answers with a report of `LONG_ANSWER_CHARS` tokens the first `times` times, then a
    /// short one. An answer longer than the request's token limit is cut at it, with the
    /// provider's stop reason.
    Long { times: usize },
    /// Calls these tools, one a turn while tools are allowed, then answers with a report
    /// quoting the last result.
    Calls(Vec<(String, Value)>),
    /// Answers the first `times` requests with this status, then as `ToolThenReport`.
    StatusThenReport {
        status: u16,
        times: usize,
        query: String,
    },
    /// Answers with a real model's recorded answers (`tests/fixtures/llm/`), one a
    /// request, in order, the last one again past the end. OpenAI's format only.
    Replay(Vec<Value>),
}

/// The answers of a transcript in `tests/fixtures/llm/`, for [`Script::Replay`].
pub fn transcript(name: &str) -> Vec<Value> {
    let path = crate::servers::repo().join("tests/fixtures/llm").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Value = serde_json::from_str(&text).unwrap();
    for field in ["model", "server", "date"] {
        assert!(
            fixture[field].is_string(),
            "{name} says where it came from: {field}"
        );
    }
    fixture["answers"].as_array().cloned().unwrap()
}

/// Tokens (here: characters) of a `Script::Long` answer.
pub const LONG_ANSWER_CHARS: usize = 3000;

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `anthropic` or `openai`.
    pub format: &'static str,
    /// The provider the route plays.
    pub provider: Provider,
    /// The credential header (`x-api-key`, or `authorization` without `Bearer `).
    pub credential: String,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The error the fake answered, when the request broke a provider rule.
    pub rejected: Option<String>,
}

impl Seen {
    /// The text of the first message (the prompt), sent as a string or as text blocks.
    pub fn prompt(&self) -> String {
        blocks(&self.body["messages"][0])
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect()
    }
}

#[derive(Clone)]
struct Fake {
    script: Script,
    delay: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A running fake LLM.
pub struct FakeLlm {
    /// Base URL as configured in `AI.BaseURL` for Anthropic and the local server (ends in
    /// `/v1`).
    pub base_url: String,
    address: String,
    modelscope: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _servers: [tokio::task::JoinHandle<()>; 2],
}

impl FakeLlm {
    /// Starts a fake that follows `script` and waits `delay` before every answer.
    pub async fn start(script: Script, delay: Duration) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            script,
            delay,
            seen: Arc::clone(&seen),
        };
        let app = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1/chat/completions", post(local))
            .route("/openai/v1/chat/completions", post(openai))
            .route(
                "/dashscope/compatible-mode/v1/chat/completions",
                post(dashscope),
            )
            .route("/vllm/v1/chat/completions", post(vllm))
            .route("/llamacpp/v1/chat/completions", post(llamacpp))
            .route("/sglang/v1/chat/completions", post(sglang))
            .route("/ollama/v1/chat/completions", post(ollama))
            .with_state(fake.clone());
        let bare_host = Router::new()
            .route("/v1/chat/completions", post(modelscope))
            .with_state(fake);
        let (address, main) = serve(app).await;
        let (modelscope, second) = serve(bare_host).await;
        Self {
            base_url: format!("{address}/v1"),
            address,
            modelscope,
            seen,
            _servers: [main, second],
        }
    }

    /// `AI.BaseURL` for a provider, written as the design writes that provider's.
    pub fn base_url_for(&self, provider: Provider) -> String {
        let a = &self.address;
        match provider {
            Provider::Anthropic | Provider::Local => format!("{a}/v1"),
            Provider::OpenAi => format!("{a}/openai/v1"),
            Provider::DashScope => format!("{a}/dashscope/compatible-mode/v1"),
            Provider::ModelScope => self.modelscope.clone(),
            Provider::Vllm => format!("{a}/vllm/v1"),
            Provider::LlamaCpp => format!("{a}/llamacpp/v1"),
            Provider::SgLang => format!("{a}/sglang/v1"),
            Provider::Ollama => format!("{a}/ollama/v1"),
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves a router on a port of its own: its `http://127.0.0.1:PORT`.
async fn serve(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, server)
}

// ---------------------------------------------------------------------------------------
// Anthropic's rules (https://docs.anthropic.com/en/api/messages and the tool-use guide).

/// A rejected request: the provider's status and error body.
pub type Rejection = (StatusCode, Value);

/// Anthropic's error body.
fn anthropic_error(status: StatusCode, kind: &str, message: String) -> (StatusCode, Value) {
    (
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn anthropic_invalid(message: String) -> (StatusCode, Value) {
    anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn blocks(message: &Value) -> Vec<Value> {
    match &message["content"] {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    }
}

fn ids_of(blocks: &[Value], kind: &str, field: &str) -> Vec<String> {
    blocks
        .iter()
        .filter(|b| b["type"] == kind)
        .map(|b| b[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The Messages API's request fields; any other is refused ("Extra inputs are not
/// permitted"), so a parameter meant for another provider cannot slip through.
const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
];

/// OpenAI's chat completions request fields; its own API refuses any other
/// ("Unrecognized request argument supplied"). The compatible servers accept extras.
const OPENAI_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "response_format",
    "service_tier",
    "store",
    "metadata",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    "functions",
    "function_call",
];

/// The first field of the body that is not in `known`.
fn unknown_field<'a>(body: &'a Value, known: &[&str]) -> Option<&'a str> {
    body.as_object()?
        .keys()
        .map(String::as_str)
        .find(|k| !known.contains(k))
}

pub fn check_anthropic(body: &Value) -> Result<(), Rejection> {
    if let Some(field) = unknown_field(body, ANTHROPIC_FIELDS) {
        return Err(anthropic_invalid(format!(
            "{field}: Extra inputs are not permitted"
        )));
    }
    // `max_tokens` is a required parameter.
    if body["max_tokens"].as_u64().is_none_or(|n| n < 1) {
        return Err(anthropic_invalid("max_tokens: Field required".into()));
    }
    let Some(raw) = body["messages"].as_array() else {
        return Err(anthropic_invalid("messages: Field required".into()));
    };
    // "Consecutive user or assistant turns in your request will be combined into a single
    // turn."
    let mut turns: Vec<(String, Vec<Value>, bool)> = Vec::new();
    for m in raw {
        let role = m["role"].as_str().unwrap_or_default().to_owned();
        let empty_string = m["content"].as_str().is_some_and(str::is_empty);
        let content = if empty_string { Vec::new() } else { blocks(m) };
        match turns.last_mut() {
            Some((last, existing, was_empty)) if *last == role => {
                existing.extend(content);
                *was_empty |= empty_string;
            }
            _ => turns.push((role, content, empty_string)),
        }
    }
    if turns.first().is_some_and(|(role, _, _)| role != "user") {
        return Err(anthropic_invalid(
            "messages: first message must use the \"user\" role".into(),
        ));
    }
    let tools_declared = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let last_index = turns.len().saturating_sub(1);
    for (i, (role, content, empty_string)) in turns.iter().enumerate() {
        // "all messages must have non-empty content except for the optional final
        // assistant message"
        let final_assistant = i == last_index && role == "assistant";
        if (content.is_empty() || *empty_string) && !final_assistant {
            return Err(anthropic_invalid(format!(
                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            )));
        }
        if content
            .iter()
            .any(|b| b["type"] == "text" && b["text"].as_str().is_none_or(str::is_empty))
        {
            return Err(anthropic_invalid(
                "messages: text content blocks must be non-empty".into(),
            ));
        }
        let has_tool_blocks = content
            .iter()
            .any(|b| b["type"] == "tool_use" || b["type"] == "tool_result");
        if has_tool_blocks && !tools_declared {
            return Err(anthropic_invalid(
                "Requests which include `tool_use` or `tool_result` blocks must define tools."
                    .into(),
            ));
        }
        // Each tool_result answers a tool_use of the message just before it.
        let results = ids_of(content, "tool_result", "tool_use_id");
        if !results.is_empty() {
            let previous = i
                .checked_sub(1)
                .map(|p| ids_of(&turns[p].1, "tool_use", "id"))
                .unwrap_or_default();
            if let Some((j, id)) = results
                .iter()
                .enumerate()
                .find(|(_, id)| !previous.contains(id))
            {
                return Err(anthropic_invalid(format!(
                    "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                     Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                )));
            }
        }
        // Every tool_use is answered by tool_result blocks at the start of the next message.
        let uses = ids_of(content, "tool_use", "id");
        if !uses.is_empty() {
            let leading: Vec<String> = turns
                .get(i + 1)
                .map(|(_, next, _)| {
                    next.iter()
                        .take_while(|b| b["type"] == "tool_result")
                        .map(|b| b["tool_use_id"].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let missing: Vec<&str> = uses
                .iter()
                .filter(|id| !leading.contains(id))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(anthropic_invalid(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. \
                     Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                )));
            }
        }
    }
    // A forced tool is one of the tools, and not with extended thinking ("Thinking may
    // not be enabled when tool_choice forces tool use.").
    if body["tool_choice"]["type"] == "tool" {
        let name = body["tool_choice"]["name"].as_str().unwrap_or_default();
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str())
            .collect();
        if !tools.contains(&name) {
            return Err(anthropic_invalid(format!(
                "tool_choice.name: Tool '{name}' not found in tools"
            )));
        }
        if body["thinking"]["type"] == "enabled" {
            return Err(anthropic_invalid(
                "Thinking may not be enabled when tool_choice forces tool use.".into(),
            ));
        }
    }
    // `tool_choice.type` is one of auto, any, tool, none.
    if let Some(choice) = body.get("tool_choice") {
        if !["auto", "any", "tool", "none"].contains(&choice["type"].as_str().unwrap_or("")) {
            return Err(anthropic_invalid(format!(
                "tool_choice: Input tag '{}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
                choice["type"].as_str().unwrap_or("")
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// OpenAI-compatible rules (https://platform.openai.com/docs/api-reference/chat/create,
// and DashScope's and ModelScope's compatible-mode documents).

/// OpenAI's error body.
fn openai_invalid(message: String, param: Value, code: Value) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}),
    )
}

/// The model's own name, without a `vendor/` prefix, lowercased.
fn model_name(body: &Value) -> String {
    let model = body["model"].as_str().unwrap_or_default();
    model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase()
}

pub fn check_openai(provider: Provider, body: &Value) -> Result<(), Rejection> {
    if provider == Provider::OpenAi {
        if let Some(field) = unknown_field(body, OPENAI_FIELDS) {
            return Err(openai_invalid(
                format!("Unrecognized request argument supplied: {field}"),
                Value::Null,
                Value::Null,
            ));
        }
    }
    let Some(messages) = body["messages"].as_array() else {
        return Err(openai_invalid(
            "Missing required parameter: 'messages'.".into(),
            "messages".into(),
            "missing_required_parameter".into(),
        ));
    };
    // The tool_call ids of the last assistant message with tool_calls, still unanswered,
    // and all of its ids (a tool message may only answer those).
    let mut pending: Vec<String> = Vec::new();
    let mut answerable: Vec<String> = Vec::new();
    let mut asked_at = 0;
    let unanswered = |pending: &[String], at: usize| {
        openai_invalid(
            format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each \
                 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                pending.join(", ")
            ),
            format!("messages.[{at}].role").into(),
            Value::Null,
        )
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if role == "tool" {
            // "messages with role 'tool' must be a response to a preceeding message with
            // 'tool_calls'" (OpenAI's spelling).
            let id = m["tool_call_id"].as_str().unwrap_or_default().to_owned();
            if !answerable.contains(&id) {
                return Err(openai_invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".into(),
                    format!("messages.[{i}].role").into(),
                    Value::Null,
                ));
            }
            pending.retain(|p| *p != id);
            continue;
        }
        if !pending.is_empty() {
            return Err(unanswered(&pending, asked_at));
        }
        answerable.clear();
        if role == "assistant" {
            let calls: Vec<String> = m["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
                .collect();
            // `content` is "Required unless tool_calls or function_call is specified."
            if calls.is_empty() && !m["content"].is_string() {
                return Err(openai_invalid(
                    "Invalid value for 'content': expected a string, got null.".into(),
                    format!("messages.[{i}].content").into(),
                    Value::Null,
                ));
            }
            pending = calls.clone();
            answerable = calls;
            asked_at = i;
        }
    }
    if !pending.is_empty() {
        return Err(unanswered(&pending, asked_at));
    }
    let tools_declared = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if body.get("tool_choice").is_some() && !tools_declared {
        return Err(openai_invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.".into(),
            "tool_choice".into(),
            Value::Null,
        ));
    }
    let model = model_name(body);
    // OpenAI's reasoning models (o-series, gpt-5) reject the deprecated `max_tokens`.
    let reasoning = model.starts_with("gpt-5")
        || (model.starts_with('o') && model[1..].starts_with(|c: char| c.is_ascii_digit()));
    if provider == Provider::OpenAi && reasoning && body.get("max_tokens").is_some() {
        return Err(openai_invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.".into(),
            "max_tokens".into(),
            "unsupported_parameter".into(),
        ));
    }
    // Qwen3 models think by default; DashScope and ModelScope refuse thinking without
    // streaming.
    let streaming = body["stream"] == true;
    if matches!(provider, Provider::DashScope | Provider::ModelScope)
        && model.starts_with("qwen3")
        && !streaming
        && body["enable_thinking"] != false
    {
        return Err((
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "invalid_parameter_error", "param": null,
                "message": "parameter.enable_thinking must be set to false for non-streaming calls",
                "type": "invalid_request_error"},
                "id": "chatcmpl-fake", "request_id": "fake-request"}),
        ));
    }
    check_response_format(provider, body)?;
    check_context(provider, body)
}

/// `response_format`, by each provider's rules.
fn check_response_format(provider: Provider, body: &Value) -> Result<(), Rejection> {
    let Some(format) = body.get("response_format") else {
        return Ok(());
    };
    let kind = format["type"].as_str().unwrap_or_default();
    let mentions_json = body["messages"]
        .to_string()
        .to_ascii_lowercase()
        .contains("json");
    match provider {
        // Ollama ignores what it does not support.
        Provider::Ollama | Provider::Local => Ok(()),
        // "response_format type must be one of \"text\" or \"json_object\"" (llama.cpp's
        // server also takes json_schema).
        Provider::LlamaCpp if !["text", "json_object", "json_schema"].contains(&kind) => Err((
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": 400, "type": "invalid_request_error", "message":
                format!("response_format type must be one of \"text\" or \"json_object\", but got: {kind}")}}),
        )),
        // Qwen on DashScope needs the word in the messages for either JSON form.
        Provider::DashScope if kind != "text" && !mentions_json => Err((
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "invalid_parameter_error", "param": null,
                "message": "<400> InternalError.Algo.InvalidParameter: 'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                "type": "invalid_request_error"}, "id": "chatcmpl-fake", "request_id": "fake-request"}),
        )),
        Provider::OpenAi if !["text", "json_object", "json_schema"].contains(&kind) => {
            Err(openai_invalid(
                format!("Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'."),
                "response_format.type".into(),
                "invalid_value".into(),
            ))
        }
        Provider::OpenAi if kind == "json_object" && !mentions_json => Err(openai_invalid(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.".into(),
            "messages".into(),
            Value::Null,
        )),
        // Structured outputs' strict mode: every object closed and all its keys required.
        Provider::OpenAi if kind == "json_schema" && format["json_schema"]["strict"] == true => {
            let name = format["json_schema"]["name"].as_str().unwrap_or_default();
            match strict_problem(&format["json_schema"]["schema"], &mut Vec::new()) {
                Some(problem) => Err(openai_invalid(
                    format!("Invalid schema for response_format '{name}': {problem}"),
                    "response_format".into(),
                    Value::Null,
                )),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// What OpenAI's strict mode refuses in a schema, in its words.
fn strict_problem(schema: &Value, path: &mut Vec<String>) -> Option<String> {
    let context = format!(
        "In context=({})",
        path.iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if schema["type"] == "object" {
        if schema["additionalProperties"] != false {
            return Some(format!(
                "{context}, 'additionalProperties' is required to be supplied and to be false."
            ));
        }
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (key, property) in schema["properties"].as_object().into_iter().flatten() {
            if !required.contains(&key.as_str()) {
                return Some(format!(
                    "{context}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{key}'."
                ));
            }
            path.extend(["properties".to_owned(), key.clone()]);
            let inner = strict_problem(property, path);
            path.truncate(path.len() - 2);
            if inner.is_some() {
                return inner;
            }
        }
    }
    if schema["type"] == "array" {
        path.push("items".into());
        let inner = strict_problem(&schema["items"], path);
        path.pop();
        return inner;
    }
    None
}

/// The fake's token count of a request (about four ASCII characters or 1.5 Chinese ones a
/// token, as Qwen's tokenizer counts them), four a message.
pub fn tokens(body: &Value) -> usize {
    let count = |text: &str| {
        let other = text.chars().filter(|c| !c.is_ascii()).count();
        let ascii = text.chars().count() - other;
        (other * 2).div_ceil(3) + ascii.div_ceil(4)
    };
    let messages: usize = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            4 + match &m["content"] {
                Value::String(s) => count(s),
                Value::Null => 0,
                other => count(&other.to_string()),
            } + m["tool_calls"]
                .as_array()
                .map_or(0, |c| count(&Value::Array(c.clone()).to_string()))
        })
        .sum();
    messages + count(&body["tools"].to_string())
}

/// A self-hosted server refuses a request longer than its context, in its own words
/// (Ollama does not: it drops the prompt's start, see `chat_completions`).
fn check_context(provider: Provider, body: &Value) -> Result<(), Rejection> {
    if !provider.self_hosted() || provider == Provider::Ollama {
        return Ok(());
    }
    let input = tokens(body);
    let max = body["max_tokens"].as_u64().unwrap_or(0) as usize;
    let ctx = SERVER_CONTEXT;
    let bad = |body: Value| Err((StatusCode::BAD_REQUEST, body));
    match provider {
        Provider::Vllm if input > ctx => bad(json!({"error": {"message": format!(
            "This model's maximum context length is {ctx} tokens. However, your request has {input} input tokens. Please reduce the length of the input messages. None"),
            "type": "BadRequestError", "param": null, "code": 400}})),
        Provider::Vllm if input + max > ctx => bad(json!({"error": {"message": format!(
            "'max_tokens' or 'max_completion_tokens' is too large: {max}. This model's maximum context length is {ctx} tokens and your request has {input} input tokens ({max} > {ctx} - {input}). None"),
            "type": "BadRequestError", "param": null, "code": 400}})),
        Provider::LlamaCpp if input > ctx => bad(json!({"error": {"code": 400, "message": format!(
            "request ({input} tokens) exceeds the available context size ({ctx} tokens), try increasing it"),
            "type": "exceed_context_size_error", "n_prompt_tokens": input, "n_ctx": ctx}})),
        Provider::SgLang if input > ctx => bad(json!({"object": "error", "message": format!(
            "Input length ({input} tokens) exceeds the maximum allowed length ({ctx} tokens). Use a shorter input or enable --allow-auto-truncate."),
            "type": "BadRequestError", "param": null, "code": 400})),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// The script.

/// What the request allows and holds.
struct Request {
    /// Tools are declared and `tool_choice` does not forbid them.
    may_call: bool,
    /// Tools are declared (a model that ignores `tool_choice` may still call them).
    declared: bool,
    /// Every tool result in the conversation, joined.
    tool_results: Option<String>,
    /// 1 for the first request this fake received.
    nth: usize,
}

/// What the next answer should be.
enum Step {
    CallTools(Vec<String>),
    CallTool {
        tool: String,
        arguments: Value,
        text: String,
    },
    Answer(String),
    Fail(u16),
    Retry {
        status: u16,
        retry_after: String,
    },
    Hang,
}

fn decide(script: &Script, r: &Request) -> Step {
    let tool_then_report = |query: &str| match &r.tool_results {
        None if r.may_call => Step::CallTool {
            tool: "execute_query".into(),
            arguments: json!({"query": query}),
            text: "先查询指标。".into(),
        },
        None => Step::Answer(report(query, "no tools were offered")),
        Some(result) => Step::Answer(report(query, result)),
    };
    match script {
        // Recorded answers are OpenAI's: the Anthropic route has none to give.
        Script::Replay(_) => Step::Fail(400),
        Script::RateLimitedOnce { .. } if r.nth == 1 => Step::Retry {
            status: 429,
            retry_after: "1".into(),
        },
        Script::OverloadedOnce { .. } if r.nth == 1 => Step::Retry {
            status: 529,
            retry_after: (chrono::Utc::now() + chrono::Duration::seconds(2))
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        },
        Script::RateLimitedOnce { query } | Script::OverloadedOnce { query } => {
            tool_then_report(query)
        }
        Script::ToolThenReport { query } => tool_then_report(query),
        Script::ToolThenStatus { query, status } => match r.tool_results {
            None => tool_then_report(query),
            Some(_) => Step::Fail(*status),
        },
        Script::Parallel(queries) => match &r.tool_results {
            None if r.may_call => Step::CallTools(queries.clone()),
            None => Step::Answer(report(&queries[0], "no tools were offered")),
            Some(results) => Step::Answer(report(&queries[0], results)),
        },
        Script::Status(code) => Step::Fail(*code),
        Script::Hang => Step::Hang,
        Script::Prose => Step::Answer("我认为是 CPU 太高了，建议重启。".into()),
        Script::ProseThenReport if r.nth == 1 => {
            Step::Answer("我认为是 CPU 太高了，建议重启。".into())
        }
        Script::ProseThenReport => Step::Answer(report("up", "按要求只输出 JSON")),
        Script::ToolLoop if r.may_call => Step::CallTool {
            tool: "execute_query".into(),
            arguments: json!({"query": "up"}),
            text: "先查询指标。".into(),
        },
        Script::ToolLoop => Step::Answer(report("up", "the step limit forced this answer")),
        Script::IgnoresToolChoice {
            report: with_report,
        } if r.declared => Step::CallTool {
            tool: "execute_query".into(),
            arguments: json!({"query": "up"}),
            text: if *with_report && !r.may_call {
                report("up", "answered while still asking for tools")
            } else {
                "再查一下 up。".into()
            },
        },
        Script::IgnoresToolChoice { .. } => Step::Answer(report("up", "no tools declared")),
        Script::RangeThenReport { query } => match &r.tool_results {
            None if r.may_call => {
                let end = chrono::Utc::now();
                let start = end - chrono::Duration::minutes(30);
                Step::CallTool {
                    tool: "execute_range_query".into(),
                    arguments: json!({"query": query, "start": start.to_rfc3339(),
                        "end": end.to_rfc3339(), "step": "15s"}),
                    text: "先看最近 30 分钟的趋势。".into(),
                }
            }
            None => Step::Answer(report(query, "no tools were offered")),
            Some(result) => Step::Answer(report(query, result)),
        },
        Script::Long { times } if r.nth <= *times => {
            Step::Answer(report("up", &"详".repeat(LONG_ANSWER_CHARS)))
        }
        Script::Long { .. } => Step::Answer(report("up", "简短的结论")),
        Script::StatusThenReport { status, times, .. } if r.nth <= *times => Step::Fail(*status),
        Script::StatusThenReport { query, .. } => tool_then_report(query),
        Script::Calls(calls) => match calls.get(r.nth - 1) {
            Some((tool, arguments)) if r.may_call => Step::CallTool {
                tool: tool.clone(),
                arguments: arguments.clone(),
                text: "调用工具。".into(),
            },
            _ => Step::Answer(report("up", r.tool_results.as_deref().unwrap_or("none"))),
        },
        Script::ReportWithContent(content) => {
            Step::Answer(json!({"promQL": ["up"], "content": content}).to_string())
        }
        Script::ReportWithQueries(queries) => Step::Answer(
            json!({"promQL": queries, "content": "【问题概述】\nx\n【根因分析】\ny\n【影响范围】\nz\n【解决方案】\nw"})
                .to_string(),
        ),
    }
}

fn report(query: &str, evidence: &str) -> String {
    let snippet: String = evidence.chars().take(LONG_ANSWER_CHARS).collect();
    json!({
        "promQL": [query],
        "content": format!("【问题概述】\nweb-1 告警\n【根因分析】\n工具返回：{snippet}\n【影响范围】\nweb-1\n【解决方案】\n回滚发布"),
    })
    .to_string()
}

/// What a model held to a JSON form writes: the object it meant, or its prose as the
/// content. Held to the report's schema, whose `content` is an object of the four
/// sections, it writes its text under each heading (a heading it did not write gets an
/// empty text: the grammar makes it write every key).
fn as_object(text: String, schema: &Value) -> Value {
    let mut report = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"promQL": [], "content": text}),
    };
    if schema["properties"]["content"]["type"] == "object" {
        if let Some(content) = report["content"].as_str() {
            report["content"] = by_heading(content);
        }
    }
    report
}

/// A content string as the schema's object: each section's text under its heading; text
/// before the first heading goes under the first.
fn by_heading(content: &str) -> Value {
    use deploy_diagnosis::runner::extract::SECTIONS;
    let mut starts: Vec<(usize, &str)> = SECTIONS
        .iter()
        .filter_map(|h| content.find(h).map(|at| (at, *h)))
        .collect();
    starts.sort_unstable();
    let mut sections = serde_json::Map::new();
    for heading in SECTIONS {
        sections.insert(heading.into(), json!(""));
    }
    let first_at = starts.first().map_or(content.len(), |(at, _)| *at);
    let mut lead = content[..first_at].trim().to_owned();
    for (i, (at, heading)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(content.len(), |(next, _)| *next);
        let mut text = content[at + heading.len()..end].trim().to_owned();
        if i == 0 && !lead.is_empty() {
            text = format!("{lead}\n{text}");
            lead.clear();
        }
        sections.insert((*heading).into(), json!(text));
    }
    if !lead.is_empty() {
        sections.insert(SECTIONS[0].into(), json!(lead));
    }
    Value::Object(sections)
}

/// An answer longer than the request's token limit (one character, one token) is cut.
fn cut(text: String, limit: Option<u64>) -> (String, bool) {
    match limit {
        Some(limit) if text.chars().count() as u64 > limit => {
            (text.chars().take(limit as usize).collect(), true)
        }
        _ => (text, false),
    }
}

async fn record(
    fake: &Fake,
    format: &'static str,
    provider: Provider,
    headers: &HeaderMap,
    body: &Value,
    rejected: Option<String>,
) -> (String, usize) {
    let credential = headers
        .get("x-api-key")
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_owned())
        .unwrap_or_default();
    let nth = {
        let mut seen = fake.seen.lock().unwrap();
        seen.push(Seen {
            format,
            provider,
            credential: credential.clone(),
            body: body.clone(),
            at: std::time::Instant::now(),
            rejected,
        });
        seen.len()
    };
    tokio::time::sleep(fake.delay).await;
    (credential, nth)
}

fn failure(code: u16, credential: &str) -> Response {
    // A careless provider echoing the key back: the service must not store it.
    let body = json!({"error": {"message": format!("upstream exploded for key {credential}"), "type": "server_error"}});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn retry(status: u16, retry_after: String) -> Response {
    let body = if status == 529 {
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    } else {
        json!({"error": {"type": "rate_limit_error", "message": "slow down"}})
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [("retry-after", retry_after)],
        Json(body),
    )
        .into_response()
}

async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::GATEWAY_TIMEOUT.into_response()
}

// ---------------------------------------------------------------------------------------
// The routes.

async fn local(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::Local, state, headers, body).await
}

async fn openai(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::OpenAi, state, headers, body).await
}

async fn dashscope(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::DashScope, state, headers, body).await
}

async fn modelscope(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::ModelScope, state, headers, body).await
}

async fn vllm(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::Vllm, state, headers, body).await
}

async fn llamacpp(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::LlamaCpp, state, headers, body).await
}

async fn sglang(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::SgLang, state, headers, body).await
}

async fn ollama(state: State<Fake>, headers: HeaderMap, body: Json<Value>) -> Response {
    chat_completions(Provider::Ollama, state, headers, body).await
}

async fn chat_completions(
    provider: Provider,
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let checked = check_openai(provider, &body);
    let rejected = checked.as_ref().err().map(|(_, b)| b.to_string());
    let (credential, nth) = record(&fake, "openai", provider, &headers, &body, rejected).await;
    if let Err((status, error)) = checked {
        return (status, Json(error)).into_response();
    }
    let declared = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let tool_results: Vec<String> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    let request = Request {
        // Ollama's OpenAI API ignores `tool_choice`: declared tools may be called.
        may_call: declared && (provider == Provider::Ollama || body["tool_choice"] != "none"),
        declared,
        tool_results: (!tool_results.is_empty()).then(|| tool_results.join("\n---\n")),
        nth,
    };
    // Ollama knows `max_tokens` only; an unknown field is ignored.
    let limit = match provider {
        Provider::Ollama => body["max_tokens"].as_u64(),
        _ => body["max_completion_tokens"]
            .as_u64()
            .or(body["max_tokens"].as_u64()),
    };
    // Ollama keeps the end of a prompt longer than its context: the instructions are
    // gone, and the model chats.
    let truncated = provider == Provider::Ollama && tokens(&body) > SERVER_CONTEXT;
    let constrained = matches!(
        body["response_format"]["type"].as_str(),
        Some("json_object" | "json_schema")
    );
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120});
    if let Script::Replay(answers) = &fake.script {
        let recorded = &answers[(nth - 1).min(answers.len() - 1)];
        return Json(json!({
            "id": "chatcmpl-replay", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": recorded["message"], "finish_reason": recorded["finish_reason"]}],
            "usage": recorded["usage"],
        }))
        .into_response();
    }
    let step = if truncated {
        Step::Answer("你好！请问有什么可以帮您？".into())
    } else {
        decide(&fake.script, &request)
    };
    let (message, finish) = match step {
        Step::Fail(code) => return failure(code, &credential),
        Step::Retry {
            status,
            retry_after,
        } => return retry(status, retry_after),
        Step::Hang => return hang().await,
        Step::CallTools(queries) => (
            json!({
                "role": "assistant", "content": null,
                "tool_calls": queries.iter().enumerate().map(|(i, q)| json!({"id": format!("call_p{i}"), "type": "function",
                    "function": {"name": "execute_query", "arguments": json!({"query": q}).to_string()}})).collect::<Vec<_>>()
            }),
            "tool_calls",
        ),
        Step::CallTool {
            tool,
            arguments,
            text,
        } => (
            json!({
                "role": "assistant", "content": text,
                "tool_calls": [{"id": format!("call_{nth}"), "type": "function",
                    "function": {"name": tool, "arguments": arguments.to_string()}}]
            }),
            "tool_calls",
        ),
        Step::Answer(text) => {
            // A server holding the model to a JSON form gets a JSON object from it.
            let text = if constrained {
                as_object(text, &body["response_format"]["json_schema"]["schema"]).to_string()
            } else {
                text
            };
            let (text, was_cut) = cut(text, limit);
            (
                json!({"role": "assistant", "content": text}),
                if was_cut { "length" } else { "stop" },
            )
        }
    };
    Json(json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
    }))
    .into_response()
}

async fn anthropic(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let checked = check_anthropic(&body);
    let rejected = checked.as_ref().err().map(|(_, b)| b.to_string());
    let (credential, nth) = record(
        &fake,
        "anthropic",
        Provider::Anthropic,
        &headers,
        &body,
        rejected,
    )
    .await;
    if let Err((status, error)) = checked {
        return (status, Json(error)).into_response();
    }
    let declared = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let tool_results: Vec<String> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(blocks)
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let request = Request {
        // `none` forbids the tools, and a forced tool (`tool`) is the one called.
        may_call: declared
            && !["none", "tool"].contains(&body["tool_choice"]["type"].as_str().unwrap_or("")),
        declared,
        tool_results: (!tool_results.is_empty()).then(|| tool_results.join("\n---\n")),
        nth,
    };
    let (content, stop) = match decide(&fake.script, &request) {
        Step::Fail(code) => return failure(code, &credential),
        Step::Retry {
            status,
            retry_after,
        } => return retry(status, retry_after),
        Step::Hang => return hang().await,
        Step::CallTools(queries) => (
            queries
                .iter()
                .enumerate()
                .map(|(i, q)| json!({"type": "tool_use", "id": format!("toolu_p{i}"), "name": "execute_query", "input": {"query": q}}))
                .collect::<Value>(),
            "tool_use",
        ),
        Step::CallTool {
            tool,
            arguments,
            text,
        } => (
            json!([{"type": "text", "text": text},
                   {"type": "tool_use", "id": format!("toolu_{nth}"),
                    "name": tool, "input": arguments}]),
            "tool_use",
        ),
        // A forced tool is called, with an input its schema allows; cut at the token
        // limit, the input is what was written of it.
        Step::Answer(text) if body["tool_choice"]["type"] == "tool" => {
            let (_, was_cut) = cut(text.clone(), body["max_tokens"].as_u64());
            let schema = body["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["name"] == body["tool_choice"]["name"])
                .map_or(Value::Null, |t| t["input_schema"].clone());
            let input = if was_cut {
                json!({})
            } else {
                as_object(text, &schema)
            };
            (
                json!([{"type": "tool_use", "id": format!("toolu_{nth}"),
                    "name": body["tool_choice"]["name"], "input": input}]),
                if was_cut { "max_tokens" } else { "tool_use" },
            )
        }
        Step::Answer(text) => {
            let (text, was_cut) = cut(text, body["max_tokens"].as_u64());
            (
                json!([{"type": "text", "text": text}]),
                if was_cut { "max_tokens" } else { "end_turn" },
            )
        }
    };
    Json(json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
        "content": content, "stop_reason": stop, "usage": {"input_tokens": 100, "output_tokens": 20},
    }))
    .into_response()
}
