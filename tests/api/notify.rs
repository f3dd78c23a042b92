//! Notifications through the durable outbox, delivered to local receivers that check
//! what a real receiver checks: the Standard Webhooks signature (a wrong or missing one is
//! a `401`, and a timestamp more than five minutes off is refused), the envelope's type
//! and version. One receiver fails twice before accepting, one never answers, and a
//! `kill -9` between the report's completion and its delivery loses nothing.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_llm::Script;
use crate::helpers::{
    alertmanager_body, canary_deployment, deployment_id, evidence_ending, spawn_app, wait_final,
    Options, ProcessFiles,
};
use crate::receiver::{Mode, Receiver, SECRET};
use crate::servers::free_port;

/// A `Notify:` section with these sinks (name, url, secret).
fn notify_yaml(sinks: &[(&str, &str, Option<&str>)]) -> String {
    let mut yaml = "Notify:\n  TimeoutSeconds: 2\n  MaxAttempts: 5\n  Sinks:\n".to_owned();
    for (name, url, secret) in sinks {
        yaml.push_str(&format!(
            "    - Name: {name}\n      Kind: webhook\n      URL: {url}\n      Secret: \"{}\"\n",
            secret.unwrap_or("")
        ));
    }
    yaml.push_str("UI:\n  ExternalURL: https://dd.example\n");
    yaml
}

