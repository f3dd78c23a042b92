//! The deployments registry (the design's `Deployment` model, given its business fields):
//! what a deploy pipeline knows about a release, registered with `PUT /deployments/{id}`.
//!
//! A report joins its deployment by id: the deployment's `hosts` widen the metric target,
//! its `repoAddress`/`tag`/`previousTag` drive the change evidence. An alert that carries
//! no `deploymentId` label (a standard node_exporter rule) is attributed to the most recent
//! deployment on its host, when it started within `Deployments.WatchMinutes` of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, DeploymentId};

/// Hosts a deployment may list.
pub const MAX_HOSTS: usize = 200;
/// Longest host name (DNS names are at most 253 characters; a port and brackets fit).
pub const MAX_HOST_LEN: usize = 270;
/// Longest value of any other text field.
pub const MAX_FIELD_LEN: usize = 1024;

/// A registered deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The deployment id (the reports' key).
    pub deployment_id: DeploymentId,
    /// The service released.
    #[serde(default)]
    pub service: String,
    /// Its repository: `owner/name` or a GitHub URL.
    #[serde(default)]
    pub repo_address: String,
    /// The release tag.
    #[serde(default)]
    pub tag: String,
    /// The tag that ran before (the change range is `previousTag...tag`).
    #[serde(default)]
    pub previous_tag: String,
    /// The released commit.
    #[serde(default)]
    pub commit: String,
    /// Hosts it was deployed to (as `hostname` or `instance` labels name them).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// E.g. `production`.
    #[serde(default)]
    pub environment: String,
    /// When it was rolled out.
    pub deployed_at: DateTime<Utc>,
    /// A link to the pipeline run or release page.
    #[serde(default)]
    pub url: String,
    /// When it was first registered.
    pub created_time: DateTime<Utc>,
    /// When it was last registered.
    pub updated_time: DateTime<Utc>,
}

/// `PUT /deployments/{id}`, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentInput {
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
pub struct FieldError {
    /// E.g. `hosts[2]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
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
    pub fn into_deployment(
        self,
        deployment_id: DeploymentId,
        now: DateTime<Utc>,
    ) -> Result<Deployment, FieldError> {
        // Stores keep milliseconds; so does the answer to a registration.
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let repo_address = check_text("repoAddress", &self.repo_address)?;
        if !repo_address.is_empty() && crate::changes::repo_name(&repo_address).is_none() {
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

impl Deployment {
    /// The host keys attribution matches on (see [`host_key`]), without repeats.
    pub fn host_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.hosts.iter().map(|h| host_key(h)).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// How a host is compared: lower case, without a port (`web-1:9100` and `WEB-1` are the
/// same host; `[::1]:9100` is `::1`).
pub fn host_key(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match host.rsplit_once(':') {
        // One colon and digits after it: a port. More colons: a bare IPv6 address.
        Some((name, port))
            if !name.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name.to_owned()
        }
        _ => host,
    }
}

/// Where an alert says it comes from: each entry of its `hostname` label (a comma-separated
/// list is allowed), then its `instance`; with the label that named it.
pub fn alert_hosts(alert: &Alert) -> Vec<(&'static str, String)> {
    let mut hosts = Vec::new();
    if let Some(names) = alert.labels.get("hostname") {
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            hosts.push(("hostname", name.to_owned()));
        }
    }
    if let Some(instance) = alert.labels.get("instance").map(|i| i.trim()) {
        if !instance.is_empty() {
            hosts.push(("instance", instance.to_owned()));
        }
    }
    hosts
}

/// The deployment an alert without a `deploymentId` was attributed to, and by what.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// The deployment.
    pub deployment: Deployment,
    /// The label that matched (`hostname` or `instance`).
    pub label: &'static str,
    /// Its value.
    pub host: String,
}

impl Attribution {
    /// For the intake response: `hostname "web-1" within 60 minutes of deployment d-7`.
    pub fn describe(&self, watch_minutes: u64) -> String {
        format!(
            "no deploymentId label; attributed by {} {:?} to deployment {} (deployed {}, within \
             Deployments.WatchMinutes = {watch_minutes})",
            self.label,
            self.host,
            self.deployment.deployment_id,
            self.deployment.deployed_at.to_rfc3339(),
        )
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
    fn host_keys_ignore_case_and_ports() {
        assert_eq!(host_key("WEB-1:9100"), "web-1");
        assert_eq!(host_key("web-1"), "web-1");
        assert_eq!(host_key("[::1]:9100"), "::1");
        assert_eq!(host_key("fe80::1"), "fe80::1");
        assert_eq!(host_key("10.0.0.5:9100"), "10.0.0.5");
    }

    #[test]
    fn hostname_lists_and_instance_are_the_alerts_hosts() {
        let mut alert = Alert::default();
        alert
            .labels
            .insert("hostname".into(), "web-1, web-2,".into());
        alert
            .labels
            .insert("instance".into(), "10.0.0.5:9100".into());
        assert_eq!(
            alert_hosts(&alert),
            vec![
                ("hostname", "web-1".to_owned()),
                ("hostname", "web-2".to_owned()),
                ("instance", "10.0.0.5:9100".to_owned())
            ]
        );
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
