//! The comparisons of one signal across a deployment's hosts: each released host after
//! the release against the hosts that did not get it over the same time (canary), or,
//! with no such hosts, against itself before the release (a step at the release time);
//! each control against itself, to see whether the controls moved too; and whether the
//! change was already under way before the release.
//!
//! A gate must not wave a regression through nor roll back on chance, so each comparison
//! is of points that do not overlap (a rate window apart), needs enough of them (or, for
//! the error rate, enough requests: failed and all requests are compared as counts), and
//! counts only when the change is large enough to matter as well as significant: the
//! Hodges–Lehmann shift past the signal's practical floor, or the spread blown up. *When*
//! the host's series changed (one split by least squares on ranks, or by the binomial
//! likelihood of its failed requests) says whether it began before the release. Holm's correction over one verdict's comparisons is the rules' (`rules.rs`).

use crate::model::verdict::{Class, Comparison, Method, Test};
use crate::stats::{
    effect, hodges_lehmann, mann_whitney, median, quantile, split_fits, spread, two_proportions,
    CHI2_99,
};

/// A p-value below this is significant (after Holm's correction, in the rules).
pub const ALPHA: f64 = 0.01;

/// The smallest effect (in units of the other side's spread) that counts.
pub const MIN_EFFECT: f64 = 1.0;

/// What a comparison needs, and how its points are taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Seconds between points that do not overlap: the rate window (a `rate()` point
    /// covers the window before it).
    pub spacing: f64,
    /// Points a side a time-series comparison needs (`Release.MinPoints`).
    pub min_points: usize,
    /// Requests a side the error rate's comparison needs (`Release.MinRequests`).
    pub min_requests: u64,
    /// No point after the release before this (unix seconds): `Release.WatchMinutes`
    /// before now, so an old release is judged on its recent behaviour.
    pub after_from: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            spacing: 1.0,
            min_points: 10,
            min_requests: 50,
            after_from: f64::NEG_INFINITY,
        }
    }
}

/// Which way a signal goes bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Higher is worse (errors, latency, CPU).
    Up,
    /// Lower is worse (request rate, available memory).
    Down,
}

/// What a signal is, for how it is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Requests per second (the error rate's counts are read from it).
    Requests,
    /// The percentage of requests that failed: compared as counts when the host's
    /// requests per second are known.
    Errors,
    /// Any other level (latency, saturation).
    Level,
}

/// An absolute limit on a signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The limit.
    pub value: f64,
    /// Where it comes from, for reasons (`errorRateMaxPercent`, `saturation`).
    pub name: String,
}

/// One signal: how to read it and compare it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Its name (`errors %`).
    pub name: String,
    /// The unit of its values.
    pub unit: &'static str,
    /// Which way it goes bad.
    pub worse: Worse,
    /// One unit of spread, at least (noise below it is not a change), and the smallest
    /// shift that counts.
    pub floor: f64,
    /// The smallest shift that counts, relative to the other side's level (0.2: 20 %).
    pub relative: f64,
    /// Past this (above it when higher is worse, below when lower is) it is unhealthy.
    pub limit: Option<Limit>,
    /// Whether it is one of the application's RED signals (else a host signal).
    pub red: bool,
    /// What it is.
    pub kind: Kind,
}

impl Spec {
    /// Whether a value breaks the limit.
    pub fn breaks(&self, value: f64) -> bool {
        match (&self.limit, self.worse) {
            (Some(l), Worse::Up) => value > l.value,
            (Some(l), Worse::Down) => value < l.value,
            (None, _) => false,
        }
    }

    fn broken(&self, value: f64) -> Option<String> {
        self.limit
            .as_ref()
            .filter(|_| self.breaks(value))
            .map(|l| format!("{} {}", l.name, l.value))
    }

    fn is_worse(&self, class: Class) -> bool {
        matches!(
            (class, self.worse),
            (Class::High, Worse::Up) | (Class::Low, Worse::Down)
        )
    }

    /// The smallest shift that counts against a side whose level is `level`.
    fn practical(&self, level: f64) -> f64 {
        self.floor.max(self.relative * level.abs())
    }
}

