//! The report API: reading, listing, re-diagnosis with history, deletion, operations.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options};

#[tokio::test]
async fn an_unknown_deployment_is_a_404_with_a_json_body() {
    let app = spawn_app(Options::default()).await;

    let (status, body) = app.get("/reports/no-such-deployment").await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-deployment"));
    let (status, _) = app
        .post_json("/reports/no-such-deployment/rediagnose", &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/reports/no-such-deployment/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rediagnosis_keeps_the_previous_version_as_history() {
    let app = spawn_app(Options::default()).await;
    let id = deployment_id("again");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let first = app.wait_final(&id).await;
    assert_eq!(first["status"], "completed");

    let (status, restarted) = app
        .post_json(&format!("/reports/{id}/rediagnose"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{restarted}");
    assert_eq!(restarted["version"], 2);
    let (status, conflict) = app
        .post_json(&format!("/reports/{id}/rediagnose"), &json!({}))
        .await;
    let second = app.wait_final(&id).await;

    // The second request came while the first re-diagnosis was queued or running.
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(second["status"], "completed");
    assert_eq!(second["version"], 2);
    let (status, history) = app.get(&format!("/reports/{id}/history")).await;
    assert_eq!(status, StatusCode::OK);
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["content"], first["content"]);
    assert_eq!(app.llm.requests().len(), 4, "two diagnoses ran");
}

#[tokio::test]
async fn a_rediagnosis_from_another_sites_page_is_refused_and_changes_nothing() {
    let app = spawn_app(Options {
        bearer: Some("write-token-rediag"),
        ..Options::default()
    })
    .await;
    let id = deployment_id("csrf");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.wait_final(&id).await;
    let path = format!("/reports/{id}/rediagnose");

    // What a hostile page's form can send, with the browser's cached credentials: its own
    // Origin (or `null`), a form's content type, or no body at all.
    for origin in ["https://evil.example", "null"] {
        let (status, body) = app
            .post_with(&path, |r| r.header("origin", origin).json(&json!({})))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, body) = app
        .post_with(&path, |r| {
            r.header("content-type", "application/x-www-form-urlencoded")
                .body("x=1")
        })
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, _) = app.post_with(&path, |r| r).await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no body, no type"
    );
    let (status, body) = app
        .post_with(&path, |r| r.json(&json!({"force": true})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(report["version"], 1, "nothing was restarted: {report}");
    assert_eq!(app.llm.requests().len(), 2, "no AI spent");

    // An API client (no Origin, JSON, or an empty JSON body) and the service's own page.
    let own = app.address.clone();
    let (status, body) = app
        .post_with(&path, |r| {
            r.header("origin", own)
                .header("content-type", "application/json")
        })
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["version"], 2);
    // Every other change checks the Origin too.
    let (status, _) = app
        .post_with("/v1/alerts", |r| {
            r.header("origin", "https://evil.example")
                .json(&alertmanager_body(&deployment_id("csrf-alert"), "firing"))
        })
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn listing_filters_by_status_pages_by_time_and_rejects_bad_parameters() {
    let app = spawn_app(Options::default()).await;
    let ids: Vec<String> = (0..3).map(|i| deployment_id(&format!("list{i}"))).collect();
    for id in &ids {
        app.post_alerts(&alertmanager_body(id, "firing")).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for id in &ids {
        app.wait_final(id).await;
    }

    let (_, page1) = app.get("/reports?status=completed&limit=2").await;
    let names: Vec<&str> = page1["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["deploymentId"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![ids[2].as_str(), ids[1].as_str()],
        "newest first"
    );
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = app
        .get(&format!(
            "/reports?status=completed&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["reports"][0]["deploymentId"], ids[0].as_str());
    assert!(page2["nextCursor"].is_null(), "the last page: {page2}");
    let (_, failed) = app.get("/reports?status=failed").await;
    assert!(failed["reports"].as_array().unwrap().is_empty());

    for bad in [
        "/reports?status=done",
        "/reports?limit=0",
        "/reports?limit=x",
        "/reports?before=yesterday",
        "/reports?cursor=%%%",
    ] {
        let (status, body) = app.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_query", "{bad}");
    }
}

#[tokio::test]
async fn delete_removes_the_report_and_its_history() {
    let app = spawn_app(Options::default()).await;
    let id = deployment_id("del");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.wait_final(&id).await;

    let response = app
        .client
        .delete(format!("{}/reports/{id}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app
        .client
        .delete(format!("{}/reports/{id}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_readiness_and_metrics_report_the_service() {
    let app = spawn_app(Options::default()).await;
    let id = deployment_id("metrics");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.wait_final(&id).await;

    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["store"]["ok"], true);
    let text = app.metrics().await;
    for line in [
        "deploy_diagnosis_alerts_received_total{outcome=\"started\"} 1",
        "deploy_diagnosis_alerts_received_total{outcome=\"exists\"} 1",
        "deploy_diagnosis_reports{status=\"completed\"} 1",
        "deploy_diagnosis_queue_depth 0",
        "deploy_diagnosis_diagnosis_duration_seconds_count{status=\"completed\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn feedback_is_stored_on_the_finished_version_kept_in_history_and_counted() {
    let app = spawn_app(Options::default()).await;
    let id = deployment_id("feedback");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    assert_eq!(app.wait_final(&id).await["status"], "completed");
    let path = format!("/reports/{id}/feedback");

    let (status, body) = app
        .post_json(
            &path,
            &json!({"score": 4, "rootCauseCorrect": true, "comment": "根因对了"}),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(report["feedback"]["score"], 4, "{report:#}");
    assert_eq!(report["feedback"]["rootCauseCorrect"], true);
    assert_eq!(report["feedback"]["comment"], "根因对了");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "deploy_diagnosis_feedback_total{score=\"4\",root_cause_correct=\"true\",engine=\"ai\"} 1"
        ),
        "{metrics}"
    );
    let (status, _) = app
        .post_json(&format!("/reports/{id}/rediagnose"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, history) = app.get(&format!("/reports/{id}/history")).await;
    assert_eq!(
        history["versions"][0]["feedback"]["score"], 4,
        "{history:#}"
    );
    let (_, again) = app.get(&format!("/reports/{id}")).await;
    assert!(
        again.get("feedback").is_none(),
        "a new version starts without: {again:#}"
    );
}

#[tokio::test]
async fn bad_feedback_gets_a_400_naming_the_field_and_changes_nothing() {
    let app = spawn_app(Options::default()).await;
    let id = deployment_id("badfeedback");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.wait_final(&id).await;
    let path = format!("/reports/{id}/feedback");
    let long = "长".repeat(2001);
    let cases = [
        (json!({"score": 7, "rootCauseCorrect": true}), "score"),
        (json!({"score": "good", "rootCauseCorrect": true}), "score"),
        (json!({"score": 3}), "rootCauseCorrect"),
        (
            json!({"score": 3, "rootCauseCorrect": "yes"}),
            "rootCauseCorrect",
        ),
        (
            json!({"score": 3, "rootCauseCorrect": true, "stars": 5}),
            "stars",
        ),
        (
            json!({"score": 3, "rootCauseCorrect": true, "comment": long}),
            "comment",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = app.post_json(&path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["path"], field, "{body}: {error}");
    }
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert!(report.get("feedback").is_none(), "{report:#}");
    let (status, _) = app
        .post_json(
            "/reports/nope/feedback",
            &json!({"score": 3, "rootCauseCorrect": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn feedback_on_a_report_still_generating_is_a_conflict() {
    let app = spawn_app(Options {
        llm_delay: std::time::Duration::from_secs(5),
        ..Options::default()
    })
    .await;
    let id = deployment_id("earlyfeedback");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;

    let (status, body) = app
        .post_json(
            &format!("/reports/{id}/feedback"),
            &json!({"score": 1, "rootCauseCorrect": false}),
        )
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}
