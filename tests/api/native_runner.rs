//! `Runner.Kind: native`: the agent loop in the service, through the official Rust MCP SDK
//! to the real Prometheus MCP server (stdio child and streamable HTTP), against the
//! scripted LLM in both wire formats.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_llm::Script;
use crate::helpers::{alertmanager_body, deployment_id, report_error, spawn_app, Options, TestApp};
use crate::servers::{free_port, pids_with_env, repo};

fn native(script: Script) -> Options {
    Options {
        native: true,
        script,
        ..Options::default()
    }
}

async fn diagnose(app: &TestApp, prefix: &str) -> Value {
    let id = deployment_id(prefix);
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.wait_final(&id).await
}

fn stdio_server_with_marker(prom: &str, marker: &str) -> String {
    format!(
        "MCP:\n  Servers:\n    - Name: prometheus\n      Command: {}\n      Env: [\"PROMETHEUS_URL={prom}\", \"{marker}\"]\n",
        repo().join(".venv/bin/prometheus-mcp-server").display()
    )
}

#[tokio::test]
async fn the_native_runner_completes_reports_over_both_wire_formats_and_counts_usage() {
    for protocol in ["openai", "anthropic"] {
        let app = spawn_app(Options {
            protocol,
            ..native(Script::ToolThenReport {
                query: "up{job=\"node\"}".into(),
            })
        })
        .await;

        let first = diagnose(&app, protocol).await;
        let second = diagnose(&app, protocol).await;

        for report in [&first, &second] {
            assert_eq!(report["status"], "completed", "{report:#}");
            assert_eq!(report["runner"], "native");
            assert_eq!(report["promQL"], serde_json::json!(["up{job=\"node\"}"]));
            assert!(
                report["content"]
                    .as_str()
                    .unwrap()
                    .contains(&app.prom.node_instance),
                "{report:#}"
            );
            let usage = &report["usage"];
            assert_eq!(
                (
                    usage["inputTokens"].as_u64(),
                    usage["outputTokens"].as_u64()
                ),
                (Some(200), Some(40)),
                "{usage}"
            );
            assert_eq!(
                (usage["steps"].as_u64(), usage["toolCalls"].as_u64()),
                (Some(2), Some(1)),
                "{usage}"
            );
        }
        let requests = app.llm.requests();
        assert!(requests
            .iter()
            .all(|r| r.format == protocol && r.credential == app.api_key));
        let text = app.metrics().await;
        for line in [
            "deploy_diagnosis_llm_tokens_total{direction=\"input\"} 400",
            "deploy_diagnosis_llm_tokens_total{direction=\"output\"} 80",
            "deploy_diagnosis_agent_steps_total 4",
            "deploy_diagnosis_tool_calls_total{cached=\"false\"} 2",
        ] {
            assert!(
                text.contains(line),
                "{protocol}: missing {line:?} in\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn the_native_runner_keeps_one_stdio_mcp_server_for_all_diagnoses() {
    let marker = format!("DD_TEST_MCP={}", uuid::Uuid::new_v4().simple());
    let prom = crate::servers::prometheus().await;
    let app = spawn_app(Options {
        mcp: Some(stdio_server_with_marker(&prom.url, &marker)),
        ..native(Script::ToolThenReport { query: "up".into() })
    })
    .await;

    assert_eq!(diagnose(&app, "one").await["status"], "completed");
    let after_first = pids_with_env(&marker);
    assert_eq!(diagnose(&app, "two").await["status"], "completed");

    assert_eq!(after_first.len(), 1, "one server process");
    assert_eq!(
        pids_with_env(&marker),
        after_first,
        "the same process served the second diagnosis"
    );
}

#[tokio::test]
async fn the_native_runner_talks_to_an_mcp_server_over_streamable_http() {
    let prom = crate::servers::prometheus().await;
    let dir = tempfile::tempdir().unwrap();
    let (_mcp, url) = crate::servers::http_mcp(&prom.url, dir.path()).await;
    let mcp = format!("MCP:\n  Servers:\n    - Name: prometheus\n      URL: {url}\n");
    let app = spawn_app(Options {
        mcp: Some(mcp),
        ..native(Script::ToolThenReport { query: "up".into() })
    })
    .await;

    let report = diagnose(&app, "http").await;

    assert_eq!(report["status"], "completed", "{report:#}");
    assert!(report["content"]
        .as_str()
        .unwrap()
        .contains(&app.prom.node_instance));
}

#[tokio::test]
async fn several_tool_calls_in_one_turn_all_run_and_an_identical_repeat_runs_once() {
    let app = spawn_app(native(Script::Parallel(vec![
        "up".into(),
        "node_load1".into(),
        "up".into(),
    ])))
    .await;

    let report = diagnose(&app, "parallel").await;

    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["usage"]["toolCalls"], 2, "{report:#}");
    assert_eq!(report["usage"]["cachedToolCalls"], 1, "{report:#}");
    let second = &app.llm.requests()[1].body;
    let tool_messages: Vec<&Value> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_messages.len(), 3, "every call is answered");
    assert_eq!(
        tool_messages[0]["content"], tool_messages[2]["content"],
        "the repeat got the first result"
    );
    assert!(tool_messages[1]["content"]
        .as_str()
        .unwrap()
        .contains("node_load1"));
}

#[tokio::test]
async fn a_tool_error_is_passed_back_to_the_model() {
    let app = spawn_app(Options {
        protocol: "anthropic",
        ..native(Script::ToolThenReport {
            query: "this is not ((( promql".into(),
        })
    })
    .await;

    let report = diagnose(&app, "toolerr").await;

    assert_eq!(
        report["status"], "completed",
        "the model still answers: {report:#}"
    );
    let second = &app.llm.requests()[1].body;
    let result = second["messages"][2]["content"][0].clone();
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["is_error"], true, "{result}");
    assert!(
        result["content"].as_str().unwrap().contains("Bad Request"),
        "{result}"
    );
}

