//! A registered deployment (the design's `Deployment` model, given its business fields):
//! what a deploy pipeline knows about a release and its rollout (each host's release
//! status, the gray strategy, the application's RED queries and health thresholds), and
//! the names it travels by: repositories as [`RepoName`], hosts compared by [`host_key`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::alert::DeploymentId;

/// A registered deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The deployment id (the reports' key).
    #[schema(value_type = String)]
    pub deployment_id: DeploymentId,
    /// The service released.
    #[serde(default)]
    pub service: String,
    /// Its repository, as registered: `owner/name` or a GitHub URL (checked to be one).
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
    /// Hosts of the deployment (as `hostname` or `instance` labels name them), each with
    /// its release status.
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// How the release is rolled out.
    #[serde(default)]
    pub strategy: Strategy,
    /// E.g. `production`.
    #[serde(default)]
    pub environment: String,
    /// When the rollout started (`deployedAt`, its older name, is read too).
    #[serde(rename = "startedAt", alias = "deployedAt")]
    pub started_at: DateTime<Utc>,
    /// When the rollout finished, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The application's rate, errors and duration queries, templates of `{{hostname}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub red: Option<RedQueries>,
    /// The application's health thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// A link to the pipeline run or release page.
    #[serde(default)]
    pub url: String,
    /// What the platform does when the verdict is *rollback* (the design's
    /// `RollbackPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_policy: Option<RollbackPolicy>,
    /// When it was first registered.
    pub created_time: DateTime<Utc>,
    /// When it was last registered.
    pub updated_time: DateTime<Utc>,
}

/// Where a host is in the rollout.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// It runs the release.
    #[default]
    Released,
    /// It still runs the previous version.
    Pending,
    /// The release failed to install on it.
    Failed,
    /// The release was taken back on it.
    RolledBack,
}

impl HostStatus {
    /// Whether the host runs the release.
    pub fn runs_release(self) -> bool {
        self == HostStatus::Released
    }
}

/// One host of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// As `hostname` or `instance` labels name it.
    pub name: String,
    /// Where it is in the rollout.
    pub status: HostStatus,
    /// When it got the release, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
}

impl Host {
    /// A host that got the release at an unknown time.
    pub fn released(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: HostStatus::Released,
            released_at: None,
        }
    }
}

/// A host as stored or registered: a name (released), or the whole object.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum HostForm {
    /// A host that runs the release.
    Name(String),
    /// A host and where it is in the rollout.
    Full {
        /// As `hostname` or `instance` labels name it.
        name: String,
        /// Where it is in the rollout (default `released`).
        #[serde(default)]
        status: HostStatus,
        /// When it got the release (RFC 3339).
        #[serde(default, rename = "releasedAt")]
        released_at: Option<DateTime<Utc>>,
    },
}

impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match HostForm::deserialize(d)? {
            HostForm::Name(name) => Host::released(name),
            HostForm::Full {
                name,
                status,
                released_at,
            } => Host {
                name,
                status,
                released_at,
            },
        })
    }
}

/// The gray strategy of a rollout (the design's deploy platform's `grayStrategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Some hosts first; the others keep the previous version meanwhile.
    Canary,
    /// A second set of hosts gets the release; traffic moves to it.
    BlueGreen,
    /// Every host at once.
    #[default]
    All,
}

/// The application's RED queries, PromQL templates in which `{{hostname}}` stands for a
/// quoted regex literal matching one host (the design's templates read
/// `hostname=~{{hostname}}`). An empty one is not measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RedQueries {
    /// Requests per second.
    pub rate: String,
    /// Errors: the percentage of requests that failed.
    pub errors: String,
    /// Duration, in seconds.
    pub duration: String,
}

/// The platform's rollback policy of a deployment: whether the service may ask for a
/// rollback when its verdict says *rollback* (`Release.AutoRollback` must allow it too),
/// where, and the Standard Webhooks secret the request is signed with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Ask the platform to roll back on a *rollback* verdict.
    #[serde(default)]
    pub auto_rollback: bool,
    /// Where the rollback request is POSTed.
    #[serde(default)]
    pub url: String,
    /// The signing secret (`whsec_` and base64): stored, never shown (it is left out of
    /// every answer, report and page).
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub secret: String,
    /// Whether a signing secret is set.
    #[serde(default)]
    pub signed: bool,
}

