//! Building the application from its configuration and running it until shutdown.

use std::sync::Arc;

use axum::extract::Request;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::changes::ChangeSource;
use crate::config::{AutoRollback, Config};
use crate::diagnosis::Diagnoser;
use crate::evidence::{Gatherer, Prometheus};
use crate::http::auth::Tokens;
use crate::http::{self, AppState};
use crate::intake::webhook::Limits;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::model::report::RunnerKind;
use crate::notify::Sinks;
use crate::pipeline::{Measure, Pipeline};
use crate::runner::docker::DockerRunner;
use crate::runner::native::NativeRunner;
use crate::runner::process::ProcessRunner;
use crate::runner::Runner;
use crate::store::{self, StoreError, Wake};
use crate::verdict::Judge;
use crate::worker::budget::Budget;
use crate::worker::evidence::{EvidenceContext, EvidencePool};
use crate::worker::gate::QueueGate;
use crate::worker::outbox::{Outbox, OutboxContext};
use crate::worker::{WorkerContext, WorkerPool};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or migrated.
    #[error("opening the report store: {0}")]
    Store(#[from] StoreError),
    /// The runner could not be set up.
    #[error("setting up the runner: {0}")]
    Runner(#[from] crate::runner::RunnerError),
    /// An HTTP client (Prometheus, GitHub) could not be built: without one that keeps its
    /// timeouts and redirect policy the service does not start.
    #[error("building an HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// The pipeline's stages for this configuration and runner (`None`: evidence-only mode).
pub fn pipeline(config: &Config, runner: Option<Arc<dyn Runner>>) -> Result<Pipeline, StartError> {
    // One client for the one Prometheus: its limit of requests in flight is shared by
    // everything that asks it (the pages take it from the pipeline).
    let prometheus = Prometheus::new(
        config.ai.prometheus_url.as_str(),
        config.evidence.timeout,
        config.evidence.max_queries_in_flight.get(),
    )?;
    let measure = match config.evidence.enabled {
        true => Some(Measure {
            gatherer: Gatherer::new(
                prometheus.clone(),
                config.evidence.clone(),
                config.release.watch,
            ),
            judge: Judge::new(prometheus.clone(), &config.evidence, &config.release),
        }),
        false => None,
    };
    Ok(Pipeline {
        measure,
        changes: ChangeSource::new(config)?,
        diagnoser: Diagnoser::new(config, runner, prometheus),
    })
}

/// The runner the configuration names; `None` in evidence-only mode (`AI.BaseURL` empty).
pub async fn build_runner(
    config: &Config,
    metrics: Arc<Metrics>,
) -> Result<Option<Arc<dyn Runner>>, StartError> {
    if config.ai.evidence_only() {
        tracing::warn!(
            "AI.BaseURL is empty: evidence-only mode, reports are written from the evidence alone"
        );
        return Ok(None);
    }
    Ok(Some(match config.runner.kind {
        RunnerKind::Process => Arc::new(ProcessRunner::new(config)),
        RunnerKind::Docker => {
            let runner = DockerRunner::new(config, metrics).await?;
            // As the design does at startup: have the container ready before the first
            // alert. A failure here is not fatal; the first diagnosis tries again.
            if let Err(e) = runner.ensure_container().await {
                tracing::error!(error = %e, "runner container is not ready");
            }
            Arc::new(runner)
        }
        RunnerKind::Native => {
            let runner = NativeRunner::new(config)?;
            runner.warm_up().await;
            Arc::new(runner)
        }
    }))
}

/// Serves on `listener` until `shutdown` is cancelled, then drains the workers.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let stores = store::open(&config).await?;
    let store = stores.reports;
    let metrics = Arc::new(Metrics::new());
    let runner = build_runner(&config, Arc::clone(&metrics)).await?;
    let pipeline = pipeline(&config, runner)?;
    let diagnoser = pipeline.diagnoser.clone();
    let analyst = pipeline.measure.as_ref().map(|m| {
        Arc::new(crate::verdict::Analyst::new(
            m.judge.clone(),
            config.release.analysis_cache,
        ))
    });
    let prometheus = diagnoser.prometheus().clone();
    if let Some(runner) = diagnoser.runner() {
        if let Err(problem) = runner.check().await {
            tracing::warn!(%problem, "runner is not ready; diagnoses will fail until it is");
        }
    }
    let wake = Arc::new(Wake::default());
    let sinks = Arc::new(Sinks::new(&config)?);
    let evidence = pipeline.measure.clone().map(|measure| EvidenceContext {
        queue: Arc::clone(&stores.gatherings),
        measure,
        wake: Arc::clone(&wake),
        concurrency: config.evidence.concurrency.get(),
        poll: config.worker.poll,
    });
    let evidence_pool = evidence
        .clone()
        .map(|ctx| EvidencePool::start(ctx, Arc::clone(&metrics)));
    let pool = WorkerPool::start(WorkerContext {
        store: Arc::clone(&store),
        diagnoses: Arc::clone(&stores.diagnoses),
        pipeline,
        evidence,
        budget: Arc::new(Budget::new(&config.budget, Arc::clone(&stores.budget))),
        metrics: Arc::clone(&metrics),
        wake: Arc::clone(&wake),
        sinks: Arc::clone(&sinks),
        config: config.worker.clone(),
        auto_rollback: config.release.auto_rollback,
    });
    let rollbacks = config.release.auto_rollback == AutoRollback::On;
    let outbox = (!sinks.is_empty() || rollbacks).then(|| {
        Outbox::start(OutboxContext {
            queue: Arc::clone(&stores.outbox),
            sinks: Arc::clone(&sinks),
            deployments: Arc::clone(&stores.deployments),
            wake: Arc::clone(&wake),
            poll: config.worker.poll,
            metrics: Arc::clone(&metrics),
            timeout: config.notify.timeout,
        })
    });
    let intake = Intake {
        store: Arc::clone(&store),
        deployments: Arc::clone(&stores.deployments),
        wake: Arc::clone(&wake),
        metrics: Arc::clone(&metrics),
        watch_minutes: config.deployments.watch.as_secs() / 60,
        rerun_after: config.worker.rerun_after,
        max_history: config.report.max_history.get(),
        auto_rollback: config.release.auto_rollback,
    };
    let queue = QueueGate::start(config.worker.max_queue, Arc::clone(&store));
    let state = AppState {
        store,
        deployments: stores.deployments,
        intake,
        diagnoser,
        metrics,
        wake,
        tokens: Tokens::from_config(&config),
        protect_metrics: config.auth.protect_metrics,
        max_body_bytes: config.webhook.max_body_bytes,
        limits: Limits::of(&config.webhook),
        queue,
        inflight: Arc::new(tokio::sync::Semaphore::new(config.max_conns.get())),
        max_conns: config.max_conns.get(),
        timeout: config.timeout,
        prometheus,
        ui: Arc::new(http::ui::Ui::new(&config)),
        readiness: Arc::default(),
        analyst,
    };
    let app = with_tracing(http::router(state));
    tracing::info!(
        address = %listener.local_addr()?,
        store = ?config.store.kind,
        runner = config.runner.kind.as_str(),
        workers = config.worker.concurrency,
        "deploy-diagnosis listening"
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    tracing::info!("HTTP stopped; draining in-flight diagnoses");
    pool.shutdown().await;
    if let Some(evidence_pool) = evidence_pool {
        evidence_pool.shutdown().await;
    }
    if let Some(outbox) = outbox {
        outbox.shutdown().await;
    }
    served?;
    Ok(())
}

/// Request ids (`x-request-id`, made when absent, echoed back) and one span a request.
fn with_tracing(router: Router) -> Router {
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let path = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| request.uri().path().to_owned());
                tracing::info_span!("http", method = %request.method(), path, request_id)
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Cancels the token on SIGTERM or ctrl-c.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops the service");
                let _ = ctrl_c.await;
                trigger.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => tracing::info!("ctrl-c: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        trigger.cancel();
    });
    token
}
