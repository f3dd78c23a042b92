//! Real servers the tests share, started once per test binary: Prometheus scraping a
//! node_exporter, and SecantusDB (a MongoDB wire-protocol server). Each runs under a small
//! shell guard that kills it when the test process exits (its stdin pipe closes).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process that dies with the test binary.
pub struct Guarded {
    _child: Child,
    _stdin: Mutex<ChildStdin>,
}

/// Starts `program args` so that it is killed when this process exits.
pub fn start_guarded(program: &str, args: &[String], log: &std::path::Path) -> Guarded {
    let log = std::fs::File::create(log).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$@" </dev/null & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; sleep 1; kill -9 $pid 2>/dev/null"#)
        .arg("guard")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let stdin = child.stdin.take().unwrap();
    Guarded {
        _child: child,
        _stdin: Mutex::new(stdin),
    }
}

/// A real CPU fault: `stress-ng` on both cores for `seconds`, at the lowest priority so
/// the other tests still run; stopped when dropped.
pub struct CpuFault {
    _stress: Guarded,
    _dir: tempfile::TempDir,
}

/// Starts a [`CpuFault`].
pub fn cpu_fault(seconds: u64) -> CpuFault {
    let dir = tempfile::tempdir().unwrap();
    let timeout = format!("{seconds}s");
    let stress = start_guarded(
        "nice",
        &[
            "-n",
            "19",
            "stress-ng",
            "--cpu",
            "2",
            "--cpu-method",
            "loop",
            "--timeout",
            &timeout,
            "--quiet",
        ]
        .map(str::to_owned),
        &dir.path().join("stress.log"),
    );
    CpuFault {
        _stress: stress,
        _dir: dir,
    }
}

/// A real CPU fault in a control group: `stress-ng` on one CPU for `seconds`, at normal
/// priority, its process written into `procs` (the group's `cgroup.procs`) before it
/// starts; stopped when dropped.
pub fn cpu_fault_in(seconds: u64, procs: &std::path::Path) -> CpuFault {
    let dir = tempfile::tempdir().unwrap();
    let stress = start_guarded(
        "sh",
        &[
            "-c".into(),
            r#"echo $$ > "$1" && exec stress-ng --cpu 1 --cpu-method loop --timeout "$2" --quiet"#
                .into(),
            "stress".into(),
            procs.display().to_string(),
            format!("{seconds}s"),
        ],
        &dir.path().join("stress.log"),
    );
    CpuFault {
        _stress: stress,
        _dir: dir,
    }
}

/// Waits until `url` answers 2xx.
pub async fn wait_http(url: &str, what: &str) {
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not come up at {url}");
}

fn require(path: &str, hint: &str) -> String {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: {hint}"
    );
    path.to_owned()
}

/// Prometheus scraping one node_exporter (`job="node"`, label `hostname="web-1"`).
pub struct PromStack {
    /// Prometheus base URL.
    pub url: String,
    /// node_exporter's `host:port`, as Prometheus labels its `instance`.
    pub node_instance: String,
    _dir: tempfile::TempDir,
    _prom: Guarded,
    _node: Guarded,
}

static PROM: OnceCell<PromStack> = OnceCell::const_new();

/// A node_exporter with these collectors and a Prometheus scraping it as `scrape` says
/// (`{node}` stands for the exporter's address), in `dir`; their URLs.
fn start_stack(
    dir: &std::path::Path,
    collectors: &[&str],
    scrape: impl Fn(&str) -> String,
) -> (String, String, Guarded, Guarded) {
    let hint = "install Debian's prometheus and prometheus-node-exporter (scripts/test does)";
    let prom_bin = require("/usr/bin/prometheus", hint);
    let node_bin = require("/usr/bin/prometheus-node-exporter", hint);
    let (prom_port, node_port) = (free_port(), free_port());
    let node_address = format!("127.0.0.1:{node_port}");
    let mut args = vec![
        format!("--web.listen-address={node_address}"),
        "--collector.disable-defaults".into(),
    ];
    args.extend(collectors.iter().map(|c| format!("--collector.{c}")));
    let node = start_guarded(&node_bin, &args, &dir.join("node.log"));
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, scrape(&node_address)).unwrap();
    let url = format!("http://127.0.0.1:{prom_port}");
    let prom = start_guarded(
        &prom_bin,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.join("prometheus.log"),
    );
    (url, node_address, prom, node)
}