/// One host's series of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSeries {
    /// The host.
    pub host: String,
    /// Whether it runs the release.
    pub released: bool,
    /// Whether it is a control (runs the previous version: pending, rolled back).
    pub control: bool,
    /// When the release reached it (unix seconds; for a control, the rollout's start).
    pub split: f64,
    /// The query that read it.
    pub query: String,
    /// `(unix seconds, value)`, oldest first.
    pub points: Vec<(f64, f64)>,
}

/// Slack for timestamps that should be a whole spacing apart.
const EPS: f64 = 1e-3;

impl HostSeries {
    /// The points before `split`, a spacing apart, counted back from the last.
    fn before(&self, split: f64, s: &Settings) -> Vec<(f64, f64)> {
        let mut kept: Vec<(f64, f64)> = Vec::new();
        for &(t, v) in self.points.iter().rev().filter(|(t, _)| *t < split) {
            if kept.last().is_none_or(|last| t <= last.0 - s.spacing + EPS) {
                kept.push((t, v));
            }
        }
        kept.reverse();
        kept
    }

    /// The points whose window lies wholly after `split` (and after `after_from`), a
    /// spacing apart.
    fn after(&self, split: f64, s: &Settings) -> Vec<(f64, f64)> {
        let from = (split + s.spacing).max(s.after_from) - EPS;
        let mut kept: Vec<(f64, f64)> = Vec::new();
        for &(t, v) in self.points.iter().filter(|(t, _)| *t >= from) {
            if kept.last().is_none_or(|last| t >= last.0 + s.spacing - EPS) {
                kept.push((t, v));
            }
        }
        kept
    }
}

fn values(points: &[(f64, f64)]) -> Vec<f64> {
    points.iter().map(|p| p.1).collect()
}

/// Failed and all requests at each of the `errors` points, from the requests per second
/// at the same times (each point covers one spacing).
fn per_point(errors: &[(f64, f64)], rates: &HostSeries, s: &Settings) -> Vec<[f64; 2]> {
    errors
        .iter()
        .map(
            |&(t, percent)| match rates.points.iter().find(|(r, _)| (r - t).abs() < EPS) {
                Some(&(_, rate)) if rate.is_finite() && rate > 0.0 => {
                    let total = rate * s.spacing;
                    [total * (percent / 100.0).clamp(0.0, 1.0), total]
                }
                _ => [0.0, 0.0],
            },
        )
        .collect()
}

/// How one side compared with the other.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Outcome {
    class: Class,
    p_value: f64,
    effect: f64,
    test: Test,
    released: f64,
    control: f64,
    points: [usize; 2],
    shift: Option<f64>,
    p90: Option<[f64; 2]>,
    counts: Option<[[u64; 2]; 2]>,
}

/// The levels of `x` against `y`: Mann-Whitney, sized by the Hodges–Lehmann shift and the
/// effect in units of `y`'s spread; and, for a signal that goes bad upwards, whether `x`
/// spread out past `y` (Mann-Whitney on the distances from the pooled median, sized by
/// the 90th percentiles). The two tests of one row share `ALPHA` (Bonferroni).
fn levels(spec: &Spec, x: &[f64], y: &[f64], s: &Settings) -> Option<Outcome> {
    if x.len() < s.min_points || y.len() < s.min_points {
        return None;
    }
    let tests = if spec.worse == Worse::Up { 2.0 } else { 1.0 };
    let p = (tests * mann_whitney(x, y)?.p_value).min(1.0);
    let e = effect(x, y, spec.floor)?;
    let shift = hodges_lehmann(x, y)?;
    let practical = spec.practical(median(y)?);
    let class = match () {
        _ if p < ALPHA && e >= MIN_EFFECT && shift >= practical => Class::High,
        _ if p < ALPHA && e <= -MIN_EFFECT && shift <= -practical => Class::Low,
        _ => Class::Pass,
    };
    let mut outcome = Outcome {
        class,
        p_value: p,
        effect: e,
        test: Test::Rank,
        released: median(x)?,
        control: median(y)?,
        points: [x.len(), y.len()],
        shift: Some(shift),
        p90: None,
        counts: None,
    };
    if spec.worse == Worse::Up && class != Class::High {
        let pooled: Vec<f64> = x.iter().chain(y).copied().collect();
        let center = median(&pooled)?;
        let distance = |v: &[f64]| v.iter().map(|a| (a - center).abs()).collect::<Vec<_>>();
        let test = mann_whitney(&distance(x), &distance(y))?;
        let wider = test.u > (x.len() * y.len()) as f64 / 2.0;
        let p = (tests * test.p_value).min(1.0);
        let (qx, qy) = (quantile(x, 0.9)?, quantile(y, 0.9)?);
        let unit = spread(y, spec.floor);
        if wider && p < ALPHA && qx - qy >= practical.max(MIN_EFFECT * unit) {
            outcome = Outcome {
                class: Class::High,
                p_value: p,
                effect: (qx - qy) / unit,
                test: Test::Spread,
                p90: Some([qx, qy]),
                ..outcome
            };
        }
    }
    Some(outcome)
}

