//! The alert lifecycle: what a further alert does to a deployment's report, by its status
//! (the table in `src/intake.rs` and docs/api.md).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fake_llm::Script;
use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options};

/// The deployment's alert, with another fingerprint, name and start than the first.
fn another(id: &str, status: &str, name: &str) -> Value {
    let mut body = alertmanager_body(id, status);
    let alert = &mut body["alerts"][0];
    alert["fingerprint"] = json!(format!("fp-{name}"));
    alert["labels"]["alertname"] = json!(name);
    alert["startsAt"] = json!("2026-11-25T10:07:00Z");
    if status == "resolved" {
        alert["endsAt"] = json!("2026-11-25T10:30:00Z");
    }
    body
}

async fn outcome(app: &crate::helpers::TestApp, body: &Value) -> Value {
    let (status, answer) = app.post_alerts(body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["alerts"][0].clone()
}

#[tokio::test]
async fn a_new_alert_reruns_a_failed_report_keeping_the_failed_version() {
    let app = spawn_app(Options {
        // The first diagnosis meets a refusal (400 is not retried); the next one works.
        script: Script::StatusThenReport {
            status: 400,
            times: 1,
            query: "up".into(),
        },
        ..Options::default()
    })
    .await;
    let id = deployment_id("rerun");
    assert_eq!(
        outcome(&app, &alertmanager_body(&id, "firing")).await["outcome"],
        "started"
    );
    assert_eq!(app.wait_final(&id).await["status"], "failed");

    // The same alert resent is nothing new.
    let again = outcome(&app, &alertmanager_body(&id, "firing")).await;
    assert_eq!(again["outcome"], "exists", "{again}");

    let rerun = outcome(&app, &another(&id, "firing", "NodeHighLoad")).await;
    assert_eq!(rerun["outcome"], "restarted", "{rerun}");
    assert_eq!(rerun["status"], "generating");
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["version"], 2);
    assert_eq!(
        report["relatedAlerts"][0]["alert"]["alertname"],
        "NodeHighLoad"
    );
    let (_, history) = app.get(&format!("/reports/{id}/history")).await;
    assert_eq!(history["versions"][0]["status"], "failed", "{history}");
    // The new diagnosis was told of the alert that restarted it.
    let last_prompt = app
        .llm
        .requests()
        .iter()
        .rev()
        .map(|r| r.prompt())
        .find(|p| !p.is_empty())
        .unwrap();
    assert!(last_prompt.contains("同一部署的后续告警") && last_prompt.contains("\"NodeHighLoad\""));
}

#[tokio::test]
async fn a_flapping_failure_is_run_again_at_most_once_per_rerun_interval() {
    let app = spawn_app(Options {
        script: Script::StatusThenReport {
            status: 400,
            times: 1,
            query: "up".into(),
        },
        rerun_after_s: 3600,
        sections: "Report:\n  MaxHistory: 2\n".into(),
        ..Options::default()
    })
    .await;
    let id = deployment_id("flap");
    outcome(&app, &alertmanager_body(&id, "firing")).await;
    assert_eq!(app.wait_final(&id).await["status"], "failed");
    let asked = app.llm.requests().len();

    // A burst of new alerts (the failure flaps): each is recorded, none re-runs it.
    for n in 0..5 {
        let answer = outcome(&app, &another(&id, "firing", &format!("Flap{n}"))).await;
        assert_eq!(answer["outcome"], "recorded", "{answer}");
        assert!(
            answer["reason"]
                .as_str()
                .unwrap()
                .contains("Worker.RerunAfterSeconds"),
            "{answer}"
        );
    }
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(
        (report["status"].clone(), report["version"].clone()),
        (json!("failed"), json!(1))
    );
    assert_eq!(report["relatedAlerts"].as_array().unwrap().len(), 5);
    assert_eq!(app.llm.requests().len(), asked, "no AI spent on the burst");
    // A person may still run it again at once.
    let (status, _) = app
        .post_json(&format!("/reports/{id}/rediagnose"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.wait_final(&id).await["version"], 2);
}

#[tokio::test]
async fn further_alerts_are_recorded_a_completed_report_is_not_rerun_and_resolution_is_stamped() {
    let app = spawn_app(Options {
        llm_delay: std::time::Duration::from_millis(1500),
        ..Options::default()
    })
    .await;
    let id = deployment_id("life");
    assert_eq!(
        outcome(&app, &alertmanager_body(&id, "firing")).await["outcome"],
        "started"
    );
    // While the diagnosis runs: attached.
    let attached = outcome(&app, &another(&id, "firing", "NodeHighLoad")).await;
    assert_eq!(attached["outcome"], "attached", "{attached}");
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed");
    let requests = app.llm.requests().len();

    // Completed: recorded, no new diagnosis.
    let recorded = outcome(&app, &another(&id, "firing", "NodeDiskFull")).await;
    assert_eq!(recorded["outcome"], "recorded", "{recorded}");
    assert!(recorded["reason"].as_str().unwrap().contains("rediagnose"));
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(report["status"], "completed");
    let names: Vec<&str> = report["relatedAlerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"]["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["NodeHighLoad", "NodeDiskFull"]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.llm.requests().len(), requests, "no new diagnosis");

    // Resolved: stamped with the alert's end; firing again clears it.
    let resolved = outcome(&app, &another(&id, "resolved", "NodeDiskFull")).await;
    assert_eq!(resolved["outcome"], "resolved", "{resolved}");
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(report["resolvedAt"], "2026-11-25T10:30:00Z");
    outcome(&app, &another(&id, "firing", "NodeOOM")).await;
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert!(report["resolvedAt"].is_null(), "{report}");

    // A resolved alert for a deployment with no report changes nothing.
    let none = outcome(&app, &alertmanager_body(&deployment_id("none"), "resolved")).await;
    assert_eq!(none["outcome"], "skipped", "{none}");
    assert!(app
        .metrics()
        .await
        .contains("deploy_diagnosis_alerts_received_total{outcome=\"recorded\"} 2"));
}
