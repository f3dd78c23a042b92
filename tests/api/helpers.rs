//! `spawn_app()`: the real service on port 0 with its own store, the real Python runner,
//! the shared real Prometheus, and a scripted LLM of the test's choosing.

use std::time::{Duration, Instant};

use deploy_diagnosis::config::{Config, Environment};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::fake_llm::{FakeLlm, Provider, Script};
use crate::servers::{self, PromStack};

/// Which store a test app uses.
#[derive(Clone, Debug)]
pub enum StoreChoice {
    /// A fresh SQLite file in the test's temporary folder.
    Embedded,
    /// A fresh database on the shared SecantusDB.
    Mongo,
}

/// How to build a test app.
#[derive(Clone, Debug)]
pub struct Options {
    /// The fake LLM's behaviour.
    pub script: Script,
    /// Delay before each LLM answer.
    pub llm_delay: Duration,
    /// `openai` or `anthropic` (`AI.Protocol`, with the fake's `/v1` base URL).
    pub protocol: &'static str,
    /// Play this provider instead: its base URL on the fake, named in `AI.Provider`.
    pub provider: Option<Provider>,
    /// `AI.Model`.
    pub model: &'static str,
    /// More `AI:` keys, as YAML lines indented by two spaces.
    pub ai_extra: &'static str,
    /// `Evidence.Enabled` (off unless a test is about the evidence).
    pub evidence: bool,
    /// `Evidence.TimeoutSeconds`.
    pub evidence_timeout_s: u64,
    /// More `Evidence:` keys, as YAML lines indented by two spaces.
    pub evidence_extra: &'static str,
    /// `Evidence.Concurrency`.
    pub evidence_concurrency: usize,
    /// `AI.BaseURL` empty: evidence-only mode.
    pub evidence_only: bool,
    /// `AI.Timeout` seconds (the deadline is twice this).
    pub timeout_s: u64,
    /// The store.
    pub store: StoreChoice,
    /// `Webhook.BearerToken` (the write token's older name).
    pub bearer: Option<&'static str>,
    /// `Auth.ReadToken`.
    pub read_token: Option<&'static str>,
    /// `Auth.ProtectMetrics`.
    pub protect_metrics: bool,
    /// Point the agent at this Prometheus instead of the shared one.
    pub prometheus_url: Option<String>,
    /// `AI.BaseURL`: a real model's server instead of the fake.
    pub ai_base_url: Option<String>,
    /// `AI.GitHubToken` and `Runner.GitHubMCPCommand`.
    pub github: Option<(&'static str, &'static str)>,
    /// `AI.MaxTurns`.
    pub max_turns: u32,
    /// Run with `Runner.Kind: docker` in this container.
    pub docker: Option<DockerOptions>,
    /// `Runner.Kind: native`, the service's default (unless `docker` is set); `false`:
    /// `process`, the design's Python runner, for the tests of that runner. The native
    /// runner opens its MCP session once a service; the Python runner starts itself and its
    /// MCP server each diagnosis (4 CPU-seconds of imports).
    pub native: bool,
    /// An `MCP:` section (YAML) for the native runner. Unset, [`spawn_app`] gives a
    /// service on the shared Prometheus without GitHub the shared HTTP MCP server
    /// ([`servers::shared_mcp`]; the Python runner's through `Runner.PrometheusMCPURL`);
    /// any other starts its own (stdio, the service's default).
    pub mcp: Option<String>,
    /// The runner starts its own Prometheus MCP server (stdio, the default) even on the
    /// shared Prometheus: for the tests of that.
    pub own_mcp_server: bool,
    /// `Runner.PrometheusMCPURL` (set by [`spawn_app`], see [`Options::mcp`]).
    pub runner_mcp_url: Option<String>,
    /// More top-level sections (`GitHub:`, `Deployments:`), as YAML.
    pub sections: String,
    /// `Worker.MaxQueue` (0: unlimited).
    pub max_queue: u64,
    /// `Worker.LeaseSeconds`: 10, long enough for a busy machine (several tests at once on
    /// two cores renewed a 3-second lease late, and a lapsed lease is rightly diagnosed
    /// again); 3 for the tests of what happens when a lease runs out.
    pub lease_s: u64,
    /// `Store.Path` of the embedded store (default: in the test's temporary folder).
    pub store_path: Option<std::path::PathBuf>,
    /// `Worker.RerunAfterSeconds` (0 here: a new alert re-runs a failed report at once).
    pub rerun_after_s: u64,
    /// `Evidence.RateWindowSeconds`.
    pub rate_window_s: u64,
}

