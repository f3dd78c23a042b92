//! The verdict's rules, written once (docs/release.md's table says the same):
//!
//! | verdict | when |
//! |---|---|
//! | `release` | a released host's RED or host signal is worse than the controls' (canary), or, with no controls, stepped the bad way at the release time, significantly after Holm's correction over the released hosts' comparisons and by more than the signal's practical floor; and it was not so before the release (not past its limit, not worse than the controls, its series not changed more than a rate window before the release) |
//! | `not_release` | no `release` finding, and the controls moved the same way, or the anomaly was there before the release, or every released signal compared passes |
//! | `inconclusive` | otherwise (nothing could be compared) |
//!
//! | recommendation | when |
//! |---|---|
//! | `rollback` | `release` with confidence ≥ 0.8, on a signal that breaks its absolute limit, found against controls (or a RED signal's step) |
//! | `hold` | any other `release`; `inconclusive` while the rollout is under way (or not known) |
//! | `proceed` | otherwise |
//!
//! A wrong rollback costs most, so every doubt lands on `hold`: a host signal with no
//! controls (CPU on a machine shared with other work) never rolls back on its own.

use super::compare::ALPHA;
use crate::model::verdict::{
    Attribution, Class, Comparison, Method, Recommendation, ReleaseVerdict, Test,
};
use crate::stats::holm;
use crate::stats::CHI2_99;

/// Confidence a rollback needs.
pub const ROLLBACK_CONFIDENCE: f64 = 0.8;

/// What the rules know besides the comparisons.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// Whether the rollout is still under way, or not known (no registration).
    pub under_way: bool,
    /// Facts to put before the reasons (how the hosts were split, what was not measured).
    pub notes: Vec<String>,
    /// The RED signals of released hosts that have points after the release but too few
    /// (or too few requests) to be compared yet (`web-1 duration p95 ms`): while any is
    /// waiting, the rules do not say *proceed* on the others alone.
    pub waiting: Vec<String>,
}

