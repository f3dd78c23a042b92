//! `/v1/flagger/*`: the analysis in Flagger's webhook conventions. Flagger POSTs
//! `{"name", "namespace", "phase", "checksum", "metadata"}` (its `CanaryWebhookPayload`,
//! metadata a map of strings) and reads only the status: a code above 202 fails the hook.
//!
//! - `rollout` (each analysis iteration): `200` unless the recommendation is *rollback*,
//!   then `412`; failures up to the canary's `threshold` roll it back.
//! - `confirm-promotion`: `200` only on *proceed*, else `412`; promotion waits.
//! - `rollback`: `200` only on *rollback* (Flagger rolls back now), else `412`.
//!
//! The deployment is `metadata.deploymentId`, else the newest registration whose
//! `service` is the canary's `name` and whose `environment` is its `namespace`. Flagger
//! sends no headers of its own; the token goes in the URL's user information
//! (`http://flagger:TOKEN@host/...`), which Go's HTTP client sends as Basic credentials.
//! The body of either answer says the verdict and its reasons: Flagger puts a failed
//! hook's body in the canary's events.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{capped_body, require_json, typed_body, ApiError, BodyLimit};
use super::openapi::{BodyRefused, Conflicting, CrossSite, Guarded, Invalid, Missing};
use super::AppState;
use crate::model::alert::DeploymentId;
use crate::model::deployment::Deployment;
use crate::model::verdict::{Analysis, Recommendation};
use crate::store::{Cursor, Page};

/// A webhook body: five short fields and the canary's metadata.
const HOOK_BODY: BodyLimit = BodyLimit(64 * 1024, "a Flagger webhook's limit");
/// Registrations read looking for a canary's `name` and `namespace`.
const SCAN_LIMIT: usize = 1_000;

/// What Flagger sends (`CanaryWebhookPayload`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct FlaggerPayload {
    /// The canary's name.
    name: String,
    /// The canary's namespace.
    namespace: String,
    /// The canary's phase (`Progressing`, `WaitingPromotion`, …).
    #[serde(default)]
    phase: String,
    /// Flagger's hash of the canary's configuration.
    #[serde(default)]
    #[allow(dead_code)]
    checksum: String,
    /// The webhook's `metadata`; `deploymentId` names the registered deployment.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Which webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Rollout,
    ConfirmPromotion,
    Rollback,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Rollout => "rollout",
            Hook::ConfirmPromotion => "confirm-promotion",
            Hook::Rollback => "rollback",
        }
    }

    /// Whether the hook passes on this recommendation.
    fn passes(self, recommendation: Recommendation) -> bool {
        match self {
            Hook::Rollout => recommendation != Recommendation::Rollback,
            Hook::ConfirmPromotion => recommendation == Recommendation::Proceed,
            Hook::Rollback => recommendation == Recommendation::Rollback,
        }
    }
}

/// The answer to a webhook, either way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct HookAnswer {
    /// Whether the hook passes (`200`; else `412`).
    pass: bool,
    /// `rollout`, `confirm-promotion` or `rollback`.
    hook: &'static str,
    /// The deployment measured.
    deployment_id: String,
    /// The canary's phase as Flagger sent it.
    phase: String,
    /// The analysis's verdict.
    verdict: &'static str,
    /// Its recommendation.
    recommendation: &'static str,
    /// Its confidence.
    confidence: f64,
    /// Why, with numbers.
    reasons: Vec<String>,
    /// The whole analysis.
    analysis: Analysis,
}

/// Flagger's `rollout` webhook: `200` unless the analysis says *rollback* (`412`).
#[utoipa::path(
    post,
    path = "/v1/flagger/rollout",
    tag = "deployments",
    request_body(content = FlaggerPayload, content_type = "application/json"),
    responses(
        (status = 200, description = "The canary may advance", body = HookAnswer),
        (status = 412, description = "The analysis says rollback", body = HookAnswer),
        Invalid, Missing, BodyRefused, CrossSite, Conflicting, Guarded,
    ),
)]
pub(super) async fn rollout(
    state: State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    answer(Hook::Rollout, state, headers, body).await
}