/// The managed container of a docker-runner test app.
#[derive(Clone, Debug)]
pub struct DockerOptions {
    /// `Docker.Container` (unique per test).
    pub container: String,
    /// `Docker.Image`.
    pub image: String,
    /// `Docker.MCPPort` (host network: unique per test).
    pub mcp_port: u16,
    /// `Docker.Network`: `host` here (Prometheus and the fake LLM listen on loopback only).
    pub network: &'static str,
}

impl DockerOptions {
    /// A fresh container name and port for a test.
    pub fn unique(test: &str) -> Self {
        Self {
            container: format!(
                "dd-test-{test}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            image: "diagnosis-service:latest".into(),
            mcp_port: servers::free_port(),
            network: "host",
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            script: Script::ToolThenReport {
                query: "up{job=\"node\"}".into(),
            },
            llm_delay: Duration::ZERO,
            protocol: "openai",
            provider: None,
            model: "scripted-model",
            ai_extra: "",
            evidence: false,
            evidence_concurrency: 8,
            evidence_timeout_s: 10,
            evidence_extra: "",
            evidence_only: false,
            timeout_s: 30,
            store: StoreChoice::Embedded,
            bearer: None,
            read_token: None,
            protect_metrics: false,
            prometheus_url: None,
            ai_base_url: None,
            github: None,
            max_turns: 6,
            docker: None,
            native: true,
            mcp: None,
            own_mcp_server: false,
            runner_mcp_url: None,
            sections: String::new(),
            max_queue: 0,
            lease_s: 10,
            store_path: None,
            rerun_after_s: 0,
            rate_window_s: 5,
        }
    }
}

/// A running service and what it talks to.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The scripted LLM.
    pub llm: FakeLlm,
    /// The real Prometheus.
    pub prom: &'static PromStack,
    /// The API key this app was given (unique, to look for leaks).
    pub api_key: String,
    /// The configuration the app runs with.
    pub config: Config,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

/// The YAML a test app runs with.
pub fn config_yaml(
    options: &Options,
    llm: &str,
    prom: &str,
    dir: &std::path::Path,
    mongo: Option<(&str, &str)>,
) -> String {
    let python = servers::runner_python();
    let script = servers::repo().join("docker/runner/diagnosis_runner.py");
    let (store_kind, mongo_url, mongo_db) = match mongo {
        Some((url, db)) => ("mongo", url.to_owned(), db.to_owned()),
        None => (
            "embedded",
            "mongodb://unused:1".to_owned(),
            "unused".to_owned(),
        ),
    };
    let (github_token, github_cmd) = options.github.unwrap_or(("", "github-mcp-server stdio"));
    let (provider, protocol) = match options.provider {
        Some(p) => (p.setting(), "auto"),
        None => ("auto", options.protocol),
    };
    let (runner_kind, docker) = match &options.docker {
        None if options.native => ("native", options.mcp.clone().unwrap_or_default()),
        None => ("process", String::new()),
        Some(d) => (
            "docker",
            format!(
                "Docker:\n  Host: {}\n  Container: {}\n  Image: {}\n  Network: {}\n  MCPPort: {}\n  MemoryBytes: 536870912\n  PidsLimit: 128\n",
                servers::docker_host(),
                d.container,
                d.image,
                d.network,
                d.mcp_port
            ),
        ),
    };
    format!(
        r#"
Name: deploy-diagnosis-test
Host: 127.0.0.1
Port: 0
Mongo:
  URL: {mongo_url}
  Database: {mongo_db}
AI:
  BaseURL: "{llm}"
  APIKey: ${{AI_API_KEY}}
  Model: {model}
  Provider: {provider}
  Timeout: {timeout}
  PrometheusURL: {prom}
  GitHubToken: "{github_token}"
  Protocol: {protocol}
  MaxTurns: {max_turns}
{ai_extra}Store:
  Kind: {store_kind}
  Path: {store_path}
{docker}Runner:
  Kind: {runner_kind}
  Python: {python}
  Script: {script}
  GitHubMCPCommand: {github_cmd}
{runner_mcp}Worker:
  Concurrency: 2
  LeaseSeconds: {lease}
  PollSeconds: 1
  ShutdownGraceSeconds: 5
  MaxQueue: {max_queue}
  RerunAfterSeconds: {rerun_after}
Evidence:
  Enabled: {evidence}
  Concurrency: {evidence_concurrency}
  RateWindowSeconds: {rate_window}
  BaselineMinutes: 2
  TimeoutSeconds: {evidence_timeout}
{evidence_extra}Webhook:
  BearerToken: "{bearer}"
  MaxBodyBytes: 65536
Auth:
  ReadToken: "{read_token}"
  ProtectMetrics: {protect_metrics}
{sections}"#,
        timeout = options.timeout_s,
        model = options.model,
        ai_extra = options.ai_extra,
        evidence = options.evidence || options.evidence_only,
        evidence_concurrency = options.evidence_concurrency,
        evidence_timeout = options.evidence_timeout_s,
        evidence_extra = options.evidence_extra,
        llm = if options.evidence_only { "" } else { llm },
        max_turns = options.max_turns,
        store_path = options
            .store_path
            .clone()
            .unwrap_or_else(|| dir.join("reports.sqlite3"))
            .display(),
        python = python.display(),
        script = script.display(),
        bearer = options.bearer.unwrap_or(""),
        read_token = options.read_token.unwrap_or(""),
        protect_metrics = options.protect_metrics,
        sections = options.sections,
        max_queue = options.max_queue,
        lease = options.lease_s,
        runner_mcp = options
            .runner_mcp_url
            .as_deref()
            .map(|url| format!("  PrometheusMCPURL: {url}\n"))
            .unwrap_or_default(),
        rerun_after = options.rerun_after_s,
        rate_window = options.rate_window_s,
    )
}

/// The machine's two cores, taken by the tests that load them for tens of seconds
/// (schemathesis, headless Chromium, stress-ng), one at a time: beside
/// each other they starve the rest. The release verdict's hosts each read a CPU of their
/// own (`release_verdict`'s `HostMachine`), so the load of the tests beside them is not
/// theirs. A file lock, since `scripts/test` runs the longest tests in a test process of
/// their own beside the rest: one turn across every test process of this build.
pub struct CpuTurn {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Taken by the tests that load both cores for tens of seconds: one at a time, across
/// processes.
pub async fn cpu_heavy() -> CpuTurn {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cpu-heavy.lock");
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
                Ok(lock) => return CpuTurn { _lock: lock },
                Err((back, nix::errno::Errno::EINTR)) => file = back,
                Err((_, e)) => panic!("{}: {e}", path.display()),
            }
        }
    })
    .await
    .unwrap()
}

