//! The binary's other subcommands: `diagnose --alert FILE`, `migrate`, and configuration
//! errors that name their key.

use std::process::Command;

use crate::fake_llm::{FakeLlm, Script};
use crate::helpers::{alertmanager_body, api_key, config_yaml, Options};
use crate::servers::prometheus;

/// A test configuration file in `dir`, for this LLM and Prometheus.
fn write_config(dir: &std::path::Path, llm: &str, prom: &str) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(
            &Options {
                native: false,
                ..Options::default()
            },
            llm,
            prom,
            dir,
            None,
        ),
    )
    .unwrap();
    config
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deploy-diagnosis"))
}

/// Runs `diagnose` on one alert with these options, a fresh API key and debug logging
/// (plus `env`); the output and the key.
async fn diagnose_at_debug(
    options: &Options,
    llm: &str,
    prom: &str,
    dir: &std::path::Path,
    env: &'static [(&'static str, &'static str)],
) -> (std::process::Output, String) {
    let config = dir.join("config.yaml");
    std::fs::write(&config, config_yaml(options, llm, prom, dir, None)).unwrap();
    let alert = dir.join("alert.json");
    std::fs::write(&alert, alertmanager_body("cli-debug", "firing").to_string()).unwrap();
    let key = api_key();
    let output = tokio::task::spawn_blocking({
        let key = key.clone();
        move || {
            binary()
                .args(["diagnose", "-f"])
                .arg(&config)
                .arg("--alert")
                .arg(&alert)
                .env("AI_API_KEY", key)
                .envs(env.iter().copied())
                .env("DD_LOG__LEVEL", "debug")
                .env_remove("RUST_LOG")
                .output()
        }
    })
    .await
    .unwrap()
    .unwrap();
    (output, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_prints_the_report_of_an_alert_file_without_a_server() {
    let prom = prometheus().await;
    let llm = FakeLlm::start(
        Script::ToolThenReport {
            query: "node_load1".into(),
        },
        Default::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &llm.base_url, &prom.url);
    let alert = dir.path().join("alert.json");
    std::fs::write(&alert, alertmanager_body("cli-1", "firing").to_string()).unwrap();

    let output = tokio::task::spawn_blocking(move || {
        binary()
            .args(["diagnose", "-f"])
            .arg(&config)
            .arg("--alert")
            .arg(&alert)
            .env("AI_API_KEY", api_key())
            .output()
    })
    .await
    .unwrap()
    .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is the report JSON");
    assert_eq!(report["status"], "completed");
    assert_eq!(report["promQL"], serde_json::json!(["node_load1"]));
    assert!(
        !dir.path().join("reports.sqlite3").exists(),
        "diagnose stores nothing"
    );
}

#[test]
fn migrate_creates_the_embedded_store_and_warns_of_keys_it_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/v1", "http://127.0.0.1:9");
    // The design's file has sections this port does not use.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\nQiniu:\n  Bucket: b\n")).unwrap();

    let output = binary()
        .args(["migrate", "-f"])
        .arg(&config)
        .env("AI_API_KEY", api_key())
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("reports.sqlite3").exists());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a configuration key") && stderr.contains("Qiniu"),
        "{stderr}"
    );
}

#[test]
fn a_refused_url_is_named_without_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "ftp://operator:hunter2-secret@llm.internal/v1",
        "http://127.0.0.1:9",
    );

    let output = binary()
        .args(["serve", "-f"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AI.BaseURL"), "{stderr}");
    assert!(stderr.contains("llm.internal"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
}

#[test]
fn a_missing_setting_stops_the_service_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9/v1", "http://127.0.0.1:9");

    let output = binary()
        .args(["serve", "-f"])
        .arg(&config)
        .env_remove("AI_API_KEY")
        .current_dir(dir.path())
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AI.APIKey") && stderr.contains("AI_API_KEY"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_diagnosis_keeps_the_key_out_of_output_and_logs() {
    let prom = prometheus().await;
    // The fake echoes the credential it was sent in its error body; the native runner
    // retries a 500 and logs why, so the echoed body passes through a log line.
    let llm = FakeLlm::start(Script::Status(500), Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        native: true,
        timeout_s: 5,
        ..Options::default()
    };
    let (output, key) =
        diagnose_at_debug(&options, &llm.base_url, &prom.url, dir.path(), &[]).await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("status 500"), "{stdout}");
    assert!(stderr.contains("retrying the AI call"), "{stderr}");
    assert!(stderr.contains("[REDACTED]"), "{stderr}");
    assert!(!stdout.contains(&key), "{stdout}");
    assert!(!stderr.contains(&key), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_servers_start_with_a_cleared_environment_and_their_stderr_is_scrubbed() {
    let prom = prometheus().await;
    let llm = FakeLlm::start(
        Script::ToolThenReport { query: "up".into() },
        Default::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("mcp-env.txt");
    let server = crate::servers::repo().join(".venv/bin/prometheus-mcp-server");
    // The server writes its environment to a file and prints a secret it was handed
    // explicitly (Env) to its stderr, which the service logs at debug level.
    let mcp = format!(
        "MCP:\n  Servers:\n    - Name: prometheus\n      Command: sh\n      Args: [\"-c\", \"env > {env}; echo handed $HANDED >&2; exec {server}\"]\n      Env: [\"PROMETHEUS_URL={prom}\", \"PROMETHEUS_MCP_SERVER_TRANSPORT=stdio\", \"HANDED=${{AI_API_KEY}}\"]\n",
        env = env_file.display(),
        server = server.display(),
        prom = prom.url,
    );
    let options = Options {
        native: true,
        mcp: Some(mcp),
        ..Options::default()
    };
    let (output, key) = diagnose_at_debug(
        &options,
        &llm.base_url,
        &prom.url,
        dir.path(),
        &[("DD_SERVICE_ONLY_SETTING", "not-for-children")],
    )
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(!env.contains("AI_API_KEY="), "{env}");
    assert!(!env.contains("DD_SERVICE_ONLY_SETTING"), "{env}");
    assert!(env.contains("PATH="), "the pass-through list: {env}");
    assert!(stderr.contains("handed [REDACTED]"), "{stderr}");
    assert!(!stderr.contains(&key), "{stderr}");
    assert!(
        !stderr.contains("\u{1b}["),
        "no colour codes off a terminal"
    );
}
