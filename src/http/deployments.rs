//! `/deployments`: the registry a deploy pipeline writes (`PUT`), reads and deletes.
//! A registration is checked field by field; a bad one is a `400` naming the field, and
//! nothing changes.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{
    capped_body, require_json, typed_body, ApiError, DeploymentPath, Path, Query, DEPLOYMENT_BODY,
};
use super::openapi::{BodyRefused, Conflicting, CrossSite, Guarded, Invalid, Missing};
use super::paging::{next_cursor, page, ListQuery, PageQuery};
use super::AppState;
use crate::model::alert::DeploymentId;
use crate::model::deployment::{
    host_key, Deployment, Host, HostForm, HostStatus, RedQueries, RepoName, RollbackPolicy,
    Strategy, Thresholds,
};
use crate::model::verdict::{Analysis, Recommendation};
use crate::store::Upsert;
use crate::verdict::red;

/// Hosts a deployment may list.
pub const MAX_HOSTS: usize = 200;
/// Longest host name (DNS names are at most 253 characters; a port and brackets fit).
pub const MAX_HOST_LEN: usize = 270;
/// Longest value of any other text field.
pub const MAX_FIELD_LEN: usize = 1024;

/// `PUT /deployments/{id}`, as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct DeploymentInput {
    #[serde(default)]
    service: String,
    #[serde(default)]
    repo_address: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    previous_tag: String,
    #[serde(default)]
    commit: String,
    /// Names, or `{name, status, releasedAt}` objects: checked one by one below.
    #[serde(default)]
    #[schema(value_type = Vec<HostForm>, max_items = 200)]
    hosts: Vec<Value>,
    #[serde(default)]
    #[schema(schema_with = super::openapi::strategy)]
    strategy: Option<String>,
    #[serde(default)]
    environment: String,
    /// When the rollout started (RFC 3339; default: now).
    #[serde(default)]
    #[schema(schema_with = super::openapi::optional_time)]
    started_at: Option<String>,
    /// `startedAt`'s older name.
    #[serde(default)]
    #[schema(schema_with = super::openapi::optional_time)]
    deployed_at: Option<String>,
    /// When the rollout finished (RFC 3339).
    #[serde(default)]
    #[schema(schema_with = super::openapi::optional_time)]
    finished_at: Option<String>,
    #[serde(default)]
    red: Option<RedInput>,
    #[serde(default)]
    thresholds: Option<ThresholdsInput>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    rollback_policy: Option<RollbackPolicyInput>,
}

/// `rollbackPolicy`, as sent (the design's `RollbackPolicy`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RollbackPolicyInput {
    /// Ask the platform to roll back on a *rollback* verdict (`Release.AutoRollback` must
    /// allow it too).
    #[serde(default)]
    auto_rollback: bool,
    /// Where the rollback request is POSTed (http or https).
    #[serde(default)]
    url: String,
    /// The Standard Webhooks secret the request is signed with (`whsec_` and base64);
    /// stored, never shown.
    #[serde(default)]
    secret: String,
}

impl RollbackPolicyInput {
    fn check(self) -> Result<RollbackPolicy, FieldError> {
        let url = self.url.trim();
        if !url.is_empty() {
            let parsed = url::Url::parse(url).map_err(|e| {
                field_error(
                    "rollbackPolicy.url",
                    format!("rollbackPolicy.url is not a URL ({e})"),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || url.len() > MAX_FIELD_LEN {
                return Err(field_error(
                    "rollbackPolicy.url",
                    format!("rollbackPolicy.url must be an http or https URL of at most {MAX_FIELD_LEN} characters"),
                ));
            }
        } else if self.auto_rollback {
            return Err(field_error(
                "rollbackPolicy.url",
                "rollbackPolicy.autoRollback is true but rollbackPolicy.url is empty: where should the rollback request go?",
            ));
        }
        let secret = self.secret.trim();
        if !secret.is_empty() && crate::config::webhook_secret(secret).is_none() {
            // The value is not echoed: it is a secret.
            return Err(field_error(
                "rollbackPolicy.secret",
                "rollbackPolicy.secret must be a Standard Webhooks secret: whsec_ followed by base64",
            ));
        }
        Ok(RollbackPolicy {
            auto_rollback: self.auto_rollback,
            url: url.to_owned(),
            secret: secret.to_owned(),
            signed: !secret.is_empty(),
        })
    }
}

/// `red`, as sent: PromQL templates in which `{{hostname}}` stands for one host.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RedInput {
    #[serde(default)]
    rate: String,
    #[serde(default)]
    errors: String,
    #[serde(default)]
    duration: String,
}

/// `thresholds`, as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ThresholdsInput {
    rate_min: Option<f64>,
    error_rate_max_percent: Option<f64>,
    #[serde(rename = "durationP95MaxMs")]
    duration_p95_max_ms: Option<f64>,
    #[serde(rename = "durationP99MaxMs")]
    duration_p99_max_ms: Option<f64>,
}

/// Longest RED query template.
pub const MAX_TEMPLATE_LEN: usize = 4096;

/// An RFC 3339 time of the registration, to the millisecond the stores keep.
fn time_field(path: &str, raw: &str) -> Result<DateTime<Utc>, FieldError> {
    let at = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|e| {
            field_error(
                path,
                format!("{path} must be an RFC 3339 time ({e}), not {raw:?}"),
            )
        })?
        .with_timezone(&Utc);
    Ok(DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at))
}

