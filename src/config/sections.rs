//! The configuration's sections, their values' types, and every default, each in the
//! section's `Default` (a key left out takes it: `#[serde(default)]` on the section).
//!
//! Fields are named in Rust's style; `rename` gives the design's key, lowercased, because
//! the loader lowercases keys (environment overrides cannot carry case). [`keys`] spells
//! each key as documented, for error messages.

use std::num::{NonZeroU16, NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secret::Secret;
use super::value::{self, HttpUrl, GITHUB_READ_TOOLS};
use crate::model::notify::Event;
use crate::model::report::RunnerKind;
use crate::model::verdict::Attribution;

/// The keys the reference has no row of their own for: the sections, and the keys inside
/// a list or map value (each told in its parent's meaning).
pub(crate) const OTHER_KEYS: &[&str] = &[
    "Mongo",
    "AI",
    "Store",
    "Runner",
    "MCP",
    "MCP.Servers.Name",
    "MCP.Servers.Command",
    "MCP.Servers.Args",
    "MCP.Servers.Env",
    "MCP.Servers.URL",
    "MCP.Servers.Optional",
    "Docker",
    "Worker",
    "Report",
    "Evidence",
    "Webhook",
    "Auth",
    "Budget",
    "Deployments",
    "Release",
    "Release.RED.Rate",
    "Release.RED.Errors",
    "Release.RED.Duration",
    "Release.Thresholds.RateMin",
    "Release.Thresholds.ErrorRateMaxPercent",
    "Release.Thresholds.DurationP95MaxMs",
    "Release.Thresholds.DurationP99MaxMs",
    "GitHub",
    "Notify",
    "Notify.Sinks.Name",
    "Notify.Sinks.Kind",
    "Notify.Sinks.URL",
    "Notify.Sinks.Secret",
    "Notify.Sinks.On",
    "Notify.Sinks.MinSeverity",
    "Notify.Sinks.Verdicts",
    "Notify.Sinks.RateLimitPerMinute",
    "UI",
    "Log",
];

/// Every key the loader knows, spelt as documented (`docs/configuration.md`): the
/// reference's ([`super::reference::ROWS`], one source for the keys, their defaults and
/// their meanings) and [`OTHER_KEYS`]. Errors name keys this way; a key of neither is
/// reported as unknown.
pub fn keys() -> impl Iterator<Item = &'static str> {
    super::reference::ROWS
        .iter()
        .flat_map(|row| row.keys.iter().copied())
        .chain(OTHER_KEYS.iter().copied())
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Service name, used in logs.
    pub name: String,
    /// Address to listen on.
    #[serde(deserialize_with = "value::non_empty")]
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// How long one request may take before it is answered `503` (go-zero's
    /// `RestConf.Timeout`, in milliseconds).
    #[serde(rename = "timeout", deserialize_with = "value::millis::<100, _>")]
    pub timeout: Duration,
    /// Requests handled at once; past it a request is answered `503` at once (go-zero's
    /// `RestConf.MaxConns`). Health probes do not count.
    #[serde(rename = "maxconns", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_conns: NonZeroUsize,
    /// MongoDB connection (used when `Store.Kind` is `mongo`).
    pub mongo: MongoConfig,
    /// The AI service and the systems the agent may query.
    pub ai: AiConfig,
    /// Where reports are kept.
    pub store: StoreConfig,
    /// How a diagnosis is executed.
    pub runner: RunnerConfig,
    /// MCP servers of the native runner.
    pub mcp: McpConfig,
    /// The managed runner container (`Runner.Kind: docker`).
    pub docker: DockerConfig,
    /// The background workers that run diagnoses.
    pub worker: WorkerConfig,
    /// What a report keeps.
    pub report: ReportConfig,
    /// The evidence stage: facts measured from Prometheus before the runner starts.
    pub evidence: EvidenceConfig,
    /// The alert webhook and the other write endpoints.
    pub webhook: WebhookConfig,
    /// Who may read and write.
    pub auth: AuthConfig,
    /// Cost bounds on the AI.
    pub budget: BudgetConfig,
    /// The deployments registry.
    pub deployments: DeploymentsConfig,
    /// The release verdict's service-wide RED queries and thresholds.
    pub release: ReleaseConfig,
    /// Where finished reports are sent.
    pub notify: NotifyConfig,
    /// How people reach the service.
    pub ui: UiConfig,
    /// Change evidence from GitHub.
    pub github: GitHubConfig,
    /// Logging.
    pub log: LogConfig,
    /// Keys of the file this service does not read (a typo, or a section of the design
    /// this port has no use for); logged as a warning at startup.
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "deploy-diagnosis".into(),
            host: "127.0.0.1".into(),
            port: 8888,
            timeout: Duration::from_secs(10),
            max_conns: NonZeroUsize::new(10_000).expect("not zero"),
            mongo: MongoConfig::default(),
            ai: AiConfig::default(),
            store: StoreConfig::default(),
            runner: RunnerConfig::default(),
            mcp: McpConfig::default(),
            docker: DockerConfig::default(),
            worker: WorkerConfig::default(),
            report: ReportConfig::default(),
            evidence: EvidenceConfig::default(),
            webhook: WebhookConfig::default(),
            auth: AuthConfig::default(),
            budget: BudgetConfig::default(),
            deployments: DeploymentsConfig::default(),
            release: ReleaseConfig::default(),
            notify: NotifyConfig::default(),
            ui: UiConfig::default(),
            github: GitHubConfig::default(),
            log: LogConfig::default(),
            unknown_keys: Vec::new(),
        }
    }
}

