//! `POST /v1/alerts`: the webhook. Every alert is decided and stored before the answer;
//! a `202` means each change it made is on disk.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::error::{capped_body, require_json, ApiError, BodyLimit};
use super::AppState;
use crate::intake::webhook;

pub(super) async fn post_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let bytes = capped_body(
        &headers,
        body,
        BodyLimit(state.max_body_bytes, "Webhook.MaxBodyBytes"),
    )
    .await?;

    let now = Utc::now();
    let alerts = webhook::parse_webhook(&bytes, &now.to_rfc3339(), &state.limits).map_err(|e| {
        ApiError::BadRequest {
            code: "invalid_body",
            message: e.message,
            path: Some(e.path),
        }
    })?;

    // A full queue refuses the request before anything is stored: Alertmanager retries a
    // 503, so nothing is lost, and no more AI work is queued meanwhile.
    if let Err(depth) = state.queue.check() {
        state.metrics.limit_hit("max_queue", 1);
        return Err(ApiError::QueueFull(depth));
    }
    let mut results = Vec::with_capacity(alerts.len());
    for (index, alert) in alerts.into_iter().enumerate() {
        results.push(state.intake.take(index, alert, now).await?);
    }
    let started = results.iter().filter(|r| r.outcome.queued()).count();
    state.queue.queued(started as u64);
    let body = json!({ "received": results.len(), "started": started, "alerts": results });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