/// A unique API key.
pub fn api_key() -> String {
    format!("sk-test-{}", uuid::Uuid::new_v4().simple())
}

/// Starts the service in-process.
pub async fn spawn_app(mut options: Options) -> TestApp {
    let prom = servers::prometheus().await;
    let own_mcp = options.own_mcp_server
        || options.mcp.is_some()
        || options.prometheus_url.is_some()
        || options.github.is_some()
        || options.docker.is_some();
    if !own_mcp {
        let shared = servers::shared_mcp().await;
        if options.native {
            options.mcp = Some(shared.section.clone());
        } else {
            options.runner_mcp_url = Some(shared.url.clone());
        }
    }
    let llm = FakeLlm::start(options.script.clone(), options.llm_delay).await;
    let dir = tempfile::tempdir().unwrap();
    let mongo_db = format!("dd_test_{}", uuid::Uuid::new_v4().simple());
    let mongo_url = match options.store {
        StoreChoice::Mongo => Some(servers::mongo().await.url.clone()),
        StoreChoice::Embedded => None,
    };
    let prom_url = options
        .prometheus_url
        .clone()
        .unwrap_or_else(|| prom.url.clone());
    let llm_url = match (&options.ai_base_url, options.provider) {
        (Some(url), _) => url.clone(),
        (None, Some(p)) => llm.base_url_for(p),
        (None, None) => llm.base_url.clone(),
    };
    let yaml = config_yaml(
        &options,
        &llm_url,
        &prom_url,
        dir.path(),
        mongo_url.as_deref().map(|u| (u, mongo_db.as_str())),
    );
    let key = api_key();
    let env = Environment::from_map(
        [("AI_API_KEY".to_owned(), key.clone())]
            .into_iter()
            .collect(),
    );
    let config = Config::from_yaml(&yaml, &env).expect("test configuration is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move {
            deploy_diagnosis::startup::run(listener, config, shutdown)
                .await
                .expect("service runs");
        }
    });
    TestApp {
        address,
        client: deploy_diagnosis::tls::client().build().unwrap(),
        llm,
        prom,
        api_key: key,
        config,
        shutdown,
        _dir: dir,
    }
}