/// Failed of all requests on `x` against `y`, as two proportions, sized by the
/// difference in percentage points (`floor`, and `relative` of `y`'s rate).
fn proportions(
    spec: &Spec,
    x: [u64; 2],
    y: [u64; 2],
    points: [usize; 2],
    s: &Settings,
) -> Option<Outcome> {
    if x[1] < s.min_requests || y[1] < s.min_requests {
        return None;
    }
    let p = two_proportions([x[0], y[0]], [x[1], y[1]])?;
    let (px, py) = (
        100.0 * x[0] as f64 / x[1] as f64,
        100.0 * y[0] as f64 / y[1] as f64,
    );
    let difference = px - py;
    let practical = spec.practical(py);
    let class = match () {
        _ if p < ALPHA && difference >= practical => Class::High,
        _ if p < ALPHA && difference <= -practical => Class::Low,
        _ => Class::Pass,
    };
    Some(Outcome {
        class,
        p_value: p,
        effect: difference / spec.floor.max(f64::MIN_POSITIVE),
        test: Test::Proportions,
        released: px,
        control: py,
        points,
        shift: Some(difference),
        p90: None,
        counts: Some([x, y]),
    })
}

/// One side of a comparison: its points, and when the error rate is compared as counts,
/// the failed and all requests at each.
struct Side {
    points: Vec<(f64, f64)>,
    requests: Option<Vec<[f64; 2]>>,
}

impl Side {
    fn of(points: Vec<(f64, f64)>, rates: Option<&HostSeries>, s: &Settings) -> Self {
        let requests = rates.map(|r| per_point(&points, r, s));
        Self { points, requests }
    }

    fn joined(sides: Vec<Side>) -> Self {
        let requests = sides
            .iter()
            .map(|side| side.requests.clone())
            .collect::<Option<Vec<_>>>()
            .map(|all| all.concat());
        Self {
            points: sides.into_iter().flat_map(|side| side.points).collect(),
            requests,
        }
    }

    /// Failed and all requests, summed.
    fn counts(&self) -> Option<[u64; 2]> {
        let sum = self
            .requests
            .as_ref()?
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        Some([sum[0].round() as u64, sum[1].round() as u64])
    }
}

/// `x` against `y`: as counts when both have them, else as levels.
fn test(spec: &Spec, x: &Side, y: &Side, s: &Settings) -> Option<Outcome> {
    match (x.counts(), y.counts()) {
        (Some(cx), Some(cy)) => proportions(spec, cx, cy, [x.points.len(), y.points.len()], s),
        _ => levels(spec, &values(&x.points), &values(&y.points), s),
    }
}

/// χ² with one degree of freedom at 1 %: how much better a change before the release must
/// explain the series than a change at the release. Not divided among the splits tried:
/// a wrong *pre-existing* costs a missed finding, a missed one a wrong rollback
/// (`scripts/quality stats`: with Bonferroni over the splits, 3.2 % of the canaries whose
/// fault began three windows before their release were rolled back).
const CHI2_1_99: f64 = CHI2_99[0];

/// Where a host's series changed.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    /// When (unix seconds): the middle of the gap between the last point before the change
    /// and the first after.
    at: f64,
    /// Whether it changed the bad way more than a rate window before the release, and that
    /// explains the series significantly better than a change at the release.
    before_release: bool,
    /// At each split more than a rate window before the release after which the series is
    /// worse: when, and how much better it explains the series than the release's.
    early_gains: Vec<(f64, f64)>,
}

