//! End to end: an alert in, a completed report out, through the real Python runner, the
//! real Prometheus MCP server and the real Prometheus.

use reqwest::StatusCode;

use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options, StoreChoice};

async fn alert_becomes_completed_report(protocol: &'static str) {
    // The design's shape: the runner starts the Prometheus MCP server for the diagnosis.
    let app = spawn_app(Options {
        native: false,
        own_mcp_server: true,
        protocol,
        ..Options::default()
    })
    .await;
    let id = deployment_id(protocol);

    let (status, body) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["alerts"][0]["outcome"], "started");
    let (status, queued) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(["generating", "completed"].contains(&queued["status"].as_str().unwrap()));

    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["promQL"], serde_json::json!(["up{job=\"node\"}"]));
    let content = report["content"].as_str().unwrap();
    for section in [
        "【问题概述】",
        "【根因分析】",
        "【影响范围】",
        "【解决方案】",
    ] {
        assert!(content.contains(section), "{content}");
    }
    // The tool result the model saw came from the real Prometheus: it names the scraped
    // node_exporter, whose port only that Prometheus knows.
    assert!(content.contains(&app.prom.node_instance), "{content}");
    assert_eq!(report["runner"], "process");
    assert_eq!(report["attempts"], 1);
    // The Python runner reports what the diagnosis cost.
    let usage = &report["usage"];
    assert_eq!(
        (
            usage["inputTokens"].as_u64(),
            usage["steps"].as_u64(),
            usage["toolCalls"].as_u64()
        ),
        (Some(200), Some(2), Some(1)),
        "{usage}"
    );
    assert!(report["durationMs"].as_u64().is_some());

    let requests = app.llm.requests();
    assert_eq!(requests.len(), 2, "one tool call, one answer");
    assert!(requests
        .iter()
        .all(|r| r.format == protocol && r.credential == app.api_key));
    let prompt = requests[0].prompt();
    assert!(
        prompt.contains("\"deploymentId\": \"") && prompt.contains(&id),
        "the prompt carries the alert"
    );
    assert!(
        requests[0].body["tools"].as_array().unwrap().len() >= 5,
        "the Prometheus MCP tools are offered"
    );
}

#[tokio::test]
async fn alertmanager_alert_becomes_a_completed_report_over_openai_wire_format() {
    alert_becomes_completed_report("openai").await;
}

#[tokio::test]
async fn alertmanager_alert_becomes_a_completed_report_over_anthropic_wire_format() {
    alert_becomes_completed_report("anthropic").await;
}

#[tokio::test]
async fn a_github_token_without_a_github_mcp_server_only_disables_github_analysis() {
    // The repository is admitted, but GitHub cannot be reached: the service has no
    // changes to show, so the design's GitHub task (MCP tools) is asked for.
    let app = spawn_app(Options {
        native: false,
        github: Some((
            "ghp_testtoken_not_real",
            "/nonexistent/github-mcp-server stdio",
        )),
        sections: "GitHub:\n  APIURL: http://127.0.0.1:1\n  Repos: [\"acme/*\"]\n".into(),
        ..Options::default()
    })
    .await;
    let id = deployment_id("gh");
    let mut body = alertmanager_body(&id, "firing");
    body["alerts"][0]["labels"]["repoAddress"] = "acme/shop".into();
    body["alerts"][0]["labels"]["tag"] = "v1.2.0".into();

    app.post_alerts(&body).await;
    let report = app.wait_final(&id).await;

    assert_eq!(report["status"], "completed", "{report:#}");
    let prompt = app.llm.requests()[0].prompt();
    assert!(
        prompt.contains("get_release_by_tag"),
        "the GitHub task is asked for when a token is set"
    );
    let notes = report["changes"]["notes"].to_string();
    assert!(notes.contains("GitHub unreachable"), "{notes}");
    assert!(!report.to_string().contains("ghp_testtoken_not_real"));
}

#[tokio::test]
async fn an_alert_becomes_a_completed_report_with_the_mongo_store() {
    let app = spawn_app(Options {
        native: false,
        store: StoreChoice::Mongo,
        ..Options::default()
    })
    .await;
    let id = deployment_id("mongo");

    let (status, first) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let (_, retry) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let report = app.wait_final(&id).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["alerts"][0]["outcome"], "started");
    assert_eq!(retry["alerts"][0]["outcome"], "exists");
    assert_eq!(report["status"], "completed", "{report:#}");
    assert!(report["content"]
        .as_str()
        .unwrap()
        .contains(&app.prom.node_instance));
}
