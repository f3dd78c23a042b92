//! Operations: `/healthz`, `/readyz` (the store and the runner), `/metrics`.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::openapi::Guarded;
use super::AppState;

/// The process answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// `ok`.
    status: &'static str,
}

/// Whether the service can take and diagnose alerts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    /// Both parts are ready.
    ready: bool,
    /// The store.
    store: Check,
    /// The runner.
    runner: Check,
}

/// How long a readiness answer is kept: probes every few hundred milliseconds, or many at
/// once, cost one store write and one runner check a second.
const READINESS_KEPT: Duration = Duration::from_secs(1);

/// The last readiness answer, and when it was made.
#[derive(Default)]
pub struct ReadinessCache {
    /// Held while a check runs, so concurrent probes share it.
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, Value)>>,
}

/// One part's readiness.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Check {
    /// It answers.
    ok: bool,
    /// The runner's kind: `native`, `process`, `docker`, or `none` (evidence only).
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// What the runner said about itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    detail: Option<Value>,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn ok(kind: Option<&'static str>, detail: Option<Value>) -> Self {
        Self {
            ok: true,
            kind,
            detail,
            error: None,
        }
    }

    fn failed(kind: Option<&'static str>, error: String) -> Self {
        Self {
            ok: false,
            kind,
            detail: None,
            error: Some(error),
        }
    }
}

/// Liveness: the process answers (no token, not counted against `MaxConns`).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health)),
)]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store takes a write and the runner can run (no token; an answer is kept
/// for a second).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: see which part", body = Readiness),
    ),
)]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let mut last = state.readiness.last.lock().await;
    let (status, body) = match last.as_ref() {
        Some((at, status, body)) if at.elapsed() < READINESS_KEPT => (*status, body.clone()),
        _ => {
            let (status, body) = check(&state).await;
            *last = Some((Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    (status, Json(body)).into_response()
}

/// Checks the store (a write) and the runner.
async fn check(state: &AppState) -> (StatusCode, Value) {
    let store = match state.store.ping().await {
        Ok(()) => Check::ok(None, None),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the store did not take a write");
            Check::failed(None, "the store did not take a write (see the log)".into())
        }
    };
    let runner = match state.diagnoser.runner() {
        None => Check::ok(Some("none"), Some(crate::diagnosis::EVIDENCE_ONLY.into())),
        Some(runner) => match runner.check().await {
            Ok(detail) => Check::ok(Some(runner.kind().as_str()), Some(detail)),
            Err(e) => Check::failed(Some(runner.kind().as_str()), e),
        },
    };
    let ready = store.ok && runner.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_value(Readiness {
        ready,
        store,
        runner,
    })
    .unwrap_or_default();
    (status, body)
}

/// Prometheus metrics (text exposition format 0.0.4); the read token when
/// `Auth.ProtectMetrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        Guarded,
    ),
)]
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.store.count_by_status().await?;
    let depth = state.store.queue_depth(Utc::now()).await?;
    let text = state.metrics.render(&counts, depth);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
