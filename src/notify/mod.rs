//! Notifications of finished reports: which sinks a report goes to, the message each
//! platform gets, and one delivery attempt, with what to do when it fails. The outbox
//! that keeps them is the store's; the delivery loop is the worker's.
//!
//! The generic webhook sends the report's JSON under a versioned envelope
//! (`{"type": "report.completed", "version": 1, "id", "timestamp", "link", "report"}`),
//! signed as the Standard Webhooks specification says: `webhook-id`,
//! `webhook-timestamp` (seconds) and `webhook-signature: v1,<Base64 of HMAC-SHA256 over
//! "id.timestamp.body", keyed by the Base64-decoded part of the `whsec_` secret>`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::{webhook_secret, Config, HttpUrl, SinkConfig, SinkKind};
use crate::model::notify::{Event, Notification};
use crate::model::report::{Finish, Report, ReportStatus, ReportView};

/// The envelope's `version`: bumped when the shape changes incompatibly.
pub const ENVELOPE_VERSION: u32 = 1;

/// Characters of a receiver's answer kept as the reason of a failed attempt.
const ANSWER_CHARS: usize = 300;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after the backoff.
    Backoff,
    /// Try again no sooner than this (the receiver's `Retry-After`).
    After(Duration),
    /// Never: the sink's configuration is wrong (the message is given up).
    Never,
    /// The sink is gone (`410`): no message is sent to it until a restart.
    Disable,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What next.
    pub retry: Retry,
    /// Why, for the report and the log (never a secret: URLs are not quoted).
    pub why: String,
}

/// The configured sinks, and an HTTP client for them.
pub struct Sinks {
    sinks: Vec<SinkConfig>,
    http: reqwest::Client,
    external_url: Option<HttpUrl>,
    max_attempts: u32,
    disabled: Mutex<HashSet<String>>,
}

fn severity_rank(s: &str) -> u8 {
    match s.trim().to_lowercase().as_str() {
        "critical" | "error" | "page" => 3,
        "warning" | "warn" => 2,
        "info" => 1,
        _ => 0,
    }
}

