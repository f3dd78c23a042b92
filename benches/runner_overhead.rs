//! Per-diagnosis overhead of each runner: the same scripted LLM (zero think time, one tool
//! call then the answer) and the same real Prometheus, so what is measured is the runner
//! itself: interpreter start, imports, MCP session set-up, exec round trips.
//!
//!   scripts/docker-setup            # for the docker runner (engine + image)
//!   cargo bench --bench runner_overhead -- [RUNS] [CONCURRENT] [native|process|docker ...]
//!
//! Prints a Markdown table: sequential diagnoses (median wall; mean CPU: this process's
//! own plus the runner's outside it: the child processes for `process`, the container's
//! cgroup for `docker`, the long-lived MCP server for `native`), then the wall time of
//! CONCURRENT diagnoses started at once.

#![allow(dead_code)] // shares the integration tests' server helpers, not all of them used here

#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::StatsOptions;
use deploy_diagnosis::config::{Config, Environment};
use deploy_diagnosis::diagnosis::{Facts, Outcome};
use deploy_diagnosis::metrics::Metrics;
use deploy_diagnosis::model::alert::{Alert, DeploymentId};
use deploy_diagnosis::startup::build_runner;
use futures_util::future::join_all;
use futures_util::StreamExt;
use nix::sys::resource::{getrusage, UsageWho};
use tokio_util::sync::CancellationToken;

use fake_llm::{FakeLlm, Script};

/// Marks the native runner's MCP server process, so its CPU can be read from /proc.
const NATIVE_MCP_MARKER: &str = "DD_BENCH_MCP=1";

fn config(kind: &str, llm: &str, prom: &str, mcp_port: u16) -> Config {
    let python = servers::runner_python();
    let script = servers::repo().join("docker/runner/diagnosis_runner.py");
    let mcp_server = servers::repo().join(".venv/bin/prometheus-mcp-server");
    let yaml = format!(
        "AI:\n  BaseURL: {llm}\n  APIKey: bench-key\n  Model: m\n  Timeout: 60\n  PrometheusURL: {prom}\n\
         Runner:\n  Kind: {kind}\n  Python: {}\n  Script: {}\n\
         Docker:\n  Host: {}\n  Container: dd-bench\n  Network: host\n  MCPPort: {mcp_port}\n  CPUs: 2.0\n\
         MCP:\n  Servers:\n    - Name: prometheus\n      Command: {}\n      Env: [\"PROMETHEUS_URL={prom}\", \"{NATIVE_MCP_MARKER}\"]\n",
        python.display(),
        script.display(),
        servers::docker_host(),
        mcp_server.display(),
    );
    Config::from_yaml(&yaml, &Environment::default()).expect("bench configuration")
}

/// CPU of this process (the service's own work, and the fake LLM's).
fn self_cpu() -> Duration {
    rusage(UsageWho::RUSAGE_SELF)
}

/// CPU of the native runner's long-lived MCP server, from /proc.
fn native_mcp_cpu() -> Duration {
    let tick = 100.0; // USER_HZ on Linux
    servers::pids_with_env(NATIVE_MCP_MARKER)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
            let rest = &stat[stat.rfind(')').unwrap_or(0) + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
            Duration::from_secs_f64(ticks / tick)
        })
        .sum()
}

/// CPU spent outside this process for one runner kind.
async fn runner_cpu(kind: &str) -> Duration {
    match kind {
        "docker" => container_cpu().await,
        "native" => native_mcp_cpu(),
        _ => rusage(UsageWho::RUSAGE_CHILDREN),
    }
}

fn rusage(who: UsageWho) -> Duration {
    let usage = getrusage(who).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

async fn container_cpu() -> Duration {
    let docker = servers::docker_client().await;
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    let stats = docker
        .stats("dd-bench", Some(options))
        .next()
        .await
        .unwrap()
        .unwrap();
    Duration::from_nanos(
        stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn alert() -> Alert {
    let mut a = Alert {
        status: "firing".into(),
        alertname: "NodeHighCPU".into(),
        ..Default::default()
    };
    a.labels.insert("deploymentId".into(), "bench".into());
    a.labels.insert("hostname".into(), "web-1".into());
    a
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let concurrent: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let mut kinds: Vec<&str> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err())
        .map(String::as_str)
        .collect();
    if kinds.is_empty() {
        kinds = vec!["native", "process", "docker"];
    }
    let prom = servers::prometheus().await;
    let llm = FakeLlm::start(
        Script::ToolThenReport { query: "up".into() },
        Duration::ZERO,
    )
    .await;
    let id = DeploymentId::parse("bench").unwrap();
    println!(
        "| runner | runs | median wall / diagnosis | mean CPU / diagnosis (service + runner) | {concurrent} at once: wall | throughput |"
    );
    println!("|---|---|---|---|---|---|");
    for kind in kinds {
        let config = config(kind, &llm.base_url, &prom.url, servers::free_port());
        let runner = build_runner(&config, Arc::new(Metrics::new()))
            .await
            .expect("runner");
        let diagnoser = deploy_diagnosis::startup::pipeline(&config, runner)
            .expect("pipeline")
            .diagnoser;
        let mut walls = Vec::new();
        let mut cpu = Duration::ZERO;
        let one_alert = alert();
        for run in 0..=runs {
            let (own_before, runner_before) = (self_cpu(), runner_cpu(kind).await);
            let start = Instant::now();
            let diagnosed = diagnoser
                .diagnose(&id, &Facts::alert(&one_alert), CancellationToken::new())
                .await
                .unwrap();
            let wall = start.elapsed();
            let (own_after, runner_after) = (self_cpu(), runner_cpu(kind).await);
            assert!(
                matches!(diagnosed.outcome, Outcome::Completed { .. }),
                "{kind}: {diagnosed:?}"
            );
            if run > 0 {
                // Run 0 warms up (container creation, session opening, page cache).
                walls.push(wall);
                // Summed, then averaged: /proc counts CPU in 10 ms ticks, too coarse for
                // one native diagnosis.
                cpu += own_after.saturating_sub(own_before)
                    + runner_after.saturating_sub(runner_before);
            }
        }
        let burst_alert = alert();
        let burst_facts = Facts::alert(&burst_alert);
        let start = Instant::now();
        let all = join_all(
            (0..concurrent)
                .map(|_| diagnoser.diagnose(&id, &burst_facts, CancellationToken::new())),
        )
        .await;
        let burst = start.elapsed();
        assert!(
            all.iter()
                .all(|d| matches!(d, Ok(x) if matches!(x.outcome, Outcome::Completed { .. }))),
            "{kind}: burst failed"
        );
        println!(
            "| {kind} | {runs} | {:.1} ms | {:.1} ms | {:.2} s | {:.1} diagnoses/s |",
            median(walls).as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1000.0 / runs as f64,
            burst.as_secs_f64(),
            concurrent as f64 / burst.as_secs_f64(),
        );
        if kind == "docker" {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = servers::docker_client()
                .await
                .remove_container("dd-bench", Some(options))
                .await;
        }
    }
}
