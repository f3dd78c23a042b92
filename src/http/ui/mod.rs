//! `/ui/`: the report pages, rendered by the service (maud; the stylesheet is embedded in
//! the binary; no script at all, so reading works with JavaScript off).
//!
//! Reading takes the read token like the API (a browser's Basic prompt works: the `401`
//! carries a `Basic` challenge); the two forms (feedback, re-diagnose) take the write
//! token and are guarded against cross-site request forgery twice: the `Origin` must be
//! the service's own, and each form carries a token (HMAC of the action and deployment
//! under a key made at start, so a form from before a restart is refused once). Every
//! page is sent with a `Content-Security-Policy` that allows no script and no inline
//! style.

mod chart;
mod pages;
mod text;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::value::MapDeserializer;
use serde::Deserialize;
use sha2::Sha256;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{capped_body, ApiError, DeploymentPath, Path, Query, FEEDBACK_BODY};
use super::openapi::{Conflicting, FormRefused, Guarded, Invalid, Missing};
use super::paging::{next_cursor, ListQuery};
use super::reports::{list_filter, report_of, restart, store_feedback};
use super::AppState;
use crate::config::Config;
use crate::model::report::{Report, ReportStatus};
use crate::redact::{redact_url_credentials, strip_url_credentials};
use chart::{Chart, Span};
use pages::{Filters, Links};
use text::Text;

/// Reports whose charts are kept (a finished version's charts do not change).
const CACHED_REPORTS: usize = 256;

/// Charts by report id and version.
type ChartCache = Mutex<HashMap<(String, u32), Arc<Vec<Chart>>>>;

/// The pages' settings and caches.
pub struct Ui {
    text: &'static Text,
    /// Where the pages link Prometheus graphs.
    prometheus_link: String,
    /// The Prometheus the service measures with.
    prometheus_url: String,
    /// `Evidence.BaselineMinutes`: the charts' time before the release.
    baseline: Duration,
    /// `UI.ExternalURL`'s origin: a form from it is the service's own too.
    external_origin: Option<String>,
    form_key: [u8; 32],
    charts: ChartCache,
}

impl Ui {
    /// The pages of `config`, with a new form key.
    pub fn new(config: &Config) -> Self {
        let mut form_key = [0u8; 32];
        form_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        form_key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        // Shown on every page and in its links: never with the URL's credentials.
        let prometheus_url =
            redact_url_credentials(config.ai.prometheus_url.as_str().trim_end_matches('/'));
        Self {
            text: Text::of(config.ui.language),
            prometheus_link: match &config.ui.prometheus_external_url {
                Some(u) => strip_url_credentials(u.as_str()),
                None => strip_url_credentials(config.ai.prometheus_url.as_str()),
            }
            .trim_end_matches('/')
            .to_owned(),
            prometheus_url,
            baseline: config.evidence.baseline,
            external_origin: config
                .ui
                .external_url
                .as_ref()
                .and_then(|u| url::Url::parse(u.as_str()).ok())
                .map(|u| u.origin().ascii_serialization()),
            form_key,
            charts: Mutex::new(HashMap::new()),
        }
    }

    /// `UI.ExternalURL`'s origin, when set.
    pub(super) fn external_origin(&self) -> Option<&str> {
        self.external_origin.as_deref()
    }

    /// The token of `action` on `deployment`'s forms.
    fn form_token(&self, action: &str, deployment: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.form_key).expect("HMAC takes a key of any size");
        mac.update(action.as_bytes());
        mac.update(b"\n");
        mac.update(deployment.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether a form's token is the one this service gave (compared in constant time).
    fn token_matches(&self, action: &str, deployment: &str, token: &str) -> bool {
        let expected = self.form_token(action, deployment);
        expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The pages' routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(to_list))
        .routes(routes!(list))
        .routes(routes!(style))
        .routes(routes!(report))
        .routes(routes!(rediagnose))
        .routes(routes!(feedback))
        .layer(axum::middleware::map_response(secure))
}

/// To the list.
#[utoipa::path(
    get,
    path = "/ui",
    operation_id = "ui_to_list",
    tag = "pages",
    responses((status = 308, description = "To `/ui/`", headers(("Location" = String))), Guarded),
)]
async fn to_list() -> Redirect {
    Redirect::permanent("/ui/")
}

/// No script, no inline style, no framing, forms only to this service.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The pages' stylesheet.
#[utoipa::path(
    get,
    path = "/ui/assets/style.css",
    operation_id = "ui_style",
    tag = "pages",
    responses((status = 200, description = "The stylesheet", body = String, content_type = "text/css; charset=utf-8"), Guarded),
)]
async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../assets/ui/style.css"),
    )
}

/// The list's query beyond the API's filters and paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EngineQuery {
    #[param(schema_with = super::openapi::engine_filter)]
    engine: Option<String>,
}

/// The reports, newest first: status, verdict and engine filters, a page at a time.
#[utoipa::path(
    get,
    path = "/ui/",
    operation_id = "ui_list",
    tag = "pages",
    params(ListQuery, EngineQuery),
    responses((status = 200, description = "The list page", body = String, content_type = "text/html; charset=utf-8"), Invalid, Guarded),
)]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
    Query(e): Query<EngineQuery>,
) -> Result<Html<String>, ApiError> {
    let filter = list_filter(&q)?;
    let engine = e.engine.as_deref().unwrap_or("");
    if !["", "ai", "evidence"].contains(&engine) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("engine must be ai or evidence, not {engine:?}"),
            path: Some("engine".into()),
        });
    }
    let limit = filter.page.limit;
    let reports = state.store.list(&filter).await?;
    let next = next_cursor(&reports, limit, |r| (r.created_time, r.id.clone()));
    // The engine is filtered within each page (the store's listing has no engine index).
    let reports: Vec<Report> = reports
        .into_iter()
        .filter(|r| engine.is_empty() || r.engine().is_some_and(|e| e.as_str() == engine))
        .collect();
    let filters = Filters {
        status: q.status.as_deref().unwrap_or(""),
        verdict: q.verdict.as_deref().unwrap_or(""),
        engine,
    };
    Ok(Html(
        pages::list(state.ui.text, &reports, &filters, next).into_string(),
    ))
}

