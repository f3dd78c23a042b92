//! The statistics of the release verdict and the evidence: the Mann-Whitney U test (two-sided; ties get
//! average ranks and the variance's tie correction; the normal approximation with a
//! continuity correction, exact below 8 points a side), an effect size (the difference of
//! medians in units of the control's spread, Kayenta's), the Hodges–Lehmann shift, two
//! proportions compared (Fisher's exact test when an expected count is small, else the
//! pooled z-test), Holm's step-down correction, and the fits of a series split in two (a
//! change point).

/// The points a side below which the p-value is computed exactly.
pub const EXACT_BELOW: usize = 8;

/// The outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample (the released hosts').
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Ranks of all values, ties averaged; and the tie groups' sizes.
pub(crate) fn ranks(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let average = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = average;
        }
        if j > i {
            ties.push(j - i + 1);
        }
        i = j + 1;
    }
    (ranks, ties)
}

/// The number of ways each U can arise for samples of `n1` and `n2` without ties:
/// `counts[u]` for u in 0..=n1·n2.
fn u_counts(n1: usize, n2: usize) -> Vec<f64> {
    // f(n1, n2, u) = f(n1 - 1, n2, u - n2) + f(n1, n2 - 1, u), by whether the largest
    // value belongs to the first sample.
    let mut table: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); n2 + 1]; n1 + 1];
    for a in 0..=n1 {
        for b in 0..=n2 {
            let mut counts = vec![0.0; a * b + 1];
            if a == 0 || b == 0 {
                counts[0] = 1.0;
            } else {
                for (u, count) in counts.iter_mut().enumerate() {
                    let with = if u >= b {
                        table[a - 1][b].get(u - b).copied().unwrap_or(0.0)
                    } else {
                        0.0
                    };
                    let without = table[a][b - 1].get(u).copied().unwrap_or(0.0);
                    *count = with + without;
                }
            }
            table[a][b] = counts;
        }
    }
    std::mem::take(&mut table[n1][n2])
}

/// The standard normal's upper tail, `P(Z > z)`, from `erfc` (Numerical Recipes' Chebyshev
/// fit, relative error below 1.2e-7: ample for a p-value).
fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    erfc / 2.0
}

/// The two-sided Mann-Whitney U test of `x` (released) against `y` (control). `None` when
/// either sample is empty.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    let (ranks, ties) = ranks(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let product = (n1 * n2) as f64;
    let u2 = product - u1;
    if n1 < EXACT_BELOW && n2 < EXACT_BELOW && ties.is_empty() {
        let counts = u_counts(n1, n2);
        let total: f64 = counts.iter().sum();
        let low = u1.min(u2).round() as usize;
        let tail: f64 = counts[..=low].iter().sum::<f64>() / total;
        return Some(MannWhitney {
            u: u1,
            p_value: (2.0 * tail).min(1.0),
        });
    }
    let n = (n1 + n2) as f64;
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum::<f64>() / (n * (n - 1.0));
    let variance = product / 12.0 * ((n + 1.0) - tie_term);
    if variance <= 0.0 {
        // Every value the same: no evidence of a difference.
        return Some(MannWhitney {
            u: u1,
            p_value: 1.0,
        });
    }
    let z = (u1.max(u2) - product / 2.0 - 0.5) / variance.sqrt();
    Some(MannWhitney {
        u: u1,
        p_value: (2.0 * normal_sf(z)).min(1.0),
    })
}

/// The median of a sample (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// A robust spread: 1.4826 x the median absolute deviation (the standard deviation of
/// normal data), never below `floor`.
pub fn spread(values: &[f64], floor: f64) -> f64 {
    let Some(m) = median(values) else {
        return floor.max(f64::MIN_POSITIVE);
    };
    let deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    (1.4826 * median(&deviations).unwrap_or(0.0))
        .max(floor)
        .max(f64::MIN_POSITIVE)
}

/// The effect of the release: the released sample's median minus the control's, in units
/// of the control's spread (at least `floor`, the signal's unit of noise). Positive: the
/// released hosts read higher.
pub fn effect(released: &[f64], control: &[f64], floor: f64) -> Option<f64> {
    Some((median(released)? - median(control)?) / spread(control, floor))
}

/// The `q` quantile of a sample, interpolated between order statistics (R's type 7,
/// NumPy's default). `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64))
}

/// The Hodges–Lehmann estimate of how far `x` sits above `y`: the median of every
/// difference `x[i] - y[j]`. `None` when either is empty.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Option<f64> {
    let differences: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    median(&differences)
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9: relative error near 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let a = C
        .iter()
        .enumerate()
        .skip(1)
        .fold(C[0], |a, (i, c)| a + c / (x + i as f64));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// Below this expected count in a cell, two proportions are compared exactly.