/// `Mongo.*`, as in the design.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://localhost:27017`.
    pub url: String,
    /// Database name.
    pub database: String,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            url: "mongodb://localhost:27017".into(),
            database: "hackathon".into(),
        }
    }
}

/// `AI.*`, as in the design.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AiConfig {
    /// API base URL: `https://api.openai.com/v1`, `https://api.anthropic.com/v1`,
    /// `https://dashscope.aliyuncs.com/compatible-mode/v1`, `https://api-inference.modelscope.cn`.
    /// None (empty, or left blank in the YAML): evidence-only mode.
    #[serde(rename = "baseurl", deserialize_with = "value::optional_url")]
    pub base_url: Option<HttpUrl>,
    /// API key (from `AI_API_KEY`).
    #[serde(rename = "apikey")]
    pub api_key: Secret,
    /// Model name.
    pub model: String,
    /// How long one AI request may take; a whole diagnosis gets twice this, as in the design.
    #[serde(deserialize_with = "value::seconds::<1, _>")]
    pub timeout: Duration,
    /// Prometheus the agent queries through the Prometheus MCP server.
    #[serde(rename = "prometheusurl")]
    pub prometheus_url: HttpUrl,
    /// GitHub token (from `GITHUB_TOKEN`); when set, the GitHub MCP server is started.
    #[serde(rename = "githubtoken")]
    pub github_token: Secret,
    /// GitHub MCP toolsets.
    #[serde(rename = "githubtoolsets")]
    pub github_toolsets: String,
    /// Wire format: `auto` (recognised from `BaseURL`), `anthropic` or `openai`.
    #[serde(deserialize_with = "value::variant")]
    pub protocol: Protocol,
    /// Most model turns in one diagnosis; the last one forbids tool use (`tool_choice: none`).
    #[serde(rename = "maxturns", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_turns: NonZeroU32,
    /// Tool calls run per model turn; more in one turn are answered "not run".
    #[serde(
        rename = "maxtoolcallsperturn",
        deserialize_with = "value::at_least::<1, _, _>"
    )]
    pub max_tool_calls_per_turn: NonZeroU32,
    /// Characters of all tool results of one diagnosis; past it, results are withheld and
    /// the model is told to answer with what it has.
    #[serde(rename = "toolresultbudgetchars")]
    pub tool_result_budget_chars: u32,
    /// Longest tool result, in characters, passed to the model; longer ones are cut.
    #[serde(
        rename = "toolresultmaxchars",
        deserialize_with = "value::at_least::<256, _, _>"
    )]
    pub tool_result_max_chars: u32,
    /// The provider whose request rules apply: `auto` (recognised from `BaseURL`),
    /// `anthropic`, `openai`, `dashscope`, `modelscope`, the self-hosted servers `vllm`,
    /// `ollama`, `llamacpp` and `sglang`, or `generic`.
    #[serde(deserialize_with = "value::variant")]
    pub provider: ProviderSetting,
    /// Most tokens the model may write in one answer.
    #[serde(rename = "maxtokens", deserialize_with = "value::at_least::<16, _, _>")]
    pub max_tokens: u32,
    /// The name the token limit is sent under: `auto` (by provider and model),
    /// `max_tokens` or `max_completion_tokens`.
    #[serde(rename = "maxtokensfield", deserialize_with = "value::variant")]
    pub max_tokens_field: MaxTokensField,
    /// Merged last into every request body (keys kept as written); a `null` value removes
    /// a key the provider profile would send.
    #[serde(rename = "extrabody", deserialize_with = "value::extra_body")]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// Whether the final answer is asked for in the provider's structured form (a JSON
    /// schema, JSON mode, or a forced `submit_report` tool, by provider profile): `auto`,
    /// or `off` for the design's instruction alone.
    #[serde(rename = "structuredoutput", deserialize_with = "value::variant")]
    pub structured_output: StructuredOutput,
    /// Tokens of context the AI server has (prompt, history and answer); 0: the provider
    /// profile's. The conversation is trimmed to fit it, oldest tool output first.
    #[serde(rename = "contexttokens")]
    pub context_tokens: u32,
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: Secret::default(),
            model: "gpt-4".into(),
            timeout: Duration::from_secs(60),
            prometheus_url: HttpUrl::parse("http://localhost:9090").expect("a valid URL"),
            github_token: Secret::default(),
            github_toolsets: "repos,issues,pull_requests,releases".into(),
            protocol: Protocol::default(),
            max_turns: NonZeroU32::new(10).expect("not zero"),
            max_tool_calls_per_turn: NonZeroU32::new(8).expect("not zero"),
            tool_result_budget_chars: 120_000,
            tool_result_max_chars: 8000,
            provider: ProviderSetting::default(),
            max_tokens: 4096,
            max_tokens_field: MaxTokensField::default(),
            extra_body: serde_json::Map::new(),
            structured_output: StructuredOutput::default(),
            context_tokens: 0,
        }
    }
}