/// A host name: 1 to [`MAX_HOST_LEN`] characters, no space, comma or control character.
fn host_name(path: &str, raw: &str) -> Result<String, FieldError> {
    let host = raw.trim();
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err(field_error(
            path,
            format!("{path} must be 1 to {MAX_HOST_LEN} characters"),
        ));
    }
    if host
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ',')
    {
        return Err(field_error(
            path,
            format!("{path} contains a space, comma or control character"),
        ));
    }
    Ok(host.to_owned())
}

/// One entry of `hosts`: a name (released), or `{name, status, releasedAt}`.
fn host(i: usize, value: &Value) -> Result<Host, FieldError> {
    let path = format!("hosts[{i}]");
    let object = match value {
        Value::String(name) => return Ok(Host::released(host_name(&path, name)?)),
        Value::Object(object) => object,
        _ => {
            return Err(field_error(
                &path,
                format!("{path} must be a host name or an object {{name, status, releasedAt}}"),
            ))
        }
    };
    if let Some(key) = object
        .keys()
        .find(|k| !["name", "status", "releasedAt"].contains(&k.as_str()))
    {
        let at = format!("{path}.{key}");
        return Err(field_error(
            &at,
            format!("{at} is not a field of a host (name, status, releasedAt)"),
        ));
    }
    let name = match object.get("name") {
        Some(Value::String(name)) => host_name(&format!("{path}.name"), name)?,
        _ => {
            return Err(field_error(
                format!("{path}.name"),
                format!("{path}.name is required, a string"),
            ))
        }
    };
    let status = match object.get("status") {
        None | Some(Value::Null) => HostStatus::Released,
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "released" => HostStatus::Released,
            "pending" => HostStatus::Pending,
            "failed" => HostStatus::Failed,
            "rolled_back" => HostStatus::RolledBack,
            other => {
                return Err(field_error(
                    format!("{path}.status"),
                    format!(
                    "{path}.status is {other:?}, not one of released, pending, failed, rolled_back"
                ),
                ))
            }
        },
        Some(_) => {
            return Err(field_error(
                format!("{path}.status"),
                format!("{path}.status must be a string"),
            ))
        }
    };
    let released_at = match object.get("releasedAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => Some(time_field(&format!("{path}.releasedAt"), raw)?),
        Some(_) => {
            return Err(field_error(
                format!("{path}.releasedAt"),
                format!("{path}.releasedAt must be an RFC 3339 time"),
            ))
        }
    };
    Ok(Host {
        name,
        status,
        released_at,
    })
}

/// A threshold: a finite number, not negative (a percentage at most 100).
fn threshold(path: &str, value: Option<f64>, max: f64) -> Result<Option<f64>, FieldError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 || v > max => Err(field_error(
            path,
            format!("{path} must be a number from 0 to {max}, not {v}"),
        )),
        other => Ok(other),
    }
}

/// A field of a registration that cannot be used: its JSON path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldError {
    /// E.g. `hosts[2]`.
    pub(super) path: String,
    /// What is wrong.
    pub(super) message: String,
}

