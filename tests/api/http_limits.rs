//! The router's own bounds: `MaxConns` requests at once (the next one is a `503` at once,
//! health probes still answer), `Timeout` per request (a `503` saying so), and a body
//! limit per route.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app, Options};

/// A request whose body never finishes arriving: it holds its place until the timeout.
async fn stalled_request(address: &str) -> tokio::net::TcpStream {
    let addr = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\n\
                 content-length: 1000\r\n\r\n{{\"alerts\": ["
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn past_max_conns_a_request_is_refused_at_once_and_a_slow_one_times_out() {
    let app = spawn_app(Options {
        sections: "Timeout: 1500\nMaxConns: 1\n".into(),
        ..Options::default()
    })
    .await;
    let mut stalled = stalled_request(&app.address).await;
    // Once the stalled request holds the only place, the next one is refused.
    let refused = loop {
        let response = app
            .client
            .get(format!("{}/reports", app.address))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "busy", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MaxConns"));
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "health probes are not counted");

    // The stalled request is answered when its time is up, and its place is free again.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stalled.read_to_end(&mut answer))
        .await
        .expect("the stalled request was never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(answer.contains("Timeout"), "{answer}");
    let (status, _) = app.get("/reports").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = app.metrics().await;
    for limit in ["max_conns", "timeout"] {
        assert!(
            metrics.contains(&format!(
                "deploy_diagnosis_limit_hits_total{{limit=\"{limit}\"}}"
            )),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn each_route_has_its_own_body_limit() {
    // The tests' Webhook.MaxBodyBytes (64 KiB) is below a deployment's own limit (256
    // KiB): the smaller one applies, and the answer names it.
    let app = spawn_app(Options::default()).await;
    let hosts: Vec<String> = (0..400).map(|n| format!("host-{n:0>200}")).collect();
    let (status, body) = app
        .put_json("/deployments/big", &json!({ "hosts": hosts }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes (Webhook.MaxBodyBytes)"),
        "{body}"
    );
    let (status, _) = app.get("/deployments/big").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
    let (status, body) = app
        .post_json(
            "/reports/any/feedback",
            &json!({ "score": 3, "rootCauseCorrect": true, "comment": "x".repeat(20_000) }),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16384 bytes (a feedback's limit)"),
        "{body}"
    );
}
