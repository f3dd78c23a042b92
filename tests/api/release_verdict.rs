//! The release verdict against real parts: a small HTTP service that exports real
//! Prometheus metrics (`http_requests_total` by `code`, an `http_request_duration_seconds`
//! histogram) from the requests it serves, run as several instances under their own
//! `hostname`, loaded, and scraped with a real node_exporter by a real Prometheus (file
//! service discovery, so each scenario adds its own hosts). A "bad release" (errors or
//! slow answers) is switched on where the release went.
//!
//! Each host is a machine of its own ([`HostMachine`]): its node_exporter reads a procfs
//! whose CPU is the host's, so what the tests beside it do to this machine's two cores is
//! not read as every host's saturation. The real CPU fault's hosts share one, whose CPU
//! includes a control group where `stress-ng` runs ([`Cpu::Shared`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::helpers::{deployment_id, spawn_app, Options, TestApp};
use crate::servers::{self, free_port, start_guarded, wait_http, Guarded};

/// What a bad release does to an instance.
#[derive(Debug, Clone, Copy, Default)]
struct Fault {
    /// Percent of requests answered 500.
    errors: u64,
    /// Added to every answer.
    delay: Duration,
}

struct Service {
    fault: Mutex<Fault>,
    served: AtomicU64,
    requests: Family<Vec<(String, String)>, Counter>,
    duration: Histogram,
    registry: Registry,
}

async fn work(State(s): State<Arc<Service>>) -> StatusCode {
    let started = Instant::now();
    let fault = *s.fault.lock().unwrap();
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    let n = s.served.fetch_add(1, Ordering::Relaxed);
    // `errors` of every 100 requests fail, spread evenly.
    let code = if (n + 1) * fault.errors / 100 > n * fault.errors / 100 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    s.requests
        .get_or_create(&vec![("code".into(), code.as_u16().to_string())])
        .inc();
    s.duration.observe(started.elapsed().as_secs_f64());
    code
}

async fn metrics(State(s): State<Arc<Service>>) -> String {
    let mut out = String::new();
    encode(&mut out, &s.registry).unwrap();
    out
}

/// One instance of the service, loaded at 10 requests a second until dropped.
struct Instance {
    host: String,
    address: String,
    service: Arc<Service>,
    stop: tokio_util::sync::CancellationToken,
    /// Its machine, when it has one of its own.
    machine: Option<HostMachine>,
}

/// Which machine a fleet's hosts are on.
#[derive(Clone, Copy)]
enum Cpu<'a> {
    /// Each host on its own ([`HostMachine`]).
    Own,
    /// Every host on this one: for a real CPU fault, which moves every host.
    Shared(&'a HostMachine),
}

/// The steady busy share of a [`HostMachine`]'s CPUs: user and system, of each second
/// that its own work leaves.
const HOST_BUSY: (f64, f64) = (0.07, 0.03);

/// A host's machine as Prometheus sees it: a real node_exporter reading a procfs of the
/// machine's (`--path.procfs`), whose `stat` is rewritten every 250 ms: two CPUs, steadily
/// [`HOST_BUSY`] busy, plus what the processes of its control group used (the kernel's
/// accounting, cgroup v1 `cpuacct` or v2 `cpu.stat`), beside a fixed `meminfo` and
/// `loadavg`. The test machine's two cores serve every test at once: read through one
/// node_exporter, the load of the tests beside a scenario is every host's saturation,
/// and a quiet *before* is a busy *after*. A real CPU fault runs in the control group
/// ([`HostMachine::stress`]).
struct HostMachine {
    address: String,
    group: CpuGroup,
    stop: tokio_util::sync::CancellationToken,
    _exporter: Guarded,
    /// Shared with the task that writes `stat`, which may still be writing when the
    /// machine is dropped (on a multi-threaded runtime): the folder goes with the last.
    _dir: Arc<tempfile::TempDir>,
}

impl Drop for HostMachine {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HostMachine {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        std::fs::create_dir(&proc).unwrap();
        std::fs::write(
            proc.join("meminfo"),
            "MemTotal:        8000000 kB\nMemFree:         5000000 kB\n\
             MemAvailable:    6000000 kB\nBuffers:          100000 kB\nCached:          1000000 kB\n",
        )
        .unwrap();
        std::fs::write(proc.join("loadavg"), "0.20 0.20 0.20 1/200 1000\n").unwrap();
        let group = CpuGroup::new();
        let mut stat = Stat::new(Instant::now());
        stat.write(&proc, group.used());
        let address = format!("127.0.0.1:{}", free_port());
        let exporter = start_guarded(
            "/usr/bin/prometheus-node-exporter",
            &[
                format!("--web.listen-address={address}"),
                format!("--path.procfs={}", proc.display()),
                "--collector.disable-defaults".into(),
                "--collector.cpu".into(),
                "--collector.meminfo".into(),
                "--collector.loadavg".into(),
            ],
            &dir.path().join("node.log"),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let dir = Arc::new(dir);
        let (until, usage, kept) = (stop.clone(), group.usage.clone(), Arc::clone(&dir));
        tokio::spawn(async move {
            let _kept = kept;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !until.is_cancelled() {
                tick.tick().await;
                stat.write(&proc, read_usage(usage.as_deref().map(|p| p.as_path())));
            }
        });
        wait_http(
            &format!("http://{address}/metrics"),
            "a host's node_exporter",
        )
        .await;
        Self {
            address,
            group,
            stop,
            _exporter: exporter,
            _dir: dir,
        }
    }

