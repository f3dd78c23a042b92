//! Configuration: one typed tree, loaded once from `etc/deploy-diagnosis.yaml`, with
//! `${VAR}` expansion (from the environment, then a `.env` file) and `DD_<SECTION>__<KEY>`
//! overrides, validated once at startup.
//!
//! The YAML keeps the design's keys verbatim (`Mongo.URL`, `AI.BaseURL`, ...). Keys are
//! matched case-insensitively, because environment overrides cannot carry case
//! (`DD_AI__BASEURL` overrides `AI.BaseURL`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration could not be loaded. Every message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file or an override is not valid YAML, or a value has the wrong type.
    #[error("configuration {0}")]
    Parse(String),
    /// A value is present but wrong, or a required one is missing.
    #[error("configuration key {key}: {message}")]
    Invalid {
        /// The key, spelt as in the YAML file.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A secret: never printed by `Debug`, never serialized.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[REDACTED]"
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct Config {
    /// Service name, used in logs.
    #[serde(default = "default_name")]
    pub name: String,
    /// Address to listen on.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port to listen on.
    #[serde(default = "default_port")]
    pub port: u16,
    /// MongoDB connection (used when `Store.Kind` is `mongo`).
    #[serde(default)]
    pub mongo: MongoConfig,
    /// The AI service and the systems the agent may query.
    pub ai: AiConfig,
    /// Where reports are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// How a diagnosis is executed.
    #[serde(default)]
    pub runner: RunnerConfig,
    /// MCP servers of the native runner.
    #[serde(default)]
    pub mcp: McpConfig,
    /// The managed runner container (`Runner.Kind: docker`).
    #[serde(default)]
    pub docker: DockerConfig,
    /// The background workers that run diagnoses.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// The evidence stage: facts measured from Prometheus before the runner starts.
    #[serde(default)]
    pub evidence: EvidenceConfig,
    /// The alert webhook and the other write endpoints.
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// Who may read and write.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Cost bounds on the AI.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// The deployments registry.
    #[serde(default)]
    pub deployments: DeploymentsConfig,
    /// Change evidence from GitHub.
    #[serde(default)]
    pub github: GitHubConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// `Mongo.*`, as in the design.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://localhost:27017`.
    #[serde(default = "default_mongo_url")]
    pub url: String,
    /// Database name.
    #[serde(default = "default_mongo_database")]
    pub database: String,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            url: default_mongo_url(),
            database: default_mongo_database(),
        }
    }
}

/// `AI.*`, as in the design.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct AiConfig {
    /// API base URL: `https://api.openai.com/v1`, `https://api.anthropic.com/v1`,
    /// `https://dashscope.aliyuncs.com/compatible-mode/v1`, `https://api-inference.modelscope.cn`.
    /// Empty (or left blank in the YAML): evidence-only mode.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub baseurl: String,
    /// API key (from `AI_API_KEY`).
    #[serde(default)]
    pub apikey: Secret,
    /// Model name.
    #[serde(default = "default_model")]
    pub model: String,
    /// Seconds one AI request may take; a whole diagnosis gets twice this, as in the design.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Prometheus the agent queries through the Prometheus MCP server.
    #[serde(default)]
    pub prometheusurl: String,
    /// GitHub token (from `GITHUB_TOKEN`); when set, the GitHub MCP server is started.
    #[serde(default)]
    pub githubtoken: Secret,
    /// GitHub MCP toolsets.
    #[serde(default = "default_toolsets")]
    pub githubtoolsets: String,
    /// Wire format: `auto` (recognised from `BaseURL`), `anthropic` or `openai`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Most model turns in one diagnosis; the last one forbids tool use (`tool_choice: none`).
    #[serde(default = "default_max_turns")]
    pub maxturns: u32,
    /// Tool calls run per model turn; more in one turn are answered "not run".
    #[serde(default = "default_max_tool_calls_per_turn")]
    pub maxtoolcallsperturn: u32,
    /// Characters of all tool results of one diagnosis; past it, results are withheld and
    /// the model is told to answer with what it has.
    #[serde(default = "default_tool_result_budget")]
    pub toolresultbudgetchars: u32,
    /// Longest tool result, in characters, passed to the model; longer ones are cut.
    #[serde(default = "default_tool_result_max_chars")]
    pub toolresultmaxchars: u32,
    /// The provider whose request rules apply: `auto` (recognised from `BaseURL`),
    /// `anthropic`, `openai`, `dashscope`, `modelscope` or `generic`.
    #[serde(default)]
    pub provider: ProviderSetting,
    /// Most tokens the model may write in one answer.
    #[serde(default = "default_max_tokens")]
    pub maxtokens: u32,
    /// The name the token limit is sent under: `auto` (by provider and model),
    /// `max_tokens` or `max_completion_tokens`.
    #[serde(default)]
    pub maxtokensfield: MaxTokensField,
    /// Merged last into every request body (keys kept as written); a `null` value removes
    /// a key the provider profile would send.
    #[serde(default)]
    pub extrabody: serde_json::Map<String, serde_json::Value>,
}

