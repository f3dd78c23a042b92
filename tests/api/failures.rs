//! Every way a diagnosis can fail ends in a `failed` report with a reason a person can act
//! on, and never with a secret in it.

use std::time::Duration;

use serde_json::Value;

use crate::fake_llm::Script;
use crate::helpers::{alertmanager_body, deployment_id, report_error, spawn_app, Options, TestApp};
use crate::servers::{free_port, pids_with_env};

async fn failed_report(app: &TestApp, prefix: &str) -> (String, Value) {
    let id = deployment_id(prefix);
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "failed", "{report:#}");
    (id, report)
}

/// Processes whose environment names this deployment: the runner and its MCP server.
fn processes_of(deployment_id: &str) -> Vec<u32> {
    pids_with_env(&format!("DD_DEPLOYMENT_ID={deployment_id}"))
}

/// Any process whose command line contains `needle`.
fn argv_containing(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[tokio::test]
async fn an_llm_error_status_fails_the_report_with_the_status_and_no_key() {
    let app = spawn_app(Options {
        native: false,
        script: Script::Status(500),
        ..Options::default()
    })
    .await;

    let (_, report) = failed_report(&app, "llm500").await;

    assert!(report_error(&report).contains("status 500"), "{report:#}");
    // The fake echoed the key in its error body; it must not reach the report.
    assert!(!report.to_string().contains(&app.api_key), "{report:#}");
    assert!(report.to_string().contains("[REDACTED]"), "{report:#}");
    let text = app.metrics().await;
    assert!(
        text.contains("deploy_diagnosis_runner_failures_total{reason=\"llm_status\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn an_llm_that_never_answers_fails_the_report_as_timed_out() {
    // The request times out after AI.Timeout (20 s), counted from when the runner sends it;
    // the deadline is 40 s from the start. The gap covers the runner's start-up and exit on
    // a busy machine (with six tests at once on two cores: 5.6 s to the request, and more
    // than 4.4 s from the timeout to the runner's exit), so the request timeout comes first.
    let app = spawn_app(Options {
        native: false,
        script: Script::Hang,
        timeout_s: 20,
        ..Options::default()
    })
    .await;

    let (_, report) = failed_report(&app, "hang").await;

    assert!(report_error(&report).contains("timed out"), "{report:#}");
}

#[tokio::test]
async fn a_diagnosis_past_its_deadline_is_killed_with_its_mcp_server() {
    // Each answer takes 1 s (well under the 8 s request timeout, even on a busy machine)
    // and asks for another tool call, so only the 16 s deadline (2 x AI.Timeout) can end
    // it. (At 6 s, with six tests at once on two cores, the deadline once came before the
    // runner's MCP server had started.)
    let app = spawn_app(Options {
        native: false,
        own_mcp_server: true,
        script: Script::ToolLoop,
        llm_delay: Duration::from_secs(1),
        timeout_s: 8,
        max_turns: 50,
        ..Options::default()
    })
    .await;
    let id = deployment_id("deadline");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    // While it runs: the runner and its MCP server are up, and no argv holds the key.
    let start = std::time::Instant::now();
    while processes_of(&id).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "runner and MCP server never both ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        argv_containing(&app.api_key).is_empty(),
        "API key visible in argv"
    );

    let report = app.wait_final(&id).await;

    assert_eq!(report["status"], "failed");
    assert!(
        report_error(&report).contains("deadline exceeded"),
        "{report:#}"
    );
    assert!(report_error(&report).contains("16s"), "{report:#}");
    let leftover = processes_of(&id);
    assert!(
        leftover.is_empty(),
        "processes left after the deadline: {leftover:?}"
    );
}

#[tokio::test]
async fn the_process_runner_uses_the_configured_mcp_server_and_names_it_when_it_is_down() {
    // Runner.PrometheusMCPURL at a port nobody listens on: the runner goes there, not to a
    // server of its own, and the report says which server it could not reach.
    let down = format!("http://127.0.0.1:{}/mcp", free_port());
    let app = spawn_app(Options {
        native: false,
        own_mcp_server: true,
        runner_mcp_url: Some(down.clone()),
        script: Script::ToolThenReport { query: "up".into() },
        ..Options::default()
    })
    .await;

    let (_, report) = failed_report(&app, "mcp-down").await;

    let error = report_error(&report);
    assert!(
        error.contains(&down) && error.contains("unreachable"),
        "{report:#}"
    );
}

#[tokio::test]
async fn an_answer_without_json_fails_the_report_and_keeps_the_output_tail() {
    let app = spawn_app(Options {
        native: false,
        script: Script::Prose,
        ..Options::default()
    })
    .await;

    let (_, report) = failed_report(&app, "prose").await;

    assert!(report_error(&report).contains("no JSON"), "{report:#}");
    assert_eq!(
        app.llm.requests().len(),
        2,
        "the answer, and one follow-up asking for the object alone"
    );
    assert!(
        report["rawOutput"].as_str().unwrap().contains("建议重启"),
        "{report:#}"
    );
}

#[tokio::test]
async fn prometheus_down_fails_the_report_naming_prometheus() {
    let down = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_app(Options {
        native: false,
        prometheus_url: Some(down.clone()),
        ..Options::default()
    })
    .await;

    let (_, report) = failed_report(&app, "promdown").await;

    assert!(
        report_error(&report).contains("Prometheus unreachable"),
        "{report:#}"
    );
    assert!(report_error(&report).contains(&down), "{report:#}");
    assert!(
        app.llm.requests().is_empty(),
        "no AI call is spent when Prometheus is down"
    );
}