    /// A real CPU fault on this machine: `stress-ng` on one CPU of its two for `seconds`,
    /// in its control group (at normal priority: it takes its share of the real cores
    /// beside the other tests, and only that share is this machine's); stopped when
    /// dropped.
    fn stress(&self, seconds: u64) -> servers::CpuFault {
        let procs = self
            .group
            .procs()
            .expect("a CPU fault needs a control group: run the tests as root on Linux");
        servers::cpu_fault_in(seconds, &procs)
    }
}

/// A control group of its own whose CPU use the kernel accounts: cgroup v2's `cpu.stat`,
/// or v1's `cpuacct`; none where neither can be made (not root).
struct CpuGroup {
    dir: Option<std::path::PathBuf>,
    /// The file of its use: `cpu.stat` (v2) or `cpuacct.stat` (v1).
    usage: Option<Arc<std::path::PathBuf>>,
}

impl CpuGroup {
    fn new() -> Self {
        let name = format!("dd-test-{}", uuid::Uuid::new_v4().simple());
        let root = std::path::Path::new("/sys/fs/cgroup");
        let (dir, file) = if root.join("cgroup.controllers").exists() {
            (root.join(name), "cpu.stat")
        } else {
            (root.join("cpuacct").join(name), "cpuacct.stat")
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => Self {
                usage: Some(Arc::new(dir.join(file))),
                dir: Some(dir),
            },
            Err(_) => Self {
                dir: None,
                usage: None,
            },
        }
    }

    fn procs(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.join("cgroup.procs"))
    }

    /// Its CPU use so far, (user, system) in USER_HZ.
    fn used(&self) -> (u64, u64) {
        read_usage(self.usage.as_deref().map(|p| p.as_path()))
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // Its processes are gone with their guards; a group with none left is removed.
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// (user, system) in USER_HZ from a control group's `cpu.stat` (microseconds) or
/// `cpuacct.stat` (USER_HZ); zero without one.
fn read_usage(file: Option<&std::path::Path>) -> (u64, u64) {
    let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else {
        return (0, 0);
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    if text.contains("user_usec") {
        (field("user_usec ") / 10_000, field("system_usec ") / 10_000)
    } else {
        (field("user "), field("system "))
    }
}

/// A machine's `/proc/stat`, two CPUs, its counters never going back.
struct Stat {
    started: Instant,
    last: [u64; 3],
}

impl Stat {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last: [0; 3],
        }
    }

    /// Writes the CPUs' user, system and idle time since the machine started (in USER_HZ,
    /// 100 a second; a day of uptime before, so no counter begins at zero): the control
    /// group's use `group`, and [`HOST_BUSY`] of what it leaves. Whole: it is renamed into
    /// place, so the node_exporter never reads half of it.
    fn write(&mut self, proc: &std::path::Path, group: (u64, u64)) {
        let total = 2.0 * (self.started.elapsed().as_secs_f64() + 86_400.0) * 100.0;
        let left = (total - (group.0 + group.1) as f64).max(0.0);
        let now = [
            (left * HOST_BUSY.0) as u64 + group.0,
            (left * HOST_BUSY.1) as u64 + group.1,
            (left * (1.0 - HOST_BUSY.0 - HOST_BUSY.1)) as u64,
        ];
        for (last, now) in self.last.iter_mut().zip(now) {
            *last = (*last).max(now);
        }
        let [user, system, idle] = self.last;
        let cpu = |name: &str, share: u64| {
            format!(
                "{name} {} 0 {} {} 0 0 0 0 0 0\n",
                user / share,
                system / share,
                idle / share
            )
        };
        let stat = format!(
            "{}{}{}intr 0\nctxt 0\nbtime 1700000000\nprocesses 1000\nprocs_running 1\nprocs_blocked 0\n",
            cpu("cpu ", 1),
            cpu("cpu0", 2),
            cpu("cpu1", 2),
        );
        let tmp = proc.join(".stat");
        std::fs::write(&tmp, stat).unwrap();
        std::fs::rename(&tmp, proc.join("stat")).unwrap();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Instance {
    async fn start(host: &str, cpu: Cpu<'_>) -> Self {
        let machine = match cpu {
            Cpu::Own => Some(HostMachine::start().await),
            Cpu::Shared(_) => None,
        };
        let mut registry = Registry::default();
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "http_requests",
            "Requests served, by code",
            requests.clone(),
        );
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer",
            duration.clone(),
        );
        let service = Arc::new(Service {
            fault: Mutex::new(Fault::default()),
            served: AtomicU64::new(0),
            requests,
            duration,
            registry,
        });
        let app = Router::new()
            .route("/work", get(work))
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(&service));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await
                .unwrap();
        });
        // Load: a request every 100 ms, each on its own task so slow answers do not slow
        // the rate.
        let (url, until) = (format!("http://{address}/work"), stop.clone());
        tokio::spawn(async move {
            let client = deploy_diagnosis::tls::client().build().unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !until.is_cancelled() {
                tick.tick().await;
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let _ = client.get(url).send().await;
                });
            }
        });
        Self {
            host: host.to_owned(),
            address,
            service,
            stop,
            machine,
        }
    }

    fn set(&self, fault: Fault) {
        *self.service.fault.lock().unwrap() = fault;
    }
}

/// A Prometheus scraping every 1 s what the scenarios write into its discovery folder: each
/// host's service (`job="app"`) and its machine's node_exporter (`job="node"`, as
/// `instance` = the host).
struct Stack {
    url: String,
    sd: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _prom: Guarded,
}

static STACK: OnceCell<Stack> = OnceCell::const_new();

/// Seconds between scrapes: 1, or `DD_TEST_SCRAPE_SECONDS` (what
/// `benches/gate_detection.rs` sets to measure a common setup's 15).
fn scrape_seconds() -> u64 {
    std::env::var("DD_TEST_SCRAPE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

async fn stack() -> &'static Stack {
    STACK
        .get_or_init(|| async {
            let dir = tempfile::tempdir().unwrap();
            let sd = dir.path().join("sd");
            std::fs::create_dir(&sd).unwrap();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global: {{scrape_interval: {every}s, evaluation_interval: {every}s}}\nscrape_configs:\n  \
                     - job_name: app\n    file_sd_configs: [{{files: ['{sd}/app-*.json'], refresh_interval: 1s}}]\n  \
                     - job_name: node\n    file_sd_configs: [{{files: ['{sd}/node-*.json'], refresh_interval: 1s}}]\n",
                    sd = sd.display(),
                    every = scrape_seconds(),
                ),
            )
            .unwrap();
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let prom = start_guarded(
                "/usr/bin/prometheus",
                &[
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                ],
                &dir.path().join("prometheus.log"),
            );
            wait_http(&format!("{url}/-/ready"), "prometheus").await;
            Stack {
                url,
                sd,
                _dir: dir,
                _prom: prom,
            }
        })
        .await
}