impl AiConfig {
    /// Evidence-only mode: no AI configured (`AI.BaseURL` empty); reports are written from
    /// the evidence alone.
    pub fn evidence_only(&self) -> bool {
        self.baseurl.trim().is_empty()
    }

    /// The deadline of one diagnosis: twice `AI.Timeout`, as in the design.
    pub fn diagnosis_deadline(&self) -> Duration {
        Duration::from_secs(self.timeout.saturating_mul(2))
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

/// `AI.Provider`: whose request rules apply (see [`crate::provider`]).
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
    /// Any other OpenAI-compatible server.
    Generic,
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
#[serde(rename_all = "lowercase")]
pub struct StoreConfig {
    /// `embedded` (SQLite file, the default) or `mongo`.
    #[serde(default)]
    pub kind: StoreKind,
    /// The embedded store's file.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::default(),
            path: default_store_path(),
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
#[serde(rename_all = "lowercase")]
pub struct RunnerConfig {
    /// `native` (the agent loop in the service), `process` (the Python runner as a child
    /// process) or `docker` (the Python runner exec'd in the managed container).
    #[serde(default)]
    pub kind: RunnerKind,
    /// Python interpreter of the runner's virtualenv.
    #[serde(default = "default_python")]
    pub python: PathBuf,
    /// The runner script.
    #[serde(default = "default_script")]
    pub script: PathBuf,
    /// Command that starts the Prometheus MCP server; empty: the one beside `Python`.
    #[serde(default)]
    pub prometheusmcpcommand: String,
    /// Command that starts the GitHub MCP server (only with `AI.GitHubToken`).
    #[serde(default = "default_github_mcp_command")]
    pub githubmcpcommand: String,
    /// Bytes of runner stdout and stderr kept each; the rest is read and dropped.
    #[serde(default = "default_output_max_bytes")]
    pub outputmaxbytes: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            kind: RunnerKind::default(),
            python: default_python(),
            script: default_script(),
            prometheusmcpcommand: String::new(),
            githubmcpcommand: default_github_mcp_command(),
            outputmaxbytes: default_output_max_bytes(),
        }
    }
}

/// How a diagnosis runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// The Python runner as a child process of the service.
    Process,
    /// The Python runner exec'd in the managed container, as in the design.
    Docker,
    /// The agent loop in the service, with MCP sessions kept open.
    #[default]
    Native,
}

impl RunnerKind {
    /// The name stored on reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerKind::Process => "process",
            RunnerKind::Docker => "docker",
            RunnerKind::Native => "native",
        }
    }
}

/// `MCP.*`: the native runner's MCP servers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct McpConfig {
    /// The servers; empty: the Prometheus MCP server from the runner's virtualenv over
    /// stdio (and the GitHub one when `AI.GitHubToken` is set).
    #[serde(default)]
    pub servers: Vec<McpServerConfig>,
    /// Names of the service's environment variables stdio servers also get (besides
    /// `PATH`, `HOME`, locale, TLS and proxy settings); everything else is cleared.
    #[serde(default)]
    pub passenv: Vec<String>,
}

/// One MCP server: a stdio `Command` (spawned once) or a streamable-HTTP `URL`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct McpServerConfig {
    /// Name for logs.
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
#[serde(rename_all = "lowercase")]
pub struct DockerConfig {
    /// The engine: `unix:///var/run/docker.sock` (or `${DOCKER_HOST}`).
    #[serde(default = "default_docker_host")]
    pub host: String,
    /// The container's name (the design's `diagnosis-service`).
    #[serde(default = "default_container")]
    pub container: String,
    /// The image, built by `docker/build.sh`.
    #[serde(default = "default_image")]
    pub image: String,
    /// `host` (the container shares the host's network, so `localhost` URLs work), `bridge`,
    /// or a named network.
    #[serde(default = "default_network")]
    pub network: String,
    /// Memory limit in bytes.
    #[serde(default = "default_memory")]
    pub memorybytes: i64,
    /// CPU limit (cores).
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Most processes in the container.
    #[serde(default = "default_pids")]
    pub pidslimit: i64,
    /// Size of the writable `/tmp` (tmpfs), in bytes; the rest of the filesystem is read-only.
    #[serde(default = "default_tmpfs")]
    pub tmpfsbytes: i64,
    /// Port of the Prometheus MCP server inside the container (on its loopback; with the
    /// host network, the host's loopback).
    #[serde(default = "default_mcp_port")]
    pub mcpport: u16,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: default_docker_host(),
            container: default_container(),
            image: default_image(),
            network: default_network(),
            memorybytes: default_memory(),
            cpus: default_cpus(),
            pidslimit: default_pids(),
            tmpfsbytes: default_tmpfs(),
            mcpport: default_mcp_port(),
        }
    }
}

