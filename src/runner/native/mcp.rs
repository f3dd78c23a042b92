//! MCP servers for the native runner, through the official Rust SDK (`rmcp`): each server
//! is a stdio command (spawned once) or a streamable-HTTP URL. Sessions are opened once and
//! shared by every diagnosis; a dead session is reconnected and the call retried once; tool
//! names are routed to the server that offers them.
//!
//! Opening a session (spawn, handshake, tool list) runs as a task of its own under
//! `MCP.ConnectTimeoutSeconds` and holds no lock: callers that need the same server share
//! one attempt, a server that failed is not tried again for [`RETRY_AFTER`] (its calls fail
//! at once meanwhile), a diagnosis waits for required servers only, and a hung server
//! delays only what needs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{join_all, BoxFuture, Shared};
use futures_util::FutureExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

use super::llm::ToolSpec;
use crate::config::Config;
use crate::model::deployment::RepoName;

type Session = RunningService<RoleClient, ()>;

/// How to reach one MCP server.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// A child process speaking MCP on stdio. `env` values may be secrets: they never go
    /// in argv or logs.
    Stdio {
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// Extra environment.
        env: Vec<(String, String)>,
    },
    /// A running server's streamable-HTTP endpoint.
    Http {
        /// E.g. `http://127.0.0.1:8765/mcp`.
        url: String,
    },
}

/// One configured MCP server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// Name for logs.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// An optional server that cannot start is skipped (GitHub); a required one fails the
    /// diagnosis.
    pub optional: bool,
    /// Only these of its tools are offered to the model and called (`None`: all).
    pub tools: Option<Vec<String>>,
    /// Its tools read one repository (`owner`/`repo` arguments): a call is refused unless
    /// that repository is one the run admits.
    pub repo_scoped: bool,
}

/// Whether a server is the GitHub MCP server (named `github` in `MCP.Servers`, or the one
/// `Runner.GitHubMCPCommand` starts).
fn is_github(name: &str) -> bool {
    name.eq_ignore_ascii_case("github")
}

/// The servers the configuration names: `MCP.Servers`, or by default the Prometheus MCP
/// server from the runner's virtualenv (plus the GitHub one when a token is set).
pub fn servers_for(config: &Config) -> Vec<ServerSpec> {
    let read_tools = Some(config.github.mcp_tools.clone());
    let mut servers: Vec<ServerSpec> = config
        .mcp
        .servers
        .iter()
        .map(|s| {
            let github = is_github(&s.name);
            let mut env = with_inherited(config, split_env(&s.env));
            if github {
                env.push(("GITHUB_READ_ONLY".into(), "1".into()));
            }
            ServerSpec {
                name: s.name.clone(),
                transport: if s.url.is_empty() {
                    Transport::Stdio {
                        command: s.command.clone(),
                        args: s.args.clone(),
                        env,
                    }
                } else {
                    Transport::Http { url: s.url.clone() }
                },
                optional: s.optional,
                tools: if github { read_tools.clone() } else { None },
                repo_scoped: github,
            }
        })
        .collect();
    if servers.is_empty() {
        let mut words = config
            .runner
            .prometheus_mcp_command
            .split_whitespace()
            .map(str::to_owned);
        let command = words.next().unwrap_or_else(|| {
            let venv_bin = config
                .runner
                .python
                .parent()
                .map(|d| d.join("prometheus-mcp-server"));
            venv_bin
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "prometheus-mcp-server".into())
        });
        servers.push(ServerSpec {
            name: "prometheus".into(),
            transport: Transport::Stdio {
                command,
                args: words.collect(),
                env: with_inherited(
                    config,
                    vec![
                        (
                            "PROMETHEUS_URL".into(),
                            config.ai.prometheus_url.to_string(),
                        ),
                        ("PROMETHEUS_MCP_SERVER_TRANSPORT".into(), "stdio".into()),
                    ],
                ),
            },
            optional: false,
            tools: None,
            repo_scoped: false,
        });
    }
    if !config.ai.github_token.is_empty() && !servers.iter().any(|s| s.name == "github") {
        let mut words = config
            .runner
            .github_mcp_command
            .split_whitespace()
            .map(str::to_owned);
        servers.push(ServerSpec {
            name: "github".into(),
            transport: Transport::Stdio {
                command: words.next().unwrap_or_default(),
                args: words.collect(),
                env: with_inherited(
                    config,
                    vec![
                        (
                            "GITHUB_PERSONAL_ACCESS_TOKEN".into(),
                            config.ai.github_token.expose().to_owned(),
                        ),
                        ("GITHUB_TOOLSETS".into(), config.ai.github_toolsets.clone()),
                        // The server's own read-only mode, and below our own allowlist of
                        // read tools: the model reads alert text and PR bodies, so it must
                        // never be handed a tool that writes.
                        ("GITHUB_READ_ONLY".into(), "1".into()),
                    ],
                ),
            },
            optional: true,
            tools: read_tools,
            repo_scoped: true,
        });
    }
    servers
}