fn field_error(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.into(),
        message: message.into(),
    }
}

fn check_text(path: &str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    if value.chars().count() > MAX_FIELD_LEN {
        return Err(field_error(
            path,
            format!("{path} is longer than {MAX_FIELD_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(field_error(
            path,
            format!("{path} contains a control character"),
        ));
    }
    Ok(value.to_owned())
}

impl DeploymentInput {
    /// The deployment this registration describes, at `now`; `created_time` is `now` and
    /// the store keeps the first one when it already has the deployment.
    pub(super) fn into_deployment(
        self,
        deployment_id: DeploymentId,
        now: DateTime<Utc>,
    ) -> Result<Deployment, FieldError> {
        // Stores keep milliseconds; so does the answer to a registration.
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let repo_address = check_text("repoAddress", &self.repo_address)?;
        if !repo_address.is_empty() && RepoName::parse(&repo_address).is_none() {
            return Err(field_error(
                "repoAddress",
                format!(
                    "repoAddress {repo_address:?} is not owner/name or a repository URL \
                     (https://github.com/owner/name)"
                ),
            ));
        }
        if self.hosts.len() > MAX_HOSTS {
            return Err(field_error(
                "hosts",
                format!("hosts has more than {MAX_HOSTS} entries"),
            ));
        }
        let mut hosts: Vec<Host> = Vec::with_capacity(self.hosts.len());
        for (i, value) in self.hosts.iter().enumerate() {
            let entry = host(i, value)?;
            if !hosts
                .iter()
                .any(|h| host_key(&h.name) == host_key(&entry.name))
            {
                hosts.push(entry);
            }
        }
        let strategy = match self.strategy.as_deref().map(str::trim) {
            None | Some("") => Strategy::All,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "canary" => Strategy::Canary,
                "blue-green" | "bluegreen" | "blue_green" => Strategy::BlueGreen,
                "all" => Strategy::All,
                other => {
                    return Err(field_error(
                        "strategy",
                        format!("strategy is {other:?}, not one of canary, blue-green, all"),
                    ))
                }
            },
        };
        let started = self.started_at.as_deref().filter(|s| !s.trim().is_empty());
        let deployed = self.deployed_at.as_deref().filter(|s| !s.trim().is_empty());
        let started_at = match (started, deployed) {
            (Some(s), Some(d)) if time_field("startedAt", s)? != time_field("deployedAt", d)? => {
                return Err(field_error(
                    "deployedAt",
                    "deployedAt is startedAt's older name; give one, or the same time in both",
                ))
            }
            (Some(s), _) => time_field("startedAt", s)?,
            (None, Some(d)) => time_field("deployedAt", d)?,
            (None, None) => now,
        };
        let finished_at = match self.finished_at.as_deref().filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(raw) => {
                let at = time_field("finishedAt", raw)?;
                if at < started_at {
                    return Err(field_error(
                        "finishedAt",
                        "finishedAt is before the rollout started (startedAt)",
                    ));
                }
                Some(at)
            }
        };
        let red = match self.red {
            None => None,
            Some(red) => {
                let template = |path: &str, raw: &str| -> Result<String, FieldError> {
                    let t = raw.trim();
                    if t.len() > MAX_TEMPLATE_LEN {
                        return Err(field_error(
                            path,
                            format!("{path} is longer than {MAX_TEMPLATE_LEN} characters"),
                        ));
                    }
                    if !t.is_empty() && !t.contains(red::PLACEHOLDER) {
                        return Err(field_error(
                            path,
                            format!(
                                "{path} has no {}: it must select one host, as in \
                                 hostname=~{}",
                                red::PLACEHOLDER,
                                red::PLACEHOLDER
                            ),
                        ));
                    }
                    Ok(t.to_owned())
                };
                Some(RedQueries {
                    rate: template("red.rate", &red.rate)?,
                    errors: template("red.errors", &red.errors)?,
                    duration: template("red.duration", &red.duration)?,
                })
            }
        };
        let thresholds = match self.thresholds {
            None => None,
            Some(t) => Some(Thresholds {
                rate_min: threshold("thresholds.rateMin", t.rate_min, f64::MAX)?,
                error_rate_max_percent: threshold(
                    "thresholds.errorRateMaxPercent",
                    t.error_rate_max_percent,
                    100.0,
                )?,
                duration_p95_max_ms: threshold(
                    "thresholds.durationP95MaxMs",
                    t.duration_p95_max_ms,
                    f64::MAX,
                )?,
                duration_p99_max_ms: threshold(
                    "thresholds.durationP99MaxMs",
                    t.duration_p99_max_ms,
                    f64::MAX,
                )?,
            }),
        };
        Ok(Deployment {
            deployment_id,
            service: check_text("service", &self.service)?,
            repo_address,
            tag: check_text("tag", &self.tag)?,
            previous_tag: check_text("previousTag", &self.previous_tag)?,
            commit: check_text("commit", &self.commit)?,
            hosts,
            strategy,
            environment: check_text("environment", &self.environment)?,
            started_at,
            finished_at,
            red,
            thresholds,
            url: check_text("url", &self.url)?,
            rollback_policy: self
                .rollback_policy
                .map(RollbackPolicyInput::check)
                .transpose()?,
            created_time: now,
            updated_time: now,
        })
    }
}

