//! Range query results reach the model summarised, the same way from both agent loops: the
//! native runner and the Python runner print the same summary for the same result, and a
//! real 30-minute range query against the real Prometheus arrives summarised.

use serde_json::json;

use deploy_diagnosis::runner::summary::summarise_range;

use crate::fake_llm::Script;
use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options};
use crate::servers::{repo, runner_python};

/// Start of the fixture, 15 s steps for 30 minutes; the fault starts at minute 20.
const START: i64 = 1_764_064_800;
const STEPS: i64 = 120;
const FAULT_STEP: i64 = 80;

/// `node_cpu_seconds_total` of a 2-CPU node over 30 minutes, as the Prometheus MCP server
/// returns a range query (indented JSON with a UI link): CPU 0 goes from idle to busy in
/// user mode at minute 20. One point of CPU 1's `steal` is NaN. Rates and offsets are
/// exact in binary, so equal steps tie exactly (the first is kept) and 14.0625 tests the
/// rounding of a tie (to even: 14.062).
fn fixture() -> String {
    let modes = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    let mut result = Vec::new();
    for cpu in ["0", "1"] {
        for (m, mode) in modes.iter().enumerate() {
            let mut value = 1000.0 * (m as f64 + 1.0) + 0.125;
            let mut values = Vec::new();
            for step in 0..=STEPS {
                let busy = cpu == "0" && step > FAULT_STEP;
                let rate = match *mode {
                    "idle" if busy => 0.0625,
                    "idle" => 0.875,
                    "user" if busy => 0.9375,
                    "user" => 0.0625,
                    _ => 0.007_812_5,
                };
                if step > 0 {
                    value += rate * 15.0;
                }
                let text = if cpu == "1" && *mode == "steal" && step == 7 {
                    "NaN".to_owned()
                } else {
                    format!("{value}")
                };
                values.push(json!([START + step * 15, text]));
            }
            result.push(json!({
                "metric": {"__name__": "node_cpu_seconds_total", "cpu": cpu, "mode": mode,
                           "instance": "web-1:9100", "job": "node"},
                "values": values,
            }));
        }
    }
    serde_json::to_string_pretty(&json!({
        "resultType": "matrix",
        "result": result,
        "links": [{"href": "http://prometheus:9090/graph?g0.expr=node_cpu_seconds_total",
                   "rel": "prometheus-ui", "title": "View in Prometheus UI"}],
    }))
    .unwrap()
}

/// The Python runner's `summarise_range` on a file.
fn python_summary(path: &std::path::Path) -> String {
    let code = "import sys; sys.path.insert(0, sys.argv[1]); import diagnosis_runner as r; \
                sys.stdout.write(r.summarise_range(open(sys.argv[2], encoding='utf-8').read()))";
    let out = std::process::Command::new(runner_python())
        .args(["-c", code])
        .arg(repo().join("docker/runner"))
        .arg(path)
        .output()
        .expect("the runner's python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn both_runners_summarise_a_30_minute_cpu_range_query_alike_ten_times_smaller_with_the_anomaly_visible(
) {
    let raw = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("range.json");
    std::fs::write(&path, &raw).unwrap();

    let native = summarise_range(&raw).expect("a matrix is summarised");
    let python = python_summary(&path);

    assert_eq!(python, native, "one specification, one text");
    assert!(
        raw.len() >= 10 * native.len(),
        "raw {} bytes, summary {} bytes",
        raw.len(),
        native.len()
    );
    let fault_at = chrono::DateTime::from_timestamp(START + (FAULT_STEP + 1) * 15, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let user0 = native
        .lines()
        .find(|l| l.contains("cpu=\"0\"") && l.contains("mode=\"user\""))
        .expect("a line for CPU 0 in user mode");
    assert!(
        user0.contains(&format!("largest change +14.062 at {fault_at}")),
        "the jump and when: {user0}"
    );
    let steal1 = native
        .lines()
        .find(|l| l.contains("cpu=\"1\"") && l.contains("mode=\"steal\""))
        .unwrap();
    assert!(steal1.contains("121 points"), "NaN counted: {steal1}");
    assert_eq!(native.lines().count(), 17, "a header and 16 series");
}

#[tokio::test]
async fn a_real_range_query_reaches_the_model_summarised_through_both_runners() {
    for native in [true, false] {
        let app = spawn_app(Options {
            native,
            script: Script::RangeThenReport {
                query: "node_cpu_seconds_total".into(),
            },
            ..Options::default()
        })
        .await;
        let id = deployment_id("range");
        app.post_alerts(&alertmanager_body(&id, "firing")).await;
        let report = app.wait_final(&id).await;

        assert_eq!(report["status"], "completed", "native {native}: {report:#}");
        let second = &app.llm.requests()[1].body;
        let result = second["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "tool")
            .and_then(|m| m["content"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no tool result in {second}"));
        assert!(
            result.starts_with("range query summarised by deploy-diagnosis:"),
            "native {native}: {result}"
        );
        assert!(
            result.contains("mode=\"user\"") && result.contains(&app.prom.node_instance),
            "native {native}: {result}"
        );
        assert!(!result.contains("\"values\""), "no raw values: {result}");
    }
}
