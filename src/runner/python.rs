//! The Python runner (`docker/runner/diagnosis_runner.py`), as the process and docker
//! runners both drive it: its flags, its capped output capture, and its stdout protocol,
//! read here and nowhere else.
//!
//! Protocol: log lines, a line `#####`, then the model's answer text (exit status 0), or
//! `{"error": {"kind", "message"}}` (exit status 2). A log line `DD-USAGE {json}` before
//! `#####` carries tokens, steps and tool calls, on failure too. Log lines are timestamped,
//! so the first line that is exactly `#####` is the separator: an answer may hold one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::extract;
use super::{Failure, RunEnd, RunRequest, RunResult};
use crate::config::{Config, Secret};
use crate::model::report::{FailureKind, Usage};
use crate::runner::provider::Profile;

/// The separator line between the runner's logs and its answer.
pub const SPLIT: &str = "#####";

/// Bytes of stdout and of stderr kept in a failed run's log.
const LOG_TAIL_BYTES: usize = 4096;

/// The run's own flags: the repositories its GitHub tools may read.
pub fn run_args(request: &RunRequest) -> [String; 2] {
    let repos: Vec<String> = request.github_repos.iter().map(|r| r.to_string()).collect();
    ["--github-repos".into(), repos.join(",")]
}

/// Stdin's first line: the secrets (the AI key, the GitHub token, and the Prometheus URL,
/// which may carry `user:pass@`) as one line of JSON, before the prompt. Neither argv
/// (world-readable) nor the environment (readable through /proc by every process of the
/// user) carries them.
pub fn secrets_line(api_key: &Secret, github_token: &Secret, prometheus_url: &str) -> String {
    let mut line = serde_json::json!({
        "aiKey": api_key.expose(),
        "githubToken": github_token.expose(),
        "prometheusUrl": prometheus_url,
    })
    .to_string();
    line.push('\n');
    line
}

/// The runner's flags for a configuration, with the provider profile resolved here so
/// both runners send the same requests (no secrets: those go on stdin, [`secrets_line`]).
pub fn runner_args(config: &Config) -> Vec<String> {
    let ai = &config.ai;
    let profile = Profile::new(ai);
    let mut args = vec![
        "--base-url".into(),
        ai.base_url().to_owned(),
        "--model".into(),
        ai.model.clone(),
        "--protocol".into(),
        profile.protocol.as_str().into(),
        "--max-tokens".into(),
        profile.max_tokens.to_string(),
        "--max-tokens-field".into(),
        profile.max_tokens_field.into(),
        "--extra-body".into(),
        serde_json::Value::Object(profile.extra.clone()).to_string(),
        "--structured".into(),
        profile.structured.as_str().into(),
        "--report-schema".into(),
        crate::runner::provider::report_schema().to_string(),
        "--context-tokens".into(),
        profile.context_tokens.to_string(),
        "--github-mcp-command".into(),
        config.runner.github_mcp_command.clone(),
        "--github-toolsets".into(),
        ai.github_toolsets.clone(),
        "--github-tools".into(),
        config.github.mcp_tools.join(","),
        "--max-turns".into(),
        ai.max_turns.to_string(),
        "--tool-result-max-chars".into(),
        ai.tool_result_max_chars.to_string(),
        "--max-tool-calls-per-turn".into(),
        ai.max_tool_calls_per_turn.to_string(),
        "--tool-result-budget-chars".into(),
        ai.tool_result_budget_chars.to_string(),
        "--request-timeout".into(),
        ai.timeout.as_secs().to_string(),
        "--deadline".into(),
        ai.diagnosis_deadline().as_secs().to_string(),
    ];
    if profile.omit_forbidden_tools {
        args.push("--omit-forbidden-tools".into());
    }
    if !config.runner.prometheus_mcp_command.is_empty() {
        args.push("--prometheus-mcp-command".into());
        args.push(config.runner.prometheus_mcp_command.clone());
    }
    args
}

/// Output of one stream: the first `max` bytes, and how many more were dropped. Shared
/// between the reader and the deadline path, which takes what was read so far.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<(Vec<u8>, usize)>>,
    max: usize,
}

impl Capture {
    /// Keeps at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::default(),
            max,
        }
    }

    /// Adds bytes; past the cap they are only counted.
    pub fn push(&self, bytes: &[u8]) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.max.saturating_sub(guard.0.len());
        guard.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
        guard.1 += bytes.len().saturating_sub(room);
    }

    /// Reads a stream to its end; the rest past the cap is read and dropped, so the
    /// writer never blocks on a full pipe.
    pub async fn read_from<R: AsyncRead + Unpin>(self, mut reader: R) {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            self.push(&buf[..n]);
        }
    }

    /// What was kept, with a note when something was dropped.
    pub fn text(&self) -> String {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::from_utf8_lossy(&guard.0).into_owned();
        if guard.1 > 0 {
            text.push_str(&format!(
                "\n[deploy-diagnosis: {} more bytes of output dropped]",
                guard.1
            ));
        }
        text
    }
}

/// Waits briefly for a reader to see the end of its stream, then stops it: a grandchild
/// that left the process group (the MCP SDK starts servers in a session of their own) can
/// hold an inherited pipe open after the runner is gone.
pub async fn settle(mut reader: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(2), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
}