/// A report: verdict, the four sections, evidence with charts, changes, history, forms.
#[utoipa::path(
    get,
    path = "/ui/reports/{deployment_id}",
    operation_id = "ui_report",
    tag = "pages",
    params(DeploymentPath),
    responses((status = 200, description = "The report page", body = String, content_type = "text/html; charset=utf-8"), Invalid, Missing, Guarded),
)]
async fn report(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
) -> Result<Html<String>, ApiError> {
    let id = path.id()?;
    let report = report_of(&state, &id).await?;
    let history = state.store.history(&id).await?;
    let ui = &state.ui;
    let span = Span::of(&report, ui.baseline);
    let key = (report.id.clone(), report.version);
    let cached = ui
        .charts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let charts = match cached {
        Some(charts) => charts,
        None => {
            let charts = Arc::new(chart::gather(&state.prometheus, &report, span).await);
            // A finished version's charts are final; a generating one's are not kept.
            if report.status() != ReportStatus::Generating
                && charts.iter().all(|c| c.error.is_none())
            {
                let mut cache = ui.charts.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHED_REPORTS {
                    cache.clear();
                }
                cache.insert(key, Arc::clone(&charts));
            }
            charts
        }
    };
    let id_text = id.as_str();
    let tokens = (
        ui.form_token("rediagnose", id_text),
        ui.form_token("feedback", id_text),
    );
    Ok(Html(
        pages::report(
            ui.text,
            &report,
            &history,
            &charts,
            &span,
            &Links {
                prometheus: &ui.prometheus_link,
            },
            (&tokens.0, &tokens.1),
            &ui.prometheus_url,
        )
        .into_string(),
    ))
}

/// A form's fields, after the `Origin` and token checks for `action` on `deployment`.
async fn checked_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    action: &str,
    deployment: &str,
) -> Result<HashMap<String, String>, ApiError> {
    // Every write's `Origin` is checked by `super::same_origin`; a form must have one.
    if !headers.contains_key(header::ORIGIN) {
        return Err(ApiError::Forbidden(
            "a form must come with its Origin".into(),
        ));
    }
    let bytes = capped_body(headers, body, FEEDBACK_BODY.min(state.max_body_bytes)).await?;
    let fields: HashMap<String, String> =
        url::form_urlencoded::parse(&bytes).into_owned().collect();
    let token = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !state.ui.token_matches(action, deployment, token) {
        return Err(ApiError::Forbidden(
            "the form's token is missing or stale: reload the page and send it again".into(),
        ));
    }
    Ok(fields)
}

/// The report page's re-diagnose form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct RediagnoseForm {
    /// The form's token, as the page gave it.
    csrf: String,
}

/// The report page's feedback form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct FeedbackForm {
    /// The form's token, as the page gave it.
    #[allow(dead_code)]
    csrf: String,
    /// 1 to 5.
    score: String,
    /// `true` when ticked.
    #[serde(rename = "rootCauseCorrect", default)]
    root_cause_correct: String,
    /// At most 2,000 characters.
    #[serde(default)]
    comment: String,
}

/// The re-diagnose button (the write token; the page's `Origin` and form token).
#[utoipa::path(
    post,
    path = "/ui/reports/{deployment_id}/rediagnose",
    operation_id = "ui_rediagnose",
    tag = "pages",
    params(DeploymentPath),
    request_body(content = RediagnoseForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Queued: back to the report page", headers(("Location" = String))),
        Invalid,
        FormRefused,
        Missing,
        Conflicting,
        Guarded,
    ),
)]
async fn rediagnose(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path.id()?;
    checked_form(&state, &headers, body, "rediagnose", id.as_str()).await?;
    restart(&state, &id).await?;
    Ok(Redirect::to(&format!("/ui/reports/{id}")).into_response())
}

/// The feedback form (the write token; the page's `Origin` and form token).
#[utoipa::path(
    post,
    path = "/ui/reports/{deployment_id}/feedback",
    operation_id = "ui_feedback",
    tag = "pages",
    params(DeploymentPath),
    request_body(content = FeedbackForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Stored: back to the report page", headers(("Location" = String))),
        Invalid,
        FormRefused,
        Missing,
        Conflicting,
        Guarded,
    ),
)]
async fn feedback(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path.id()?;
    let fields = checked_form(&state, &headers, body, "feedback", id.as_str()).await?;
    // The form's fields read straight into their type (a missing `score` is named).
    let form = FeedbackForm::deserialize(MapDeserializer::<_, serde::de::value::Error>::new(
        fields.into_iter(),
    ))
    .map_err(|e| ApiError::BadRequest {
        code: "invalid_body",
        message: e.to_string(),
        path: Some("score".into()),
    })?;
    let score = form
        .score
        .parse::<i64>()
        .map_err(|_| ApiError::BadRequest {
            code: "invalid_body",
            message: "score must be a number from 1 to 5".into(),
            path: Some("score".into()),
        })?;
    let correct = form.root_cause_correct == "true";
    store_feedback(&state, &id, score, correct, form.comment).await?;
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/ui/reports/{id}"))],
    )
        .into_response())
}