/// What every stdio server inherits from the service: the pass-through list and
/// `MCP.PassEnv`, when set.
fn inherited(config: &Config) -> Vec<(String, String)> {
    crate::runner::PASSTHROUGH_ENV
        .iter()
        .map(|k| k.to_string())
        .chain(config.mcp.pass_env.iter().cloned())
        .filter_map(|k| std::env::var(&k).ok().map(|v| (k, v)))
        .collect()
}

/// A stdio server's environment: what it inherits, then its own entries.
fn with_inherited(config: &Config, own: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut env = inherited(config);
    env.extend(own);
    env
}

/// A stdio server's diagnostics go to the service's log (debug level), not its stderr.
async fn forward_stderr(server: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(server = %server, "{line}");
    }
}

fn split_env(entries: &[String]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Why a server or call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("MCP server {server}: {message}")]
pub struct McpError {
    /// The server.
    pub server: String,
    /// What happened.
    pub message: String,
}

/// A server's session, or where opening one stands.
enum Slot {
    /// Never opened, or forgotten after it died.
    Empty,
    /// Being opened since then; every caller awaits this one attempt.
    Connecting(Connecting, Instant),
    /// Open.
    Open(Arc<Session>),
    /// The last attempt failed at this time.
    Failed(Instant, McpError),
}

type Opened = Result<(Arc<Session>, Vec<ToolSpec>), McpError>;
type Connecting = Shared<BoxFuture<'static, Opened>>;

/// Where a server's session stands for one caller.
enum Ready {
    Open(Arc<Session>),
    Failed(McpError),
    Pending(Connecting, Instant),
}

/// How long a diagnosis waits for an optional server's attempt, counted from its start:
/// long enough for a slow start, short enough that a hung optional server costs the first
/// diagnoses little and the later ones nothing (they find it failed and skip it).
pub const OPTIONAL_WAIT: Duration = Duration::from_secs(10);

/// A server whose session could not be opened is not tried again before this: each
/// diagnosis would otherwise wait out `MCP.ConnectTimeoutSeconds` for it.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

struct Server {
    spec: Arc<ServerSpec>,
    slot: std::sync::Mutex<Slot>,
    connect_timeout: Duration,
}