/// Registers a deployment (or replaces its registration): its service, release, hosts and
/// their rollout status, and the application's RED queries and thresholds.
#[utoipa::path(
    put,
    path = "/deployments/{deployment_id}",
    tag = "deployments",
    params(DeploymentPath),
    request_body(content = DeploymentInput, content_type = "application/json"),
    responses(
        (status = 200, description = "Registration replaced", body = Deployment),
        (status = 201, description = "Registered", body = Deployment),
        Invalid,
        Missing,
        BodyRefused,
        CrossSite,
        Guarded,
    ),
)]
pub(super) async fn put_deployment(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path.id()?;
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, DEPLOYMENT_BODY.min(state.max_body_bytes)).await?;
    let input: DeploymentInput = typed_body(&bytes)?;
    let bad = |e: FieldError| ApiError::BadRequest {
        code: "invalid_body",
        message: e.message,
        path: Some(e.path),
    };
    let deployment = input.into_deployment(id.clone(), Utc::now()).map_err(bad)?;
    if let Some(queries) = &deployment.red {
        check_red(&state, queries).await.map_err(bad)?;
    }
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

/// Each RED template, made for a sample host, must be one Prometheus can parse. When
/// Prometheus cannot be asked the registration is not refused for it.
async fn check_red(state: &AppState, queries: &RedQueries) -> Result<(), FieldError> {
    for (path, template) in [
        ("red.rate", &queries.rate),
        ("red.errors", &queries.errors),
        ("red.duration", &queries.duration),
    ] {
        if template.is_empty() {
            continue;
        }
        if let Err(why) = state
            .prometheus
            .parses(&red::for_host(template, "sample-host"))
            .await
        {
            return Err(field_error(
                path,
                format!("{path} is not a query Prometheus can parse: {why}"),
            ));
        }
    }
    Ok(())
}

/// A registered deployment.
#[utoipa::path(
    get,
    path = "/deployments/{deployment_id}",
    tag = "deployments",
    params(DeploymentPath),
    responses((status = 200, description = "The registration", body = Deployment), Invalid, Missing, Guarded),
)]
pub(super) async fn get_deployment(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
) -> Result<Json<Deployment>, ApiError> {
    let id = path.id()?;
    state
        .deployments
        .get_deployment(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NoDeployment(id.to_string()))
}

/// The release of a registered deployment measured now, with no alert and no report: what
/// Argo Rollouts' `web` metric, Flagger's webhooks and a CI job poll during a rollout. The
/// verdict, recommendation, confidence, reasons and comparisons are a report's (the same
/// measurement); `ok` is `false` only for *rollback*; `inconclusive` says why while there
/// are too few samples. A measurement is answered again for `Release.AnalysisCacheSeconds`
/// (`cached`), and callers that ask at once share one. A fresh *rollback* opens the
/// deployment's report when its `rollbackPolicy` and `Release.AutoRollback` ask the service
/// to roll back (once per tag), and that report asks the platform.
#[utoipa::path(
    get,
    path = "/deployments/{deployment_id}/analysis",
    tag = "deployments",
    params(DeploymentPath),
    responses(
        (status = 200, description = "The release, measured now", body = Analysis),
        Invalid,
        Missing,
        Conflicting,
        Guarded,
    ),
)]
pub(super) async fn get_analysis(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
) -> Result<Json<Analysis>, ApiError> {
    let id = path.id()?;
    let deployment = state
        .deployments
        .get_deployment(&id)
        .await?
        .ok_or_else(|| ApiError::NoDeployment(id.to_string()))?;
    Ok(Json(analyse(&state, &deployment).await?))
}

