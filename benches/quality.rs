//! The quality harness (`scripts/quality`): real faults on this machine, watched by a real
//! node_exporter scraped every second by a real Prometheus; for each, a baseline, the
//! fault, the alert sent through the service, and the report read back. Scored: the
//! injected resource ranked first in the evidence (hit@1) and among the top three; the
//! no-fault control has no signal above the anomaly threshold.
//!
//!   scripts/quality [RUNS] [SCENARIO ...]   # scenarios: control cpu memory disk_space disk_io down
//!   scripts/quality [RUNS] verdict          # the release verdict's scenarios (RED service)
//!   scripts/quality ai [RUNS] [SCENARIO ...] # the AI's reports, with the local model (+ canary)
//!   scripts/quality stats [CASES]           # the verdict's statistics on generated series
//!
//! Without `AI_BASE_URL` the service runs in evidence-only mode. With `AI_BASE_URL`,
//! `AI_API_KEY` and `AI_MODEL` pointing at a real provider, it runs the native runner and
//! also records whether the AI report's 【根因分析】 names the injected resource.
//!
//! `ai` scores what the model wrote, with a real model served here (`scripts/local-llm`,
//! Qwen2.5-Coder 1.5B unless `DD_LLM_MODEL` says `0.5b`; or the provider in `AI_BASE_URL`
//! when set): per run, whether the report is the AI's or fell back to the evidence (and
//! why), steps, tool calls, tokens, time, whether 【根因分析】 names the injected resource
//! and the report names the host, how many of its `promQL` parse and return data, and,
//! when `JUDGE_BASE_URL`, `JUDGE_API_KEY` and `JUDGE_MODEL` name an OpenAI-compatible
//! judge, its score by `benches/quality-rubric.md`. A fault that takes the CPU (`cpu`,
//! `disk_io`) is undone once the evidence is on the report, so the model, which needs both
//! cores, runs at its speed; the agent still sees the fault in the range it queries.
//!
//! Faults are short and always undone: stress-ng runs with a timeout and is killed at the
//! end of its scenario; the filled tmpfs is unmounted; node_exporter is restarted.

#![allow(dead_code)] // shares the integration tests' server helpers, not all of them used here

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
#[path = "quality_stats/cases.rs"]
mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_diagnosis::config::{Config, Environment};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use servers::{free_port, start_guarded, wait_http, Guarded};

/// Seconds of quiet before each fault: the baseline window is the minute before it.
const QUIET_SECONDS: u64 = 35;

/// A scenario: the resource the fault should put first (`None`: the control).
struct Scenario {
    name: &'static str,
    expected: Option<&'static str>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "control",
        expected: None,
    },
    Scenario {
        name: "cpu",
        expected: Some("cpu"),
    },
    Scenario {
        name: "memory",
        expected: Some("memory"),
    },
    Scenario {
        name: "disk_space",
        expected: Some("disk_space"),
    },
    Scenario {
        name: "disk_io",
        expected: Some("disk_io"),
    },
    Scenario {
        name: "down",
        expected: Some("availability"),
    },
];

/// Words that name a resource in an AI report's root-cause section.
fn names(resource: &str) -> &'static [&'static str] {
    match resource {
        "cpu" => &["CPU", "cpu"],
        "memory" => &["内存", "memory", "Memory", "OOM"],
        "disk_space" => &["磁盘空间", "文件系统", "filesystem", "磁盘已满", "写满"],
        "disk_io" => &["I/O", "IO", "io", "磁盘繁忙"],
        "availability" => &["不可用", "宕机", "down", "up ==", "无法抓取", "抓取失败"],
        "errors" => &["错误", "非 200", "非200", "5xx", "500", "error", "Error"],
        _ => &[],
    }
}

/// The node_exporter under test: all default collectors, restartable on its port.
struct Node {
    bin: String,
    instance: String,
    dir: PathBuf,
    process: Option<Guarded>,
}