/// Waits until the instant `query` answers `want`.
async fn wait_answer(url: &str, query: &str, want: &str) {
    wait_http(&format!("{url}/-/ready"), "prometheus").await;
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let start = Instant::now();
    loop {
        let body: serde_json::Value = client
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["data"]["result"][0]["value"][1] == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never answered {want} to {query}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The shared Prometheus stack, started on first use and scraped at least once.
pub async fn prometheus() -> &'static PromStack {
    PROM.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap();
        let collectors = ["cpu", "meminfo", "loadavg", "filesystem", "netdev"];
        let (url, node_instance, prom, node) = start_stack(dir.path(), &collectors, |node| {
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{node}']\n        labels: {{hostname: web-1}}\n"
            )
        });
        wait_http(&format!("http://{node_instance}/metrics"), "node_exporter").await;
        // The first scrape, so queries have data.
        wait_answer(&url, "up{job=\"node\"}", "1").await;
        PromStack { url, node_instance, _dir: dir, _prom: prom, _node: node }
    })
    .await
}

/// The real Prometheus MCP server over streamable HTTP, against the shared [`prometheus`]:
/// one for every service of the tests that asks for no MCP server of its own, the native
/// runner's (`MCP.Servers`) and the Python runner's (`Runner.PrometheusMCPURL`). Each
/// native service would otherwise spawn its own (stdio, the default), and the Python runner
/// one each diagnosis, 2.3 CPU-seconds of Python imports each: 172 of them were 385 of a
/// run's 930 CPU-seconds on two cores. The stdio path keeps its own tests and serves every
/// service with a Prometheus of its own.
pub struct SharedMcp {
    /// Its URL.
    pub url: String,
    /// The `MCP:` section naming it.
    pub section: String,
    _dir: tempfile::TempDir,
    _server: Guarded,
}

/// The real Prometheus MCP server of the runner's virtualenv over streamable HTTP against
/// `prometheus`, its log in `dir`: its guard and URL once it listens.
pub async fn http_mcp(prometheus: &str, dir: &std::path::Path) -> (Guarded, String) {
    // The port is free when it is picked, not when the server binds it a second or two
    // later (Python's imports): a server another test starts meanwhile may take it (seen:
    // a node_exporter's HTML page answered the service's `initialize`). One that answers
    // otherwise than MCP's streamable HTTP is not this one: another port.
    for _ in 0..3 {
        let port = free_port();
        let server = repo().join(".venv/bin/prometheus-mcp-server");
        let guard = start_guarded(
            "/usr/bin/env",
            &[
                format!("PROMETHEUS_URL={prometheus}"),
                "PROMETHEUS_MCP_SERVER_TRANSPORT=http".into(),
                "PROMETHEUS_MCP_BIND_HOST=127.0.0.1".into(),
                format!("PROMETHEUS_MCP_BIND_PORT={port}"),
                server.display().to_string(),
            ],
            &dir.join(format!("mcp-{port}.log")),
        );
        let url = format!("http://127.0.0.1:{port}/mcp");
        if answers_mcp(&url).await {
            return (guard, url);
        }
    }
    panic!("the HTTP MCP server found its port taken three times (logs in {dir:?})");
}