/// The text after the first `#####` line, and the logs before it.
fn split(stdout: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for line in stdout.split_inclusive('\n') {
        if line.trim() == SPLIT {
            return Some((&stdout[..offset], &stdout[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

/// The usage the runner logged last (`DD-USAGE {json}`).
fn usage(logs: &str) -> Option<Usage> {
    logs.lines().rev().find_map(|line| {
        let json = &line[line.find("DD-USAGE ")? + "DD-USAGE ".len()..];
        serde_json::from_str(json).ok()
    })
}

/// The run's log for a failed report: the ends of the logs and of stderr.
fn log(logs: &str, stderr: &str) -> String {
    let mut log = String::new();
    if !logs.trim().is_empty() {
        log.push_str(extract::tail(logs, LOG_TAIL_BYTES));
    }
    if !stderr.trim().is_empty() {
        if !log.is_empty() && !log.ends_with('\n') {
            log.push('\n');
        }
        log.push_str("--- stderr (end) ---\n");
        log.push_str(extract::tail(stderr, LOG_TAIL_BYTES));
    }
    log
}

#[derive(Deserialize)]
struct ErrorLine {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    kind: String,
    message: String,
}

/// Reads a finished run: its answer or its failure, its log and usage.
pub fn read(stdout: &str, stderr: &str, exit_code: Option<i32>) -> RunResult {
    let Some((logs, after)) = split(stdout) else {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let status = exit_code.map_or("a signal".to_owned(), |c| format!("status {c}"));
        return RunResult {
            end: RunEnd::Failed(Failure::new(
                FailureKind::RunnerCrashed,
                format!(
                    "runner exited with {status} without an answer (no \"{SPLIT}\" line): {}",
                    extract::truncate(last.trim(), 300)
                ),
            )),
            usage: usage(stdout),
            log: log(stdout, stderr),
        };
    };
    let end = match exit_code {
        Some(0) => RunEnd::Answer(after.to_owned()),
        code => RunEnd::Failed(match serde_json::from_str::<ErrorLine>(after.trim()) {
            Ok(ErrorLine { error }) => Failure::new(
                // A kind this service does not know is still a failure with its message.
                FailureKind::parse(&error.kind).unwrap_or(FailureKind::RunnerCrashed),
                error.message,
            ),
            Err(_) => Failure::new(
                FailureKind::RunnerCrashed,
                format!(
                    "runner exited with {} and an unreadable failure: {}",
                    code.map_or("a signal".to_owned(), |c| format!("status {c}")),
                    extract::truncate(after.trim(), 300)
                ),
            ),
        }),
    };
    RunResult {
        end,
        usage: usage(logs),
        log: log(logs, stderr),
    }
}

/// A run stopped at its deadline: what it had logged, and the usage it had counted.
pub fn stopped(stdout: &str, stderr: &str, failure: Failure) -> RunResult {
    let logs = split(stdout).map_or(stdout, |(logs, _)| logs);
    RunResult {
        end: RunEnd::Failed(failure),
        usage: usage(logs),
        log: log(logs, stderr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_the_text_after_the_first_separator_with_the_usage_from_the_logs() {
        let stdout = "[  0.1s] step 1\n[  0.2s] DD-USAGE {\"inputTokens\": 7, \"steps\": 2}\n#####\n报告\n#####\n{\"promQL\":[]}\n";
        let r = read(stdout, "", Some(0));
        assert_eq!(
            r.end,
            RunEnd::Answer("报告\n#####\n{\"promQL\":[]}\n".into())
        );
        let usage = r.usage.unwrap();
        assert_eq!((usage.input_tokens, usage.steps), (7, 2));
        assert!(r.log.contains("step 1"));
    }

    #[test]
    fn a_failure_line_becomes_a_typed_failure() {
        let r = read(
            "x\n#####\n{\"error\": {\"kind\": \"llm_status\", \"message\": \"AI call failed with status 500\"}}\n",
            "",
            Some(2),
        );
        assert_eq!(
            r.end,
            RunEnd::Failed(Failure::new(
                FailureKind::LlmStatus,
                "AI call failed with status 500"
            ))
        );
        let r = read(
            "#####\n{\"error\": {\"kind\": \"brand_new\", \"message\": \"m\"}}",
            "",
            Some(2),
        );
        assert_eq!(
            r.end,
            RunEnd::Failed(Failure::new(FailureKind::RunnerCrashed, "m"))
        );
    }

    #[test]
    fn a_runner_that_died_is_reported_with_the_last_line_of_stderr() {
        let r = read(
            "[0.1s] starting\n",
            "Traceback\nModuleNotFoundError: No module named 'mcp'\n",
            Some(1),
        );
        let RunEnd::Failed(f) = r.end else { panic!() };
        assert_eq!(f.kind, FailureKind::RunnerCrashed);
        assert!(
            f.message.contains("status 1") && f.message.contains("No module named 'mcp'"),
            "{}",
            f.message
        );
        assert!(
            r.log.contains("--- stderr (end) ---\nTraceback"),
            "{}",
            r.log
        );
    }

    #[test]
    fn capture_keeps_the_first_bytes_and_counts_the_rest() {
        let c = Capture::new(4);
        c.push(b"abcdef");
        c.push(b"gh");
        assert_eq!(
            c.text(),
            "abcd\n[deploy-diagnosis: 4 more bytes of output dropped]"
        );
    }
}