/// The release of `deployment` measured now (or the recent measurement). A fresh one that
/// says *rollback* raises the analysis's alert when the deployment's policy and
/// `Release.AutoRollback` ask the service to roll back ([`Intake::analysis_says_rollback`]);
/// the answer does not wait on it, and a full queue or a store error leaves it to the
/// next measurement.
///
/// [`Intake::analysis_says_rollback`]: crate::intake::Intake::analysis_says_rollback
pub(super) async fn analyse(
    state: &AppState,
    deployment: &Deployment,
) -> Result<Analysis, ApiError> {
    let analyst = state.analyst.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "Evidence.Enabled is false: the analysis measures the release in Prometheus".into(),
        )
    })?;
    let now = Utc::now();
    let analysis = analyst.analyse(deployment, now).await;
    if analysis.cached || analysis.release.recommendation != Recommendation::Rollback {
        return Ok(analysis);
    }
    if state.queue.check().is_err() {
        state.metrics.limit_hit("max_queue", 1);
        tracing::warn!(
            deployment_id = %deployment.deployment_id,
            "the analysis says rollback, and the queue is full: no report opened for it yet"
        );
        return Ok(analysis);
    }
    match state
        .intake
        .analysis_says_rollback(deployment, &analysis.release.reasons, now)
        .await
    {
        Ok(Some(result)) if result.outcome.queued() => state.queue.queued(1),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            deployment_id = %deployment.deployment_id,
            error = %e,
            "the analysis says rollback, and its report could not be opened"
        ),
    }
    Ok(analysis)
}

/// A page of registered deployments.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeploymentPage {
    deployments: Vec<Deployment>,
    /// The `cursor` of the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// Registered deployments, newest first, a page at a time. (`status` and `verdict` are
/// refused: they filter reports.)
#[utoipa::path(
    get,
    path = "/deployments",
    tag = "deployments",
    params(PageQuery),
    responses((status = 200, description = "A page of deployments", body = DeploymentPage), Invalid, Guarded),
)]
pub(super) async fn list_deployments(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<DeploymentPage>, ApiError> {
    for (name, given) in [("status", &q.status), ("verdict", &q.verdict)] {
        if given.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("deployments have no {name}; use limit, cursor and before"),
                path: Some(name.into()),
            });
        }
    }
    let page = page(&q.paging())?;
    let deployments = state.deployments.list_deployments(&page).await?;
    let next = next_cursor(&deployments, page.limit, |d| {
        (d.created_time, d.deployment_id.to_string())
    });
    Ok(Json(DeploymentPage {
        deployments,
        next_cursor: next,
    }))
}

