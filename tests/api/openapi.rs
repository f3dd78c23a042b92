//! `/openapi.json`: the document names every route with its errors and the tokens this
//! instance takes; and schemathesis (a real API client, from PyPI) fuzzes the live
//! service from it, with tokens and without: no `5xx`, every status, content type, header
//! and body as documented, invalid input refused, undocumented methods answered `405`.

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{alertmanager_body, cpu_heavy, deployment_id, spawn_app, Options, TestApp};

async fn document(app: &TestApp) -> Value {
    // No token: the document is open even when the API is not.
    let response = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// Every operation of the document, as `(method, path, operation)`.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

/// An evidence-only service with a write and a read token.
fn with_tokens() -> Options {
    Options {
        bearer: Some("write-secret"),
        read_token: Some("read-secret"),
        evidence_only: true,
        ..Options::default()
    }
}

#[tokio::test]
async fn the_document_describes_every_route_its_errors_and_the_tokens_it_takes() {
    let app = spawn_app(with_tokens()).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    let named: Vec<String> = ops.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    for route in [
        "post /v1/alerts",
        "get /reports",
        "get /reports/{deployment_id}",
        "delete /reports/{deployment_id}",
        "post /reports/{deployment_id}/rediagnose",
        "post /reports/{deployment_id}/feedback",
        "get /reports/{deployment_id}/history",
        "get /deployments",
        "get /deployments/{deployment_id}",
        "put /deployments/{deployment_id}",
        "delete /deployments/{deployment_id}",
        "get /deployments/{deployment_id}/analysis",
        "post /v1/flagger/rollout",
        "post /v1/flagger/confirm-promotion",
        "post /v1/flagger/rollback",
        "get /healthz",
        "get /readyz",
        "get /metrics",
        "get /openapi.json",
        "get /ui",
        "get /ui/",
        "get /ui/assets/style.css",
        "get /ui/reports/{deployment_id}",
        "post /ui/reports/{deployment_id}/rediagnose",
        "post /ui/reports/{deployment_id}/feedback",
    ] {
        assert!(named.contains(&route.to_owned()), "{route} in {named:?}");
    }
    assert_eq!(named.len(), 25, "{named:?}");

    let open = [
        "get /healthz",
        "get /readyz",
        "get /metrics",
        "get /openapi.json",
    ];
    for (method, path, op) in &ops {
        let name = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        if open.contains(&name.as_str()) {
            assert!(op.get("security").is_none(), "{name} takes no token");
            continue;
        }
        assert_eq!(
            op["security"],
            json!([{"bearer": []}, {"basic": []}]),
            "{name} takes a token"
        );
        for status in ["401", "503"] {
            let error = &responses[status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(error, "#/components/schemas/ErrorBody", "{name} {status}");
        }
        if path.contains("{deployment_id}") {
            assert!(
                responses.contains_key("400") && responses.contains_key("404"),
                "{name}"
            );
        }
    }
    // A query axum cannot read is refused in the API's JSON, as documented.
    let (status, body) = app.get("/reports?limit=1&limit=2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    // What a generic-webhook sink receives is described too, under `webhooks`.
    let hook = &doc["webhooks"]["report"]["post"];
    assert_eq!(
        hook["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Envelope"
    );
    // And what a platform's rollback endpoint receives.
    let rollback = &doc["webhooks"]["rollback"]["post"];
    assert_eq!(
        rollback["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/RollbackRequest"
    );
    let envelope = &doc["components"]["schemas"]["Envelope"];
    assert_eq!(
        envelope["required"],
        json!(["type", "version", "id", "timestamp", "link", "report"])
    );
    assert_eq!(
        envelope["properties"]["report"]["$ref"],
        "#/components/schemas/ReportView"
    );
    // And the whole document is valid OpenAPI 3.1 (openapi-spec-validator, from PyPI).
    let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let validator =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/openapi-spec-validator");
    let checked = Command::new(&validator)
        .args(["--schema", "3.1"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/test)", validator.display()));
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    assert_eq!(schemes["basic"], json!({"type": "http", "scheme": "basic"}));

    // A report as served has what its schema says it has: the required fields are there.
    let id = deployment_id("openapi");
    let (status, body) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let report = app.wait_final(&id).await;
    let schema = &doc["components"]["schemas"]["ReportView"];
    for field in schema["required"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        assert!(report.get(field).is_some(), "{field} in {report:#}");
    }
    for field in report.as_object().unwrap().keys() {
        assert!(
            schema["properties"].get(field).is_some(),
            "{field} is served and not described"
        );
    }
}

#[tokio::test]
async fn without_tokens_the_document_asks_for_none() {
    let app = spawn_app(Options {
        evidence_only: true,
        ..Options::default()
    })
    .await;
    let doc = document(&app).await;
    for (method, path, op) in operations(&doc) {
        assert!(op.get("security").is_none(), "{method} {path}");
    }
    assert!(doc["components"].get("securitySchemes").is_none());
}

fn schemathesis() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test (it installs schemathesis into .venv-test)",
        bin.display()
    );
    bin
}

/// Runs schemathesis against the service at `address`, sending `token` if given and, half
/// the time, `known` as the deployment id of a path (so that a real report and
/// registration are read, changed and deleted, not only 404s); panics with its report
/// when a check fails.
fn fuzz(address: &str, token: Option<&str>, known: Option<&str>, name: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("schemathesis-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schemathesis.toml");
    // Invalid input may also be refused as too large (a 2,001-character comment of
    // four-byte characters is over a feedback's 16 KiB): `413` is a refusal too.
    let mut toml = "[checks.negative_data_rejection]\n\
         expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n\n"
        .to_owned();
    if let Some(id) = known {
        toml.push_str(&format!(
            "[dictionaries.known]\nvalues = [{id:?}]\n\n[parameters]\n\
             \"path.deployment_id\" = {{ dictionary = \"known\", probability = 0.5 }}\n"
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let mut command = Command::new(schemathesis());
    command.arg("--config-file").arg(&config);
    command
        .arg("run")
        .arg(format!("{address}/openapi.json"))
        .args(["--checks", "all"])
        // The service checks more than a schema can say (a registration's repository must
        // be on GitHub, a RED template must parse, a cursor must be one it gave): valid
        // by the schema is not always accepted, and that is not a fault.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "30", "--seed", "7", "--workers", "1"])
        .args(["--request-timeout", "20", "--no-color"])
        .arg("--report-dir")
        .arg(&dir)
        .args(["--report", "junit"])
        .current_dir(env!("CARGO_TARGET_TMPDIR"));
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.output().expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It did test the API, not just read the document.
    assert!(stdout.contains("passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_fault_with_the_write_token() {
    let _heavy = cpu_heavy().await;
    let app = spawn_app(with_tokens()).await;
    // A report and a registration to read, so that the fuzzing reaches past the 404s.
    let id = deployment_id("fuzz");
    let (status, body) = app
        .put_json(
            &format!("/deployments/{id}"),
            &json!({"service": "shop", "hosts": ["web-1"], "strategy": "canary"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.post_alerts(&alertmanager_body(&id, "firing")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_final(&id).await;
    let address = app.address.clone();
    tokio::task::spawn_blocking(move || fuzz(&address, Some("write-secret"), Some(&id), "tokens"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_fault_without_tokens() {
    let _heavy = cpu_heavy().await;
    let app = spawn_app(Options {
        evidence_only: true,
        ..Options::default()
    })
    .await;
    let address = app.address.clone();
    tokio::task::spawn_blocking(move || fuzz(&address, None, None, "open"))
        .await
        .unwrap();
}
