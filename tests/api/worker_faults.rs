//! The worker when the store misbehaves: a failed outcome write is retried while the lease
//! is kept (the diagnosis is not run twice), and a diagnosis whose lease cannot be renewed
//! before it runs out is stopped and given back. The store is the real embedded store,
//! wrapped to fail the calls a test names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deploy_diagnosis::config::{Config, Environment};
use deploy_diagnosis::intake::webhook::{self, Limits};
use deploy_diagnosis::metrics::Metrics;
use deploy_diagnosis::model::alert::DeploymentId;
use deploy_diagnosis::model::report::{Finish, Report, ReportStatus};
use deploy_diagnosis::store::embedded::EmbeddedStore;
use deploy_diagnosis::store::{
    Diagnosis, Insert, Lease, LeaseQueue, ReportStore, StoreError, Wake,
};
use deploy_diagnosis::worker::{WorkerContext, WorkerPool};

use crate::fake_llm::{FakeLlm, Script};
use crate::helpers::{alertmanager_body, api_key, config_yaml, Options};

/// The embedded store's diagnosis queue, failing `complete` the first `finish_failures`
/// times and `renew` while `renew_fails` is set; panicking (a bug, as a task sees it) in
/// `claim` the first `claim_panics` times and in `complete` the first `finish_panics`.
struct Flaky {
    inner: EmbeddedStore,
    finish_failures: AtomicUsize,
    renew_fails: AtomicBool,
    claim_panics: AtomicUsize,
    finish_panics: AtomicUsize,
}

/// Takes one from `n` while it is above zero; whether it did.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn injected() -> StoreError {
    StoreError::Task("injected fault".into())
}

#[async_trait]
impl LeaseQueue<Diagnosis> for Flaky {
    async fn claim(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Report>, StoreError> {
        if take_one(&self.claim_panics) {
            panic!("injected panic in claim");
        }
        LeaseQueue::<Diagnosis>::claim(&self.inner, owner, now, until).await
    }
    async fn renew(&self, lease: &Lease, until: DateTime<Utc>) -> Result<bool, StoreError> {
        if self.renew_fails.load(Ordering::SeqCst) {
            return Err(injected());
        }
        LeaseQueue::<Diagnosis>::renew(&self.inner, lease, until).await
    }
    async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        LeaseQueue::<Diagnosis>::release(&self.inner, lease).await
    }
    async fn complete(&self, lease: &Lease, finish: &Finish) -> Result<bool, StoreError> {
        if take_one(&self.finish_panics) {
            panic!("injected panic in complete");
        }
        if take_one(&self.finish_failures) {
            return Err(injected());
        }
        LeaseQueue::<Diagnosis>::complete(&self.inner, lease, finish).await
    }
}

struct Running {
    store: Arc<Flaky>,
    metrics: Arc<Metrics>,
    wake: Arc<Wake>,
    llm: FakeLlm,
    pool: Option<WorkerPool>,
    _dir: tempfile::TempDir,
}

/// The faults a test injects.
#[derive(Default)]
struct Faults {
    finish_failures: usize,
    renew_fails: bool,
    claim_panics: usize,
    finish_panics: usize,
}

/// A report of deployment `id`, as intake stores it.
fn queued(id: &str) -> Report {
    let alert = webhook::parse_webhook(
        alertmanager_body(id, "firing").to_string().as_bytes(),
        "now",
        &Limits::default(),
    )
    .unwrap()
    .remove(0);
    Report::new(DeploymentId::parse(id).unwrap(), alert, Utc::now())
}

