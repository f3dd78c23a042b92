//! Per-diagnosis overhead of each runner: the same scripted LLM (zero think time, one tool
//! call then the answer) and the same real Prometheus, so what is measured is the runner
//! itself: interpreter start, imports, MCP session set-up, exec round trips.
//!
//!   scripts/docker-setup            # for the docker runner (engine + image)
//!   cargo bench --bench runner_overhead -- [RUNS] [process|docker ...]
//!
//! Prints a Markdown table of medians (wall per diagnosis, and the CPU the runner used:
//! the child processes' CPU for `process`, the container's cgroup CPU for `docker`).

#![allow(dead_code)] // shares the integration tests' server helpers, not all of them used here

#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::StatsOptions;
use deploy_diagnosis::alert::{Alert, DeploymentId};
use deploy_diagnosis::config::{Config, Environment};
use deploy_diagnosis::diagnosis::{Diagnoser, Outcome};
use deploy_diagnosis::metrics::Metrics;
use deploy_diagnosis::startup::build_runner;
use futures_util::StreamExt;
use nix::sys::resource::{getrusage, UsageWho};
use tokio_util::sync::CancellationToken;

use fake_llm::{FakeLlm, Script};

fn config(kind: &str, llm: &str, prom: &str, mcp_port: u16) -> Config {
    let python = servers::runner_python();
    let script = servers::repo().join("docker/runner/diagnosis_runner.py");
    let yaml = format!(
        "AI:\n  BaseURL: {llm}\n  APIKey: bench-key\n  Model: m\n  Timeout: 60\n  PrometheusURL: {prom}\n\
         Runner:\n  Kind: {kind}\n  Python: {}\n  Script: {}\n\
         Docker:\n  Host: {}\n  Container: dd-bench\n  Network: host\n  MCPPort: {mcp_port}\n",
        python.display(),
        script.display(),
        servers::docker_host(),
    );
    Config::from_yaml(&yaml, &Environment::default()).expect("bench configuration")
}

fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

async fn docker() -> bollard::Docker {
    let host = servers::docker_host();
    let socket = host.strip_prefix("unix://").unwrap_or(&host).to_owned();
    bollard::Docker::connect_with_unix(&socket, 60, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

async fn container_cpu() -> Duration {
    let docker = docker().await;
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
    let mut kinds: Vec<&str> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err())
        .map(String::as_str)
        .collect();
    if kinds.is_empty() {
        kinds = vec!["process", "docker"];
    }
    let prom = servers::prometheus().await;
    let llm = FakeLlm::start(
        Script::ToolThenReport { query: "up".into() },
        Duration::ZERO,
    )
    .await;
    let id = DeploymentId::parse("bench").unwrap();
    println!("| runner | runs | median wall / diagnosis | median runner CPU / diagnosis |");
    println!("|---|---|---|---|");
    for kind in kinds {
        let config = config(kind, &llm.base_url, &prom.url, servers::free_port());
        let runner = build_runner(&config, Arc::new(Metrics::new()))
            .await
            .expect("runner");
        let diagnoser = Diagnoser::new(&config, runner);
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let cpu_before = if kind == "docker" {
                container_cpu().await
            } else {
                children_cpu()
            };
            let start = Instant::now();
            let outcome = diagnoser
                .diagnose(&id, &alert(), CancellationToken::new())
                .await
                .unwrap();
            let wall = start.elapsed();
            let cpu_after = if kind == "docker" {
                container_cpu().await
            } else {
                children_cpu()
            };
            assert!(
                matches!(outcome.outcome, Outcome::Completed(_)),
                "{kind}: {outcome:?}"
            );
            if run > 0 {
                // Run 0 warms up (container creation, page cache).
                walls.push(wall);
                cpus.push(cpu_after.saturating_sub(cpu_before));
            }
        }
        println!(
            "| {kind} | {runs} | {:.0} ms | {:.0} ms |",
            median(walls).as_secs_f64() * 1000.0,
            median(cpus).as_secs_f64() * 1000.0
        );
        if kind == "docker" {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = docker()
                .await
                .remove_container("dd-bench", Some(options))
                .await;
        }
    }
}
