//! How soon a deploy tool polling the analysis hears *rollback* at a common production
//! setup: Prometheus scraping every 15 s, `Evidence.RateWindowSeconds` 60 (four scrapes a
//! window, as Prometheus advises for `rate()`), every other setting the default. Three
//! canaries of three RED hosts each (the verdict tests' service, 10 requests/s a host):
//! web-1 answers 10 % errors from the release (against 0 %), or 300 ms slower (past the
//! registration's 150 ms limit), or nothing changes. Each analysis is polled every 15 s
//! (the interval of `docs/rollouts/analysis-template.yaml`) from the release.
//!
//!   cargo bench --bench gate_detection -- [WATCH_MINUTES] [HISTORY_MINUTES]
//!
//! Takes HISTORY + WATCH minutes (default 5 + 14) of real time, little CPU. Prints a
//! Markdown table: the first *rollback* after the release, in seconds and in polls, and
//! the last answer.

#![allow(dead_code)] // shares the integration tests' helpers, not all of them used here

#[path = "../tests/api/fake_llm.rs"]
mod fake_llm;
#[path = "../tests/api/helpers.rs"]
mod helpers;
#[path = "../tests/api/receiver.rs"]
mod receiver;
#[path = "../tests/api/release_verdict.rs"]
mod release_verdict;
#[path = "../tests/api/servers.rs"]
mod servers;

use std::time::Duration;

const SCRAPE_SECONDS: u64 = 15;
const POLL: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() {
    let minutes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let watch = Duration::from_secs(60 * minutes.first().copied().unwrap_or(14));
    let history = Duration::from_secs(60 * minutes.get(1).copied().unwrap_or(5));
    // Read by the verdict tests' Prometheus when it starts, below.
    std::env::set_var("DD_TEST_SCRAPE_SECONDS", SCRAPE_SECONDS.to_string());
    let app = helpers::spawn_app(helpers::Options {
        evidence_only: true,
        prometheus_url: Some(release_verdict::prometheus_url().await),
        evidence_timeout_s: 30,
        rate_window_s: 60,
        ..helpers::Options::default()
    })
    .await;
    let canaries = release_verdict::polled_canaries(&app, history, POLL, watch).await;
    println!(
        "| canary | first *rollback* after the release | polls (every {} s) | answers | last answer |",
        POLL.as_secs()
    );
    println!("|---|---|---|---|---|");
    for (name, answers) in &canaries {
        let first = answers
            .iter()
            .find(|(_, a)| a["recommendation"] == "rollback");
        let last = &answers[answers.len() - 1].1;
        let (at, polls) = match first {
            Some((t, _)) => (
                format!("{t:.0} s"),
                format!("{}", (t / POLL.as_secs_f64()).ceil() as u64),
            ),
            None => ("never".to_owned(), "-".to_owned()),
        };
        println!(
            "| {name} | {at} | {polls} | {} | {} / {} |",
            answers.len(),
            last["verdict"].as_str().unwrap_or("?"),
            last["recommendation"].as_str().unwrap_or("?"),
        );
        let timeline: Vec<String> = answers
            .iter()
            .map(|(t, a)| format!("{t:.0}s {}", a["recommendation"].as_str().unwrap_or("?")))
            .collect();
        eprintln!("{name}: {}", timeline.join(", "));
    }
}