/// `Worker.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct WorkerConfig {
    /// Diagnoses run at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds a worker's claim on a report lasts without renewal; a report whose worker
    /// died is picked up again once its lease runs out.
    #[serde(default = "default_lease_seconds")]
    pub leaseseconds: u64,
    /// Seconds between looks for work when nothing has been announced.
    #[serde(default = "default_poll_seconds")]
    pub pollseconds: u64,
    /// Attempts before a report whose worker keeps dying is failed.
    #[serde(default = "default_max_attempts")]
    pub maxattempts: u32,
    /// Seconds in-flight diagnoses may go on after SIGTERM before they are stopped
    /// (and picked up again at the next start).
    #[serde(default = "default_shutdown_grace")]
    pub shutdowngraceseconds: u64,
    /// Reports waiting for a worker beyond which intake answers `503` with `Retry-After`
    /// (0: unlimited).
    #[serde(default = "default_max_queue")]
    pub maxqueue: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            leaseseconds: default_lease_seconds(),
            pollseconds: default_poll_seconds(),
            maxattempts: default_max_attempts(),
            shutdowngraceseconds: default_shutdown_grace(),
            maxqueue: default_max_queue(),
        }
    }
}

/// `Evidence.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct EvidenceConfig {
    /// Whether evidence is gathered at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds the whole gathering may take.
    #[serde(default = "default_evidence_timeout")]
    pub timeoutseconds: u64,
    /// Minutes before the alert's start that make the baseline.
    #[serde(default = "default_baseline_minutes")]
    pub baselineminutes: u64,
    /// The `rate()` window, in seconds (about four scrape intervals).
    #[serde(default = "default_rate_window")]
    pub ratewindowseconds: u64,
    /// Ranked items kept on a report.
    #[serde(default = "default_evidence_items")]
    pub maxitems: usize,
    /// Gatherings at once, apart from the AI diagnoses (so evidence is not held behind
    /// the AI queue).
    #[serde(default = "default_evidence_concurrency")]
    pub concurrency: usize,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            timeoutseconds: default_evidence_timeout(),
            baselineminutes: default_baseline_minutes(),
            ratewindowseconds: default_rate_window(),
            maxitems: default_evidence_items(),
            concurrency: default_evidence_concurrency(),
        }
    }
}

/// `Budget.*`: 0 is unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct BudgetConfig {
    /// AI diagnoses in any hour; past it, diagnoses run from the evidence alone.
    #[serde(default)]
    pub diagnosesperhour: u64,
    /// AI tokens (input and output) in any 24 hours; past it, as above.
    #[serde(default)]
    pub tokensperday: u64,
}

/// `Auth.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct AuthConfig {
    /// Required on writes (`POST`, `PUT`, `DELETE`); `Webhook.BearerToken` is its alias.
    #[serde(default)]
    pub writetoken: Secret,
    /// Required on reads except `/healthz` and `/readyz` (empty: the write token).
    #[serde(default)]
    pub readtoken: Secret,
    /// Whether `/metrics` needs the read token too.
    #[serde(default)]
    pub protectmetrics: bool,
    /// Allows serving a non-loopback `Host` with no token.
    #[serde(default)]
    pub allowanonymous: bool,
}

/// Shortest secret accepted: a shorter one would make redaction mangle every report
/// (a key `k` would turn each "k" into `[REDACTED]`) and is guessable anyway.
pub const MIN_SECRET_LEN: usize = 8;

/// Whether a listen address only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Deployments.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct DeploymentsConfig {
    /// An alert with no `deploymentId` label is attributed to a deployment on its host
    /// when it started at most this many minutes after the deployment's `deployedAt`.
    #[serde(default = "default_watch_minutes")]
    pub watchminutes: u64,
}

impl Default for DeploymentsConfig {
    fn default() -> Self {
        Self {
            watchminutes: default_watch_minutes(),
        }
    }
}

/// `GitHub.*`: change evidence, read by the service with `AI.GitHubToken`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct GitHubConfig {
    /// The REST API: `https://api.github.com`, or `https://HOST/api/v3` for GitHub
    /// Enterprise.
    #[serde(default = "default_github_api")]
    pub apiurl: String,
    /// Repositories that may be read: `owner/name`, `*` globs allowed. Empty: only
    /// repositories that registered deployments name.
    #[serde(default)]
    pub repos: Vec<String>,
    /// Characters of all patch excerpts of one diagnosis.
    #[serde(default = "default_max_patch_chars")]
    pub maxpatchchars: usize,
    /// Characters of one file's patch excerpt.
    #[serde(default = "default_max_file_patch_chars")]
    pub maxfilepatchchars: usize,
    /// Pull requests whose files are read.
    #[serde(default = "default_max_prs")]
    pub maxprs: usize,
    /// Commits of a range whose pull requests are looked up.
    #[serde(default = "default_max_commits")]
    pub maxcommits: usize,
    /// Seconds the whole reading may take (within the diagnosis deadline).
    #[serde(default = "default_github_timeout")]
    pub timeoutseconds: u64,
    /// Tools of the GitHub MCP server offered to the model (read tools only; any other
    /// tool the server has is never offered or called).
    #[serde(default = "default_github_mcp_tools")]
    pub mcptools: Vec<String>,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            apiurl: default_github_api(),
            repos: Vec::new(),
            maxpatchchars: default_max_patch_chars(),
            maxfilepatchchars: default_max_file_patch_chars(),
            maxprs: default_max_prs(),
            maxcommits: default_max_commits(),
            timeoutseconds: default_github_timeout(),
            mcptools: default_github_mcp_tools(),
        }
    }
}

