//! `/deployments`: the registry a deploy pipeline writes (`PUT`), reads and deletes.
//! A registration is checked field by field; a bad one is a `400` naming the field, and
//! nothing changes.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{
    capped_body, parse_deployment_id, require_json, typed_body, ApiError, DEPLOYMENT_BODY,
};
use super::paging::{next_cursor, page, ListQuery};
use super::AppState;
use crate::model::alert::DeploymentId;
use crate::model::deployment::{host_key, Deployment, RepoName};
use crate::store::Upsert;

/// Hosts a deployment may list.
pub const MAX_HOSTS: usize = 200;
/// Longest host name (DNS names are at most 253 characters; a port and brackets fit).
pub const MAX_HOST_LEN: usize = 270;
/// Longest value of any other text field.
pub const MAX_FIELD_LEN: usize = 1024;

/// `PUT /deployments/{id}`, as sent.
#[derive(Debug, Deserialize)]
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
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    deployed_at: Option<String>,
    #[serde(default)]
    url: String,
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
        let mut hosts: Vec<String> = Vec::with_capacity(self.hosts.len());
        for (i, host) in self.hosts.iter().enumerate() {
            let host = host.trim();
            let path = format!("hosts[{i}]");
            if host.is_empty() || host.len() > MAX_HOST_LEN {
                return Err(field_error(
                    &path,
                    format!("{path} must be 1 to {MAX_HOST_LEN} characters"),
                ));
            }
            if host
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == ',')
            {
                return Err(field_error(
                    &path,
                    format!("{path} contains a space, comma or control character"),
                ));
            }
            if !hosts.iter().any(|h| host_key(h) == host_key(host)) {
                hosts.push(host.to_owned());
            }
        }
        let deployed_at = match self.deployed_at.as_deref().map(str::trim) {
            None | Some("") => now,
            Some(raw) => DateTime::parse_from_rfc3339(raw)
                .map_err(|e| {
                    field_error(
                        "deployedAt",
                        format!("deployedAt must be an RFC 3339 time ({e}), not {raw:?}"),
                    )
                })?
                .with_timezone(&Utc),
        };
        let deployed_at =
            DateTime::from_timestamp_millis(deployed_at.timestamp_millis()).unwrap_or(deployed_at);
        Ok(Deployment {
            deployment_id,
            service: check_text("service", &self.service)?,
            repo_address,
            tag: check_text("tag", &self.tag)?,
            previous_tag: check_text("previousTag", &self.previous_tag)?,
            commit: check_text("commit", &self.commit)?,
            hosts,
            environment: check_text("environment", &self.environment)?,
            deployed_at,
            url: check_text("url", &self.url)?,
            created_time: now,
            updated_time: now,
        })
    }
}

pub(super) async fn put_deployment(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_deployment_id(&raw)?;
    require_json(&headers)?;
    let bytes = capped_body(&headers, body, DEPLOYMENT_BODY.min(state.max_body_bytes)).await?;
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

pub(super) async fn get_deployment(
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

pub(super) async fn list_deployments(
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

pub(super) async fn delete_deployment(
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
        assert_eq!(d.hosts, vec!["web-1:9100", "web-2"], "same host once");
        assert_eq!(d.deployed_at.to_rfc3339(), "2026-11-25T02:00:00+00:00");
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
}