/// A scenario's hosts, each an instance of the service, all scraped until dropped.
pub struct Fleet {
    name: String,
    instances: Vec<Instance>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(stack) = STACK.get() {
            for kind in ["app", "node"] {
                let _ = std::fs::remove_file(stack.sd.join(format!("{kind}-{}.json", self.name)));
            }
        }
    }
}

impl Fleet {
    /// Starts `hosts` (named `<scenario>-<run>-<host>`, new names each run so no host has
    /// history from an earlier one), each on a machine of its own, and waits until
    /// Prometheus has scraped each of them.
    async fn start(scenario: &str, hosts: &[&str]) -> Self {
        Self::start_on(scenario, hosts, Cpu::Own).await
    }

    /// [`Fleet::start`], the hosts' CPU read from `cpu`.
    async fn start_on(scenario: &str, hosts: &[&str], cpu: Cpu<'_>) -> Self {
        let stack = stack().await;
        let scenario = &format!(
            "{scenario}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let mut instances = Vec::new();
        for h in hosts {
            instances.push(Instance::start(&format!("{scenario}-{h}"), cpu).await);
        }
        let fleet = Self {
            name: scenario.to_owned(),
            instances,
        };
        let app: Vec<Value> = fleet
            .instances
            .iter()
            .map(|i| json!({"targets": [i.address], "labels": {"hostname": i.host}}))
            .collect();
        let node: Vec<Value> = fleet
            .instances
            .iter()
            .map(|i| {
                let node = match (&i.machine, cpu) {
                    (Some(own), _) => &own.address,
                    (None, Cpu::Shared(machine)) => &machine.address,
                    (None, Cpu::Own) => unreachable!("a host of its own has its machine"),
                };
                json!({"targets": [node], "labels": {"hostname": i.host, "instance": i.host}})
            })
            .collect();
        for (kind, targets) in [("app", app), ("node", node)] {
            let tmp = stack.sd.join(format!(".{kind}-{scenario}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec(&targets).unwrap()).unwrap();
            std::fs::rename(&tmp, stack.sd.join(format!("{kind}-{scenario}.json"))).unwrap();
        }
        let want = 2 * fleet.instances.len();
        wait_value(
            &format!("count(up{{hostname=~\"{scenario}-.*\"}} == 1)"),
            |n| n as usize == want,
        )
        .await;
        fleet
    }

    fn host(&self, h: &str) -> &Instance {
        let name = format!("{}-{h}", self.name);
        self.instances.iter().find(|i| i.host == name).unwrap()
    }
}

/// Waits until an instant query's first value satisfies `ok`.
async fn wait_value(query: &str, ok: impl Fn(f64) -> bool) {
    let stack = stack().await;
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let start = Instant::now();
    loop {
        let body: Option<Value> = match client
            .get(format!("{}/api/v1/query", stack.url))
            .query(&[("query", query)])
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let value = body.as_ref().and_then(|b| {
            b["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        });
        if value.is_some_and(&ok) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never satisfied {query}: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An application alert about one host of the deployment.
fn app_alert(id: &str, host: &str) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "deploy-diagnosis",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "发布期间 非 200占比异常", "deploymentId": id, "hostname": host,
                       "severity": "critical"},
            "annotations": {"description": "non-200 ratio above 5% during the release"},
            "startsAt": chrono::Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": format!("{id}-{host}")
        }]
    })
}

/// The registration of a scenario's rollout.
fn rollout(
    fleet: &Fleet,
    strategy: &str,
    released: &[&str],
    started_at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let hosts: Vec<Value> = fleet
        .instances
        .iter()
        .map(|i| {
            let short = i.host.trim_start_matches(&format!("{}-", fleet.name));
            let status = if released.contains(&short) {
                "released"
            } else {
                "pending"
            };
            json!({"name": i.host, "status": status})
        })
        .collect();
    json!({
        "service": "shop", "tag": "v2.0.0", "environment": "production",
        "hosts": hosts, "strategy": strategy, "startedAt": started_at.to_rfc3339(),
        "thresholds": {"errorRateMaxPercent": 5, "durationP95MaxMs": 150}
    })
}

/// What a scenario ended with.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario.
    pub scenario: &'static str,
    /// The final report.
    pub report: Value,
    /// The host the alert named.
    pub host: String,
    /// Milliseconds from the `202` to the evidence and the release verdict on the report.
    pub verdict_ms: f64,
}

impl Outcome {
    fn release(&self) -> &Value {
        &self.report["release"]
    }

