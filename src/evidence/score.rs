//! Scoring a series: a robust deviation of the incident from the baseline (median and
//! MAD, with a floor per signal so a quiet series does not turn noise into an anomaly),
//! and saturation thresholds; new saturation outranks saturation the baseline already had.
//! Whether an anomaly was there before the release: where its series changed.

use crate::model::evidence::{Reading, Scored, ANOMALY_SCORE};
use crate::stats::{median as median_of, split_fits, CHI2_99};

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
        Some(Saturation::NonZero) if saturated > 0.0 => Reading::Event,
        _ if saturated > 0.0 => Reading::Saturated,
        _ if score >= ANOMALY_SCORE => Reading::Anomalous,
        _ => Reading::Normal,
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

/// Whether a series changed the bad way (`up`: higher is worse) before the release at
/// `split` rather than at it: its points taken `spacing` apart (the rate window, so that
/// no two cover the same requests), the first one at or after the release kept; a split
/// more than `spacing` before the release, after which the series is worse, explains it
/// better than the split at the release by more than χ²₁ at 1 % (least squares on ranks,
/// the release verdict's change point). An anomaly whose series merely rose at the end of
/// the window before (the rate window smearing a change at the release) is not.
pub fn began_before(points: &[(f64, f64)], split: f64, spacing: f64, up: bool) -> bool {
    let Some(first_after) = points.iter().position(|p| p.0 >= split) else {
        return false;
    };
    let mut gaps: Vec<f64> = points.windows(2).map(|w| w[1].0 - w[0].0).collect();
    gaps.sort_by(f64::total_cmp);
    let step = gaps
        .get(gaps.len() / 2)
        .copied()
        .unwrap_or(spacing)
        .max(1e-9);
    let stride = ((spacing / step).round() as usize).max(1);
    let kept: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == first_after % stride)
        .map(|(_, p)| *p)
        .collect();
    let at = kept.iter().position(|p| p.0 >= split).unwrap_or(kept.len());
    if at < 3 || kept.len() - at < 1 {
        return false;
    }
    let values: Vec<f64> = kept.iter().map(|p| p.1).collect();
    let (fit, scale) = split_fits(&values, None);
    let worse_from = |k: usize| {
        let moved = median_of(&values[k..]).unwrap_or(0.0) - median_of(&values[..k]).unwrap_or(0.0);
        if up {
            moved > 0.0
        } else {
            moved < 0.0
        }
    };
    (1..at)
        .filter(|&k| (kept[k - 1].0 + kept[k].0) / 2.0 < split - spacing && worse_from(k))
        .any(|k| (fit[at] - fit[k]) / scale > CHI2_99[0])
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
        assert_eq!(s.verdict, Reading::Saturated);
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
        assert_eq!(s.verdict, Reading::Normal, "{s:?}");
        let standing = score(
            &[95.0, 96.0, 95.5],
            &[96.0],
            Some(Saturation::Above(90.0)),
            2.0,
        )
        .unwrap();
        assert_eq!(standing.verdict, Reading::Saturated);
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
        assert_eq!((s.verdict, s.peak), (Reading::Saturated, 5.0));
        let down = score(
            &[1.0, 1.0, 1.0],
            &[0.0, 0.0],
            Some(Saturation::Below(0.5)),
            0.5,
        )
        .unwrap();
        assert_eq!(down.verdict, Reading::Saturated);
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
        assert_eq!(s.verdict, Reading::Anomalous, "{s:?}");
        let oom = score(
            &[0.0, 0.0, 0.0],
            &[0.0, 1.0],
            Some(Saturation::NonZero),
            1.0,
        )
        .unwrap();
        assert_eq!(oom.verdict, Reading::Event);
        assert_eq!(score(&[1.0], &[], None, 1.0), None);
    }

    /// Pseudo-random noise in [-1, 1], the same every run.
    fn noise(i: usize) -> f64 {
        ((i as f64 * 12.9898).sin() * 43_758.547).fract()
    }

    /// A series a second apart from -600 s to 300 s around a release at 0 s, at 1 ± 0.2
    /// until `from`, then 5 ± 0.2, smeared over a 60 s rate window.
    fn stepped(from: f64) -> Vec<(f64, f64)> {
        (-600..300)
            .map(|t| {
                let t = f64::from(t);
                let share = ((t - from) / 60.0).clamp(0.0, 1.0);
                (t, 1.0 + 4.0 * share + 0.2 * noise((t + 600.0) as usize))
            })
            .collect()
    }

    #[test]
    fn an_anomaly_that_began_at_the_release_was_not_there_before_it() {
        assert!(!began_before(&stepped(0.0), 0.0, 60.0, true));
        // Higher is not worse for this signal: a fall before the release would be.
        assert!(!began_before(&stepped(-300.0), 0.0, 60.0, false));
    }

    #[test]
    fn an_anomaly_that_began_windows_before_the_release_was_there_before_it() {
        assert!(began_before(&stepped(-300.0), 0.0, 60.0, true));
        // The case the last third of the window before missed: errors that began 30 s
        // before the release, with a 5 s rate window.
        let shortly: Vec<(f64, f64)> = stepped(-30.0)
            .into_iter()
            .map(|(t, v)| {
                (
                    t,
                    if t >= -30.0 {
                        5.0 + 0.2 * noise((t + 900.0) as usize)
                    } else {
                        v
                    },
                )
            })
            .collect();
        assert!(began_before(&shortly, 0.0, 5.0, true));
        // Within a rate window of the release it is the release's.
        assert!(!began_before(&stepped(-30.0), 0.0, 60.0, true));
    }

    #[test]
    fn a_series_with_too_little_before_the_release_was_not_there_before_it() {
        let short: Vec<(f64, f64)> = stepped(-300.0)
            .into_iter()
            .filter(|p| p.0 > -150.0)
            .collect();
        assert!(!began_before(&short, 0.0, 60.0, true));
        assert!(!began_before(&[], 0.0, 60.0, true));
    }
}
