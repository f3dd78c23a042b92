//! The chat platforms' robot webhooks, played on one local port: DingTalk, WeCom, Feishu
//! and Slack. No machine here reaches them, so each route refuses what the platform
//! refuses, with the platform's own answer (cited next to each check): a wrong signature
//! or key, a stale timestamp, a body over the platform's size limit, a malformed message,
//! more messages than the platform's rate. What it accepts is kept for the tests to read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};

use crate::servers::free_port;

/// DingTalk's access token, WeCom's key and Slack's path of these fakes.
pub const TOKEN: &str = "robot-token-0123456789";
/// The DingTalk robot's signing secret.
pub const DINGTALK_SECRET: &str = "SECb1f2c3d4e5f60718293a4b5c6d7e8f90";
/// The Feishu robot's signing secret.
pub const FEISHU_SECRET: &str = "fs-sign-secret-4455";

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Message {
    /// `dingtalk`, `wecom`, `feishu` or `slack`.
    pub platform: &'static str,
    /// The body as sent.
    pub body: Value,
    /// Its size in bytes.
    pub bytes: usize,
}

#[derive(Default)]
struct Inner {
    accepted: Mutex<Vec<Message>>,
    /// Every refusal, as answered.
    refused: Mutex<Vec<(&'static str, String)>>,
    /// When each platform's messages came, for its rate.
    times: Mutex<HashMap<&'static str, Vec<Instant>>>,
}

impl Inner {
    /// Whether one more message keeps `platform` within every `(span, max)` window.
    fn within_rate(&self, platform: &'static str, windows: &[(Duration, usize)]) -> bool {
        let now = Instant::now();
        let mut times = self.times.lock().unwrap();
        let seen = times.entry(platform).or_default();
        seen.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        let within = windows.iter().all(|(span, max)| {
            seen.iter()
                .filter(|t| now.duration_since(**t) < *span)
                .count()
                < *max
        });
        seen.push(now);
        within
    }

    fn refuse(&self, platform: &'static str, answer: Response, what: String) -> Response {
        self.refused.lock().unwrap().push((platform, what));
        answer
    }

