//! The analysis in each deploy tool's conventions (`docs/rollouts.md`): Flagger's webhooks
//! with the bodies Flagger sends and the Basic credentials its Go client makes of a URL's
//! user information, Argo Rollouts' `web` metric read with the docs' own AnalysisTemplate
//! and a real JSONPath library, and the `gate` command's exit codes. The live answers come
//! from the RED services of `release_verdict.rs`; [`tools_agree`] runs at the end of its
//! polling test, on a bad canary already judged *rollback* and an innocent one.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{deployment_id, Options, TestApp};
use crate::servers::repo;

/// The read token of the apps these tests start.
pub const READ_TOKEN: &str = "read-token-for-tools";
/// Their write token.
pub const WRITE_TOKEN: &str = "write-token-for-tools";

/// The options that give an app both tokens.
pub fn with_tokens(options: Options) -> Options {
    Options {
        bearer: Some(WRITE_TOKEN),
        read_token: Some(READ_TOKEN),
        ..options
    }
}

/// Flagger's webhook body (`CanaryWebhookPayload`), as Flagger marshals it.
fn flagger_body(name: &str, namespace: &str, metadata: Value) -> Value {
    json!({
        "name": name, "namespace": namespace, "phase": "Progressing",
        "checksum": "85d557f47b", "metadata": metadata
    })
}

