//! `Runner.Kind: process`: the Python runner (`docker/runner/diagnosis_runner.py`) as a
//! child process, in its own process group so that the deadline kills it and everything
//! it started.
//!
//! The secrets and the prompt go on stdin ([`python::secrets_line`]): argv is visible to
//! every user of the machine (`ps`), which the design's `--api-key` flag forgot, and an
//! environment to every process of the user (/proc/<pid>/environ).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::python::{self, runner_args, Capture};
use super::{Cancelled, Failure, RunRequest, RunResult, Runner};
use crate::config::{Config, Secret};
use crate::model::report::FailureKind;
use crate::model::report::RunnerKind;

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
    /// `AI.PrometheusURL`, credentials and all: it goes with the secrets.
    prometheus_url: String,
    output_max_bytes: usize,
}

impl ProcessRunner {
    /// A runner for this configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            python: config.runner.python.clone(),
            script: config.runner.script.clone(),
            args: {
                let mut args = runner_args(config);
                if let Some(url) = &config.runner.prometheus_mcp_url {
                    args.extend(["--prometheus-mcp-url".into(), url.to_string()]);
                }
                args
            },
            api_key: config.ai.api_key.clone(),
            github_token: config.ai.github_token.clone(),
            prometheus_url: config.ai.prometheus_url.to_string(),
            output_max_bytes: config.runner.output_max_bytes,
        }
    }

    fn command(&self, request: &RunRequest) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(&self.args)
            .args(python::run_args(request))
            .arg("--exit-with-parent")
            .env_clear()
            .envs(
                super::PASSTHROUGH_ENV
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("DD_DEPLOYMENT_ID", request.deployment_id.as_str())
            .env("DD_RUN_ID", uuid::Uuid::new_v4().simple().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }
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
    fn kind(&self) -> RunnerKind {
        RunnerKind::Process
    }

    async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunResult, Cancelled> {
        let mut child = match self.command(&request).spawn() {
            Ok(child) => child,
            Err(e) => {
                return Ok(Failure::new(
                    FailureKind::RunnerUnavailable,
                    format!(
                        "could not start the runner {}: {e}; check Runner.Python and Runner.Script",
                        self.python.display()
                    ),
                )
                .into())
            }
        };
        // The runner leads its own process group (`process_group(0)` at spawn), so its pid
        // is the group's id. A child without a pid has already been reaped: there is no
        // group to signal, and a fallback of 0 would make `killpg` signal the service's own
        // group.
        let Some(pgid) = child.id().map(|id| Pid::from_raw(id as i32)) else {
            let code = child.wait().await.ok().and_then(|s| s.code());
            return Ok(python::read("", "", code));
        };
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            stop_group(&mut child, pgid).await;
            return Ok(Failure::new(FailureKind::RunnerIo, "runner pipes missing").into());
        };
        let input = python::secrets_line(&self.api_key, &self.github_token, &self.prometheus_url)
            + &request.prompt;
        let writer = tokio::spawn(async move {
            // A runner that exits early closes its stdin; that is reported by its output.
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let (out, err) = (
            Capture::new(self.output_max_bytes),
            Capture::new(self.output_max_bytes),
        );
        let out_reader = tokio::spawn(out.clone().read_from(stdout));
        let err_reader = tokio::spawn(err.clone().read_from(stderr));

        enum End {
            Exited(Option<i32>),
            WaitFailed(std::io::Error),
            Deadline,
            Cancelled,
        }
        let end = tokio::select! {
            status = child.wait() => match status {
                Ok(status) => End::Exited(status.code()),
                Err(e) => End::WaitFailed(e),
            },
            _ = tokio::time::sleep(request.deadline) => End::Deadline,
            _ = cancel.cancelled() => End::Cancelled,
        };
        if !matches!(end, End::Exited(_)) {
            stop_group(&mut child, pgid).await;
        }
        writer.abort();
        python::settle(out_reader).await;
        python::settle(err_reader).await;
        let (stdout, stderr) = (out.text(), err.text());
        match end {
            End::Exited(code) => Ok(python::read(&stdout, &stderr, code)),
            End::WaitFailed(e) => Ok(python::stopped(
                &stdout,
                &stderr,
                Failure::new(
                    FailureKind::RunnerIo,
                    format!("waiting for the runner: {e}"),
                ),
            )),
            End::Deadline => Ok(python::stopped(
                &stdout,
                &stderr,
                Failure::deadline(request.deadline),
            )),
            End::Cancelled => Err(Cancelled),
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
