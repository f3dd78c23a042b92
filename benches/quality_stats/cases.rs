//! `scripts/quality stats`: the release verdict's statistics on generated series, without
//! Prometheus. Each case is a canary (one released host, two controls) with 24 points
//! before its release and 20 after, one point per 5-second rate window (2 minutes of
//! baseline, 100 s after the release): requests per second (Poisson, 20/s: 100 requests a
//! point), the error rate (failed requests drawn per request), the p95 latency (log-normal
//! around 100 ms). The verdict is also taken at 10 points after the release
//! (`Release.MinPoints`, the earliest it can say anything of a series). The series go through the service's own comparisons and
//! rules (`verdict::compare`, `verdict::rules`) with the defaults (`Release.MinPoints`
//! 10, `Release.MinRequests` 50) and limits of 2 % errors and 130 ms.
//!
//! Bad classes (the release's doing, each past the practical floor) should be judged
//! `release`; innocent ones must almost never be rolled back (goal ≤ 0.5 %).

use deploy_diagnosis::model::verdict::{Attribution, Recommendation};
use deploy_diagnosis::verdict::compare::{compare, HostSeries, Limit, Settings};
use deploy_diagnosis::verdict::measure::red_spec;
use deploy_diagnosis::verdict::rules::{decide, Rollout};

/// Points before the release, and after it.
const BEFORE: usize = 24;
const AFTER: usize = 20;
/// Seconds between points: the rate window.
const WINDOW: f64 = 5.0;
/// The release, in seconds: the point at `SPLIT` covers the window before it.
const SPLIT: f64 = BEFORE as f64 * WINDOW;

/// SplitMix64: small, seeded, good enough for simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Box–Muller.
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }

    /// Knuth's method below 30, else the normal approximation.
    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda < 30.0 {
            let (limit, mut k, mut p) = ((-lambda).exp(), 0, 1.0);
            loop {
                p *= self.uniform();
                if p <= limit {
                    return k;
                }
                k += 1;
            }
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }

    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.uniform() < p).count() as u64
    }
}

/// What a host does in one point (`t`: its end, seconds; `released`: the canary).
#[derive(Clone, Copy)]
struct Point {
    requests_per_s: f64,
    error_rate: f64,
    p95_ms: f64,
    sigma: f64,
}

const NORMAL: Point = Point {
    requests_per_s: 20.0,
    error_rate: 0.005,
    p95_ms: 100.0,
    sigma: 0.1,
};

/// A class: its name, whether the release caused it, what it is, and how a host behaves at
/// `t` (`host` 0 is the canary; the point covers the second before `t`).
struct Class {
    name: &'static str,
    bad: bool,
    what: &'static str,
    at: fn(host: usize, t: f64, rng: &mut Rng) -> Point,
}

fn after(t: f64) -> bool {
    t > SPLIT
}

const CLASSES: &[Class] = &[
    Class {
        name: "errors x10",
        bad: true,
        what: "the canary's errors 0.5 % -> 5 % at the release",
        at: |h, t, _| Point {
            error_rate: if h == 0 && after(t) { 0.05 } else { 0.005 },
            ..NORMAL
        },
    },
    Class {
        name: "step up",
        bad: true,
        what: "the canary's p95 x1.5 at the release",
        at: |h, t, _| Point {
            p95_ms: if h == 0 && after(t) { 150.0 } else { 100.0 },
            ..NORMAL
        },
    },
    Class {
        name: "slow drift",
        bad: true,
        what: "the canary's p95 rising from x1 to x2 over the 20 points after",
        at: |h, t, _| Point {
            p95_ms: if h == 0 && after(t) {
                100.0 * (1.0 + (t - SPLIT) / (AFTER as f64 * WINDOW))
            } else {
                100.0
            },
            ..NORMAL
        },
    },
    Class {
        name: "variance blow-up",
        bad: true,
        what: "the canary's p95 spread x6 (sigma 0.1 -> 0.6), same median",
        at: |h, t, _| Point {
            sigma: if h == 0 && after(t) { 0.6 } else { 0.1 },
            ..NORMAL
        },
    },
    Class {
        name: "7 of 10 at 100x",
        bad: true,
        what: "7 of every 10 canary points at 100x p95",
        at: |h, t, _| Point {
            p95_ms: if h == 0 && after(t) && ((t / WINDOW) as usize) % 10 < 7 {
                10_000.0
            } else {
                100.0
            },
            ..NORMAL
        },
    },
    Class {
        name: "error bursts",
        bad: true,
        what: "3 in 10 canary points at 20 % errors",
        at: |h, t, rng| Point {
            error_rate: if h == 0 && after(t) && rng.uniform() < 0.3 {
                0.2
            } else {
                0.005
            },
            ..NORMAL
        },
    },
    Class {
        name: "same distribution",
        bad: false,
        what: "nothing changes",
        at: |_, _, _| NORMAL,
    },
    Class {
        name: "noisy control",
        bad: false,
        what: "one control's p95 3x as spread and its errors bursty",
        at: |h, _, rng| match h {
            2 => Point {
                sigma: 0.3,
                error_rate: (0.005 * rng.normal().exp()).min(1.0),
                ..NORMAL
            },
            _ => NORMAL,
        },
    },
    Class {
        name: "fault shared",
        bad: false,
        what: "every host, controls too: errors x10 and p95 x1.5 at the release",
        at: |_, t, _| match after(t) {
            true => Point {
                error_rate: 0.05,
                p95_ms: 150.0,
                ..NORMAL
            },
            false => NORMAL,
        },
    },
    Class {
        name: "low traffic",
        bad: false,
        what: "0.3 requests/s on every host, p95 from few requests (sigma 0.5)",
        at: |_, _, _| Point {
            requests_per_s: 0.3,
            sigma: 0.5,
            ..NORMAL
        },
    },
    Class {
        name: "began before",
        bad: false,
        what: "the canary's errors x10 and p95 x1.5 from 3 rate windows before its release",
        at: |h, t, _| match h == 0 && t > SPLIT - 3.0 * WINDOW {
            true => Point {
                error_rate: 0.05,
                p95_ms: 150.0,
                ..NORMAL
            },
            false => NORMAL,
        },
    },
    Class {
        name: "began just before",
        bad: false,
        what: "the same from 2 rate windows before its release: one point before it shows it",
        at: |h, t, _| match h == 0 && t > SPLIT - 2.0 * WINDOW {
            true => Point {
                error_rate: 0.05,
                p95_ms: 150.0,
                ..NORMAL
            },
            false => NORMAL,
        },
    },
];

