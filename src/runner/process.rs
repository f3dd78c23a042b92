//! `Runner.Kind: process`: the Python runner (`docker/runner/diagnosis_runner.py`) as a
//! child process, in its own process group so that the deadline kills it and everything
//! it started.
//!
//! The prompt goes on stdin and secrets in the environment: argv is visible to every user
//! of the machine (`ps`), which the design's `--api-key` flag forgot.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{RunOutput, RunRequest, Runner, RunnerError};
use crate::config::{Config, Secret};

/// Environment variables passed through to the runner; everything else is cleared, so the
/// service's own settings (and any `DD_*` secrets) do not leak into the child.
const PASSTHROUGH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// How long the runner gets to shut its MCP servers down after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Runs the Python runner as a local child process.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    python: PathBuf,
    script: PathBuf,
    args: Vec<String>,
    api_key: Secret,
    github_token: Secret,
    output_max_bytes: usize,
}

/// The runner's flags for a configuration (no secrets: those go in the environment).
pub fn runner_args(config: &Config) -> Vec<String> {
    let ai = &config.ai;
    let mut args = vec![
        "--base-url".into(),
        ai.baseurl.clone(),
        "--model".into(),
        ai.model.clone(),
        "--protocol".into(),
        ai.protocol.as_str().into(),
        "--prometheus-url".into(),
        ai.prometheusurl.clone(),
        "--github-mcp-command".into(),
        config.runner.githubmcpcommand.clone(),
        "--github-toolsets".into(),
        ai.githubtoolsets.clone(),
        "--max-turns".into(),
        ai.maxturns.to_string(),
        "--tool-result-max-chars".into(),
        ai.toolresultmaxchars.to_string(),
        "--request-timeout".into(),
        ai.timeout.to_string(),
    ];
    if !config.runner.prometheusmcpcommand.is_empty() {
        args.push("--prometheus-mcp-command".into());
        args.push(config.runner.prometheusmcpcommand.clone());
    }
    args
}

impl ProcessRunner {
    /// A runner for this configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            python: config.runner.python.clone(),
            script: config.runner.script.clone(),
            args: runner_args(config),
            api_key: config.ai.apikey.clone(),
            github_token: config.ai.githubtoken.clone(),
            output_max_bytes: config.runner.outputmaxbytes,
        }
    }

    fn command(&self, request: &RunRequest) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(&self.args)
            .arg("--exit-with-parent")
            .env_clear()
            .envs(
                PASSTHROUGH_ENV
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("DD_DEPLOYMENT_ID", request.deployment_id.as_str())
            .env("DD_RUN_ID", uuid::Uuid::new_v4().simple().to_string())
            .env("AI_API_KEY", self.api_key.expose())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if !self.github_token.is_empty() {
            cmd.env("GITHUB_TOKEN", self.github_token.expose());
        }
        cmd
    }
}

/// Output captured so far: the first `max` bytes, and how many more were dropped.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

type Sink = Arc<Mutex<Captured>>;

/// Reads a stream to its end, keeping the first `max` bytes; the rest is read and dropped
/// so the child never blocks on a full pipe.
async fn read_capped<R: AsyncRead + Unpin>(mut reader: R, max: usize, sink: Sink) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut c = sink.lock().unwrap_or_else(|p| p.into_inner());
                let room = max.saturating_sub(c.kept.len());
                c.kept.extend_from_slice(&buf[..n.min(room)]);
                c.dropped += n.saturating_sub(room);
            }
        }
    }
}

/// Waits briefly for a reader to see the end of its stream, then takes what it has: a
/// grandchild that left the process group (the MCP SDK starts servers in a session of
/// their own) can hold an inherited pipe open after the runner is gone.
async fn collect(mut reader: tokio::task::JoinHandle<()>, sink: Sink) -> String {
    if tokio::time::timeout(Duration::from_secs(2), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
    let c = sink.lock().unwrap_or_else(|p| p.into_inner());
    let mut text = String::from_utf8_lossy(&c.kept).into_owned();
    if c.dropped > 0 {
        text.push_str(&format!(
            "\n[deploy-diagnosis: {} more bytes of output dropped]",
            c.dropped
        ));
    }
    text
}

/// SIGTERM to the group (the runner then shuts its MCP servers down), SIGKILL after a grace.
async fn stop_group(child: &mut Child, pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pgid = pgid.as_raw(),
            "runner ignored SIGTERM; killing its process group"
        );
    }
    // Whatever is left in the group (the runner, or children that outlived it) goes now.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
}

#[async_trait]
impl Runner for ProcessRunner {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let mut child = self
            .command(&request)
            .spawn()
            .map_err(|source| RunnerError::Spawn {
                program: self.python.display().to_string(),
                source,
            })?;
        let pgid = Pid::from_raw(child.id().map(|id| id as i32).unwrap_or_default());
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(RunnerError::Io(std::io::Error::other(
                "runner pipes missing",
            )));
        };
        let prompt = request.prompt;
        let writer = tokio::spawn(async move {
            // A runner that exits early closes its stdin; that is reported by its output.
            let _ = stdin.write_all(prompt.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let (out_sink, err_sink) = (Sink::default(), Sink::default());
        let out = tokio::spawn(read_capped(
            stdout,
            self.output_max_bytes,
            Arc::clone(&out_sink),
        ));
        let err = tokio::spawn(read_capped(
            stderr,
            self.output_max_bytes,
            Arc::clone(&err_sink),
        ));

        enum End {
            Exited(Option<i32>),
            Deadline,
            Cancelled,
        }
        let end = tokio::select! {
            status = child.wait() => End::Exited(status?.code()),
            _ = tokio::time::sleep(request.deadline) => End::Deadline,
            _ = cancel.cancelled() => End::Cancelled,
        };
        if !matches!(end, End::Exited(_)) {
            stop_group(&mut child, pgid).await;
        }
        writer.abort();
        let output = RunOutput {
            stdout: collect(out, out_sink).await,
            stderr: collect(err, err_sink).await,
            exit_code: match end {
                End::Exited(code) => code,
                _ => None,
            },
            usage: None,
        };
        match end {
            End::Exited(_) => Ok(output),
            End::Deadline => Err(RunnerError::DeadlineExceeded {
                after: request.deadline,
                output,
            }),
            End::Cancelled => Err(RunnerError::Cancelled),
        }
    }

    async fn check(&self) -> Result<serde_json::Value, String> {
        if !self.script.is_file() {
            return Err(format!("runner script {} not found", self.script.display()));
        }
        if !self.python.is_file() {
            return Err(format!(
                "runner interpreter {} not found (set Runner.Python, or run scripts/serve to create the virtualenv)",
                self.python.display()
            ));
        }
        Ok(serde_json::json!({ "python": self.python, "script": self.script }))
    }
}
