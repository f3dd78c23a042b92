//! The deployments registry over HTTP: register, read, list, unregister; bad input is a
//! `400` naming the field and changes nothing; writes need the token; alerts without a
//! `deploymentId` are attributed to a deployment on their host, within the watch window.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{deployment_id, spawn_app, Options, StoreChoice};

fn body(hosts: Value, minutes_ago: i64) -> Value {
    json!({
        "service": "shop",
        "repoAddress": "acme/shop",
        "tag": "v2.0.0",
        "previousTag": "v1.9.0",
        "hosts": hosts,
        "deployedAt": (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339(),
    })
}

fn unlabelled(labels: Value, minutes_ago: i64) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "dd",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {},
            "startsAt": (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "ab"
        }]
    })
}

#[tokio::test]
async fn deployments_are_registered_read_listed_and_unregistered() {
    for store in [StoreChoice::Embedded, StoreChoice::Mongo] {
        let app = spawn_app(Options {
            store,
            ..Options::default()
        })
        .await;
        let (a, b) = (deployment_id("reg-a"), deployment_id("reg-b"));
        let (status, first) = app
            .put_json(&format!("/deployments/{a}"), &body(json!(["web-1"]), 1))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["deploymentId"], a.as_str());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (status, again) = app
            .put_json(
                &format!("/deployments/{a}"),
                &body(json!(["web-1", "web-2"]), 1),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "registered again: {again}");
        assert_eq!(
            again["hosts"],
            json!([{"name": "web-1", "status": "released"}, {"name": "web-2", "status": "released"}]),
            "host names are registered as released hosts"
        );
        assert_eq!(again["strategy"], "all");
        assert_eq!(again["createdTime"], first["createdTime"]);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        app.put_json(&format!("/deployments/{b}"), &body(json!([]), 1))
            .await;

        let (status, got) = app.get(&format!("/deployments/{a}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, again);
        let (_, page) = app.get("/deployments?limit=1").await;
        assert_eq!(
            page["deployments"][0]["deploymentId"],
            b.as_str(),
            "newest first"
        );
        let next = page["nextCursor"].as_str().unwrap().to_owned();
        let (_, rest) = app
            .get(&format!("/deployments?limit=1&cursor={next}"))
            .await;
        assert_eq!(rest["deployments"][0]["deploymentId"], a.as_str(), "{rest}");

        let (status, bad) = app.get("/deployments?cursor=not-a-cursor!").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(bad["error"]["path"], "cursor");

        let (status, _) = app.delete(&format!("/deployments/{a}")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, missing) = app.get(&format!("/deployments/{a}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(missing["error"]["code"], "not_found");
        let (status, _) = app.delete(&format!("/deployments/{a}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_bad_registration_is_a_400_naming_the_field_and_changes_nothing() {
    let app = spawn_app(Options {
        bearer: Some("write-token-0123456789"),
        ..Options::default()
    })
    .await;
    let id = deployment_id("bad");
    let path = format!("/deployments/{id}");
    for (bad, field) in [
        (json!({"hosts": ["web-1", "two words"]}), "hosts[1]"),
        (json!({"hosts": "web-1"}), "hosts"),
        (json!({"repoAddress": "not a repository"}), "repoAddress"),
        (json!({"deployedAt": "yesterday"}), "deployedAt"),
        (json!({"tag": "v1", "branch": "main"}), "branch"),
        (
            json!({"hosts": [{"name": "web-1", "status": "halfway"}]}),
            "hosts[0].status",
        ),
        (json!({"strategy": "rolling"}), "strategy"),
        (
            json!({"thresholds": {"errorRateMaxPercent": 101}}),
            "thresholds.errorRateMaxPercent",
        ),
        (json!({"red": {"rate": "sum(rate(x[1m]))"}}), "red.rate"),
        // Checked by the real Prometheus: a template it cannot parse.
        (
            json!({"red": {"errors": "sum(rate(http_requests_total{hostname=~{{hostname}}}[1m]) /"}}),
            "red.errors",
        ),
    ] {
        let (status, answer) = app.put_json(&path, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_body");
        assert_eq!(answer["error"]["path"], field, "{bad}: {answer}");
    }
    let (status, _) = app.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");

    // A rollout as the deploy platform records it is registered whole.
    let rollout = json!({
        "hosts": ["web-1", {"name": "web-2", "status": "pending"},
                  {"name": "web-3", "releasedAt": "2026-12-01T10:02:00Z"}],
        "strategy": "canary", "startedAt": "2026-12-01T10:00:00Z",
        "red": {"rate": "sum(rate(http_requests_total{hostname=~{{hostname}}}[1m]))",
                "errors": "100 * sum(rate(http_requests_total{hostname=~{{hostname}},code=~\"5..\"}[1m])) / sum(rate(http_requests_total{hostname=~{{hostname}}}[1m]))"},
        "thresholds": {"errorRateMaxPercent": 1, "durationP99MaxMs": 500}
    });
    let (status, stored) = app.put_json(&path, &rollout).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(
        stored["hosts"][1],
        json!({"name": "web-2", "status": "pending"})
    );
    assert_eq!(stored["hosts"][2]["releasedAt"], "2026-12-01T10:02:00Z");
    assert_eq!(
        (&stored["strategy"], &stored["startedAt"]),
        (&json!("canary"), &json!("2026-12-01T10:00:00Z"))
    );
    assert_eq!(
        stored["thresholds"],
        json!({"errorRateMaxPercent": 1.0, "durationP99MaxMs": 500.0})
    );
    assert_eq!(stored["red"]["duration"], "");
    let (_, got) = app.get(&path).await;
    assert_eq!(got, stored);
    assert_eq!(app.delete(&path).await.0, StatusCode::NO_CONTENT);

    // Writes need the token.
    let response = app
        .client
        .put(format!("{}{path}", app.address))
        .json(&body(json!(["web-1"]), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .client
        .put(format!("{}{path}", app.address))
        .header("content-type", "text/plain")
        .bearer_auth("write-token-0123456789")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = app.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "still nothing");
}

#[tokio::test]
async fn unlabelled_alerts_are_attributed_by_host_within_the_watch_window_or_skipped() {
    let app = spawn_app(Options {
        sections: "Deployments:\n  WatchMinutes: 30\n".into(),
        ..Options::default()
    })
    .await;
    let (old, new) = (deployment_id("old"), deployment_id("new"));
    app.put_json(
        &format!("/deployments/{old}"),
        &body(json!(["10.0.0.7:9100"]), 20),
    )
    .await;
    app.put_json(
        &format!("/deployments/{new}"),
        &body(json!(["10.0.0.7"]), 10),
    )
    .await;

    // By instance (port ignored): the most recent deployment on the host.
    let (status, intake) = app
        .post_alerts(&unlabelled(
            json!({"alertname": "NodeDown", "instance": "10.0.0.7:9100"}),
            5,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let entry = &intake["alerts"][0];
    assert_eq!(entry["outcome"], "started", "{intake}");
    assert_eq!(entry["deploymentId"], new.as_str());
    assert_eq!(entry["attributed"]["by"], "instance");
    assert!(entry["attributed"]["reason"]
        .as_str()
        .unwrap()
        .contains("Deployments.WatchMinutes"));
    let (_, report) = app.get(&format!("/reports/{new}")).await;
    assert_eq!(
        report["deployment"]["hosts"],
        json!([{"name": "10.0.0.7", "status": "released"}]),
        "{report}"
    );

    // Started before the newer deployment: the older one.
    let (_, intake) = app
        .post_alerts(&unlabelled(
            json!({"alertname": "NodeDown", "instance": "10.0.0.7:9100"}),
            15,
        ))
        .await;
    assert_eq!(
        intake["alerts"][0]["deploymentId"],
        old.as_str(),
        "{intake}"
    );

    // Outside the window, on another host, or with no host at all: skipped, saying why.
    for (labels, minutes_ago, why) in [
        (
            json!({"alertname": "X", "hostname": "10.0.0.7"}),
            60,
            "WatchMinutes (30)",
        ),
        (
            json!({"alertname": "X", "hostname": "db-1,db-2"}),
            5,
            "hostname \"db-2\"",
        ),
        (json!({"alertname": "X"}), 5, "no hostname or instance"),
    ] {
        let (status, intake) = app.post_alerts(&unlabelled(labels, minutes_ago)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let entry = &intake["alerts"][0];
        assert_eq!(entry["outcome"], "skipped", "{intake}");
        assert!(entry["reason"].as_str().unwrap().contains(why), "{intake}");
    }
    let (_, all) = app.get("/reports").await;
    assert_eq!(all["reports"].as_array().unwrap().len(), 2, "{all}");
}
