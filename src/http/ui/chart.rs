//! The report page's charts: each top signal drawn by the service as inline SVG from
//! Prometheus, with the baseline and incident windows shaded, the release marked, and
//! released and control hosts as separate lines. Styled by classes only (the page's
//! Content-Security-Policy allows no inline style).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use maud::{html, Markup, PreEscaped};

use crate::evidence::prometheus::Prometheus;
use crate::model::deployment::{host_key, HostStatus};
use crate::model::evidence::format_value;
use crate::model::report::Report;

/// Charts on one page at most.
pub const MAX_CHARTS: usize = 12;
/// Charts of the release comparisons at most (the rest are the top evidence items).
const MAX_COMPARISON_CHARTS: usize = 4;
/// Points a line at most.
const MAX_POINTS: f64 = 240.0;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// Whose a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A host that got the release.
    Released,
    /// A host that did not.
    Control,
    /// Not known (no registered rollout).
    Unknown,
}

impl Role {
    fn class(self) -> &'static str {
        match self {
            Role::Released => "line released",
            Role::Control => "line control",
            Role::Unknown => "line",
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    /// Its series' host.
    pub label: String,
    /// Released or control.
    pub role: Role,
    /// `(unix seconds, value)`.
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The signal.
    pub title: String,
    /// Its unit.
    pub unit: String,
    /// The query drawn.
    pub query: String,
    /// Its lines.
    pub lines: Vec<Line>,
    /// Why there are none, when Prometheus could not be asked.
    pub error: Option<String>,
    /// When the verdict placed a released host's change the bad way: `(host, time)`.
    pub changes: Vec<(String, DateTime<Utc>)>,
}

/// The time a report's charts show.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    /// Start of the baseline.
    pub from: DateTime<Utc>,
    /// End of the baseline: the release, else the alert's start.
    pub incident: DateTime<Utc>,
    /// End of the incident window: when the evidence was measured.
    pub to: DateTime<Utc>,
    /// The release, when registered.
    pub release: Option<DateTime<Utc>>,
}

impl Span {
    /// The windows of `report`, with `baseline` before its anchor.
    pub fn of(report: &Report, baseline: Duration) -> Self {
        let release = report.deployment.as_ref().map(|d| {
            d.hosts
                .iter()
                .filter_map(|h| h.released_at)
                .min()
                .unwrap_or(d.started_at)
        });
        let starts = report.alert.starts_at.at();
        let to = report.evidence_until.unwrap_or(report.updated_time);
        let incident = release.or(starts).unwrap_or(report.created_time).min(to);
        let from = incident - chrono::Duration::from_std(baseline).unwrap_or_default();
        Self {
            from,
            incident,
            to: to.max(incident + chrono::Duration::seconds(60)),
            release,
        }
    }

    fn step(&self) -> Duration {
        let seconds = (self.to - self.from).num_seconds().max(1) as f64;
        Duration::from_secs((seconds / MAX_POINTS).ceil().max(1.0) as u64)
    }
}

/// What to draw of `report`: the compared signals (released and control hosts), then the
/// top evidence items, at most [`MAX_CHARTS`].
struct Wanted {
    title: String,
    unit: String,
    /// `(query, host, role)`.
    lines: Vec<(String, String, Role)>,
    /// `(host, time)` of the comparisons' changes.
    changes: Vec<(String, DateTime<Utc>)>,
}

fn role_of(report: &Report, host: &str) -> Role {
    let Some(d) = &report.deployment else {
        return Role::Unknown;
    };
    let key = host_key(host);
    match d.hosts.iter().find(|h| host_key(&h.name) == key) {
        Some(h) if h.status == HostStatus::Released => Role::Released,
        Some(_) => Role::Control,
        None => Role::Unknown,
    }
}