pub const EXACT_EXPECTED: f64 = 5.0;

/// The two-sided p-value that `failed[0]` of `total[0]` and `failed[1]` of `total[1]` are
/// the same proportion: Fisher's exact test (the tables as or less likely than the one
/// seen, with SciPy's relative tolerance) when a cell's expected count is below
/// [`EXACT_EXPECTED`], else the pooled two-proportion z-test. `None` when a side is empty.
pub fn two_proportions(failed: [u64; 2], total: [u64; 2]) -> Option<f64> {
    let [n1, n2] = total;
    if n1 == 0 || n2 == 0 || failed[0] > n1 || failed[1] > n2 {
        return None;
    }
    let n = n1 + n2;
    let bad = failed[0] + failed[1];
    let expected = [n1, n2]
        .into_iter()
        .flat_map(|row| [bad, n - bad].map(|col| (row * col) as f64 / n as f64))
        .fold(f64::INFINITY, f64::min);
    if expected < EXACT_EXPECTED {
        // The hypergeometric law of the first row's failures, given the margins.
        let ln_p = |x: u64| ln_choose(n1, x) + ln_choose(n2, bad - x) - ln_choose(n, bad);
        let seen = ln_p(failed[0]);
        let p: f64 = (bad.saturating_sub(n2)..=bad.min(n1))
            .map(ln_p)
            .filter(|&l| l <= seen + 1e-7)
            .map(f64::exp)
            .sum();
        return Some(p.min(1.0));
    }
    let (p1, p2) = (failed[0] as f64 / n1 as f64, failed[1] as f64 / n2 as f64);
    let pooled = bad as f64 / n as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return Some(1.0);
    }
    Some((2.0 * normal_sf(((p1 - p2) / se).abs())).min(1.0))
}

/// Holm's step-down adjustment of p-values (same order as given): the `i`-th smallest is
/// multiplied by `m − i`, kept monotone, capped at 1.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![1.0; m];
    let mut running = 0.0_f64;
    for (i, &k) in order.iter().enumerate() {
        running = running.max(((m - i) as f64 * p_values[k]).min(1.0));
        adjusted[k] = running;
    }
    adjusted
}

/// χ² at 1 % with 1 to 8 degrees of freedom (SciPy's `chi2.isf(0.01, df)`): how much better
/// a change before the release must explain `df` signals of one host together.
pub const CHI2_99: [f64; 8] = [6.635, 9.210, 11.345, 13.277, 15.086, 16.812, 18.475, 20.090];