/// Polls the report until `ok` holds for its notifications.
async fn wait_notifications(
    app: &crate::helpers::TestApp,
    id: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (_, report) = app.get(&format!("/reports/{id}")).await;
        let notifications = report["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if ok(&notifications) {
            return notifications;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "notifications never settled: {notifications:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of<'a>(notifications: &'a [Value], sink: &str) -> &'a Value {
    notifications
        .iter()
        .find(|n| n["sink"] == sink)
        .unwrap_or_else(|| panic!("no notification to {sink}: {notifications:#?}"))
}

#[tokio::test]
async fn a_finished_report_reaches_every_sink_signed_once_and_a_dead_sink_delays_nobody() {
    let ok = Receiver::start(Mode::Accept, Some(SECRET)).await;
    let flaky = Receiver::start(Mode::FailFirst(2), Some(SECRET)).await;
    let dead = Receiver::start(Mode::Hang, None).await;
    let app = spawn_app(Options {
        sections: notify_yaml(&[
            ("dead", &dead.url, None),
            ("ops", &ok.url, Some(SECRET)),
            ("flaky", &flaky.url, Some(SECRET)),
        ]),
        ..Options::default()
    })
    .await;
    let id = deployment_id("notify");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report:#}");

    // The healthy sink has it at once, signed, even though the dead one never answers.
    let got = ok.wait_for(1, Duration::from_secs(5)).await;
    let message = &got[0].body;
    assert_eq!(message["type"], "report.completed");
    assert_eq!(message["version"], 1);
    assert_eq!(message["report"]["deploymentId"], id.as_str());
    assert_eq!(message["report"]["content"], report["content"]);
    assert_eq!(
        message["link"],
        format!("https://dd.example/ui/reports/{id}")
    );
    assert_eq!(
        message["id"],
        got[0].id.as_str(),
        "the envelope's id is the webhook-id"
    );

    // The flaky one: refused twice, then accepted; the same id every time.
    let tries = flaky.wait_for(3, Duration::from_secs(30)).await;
    assert!(
        tries.iter().all(|t| t.id == tries[0].id),
        "one id across attempts: {:?}",
        tries.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    let settled = wait_notifications(&app, &id, |ns| {
        ns.len() == 3
            && ns
                .iter()
                .any(|n| n["sink"] == "flaky" && n["state"] == "delivered")
            && ns
                .iter()
                .any(|n| n["sink"] == "dead" && n["attempts"].as_u64() >= Some(1))
    })
    .await;
    assert_eq!(
        (
            &of(&settled, "ops")["state"],
            &of(&settled, "ops")["attempts"]
        ),
        (&Value::from("delivered"), &Value::from(1))
    );
    assert_eq!(of(&settled, "flaky")["attempts"], 3);
    let dead_state = of(&settled, "dead");
    assert_eq!(dead_state["state"], "pending", "{dead_state:#}");
    assert!(
        dead_state["lastError"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{dead_state:#}"
    );
    assert_eq!(ok.received().len(), 1, "delivered once");
    let metrics = app
        .metrics_with("deploy_diagnosis_notifications_total{")
        .await;
    assert!(
        metrics
            .contains("deploy_diagnosis_notifications_total{sink=\"flaky\",outcome=\"retry\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_sink_asking_to_wait_317000_years_delays_only_its_own_messages() {
    // Every delivery gets this answer from one sink: it used to overflow the backoff's
    // clock arithmetic and kill a delivery task each time, until none was left and no
    // report reached any sink.
    let stuck = Receiver::start(Mode::Throttle, None).await;
    let ok = Receiver::start(Mode::Accept, Some(SECRET)).await;
    let app = spawn_app(Options {
        sections: notify_yaml(&[("stuck", &stuck.url, None), ("ops", &ok.url, Some(SECRET))]),
        ..Options::default()
    })
    .await;
    let ids: Vec<String> = (0..6).map(|_| deployment_id("throttled")).collect();
    for id in &ids {
        app.post_alerts(&alertmanager_body(id, "firing")).await;
        app.wait_final(id).await;
    }
    let got = ok.wait_for(ids.len(), Duration::from_secs(30)).await;
    let mut reached: Vec<&str> = got
        .iter()
        .map(|r| r.body["report"]["deploymentId"].as_str().unwrap())
        .collect();
    reached.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(reached, expected, "every report reached the healthy sink");
    let last = ids.last().unwrap();
    let settled = wait_notifications(&app, last, |ns| {
        ns.iter()
            .any(|n| n["sink"] == "stuck" && n["attempts"].as_u64() >= Some(1))
    })
    .await;
    let held = of(&settled, "stuck");
    assert_eq!(held["state"], "pending", "{held:#}");
    let next = chrono::DateTime::parse_from_rfc3339(held["nextAt"].as_str().unwrap()).unwrap();
    let wait = next.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::minutes(55) && wait <= chrono::Duration::minutes(60),
        "the receiver's wait, clamped to an hour: {held:#}"
    );
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("deploy_diagnosis_task_panics_total{"),
        "nothing panicked: {metrics}"
    );
}

/// The report of `id` at `address`.
async fn report_at(client: &reqwest::Client, address: &str, id: &str) -> Value {
    client
        .get(format!("{address}/reports/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The report's first notification once it was tried (and failed) at least once.
async fn tried_once(client: &reqwest::Client, address: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let report = report_at(client, address, id).await;
        let n = report["notifications"][0].clone();
        if n["attempts"].as_u64() >= Some(1) {
            return n;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{report:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_pending_at_kill_9_is_delivered_after_the_restart() {
    // The receiver is not there yet: every attempt before the kill fails to connect.
    let port = free_port();
    let files = ProcessFiles::new(&Options {
        sections: notify_yaml(&[(
            "ops",
            &format!("http://127.0.0.1:{port}/hook"),
            Some(SECRET),
        )]),
        ..Options::default()
    })
    .await;
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let mut first = files.start(free_port());
    first.up().await;
    let address = first.address.clone();
    let id = deployment_id("outbox-kill");
    let accepted = client
        .post(format!("{address}/v1/alerts"))
        .json(&alertmanager_body(&id, "firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
    wait_final(&client, &address, &id, None, Duration::from_secs(90)).await;
    // Completed, and its notification tried and failed at least once.
    let pending = tried_once(&client, &address, &id).await;
    assert_eq!(pending["state"], "pending", "{pending:#}");
    first.kill_9();

    let receiver = Receiver::start_on(port, Mode::Accept, Some(SECRET)).await;
    let mut second = files.start(free_port());
    let got = receiver.wait_for(1, Duration::from_secs(60)).await;
    second.kill_9();
    assert_eq!(
        got[0].id,
        pending["id"].as_str().unwrap(),
        "the same id after the restart"
    );
    assert_eq!(got[0].body["report"]["deploymentId"], id.as_str());
}

/// A rollback request pending at `kill -9` (the platform down) reaches the platform after
/// the restart, signed, under the same id and `Idempotency-Key`; accepted once, it is not
/// sent again. The report is written as the worker concludes a *rollback* verdict (its
/// ending and the request in one write; `release_verdict.rs` has the verdict make it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_request_pending_at_kill_9_reaches_the_platform_once_after_the_restart() {
    use deploy_diagnosis::model::deployment::RollbackPolicy;
    use deploy_diagnosis::model::notify::Notification;
    use deploy_diagnosis::model::report::Report;
    use deploy_diagnosis::store::{DeploymentStore, Diagnosis, Lease, LeaseQueue, ReportStore};

    let port = free_port();
    let files = ProcessFiles::new(&Options {
        sections: "Release:\n  AutoRollback: true\n".into(),
        ..Options::default()
    })
    .await;
    let dir = &files.dir;

    let id = deployment_id("rollback-kill");
    let deployment_id = deploy_diagnosis::model::alert::DeploymentId::parse(&id).unwrap();
    {
        let store = deploy_diagnosis::store::embedded::EmbeddedStore::open(
            &dir.path().join("reports.sqlite3"),
        )
        .unwrap();
        store.migrate().await.unwrap();
        let now = chrono::Utc::now();
        store
            .put_deployment(&canary_deployment(
                &deployment_id,
                now,
                RollbackPolicy {
                    auto_rollback: true,
                    url: format!("http://127.0.0.1:{port}/hook"),
                    secret: SECRET.into(),
                    signed: true,
                },
            ))
            .await
            .unwrap();
        let mut alert = deploy_diagnosis::model::alert::Alert {
            status: "firing".into(),
            alertname: "HighErrorRate".into(),
            ..Default::default()
        };
        alert.labels.insert("deploymentId".into(), id.clone());
        store
            .insert(&Report::new(deployment_id.clone(), alert, now))
            .await
            .unwrap();
        let diagnoses: &dyn LeaseQueue<Diagnosis> = &store;
        let claimed = diagnoses
            .claim("w1", now, now + chrono::Duration::seconds(30))
            .await
            .unwrap()
            .unwrap();
        let finish = evidence_ending(
            now,
            serde_json::json!({
                "verdict": "release", "recommendation": "rollback", "confidence": 0.99,
                "reasons": ["web-1 errors %: 30% against 0% on the controls"], "comparisons": []
            }),
            vec![Notification::rollback(
                &claimed.id,
                claimed.version,
                "v2.0.0",
                false,
                now,
            )],
        );
        assert!(diagnoses
            .complete(&Lease::of(&claimed, "w1"), &finish)
            .await
            .unwrap());
    }

    let client = deploy_diagnosis::tls::client().build().unwrap();
    let mut first = files.start(free_port());
    first.up().await;
    let address = first.address.clone();
    // Tried and failed at least once: the platform is not there yet.
    let pending = tried_once(&client, &address, &id).await;
    assert_eq!(
        (&pending["sink"], &pending["state"]),
        (
            &serde_json::json!("rollback"),
            &serde_json::json!("pending")
        ),
        "{pending:#}"
    );
    first.kill_9();

    let platform = Receiver::start_on(port, Mode::Accept, Some(SECRET)).await;
    let mut second = files.start(free_port());
    let address = second.address.clone();
    let got = platform.wait_for(1, Duration::from_secs(60)).await;
    // Accepted: the report says so, and nothing more is sent.
    let started = Instant::now();
    let delivered = loop {
        let report = report_at(&client, &address, &id).await;
        if report["notifications"][0]["state"] == "delivered" {
            break report;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{report:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    second.kill_9();
    assert_eq!(platform.received().len(), 1, "{:#?}", platform.received());
    assert_eq!(got[0].id, pending["id"].as_str().unwrap(), "the same id");
    assert_eq!(got[0].idempotency_key.as_deref(), Some(got[0].id.as_str()));
    assert_eq!(got[0].body["type"], "deployment.rollback");
    assert_eq!(got[0].body["tag"], "v2.0.0");
    assert_eq!(got[0].body["previousTag"], "v1.9.0");
    assert!(
        !delivered.to_string().contains(&SECRET[6..]),
        "the report never holds the secret: {delivered:#}"
    );
}

/// A `Notify:` section for the chat platforms of `chat`, each with these extra lines.
fn chat_yaml(sinks: &[(&str, &str, String, &str)]) -> String {
    let mut yaml = "Notify:\n  TimeoutSeconds: 2\n  MaxAttempts: 3\n  Sinks:\n".to_owned();
    for (name, kind, url, extra) in sinks {
        yaml.push_str(&format!(
            "    - Name: {name}\n      Kind: {kind}\n      URL: \"{url}\"\n{extra}"
        ));
    }
    yaml.push_str("UI:\n  ExternalURL: https://dd.example\n");
    yaml
}

#[tokio::test]
async fn every_chat_platform_gets_the_report_signed_and_within_its_size_limit() {
    use crate::fake_chat::{FakeChat, DINGTALK_SECRET, FEISHU_SECRET};
    let chat = FakeChat::start().await;
    // An overview far over every platform's limit, in three-byte characters.
    let overview = "磁盘写满导致服务不可用。".repeat(2_000);
    let content =
        format!("【问题概述】\n{overview}\n【根因分析】\nx\n【影响范围】\ny\n【解决方案】\nz");
    let app = spawn_app(Options {
        script: Script::ReportWithContent(content),
        ai_extra: "  MaxTokens: 64000\n",
        sections: chat_yaml(&[
            (
                "ding",
                "dingtalk",
                chat.dingtalk_url(),
                &format!("      Secret: {DINGTALK_SECRET}\n"),
            ),
            ("wecom", "wecom", chat.wecom_url(), ""),
            (
                "lark",
                "feishu",
                chat.feishu_url(),
                &format!("      Secret: {FEISHU_SECRET}\n"),
            ),
            ("slack", "slack", chat.slack_url(), ""),
        ]),
        ..Options::default()
    })
    .await;
    let id = deployment_id("chat");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    let link = format!("https://dd.example/ui/reports/{id}");
    let within = Duration::from_secs(10);

    let ding = &chat.wait_for("dingtalk", 1, within).await[0];
    let text = ding.body["markdown"]["text"].as_str().unwrap();
    assert!(
        ding.bytes <= 20_000 && ding.bytes > 15_000,
        "{} bytes",
        ding.bytes
    );
    assert!(ding.body["markdown"]["title"]
        .as_str()
        .unwrap()
        .starts_with("诊断完成"));
    for part in [
        id.as_str(),
        "**问题概述**",
        "磁盘写满导致服务不可用",
        "…",
        link.as_str(),
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(!text.contains("【根因分析】"), "only the overview is sent");

    let wecom = &chat.wait_for("wecom", 1, within).await[0];
    let content = wecom.body["markdown"]["content"].as_str().unwrap();
    assert!(
        content.len() <= 4096 && content.len() > 3_500,
        "{} bytes",
        content.len()
    );
    assert!(
        content.contains("…") && content.contains(&link),
        "{content}"
    );

    let lark = &chat.wait_for("feishu", 1, within).await[0];
    assert!(
        lark.bytes <= 20 * 1024 && lark.bytes > 15_000,
        "{} bytes",
        lark.bytes
    );
    assert_eq!(
        lark.body["card"]["elements"][1]["actions"][0]["url"],
        link.as_str()
    );

    let slack = &chat.wait_for("slack", 1, within).await[0];
    let blocks = slack.body["blocks"].as_array().unwrap();
    assert!(blocks
        .iter()
        .any(|b| b["text"]["text"].as_str().unwrap_or("").chars().count() == 3000));
    assert!(blocks.last().unwrap()["text"]["text"]
        .as_str()
        .unwrap()
        .contains(&link));

    let settled = wait_notifications(&app, &id, |ns| {
        ns.len() == 4 && ns.iter().all(|n| n["state"] == "delivered")
    })
    .await;
    assert!(settled.iter().all(|n| n["attempts"] == 1), "{settled:#?}");
    assert!(chat.refused().is_empty(), "{:?}", chat.refused());
}

#[tokio::test]
async fn a_misconfigured_robot_is_given_up_at_once_an_archived_channel_disabled_and_a_rate_limit_waits(
) {
    use crate::fake_chat::{FakeChat, FEISHU_SECRET};
    let chat = FakeChat::start().await;
    let app = spawn_app(Options {
        sections: chat_yaml(&[
            // The wrong secret: DingTalk answers 310000 "sign not match".
            (
                "ding",
                "dingtalk",
                chat.dingtalk_url(),
                "      Secret: SECnot-the-robots-secret\n",
            ),
            (
                "archived",
                "slack",
                format!("{}/services/T0/B0/archived", chat.base),
                "",
            ),
            (
                "lark",
                "feishu",
                chat.feishu_url(),
                &format!("      Secret: {FEISHU_SECRET}\n      RateLimitPerMinute: 1\n"),
            ),
        ]),
        ..Options::default()
    })
    .await;
    let first = deployment_id("chat-conf-a");
    let second = deployment_id("chat-conf-b");
    for id in [&first, &second] {
        app.post_alerts(&alertmanager_body(id, "firing")).await;
        app.wait_final(id).await;
    }
    let settled = wait_notifications(&app, &first, |ns| {
        ns.len() == 3 && ns.iter().all(|n| n["state"] != "pending")
    })
    .await;
    let ding = of(&settled, "ding");
    assert_eq!(
        (&ding["state"], &ding["attempts"]),
        (&Value::from("failed"), &Value::from(1)),
        "{ding:#}"
    );
    assert!(
        ding["lastError"].as_str().unwrap().contains("310000"),
        "{ding:#}"
    );
    assert!(
        !ding["lastError"]
            .as_str()
            .unwrap()
            .contains("not-the-robots"),
        "no secret in the reason"
    );
    let archived = of(&settled, "archived");
    assert_eq!(archived["state"], "disabled", "{archived:#}");
    assert!(archived["lastError"]
        .as_str()
        .unwrap()
        .contains("channel_is_archived"));
    assert_eq!(of(&settled, "lark")["state"], "delivered");

    // One Feishu message a minute: the second report's waits, without spending an attempt.
    let waiting = wait_notifications(&app, &second, |ns| {
        ns.iter()
            .any(|n| n["sink"] == "lark" && n["lastError"].is_string())
    })
    .await;
    let lark = of(&waiting, "lark");
    assert_eq!(
        (&lark["state"], &lark["attempts"]),
        (&Value::from("pending"), &Value::from(0)),
        "{lark:#}"
    );
    assert!(
        lark["lastError"].as_str().unwrap().contains("rate limit"),
        "{lark:#}"
    );
    assert_eq!(chat.accepted().len(), 1, "{:?}", chat.accepted());
    let metrics = app
        .metrics_with("deploy_diagnosis_notifications_total{")
        .await;
    assert!(
        metrics.contains("sink=\"lark\",outcome=\"deferred\""),
        "{metrics}"
    );
}