impl AiConfig {
    /// Evidence-only mode: no AI configured (`AI.BaseURL` empty); reports are written from
    /// the evidence alone.
    pub fn evidence_only(&self) -> bool {
        self.base_url.is_none()
    }

    /// The base URL, empty in evidence-only mode.
    pub fn base_url(&self) -> &str {
        self.base_url.as_ref().map_or("", HttpUrl::as_str)
    }

    /// The deadline of one diagnosis: twice `AI.Timeout`, as in the design.
    pub fn diagnosis_deadline(&self) -> Duration {
        self.timeout.saturating_mul(2)
    }
}

/// The LLM wire format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Anthropic for `*.anthropic.com`, OpenAI-compatible otherwise.
    #[default]
    Auto,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI-compatible chat completions (`/chat/completions`).
    Openai,
}

impl Protocol {
    /// The runner's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Auto => "auto",
            Protocol::Anthropic => "anthropic",
            Protocol::Openai => "openai",
        }
    }
}

/// `AI.Provider`: whose request rules apply (see `runner::provider`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderSetting {
    /// Recognised from `AI.BaseURL`.
    #[default]
    Auto,
    /// Anthropic.
    Anthropic,
    /// OpenAI's own API.
    Openai,
    /// Alibaba Cloud DashScope, compatible mode.
    Dashscope,
    /// ModelScope API-Inference.
    Modelscope,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// Ollama's OpenAI-compatible API.
    Ollama,
    /// llama.cpp's server (`llama-server`).
    Llamacpp,
    /// SGLang's OpenAI-compatible server.
    Sglang,
    /// Any other OpenAI-compatible server.
    Generic,
}

/// `AI.StructuredOutput`: how the final answer is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StructuredOutput {
    /// The provider profile's structured form, where it has one.
    #[default]
    Auto,
    /// The design's "only a JSON object" instruction alone.
    Off,
}

/// `AI.MaxTokensField`: the name the token limit is sent under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// By provider and model.
    #[default]
    Auto,
    /// `max_tokens`.
    MaxTokens,
    /// `max_completion_tokens`.
    MaxCompletionTokens,
}

/// `Store.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `embedded` (SQLite file, the default) or `mongo`.
    #[serde(deserialize_with = "value::variant")]
    pub kind: StoreKind,
    /// The embedded store's file.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::default(),
            path: PathBuf::from("data/deploy-diagnosis.sqlite3"),
        }
    }
}

/// Which store keeps the reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One SQLite file; no server needed.
    #[default]
    Embedded,
    /// MongoDB, as in the design.
    Mongo,
}