/// Whether `url` answers an MCP `initialize` as a streamable-HTTP MCP server does (an
/// event stream or JSON), once something listens there (a minute at most).
async fn answers_mcp(url: &str) -> bool {
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "deploy-diagnosis-tests", "version": "0"}
        }
    });
    let start = Instant::now();
    loop {
        match client
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await
        {
            Ok(answer) => {
                let kind = answer
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                return answer.status().is_success()
                    && (kind.starts_with("text/event-stream")
                        || kind.starts_with("application/json"));
            }
            Err(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the HTTP MCP server did not start at {url}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

static SHARED_MCP: OnceCell<SharedMcp> = OnceCell::const_new();

/// The [`SharedMcp`], started on first use.
pub async fn shared_mcp() -> &'static SharedMcp {
    SHARED_MCP
        .get_or_init(|| async {
            let prom = prometheus().await;
            let dir = tempfile::tempdir().unwrap();
            let (guard, url) = http_mcp(&prom.url, dir.path()).await;
            SharedMcp {
                section: format!("MCP:\n  Servers:\n    - Name: prometheus\n      URL: {url}\n"),
                url,
                _dir: dir,
                _server: guard,
            }
        })
        .await
}

/// A Prometheus of its own scraping one node_exporter as `n` instances of job `fleet`
/// (`fleet-00:9100` …), as one alert on a whole job sees a large fleet.
pub struct Fleet {
    /// Prometheus base URL.
    pub url: String,
    _dir: tempfile::TempDir,
    _prom: Guarded,
    _node: Guarded,
}

/// Starts a [`Fleet`] and waits until every instance was scraped.
pub async fn fleet(n: usize) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let (url, _, prom, node) = start_stack(dir.path(), &["cpu", "loadavg"], |node| {
        // One target group an instance: the same address, told apart by `instance`.
        let groups: String = (0..n)
            .map(|i| {
                format!("      - targets: ['{node}']\n        labels: {{instance: 'fleet-{i:02}:9100'}}\n")
            })
            .collect();
        format!(
            "global: {{scrape_interval: 2s, evaluation_interval: 2s}}\nscrape_configs:\n  - job_name: fleet\n    static_configs:\n{groups}"
        )
    });
    wait_answer(&url, "count(up{job=\"fleet\"} == 1)", &n.to_string()).await;
    Fleet {
        url,
        _dir: dir,
        _prom: prom,
        _node: node,
    }
}

/// A running SecantusDB.
pub struct Mongo {
    /// `mongodb://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
    _server: Guarded,
}

static MONGO: OnceCell<Mongo> = OnceCell::const_new();

/// The shared MongoDB-compatible server (each test uses its own database).
pub async fn mongo() -> &'static Mongo {
    MONGO
        .get_or_init(|| async {
            let bin = repo().join(".venv-test/bin/secantusd-py");
            let bin = require(
                bin.to_str().unwrap(),
                "run scripts/test (it installs SecantusDB into .venv-test)",
            );
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let server = start_guarded(
                &bin,
                &[
                    "--host".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    port.to_string(),
                    "--storage-path".into(),
                    dir.path().join("db").display().to_string(),
                ],
                &dir.path().join("secantus.log"),
            );
            wait_tcp(port, "SecantusDB").await;
            Mongo {
                url: format!("mongodb://127.0.0.1:{port}"),
                _dir: dir,
                _server: server,
            }
        })
        .await
}

/// The Docker engine the docker-runner tests use: `DD_TEST_DOCKER_HOST`, or the one
/// `scripts/docker-setup` starts.
pub fn docker_host() -> String {
    std::env::var("DD_TEST_DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///var/lib/dd-docker/docker.sock".into())
}

