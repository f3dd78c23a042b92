//! The HTTP API: alert intake, reports, the deployments registry, and operations
//! endpoints. Handlers parse, call the intake or the store once or twice, and answer;
//! diagnoses run in the worker pool, never in a request.
//!
//! - [`auth`]: read and write tokens; [`error`]: the one error type and request helpers;
//! - one file a resource: [`alerts`], [`reports`], [`deployments`], [`ops`]; [`paging`];
//! - [`openapi`]: `/openapi.json`, made from the routes' own `#[utoipa::path]`s;
//! - [`ui`]: the report pages.

pub mod alerts;
pub mod auth;
pub mod deployments;
pub mod error;
pub mod flagger;
pub mod openapi;
pub mod ops;
pub mod paging;
pub mod reports;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::diagnosis::Diagnoser;
use crate::evidence::Prometheus;
use crate::intake::webhook::Limits;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::store::{DeploymentStore, ReportStore, Wake};
use crate::worker::gate::QueueGate;
use auth::{Access, Tokens};
use error::ApiError;
pub use paging::MAX_LIST_LIMIT;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Reports.
    pub store: Arc<dyn ReportStore>,
    /// The deployments registry.
    pub deployments: Arc<dyn DeploymentStore>,
    /// What each alert does.
    pub intake: Intake,
    /// For readiness of the runner.
    pub diagnoser: Diagnoser,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the workers and the evidence pool after a report is queued.
    pub wake: Arc<Wake>,
    /// Who may read and write.
    pub tokens: Tokens,
    /// Whether `/metrics` needs the read token (`Auth.ProtectMetrics`).
    pub protect_metrics: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// What one webhook body may carry.
    pub limits: Limits,
    /// `Worker.MaxQueue`.
    pub queue: Arc<QueueGate>,
    /// Requests handled at once (`MaxConns`).
    pub inflight: Arc<Semaphore>,
    /// `MaxConns`.
    pub max_conns: usize,
    /// How long a request may take (`Timeout`).
    pub timeout: Duration,
    /// Prometheus, to check the RED query templates a registration carries.
    pub prometheus: Prometheus,
    /// The report pages.
    pub ui: Arc<ui::Ui>,
    /// The last `/readyz` answer.
    pub readiness: Arc<ops::ReadinessCache>,
    /// Releases analysed on demand (`None` when `Evidence.Enabled` is false).
    pub analyst: Option<Arc<crate::verdict::Analyst>>,
}

/// The routes, each described in `/openapi.json` by its handler's `#[utoipa::path]`.
pub fn router(state: AppState) -> Router {
    let (routes, document) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(alerts::post_alerts))
        .routes(routes!(reports::list_reports))
        .routes(routes!(reports::get_report, reports::delete_report))
        .routes(routes!(reports::rediagnose))
        .routes(routes!(reports::feedback))
        .routes(routes!(reports::history))
        .routes(routes!(deployments::list_deployments))
        .routes(routes!(
            deployments::get_deployment,
            deployments::put_deployment,
            deployments::delete_deployment
        ))
        .routes(routes!(deployments::get_analysis))
        .routes(routes!(flagger::rollout))
        .routes(routes!(flagger::confirm_promotion))
        .routes(routes!(flagger::rollback))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .merge(ui::routes())
        .split_for_parts();
    let protect_metrics = state.protect_metrics;
    let document = openapi::finish(document, &state.tokens, |method, path| {
        access(method, path, protect_metrics)
    });
    let json = openapi::served(&document);
    routes
        .route("/openapi.json", get(move || openapi::serve(json.clone())))
        .fallback(|| async { ApiError::NoRoute })
        .layer(middleware::from_fn_with_state(state.clone(), same_origin))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), bounded))
        .with_state(state)
}

/// At most `MaxConns` requests at once (a further one is answered `503` at once, not
/// queued), each answered within `Timeout`. Health probes are not counted, so a saturated
/// service still says it is alive.
async fn bounded(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let permit = match request.uri().path() {
        "/healthz" | "/readyz" => None,
        _ => match Arc::clone(&state.inflight).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                state.metrics.limit_hit("max_conns", 1);
                return ApiError::Busy(state.max_conns).into_response();
            }
        },
    };
    let response = match tokio::time::timeout(state.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.limit_hit("timeout", 1);
            ApiError::TimedOut(state.timeout.as_millis()).into_response()
        }
    };
    drop(permit);
    response
}

/// What a request needs: writes the write token, reads the read token (or the write
/// token); health, readiness and the API's description stay open, and `/metrics` unless
/// `Auth.ProtectMetrics`.
fn access(method: &Method, path: &str, protect_metrics: bool) -> Access {
    match (method, path) {
        (_, "/healthz" | "/readyz" | "/openapi.json") => Access::Open,
        (_, "/metrics") if !protect_metrics => Access::Open,
        // Flagger's webhooks only read: the analysis, answered in its conventions.
        (&Method::POST, p) if p.starts_with("/v1/flagger/") => Access::Read,
        (&Method::GET | &Method::HEAD, _) => Access::Read,
        _ => Access::Write,
    }
}

/// Checks the request's token against [`access`].
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let access = access(
        request.method(),
        request.uri().path(),
        state.protect_metrics,
    );
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.tokens.allows(access, authorization) {
        let what = if access == Access::Write {
            "write"
        } else {
            "read"
        };
        return ApiError::Unauthorized(what).into_response();
    }
    next.run(request).await
}

/// A change (any method but `GET`, `HEAD` and `OPTIONS`) whose `Origin` is another site's,
/// or `null`, is refused (`403`) before its handler runs: a browser resends cached Basic
/// credentials with a cross-site form, and a form can reach a route that takes no body.
/// Clients that are not browsers (Alertmanager, curl, CI) send no `Origin`.
async fn same_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if !auth::own_origin(origin, host, state.ui.external_origin()) {
            return ApiError::Forbidden(format!(
                "a change requested from {origin:?} is not this service's own page: \
                 send it without an Origin (an API client), or from the service's pages"
            ))
            .into_response();
        }
    }
    next.run(request).await
}