fn describe(c: &Comparison) -> String {
    let unit = |v: f64| match c.unit.as_str() {
        "%" => format!("{v}%"),
        "" => format!("{v}"),
        u => format!("{v} {u}"),
    };
    let against = match (c.method, c.released_host) {
        (Method::Canary, _) => "on the controls".to_owned(),
        (Method::BeforeAfter, true) => "before the release".to_owned(),
        (Method::BeforeAfter, false) => "before the release began (control)".to_owned(),
    };
    let p = |p: f64| {
        if p < 1e-6 {
            "<1e-6".to_owned()
        } else {
            format!("={p:.1e}")
        }
    };
    let mut p_text = format!("p{}", p(c.p_value));
    if let Some(adjusted) = c.p_adjusted {
        p_text.push_str(&format!(", Holm p{}", p(adjusted)));
    }
    let mut text = match (c.test, c.requests, c.failed, c.p90) {
        (Test::Proportions, Some([n1, n2]), Some([f1, f2]), _) => format!(
            "{} {}: {} ({f1} of {n1} requests) against {} ({f2} of {n2}) {against} ({p_text}, {:+} points)",
            c.host,
            c.signal,
            unit(c.released),
            unit(c.control),
            c.shift.unwrap_or(c.released - c.control)
        ),
        (Test::Spread, _, _, Some([r, o])) => format!(
            "{} {}: spread blown up, 90th percentile {} against {} {against}, medians {} and {} ({p_text}, {} vs {} points)",
            c.host,
            c.signal,
            unit(r),
            unit(o),
            unit(c.released),
            unit(c.control),
            c.points[0],
            c.points[1]
        ),
        _ => format!(
            "{} {}: {} against {} {against} ({p_text}, shift {}, effect {:+.1}, {} vs {} points)",
            c.host,
            c.signal,
            unit(c.released),
            unit(c.control),
            c.shift.map_or("n/a".to_owned(), |s| format!("{s:+}")),
            c.effect,
            c.points[0],
            c.points[1]
        ),
    };
    if let Some(limit) = &c.breaks {
        text.push_str(&format!("; breaks {limit}"));
    }
    match (c.pre_existing, c.change_at) {
        (true, Some(at)) => text.push_str(&format!(
            "; already so before the release (changed at {})",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        (true, None) => text.push_str("; already so before the release"),
        (false, Some(at)) if c.worse => {
            text.push_str(&format!("; changed at {}", at.format("%H:%M:%S UTC")))
        }
        _ => {}
    }
    text
}

/// Holm's correction over the released hosts' comparisons (the ones that can blame the
/// release): a class whose adjusted p-value is no longer below `ALPHA` passes. The
/// controls' comparisons can only clear the release, so they are left as they are.
fn correct(comparisons: &mut [Comparison]) {
    let blaming: Vec<usize> = (0..comparisons.len())
        .filter(|&i| comparisons[i].released_host)
        .collect();
    let p: Vec<f64> = blaming.iter().map(|&i| comparisons[i].p_value).collect();
    for (&i, adjusted) in blaming.iter().zip(holm(&p)) {
        let c = &mut comparisons[i];
        c.p_adjusted = Some((adjusted * 1e6).round() / 1e6);
        if adjusted >= ALPHA {
            c.class = Class::Pass;
            c.worse = false;
        }
    }
}

/// A released host one of whose signals changed the bad way before its release was
/// already changing: its other findings are not the release's either (a fault seldom
/// moves every signal by enough to place it in each). So is a host whose worse signals
/// together place a change before its release: the sum of their gains at one split,
/// against χ² at 1 % with as many degrees of freedom (a likelihood-ratio test over
/// independent signals). Says which hosts.
fn already_changing(comparisons: &mut [Comparison]) -> Vec<String> {
    let mut hosts: Vec<(String, String)> = comparisons
        .iter()
        .filter(|c| c.released_host && c.worse && c.changed_before)
        .map(|c| (c.host.clone(), c.signal.clone()))
        .collect();
    let mut candidates: Vec<&str> = comparisons
        .iter()
        .filter(|c| c.released_host && c.worse && !c.early_gains.is_empty())
        .map(|c| c.host.as_str())
        .collect();
    candidates.sort();
    candidates.dedup();
    let mut joint: Vec<(String, String, f64)> = Vec::new();
    for host in candidates {
        let mine: Vec<&Comparison> = comparisons
            .iter()
            .filter(|c| c.host == host && c.released_host && c.worse && !c.early_gains.is_empty())
            .collect();
        if mine.len() < 2 || hosts.iter().any(|(h, _)| h == host) {
            continue;
        }
        let mut sums: std::collections::BTreeMap<i64, f64> = Default::default();
        for c in &mine {
            for &(at, gain) in &c.early_gains {
                *sums.entry((at * 1000.0).round() as i64).or_default() += gain;
            }
        }
        let critical = CHI2_99[(mine.len() - 1).min(CHI2_99.len() - 1)];
        if let Some((&at, _)) = sums
            .iter()
            .filter(|(_, g)| **g > critical)
            .max_by(|a, b| a.1.total_cmp(b.1))
        {
            let signals: Vec<&str> = mine.iter().map(|c| c.signal.as_str()).collect();
            joint.push((host.to_owned(), signals.join(" and "), at as f64 / 1000.0));
        }
    }
    for (host, _, at) in &joint {
        for c in comparisons.iter_mut() {
            if c.host == *host && c.released_host && c.worse && !c.early_gains.is_empty() {
                c.changed_before = true;
                c.change_at = chrono::DateTime::from_timestamp_millis((at * 1000.0).round() as i64);
            }
        }
    }
    hosts.extend(joint.into_iter().map(|(host, signals, _)| (host, signals)));
    hosts.sort();
    hosts.dedup_by(|a, b| a.0 == b.0);
    for c in comparisons.iter_mut() {
        if c.released_host && c.worse && hosts.iter().any(|(h, _)| *h == c.host) {
            c.pre_existing = true;
        }
    }
    hosts
        .into_iter()
        .map(|(host, signal)| {
            format!("{host} was already changing before its release ({signal}): none of its findings is counted against the release")
        })
        .collect()
}

/// Strength of one finding, 0 to 1: significance times size.
fn strength(c: &Comparison) -> f64 {
    (1.0 - c.p_adjusted.unwrap_or(c.p_value)).clamp(0.0, 1.0) * (c.effect.abs() / 3.0).min(1.0)
}

/// The verdict from the comparisons (any order).
pub fn decide(rollout: Rollout, mut comparisons: Vec<Comparison>) -> ReleaseVerdict {
    correct(&mut comparisons);
    let mut notes = rollout.notes.clone();
    notes.extend(already_changing(&mut comparisons));
    comparisons.sort_by(|a, b| {
        (b.worse, b.breaks.is_some(), strength(b))
            .partial_cmp(&(a.worse, a.breaks.is_some(), strength(a)))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let findings: Vec<&Comparison> = comparisons
        .iter()
        .filter(|c| c.released_host && c.worse && !c.pre_existing)
        .collect();
    let pre: Vec<&Comparison> = comparisons
        .iter()
        .filter(|c| c.released_host && c.worse && c.pre_existing)
        .collect();
    let controls_moved: Vec<&Comparison> = comparisons
        .iter()
        .filter(|c| !c.released_host && c.worse)
        .collect();
    let released_compared = comparisons.iter().any(|c| c.released_host);
    let released_broken: Vec<&Comparison> = comparisons
        .iter()
        .filter(|c| c.released_host && c.breaks.is_some() && !c.pre_existing)
        .collect();

    let mut reasons = notes;
    let (verdict, confidence) = if !findings.is_empty() {
        let canary = findings.iter().any(|c| c.method == Method::Canary);
        let best = findings.iter().map(|c| strength(c)).fold(0.0, f64::max);
        let hosts = {
            let mut h: Vec<&str> = findings.iter().map(|c| c.host.as_str()).collect();
            h.sort();
            h.dedup();
            h.len()
        };
        let mut confidence = if canary {
            0.6 + 0.35 * best
        } else {
            0.45 + 0.35 * best
        };
        if findings.iter().any(|c| c.breaks.is_some()) {
            confidence += 0.05;
        }
        if hosts > 1 {
            confidence += 0.02 * (hosts - 1).min(5) as f64;
        }
        reasons.extend(findings.iter().take(5).map(|c| describe(c)));
        (Attribution::Release, confidence.min(0.99))
    } else if !controls_moved.is_empty() || !pre.is_empty() {
        if let Some(c) = controls_moved.first() {
            reasons.push(format!(
                "the hosts without the release moved the same way: {}",
                describe(c)
            ));
        }
        reasons.extend(pre.iter().take(3).map(|c| describe(c)));
        let confidence: f64 = if controls_moved.is_empty() { 0.7 } else { 0.75 };
        (Attribution::NotRelease, confidence)
    } else if released_compared && released_broken.is_empty() && !rollout.waiting.is_empty() {
        // A gate must not promote on the signals that could be compared while one that
        // cannot be yet may be the regression (a latency needs Release.MinPoints points a
        // rate window apart; the error rate's counts come sooner).
        reasons.push(format!(
            "every compared signal of the released hosts passes, but {} cannot be compared yet (too few points or requests after the release)",
            rollout.waiting.join(", ")
        ));
        (Attribution::Inconclusive, 0.0)
    } else if released_compared && released_broken.is_empty() {
        reasons.push(format!(
            "every compared signal of the released hosts passes ({} comparisons, none worse, no limit broken)",
            comparisons.iter().filter(|c| c.released_host).count()
        ));
        (Attribution::NotRelease, 0.6)
    } else {
        if released_broken.is_empty() {
            reasons.push("nothing of the released hosts could be compared".into());
        } else {
            reasons.extend(released_broken.iter().take(3).map(|c| {
                format!(
                    "{}, but not significantly different from what it is compared with",
                    describe(c)
                )
            }));
        }
        (Attribution::Inconclusive, 0.0)
    };
    let rollback_evidence = findings
        .iter()
        .any(|c| c.breaks.is_some() && (c.method == Method::Canary || c.red));
    let recommendation = match verdict {
        Attribution::Release if confidence >= ROLLBACK_CONFIDENCE && rollback_evidence => {
            Recommendation::Rollback
        }
        Attribution::Release => Recommendation::Hold,
        Attribution::Inconclusive if rollout.under_way => Recommendation::Hold,
        _ => Recommendation::Proceed,
    };
    ReleaseVerdict {
        verdict,
        recommendation,
        confidence: (confidence * 100.0).round() / 100.0,
        reasons,
        comparisons,
        model: None,
    }
}

/// The verdict when nothing could be measured: why, and whether the rollout is under way.
pub fn unmeasured(under_way: bool, why: &str) -> ReleaseVerdict {
    decide(
        Rollout {
            under_way,
            notes: vec![why.to_owned()],
            waiting: Vec::new(),
        },
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::verdict::Class;

    fn c(host: &str, released: bool, method: Method, class: Class) -> Comparison {
        Comparison {
            signal: "errors %".into(),
            host: host.into(),
            released_host: released,
            method,
            query: String::new(),
            unit: "%".into(),
            released: 30.0,
            control: 0.0,
            points: [20, 40],
            p_value: if class == Class::Pass { 0.5 } else { 1e-8 },
            effect: if class == Class::Pass { 0.1 } else { 20.0 },
            class,
            worse: class == Class::High,
            red: true,
            breaks: None,
            pre_existing: false,
            test: Test::Rank,
            p_adjusted: None,
            shift: Some(30.0),
            p90: None,
            requests: None,
            failed: None,
            change_at: None,
            changed_before: false,
            early_gains: Vec::new(),
        }
    }

    /// Measured at 15 s scrapes (`benches/gate_detection.rs`): a canary 300 ms slower was
    /// *proceed* for nine minutes, its errors compared as counts and passing while its
    /// latency waited for Release.MinPoints points.
    #[test]
    fn a_signal_that_cannot_be_compared_yet_holds_what_the_others_would_pass() {
        let passing = vec![
            c("web-1", true, Method::Canary, Class::Pass),
            c("web-2", false, Method::BeforeAfter, Class::Pass),
        ];
        let under_way = |waiting: &[&str]| Rollout {
            under_way: true,
            waiting: waiting.iter().map(|w| w.to_string()).collect(),
            ..Rollout::default()
        };
        let v = decide(under_way(&[]), passing.clone());
        assert_eq!(
            (v.verdict, v.recommendation),
            (Attribution::NotRelease, Recommendation::Proceed)
        );
        let v = decide(under_way(&["web-1 duration p95 ms"]), passing);
        assert_eq!(
            (v.verdict, v.recommendation),
            (Attribution::Inconclusive, Recommendation::Hold)
        );
        assert!(
            v.reasons
                .iter()
                .any(|r| r.contains("web-1 duration p95 ms cannot be compared yet")),
            "{v:?}"
        );
    }

    #[test]
    fn a_bad_canary_breaking_a_limit_rolls_back_and_without_the_limit_holds() {
        let mut bad = c("web-1", true, Method::Canary, Class::High);
        bad.breaks = Some("errorRateMaxPercent 5".into());
        let calm = c("web-2", false, Method::BeforeAfter, Class::Pass);
        let v = decide(Rollout::default(), vec![calm.clone(), bad.clone()]);
        assert_eq!(
            (v.verdict, v.recommendation),
            (Attribution::Release, Recommendation::Rollback)
        );
        assert!(v.confidence >= ROLLBACK_CONFIDENCE, "{v:?}");
        assert_eq!(v.comparisons[0].host, "web-1", "the worst first");
        assert!(
            v.reasons[0].contains("breaks errorRateMaxPercent 5"),
            "{v:?}"
        );
        bad.breaks = None;
        let v = decide(Rollout::default(), vec![calm, bad]);
        assert_eq!(v.recommendation, Recommendation::Hold);
    }

    #[test]
    fn controls_that_moved_or_a_pre_existing_anomaly_clear_the_release() {
        let v = decide(
            Rollout::default(),
            vec![
                c("web-1", true, Method::Canary, Class::Pass),
                c("web-2", false, Method::BeforeAfter, Class::High),
            ],
        );
        assert_eq!(
            (v.verdict, v.recommendation),
            (Attribution::NotRelease, Recommendation::Proceed)
        );
        let mut pre = c("web-1", true, Method::BeforeAfter, Class::High);
        pre.pre_existing = true;
        pre.breaks = Some("errorRateMaxPercent 5".into());
        let v = decide(Rollout::default(), vec![pre]);
        assert_eq!(v.verdict, Attribution::NotRelease);
    }

    #[test]
    fn a_host_signals_step_without_controls_never_rolls_back() {
        let mut cpu = c("web-1", true, Method::BeforeAfter, Class::High);
        cpu.signal = "CPU busy %".into();
        cpu.red = false;
        cpu.breaks = Some("saturation 90".into());
        let v = decide(Rollout::default(), vec![cpu]);
        assert_eq!(
            (v.verdict, v.recommendation),
            (Attribution::Release, Recommendation::Hold)
        );
    }

    #[test]
    fn nothing_measured_holds_during_a_rollout_and_proceeds_after() {
        let v = unmeasured(true, "no registered deployment");
        assert_eq!(
            (v.verdict, v.recommendation, v.confidence),
            (Attribution::Inconclusive, Recommendation::Hold, 0.0)
        );
        assert_eq!(v.reasons[0], "no registered deployment");
        let v = unmeasured(false, "Evidence.Enabled is false");
        assert_eq!(v.recommendation, Recommendation::Proceed);
        let healthy = decide(
            Rollout::default(),
            vec![c("web-1", true, Method::Canary, Class::Pass)],
        );
        assert_eq!(
            (healthy.verdict, healthy.recommendation),
            (Attribution::NotRelease, Recommendation::Proceed)
        );
    }

    #[test]
    fn holms_correction_over_the_released_hosts_turns_chance_findings_into_passes() {
        // One finding at p = 0.005 among twenty comparisons: chance, after Holm (0.1). Its
        // host breaks the limit, so the verdict cannot clear the release either.
        let mut rows: Vec<Comparison> = (0..19)
            .map(|i| c(&format!("web-{i}"), true, Method::Canary, Class::Pass))
            .collect();
        let mut chance = c("web-1", true, Method::Canary, Class::High);
        chance.p_value = 0.005;
        chance.breaks = Some("errorRateMaxPercent 5".into());
        rows.push(chance.clone());
        let v = decide(Rollout::default(), rows);
        assert_eq!(
            (v.verdict, v.recommendation),
            (Attribution::Inconclusive, Recommendation::Proceed),
            "{v:?}"
        );
        let row = v.comparisons.iter().find(|r| r.p_value == 0.005).unwrap();
        assert_eq!((row.class, row.p_adjusted), (Class::Pass, Some(0.1)));
        // Alone, it stands.
        let v = decide(Rollout::default(), vec![chance]);
        assert_eq!(v.verdict, Attribution::Release, "{v:?}");
        assert!(v.reasons[0].contains("Holm p=5.0e-3"), "{v:?}");
    }

    #[test]
    fn a_host_already_changing_before_its_release_is_not_the_releases_on_any_signal() {
        let mut errors = c("web-1", true, Method::Canary, Class::High);
        errors.breaks = Some("errorRateMaxPercent 5".into());
        let mut latency = c("web-1", true, Method::Canary, Class::High);
        latency.signal = "duration p95 ms".into();
        // Each signal alone places a change before the release too weakly (χ²₁ 6.6)...
        errors.early_gains = vec![(100.0, 4.0), (110.0, 5.5)];
        latency.early_gains = vec![(110.0, 4.5)];
        let v = decide(Rollout::default(), vec![errors.clone(), latency.clone()]);
        // ...together they do: 5.5 + 4.5 at 110 s, above χ²₂ 9.21.
        assert_eq!(v.verdict, Attribution::NotRelease, "{v:?}");
        assert!(v
            .comparisons
            .iter()
            .all(|c| c.pre_existing && c.changed_before));
        assert_eq!(v.comparisons[0].change_at.unwrap().timestamp(), 110);
        assert!(
            v.reasons[0].contains("web-1 was already changing before its release"),
            "{v:?}"
        );
        // One signal whose own change was before the release clears the host's others.
        latency.early_gains.clear();
        latency.changed_before = true;
        latency.pre_existing = true;
        errors.early_gains = vec![(110.0, 1.0)];
        let v = decide(Rollout::default(), vec![errors.clone(), latency]);
        assert_eq!(
            (v.verdict, v.recommendation),
            (Attribution::NotRelease, Recommendation::Proceed),
            "{v:?}"
        );
        // Alone, the errors' weak gain leaves the release blamed.
        let v = decide(Rollout::default(), vec![errors]);
        assert_eq!(v.recommendation, Recommendation::Rollback, "{v:?}");
    }
}
