//! The chat platforms' own rules: how DingTalk and Feishu robots check a signature, what
//! their answers mean, and how fast each lets a robot post.
//!
//! The platforms answer HTTP 200 with an error code in the body: a non-zero `errcode`
//! (DingTalk, WeCom) or `code` (Feishu) is a failure. A configuration error (a signature
//! or keyword mismatch, an invalid webhook address) or a message the platform refuses
//! (too long) is not retried; a rate limit is tried again once the platform's window has
//! passed. Slack's incoming webhooks answer `ok`, or an HTTP error with the reason as
//! plain text (`invalid_payload`, `channel_not_found`, `action_prohibited`, `410
//! channel_is_archived`), which the HTTP status already classes.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::Retry;
use crate::config::SinkKind;

/// How long a platform's rate-limit answer makes a message wait: its window, a minute for
/// the robots limited per minute.
const RATE_LIMITED_WAIT: Duration = Duration::from_secs(60);

/// DingTalk's robot signature: `timestamp` (ms) + "\n" + secret, HMAC-SHA256 keyed by the
/// secret, Base64 (sent URL-encoded as the `sign` query parameter, beside `timestamp`).
pub fn sign_dingtalk(secret: &str, timestamp_ms: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Feishu's custom-bot signature: `timestamp` (s) + "\n" + secret as the HMAC-SHA256 *key*
/// over an empty message, Base64 (sent as `timestamp` and `sign` in the body).
pub fn sign_feishu(secret: &str, timestamp_s: i64) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any size");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// What a robot's answer body says: `None` when it accepted the message, else what to do
/// and why. `body` is the answer as received; an answer that is not the platform's JSON is
/// classed by its HTTP status instead (the caller's).
pub fn answer(kind: SinkKind, body: &str) -> Option<Option<(Retry, String)>> {
    let value: Value = serde_json::from_str(body).ok()?;
    let (code, message) = match kind {
        SinkKind::DingTalk | SinkKind::WeCom => (value.get("errcode")?.as_i64()?, &value["errmsg"]),
        SinkKind::Feishu => {
            // `StatusCode` is the older field, still sent beside `code`.
            let code = value
                .get("code")
                .or_else(|| value.get("StatusCode"))?
                .as_i64()?;
            let message = value.get("msg").unwrap_or(&value["StatusMessage"]);
            (code, message)
        }
        SinkKind::Webhook | SinkKind::Slack => return None,
    };
    if code == 0 {
        return Some(None);
    }
    let message = message.as_str().unwrap_or_default();
    let retry = match (kind, code) {
        // DingTalk: 310000 sign not match / keywords not in content / invalid timestamp /
        // IP not in whitelist; 300001, 300005: the access token is wrong; 460101: message
        // too long; 40035: a parameter is missing.
        (SinkKind::DingTalk, 310000 | 300001 | 300005 | 460101 | 40035) => Retry::Never,
        // DingTalk 130101: send too fast, exceed 20 times per minute.
        (SinkKind::DingTalk, 130101) => Retry::After(RATE_LIMITED_WAIT),
        // WeCom: 93000 invalid webhook url; 40058 markdown.content exceeds 4096 bytes;
        // 40008 invalid message type.
        (SinkKind::WeCom, 93000 | 40058 | 40008) => Retry::Never,
        // WeCom 45009: api freq out of limit (20 a minute per robot).
        (SinkKind::WeCom, 45009) => Retry::After(RATE_LIMITED_WAIT),
        // Feishu: 19021 sign match fail or timestamp is not within one hour; 19022 IP not
        // allowed; 19024 key words not found; 9499 bad request (the body).
        (SinkKind::Feishu, 19021 | 19022 | 19024 | 9499) => Retry::Never,
        // Feishu 11232: frequency limited (100 a minute, 5 a second per robot).
        (SinkKind::Feishu, 11232) => Retry::After(RATE_LIMITED_WAIT),
        _ => Retry::Backoff,
    };
    Some(Some((
        retry,
        format!("the platform answered code {code}: {message}"),
    )))
}

/// The windows a sink's messages are held to by default, at the platform's documented
/// limit: (span, messages within it).
pub fn rate_windows(kind: SinkKind) -> &'static [(Duration, usize)] {
    const MINUTE: Duration = Duration::from_secs(60);
    const SECOND: Duration = Duration::from_secs(1);
    match kind {
        // DingTalk: "每个机器人每分钟最多发送20条消息"; WeCom: 20 a minute per robot.
        SinkKind::DingTalk | SinkKind::WeCom => &[(MINUTE, 20)],
        // Feishu custom bot: 100 a minute and 5 a second per robot.
        SinkKind::Feishu => &[(MINUTE, 100), (SECOND, 5)],
        // Slack incoming webhooks: one message a second, short bursts allowed.
        SinkKind::Slack => &[(SECOND, 1)],
        SinkKind::Webhook => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both signatures recomputed by hand from the platforms' formulas (Python's
    /// `hmac.new(secret, f"{ts}\n{secret}", sha256)` for DingTalk and
    /// `hmac.new(f"{ts}\n{secret}", b"", sha256)` for Feishu).
    #[test]
    fn signatures_follow_the_platforms_formulas() {
        assert_eq!(
            sign_dingtalk("SEC000", 1_700_000_000_000),
            "ltBBey5eZrWKh1cPzFIdz3v3xpkc4Tjx4lLsPSHqdtA="
        );
        assert_eq!(
            sign_feishu("secret", 1_700_000_000),
            "fiWS2+gh28DOydAv7hzONH/mDn9+b1Y4Y5ivXWXy8vA="
        );
    }

    #[test]
    fn platform_codes_are_classed() {
        let class = |kind, body: &str| answer(kind, body).map(|a| a.map(|(r, _)| r));
        assert_eq!(
            class(SinkKind::DingTalk, r#"{"errcode":0,"errmsg":"ok"}"#),
            Some(None)
        );
        assert_eq!(
            class(
                SinkKind::DingTalk,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Some(Some(Retry::Never))
        );
        assert_eq!(
            class(
                SinkKind::DingTalk,
                r#"{"errcode":130101,"errmsg":"send too fast"}"#
            ),
            Some(Some(Retry::After(RATE_LIMITED_WAIT)))
        );
        assert_eq!(
            class(
                SinkKind::WeCom,
                r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#
            ),
            Some(Some(Retry::Never))
        );
        assert_eq!(
            class(
                SinkKind::Feishu,
                r#"{"code":11232,"msg":"frequency limited","data":{}}"#
            ),
            Some(Some(Retry::After(RATE_LIMITED_WAIT)))
        );
        assert_eq!(
            class(
                SinkKind::Feishu,
                r#"{"StatusCode":0,"StatusMessage":"success","code":0}"#
            ),
            Some(None)
        );
        assert_eq!(class(SinkKind::Feishu, "<html>bad gateway</html>"), None);
    }
}
