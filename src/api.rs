//! The HTTP API: alert intake, reports, and operations endpoints. Handlers parse, call the
//! store once or twice, and answer; diagnoses run in the worker pool, never in a request.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::alert::{self, DeploymentId};
use crate::auth::{Access, Tokens};
use crate::deployment::{Deployment, DeploymentInput};
use crate::diagnosis::Diagnoser;
use crate::intake::{Intake, QueueGate};
use crate::metrics::Metrics;
use crate::report::{Engine, Feedback, HistoryEntry, Report, ReportBody, ReportStatus};
use crate::store::{
    Cursor, DeploymentStore, ListFilter, Page, Rediagnose, ReportStore, StoreError, Upsert,
};

/// Largest page of `GET /reports`.
pub const MAX_LIST_LIMIT: u32 = 500;

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
    /// Wakes a worker after a report is written.
    pub wake: Arc<Notify>,
    /// Gathers a new report's evidence in the background (`None`: disabled).
    pub evidence: Option<crate::evidence::Stage>,
    /// Who may read and write.
    pub tokens: Tokens,
    /// Whether `/metrics` needs the read token (`Auth.ProtectMetrics`).
    pub protect_metrics: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// What one webhook body may carry.
    pub limits: alert::Limits,
    /// `Worker.MaxQueue`.
    pub queue: Arc<QueueGate>,
}

/// Every way a request can fail, with its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or a parameter is wrong.
    #[error("{message}")]
    BadRequest {
        /// Machine code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// Where in the JSON body.
        path: Option<String>,
    },
    /// Missing or wrong token.
    #[error("missing or invalid token for this {0} (Authorization: Bearer <token>, or Basic with the token as password)")]
    Unauthorized(&'static str),
    /// Not JSON.
    #[error("content type must be application/json, got {0}")]
    UnsupportedMediaType(String),
    /// Body too large.
    #[error("request body is larger than {0} bytes (Webhook.MaxBodyBytes)")]
    PayloadTooLarge(usize),
    /// No such report.
    #[error("no report for deployment {0}")]
    NotFound(String),
    /// No such registered deployment.
    #[error("no registered deployment {0}")]
    NoDeployment(String),
    /// The request conflicts with the report's state.
    #[error("{0}")]
    Conflict(String),
    /// No such endpoint.
    #[error("no such endpoint; see the README for the API")]
    NoRoute,
    /// The queue is full (`Worker.MaxQueue`); Alertmanager retries a `503`.
    #[error("{0} reports are waiting for a worker (Worker.MaxQueue); try again later")]
    QueueFull(u64),
    /// The store failed; details go to the log, not the client.
    #[error("store unavailable")]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, path) = match &self {
            ApiError::BadRequest { code, path, .. } => {
                (StatusCode::BAD_REQUEST, *code, path.clone())
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            ),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
            }
            ApiError::NotFound(_) | ApiError::NoDeployment(_) | ApiError::NoRoute => {
                (StatusCode::NOT_FOUND, "not_found", None)
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::QueueFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_full", None),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store error");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
            }
        };
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let Some(path) = path {
            error["path"] = Value::String(path);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if let ApiError::QueueFull(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        }
        if status == StatusCode::UNAUTHORIZED {
            for challenge in [
                "Bearer realm=\"deploy-diagnosis\"",
                "Basic realm=\"deploy-diagnosis\"",
            ] {
                response.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static(challenge),
                );
            }
        }
        response
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/alerts", post(post_alerts))
        .route("/reports", get(list_reports))
        .route(
            "/reports/{deployment_id}",
            get(get_report).delete(delete_report),
        )
        .route("/reports/{deployment_id}/rediagnose", post(rediagnose))
        .route("/reports/{deployment_id}/feedback", post(feedback))
        .route("/reports/{deployment_id}/history", get(history))
        .route("/deployments", get(list_deployments))
        .route(
            "/deployments/{deployment_id}",
            get(get_deployment)
                .put(put_deployment)
                .delete(delete_deployment),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NoRoute })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Writes need the write token, reads the read token (or the write token); health and
/// readiness stay open for probes, and `/metrics` unless `Auth.ProtectMetrics`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let access = match (request.method(), request.uri().path()) {
        (_, "/healthz" | "/readyz") => Access::Open,
        (_, "/metrics") if !state.protect_metrics => Access::Open,
        (&Method::GET | &Method::HEAD, _) => Access::Read,
        _ => Access::Write,
    };
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

fn parse_deployment_id(raw: &str) -> Result<DeploymentId, ApiError> {
    DeploymentId::parse(raw).map_err(|message| ApiError::BadRequest {
        code: "invalid_deployment_id",
        message,
        path: None,
    })
}

/// Refuses a body that is not JSON (`415`).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json"))
    {
        return Err(ApiError::UnsupportedMediaType(if content_type.is_empty() {
            "none".into()
        } else {
            format!("{content_type:?}")
        }));
    }
    Ok(())
}

/// The request body, at most `limit` bytes (`413` beyond, before reading when declared).
async fn capped_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))
}