/// `Runner.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RunnerConfig {
    /// `native` (the agent loop in the service), `process` (the Python runner as a child
    /// process) or `docker` (the Python runner exec'd in the managed container).
    #[serde(deserialize_with = "value::variant")]
    pub kind: RunnerKind,
    /// Python interpreter of the runner's virtualenv.
    pub python: PathBuf,
    /// The runner script.
    pub script: PathBuf,
    /// Command that starts the Prometheus MCP server; empty: the one beside `Python`.
    #[serde(rename = "prometheusmcpcommand")]
    pub prometheus_mcp_command: String,
    /// A running Prometheus MCP server (streamable HTTP) the Python runner (`process`)
    /// uses for every diagnosis instead of starting one each.
    #[serde(rename = "prometheusmcpurl", deserialize_with = "value::optional_url")]
    pub prometheus_mcp_url: Option<HttpUrl>,
    /// Command that starts the GitHub MCP server (only with `AI.GitHubToken`).
    #[serde(rename = "githubmcpcommand")]
    pub github_mcp_command: String,
    /// Bytes of runner stdout and stderr kept each; the rest is read and dropped.
    #[serde(
        rename = "outputmaxbytes",
        deserialize_with = "value::at_least::<4096, _, _>"
    )]
    pub output_max_bytes: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            kind: RunnerKind::default(),
            python: PathBuf::from(".venv/bin/python"),
            script: PathBuf::from("docker/runner/diagnosis_runner.py"),
            prometheus_mcp_command: String::new(),
            prometheus_mcp_url: None,
            github_mcp_command: "github-mcp-server stdio".into(),
            output_max_bytes: 1024 * 1024,
        }
    }
}

/// `MCP.*`: the native runner's MCP servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct McpConfig {
    /// The servers; empty: the Prometheus MCP server from the runner's virtualenv over
    /// stdio (and the GitHub one when `AI.GitHubToken` is set).
    pub servers: Vec<McpServerConfig>,
    /// Names of the service's environment variables stdio servers also get (besides
    /// `PATH`, `HOME`, locale, TLS and proxy settings); everything else is cleared.
    #[serde(rename = "passenv")]
    pub pass_env: Vec<String>,
    /// How long opening a session (spawn, handshake, tool list) may take.
    #[serde(
        rename = "connecttimeoutseconds",
        deserialize_with = "value::seconds::<1, _>"
    )]
    pub connect_timeout: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            pass_env: Vec::new(),
            // A bound for a hung server, not a latency target: the Prometheus MCP server is
            // a Python program, and on a busy two-core machine it took over 20 s to start.
            connect_timeout: Duration::from_secs(60),
        }
    }
}

/// One MCP server: a stdio `Command` (spawned once) or a streamable-HTTP `URL`.
#[derive(Debug, Clone, Deserialize)]
pub struct McpServerConfig {
    /// Name for logs.
    #[serde(deserialize_with = "value::non_empty")]
    pub name: String,
    /// Program to spawn (stdio).
    #[serde(default)]
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its extra environment, as `KEY=value` items (kept as written: keys are not
    /// case-folded, values may hold `${SECRET}`s).
    #[serde(default)]
    pub env: Vec<String>,
    /// Endpoint of a running server (streamable HTTP), instead of `Command`.
    #[serde(default)]
    pub url: String,
    /// When true, a server that cannot start is skipped instead of failing diagnoses.
    #[serde(default)]
    pub optional: bool,
}

/// `Docker.*`: the managed container of `Runner.Kind: docker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DockerConfig {
    /// The engine: `unix:///var/run/docker.sock` (or `${DOCKER_HOST}`).
    pub host: String,
    /// The container's name (the design's `diagnosis-service`).
    pub container: String,
    /// The image, built by `docker/build.sh`.
    pub image: String,
    /// `bridge` (its own network namespace: the host is `host.docker.internal`, and a
    /// loopback `AI.PrometheusURL` is rewritten to it), a named network, or `host` (the
    /// host's network: the container reaches every loopback-only service of the host, and
    /// its MCP server listens on the host's loopback).
    pub network: String,
    /// The user the container runs as (`uid:gid`): the image's non-root user. Never root.
    pub user: String,
    /// Memory limit in bytes.
    #[serde(
        rename = "memorybytes",
        deserialize_with = "value::at_least::<{ 64 * 1024 * 1024 }, _, _>"
    )]
    pub memory_bytes: i64,
    /// CPU limit (cores).
    #[serde(deserialize_with = "value::cpus")]
    pub cpus: f64,
    /// Most processes in the container.
    #[serde(rename = "pidslimit", deserialize_with = "value::at_least::<16, _, _>")]
    pub pids_limit: i64,
    /// Size of the writable `/tmp` (tmpfs), in bytes; the rest of the filesystem is read-only.
    #[serde(
        rename = "tmpfsbytes",
        deserialize_with = "value::at_least::<{ 1024 * 1024 }, _, _>"
    )]
    pub tmpfs_bytes: i64,
    /// Port of the Prometheus MCP server inside the container (on its loopback; with the
    /// host network, the host's loopback).
    #[serde(rename = "mcpport", deserialize_with = "value::at_least::<1, _, _>")]
    pub mcp_port: NonZeroU16,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: "unix:///var/run/docker.sock".into(),
            container: "diagnosis-service".into(),
            image: "diagnosis-service:latest".into(),
            network: "bridge".into(),
            user: "10001:10001".into(),
            memory_bytes: 1024 * 1024 * 1024,
            cpus: 1.0,
            pids_limit: 256,
            tmpfs_bytes: 64 * 1024 * 1024,
            mcp_port: NonZeroU16::new(8765).expect("not zero"),
        }
    }
}

