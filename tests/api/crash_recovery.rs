//! The service as a real process: `kill -9` mid-diagnosis loses nothing, and SIGTERM lets
//! the in-flight diagnosis finish. These tests run on a multi-threaded runtime because they
//! block on the child process while the fake LLM, on the same runtime, must keep answering.

use std::time::{Duration, Instant};

use deploy_diagnosis::model::alert::DeploymentId;
use deploy_diagnosis::model::report::ReportStatus;
use deploy_diagnosis::store::embedded::EmbeddedStore;
use deploy_diagnosis::store::ReportStore;
use reqwest::StatusCode;

use crate::fake_llm::{FakeLlm, Script};
use crate::helpers::{alertmanager_body, deployment_id, wait_final, Options, ProcessFiles};
use crate::servers::free_port;

/// The files of a service whose diagnoses reach the fake LLM after `llm_delay`.
async fn setup(llm_delay: Duration) -> ProcessFiles {
    ProcessFiles::new(&Options {
        native: false,
        script: Script::ToolThenReport { query: "up".into() },
        llm_delay,
        lease_s: 3,
        ..Options::default()
    })
    .await
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
    let files = setup(Duration::from_secs(2)).await;
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let id = deployment_id("crash");
    let mut first = files.start(free_port());
    first.up().await;
    post(&client, &first.address, &id).await;
    wait_llm_called(&files.llm).await;

    first.kill_9();
    let store = EmbeddedStore::open(&files.dir.path().join("reports.sqlite3")).unwrap();
    let stranded = store
        .get(&DeploymentId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stranded.status(), ReportStatus::Generating);

    let mut second = files.start(free_port());
    let report = wait_final(&client, &second.address, &id, None, Duration::from_secs(90)).await;
    second.kill_9();

    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        report["attempts"], 2,
        "taken up again once the dead worker's lease ran out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_diagnosis_finish_before_exit() {
    let files = setup(Duration::from_millis(1500)).await;
    let client = deploy_diagnosis::tls::client().build().unwrap();
    let id = deployment_id("term");
    let mut service = files.start(free_port());
    service.up().await;
    post(&client, &service.address, &id).await;
    wait_llm_called(&files.llm).await;

    let pid = nix::unistd::Pid::from_raw(service.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = service.child.wait().unwrap();

    assert!(status.success(), "clean exit: {status:?}");
    let store = EmbeddedStore::open(&files.dir.path().join("reports.sqlite3")).unwrap();
    let report = store
        .get(&DeploymentId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.status(), ReportStatus::Completed, "{report:?}");
}
