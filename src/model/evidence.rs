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
pub enum Reading {
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

impl Reading {
    /// The verdict in the design's language.
    pub fn zh(self) -> &'static str {
        match self {
            Reading::Normal => "正常",
            Reading::Anomalous => "异常",
            Reading::Saturated => "饱和",
            Reading::Event => "事件",
        }
    }
}

/// A value with its unit, rounded for reading.
pub fn format_value(value: f64, unit: &str) -> String {
    let magnitude = value.abs();
    let number = if value == 0.0 {
        // Nothing: `0%`, not `0.000%` beside `30.0%`.
        "0".to_owned()
    } else if unit == "bytes" || magnitude >= 1e6 {
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

/// The queries of `items` in order, each once (several signals share one: the CPU modes
/// are one query by mode), at most `n`.
pub fn distinct_queries<'a>(
    items: impl IntoIterator<Item = &'a EvidenceItem>,
    n: usize,
) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if out.len() == n {
            break;
        }
        if !out.contains(&item.query.as_str()) {
            out.push(&item.query);
        }
    }
    out
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
    /// The anomaly was already there before the release: its series changed the bad way
    /// more than a rate window before it (none for an alert with no deployment).
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

/// Hosts of an alert that its evidence did not measure: past `Evidence.MaxHosts` (an
/// alert on a whole job names every instance of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unmeasured {
    /// How many were left out.
    pub total: usize,
    /// The first of them by name, at most [`UNMEASURED_NAMED`].
    pub hosts: Vec<String>,
    /// The limit that left them out (`Evidence.MaxHosts`).
    pub max_hosts: usize,
}

/// Hosts an [`Unmeasured`] names at most.
pub const UNMEASURED_NAMED: usize = 50;

impl Unmeasured {
    /// The hosts past `max_hosts` (`None` when there are none), named up to
    /// [`UNMEASURED_NAMED`].
    pub fn of(mut left_out: Vec<String>, max_hosts: usize) -> Option<Self> {
        if left_out.is_empty() {
            return None;
        }
        let total = left_out.len();
        left_out.sort();
        left_out.truncate(UNMEASURED_NAMED);
        Some(Self {
            total,
            hosts: left_out,
            max_hosts,
        })
    }

    /// One line for people: how many, which, and why.
    pub fn sentence(&self) -> String {
        let more = self.total.saturating_sub(self.hosts.len());
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(
            "{} hosts not measured (Evidence.MaxHosts is {}): {}{tail}",
            self.total,
            self.max_hosts,
            self.hosts.join(", ")
        )
    }
}

impl Unmeasured {
    /// The same in the design's language.
    pub fn zh(&self) -> String {
        let more = self.total.saturating_sub(self.hosts.len());
        let tail = if more > 0 {
            format!(" 等（另有 {more} 台未列出）")
        } else {
            String::new()
        };
        format!(
            "另有 {} 台主机超出 Evidence.MaxHosts（{}）未测量：{}{tail}",
            self.total,
            self.max_hosts,
            self.hosts.join("、")
        )
    }
}

/// What one gathering measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gathered {
    /// The ranked items.
    pub items: Vec<EvidenceItem>,
    /// The hosts it left out.
    pub unmeasured: Option<Unmeasured>,
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
    pub verdict: Reading,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_a_person_reads_them() {
        assert_eq!(format_value(0.0, "%"), "0%");
        assert_eq!(format_value(0.0, "bytes"), "0 bytes");
        assert_eq!(format_value(30.0, "%"), "30.0%");
        assert_eq!(format_value(0.25, "%"), "0.250%");
        assert_eq!(format_value(143.4, "ms"), "143 ms");
        assert_eq!(format_value(2.5e9, "bytes"), "2.500e9 bytes");
    }
}
