//! The evidence stage: facts the service measures itself, straight from the Prometheus
//! HTTP API, before any runner starts, so every runner and every model starts from the
//! same numbers (the design's 异常检测 step, §11.2).
//!
//! - *Target*: the node_exporter instances the alert is about, from its `instance`,
//!   `hostname` and `job` labels, matched against the labels of `up` (and `nodename` of
//!   `node_uname_info`).
//! - *Windows*: the baseline `[startsAt - Evidence.BaselineMinutes, startsAt)` and the
//!   incident `[startsAt, now]`, read with one range query per signal and a step that keeps a
//!   series under ~240 points.
//! - *Signals*: the alert's own rule expression when it carries one, and a USE pack for the
//!   node (CPU, memory, swap, filesystems, disks, network, file descriptors, availability,
//!   reboots, clock). Each keeps the exact PromQL it ran.
//! - *Scoring* ([`score`]): a robust deviation of the incident from the baseline
//!   (median / MAD, with a floor per signal so a quiet series does not turn noise into an
//!   anomaly), and saturation thresholds; new saturation outranks saturation the baseline
//!   already had. The alert's own rule is context (it firing is why the alert exists),
//!   scored at most [`ANOMALY_SCORE`]. Series are ranked and the top ones kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::alert::Alert;
use crate::config::{Config, EvidenceConfig};
use crate::report::Report;
use crate::store::ReportStore;

/// The kind of resource a signal measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU time and load.
    Cpu,
    /// Memory.
    Memory,
    /// Swap and paging.
    Swap,
    /// Filesystem space.
    DiskSpace,
    /// Disk I/O.
    DiskIo,
    /// Network interfaces and TCP.
    Network,
    /// Whether the target is up and scraped.
    Availability,
    /// Processes and file descriptors.
    Process,
    /// Reboots and the clock.
    System,
    /// The alert's own rule expression.
    Rule,
}

/// What the numbers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the baseline's range and thresholds.
    Normal,
    /// Far from the baseline.
    Anomalous,
    /// Past a saturation threshold (newly, or still).
    Saturated,
    /// Something that should not happen did (OOM kill, reboot, read-only filesystem, the
    /// alert's rule returning data).
    Event,
}

impl Verdict {
    /// The verdict in the design's language.
    pub fn zh(self) -> &'static str {
        match self {
            Verdict::Normal => "正常",
            Verdict::Anomalous => "异常",
            Verdict::Saturated => "饱和",
            Verdict::Event => "事件",
        }
    }
}

/// A value with its unit, rounded for reading.
pub fn format_value(value: f64, unit: &str) -> String {
    let magnitude = value.abs();
    let number = if unit == "bytes" || magnitude >= 1e6 {
        format!("{value:.3e}")
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    };
    match unit {
        "" => number,
        "%" => format!("{number}%"),
        u => format!("{number} {u}"),
    }
}

/// One measured fact, as stored on the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceItem {
    /// What it measures.
    pub resource: Resource,
    /// The signal, with the series' distinguishing label (`filesystem used % (/data)`).
    pub signal: String,
    /// The node_exporter instance.
    pub instance: String,
    /// The PromQL that produced it.
    pub query: String,
    /// `%`, `bytes`, `/s`, `s`, or empty.
    pub unit: String,
    /// Its numbers, score and verdict.
    #[serde(flatten)]
    pub scored: Scored,
}

/// Scores at or above this are anomalies.
pub const ANOMALY_SCORE: f64 = 1.5;

/// When a value counts as saturated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Saturation {
    /// Above this value.
    Above(f64),
    /// Below this value.
    Below(f64),
    /// Any value above zero is an event.
    NonZero,
}

/// The numbers of one scored series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scored {
    /// Baseline median.
    pub baseline: Option<f64>,
    /// Baseline 95th percentile.
    pub baseline_p95: Option<f64>,
    /// Incident mean.
    pub incident: f64,
    /// The change: incident mean − baseline median.
    pub change: Option<f64>,
    /// Incident extreme in the bad direction (the maximum, or the minimum where low is
    /// bad).
    pub peak: f64,
    /// Last value.
    pub last: f64,
    /// Anomaly score: 0 normal; ≥ [`ANOMALY_SCORE`] anomalous; ≥ 5 saturated or an event.
    pub score: f64,
    /// What the numbers say.
    pub verdict: Verdict,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// Scores an incident against its baseline. `floor` is the smallest deviation that counts
