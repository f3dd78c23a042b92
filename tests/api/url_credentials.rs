//! `AI.PrometheusURL` with `user:pass@`: the credentials reach Prometheus (the service's
//! own queries, the Python runner's check and its MCP server's queries) and nothing else:
//! not argv, not an environment, not a stored report, an API answer or a page, not the
//! runner container's settings.

use std::time::{Duration, Instant};

use bollard::query_parameters::InspectContainerOptions;
use reqwest::StatusCode;

use crate::fake_llm::Script;
use crate::helpers::{
    alertmanager_body, deployment_id, spawn_app, DockerOptions, Options, TestApp,
};
use crate::servers::{cmdlines_with, docker_client, pids_with_env, PrometheusProxy};

const USER: &str = "prom-reader";
const PASSWORD: &str = "s3cr3t-prom-pass";

/// Everything a person or a client can read of a report: its JSON, its history and its
/// page.
async fn everything_shown(app: &TestApp, id: &str) -> String {
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    let (_, history) = app.get(&format!("/reports/{id}/history")).await;
    let mut request = deploy_diagnosis::tls::client()
        .build()
        .unwrap()
        .get(format!("{}/ui/reports/{id}", app.address));
    if let Some(token) = app.read_token() {
        request = request.bearer_auth(token);
    }
    let page = request.send().await.unwrap().text().await.unwrap();
    format!("{report}\n{history}\n{page}")
}

/// Waits for the report's end, looking at every process's command line meanwhile.
async fn final_watching_argv(app: &TestApp, id: &str) -> (serde_json::Value, Vec<String>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        seen.extend(cmdlines_with(PASSWORD));
        let (_, report) = app.get(&format!("/reports/{id}")).await;
        if report["status"] != "generating" {
            return (report, seen);
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "still generating: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn prometheus_credentials_reach_prometheus_and_nothing_else() {
    let guarded = PrometheusProxy::guarding(USER, PASSWORD).await;
    let app = spawn_app(Options {
        native: false,
        prometheus_url: Some(guarded.url_with(USER, PASSWORD)),
        evidence: true,
        llm_delay: Duration::from_secs(1),
        script: Script::ToolThenReport { query: "up".into() },
        ..Options::default()
    })
    .await;
    let id = deployment_id("prom-auth");
    let (status, _) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (report, argv) = final_watching_argv(&app, &id).await;

    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["engine"], "ai", "{report:#}");
    assert!(
        report["evidence"].is_array(),
        "measured through the guard: {report:#}"
    );
    let agents = guarded.agents();
    assert!(
        agents.iter().any(|a| a.starts_with("python-requests")),
        "the runner's MCP server queried with the credentials: {agents:?}"
    );
    assert!(argv.is_empty(), "credentials in a command line: {argv:?}");
    assert!(
        pids_with_env(&format!("AI_API_KEY={}", app.api_key)).is_empty(),
        "no process holds the AI key in its environment"
    );
    let shown = everything_shown(&app, &id).await;
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[tokio::test]
async fn a_prometheus_refusing_the_credentials_is_named_without_them() {
    let guarded = PrometheusProxy::guarding(USER, PASSWORD).await;
    let wrong = "wr0ng-prom-pass";
    let app = spawn_app(Options {
        native: false,
        prometheus_url: Some(guarded.url_with(USER, wrong)),
        evidence: true,
        ..Options::default()
    })
    .await;
    let id = deployment_id("prom-refused");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let report = app.wait_final(&id).await;

    let evidence_error = report["evidenceError"].as_str().unwrap_or_default();
    assert!(
        evidence_error.contains("[REDACTED]@127.0.0.1") && evidence_error.contains("401"),
        "the reason names the Prometheus, not its credentials: {report:#}"
    );
    let shown = everything_shown(&app, &id).await;
    assert!(!shown.contains(wrong) && !shown.contains(USER), "{shown}");
}

#[tokio::test]
async fn the_runner_container_holds_no_credential_in_its_settings() {
    let docker = docker_client().await;
    let guarded = PrometheusProxy::guarding(USER, PASSWORD).await;
    let opts = DockerOptions::unique("creds");
    let name = opts.container.clone();
    let app = spawn_app(Options {
        prometheus_url: Some(guarded.url_with(USER, PASSWORD)),
        docker: Some(opts),
        llm_delay: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let id = deployment_id("prom-auth-docker");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let (report, argv) = final_watching_argv(&app, &id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert!(argv.is_empty(), "credentials in a command line: {argv:?}");
    assert!(
        guarded
            .agents()
            .iter()
            .any(|a| a.starts_with("python-requests")),
        "the run's own MCP server queried Prometheus with them"
    );

    let info = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let settings = serde_json::to_string(&info).unwrap();
    assert!(!settings.contains(PASSWORD), "{settings}");
    assert!(!settings.contains(&app.api_key), "{settings}");
    let config = info.config.unwrap();
    assert!(
        !config
            .env
            .unwrap_or_default()
            .iter()
            .any(|e| e.starts_with("PROMETHEUS_URL=")),
        "no URL to hide: the main process only waits"
    );
    let _ = docker
        .remove_container(
            &name,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await;
}