#[tokio::test]
async fn an_mcp_server_that_dies_mid_diagnosis_is_restarted_and_the_call_retried() {
    let marker = format!("DD_TEST_MCP={}", uuid::Uuid::new_v4().simple());
    let prom = crate::servers::prometheus().await;
    let app = spawn_app(Options {
        mcp: Some(stdio_server_with_marker(&prom.url, &marker)),
        llm_delay: Duration::from_millis(1500),
        ..native(Script::ToolThenReport {
            query: "up{job=\"node\"}".into(),
        })
    })
    .await;
    let id = deployment_id("mcpdies");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let start = Instant::now();
    while app.llm.requests().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never reached the LLM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The model is "thinking"; its tool call will find the server gone.
    let before = pids_with_env(&marker);
    assert_eq!(before.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let report = app.wait_final(&id).await;

    assert_eq!(report["status"], "completed", "{report:#}");
    assert!(
        report["content"]
            .as_str()
            .unwrap()
            .contains(&app.prom.node_instance),
        "{report:#}"
    );
    let after = pids_with_env(&marker);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a new server process");
}

#[tokio::test]
async fn a_rate_limited_provider_is_retried_and_the_report_completes() {
    let app = spawn_app(native(Script::RateLimitedOnce { query: "up".into() })).await;

    let report = diagnose(&app, "429").await;

    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        app.llm.requests().len(),
        3,
        "429, then the tool call, then the answer"
    );
}

#[tokio::test]
async fn native_failures_read_like_the_other_runners() {
    let down = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_app(Options {
        prometheus_url: Some(down.clone()),
        ..native(Script::ToolThenReport { query: "up".into() })
    })
    .await;
    let report = diagnose(&app, "nprom").await;
    assert_eq!(report["status"], "failed");
    assert!(
        report_error(&report).contains("Prometheus unreachable"),
        "{report:#}"
    );

    let app = spawn_app(Options {
        llm_delay: Duration::from_secs(1),
        timeout_s: 3,
        max_turns: 50,
        ..native(Script::ToolLoop)
    })
    .await;
    let report = diagnose(&app, "ndeadline").await;
    assert_eq!(report["status"], "failed");
    assert!(
        report_error(&report).contains("deadline exceeded"),
        "{report:#}"
    );

    let app = spawn_app(native(Script::Status(401))).await;
    let report = diagnose(&app, "n401").await;
    assert!(report_error(&report).contains("status 401"), "{report:#}");
    assert!(!report.to_string().contains(&app.api_key));
    assert_eq!(app.llm.requests().len(), 1, "a 401 is not retried");
}

/// A stdio "MCP server" that starts and never answers the handshake.
fn hung_server(optional: bool) -> String {
    format!(
        "    - Name: hung\n      Command: sleep\n      Args: [\"3600\"]\n      Optional: {optional}\n"
    )
}

#[tokio::test]
async fn an_mcp_server_that_never_answers_its_handshake_fails_only_its_own_calls() {
    let marker = format!("DD_TEST_MCP={}", uuid::Uuid::new_v4().simple());
    let prom = crate::servers::prometheus().await;
    // An optional hung server beside the real one: a diagnosis waits for the real one
    // (required) only, and the hung one's attempt, which would take the default
    // MCP.ConnectTimeoutSeconds (60 s), holds none of them back.
    let app = spawn_app(Options {
        mcp: Some(format!(
            "{}{}",
            stdio_server_with_marker(&prom.url, &marker),
            hung_server(true)
        )),
        ..native(Script::ToolThenReport {
            query: "up{job=\"node\"}".into(),
        })
    })
    .await;
    let ids: Vec<String> = (0..3).map(|_| deployment_id("hungmcp")).collect();
    for id in &ids {
        app.post_alerts(&alertmanager_body(id, "firing")).await;
    }
    for id in &ids {
        let report = app.wait_final(id).await;
        assert_eq!(report["status"], "completed", "{report:#}");
        assert_eq!(report["engine"], "ai", "{report:#}");
        assert_eq!(report["promQL"], serde_json::json!(["up{job=\"node\"}"]));
    }

    // Required and hung: the diagnosis ends, saying which server and why.
    let app = spawn_app(Options {
        mcp: Some(format!(
            "MCP:\n  Servers:\n{}  ConnectTimeoutSeconds: 1\n",
            hung_server(false)
        )),
        evidence: false,
        ..native(Script::ToolThenReport { query: "up".into() })
    })
    .await;
    let report = diagnose(&app, "hungreq").await;
    assert_eq!(report["status"], "failed", "{report:#}");
    let error = report_error(&report);
    assert!(
        error.contains("hung") && error.contains("MCP.ConnectTimeoutSeconds"),
        "{error}"
    );
}
