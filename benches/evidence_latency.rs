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

mod common;
#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use common::{alert, row, Service};
use fake_llm::{FakeLlm, Script};

/// Seconds the scripted model takes per answer: a slow model, so the AI queue stays long.
const LLM_SECONDS: u64 = 20;

fn config(llm: &str, prom: &str, store: &std::path::Path) -> String {
    let mcp_server = servers::repo().join(".venv/bin/prometheus-mcp-server");
    format!(
        "Port: 0\nAI:\n  BaseURL: {llm}\n  APIKey: bench-key\n  Model: m\n  Timeout: 60\n  PrometheusURL: {prom}\n\
         Store:\n  Path: {}\nRunner:\n  Kind: native\n\
         MCP:\n  Servers:\n    - Name: prometheus\n      Command: {}\n      Env: [\"PROMETHEUS_URL={prom}\"]\n\
         Worker:\n  Concurrency: 2\nEvidence:\n  RateWindowSeconds: 5\n  BaselineMinutes: 2\n\
         Log:\n  Level: warn\n",
        store.display(),
        mcp_server.display(),
    )
}

/// Posts one alert and returns how many milliseconds after its `202` the evidence was on
/// the report.
async fn evidence_after_accept(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    instance: &str,
) -> f64 {
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
            return accepted.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            accepted.elapsed() < Duration::from_secs(60),
            "no evidence on {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let service = Service::start(&config(
        &llm.base_url,
        &prom.url,
        &dir.path().join("bench.sqlite3"),
    ))
    .await;
    let base = service.base.clone();
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let instance = prom.node_instance.clone();

    println!("| alerts | n | median | p95 | max |");
    println!("|---|---|---|---|---|");
    let mut single = Vec::new();
    for i in 0..one_by_one {
        single.push(evidence_after_accept(&client, &base, &format!("single-{i}"), &instance).await);
    }
    row("one at a time", "", single, 0);
    for (b, burst) in bursts.iter().enumerate() {
        let all =
            join_all((0..*burst).map(|i| {
                let (client, base, instance) = (&client, &base, &instance);
                async move {
                    evidence_after_accept(client, base, &format!("burst-{b}-{i}"), instance).await
                }
            }))
            .await;
        row(&format!("{burst} at once, 2 AI workers"), "", all, 0);
    }
    service.stop().await;
}