/// Processes whose environment holds `entry` (`KEY=value`), from /proc.
pub fn pids_with_env(entry: &str) -> Vec<u32> {
    let needle = format!("{entry}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| String::from_utf8_lossy(&env).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Waits until something accepts connections on `127.0.0.1:port`.
pub async fn wait_tcp(port: u16, what: &str) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not start on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

static SWEPT: OnceCell<()> = OnceCell::const_new();

/// A client of the test Docker engine. Its first use in this test binary removes the
/// containers (`dd-test-*`) an earlier, failed run left, before any test makes its own.
pub async fn docker_client() -> bollard::Docker {
    let host = docker_host();
    let socket = host.strip_prefix("unix://").unwrap_or(&host).to_owned();
    assert!(
        std::path::Path::new(&socket).exists(),
        "no Docker engine at {host}: run scripts/docker-setup (scripts/test does)"
    );
    let docker = bollard::Docker::connect_with_unix(&socket, 60, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    SWEPT
        .get_or_init(|| async {
            use bollard::query_parameters::{
                ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
            };
            let options = ListContainersOptionsBuilder::default().all(true).build();
            let all = docker.list_containers(Some(options)).await.unwrap();
            for name in all.into_iter().flat_map(|c| c.names.unwrap_or_default()) {
                if let Some(name) = name.strip_prefix('/').filter(|n| n.starts_with("dd-test-")) {
                    let force = RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = docker.remove_container(name, Some(force)).await;
                }
            }
        })
        .await;
    docker
}

/// The runner's Python (the virtualenv `scripts/test` makes).
pub fn runner_python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    require(
        python.to_str().unwrap(),
        "run scripts/test (it creates the runner's virtualenv .venv)",
    );
    python
}

/// A reverse proxy in front of a real Prometheus, as one often stands: with credentials,
/// a request without them is answered `401` with a `WWW-Authenticate` challenge, as
/// Prometheus's own `basic_auth_users` answers it. It keeps the User-Agent of every
/// request it lets through, and counts them and the most under way at once.
pub struct PrometheusProxy {
    /// `http://127.0.0.1:PORT` (no credentials).
    pub address: String,
    seen: std::sync::Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    agents: Mutex<Vec<String>>,
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl PrometheusProxy {
    /// The shared Prometheus behind Basic auth, letting `user:password` in.
    pub async fn guarding(user: &str, password: &str) -> Self {
        let upstream = prometheus().await.url.clone();
        Self::start(&upstream, Some((user, password))).await
    }

    /// A proxy to `upstream`, asking for `credentials` when given.
    pub async fn start(upstream: &str, credentials: Option<(&str, &str)>) -> Self {
        use axum::extract::{Request, State};
        use axum::response::IntoResponse;
        use base64::Engine as _;
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        #[derive(Clone)]
        struct Shared {
            upstream: String,
            expected: Option<String>,
            client: reqwest::Client,
            seen: Arc<Seen>,
        }
        async fn pass(State(s): State<Shared>, request: Request) -> axum::response::Response {
            let (parts, body) = request.into_parts();
            let header = |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            if let Some(expected) = &s.expected {
                if &header(axum::http::header::AUTHORIZATION) != expected {
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        [("www-authenticate", "Basic")],
                        "Unauthorized\n",
                    )
                        .into_response();
                }
            }
            s.seen
                .agents
                .lock()
                .unwrap()
                .push(header(axum::http::header::USER_AGENT));
            let at = s.seen.now.fetch_add(1, Ordering::SeqCst) + 1;
            s.seen.peak.fetch_max(at, Ordering::SeqCst);
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let content_type = header(axum::http::header::CONTENT_TYPE);
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let mut forward = s
                .client
                .request(parts.method.clone(), format!("{}{path}", s.upstream))
                .body(body);
            if !content_type.is_empty() {
                forward = forward.header("content-type", content_type);
            }
            let answer = forward.send().await.unwrap();
            let status = answer.status().as_u16();
            let content_type = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let body = answer.bytes().await.unwrap();
            // Held a moment, so requests that could overlap do.
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.seen.now.fetch_sub(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", content_type)],
                body,
            )
                .into_response()
        }
        let seen = Arc::<Seen>::default();
        let shared = Shared {
            upstream: upstream.to_owned(),
            expected: credentials.map(|(user, password)| {
                let pair = format!("{user}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }),
            client: deploy_diagnosis::tls::client().build().unwrap(),
            seen: seen.clone(),
        };
        let app = axum::Router::new().fallback(pass).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, seen }
    }

    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.address
            .replacen("http://", &format!("http://{user}:{password}@"), 1)
    }

    /// The User-Agents of the requests let through.
    pub fn agents(&self) -> Vec<String> {
        self.seen.agents.lock().unwrap().clone()
    }

    /// Requests let through, and the most under way at once.
    pub fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        (self.agents().len(), self.seen.peak.load(Ordering::SeqCst))
    }
}

/// Command lines of this machine's processes that hold `needle`.
pub fn cmdlines_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|line| line.contains(needle))
        .collect()
}