/// `Worker.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Diagnoses run at once.
    #[serde(deserialize_with = "value::at_least::<1, _, _>")]
    pub concurrency: NonZeroUsize,
    /// How long a worker's claim on a report lasts without renewal; a report whose worker
    /// died is picked up again once its lease runs out.
    #[serde(rename = "leaseseconds", deserialize_with = "value::seconds::<2, _>")]
    pub lease: Duration,
    /// How often idle workers look for work nobody announced.
    #[serde(rename = "pollseconds", deserialize_with = "value::seconds::<1, _>")]
    pub poll: Duration,
    /// Attempts before a report whose worker keeps dying is failed.
    #[serde(
        rename = "maxattempts",
        deserialize_with = "value::at_least::<1, _, _>"
    )]
    pub max_attempts: NonZeroU32,
    /// How long in-flight diagnoses may go on after SIGTERM before they are stopped
    /// (and picked up again at the next start).
    #[serde(
        rename = "shutdowngraceseconds",
        deserialize_with = "value::seconds::<0, _>"
    )]
    pub shutdown_grace: Duration,
    /// Reports waiting for a worker beyond which intake answers `503` with `Retry-After`
    /// (0: unlimited).
    #[serde(rename = "maxqueue")]
    pub max_queue: u64,
    /// A failed report is diagnosed again for a new firing alert at most once in this
    /// long, however many alerts come (a flapping failure would otherwise re-run, and
    /// spend the AI, on every one).
    #[serde(
        rename = "rerunafterseconds",
        deserialize_with = "value::seconds::<0, _>"
    )]
    pub rerun_after: Duration,
}

/// `Report.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReportConfig {
    /// Versions a report keeps in its history; a re-diagnosis past it drops the oldest.
    #[serde(rename = "maxhistory", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_history: NonZeroU32,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            max_history: NonZeroU32::new(20).expect("not zero"),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: NonZeroUsize::new(4).expect("not zero"),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(5),
            max_attempts: NonZeroU32::new(3).expect("not zero"),
            shutdown_grace: Duration::from_secs(30),
            max_queue: 10_000,
            rerun_after: Duration::from_secs(300),
        }
    }
}

