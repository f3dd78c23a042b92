//! An alert, in the design's flat callback shape (`PostAlertCallbackReq`), with its status
//! and times parsed once; and the deployment id that names a report.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest deployment id accepted.
pub const MAX_DEPLOYMENT_ID_LEN: usize = 200;

/// A deployment id: non-empty, at most 200 characters, no control characters, no `/`
/// (it is a path segment of `GET /reports/{deploymentId}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeploymentId(String);

impl DeploymentId {
    /// Parses a deployment id, saying what is wrong with a bad one.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let id = raw.trim();
        if id.is_empty() {
            return Err("deploymentId is empty".into());
        }
        if id.chars().count() > MAX_DEPLOYMENT_ID_LEN {
            return Err(format!(
                "deploymentId is longer than {MAX_DEPLOYMENT_ID_LEN} characters"
            ));
        }
        if id.chars().any(|c| c.is_control() || c == '/') {
            return Err("deploymentId contains a control character or '/'".into());
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeploymentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an alert fires or has ended. Senders spell it in any case; anything else they
/// send is kept as written, so the intake can say why it skipped the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertStatus {
    /// `firing`.
    Firing,
    /// `resolved`.
    Resolved,
    /// Anything else (`pending`, empty, ...), as written.
    Other(String),
}

impl AlertStatus {
    /// Reads a status in any case.
    pub fn parse(text: &str) -> Self {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("firing") {
            AlertStatus::Firing
        } else if trimmed.eq_ignore_ascii_case("resolved") {
            AlertStatus::Resolved
        } else {
            AlertStatus::Other(text.to_owned())
        }
    }

    /// The stored spelling.
    pub fn as_str(&self) -> &str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
            AlertStatus::Other(text) => text,
        }
    }
}

impl From<&str> for AlertStatus {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

/// No status given: neither firing nor resolved (the design's flat body may leave it out).
impl Default for AlertStatus {
    fn default() -> Self {
        AlertStatus::Other(String::new())
    }
}

impl Serialize for AlertStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AlertStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// A time of an alert: the text as sent (kept, it is part of the alert's identity), and
/// the instant it names, parsed once. Alertmanager's zero time
/// (`0001-01-01T00:00:00Z`, sent as `endsAt` while firing), anything at or before the
/// Unix epoch, and text that is not RFC 3339 name no instant.
#[derive(Debug, Clone, Default)]
pub struct AlertTime {
    text: String,
    at: Option<DateTime<Utc>>,
}

impl AlertTime {
    /// Reads a time as an alert carries it.
    pub fn parse(text: &str) -> Self {
        let at = DateTime::parse_from_rfc3339(text.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| t.timestamp() > 0);
        Self {
            text: text.to_owned(),
            at,
        }
    }

    /// The instant, if the text names one.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        self.at
    }

    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for AlertTime {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl From<&str> for AlertTime {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

impl fmt::Display for AlertTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for AlertTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for AlertTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// One alert, in the design's flat callback shape (`PostAlertCallbackReq`). This is what a
/// report keeps, so that a diagnosis can be run again after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Alert {
    /// Alert type (`告警类型`).
    pub key: String,
    /// `firing` or `resolved` (any case; anything else is skipped, kept as written).
    #[schema(value_type = String)]
    pub status: AlertStatus,
    /// Description.
    pub desc: String,
    /// When the alert started (RFC 3339, kept as sent).
    #[schema(value_type = String)]
    pub starts_at: AlertTime,
    /// When the alert was received.
    pub receive_at: String,
    /// When the alert ended (RFC 3339, kept as sent).
    #[schema(value_type = String)]
    pub ends_at: AlertTime,
    /// Severity.
    pub severity: String,
    /// Alert name.
    pub alertname: String,
    /// Link to the expression that fired.
    pub generator_url: String,
    /// Whether someone must act.
    pub need_handle: bool,
    /// Whether it is urgent.
    pub is_emergent: bool,
    /// The release's repository (`owner/name` or a GitHub URL), for GitHub analysis.
    pub repo_address: String,
    /// The release tag.
    pub tag: String,
    /// Alert labels.
    pub labels: BTreeMap<String, String>,
    /// Alert annotations.
    pub annotations: BTreeMap<String, String>,
    /// Source type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value that fired.
    pub values: f64,
}

impl Alert {
    /// The description the prompt shows: `annotations.description` over `desc`.
    pub fn description(&self) -> &str {
        match self.annotations.get("description") {
            Some(d) if !d.is_empty() => d,
            _ => &self.desc,
        }
    }

    /// What makes two alerts the same one sent again (Alertmanager resends a group until it
    /// is answered, and on every `repeat_interval`): fingerprint, name and start.
    pub fn identity(&self) -> String {
        format!("{}|{}|{}", self.key, self.alertname, self.starts_at)
    }

    /// Where the alert says it comes from: each entry of its `hostname` label (a
    /// comma-separated list is allowed), then its `instance`; with the label that named it.
    pub fn hosts(&self) -> Vec<(&'static str, String)> {
        let mut hosts = Vec::new();
        if let Some(names) = self.labels.get("hostname") {
            for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                hosts.push(("hostname", name.to_owned()));
            }
        }
        if let Some(instance) = self.labels.get("instance").map(|i| i.trim()) {
            if !instance.is_empty() {
                hosts.push(("instance", instance.to_owned()));
            }
        }
        hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanagers_zero_time_and_bad_text_name_no_instant() {
        assert!(AlertTime::parse("0001-01-01T00:00:00Z").at().is_none());
        assert!(AlertTime::parse("soon").at().is_none());
        let t = AlertTime::parse("2026-11-25T10:00:00+08:00");
        assert_eq!(t.at().unwrap().to_rfc3339(), "2026-11-25T02:00:00+00:00");
        assert_eq!(t.as_str(), "2026-11-25T10:00:00+08:00", "kept as sent");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-25T10:00:00+08:00\""
        );
    }

    #[test]
    fn statuses_are_read_in_any_case_and_others_kept_as_written() {
        assert_eq!(AlertStatus::parse("Firing"), AlertStatus::Firing);
        assert_eq!(AlertStatus::parse("RESOLVED"), AlertStatus::Resolved);
        assert_eq!(
            AlertStatus::parse("pending"),
            AlertStatus::Other("pending".into())
        );
        let a: Alert = serde_json::from_str(r#"{"status":"FIRING"}"#).unwrap();
        assert_eq!(serde_json::to_value(&a).unwrap()["status"], "firing");
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
            alert.hosts(),
            vec![
                ("hostname", "web-1".to_owned()),
                ("hostname", "web-2".to_owned()),
                ("instance", "10.0.0.5:9100".to_owned())
            ]
        );
    }
}