impl Server {
    /// Opens a session: spawn or connect, handshake, tool list, under `timeout`.
    async fn connect(spec: Arc<ServerSpec>, timeout: Duration) -> Opened {
        let fail = |message: String| McpError {
            server: spec.name.clone(),
            message,
        };
        let open = async {
            let session = match &spec.transport {
                Transport::Stdio { command, args, env } => {
                    // Only the environment `servers_for` gave it: the service's AI key and
                    // settings never reach an MCP server. Dropped (a timeout), it is killed.
                    let mut cmd = tokio::process::Command::new(command);
                    cmd.args(args)
                        .env_clear()
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .kill_on_drop(true);
                    let (transport, stderr) = TokioChildProcess::builder(cmd)
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .map_err(|e| fail(format!("could not start {command}: {e}")))?;
                    if let Some(stderr) = stderr {
                        tokio::spawn(forward_stderr(spec.name.clone(), stderr));
                    }
                    ().serve(transport)
                        .await
                        .map_err(|e| fail(format!("handshake with {command} failed: {e}")))?
                }
                Transport::Http { url } => {
                    // The SDK builds its own client (same-origin redirects only).
                    crate::tls::install();
                    let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                    ().serve(transport)
                        .await
                        .map_err(|e| fail(format!("could not connect to {url}: {e}")))?
                }
            };
            let tools = session
                .list_all_tools()
                .await
                .map_err(|e| fail(format!("listing tools: {e}")))?;
            Ok((session, tools))
        };
        let (session, tools) = tokio::time::timeout(timeout, open).await.map_err(|_| {
            fail(format!(
                "no session within {}s (MCP.ConnectTimeoutSeconds): the server did not \
                     start, answer the handshake or list its tools",
                timeout.as_secs()
            ))
        })??;
        let offered = tools.len();
        let specs: Vec<ToolSpec> = tools
            .into_iter()
            .filter(|t| {
                spec.tools
                    .as_ref()
                    .is_none_or(|allowed| allowed.iter().any(|a| *a == t.name))
            })
            .map(|t| ToolSpec {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect();
        tracing::info!(
            server = %spec.name,
            tools = specs.len(),
            withheld = offered - specs.len(),
            "MCP session opened"
        );
        Ok((Arc::new(session), specs))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the session stands, starting an attempt when there is none (never waits).
    /// The attempt runs as a task of its own: it goes on when a caller stops waiting.
    fn ready(&self) -> Ready {
        let mut slot = self.slot();
        match &*slot {
            Slot::Open(session) if !session.is_closed() => Ready::Open(Arc::clone(session)),
            Slot::Failed(at, error) if at.elapsed() < RETRY_AFTER => Ready::Failed(error.clone()),
            Slot::Connecting(attempt, since) => Ready::Pending(attempt.clone(), *since),
            _ => {
                let (spec, timeout) = (Arc::clone(&self.spec), self.connect_timeout);
                let name = spec.name.clone();
                let task = tokio::spawn(Self::connect(spec, timeout));
                let attempt = async move {
                    task.await.unwrap_or_else(|e| {
                        Err(McpError {
                            server: name,
                            message: format!("the connecting task failed: {e}"),
                        })
                    })
                }
                .boxed()
                .shared();
                let since = Instant::now();
                *slot = Slot::Connecting(attempt.clone(), since);
                Ready::Pending(attempt, since)
            }
        }
    }

    /// Waits for `attempt` and records how it ended (unless a newer one replaced it).
    async fn settle(
        &self,
        attempt: Connecting,
    ) -> Result<(Arc<Session>, Option<Vec<ToolSpec>>), McpError> {
        let opened = attempt.clone().await;
        let mut slot = self.slot();
        if matches!(&*slot, Slot::Connecting(current, _) if current.ptr_eq(&attempt)) {
            *slot = match &opened {
                Ok((session, _)) => Slot::Open(Arc::clone(session)),
                Err(e) => Slot::Failed(Instant::now(), e.clone()),
            };
        }
        opened.map(|(session, tools)| (session, Some(tools)))
    }

    /// The open session (with its tools when it was just opened), opening it if there is
    /// none or the old one died; waits at most `MCP.ConnectTimeoutSeconds`. No lock is
    /// held meanwhile.
    async fn session(&self) -> Result<(Arc<Session>, Option<Vec<ToolSpec>>), McpError> {
        match self.ready() {
            Ready::Open(session) => Ok((session, None)),
            Ready::Failed(e) => Err(e),
            Ready::Pending(attempt, _) => self.settle(attempt).await,
        }
    }

    /// Forgets `dead` (if it is still the current session) so the next use reconnects.
    fn forget(&self, dead: &Arc<Session>) {
        let mut slot = self.slot();
        if matches!(&*slot, Slot::Open(s) if Arc::ptr_eq(s, dead)) {
            *slot = Slot::Empty;
        }
    }
}

/// All configured servers and the route from tool name to server.
pub struct ToolSet {
    servers: Vec<Server>,
    routes: Mutex<HashMap<String, usize>>,
    specs: Mutex<Vec<ToolSpec>>,
}

/// A tool call's outcome for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// Text for the model.
    pub text: String,
    /// Whether it is an error.
    pub is_error: bool,
}

impl ToolSet {
    /// The servers, not yet connected; opening one may take `connect_timeout`.
    pub fn new(specs: Vec<ServerSpec>, connect_timeout: Duration) -> Self {
        let servers = specs
            .into_iter()
            .map(|spec| Server {
                spec: Arc::new(spec),
                slot: std::sync::Mutex::new(Slot::Empty),
                connect_timeout,
            })
            .collect();
        Self {
            servers,
            routes: Mutex::new(HashMap::new()),
            specs: Mutex::new(Vec::new()),
        }
    }

    /// Opens every session not open yet, and returns the union of their tools (the first
    /// server to offer a name keeps it). A required server that cannot be reached is an
    /// error; an optional one is skipped with a warning.
    pub async fn tools(&self) -> Result<Vec<ToolSpec>, McpError> {
        let states: Vec<Ready> = self.servers.iter().map(Server::ready).collect();
        // Required servers are waited for (at most MCP.ConnectTimeoutSeconds), all at
        // once; an optional one at most OPTIONAL_WAIT from its attempt's start: a hung
        // optional server holds a diagnosis back that long at most, and its attempt goes
        // on (to its timeout) for the next one.
        let required = join_all(
            self.servers
                .iter()
                .zip(states.iter())
                .filter(|(server, _)| !server.spec.optional)
                .map(|(server, state)| Self::resolve(server, state)),
        )
        .await;
        let mut required = required.into_iter();
        for (index, (server, state)) in self.servers.iter().zip(states).enumerate() {
            let opened = if !server.spec.optional {
                required.next().expect("one result a required server")
            } else {
                let wait = match &state {
                    Ready::Pending(_, since) => OPTIONAL_WAIT.saturating_sub(since.elapsed()),
                    _ => Duration::ZERO,
                };
                match tokio::time::timeout(wait, Self::resolve(server, &state)).await {
                    Ok(opened) => opened,
                    Err(_) => {
                        tracing::info!(server = %server.spec.name, "optional MCP server still connecting; skipped this time");
                        continue;
                    }
                }
            };
            match opened {
                Ok((_, Some(tools))) => self.learn(index, tools).await,
                Ok((_, None)) => {}
                Err(e) if server.spec.optional => {
                    tracing::warn!(error = %e, "optional MCP server unavailable; skipped")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.specs.lock().await.clone())
    }

    async fn resolve(
        server: &Server,
        state: &Ready,
    ) -> Result<(Arc<Session>, Option<Vec<ToolSpec>>), McpError> {
        match state {
            Ready::Open(session) => Ok((Arc::clone(session), None)),
            Ready::Failed(e) => Err(e.clone()),
            Ready::Pending(attempt, _) => server.settle(attempt.clone()).await,
        }
    }

    async fn learn(&self, index: usize, tools: Vec<ToolSpec>) {
        let (mut routes, mut specs) = (self.routes.lock().await, self.specs.lock().await);
        for tool in tools {
            match routes.get(&tool.name) {
                Some(owner) if *owner != index => {
                    tracing::warn!(tool = %tool.name, "tool offered by two MCP servers; keeping the first")
                }
                Some(_) => {}
                None => {
                    routes.insert(tool.name.clone(), index);
                    specs.push(tool);
                }
            }
        }
    }

    /// Calls a tool on its server. A dead session is reopened and the call retried once;
    /// a failed call becomes an error result for the model, not a failed diagnosis. A
    /// repository-scoped tool is only called for one of `repos`.
    pub async fn call(&self, name: &str, arguments: &Value, repos: &[RepoName]) -> CallOutcome {
        let index = self.routes.lock().await.get(name).copied();
        let Some(server) = index.and_then(|i| self.servers.get(i)) else {
            let known: Vec<String> = self.routes.lock().await.keys().cloned().collect();
            return CallOutcome {
                text: format!("unknown tool {name:?}; available: {}", known.join(", ")),
                is_error: true,
            };
        };
        if server.spec.repo_scoped {
            if let Err(refusal) = admitted_repo(arguments, repos) {
                tracing::warn!(tool = %name, "GitHub tool call refused: {refusal}");
                return CallOutcome {
                    text: refusal,
                    is_error: true,
                };
            }
        }
        let mut params = CallToolRequestParams::new(name.to_owned());
        if let Value::Object(map) = arguments {
            params = params.with_arguments(map.clone());
        }
        let mut retried = false;
        loop {
            let session = match server.session().await {
                Ok((session, _)) => session,
                Err(e) => {
                    return CallOutcome {
                        text: format!("tool {name} unavailable: {e}"),
                        is_error: true,
                    }
                }
            };
            match session.call_tool(params.clone()).await {
                Ok(result) => return outcome(result),
                Err(rmcp::ServiceError::McpError(e)) => {
                    return CallOutcome {
                        text: format!("tool {name} failed: {}", e.message),
                        is_error: true,
                    }
                }
                Err(e) if !retried => {
                    tracing::warn!(server = %server.spec.name, error = %e, "MCP session died; reconnecting once");
                    server.forget(&session);
                    retried = true;
                }
                Err(e) => {
                    return CallOutcome {
                        text: format!("tool {name} failed: {e}"),
                        is_error: true,
                    }
                }
            }
        }
    }
}

/// Whether a GitHub tool call's `owner`/`repo` is one the run admits.
fn admitted_repo(arguments: &Value, repos: &[RepoName]) -> Result<(), String> {
    let arg = |k: &str| arguments.get(k).and_then(Value::as_str).unwrap_or("");
    let asked = format!("{}/{}", arg("owner"), arg("repo"));
    if repos.iter().any(|r| r.is(arg("owner"), arg("repo"))) {
        return Ok(());
    }
    Err(if repos.is_empty() {
        "refused: no repository may be read through GitHub tools in this diagnosis".into()
    } else {
        format!(
            "refused: GitHub tools may only read {} in this diagnosis, not {asked:?}",
            repos
                .iter()
                .map(RepoName::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn outcome(result: CallToolResult) -> CallOutcome {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block.as_text() {
            Some(text) => text.text.clone(),
            None => serde_json::to_string(block).unwrap_or_default(),
        })
        .collect();
    if parts.is_empty() {
        if let Some(structured) = &result.structured_content {
            parts.push(structured.to_string());
        }
    }
    CallOutcome {
        text: parts.join("\n"),
        is_error: result.is_error.unwrap_or(false),
    }
}
