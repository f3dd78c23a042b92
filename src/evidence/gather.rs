//! The gatherer: finds the node_exporter instances an alert is about, runs every signal
//! of the catalogue over the baseline and incident windows, scores and ranks the series.
//! It returns the items; storing them is the caller's business.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde_json::Value;

use super::prometheus::{exact_regex, literal, unix, EvidenceError, Matrix, Prometheus};
use super::score::{began_before, score, Saturation};
use super::signals::{rule_expression, SIGNALS};
use crate::config::EvidenceConfig;
use crate::model::alert::Alert;
use crate::model::deployment::{host_key, Deployment, HostStatus};
use crate::model::evidence::{
    EvidenceItem, Gathered, Reading, Resource, Unmeasured, ANOMALY_SCORE,
};

/// Hosts whose instances are looked up for one gathering (a deployment may list more).
const MAX_TARGET_HOSTS: usize = 50;

/// Where a host's *before* ends and its *after* begins: each released host's
/// `releasedAt`, else the deployment's `startedAt`; for an alert with no deployment, its
/// `startsAt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    /// The split of a host not named below.
    pub default: DateTime<Utc>,
    /// Splits by host key.
    pub hosts: Vec<(String, DateTime<Utc>)>,
    /// Whether the splits are a release's (else an alert's `startsAt`).
    pub release: bool,
}

impl Anchor {
    /// The anchor of an alert that started at `starts_at`, of a deployment when known.
    pub fn new(
        deployment: Option<&Deployment>,
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        let Some(d) = deployment else {
            return Self {
                default: starts_at.min(now),
                hosts: Vec::new(),
                release: false,
            };
        };
        let hosts = d
            .hosts
            .iter()
            .filter(|h| h.status == HostStatus::Released)
            .filter_map(|h| Some((host_key(&h.name), h.released_at?.min(now))))
            .collect();
        Self {
            default: d.started_at.min(now),
            hosts,
            release: true,
        }
    }

    /// The earliest split.
    pub fn earliest(&self) -> DateTime<Utc> {
        self.hosts
            .iter()
            .map(|h| h.1)
            .fold(self.default, DateTime::min)
    }

    /// The split of a series: by its `instance`, else its `hostname` label.
    fn of(&self, labels: &serde_json::Map<String, Value>) -> DateTime<Utc> {
        ["instance", "hostname"]
            .iter()
            .filter_map(|k| labels.get(*k).and_then(Value::as_str))
            .find_map(|name| {
                let key = host_key(name);
                self.hosts.iter().find(|h| h.0 == key).map(|h| h.1)
            })
            .unwrap_or(self.default)
    }
}

/// The time window of one gathering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    /// Start of the baseline.
    pub from: DateTime<Utc>,
    /// End of the baseline, start of the incident (the alert's `startsAt`).
    pub incident: DateTime<Utc>,
    /// Start of the incident's measured part: the incident, or for an old alert
    /// (Alertmanager re-sends a firing alert with its first `startsAt`) the watch before
    /// now.
    pub recent: DateTime<Utc>,
    /// Now.
    pub to: DateTime<Utc>,
    /// Query step.
    pub step: Duration,
}

/// A step that keeps a range under ~240 points, at least one a second.
fn step_for(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    let total = (to - from).num_milliseconds().max(1000) as u64;
    Duration::from_secs(total.div_ceil(240 * 1000).max(1))
}

impl Windows {
    /// The windows for an alert that started at `starts_at`, seen at `now`: the baseline
    /// before it, the incident from it to now, at most `watch` of it.
    pub fn new(
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
        baseline: Duration,
        watch: Duration,
    ) -> Self {
        let incident = starts_at.min(now);
        let from = incident - chrono::Duration::from_std(baseline).unwrap_or_default();
        let recent = incident.max(now - chrono::Duration::from_std(watch).unwrap_or_default());
        Self {
            from,
            incident,
            recent,
            to: now,
            step: step_for(from, now),
        }
    }

    /// The ranges queried, with their steps: the baseline and the incident as one, or,
    /// when the incident is longer than the watch, the baseline and the watch apart.
    pub fn ranges(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>, Duration)> {
        if self.recent > self.incident {
            vec![
                (self.from, self.incident, step_for(self.from, self.incident)),
                (self.recent, self.to, step_for(self.recent, self.to)),
            ]
        } else {
            vec![(self.from, self.to, self.step)]
        }
    }
}

/// Gathers evidence from one Prometheus.
#[derive(Clone)]
pub struct Gatherer {
    prometheus: Prometheus,
    config: EvidenceConfig,
    watch: Duration,
}

