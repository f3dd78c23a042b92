//! The service as a real process: `kill -9` mid-diagnosis loses nothing, and SIGTERM lets
//! the in-flight diagnosis finish. These tests run on a multi-threaded runtime because they
//! block on the child process while the fake LLM, on the same runtime, must keep answering.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploy_diagnosis::model::alert::DeploymentId;
use deploy_diagnosis::model::report::ReportStatus;
use deploy_diagnosis::store::embedded::EmbeddedStore;
use deploy_diagnosis::store::ReportStore;
use reqwest::StatusCode;

use crate::fake_llm::{FakeLlm, Script};
use crate::helpers::{alertmanager_body, api_key, config_yaml, deployment_id, wait_final, Options};
use crate::servers::{free_port, prometheus, wait_http};

struct Service {
    child: Child,
    address: String,
}

fn start_service(config: &Path, key: &str) -> Service {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_deploy-diagnosis"))
        .args(["serve", "-f"])
        .arg(config)
        .env("AI_API_KEY", key)
        .env("DD_PORT", port.to_string())
        .env("DD_WORKER__SHUTDOWNGRACESECONDS", "60")
        .env("RUST_LOG", "deploy_diagnosis=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    Service {
        child,
        address: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_up(address: &str) {
    wait_http(&format!("{address}/healthz"), "the service").await;
}

async fn setup(llm_delay: Duration) -> (FakeLlm, tempfile::TempDir, std::path::PathBuf, String) {
    let prom = prometheus().await;
    let llm = FakeLlm::start(Script::ToolThenReport { query: "up".into() }, llm_delay).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_yaml(
        &Options::default(),
        &llm.base_url,
        &prom.url,
        dir.path(),
        None,
    );
    let path = dir.path().join("deploy-diagnosis.yaml");
    std::fs::write(&path, yaml).unwrap();
    (llm, dir, path, api_key())
}

async fn post(client: &reqwest::Client, address: &str, id: &str) {
    let response = client
        .post(format!("{address}/v1/alerts"))
        .json(&alertmanager_body(id, "firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

async fn wait_llm_called(llm: &FakeLlm) {
    let start = Instant::now();
    while llm.requests().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the diagnosis never reached the LLM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_mid_diagnosis_finishes_the_report_after_restart() {
    let (llm, dir, config, key) = setup(Duration::from_secs(2)).await;
    let client = reqwest::Client::new();
    let id = deployment_id("crash");
    let mut first = start_service(&config, &key);
    wait_up(&first.address).await;
    post(&client, &first.address, &id).await;
    wait_llm_called(&llm).await;

    first.child.kill().unwrap(); // SIGKILL: no shutdown code runs
    first.child.wait().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("reports.sqlite3")).unwrap();
    let stranded = store
        .get(&DeploymentId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stranded.status, ReportStatus::Generating);

    let mut second = start_service(&config, &key);
    let report = wait_final(&client, &second.address, &id, None, Duration::from_secs(90)).await;
    second.child.kill().unwrap();
    second.child.wait().unwrap();

    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        report["attempts"], 2,
        "taken up again once the dead worker's lease ran out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_diagnosis_finish_before_exit() {
    let (llm, dir, config, key) = setup(Duration::from_millis(1500)).await;
    let client = reqwest::Client::new();
    let id = deployment_id("term");
    let mut service = start_service(&config, &key);
    wait_up(&service.address).await;
    post(&client, &service.address, &id).await;
    wait_llm_called(&llm).await;

    let pid = nix::unistd::Pid::from_raw(service.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = service.child.wait().unwrap();

    assert!(status.success(), "clean exit: {status:?}");
    let store = EmbeddedStore::open(&dir.path().join("reports.sqlite3")).unwrap();
    let report = store
        .get(&DeploymentId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.status, ReportStatus::Completed, "{report:?}");
}
