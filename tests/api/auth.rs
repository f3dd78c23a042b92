//! Who may call what: the write token for changes, the read token (or the write token) for
//! reports and the registry, health and readiness open, `/metrics` open unless protected;
//! Bearer and Basic both carry a token; an exposed address with no token does not start.

use base64::Engine as _;
use reqwest::{Method, StatusCode};

use crate::helpers::{
    alertmanager_body, api_key, config_yaml, deployment_id, spawn_app, Options, TestApp,
};

const WRITE: &str = "write-token-0123";
const READ: &str = "read-token-4567";

fn basic(password: &str) -> String {
    let raw = format!("anyone:{password}");
    format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap) {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request
        .json(&alertmanager_body("auth-probe", "firing"))
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn reads_need_the_read_token_and_writes_the_write_token() {
    let app = spawn_app(Options {
        bearer: Some(WRITE),
        read_token: Some(READ),
        ..Options::default()
    })
    .await;
    let id = deployment_id("auth");
    let (status, _) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let bearer = |t: &str| format!("Bearer {t}");
    for path in [
        "/reports",
        &format!("/reports/{id}"),
        &format!("/reports/{id}/history"),
        "/deployments",
    ] {
        let (status, headers) = call(&app, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let challenges: Vec<&str> = headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic")),
            "{challenges:?}"
        );
        assert_eq!(
            call(&app, Method::GET, path, Some("Bearer wrong-token-1"))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&app, Method::GET, path, Some(&bearer(READ))).await.0,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            call(&app, Method::GET, path, Some(&basic(READ))).await.0,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            call(&app, Method::GET, path, Some(&bearer(WRITE))).await.0,
            StatusCode::OK,
            "the write token reads"
        );
    }
    // The read token cannot write; the write token can, in either form.
    assert_eq!(
        call(&app, Method::POST, "/v1/alerts", Some(&bearer(READ)))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            &format!("/reports/{id}"),
            Some(&bearer(READ))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, Method::POST, "/v1/alerts", Some(&basic(WRITE)))
            .await
            .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(
            &app,
            Method::POST,
            "/v1/alerts",
            Some(&format!("BEARER {WRITE}"))
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    // Probes and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = call(&app, Method::GET, path, None).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert!(!report.to_string().contains(READ) && !report.to_string().contains(WRITE));
}

#[tokio::test]
async fn protected_metrics_need_the_read_token() {
    let app = spawn_app(Options {
        bearer: Some(WRITE),
        protect_metrics: true,
        ..Options::default()
    })
    .await;
    assert_eq!(
        call(&app, Method::GET, "/metrics", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/metrics",
            Some(&format!("Bearer {WRITE}"))
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
}

#[test]
fn an_exposed_address_without_a_token_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(
            &Options::default(),
            "http://127.0.0.1:9/v1",
            "http://127.0.0.1:9",
            dir.path(),
            None,
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_deploy-diagnosis"))
        .args(["serve", "-f"])
        .arg(&config)
        .env("AI_API_KEY", api_key())
        .env("DD_HOST", "0.0.0.0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Auth.WriteToken") && stderr.contains("Auth.AllowAnonymous"),
        "{stderr}"
    );
}
