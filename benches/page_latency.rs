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

mod common;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use common::{alert, row, wait_scraped, Service};

/// One view: milliseconds, and the charts on the page.
async fn view(client: &reqwest::Client, url: &str) -> (f64, usize) {
    let start = Instant::now();
    let response = client.get(url).send().await.expect("the page answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let html = response.text().await.unwrap();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    (ms, html.matches("<svg class=\"chart\"").count())
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
    let service = Service::start(&yaml).await;
    let base = service.base.clone();
    let client = deploy_diagnosis::tls::client().build().unwrap();
    wait_scraped(&prom.url, &prom.node_instance).await;
    let id = "page-bench";
    let posted = client
        .post(format!("{base}/v1/alerts"))
        .json(&alert(id, &prom.node_instance))
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
    let charts = format!("{charts} | ");
    row("first (charts from Prometheus)", &charts, vec![first], 1);
    let mut one = Vec::new();
    for _ in 0..views {
        one.push(view(&client, &url).await.0);
    }
    row("cached, one at a time", &charts, one, 1);
    let mut four = Vec::new();
    for _ in 0..views.div_ceil(4) {
        let batch = join_all((0..4).map(|_| view(&client, &url))).await;
        four.extend(batch.into_iter().map(|(ms, _)| ms));
    }
    row("cached, four at a time", &charts, four, 1);
    service.stop().await;
}