    fn accept(&self, platform: &'static str, body: Value, bytes: usize) {
        self.accepted.lock().unwrap().push(Message {
            platform,
            body,
            bytes,
        });
    }
}

/// The four platforms on one port.
#[derive(Clone)]
pub struct FakeChat {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    inner: Arc<Inner>,
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn ok_json(value: Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

/// DingTalk's custom robot (`POST /robot/send?access_token=…[&timestamp=…&sign=…]`).
async fn dingtalk(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let p = "dingtalk";
    let answer = |code: i64, msg: &str| ok_json(json!({"errcode": code, "errmsg": msg}));
    // An unknown access token: "token is not exist" (errcode 300005).
    if q.get("access_token").map(String::as_str) != Some(TOKEN) {
        return s.refuse(p, answer(300005, "token is not exist"), "token".into());
    }
    // 加签: timestamp (ms) within an hour of the server's time, and
    // sign = Base64(HmacSHA256(key = secret, "timestamp\nsecret")), else errcode 310000
    // ("invalid timestamp" / "sign not match", the robot's documented answers).
    let (Some(ts), Some(sign)) = (q.get("timestamp"), q.get("sign")) else {
        return s.refuse(p, answer(310000, "sign not match"), "no signature".into());
    };
    let Ok(at) = ts.parse::<i64>() else {
        return s.refuse(p, answer(310000, "invalid timestamp"), ts.clone());
    };
    if (chrono::Utc::now().timestamp_millis() - at).abs() > 3_600_000 {
        return s.refuse(p, answer(310000, "invalid timestamp"), ts.clone());
    }
    let expected = hmac_base64(
        DINGTALK_SECRET.as_bytes(),
        format!("{ts}\n{DINGTALK_SECRET}").as_bytes(),
    );
    if sign != &expected {
        return s.refuse(p, answer(310000, "sign not match"), sign.clone());
    }
    // Over 20,000 bytes: "message too long, exceed 20000 bytes" (errcode 460101).
    if body.len() > 20_000 {
        return s.refuse(
            p,
            answer(460101, "message too long, exceed 20000 bytes"),
            format!("{} bytes", body.len()),
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return s.refuse(p, answer(40035, "缺少参数 json"), "not JSON".into());
    };
    if value["msgtype"] != "markdown"
        || value["markdown"]["title"].as_str().unwrap_or("").is_empty()
        || value["markdown"]["text"].as_str().unwrap_or("").is_empty()
    {
        return s.refuse(p, answer(40035, "缺少参数 markdown"), value.to_string());
    }
    // 20 messages a minute per robot: "send too fast, exceed 20 times per minute".
    if !s.within_rate(p, &[(Duration::from_secs(60), 20)]) {
        return s.refuse(
            p,
            answer(130101, "send too fast, exceed 20 times per minute"),
            "rate".into(),
        );
    }
    s.accept(p, value, body.len());
    answer(0, "ok")
}

/// WeCom's group robot (`POST /cgi-bin/webhook/send?key=…`).
async fn wecom(
    State(s): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let p = "wecom";
    let answer = |code: i64, msg: &str| {
        ok_json(json!({
            "errcode": code,
            "errmsg": format!("{msg}, hint: [1733100000123456789], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e={code}"),
        }))
    };
    if q.get("key").map(String::as_str) != Some(TOKEN) {
        return s.refuse(p, answer(93000, "invalid webhook url"), "key".into());
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return s.refuse(p, answer(40008, "invalid message type"), "not JSON".into());
    };
    if value["msgtype"] != "markdown" {
        return s.refuse(p, answer(40008, "invalid message type"), value.to_string());
    }
    // markdown.content: at most 4096 bytes of UTF-8, else errcode 40058
    // ("markdown.content exceed max length 4096. invalid Request Parameter").
    let content = value["markdown"]["content"].as_str().unwrap_or("");
    if content.len() > 4096 {
        return s.refuse(
            p,
            answer(
                40058,
                "markdown.content exceed max length 4096. invalid Request Parameter",
            ),
            format!("{} bytes", content.len()),
        );
    }
    // 20 messages a minute per robot, else errcode 45009.
    if !s.within_rate(p, &[(Duration::from_secs(60), 20)]) {
        return s.refuse(p, answer(45009, "api freq out of limit"), "rate".into());
    }
    s.accept(p, value, body.len());
    ok_json(json!({"errcode": 0, "errmsg": "ok"}))
}

/// Feishu's custom bot (`POST /open-apis/bot/v2/hook/<token>`).
async fn feishu(State(s): State<Arc<Inner>>, Path(token): Path<String>, body: Bytes) -> Response {
    let p = "feishu";
    let answer = |code: i64, msg: &str| ok_json(json!({"code": code, "data": {}, "msg": msg}));
    if token != TOKEN {
        return s.refuse(
            p,
            answer(
                19001,
                "param invalid: incoming webhook access token invalid",
            ),
            "token".into(),
        );
    }
    // "请求体的数据大小不能超过 20 KB". Feishu documents the limit but not its answer to a
    // larger body; this fake answers with its documented bad-request body (code 9499).
    if body.len() > 20 * 1024 {
        return s.refuse(
            p,
            answer(9499, "Bad Request"),
            format!("{} bytes", body.len()),
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return s.refuse(p, answer(9499, "Bad Request"), "not JSON".into());
    };
    // 签名校验: timestamp (s) within an hour, sign = Base64(HmacSHA256(key =
    // "timestamp\nsecret", message = "")), else code 19021.
    let stale = "sign match fail or timestamp is not within one hour from current time";
    let ts = value["timestamp"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| value["timestamp"].as_i64().map(|t| t.to_string()))
        .unwrap_or_default();
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 3600);
    let expected = hmac_base64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"");
    if !fresh || value["sign"].as_str() != Some(expected.as_str()) {
        return s.refuse(p, answer(19021, stale), ts);
    }
    if value["msg_type"] != "interactive" || !value["card"].is_object() {
        return s.refuse(p, answer(9499, "Bad Request"), value.to_string());
    }
    // 100 a minute and 5 a second per bot, else code 11232.
    if !s.within_rate(
        p,
        &[(Duration::from_secs(60), 100), (Duration::from_secs(1), 5)],
    ) {
        return s.refuse(
            p,
            answer(
                11232,
                "frequency limited psm[lark.oapi.app_platform_runtime]appID[-1]",
            ),
            "rate".into(),
        );
    }
    s.accept(p, value, body.len());
    ok_json(
        json!({"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}),
    )
}

/// Slack's incoming webhook (`POST /services/<path>`): `ok`, or an HTTP error with the
/// reason as plain text (its "Handling errors" table). The path ending in `archived` is a
/// channel that was archived.
async fn slack(State(s): State<Arc<Inner>>, Path(path): Path<String>, body: Bytes) -> Response {
    let p = "slack";
    let refuse = |status: u16, reason: &str| {
        (StatusCode::from_u16(status).unwrap(), reason.to_owned()).into_response()
    };
    if path.ends_with("archived") {
        return s.refuse(p, refuse(410, "channel_is_archived"), path);
    }
    if path != format!("T0/B0/{TOKEN}") {
        return s.refuse(p, refuse(404, "no_service"), path);
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return s.refuse(p, refuse(400, "invalid_payload"), "not JSON".into());
    };
    let blocks = value["blocks"].as_array().cloned().unwrap_or_default();
    if value["text"].as_str().unwrap_or("").is_empty() && blocks.is_empty() {
        return s.refuse(p, refuse(400, "no_text"), value.to_string());
    }
    // Block Kit: at most 50 blocks; a section's text at most 3000 characters; a header's
    // at most 150; otherwise `invalid_blocks`.
    let too_long = |b: &Value| {
        let text = b["text"]["text"].as_str().unwrap_or("").chars().count();
        match b["type"].as_str() {
            Some("section") => text > 3000 || text == 0,
            Some("header") => text > 150 || text == 0,
            _ => false,
        }
    };
    if blocks.len() > 50 || blocks.iter().any(too_long) {
        return s.refuse(
            p,
            refuse(400, "invalid_blocks"),
            format!("{} blocks", blocks.len()),
        );
    }
    s.accept(p, value, body.len());
    (StatusCode::OK, "ok").into_response()
}

impl FakeChat {
    /// Starts the four on a free port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/robot/send", post(dingtalk))
            .route("/cgi-bin/webhook/send", post(wecom))
            .route("/open-apis/bot/v2/hook/{token}", post(feishu))
            .route("/services/{*path}", post(slack))
            .with_state(Arc::clone(&inner));
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            inner,
        }
    }

    /// The robot addresses as each platform issues them.
    pub fn dingtalk_url(&self) -> String {
        format!("{}/robot/send?access_token={TOKEN}", self.base)
    }
    pub fn wecom_url(&self) -> String {
        format!("{}/cgi-bin/webhook/send?key={TOKEN}", self.base)
    }
    pub fn feishu_url(&self) -> String {
        format!("{}/open-apis/bot/v2/hook/{TOKEN}", self.base)
    }
    pub fn slack_url(&self) -> String {
        format!("{}/services/T0/B0/{TOKEN}", self.base)
    }

    /// The messages accepted so far.
    pub fn accepted(&self) -> Vec<Message> {
        self.inner.accepted.lock().unwrap().clone()
    }

    /// The refusals so far (platform, what was wrong).
    pub fn refused(&self) -> Vec<(&'static str, String)> {
        self.inner.refused.lock().unwrap().clone()
    }

    /// Waits until `platform` accepted `n` messages.
    pub async fn wait_for(&self, platform: &str, n: usize, within: Duration) -> Vec<Message> {
        let start = Instant::now();
        loop {
            let got: Vec<Message> = self
                .accepted()
                .into_iter()
                .filter(|m| m.platform == platform)
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < within,
                "{} of {n} {platform} messages (refused: {:?})",
                got.len(),
                self.refused()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The fakes refuse what the platforms refuse, with the platforms' answers.
#[tokio::test]
async fn the_fake_platforms_refuse_what_the_real_ones_refuse() {
    let chat = FakeChat::start().await;
    let http = deploy_diagnosis::tls::client().build().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let sign = hmac_base64(
        DINGTALK_SECRET.as_bytes(),
        format!("{now_ms}\n{DINGTALK_SECRET}").as_bytes(),
    );
    let post = |url: String, body: Value| {
        let http = http.clone();
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let signed = |ts: i64, sign: &str| {
        let mut u = url::Url::parse(&chat.dingtalk_url()).unwrap();
        u.query_pairs_mut()
            .append_pair("timestamp", &ts.to_string())
            .append_pair("sign", sign);
        u.to_string()
    };
    let md =
        |text: String| json!({"msgtype": "markdown", "markdown": {"title": "t", "text": text}});
    let (_, a) = post(signed(now_ms, "AAAA"), md("x".into())).await;
    assert_eq!(a, r#"{"errcode":310000,"errmsg":"sign not match"}"#);
    let (_, a) = post(signed(now_ms, &sign), md("x".repeat(20_001))).await;
    assert_eq!(
        a,
        r#"{"errcode":460101,"errmsg":"message too long, exceed 20000 bytes"}"#
    );
    let (_, a) = post(signed(now_ms, &sign), md("x".into())).await;
    assert_eq!(a, r#"{"errcode":0,"errmsg":"ok"}"#);

    let (_, a) = post(
        chat.wecom_url(),
        json!({"msgtype": "markdown", "markdown": {"content": "磁".repeat(1366)}}),
    )
    .await;
    assert!(
        a.starts_with(r#"{"errcode":40058,"errmsg":"markdown.content exceed max length 4096."#),
        "{a}"
    );
    let (_, a) = post(
        format!("{}/cgi-bin/webhook/send?key=wrong", chat.base),
        json!({"msgtype": "markdown", "markdown": {"content": "x"}}),
    )
    .await;
    assert!(
        a.starts_with(r#"{"errcode":93000,"errmsg":"invalid webhook url"#),
        "{a}"
    );

    let (_, a) = post(
        chat.feishu_url(),
        json!({"msg_type": "interactive", "card": {}, "timestamp": "1", "sign": "x"}),
    )
    .await;
    assert!(a.contains("19021"), "{a}");

    let block =
        |n: usize| json!({"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(n)}});
    let (status, a) = post(
        chat.slack_url(),
        json!({"text": "t", "blocks": [block(3001)]}),
    )
    .await;
    assert_eq!((status, a.as_str()), (400, "invalid_blocks"));
    let blocks: Vec<Value> = (0..51).map(|_| block(1)).collect();
    let (status, a) = post(chat.slack_url(), json!({"text": "t", "blocks": blocks})).await;
    assert_eq!((status, a.as_str()), (400, "invalid_blocks"));
    let (status, a) = post(
        format!("{}/services/T0/B0/archived", chat.base),
        json!({"text": "t"}),
    )
    .await;
    assert_eq!((status, a.as_str()), (410, "channel_is_archived"));
    let (status, a) = post(
        chat.slack_url(),
        json!({"text": "t", "blocks": [block(3000)]}),
    )
    .await;
    assert_eq!((status, a.as_str()), (200, "ok"));
}
