//! `/reports`: a report, listings, re-diagnosis, feedback, history, deletion. A report is
//! served in the design's shape (`promQL` and `content` as two fields).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{
    capped_body, require_json, typed_body, ApiError, DeploymentPath, Path, Query, FEEDBACK_BODY,
};
use super::openapi::{BodyRefused, Conflicting, CrossSite, Guarded, Invalid, Missing};
use super::paging::{bad_query, next_cursor, page, ListQuery};
use super::AppState;
use crate::model::alert::DeploymentId;
use crate::model::report::{
    Engine, Feedback, HistoryEntry, Report, ReportStatus, ReportView, RunnerKind,
};
use crate::model::verdict::Attribution;
use crate::store::{ListFilter, Rediagnose};

/// A page of reports, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReportPage {
    reports: Vec<ReportView>,
    /// The `cursor` of the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A report's earlier versions, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct History {
    deployment_id: String,
    versions: Vec<HistoryView>,
}

/// One earlier version of a report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct HistoryView {
    version: u32,
    status: ReportStatus,
    #[serde(rename = "promQL")]
    prom_ql: Vec<String>,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    runner: Option<RunnerKind>,
    attempts: u32,
    created_time: DateTime<Utc>,
    updated_time: DateTime<Utc>,
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback: Option<Feedback>,
}

/// Feedback, as stored on a version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct FeedbackStored {
    deployment_id: String,
    version: u32,
    feedback: Feedback,
}

impl From<HistoryEntry> for HistoryView {
    fn from(h: HistoryEntry) -> Self {
        let (prom_ql, content) = h.body.map(|b| (b.prom_ql, b.content)).unwrap_or_default();
        Self {
            version: h.version,
            status: h.status,
            prom_ql,
            content,
            error: h.error,
            runner: h.runner,
            attempts: h.attempts,
            created_time: h.created_time,
            updated_time: h.updated_time,
            duration_ms: h.duration_ms,
            feedback: h.feedback,
        }
    }
}

/// A deployment's report, in the design's shape (`promQL` and `content`) with the verdict,
/// the evidence, the changes and the notifications.
#[utoipa::path(
    get,
    path = "/reports/{deployment_id}",
    tag = "reports",
    params(DeploymentPath),
    responses((status = 200, description = "The report", body = ReportView), Invalid, Missing, Guarded),
)]
pub(super) async fn get_report(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
) -> Result<Json<ReportView>, ApiError> {
    let id = path.id()?;
    Ok(Json(report_of(&state, &id).await?.into()))
}

/// `id`'s report, or a `404`.
pub(super) async fn report_of(state: &AppState, id: &DeploymentId) -> Result<Report, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(id.to_string()))
}

/// The filter and page of a listing's query.
pub(super) fn list_filter(q: &ListQuery) -> Result<ListFilter, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(ReportStatus::parse(s).ok_or_else(|| {
            bad_query(
                format!("status must be generating, completed or failed, not {s:?}"),
                "status",
            )
        })?),
    };
    let verdict = match q.verdict.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => Some(Attribution::parse(v).ok_or_else(|| {
            bad_query(
                format!("verdict must be release, not_release or inconclusive, not {v:?}"),
                "verdict",
            )
        })?),
    };
    Ok(ListFilter {
        status,
        verdict,
        page: page(&q.paging())?,
    })
}

/// Reports, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/reports",
    tag = "reports",
    params(ListQuery),
    responses((status = 200, description = "A page of reports", body = ReportPage), Invalid, Guarded),
)]
pub(super) async fn list_reports(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ReportPage>, ApiError> {
    let filter = list_filter(&q)?;
    let limit = filter.page.limit;
    let reports = state.store.list(&filter).await?;
    let next = next_cursor(&reports, limit, |r| (r.created_time, r.id.clone()));
    let reports: Vec<ReportView> = reports.into_iter().map(Into::into).collect();
    Ok(Json(ReportPage {
        reports,
        next_cursor: next,
    }))
}

/// `POST /reports/{id}/rediagnose`, as sent: nothing yet (an empty object, or no body).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RediagnoseBody {}

/// Diagnoses the deployment again: a new version, queued (the current one goes to the
/// history). The body is `application/json` (`{}`, or empty), so that no cross-site form
/// can send it.
#[utoipa::path(
    post,
    path = "/reports/{deployment_id}/rediagnose",
    tag = "reports",
    params(DeploymentPath),
    request_body(content = Option<RediagnoseBody>, content_type = "application/json"),
    responses(
        (status = 202, description = "The new version, queued", body = ReportView),
        Invalid,
        Missing,
        Conflicting,
        BodyRefused,
        CrossSite,
        Guarded,
    ),
)]
pub(super) async fn rediagnose(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path.id()?;
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, FEEDBACK_BODY.min(state.max_body_bytes)).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let RediagnoseBody {} = typed_body(&bytes)?;
    }
    let report = restart(&state, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(ReportView::from(report))).into_response())
}