async fn post_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, state.max_body_bytes).await?;

    let now = Utc::now();
    let alerts = alert::parse_webhook(&bytes, &now.to_rfc3339(), &state.limits).map_err(|e| {
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
    let started = results
        .iter()
        .filter(|r| matches!(r.outcome, "started" | "restarted"))
        .count();
    state.queue.queued(started as u64);
    let body = json!({ "received": results.len(), "started": started, "alerts": results });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// A report as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportView {
    id: String,
    deployment_id: String,
    status: ReportStatus,
    #[serde(rename = "promQL")]
    prom_ql: Vec<String>,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_output: Option<String>,
    runner: Option<String>,
    attempts: u32,
    version: u32,
    created_time: DateTime<Utc>,
    updated_time: DateTime<Utc>,
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<crate::report::Usage>,
    /// The evidence stage's ranked facts; `null` until gathered.
    evidence: Option<Vec<crate::evidence::EvidenceItem>>,
    /// `ai` or `evidence` (completed reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<crate::report::Engine>,
    /// Why the AI did not write the report, when the evidence did.
    #[serde(skip_serializing_if = "Option::is_none")]
    ai_error: Option<String>,
    /// A person's feedback on this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback: Option<Feedback>,
    /// The registered deployment it is diagnosed with.
    deployment: Option<Deployment>,
    /// What the release changed, and its suspects.
    changes: Option<crate::changes::Changes>,
    /// Further alerts of the deployment, newest last.
    related_alerts: Vec<crate::report::RelatedAlert>,
    /// When a resolved alert for the deployment came.
    resolved_at: Option<DateTime<Utc>>,
    alert: alert::Alert,
}

impl From<Report> for ReportView {
    fn from(r: Report) -> Self {
        let ReportBody { prom_ql, content } = r.body().unwrap_or(ReportBody {
            prom_ql: Vec::new(),
            content: String::new(),
        });
        Self {
            id: r.id,
            deployment_id: r.deployment_id.to_string(),
            status: r.status,
            prom_ql,
            content,
            error: r.error,
            raw_output: r.raw_output,
            runner: r.runner,
            attempts: r.attempts,
            version: r.version,
            created_time: r.created_time,
            updated_time: r.updated_time,
            duration_ms: r.duration_ms,
            usage: r.usage,
            evidence: r.evidence,
            engine: r.engine,
            ai_error: r.ai_error,
            feedback: r.feedback,
            deployment: r.deployment,
            changes: r.changes,
            related_alerts: r.related_alerts,
            resolved_at: r.resolved_at,
            alert: r.alert,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryView {
    version: u32,
    status: ReportStatus,
    #[serde(rename = "promQL")]
    prom_ql: Vec<String>,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    runner: Option<String>,
    attempts: u32,
    created_time: DateTime<Utc>,
    updated_time: DateTime<Utc>,
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback: Option<Feedback>,
}

impl From<HistoryEntry> for HistoryView {
    fn from(h: HistoryEntry) -> Self {
        let body: Option<ReportBody> = serde_json::from_str(&h.content).ok();
        let (prom_ql, content) = body.map(|b| (b.prom_ql, b.content)).unwrap_or_default();
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

async fn get_report(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ReportView>, ApiError> {
    let id = parse_deployment_id(&raw)?;
    let report = state
        .store
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    Ok(Json(report.into()))
}

/// Query of `GET /reports`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    cursor: Option<String>,
}

async fn list_reports(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(ReportStatus::parse(s).ok_or_else(|| {
            bad_query(
                format!("status must be generating, completed or failed, not {s:?}"),
                "status",
            )
        })?),
    };
    let page = page(&q)?;
    let limit = page.limit;
    let reports = state.store.list(&ListFilter { status, page }).await?;
    let next = next_cursor(&reports, limit, |r| (r.created_time, r.id.clone()));
    let reports: Vec<ReportView> = reports.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "reports": reports, "nextCursor": next })))
}

/// The cursor of the page after a full one.
fn next_cursor<T>(
    items: &[T],
    limit: u32,
    key: impl Fn(&T) -> (DateTime<Utc>, String),
) -> Option<String> {
    let last = items.last().filter(|_| items.len() as u32 == limit)?;
    let (created_time, key) = key(last);
    Some(Cursor { created_time, key }.encode())
}

fn bad_query(message: String, param: &str) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_query",
        message,
        path: Some(param.to_owned()),
    }
}

/// `limit` (1 to 500, default 50), `cursor` (a previous answer's `nextCursor`) and `before`
/// (RFC 3339) of a listing.
fn page(q: &ListQuery) -> Result<Page, ApiError> {
    let bad = bad_query;
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => 50,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(
                    format!("limit must be a number from 1 to {MAX_LIST_LIMIT}, not {s:?}"),
                    "limit",
                )
            })?,
    };
    let before = match q.before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    bad(
                        format!("before must be an RFC 3339 time ({e}), not {s:?}"),
                        "before",
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    let after = match q.cursor.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Cursor::decode(s).ok_or_else(|| {
            bad(
                format!("cursor {s:?} is not a nextCursor this service gave"),
                "cursor",
            )
        })?),
    };
    Ok(Page {
        before,
        after,
        limit,
    })
}

