//! How soon a finished report reaches its sinks: the real service (embedded store,
//! evidence-only, the real Prometheus and node_exporter) with two healthy generic-webhook
//! sinks on local receivers; the time from the report's completion (its `updatedTime`)
//! to each message's arrival.
//!
//!   cargo bench --bench notify_latency -- [ONE_BY_ONE] [BURST]
//!
//! Prints a Markdown table (median, p95, max) for alerts sent one at a time and for a
//! burst sent at once. Every message must arrive.

#![allow(dead_code)] // shares the integration tests' server helpers, not all of them used here

mod common;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde_json::Value;

use common::{alert, row, Service};

/// Milliseconds from a report's completion to a message's arrival, by deployment.
type Arrivals = Arc<Mutex<Vec<(String, f64)>>>;

async fn receive(State(arrivals): State<Arrivals>, Json(body): Json<Value>) -> StatusCode {
    let now = Utc::now();
    let id = body["report"]["deploymentId"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let done: Option<DateTime<Utc>> = body["report"]["updatedTime"]
        .as_str()
        .and_then(|t| t.parse().ok());
    if let Some(done) = done {
        let ms = (now - done).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        arrivals.lock().unwrap().push((id, ms));
    }
    StatusCode::NO_CONTENT
}

async fn receiver(arrivals: Arrivals) -> String {
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(arrivals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn config(prom: &str, store: &std::path::Path, sinks: &[String]) -> String {
    let mut yaml = format!(
        "Port: 0\nAI:\n  BaseURL:\n  PrometheusURL: {prom}\nStore:\n  Path: {}\n\
         Worker:\n  Concurrency: 2\nEvidence:\n  RateWindowSeconds: 5\n  BaselineMinutes: 2\n\
         Log:\n  Level: warn\nNotify:\n  Sinks:\n",
        store.display()
    );
    for (i, url) in sinks.iter().enumerate() {
        yaml.push_str(&format!(
            "    - Name: sink-{i}\n      Kind: webhook\n      URL: {url}\n      Secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
        ));
    }
    yaml
}

/// Posts one alert and waits until both sinks have its message.
async fn notify(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    instance: &str,
    arrivals: &Arrivals,
) {
    let response = client
        .post(format!("{base}/v1/alerts"))
        .json(&alert(id, instance))
        .send()
        .await
        .expect("intake answers");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let start = std::time::Instant::now();
    while arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(d, _)| d == id)
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{id} never reached both sinks"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The arrivals of the deployments named `prefix…`, in milliseconds.
fn arrived(arrivals: &Arrivals, prefix: &str) -> Vec<f64> {
    arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(d, _)| d.starts_with(prefix))
        .map(|(_, ms)| *ms)
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let one_by_one = args.first().copied().unwrap_or(20);
    let burst = args.get(1).copied().unwrap_or(20);
    let prom = servers::prometheus().await;
    let arrivals: Arrivals = Arc::default();
    let sinks = vec![
        receiver(Arc::clone(&arrivals)).await,
        receiver(Arc::clone(&arrivals)).await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&config(
        &prom.url,
        &dir.path().join("bench.sqlite3"),
        &sinks,
    ))
    .await;
    let base = service.base.clone();
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let instance = prom.node_instance.clone();

    println!("| alerts | messages | median | p95 | max |");
    println!("|---|---|---|---|---|");
    for i in 0..one_by_one {
        notify(&client, &base, &format!("single-{i}"), &instance, &arrivals).await;
    }
    row(
        "one at a time, 2 sinks",
        "",
        arrived(&arrivals, "single-"),
        0,
    );
    join_all((0..burst).map(|i| {
        let (client, base, instance, arrivals) = (&client, &base, &instance, &arrivals);
        async move { notify(client, base, &format!("burst-{i}"), instance, arrivals).await }
    }))
    .await;
    row(
        &format!("{burst} at once, 2 sinks"),
        "",
        arrived(&arrivals, "burst-"),
        0,
    );
    service.stop().await;
}