/// `Evidence.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EvidenceConfig {
    /// Whether evidence is gathered at all.
    pub enabled: bool,
    /// How long the whole gathering may take.
    #[serde(rename = "timeoutseconds", deserialize_with = "value::seconds::<1, _>")]
    pub timeout: Duration,
    /// The time before the alert's start that makes the baseline.
    #[serde(
        rename = "baselineminutes",
        deserialize_with = "value::minutes::<1, _>"
    )]
    pub baseline: Duration,
    /// The `rate()` window (about four scrape intervals).
    #[serde(
        rename = "ratewindowseconds",
        deserialize_with = "value::seconds::<2, _>"
    )]
    pub rate_window: Duration,
    /// Ranked items kept on a report.
    #[serde(rename = "maxitems", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_items: NonZeroUsize,
    /// Gatherings at once, apart from the AI diagnoses (so evidence is not held behind
    /// the AI queue).
    #[serde(deserialize_with = "value::at_least::<1, _, _>")]
    pub concurrency: NonZeroUsize,
    /// Hosts one alert's evidence measures at most (an alert on a whole job names every
    /// instance of it): those the alert's own series name first; the rest are named in
    /// the report as not measured.
    #[serde(rename = "maxhosts", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_hosts: NonZeroUsize,
    /// Requests to Prometheus under way at once, shared by every gathering, release
    /// verdict, report check and page chart.
    #[serde(
        rename = "maxqueriesinflight",
        deserialize_with = "value::at_least::<1, _, _>"
    )]
    pub max_queries_in_flight: NonZeroUsize,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_secs(10),
            baseline: Duration::from_secs(30 * 60),
            rate_window: Duration::from_secs(60),
            max_items: NonZeroUsize::new(12).expect("not zero"),
            concurrency: NonZeroUsize::new(8).expect("not zero"),
            max_hosts: NonZeroUsize::new(20).expect("not zero"),
            max_queries_in_flight: NonZeroUsize::new(16).expect("not zero"),
        }
    }
}

/// `Notify.*`: the sinks finished reports are sent to, through the store's outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NotifyConfig {
    /// The sinks (none: nothing is sent).
    pub sinks: Vec<SinkConfig>,
    /// Attempts of one message before it is given up (counted on the report).
    #[serde(
        rename = "maxattempts",
        deserialize_with = "value::at_least::<1, _, _>"
    )]
    pub max_attempts: NonZeroU32,
    /// How long one attempt may take.
    #[serde(rename = "timeoutseconds", deserialize_with = "value::seconds::<1, _>")]
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            max_attempts: NonZeroU32::new(8).expect("not zero"),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The platform a sink speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Any HTTP receiver: the report's JSON in a versioned envelope, signed by the
    /// Standard Webhooks specification.
    Webhook,
    /// Slack incoming webhook.
    Slack,
    /// DingTalk robot.
    DingTalk,
    /// Feishu (Lark) bot.
    Feishu,
    /// WeCom robot.
    WeCom,
}

/// One sink of `Notify.Sinks`.
#[derive(Debug, Clone, Deserialize)]
pub struct SinkConfig {
    /// Its name (unique; in logs, metrics and the report's `notifications`).
    #[serde(deserialize_with = "value::non_empty")]
    pub name: String,
    /// `webhook`, `slack`, `dingtalk`, `feishu` or `wecom`.
    #[serde(deserialize_with = "value::variant")]
    pub kind: SinkKind,
    /// Where to send.
    pub url: HttpUrl,
    /// The signing secret: `whsec_<Base64>` for `webhook`, the robot's secret (`SEC…`)
    /// for `dingtalk` and `feishu`; empty: unsigned. WeCom's and Slack's keys are in their
    /// URLs.
    #[serde(default)]
    pub secret: Secret,
    /// Which endings are sent: `completed`, `failed` (default both).
    #[serde(default = "both_endings")]
    pub on: Vec<Event>,
    /// Only alerts of at least this severity (`info` < `warning` < `critical`); empty: all.
    #[serde(default, rename = "minseverity")]
    pub min_severity: String,
    /// Only reports with one of these release verdicts; empty: all.
    #[serde(default)]
    pub verdicts: Vec<Attribution>,
    /// Messages a minute at most, in place of the platform's documented limit (DingTalk
    /// and WeCom robots 20, Feishu 100 and 5 a second, Slack one a second).
    #[serde(default, rename = "ratelimitperminute")]
    pub rate_per_minute: Option<NonZeroU32>,
}

fn both_endings() -> Vec<Event> {
    vec![Event::Completed, Event::Failed]
}

/// `UI.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UiConfig {
    /// The service's address as people reach it, for links in messages (`None`: links are
    /// relative paths).
    #[serde(rename = "externalurl", deserialize_with = "value::optional_url")]
    pub external_url: Option<HttpUrl>,
    /// The report pages' language.
    #[serde(deserialize_with = "value::variant")]
    pub language: Language,
    /// Prometheus as people reach it, for the pages' links to its graphs (`None`:
    /// `AI.PrometheusURL`).
    #[serde(
        rename = "prometheusexternalurl",
        deserialize_with = "value::optional_url"
    )]
    pub prometheus_external_url: Option<HttpUrl>,
}

