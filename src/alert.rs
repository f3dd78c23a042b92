//! Alerts in: the two webhook bodies `POST /v1/alerts` accepts, parsed into one [`Alert`]
//! shape (the design's `PostAlertCallbackReq`), and the decision whether an alert starts a
//! diagnosis.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One alert, in the design's flat callback shape (`PostAlertCallbackReq`). This is what a
/// report keeps, so that a diagnosis can be run again after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Alert {
    /// Alert type (`告警类型`).
    pub key: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Description.
    pub desc: String,
    /// When the alert started.
    pub starts_at: String,
    /// When the alert was received.
    pub receive_at: String,
    /// When the alert ended.
    pub ends_at: String,
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

/// Why an alert is about no deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The alert is neither firing nor resolved.
    NotFiring(String),
    /// A `deploymentId` label that cannot be used.
    BadDeploymentId(String),
}

impl Skip {
    /// A short code for responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Skip::NotFiring(_) => "not_firing",
            Skip::BadDeploymentId(_) => "bad_deployment_id",
        }
    }

    /// A sentence for people.
    pub fn reason(&self) -> String {
        match self {
            Skip::NotFiring(status) => {
                format!("alert status is {status:?}, neither \"firing\" nor \"resolved\"")
            }
            Skip::BadDeploymentId(why) => format!("labels.deploymentId is unusable: {why}"),
        }
    }
}

impl Alert {
    /// The description the prompt shows: `annotations.description` over `desc`.
    pub fn description(&self) -> &str {
        match self.annotations.get("description") {
            Some(d) if !d.is_empty() => d,
            _ => &self.desc,
        }
    }
}

/// The Prometheus Alertmanager webhook body (version 4).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerWebhook {
    /// Payload version; `4` today.
    #[serde(default)]
    pub version: String,
    /// Receiver name.
    #[serde(default)]
    pub receiver: String,
    /// `firing` or `resolved` for the group.
    #[serde(default)]
    pub status: String,
    /// The alerts of the group.
    pub alerts: Vec<AlertmanagerAlert>,
    /// Labels the group was formed by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels all alerts share.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations all alerts share.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The group's key.
    #[serde(default)]
    pub group_key: String,
    /// Alerts left out because of `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
}

/// One alert of an Alertmanager webhook body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Start time (RFC 3339).
    #[serde(default)]
    pub starts_at: String,
    /// End time (RFC 3339; the zero time while firing).
    #[serde(default)]
    pub ends_at: String,
    /// Link to the expression.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's fingerprint of the label set.
    #[serde(default)]
    pub fingerprint: String,
}

impl AlertmanagerAlert {
    /// The flat shape, as the design's callback would have carried it.
    pub fn into_alert(self, receive_at: &str) -> Alert {
        let pick = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| {
                    self.labels
                        .get(*k)
                        .or_else(|| self.annotations.get(*k))
                        .filter(|v| !v.is_empty())
                })
                .cloned()
                .unwrap_or_default()
        };
        let severity = pick(&["severity"]);
        let values = pick(&["value", "values"])
            .trim()
            .parse::<f64>()
            .unwrap_or(0.0);
        let firing = self.status.eq_ignore_ascii_case("firing");
        Alert {
            key: self.fingerprint.clone(),
            desc: pick(&["summary", "description"]),
            starts_at: self.starts_at.clone(),
            receive_at: receive_at.to_owned(),
            ends_at: self.ends_at.clone(),
            alertname: pick(&["alertname"]),
            generator_url: self.generator_url.clone(),
            need_handle: firing,
            is_emergent: firing && matches!(severity.as_str(), "critical" | "emergency" | "page"),
            severity,
            repo_address: pick(&["repoAddress", "repo_address", "repository", "repo"]),
            tag: pick(&["tag", "releaseTag", "version"]),
            kind: "alertmanager".into(),
            values,
            status: self.status,
            labels: self.labels,
            annotations: self.annotations,
        }
    }
}

