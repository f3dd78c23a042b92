//! Cost bounds: AI diagnoses per hour and tokens per day (past them a diagnosis runs
//! without AI), a full queue answered 503 with Retry-After (Alertmanager retries; nothing
//! is stored), and tool calls per turn and tool output per diagnosis capped in both agent
//! loops; every limit hit is counted.

use reqwest::StatusCode;
use serde_json::Value;

use crate::fake_llm::Script;
use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options, StoreChoice};

#[tokio::test]
async fn past_an_ai_budget_a_diagnosis_runs_without_ai_saying_why() {
    for (budget, label) in [
        ("Budget:\n  DiagnosesPerHour: 1\n", "diagnoses_per_hour"),
        ("Budget:\n  TokensPerDay: 1\n", "tokens_per_day"),
    ] {
        let app = spawn_app(Options {
            sections: budget.into(),
            ..Options::default()
        })
        .await;
        let (first, second) = (deployment_id("budget-a"), deployment_id("budget-b"));
        app.post_alerts(&alertmanager_body(&first, "firing")).await;
        assert_eq!(app.wait_final(&first).await["engine"], "ai", "{label}");
        let asked = app.llm.requests().len();
        app.post_alerts(&alertmanager_body(&second, "firing")).await;
        let report = app.wait_final(&second).await;
        // No evidence in this test: without AI the report fails, saying why.
        assert_eq!(report["status"], "failed", "{label}: {report}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("AI budget exhausted"), "{error}");
        assert_eq!(
            app.llm.requests().len(),
            asked,
            "{label}: the AI was not asked"
        );
        let metrics = app.metrics_with("reason=\"budget_exhausted\"").await;
        assert!(
            metrics.contains(&format!(
                "deploy_diagnosis_limit_hits_total{{limit=\"{label}\"}} 1"
            )),
            "{metrics}"
        );
        assert!(metrics.contains("reason=\"budget_exhausted\""), "{metrics}");
    }
}

/// The budget is the store's: two instances on one MongoDB database share one hourly
/// cap, and an instance started anew on an embedded store keeps the window.
#[tokio::test]
async fn the_ai_budget_is_shared_by_every_instance_on_a_store_and_kept_across_restarts() {
    let app = spawn_app(Options {
        store: StoreChoice::Mongo,
        sections: "Budget:\n  DiagnosesPerHour: 2\n".into(),
        ..Options::default()
    })
    .await;
    let other = app.another_instance().await;
    let ids: Vec<String> = (0..6).map(|_| deployment_id("shared-budget")).collect();
    for (n, id) in ids.iter().enumerate() {
        let address = if n % 2 == 0 {
            &app.address
        } else {
            &other.address
        };
        let response = app
            .client
            .post(format!("{address}/v1/alerts"))
            .json(&alertmanager_body(id, "firing"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let mut engines = Vec::new();
    for id in &ids {
        let report = app.wait_final_at(&other, id).await;
        if report["engine"] != "ai" {
            refused_by_the_hourly_budget(&report);
        }
        engines.push(report["engine"].as_str().unwrap_or("none").to_owned());
    }
    assert_eq!(
        engines.iter().filter(|e| *e == "ai").count(),
        2,
        "a cap of 2 an hour over both instances: {engines:?}"
    );

    let app = spawn_app(Options {
        sections: "Budget:\n  DiagnosesPerHour: 1\n".into(),
        ..Options::default()
    })
    .await;
    let first = deployment_id("kept-budget");
    app.post_alerts(&alertmanager_body(&first, "firing")).await;
    assert_eq!(app.wait_final(&first).await["engine"], "ai");
    // A new instance on the same store file: its window starts from the store, not empty.
    let restarted = app.another_instance().await;
    let second = deployment_id("kept-budget");
    let status = app
        .post_alerts_at(&restarted, &alertmanager_body(&second, "firing"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    refused_by_the_hourly_budget(&app.wait_final_at(&restarted, &second).await);
}

fn refused_by_the_hourly_budget(report: &Value) {
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Budget.DiagnosesPerHour"),
        "{report}"
    );
}

#[tokio::test]
async fn a_full_queue_is_a_503_with_retry_after_and_stores_nothing() {
    let app = spawn_app(Options {
        script: Script::Hang,
        max_queue: 1,
        ..Options::default()
    })
    .await;
    // Two workers take two reports; the third waits: the queue holds one.
    for n in 0..3 {
        let (status, _) = app
            .post_alerts(&alertmanager_body(
                &deployment_id(&format!("q{n}")),
                "firing",
            ))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    let refused = deployment_id("q-full");
    let response = app
        .client
        .post(format!("{}/v1/alerts", app.address))
        .json(&alertmanager_body(&refused, "firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "60");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
    let (status, _) = app.get(&format!("/reports/{refused}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
    assert!(app
        .metrics()
        .await
        .contains("deploy_diagnosis_limit_hits_total{limit=\"max_queue\"} 1"));
}

#[tokio::test]
async fn tool_calls_per_turn_and_tool_output_per_diagnosis_are_capped_in_both_loops() {
    for native in [true, false] {
        let queries: Vec<String> = (0..6)
            .map(|i| format!("node_cpu_seconds_total + {i}"))
            .collect();
        let app = spawn_app(Options {
            script: Script::Parallel(queries),
            native,
            ai_extra: "  MaxToolCallsPerTurn: 4\n  ToolResultMaxChars: 256\n  ToolResultBudgetChars: 600\n",
            ..Options::default()
        })
        .await;
        let id = deployment_id(if native { "capn" } else { "capp" });
        app.post_alerts(&alertmanager_body(&id, "firing")).await;
        let report = app.wait_final(&id).await;
        assert_eq!(report["status"], "completed", "native={native}: {report}");
        let usage = &report["usage"];
        assert_eq!(usage["refusedToolCalls"], 2, "native={native}: {usage}");
        assert_eq!(usage["toolCalls"], 4, "native={native}: {usage}");
        assert!(
            usage["withheldToolResults"].as_u64().unwrap() >= 1,
            "native={native}: {usage}"
        );
        let second = app.llm.requests()[1].body["messages"].to_string();
        assert!(
            second.contains("not run: at most 4 tool calls a turn"),
            "{second}"
        );
        assert!(second.contains("tool output budget"), "{second}");
        let needle = "deploy_diagnosis_limit_hits_total{limit=\"tool_calls_per_turn\"} 2";
        let metrics = app.metrics_with(needle).await;
        assert!(metrics.contains(needle), "{metrics}");
    }
}