impl Gatherer {
    /// A gatherer asking this Prometheus, measuring at most `watch` of an incident
    /// (`Release.WatchMinutes`).
    pub fn new(prometheus: Prometheus, config: EvidenceConfig, watch: Duration) -> Self {
        Self {
            prometheus,
            config,
            watch,
        }
    }

    /// A query over every range of the windows, the series of each joined by labels.
    async fn range_all(&self, query: &str, w: &Windows) -> Result<Matrix, EvidenceError> {
        let mut out: Matrix = Vec::new();
        for (from, to, step) in w.ranges() {
            for (labels, points) in self.prometheus.range(query, from, to, step).await? {
                match out.iter_mut().find(|(l, _)| *l == labels) {
                    Some((_, all)) => all.extend(points),
                    None => out.push((labels, points)),
                }
            }
        }
        Ok(out)
    }

    /// The Prometheus client.
    pub fn prometheus(&self) -> &Prometheus {
        &self.prometheus
    }

    /// How long one gathering may take (`Evidence.TimeoutSeconds`).
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// The node_exporter instances the alert is about: its `instance`, each host of its
    /// `hostname` (a comma-separated list is allowed) and of its registered deployment,
    /// matched against `up`'s `instance` and `hostname` labels and `node_uname_info`'s
    /// `nodename`; its `job` when nothing else names a target. At most
    /// `Evidence.MaxHosts` of them are measured ([`Self::pick`]); the rest are returned
    /// as unmeasured.
    async fn targets(
        &self,
        alert: &Alert,
        deployment: Option<&Deployment>,
        w: &Windows,
    ) -> Result<(Vec<String>, Option<Unmeasured>), EvidenceError> {
        let deployment_hosts = deployment.map(Deployment::host_names).unwrap_or_default();
        let label = |k: &str| alert.labels.get(k).filter(|v| !v.trim().is_empty());
        // The targets seen over the measured part (an alert days old is not looked up
        // over days).
        let since = if w.recent > w.incident {
            w.recent
        } else {
            w.from
        };
        let window = format!("{}s", (w.to - since).num_seconds().max(1));
        let mut queries = Vec::new();
        if let Some(instance) = label("instance") {
            queries.push(format!("up{{instance={}}}", literal(instance.trim())));
        }
        let mut hosts: Vec<String> = label("hostname")
            .map(|h| h.split(',').map(|h| h.trim().to_owned()).collect())
            .unwrap_or_default();
        hosts.extend(deployment_hosts);
        hosts.retain(|h| !h.is_empty());
        hosts.sort();
        hosts.dedup();
        hosts.truncate(MAX_TARGET_HOSTS);
        if !hosts.is_empty() {
            // One regex alternation per label, so many hosts are still three queries.
            let names = hosts
                .iter()
                .map(|h| exact_regex(&host_key(h)))
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
                .prometheus
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
        let found: Vec<String> = found.into_iter().collect();
        let max = self.config.max_hosts.get();
        if found.len() <= max {
            return Ok((found, None));
        }
        let firing = self.firing_instances(alert, w.to).await;
        let released: BTreeSet<String> = deployment
            .into_iter()
            .flat_map(|d| &d.hosts)
            .filter(|h| h.status == HostStatus::Released)
            .map(|h| host_key(&h.name))
            .collect();
        let named = label("instance").map(|i| i.trim().to_owned());
        let (measured, rest) = Self::pick(found, max, |instance| {
            if named.as_deref() == Some(instance) {
                0
            } else if firing.contains(instance) {
                1
            } else if released.contains(&host_key(instance)) {
                2
            } else {
                3
            }
        });
        tracing::warn!(
            measured = measured.len(),
            left_out = rest.len(),
            "the alert names more hosts than Evidence.MaxHosts; measuring those its own series name first"
        );
        Ok((measured, Unmeasured::of(rest, max)))
    }

    /// The `max` instances to measure, by `rank` (lower first: the alert's own instance,
    /// those its rule's series name, the released hosts), then by name; and the rest.
    fn pick(
        mut instances: Vec<String>,
        max: usize,
        rank: impl Fn(&str) -> u8,
    ) -> (Vec<String>, Vec<String>) {
        instances.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        let rest = instances.split_off(max.min(instances.len()));
        (instances, rest)
    }

    /// The instances the alert's own rule returns series for now (empty when it has no
    /// rule expression or Prometheus cannot answer: the pick then goes by name).
    async fn firing_instances(&self, alert: &Alert, at: DateTime<Utc>) -> BTreeSet<String> {
        let Some(expr) = rule_expression(alert) else {
            return BTreeSet::new();
        };
        let data = self
            .prometheus
            .api("query", &[("query", expr), ("time", unix(at))])
            .await;
        let Ok(data) = data else {
            return BTreeSet::new();
        };
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["metric"]["instance"].as_str().map(str::to_owned))
            .collect()
    }

