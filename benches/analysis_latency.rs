//! How fast `GET /deployments/{id}/analysis` answers: the real service (evidence-only,
//! embedded store) and a bad canary of three RED hosts under the real Prometheus of the
//! verdict's tests (1 s scrapes), each host measured on its node and RED signals. One
//! service answers from its cache (`Release.AnalysisCacheSeconds` 10, what a polling deploy
//! tool meets), the other measures every time (`0`).
//!
//!   cargo bench --bench analysis_latency -- [ASKS]
//!
//! Prints a Markdown table (median, p95, max): ASKS cached answers one at a time, ASKS / 10
//! uncached ones one at a time, and the comparisons one answer holds.

#![allow(dead_code)] // shares the integration tests' helpers, not all of them used here

#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/helpers.rs"]
mod helpers;
#[path = "../tests/api/receiver.rs"]
mod receiver;
#[path = "../tests/api/release_verdict.rs"]
mod release_verdict;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::time::Instant;

use serde_json::Value;

/// Milliseconds of `asks` answers of `path`, asked one at a time; and the last answer.
async fn time(app: &helpers::TestApp, path: &str, asks: usize) -> (Vec<f64>, Value) {
    let mut ms = Vec::with_capacity(asks);
    let mut last = Value::Null;
    for _ in 0..asks {
        let start = Instant::now();
        let (status, body) = app.get(path).await;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(status.is_success(), "{status}: {body}");
        last = body;
    }
    ms.sort_by(f64::total_cmp);
    (ms, last)
}

fn row(what: &str, ms: &[f64], comparisons: usize) {
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "| {what} | {} | {comparisons} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms.len(),
        at(0.5),
        at(0.95),
        ms[ms.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let asks: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let options = |cache: &'static str| helpers::Options {
        evidence_only: true,
        sections: format!("Release:\n  AnalysisCacheSeconds: {cache}\n"),
        ..helpers::Options::default()
    };
    let cached = release_verdict::app_with(options("10")).await;
    let uncached = release_verdict::app_with(options("0")).await;
    let (id, _fleet) =
        release_verdict::registered_canary(&[&cached, &uncached], &["web-1", "web-2", "web-3"])
            .await;
    let path = format!("/deployments/{id}/analysis");
    let (_, first) = time(&cached, &path, 1).await;
    assert_eq!(first["recommendation"], "rollback", "{first:#}");
    let comparisons = first["comparisons"].as_array().map_or(0, Vec::len);
    println!("| answer | asks | comparisons | median | p95 | max |");
    println!("|---|---|---|---|---|---|");
    let (ms, last) = time(&cached, &path, asks).await;
    assert_eq!(last["cached"], true, "{last:#}");
    row("from the cache", &ms, comparisons);
    let (ms, last) = time(&uncached, &path, (asks / 10).max(5)).await;
    assert_eq!(last["cached"], false, "{last:#}");
    row("measured (no cache)", &ms, comparisons);
}