/// When the host's series changed, over its before and after points together, if they
/// are one stretch of time: the best split in two (least squares on ranks, or the
/// binomial likelihood of its failed requests), and whether a change the bad way more
/// than a rate window before `split` explains it significantly better than a change at
/// the release (the difference of fits above χ²₁ at 1 %). This is binary segmentation's
/// first step; Pettitt's statistic was tried first, and its argmax drifts early when the
/// last points before a clean step happen to be high (a quarter of the bad canaries of
/// `scripts/quality stats` were called pre-existing).
fn change(spec: &Spec, before: &Side, after: &Side, split: f64, s: &Settings) -> Option<Change> {
    // One stretch: the after side begins a window after the release, each side's points
    // are a window (or the query's step, when longer) apart.
    let step = before
        .points
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(s.spacing, f64::max);
    let contiguous = match (before.points.last(), after.points.first()) {
        (Some(b), Some(a)) => a.0 - b.0 <= s.spacing + 2.0 * step + EPS,
        _ => false,
    };
    if !contiguous {
        return None;
    }
    let all: Vec<(f64, f64)> = before.points.iter().chain(&after.points).copied().collect();
    let requests: Option<Vec<[f64; 2]>> = match (&before.requests, &after.requests) {
        (Some(b), Some(a)) => Some([b.as_slice(), a.as_slice()].concat()),
        _ => None,
    };
    let values = values(&all);
    let (fit, scale) = split_fits(&values, requests.as_deref());
    let n = all.len();
    let time = |k: usize| (all[k - 1].0 + all[k].0) / 2.0;
    // Whether the part from `k` on is worse than the part before it.
    let worse_from = |k: usize| {
        let moved = match &requests {
            Some(r) => {
                let rate = |part: &[[f64; 2]]| {
                    let [f, t] = part
                        .iter()
                        .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
                    if t > 0.0 {
                        f / t
                    } else {
                        0.0
                    }
                };
                rate(&r[k..]) - rate(&r[..k])
            }
            None => median(&values[k..]).unwrap_or(0.0) - median(&values[..k]).unwrap_or(0.0),
        };
        match spec.worse {
            Worse::Up => moved > 0.0,
            Worse::Down => moved < 0.0,
        }
    };
    let at_release = before.points.len();
    // How much better each split before the release explains the series than the
    // release's (χ²-like), where the part after it is worse.
    let gains: Vec<(usize, f64)> = (1..n)
        .filter(|&k| time(k) < split - s.spacing && worse_from(k))
        .map(|k| (k, ((fit[at_release] - fit[k]) / scale).max(0.0)))
        .collect();
    let early_gains: Vec<(f64, f64)> = gains.iter().map(|&(k, g)| (time(k), g)).collect();
    if let Some(&(k, _)) = gains
        .iter()
        .filter(|(_, g)| *g > CHI2_1_99)
        .max_by(|a, b| a.1.total_cmp(&b.1))
    {
        return Some(Change {
            at: time(k),
            before_release: true,
            early_gains,
        });
    }
    // Not before the release: the best split from the release on.
    let k = (at_release..n)
        .filter(|&k| worse_from(k))
        .min_by(|&a, &b| fit[a].total_cmp(&fit[b]))?;
    Some(Change {
        at: time(k),
        before_release: false,
        early_gains,
    })
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        (v * 10.0).round() / 10.0
    } else {
        (v * 1000.0).round() / 1000.0
    }
}

fn comparison(
    spec: &Spec,
    host: &HostSeries,
    method: Method,
    o: Outcome,
    pre_existing: bool,
    change: Option<Change>,
) -> Comparison {
    Comparison {
        signal: spec.name.clone(),
        host: host.host.clone(),
        released_host: host.released,
        method,
        query: host.query.clone(),
        unit: spec.unit.to_owned(),
        released: round(o.released),
        control: round(o.control),
        points: o.points,
        p_value: (o.p_value * 1e6).round() / 1e6,
        effect: round(o.effect),
        class: o.class,
        worse: spec.is_worse(o.class),
        red: spec.red,
        breaks: spec.broken(o.released),
        pre_existing,
        test: o.test,
        p_adjusted: None,
        shift: o.shift.map(round),
        p90: o.p90.map(|[a, b]| [round(a), round(b)]),
        requests: o.counts.map(|[x, y]| [x[1], y[1]]),
        failed: o.counts.map(|[x, y]| [x[0], y[0]]),
        change_at: change
            .as_ref()
            .and_then(|c| chrono::DateTime::from_timestamp_millis((c.at * 1000.0).round() as i64)),
        changed_before: change.as_ref().is_some_and(|c| c.before_release),
        early_gains: change.map(|c| c.early_gains).unwrap_or_default(),
    }
}