impl TestApp {
    /// `POST /v1/alerts` with a JSON body.
    pub async fn post_alerts(&self, body: &Value) -> (StatusCode, Value) {
        self.post_json("/v1/alerts", body).await
    }

    /// The token reads are sent with: the read token, else the write token.
    pub fn read_token(&self) -> Option<String> {
        let tokens = deploy_diagnosis::http::auth::Tokens::from_config(&self.config);
        [tokens.read, tokens.write]
            .into_iter()
            .find(|t| !t.is_empty())
            .map(|t| t.expose().to_owned())
    }

    /// A page's HTML (`GET`, with the read token if configured).
    pub async fn page(&self, path: &str) -> String {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = self.read_token() {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().text().await.unwrap()
    }

    /// A GET (with the read token if configured) returning status and JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = self.read_token() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sends a request with the bearer token if one is configured; status and JSON.
    async fn send(&self, mut request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        if !self.config.webhook.bearer_token.is_empty() {
            request = request.bearer_auth(self.config.webhook.bearer_token.expose());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A POST (with the write token if configured) made by `build` from a bare one.
    pub async fn post_with(
        &self,
        path: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> (StatusCode, Value) {
        self.send(build(self.client.post(format!("{}{path}", self.address))))
            .await
    }

    /// A POST with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(format!("{}{path}", self.address))
                .json(body),
        )
        .await
    }

    /// A PUT with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .put(format!("{}{path}", self.address))
                .json(body),
        )
        .await
    }