/// The fit of the series split in two at every index `k` (lower is better): for counts,
/// the binomial deviance of the failed requests, each part with its own rate; else the
/// squared distances of the ranks from each part's mean rank (robust to outliers). With
/// the noise's scale, so that a difference of fits is χ²-like.
pub fn split_fits(values: &[f64], requests: Option<&[[f64; 2]]>) -> (Vec<f64>, f64) {
    let n = values.len();
    match requests {
        Some(requests) => {
            let ll = |f: f64, t: f64| {
                let term = |k: f64, p: f64| if k > 0.0 { k * p.ln() } else { 0.0 };
                if t <= 0.0 {
                    return 0.0;
                }
                term(f, f / t) + term(t - f, 1.0 - f / t)
            };
            let total = requests
                .iter()
                .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
            let mut head = [0.0, 0.0];
            let mut out = vec![f64::INFINITY; n];
            for k in 1..n {
                head = [head[0] + requests[k - 1][0], head[1] + requests[k - 1][1]];
                let tail = [total[0] - head[0], total[1] - head[1]];
                out[k] = -2.0 * (ll(head[0], head[1]) + ll(tail[0], tail[1]));
            }
            (out, 1.0)
        }
        None => {
            let (ranks, _) = ranks(values);
            let (sum, squares) = ranks
                .iter()
                .fold((0.0, 0.0), |(a, b), r| (a + r, b + r * r));
            let sse = |s: f64, q: f64, m: f64| if m > 0.0 { q - s * s / m } else { 0.0 };
            let (mut hs, mut hq) = (0.0, 0.0);
            let mut out = vec![f64::INFINITY; n];
            for k in 1..n {
                hs += ranks[k - 1];
                hq += ranks[k - 1] * ranks[k - 1];
                out[k] = sse(hs, hq, k as f64) + sse(sum - hs, squares - hq, (n - k) as f64);
            }
            let best = out.iter().copied().fold(f64::INFINITY, f64::min);
            (
                out,
                (best / (n as f64 - 2.0).max(1.0)).max(f64::MIN_POSITIVE),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// p-values from SciPy 1.11 (`scipy.stats.mannwhitneyu`, two-sided; `asymptotic` with
    /// `use_continuity=True`, or `exact`).
    #[test]
    fn p_values_match_scipy() {
        let cases: &[(&[f64], &[f64], f64, f64)] = &[
            // Asymptotic: 10 a side.
            (
                &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.],
                &[5., 6., 7., 8., 9., 10., 11., 12., 13., 14.],
                18.0,
                0.017_006_577_801_423_665,
            ),
            // Asymptotic with ties (the tie correction).
            (
                &[1., 1., 2., 2., 3.],
                &[2., 3., 3., 4., 4., 5., 5., 6.],
                3.0,
                0.014_178_973_211_215_777,
            ),
            (
                &[5., 5., 5., 5.],
                &[5., 5., 5., 6.],
                6.0,
                0.453_254_704_753_736_4,
            ),
            (
                &[0., 1., 2., 3., 4., 5., 6., 7.],
                &[3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5],
                10.0,
                0.023_948_674_879_759_435,
            ),
            // Exact: below 8 a side, no ties.
            (&[1., 2., 3.], &[4., 5., 6.], 0.0, 0.1),
            (
                &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                &[0.15, 0.35, 0.9, 1.0, 1.1, 1.2, 1.3],
                10.0,
                0.072_843_822_843_822_85,
            ),
            (
                &[1., 2., 3., 4., 5., 6., 7.],
                &[8., 9., 10., 11., 12., 13., 14.],
                0.0,
                0.000_582_750_582_750_582_8,
            ),
            (
                &[3., 1., 2.],
                &[2.5, 0.5, 4., 5.],
                4.0,
                0.628_571_428_571_428_6,
            ),
        ];
        for (x, y, u, p) in cases {
            let got = mann_whitney(x, y).unwrap();
            assert_eq!(got.u, *u, "{x:?} {y:?}");
            assert!(
                (got.p_value - p).abs() < 1e-6,
                "{x:?} {y:?}: p {} not {p}",
                got.p_value
            );
        }
        assert!(mann_whitney(&[], &[1.0]).is_none());
    }

    #[test]
    fn the_effect_is_the_median_shift_in_units_of_the_controls_spread() {
        let control = [10.0, 11.0, 9.0, 10.0, 12.0, 8.0];
        let released = [20.0, 21.0, 19.0];
        let e = effect(&released, &control, 0.1).unwrap();
        // Control median 10, MAD 1 (spread 1.4826), released median 20.
        assert!((e - 10.0 / 1.4826).abs() < 1e-9, "{e}");
        // A flat control: the floor is the unit.
        assert_eq!(effect(&[3.0], &[1.0, 1.0, 1.0], 0.5), Some(4.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    /// Fisher's exact and the z-test from SciPy 1.11 (`scipy.stats.fisher_exact`, and the
    /// pooled z with `scipy.stats.norm.sf`).
    #[test]
    fn two_proportions_match_scipy() {
        let cases: &[([u64; 2], [u64; 2], f64)] = &[
            // Exact: an expected count below 5.
            ([1, 0], [3, 30], 0.090_909_090_909_090_91),
            ([3, 1], [10, 41], 0.020_528_211_284_513_81),
            ([0, 2], [20, 20], 0.487_179_487_179_487_3),
            // z-test.
            ([30, 10], [200, 400], 7.192_129_366_056_132e-9),
        ];
        for (failed, total, p) in cases {
            let got = two_proportions(*failed, *total).unwrap();
            assert!(
                (got - p).abs() <= 1e-6 * p,
                "{failed:?} of {total:?}: {got} not {p}"
            );
        }
        assert_eq!(two_proportions([0, 0], [0, 10]), None);
        assert_eq!(two_proportions([0, 0], [500, 500]), Some(1.0));
    }

    #[test]
    fn the_shift_quantiles_and_holm_match_numpy_and_the_textbook() {
        // numpy.median(numpy.subtract.outer(x, y)), numpy.quantile(x, 0.9).
        assert_eq!(
            hodges_lehmann(&[5.0, 6.0, 9.0], &[1.0, 2.0, 3.0, 10.0]),
            Some(3.5)
        );
        assert!((quantile(&[10.0, 1.0, 3.0, 2.0, 4.0], 0.9).unwrap() - 7.6).abs() < 1e-12);
        // Holm: 0.005×4, 0.01×3, 0.03×2, then 0.04 kept at 0.06 (monotone).
        let adjusted = holm(&[0.01, 0.04, 0.03, 0.005]);
        let expected = [0.03, 0.06, 0.06, 0.02];
        for (a, e) in adjusted.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{adjusted:?}");
        }
    }
}