fn wanted(report: &Report) -> Vec<Wanted> {
    let mut charts: Vec<Wanted> = Vec::new();
    for c in report.release.iter().flat_map(|r| &r.comparisons) {
        let role = if c.released_host {
            Role::Released
        } else {
            Role::Control
        };
        let line = (c.query.clone(), c.host.clone(), role);
        let change = c
            .change_at
            .filter(|_| c.worse && c.released_host)
            .map(|at| (c.host.clone(), at));
        let full = charts.len() >= MAX_COMPARISON_CHARTS;
        match charts.iter_mut().find(|w| w.title == c.signal) {
            Some(w) => {
                if !w.lines.iter().any(|(q, _, _)| *q == c.query) {
                    w.lines.push(line);
                }
                w.changes.extend(change);
            }
            None if !full => charts.push(Wanted {
                title: c.signal.clone(),
                unit: c.unit.clone(),
                lines: vec![line],
                changes: change.into_iter().collect(),
            }),
            None => {}
        }
    }
    for item in report.evidence.iter().flatten() {
        if charts.len() >= MAX_CHARTS {
            break;
        }
        if item.query.is_empty() {
            continue;
        }
        let title = if item.instance.is_empty() {
            item.signal.clone()
        } else {
            format!("{} @ {}", item.signal, item.instance)
        };
        charts.push(Wanted {
            title,
            unit: item.unit.clone(),
            lines: vec![(
                item.query.clone(),
                item.instance.clone(),
                role_of(report, &item.instance),
            )],
            changes: Vec::new(),
        });
    }
    charts
}

/// The charts of `report`, every line asked of Prometheus at once.
pub async fn gather(prometheus: &Prometheus, report: &Report, span: Span) -> Vec<Chart> {
    let wanted = wanted(report);
    let step = span.step();
    let asks = wanted.iter().map(|w| async move {
        let mut chart = Chart {
            title: w.title.clone(),
            unit: w.unit.clone(),
            query: w.lines.first().map(|l| l.0.clone()).unwrap_or_default(),
            lines: Vec::new(),
            error: None,
            changes: w.changes.clone(),
        };
        for (query, host, role) in &w.lines {
            match prometheus.range(query, span.from, span.to, step).await {
                Ok(matrix) => {
                    for (labels, points) in matrix {
                        let label = labels
                            .get("instance")
                            .or_else(|| labels.get("hostname"))
                            .and_then(|v| v.as_str())
                            .unwrap_or(host)
                            .to_owned();
                        // A series is a released or a control host's by any of its
                        // host labels.
                        let role = match role {
                            Role::Unknown => ["instance", "hostname", "nodename"]
                                .iter()
                                .filter_map(|k| labels.get(*k).and_then(|v| v.as_str()))
                                .map(|h| role_of(report, h))
                                .find(|r| *r != Role::Unknown)
                                .unwrap_or(Role::Unknown),
                            r => *r,
                        };
                        chart.lines.push(Line {
                            label,
                            role,
                            points,
                        });
                    }
                }
                Err(e) => chart.error = Some(e.to_string()),
            }
        }
        chart
    });
    join_all(asks).await
}

fn clock(t: f64) -> String {
    DateTime::<Utc>::from_timestamp(t as i64, 0)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_default()
}