/// Why a webhook body was refused; the path points into the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    /// Where in the body (`alerts[0].labels`), or `.` for the whole body.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// How much one webhook body may carry: each alert may queue an AI diagnosis, and its
/// labels and annotations go into the prompt of every turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Alerts per request (`Webhook.MaxAlerts`).
    pub max_alerts: usize,
    /// Labels, and annotations, per alert (`Webhook.MaxLabels`).
    pub max_labels: usize,
    /// Bytes of one label or annotation value, or of any other text field
    /// (`Webhook.MaxValueBytes`).
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_alerts: 1000,
            max_labels: 64,
            max_value_bytes: 4096,
        }
    }
}

/// Longest label or annotation name, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Why a label or annotation name cannot be stored: MongoDB field names may not contain
/// `.` or NUL or start with `$`, and an empty or very long name is no name.
fn bad_key(key: &str) -> Option<String> {
    if key.is_empty() {
        Some("is empty".into())
    } else if key.len() > MAX_KEY_BYTES {
        Some(format!("is longer than {MAX_KEY_BYTES} bytes"))
    } else if key.starts_with('$') || key.contains('.') || key.contains('\0') {
        Some("contains '.', NUL or a leading '$', which cannot be stored".into())
    } else {
        None
    }
}

fn check_map(path: &str, map: &BTreeMap<String, String>, limits: &Limits) -> Result<(), BodyError> {
    if map.len() > limits.max_labels {
        return Err(BodyError {
            path: path.to_owned(),
            message: format!(
                "{path} has {} entries, more than Webhook.MaxLabels ({})",
                map.len(),
                limits.max_labels
            ),
        });
    }
    for (key, value) in map {
        if let Some(why) = bad_key(key) {
            return Err(BodyError {
                path: format!("{path}.{key}"),
                message: format!("name {key:?} {why}"),
            });
        }
        if value.len() > limits.max_value_bytes {
            return Err(BodyError {
                path: format!("{path}.{key}"),
                message: format!(
                    "value is {} bytes, more than Webhook.MaxValueBytes ({})",
                    value.len(),
                    limits.max_value_bytes
                ),
            });
        }
    }
    Ok(())
}