/// Queues a new version of `id`'s report.
pub(super) async fn restart(state: &AppState, id: &DeploymentId) -> Result<Report, ApiError> {
    let now = Utc::now();
    match state
        .intake
        .rediagnose(id, now, state.intake.restart(now, false))
        .await?
    {
        Rediagnose::NotFound => Err(ApiError::NotFound(id.to_string())),
        Rediagnose::InProgress => Err(ApiError::Conflict(format!(
            "a diagnosis of deployment {id} is already running or queued"
        ))),
        // A person's re-diagnosis is never too soon.
        Rediagnose::TooSoon(_) => Err(ApiError::Conflict(format!(
            "deployment {id} cannot be diagnosed again yet"
        ))),
        Rediagnose::Restarted { report, .. } => {
            tracing::info!(deployment_id = %id, version = report.version, "re-diagnosis queued");
            Ok(*report)
        }
    }
}

/// `POST /reports/{id}/feedback`, as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FeedbackBody {
    /// 1 (useless) to 5 (exactly right).
    #[schema(minimum = 1, maximum = 5)]
    score: i64,
    /// Whether the report named the real root cause.
    root_cause_correct: bool,
    /// Free text, at most 2,000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    comment: String,
}

/// Longest feedback comment, in characters.
const MAX_COMMENT_CHARS: usize = 2000;

/// A person's judgement of the current (finished) version.
#[utoipa::path(
    post,
    path = "/reports/{deployment_id}/feedback",
    tag = "reports",
    params(DeploymentPath),
    request_body(content = FeedbackBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The feedback, as stored", body = FeedbackStored),
        Invalid,
        Missing,
        Conflicting,
        BodyRefused,
        CrossSite,
        Guarded,
    ),
)]
pub(super) async fn feedback(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path.id()?;
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, FEEDBACK_BODY.min(state.max_body_bytes)).await?;
    let body: FeedbackBody = typed_body(&bytes)?;
    let (version, feedback) = store_feedback(
        &state,
        &id,
        body.score,
        body.root_cause_correct,
        body.comment,
    )
    .await?;
    Ok((
        StatusCode::OK,
        Json(FeedbackStored {
            deployment_id: id.to_string(),
            version,
            feedback,
        }),
    )
        .into_response())
}

/// Checks and stores feedback on the current version of `id`'s report (which must be
/// finished): the version and the feedback as stored.
pub(super) async fn store_feedback(
    state: &AppState,
    id: &DeploymentId,
    score: i64,
    root_cause_correct: bool,
    comment: String,
) -> Result<(u32, Feedback), ApiError> {
    let bad = |path: &str, message: String| ApiError::BadRequest {
        code: "invalid_body",
        message,
        path: Some(path.to_owned()),
    };
    if !(1..=5).contains(&score) {
        return Err(bad("score", format!("score must be 1 to 5, got {score}")));
    }
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(bad(
            "comment",
            format!("comment is longer than {MAX_COMMENT_CHARS} characters"),
        ));
    }
    let report = report_of(state, id).await?;
    if report.status() == ReportStatus::Generating {
        return Err(ApiError::Conflict(format!(
            "deployment {id}'s report is being diagnosed; feedback applies to a finished version"
        )));
    }
    let feedback = Feedback {
        score: score as u8,
        root_cause_correct,
        comment,
        at: Utc::now(),
    };
    if !state
        .store
        .set_feedback(id, report.version, &feedback)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "deployment {id}'s report changed while the feedback was stored; send it again"
        )));
    }
    state
        .metrics
        .feedback(&feedback, report.engine().map_or("none", Engine::as_str));
    tracing::info!(deployment_id = %id, version = report.version, score = feedback.score, "feedback stored");
    Ok((report.version, feedback))
}

/// The report's earlier versions.
#[utoipa::path(
    get,
    path = "/reports/{deployment_id}/history",
    tag = "reports",
    params(DeploymentPath),
    responses((status = 200, description = "Earlier versions", body = History), Invalid, Missing, Guarded),
)]
pub(super) async fn history(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
) -> Result<Json<History>, ApiError> {
    let id = path.id()?;
    if state.store.get(&id).await?.is_none() {
        return Err(ApiError::NotFound(id.to_string()));
    }
    let versions: Vec<HistoryView> = state
        .store
        .history(&id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(History {
        deployment_id: id.to_string(),
        versions,
    }))
}

/// Deletes the report and its history.
#[utoipa::path(
    delete,
    path = "/reports/{deployment_id}",
    tag = "reports",
    params(DeploymentPath),
    responses((status = 204, description = "Deleted"), Invalid, Missing, CrossSite, Guarded),
)]
pub(super) async fn delete_report(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
) -> Result<StatusCode, ApiError> {
    let id = path.id()?;
    if state.store.delete(&id).await? {
        tracing::info!(deployment_id = %id, "report deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(id.to_string()))
    }
}