/// One chart as inline SVG.
pub fn svg(chart: &Chart, span: &Span, labels: [&str; 4]) -> Markup {
    let [baseline_label, incident_label, release_label, change_label] = labels;
    let (t0, t1) = (span.from.timestamp() as f64, span.to.timestamp() as f64);
    let values = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1));
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if lo > 0.0 && lo < hi * 0.5 {
        lo = 0.0;
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + ((t - t0) / (t1 - t0).max(1.0)).clamp(0.0, 1.0) * plot_w;
    let y = |v: f64| TOP + (1.0 - (v - lo) / (hi - lo)) * plot_h;
    let xi = x(span.incident.timestamp() as f64);
    let mut paths = String::new();
    for line in &chart.lines {
        let mut points = String::new();
        for (t, v) in &line.points {
            let _ = write!(points, "{:.1},{:.1} ", x(*t), y(*v));
        }
        // The points are numbers the service formatted; the label is escaped by maud.
        let _ = write!(
            paths,
            "{}",
            html! {
                polyline class=(line.role.class()) points=(points.trim_end()) {
                    title { (line.label) }
                }
            }
            .into_string()
        );
    }
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label=(chart.title) xmlns="http://www.w3.org/2000/svg" {
            title { (chart.title) }
            rect class="window-baseline" x=(format!("{LEFT:.1}")) y=(TOP) width=(format!("{:.1}", xi - LEFT)) height=(plot_h) {
                title { (baseline_label) }
            }
            rect class="window-incident" x=(format!("{xi:.1}")) y=(TOP) width=(format!("{:.1}", LEFT + plot_w - xi)) height=(plot_h) {
                title { (incident_label) }
            }
            line class="axis" x1=(LEFT) y1=(TOP + plot_h) x2=(LEFT + plot_w) y2=(TOP + plot_h) {}
            @if let Some(r) = span.release {
                @let xr = x(r.timestamp() as f64);
                line class="release" x1=(format!("{xr:.1}")) y1=(TOP) x2=(format!("{xr:.1}")) y2=(TOP + plot_h) {
                    title { (release_label) " " (r.format("%Y-%m-%d %H:%M:%S UTC")) }
                }
            }
            @for (host, at) in &chart.changes {
                @let xc = x(at.timestamp() as f64);
                line class="change" x1=(format!("{xc:.1}")) y1=(TOP) x2=(format!("{xc:.1}")) y2=(TOP + plot_h) {
                    title { (change_label) " " (host) " " (at.format("%Y-%m-%d %H:%M:%S UTC")) }
                }
            }
            (PreEscaped(paths))
            text class="tick" x=(LEFT - 4.0) y=(TOP + 8.0) text-anchor="end" { (format_value(hi, &chart.unit)) }
            text class="tick" x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" { (format_value(lo, &chart.unit)) }
            text class="tick" x=(LEFT) y=(HEIGHT - 6.0) { (clock(t0)) }
            text class="tick" x=(LEFT + plot_w) y=(HEIGHT - 6.0) text-anchor="end" { (clock(t1)) " UTC" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict's comparisons come first, a chart per signal with a line per host
    /// (released and control apart, each query once); then the evidence items.
    #[test]
    fn compared_signals_are_charted_per_host_before_the_evidence() {
        let comparison = |signal: &str, host: &str, released: bool| {
            serde_json::json!({
                "signal": signal, "host": host, "releasedHost": released,
                "method": if released { "canary" } else { "before_after" },
                "query": format!("{signal}{{host=\"{host}\"}}"), "unit": "%",
                "released": 1.0, "control": 1.0, "points": [10, 10], "pValue": 1.0,
                "effect": 0.0, "class": "pass", "worse": false,
            })
        };
        let mut report = crate::notify::message::tests::example();
        report.release = Some(
            serde_json::from_value(serde_json::json!({
                "verdict": "release", "recommendation": "rollback", "confidence": 0.9,
                "reasons": [], "comparisons": [
                    comparison("errors %", "web-2", true),
                    comparison("errors %", "web-1", false),
                    comparison("errors %", "web-2", true),
                    comparison("p95 ms", "web-2", true),
                ],
            }))
            .unwrap(),
        );
        let charts = wanted(&report);
        let summary: Vec<(&str, Vec<(&str, Role)>)> = charts
            .iter()
            .map(|w| {
                let lines = w.lines.iter().map(|(_, h, r)| (h.as_str(), *r)).collect();
                (w.title.as_str(), lines)
            })
            .collect();
        assert_eq!(
            summary[..2],
            [
                (
                    "errors %",
                    vec![("web-2", Role::Released), ("web-1", Role::Control)]
                ),
                ("p95 ms", vec![("web-2", Role::Released)]),
            ]
        );
        assert_eq!(
            charts[2].title, "errors % @ web-2:8080",
            "then the evidence"
        );
    }

    #[test]
    fn a_chart_shades_its_windows_marks_the_release_and_escapes_labels() {
        let at = |m: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + m * 60, 0).unwrap();
        let span = Span {
            from: at(0),
            incident: at(30),
            to: at(60),
            release: Some(at(30)),
        };
        let chart = Chart {
            title: "errors %".into(),
            unit: "%".into(),
            query: "q".into(),
            lines: vec![Line {
                label: "<img src=x onerror=alert(1)>".into(),
                role: Role::Released,
                points: vec![
                    (at(0).timestamp() as f64, 1.0),
                    (at(60).timestamp() as f64, 9.0),
                ],
            }],
            error: None,
            changes: vec![("web-1".into(), at(20))],
        };
        let svg = svg(&chart, &span, ["b", "i", "r", "c"]).into_string();
        assert!(
            svg.contains(r#"class="window-baseline" x="56.0" y="10" width="288.0""#),
            "{svg}"
        );
        assert!(svg.contains(r#"class="release" x1="344.0""#), "{svg}");
        // The verdict's change, 10 minutes before the release.
        assert!(svg.contains(r#"class="change" x1="248.0""#), "{svg}");
        assert!(
            svg.contains("<title>c web-1 2023-11-14 22:33:20 UTC</title>"),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="line released" points="56.0,141.6 632.0,10.0""#),
            "{svg}"
        );
        assert!(svg.contains("&lt;img src=x onerror=alert(1)&gt;") && !svg.contains("<img"));
    }
}