/// The report pages' language (`UI.Language`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Chinese, the design's language.
    #[default]
    Zh,
    /// English.
    En,
}

/// `Release.*`: what a deployment registered without its own `red` or `thresholds` gets,
/// and what a comparison of the release needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReleaseConfig {
    /// `Release.RED.*`: PromQL templates of `{{hostname}}`; empty: the common conventions.
    pub red: ReleaseRedConfig,
    /// `Release.Thresholds.*`: absolute health limits; unset: none.
    pub thresholds: ReleaseThresholdsConfig,
    /// Points a side (a rate window apart, so they do not overlap) a time-series
    /// comparison needs; fewer: that signal is inconclusive.
    #[serde(rename = "minpoints", deserialize_with = "value::at_least::<3, _, _>")]
    pub min_points: usize,
    /// Requests a side the error rate's comparison needs.
    #[serde(
        rename = "minrequests",
        deserialize_with = "value::at_least::<1, _, _>"
    )]
    pub min_requests: u64,
    /// The after-release window of the verdict, and the incident window of the evidence,
    /// are at most this long, ending now: an old release, or an alert re-sent days after it
    /// began, is measured on its recent behaviour against the baseline before it.
    #[serde(rename = "watchminutes", deserialize_with = "value::minutes::<1, _>")]
    pub watch: Duration,
    /// An analysis (`GET /deployments/{id}/analysis`) is answered from the last
    /// measurement of the same registration for this long.
    #[serde(
        rename = "analysiscacheseconds",
        deserialize_with = "value::seconds::<0, _>"
    )]
    pub analysis_cache: Duration,
    /// Whether a *rollback* verdict may ask the platform to roll back, for a deployment
    /// whose `rollbackPolicy.autoRollback` is true.
    #[serde(rename = "autorollback", deserialize_with = "value::variant")]
    pub auto_rollback: AutoRollback,
}

/// `Release.AutoRollback`: the switch over every deployment's rollback policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AutoRollback {
    /// Never ask (the default: it must be turned on).
    #[default]
    #[serde(rename = "false")]
    Off,
    /// Ask, where the deployment's policy says so.
    #[serde(rename = "true")]
    On,
    /// Record on the report what would have been sent, and send nothing.
    #[serde(rename = "dry-run")]
    DryRun,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        Self {
            red: ReleaseRedConfig::default(),
            thresholds: ReleaseThresholdsConfig::default(),
            min_points: 10,
            min_requests: 50,
            watch: Duration::from_secs(30 * 60),
            analysis_cache: Duration::from_secs(10),
            auto_rollback: AutoRollback::Off,
        }
    }
}

/// `Release.RED.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReleaseRedConfig {
    /// Requests per second.
    pub rate: String,
    /// The percentage of requests that failed.
    pub errors: String,
    /// Duration, in seconds.
    pub duration: String,
}

/// `Release.Thresholds.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReleaseThresholdsConfig {
    /// Fewer requests per second is unhealthy.
    #[serde(rename = "ratemin")]
    pub rate_min: Option<f64>,
    /// A higher error percentage is unhealthy.
    #[serde(rename = "errorratemaxpercent")]
    pub error_rate_max_percent: Option<f64>,
    /// A slower 95th percentile (ms) is unhealthy.
    #[serde(rename = "durationp95maxms")]
    pub duration_p95_max_ms: Option<f64>,
    /// A slower 99th percentile (ms) is unhealthy.
    #[serde(rename = "durationp99maxms")]
    pub duration_p99_max_ms: Option<f64>,
}

/// `Budget.*`: 0 is unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    /// AI diagnoses in any hour; past it, diagnoses run from the evidence alone.
    #[serde(rename = "diagnosesperhour")]
    pub diagnoses_per_hour: u64,
    /// AI tokens (input and output) in any 24 hours; past it, as above.
    #[serde(rename = "tokensperday")]
    pub tokens_per_day: u64,
}

