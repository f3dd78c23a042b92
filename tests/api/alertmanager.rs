//! The real Alertmanager (Debian's package) as the webhook's caller: an alert pushed into
//! Alertmanager is routed to the service with its token, in both `http_config` forms
//! (`authorization` bearer credentials and `basic_auth`), and diagnosed.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{deployment_id, spawn_app, Options};
use crate::servers::{free_port, start_guarded, wait_http};

#[tokio::test]
async fn an_alert_routed_by_the_real_alertmanager_becomes_a_completed_report() {
    routed_by_alertmanager(
        "authorization:
            credentials: am-token",
    )
    .await;
}

#[tokio::test]
async fn alertmanagers_basic_auth_form_carries_the_token_too() {
    routed_by_alertmanager(
        "basic_auth:
            username: alertmanager
            password: am-token",
    )
    .await;
}

async fn routed_by_alertmanager(http_config: &str) {
    let app = spawn_app(Options {
        bearer: Some("am-token"),
        read_token: Some("dashboard-token"),
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            r#"
route:
  receiver: deploy-diagnosis
  group_by: [deploymentId]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: deploy-diagnosis
    webhook_configs:
      - url: {}/v1/alerts
        send_resolved: true
        http_config:
          {http_config}
"#,
            app.address
        ),
    )
    .unwrap();
    let binary = "/usr/bin/prometheus-alertmanager";
    assert!(
        std::path::Path::new(binary).exists(),
        "install Debian's prometheus-alertmanager (scripts/test does)"
    );
    let _alertmanager = start_guarded(
        binary,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.path().join("alertmanager.log"),
    );
    let am = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{am}/-/ready"), "alertmanager").await;
    let id = deployment_id("am");

    let pushed = app
        .client
        .post(format!("{am}/api/v2/alerts"))
        .json(&json!([{
            "labels": {"alertname": "NodeHighCPU", "deploymentId": id, "hostname": "web-1", "severity": "critical"},
            "annotations": {"description": "CPU above 90% since the release"},
            "generatorURL": format!("{}/graph", app.prom.url),
        }]))
        .send()
        .await
        .unwrap();
    assert!(
        pushed.status().is_success(),
        "{}",
        pushed.text().await.unwrap()
    );

    let report = crate::helpers::wait_final(
        &app.client,
        &app.address,
        &id,
        Some("dashboard-token"),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["alert"]["alertname"], "NodeHighCPU");
    assert_eq!(report["alert"]["type"], "alertmanager");
    assert!(report["content"]
        .as_str()
        .unwrap()
        .contains(&app.prom.node_instance));
}