/// The real model on this machine: Qwen2.5-Coder 0.5B served by llama.cpp's server
/// (`scripts/local-llm`, which `scripts/test` installs), with 8,192 tokens of context.
pub struct LocalLlm {
    /// `AI.BaseURL`.
    pub url: String,
    _server: Guarded,
    /// `tests/fixtures/record_llm.py` in front of the server when `DD_TEST_LLM_RECORD`
    /// names a file: each exchange is appended there, to make a transcript fixture of.
    _recorder: Option<Guarded>,
    _dir: tempfile::TempDir,
}

static LOCAL_LLM: OnceCell<LocalLlm> = OnceCell::const_new();

/// The shared [`LocalLlm`] (0.5B, 8,192 tokens of context, one thread), started on first
/// use. On cores the tests beside it keep busy, llama.cpp's second thread mostly spins
/// waiting for the first: the tests' one request took 125 CPU-seconds on two threads and
/// 85 on one beside two busy loops, in 127 s and 121 s (both 78 s alone, in 40 s and 80 s).
pub async fn local_llm() -> &'static LocalLlm {
    LOCAL_LLM
        .get_or_init(|| start_local_llm_at("0.5b", 8192, -5, 1))
        .await
}

/// `tests/fixtures/record_llm.py` passing through to `upstream`, appending to `out`; its
/// URL once it listens.
async fn recording(
    upstream: &str,
    out: &std::ffi::OsStr,
    dir: &tempfile::TempDir,
) -> (String, Option<Guarded>) {
    let port = free_port();
    let recorder = start_guarded(
        "python3",
        &[
            repo()
                .join("tests/fixtures/record_llm.py")
                .display()
                .to_string(),
            "--upstream".into(),
            upstream.into(),
            "--port".into(),
            port.to_string(),
            "--out".into(),
            out.to_string_lossy().into_owned(),
        ],
        &dir.path().join("recorder.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (url, Some(recorder));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the recorder did not listen on {url}");
}

/// Starts `scripts/local-llm serve MODEL` with `context` tokens, and waits until it has
/// loaded its weights.
#[allow(dead_code)] // benches/quality.rs
pub async fn start_local_llm(model: &str, context: u32) -> LocalLlm {
    start_local_llm_at(model, context, 0, 2).await
}

/// [`start_local_llm`] at this `nice` level, on this many threads: the tests' model is one
/// long request, and beside five other tests on two cores it once took over 300 s (75 s
/// alone); at -5 it gets three times the share of a test's process, ahead of the rest.
pub async fn start_local_llm_at(model: &str, context: u32, nice: i32, threads: u32) -> LocalLlm {
    let script = repo().join("scripts/local-llm");
    let weights = std::process::Command::new(&script)
        .args(["path", model])
        .output()
        .unwrap();
    assert!(
        weights.status.success(),
        "the local model is not installed (scripts/test installs it with scripts/local-llm install 0.5b): {}",
        String::from_utf8_lossy(&weights.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_guarded(
        "nice",
        &[
            "-n".into(),
            nice.to_string(),
            "env".into(),
            format!("DD_LLM_CONTEXT={context}"),
            format!("DD_LLM_THREADS={threads}"),
            script.display().to_string(),
            "serve".into(),
            model.into(),
            port.to_string(),
        ],
        &dir.path().join("llm.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let start = Instant::now();
    // Loading the weights takes seconds; /health answers 503 until then.
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(r) = client.get(format!("{url}/health")).send().await {
            if r.status().is_success() {
                let (url, recorder) = match std::env::var_os("DD_TEST_LLM_RECORD") {
                    Some(out) => recording(&url, &out, &dir).await,
                    None => (url, None),
                };
                return LocalLlm {
                    url: format!("{url}/v1"),
                    _server: server,
                    _recorder: recorder,
                    _dir: dir,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "the local model did not come up: {}",
        std::fs::read_to_string(dir.path().join("llm.log")).unwrap_or_default()
    );
}