/// `Auth.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Required on writes (`POST`, `PUT`, `DELETE`); `Webhook.BearerToken` is its alias.
    #[serde(rename = "writetoken")]
    pub write_token: Secret,
    /// Required on reads except `/healthz`, `/readyz` and `/openapi.json` (empty: the write
    /// token).
    #[serde(rename = "readtoken")]
    pub read_token: Secret,
    /// Whether `/metrics` needs the read token too.
    #[serde(rename = "protectmetrics")]
    pub protect_metrics: bool,
    /// Allows serving a non-loopback `Host` with no token.
    #[serde(rename = "allowanonymous")]
    pub allow_anonymous: bool,
}

/// `Deployments.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DeploymentsConfig {
    /// An alert with no `deploymentId` label is attributed to a deployment on its host
    /// when it started at most this long after the deployment's `deployedAt`.
    #[serde(rename = "watchminutes", deserialize_with = "value::minutes::<1, _>")]
    pub watch: Duration,
}

impl Default for DeploymentsConfig {
    fn default() -> Self {
        Self {
            watch: Duration::from_secs(60 * 60),
        }
    }
}

/// `GitHub.*`: change evidence, read by the service with `AI.GitHubToken`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GitHubConfig {
    /// The REST API: `https://api.github.com`, or `https://HOST/api/v3` for GitHub
    /// Enterprise.
    #[serde(rename = "apiurl")]
    pub api_url: HttpUrl,
    /// Repositories that may be read: `owner/name`, `*` globs allowed. Empty: only
    /// repositories that registered deployments name.
    #[serde(deserialize_with = "value::repo_patterns")]
    pub repos: Vec<String>,
    /// Characters of all patch excerpts of one diagnosis.
    #[serde(rename = "maxpatchchars")]
    pub max_patch_chars: usize,
    /// Characters of one file's patch excerpt.
    #[serde(
        rename = "maxfilepatchchars",
        deserialize_with = "value::at_least::<200, _, _>"
    )]
    pub max_file_patch_chars: usize,
    /// Pull requests whose files are read.
    #[serde(rename = "maxprs", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_prs: NonZeroUsize,
    /// Commits of a range whose pull requests are looked up.
    #[serde(rename = "maxcommits", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_commits: NonZeroUsize,
    /// How long the whole reading may take (within the diagnosis deadline).
    #[serde(rename = "timeoutseconds", deserialize_with = "value::seconds::<1, _>")]
    pub timeout: Duration,
    /// Tools of the GitHub MCP server offered to the model (read tools only; any other
    /// tool the server has is never offered or called).
    #[serde(rename = "mcptools", deserialize_with = "value::read_tools")]
    pub mcp_tools: Vec<String>,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            api_url: HttpUrl::parse("https://api.github.com").expect("a valid URL"),
            repos: Vec::new(),
            max_patch_chars: 24_000,
            max_file_patch_chars: 4_000,
            max_prs: NonZeroUsize::new(20).expect("not zero"),
            max_commits: NonZeroUsize::new(100).expect("not zero"),
            timeout: Duration::from_secs(60),
            mcp_tools: GITHUB_READ_TOOLS.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

/// `Webhook.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// The older name of `Auth.WriteToken`.
    #[serde(rename = "bearertoken")]
    pub bearer_token: Secret,
    /// Largest accepted request body, in bytes.
    #[serde(
        rename = "maxbodybytes",
        deserialize_with = "value::at_least::<1024, _, _>"
    )]
    pub max_body_bytes: usize,
    /// Alerts per request.
    #[serde(rename = "maxalerts", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_alerts: NonZeroUsize,
    /// Labels, and annotations, per alert.
    #[serde(rename = "maxlabels", deserialize_with = "value::at_least::<1, _, _>")]
    pub max_labels: NonZeroUsize,
    /// Bytes of one label or annotation value (or other text field of an alert).
    #[serde(
        rename = "maxvaluebytes",
        deserialize_with = "value::at_least::<64, _, _>"
    )]
    pub max_value_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            bearer_token: Secret::default(),
            max_body_bytes: 1024 * 1024,
            max_alerts: NonZeroUsize::new(1000).expect("not zero"),
            max_labels: NonZeroUsize::new(64).expect("not zero"),
            max_value_bytes: 4096,
        }
    }
}

/// `Log.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `plain` or `json`.
    #[serde(deserialize_with = "value::variant")]
    pub format: LogFormat,
    /// Filter when `RUST_LOG` is unset, e.g. `info` or `deploy_diagnosis=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            // rmcp logs every session start at info; its warnings are what an operator needs.
            level: "info,rmcp=warn".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Plain,
    /// One JSON object a line.
    Json,
}