/// Flagger's `confirm-promotion` webhook: `200` only when the analysis says *proceed*.
#[utoipa::path(
    post,
    path = "/v1/flagger/confirm-promotion",
    tag = "deployments",
    request_body(content = FlaggerPayload, content_type = "application/json"),
    responses(
        (status = 200, description = "The analysis says proceed: promote", body = HookAnswer),
        (status = 412, description = "Hold, rollback or inconclusive: promotion waits", body = HookAnswer),
        Invalid, Missing, BodyRefused, CrossSite, Conflicting, Guarded,
    ),
)]
pub(super) async fn confirm_promotion(
    state: State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    answer(Hook::ConfirmPromotion, state, headers, body).await
}

/// Flagger's `rollback` webhook: `200` only when the analysis says *rollback*.
#[utoipa::path(
    post,
    path = "/v1/flagger/rollback",
    tag = "deployments",
    request_body(content = FlaggerPayload, content_type = "application/json"),
    responses(
        (status = 200, description = "The analysis says rollback: roll back now", body = HookAnswer),
        (status = 412, description = "No rollback", body = HookAnswer),
        Invalid, Missing, BodyRefused, CrossSite, Conflicting, Guarded,
    ),
)]
pub(super) async fn rollback(
    state: State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    answer(Hook::Rollback, state, headers, body).await
}

async fn answer(
    hook: Hook,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, HOOK_BODY.min(state.max_body_bytes)).await?;
    let payload: FlaggerPayload = typed_body(&bytes)?;
    let deployment = find(&state, &payload).await?;
    let analysis = super::deployments::analyse(&state, &deployment).await?;
    let pass = hook.passes(analysis.release.recommendation);
    tracing::info!(
        deployment_id = %deployment.deployment_id,
        hook = hook.as_str(),
        phase = %payload.phase,
        recommendation = analysis.release.recommendation.as_str(),
        pass,
        "Flagger webhook answered"
    );
    let status = if pass {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    let answer = HookAnswer {
        pass,
        hook: hook.as_str(),
        deployment_id: deployment.deployment_id.to_string(),
        phase: payload.phase,
        verdict: analysis.release.verdict.as_str(),
        recommendation: analysis.release.recommendation.as_str(),
        confidence: analysis.release.confidence,
        reasons: analysis.release.reasons.clone(),
        analysis,
    };
    Ok((status, Json(answer)).into_response())
}

/// The deployment a webhook is about: `metadata.deploymentId`, else the newest
/// registration of the canary's `name` (its `service`) in its `namespace` (its
/// `environment`).
async fn find(state: &AppState, payload: &FlaggerPayload) -> Result<Deployment, ApiError> {
    if let Some(raw) = payload.metadata.get("deploymentId") {
        let id = DeploymentId::parse(raw).map_err(|message| ApiError::BadRequest {
            code: "invalid_deployment_id",
            message,
            path: Some("metadata.deploymentId".into()),
        })?;
        return state
            .deployments
            .get_deployment(&id)
            .await?
            .ok_or_else(|| ApiError::NoDeployment(id.to_string()));
    }
    for (field, value) in [("name", &payload.name), ("namespace", &payload.namespace)] {
        if value.trim().is_empty() {
            return Err(ApiError::BadRequest {
                code: "invalid_body",
                message: format!(
                    "{field} is empty and metadata has no deploymentId: \
                     nothing names the deployment to analyse"
                ),
                path: Some(field.into()),
            });
        }
    }
    const PAGE: u32 = 100;
    let mut page = Page {
        before: None,
        after: None,
        limit: PAGE,
    };
    let mut read = 0;
    loop {
        let deployments = state.deployments.list_deployments(&page).await?;
        let Some(last) = deployments.last() else {
            break;
        };
        let next = Page {
            before: None,
            after: Some(Cursor {
                created_time: last.created_time,
                key: last.deployment_id.to_string(),
            }),
            limit: PAGE,
        };
        read += deployments.len();
        let full = deployments.len() == PAGE as usize;
        // Newest first: the first match is the newest registration.
        if let Some(d) = deployments
            .into_iter()
            .find(|d| d.service == payload.name && d.environment == payload.namespace)
        {
            return Ok(d);
        }
        if !full || read >= SCAN_LIMIT {
            break;
        }
        page = next;
    }
    Err(ApiError::NoDeployment(format!(
        "for the canary {}/{} (no registration whose service is {:?} and environment {:?} \
         among the newest {SCAN_LIMIT}; or name it in the webhook's metadata.deploymentId)",
        payload.namespace, payload.name, payload.name, payload.namespace
    )))
}
