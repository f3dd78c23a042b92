//! The alert lifecycle: what a further alert does to a deployment's report, by its status
//! (the table in `src/intake.rs` and docs/api.md).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fake_llm::Script;
use crate::helpers::{
    alertmanager_body, canary_deployment, deployment_id, evidence_ending, spawn_app, Options,
};

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

/// An analysis that says *rollback* raises the service's own alert through the intake,
/// under `Release.AutoRollback` and the deployment's policy only: it diagnoses a completed
/// report that did not say *rollback* again, once per tag, and a new tag asks again.
#[tokio::test]
async fn an_analysis_rollback_reruns_a_completed_report_once_per_tag_and_only_when_asked() {
    use std::sync::Arc;
    use std::time::Duration;

    use deploy_diagnosis::config::AutoRollback;
    use deploy_diagnosis::intake::{AlertOutcome, Intake, ANALYSIS_ALERT};
    use deploy_diagnosis::metrics::Metrics;
    use deploy_diagnosis::model::alert::{Alert, DeploymentId};
    use deploy_diagnosis::model::deployment::{Deployment, RollbackPolicy};
    use deploy_diagnosis::model::report::{Report, ReportStatus};
    use deploy_diagnosis::store::embedded::EmbeddedStore;
    use deploy_diagnosis::store::{
        DeploymentStore, Diagnosis, Lease, LeaseQueue, ReportStore, Wake,
    };

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("reports.sqlite3")).unwrap());
    store.migrate().await.unwrap();
    let intake = |auto_rollback| Intake {
        store: store.clone(),
        deployments: store.clone(),
        wake: Arc::new(Wake::default()),
        metrics: Arc::new(Metrics::new()),
        watch_minutes: 60,
        rerun_after: Duration::from_secs(60),
        max_history: 20,
        auto_rollback,
    };
    let now = chrono::Utc::now();
    let id = DeploymentId::parse(&deployment_id("analysis-rollback")).unwrap();
    let mut deployment = canary_deployment(
        &id,
        now,
        RollbackPolicy {
            auto_rollback: false,
            url: "http://127.0.0.1:9/rollback".into(),
            secret: String::new(),
            signed: false,
        },
    );
    store.put_deployment(&deployment).await.unwrap();
    let reasons = vec!["web-1 errors %: 30% against 0% on the controls".to_owned()];

    // An earlier alert's report, completed with a *hold*.
    let mut alert = Alert {
        status: "firing".into(),
        alertname: "HighErrorRate".into(),
        ..Default::default()
    };
    alert.labels.insert("deploymentId".into(), id.to_string());
    store
        .insert(&Report::new(id.clone(), alert, now))
        .await
        .unwrap();
    let diagnoses: &dyn LeaseQueue<Diagnosis> = store.as_ref();
    diagnoses
        .claim("w1", now, now + chrono::Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let hold = json!({
        "verdict": "inconclusive", "recommendation": "hold", "confidence": 0.0,
        "reasons": ["too few samples after the release yet"], "comparisons": []
    });
    let finish = evidence_ending(now, hold, Vec::new());
    let held = Lease::of(&store.get(&id).await.unwrap().unwrap(), "w1");
    assert!(diagnoses.complete(&held, &finish).await.unwrap());

    // Not asked: the switch off, or the policy's autoRollback false.
    let asked = |auto, d: Deployment| {
        let intake = intake(auto);
        let reasons = reasons.clone();
        async move {
            intake
                .analysis_says_rollback(&d, &reasons, now)
                .await
                .unwrap()
        }
    };
    assert!(asked(AutoRollback::Off, deployment.clone()).await.is_none());
    assert!(asked(AutoRollback::On, deployment.clone()).await.is_none());
    let stored = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.version, stored.status()),
        (1, ReportStatus::Completed)
    );

    // Asked: the completed report is diagnosed again, with the alert on it.
    deployment.rollback_policy.as_mut().unwrap().auto_rollback = true;
    let result = asked(AutoRollback::On, deployment.clone()).await.unwrap();
    assert_eq!(result.outcome, AlertOutcome::Restarted);
    let stored = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.version, stored.status()),
        (2, ReportStatus::Generating)
    );
    let raised: Vec<&Alert> = stored
        .related_alerts
        .iter()
        .map(|r| &r.alert)
        .filter(|a| a.alertname == ANALYSIS_ALERT)
        .collect();
    assert_eq!(raised.len(), 1, "{stored:?}");
    assert_eq!(raised[0].tag, "v2.0.0");
    assert!(raised[0].desc.contains("30% against 0%"), "{:?}", raised[0]);

    // Once per tag; a new release asks again.
    assert!(asked(AutoRollback::On, deployment.clone()).await.is_none());
    deployment.tag = "v2.0.1".into();
    let again = asked(AutoRollback::DryRun, deployment).await.unwrap();
    assert_eq!(
        again.outcome,
        AlertOutcome::Attached,
        "the report is generating"
    );
}
