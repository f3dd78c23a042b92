//! What the service benches share: the service started in-process on a configuration, an
//! Alertmanager alert for the real node, and a Markdown row of median, p95 and max.

use std::time::{Duration, Instant};

use deploy_diagnosis::config::{Config, Environment};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::servers;

/// The service, serving in this process.
pub struct Service {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

impl Service {
    /// Starts the service on `yaml` (a bench configuration) and waits until it answers.
    pub async fn start(yaml: &str) -> Self {
        let config = Config::from_yaml(yaml, &Environment::default()).expect("bench configuration");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                deploy_diagnosis::startup::run(listener, config, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        servers::wait_http(&format!("{base}/healthz"), "the service").await;
        Self {
            base,
            shutdown,
            task,
        }
    }

    /// Stops it, waiting up to 10 s for the workers.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A firing Alertmanager alert for deployment `id` on `instance`, started 30 s ago.
pub fn alert(id: &str, instance: &str) -> Value {
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

/// Waits until Prometheus has scraped `instance` at least four times (evidence needs a
/// baseline).
pub async fn wait_scraped(prometheus: &str, instance: &str) {
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let scraped = format!("count_over_time(up{{instance=\"{instance}\"}}[10m]) >= 4");
    let start = Instant::now();
    loop {
        let answer: Value = client
            .get(format!("{prometheus}/api/v1/query"))
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
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `| {case} | n | {extra}median | p95 | max |` of `ms`, milliseconds with `decimals`.
pub fn row(case: &str, extra: &str, mut ms: Vec<f64>, decimals: usize) {
    assert!(!ms.is_empty(), "{case}: nothing measured");
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "| {case} | {} | {extra}{:.decimals$} ms | {:.decimals$} ms | {:.decimals$} ms |",
        ms.len(),
        at(0.5),
        at(0.95),
        ms[ms.len() - 1]
    );
}
