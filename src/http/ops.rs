//! Operations: `/healthz`, `/readyz` (the store and the runner), `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let store = match state.store.ping().await {
        Ok(()) => json!({ "ok": true }),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: store unreachable");
            json!({ "ok": false, "error": "store unreachable" })
        }
    };
    let runner = match state.diagnoser.runner() {
        None => json!({ "ok": true, "kind": "none", "detail": crate::diagnosis::EVIDENCE_ONLY }),
        Some(runner) => match runner.check().await {
            Ok(detail) => json!({ "ok": true, "kind": runner.kind().as_str(), "detail": detail }),
            Err(e) => json!({ "ok": false, "kind": runner.kind().as_str(), "error": e }),
        },
    };
    let ready = store["ok"] == true && runner["ok"] == true;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "store": store, "runner": runner })),
    )
        .into_response()
}

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