async fn rediagnose(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_deployment_id(&raw)?;
    match state.store.rediagnose(&id, Utc::now()).await? {
        Rediagnose::NotFound => Err(ApiError::NotFound(id.to_string())),
        Rediagnose::InProgress => Err(ApiError::Conflict(format!(
            "a diagnosis of deployment {id} is already running or queued"
        ))),
        Rediagnose::Restarted(report) => {
            if let Some(stage) = &state.evidence {
                stage.spawn(&report);
            }
            state.wake.notify_one();
            tracing::info!(deployment_id = %id, version = report.version, "re-diagnosis queued");
            Ok((StatusCode::ACCEPTED, Json(ReportView::from(*report))).into_response())
        }
    }
}

/// `POST /reports/{id}/feedback`, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FeedbackBody {
    score: i64,
    root_cause_correct: bool,
    #[serde(default)]
    comment: String,
}

/// A JSON body as `T`, or a `400` naming the path of what is wrong.
fn typed_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A missing field is reported at the object; name the field instead.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        ApiError::BadRequest {
            code: "invalid_body",
            path: Some(missing.unwrap_or(&path).to_owned()),
            message,
        }
    })
}

/// Longest feedback comment, in characters.
const MAX_COMMENT_CHARS: usize = 2000;

async fn feedback(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_deployment_id(&raw)?;
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, state.max_body_bytes).await?;
    let bad = |path: &str, message: String| ApiError::BadRequest {
        code: "invalid_body",
        message,
        path: Some(path.to_owned()),
    };
    let body: FeedbackBody = typed_body(&bytes)?;
    if !(1..=5).contains(&body.score) {
        return Err(bad(
            "score",
            format!("score must be 1 to 5, got {}", body.score),
        ));
    }
    if body.comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(bad(
            "comment",
            format!("comment is longer than {MAX_COMMENT_CHARS} characters"),
        ));
    }
    let report = state
        .store
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    if report.status == ReportStatus::Generating {
        return Err(ApiError::Conflict(format!(
            "deployment {id}'s report is being diagnosed; feedback applies to a finished version"
        )));
    }
    let feedback = Feedback {
        score: body.score as u8,
        root_cause_correct: body.root_cause_correct,
        comment: body.comment,
        at: Utc::now(),
    };
    if !state
        .store
        .set_feedback(&id, report.version, &feedback)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "deployment {id}'s report changed while the feedback was stored; send it again"
        )));
    }
    state
        .metrics
        .feedback(&feedback, report.engine.map_or("none", Engine::as_str));
    tracing::info!(deployment_id = %id, version = report.version, score = feedback.score, "feedback stored");
    Ok((
        StatusCode::OK,
        Json(json!({ "deploymentId": id.to_string(), "version": report.version, "feedback": feedback })),
    )
        .into_response())
}

async fn history(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_deployment_id(&raw)?;
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
    Ok(Json(json!({ "deploymentId": id, "versions": versions })))
}

async fn delete_report(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_deployment_id(&raw)?;
    if state.store.delete(&id).await? {
        tracing::info!(deployment_id = %id, "report deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(id.to_string()))
    }
}

async fn put_deployment(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_deployment_id(&raw)?;
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, state.max_body_bytes).await?;
    let input: DeploymentInput = typed_body(&bytes)?;
    let deployment =
        input
            .into_deployment(id.clone(), Utc::now())
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_body",
                message: e.message,
                path: Some(e.path),
            })?;
    let upsert = state.deployments.put_deployment(&deployment).await?;
    let stored = state
        .deployments
        .get_deployment(&id)
        .await?
        .ok_or_else(|| ApiError::NoDeployment(id.to_string()))?;
    tracing::info!(deployment_id = %id, hosts = stored.hosts.len(), created = (upsert == Upsert::Created), "deployment registered");
    let status = match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Updated => StatusCode::OK,
    };
    Ok((status, Json(stored)).into_response())
}

async fn get_deployment(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    let id = parse_deployment_id(&raw)?;
    state
        .deployments
        .get_deployment(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NoDeployment(id.to_string()))
}

async fn list_deployments(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.status.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: "deployments have no status; use limit, cursor and before".into(),
            path: Some("status".into()),
        });
    }
    let page = page(&q)?;
    let deployments = state.deployments.list_deployments(&page).await?;
    let next = next_cursor(&deployments, page.limit, |d| {
        (d.created_time, d.deployment_id.to_string())
    });
    Ok(Json(
        json!({ "deployments": deployments, "nextCursor": next }),
    ))
}

async fn delete_deployment(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_deployment_id(&raw)?;
    if state.deployments.delete_deployment(&id).await? {
        tracing::info!(deployment_id = %id, "deployment unregistered");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NoDeployment(id.to_string()))
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
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

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
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
