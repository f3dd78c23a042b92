//! The one fake: a scripted LLM speaking both real wire formats, Anthropic Messages
//! (`POST /v1/messages`) and OpenAI chat completions (`POST /v1/chat/completions`).
//! It records every request so tests can see what the runner sent (the prompt, the tool
//! results from the real Prometheus, the credentials).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the fake answers.
#[derive(Clone, Debug)]
pub enum Script {
    /// Ask for `execute_query(query)`, then answer with a report quoting the tool result.
    ToolThenReport { query: String },
    /// Answer with this status and a body that echoes the credential it was sent.
    Status(u16),
    /// Never answer.
    Hang,
    /// While tools are offered, always ask for one more `execute_query`.
    ToolLoop,
    /// Answer in prose, with no JSON at all.
    Prose,
    /// Ask for every query at once in one turn, then answer quoting all the results.
    Parallel(Vec<String>),
    /// Answer the first request `429` with `Retry-After: 1`, then as `ToolThenReport`.
    RateLimitedOnce { query: String },
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `anthropic` or `openai`.
    pub format: &'static str,
    /// The credential header (`x-api-key`, or `authorization` without `Bearer `).
    pub credential: String,
    /// The JSON body.
    pub body: Value,
}

#[derive(Clone)]
struct Fake {
    script: Script,
    delay: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A running fake LLM.
pub struct FakeLlm {
    /// Base URL as configured in `AI.BaseURL` (ends in `/v1`).
    pub base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _server: tokio::task::JoinHandle<()>,
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
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url,
            seen,
            _server: server,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// What the next answer should be.
enum Step {
    CallTools(Vec<String>),
    RateLimited,
    CallTool(String),
    Report(String),
    Text(String),
    Fail(u16),
    Hang,
}

fn decide(script: &Script, tools_offered: bool, tool_result: Option<String>, nth: usize) -> Step {
    match script {
        Script::RateLimitedOnce { .. } if nth == 1 => Step::RateLimited,
        Script::RateLimitedOnce { query } => decide(
            &Script::ToolThenReport {
                query: query.clone(),
            },
            tools_offered,
            tool_result,
            nth,
        ),
        Script::Parallel(queries) => match tool_result {
            None if tools_offered => Step::CallTools(queries.clone()),
            None => Step::Report(report(&queries[0], "no tools were offered")),
            Some(results) => Step::Report(report(&queries[0], &results)),
        },
        Script::Status(code) => Step::Fail(*code),
        Script::Hang => Step::Hang,
        Script::Prose => Step::Text("我认为是 CPU 太高了，建议重启。".into()),
        Script::ToolLoop if tools_offered => Step::CallTool("up".into()),
        Script::ToolLoop => Step::Report(report("up", "the step limit forced this answer")),
        Script::ToolThenReport { query } => match tool_result {
            None if tools_offered => Step::CallTool(query.clone()),
            None => Step::Report(report(query, "no tools were offered")),
            Some(result) => Step::Report(report(query, &result)),
        },
    }
}

fn report(query: &str, evidence: &str) -> String {
    let snippet: String = evidence.chars().take(1500).collect();
    json!({
        "promQL": [query],
        "content": format!("【问题概述】\nweb-1 告警\n【根因分析】\n工具返回：{snippet}\n【影响范围】\nweb-1\n【解决方案】\n回滚发布"),
    })
    .to_string()
}

async fn record(fake: &Fake, format: &'static str, headers: &HeaderMap, body: &Value) -> String {
    let credential = headers
        .get("x-api-key")
        .or_else(|| headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_owned())
        .unwrap_or_default();
    fake.seen.lock().unwrap().push(Seen {
        format,
        credential: credential.clone(),
        body: body.clone(),
    });
    tokio::time::sleep(fake.delay).await;
    credential
}

fn failure(code: u16, credential: &str) -> Response {
    // A careless provider echoing the key back: the service must not store it.
    let body = json!({"error": {"message": format!("upstream exploded for key {credential}"), "type": "server_error"}});
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

async fn openai(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let credential = record(&fake, "openai", &headers, &body).await;
    let nth = fake.seen.lock().unwrap().len();
    let tools_offered = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let tool_results: Vec<String> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    let tool_result = (!tool_results.is_empty()).then(|| tool_results.join("\n---\n"));
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120});
    let message = match decide(&fake.script, tools_offered, tool_result, nth) {
        Step::Fail(code) => return failure(code, &credential),
        Step::RateLimited => return rate_limited(),
        Step::Hang => return hang().await,
        Step::CallTools(queries) => json!({
            "role": "assistant", "content": null,
            "tool_calls": queries.iter().enumerate().map(|(i, q)| json!({"id": format!("call_p{i}"), "type": "function",
                "function": {"name": "execute_query", "arguments": json!({"query": q}).to_string()}})).collect::<Vec<_>>()
        }),
        Step::CallTool(query) => json!({
            "role": "assistant", "content": null,
            "tool_calls": [{"id": format!("call_{}", fake.seen.lock().unwrap().len()), "type": "function",
                "function": {"name": "execute_query", "arguments": json!({"query": query}).to_string()}}]
        }),
        Step::Report(text) | Step::Text(text) => json!({"role": "assistant", "content": text}),
    };
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
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
    let credential = record(&fake, "anthropic", &headers, &body).await;
    let nth = fake.seen.lock().unwrap().len();
    let tools_offered = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let tool_results: Vec<String> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let tool_result = (!tool_results.is_empty()).then(|| tool_results.join("\n---\n"));
    let (content, stop) = match decide(&fake.script, tools_offered, tool_result, nth) {
        Step::Fail(code) => return failure(code, &credential),
        Step::RateLimited => return rate_limited(),
        Step::Hang => return hang().await,
        Step::CallTools(queries) => (
            queries
                .iter()
                .enumerate()
                .map(|(i, q)| json!({"type": "tool_use", "id": format!("toolu_p{i}"), "name": "execute_query", "input": {"query": q}}))
                .collect::<Value>(),
            "tool_use",
        ),
        Step::CallTool(query) => (
            json!([{"type": "text", "text": "先查询指标。"},
                   {"type": "tool_use", "id": format!("toolu_{}", fake.seen.lock().unwrap().len()),
                    "name": "execute_query", "input": {"query": query}}]),
            "tool_use",
        ),
        Step::Report(text) | Step::Text(text) => {
            (json!([{"type": "text", "text": text}]), "end_turn")
        }
    };
    Json(json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
        "content": content, "stop_reason": stop, "usage": {"input_tokens": 100, "output_tokens": 20},
    }))
    .into_response()
}

fn rate_limited() -> Response {
    let body = json!({"error": {"type": "rate_limit_error", "message": "slow down"}});
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", "1")],
        Json(body),
    )
        .into_response()
}

async fn hang() -> Response {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::GATEWAY_TIMEOUT.into_response()
}
