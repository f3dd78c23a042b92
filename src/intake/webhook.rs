//! The two webhook bodies `POST /v1/alerts` accepts (Alertmanager's v4 and the design's
//! flat callback), parsed into [`Alert`]s, and the limits one body must keep.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::WebhookConfig;
use crate::model::alert::{Alert, AlertStatus, AlertTime};

/// The Prometheus Alertmanager webhook body (version 4).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
        let status = AlertStatus::parse(&self.status);
        let firing = status == AlertStatus::Firing;
        Alert {
            key: self.fingerprint.clone(),
            desc: pick(&["summary", "description"]),
            starts_at: AlertTime::parse(&self.starts_at),
            receive_at: receive_at.to_owned(),
            ends_at: AlertTime::parse(&self.ends_at),
            alertname: pick(&["alertname"]),
            generator_url: self.generator_url.clone(),
            need_handle: firing,
            is_emergent: firing && matches!(severity.as_str(), "critical" | "emergency" | "page"),
            severity,
            repo_address: pick(&["repoAddress", "repo_address", "repository", "repo"]),
            tag: pick(&["tag", "releaseTag", "version"]),
            kind: "alertmanager".into(),
            values,
            status,
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

impl Limits {
    /// The limits `Webhook.*` sets.
    pub fn of(config: &WebhookConfig) -> Self {
        Self {
            max_alerts: config.max_alerts.get(),
            max_labels: config.max_labels.get(),
            max_value_bytes: config.max_value_bytes,
        }
    }
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

/// Checks an alert against the limits; `at` is its JSON path prefix (`alerts[3].` or
/// empty for the flat body).
fn check(alert: &Alert, at: &str, limits: &Limits) -> Result<(), BodyError> {
    check_map(&format!("{at}labels"), &alert.labels, limits)?;
    check_map(&format!("{at}annotations"), &alert.annotations, limits)?;
    let fields = [
        ("key", alert.key.as_str()),
        ("status", alert.status.as_str()),
        ("desc", &alert.desc),
        ("startsAt", alert.starts_at.as_str()),
        ("receiveAt", &alert.receive_at),
        ("endsAt", alert.ends_at.as_str()),
        ("severity", &alert.severity),
        ("alertname", &alert.alertname),
        ("generatorURL", &alert.generator_url),
        ("repoAddress", &alert.repo_address),
        ("tag", &alert.tag),
        ("type", &alert.kind),
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
            check(alert, &format!("alerts[{i}]."), limits)?;
        }
        Ok(alerts)
    } else {
        let mut alert: Alert = typed(value)?;
        if alert.receive_at.is_empty() {
            alert.receive_at = receive_at.to_owned();
        }
        check(&alert, "", limits)?;
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
