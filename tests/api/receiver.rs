//! A webhook receiver on its own port that checks what a real receiver checks: the
//! Standard Webhooks signature (a wrong or missing one is a `401`, and a timestamp more
//! than five minutes off is refused), the envelope's type and version. Used for the
//! notification sinks and for a platform's rollback endpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::Value;

use crate::servers::free_port;

/// The secret every signed sink of these tests uses.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How a receiver answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// 204 to every valid message.
    Accept,
    /// 500 to the first `n` valid messages, then 204.
    FailFirst(usize),
    /// Never answers.
    Hang,
    /// `503` with `Retry-After: 10000000000000` (seconds: 317,000 years) to every message.
    Throttle,
}

/// One message as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub body: Value,
    /// Its `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

struct Inner {
    mode: Mode,
    secret: Option<Vec<u8>>,
    received: Mutex<Vec<Received>>,
    refused: Mutex<Vec<String>>,
}

/// A receiver on its own port.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

/// The Standard Webhooks check: `v1,<Base64 HMAC-SHA256 of "id.timestamp.body">` among the
/// signatures, the timestamp within five minutes.
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    use hmac::{Hmac, KeyInit, Mac};
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("missing {name}"))
    };
    let (id, timestamp, signatures) = (
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
    );
    let at: i64 = timestamp.parse().map_err(|_| "bad timestamp".to_owned())?;
    if (chrono::Utc::now().timestamp() - at).abs() > 300 {
        return Err("timestamp too far from now".into());
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
    {
        Ok(id)
    } else {
        Err(format!("no signature matches: {signatures}"))
    }
}

async fn receive(State(r): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let id = match &r.secret {
        Some(secret) => match verify(secret, &headers, &body) {
            Ok(id) => id,
            Err(why) => {
                r.refused.lock().unwrap().push(why);
                return StatusCode::UNAUTHORIZED.into_response();
            }
        },
        None => headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let kind = body["type"].as_str().unwrap_or("");
    if body["version"] != 1 || !(kind.starts_with("report.") || kind == "deployment.rollback") {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seen = {
        let mut received = r.received.lock().unwrap();
        received.push(Received {
            id,
            body,
            idempotency_key,
        });
        received.len()
    };
    match r.mode {
        Mode::Accept => StatusCode::NO_CONTENT.into_response(),
        Mode::FailFirst(n) if seen <= n => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Mode::FailFirst(_) => StatusCode::NO_CONTENT.into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Mode::Throttle => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "10000000000000")],
        )
            .into_response(),
    }
}

impl Receiver {
    pub async fn start(mode: Mode, secret: Option<&str>) -> Self {
        Self::start_on(free_port(), mode, secret).await
    }

    pub async fn start_on(port: u16, mode: Mode, secret: Option<&str>) -> Self {
        let inner = Arc::new(Inner {
            mode,
            secret: secret.and_then(deploy_diagnosis::config::webhook_secret),
            received: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            inner,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Waits until `n` messages came.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < within,
                "{} of {n} messages at {} (refused: {:?})",
                got.len(),
                self.url,
                self.inner.refused.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