impl Node {
    fn start(&mut self) {
        self.process = Some(start_guarded(
            &self.bin,
            &[format!("--web.listen-address={}", self.instance)],
            &self.dir.join("node.log"),
        ));
    }

    fn stop(&mut self) {
        self.process = None;
    }
}

fn sh(command: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A running fault, undone on drop.
enum Fault {
    None,
    Process(Guarded),
    Mount(PathBuf),
    Stopped,
}

async fn inject(name: &str, node: &mut Node, work: &Path) -> Fault {
    let log = work.join(format!("{name}.log"));
    let stress = |args: &[&str]| {
        let mut all = vec!["--timeout", "60s", "--quiet"];
        all.extend_from_slice(args);
        Fault::Process(start_guarded(
            "stress-ng",
            &all.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &log,
        ))
    };
    match name {
        "cpu" => stress(&["--cpu", "0", "--cpu-method", "loop"]),
        // One process touches ~70 % of RAM and then idles: memory, not CPU.
        "memory" => stress(&["--vm", "1", "--vm-bytes", "70%", "--vm-hang", "0"]),
        "disk_io" => {
            let dir = work.join("io");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.display().to_string();
            stress(&[
                "--hdd",
                "4",
                "--hdd-bytes",
                "256M",
                "--hdd-opts",
                "direct,dsync",
                "--temp-path",
                &path,
            ])
        }
        "disk_space" => {
            // The mount exists (empty) through the baseline; the fault fills it.
            let mount = work.join("fs");
            let filler = mount.join("filler");
            assert!(
                sh(&format!(
                    "fallocate -l 245M {} || dd if=/dev/zero of={} bs=1M count=245 status=none",
                    filler.display(),
                    filler.display()
                )),
                "filling {}",
                mount.display()
            );
            Fault::Mount(mount)
        }
        "down" => {
            node.stop();
            Fault::Stopped
        }
        _ => Fault::None,
    }
}

async fn undo(fault: Fault, node: &mut Node) {
    match fault {
        Fault::Mount(mount) => {
            let _ = std::fs::remove_file(mount.join("filler"));
        }
        Fault::Stopped => {
            // Its guard kills the old process within a second; then the port is free.
            tokio::time::sleep(Duration::from_secs(2)).await;
            node.start();
            wait_http(
                &format!("http://{}/metrics", node.instance),
                "node_exporter",
            )
            .await;
        }
        Fault::Process(p) => drop(p),
        Fault::None => {}
    }
}

async fn query(client: &reqwest::Client, prom: &str, q: &str) -> Option<f64> {
    let body: Value = client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Waits until Prometheus shows the fault (or a time limit passes: the evidence then shows
/// what there is).
async fn wait_visible(client: &reqwest::Client, prom: &str, name: &str, instance: &str) {
    let sel = format!("instance=\"{instance}\"");
    let (q, ok): (String, fn(f64) -> bool) = match name {
        "cpu" => (format!("100 * (1 - avg(rate(node_cpu_seconds_total{{mode=\"idle\",{sel}}}[5s])))"), |v| v > 90.0),
        "memory" => (format!("100 * node_memory_MemAvailable_bytes{{{sel}}} / node_memory_MemTotal_bytes{{{sel}}}"), |v| v < 45.0),
        "disk_space" => (format!("max(100 * (1 - node_filesystem_avail_bytes{{{sel}}} / node_filesystem_size_bytes{{{sel}}}))"), |v| v > 95.0),
        "disk_io" => (format!("max(100 * rate(node_disk_io_time_seconds_total{{{sel}}}[5s]))"), |v| v > 80.0),
        "down" => (format!("up{{{sel}}}"), |v| v < 0.5),
        _ => return tokio::time::sleep(Duration::from_secs(10)).await,
    };
    // This machine's kernel hands out fresh pages at a few hundred MB/s: 70 % of RAM takes
    // most of a minute to touch.
    let limit = Duration::from_secs(if name == "memory" { 90 } else { 25 });
    let start = Instant::now();
    while start.elapsed() < limit {
        if query(client, prom, &q).await.is_some_and(ok) {
            // A few more scrapes inside the incident window.
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("{name}: fault not visible within {limit:?}; scoring what there is");
}

/// Which AI the service runs with.
enum Ai {
    /// Evidence-only mode.
    Off,
    /// `AI_BASE_URL`, `AI_API_KEY`, `AI_MODEL` from the environment.
    Env,
    /// The local model at this base URL, by this name.
    Local(String, String),
}

impl Ai {
    fn on(&self) -> bool {
        !matches!(self, Ai::Off)
    }
}

fn config(prom: &str, store: &Path, ai: &Ai) -> Config {
    let ai = match ai {
        Ai::Off => "  BaseURL: \"\"\n  Timeout: 60\n".to_owned(),
        Ai::Env => {
            "  BaseURL: ${AI_BASE_URL}\n  APIKey: ${AI_API_KEY}\n  Model: ${AI_MODEL}\n  Timeout: 60\n"
                .to_owned()
        }
        // Deterministic answers; a diagnosis on two busy cores takes minutes.
        Ai::Local(url, model) => format!(
            "  BaseURL: {url}\n  APIKey: local-llm-key\n  Model: {model}\n  Provider: llamacpp\n  \
             ContextTokens: 16384\n  MaxTokens: 1200\n  MaxTurns: 6\n  Timeout: 600\n  \
             ExtraBody: {{temperature: 0, seed: 7}}\n"
        ),
    };
    let yaml = format!(
        "Port: 0\nAI:\n{ai}  PrometheusURL: {prom}\nStore:\n  Path: {}\n\
         Runner:\n  Kind: native\n\
         MCP:\n  Servers:\n    - Name: prometheus\n      Command: {}\n      Env: [\"PROMETHEUS_URL={prom}\"]\n\
         Evidence:\n  RateWindowSeconds: 5\n  BaselineMinutes: 1\nLog:\n  Level: warn\n",
        store.display(),
        servers::repo().join(".venv/bin/prometheus-mcp-server").display(),
    );
    let env = Environment::from_process(&servers::repo()).expect("environment");
    Config::from_yaml(&yaml, &env).expect("harness configuration")
}

/// The root-cause section of a report's content.
fn root_cause(content: &str) -> &str {
    let start = content.find("【根因分析】").unwrap_or(0);
    let end = content.find("【影响范围】").unwrap_or(content.len());
    &content[start..end.max(start)]
}

/// The release verdict's scenarios, `runs` times each: the verdict and recommendation of
/// each run, how many are right, whether any fault that is not the release was rolled
/// back, and how long after the `202` the evidence and the verdict were on the report
/// (RED and host queries included).
async fn verdicts(runs: usize) {
    use release_verdict::{Outcome, CASES};
    let app = release_verdict::app().await;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for run in 0..runs {
        eprintln!("verdict run {run}: the five scenarios at once");
        outcomes.extend(release_verdict::run_together(&app).await);
        eprintln!("verdict run {run}: a fresh host");
        outcomes.push(release_verdict::run_fresh(&app).await);
        eprintln!("verdict run {run}: a CPU fault during a canary");
        outcomes.push(release_verdict::run_cpu(&app).await);
    }
    println!("| scenario | what | runs | verdicts | recommendations | right | wrong rollback |");
    println!("|---|---|---|---|---|---|---|");
    let (mut right, mut wrong_rollbacks) = (0, 0);
    for case in &CASES {
        let mine: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.scenario == case.name)
            .collect();
        let verdicts: Vec<&str> = mine.iter().map(|o| o.verdict().0).collect();
        let recommendations: Vec<&str> = mine.iter().map(|o| o.verdict().1).collect();
        let ok = verdicts.iter().filter(|v| **v == case.verdict).count();
        let bad = match case.release_fault {
            true => 0,
            false => recommendations.iter().filter(|r| **r == "rollback").count(),
        };
        right += ok;
        wrong_rollbacks += bad;
        println!(
            "| {} | {} | {} | {} | {} | {ok}/{} | {bad} |",
            case.name,
            case.what,
            mine.len(),
            verdicts.join(", "),
            recommendations.join(", "),
            mine.len()
        );
    }
    for o in &outcomes {
        eprintln!(
            "{}: verdict on the report {:.0} ms after the 202",
            o.scenario, o.verdict_ms
        );
    }
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.verdict_ms).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "\nright verdicts: {right}/{} ({:.0} %); wrong rollbacks: {wrong_rollbacks}",
        outcomes.len(),
        100.0 * right as f64 / outcomes.len().max(1) as f64
    );
    println!(
        "evidence and verdict on the report after the 202 (n={}): median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        ms.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

/// Waits until the report holds its evidence (or is final).
async fn wait_evidence(client: &reqwest::Client, base: &str, id: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(r) = client.get(format!("{base}/reports/{id}")).send().await {
            if let Ok(report) = r.json::<Value>().await {
                if !report["evidence"].is_null() || report["status"] != "generating" {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One AI report, scored.
struct AiRun {
    scenario: &'static str,
    run: usize,
    engine: String,
    why: String,
    steps: u64,
    tool_calls: u64,
    tokens: (u64, u64),
    seconds: f64,
    names_resource: bool,
    names_host: bool,
    /// Whether the model agreed with the release verdict (`None`: no rollout registered).
    agrees: Option<bool>,
    queries: usize,
    parse: usize,
    data: usize,
    judge: Option<f64>,
}

/// Scores a report against the fault that was injected: the resource in 【根因分析】, the
/// host in the report, each `promQL` against Prometheus, and the judge's score.
async fn score_ai(
    client: &reqwest::Client,
    prom: &str,
    scenario: &'static str,
    expected: &str,
    run: usize,
    instance: &str,
    report: &Value,
) -> AiRun {
    let engine = report["engine"]
        .as_str()
        .unwrap_or(report["status"].as_str().unwrap_or(""))
        .to_owned();
    let content = report["content"].as_str().unwrap_or("");
    let ai = engine == "ai";
    let queries: Vec<String> = if ai {
        report["promQL"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q.as_str().map(str::to_owned))
            .collect()
    } else {
        Vec::new()
    };
    let (mut parse, mut data) = (0, 0);
    for q in &queries {
        let answer: Option<Value> = match client
            .get(format!("{prom}/api/v1/query"))
            .query(&[("query", q.as_str())])
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if let Some(answer) = answer.filter(|a| a["status"] == "success") {
            parse += 1;
            if answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                data += 1;
            }
        }
    }
    let usage = &report["usage"];
    AiRun {
        scenario,
        run,
        why: if ai {
            String::new()
        } else {
            report["aiError"]
                .as_str()
                .or(report["error"].as_str())
                .unwrap_or("")
                .chars()
                .take(140)
                .collect()
        },
        engine,
        steps: usage["steps"].as_u64().unwrap_or(0),
        tool_calls: usage["toolCalls"].as_u64().unwrap_or(0),
        tokens: (
            usage["inputTokens"].as_u64().unwrap_or(0),
            usage["outputTokens"].as_u64().unwrap_or(0),
        ),
        seconds: report["durationMs"].as_f64().unwrap_or(0.0) / 1000.0,
        names_resource: ai
            && names(expected)
                .iter()
                .any(|w| root_cause(content).contains(w)),
        names_host: ai && (content.contains(instance) || content.contains("web-1")),
        agrees: report["release"]["model"]["agrees"].as_bool(),
        queries: queries.len(),
        parse,
        data,
        judge: if ai {
            judge(client, expected, instance, content).await
        } else {
            None
        },
    }
}

/// The judge's score of a report (`JUDGE_BASE_URL`, `JUDGE_API_KEY`, `JUDGE_MODEL`, an
/// OpenAI-compatible API), by the rubric in `benches/quality-rubric.md`.
async fn judge(
    client: &reqwest::Client,
    expected: &str,
    instance: &str,
    content: &str,
) -> Option<f64> {
    let base = std::env::var("JUDGE_BASE_URL")
        .ok()
        .filter(|v| !v.is_empty())?;
    let key = std::env::var("JUDGE_API_KEY").unwrap_or_default();
    let model = std::env::var("JUDGE_MODEL").unwrap_or_default();
    let rubric = include_str!("quality-rubric.md");
    let prompt = format!(
        "{rubric}\n\n## The fault that was injected\n\nresource: {expected}; host: {instance}\n\n## The report\n\n{content}\n"
    );
    let body = json!({"model": model, "temperature": 0, "max_tokens": 300,
        "messages": [{"role": "user", "content": prompt}]});
    let answer: Value = client
        .post(format!("{}/chat/completions", base.trim_end_matches('/')))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let text = answer["choices"][0]["message"]["content"].as_str()?;
    let at = text.find("\"score\"")?;
    let rest = text[at + 7..].trim_start_matches([':', ' ', '"']);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn print_ai(ai: &Ai, runs: &[AiRun]) {
    let model = match ai {
        Ai::Local(_, model) => model.clone(),
        _ => std::env::var("AI_MODEL").unwrap_or_default(),
    };
    println!("\nAI reports ({model}):\n");
    println!("| scenario | run | report | why not the AI's | steps | tool calls | tokens in / out | time | 【根因分析】 names it | names the host | agrees with the verdict | promQL parse | promQL with data | judge |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let yes = |b: bool| if b { "yes" } else { "no" };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {:.0} s | {} | {} | {} | {}/{} | {}/{} | {} |",
            r.scenario,
            r.run,
            r.engine,
            r.why.replace('|', "/"),
            r.steps,
            r.tool_calls,
            r.tokens.0,
            r.tokens.1,
            r.seconds,
            yes(r.names_resource),
            yes(r.names_host),
            r.agrees.map_or("n/a", yes),
            r.parse,
            r.queries,
            r.data,
            r.queries,
            r.judge.map_or("n/a".into(), |j| format!("{j}")),
        );
    }
    let ai = runs.iter().filter(|r| r.engine == "ai").count();
    let named = runs.iter().filter(|r| r.names_resource).count();
    let mut times: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "\nAI's report: {ai}/{}; 【根因分析】 names the injected resource: {named}/{}; median time {:.0} s",
        runs.len(),
        runs.len(),
        times.get(times.len() / 2).copied().unwrap_or(0.0)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().is_some_and(|a| a == "stats") {
        let cases = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
        stats::run(cases);
        return;
    }
    let ai_mode = args.iter().any(|a| a == "ai");
    let args: Vec<String> = args.into_iter().filter(|a| a != "ai").collect();
    let runs: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(if ai_mode { 1 } else { 2 });
    if args.iter().any(|a| a == "verdict") {
        verdicts(runs).await;
        if !args.iter().any(|a| SCENARIOS.iter().any(|s| s.name == a)) {
            return;
        }
    }
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            // The AI is scored on faults; the control has nothing to name.
            (args.iter().all(|a| a.parse::<usize>().is_ok()) && !(ai_mode && s.expected.is_none()))
                || args.iter().any(|a| a == s.name)
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let from_env = std::env::var("AI_BASE_URL").is_ok_and(|v| !v.is_empty());
    let mut _model = None;
    let mut _recorder = None;
    let ai = match (from_env, ai_mode) {
        (true, _) => Ai::Env,
        (false, true) => {
            let size = std::env::var("DD_LLM_MODEL").unwrap_or_else(|_| "1.5b".into());
            eprintln!("starting the local model (Qwen2.5-Coder {size})");
            let llm = servers::start_local_llm(&size, 16384).await;
            let mut url = llm.url.clone();
            _model = Some(llm);
            // DD_LLM_RECORD=FILE: every exchange with the model appended to FILE (JSON
            // Lines), for tests/fixtures/llm/.
            if let Ok(out) = std::env::var("DD_LLM_RECORD") {
                let port = free_port();
                _recorder = Some(start_guarded(
                    "python3",
                    &[
                        servers::repo()
                            .join("tests/fixtures/record_llm.py")
                            .display()
                            .to_string(),
                        "--upstream".into(),
                        url.trim_end_matches("/v1").to_owned(),
                        "--port".into(),
                        port.to_string(),
                        "--out".into(),
                        out,
                    ],
                    &work.path().join("recorder.log"),
                ));
                servers::wait_tcp(port, "the recorder").await;
                url = format!("http://127.0.0.1:{port}/v1");
            }
            Ai::Local(url, format!("qwen2.5-coder-{size}"))
        }
        (false, false) => Ai::Off,
    };
    let mut ai_runs: Vec<AiRun> = Vec::new();

    let fs = work.path().join("fs");
    std::fs::create_dir_all(&fs).unwrap();
    assert!(
        sh(&format!(
            "mount -t tmpfs -o size=256m tmpfs {}",
            fs.display()
        )),
        "mounting a tmpfs for the disk_space scenario needs root"
    );
    let mut node = Node {
        bin: "/usr/bin/prometheus-node-exporter".into(),
        instance: format!("127.0.0.1:{}", free_port()),
        dir: work.path().to_owned(),
        process: None,
    };
    node.start();
    wait_http(
        &format!("http://{}/metrics", node.instance),
        "node_exporter",
    )
    .await;
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let prom_config = work.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{}']\n",
            node.instance
        ),
    )
    .unwrap();
    let _prometheus = start_guarded(
        "/usr/bin/prometheus",
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", work.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &work.path().join("prometheus.log"),
    );
    wait_http(&format!("{prom}/-/ready"), "prometheus").await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(deploy_diagnosis::startup::run(
        listener,
        config(&prom, &work.path().join("reports.sqlite3"), &ai),
        shutdown.clone(),
    ));
    let client = deploy_diagnosis::tls::client().build().unwrap();

    println!("| scenario | runs | hit@1 | top 3 | top item (last run) | AI names it |");
    println!("|---|---|---|---|---|---|");
    let (mut hits, mut total) = (0, 0);
    for scenario in chosen {
        let (mut hit1, mut top3, mut ai_named, mut last_top) = (0, 0, 0, String::new());
        for run in 0..runs {
            tokio::time::sleep(Duration::from_secs(QUIET_SECONDS)).await;
            let started = chrono::Utc::now();
            let fault = inject(scenario.name, &mut node, work.path()).await;
            wait_visible(&client, &prom, scenario.name, &node.instance).await;
            let id = format!("quality-{}-{run}-{}", scenario.name, started.timestamp());
            let alert = json!({
                "version": "4", "status": "firing", "receiver": "quality",
                "alerts": [{"status": "firing",
                    "labels": {"alertname": "DeploymentUnhealthy", "deploymentId": id,
                               "instance": node.instance, "severity": "critical"},
                    "annotations": {"description": "the deployment's host misbehaves"},
                    "startsAt": started.to_rfc3339(), "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": id}]
            });
            let accepted = client
                .post(format!("{base}/v1/alerts"))
                .json(&alert)
                .send()
                .await
                .expect("intake");
            assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
            let mut fault = Some(fault);
            if ai_mode && matches!(scenario.name, "cpu" | "disk_io") {
                wait_evidence(&client, &base, &id).await;
                if let Some(f) = fault.take() {
                    undo(f, &mut node).await;
                }
            }
            let limit = Duration::from_secs(if ai.on() { 1500 } else { 300 });
            let report = helpers::wait_final(&client, &base, &id, None, limit).await;
            if let Some(f) = fault.take() {
                undo(f, &mut node).await;
            }
            let evidence = report["evidence"].as_array().cloned().unwrap_or_default();
            let resource = |e: &Value| e["resource"].as_str().unwrap_or("").to_owned();
            let above: Vec<&Value> = evidence
                .iter()
                .filter(|e| e["resource"] != "rule" && e["score"].as_f64().unwrap_or(0.0) >= 1.5)
                .collect();
            last_top = evidence
                .first()
                .map(|e| {
                    format!(
                        "{} {} ({})",
                        e["signal"].as_str().unwrap_or(""),
                        e["verdict"].as_str().unwrap_or(""),
                        e["score"]
                    )
                })
                .unwrap_or_else(|| "no evidence".into());
            let (first, in_top3) = match scenario.expected {
                Some(expected) => (
                    evidence.first().is_some_and(|e| resource(e) == expected),
                    evidence.iter().take(3).any(|e| resource(e) == expected),
                ),
                // The control: nothing above the anomaly threshold.
                None => (above.is_empty(), above.is_empty()),
            };
            hit1 += usize::from(first);
            top3 += usize::from(in_top3);
            if let (true, Some(expected)) = (ai_mode, scenario.expected) {
                eprintln!(
                    "{} run {run}: {} report, promQL {}\n{}",
                    scenario.name,
                    report["engine"],
                    report["promQL"],
                    report["content"].as_str().unwrap_or_default()
                );
                ai_runs.push(
                    score_ai(
                        &client,
                        &prom,
                        scenario.name,
                        expected,
                        run,
                        &node.instance,
                        &report,
                    )
                    .await,
                );
            }
            if let (true, Some(expected)) = (ai.on(), scenario.expected) {
                let content = report["content"].as_str().unwrap_or("");
                if report["engine"] == "ai"
                    && names(expected)
                        .iter()
                        .any(|w| root_cause(content).contains(w))
                {
                    ai_named += 1;
                }
            }
            eprintln!(
                "{} run {run}: {} (top: {last_top})",
                scenario.name,
                if first { "hit" } else { "miss" }
            );
        }
        hits += hit1;
        total += runs;
        println!(
            "| {} | {runs} | {hit1}/{runs} | {top3}/{runs} | {last_top} | {} |",
            scenario.name,
            if ai.on() && scenario.expected.is_some() {
                format!("{ai_named}/{runs}")
            } else {
                "n/a".into()
            }
        );
    }
    println!(
        "\nhit@1 overall: {hits}/{total} ({:.0} %)",
        100.0 * hits as f64 / total.max(1) as f64
    );
    let canary = ai_mode
        && (args.iter().all(|a| a.parse::<usize>().is_ok()) || args.iter().any(|a| a == "canary"));
    if let (true, Ai::Local(url, model)) = (canary, &ai) {
        // The bad canary: a RED service whose released host answers 30 % errors, its
        // controls fine, the rollout registered, the alert an application's; the report
        // carries the release verdict the model is asked to agree or disagree with.
        let app = release_verdict::app_with(helpers::Options {
            native: true,
            evidence: true,
            ai_base_url: Some(url.clone()),
            provider: Some(fake_llm::Provider::LlamaCpp),
            model: Box::leak(model.clone().into_boxed_str()),
            timeout_s: 600,
            max_turns: 6,
            ai_extra: "  ContextTokens: 16384\n  MaxTokens: 1200\n  \
                       ExtraBody: {temperature: 0, seed: 7}\n",
            ..helpers::Options::default()
        })
        .await;
        let red = release_verdict::prometheus_url().await;
        for run in 0..runs {
            let outcome = release_verdict::run_canary(&app).await;
            let report = &outcome.report;
            eprintln!(
                "canary run {run}: {} report, verdict {:?}, promQL {}\n{}",
                report["engine"],
                outcome.verdict(),
                report["promQL"],
                report["content"].as_str().unwrap_or_default()
            );
            ai_runs.push(
                score_ai(
                    &client,
                    &red,
                    "canary",
                    "errors",
                    run,
                    &outcome.host,
                    report,
                )
                .await,
            );
        }
    }
    if ai_mode {
        print_ai(&ai, &ai_runs);
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), service).await;
    sh(&format!("umount {}", fs.display()));
}