/// One case through the service's comparisons and rules, with the points up to `after`
/// points after the release; and with `AFTER`.
fn verdicts(class: &Class, rng: &mut Rng, early: usize) -> [(Attribution, Recommendation); 2] {
    let names = ["canary", "control-1", "control-2"];
    let mut series: [Vec<HostSeries>; 3] = Default::default();
    for (h, name) in names.iter().enumerate() {
        let host = |query: &str, points: Vec<(f64, f64)>| HostSeries {
            host: (*name).to_owned(),
            released: h == 0,
            control: h != 0,
            split: SPLIT,
            query: query.to_owned(),
            points,
        };
        let (mut rate, mut errors, mut p95) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=(BEFORE + AFTER) {
            let t = i as f64 * WINDOW;
            let p = (class.at)(h, t, rng);
            let n = rng.poisson(p.requests_per_s * WINDOW);
            let failed = rng.binomial(n, p.error_rate);
            rate.push((t, n as f64 / WINDOW));
            if n > 0 {
                errors.push((t, 100.0 * failed as f64 / n as f64));
                p95.push((t, p.p95_ms * (p.sigma * rng.normal()).exp()));
            }
        }
        series[0].push(host("rate", rate));
        series[1].push(host("errors", errors));
        series[2].push(host("p95", p95));
    }
    let limit = |value: f64, name: &str| {
        Some(Limit {
            value,
            name: name.to_owned(),
        })
    };
    let specs = [
        red_spec("requests/s", None),
        red_spec("errors %", limit(2.0, "errorRateMaxPercent")),
        red_spec("duration p95 ms", limit(130.0, "durationP95MaxMs")),
    ];
    let settings = Settings {
        spacing: WINDOW,
        ..Settings::default()
    };
    let judge = |until: f64| {
        let cut = |hosts: &Vec<HostSeries>| -> Vec<HostSeries> {
            hosts
                .iter()
                .map(|h| HostSeries {
                    points: h.points.iter().copied().filter(|p| p.0 <= until).collect(),
                    ..h.clone()
                })
                .collect()
        };
        let rates = cut(&series[0]);
        let mut comparisons = Vec::new();
        for (spec, hosts) in specs.iter().zip(&series) {
            comparisons.extend(compare(spec, &cut(hosts), Some(&rates), &settings));
        }
        let v = decide(
            Rollout {
                under_way: true,
                ..Rollout::default()
            },
            comparisons,
        );
        // DD_STATS_DEBUG=1: the released host's comparisons of every case judged wrongly.
        if std::env::var("DD_STATS_DEBUG").is_ok()
            && class.bad != (v.verdict == Attribution::Release)
        {
            for c in v.comparisons.iter().filter(|c| c.released_host) {
                eprintln!(
                    "{} {:?} {:?}: {} vs {}, p {} (Holm {:?}), {:?}, pre-existing {}, changed at {:?}, last gains before the release {:?}",
                    c.signal,
                    c.method,
                    c.test,
                    c.released,
                    c.control,
                    c.p_value,
                    c.p_adjusted,
                    c.class,
                    c.pre_existing,
                    c.change_at.map(|t| t.timestamp()),
                    c.early_gains.iter().rev().take(3).collect::<Vec<_>>()
                );
            }
            eprintln!("-- {}", class.name);
        }
        (v.verdict, v.recommendation)
    };
    [judge(SPLIT + early as f64 * WINDOW), judge(f64::INFINITY)]
}

/// Runs `cases` of every class and prints the table.
pub fn run(cases: usize) {
    println!(
        "| class | the release's doing | what | cases | `release` at 10 points | `rollback` at 10 | `release` at 20 points | `rollback` at 20 | goal (at 20) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut met = true;
    for (i, class) in CLASSES.iter().enumerate() {
        let mut rng = Rng(0x5eed + i as u64);
        let (mut release, mut rollback) = ([0, 0], [0, 0]);
        for _ in 0..cases {
            for (i, (v, r)) in verdicts(class, &mut rng, 10).into_iter().enumerate() {
                release[i] += usize::from(v == Attribution::Release);
                rollback[i] += usize::from(r == Recommendation::Rollback);
            }
        }
        let pct = |n: usize| 100.0 * n as f64 / cases as f64;
        let (goal, ok) = match class.bad {
            true => ("detection ≥ 95 %", pct(release[1]) >= 95.0),
            false => (
                "false rollback ≤ 0.5 %",
                pct(rollback[0]) <= 0.5 && pct(rollback[1]) <= 0.5,
            ),
        };
        met &= ok;
        println!(
            "| {} | {} | {} | {cases} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {goal}: {} |",
            class.name,
            if class.bad { "yes" } else { "no" },
            class.what,
            pct(release[0]),
            pct(rollback[0]),
            pct(release[1]),
            pct(rollback[1]),
            if ok { "met" } else { "**missed**" }
        );
    }
    println!("\nevery goal {}", if met { "met" } else { "NOT met" });
}
