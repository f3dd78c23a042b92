//! `/openapi.json`: the API described in OpenAPI 3.1, generated from the handlers' own
//! types (utoipa): each handler carries its `#[utoipa::path]`, the router is built from
//! them (`utoipa_axum::routes!`), so a route cannot be served without being described.
//!
//! The document describes this instance: with tokens configured it names the two ways to
//! send one (Bearer, or Basic with the token as password) and which routes stay open;
//! without tokens it asks for none, as the service does not. It is served without a token
//! itself: it holds nothing that is not in the source.

use axum::body::Bytes;
use axum::http::{header, Method};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{OpenApi, PartialSchema};

use super::auth::{Access, Tokens};
use super::error::{ErrorBody, ErrorDetail};
use super::MAX_LIST_LIMIT;
use crate::model::report::{Engine, ReportStatus};
use crate::model::verdict::Attribution;
use crate::notify::{Envelope, RollbackRequest};

/// Tags, the error body and this document's own route; the other paths come from the
/// router.
#[derive(OpenApi)]
#[openapi(
    paths(serve),
    info(
        title = "deploy-diagnosis",
        description = "Turns a failing deployment's alert into a root-cause report: \
            Alertmanager webhook in; a report with the release verdict, the measured \
            evidence and the AI's or the evidence's diagnosis out.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorDetail, Envelope, RollbackRequest)),
    tags(
        (name = "alerts", description = "The Alertmanager webhook"),
        (name = "reports", description = "Diagnosis reports, one per deployment"),
        (name = "deployments", description = "The deployments registry"),
        (name = "pages", description = "The report pages (HTML)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// The document the router starts from.
pub(super) fn base() -> Document {
    ApiDoc::openapi()
}

/// Finishes `document` for this instance: the version, and on each operation the token
/// it takes, if any (`access` says which a route needs, as the service checks it).
pub(super) fn finish(
    mut document: Document,
    tokens: &Tokens,
    access: impl Fn(&Method, &str) -> Access,
) -> Document {
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let guarded = [Access::Read, Access::Write]
        .into_iter()
        .any(|a| tokens.required(a));
    if !guarded {
        return document;
    }
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        for (method, operation) in [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
        ] {
            let Some(operation) = operation else {
                continue;
            };
            if tokens.required(access(&method, path)) {
                operation.security = Some(vec![
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                    SecurityRequirement::new("basic", Vec::<String>::new()),
                ]);
            }
        }
    }
    document
}

/// The document as served, written once, with the generic webhook's message under
/// `webhooks` (OpenAPI 3.1's place for what the service sends; utoipa 5 has no field for
/// it).
pub(super) fn served(document: &Document) -> Bytes {
    let mut json = serde_json::to_value(document).expect("an OpenAPI document is plain JSON");
    json["webhooks"] = webhooks();
    Bytes::from(json.to_string())
}

/// What a `Kind: webhook` sink receives (`Notify.Sinks`), signed as Standard Webhooks says.
fn webhooks() -> Value {
    let header = |name: &str, required: bool, pattern: &str, description: &str| {
        json!({
            "name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string", "pattern": pattern},
        })
    };
    json!({
        "report": {
            "post": {
                "summary": "A finished report, posted to each generic-webhook sink",
                "description": "Sent once a report is completed or failed (as the sink's `On`, \
                    `MinSeverity` and `Verdicts` choose), at least once: a message may come \
                    again with the same `webhook-id`.",
                "parameters": [
                    header("webhook-id", true, "^.+$", "The message's stable id (the envelope's `id`)"),
                    header("webhook-timestamp", true, "^[0-9]+$", "This attempt's Unix time in seconds"),
                    header("webhook-signature", false, "^v1,[A-Za-z0-9+/]+=*$",
                        "`v1,` and the Base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, \
                         keyed by the Base64-decoded part of the sink's `whsec_` secret; absent \
                         without a secret"),
                ],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
                },
                "responses": {
                    "2XX": {"description": "Delivered"},
                    "410": {"description": "Gone: the sink is disabled until the service restarts"},
                    "429": {"description": "Sent again after `Retry-After`, else after the backoff"},
                    "4XX": {"description": "Not sent again (the request itself is wrong), except 408"},
                    "default": {"description": "Sent again with exponential backoff and jitter, \
                        up to `Notify.MaxAttempts` (`Retry-After` honoured)"},
                },
            }
        },
        "rollback": {
            "post": {
                "summary": "A rollback request, posted to a deployment's rollbackPolicy.url",
                "description": "Sent when a report's verdict recommends rollback, \
                    `Release.AutoRollback` is true and the deployment's \
                    `rollbackPolicy.autoRollback` is true: once per deployment and tag, at \
                    least once (the same `webhook-id` and `Idempotency-Key` on every attempt \
                    and after a restart).",
                "parameters": [
                    header("webhook-id", true, "^.+$", "The request's stable id (the body's `id`)"),
                    header("idempotency-key", true, "^.+$", "The same id, for platforms that deduplicate on it"),
                    header("webhook-timestamp", true, "^[0-9]+$", "This attempt's Unix time in seconds"),
                    header("webhook-signature", false, "^v1,[A-Za-z0-9+/]+=*$",
                        "`v1,` and the Base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, \
                         keyed by the Base64-decoded part of the policy's `whsec_` secret; absent \
                         without a secret"),
                ],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RollbackRequest"}}},
                },
                "responses": {
                    "2XX": {"description": "Accepted: the report shows it"},
                    "4XX": {"description": "Not sent again (the request itself is wrong), except 408 and 429"},
                    "default": {"description": "Sent again with exponential backoff and jitter, \
                        up to `Notify.MaxAttempts`"},
                },
            }
        }
    })
}