impl Sinks {
    /// The sinks of `Notify.*`, each attempt bounded by `Notify.TimeoutSeconds`; redirects
    /// are not followed (a receiver's answer is the answer).
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            sinks: config.notify.sinks.clone(),
            http: reqwest::Client::builder()
                .timeout(config.notify.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            external_url: config.ui.external_url.clone(),
            max_attempts: config.notify.max_attempts.get(),
            disabled: Mutex::new(HashSet::new()),
        })
    }

    /// Whether any sink is configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Attempts of one message before it is given up.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The notifications of a report's ending: one for each sink whose `On`, `MinSeverity`
    /// and `Verdicts` it passes.
    pub fn for_finish(&self, report: &Report, finish: &Finish) -> Vec<Notification> {
        let event = match finish.status() {
            ReportStatus::Failed => Event::Failed,
            _ => Event::Completed,
        };
        let verdict = finish
            .release
            .as_ref()
            .or(report.release.as_ref())
            .map(|r| r.verdict);
        self.sinks
            .iter()
            .filter(|s| s.on.contains(&event))
            .filter(|s| {
                s.min_severity.is_empty()
                    || severity_rank(&report.alert.severity) >= severity_rank(&s.min_severity)
            })
            .filter(|s| s.verdicts.is_empty() || verdict.is_some_and(|v| s.verdicts.contains(&v)))
            .map(|s| Notification::new(&report.id, report.version, &s.name, event, finish.now))
            .collect()
    }

    /// The link to a report: absolute with `UI.ExternalURL`.
    fn link(&self, report: &Report) -> String {
        let path = format!("/reports/{}", report.deployment_id);
        match &self.external_url {
            Some(base) => format!("{}{path}", base.as_str()),
            None => path,
        }
    }

    /// One attempt of `notification` about `report` (its current version).
    pub async fn deliver(
        &self,
        notification: &Notification,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        let Some(sink) = self.sinks.iter().find(|s| s.name == notification.sink) else {
            return Err(Failure {
                retry: Retry::Never,
                why: format!("no sink {:?} is configured any more", notification.sink),
            });
        };
        if self.lock_disabled().contains(&sink.name) {
            return Err(Failure {
                retry: Retry::Disable,
                why: "the sink answered 410 Gone earlier; it is disabled until a restart".into(),
            });
        }
        let result = match sink.kind {
            SinkKind::Webhook => self.webhook(sink, notification, report, now).await,
            kind => Err(Failure {
                retry: Retry::Never,
                why: format!("sink kind {kind:?} is not supported yet"),
            }),
        };
        if let Err(Failure {
            retry: Retry::Disable,
            ..
        }) = &result
        {
            self.lock_disabled().insert(sink.name.clone());
        }
        result
    }

    fn lock_disabled(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.disabled.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn webhook(
        &self,
        sink: &SinkConfig,
        n: &Notification,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        let body = serde_json::to_vec(&json!({
            "type": n.event.type_name(),
            "version": ENVELOPE_VERSION,
            "id": n.id,
            "timestamp": now.to_rfc3339(),
            "link": self.link(report),
            "report": ReportView::from(report.clone()),
        }))
        .map_err(|e| Failure {
            retry: Retry::Never,
            why: format!("the report could not be written as JSON: {e}"),
        })?;
        let timestamp = now.timestamp().to_string();
        let mut request = self
            .http
            .post(sink.url.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", &n.id)
            .header("webhook-timestamp", &timestamp);
        if let Some(key) = webhook_secret(sink.secret.expose()) {
            request = request.header(
                "webhook-signature",
                format!("v1,{}", sign_webhook(&key, &n.id, &timestamp, &body)),
            );
        }
        let response = request.body(body).send().await.map_err(|e| Failure {
            retry: Retry::Backoff,
            why: describe_send_error(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(ANSWER_CHARS)
            .collect();
        let why = format!("the receiver answered {status}: {answer}");
        let retry = match status.as_u16() {
            410 => Retry::Disable,
            429 | 503 => retry_after.map_or(Retry::Backoff, Retry::After),
            // The request itself is wrong (the URL, the signature): sending it again
            // cannot help.
            400..=499 if status.as_u16() != 408 => Retry::Never,
            _ => retry_after.map_or(Retry::Backoff, Retry::After),
        };
        Err(Failure { retry, why })
    }
}

/// A send error as a sentence, without the URL (a WeCom or Slack key is in it).
fn describe_send_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut deepest = None;
    while let Some(s) = source {
        deepest = Some(s.to_string());
        source = s.source();
    }
    match deepest {
        Some(cause) => format!("sending {kind}: {cause}"),
        None => format!("sending {kind}"),
    }
}

/// The Standard Webhooks signature: Base64 of HMAC-SHA256 over `id.timestamp.body`.
pub fn sign_webhook(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any size");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// When to try a message again after `attempts` failed attempts: exponential from 1 s,
/// at most 5 minutes, with ±20 % jitter so a sink that comes back is not hit by every
/// message at once; a receiver's `Retry-After` is honoured when it asks for longer.
pub fn next_attempt(now: DateTime<Utc>, attempts: u32, retry: Retry, jitter: f64) -> DateTime<Utc> {
    let base = 2f64
        .powi(attempts.saturating_sub(1).min(16) as i32)
        .min(300.0);
    let mut wait = base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    if let Retry::After(d) = retry {
        wait = wait.max(d.as_secs_f64());
    }
    now + chrono::Duration::milliseconds((wait * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's example (its reference libraries' test).
    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        let key = webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign_webhook(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn attempts_back_off_exponentially_within_five_minutes_and_honour_retry_after() {
        let now = Utc::now();
        let wait = |attempts, retry, jitter| {
            (next_attempt(now, attempts, retry, jitter) - now).num_milliseconds()
        };
        assert_eq!(wait(1, Retry::Backoff, 0.5), 1000);
        assert_eq!(wait(3, Retry::Backoff, 0.5), 4000);
        assert_eq!(wait(30, Retry::Backoff, 0.5), 300_000);
        assert_eq!(wait(1, Retry::Backoff, 0.0), 800);
        assert_eq!(wait(1, Retry::After(Duration::from_secs(30)), 0.5), 30_000);
        assert_eq!(severity_rank("CRITICAL"), 3);
    }
}