    /// Gathers, scores and ranks the evidence for an alert that started at `starts_at`, on
    /// its hosts and those of its registered deployment, each series split at its host's
    /// release when the deployment is known.
    pub async fn gather(
        &self,
        alert: &Alert,
        deployment: Option<&Deployment>,
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Gathered, EvidenceError> {
        let limit = self.config.timeout;
        let anchor = Anchor::new(deployment, starts_at, now);
        tokio::time::timeout(limit, self.gather_within(alert, deployment, &anchor, now))
            .await
            .map_err(|_| EvidenceError::Timeout(limit))?
    }

    async fn gather_within(
        &self,
        alert: &Alert,
        deployment: Option<&Deployment>,
        anchor: &Anchor,
        now: DateTime<Utc>,
    ) -> Result<Gathered, EvidenceError> {
        let baseline = self.config.baseline;
        let w = Windows::new(anchor.earliest(), now, baseline, self.watch);
        let (instances, unmeasured) = self.targets(alert, deployment, &w).await?;
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
        let results = join_all(jobs.iter().map(|job| self.range_all(&job.query, &w))).await;
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
                let split = anchor.of(&labels).timestamp_millis() as f64 / 1000.0;
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
                let no_baseline = baseline.len() < 3;
                // Already so before the release: its series changed the bad way before it.
                let up = match saturation {
                    Some(Saturation::Below(_)) => false,
                    Some(_) => true,
                    None => scored.change.unwrap_or(0.0) > 0.0,
                };
                let pre_existing = anchor.release
                    && scored.verdict != Reading::Normal
                    && began_before(&points, split, self.config.rate_window.as_secs_f64(), up);
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
                    pre_existing,
                    no_baseline,
                    series_start: no_baseline
                        .then(|| points.first())
                        .flatten()
                        .and_then(|(t, _)| DateTime::from_timestamp_millis((t * 1000.0) as i64)),
                });
            }
        }
        if failures == jobs.len() && !jobs.is_empty() {
            return Err(self.prometheus.error("every evidence query failed"));
        }
        items.sort_by(|a, b| b.scored.score.total_cmp(&a.scored.score));
        items.truncate(self.config.max_items.get());
        Ok(Gathered { items, unmeasured })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_measured_are_the_alerts_own_first_then_by_name() {
        let instances: Vec<String> = ["d:9100", "c:9100", "b:9100", "a:9100", "e:9100"]
            .map(String::from)
            .to_vec();
        let rank = |i: &str| match i {
            "d:9100" => 0,
            "e:9100" => 1,
            _ => 3,
        };
        let (measured, rest) = Gatherer::pick(instances, 3, rank);
        assert_eq!(measured, ["d:9100", "e:9100", "a:9100"]);
        assert_eq!(rest, ["b:9100", "c:9100"]);
        let left = Unmeasured::of(rest, 3).unwrap();
        assert_eq!(
            left.sentence(),
            "2 hosts not measured (Evidence.MaxHosts is 3): b:9100, c:9100"
        );
    }

    #[test]
    fn windows_keep_a_series_under_240_points() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        let w = Windows::new(
            now - chrono::Duration::minutes(10),
            now,
            Duration::from_secs(1800),
            hour,
        );
        assert_eq!(w.step, Duration::from_secs(10));
        assert_eq!(w.incident, now - chrono::Duration::minutes(10));
        assert_eq!(w.ranges(), [(w.from, now, w.step)]);
        let future = Windows::new(
            now + chrono::Duration::minutes(5),
            now,
            Duration::from_secs(60),
            hour,
        );
        assert_eq!(future.incident, now, "a start in the future is now");
    }

    #[test]
    fn an_alert_days_old_is_measured_over_its_baseline_and_the_last_watch() {
        let now = Utc::now();
        let started = now - chrono::Duration::days(11);
        let w = Windows::new(
            started,
            now,
            Duration::from_secs(600),
            Duration::from_secs(1800),
        );
        let ranges = w.ranges();
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert_eq!(
            (ranges[0].0, ranges[0].1),
            (started - chrono::Duration::minutes(10), started)
        );
        assert_eq!(
            (ranges[1].0, ranges[1].1),
            (now - chrono::Duration::minutes(30), now)
        );
        // Each under 240 points: 10 minutes at 3 s, 30 at 8 s.
        assert_eq!(
            (ranges[0].2, ranges[1].2),
            (Duration::from_secs(3), Duration::from_secs(8))
        );
    }
}