/// POSTs a Flagger webhook as Flagger does: the token in the URL's user information (Go's
/// client, and reqwest, send it as Basic credentials), no other header but the JSON type.
async fn flagger(app: &TestApp, hook: &str, body: &Value) -> (StatusCode, Value) {
    let url = app
        .address
        .replacen("http://", &format!("http://flagger:{READ_TOKEN}@"), 1);
    let response = app
        .client
        .post(format!("{url}/v1/flagger/{hook}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One measurement of the docs' AnalysisTemplate, as Argo's web provider takes it.
async fn argo(app: &TestApp, id: &str) -> Value {
    let output = tokio::process::Command::new(repo().join(".venv-test/bin/python"))
        .arg(repo().join("tests/fixtures/argo_web_metric.py"))
        .arg(repo().join("docs/rollouts/analysis-template.yaml"))
        .arg(format!("service-url={}", app.address))
        .arg(format!("deployment-id={id}"))
        .arg(format!("token={READ_TOKEN}"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `deploy-diagnosis gate`, its exit code and what it printed.
async fn gate(url: &str, token: &str, id: &str, wait: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_deploy-diagnosis"))
        .args(["gate", "--url", url, "--deployment", id])
        .args(wait)
        .env("DEPLOY_DIAGNOSIS_TOKEN", token)
        // No configuration file is needed: one that does not exist proves it.
        .args(["--config", "/nonexistent/deploy-diagnosis.yaml"])
        .output()
        .await
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !printed.contains(token) || token.is_empty(),
        "the token is never printed: {printed}"
    );
    (output.status.code().unwrap_or(-1), printed)
}

/// Every tool, asked about a bad canary judged *rollback* and an innocent one, says what
/// the analysis says; `newest` is the last deployment registered as `shop` in
/// `production`, which Flagger finds by the canary's name and namespace.
pub async fn tools_agree(app: &TestApp, bad: &str, calm: &str, newest: &str) {
    let (_, analysis) = app.get(&format!("/deployments/{bad}/analysis")).await;
    assert_eq!(analysis["recommendation"], "rollback", "{analysis:#}");
    let (_, innocent) = app.get(&format!("/deployments/{calm}/analysis")).await;
    assert_ne!(innocent["recommendation"], "rollback", "{innocent:#}");
    let proceeds = innocent["recommendation"] == "proceed";

    // Flagger.
    let bad_body = flagger_body("shop", "production", json!({"deploymentId": bad}));
    let (status, answer) = flagger(app, "rollout", &bad_body).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{answer:#}");
    assert_eq!(
        (&answer["pass"], &answer["recommendation"], &answer["hook"]),
        (&json!(false), &json!("rollback"), &json!("rollout")),
        "{answer:#}"
    );
    assert!(
        answer["reasons"].to_string().contains("errors %"),
        "the events say why: {answer:#}"
    );
    let (status, answer) = flagger(app, "rollback", &bad_body).await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    let (status, _) = flagger(app, "confirm-promotion", &bad_body).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let calm_body = flagger_body("shop", "production", json!({"deploymentId": calm}));
    let (status, answer) = flagger(app, "rollout", &calm_body).await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    assert_eq!(answer["pass"], true);
    let (status, _) = flagger(app, "rollback", &calm_body).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, answer) = flagger(app, "confirm-promotion", &calm_body).await;
    assert_eq!(
        status == StatusCode::OK,
        proceeds,
        "promotion only on proceed: {answer:#}"
    );
    // No deploymentId: the newest registration of the canary's name and namespace.
    let (_, answer) = flagger(
        app,
        "rollout",
        &flagger_body("shop", "production", json!({})),
    )
    .await;
    assert_eq!(answer["deploymentId"], newest, "{answer:#}");

    // Argo Rollouts, with the docs' template.
    let measured = argo(app, bad).await;
    assert_eq!(measured, json!({"phase": "Failed", "value": false}));
    let measured = argo(app, calm).await;
    assert_eq!(measured, json!({"phase": "Successful", "value": true}));

    // The CI gate: asked once, it exits with the decision.
    let (code, printed) = gate(&app.address, READ_TOKEN, bad, &[]).await;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.contains("rollback (release") && printed.contains("errors %"),
        "{printed}"
    );
    let (code, printed) = gate(&app.address, READ_TOKEN, calm, &[]).await;
    assert_eq!(code, if proceeds { 0 } else { 2 }, "{printed}");
}

/// What the tools cannot answer is said plainly, and changes nothing: a body that is not
/// Flagger's, an unknown canary, no token; the gate's exits when it has no decision.
#[tokio::test]
async fn the_tools_say_what_they_cannot_answer() {
    let app = crate::release_verdict::app_with(with_tokens(Options {
        evidence_only: true,
        ..Options::default()
    }))
    .await;
    // A release on hosts Prometheus has never seen: too few samples, so hold.
    let id = deployment_id("tools-ghost");
    let (status, body) = app
        .put_json(
            &format!("/deployments/{id}"),
            &json!({
                "service": "ghost", "environment": "staging", "strategy": "canary",
                "hosts": [{"name": "ghost-1", "status": "released"}, {"name": "ghost-2", "status": "pending"}],
                "startedAt": chrono::Utc::now().to_rfc3339()
            }),
        )
        .await;
    assert!(status.is_success(), "{body}");

    let (status, answer) = flagger(
        &app,
        "rollout",
        &flagger_body("x", "y", json!({"deploymentId": id})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "hold is not a failed check: {answer:#}"
    );
    assert_eq!(answer["recommendation"], "hold", "{answer:#}");
    let (status, _) = flagger(
        &app,
        "confirm-promotion",
        &flagger_body("x", "y", json!({"deploymentId": id})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "no promotion on hold"
    );
    let (status, answer) = flagger(&app, "rollout", &json!({"namespace": "staging"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer:#}");
    assert_eq!(answer["error"]["path"], "name", "{answer:#}");
    let (status, answer) = flagger(
        &app,
        "rollout",
        &flagger_body("nobody", "staging", json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer:#}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("staging/nobody"),
        "{answer:#}"
    );
    let (status, answer) = flagger(
        &app,
        "rollout",
        &flagger_body("ghost", "staging", json!({})),
    )
    .await;
    assert_eq!(
        (status, &answer["deploymentId"]),
        (StatusCode::OK, &json!(id)),
        "found by name and namespace: {answer:#}"
    );
    let unauthenticated = app
        .client
        .post(format!("{}/v1/flagger/rollout", app.address))
        .json(&flagger_body("ghost", "staging", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let text = app
        .client
        .post(format!("{}/v1/flagger/rollout", app.address))
        .basic_auth("flagger", Some(READ_TOKEN))
        .body("name=ghost")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The gate: still hold when the wait runs out (2); no such deployment, a wrong token,
    // nobody listening (3).
    let (code, printed) = gate(
        &app.address,
        READ_TOKEN,
        id.as_str(),
        &["--wait", "1s", "--interval", "300ms"],
    )
    .await;
    assert_eq!(code, 2, "{printed}");
    assert!(printed.contains("hold (inconclusive"), "{printed}");
    let (code, printed) = gate(&app.address, READ_TOKEN, "no-such-release", &[]).await;
    assert_eq!(code, 3, "{printed}");
    assert!(
        printed.contains("404") && printed.contains("no-such-release"),
        "{printed}"
    );
    let (code, printed) = gate(&app.address, "not-the-token", id.as_str(), &[]).await;
    assert_eq!(code, 3, "{printed}");
    assert!(printed.contains("401"), "{printed}");
    let (code, printed) = gate(
        "http://127.0.0.1:1",
        READ_TOKEN,
        id.as_str(),
        &["--wait", "1s", "--interval", "200ms"],
    )
    .await;
    assert_eq!(code, 3, "{printed}");
    assert!(printed.contains("never answered"), "{printed}");
    let (code, printed) = gate(&app.address, READ_TOKEN, id.as_str(), &["--wait", "soon"]).await;
    assert_eq!(
        code, 3,
        "a command line it cannot read is no verdict: {printed}"
    );
    assert!(printed.contains("not a duration"), "{printed}");
}
