//! Measuring the release: every host of the registered deployment, each RED signal (the
//! registration's templates, else `Release.RED.*`, else the common conventions) and the
//! host's saturation signals, over one range from a baseline before the first release to
//! now; then the comparisons and the rules.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use super::compare::{compare, HostSeries, Kind, Limit, Settings, Spec, Worse};
use super::red::{for_host, PLACEHOLDER};
use super::rules::{self, Rollout};
use crate::config::{EvidenceConfig, ReleaseConfig};
use crate::evidence::prometheus::{exact_regex, literal};
use crate::evidence::score::Saturation;
use crate::evidence::signals::signal;
use crate::evidence::Prometheus;
use crate::model::deployment::{Deployment, Host, HostStatus, RedQueries, Strategy, Thresholds};
use crate::model::verdict::{ReleaseVerdict, ReleaseWindows};

/// Hosts measured (a deployment may list more; the first are taken).
pub const MAX_HOSTS: usize = 50;

/// Range queries at once.
const CONCURRENT_QUERIES: usize = 16;

/// The host signals compared, by their catalogue names.
const HOST_SIGNALS: &[&str] = &["CPU busy %", "memory available %", "load1 per core"];

/// Measures releases against one Prometheus.
#[derive(Clone)]
pub struct Judge {
    prometheus: Prometheus,
    baseline: Duration,
    rate_window: Duration,
    timeout: Duration,
    red: RedQueries,
    thresholds: Thresholds,
    min_points: usize,
    min_requests: u64,
    watch: Duration,
}

/// One query of one host for one signal.
struct Probe {
    signal: usize,
    host: usize,
    query: String,
}

impl Judge {
    /// A judge with the evidence stage's windows and `Release.*`'s defaults.
    pub fn new(prometheus: Prometheus, evidence: &EvidenceConfig, release: &ReleaseConfig) -> Self {
        Self {
            prometheus,
            baseline: evidence.baseline,
            rate_window: evidence.rate_window,
            timeout: evidence.timeout,
            red: RedQueries {
                rate: release.red.rate.clone(),
                errors: release.red.errors.clone(),
                duration: release.red.duration.clone(),
            },
            thresholds: Thresholds {
                rate_min: release.thresholds.rate_min,
                error_rate_max_percent: release.thresholds.error_rate_max_percent,
                duration_p95_max_ms: release.thresholds.duration_p95_max_ms,
                duration_p99_max_ms: release.thresholds.duration_p99_max_ms,
            },
            min_points: release.min_points,
            min_requests: release.min_requests,
            watch: release.watch,
        }
    }