/// Forgets a registered deployment (its reports stay).
#[utoipa::path(
    delete,
    path = "/deployments/{deployment_id}",
    tag = "deployments",
    params(DeploymentPath),
    responses((status = 204, description = "Unregistered"), Invalid, Missing, CrossSite, Guarded),
)]
pub(super) async fn delete_deployment(
    State(state): State<AppState>,
    Path(path): Path<DeploymentPath>,
) -> Result<StatusCode, ApiError> {
    let id = path.id()?;
    if state.deployments.delete_deployment(&id).await? {
        tracing::info!(deployment_id = %id, "deployment unregistered");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NoDeployment(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<Deployment, FieldError> {
        let input: DeploymentInput = serde_json::from_str(json).unwrap();
        input.into_deployment(DeploymentId::parse("d-1").unwrap(), Utc::now())
    }
    #[test]
    fn registrations_are_checked_field_by_field() {
        let d = input(
            r#"{"service":"shop","repoAddress":"https://github.com/acme/shop.git","tag":"v2",
                "hosts":["web-1:9100","WEB-1","web-2"],"deployedAt":"2026-11-25T10:00:00+08:00"}"#,
        )
        .unwrap();
        assert_eq!(
            d.host_names(),
            vec!["web-1:9100", "web-2"],
            "same host once"
        );
        assert_eq!(d.started_at.to_rfc3339(), "2026-11-25T02:00:00+00:00");
        assert_eq!(d.strategy, Strategy::All);
        assert_eq!(input(r#"{"hosts":["a b"]}"#).unwrap_err().path, "hosts[0]");
        assert_eq!(
            input(r#"{"repoAddress":"not a repo"}"#).unwrap_err().path,
            "repoAddress"
        );
        assert_eq!(
            input(r#"{"deployedAt":"yesterday"}"#).unwrap_err().path,
            "deployedAt"
        );
        let long = format!(r#"{{"service":"{}"}}"#, "x".repeat(MAX_FIELD_LEN + 1));
        assert_eq!(input(&long).unwrap_err().path, "service");
    }

    #[test]
    fn a_rollout_is_registered_host_by_host_with_its_queries_and_thresholds() {
        let d = input(
            r#"{"hosts":["web-1",{"name":"web-2","status":"pending"},
                          {"name":"web-3","status":"Rolled_Back","releasedAt":"2026-12-01T10:05:00Z"}],
                "strategy":"canary","startedAt":"2026-12-01T10:00:00Z","finishedAt":"2026-12-01T10:30:00Z",
                "red":{"rate":"sum(rate(http_requests_total{hostname=~{{hostname}}}[1m]))"},
                "thresholds":{"errorRateMaxPercent":1.5,"durationP99MaxMs":800}}"#,
        )
        .unwrap();
        assert_eq!(d.strategy, Strategy::Canary);
        let statuses: Vec<HostStatus> = d.hosts.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            vec![
                HostStatus::Released,
                HostStatus::Pending,
                HostStatus::RolledBack
            ]
        );
        assert_eq!(
            d.hosts[2].released_at.map(|t| t.to_rfc3339()),
            Some("2026-12-01T10:05:00+00:00".into())
        );
        assert!(d.finished_at.is_some());
        assert_eq!(
            d.red.as_ref().unwrap().errors,
            "",
            "an empty query is not measured"
        );
        assert_eq!(d.thresholds.unwrap().error_rate_max_percent, Some(1.5));
        // The stored form reads back, and the older time name is read too.
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["hosts"][1]["status"], "pending");
        assert_eq!(json["strategy"], "canary");
        let back: Deployment = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, d);
        let mut old = json;
        let started = old["startedAt"].take();
        old.as_object_mut().unwrap().remove("startedAt");
        old["deployedAt"] = started;
        old["hosts"] = serde_json::json!(["web-1"]);
        let old: Deployment = serde_json::from_value(old).unwrap();
        assert_eq!(
            (old.started_at, old.hosts[0].status),
            (d.started_at, HostStatus::Released)
        );

        for (body, path) in [
            (
                r#"{"hosts":[{"name":"web-1","status":"halfway"}]}"#,
                "hosts[0].status",
            ),
            (r#"{"hosts":[{"status":"pending"}]}"#, "hosts[0].name"),
            (
                r#"{"hosts":[{"name":"web-1","weight":5}]}"#,
                "hosts[0].weight",
            ),
            (
                r#"{"hosts":[{"name":"web-1","releasedAt":"soon"}]}"#,
                "hosts[0].releasedAt",
            ),
            (r#"{"hosts":[7]}"#, "hosts[0]"),
            (r#"{"strategy":"rolling"}"#, "strategy"),
            (
                r#"{"startedAt":"2026-12-01T10:00:00Z","deployedAt":"2026-12-01T11:00:00Z"}"#,
                "deployedAt",
            ),
            (
                r#"{"startedAt":"2026-12-01T10:00:00Z","finishedAt":"2026-12-01T09:00:00Z"}"#,
                "finishedAt",
            ),
            (
                r#"{"red":{"rate":"sum(rate(http_requests_total[1m]))"}}"#,
                "red.rate",
            ),
            (
                r#"{"thresholds":{"errorRateMaxPercent":150}}"#,
                "thresholds.errorRateMaxPercent",
            ),
            (r#"{"thresholds":{"rateMin":-1}}"#, "thresholds.rateMin"),
        ] {
            assert_eq!(
                input(body).map_err(|e| e.path),
                Err(path.to_owned()),
                "{body}"
            );
        }
    }
}