/// as one unit of spread (in the signal's unit), so a flat baseline does not turn a tiny
/// wobble into an anomaly. `None` when the incident has no values.
pub fn score(
    baseline: &[f64],
    incident: &[f64],
    saturation: Option<Saturation>,
    floor: f64,
) -> Option<Scored> {
    let last = *incident.last()?;
    let mean = incident.iter().sum::<f64>() / incident.len() as f64;
    let max = incident.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = incident.iter().copied().fold(f64::INFINITY, f64::min);
    let peak = match saturation {
        Some(Saturation::Below(_)) => min,
        _ => max,
    };
    let (base_median, base_p95) = if baseline.is_empty() {
        (None, None)
    } else {
        let mut sorted = baseline.to_vec();
        sorted.sort_by(f64::total_cmp);
        (Some(quantile(&sorted, 0.5)), Some(quantile(&sorted, 0.95)))
    };
    // Robust deviation: |incident mean - baseline median| in units of the baseline's spread
    // (1.4826 x MAD, the standard deviation of normal data), never less than the floor.
    let mut deviation = 0.0;
    if let Some(m) = base_median.filter(|_| baseline.len() >= 3) {
        let deviations: Vec<f64> = baseline.iter().map(|v| (v - m).abs()).collect();
        let spread = (1.4826 * median(&deviations)).max(floor).max(1e-9);
        deviation = ((mean - m).abs() / spread / 3.0).min(5.0);
    }
    // Saturation: the worse of the incident mean and its last value past the threshold.
    let mut saturated = 0.0;
    match saturation {
        Some(Saturation::Above(t)) => {
            let v = mean.max(last);
            if v > t {
                saturated = 5.0 + ((v - t) / t.abs().max(1.0) * 10.0).min(5.0);
            }
        }
        Some(Saturation::Below(t)) => {
            let v = mean.min(last);
            if v < t {
                saturated = 5.0 + ((t - v) / t.abs().max(1.0) * 10.0).min(5.0);
            }
        }
        Some(Saturation::NonZero) if max > 0.0 => saturated = 6.0,
        _ => {}
    }
    // Saturation the baseline already had most of the time is a standing condition, not
    // this incident.
    let standing = match (saturation, base_median) {
        (Some(Saturation::Above(t)), Some(m)) => m > t,
        (Some(Saturation::Below(t)), Some(m)) => m < t,
        _ => false,
    };
    if standing && saturated > 0.0 {
        saturated = 3.0;
    }
    let score = deviation.max(saturated);
    let verdict = match saturation {
        Some(Saturation::NonZero) if saturated > 0.0 => Verdict::Event,
        _ if saturated > 0.0 => Verdict::Saturated,
        _ if score >= ANOMALY_SCORE => Verdict::Anomalous,
        _ => Verdict::Normal,
    };
    Some(Scored {
        baseline: base_median,
        baseline_p95: base_p95,
        incident: mean,
        change: base_median.map(|m| mean - m),
        peak,
        last,
        score: (score * 100.0).round() / 100.0,
        verdict,
    })
}

/// One signal of the USE pack: PromQL with `{sel}` (the instance matcher) and `{w}` (the
/// rate window), and how to read it.
struct Signal {
    resource: Resource,
    name: &'static str,
    unit: &'static str,
    expr: &'static str,
    /// The label that tells the series of one signal apart (mode, mountpoint, ...).
    by: Option<&'static str>,
    saturation: Option<Saturation>,
    /// One unit of spread, at least (see [`score`]).
    floor: f64,
}