    /// The conventional RED templates: the Prometheus client's `http_requests_total` (with
    /// `code` or `status`) and `http_request_duration_seconds`, else OpenTelemetry's
    /// `http_server_request_duration_seconds` (with `http_response_status_code`).
    fn conventions(&self) -> [(&'static str, String); 4] {
        let w = format!("{}s", self.rate_window.as_secs());
        let h = format!("hostname=~{PLACEHOLDER}");
        let prom = format!("sum(rate(http_requests_total{{{h}}}[{w}]))");
        let otel = format!("sum(rate(http_server_request_duration_seconds_count{{{h}}}[{w}]))");
        let quantile = |q: &str| {
            format!(
                "1000 * (histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{{h}}}[{w}]))) \
                 or histogram_quantile({q}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{h}}}[{w}]))))"
            )
        };
        [
            ("rate", format!("{prom} or {otel}")),
            (
                "errors",
                format!(
                    "100 * (sum(rate(http_requests_total{{{h},code=~\"5..\"}}[{w}])) \
                     or sum(rate(http_requests_total{{{h},status=~\"5..\"}}[{w}])) or 0 * {prom}) / {prom} \
                     or 100 * (sum(rate(http_server_request_duration_seconds_count{{{h},http_response_status_code=~\"5..\"}}[{w}])) \
                     or 0 * {otel}) / {otel}"
                ),
            ),
            ("p95", quantile("0.95")),
            ("p99", quantile("0.99")),
        ]
    }

    /// The RED signals of a deployment: its templates, else `Release.RED.*`, else the
    /// conventions; each with its limit from its thresholds, else `Release.Thresholds.*`.
    fn red_signals(&self, deployment: &Deployment) -> Vec<(Spec, String)> {
        let own = deployment.red.clone().unwrap_or_default();
        let pick = |mine: &str, service: &str| {
            [mine, service]
                .into_iter()
                .find(|t| !t.trim().is_empty())
                .map(str::to_owned)
        };
        let t = deployment.thresholds.unwrap_or_default();
        let limit = |mine: Option<f64>, service: Option<f64>, name: &str| {
            mine.or(service).map(|value| Limit {
                value,
                name: name.to_owned(),
            })
        };
        let [rate, errors, p95, p99] = self.conventions().map(|(_, q)| q);
        let mut out = vec![
            (
                red_spec(
                    "requests/s",
                    limit(t.rate_min, self.thresholds.rate_min, "rateMin"),
                ),
                pick(&own.rate, &self.red.rate).unwrap_or(rate),
            ),
            (
                red_spec(
                    "errors %",
                    limit(
                        t.error_rate_max_percent,
                        self.thresholds.error_rate_max_percent,
                        "errorRateMaxPercent",
                    ),
                ),
                pick(&own.errors, &self.red.errors).unwrap_or(errors),
            ),
        ];
        let p95_limit = limit(
            t.duration_p95_max_ms,
            self.thresholds.duration_p95_max_ms,
            "durationP95MaxMs",
        );
        match pick(&own.duration, &self.red.duration) {
            // A registered duration is in seconds, as the platform writes it.
            Some(template) => out.push((
                red_spec("duration ms", p95_limit),
                format!("1000 * ({template})"),
            )),
            None => {
                out.push((red_spec("duration p95 ms", p95_limit), p95));
                out.push((
                    red_spec(
                        "duration p99 ms",
                        limit(
                            t.duration_p99_max_ms,
                            self.thresholds.duration_p99_max_ms,
                            "durationP99MaxMs",
                        ),
                    ),
                    p99,
                ));
            }
        }
        out
    }

    /// The host signals, as templates of the host.
    fn host_signals(&self) -> Vec<(Spec, String)> {
        let w = format!("{}s", self.rate_window.as_secs());
        HOST_SIGNALS
            .iter()
            .filter_map(|name| signal(name))
            .map(|s| {
                let (worse, limit) = match s.saturation {
                    Some(Saturation::Below(v)) => (Worse::Down, Some(v)),
                    Some(Saturation::Above(v)) => (Worse::Up, Some(v)),
                    _ => (Worse::Up, None),
                };
                let spec = Spec {
                    name: s.name.to_owned(),
                    unit: s.unit,
                    worse,
                    floor: s.floor,
                    relative: 0.1,
                    limit: limit.map(|value| Limit {
                        value,
                        name: "saturation".into(),
                    }),
                    red: false,
                    kind: Kind::Level,
                };
                (spec, s.expr.replace("{w}", &w))
            })
            .collect()
    }

    /// The windows `deployment`'s release is measured over at `now`: the baseline before
    /// its first release, the after window from the release (at most `Release.WatchMinutes`
    /// of it) to now.
    pub fn windows(&self, deployment: &Deployment, now: DateTime<Utc>) -> ReleaseWindows {
        let release = deployment
            .hosts
            .iter()
            .take(MAX_HOSTS)
            .map(|h| split_of(deployment, h, now))
            .min()
            .unwrap_or(deployment.started_at.min(now));
        let watch_from = now - chrono::Duration::from_std(self.watch).unwrap_or_default();
        ReleaseWindows {
            baseline_from: release - chrono::Duration::from_std(self.baseline).unwrap_or_default(),
            release,
            after_from: release.max(watch_from),
            to: now,
        }
    }

    /// The verdict on a deployment's release, measured now; bounded by
    /// `Evidence.TimeoutSeconds`.
    pub async fn judge(
        &self,
        deployment: Option<&Deployment>,
        now: DateTime<Utc>,
    ) -> ReleaseVerdict {
        let Some(deployment) = deployment else {
            return rules::unmeasured(
                true,
                "the deployment is not registered (PUT /deployments/{id} with its hosts, strategy and startedAt): \
                 nothing to compare the release with",
            );
        };
        let under_way = deployment.under_way();
        if deployment.hosts.is_empty() {
            return rules::unmeasured(under_way, "the registered deployment lists no hosts");
        }
        match tokio::time::timeout(self.timeout, self.measure(deployment, under_way, now)).await {
            Ok(verdict) => verdict,
            Err(_) => rules::unmeasured(
                under_way,
                &format!(
                    "measuring the release took longer than Evidence.TimeoutSeconds ({}s)",
                    self.timeout.as_secs()
                ),
            ),
        }
    }

    async fn measure(
        &self,
        deployment: &Deployment,
        under_way: bool,
        now: DateTime<Utc>,
    ) -> ReleaseVerdict {
        let hosts: Vec<_> = deployment.hosts.iter().take(MAX_HOSTS).collect();
        let splits: Vec<DateTime<Utc>> =
            hosts.iter().map(|h| split_of(deployment, h, now)).collect();
        let windows = self.windows(deployment, now);
        let last = splits.iter().max().copied().unwrap_or(now);
        let baseline = chrono::Duration::from_std(self.baseline).unwrap_or_default();
        let watch_from = windows.after_from;
        // One range from the baseline to now; for a release older than the watch, the
        // baselines before the releases and the watch before now, not the days between.
        let ranges = if watch_from > last + baseline {
            vec![(windows.baseline_from, last), (watch_from, now)]
        } else {
            vec![(windows.baseline_from, now)]
        };
        let settings = Settings {
            spacing: self.rate_window.as_secs_f64(),
            min_points: self.min_points,
            min_requests: self.min_requests,
            after_from: watch_from.timestamp_millis() as f64 / 1000.0,
        };
        let mut signals = self.red_signals(deployment);
        signals.extend(self.host_signals());
        let mut probes = Vec::new();
        for (s, (_, template)) in signals.iter().enumerate() {
            for (h, host) in hosts.iter().enumerate() {
                let query = match signals[s].0.red {
                    true => for_host(template, &host.name),
                    false => template.replace("{sel}", &node_selector(&host.name)),
                };
                probes.push(Probe {
                    signal: s,
                    host: h,
                    query,
                });
            }
        }
        let queries: Vec<(usize, String)> = probes
            .iter()
            .enumerate()
            .flat_map(|(i, p)| ranges.iter().map(move |_| (i, p.query.clone())))
            .collect();
        let results: Vec<_> = stream::iter(queries.into_iter().enumerate())
            .map(|(n, (_, query))| {
                let prometheus = self.prometheus.clone();
                let (from, to) = ranges[n % ranges.len()];
                // At most ~240 points a range, at least one a second.
                let total = (to - from).num_milliseconds().max(1000) as u64;
                let step = Duration::from_secs(total.div_ceil(240 * 1000).max(1));
                async move { prometheus.range(&query, from, to, step).await }
            })
            .buffered(CONCURRENT_QUERIES)
            .collect()
            .await;
        // Each probe's ranges, joined.
        let results: Vec<Result<Vec<(f64, f64)>, _>> = results
            .chunks(ranges.len())
            .map(|chunk| {
                let mut points = Vec::new();
                for result in chunk {
                    match result {
                        Ok(matrix) => points.extend(
                            matrix
                                .iter()
                                .map(|(_, points)| points)
                                .max_by_key(|p| p.len())
                                .cloned()
                                .unwrap_or_default(),
                        ),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(points)
            })
            .collect();
        let mut failures = Vec::new();
        let mut by_signal: BTreeMap<usize, Vec<HostSeries>> = BTreeMap::new();
        for (probe, result) in probes.iter().zip(results) {
            let host = hosts[probe.host];
            let points = match result {
                Ok(points) => points,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            by_signal.entry(probe.signal).or_default().push(HostSeries {
                host: host.name.clone(),
                released: host.status == HostStatus::Released,
                control: matches!(host.status, HostStatus::Pending | HostStatus::RolledBack),
                split: splits[probe.host].timestamp_millis() as f64 / 1000.0,
                query: probe.query.clone(),
                points,
            });
        }
        if failures.len() == probes.len() {
            return rules::unmeasured(
                under_way,
                &format!(
                    "no release signal could be read: {}",
                    failures.first().map_or("", String::as_str)
                ),
            );
        }
        let mut comparisons: Vec<crate::model::verdict::Comparison> = Vec::new();
        let rates = signals
            .iter()
            .position(|(spec, _)| spec.kind == Kind::Requests)
            .and_then(|i| by_signal.get(&i));
        for (s, series) in &by_signal {
            comparisons.extend(compare(
                &signals[*s].0,
                series,
                rates.map(Vec::as_slice),
                &settings,
            ));
        }
        let released: Vec<&str> = hosts
            .iter()
            .filter(|h| h.status == HostStatus::Released)
            .map(|h| h.name.as_str())
            .collect();
        let controls: Vec<&str> = hosts
            .iter()
            .filter(|h| matches!(h.status, HostStatus::Pending | HostStatus::RolledBack))
            .map(|h| h.name.as_str())
            .collect();
        let strategy = match deployment.strategy {
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue-green",
            Strategy::All => "all",
        };
        let mut notes = vec![if controls.is_empty() {
            format!(
                "strategy {strategy}, released on {} host(s) ({}), no host without the release: each released host is compared with itself before its release",
                released.len(),
                released.join(", ")
            )
        } else {
            format!(
                "strategy {strategy}: released host(s) {} compared with {} host(s) without the release ({})",
                released.join(", "),
                controls.len(),
                controls.join(", ")
            )
        }];
        if !failures.is_empty() {
            notes.push(format!(
                "{} of {} release queries failed: {}",
                failures.len(),
                probes.len(),
                failures[0]
            ));
        }
        if !comparisons.iter().any(|c| c.released_host) {
            notes.push(format!(
                "too few samples after the release yet: a signal needs Release.MinPoints ({}) points {}s apart (the rate window) on each side, the error rate Release.MinRequests ({}) requests a side",
                self.min_points,
                self.rate_window.as_secs(),
                self.min_requests
            ));
        }
        if deployment.hosts.len() > MAX_HOSTS {
            notes.push(format!(
                "only the first {MAX_HOSTS} of {} hosts were measured",
                deployment.hosts.len()
            ));
        }
        // RED signals of released hosts with points after their release and no
        // comparison yet.
        let mut waiting = Vec::new();
        for (s, series) in &by_signal {
            let spec = &signals[*s].0;
            if !spec.red {
                continue;
            }
            for h in series.iter().filter(|h| h.released) {
                let after = h.points.iter().any(|p| p.0 >= h.split && p.1.is_finite());
                let compared = comparisons
                    .iter()
                    .any(|c| c.released_host && c.host == h.host && c.signal == spec.name);
                if after && !compared {
                    waiting.push(format!("{} {}", h.host, spec.name));
                }
            }
        }
        rules::decide(
            Rollout {
                under_way,
                notes,
                waiting,
            },
            comparisons,
        )
    }
}

/// When the release reached a host (for a control, the rollout's start), not after `now`.
fn split_of(deployment: &Deployment, h: &Host, now: DateTime<Utc>) -> DateTime<Utc> {
    let at = match h.status {
        HostStatus::Released => h.released_at.unwrap_or(deployment.started_at),
        _ => deployment.started_at,
    };
    at.min(now)
}

/// A RED signal by its name (`requests/s`, `errors %`, else a duration in ms), with its
/// limit. The practical floors: 1 req/s and 20 % of the other side's traffic, a percentage
/// point and half again the other side's error rate, 5 ms and 20 % of its latency.
pub fn red_spec(name: &str, limit: Option<Limit>) -> Spec {
    let (unit, worse, floor, relative, kind) = match name {
        "requests/s" => ("/s", Worse::Down, 1.0, 0.2, Kind::Requests),
        "errors %" => ("%", Worse::Up, 1.0, 0.5, Kind::Errors),
        _ => ("ms", Worse::Up, 5.0, 0.2, Kind::Level),
    };
    Spec {
        name: name.to_owned(),
        unit,
        worse,
        floor,
        relative,
        limit,
        red: true,
        kind,
    }
}

/// The selector of a host's node_exporter: its `instance` is the host, with or without a
/// port, in any case.
fn node_selector(host: &str) -> String {
    format!(
        "instance=~{}",
        literal(&format!("(?i){}(:[0-9]+)?", exact_regex(host)))
    )
}
