//! Building the application from its configuration and running it until shutdown.

use std::sync::Arc;

use axum::extract::Request;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::{self, AppState};
use crate::config::{Config, RunnerKind};
use crate::diagnosis::Diagnoser;
use crate::metrics::Metrics;
use crate::runner::docker::DockerRunner;
use crate::runner::native::NativeRunner;
use crate::runner::process::ProcessRunner;
use crate::runner::Runner;
use crate::store::{self, StoreError};
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
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
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
    let diagnoser = Diagnoser::new(&config, build_runner(&config, Arc::clone(&metrics)).await?);
    if let Some(runner) = diagnoser.runner() {
        if let Err(problem) = runner.check().await {
            tracing::warn!(%problem, "runner is not ready; diagnoses will fail until it is");
        }
    }
    let wake = Arc::new(Notify::new());
    let evidence = crate::evidence::Stage::new(&config, Arc::clone(&store));
    let pool = WorkerPool::start(WorkerContext {
        store: Arc::clone(&store),
        deployments: Arc::clone(&stores.deployments),
        changes: crate::github::ChangeSource::new(&config),
        budget: Arc::new(crate::budget::Budget::new(&config.budget)),
        evidence: evidence.clone(),
        diagnoser: diagnoser.clone(),
        metrics: Arc::clone(&metrics),
        wake: Arc::clone(&wake),
        config: config.worker.clone(),
    });
    let intake = crate::intake::Intake {
        store: Arc::clone(&store),
        deployments: Arc::clone(&stores.deployments),
        evidence: evidence.clone(),
        wake: Arc::clone(&wake),
        metrics: Arc::clone(&metrics),
        watch_minutes: config.deployments.watch.as_secs() / 60,
    };
    let queue = crate::intake::QueueGate::start(config.worker.max_queue, Arc::clone(&store));
    let state = AppState {
        store,
        deployments: stores.deployments,
        intake,
        diagnoser,
        metrics,
        wake,
        evidence,
        tokens: config.tokens(),
        protect_metrics: config.auth.protect_metrics,
        max_body_bytes: config.webhook.max_body_bytes,
        limits: config.webhook.limits(),
        queue,
    };
    let app = with_tracing(api::router(state));
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