const SIGNALS: &[Signal] = &[
    Signal {
        resource: Resource::Cpu,
        name: "CPU busy %",
        unit: "%",
        expr: "100 * (1 - sum by (instance) (rate(node_cpu_seconds_total{mode=~\"idle|iowait\",{sel}}[{w}])) / count by (instance) (node_cpu_seconds_total{mode=\"idle\",{sel}}))",
        by: None,
        saturation: Some(Saturation::Above(90.0)),
        floor: 5.0,
    },
    Signal {
        resource: Resource::Cpu,
        name: "CPU %",
        unit: "%",
        expr: "100 * avg by (instance, mode) (rate(node_cpu_seconds_total{mode=~\"user|nice|system|steal\",{sel}}[{w}]))",
        by: Some("mode"),
        saturation: None,
        floor: 5.0,
    },
    // Time the CPUs sat idle waiting for I/O: a disk's pressure, not CPU work (USE).
    Signal {
        resource: Resource::DiskIo,
        name: "CPU iowait %",
        unit: "%",
        expr: "100 * avg by (instance) (rate(node_cpu_seconds_total{mode=\"iowait\",{sel}}[{w}]))",
        by: None,
        saturation: None,
        floor: 5.0,
    },
    Signal {
        resource: Resource::Cpu,
        name: "load1 per core",
        unit: "",
        expr: "node_load1{{sel}} / on (instance) count by (instance) (node_cpu_seconds_total{mode=\"idle\",{sel}})",
        by: None,
        saturation: Some(Saturation::Above(2.0)),
        floor: 0.25,
    },
    Signal {
        resource: Resource::Memory,
        name: "memory available %",
        unit: "%",
        expr: "100 * node_memory_MemAvailable_bytes{{sel}} / node_memory_MemTotal_bytes{{sel}}",
        by: None,
        saturation: Some(Saturation::Below(10.0)),
        floor: 3.0,
    },
    Signal {
        resource: Resource::Memory,
        name: "OOM kills",
        unit: "",
        expr: "increase(node_vmstat_oom_kill{{sel}}[{w}])",
        by: None,
        saturation: Some(Saturation::NonZero),
        floor: 1.0,
    },
    Signal {
        resource: Resource::Memory,
        name: "major page faults",
        unit: "/s",
        expr: "rate(node_vmstat_pgmajfault{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 20.0,
    },
    Signal {
        resource: Resource::Swap,
        name: "swap in",
        unit: "pages/s",
        expr: "rate(node_vmstat_pswpin{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 10.0,
    },
    Signal {
        resource: Resource::Swap,
        name: "swap out",
        unit: "pages/s",
        expr: "rate(node_vmstat_pswpout{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 10.0,
    },
    Signal {
        resource: Resource::DiskSpace,
        name: "filesystem used %",
        unit: "%",
        expr: "100 * (1 - node_filesystem_avail_bytes{{sel}} / node_filesystem_size_bytes{{sel}})",
        by: Some("mountpoint"),
        saturation: Some(Saturation::Above(90.0)),
        floor: 2.0,
    },
    Signal {
        resource: Resource::DiskSpace,
        name: "filesystem free",
        unit: "bytes",
        expr: "node_filesystem_avail_bytes{{sel}}",
        by: Some("mountpoint"),
        saturation: None,
        floor: 1e8,
    },
    Signal {
        resource: Resource::DiskSpace,
        name: "filesystem read-only",
        unit: "",
        expr: "node_filesystem_readonly{{sel},fstype!~\"squashfs|iso9660|nsfs\",mountpoint!~\"/(sys|proc)(/.*)?\"}",
        by: Some("mountpoint"),
        saturation: Some(Saturation::NonZero),
        floor: 1.0,
    },
    Signal {
        resource: Resource::DiskIo,
        name: "disk busy %",
        unit: "%",
        expr: "100 * rate(node_disk_io_time_seconds_total{{sel}}[{w}])",
        by: Some("device"),
        saturation: Some(Saturation::Above(80.0)),
        floor: 5.0,
    },
    Signal {
        resource: Resource::DiskIo,
        name: "disk await",
        unit: "s",
        expr: "(rate(node_disk_read_time_seconds_total{{sel}}[{w}]) + rate(node_disk_write_time_seconds_total{{sel}}[{w}])) / (rate(node_disk_reads_completed_total{{sel}}[{w}]) + rate(node_disk_writes_completed_total{{sel}}[{w}]))",
        by: Some("device"),
        saturation: None,
        floor: 0.005,
    },
    Signal {
        resource: Resource::Network,
        name: "network errors",
        unit: "/s",
        expr: "rate(node_network_receive_errs_total{{sel}}[{w}]) + rate(node_network_transmit_errs_total{{sel}}[{w}])",
        by: Some("device"),
        saturation: None,
        floor: 1.0,
    },
    Signal {
        resource: Resource::Network,
        name: "network drops",
        unit: "/s",
        expr: "rate(node_network_receive_drop_total{{sel}}[{w}]) + rate(node_network_transmit_drop_total{{sel}}[{w}])",
        by: Some("device"),
        saturation: None,
        floor: 1.0,
    },
    Signal {
        resource: Resource::Network,
        name: "TCP retransmits",
        unit: "/s",
        expr: "rate(node_netstat_Tcp_RetransSegs{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 5.0,
    },
    Signal {
        resource: Resource::Process,
        name: "file descriptors used %",
        unit: "%",
        expr: "100 * node_filefd_allocated{{sel}} / node_filefd_maximum{{sel}}",
        by: None,
        saturation: Some(Saturation::Above(90.0)),
        floor: 2.0,
    },
    Signal {
        resource: Resource::Availability,
        name: "up",
        unit: "",
        expr: "up{{sel}}",
        by: None,
        saturation: Some(Saturation::Below(0.5)),
        floor: 0.5,
    },
    Signal {
        resource: Resource::Availability,
        name: "scrape duration",
        unit: "s",
        expr: "scrape_duration_seconds{{sel}}",
        by: None,
        saturation: None,
        floor: 0.25,
    },
    Signal {
        resource: Resource::System,
        name: "reboots",
        unit: "",
        expr: "changes(node_boot_time_seconds{{sel}}[{w}])",
        by: None,
        saturation: Some(Saturation::NonZero),
        floor: 1.0,
    },
    Signal {
        resource: Resource::System,
        name: "clock offset",
        unit: "s",
        expr: "abs(node_timex_offset_seconds{{sel}})",
        by: None,
        saturation: Some(Saturation::Above(0.5)),
        floor: 0.05,
    },
];

