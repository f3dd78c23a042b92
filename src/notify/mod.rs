//! Notifications of finished reports: which sinks a report goes to, the message each
//! platform gets, and one delivery attempt, with what to do when it fails. The outbox
//! that keeps them is the store's; the delivery loop is the worker's.
//!
//! The generic webhook sends the report's JSON under a versioned envelope
//! (`{"type": "report.completed", "version": 1, "id", "timestamp", "link", "report"}`),
//! signed as the Standard Webhooks specification says: `webhook-id`,
//! `webhook-timestamp` (seconds) and `webhook-signature: v1,<Base64 of HMAC-SHA256 over
//! "id.timestamp.body", keyed by the Base64-decoded part of the `whsec_` secret>`.
//!
//! The chat platforms (DingTalk, Feishu, WeCom, Slack) get a [`message::Summary`] of the
//! report in their own form and size, signed as each documents ([`platform`]), and no
//! faster than each lets a robot post: a message over the rate waits for the window
//! without spending an attempt.

pub mod message;
pub mod platform;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::{webhook_secret, Config, HttpUrl, SinkConfig, SinkKind};
use crate::model::deployment::Deployment;
use crate::model::notify::{Event, Notification};
use crate::model::report::{Finish, Report, ReportStatus, ReportView};
use crate::outside::path_segment;
use message::Summary;

/// The envelope's `version`: bumped when the shape changes incompatibly.
pub const ENVELOPE_VERSION: u32 = 1;

/// What the generic webhook posts: the report as the API shows it, under a versioned
/// envelope. `/openapi.json` describes it under `webhooks`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Envelope {
    /// `report.completed` or `report.failed`.
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^report\\.(completed|failed)$")]
    pub kind: &'static str,
    /// The envelope's shape: 1 (bumped when it changes incompatibly).
    pub version: u32,
    /// The message's stable id, also its `webhook-id`: the same on every attempt, so the
    /// receiver can deduplicate (`{reportId}.{version}.{sink}`).
    pub id: String,
    /// When this attempt was made (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: String,
    /// The report's page (absolute with `UI.ExternalURL`).
    pub link: String,
    /// The report, as `GET /reports/{deployment_id}` shows it.
    pub report: ReportView,
}