/// A worker pool (native runner, a fake LLM, the real Prometheus) over a flaky store,
/// with one report queued.
async fn run(script: Script, faults: Faults, id: &str) -> Running {
    let prom = crate::servers::prometheus().await;
    let llm = FakeLlm::start(script, Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        native: true,
        lease_s: 3,
        ..Options::default()
    };
    let yaml = config_yaml(&options, &llm.base_url, &prom.url, dir.path(), None);
    let env = Environment::from_map([("AI_API_KEY".to_owned(), api_key())].into());
    let config = Config::from_yaml(&yaml, &env).unwrap();
    let inner = EmbeddedStore::open(&dir.path().join("flaky.sqlite3")).unwrap();
    inner.migrate().await.unwrap();
    let deployments = Arc::new(inner.clone());
    let store = Arc::new(Flaky {
        inner,
        finish_failures: AtomicUsize::new(faults.finish_failures),
        renew_fails: AtomicBool::new(faults.renew_fails),
        claim_panics: AtomicUsize::new(faults.claim_panics),
        finish_panics: AtomicUsize::new(faults.finish_panics),
    });
    assert_eq!(
        store.inner.insert(&queued(id)).await.unwrap(),
        Insert::Inserted
    );
    let wake = Arc::new(Wake::default());
    let metrics = Arc::new(Metrics::new());
    let runner = deploy_diagnosis::startup::build_runner(&config, Arc::clone(&metrics))
        .await
        .unwrap();
    let pool = WorkerPool::start(WorkerContext {
        store: deployments.clone(),
        diagnoses: store.clone(),
        pipeline: deploy_diagnosis::startup::pipeline(&config, runner).unwrap(),
        budget: Arc::new(deploy_diagnosis::worker::budget::Budget::new(
            &config.budget,
            deployments.clone(),
        )),
        evidence: None,
        metrics: Arc::clone(&metrics),
        wake: Arc::clone(&wake),
        sinks: Arc::new(deploy_diagnosis::notify::Sinks::new(&config).unwrap()),
        config: config.worker.clone(),
        auto_rollback: config.release.auto_rollback,
    });
    Running {
        store,
        metrics,
        wake,
        llm,
        pool: Some(pool),
        _dir: dir,
    }
}

#[tokio::test]
async fn a_failed_outcome_write_is_retried_and_the_diagnosis_runs_once() {
    let id = "flaky-finish";
    let faults = Faults {
        finish_failures: 3,
        ..Faults::default()
    };
    let mut running = run(Script::ToolThenReport { query: "up".into() }, faults, id).await;
    let report = running.finished(id).await;
    assert_eq!(report.status(), ReportStatus::Completed);
    assert_eq!(report.attempts, 1, "written by the attempt that ran it");
    assert_eq!(
        running.llm.requests().len(),
        2,
        "one diagnosis (a tool call and an answer), not a second after the lease ran out"
    );
    running.pool.take().unwrap().shutdown().await;
}

#[tokio::test]
async fn a_diagnosis_whose_lease_cannot_be_renewed_is_stopped_and_given_back() {
    let id = "flaky-lease";
    let faults = Faults {
        renew_fails: true,
        ..Faults::default()
    };
    let mut running = run(Script::Hang, faults, id).await;
    // The lease is 3 s; the model never answers. Without renewals the diagnosis must stop
    // once the lease runs out and the report go back to the queue, where it is claimed
    // again, long before the 60 s diagnosis deadline.
    let start = Instant::now();
    while running.llm.requests().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the diagnosis was not stopped when its lease ran out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = running
        .store
        .inner
        .get(&DeploymentId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.status(), ReportStatus::Generating);
    assert_eq!(
        report.attempts, 1,
        "given back: the stopped run is not an attempt"
    );
    running.store.renew_fails.store(false, Ordering::SeqCst);
    running.pool.take().unwrap().shutdown().await;
}

impl Running {
    /// Waits until the report of `id` is no longer generating.
    async fn finished(&self, id: &str) -> Report {
        let deployment = DeploymentId::parse(id).unwrap();
        let start = Instant::now();
        loop {
            let report = self.store.inner.get(&deployment).await.unwrap().unwrap();
            if report.status() != ReportStatus::Generating {
                return report;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "still generating"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_task_that_panics_is_restarted_and_counted_and_its_report_is_not_left_held() {
    // Both tasks panic at their first claim (outside any report: the pool starts them
    // again), and the first outcome write panics (inside a report's work: the report is
    // ended `failed` with the panic's message at once, not held until its lease runs out).
    let id = "panics-first";
    let faults = Faults {
        claim_panics: 2,
        finish_panics: 1,
        ..Faults::default()
    };
    let mut running = run(Script::ToolThenReport { query: "up".into() }, faults, id).await;
    let report = running.finished(id).await;
    assert_eq!(report.status(), ReportStatus::Failed, "{report:#?}");
    let error = report.error().unwrap_or_default().to_owned();
    assert!(
        error.contains("bug in the service") && error.contains("injected panic in complete"),
        "{error}"
    );
    assert_eq!(report.attempts, 1, "ended by the attempt that panicked");

    // The pool is whole: the next report is diagnosed.
    let next = "panics-after";
    running.store.inner.insert(&queued(next)).await.unwrap();
    running.wake.queued();
    assert_eq!(
        running.finished(next).await.status(),
        ReportStatus::Completed
    );
    let metrics = running.metrics.render(&HashMap::new(), 0);
    assert!(
        metrics.contains("deploy_diagnosis_task_panics_total{pool=\"diagnosis\"} 3"),
        "{metrics}"
    );
    running.pool.take().unwrap().shutdown().await;
}
