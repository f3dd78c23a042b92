//! One error type for the API and its one `IntoResponse`: 4xx bodies say exactly what the
//! caller got wrong, 5xx bodies are opaque (the cause is logged in the request span). Also
//! the request helpers every handler uses: the path's deployment id, the JSON content
//! type, a capped body, a typed body.

use axum::body::{to_bytes, Body};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::model::alert::DeploymentId;
use crate::store::StoreError;

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong with a request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code, for programs.
    #[schema(schema_with = error_codes)]
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
    /// Where: the JSON path in the body, or the query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Every `code` an error answer can carry.
pub const CODES: [&str; 13] = [
    "invalid_body",
    "invalid_query",
    "invalid_deployment_id",
    "unauthorized",
    "forbidden",
    "unsupported_media_type",
    "payload_too_large",
    "not_found",
    "conflict",
    "queue_full",
    "busy",
    "timeout",
    "store_unavailable",
];

fn error_codes() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(CODES))
        .description(Some("A stable code, for programs"))
        .build()
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
    /// Body too large for its route.
    #[error("request body is larger than {limit} bytes ({what})")]
    PayloadTooLarge {
        /// The route's limit.
        limit: usize,
        /// What sets it.
        what: &'static str,
    },
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
    #[error("no such endpoint; the API is described at /openapi.json and in docs/api.md")]
    NoRoute,
    /// The queue is full (`Worker.MaxQueue`); Alertmanager retries a `503`.
    #[error("{0} reports are waiting for a worker (Worker.MaxQueue); try again later")]
    QueueFull(u64),
    /// `MaxConns` requests are being handled.
    #[error("{0} requests are being handled (MaxConns); try again shortly")]
    Busy(usize),
    /// A form without a matching `Origin` or token (cross-site request forgery).
    #[error("{0}")]
    Forbidden(String),
    /// The request took longer than `Timeout`.
    #[error("the request took longer than {0} ms (Timeout); try again")]
    TimedOut(u128),
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
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            ),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
            }
            ApiError::NotFound(_) | ApiError::NoDeployment(_) | ApiError::NoRoute => {
                (StatusCode::NOT_FOUND, "not_found", None)
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::QueueFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_full", None),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy", None),
            ApiError::TimedOut(_) => {
                tracing::warn!("request timed out");
                (StatusCode::SERVICE_UNAVAILABLE, "timeout", None)
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store error");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
            }
        };
        let error = ErrorDetail {
            code,
            message: self.to_string(),
            path,
        };
        let mut response = (status, Json(ErrorBody { error })).into_response();
        let retry_after = match self {
            ApiError::QueueFull(_) => Some("60"),
            ApiError::Busy(_) | ApiError::TimedOut(_) => Some("1"),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(seconds),
            );
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

/// `axum::extract::Query`, refusing a query it cannot read (a parameter given twice, say)
/// with the API's JSON `400` rather than axum's plain text.
pub(super) struct Query<T>(pub(super) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                code: "invalid_query",
                message: rejection.body_text(),
                path: None,
            }),
        }
    }
}

/// `axum::extract::Path`, refusing a path it cannot read (not UTF-8 once decoded) with the
/// API's JSON `400`.
pub(super) struct Path<T>(pub(super) T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                code: "invalid_deployment_id",
                message: rejection.body_text(),
                path: None,
            }),
        }
    }
}

/// The deployment id in a route's path.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct DeploymentPath {
    /// The deployment's id: 1 to 200 characters (around it, spaces are dropped), no
    /// control character and no `/`.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^/\u0000-\u001F\u007F-\u009F]*[^\s/\u0000-\u001F\u007F-\u009F][^/\u0000-\u001F\u007F-\u009F]*$"
    )]
    deployment_id: String,
}

impl DeploymentPath {
    /// The id, or a `400` saying what is wrong with it.
    pub(super) fn id(&self) -> Result<DeploymentId, ApiError> {
        parse_deployment_id(&self.deployment_id)
    }
}

fn parse_deployment_id(raw: &str) -> Result<DeploymentId, ApiError> {
    DeploymentId::parse(raw).map_err(|message| ApiError::BadRequest {
        code: "invalid_deployment_id",
        message,
        path: None,
    })
}

/// Refuses a body that is not JSON (`415`).
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
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

/// A route's body limit: bytes, and what sets it (for the `413` message).
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimit(pub(super) usize, pub(super) &'static str);

impl BodyLimit {
    /// This limit, or `Webhook.MaxBodyBytes` when that is smaller.
    pub(super) fn min(self, max_body_bytes: usize) -> Self {
        if max_body_bytes < self.0 {
            BodyLimit(max_body_bytes, "Webhook.MaxBodyBytes")
        } else {
            self
        }
    }
}

/// `PUT /deployments/{id}`: 200 hosts of 270 characters and the other fields fit in a
/// quarter of this.
pub(super) const DEPLOYMENT_BODY: BodyLimit = BodyLimit(256 * 1024, "a deployment's limit");
/// `POST /reports/{id}/feedback`: a score, a flag and 2,000 characters.
pub(super) const FEEDBACK_BODY: BodyLimit = BodyLimit(16 * 1024, "a feedback's limit");

/// The request body, at most `limit` bytes (`413` beyond, before reading when declared).
pub(super) async fn capped_body(
    headers: &HeaderMap,
    body: Body,
    BodyLimit(limit, what): BodyLimit,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = ApiError::PayloadTooLarge { limit, what };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large);
    }
    to_bytes(body, limit).await.map_err(|_| too_large)
}

/// A JSON body as `T`, or a `400` naming the path of what is wrong.
pub(super) fn typed_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `code` of `error`'s answer.
    async fn code_of(error: ApiError) -> String {
        let (parts, body) = error.into_response().into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(parts.status.is_client_error() || parts.status.is_server_error());
        json["error"]["code"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn every_answer_carries_a_code_the_document_lists() {
        let store = StoreError::Io {
            path: "x".into(),
            source: std::io::Error::other("disk"),
        };
        let errors = vec![
            ApiError::Unauthorized("read"),
            ApiError::Forbidden("no".into()),
            ApiError::UnsupportedMediaType("text/plain".into()),
            ApiError::PayloadTooLarge {
                limit: 1,
                what: "x",
            },
            ApiError::NotFound("d".into()),
            ApiError::NoDeployment("d".into()),
            ApiError::Conflict("c".into()),
            ApiError::NoRoute,
            ApiError::QueueFull(1),
            ApiError::Busy(1),
            ApiError::TimedOut(1),
            ApiError::Store(store),
        ];
        let mut seen = Vec::new();
        for error in errors {
            seen.push(code_of(error).await);
        }
        // A 400's code is its caller's: these are the ones the handlers give.
        seen.extend(["invalid_body", "invalid_query", "invalid_deployment_id"].map(String::from));
        for code in &seen {
            assert!(CODES.contains(&code.as_str()), "{code} is not in CODES");
        }
        for code in CODES {
            assert!(seen.iter().any(|s| s == code), "{code} is never given");
        }
    }
}
