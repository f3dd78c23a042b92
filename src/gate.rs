//! `deploy-diagnosis gate`: a CI job's step that asks the service's analysis of a
//! deployment (`GET /deployments/{id}/analysis`) until it decides, and exits with it:
//!
//! | exit | when |
//! |---|---|
//! | 0 | *proceed* |
//! | 1 | *rollback* |
//! | 2 | still *hold* or inconclusive when `--wait` ran out (or at once without it) |
//! | 3 | the service could not be asked (unreachable, a refused token, no such deployment) |
//!
//! The read token comes from `DEPLOY_DIAGNOSIS_TOKEN`, never the command line (argv is
//! visible to every user of the machine). Each answer whose recommendation or reasons
//! differ from the last is printed with its reasons, so the job's log says why.

use std::time::Duration;

use crate::model::verdict::{Analysis, Recommendation};
use crate::outside::path_segment;

/// The environment variable holding the read token.
pub const TOKEN_VAR: &str = "DEPLOY_DIAGNOSIS_TOKEN";

/// What the gate was asked.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The service's base URL.
    pub url: String,
    /// The deployment.
    pub deployment: String,
    /// How long to keep asking while the answer is *hold* or inconclusive (none: once).
    pub wait: Option<Duration>,
    /// Between two questions.
    pub interval: Duration,
    /// The read token.
    pub token: Option<String>,
}

/// How the gate ended: its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// *proceed*.
    Proceed = 0,
    /// *rollback*.
    Rollback = 1,
    /// Still *hold* or inconclusive at the deadline.
    Undecided = 2,
    /// The service could not be asked.
    Unreachable = 3,
}

/// `10m`, `15s`, `1h`, `500ms`, or seconds alone.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (10m, 15s, 1h, 500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m or h)")),
    };
    if !seconds.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&seconds) {
        return Err(format!("{text:?} is not a duration of at most 7 days"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// One question's answer.
enum Asked {
    Answer(Box<Analysis>),
    /// Worth asking again (the service unreachable, busy or failing).
    Transient(String),
    /// Not worth asking again (a refused token, no such deployment, a bad id).
    Refused(String),
}

async fn ask(client: &reqwest::Client, gate: &Gate) -> Asked {
    let url = format!(
        "{}/deployments/{}/analysis",
        gate.url.trim_end_matches('/'),
        path_segment(&gate.deployment)
    );
    let mut request = client.get(&url);
    if let Some(token) = gate.token.as_deref().filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Asked::Transient(format!("asking {url}: {}", without_url(&e))),
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return match serde_json::from_str::<Analysis>(&body) {
            Ok(a) => Asked::Answer(Box::new(a)),
            Err(e) => Asked::Refused(format!("{url} answered {status} with no analysis: {e}")),
        };
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect());
    let said = format!("{url} answered {status}: {message}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Asked::Transient(said)
    } else {
        Asked::Refused(said)
    }
}

/// A request error without its URL (the caller names it once).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Asks until the analysis decides or `wait` runs out, writing what it hears to `out`.
pub async fn run(gate: &Gate, out: &mut (dyn std::io::Write + Send)) -> Decision {
    let client = match crate::tls::client()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "gate: cannot make an HTTP client: {e}");
            return Decision::Unreachable;
        }
    };
    let deadline = tokio::time::Instant::now() + gate.wait.unwrap_or_default();
    let mut last_said = String::new();
    let mut last_error: Option<String> = None;
    let mut answered = false;
    loop {
        match ask(&client, gate).await {
            Asked::Answer(analysis) => {
                answered = true;
                let r = &analysis.release;
                let said = format!(
                    "{} ({}, confidence {:.2}){}",
                    r.recommendation.as_str(),
                    r.verdict.as_str(),
                    r.confidence,
                    r.reasons
                        .iter()
                        .map(|reason| format!("\n  - {reason}"))
                        .collect::<String>()
                );
                if said != last_said {
                    let _ = writeln!(
                        out,
                        "{} {}: {said}",
                        analysis.measured_at.format("%H:%M:%S"),
                        gate.deployment
                    );
                    last_said = said;
                }
                match r.recommendation {
                    Recommendation::Proceed => return Decision::Proceed,
                    Recommendation::Rollback => return Decision::Rollback,
                    Recommendation::Hold => {}
                }
            }
            Asked::Transient(why) => {
                if last_error.as_deref() != Some(why.as_str()) {
                    let _ = writeln!(out, "gate: {why}; asking again");
                }
                last_error = Some(why);
            }
            Asked::Refused(why) => {
                let _ = writeln!(out, "gate: {why}");
                return Decision::Unreachable;
            }
        }
        let now = tokio::time::Instant::now();
        if now + gate.interval > deadline {
            break;
        }
        tokio::time::sleep(gate.interval).await;
    }
    if answered {
        let _ = writeln!(
            out,
            "gate: still hold after {}: no decision",
            gate.wait
                .map(|w| format!("{} s", w.as_secs()))
                .unwrap_or_else(|| "one question".into())
        );
        Decision::Undecided
    } else {
        let _ = writeln!(
            out,
            "gate: the service never answered: {}",
            last_error.unwrap_or_default()
        );
        Decision::Unreachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_ci_files_write_them() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10 minutes").unwrap_err().contains("unit"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("30d").is_err());
    }
}
