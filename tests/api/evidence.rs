//! The evidence stage against the real Prometheus and node_exporter: facts on the report
//! while it is generating, the prompt starting from them, and a real CPU fault (stress-ng)
//! ranked first.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_llm::Script;
use crate::helpers::{cpu_heavy, deployment_id, report_error, spawn_app, Options, TestApp};
use crate::servers;

/// An alert about the test node, by its `instance`, that started at `starts_at`.
fn node_alert(id: &str, instance: &str, starts_at: &str) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "deploy-diagnosis",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "NodeHighCPU", "deploymentId": id, "instance": instance,
                       "job": "node", "severity": "critical"},
            "annotations": {"description": "CPU busy above 90%"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3E+0",
            "fingerprint": "c0ffee"
        }]
    })
}

/// Polls the report until its evidence is there.
async fn wait_evidence(app: &TestApp, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (_, report) = app.get(&format!("/reports/{id}")).await;
        if report["evidence"].is_array() {
            return report;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no evidence on {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `query` (an instant query) returns a value for which `ok` holds.
async fn wait_prometheus(url: &str, query: &str, ok: impl Fn(f64) -> bool) {
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let start = Instant::now();
    loop {
        let value = client
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await
            .ok();
        let value = match value {
            Some(r) => r.json::<Value>().await.ok(),
            None => None,
        };
        let number = value.as_ref().and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        });
        if number.is_some_and(&ok) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never satisfied {query}: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn evidence_is_on_the_report_while_it_generates_and_the_prompt_starts_from_it() {
    // The model takes 3 s to answer, so the report is still generating when the evidence
    // is read back.
    let app = spawn_app(Options {
        llm_delay: Duration::from_secs(3),
        evidence: true,
        ..Options::default()
    })
    .await;
    let id = deployment_id("evidence");
    let instance = app.prom.node_instance.clone();
    // Some history first, so the alert's window has data however fresh Prometheus is.
    wait_prometheus(
        &app.prom.url,
        &format!("count_over_time(up{{instance=\"{instance}\"}}[1h])"),
        |n| n >= 10.0,
    )
    .await;
    let starts_at = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();

    app.post_alerts(&node_alert(&id, &instance, &starts_at))
        .await;
    let generating = wait_evidence(&app, &id).await;

    assert_eq!(generating["status"], "generating", "{generating:#}");
    let evidence = generating["evidence"].as_array().unwrap();
    assert!(!evidence.is_empty(), "{generating:#}");
    let signals: Vec<&str> = evidence
        .iter()
        .filter_map(|e| e["signal"].as_str())
        .collect();
    let rule = evidence
        .iter()
        .find(|e| e["resource"] == "rule")
        .unwrap_or_else(|| panic!("the alert's own rule is evaluated: {evidence:#?}"));
    assert_eq!(rule["verdict"], "event", "up > 0 returns data: {rule}");
    for item in evidence.iter().filter(|e| e["resource"] != "rule") {
        assert_eq!(item["instance"], instance.as_str(), "{item}");
        assert!(
            item["query"].as_str().unwrap().contains(&instance),
            "{item}"
        );
        for key in [
            "resource", "unit", "incident", "peak", "last", "score", "verdict",
        ] {
            assert!(!item[key].is_null(), "{key} missing in {item}");
        }
    }
    let scores: Vec<f64> = evidence
        .iter()
        .map(|e| e["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "ranked: {scores:?}"
    );
    let up = evidence.iter().find(|e| e["signal"] == "up");
    if let Some(up) = up {
        assert_eq!(up["verdict"], "normal", "the node is up: {up}");
    }
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["engine"], "ai", "{report:#}");
    assert!(report.get("aiError").is_none(), "{report:#}");
    assert_eq!(
        report["evidence"], generating["evidence"],
        "kept once gathered"
    );
    let prompt = app.llm.requests()[0].prompt();
    assert!(prompt.contains("服务已测得的指标证据"), "{prompt}");
    assert!(
        prompt.contains(signals[0]),
        "the top signal {} is in the prompt",
        signals[0]
    );
}

#[tokio::test]
async fn a_real_cpu_fault_puts_cpu_saturation_at_the_top_of_the_evidence() {
    let _heavy = cpu_heavy().await;
    let prom = servers::prometheus().await;
    let instance = &prom.node_instance;
    // A baseline first: at least 20 s of scrapes.
    wait_prometheus(
        &prom.url,
        &format!("count_over_time(up{{instance=\"{instance}\"}}[1h])"),
        |n| n >= 20.0,
    )
    .await;
    let fault_start = chrono::Utc::now();
    // Both cores busy, at the lowest priority so the other tests still run.
    let _stress = servers::cpu_fault(60);
    wait_prometheus(
        &prom.url,
        &format!(
            "100 * (1 - avg(rate(node_cpu_seconds_total{{mode=\"idle\",instance=\"{instance}\"}}[5s])))"
        ),
        |busy| busy > 95.0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let app = spawn_app(Options {
        llm_delay: Duration::from_secs(2),
        evidence: true,
        ..Options::default()
    })
    .await;
    let id = deployment_id("cpufault");

    app.post_alerts(&node_alert(&id, instance, &fault_start.to_rfc3339()))
        .await;
    let report = wait_evidence(&app, &id).await;

    let evidence = report["evidence"].as_array().unwrap();
    let top3: Vec<&Value> = evidence.iter().take(3).collect();
    let busy = evidence
        .iter()
        .find(|e| e["signal"] == "CPU busy %")
        .unwrap_or_else(|| panic!("no CPU busy item: {evidence:#?}"));
    assert_eq!(busy["verdict"], "saturated", "{busy}");
    assert!(busy["peak"].as_f64().unwrap() > 90.0, "{busy}");
    assert_eq!(top3[0]["resource"], "cpu", "CPU ranked first: {top3:#?}");
}

/// Checks an evidence report: completed by the evidence, the four sections in order, the
/// reason there is no AI analysis at the top, queries to plot.
fn assert_evidence_report(report: &Value, why: &str) {
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["engine"], "evidence", "{report:#}");
    assert!(
        report["aiError"].as_str().unwrap_or_default().contains(why),
        "{report:#}"
    );
    let content = report["content"].as_str().unwrap();
    assert!(
        content.starts_with("【问题概述】\n未能进行 AI 分析（") && content.contains(why),
        "{content}"
    );
    let at: Vec<usize> = [
        "【问题概述】",
        "【根因分析】",
        "【影响范围】",
        "【解决方案】",
    ]
    .iter()
    .map(|s| {
        content
            .find(s)
            .unwrap_or_else(|| panic!("{s} missing: {content}"))
    })
    .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{content}");
    assert!(
        content.contains("基线中位数"),
        "numbers are cited: {content}"
    );
    assert!(
        !report["promQL"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

#[tokio::test]
async fn when_the_ai_fails_the_evidence_still_makes_a_completed_report_saying_why() {
    let app = spawn_app(Options {
        script: Script::Status(500),
        evidence: true,
        ..Options::default()
    })
    .await;
    let id = deployment_id("aifails");
    let instance = app.prom.node_instance.clone();
    let starts_at = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();

    app.post_alerts(&node_alert(&id, &instance, &starts_at))
        .await;
    let report = app.wait_final(&id).await;

    assert_evidence_report(&report, "status 500");
    assert!(report["content"].as_str().unwrap().contains(&instance));
    assert!(!report.to_string().contains(&app.api_key), "{report:#}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("deploy_diagnosis_runner_failures_total{reason=\"llm_status\"} 1"),
        "the AI failure is still counted: {metrics}"
    );
}

#[tokio::test]
async fn evidence_only_mode_writes_reports_without_any_ai() {
    let app = spawn_app(Options {
        evidence_only: true,
        ..Options::default()
    })
    .await;
    let id = deployment_id("evonly");
    let instance = app.prom.node_instance.clone();
    let starts_at = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();

    app.post_alerts(&node_alert(&id, &instance, &starts_at))
        .await;
    let report = app.wait_final(&id).await;

    assert_evidence_report(&report, "evidence-only mode");
    assert!(app.llm.requests().is_empty(), "no AI is asked");
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["runner"]["kind"], "none", "{ready}");
}

#[tokio::test]
async fn a_report_fails_only_when_neither_the_ai_nor_the_evidence_can_be_had() {
    let down = format!("http://127.0.0.1:{}", servers::free_port());
    let app = spawn_app(Options {
        evidence: true,
        prometheus_url: Some(down),
        ..Options::default()
    })
    .await;
    let id = deployment_id("neither");

    app.post_alerts(&node_alert(
        &id,
        "web-1:9100",
        &chrono::Utc::now().to_rfc3339(),
    ))
    .await;
    let report = app.wait_final(&id).await;

    assert_eq!(report["status"], "failed", "{report:#}");
    assert!(
        report_error(&report).contains("Prometheus unreachable"),
        "{report:#}"
    );
    assert!(report["evidence"].is_null(), "{report:#}");
}

#[tokio::test]
async fn queries_prometheus_cannot_parse_are_dropped_with_a_note_and_evidence_stands_in() {
    let good = "rate(node_cpu_seconds_total{mode=\"idle\"}[1m])";
    let bad = "sum(rate(node_cpu_seconds_total[1m]) by";
    for (queries, evidence) in [(vec![good, bad, "up"], false), (vec![bad], true)] {
        let app = spawn_app(Options {
            script: Script::ReportWithQueries(queries.iter().map(|q| q.to_string()).collect()),
            evidence,
            ..Options::default()
        })
        .await;
        let id = deployment_id("promql");
        let instance = app.prom.node_instance.clone();
        let starts_at = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();

        app.post_alerts(&node_alert(&id, &instance, &starts_at))
            .await;
        let report = app.wait_final(&id).await;

        assert_eq!(report["engine"], "ai", "{report:#}");
        let kept: Vec<&str> = report["promQL"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let content = report["content"].as_str().unwrap();
        assert!(
            content.contains("无法被 Prometheus 解析") && content.contains(bad),
            "{content}"
        );
        assert!(!kept.contains(&bad), "{kept:?}");
        if evidence {
            assert!(!kept.is_empty(), "evidence queries stand in: {report:#}");
            assert!(kept.iter().all(|q| q.contains(&instance)), "{kept:?}");
            assert!(content.contains("已改用实测证据"), "{content}");
        } else {
            assert_eq!(kept, vec![good, "up"], "the parsing ones stay, in order");
        }
    }
}

/// The evidence has its own queue: a burst larger than `Evidence.Concurrency`, with the
/// two AI workers held by a model that never answers, still gets evidence on every report
/// while every one of them waits for an AI worker. (When intake skipped the gathering of a
/// burst past `Evidence.Concurrency` and left it to the workers, such reports had none.)
#[tokio::test]
async fn a_burst_gets_its_evidence_while_the_ai_workers_are_busy() {
    let app = spawn_app(Options {
        evidence: true,
        script: Script::Hang,
        evidence_concurrency: 2,
        ..Options::default()
    })
    .await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(30);
    let ids: Vec<String> = (0..6).map(|_| deployment_id("burst")).collect();
    for id in &ids {
        let (status, _) = app
            .post_alerts(&node_alert(
                id,
                &app.prom.node_instance,
                &started.to_rfc3339(),
            ))
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    }
    for id in &ids {
        let report = wait_evidence(&app, id).await;
        assert_eq!(report["status"], "generating", "{report:#}");
        assert!(
            !report["evidence"].as_array().unwrap().is_empty(),
            "{report:#}"
        );
    }
    assert!(
        app.llm.requests().len() <= 2,
        "only the two workers' diagnoses reached the model"
    );
}

#[tokio::test]
async fn an_alert_on_a_whole_job_measures_its_own_hosts_first_within_the_limits() {
    // An aggregated rule's alert: `job` and no `instance` or `hostname`, on a job of 30
    // instances. Its rule's own series name three of them.
    let fleet = servers::fleet(30).await;
    let proxy = servers::PrometheusProxy::start(&fleet.url, None).await;
    let app = spawn_app(Options {
        evidence_only: true,
        prometheus_url: Some(proxy.address.clone()),
        evidence_extra: "  MaxHosts: 3\n  MaxQueriesInFlight: 2\n",
        ..Options::default()
    })
    .await;
    let id = deployment_id("fleet");
    let body = json!({
        "version": "4", "status": "firing", "receiver": "deploy-diagnosis",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "FleetLoadHigh", "deploymentId": id, "job": "fleet",
                       "severity": "warning"},
            "annotations": {"expr": "up{job=\"fleet\",instance=~\"fleet-2[789]:9100\"} > 0"},
            "startsAt": (chrono::Utc::now() - chrono::Duration::seconds(20)).to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "f1ee7"
        }]
    });
    let (status, _) = app.post_alerts(&body).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    let report = app.wait_final(&id).await;

    let measured: std::collections::BTreeSet<&str> = report["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["instance"].as_str())
        .filter(|i| !i.is_empty())
        .collect();
    let own = ["fleet-27:9100", "fleet-28:9100", "fleet-29:9100"];
    assert!(
        !measured.is_empty() && measured.iter().all(|i| own.contains(i)),
        "only the alert's own hosts are measured: {measured:?}"
    );
    let left_out = &report["unmeasuredHosts"];
    assert_eq!(left_out["total"], 27, "{left_out:#}");
    assert_eq!(left_out["maxHosts"], 3);
    assert_eq!(left_out["hosts"][0], "fleet-00:9100");
    assert!(
        report["content"]
            .as_str()
            .unwrap()
            .contains("另有 27 台主机超出 Evidence.MaxHosts（3）未测量"),
        "the report says which hosts it did not measure: {}",
        report["content"]
    );
    let (total, peak) = proxy.counts();
    assert!(
        total > 20 && (1..=2).contains(&peak),
        "{total} queries, at most {peak} at once (Evidence.MaxQueriesInFlight: 2)"
    );
}
