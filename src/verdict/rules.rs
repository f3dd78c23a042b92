//! The verdict's rules, written once (the README's table says the same):
//!
//! | verdict | when |
//! |---|---|
//! | `release` | a released host's RED or host signal is worse than the controls' (canary), or, with no controls, stepped the bad way at the release time; and it was not so before the release |
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

use crate::model::verdict::{Attribution, Comparison, Method, Recommendation, ReleaseVerdict};

/// Confidence a rollback needs.
pub const ROLLBACK_CONFIDENCE: f64 = 0.8;

/// What the rules know besides the comparisons.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// Whether the rollout is still under way, or not known (no registration).
    pub under_way: bool,
    /// Facts to put before the reasons (how the hosts were split, what was not measured).
    pub notes: Vec<String>,
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
    let p = if c.p_value < 1e-6 {
        "p<1e-6".to_owned()
    } else {
        format!("p={:.1e}", c.p_value)
    };
    let mut text = format!(
        "{} {}: {} against {} {against} ({p}, effect {:+.1}, {} vs {} points)",
        c.host,
        c.signal,
        unit(c.released),
        unit(c.control),
        c.effect,
        c.points[0],
        c.points[1]
    );
    if let Some(limit) = &c.breaks {
        text.push_str(&format!("; breaks {limit}"));
    }
    if c.pre_existing {
        text.push_str("; already so before the release");
    }
    text
}

/// Strength of one finding, 0 to 1: significance times size.
fn strength(c: &Comparison) -> f64 {
    (1.0 - c.p_value).clamp(0.0, 1.0) * (c.effect.abs() / 3.0).min(1.0)
}

/// The verdict from the comparisons (any order).
pub fn decide(rollout: Rollout, mut comparisons: Vec<Comparison>) -> ReleaseVerdict {
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

    let mut reasons = rollout.notes.clone();
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
        }
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
}