/// What a rollback request posts to a deployment's `rollbackPolicy.url`: the release to
/// take back and the verdict that asks it, signed like the webhooks (Standard Webhooks),
/// its `id` also the `webhook-id` and `Idempotency-Key` headers: one per deployment and
/// tag, the same on every attempt and after a restart.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// `deployment.rollback`.
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^deployment\\.rollback$")]
    pub kind: &'static str,
    /// The envelope's shape: 1.
    pub version: u32,
    /// The request's stable id (`{reportId}.rollback.{tag}`).
    pub id: String,
    /// When this attempt was made (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: String,
    /// The deployment.
    pub deployment_id: String,
    /// Its service.
    pub service: String,
    /// Its environment.
    pub environment: String,
    /// The release to take back.
    pub tag: String,
    /// The release before it (what to go back to), as registered.
    pub previous_tag: String,
    /// The hosts that run the release.
    pub hosts: Vec<String>,
    /// The verdict (`release`), its recommendation (`rollback`), confidence and reasons.
    pub verdict: serde_json::Value,
    /// The report's page.
    pub link: String,
}

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
    /// Not sent: the sink's rate limit is reached. Sent after this wait, and not counted
    /// as an attempt.
    Deferred(Duration),
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
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
    /// When each sink's recent messages went out, for its rate limit.
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
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
            http: crate::tls::client()
                .timeout(config.notify.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            external_url: config.ui.external_url.clone(),
            max_attempts: config.notify.max_attempts.get(),
            disabled: Mutex::new(HashSet::new()),
            sent: Mutex::new(HashMap::new()),
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

    /// The link to a report's page: absolute with `UI.ExternalURL`, the deployment id
    /// percent-encoded (an outside value: it may hold `)`, `|`, `?` or spaces).
    fn link(&self, report: &Report) -> String {
        let path = format!(
            "/ui/reports/{}",
            path_segment(report.deployment_id.as_str())
        );
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
    ) -> Result<(), SendFailure> {
        let Some(sink) = self.sinks.iter().find(|s| s.name == notification.sink) else {
            return Err(SendFailure {
                retry: Retry::Never,
                why: format!("no sink {:?} is configured any more", notification.sink),
            });
        };
        if self.lock_disabled().contains(&sink.name) {
            return Err(SendFailure {
                retry: Retry::Disable,
                why: "the sink answered 410 Gone earlier; it is disabled until a restart".into(),
            });
        }
        if let Err(wait) = self.admit(sink, Instant::now()) {
            return Err(SendFailure {
                retry: Retry::Deferred(wait),
                why: format!(
                    "held back by the sink's rate limit for {} ms",
                    wait.as_millis()
                ),
            });
        }
        let result = match sink.kind {
            SinkKind::Webhook => self.webhook(sink, notification, report, now).await,
            _ => self.chat(sink, report, now).await,
        };
        if let Err(SendFailure {
            retry: Retry::Disable,
            ..
        }) = &result
        {
            self.lock_disabled().insert(sink.name.clone());
        }
        result
    }

    /// One attempt of the rollback request `notification` of `report`, to the policy of
    /// `deployment` as registered now (its URL and secret are read at each attempt, so a
    /// corrected registration is used by the next one).
    pub async fn rollback(
        &self,
        notification: &Notification,
        report: &Report,
        deployment: Option<&Deployment>,
        now: DateTime<Utc>,
    ) -> Result<(), SendFailure> {
        let never = |why: String| SendFailure {
            retry: Retry::Never,
            why,
        };
        let deployment = deployment.ok_or_else(|| {
            never("the deployment is no longer registered: its rollback policy is gone".into())
        })?;
        let policy = deployment
            .rollback_policy
            .as_ref()
            .filter(|p| p.auto_rollback && !p.url.is_empty())
            .ok_or_else(|| {
                never(
                    "the deployment's rollbackPolicy no longer asks for an automatic rollback"
                        .into(),
                )
            })?;
        let release = report.release.as_ref();
        let body = serde_json::to_vec(&RollbackRequest {
            kind: "deployment.rollback",
            version: ENVELOPE_VERSION,
            id: notification.id.clone(),
            timestamp: now.to_rfc3339(),
            deployment_id: deployment.deployment_id.to_string(),
            service: deployment.service.clone(),
            environment: deployment.environment.clone(),
            tag: deployment.tag.clone(),
            previous_tag: deployment.previous_tag.clone(),
            hosts: deployment
                .hosts
                .iter()
                .filter(|h| h.status.runs_release())
                .map(|h| h.name.clone())
                .collect(),
            verdict: json!({
                "verdict": release.map(|r| r.verdict.as_str()),
                "recommendation": release.map(|r| r.recommendation.as_str()),
                "confidence": release.map(|r| r.confidence),
                "reasons": release.map(|r| r.reasons.clone()).unwrap_or_default(),
            }),
            link: self.link(report),
        })
        .map_err(|e| never(format!("the request could not be written as JSON: {e}")))?;
        // The id is also the Idempotency-Key, for platforms that deduplicate on it.
        self.signed_post(
            &policy.url,
            &policy.secret,
            &notification.id,
            &[("idempotency-key", &notification.id)],
            body,
            now,
        )
        .await
    }

    fn lock_disabled(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.disabled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place in `sink`'s rate windows at `now`, or says how long until there is one.
    fn admit(&self, sink: &SinkConfig, now: Instant) -> Result<(), Duration> {
        let windows = sink_windows(sink);
        if windows.is_empty() {
            return Ok(());
        }
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let times = sent.entry(sink.name.clone()).or_default();
        let longest = windows
            .iter()
            .map(|(span, _)| *span)
            .max()
            .unwrap_or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= longest)
        {
            times.pop_front();
        }
        let mut wait = Duration::ZERO;
        for (span, max) in &windows {
            let within: Vec<&Instant> = times
                .iter()
                .filter(|t| now.duration_since(**t) < *span)
                .collect();
            if within.len() >= *max {
                // The place frees when the oldest message of the window leaves it.
                let oldest = within[within.len() - max];
                wait = wait.max(*span - now.duration_since(*oldest));
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        times.push_back(now);
        Ok(())
    }

    /// One message to a chat platform: its summary in the platform's form and size,
    /// signed as the platform says, and its answer read by the platform's codes.
    async fn chat(
        &self,
        sink: &SinkConfig,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<(), SendFailure> {
        let summary = Summary::of(report, self.link(report));
        let secret = sink.secret.expose();
        let mut request = self.http.post(sink.url.as_str());
        let body = match sink.kind {
            SinkKind::DingTalk => {
                if !secret.is_empty() {
                    let timestamp = now.timestamp_millis();
                    let sign = platform::sign_dingtalk(secret, timestamp);
                    request =
                        request.query(&[("timestamp", timestamp.to_string()), ("sign", sign)]);
                }
                let envelope = |text: &str| json!({"msgtype": "markdown", "markdown": {"title": summary.title, "text": text}});
                let text = summary.markdown_within(message::DINGTALK_MAX_BYTES, |md| {
                    envelope(md).to_string().len()
                });
                envelope(&text)
            }
            SinkKind::WeCom => {
                let content = summary.markdown_within(message::WECOM_MAX_BYTES, str::len);
                json!({"msgtype": "markdown", "markdown": {"content": content}})
            }
            SinkKind::Feishu => {
                let signature = (!secret.is_empty()).then(|| {
                    let timestamp = now.timestamp();
                    (
                        timestamp.to_string(),
                        platform::sign_feishu(secret, timestamp),
                    )
                });
                summary.feishu_card(signature)
            }
            SinkKind::Slack | SinkKind::Webhook => summary.slack(),
        };
        let response = request.json(&body).send().await.map_err(|e| SendFailure {
            retry: Retry::Backoff,
            why: describe_send_error(&e),
        })?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let answer = response.text().await.unwrap_or_default();
        if let Some(verdict) = platform::answer(sink.kind, &answer) {
            return match verdict {
                None => Ok(()),
                Some((retry, why)) => Err(SendFailure {
                    retry,
                    why: cut_answer(&why),
                }),
            };
        }
        if status.is_success() {
            return Ok(());
        }
        Err(status_failure(status, retry_after, &answer))
    }

    async fn webhook(
        &self,
        sink: &SinkConfig,
        n: &Notification,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<(), SendFailure> {
        let body = serde_json::to_vec(&Envelope {
            kind: n.event.type_name(),
            version: ENVELOPE_VERSION,
            id: n.id.clone(),
            timestamp: now.to_rfc3339(),
            link: self.link(report),
            report: ReportView::from(report.clone()),
        })
        .map_err(|e| SendFailure {
            retry: Retry::Never,
            why: format!("the report could not be written as JSON: {e}"),
        })?;
        self.signed_post(
            sink.url.as_str(),
            sink.secret.expose(),
            &n.id,
            &[],
            body,
            now,
        )
        .await
    }

    /// POSTs `body` as the Standard Webhooks specification says: `webhook-id`,
    /// `webhook-timestamp`, and `webhook-signature` when `secret` is a `whsec_` one; a 2xx
    /// is delivered, anything else a [`SendFailure`] saying whether to try again.
    async fn signed_post(
        &self,
        url: &str,
        secret: &str,
        id: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        now: DateTime<Utc>,
    ) -> Result<(), SendFailure> {
        let timestamp = now.timestamp().to_string();
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", &timestamp);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(key) = webhook_secret(secret) {
            request = request.header(
                "webhook-signature",
                format!("v1,{}", sign_webhook(&key, id, &timestamp, &body)),
            );
        }
        let response = request.body(body).send().await.map_err(|e| SendFailure {
            retry: Retry::Backoff,
            why: describe_send_error(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(&response);
        let answer = response.text().await.unwrap_or_default();
        Err(status_failure(status, retry_after, &answer))
    }
}

/// A sink's rate windows: the platform's, with `RateLimitPerMinute` in place of the
/// per-minute one when it is set.
fn sink_windows(sink: &SinkConfig) -> Vec<(Duration, usize)> {
    let mut windows = platform::rate_windows(sink.kind).to_vec();
    if let Some(per_minute) = sink.rate_per_minute {
        windows.retain(|(span, _)| *span != Duration::from_secs(60));
        windows.push((Duration::from_secs(60), per_minute.get() as usize));
    }
    windows
}

/// The longest a receiver's `Retry-After` makes a message wait.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The `Retry-After` of an answer (seconds or an HTTP-date), at most [`MAX_RETRY_AFTER`].
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    crate::outside::retry_after(value, Utc::now(), MAX_RETRY_AFTER)
}

fn cut_answer(answer: &str) -> String {
    answer.chars().take(ANSWER_CHARS).collect()
}

/// A refused HTTP answer: what to do by its status.
fn status_failure(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    answer: &str,
) -> SendFailure {
    let why = format!("the receiver answered {status}: {}", cut_answer(answer));
    let retry = match status.as_u16() {
        // A generic 410, and Slack's `channel_is_archived`.
        410 => Retry::Disable,
        429 | 503 => retry_after.map_or(Retry::Backoff, Retry::After),
        // The request itself is wrong (the URL, the signature; Slack's `invalid_payload`,
        // `action_prohibited`, `channel_not_found`): sending it again cannot help.
        400..=499 if status.as_u16() != 408 => Retry::Never,
        _ => retry_after.map_or(Retry::Backoff, Retry::After),
    };
    SendFailure { retry, why }
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
/// message at once; a receiver's `Retry-After` is honoured when it asks for longer, up to
/// [`MAX_RETRY_AFTER`].
pub fn next_attempt(now: DateTime<Utc>, attempts: u32, retry: Retry, jitter: f64) -> DateTime<Utc> {
    let base = 2f64
        .powi(attempts.saturating_sub(1).min(16) as i32)
        .min(300.0);
    let mut wait = Duration::from_secs_f64(base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)));
    if let Retry::After(d) = retry {
        wait = wait.max(d.min(MAX_RETRY_AFTER));
    }
    crate::outside::later(now, wait)
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
        assert_eq!(
            wait(1, Retry::After(Duration::MAX), 0.5),
            MAX_RETRY_AFTER.as_millis() as i64,
            "an outside wait is clamped, never an overflow"
        );
        assert_eq!(severity_rank("CRITICAL"), 3);
    }
}