/// The GitHub MCP server's tools that only read one repository (github/github-mcp-server);
/// `search_code` is left out, since it searches every repository the token can see.
pub const GITHUB_READ_TOOLS: &[&str] = &[
    "get_release_by_tag",
    "get_latest_release",
    "list_releases",
    "list_tags",
    "get_tag",
    "pull_request_read",
    "get_pull_request",
    "get_pull_request_files",
    "get_pull_request_diff",
    "list_pull_requests",
    "get_commit",
    "list_commits",
    "get_file_contents",
];

fn default_watch_minutes() -> u64 {
    60
}
fn default_github_api() -> String {
    "https://api.github.com".into()
}
fn default_max_patch_chars() -> usize {
    24_000
}
fn default_max_file_patch_chars() -> usize {
    4_000
}
fn default_max_prs() -> usize {
    20
}
fn default_max_commits() -> usize {
    100
}
fn default_github_timeout() -> u64 {
    60
}
fn default_github_mcp_tools() -> Vec<String> {
    GITHUB_READ_TOOLS.iter().map(|t| (*t).to_owned()).collect()
}

/// `Webhook.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct WebhookConfig {
    /// When set, `POST`/`DELETE` endpoints require `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearertoken: Secret,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body")]
    pub maxbodybytes: usize,
    /// Alerts per request.
    #[serde(default = "default_max_alerts")]
    pub maxalerts: usize,
    /// Labels, and annotations, per alert.
    #[serde(default = "default_max_labels")]
    pub maxlabels: usize,
    /// Bytes of one label or annotation value (or other text field of an alert).
    #[serde(default = "default_max_value_bytes")]
    pub maxvaluebytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            bearertoken: Secret::default(),
            maxbodybytes: default_max_body(),
            maxalerts: default_max_alerts(),
            maxlabels: default_max_labels(),
            maxvaluebytes: default_max_value_bytes(),
        }
    }
}

impl WebhookConfig {
    /// What one webhook body may carry.
    pub fn limits(&self) -> crate::alert::Limits {
        crate::alert::Limits {
            max_alerts: self.maxalerts,
            max_labels: self.maxlabels,
            max_value_bytes: self.maxvaluebytes,
        }
    }
}

fn default_max_alerts() -> usize {
    crate::alert::Limits::default().max_alerts
}
fn default_max_labels() -> usize {
    crate::alert::Limits::default().max_labels
}
fn default_max_value_bytes() -> usize {
    crate::alert::Limits::default().max_value_bytes
}

/// `Log.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct LogConfig {
    /// `plain` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Filter when `RUST_LOG` is unset, e.g. `info` or `deploy_diagnosis=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
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