/// The application's health thresholds (absolute limits; unset: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Thresholds {
    /// Fewer requests per second than this is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_min: Option<f64>,
    /// A higher error percentage than this is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_max_percent: Option<f64>,
    /// A slower 95th percentile than this, in milliseconds, is unhealthy.
    #[serde(rename = "durationP95MaxMs", skip_serializing_if = "Option::is_none")]
    pub duration_p95_max_ms: Option<f64>,
    /// A slower 99th percentile than this, in milliseconds, is unhealthy.
    #[serde(rename = "durationP99MaxMs", skip_serializing_if = "Option::is_none")]
    pub duration_p99_max_ms: Option<f64>,
}

impl Deployment {
    /// The hosts' names.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// Whether the rollout is still under way: not finished, or a host still waits.
    pub fn under_way(&self) -> bool {
        self.finished_at.is_none() || self.hosts.iter().any(|h| h.status == HostStatus::Pending)
    }

    /// The host keys attribution matches on (see [`host_key`]), without repeats.
    pub fn host_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.hosts.iter().map(|h| host_key(&h.name)).collect();
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

/// A repository's `owner/name`, parsed from any address GitHub users write:
/// `owner/name`, `https://HOST/owner/name(.git)`, `git@HOST:owner/name.git`. Each part is
/// 1 to 100 of `A-Za-z0-9-_.`, and neither is `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName {
    owner: String,
    name: String,
}

impl RepoName {
    /// Parses an address; `None` when it is none of the accepted forms.
    pub fn parse(address: &str) -> Option<Self> {
        let address = address.trim();
        let path = if let Some(rest) = address
            .strip_prefix("https://")
            .or_else(|| address.strip_prefix("http://"))
        {
            rest.split_once('/')?.1
        } else if let Some(rest) = address.strip_prefix("git@") {
            rest.split_once(':')?.1
        } else {
            address
        };
        let path = path.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut parts = path.split('/');
        let (owner, name) = (parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.len() <= 100
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        (ok(owner) && ok(name)).then(|| Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The owner (user or organisation).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is the repository `owner`/`name` names (GitHub's names are
    /// case-insensitive).
    pub fn is(&self, owner: &str, name: &str) -> bool {
        self.owner.eq_ignore_ascii_case(owner) && self.name.eq_ignore_ascii_case(name)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl Serialize for RepoName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RepoName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).ok_or_else(|| {
            serde::de::Error::custom(format!("{raw:?} is not owner/name or a repository URL"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_ignore_case_and_ports() {
        assert_eq!(host_key("WEB-1:9100"), "web-1");
        assert_eq!(host_key("web-1"), "web-1");
        assert_eq!(host_key("[::1]:9100"), "::1");
        assert_eq!(host_key("fe80::1"), "fe80::1");
        assert_eq!(host_key("10.0.0.5:9100"), "10.0.0.5");
    }

    #[test]
    fn repository_addresses_become_owner_and_name() {
        for (address, want) in [
            ("acme/shop", Some("acme/shop")),
            ("https://github.com/acme/shop.git", Some("acme/shop")),
            ("https://ghe.example.com/acme/shop/", Some("acme/shop")),
            ("git@github.com:acme/shop.git", Some("acme/shop")),
            ("acme/shop/extra", None),
            ("acme", None),
            ("../etc", None),
            ("acme/sh op", None),
        ] {
            let got = RepoName::parse(address).map(|r| r.to_string());
            assert_eq!(got.as_deref(), want, "{address}");
        }
        let repo = RepoName::parse("Acme/Shop").unwrap();
        assert!(repo.is("acme", "SHOP"));
        assert_eq!((repo.owner(), repo.name()), ("Acme", "Shop"));
    }
}