    /// The verdict and the recommendation.
    pub fn verdict(&self) -> (&str, &str) {
        (
            self.release()["verdict"].as_str().unwrap_or("none"),
            self.release()["recommendation"].as_str().unwrap_or("none"),
        )
    }
}

/// A scenario and the verdict it should get.
pub struct Case {
    /// Its name.
    pub name: &'static str,
    /// What is done.
    pub what: &'static str,
    /// The right verdict.
    pub verdict: &'static str,
    /// Whether the release is what broke it (else a *rollback* is the costliest error).
    pub release_fault: bool,
}

/// The scenarios, in the harness's order: the first five run at once, the last two alone
/// (one has no history, one loads every CPU).
pub const CASES: [Case; 7] = [
    Case {
        name: "canary-bad",
        what: "canary errors 30 %, controls fine",
        verdict: "release",
        release_fault: true,
    },
    Case {
        name: "everywhere",
        what: "errors 30 % on every host, controls included",
        verdict: "not_release",
        release_fault: false,
    },
    Case {
        name: "before",
        what: "canary errors from 15 s before startedAt",
        verdict: "not_release",
        release_fault: false,
    },
    Case {
        name: "no-fault",
        what: "canary, no fault",
        verdict: "not_release",
        release_fault: false,
    },
    Case {
        name: "all-slow",
        what: "strategy all, answers 300 ms slower at the release",
        verdict: "release",
        release_fault: true,
    },
    Case {
        name: "fresh",
        what: "a host started at the release, no baseline",
        verdict: "inconclusive",
        release_fault: false,
    },
    Case {
        name: "cpu",
        what: "stress-ng on one of the machine's two CPUs during a canary",
        verdict: "not_release",
        release_fault: false,
    },
];

/// Posts the alert and waits for the final report, timing the verdict.
async fn alert_and_wait(app: &TestApp, name: &'static str, id: &str, host: &str) -> Outcome {
    let (status, body) = app.post_alerts(&app_alert(id, host)).await;
    let accepted = Instant::now();
    assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
    let verdict_ms = loop {
        let (_, report) = app.get(&format!("/reports/{id}")).await;
        if report["release"].is_object()
            && (report["evidence"].is_array() || report["evidenceError"].is_string())
        {
            break accepted.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            accepted.elapsed() < Duration::from_secs(60),
            "{name}: no verdict on {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A real model (the harness's) may take its whole deadline, twice `AI.Timeout`.
    let limit = Duration::from_secs(120).max(app.config.ai.timeout * 2 + Duration::from_secs(60));
    let report = app.wait_final_within(id, limit).await;
    Outcome {
        scenario: name,
        report,
        host: host.to_owned(),
        verdict_ms,
    }
}

/// Seconds of history before a scenario's release, and from the release to the alert:
/// each holds Release.MinPoints (10) points 3 s apart, with a margin for the first scrape.
const HISTORY: Duration = Duration::from_secs(40);
const AFTER: Duration = Duration::from_secs(36);

/// Runs one scenario: the fleet gets [`HISTORY`], the rollout is registered as
/// starting now with `fault` switched on the `faulty` hosts at the release (or
/// `fault_before_release` before it), the alert comes [`AFTER`] it.
#[allow(clippy::too_many_arguments)]
async fn scenario(
    app: &TestApp,
    name: &'static str,
    hosts: &[&str],
    strategy: &str,
    released: &[&str],
    faulty: &[&str],
    fault: Fault,
    fault_before_release: Duration,
) -> Outcome {
    let fleet = Fleet::start(name, hosts).await;
    let history = HISTORY;
    tokio::time::sleep(history - fault_before_release).await;
    if !fault_before_release.is_zero() {
        for h in faulty {
            fleet.host(h).set(fault);
        }
        tokio::time::sleep(fault_before_release).await;
    }
    let started_at = chrono::Utc::now();
    let id = deployment_id(name);
    let (status, body) = app
        .put_json(
            &format!("/deployments/{id}"),
            &rollout(&fleet, strategy, released, started_at),
        )
        .await;
    assert!(status.is_success(), "{name}: registration {status}: {body}");
    if fault_before_release.is_zero() {
        for h in faulty {
            fleet.host(h).set(fault);
        }
    }
    tokio::time::sleep(AFTER).await;
    let alerted = fleet.host(released.first().copied().unwrap_or(hosts[0]));
    alert_and_wait(app, name, &id, &alerted.host).await
}

/// A canary of `hosts` (the first one released, answering 30 % errors from its release
/// on), registered on each of `apps` after `HISTORY`, then `AFTER` waited: its id, and the
/// fleet, which serves as long as it is kept. (`benches/analysis_latency.rs` measures
/// the analysis on it.)
#[allow(dead_code)]
pub async fn registered_canary(apps: &[&TestApp], hosts: &[&str]) -> (String, Fleet) {
    let fleet = Fleet::start("bench", hosts).await;
    tokio::time::sleep(HISTORY).await;
    let started_at = chrono::Utc::now();
    let id = deployment_id(&fleet.name);
    for app in apps {
        let (status, body) = app
            .put_json(
                &format!("/deployments/{id}"),
                &rollout(&fleet, "canary", &hosts[..1], started_at),
            )
            .await;
        assert!(status.is_success(), "registration {status}: {body}");
    }
    fleet.host(hosts[0]).set(errors(30));
    tokio::time::sleep(AFTER).await;
    (id, fleet)
}

fn errors(percent: u64) -> Fault {
    Fault {
        errors: percent,
        delay: Duration::ZERO,
    }
}

/// The five scenarios that run at once: (a) to (e) of the issue.
pub async fn run_together(app: &TestApp) -> Vec<Outcome> {
    let none = Duration::ZERO;
    let slow = Fault {
        errors: 0,
        delay: Duration::from_millis(300),
    };
    let (a, b, c, d, e) = tokio::join!(
        canary(app),
        scenario(
            app,
            "everywhere",
            &["web-1", "web-2"],
            "canary",
            &["web-1"],
            &["web-1", "web-2"],
            errors(30),
            none
        ),
        scenario(
            app,
            "before",
            &["web-1", "web-2"],
            "canary",
            &["web-1"],
            &["web-1"],
            errors(30),
            Duration::from_secs(15)
        ),
        scenario(
            app,
            "no-fault",
            &["web-1", "web-2"],
            "canary",
            &["web-1"],
            &[],
            Fault::default(),
            none
        ),
        scenario(
            app,
            "all-slow",
            &["web-1", "web-2"],
            "all",
            &["web-1", "web-2"],
            &["web-1", "web-2"],
            slow,
            none
        ),
    );
    vec![a, b, c, d, e]
}

/// The bad canary alone: the scenario `scripts/quality ai` gives a real model.
#[allow(dead_code)]
pub async fn run_canary(app: &TestApp) -> Outcome {
    canary(app).await
}

async fn canary(app: &TestApp) -> Outcome {
    scenario(
        app,
        "canary-bad",
        &["web-1", "web-2", "web-3"],
        "canary",
        &["web-1"],
        &["web-1"],
        errors(30),
        Duration::ZERO,
    )
    .await
}

/// (f): a host that appears at the release, with no history before it.
pub async fn run_fresh(app: &TestApp) -> Outcome {
    let started_at = chrono::Utc::now();
    let fleet = Fleet::start("fresh", &["web-1"]).await;
    let id = deployment_id("fresh");
    let (status, body) = app
        .put_json(
            &format!("/deployments/{id}"),
            &rollout(&fleet, "all", &["web-1"], started_at),
        )
        .await;
    assert!(status.is_success(), "{body}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    alert_and_wait(app, "fresh", &id, &fleet.host("web-1").host).await
}

/// A real CPU fault (stress-ng on one CPU) during a canary whose hosts share one machine,
/// so the controls move too. The machine's CPU is its steady work and what the fault's
/// control group uses of the real cores ([`HostMachine`]): the tests beside it load the
/// real cores, not its *before*.
pub async fn run_cpu(app: &TestApp) -> Outcome {
    let machine = HostMachine::start().await;
    let fleet = Fleet::start_on("cpu", &["web-1", "web-2"], Cpu::Shared(&machine)).await;
    tokio::time::sleep(HISTORY).await;
    // The fault takes the real cores beside the other tests: one CPU-heavy test at a time,
    // the release once it is this one's turn (a longer history changes nothing).
    let _heavy = crate::helpers::cpu_heavy().await;
    let started_at = chrono::Utc::now();
    let id = deployment_id("cpu");
    let (status, body) = app
        .put_json(
            &format!("/deployments/{id}"),
            &rollout(&fleet, "canary", &["web-1"], started_at),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let _stress = machine.stress(AFTER.as_secs() + 30);
    tokio::time::sleep(AFTER).await;
    alert_and_wait(app, "cpu", &id, &fleet.host("web-1").host).await
}

/// The service, evidence-only (the verdict is the service's, AI or not), on the stack.
pub async fn app() -> TestApp {
    app_with(Options {
        evidence_only: true,
        ..Options::default()
    })
    .await
}

/// The service with these options, on the stack (its Prometheus, the evidence's timeout).
pub async fn app_with(options: Options) -> TestApp {
    spawn_app(Options {
        prometheus_url: Some(prometheus_url().await),
        // The verdict, not its speed, is under test here (benches/quality measures
        // that): a machine busy with a browser test must not time the gathering out.
        evidence_timeout_s: 30,
        // 3-second rate windows (three 1-second scrapes): the 35 s before a release and
        // after it hold the Release.MinPoints (10) points a side that do not overlap.
        rate_window_s: 3,
        ..options
    })
    .await
}

/// The stack's Prometheus.
pub async fn prometheus_url() -> String {
    stack().await.url.clone()
}

#[tokio::test]
async fn the_release_verdict_of_each_scenario_against_the_real_prometheus() {
    let app = app().await;
    let outcomes = run_together(&app).await;
    for o in &outcomes {
        let case = CASES.iter().find(|c| c.name == o.scenario).unwrap();
        eprintln!(
            "{} ({}): {:?} confidence {} in {:.0} ms, reasons {:#}",
            o.scenario,
            case.what,
            o.verdict(),
            o.release()["confidence"],
            o.verdict_ms,
            o.release()["reasons"]
        );
        assert_eq!(
            o.report["status"], "completed",
            "{}: {:#}",
            o.scenario, o.report
        );
        let content = o.report["content"].as_str().unwrap();
        assert!(
            content.contains("发布判定："),
            "{}: the evidence report says the verdict: {content}",
            o.scenario
        );
        assert_eq!(
            o.verdict().0,
            case.verdict,
            "{}: {:#}",
            o.scenario,
            o.release()
        );
        if !case.release_fault {
            assert_ne!(
                o.verdict().1,
                "rollback",
                "{}: {:#}",
                o.scenario,
                o.release()
            );
        }
    }
    let [a, b, c, d, e]: [Outcome; 5] = outcomes.try_into().unwrap();
    assert_eq!(a.verdict(), ("release", "rollback"), "{:#}", a.release());
    let worst = &a.release()["comparisons"][0];
    assert_eq!(
        (&worst["signal"], &worst["class"]),
        (&json!("errors %"), &json!("high")),
        "{worst:#}"
    );
    assert!(
        a.host.starts_with("canary-bad-") && a.host.ends_with("-web-1"),
        "{}",
        a.host
    );
    assert_eq!(
        worst["host"],
        a.host.as_str(),
        "the alerted host: {worst:#}"
    );
    assert!(worst["pValue"].as_f64().unwrap() < 0.01, "{worst:#}");
    // The error rate compared as counts of requests, past the practical floor, with the
    // change placed after the release.
    assert_eq!(worst["test"], "proportions", "{worst:#}");
    let requests = worst["requests"].as_array().unwrap();
    assert!(
        requests.iter().all(|n| n.as_u64().unwrap() >= 50),
        "{worst:#}"
    );
    assert!(worst["pAdjusted"].as_f64().unwrap() < 0.01, "{worst:#}");
    assert!(worst["changeAt"].is_string(), "{worst:#}");
    // The report page's chart of the errors marks that change.
    let id = a.report["deploymentId"].as_str().unwrap();
    let page = app.page(&format!("/ui/reports/{id}")).await;
    assert!(
        page.contains("class=\"change\"") && page.contains(&a.host),
        "the chart marks the change: {page}"
    );
    let content = a.report["content"].as_str().unwrap();
    let solution = &content[content.find("【解决方案】").unwrap()..];
    assert!(
        solution.lines().nth(1).unwrap().contains("回滚"),
        "the recommendation comes first: {solution}"
    );
    assert_eq!(b.verdict().0, "not_release", "{:#}", b.release());
    assert_eq!(c.verdict().0, "not_release", "{:#}", c.release());
    assert!(
        c.release()["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["signal"] == "errors %" && x["preExisting"] == true),
        "{:#}",
        c.release()
    );
    assert_eq!(d.verdict(), ("not_release", "proceed"), "{:#}", d.release());
    assert_eq!(e.verdict().0, "release", "{:#}", e.release());

    // The list filters by verdict, and the metric counts them.
    let (_, listed) = app.get("/reports?verdict=release").await;
    let ids: Vec<&str> = listed["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["deploymentId"].as_str().unwrap())
        .collect();
    assert!(ids.iter().any(|i| i.starts_with("canary-bad")), "{ids:?}");
    assert!(!ids.iter().any(|i| i.starts_with("no-fault")), "{ids:?}");
    let (status, body) = app.get("/reports?verdict=maybe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("verdict"), "{body}");
    let metrics = app
        .metrics_with("deploy_diagnosis_release_verdicts_total{")
        .await;
    assert!(
        metrics.contains(
            "deploy_diagnosis_release_verdicts_total{verdict=\"release\",recommendation=\"rollback\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_fresh_instance_with_no_baseline_still_gets_evidence_and_a_completed_report() {
    let app = app().await;
    let o = run_fresh(&app).await;
    let report = &o.report;
    assert_eq!(report["status"], "completed", "{report:#}");
    let evidence = report["evidence"].as_array().unwrap();
    assert!(!evidence.is_empty(), "{report:#}");
    assert!(
        evidence
            .iter()
            .any(|e| e["noBaseline"] == true && e["seriesStart"].is_string()),
        "{evidence:#?}"
    );
    assert_eq!(o.verdict(), ("inconclusive", "hold"), "{report:#}");
}

#[tokio::test]
async fn a_real_cpu_fault_during_a_canary_moves_the_controls_too_so_it_is_not_the_release() {
    let app = app().await;
    let o = run_cpu(&app).await;
    let release = o.release();
    eprintln!("cpu: {release:#}");
    assert_eq!(release["verdict"], "not_release", "{release:#}");
    assert_ne!(release["recommendation"], "rollback", "{release:#}");
    let controls_moved =
        release["comparisons"].as_array().unwrap().iter().any(|c| {
            c["signal"] == "CPU busy %" && c["releasedHost"] == false && c["worse"] == true
        });
    assert!(controls_moved, "the control's CPU moved: {release:#}");
}

#[tokio::test]
async fn the_prompt_carries_the_verdict_and_the_models_disagreement_is_recorded() {
    let content = "【问题概述】\nweb-1 错误率升高\n【根因分析】\n发布判定：不同意，未发布的 web-2 错误率同样是 20%\n\
                   【影响范围】\nweb-1\n【解决方案】\n检查下游依赖";
    let app = spawn_app(Options {
        evidence: true,
        prometheus_url: Some(stack().await.url.clone()),
        script: crate::fake_llm::Script::ReportWithContent(content.into()),
        ..Options::default()
    })
    .await;
    let fleet = Fleet::start("opinion", &["web-1", "web-2"]).await;
    let id = deployment_id("opinion");
    let (status, body) = app
        .put_json(
            &format!("/deployments/{id}"),
            &rollout(&fleet, "canary", &["web-1"], chrono::Utc::now()),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let o = alert_and_wait(&app, "opinion", &id, &fleet.host("web-1").host).await;
    let report = &o.report;
    assert_eq!(report["engine"], "ai", "{report:#}");
    let release = &report["release"];
    assert_eq!(
        release["model"]["agrees"], false,
        "the model's disagreement is recorded: {release:#}"
    );
    assert!(
        release["model"]["says"]
            .as_str()
            .unwrap()
            .contains("web-2 错误率同样是 20%"),
        "{release:#}"
    );
    let prompt = app.llm.requests()[0].prompt();
    let fenced = prompt
        .find("<<<VERDICT-")
        .expect("the verdict is fenced as data");
    let tasks = prompt.find("**你的任务**").unwrap();
    assert!(fenced < tasks, "the verdict comes before the tasks");
    assert!(
        prompt.contains(&format!("判定: {}", release["verdict"].as_str().unwrap())),
        "the service's verdict is kept as the prompt gave it: {release:#}"
    );
    assert!(
        prompt.contains("发布判定：同意"),
        "the model is asked to answer it"
    );
}

/// Polls `GET /deployments/{id}/analysis` until `until` has passed; every answer's
/// recommendation with the seconds since `start`.
async fn poll_analysis(
    app: &TestApp,
    id: &str,
    start: Instant,
    until: Duration,
) -> Vec<(f64, Value)> {
    poll_every(app, id, start, until, Duration::from_secs(2)).await
}

/// [`poll_analysis`] every `interval`.
async fn poll_every(
    app: &TestApp,
    id: &str,
    start: Instant,
    until: Duration,
    interval: Duration,
) -> Vec<(f64, Value)> {
    let mut answers = Vec::new();
    let mut tick = tokio::time::interval(interval);
    while start.elapsed() < until {
        tick.tick().await;
        let (status, body) = app.get(&format!("/deployments/{id}/analysis")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.push((start.elapsed().as_secs_f64(), body));
    }
    answers
}

/// For `benches/gate_detection.rs`: three canaries of three hosts registered on `app`
/// after `history`, web-1 released: `errors` answers 10 % of its requests with 500 from
/// the release, `slow` answers 300 ms slower, `calm` does nothing. Their analyses are
/// polled every `interval` for `watch` from the release, as a deploy tool does: per
/// canary, each answer with the seconds since the release.
#[allow(dead_code)]
pub async fn polled_canaries(
    app: &TestApp,
    history: Duration,
    interval: Duration,
    watch: Duration,
) -> Vec<(&'static str, Vec<(f64, Value)>)> {
    let hosts = ["web-1", "web-2", "web-3"];
    let (errors_fleet, slow, calm) = tokio::join!(
        Fleet::start("detect-errors", &hosts),
        Fleet::start("detect-slow", &hosts),
        Fleet::start("detect-calm", &hosts),
    );
    tokio::time::sleep(history).await;
    let started_at = chrono::Utc::now();
    let mut ids = Vec::new();
    for fleet in [&errors_fleet, &slow, &calm] {
        let id = deployment_id(&fleet.name);
        let (status, body) = app
            .put_json(
                &format!("/deployments/{id}"),
                &rollout(fleet, "canary", &["web-1"], started_at),
            )
            .await;
        assert!(status.is_success(), "{body}");
        ids.push(id);
    }
    errors_fleet.host("web-1").set(errors(10));
    slow.host("web-1").set(Fault {
        errors: 0,
        delay: Duration::from_millis(300),
    });
    let start = Instant::now();
    let (a, b, c) = tokio::join!(
        poll_every(app, &ids[0], start, watch, interval),
        poll_every(app, &ids[1], start, watch, interval),
        poll_every(app, &ids[2], start, watch, interval),
    );
    vec![("errors", a), ("slow", b), ("calm", c)]
}

/// A deploy tool's gate: the analysis polled every 2 s from the release on, with no
/// alert. A bad canary is *rollback* within 60 s of its start (1 s scrapes); an innocent
/// canary, and one whose errors began 15 s before its release, are never *rollback*.
#[tokio::test]
async fn the_analysis_polled_during_a_rollout_rolls_back_a_bad_canary_and_no_other() {
    use crate::receiver::{Mode, Receiver, SECRET};
    let app = app_with(crate::rollout_tools::with_tokens(Options {
        evidence_only: true,
        sections: "Release:\n  AutoRollback: true\n".into(),
        ..Options::default()
    }))
    .await;
    // The dry-run service of the end.
    let dry = app_with(Options {
        evidence_only: true,
        sections: "Release:\n  AutoRollback: dry-run\n".into(),
        ..Options::default()
    })
    .await;
    // The platform's rollback endpoint, checking the signature as a real one would.
    let platform = Receiver::start(Mode::Accept, Some(SECRET)).await;
    let (status, body) = app.get("/deployments/no-such-rollout/analysis").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.to_string().contains("no-such-rollout"), "{body}");
    let (status, body) = app.get("/deployments/bad%01id/analysis").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("control character"), "{body}");

    let hosts = ["web-1", "web-2", "web-3"];
    let (bad, calm, early) = tokio::join!(
        Fleet::start("gate-bad", &hosts),
        Fleet::start("gate-calm", &hosts),
        Fleet::start("gate-early", &hosts),
    );
    tokio::time::sleep(HISTORY - Duration::from_secs(15)).await;
    early.host("web-1").set(errors(30));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let started_at = chrono::Utc::now();
    let mut ids = Vec::new();
    for fleet in [&bad, &calm, &early] {
        let id = deployment_id(&fleet.name);
        let mut registration = rollout(fleet, "canary", &["web-1"], started_at);
        registration["rollbackPolicy"] =
            json!({"autoRollback": true, "url": platform.url, "secret": SECRET});
        let (status, body) = app
            .put_json(&format!("/deployments/{id}"), &registration)
            .await;
        assert!(status.is_success(), "{body}");
        ids.push(id);
    }
    bad.host("web-1").set(errors(30));
    let start = Instant::now();
    // Three callers at once share one measurement.
    let path = format!("/deployments/{}/analysis", ids[1]);
    let (a, b, c) = tokio::join!(app.get(&path), app.get(&path), app.get(&path));
    let answers = [a.1, b.1, c.1];
    assert!(
        answers
            .iter()
            .all(|x| x["measuredAt"] == answers[0]["measuredAt"]),
        "{answers:#?}"
    );
    assert_eq!(
        answers.iter().filter(|x| x["cached"] == false).count(),
        1,
        "{answers:#?}"
    );
    let watch = Duration::from_secs(60);
    let (bad_answers, calm_answers, early_answers) = tokio::join!(
        poll_analysis(&app, &ids[0], start, watch),
        poll_analysis(&app, &ids[1], start, watch),
        poll_analysis(&app, &ids[2], start, watch),
    );
    let recommendations = |answers: &[(f64, Value)]| -> Vec<String> {
        answers
            .iter()
            .map(|(t, a)| format!("{t:.0}s {} {}", a["verdict"], a["recommendation"]))
            .collect()
    };
    eprintln!("bad: {:?}", recommendations(&bad_answers));
    eprintln!("calm: {:?}", recommendations(&calm_answers));
    eprintln!("early: {:?}", recommendations(&early_answers));
    // Too few samples at first: inconclusive, and it says why.
    let first = &bad_answers[0].1;
    assert_eq!(
        (&first["verdict"], &first["ok"]),
        (&json!("inconclusive"), &json!(true)),
        "{first:#}"
    );
    assert!(
        first["reasons"].to_string().contains("Release.MinPoints"),
        "{first:#}"
    );
    let rolled_back = bad_answers
        .iter()
        .find(|(_, a)| a["recommendation"] == "rollback")
        .unwrap_or_else(|| panic!("no rollback: {:?}", recommendations(&bad_answers)));
    assert!(rolled_back.0 <= 60.0, "{}", rolled_back.0);
    assert_eq!(rolled_back.1["ok"], false);
    assert_eq!(rolled_back.1["verdict"], "release");
    for (name, answers) in [("calm", &calm_answers), ("early", &early_answers)] {
        assert!(
            answers
                .iter()
                .all(|(_, a)| a["recommendation"] != "rollback" && a["ok"] == true),
            "{name}: {:?}",
            recommendations(answers)
        );
    }
    let windows = &rolled_back.1["windows"];
    let release =
        chrono::DateTime::parse_from_rfc3339(windows["release"].as_str().unwrap()).unwrap();
    assert!(
        (release.with_timezone(&chrono::Utc) - started_at)
            .num_milliseconds()
            .abs()
            <= 1,
        "the after window starts at the release: {windows:#}"
    );

    // A second ask within Release.AnalysisCacheSeconds is the same measurement.
    let (_, one) = app.get(&format!("/deployments/{}/analysis", ids[0])).await;
    let (_, two) = app.get(&format!("/deployments/{}/analysis", ids[0])).await;
    assert_eq!(two["cached"], true, "{two:#}");
    assert_eq!(one["measuredAt"], two["measuredAt"]);

    // The analysis said rollback, and the deployment's policy asks the service to roll
    // back: the analysis's alert opened the report, which judged the release again. The
    // innocent canaries have none.
    let opened = app
        .wait_final_within(&ids[0], Duration::from_secs(120))
        .await;
    assert_eq!(
        (
            &opened["alert"]["alertname"],
            &opened["release"]["recommendation"]
        ),
        (&json!("ReleaseAnalysisRollback"), &json!("rollback")),
        "{opened:#}"
    );
    for id in &ids[1..] {
        let (status, body) = app.get(&format!("/reports/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    // The alert that comes later is recorded on that report.
    let o = alert_and_wait(&app, "gate-bad", &ids[0], &bad.host("web-1").host).await;
    assert_eq!(o.report["id"], opened["id"]);

    // Flagger, Argo Rollouts and the CI gate say what the analysis says.
    crate::rollout_tools::tools_agree(&app, &ids[0], &ids[1], &ids[2]).await;

    // The report's rollback verdict asked the platform to roll back, as the deployment's
    // policy says: once, signed, its id the idempotency key.
    let got = platform.wait_for(1, Duration::from_secs(30)).await;
    let request = &got[0];
    let report_id = o.report["id"].as_str().unwrap();
    assert_eq!(request.id, format!("{report_id}.rollback.v2.0.0"));
    assert_eq!(
        request.idempotency_key.as_deref(),
        Some(request.id.as_str())
    );
    assert_eq!(
        (
            &request.body["type"],
            &request.body["deploymentId"],
            &request.body["tag"],
            &request.body["verdict"]["recommendation"],
        ),
        (
            &json!("deployment.rollback"),
            &json!(ids[0]),
            &json!("v2.0.0"),
            &json!("rollback")
        ),
        "{:#}",
        request.body
    );
    assert_eq!(request.body["hosts"], json!([bad.host("web-1").host]));
    let delivered = wait_rollback_state(&app, &ids[0], "delivered").await;
    assert!(delivered["deliveredAt"].is_string(), "{delivered:#}");
    let page = app.page(&format!("/ui/reports/{}", ids[0])).await;
    assert!(page.contains("自动回滚：已按部署的回滚策略请求"), "{page}");
    // The secret is stored, and shown nowhere.
    let (_, registered) = app.get(&format!("/deployments/{}", ids[0])).await;
    assert_eq!(
        registered["rollbackPolicy"]["signed"], true,
        "{registered:#}"
    );
    let (_, report) = app.get(&format!("/reports/{}", ids[0])).await;
    for shown in [registered.to_string(), report.to_string(), page] {
        assert!(
            !shown.contains(&SECRET[6..]),
            "the secret is shown: {shown}"
        );
    }
    // Diagnosed again, the same verdict asks nothing more for the same tag.
    let (status, body) = app
        .post_json(&format!("/reports/{}/rediagnose", ids[0]), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let again = wait_version(&app, &ids[0], 2).await;
    assert_eq!(again["release"]["recommendation"], "rollback", "{again:#}");
    // The report says what the analysis says: the same measurement.
    let (_, now) = app.get(&format!("/deployments/{}/analysis", ids[0])).await;
    assert_eq!(
        (
            &again["release"]["verdict"],
            &again["release"]["recommendation"]
        ),
        (&now["verdict"], &now["recommendation"]),
        "report {:#} analysis {now:#}",
        again["release"]
    );
    let requests = again["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["sink"] == "rollback")
        .count();
    assert_eq!(requests, 1, "once per deployment and tag: {again:#}");
    assert_eq!(platform.received().len(), 1);

    // Under `Release.AutoRollback: dry-run` the same verdict records what it would have
    // sent, and sends nothing.
    let mut registration = rollout(&bad, "canary", &["web-1"], started_at);
    registration["rollbackPolicy"] =
        json!({"autoRollback": true, "url": platform.url, "secret": SECRET});
    dry.put_json(&format!("/deployments/{}", ids[0]), &registration)
        .await;
    let o = alert_and_wait(&dry, "gate-bad", &ids[0], &bad.host("web-1").host).await;
    assert_eq!(o.verdict(), ("release", "rollback"));
    wait_rollback_state(&dry, &ids[0], "dry_run").await;
    let page = dry.page(&format!("/ui/reports/{}", ids[0])).await;
    assert!(page.contains("自动回滚（dry-run）"), "{page}");
    assert_eq!(platform.received().len(), 1, "dry-run sends nothing");
}

/// The report's rollback request once it is in `state`.
async fn wait_rollback_state(app: &TestApp, id: &str, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let (_, report) = app.get(&format!("/reports/{id}")).await;
        if let Some(n) = report["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["sink"] == "rollback" && n["state"] == state)
        {
            return n.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no rollback request {state}: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The report once version `version` is final.
async fn wait_version(app: &TestApp, id: &str, version: u64) -> Value {
    let start = Instant::now();
    loop {
        let (_, report) = app.get(&format!("/reports/{id}")).await;
        if report["version"] == version && report["status"] != "generating" {
            return report;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "version {version} never ended: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