    /// A DELETE.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(format!("{}{path}", self.address)))
            .await
    }

    /// `GET /metrics` as text (with the read token if configured).
    pub async fn metrics(&self) -> String {
        let mut request = self.client.get(format!("{}/metrics", self.address));
        if let Some(token) = self.read_token() {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().text().await.unwrap()
    }

    /// `/metrics` once it contains `needle` (an outcome is counted just after it is
    /// stored), or after five seconds.
    pub async fn metrics_with(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.metrics().await;
            if text.contains(needle) || start.elapsed() > Duration::from_secs(5) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the report leaves `generating`, and returns it.
    pub async fn wait_final(&self, deployment_id: &str) -> Value {
        self.wait_final_within(deployment_id, Duration::from_secs(120))
            .await
    }

    /// [`Self::wait_final`] for a diagnosis that may take up to `limit` (a real model).
    pub async fn wait_final_within(&self, deployment_id: &str, limit: Duration) -> Value {
        wait_final(
            &self.client,
            &self.address,
            deployment_id,
            self.read_token().as_deref(),
            limit,
        )
        .await
    }
}

/// Another instance of a test app's service: the same configuration (so the same store),
/// its own process state, stopped when dropped.
pub struct Instance {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    shutdown: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Starts another instance on the same configuration and store.
    pub async fn another_instance(&self) -> Instance {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let (config, shutdown) = (self.config.clone(), shutdown.clone());
            async move {
                deploy_diagnosis::startup::run(listener, config, shutdown)
                    .await
                    .expect("service runs");
            }
        });
        Instance { address, shutdown }
    }

    /// `POST /v1/alerts` to another instance; the status.
    pub async fn post_alerts_at(&self, instance: &Instance, body: &Value) -> StatusCode {
        self.send(
            self.client
                .post(format!("{}/v1/alerts", instance.address))
                .json(body),
        )
        .await
        .0
    }

    /// Waits for a report through another instance.
    pub async fn wait_final_at(&self, instance: &Instance, deployment_id: &str) -> Value {
        wait_final(
            &self.client,
            &instance.address,
            deployment_id,
            self.read_token().as_deref(),
            Duration::from_secs(120),
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `GET /reports/{id}` (with `token` when given) until it is no longer `generating`.
pub async fn wait_final(
    client: &reqwest::Client,
    address: &str,
    deployment_id: &str,
    token: Option<&str>,
    limit: Duration,
) -> Value {
    let start = Instant::now();
    loop {
        let mut request = client.get(format!("{address}/reports/{deployment_id}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Ok(response) = request.send().await {
            if response.status() == StatusCode::OK {
                let report: Value = response.json().await.unwrap();
                if report["status"] != "generating" {
                    return report;
                }
            }
        }
        assert!(
            start.elapsed() < limit,
            "report {deployment_id} still generating after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An Alertmanager (version 4) webhook body with one alert.
pub fn alertmanager_body(deployment_id: &str, status: &str) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"NodeHighCPU\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "deploy-diagnosis",
        "groupLabels": {"alertname": "NodeHighCPU"},
        "commonLabels": {"alertname": "NodeHighCPU", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "NodeHighCPU", "deploymentId": deployment_id, "hostname": "web-1", "severity": "critical"},
            "annotations": {"description": "CPU usage above 90% after release", "summary": "High CPU on web-1"},
            "startsAt": "2026-11-25T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=cpu",
            "fingerprint": "c0ffee"
        }]
    })
}

/// A deployment id unique to the calling test.
pub fn deployment_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The `error` of a failed report.
pub fn report_error(report: &Value) -> &str {
    report["error"]
        .as_str()
        .expect("a failed report has an error")
}

/// The service as a process of its own, what the `kill -9` tests start twice: its
/// configuration file in a temporary folder, against the shared Prometheus and a fake LLM
/// that plays `options.script` after `options.llm_delay`.
pub struct ProcessFiles {
    /// The fake LLM (kept alive with the files).
    pub llm: FakeLlm,
    /// The folder of the configuration and the store.
    pub dir: tempfile::TempDir,
    /// The configuration file.
    pub config: std::path::PathBuf,
    /// The AI key, given in the environment.
    pub key: String,
}

impl ProcessFiles {
    /// The files for `options`.
    pub async fn new(options: &Options) -> Self {
        let prom = servers::prometheus().await;
        let llm = FakeLlm::start(options.script.clone(), options.llm_delay).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = config_yaml(options, &llm.base_url, &prom.url, dir.path(), None);
        let config = dir.path().join("deploy-diagnosis.yaml");
        std::fs::write(&config, yaml).unwrap();
        Self {
            llm,
            dir,
            config,
            key: api_key(),
        }
    }

    /// The service started on `port`; its warnings go to the test's stderr.
    pub fn start(&self, port: u16) -> Process {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_deploy-diagnosis"))
            .args(["serve", "-f"])
            .arg(&self.config)
            .env("AI_API_KEY", &self.key)
            .env("DD_PORT", port.to_string())
            .env("DD_WORKER__SHUTDOWNGRACESECONDS", "60")
            .env("RUST_LOG", "deploy_diagnosis=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        Process {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// A running service process.
pub struct Process {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
}

impl Process {
    /// Waits until it answers `/healthz`.
    pub async fn up(&self) {
        servers::wait_http(&format!("{}/healthz", self.address), "the service").await;
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A canary of `shop` v2.0.0 (from v1.9.0) on `web-1`, started at `now`, with this
/// rollback policy: what the tests that write a report's ending themselves register.
pub fn canary_deployment(
    id: &deploy_diagnosis::model::alert::DeploymentId,
    now: chrono::DateTime<chrono::Utc>,
    policy: deploy_diagnosis::model::deployment::RollbackPolicy,
) -> deploy_diagnosis::model::deployment::Deployment {
    use deploy_diagnosis::model::deployment::{Deployment, Host, Strategy};
    Deployment {
        deployment_id: id.clone(),
        service: "shop".into(),
        repo_address: String::new(),
        tag: "v2.0.0".into(),
        previous_tag: "v1.9.0".into(),
        commit: String::new(),
        hosts: vec![Host::released("web-1")],
        strategy: Strategy::Canary,
        environment: "production".into(),
        started_at: now,
        finished_at: None,
        red: None,
        thresholds: None,
        url: String::new(),
        rollback_policy: Some(policy),
        created_time: now,
        updated_time: now,
    }
}

/// An evidence report's ending at `now` with this release verdict (its JSON) and these
/// notifications, as a worker writes it.
pub fn evidence_ending(
    now: chrono::DateTime<chrono::Utc>,
    release: Value,
    notify: Vec<deploy_diagnosis::model::notify::Notification>,
) -> deploy_diagnosis::model::report::Finish {
    use deploy_diagnosis::model::report::{Ending, Engine, Finish, ReportBody};
    Finish {
        ending: Ending::Completed {
            body: ReportBody {
                prom_ql: vec!["up".into()],
                content: "【问题概述】a【根因分析】b【影响范围】c【解决方案】d".into(),
            },
            engine: Engine::Evidence,
            ai_error: None,
        },
        raw_output: None,
        runner: None,
        now,
        duration_ms: 1,
        usage: None,
        release: Some(serde_json::from_value(release).unwrap()),
        notify,
    }
}
