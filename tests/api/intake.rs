//! `POST /v1/alerts`: what starts a diagnosis, what does not, and bad input that changes
//! nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fake_llm::Script;
use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options, StoreChoice, TestApp};

async fn report_count(app: &TestApp) -> usize {
    let (status, list) = app.get("/reports").await;
    assert_eq!(status, StatusCode::OK);
    list["reports"].as_array().unwrap().len()
}

#[tokio::test]
async fn an_alertmanager_retry_of_the_same_payload_does_not_start_a_second_diagnosis() {
    let app = spawn_app(Options::default()).await;
    let id = deployment_id("retry");
    let body = alertmanager_body(&id, "firing");

    let (first, r1) = app.post_alerts(&body).await;
    let (second, r2) = app.post_alerts(&body).await;

    assert_eq!(
        (first, second),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(r1["alerts"][0]["outcome"], "started");
    assert_eq!(r2["alerts"][0]["outcome"], "exists");
    assert!(r2["alerts"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("rediagnose"));
    app.wait_final(&id).await;
    assert_eq!(
        app.llm.requests().len(),
        2,
        "one diagnosis: one tool call and one answer"
    );
    assert_eq!(report_count(&app).await, 1);
}

#[tokio::test]
async fn resolved_and_unlabelled_alerts_start_nothing_and_say_why() {
    let app = spawn_app(Options {
        script: Script::Status(500),
        ..Options::default()
    })
    .await;
    let id = deployment_id("mixed");
    let mut body = alertmanager_body(&id, "resolved");
    let mut unlabelled = body["alerts"][0].clone();
    unlabelled["status"] = "firing".into();
    unlabelled["labels"]
        .as_object_mut()
        .unwrap()
        .remove("deploymentId");
    body["alerts"].as_array_mut().unwrap().push(unlabelled);

    let (status, response) = app.post_alerts(&body).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(response["started"], 0);
    let alerts = response["alerts"].as_array().unwrap();
    assert_eq!(alerts[0]["outcome"], "skipped");
    assert!(alerts[0]["reason"].as_str().unwrap().contains("resolved"));
    assert_eq!(alerts[1]["outcome"], "skipped");
    assert!(alerts[1]["reason"]
        .as_str()
        .unwrap()
        .contains("deploymentId"));
    assert_eq!(report_count(&app).await, 0);
    assert!(app.llm.requests().is_empty());
}

#[tokio::test]
async fn the_designs_flat_callback_body_is_accepted_too() {
    let app = spawn_app(Options::default()).await;
    let id = deployment_id("flat");
    let body = json!({
        "key": "deploy", "status": "firing", "desc": "cpu high", "alertname": "NodeHighCPU",
        "severity": "critical", "needHandle": true, "isEmergent": true, "values": 93.5,
        "labels": {"deploymentId": id, "hostname": "web-1"}, "annotations": {}
    });

    let (status, response) = app.post_alerts(&body).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{response}");
    assert_eq!(response["alerts"][0]["outcome"], "started");
    assert_eq!(app.wait_final(&id).await["status"], "completed");
}

async fn raw_post(
    app: &TestApp,
    content_type: Option<&str>,
    body: Vec<u8>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(format!("{}/v1/alerts", app.address))
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_webhook_bodies_get_clear_json_errors_and_change_nothing() {
    let app = spawn_app(Options {
        bearer: Some("hook-secret"),
        ..Options::default()
    })
    .await;
    let ok = Some("hook-secret");
    let json_ct = Some("application/json");

    let (status, body) = raw_post(&app, json_ct, b"{\"alerts\": [".to_vec(), ok).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );

    let wrong_type =
        br#"{"alerts": [{"status": "firing", "labels": {"deploymentId": 7}}]}"#.to_vec();
    let (status, body) = raw_post(&app, json_ct, wrong_type, ok).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["path"], "alerts[0].labels.deploymentId",
        "{body}"
    );

    let (status, body) = raw_post(&app, Some("text/plain"), b"{}".to_vec(), ok).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    let mut huge = alertmanager_body("big", "firing");
    huge["commonAnnotations"]["padding"] = "x".repeat(70_000).into();
    let (status, body) = raw_post(&app, json_ct, serde_json::to_vec(&huge).unwrap(), ok).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"]["message"].as_str().unwrap().contains("65536"));

    let valid = serde_json::to_vec(&alertmanager_body("unauthorised", "firing")).unwrap();
    let (status, body) = raw_post(&app, json_ct, valid.clone(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = raw_post(&app, json_ct, valid, Some("hook-secreT")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(report_count(&app).await, 0, "nothing was stored");
    assert!(app.llm.requests().is_empty());
}

#[tokio::test]
async fn bodies_beyond_the_input_caps_are_a_400_naming_the_path_on_both_stores() {
    for store in [StoreChoice::Embedded, StoreChoice::Mongo] {
        let app = spawn_app(Options {
            store,
            ..Options::default()
        })
        .await;
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"status": "firing", "labels": {"deploymentId": format!("many-{i}")}}))
            .collect();
        let mut long = alertmanager_body(&deployment_id("long"), "firing");
        long["alerts"][0]["labels"]["hostname"] = json!("h".repeat(4097));
        let mut dotted = alertmanager_body(&deployment_id("dot"), "firing");
        dotted["alerts"][0]["annotations"]["runbook.url"] = json!("http://x");
        let mut dollar = alertmanager_body(&deployment_id("dollar"), "firing");
        dollar["alerts"][0]["labels"]["$where"] = json!("1");
        let mut wide = alertmanager_body(&deployment_id("wide"), "firing");
        for i in 0..70 {
            wide["alerts"][0]["labels"][format!("l{i}")] = json!("v");
        }
        for (body, path) in [
            (json!({"alerts": many}), "alerts"),
            (long, "alerts[0].labels.hostname"),
            (dotted, "alerts[0].annotations.runbook.url"),
            (dollar, "alerts[0].labels.$where"),
            (wide, "alerts[0].labels"),
        ] {
            let (status, answer) = app.post_alerts(&body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
            assert_eq!(answer["error"]["path"], path, "{answer}");
            assert_eq!(answer["error"]["code"], "invalid_body");
        }
        assert_eq!(report_count(&app).await, 0, "nothing was stored");
    }
}
