//! The Prometheus HTTP API client the evidence stage, the release verdict, the report
//! check and the page charts use: range and instant queries, and whether Prometheus can
//! parse a query. One client a Prometheus, shared by all of them, so that its
//! `Evidence.MaxQueriesInFlight` bounds what the service asks of that Prometheus at once,
//! however many gatherings, verdicts and pages are under way.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::redact::redact_url_credentials;

/// Why evidence could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// Prometheus could not be reached or answered an error.
    #[error("Prometheus at {url}: {message}")]
    Prometheus {
        /// Its base URL, without credentials.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// It took longer than `Evidence.TimeoutSeconds`.
    #[error("gathering evidence took longer than {0:?}")]
    Timeout(Duration),
}

/// A time as Prometheus's API takes it: Unix seconds, to the millisecond (whole seconds
/// would end a range before a sample taken in the current second).
pub fn unix(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// A PromQL string literal.
pub fn literal(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into())
}

/// A regex matching exactly `value` (RE2 metacharacters escaped).
pub fn exact_regex(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// Series of a range query: labels and `(unix seconds, value)` points.
pub type Matrix = Vec<(serde_json::Map<String, Value>, Vec<(f64, f64)>)>;

/// One Prometheus.
#[derive(Clone)]
pub struct Prometheus {
    /// Where requests go (credentials and all: reqwest sends them as Basic auth).
    url: String,
    /// The same without credentials, for every text that leaves.
    shown: String,
    http: reqwest::Client,
    /// Requests under way at once.
    in_flight: Arc<Semaphore>,
}

impl Prometheus {
    /// A client of the Prometheus at `url`, each request bounded by `timeout`, at most
    /// `max_in_flight` requests at once (a further one waits for a place). Fails only when
    /// no HTTP client can be built (no TLS backend): a service without one must not start
    /// with a client that has no timeout.
    pub fn new(url: &str, timeout: Duration, max_in_flight: usize) -> Result<Self, reqwest::Error> {
        let url = url.trim_end_matches('/').to_owned();
        Ok(Self {
            shown: redact_url_credentials(&url),
            url,
            http: crate::tls::client().timeout(timeout).build()?,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        })
    }

    /// The base URL without its credentials, as it may be shown.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// An error of this Prometheus (its URL without credentials).
    pub fn error(&self, message: impl Into<String>) -> EvidenceError {
        EvidenceError::Prometheus {
            url: self.shown.clone(),
            message: redact_url_credentials(&message.into()),
        }
    }

    /// A GET of `path` with `params`.
    async fn get(
        &self,
        path: &str,
        params: &[(&str, impl serde::Serialize)],
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
    }

    /// A place among the requests in flight, held until its answer is read.
    async fn place(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// One API call; its `data`, or the error Prometheus or the network gave.
    pub(super) async fn api(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Value, EvidenceError> {
        let _place = self.place().await;
        let response = self
            .get(path, params)
            .await
            .map_err(|e| self.error(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| self.error(format!("status {status}, unreadable answer: {e}")))?;
        if body["status"] != "success" {
            return Err(self.error(format!(
                "status {status}: {}",
                body["error"].as_str().unwrap_or("no error message")
            )));
        }
        Ok(body["data"].clone())
    }

    /// A range query from `from` to `to` at `step`.
    pub async fn range(
        &self,
        query: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Duration,
    ) -> Result<Matrix, EvidenceError> {
        let data = self
            .api(
                "query_range",
                &[
                    ("query", query.to_owned()),
                    ("start", unix(from)),
                    ("end", unix(to)),
                    ("step", format!("{}s", step.as_secs())),
                ],
            )
            .await?;
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| {
                let labels = series["metric"].as_object().cloned().unwrap_or_default();
                let points = series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let v = p.get(1)?.as_str()?.parse::<f64>().ok()?;
                        Some((p.get(0)?.as_f64()?, v))
                    })
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                (labels, points)
            })
            .collect())
    }

    /// Whether Prometheus can parse a query: `Err(message)` when it says it cannot
    /// (`bad_data`); `Ok` when it can, and when it cannot be asked (nothing is dropped on a
    /// guess). The query is evaluated once, bounded by Prometheus's own 2 s timeout: the
    /// Debian Prometheus (2.42) has no parse-only endpoint.
    pub async fn parses(&self, query: &str) -> Result<(), String> {
        let _place = self.place().await;
        let response = self
            .get("query", &[("query", query), ("timeout", "2s")])
            .await;
        let Ok(response) = response else {
            return Ok(());
        };
        let Ok(body) = response.json::<Value>().await else {
            return Ok(());
        };
        if body["status"] == "error" && body["errorType"] == "bad_data" {
            return Err(body["error"]
                .as_str()
                .unwrap_or("Prometheus cannot parse it")
                .to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_matched_literally_in_regexes() {
        assert_eq!(exact_regex("web-1.example"), "web-1\\.example");
    }
}
