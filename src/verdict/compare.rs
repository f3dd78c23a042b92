//! The comparisons of one signal across a deployment's hosts: each released host after
//! the release against the hosts that did not get it over the same time (canary), or,
//! with no such hosts, against itself before the release (a step at the release time);
//! each control against itself, to see whether the controls moved too; and whether the
//! change was already under way before the release.

use super::stats::{effect, mann_whitney, median};
use crate::model::verdict::{Class, Comparison, Method};

/// A p-value below this is significant. The points of a time series are not
/// independent, so the test is strict, and the effect must be large too.
pub const ALPHA: f64 = 0.01;

/// The smallest effect (in units of the other side's spread) that counts.
pub const MIN_EFFECT: f64 = 1.0;

/// Points a side a comparison needs.
pub const MIN_POINTS: usize = 3;

/// Which way a signal goes bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Higher is worse (errors, latency, CPU).
    Up,
    /// Lower is worse (request rate, available memory).
    Down,
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
    /// One unit of spread, at least (noise below it is not a change).
    pub floor: f64,
    /// Past this (above it when higher is worse, below when lower is) it is unhealthy.
    pub limit: Option<Limit>,
    /// Whether it is one of the application's RED signals (else a host signal).
    pub red: bool,
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

impl HostSeries {
    fn before(&self, split: f64) -> Vec<f64> {
        self.points
            .iter()
            .filter(|(t, _)| *t < split)
            .map(|p| p.1)
            .collect()
    }

    fn after(&self, split: f64) -> Vec<f64> {
        self.points
            .iter()
            .filter(|(t, _)| *t >= split)
            .map(|p| p.1)
            .collect()
    }
}

/// Kayenta's class of `x` against `y`, with its p-value and effect.
fn classify(x: &[f64], y: &[f64], floor: f64) -> Option<(Class, f64, f64)> {
    if x.len() < MIN_POINTS || y.len() < MIN_POINTS {
        return None;
    }
    let p = mann_whitney(x, y)?.p_value;
    let e = effect(x, y, floor)?;
    let class = match () {
        _ if p < ALPHA && e >= MIN_EFFECT => Class::High,
        _ if p < ALPHA && e <= -MIN_EFFECT => Class::Low,
        _ => Class::Pass,
    };
    Some((class, p, e))
}

/// Whether the later part of a before window already moved the bad way against its
/// earlier part: the change began before the release.
fn stepping_before(spec: &Spec, before: &[f64]) -> bool {
    let cut = before.len() * 2 / 3;
    let (head, tail) = before.split_at(cut);
    classify(tail, head, spec.floor).is_some_and(|(class, ..)| spec.is_worse(class))
}

#[allow(clippy::too_many_arguments)]
fn comparison(
    spec: &Spec,
    host: &HostSeries,
    method: Method,
    x: &[f64],
    y: &[f64],
    (class, p_value, effect): (Class, f64, f64),
    pre_existing: bool,
) -> Comparison {
    let released = median(x).unwrap_or(f64::NAN);
    Comparison {
        signal: spec.name.clone(),
        host: host.host.clone(),
        released_host: host.released,
        method,
        query: host.query.clone(),
        unit: spec.unit.to_owned(),
        released: round(released),
        control: round(median(y).unwrap_or(f64::NAN)),
        points: [x.len(), y.len()],
        p_value: (p_value * 1e6).round() / 1e6,
        effect: round(effect),
        class,
        worse: spec.is_worse(class),
        red: spec.red,
        breaks: spec.broken(released),
        pre_existing,
    }
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        (v * 10.0).round() / 10.0
    } else {
        (v * 1000.0).round() / 1000.0
    }
}

/// Every comparison of one signal across the hosts.
pub fn compare(spec: &Spec, hosts: &[HostSeries]) -> Vec<Comparison> {
    let controls: Vec<&HostSeries> = hosts.iter().filter(|h| h.control).collect();
    let released: Vec<&HostSeries> = hosts.iter().filter(|h| h.released).collect();
    let mut out = Vec::new();
    for r in &released {
        let (before, after) = (r.before(r.split), r.after(r.split));
        if after.len() < MIN_POINTS {
            continue;
        }
        let control_after: Vec<f64> = controls.iter().flat_map(|c| c.after(r.split)).collect();
        let control_before: Vec<f64> = controls.iter().flat_map(|c| c.before(r.split)).collect();
        let worse_before = |other: &[f64]| {
            classify(&before, other, spec.floor).is_some_and(|(class, ..)| spec.is_worse(class))
        };
        let already_broken = median(&before).is_some_and(|m| spec.breaks(m));
        let pre_existing = already_broken || stepping_before(spec, &before);
        if let Some(outcome) = classify(&after, &control_after, spec.floor) {
            let pre_existing = pre_existing || worse_before(&control_before);
            out.push(comparison(
                spec,
                r,
                Method::Canary,
                &after,
                &control_after,
                outcome,
                pre_existing,
            ));
        } else if let Some(outcome) = classify(&after, &before, spec.floor) {
            out.push(comparison(
                spec,
                r,
                Method::BeforeAfter,
                &after,
                &before,
                outcome,
                pre_existing,
            ));
        }
    }
    // The controls against themselves, from the rollout's first release on: did they move
    // the same way without the release?
    let Some(split) = released.iter().map(|r| r.split).reduce(f64::min) else {
        return out;
    };
    for c in &controls {
        let (before, after) = (c.before(split), c.after(split));
        if let Some(outcome) = classify(&after, &before, spec.floor) {
            let pre_existing = stepping_before(spec, &before);
            out.push(comparison(
                spec,
                c,
                Method::BeforeAfter,
                &after,
                &before,
                outcome,
                pre_existing,
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
            limit: Some(Limit {
                value: 5.0,
                name: "errorRateMaxPercent".into(),
            }),
            red: true,
        }
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
        let out = compare(&spec(), &hosts);
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
        );
        assert_eq!(
            (out[0].method, out[0].class, out[0].pre_existing),
            (Method::BeforeAfter, Class::High, false)
        );
        assert_eq!((out[0].released, out[0].control), (30.1, 0.1));
    }
}
