//! How soon the evidence is on a report after the alert is accepted: the real service
//! (embedded store, native runner) against the real Prometheus and node_exporter, with a
//! scripted LLM that takes `LLM_SECONDS` per answer, so that in a burst the AI queue is long
//! (`Worker.Concurrency` 2) while the evidence, on its own queue, must not wait behind it.
//!
//!   cargo bench --bench evidence_latency -- [ALERTS_ONE_BY_ONE] [BURST ...]
//!
//! Prints a Markdown table: the time from the `202` to `evidence` on the report (median,
//! p95, max), for alerts sent one at a time and for each burst sent at once (12 and 32 by
//! default, one after the other: the second burst comes while the AI workers are still on
//! the first). Every report must get its evidence.

#![allow(dead_code)] // shares the integration tests' server helpers, not all of them used here

#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use deploy_diagnosis::config::{Config, Environment};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use fake_llm::{FakeLlm, Script};

/// Seconds the scripted model takes per answer: a slow model, so the AI queue stays long.
const LLM_SECONDS: u64 = 20;

fn config(llm: &str, prom: &str, store: &std::path::Path) -> Config {
    let mcp_server = servers::repo().join(".venv/bin/prometheus-mcp-server");
    let yaml = format!(
        "Port: 0\nAI:\n  BaseURL: {llm}\n  APIKey: bench-key\n  Model: m\n  Timeout: 60\n  PrometheusURL: {prom}\n\
         Store:\n  Path: {}\nRunner:\n  Kind: native\n\
         MCP:\n  Servers:\n    - Name: prometheus\n      Command: {}\n      Env: [\"PROMETHEUS_URL={prom}\"]\n\
         Worker:\n  Concurrency: 2\nEvidence:\n  RateWindowSeconds: 5\n  BaselineMinutes: 2\n\
         Log:\n  Level: warn\n",
        store.display(),
        mcp_server.display(),
    );
    Config::from_yaml(&yaml, &Environment::default()).expect("bench configuration")
}

fn alert(id: &str, instance: &str) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "deploy-diagnosis",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "NodeHighCPU", "deploymentId": id, "instance": instance},
            "annotations": {"description": "CPU busy above 90%"},
            "startsAt": (chrono::Utc::now() - chrono::Duration::seconds(30)).to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": id
        }]
    })
}

/// Posts one alert and returns how long after its `202` the evidence was on the report.
async fn evidence_after_accept(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    instance: &str,
) -> Duration {
    let response = client
        .post(format!("{base}/v1/alerts"))
        .json(&alert(id, instance))
        .send()
        .await
        .expect("intake answers");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let accepted = Instant::now();
    loop {
        let report: Value = client
            .get(format!("{base}/reports/{id}"))
            .send()
            .await
            .expect("report")
            .json()
            .await
            .expect("JSON");
        if report["evidence"].as_array().is_some_and(|e| !e.is_empty()) {
            return accepted.elapsed();
        }
        assert!(
            accepted.elapsed() < Duration::from_secs(60),
            "no evidence on {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn row(case: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {case} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.95)),
        ms(*times.last().unwrap()),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let one_by_one = args.first().copied().unwrap_or(10);
    let bursts: Vec<usize> = match args.get(1..) {
        Some(rest) if !rest.is_empty() => rest.to_vec(),
        _ => vec![12, 32],
    };
    let prom = servers::prometheus().await;
    let llm = FakeLlm::start(
        Script::ToolThenReport { query: "up".into() },
        Duration::from_secs(LLM_SECONDS),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&llm.base_url, &prom.url, &dir.path().join("bench.sqlite3"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(deploy_diagnosis::startup::run(
        listener,
        config,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let instance = prom.node_instance.clone();

    println!("| alerts | n | median | p95 | max |");
    println!("|---|---|---|---|---|");
    let mut single = Vec::new();
    for i in 0..one_by_one {
        single.push(evidence_after_accept(&client, &base, &format!("single-{i}"), &instance).await);
    }
    row("one at a time", single);
    for (b, burst) in bursts.iter().enumerate() {
        let all =
            join_all((0..*burst).map(|i| {
                let (client, base, instance) = (&client, &base, &instance);
                async move {
                    evidence_after_accept(client, base, &format!("burst-{b}-{i}"), instance).await
                }
            }))
            .await;
        row(&format!("{burst} at once, 2 AI workers"), all);
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), service).await;
}