/// Why evidence could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// Prometheus could not be reached or answered an error.
    #[error("Prometheus at {url}: {message}")]
    Prometheus {
        /// Its base URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// It took longer than `Evidence.TimeoutSeconds`.
    #[error("gathering evidence took longer than {0:?}")]
    Timeout(Duration),
}

/// Hosts whose instances are looked up for one gathering (a deployment may list more).
const MAX_TARGET_HOSTS: usize = 50;

/// A time as Prometheus's API takes it: Unix seconds, to the millisecond (whole seconds
/// would end a range before a sample taken in the current second).
fn unix(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// A PromQL string literal.
fn literal(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into())
}

/// A regex matching exactly `value` (RE2 metacharacters escaped).
fn exact_regex(value: &str) -> String {
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

/// The alert's own rule expression: `g0.expr` of its `generatorURL`, or an `expr`
/// annotation.
pub fn rule_expression(alert: &Alert) -> Option<String> {
    if let Some(expr) = alert
        .annotations
        .get("expr")
        .filter(|e| !e.trim().is_empty())
    {
        return Some(expr.clone());
    }
    let query = alert.generator_url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "g0.expr").then(|| percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The time window of one gathering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    /// Start of the baseline.
    pub from: DateTime<Utc>,
    /// End of the baseline, start of the incident (the alert's `startsAt`).
    pub incident: DateTime<Utc>,
    /// Now.
    pub to: DateTime<Utc>,
    /// Query step.
    pub step: Duration,
}

impl Windows {
    /// The windows for an alert that started at `starts_at`, seen at `now`.
    pub fn new(starts_at: DateTime<Utc>, now: DateTime<Utc>, baseline: Duration) -> Self {
        let incident = starts_at.min(now);
        let from = incident - chrono::Duration::from_std(baseline).unwrap_or_default();
        let total = (now - from).num_milliseconds().max(1000) as u64;
        // At most ~240 points a series, at least one a second.
        let step = Duration::from_secs(total.div_ceil(240 * 1000).max(1));
        Self {
            from,
            incident,
            to: now,
            step,
        }
    }
}

/// Gathers evidence from one Prometheus.
#[derive(Clone)]
pub struct Gatherer {
    url: String,
    http: reqwest::Client,
    config: EvidenceConfig,
}

type Matrix = Vec<(serde_json::Map<String, Value>, Vec<(f64, f64)>)>;

impl Gatherer {
    /// A gatherer for this Prometheus.
    pub fn new(prometheus_url: &str, config: EvidenceConfig) -> Self {
        Self {
            url: prometheus_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(config.timeout)
                .build()
                .unwrap_or_default(),
            config,
        }
    }

    fn error(&self, message: impl Into<String>) -> EvidenceError {
        EvidenceError::Prometheus {
            url: self.url.clone(),
            message: message.into(),
        }
    }

    async fn api(&self, path: &str, params: &[(&str, String)]) -> Result<Value, EvidenceError> {
        let response = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|e| self.error(e.to_string()))?;
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

    async fn range(&self, query: &str, w: &Windows) -> Result<Matrix, EvidenceError> {
        let data = self
            .api(
                "query_range",
                &[
                    ("query", query.to_owned()),
                    ("start", unix(w.from)),
                    ("end", unix(w.to)),
                    ("step", format!("{}s", w.step.as_secs())),
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
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query), ("timeout", "2s")])
            .send()
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

    /// The node_exporter instances the alert is about: its `instance`, each host of its
    /// `hostname` (a comma-separated list is allowed) and of its registered deployment,
    /// matched against `up`'s `instance` and `hostname` labels and `node_uname_info`'s
    /// `nodename`; its `job` when nothing else names a target.
    async fn targets(
        &self,
        alert: &Alert,
        deployment_hosts: &[String],
        w: &Windows,
    ) -> Result<Vec<String>, EvidenceError> {
        let label = |k: &str| alert.labels.get(k).filter(|v| !v.trim().is_empty());
        let window = format!("{}s", (w.to - w.from).num_seconds().max(1));
        let mut queries = Vec::new();
        if let Some(instance) = label("instance") {
            queries.push(format!("up{{instance={}}}", literal(instance.trim())));
        }
        let mut hosts: Vec<String> = label("hostname")
            .map(|h| h.split(',').map(|h| h.trim().to_owned()).collect())
            .unwrap_or_default();
        hosts.extend(deployment_hosts.iter().cloned());
        hosts.retain(|h| !h.is_empty());
        hosts.sort();
        hosts.dedup();
        hosts.truncate(MAX_TARGET_HOSTS);
        if !hosts.is_empty() {
            // One regex alternation per label, so many hosts are still three queries.
            let names = hosts
                .iter()
                .map(|h| exact_regex(&crate::deployment::host_key(h)))
                .collect::<Vec<_>>()
                .join("|");
            let exact = hosts
                .iter()
                .map(|h| exact_regex(h))
                .collect::<Vec<_>>()
                .join("|");
            queries.push(format!(
                "up{{hostname=~{}}}",
                literal(&format!("(?i)({names})"))
            ));
            queries.push(format!(
                "up{{instance=~{}}}",
                literal(&format!("(?i)({exact}|({names})(:[0-9]+)?)"))
            ));
            queries.push(format!(
                "node_uname_info{{nodename=~{}}}",
                literal(&format!("(?i)({names})"))
            ));
        }
        if queries.is_empty() {
            if let Some(job) = label("job") {
                queries.push(format!("up{{job={}}}", literal(job)));
            }
        }
        let mut found = BTreeSet::new();
        for q in queries {
            let data = self
                .api(
                    "query",
                    &[
                        ("query", format!("max_over_time({q}[{window}])")),
                        ("time", unix(w.to)),
                    ],
                )
                .await?;
            for series in data["result"].as_array().into_iter().flatten() {
                if let Some(i) = series["metric"]["instance"].as_str() {
                    found.insert(i.to_owned());
                }
            }
        }
        if found.is_empty() {
            if let Some(instance) = label("instance") {
                found.insert(instance.trim().to_owned());
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Gathers, scores and ranks the evidence for an alert that started at `starts_at`, on
    /// its hosts and those of its registered deployment.
    pub async fn gather(
        &self,
        alert: &Alert,
        deployment_hosts: &[String],
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<EvidenceItem>, EvidenceError> {
        let limit = self.config.timeout;
        tokio::time::timeout(
            limit,
            self.gather_within(alert, deployment_hosts, starts_at, now),
        )
        .await
        .map_err(|_| EvidenceError::Timeout(limit))?
    }

    async fn gather_within(
        &self,
        alert: &Alert,
        deployment_hosts: &[String],
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<EvidenceItem>, EvidenceError> {
        let baseline = self.config.baseline;
        let w = Windows::new(starts_at, now, baseline);
        let instances = self.targets(alert, deployment_hosts, &w).await?;
        let rate_window = format!("{}s", self.config.rate_window.as_secs());
        struct Job {
            resource: Resource,
            name: String,
            unit: &'static str,
            by: Option<&'static str>,
            saturation: Option<Saturation>,
            floor: f64,
            query: String,
        }
        let mut jobs = Vec::new();
        for instance in &instances {
            let sel = format!("instance={}", literal(instance));
            for s in SIGNALS {
                jobs.push(Job {
                    resource: s.resource,
                    name: s.name.to_owned(),
                    unit: s.unit,
                    by: s.by,
                    saturation: s.saturation,
                    floor: s.floor,
                    query: s.expr.replace("{sel}", &sel).replace("{w}", &rate_window),
                });
            }
        }
        if let Some(expr) = rule_expression(alert) {
            // How many series the rule returns: above zero while it fires.
            jobs.push(Job {
                resource: Resource::Rule,
                name: format!("alert rule {}", alert.alertname),
                unit: "",
                by: None,
                saturation: Some(Saturation::NonZero),
                floor: 1.0,
                query: format!("count({expr}) or vector(0)"),
            });
        }
        let results = join_all(jobs.iter().map(|job| self.range(&job.query, &w))).await;
        let split = w.incident.timestamp() as f64;
        let mut items = Vec::new();
        let mut failures = 0;
        for (job, result) in jobs.iter().zip(results) {
            let Job {
                resource,
                name,
                unit,
                by,
                saturation,
                floor,
                query,
            } = job;
            let Ok(matrix) = result else {
                failures += 1;
                continue;
            };
            for (labels, points) in matrix {
                let (baseline, incident): (Vec<f64>, Vec<f64>) = (
                    points
                        .iter()
                        .filter(|(t, _)| *t < split)
                        .map(|(_, v)| *v)
                        .collect(),
                    points
                        .iter()
                        .filter(|(t, _)| *t >= split)
                        .map(|(_, v)| *v)
                        .collect(),
                );
                let Some(mut scored) = score(&baseline, &incident, *saturation, *floor) else {
                    continue;
                };
                if *resource == Resource::Rule {
                    // The rule firing is why the alert exists, not a cause: context, ranked
                    // below measured anomalies.
                    scored.score = scored.score.min(ANOMALY_SCORE);
                }
                let instance = labels
                    .get("instance")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let signal = match by.and_then(|b| labels.get(b)).and_then(Value::as_str) {
                    Some(part) => format!("{name} ({part})"),
                    None => name.clone(),
                };
                items.push(EvidenceItem {
                    resource: *resource,
                    signal,
                    instance,
                    query: query.clone(),
                    unit: (*unit).to_owned(),
                    scored,
                });
            }
        }
        if failures == jobs.len() && !jobs.is_empty() {
            return Err(self.error("every evidence query failed"));
        }
        items.sort_by(|a, b| b.scored.score.total_cmp(&a.scored.score));
        items.truncate(self.config.max_items.get());
        Ok(items)
    }
}

/// The evidence stage of the service: gathers once per report version, in the background
/// at intake (bounded by `Evidence.Concurrency`, apart from the AI workers, so a burst of
/// alerts gets its facts while the AI queue is long) or, when that has not happened (a
/// restart, a re-diagnosis), by the worker before the runner; a worker that claims a
/// report while its evidence is being gathered waits for that gathering instead of
/// starting another.
#[derive(Clone)]
pub struct Stage {
    gatherer: Gatherer,
    store: Arc<dyn ReportStore>,
    permits: Arc<Semaphore>,
    inflight: Arc<Mutex<HashMap<(String, u32), Gathering>>>,
}

type Gathering = Arc<OnceCell<Option<Vec<EvidenceItem>>>>;

impl Stage {
    /// The stage for this configuration; `None` when `Evidence.Enabled` is false.
    pub fn new(config: &Config, store: Arc<dyn ReportStore>) -> Option<Self> {
        config.evidence.enabled.then(|| Self {
            gatherer: Gatherer::new(config.ai.prometheus_url.as_str(), config.evidence.clone()),
            store,
            permits: Arc::new(Semaphore::new(config.evidence.concurrency.get())),
            inflight: Arc::default(),
        })
    }

    /// Starts gathering a new report's evidence in the background, when a gathering is
    /// free; in a burst beyond `Evidence.Concurrency` the worker gathers it when it claims
    /// the report (nothing piles up in memory).
    pub fn spawn(&self, report: &Report) {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            tracing::debug!(deployment_id = %report.deployment_id, "every evidence gathering is busy; the worker gathers this one");
            return;
        };
        let (stage, report) = (self.clone(), report.clone());
        let span = tracing::info_span!("evidence", deployment_id = %report.deployment_id);
        tokio::spawn(
            async move { stage.evidence_with(&report, Some(permit)).await }.instrument(span),
        );
    }

    /// The report's evidence: as stored, from a gathering in progress, or gathered now.
    /// `None` when it cannot be had (logged).
    pub async fn evidence_for(&self, report: &Report) -> Option<Vec<EvidenceItem>> {
        self.evidence_with(report, None).await
    }

    async fn evidence_with(
        &self,
        report: &Report,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<Vec<EvidenceItem>> {
        if let Some(stored) = &report.evidence {
            return Some(stored.clone());
        }
        let key = (report.deployment_id.to_string(), report.version);
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(key.clone()).or_default().clone()
        };
        let evidence = cell
            .get_or_init(|| self.gather_and_store(report, permit))
            .await
            .clone();
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        evidence
    }

    async fn gather_and_store(
        &self,
        report: &Report,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<Vec<EvidenceItem>> {
        // The permit first: waiting gatherings do not read the store.
        let _permit = match permit {
            Some(p) => p,
            None => Arc::clone(&self.permits).acquire_owned().await.ok()?,
        };
        // Gathered after an earlier attempt (another process, before a restart)? And the
        // deployment the store snapshotted on the report, for its hosts.
        let mut deployment = report.deployment.clone();
        if let Ok(Some(current)) = self.store.get(&report.deployment_id).await {
            if current.version == report.version && current.evidence.is_some() {
                return current.evidence;
            }
            deployment = deployment.or(current.deployment);
        }
        let now = Utc::now();
        let starts_at = DateTime::parse_from_rfc3339(&report.alert.starts_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(report.created_time);
        let started = std::time::Instant::now();
        let hosts = deployment.map(|d| d.hosts).unwrap_or_default();
        match self
            .gatherer
            .gather(&report.alert, &hosts, starts_at, now)
            .await
        {
            Ok(items) => {
                tracing::info!(
                    items = items.len(),
                    top = items.first().map_or("", |i| i.signal.as_str()),
                    ms = started.elapsed().as_millis() as u64,
                    "evidence gathered"
                );
                match self
                    .store
                    .set_evidence(&report.deployment_id, report.version, &items)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => tracing::info!("report moved on before its evidence was stored"),
                    Err(e) => tracing::warn!(error = %e, "storing the evidence failed"),
                }
                Some(items)
            }
            Err(e) => {
                tracing::warn!(error = %e, "evidence could not be gathered");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_baseline_and_a_jump_past_the_threshold_is_new_saturation() {
        let baseline = [10.0, 12.0, 11.0, 9.0, 10.0];
        let s = score(
            &baseline,
            &[99.0, 100.0],
            Some(Saturation::Above(90.0)),
            5.0,
        )
        .unwrap();
        assert_eq!(s.verdict, Verdict::Saturated);
        assert!(s.score >= 5.0, "{s:?}");
        assert_eq!((s.baseline, s.peak, s.last), (Some(10.0), 100.0, 100.0));
        assert_eq!(s.change, Some(89.5), "incident mean minus baseline median");
    }

    #[test]
    fn noise_within_the_floor_is_normal_and_a_standing_saturation_ranks_below_a_new_one() {
        let s = score(
            &[1.0, 1.1, 0.9, 1.0],
            &[3.0, 2.5],
            Some(Saturation::Above(90.0)),
            5.0,
        )
        .unwrap();
        assert_eq!(s.verdict, Verdict::Normal, "{s:?}");
        let standing = score(
            &[95.0, 96.0, 95.5],
            &[96.0],
            Some(Saturation::Above(90.0)),
            2.0,
        )
        .unwrap();
        assert_eq!(standing.verdict, Verdict::Saturated);
        assert!(standing.score < 5.0, "{standing:?}");
    }

    #[test]
    fn low_is_bad_for_available_memory_and_up() {
        let s = score(
            &[60.0, 61.0, 59.0],
            &[8.0, 5.0],
            Some(Saturation::Below(10.0)),
            3.0,
        )
        .unwrap();
        assert_eq!((s.verdict, s.peak), (Verdict::Saturated, 5.0));
        let down = score(
            &[1.0, 1.0, 1.0],
            &[0.0, 0.0],
            Some(Saturation::Below(0.5)),
            0.5,
        )
        .unwrap();
        assert_eq!(down.verdict, Verdict::Saturated);
        assert!(down.score >= 9.0, "{down:?}");
    }

    #[test]
    fn a_large_deviation_without_a_threshold_is_an_anomaly_and_events_are_events() {
        let s = score(
            &[100.0, 110.0, 90.0, 105.0, 95.0],
            &[400.0, 420.0],
            None,
            20.0,
        )
        .unwrap();
        assert_eq!(s.verdict, Verdict::Anomalous, "{s:?}");
        let oom = score(
            &[0.0, 0.0, 0.0],
            &[0.0, 1.0],
            Some(Saturation::NonZero),
            1.0,
        )
        .unwrap();
        assert_eq!(oom.verdict, Verdict::Event);
        assert_eq!(score(&[1.0], &[], None, 1.0), None);
    }

    #[test]
    fn the_rule_expression_comes_from_the_generator_url_or_an_annotation() {
        let mut alert = Alert {
            generator_url: "http://prom:9090/graph?g0.expr=node_load1+%3E+2&g0.tab=1".to_owned(),
            ..Alert::default()
        };
        assert_eq!(rule_expression(&alert).as_deref(), Some("node_load1 > 2"));
        alert.annotations.insert("expr".into(), "up == 0".into());
        assert_eq!(rule_expression(&alert).as_deref(), Some("up == 0"));
    }

    #[test]
    fn windows_keep_a_series_under_240_points() {
        let now = Utc::now();
        let w = Windows::new(
            now - chrono::Duration::minutes(10),
            now,
            Duration::from_secs(1800),
        );
        assert_eq!(w.step, Duration::from_secs(10));
        assert_eq!(w.incident, now - chrono::Duration::minutes(10));
        let future = Windows::new(
            now + chrono::Duration::minutes(5),
            now,
            Duration::from_secs(60),
        );
        assert_eq!(future.incident, now, "a start in the future is now");
    }

    #[test]
    fn hostnames_are_matched_literally_in_regexes() {
        assert_eq!(exact_regex("web-1.example"), "web-1\\.example");
    }
}