/// A key left blank in the YAML (`BaseURL:`) is an empty string, not a type error.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn default_name() -> String {
    "deploy-diagnosis".into()
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8888
}
fn default_mongo_url() -> String {
    "mongodb://localhost:27017".into()
}
fn default_mongo_database() -> String {
    "hackathon".into()
}
fn default_model() -> String {
    "gpt-4".into()
}
fn default_timeout() -> u64 {
    60
}
fn default_toolsets() -> String {
    "repos,issues,pull_requests,releases".into()
}
fn default_max_turns() -> u32 {
    10
}
fn default_max_queue() -> u64 {
    10_000
}
fn default_max_tool_calls_per_turn() -> u32 {
    8
}
fn default_tool_result_budget() -> u32 {
    120_000
}
fn default_tool_result_max_chars() -> u32 {
    8000
}
fn default_max_tokens() -> u32 {
    4096
}
fn default_true() -> bool {
    true
}
fn default_evidence_timeout() -> u64 {
    10
}
fn default_baseline_minutes() -> u64 {
    30
}
fn default_rate_window() -> u64 {
    60
}
fn default_evidence_items() -> usize {
    12
}
fn default_evidence_concurrency() -> usize {
    8
}
fn default_store_path() -> PathBuf {
    PathBuf::from("data/deploy-diagnosis.sqlite3")
}
fn default_python() -> PathBuf {
    PathBuf::from(".venv/bin/python")
}
fn default_script() -> PathBuf {
    PathBuf::from("docker/runner/diagnosis_runner.py")
}
fn default_github_mcp_command() -> String {
    "github-mcp-server stdio".into()
}
fn default_output_max_bytes() -> usize {
    1024 * 1024
}
fn default_docker_host() -> String {
    "unix:///var/run/docker.sock".into()
}
fn default_container() -> String {
    "diagnosis-service".into()
}
fn default_image() -> String {
    "diagnosis-service:latest".into()
}
fn default_network() -> String {
    "host".into()
}
fn default_memory() -> i64 {
    1024 * 1024 * 1024
}
fn default_cpus() -> f64 {
    1.0
}
fn default_pids() -> i64 {
    256
}
fn default_tmpfs() -> i64 {
    64 * 1024 * 1024
}
fn default_mcp_port() -> u16 {
    8765
}
fn default_concurrency() -> usize {
    4
}
fn default_lease_seconds() -> u64 {
    30
}
fn default_poll_seconds() -> u64 {
    5
}
fn default_max_attempts() -> u32 {
    3
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_log_level() -> String {
    // rmcp logs every session start at info; its warnings are what an operator needs.
    "info,rmcp=warn".into()
}

/// Where `${VAR}` and `DD_*` values come from: the process environment over a `.env` file.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    /// The process environment, over the `.env` file in `dir` if there is one.
    pub fn from_process(dir: &Path) -> Result<Self, ConfigError> {
        let mut vars = HashMap::new();
        let dotenv = dir.join(".env");
        if dotenv.exists() {
            let entries = dotenvy::from_path_iter(&dotenv)
                .map_err(|e| ConfigError::Parse(format!("file {}: {e}", dotenv.display())))?;
            for entry in entries {
                let (k, v) = entry
                    .map_err(|e| ConfigError::Parse(format!("file {}: {e}", dotenv.display())))?;
                vars.insert(k, v);
            }
        }
        vars.extend(std::env::vars());
        Ok(Self { vars })
    }

    /// Exactly these variables (for tests and tools).
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

impl Config {
    /// Loads, expands, overrides and validates the configuration file.
    pub fn load(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, env)
    }

    /// Parses configuration text (YAML), then applies `${VAR}` and `DD_*` from `env`.
    pub fn from_yaml(text: &str, env: &Environment) -> Result<Self, ConfigError> {
        let parse = |e: config::ConfigError| ConfigError::Parse(e.to_string());
        let file: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml))
            .build()
            .map_err(parse)?
            .try_deserialize()
            .map_err(parse)?;
        let expanded = expand(lowercase_keys(file), env);

        let overrides: config::Map<String, String> = env
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with("DD_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config: Config = config::Config::builder()
            .add_source(config::File::from_str(
                &expanded.to_string(),
                config::FileFormat::Json,
            ))
            .add_source(
                config::Environment::with_prefix("DD")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .map_err(parse)?
            .try_deserialize()
            .map_err(parse)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value once; the first problem found is reported with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        if self.host.trim().is_empty() {
            return Err(invalid("Host", "is empty"));
        }
        for (key, secret) in self.named_secrets() {
            if !secret.is_empty() && secret.expose().chars().count() < MIN_SECRET_LEN {
                return Err(invalid(
                    key,
                    format!("is shorter than {MIN_SECRET_LEN} characters"),
                ));
            }
        }
        let (write, alias) = (&self.auth.writetoken, &self.webhook.bearertoken);
        if !write.is_empty() && !alias.is_empty() && write.expose() != alias.expose() {
            return Err(invalid(
                "Auth.WriteToken",
                "differs from Webhook.BearerToken, its older name: set one of them",
            ));
        }
        if self.ai.evidence_only() {
            if !self.evidence.enabled {
                return Err(invalid(
                    "AI.BaseURL",
                    "is empty (evidence-only mode) while Evidence.Enabled is false: \
                     nothing could write a report; set AI_BASE_URL or enable the evidence stage",
                ));
            }
        } else {
            check_http_url("AI.BaseURL", &self.ai.baseurl, "AI_BASE_URL")?;
            if self.ai.apikey.is_empty() {
                return Err(invalid(
                    "AI.APIKey",
                    "is empty: set AI_API_KEY (or DD_AI__APIKEY)",
                ));
            }
            if self.ai.model.trim().is_empty() {
                return Err(invalid("AI.Model", "is empty"));
            }
        }
        if self.ai.timeout == 0 {
            return Err(invalid("AI.Timeout", "must be at least 1 (seconds)"));
        }
        check_http_url(
            "AI.PrometheusURL",
            &self.ai.prometheusurl,
            "DD_AI__PROMETHEUSURL",
        )?;
        if self.ai.maxturns == 0 {
            return Err(invalid("AI.MaxTurns", "must be at least 1"));
        }
        if self.ai.toolresultmaxchars < 256 {
            return Err(invalid("AI.ToolResultMaxChars", "must be at least 256"));
        }
        if self.ai.maxtoolcallsperturn == 0 {
            return Err(invalid("AI.MaxToolCallsPerTurn", "must be at least 1"));
        }
        if self.ai.toolresultbudgetchars < self.ai.toolresultmaxchars {
            return Err(invalid(
                "AI.ToolResultBudgetChars",
                "must be at least AI.ToolResultMaxChars",
            ));
        }
        if self.ai.maxtokens < 16 {
            return Err(invalid("AI.MaxTokens", "must be at least 16"));
        }
        if let Some(key) = self
            .ai
            .extrabody
            .keys()
            .find(|k| RESERVED_BODY_KEYS.contains(&k.as_str()))
        {
            return Err(invalid(
                "AI.ExtraBody",
                format!(
                    "{key:?} is set by the service (model and tokens: AI.Model, AI.MaxTokens, \
                     AI.MaxTokensField; the conversation, tools and non-streaming calls are the agent's)"
                ),
            ));
        }
        if self.store.kind == StoreKind::Mongo {
            if !(self.mongo.url.starts_with("mongodb://")
                || self.mongo.url.starts_with("mongodb+srv://"))
            {
                return Err(invalid(
                    "Mongo.URL",
                    "must start with mongodb:// or mongodb+srv://",
                ));
            }
            if self.mongo.database.trim().is_empty() {
                return Err(invalid("Mongo.Database", "is empty"));
            }
        } else if self.store.path.as_os_str().is_empty() {
            return Err(invalid("Store.Path", "is empty"));
        }
        if self.runner.outputmaxbytes < 4096 {
            return Err(invalid("Runner.OutputMaxBytes", "must be at least 4096"));
        }
        if self.runner.kind == RunnerKind::Docker {
            let d = &self.docker;
            if !(d.host.starts_with("unix://") || d.host.starts_with('/')) {
                return Err(invalid(
                    "Docker.Host",
                    "must be a unix socket (unix:///var/run/docker.sock)",
                ));
            }
            if d.container.trim().is_empty() {
                return Err(invalid("Docker.Container", "is empty"));
            }
            if d.image.trim().is_empty() {
                return Err(invalid("Docker.Image", "is empty"));
            }
            if d.network.trim().is_empty() {
                return Err(invalid(
                    "Docker.Network",
                    "is empty (use host, bridge or a network name)",
                ));
            }
            if d.memorybytes < 64 * 1024 * 1024 {
                return Err(invalid(
                    "Docker.MemoryBytes",
                    "must be at least 67108864 (64 MiB)",
                ));
            }
            if !(d.cpus > 0.0 && d.cpus <= 1024.0) {
                return Err(invalid("Docker.CPUs", "must be above 0"));
            }
            if d.pidslimit < 16 {
                return Err(invalid("Docker.PidsLimit", "must be at least 16"));
            }
            if d.tmpfsbytes < 1024 * 1024 {
                return Err(invalid("Docker.TmpfsBytes", "must be at least 1048576"));
            }
            if d.mcpport == 0 {
                return Err(invalid("Docker.MCPPort", "must not be 0"));
            }
        }
        for server in &self.mcp.servers {
            if server.name.trim().is_empty() {
                return Err(invalid("MCP.Servers[].Name", "is empty"));
            }
            if server.command.is_empty() == server.url.is_empty() {
                return Err(invalid(
                    "MCP.Servers[].Command",
                    format!(
                        "server {:?} needs exactly one of Command and URL",
                        server.name
                    ),
                ));
            }
            if let Some(bad) = server.env.iter().find(|e| !e.contains('=')) {
                return Err(invalid(
                    "MCP.Servers[].Env",
                    format!("{bad:?} is not KEY=value"),
                ));
            }
        }
        let e = &self.evidence;
        if e.timeoutseconds == 0 {
            return Err(invalid("Evidence.TimeoutSeconds", "must be at least 1"));
        }
        if e.baselineminutes == 0 {
            return Err(invalid("Evidence.BaselineMinutes", "must be at least 1"));
        }
        if e.ratewindowseconds < 2 {
            return Err(invalid("Evidence.RateWindowSeconds", "must be at least 2"));
        }
        if e.maxitems == 0 {
            return Err(invalid("Evidence.MaxItems", "must be at least 1"));
        }
        if e.concurrency == 0 {
            return Err(invalid("Evidence.Concurrency", "must be at least 1"));
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("Worker.Concurrency", "must be at least 1"));
        }
        if self.worker.leaseseconds < 2 {
            return Err(invalid("Worker.LeaseSeconds", "must be at least 2"));
        }
        if self.worker.pollseconds == 0 {
            return Err(invalid("Worker.PollSeconds", "must be at least 1"));
        }
        if self.worker.maxattempts == 0 {
            return Err(invalid("Worker.MaxAttempts", "must be at least 1"));
        }
        if self.deployments.watchminutes == 0 {
            return Err(invalid("Deployments.WatchMinutes", "must be at least 1"));
        }
        let g = &self.github;
        check_http_url("GitHub.APIURL", &g.apiurl, "DD_GITHUB__APIURL")?;
        if let Some(bad) = g
            .repos
            .iter()
            .find(|r| r.split('/').count() != 2 || r.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "GitHub.Repos",
                format!("{bad:?} is not owner/name (a * matches any characters)"),
            ));
        }
        if g.maxfilepatchchars < 200 || g.maxpatchchars < g.maxfilepatchchars {
            return Err(invalid(
                "GitHub.MaxPatchChars",
                "must be at least GitHub.MaxFilePatchChars, which must be at least 200",
            ));
        }
        if g.maxprs == 0 || g.maxcommits == 0 || g.timeoutseconds == 0 {
            return Err(invalid(
                "GitHub.MaxPRs",
                "GitHub.MaxPRs, GitHub.MaxCommits and GitHub.TimeoutSeconds must be at least 1",
            ));
        }
        if let Some(bad) = g
            .mcptools
            .iter()
            .find(|t| !GITHUB_READ_TOOLS.contains(&t.as_str()))
        {
            return Err(invalid(
                "GitHub.MCPTools",
                format!(
                    "{bad:?} is not one of the GitHub MCP server's read tools ({})",
                    GITHUB_READ_TOOLS.join(", ")
                ),
            ));
        }
        if self.webhook.maxbodybytes < 1024 {
            return Err(invalid("Webhook.MaxBodyBytes", "must be at least 1024"));
        }
        if self.webhook.maxalerts == 0 || self.webhook.maxlabels == 0 {
            return Err(invalid(
                "Webhook.MaxAlerts",
                "Webhook.MaxAlerts and Webhook.MaxLabels must be at least 1",
            ));
        }
        if self.webhook.maxvaluebytes < 64 {
            return Err(invalid("Webhook.MaxValueBytes", "must be at least 64"));
        }
        if self.tokens().write.is_empty()
            && self.auth.readtoken.is_empty()
            && !is_loopback(&self.host)
            && !self.auth.allowanonymous
        {
            return Err(invalid(
                "Auth.WriteToken",
                format!(
                    "is empty while Host {:?} accepts connections from other machines: set \
                     Auth.WriteToken and Auth.ReadToken, bind Host to 127.0.0.1, or set \
                     Auth.AllowAnonymous: true",
                    self.host
                ),
            ));
        }
        Ok(())
    }

    /// Every secret in the configuration, for scrubbing text that leaves the service.
    pub fn secrets(&self) -> Vec<String> {
        self.named_secrets()
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(_, s)| s.expose().to_owned())
            .collect()
    }

    fn named_secrets(&self) -> [(&'static str, &Secret); 5] {
        [
            ("AI.APIKey", &self.ai.apikey),
            ("AI.GitHubToken", &self.ai.githubtoken),
            ("Auth.WriteToken", &self.auth.writetoken),
            ("Auth.ReadToken", &self.auth.readtoken),
            ("Webhook.BearerToken", &self.webhook.bearertoken),
        ]
    }

    /// The tokens the API checks: `Auth.WriteToken` (or `Webhook.BearerToken`) and
    /// `Auth.ReadToken`.
    pub fn tokens(&self) -> crate::auth::Tokens {
        crate::auth::Tokens {
            write: if self.auth.writetoken.is_empty() {
                self.webhook.bearertoken.clone()
            } else {
                self.auth.writetoken.clone()
            },
            read: self.auth.readtoken.clone(),
        }
    }
}