/// Every comparison of one signal across the hosts; for the error rate, `rates` are the
/// hosts' requests per second, to compare failed and all requests as counts.
pub fn compare(
    spec: &Spec,
    hosts: &[HostSeries],
    rates: Option<&[HostSeries]>,
    s: &Settings,
) -> Vec<Comparison> {
    let rate_of = |h: &HostSeries| {
        rates
            .filter(|_| spec.kind == Kind::Errors)
            .and_then(|r| r.iter().find(|r| r.host == h.host))
    };
    let controls: Vec<&HostSeries> = hosts.iter().filter(|h| h.control).collect();
    let released: Vec<&HostSeries> = hosts.iter().filter(|h| h.released).collect();
    let mut out = Vec::new();
    for r in &released {
        let (before, after) = (r.before(r.split, s), r.after(r.split, s));
        let own_before = Side::of(before.clone(), rate_of(r), s);
        let own_after = Side::of(after, rate_of(r), s);
        let control_after = Side::joined(
            controls
                .iter()
                .map(|c| Side::of(c.after(r.split, s), rate_of(c), s))
                .collect(),
        );
        let control_before = Side::joined(
            controls
                .iter()
                .map(|c| Side::of(c.before(r.split, s), rate_of(c), s))
                .collect(),
        );
        let (method, outcome) = match test(spec, &own_after, &control_after, s) {
            Some(o) => (Method::Canary, o),
            None => match test(spec, &own_after, &own_before, s) {
                Some(o) => (Method::BeforeAfter, o),
                None => continue,
            },
        };
        let change = match (spec.is_worse(outcome.class), outcome.test) {
            (false, _) => None,
            // A spread that blew up has no level that changed; when the distances from the
            // middle grew is too noisy to clear a release on (a tenth of the blown-up
            // canaries of `scripts/quality stats` came out pre-existing).
            (true, Test::Spread) => None,
            (true, _) => change(spec, &own_before, &own_after, r.split, s),
        };
        // Already broken before, already worse than the controls before, or changed more
        // than a rate window before the release: not the release's doing.
        let pre_existing = median(&values(&before)).is_some_and(|m| spec.breaks(m))
            || (method == Method::Canary
                && test(spec, &own_before, &control_before, s)
                    .is_some_and(|o| spec.is_worse(o.class)))
            || change.as_ref().is_some_and(|c| c.before_release);
        out.push(comparison(spec, r, method, outcome, pre_existing, change));
    }
    // The controls against themselves, from the rollout's first release on: did they move
    // the same way without the release?
    let Some(split) = released.iter().map(|r| r.split).reduce(f64::min) else {
        return out;
    };
    for c in &controls {
        let (before, after) = (c.before(split, s), c.after(split, s));
        let x = Side::of(after, rate_of(c), s);
        let y = Side::of(before, rate_of(c), s);
        if let Some(outcome) = test(spec, &x, &y, s) {
            let change = match spec.is_worse(outcome.class) {
                true => change(spec, &y, &x, split, s),
                false => None,
            };
            out.push(comparison(
                spec,
                c,
                Method::BeforeAfter,
                outcome,
                change.as_ref().is_some_and(|c| c.before_release),
                change,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            name: "errors %".into(),
            unit: "%",
            worse: Worse::Up,
            floor: 1.0,
            relative: 0.5,
            limit: Some(Limit {
                value: 5.0,
                name: "errorRateMaxPercent".into(),
            }),
            red: true,
            kind: Kind::Errors,
        }
    }

    fn settings() -> Settings {
        Settings::default()
    }

    /// 40 points a second apart from t=0; `value(t)`.
    fn host(name: &str, released: bool, value: impl Fn(f64) -> f64) -> HostSeries {
        HostSeries {
            host: name.into(),
            released,
            control: !released,
            split: 20.0,
            query: format!("q{{hostname={name:?}}}"),
            points: (0..40)
                .map(|t| {
                    let t = t as f64;
                    (t, value(t) + (t % 3.0) * 0.1)
                })
                .collect(),
        }
    }

    #[test]
    fn a_bad_canary_is_high_against_calm_controls_and_breaks_its_limit() {
        let hosts = [
            host("web-1", true, |t| if t >= 20.0 { 30.0 } else { 0.0 }),
            host("web-2", false, |_| 0.0),
            host("web-3", false, |_| 0.0),
        ];
        let out = compare(&spec(), &hosts, None, &settings());
        let canary = out.iter().find(|c| c.host == "web-1").unwrap();
        assert_eq!(
            (
                canary.method,
                canary.class,
                canary.worse,
                canary.pre_existing
            ),
            (Method::Canary, Class::High, true, false)
        );
        assert_eq!(canary.breaks.as_deref(), Some("errorRateMaxPercent 5"));
        assert!(canary.p_value < ALPHA);
        let controls: Vec<_> = out.iter().filter(|c| !c.released_host).collect();
        assert_eq!(controls.len(), 2);
        assert!(
            controls.iter().all(|c| c.class == Class::Pass),
            "{controls:?}"
        );
    }

    #[test]
    fn the_same_failure_everywhere_passes_the_canary_and_moves_the_controls() {
        let bad = |t: f64| if t >= 20.0 { 30.0 } else { 0.0 };
        let out = compare(
            &spec(),
            &[host("web-1", true, bad), host("web-2", false, bad)],
            None,
            &settings(),
        );
        let canary = out.iter().find(|c| c.released_host).unwrap();
        assert_eq!(canary.class, Class::Pass, "{canary:?}");
        let control = out.iter().find(|c| !c.released_host).unwrap();
        assert_eq!((control.method, control.worse), (Method::BeforeAfter, true));
    }

    #[test]
    fn errors_that_began_before_the_release_are_pre_existing() {
        let out = compare(
            &spec(),
            &[host("web-1", true, |t| if t >= 12.0 { 30.0 } else { 0.0 })],
            None,
            &settings(),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].method, Method::BeforeAfter);
        assert!(out[0].pre_existing, "{:?}", out[0]);
    }

    #[test]
    fn with_no_controls_a_step_at_the_release_is_compared_with_the_host_itself() {
        let out = compare(
            &spec(),
            &[host("web-1", true, |t| if t >= 20.0 { 30.0 } else { 0.0 })],
            None,
            &settings(),
        );
        assert_eq!(
            (out[0].method, out[0].class, out[0].pre_existing),
            (Method::BeforeAfter, Class::High, false)
        );
        assert_eq!((out[0].released, out[0].control), (30.1, 0.1));
        // The change is placed at the release: between the last point before it and the
        // first whose window lies after it.
        let at = out[0].change_at.unwrap().timestamp_millis() as f64 / 1000.0;
        assert!((19.0..=21.0).contains(&at), "{at}");
    }

    /// The false rollback reproduced on main: a canary whose errors began 30 s before its
    /// release, calm controls. The before window is mostly healthy (its median 0, its last
    /// third too short to test), but the series changed before the release.
    #[test]
    fn a_canary_that_went_bad_before_its_release_is_pre_existing_whatever_the_controls_show() {
        let points = |bad_from: f64| -> Vec<(f64, f64)> {
            (0..120)
                .map(|t| {
                    let t = t as f64;
                    (t, if t >= bad_from { 31.6 } else { 0.0 } + (t % 3.0) * 0.1)
                })
                .collect()
        };
        let series = |name: &str, released: bool, bad_from: f64| HostSeries {
            host: name.into(),
            released,
            control: !released,
            split: 90.0,
            query: String::new(),
            points: points(bad_from),
        };
        let hosts = [
            series("web-1", true, 60.0),
            series("web-2", false, f64::INFINITY),
            series("web-3", false, f64::INFINITY),
        ];
        let s = Settings {
            spacing: 2.0,
            ..settings()
        };
        let out = compare(&spec(), &hosts, None, &s);
        let canary = out.iter().find(|c| c.released_host).unwrap();
        assert_eq!((canary.method, canary.worse), (Method::Canary, true));
        assert!(canary.pre_existing, "{canary:?}");
        let at = canary.change_at.unwrap().timestamp_millis() as f64 / 1000.0;
        assert!((58.0..=62.0).contains(&at), "{at}");
        // The same canary going bad at its release is the release's.
        let hosts = [
            series("web-1", true, 90.0),
            hosts[1].clone(),
            hosts[2].clone(),
        ];
        let canary = compare(&spec(), &hosts, None, &s)
            .into_iter()
            .find(|c| c.released_host)
            .unwrap();
        assert_eq!(
            (canary.worse, canary.pre_existing),
            (true, false),
            "{canary:?}"
        );
    }

    #[test]
    fn points_are_a_rate_window_apart_and_too_few_are_no_comparison() {
        let hosts = [
            host("web-1", true, |t| if t >= 20.0 { 30.0 } else { 0.0 }),
            host("web-2", false, |_| 0.0),
        ];
        // 5 s windows: 4 points before the release, 3 whose window lies after it.
        let s = Settings {
            spacing: 5.0,
            ..settings()
        };
        let times = |points: Vec<(f64, f64)>| points.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(times(hosts[0].before(20.0, &s)), [4.0, 9.0, 14.0, 19.0]);
        assert_eq!(times(hosts[0].after(20.0, &s)), [25.0, 30.0, 35.0]);
        assert!(compare(&spec(), &hosts, None, &s).is_empty());
        let s = Settings { min_points: 3, ..s };
        assert_eq!(compare(&spec(), &hosts, None, &s)[0].points, [3, 3]);
        // An old release: only the last points after it count.
        let s = Settings {
            after_from: 34.0,
            min_points: 1,
            ..s
        };
        assert_eq!(times(hosts[0].after(20.0, &s)), [34.0, 39.0]);
    }

    /// Requests per second: `rate` on every point.
    fn rates(name: &str, released: bool, rate: f64) -> HostSeries {
        HostSeries {
            points: (0..40).map(|t| (t as f64, rate)).collect(),
            ..host(name, released, |_| 0.0)
        }
    }

    #[test]
    fn the_error_rate_is_compared_as_counts_and_low_traffic_is_no_comparison() {
        let hosts = [
            host("web-1", true, |t| if t >= 20.0 { 30.0 } else { 0.0 }),
            host("web-2", false, |_| 0.0),
        ];
        // 10 requests a second: 190 requests after the release, about 57 failed.
        let busy = [rates("web-1", true, 10.0), rates("web-2", false, 10.0)];
        let out = compare(&spec(), &hosts, Some(&busy), &settings());
        let canary = out.iter().find(|c| c.released_host).unwrap();
        assert_eq!(
            (canary.test, canary.class, canary.method),
            (Test::Proportions, Class::High, Method::Canary)
        );
        assert_eq!(canary.requests, Some([190, 190]));
        let failed = canary.failed.unwrap();
        assert!(
            (55..=60).contains(&failed[0]) && failed[1] < 5,
            "{failed:?}"
        );
        // 0.2 requests a second: 38 a side, below Release.MinRequests (50).
        let quiet = [rates("web-1", true, 0.2), rates("web-2", false, 0.2)];
        assert!(compare(&spec(), &hosts, Some(&quiet), &settings())
            .iter()
            .all(|c| !c.released_host));
    }

    #[test]
    fn a_spread_that_blows_up_fails_though_the_medians_agree() {
        let latency = Spec {
            name: "duration p95 ms".into(),
            unit: "ms",
            worse: Worse::Up,
            floor: 5.0,
            relative: 0.2,
            limit: None,
            red: true,
            kind: Kind::Level,
        };
        // After the release, every other point of web-1 is 300 ms slower or faster.
        let wild = |t: f64| {
            if t < 20.0 {
                100.0
            } else {
                100.0 + [0.0, 300.0, 0.0, -80.0][t as usize % 4]
            }
        };
        let hosts = [host("web-1", true, wild), host("web-2", false, |_| 100.0)];
        let out = compare(&latency, &hosts, None, &settings());
        let canary = out.iter().find(|c| c.released_host).unwrap();
        assert_eq!(
            (canary.test, canary.class),
            (Test::Spread, Class::High),
            "{canary:?}"
        );
        assert!(
            canary.p90.unwrap()[0] > canary.p90.unwrap()[1] + 100.0,
            "{canary:?}"
        );
    }
}