/// This document: the API in OpenAPI 3.1 (no token).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
)]
pub(super) async fn serve(json: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json)
}

/// `401` and `503`: what any route behind the tokens and the request limits may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Guarded {
    /// No token, or not one that allows this (reads take the read or the write token,
    /// writes the write token).
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "Bearer and Basic challenges")))]
    Unauthorized(ErrorBody),
    /// `MaxConns` requests are being handled, the request took longer than `Timeout`, the
    /// queue is full (`Worker.MaxQueue`), or the store is unreachable: try again.
    #[response(status = 503, headers(("Retry-After" = String, description = "Seconds to wait, when known")))]
    Unavailable(ErrorBody),
}

/// `400`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Invalid {
    /// A parameter or the body is wrong: `error.path` names where.
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

/// `404`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Missing {
    /// No such report or registered deployment.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// `409`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Conflicting {
    /// The report is being diagnosed, or changed meanwhile; an analysis with
    /// `Evidence.Enabled` false.
    #[response(status = 409)]
    Conflict(ErrorBody),
}

/// `413` and `415`: a JSON body's errors.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum BodyRefused {
    /// The body is larger than the route takes.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not `application/json`.
    #[response(status = 415)]
    NotJson(ErrorBody),
}

/// `403`: a change requested from another site's page.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum CrossSite {
    /// The request's `Origin` is another site's, or `null`: changes come from API clients
    /// (which send no `Origin`) or from the service's own pages.
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// `403` and `413`: a page form's errors.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum FormRefused {
    /// The form did not come from this service's page (its `Origin`, or its token).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The form is larger than a feedback may be.
    #[response(status = 413)]
    TooLarge(ErrorBody),
}

// Parameters and fields the service takes empty as not given (an HTML form's "all", a Go
// client's zero value): their schemas say so, so that a client may send it.

/// `schema`, or the empty text.
fn or_empty(schema: impl Into<RefOr<Schema>>, description: &str) -> Schema {
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(schema)
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(0)),
            )
            .description(Some(description))
            .build(),
    )
}

fn date_time() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .build()
}

/// `status` of a listing.
pub(super) fn status_filter() -> Schema {
    or_empty(ReportStatus::schema(), "Only reports in this status")
}

/// `verdict` of a listing.
pub(super) fn verdict_filter() -> Schema {
    or_empty(
        Attribution::schema(),
        "Only reports with this release verdict",
    )
}

/// `engine` of the list page.
pub(super) fn engine_filter() -> Schema {
    or_empty(
        Engine::schema(),
        "Only reports written by the AI, or by the evidence",
    )
}

/// `limit` of a listing.
pub(super) fn page_limit() -> Schema {
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_LIST_LIMIT)),
        "Items per page, 1 to 500 (default 50)",
    )
}

/// `before` of a listing.
pub(super) fn page_before() -> Schema {
    or_empty(
        date_time(),
        "Only items created before this time (RFC 3339)",
    )
}

/// A time of a registration: RFC 3339, or empty or `null` for none.
pub(super) fn optional_time() -> Schema {
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(date_time())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(0)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some("RFC 3339; empty or null: not given"))
            .build(),
    )
}

/// A registration's `strategy`, as spelled by people.
pub(super) fn strategy() -> Schema {
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(
                        "^\\s*([Cc][Aa][Nn][Aa][Rr][Yy]|[Bb][Ll][Uu][Ee][-_]?[Gg][Rr][Ee][Ee][Nn]|[Aa][Ll][Ll])?\\s*$",
                    )),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some(
                "canary, blue-green or all, in any case (blue_green and bluegreen too); \
                 empty or null: all",
            ))
            .build(),
    )
}