impl Alert {
    /// Checks an alert against the limits; `at` is its JSON path prefix (`alerts[3].` or
    /// empty for the flat body).
    fn check(&self, at: &str, limits: &Limits) -> Result<(), BodyError> {
        check_map(&format!("{at}labels"), &self.labels, limits)?;
        check_map(&format!("{at}annotations"), &self.annotations, limits)?;
        let fields = [
            ("key", &self.key),
            ("status", &self.status),
            ("desc", &self.desc),
            ("startsAt", &self.starts_at),
            ("receiveAt", &self.receive_at),
            ("endsAt", &self.ends_at),
            ("severity", &self.severity),
            ("alertname", &self.alertname),
            ("generatorURL", &self.generator_url),
            ("repoAddress", &self.repo_address),
            ("tag", &self.tag),
            ("type", &self.kind),
        ];
        for (name, value) in fields {
            if value.len() > limits.max_value_bytes {
                return Err(BodyError {
                    path: format!("{at}{name}"),
                    message: format!(
                        "{name} is {} bytes, more than Webhook.MaxValueBytes ({})",
                        value.len(),
                        limits.max_value_bytes
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Parses either webhook body: an object with `alerts` is Alertmanager's, any other object
/// is the design's flat callback. A body beyond `limits` is refused, naming the JSON path.
pub fn parse_webhook(
    body: &[u8],
    receive_at: &str,
    limits: &Limits,
) -> Result<Vec<Alert>, BodyError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| BodyError {
        path: ".".into(),
        message: format!("body is not valid JSON: {e}"),
    })?;
    let Some(object) = value.as_object() else {
        return Err(BodyError {
            path: ".".into(),
            message: "body must be a JSON object".into(),
        });
    };
    if object.contains_key("alerts") {
        let webhook: AlertmanagerWebhook = typed(value)?;
        if webhook.alerts.len() > limits.max_alerts {
            return Err(BodyError {
                path: "alerts".into(),
                message: format!(
                    "{} alerts in one request, more than Webhook.MaxAlerts ({}); send them in smaller groups (Alertmanager: max_alerts)",
                    webhook.alerts.len(),
                    limits.max_alerts
                ),
            });
        }
        let alerts: Vec<Alert> = webhook
            .alerts
            .into_iter()
            .map(|a| a.into_alert(receive_at))
            .collect();
        for (i, alert) in alerts.iter().enumerate() {
            alert.check(&format!("alerts[{i}]."), limits)?;
        }
        Ok(alerts)
    } else {
        let mut alert: Alert = typed(value)?;
        if alert.receive_at.is_empty() {
            alert.receive_at = receive_at.to_owned();
        }
        alert.check("", limits)?;
        Ok(vec![alert])
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        BodyError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_body_becomes_flat_alerts() {
        let body = br#"{"version":"4","status":"firing","receiver":"dd","alerts":[
            {"status":"firing","labels":{"alertname":"HighCPU","deploymentId":"d-1","severity":"critical","repoAddress":"acme/shop","tag":"v1.2.0"},
             "annotations":{"description":"cpu > 90%","value":"93.5"},"startsAt":"2026-11-25T10:00:00Z","endsAt":"0001-01-01T00:00:00Z",
             "generatorURL":"http://prom/graph","fingerprint":"abc"}]}"#;
        let alerts = parse_webhook(body, "now", &Limits::default()).unwrap();
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.alertname, "HighCPU");
        assert_eq!(a.values, 93.5);
        assert!(a.is_emergent && a.need_handle);
        assert_eq!(
            (a.repo_address.as_str(), a.tag.as_str()),
            ("acme/shop", "v1.2.0")
        );
        assert_eq!(a.description(), "cpu > 90%");
        assert_eq!(a.labels["deploymentId"], "d-1");
    }

    #[test]
    fn flat_callback_body_is_accepted() {
        let body = br#"{"key":"deploy","status":"firing","alertname":"X","labels":{"deploymentId":"d-2"},"values":1.5}"#;
        let alerts = parse_webhook(body, "now", &Limits::default()).unwrap();
        assert_eq!(alerts[0].labels["deploymentId"], "d-2");
        assert_eq!(alerts[0].receive_at, "now");
    }

    #[test]
    fn type_errors_name_the_json_path() {
        let err = parse_webhook(
            br#"{"alerts":[{"status":"firing","labels":{"a":1}}]}"#,
            "now",
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.path, "alerts[0].labels.a");
        let err =
            parse_webhook(br#"{"alerts":[{"labels":{}}]}"#, "now", &Limits::default()).unwrap_err();
        assert_eq!(err.path, "alerts[0]");
        assert!(err.message.contains("status"), "{}", err.message);
    }

    #[test]
    fn bodies_beyond_the_limits_are_refused_naming_the_path() {
        let limits = Limits {
            max_alerts: 2,
            max_labels: 3,
            max_value_bytes: 16,
        };
        let alert = |labels: &str| format!(r#"{{"status":"firing","labels":{labels}}}"#);
        let body = |alerts: Vec<String>| format!(r#"{{"alerts":[{}]}}"#, alerts.join(","));
        let ok = alert(r#"{"a":"1"}"#);
        let err = |b: String| parse_webhook(b.as_bytes(), "now", &limits).unwrap_err();
        assert_eq!(err(body(vec![ok.clone(); 3])).path, "alerts");
        assert_eq!(
            err(body(vec![
                ok.clone(),
                alert(r#"{"a":"1","b":"2","c":"3","d":"4"}"#)
            ]))
            .path,
            "alerts[1].labels"
        );
        assert_eq!(
            err(body(vec![alert(r#"{"a":"12345678901234567"}"#)])).path,
            "alerts[0].labels.a"
        );
        for key in ["a.b", "$where", ""] {
            let e = err(body(vec![alert(&format!(r#"{{"{key}":"x"}}"#))]));
            assert_eq!(e.path, format!("alerts[0].labels.{key}"), "{key}");
        }
        let e = parse_webhook(
            format!(r#"{{"status":"firing","desc":"{}"}}"#, "x".repeat(17)).as_bytes(),
            "now",
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.path, "desc");
        assert!(parse_webhook(body(vec![ok.clone(), ok]).as_bytes(), "now", &limits).is_ok());
    }
}
