//! Evidence as stored on a report: one measured fact per signal and series, with its
//! numbers, score and verdict.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kind of resource a signal measures.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The anomaly was already there in the window before the release (or the alert).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_existing: bool,
    /// The series has too little history before the release (or the alert) for a
    /// baseline: it is measured against the absolute thresholds alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_baseline: bool,
    /// When the series starts, when it has no baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_start: Option<DateTime<Utc>>,
}

/// Scores at or above this are anomalies.
pub const ANOMALY_SCORE: f64 = 1.5;

/// The numbers of one scored series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
