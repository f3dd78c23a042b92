//! `POST /v1/alerts`: the webhook. Every alert is decided and stored before the answer;
//! a `202` means each change it made is on disk.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::error::{capped_body, require_json, ApiError, BodyLimit};
use super::openapi::{BodyRefused, CrossSite, Guarded, Invalid};
use super::AppState;
use crate::intake::webhook::{self, AlertmanagerWebhook};
use crate::intake::AlertResult;
use crate::model::alert::Alert;

/// What `POST /v1/alerts` did with each alert.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AlertsAccepted {
    /// Alerts in the request.
    received: usize,
    /// Diagnoses it queued.
    started: usize,
    /// Each alert's outcome, in the request's order.
    alerts: Vec<AlertResult>,
}

/// Either body the webhook takes: Alertmanager's (version 4), an object with `alerts`; or
/// the design's flat callback, one alert, any other object. `anyOf`, not `oneOf`: a body
/// of Alertmanager's would also pass for a flat alert with extra fields.
struct WebhookBody;

impl utoipa::PartialSchema for WebhookBody {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(AlertmanagerWebhook::name()))
            .item(Ref::from_schema_name(Alert::name()))
            .into()
    }
}

impl ToSchema for WebhookBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            AlertmanagerWebhook::name().into(),
            AlertmanagerWebhook::schema(),
        ));
        AlertmanagerWebhook::schemas(schemas);
        schemas.push((Alert::name().into(), Alert::schema()));
        Alert::schemas(schemas);
    }
}

/// Alertmanager's webhook. Every alert is decided and stored before the answer: a `202`
/// means each change it made is on disk.
#[utoipa::path(
    post,
    path = "/v1/alerts",
    tag = "alerts",
    request_body(content = WebhookBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Each alert's outcome", body = AlertsAccepted),
        Invalid,
        BodyRefused,
        CrossSite,
        Guarded,
    ),
)]
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
    let body = AlertsAccepted {
        received: results.len(),
        started,
        alerts: results,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
