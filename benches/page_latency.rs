//! How fast a report page is served: the real service (embedded store, evidence-only, the
//! real Prometheus and node_exporter) and one finished report with its evidence charts.
//! The first view draws the charts from Prometheus; later views of the same version are
//! served from the chart cache.
//!
//!   cargo bench --bench page_latency -- [VIEWS]
//!
//! Prints a Markdown table (median, p95, max) of `GET /ui/reports/{id}`: the first view,
//! then VIEWS views one at a time and VIEWS views four at a time.

#![allow(dead_code)] // shares the integration tests' server helpers, not all of them used here

#[path = "../tests/api/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use chrono::Utc;
use deploy_diagnosis::config::{Config, Environment};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// One view: milliseconds, and the charts on the page.
async fn view(client: &reqwest::Client, url: &str) -> (f64, usize) {
    let start = Instant::now();
    let response = client.get(url).send().await.expect("the page answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let html = response.text().await.unwrap();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    (ms, html.matches("<svg class=\"chart\"").count())
}

fn row(case: &str, mut ms: Vec<f64>, charts: usize) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "| {case} | {} | {charts} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms.len(),
        at(0.5),
        at(0.95),
        ms[ms.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let views: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let prom = servers::prometheus().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "Port: 0\nAI:\n  BaseURL:\n  PrometheusURL: {}\nStore:\n  Path: {}\n\
         Evidence:\n  RateWindowSeconds: 5\n  BaselineMinutes: 2\nLog:\n  Level: warn\n",
        prom.url,
        dir.path().join("bench.sqlite3").display()
    );
    let config = Config::from_yaml(&yaml, &Environment::default()).expect("bench configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(deploy_diagnosis::startup::run(
        listener,
        config,
        shutdown.clone(),
    ));
    servers::wait_http(&format!("{base}/healthz"), "the service").await;
    let client = reqwest::Client::new();
    // Evidence needs a few scrapes of the node first.
    let scraped = format!(
        "count_over_time(up{{instance=\"{}\"}}[10m]) >= 4",
        prom.node_instance
    );
    let start = Instant::now();
    loop {
        let answer: Value = client
            .get(format!("{}/api/v1/query", prom.url))
            .query(&[("query", scraped.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let id = "page-bench";
    let alert: Value = json!({
        "version": "4", "status": "firing", "receiver": "deploy-diagnosis",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "NodeHighCPU", "deploymentId": id, "instance": prom.node_instance},
            "annotations": {"description": "CPU busy above 90%"},
            "startsAt": (Utc::now() - chrono::Duration::seconds(30)).to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": id
        }]
    });
    let posted = client
        .post(format!("{base}/v1/alerts"))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), reqwest::StatusCode::ACCEPTED);
    let start = Instant::now();
    loop {
        let report: Value = client
            .get(format!("{base}/reports/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if report["status"] != "generating" {
            let items = report["evidence"].as_array().map_or(0, Vec::len);
            assert!(items > 0, "a report with evidence: {report:#}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("{base}/ui/reports/{id}");
    println!("| views | n | charts | median | p95 | max |");
    println!("|---|---|---|---|---|---|");
    let (first, charts) = view(&client, &url).await;
    row("first (charts from Prometheus)", vec![first], charts);
    let mut one = Vec::new();
    for _ in 0..views {
        one.push(view(&client, &url).await.0);
    }
    row("cached, one at a time", one, charts);
    let mut four = Vec::new();
    for _ in 0..views.div_ceil(4) {
        let batch = join_all((0..4).map(|_| view(&client, &url))).await;
        four.extend(batch.into_iter().map(|(ms, _)| ms));
    }
    row("cached, four at a time", four, charts);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), service).await;
}