/// Request-body keys `AI.ExtraBody` may not set: the agent loop depends on them.
const RESERVED_BODY_KEYS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "stream",
    "max_tokens",
    "max_completion_tokens",
];

fn check_http_url(key: &'static str, value: &str, hint: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::Invalid {
            key,
            message: format!("is empty: set {hint}"),
        });
    }
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| ConfigError::Invalid {
            key,
            message: format!("{value:?} is not an http:// or https:// URL"),
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ConfigError::Invalid {
            key,
            message: format!("{value:?} has no host"),
        });
    }
    Ok(())
}

/// Sections whose keys are data, not configuration keys: kept as written.
const VERBATIM: &[&[&str]] = &[&["ai", "extrabody"]];

fn lowercase_keys(value: serde_json::Value) -> serde_json::Value {
    lowercase_below(value, &mut Vec::new())
}

fn lowercase_below(value: serde_json::Value, path: &mut Vec<String>) -> serde_json::Value {
    if VERBATIM.iter().any(|v| v.iter().eq(path.iter())) {
        return value;
    }
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let k = k.to_lowercase();
                    path.push(k.clone());
                    let v = lowercase_below(v, path);
                    path.pop();
                    (k, v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(|v| lowercase_below(v, path))
                .collect(),
        ),
        other => other,
    }
}

