//! `scripts/demo`, run as a newcomer runs it (from the evidence alone, `DD_DEMO_AI=off`,
//! with this test build of the service): Prometheus fires the shop's alert for real,
//! Alertmanager delivers it, and the demo ends with a report page whose verdict is
//! *release*, measured against real baselines; Ctrl-C stops everything it started.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::servers::repo;

/// The demo, in a process group of its own (as a terminal runs it), stopped as Ctrl-C
/// stops it if the test ends first.
struct Demo(Option<std::process::Child>);

/// `kill SIGNAL -- -GROUP`.
fn signal_group(signal: &str, group: u32) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{group}")])
        .status();
}

impl Demo {
    /// Ctrl-C (SIGINT to the demo's process group), and its exit status once it has
    /// stopped, a minute at most: then it is killed with everything in its group, and
    /// `None` says it did not stop on Ctrl-C (a demo started with SIGINT ignored cannot
    /// trap it).
    fn end(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.0.take()?;
        signal_group("-INT", child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    signal_group("-KILL", child.id());
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Ctrl-C, and its exit status once it has stopped.
    async fn stop(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.end())
            .await
            .unwrap()
            .expect("the demo did not stop within a minute of Ctrl-C")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// The URL after `label` in the demo's closing lines.
fn url_after<'a>(lines: &'a [String], label: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.split(label).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in the demo's output: {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_ends_with_a_release_verdict_measured_against_baselines() {
    let mut child = Command::new(repo().join("scripts/demo"))
        .env("DD_DEMO_AI", "off")
        .env("DD_DEMO_BIN", env!("CARGO_BIN_EXE_deploy-diagnosis"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(Some(child));
    // Its closing lines, up to the Prometheus line (then it runs until Ctrl-C): about two
    // minutes of history and alerting, bounded by the demo's own limits. Its output is read
    // to the end: a closed pipe would stop it at its next line.
    let (said, heard) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut said = Some(said);
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let last = line.starts_with("Prometheus:");
            lines.push(line);
            if last {
                if let Some(said) = said.take() {
                    let _ = said.send(lines.clone());
                }
            }
        }
        if let Some(said) = said.take() {
            let _ = said.send(lines);
        }
    });
    let lines = heard.await.unwrap();
    let page = url_after(&lines, "The report page:").to_owned();
    let json = url_after(&lines, "Its JSON:").to_owned();
    let prometheus = url_after(&lines, "Prometheus:").to_owned();
    let said = lines.join("\n");
    assert!(said.contains("verdict:  release, rollback"), "{said}");

    let client = deploy_diagnosis::tls::client().build().unwrap();
    let report: Value = client
        .get(&json)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["engine"], "evidence", "{report:#}");
    assert_eq!(report["release"]["verdict"], "release", "{report:#}");
    assert_eq!(report["alert"]["alertname"], "ShopErrorRate", "{report:#}");
    // The failing host is measured against a baseline, not "no baseline".
    let measured = report["evidence"].as_array().unwrap().iter().find(|item| {
        item["instance"] == "web-1"
            && item["baseline"].is_number()
            && item.get("noBaseline").is_none()
    });
    assert!(measured.is_some(), "{:#}", report["evidence"]);

    let html = client
        .get(&page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("class=\"window-baseline\""), "{html}");
    assert!(!html.contains("chart-error"), "{html}");

    // Ctrl-C: the demo and everything it started stop.
    let status = demo.stop().await;
    assert!(!status.success(), "ended by the interrupt: {status}");
    for gone in [&json, &prometheus] {
        let answer = client
            .get(gone)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(answer.is_err(), "{gone} still answers after Ctrl-C");
    }
}