/// `${VAR}` in string values, after parsing, so a value cannot change the YAML's structure.
/// An unset variable expands to nothing, as go-zero's loader does; validation then names
/// the key that ended up empty.
fn expand(value: serde_json::Value, env: &Environment) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => serde_json::Value::String(expand_str(&s, env)),
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().map(|(k, v)| (k, expand(v, env))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(|v| expand(v, env)).collect())
        }
        other => other,
    }
}

fn expand_str(s: &str, env: &Environment) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push_str(env.get(&after[..end]).unwrap_or(""));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
Name: deploy-diagnosis
Host: 0.0.0.0
Port: 8888
Auth:
  WriteToken: write-token-123
Mongo:
  URL: mongodb://localhost:27017
  Database: hackathon
AI:
  BaseURL: ${AI_BASE_URL}
  APIKey: ${AI_API_KEY}
  Model: claude-3-5-sonnet-20241022
  Timeout: 60
  PrometheusURL: http://localhost:9090
  GitHubToken: ${GITHUB_TOKEN}
  GitHubToolsets: repos,issues,pull_requests,releases
";

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn design_keys_load_and_variables_expand() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.anthropic.com/v1"),
            ("AI_API_KEY", "sk-ant-x: #1"),
        ]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert_eq!(c.ai.baseurl, "https://api.anthropic.com/v1");
        assert_eq!(c.ai.apikey.expose(), "sk-ant-x: #1");
        assert!(c.ai.githubtoken.is_empty());
        assert_eq!(c.ai.diagnosis_deadline(), Duration::from_secs(120));
        assert_eq!(c.mongo.database, "hackathon");
        assert_eq!(c.store.kind, StoreKind::Embedded);
    }

    #[test]
    fn dd_variables_override_any_key_case_insensitively() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "sk-test-key"),
            ("DD_PORT", "9000"),
            ("DD_AI__BASEURL", "http://127.0.0.1:1/v1"),
            ("DD_STORE__KIND", "mongo"),
            ("DD_WORKER__CONCURRENCY", "7"),
        ]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.ai.baseurl, "http://127.0.0.1:1/v1");
        assert_eq!(c.store.kind, StoreKind::Mongo);
        assert_eq!(c.worker.concurrency, 7);
    }

    #[test]
    fn missing_api_key_names_the_key_and_the_variable() {
        let e = env(&[("AI_BASE_URL", "https://api.openai.com/v1")]);
        let err = Config::from_yaml(YAML, &e).unwrap_err().to_string();
        assert!(
            err.contains("AI.APIKey") && err.contains("AI_API_KEY"),
            "{err}"
        );
    }

    #[test]
    fn wrong_values_name_their_key() {
        let base = [
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "sk-test-key"),
        ];
        let cases = [
            ("DD_AI__PROMETHEUSURL", "localhost:9090", "AI.PrometheusURL"),
            ("DD_WORKER__CONCURRENCY", "0", "Worker.Concurrency"),
            ("DD_AI__TIMEOUT", "0", "AI.Timeout"),
            ("DD_STORE__KIND", "postgres", "kind"),
            ("DD_RUNNER__KIND", "k8s", "kind"),
            ("DD_PORT", "http", "port"),
            ("DD_AI__MAXTOKENS", "0", "AI.MaxTokens"),
            ("DD_AI__MAXTOKENSFIELD", "tokens", "maxtokensfield"),
            ("DD_AI__PROVIDER", "azure", "provider"),
        ];
        for (var, value, key) in cases {
            let mut pairs = base.to_vec();
            pairs.push((var, value));
            let err = Config::from_yaml(YAML, &env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn exposed_hosts_need_a_token_and_secrets_need_eight_characters() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "sk-test-key"),
        ]);
        let open = YAML.replace("Auth:\n  WriteToken: write-token-123\n", "");
        let err = Config::from_yaml(&open, &e).unwrap_err().to_string();
        assert!(
            err.contains("Auth.WriteToken")
                && err.contains("0.0.0.0")
                && err.contains("AllowAnonymous"),
            "{err}"
        );
        let local = open.replace("Host: 0.0.0.0", "Host: 127.0.0.1");
        Config::from_yaml(&local, &e).expect("loopback needs no token");
        let anonymous = open.replace("Mongo:\n", "Auth:\n  AllowAnonymous: true\nMongo:\n");
        Config::from_yaml(&anonymous, &e).expect("explicitly anonymous");
        let alias = open.replace(
            "Mongo:\n",
            "Webhook:\n  BearerToken: hook-token-1\nMongo:\n",
        );
        let c = Config::from_yaml(&alias, &e).expect("the old name still works");
        assert_eq!(c.tokens().write.expose(), "hook-token-1");

        let short = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "k"),
        ]);
        let err = Config::from_yaml(YAML, &short).unwrap_err().to_string();
        assert!(
            err.contains("AI.APIKey") && err.contains("8 characters"),
            "{err}"
        );
        let err = Config::from_yaml(&YAML.replace("write-token-123", "short"), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Auth.WriteToken"), "{err}");
    }

    #[test]
    fn extra_body_keeps_its_keys_as_written_and_may_not_replace_the_agents_own() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "sk-test-key"),
        ]);
        let yaml = format!("{YAML}  ExtraBody:\n    top_K: 20\n    Reasoning_Effort: low\n");
        let c = Config::from_yaml(&yaml, &e).unwrap();
        assert_eq!(
            serde_json::Value::Object(c.ai.extrabody),
            serde_json::json!({"top_K": 20, "Reasoning_Effort": "low"})
        );
        let yaml = format!("{YAML}  ExtraBody:\n    stream: true\n");
        let err = Config::from_yaml(&yaml, &e).unwrap_err().to_string();
        assert!(
            err.contains("AI.ExtraBody") && err.contains("stream"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_configuration_file_loads_with_its_documented_variables() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.anthropic.com/v1"),
            ("AI_API_KEY", "sk-test-key"),
            ("AI_MODEL", "claude-sonnet-4-5"),
            ("PROMETHEUS_URL", "http://localhost:9090"),
        ]);
        let c = Config::from_yaml(include_str!("../etc/deploy-diagnosis.yaml"), &e).unwrap();
        assert_eq!(
            (c.ai.maxtokens, c.ai.provider, c.ai.extrabody.len()),
            (4096, ProviderSetting::Auto, 0)
        );
    }

    #[test]
    fn an_empty_base_url_is_evidence_only_mode_unless_the_evidence_is_off() {
        let e = env(&[("AI_BASE_URL", ""), ("AI_API_KEY", "")]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert!(c.ai.evidence_only());
        let blank = "AI:\n  BaseURL:\n  PrometheusURL: http://localhost:9090\n";
        assert!(Config::from_yaml(blank, &Environment::default())
            .unwrap()
            .ai
            .evidence_only());
        let e = env(&[("DD_EVIDENCE__ENABLED", "false")]);
        let err = Config::from_yaml(YAML, &e).unwrap_err().to_string();
        assert!(
            err.contains("AI.BaseURL") && err.contains("Evidence.Enabled"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "sk-very-secret"),
        ]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }
}
