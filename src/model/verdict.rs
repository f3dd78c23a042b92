//! The release verdict as stored on a report: was it this release, and what to do about
//! it, with the comparisons that say so.

use serde::{Deserialize, Serialize};

/// Whether the release caused what the alert saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// The released hosts went bad against their controls, or stepped at the release.
    Release,
    /// The controls moved the same way, the anomaly was there before the release, or the
    /// released hosts are healthy.
    NotRelease,
    /// The numbers do not say.
    Inconclusive,
}

impl Attribution {
    /// Every value, for filters and metrics.
    pub const ALL: [Attribution; 3] = [
        Attribution::Release,
        Attribution::NotRelease,
        Attribution::Inconclusive,
    ];

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Release => "release",
            Attribution::NotRelease => "not_release",
            Attribution::Inconclusive => "inconclusive",
        }
    }

    /// Parses the API's name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// In the design's language.
    pub fn zh(self) -> &'static str {
        match self {
            Attribution::Release => "本次发布导致",
            Attribution::NotRelease => "非本次发布导致",
            Attribution::Inconclusive => "无法判定",
        }
    }
}

/// What the deploy pipeline should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    /// Take the release back.
    Rollback,
    /// Stop the rollout where it is and look.
    Hold,
    /// Go on.
    Proceed,
}

impl Recommendation {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::Rollback => "rollback",
            Recommendation::Hold => "hold",
            Recommendation::Proceed => "proceed",
        }
    }

    /// In the design's language.
    pub fn zh(self) -> &'static str {
        match self {
            Recommendation::Rollback => "回滚",
            Recommendation::Hold => "暂停发布",
            Recommendation::Proceed => "继续发布",
        }
    }
}

/// How a signal of the released hosts compared (Kayenta's classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// No significant difference.
    Pass,
    /// Significantly higher.
    High,
    /// Significantly lower.
    Low,
}

/// What a comparison compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A released host against the hosts that did not get the release, after it.
    Canary,
    /// A host after the release against itself before it.
    BeforeAfter,
}

/// The test a comparison made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Mann-Whitney on the levels (non-overlapping points), sized by the Hodges–Lehmann
    /// shift.
    #[default]
    Rank,
    /// Mann-Whitney on the distances from the pooled median: the spread blew up (the
    /// 90th percentile moved though the medians agree).
    Spread,
    /// Failed requests against all requests, two proportions (Fisher's exact test when a
    /// count is small).
    Proportions,
}

/// One comparison of one signal of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The signal (`errors %`, `CPU busy %`).
    pub signal: String,
    /// The host compared.
    pub host: String,
    /// Whether the host runs the release (else it is a control, compared with itself).
    pub released_host: bool,
    /// How.
    pub method: Method,
    /// The PromQL of the host compared.
    pub query: String,
    /// The unit of the medians.
    pub unit: String,
    /// The compared host's median (after the release).
    pub released: f64,
    /// The other side's median: the controls', or the host's own before the release.
    pub control: f64,
    /// Points on each side.
    pub points: [usize; 2],
    /// Two-sided Mann-Whitney p-value.
    pub p_value: f64,
    /// The difference of medians in units of the other side's spread.
    pub effect: f64,
    /// How it compared.
    pub class: Class,
    /// Whether that class is the bad direction of this signal.
    pub worse: bool,
    /// Whether it is one of the application's RED signals (else a host signal).
    #[serde(default)]
    pub red: bool,
    /// The absolute limit the host's median broke, as text (`errorRateMaxPercent 5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaks: Option<String>,
    /// The same change was already under way before the release.
    #[serde(default)]
    pub pre_existing: bool,
    /// The test made.
    #[serde(default)]
    pub test: Test,
    /// The p-value after Holm's correction over the released hosts' comparisons of one
    /// verdict (what the class rests on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_adjusted: Option<f64>,
    /// The Hodges–Lehmann shift of the compared host against the other side, in `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    /// The 90th percentiles of the two sides (the spread test's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<[f64; 2]>,
    /// Requests on each side (the proportions test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<[u64; 2]>,
    /// Failed requests on each side (the proportions test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<[u64; 2]>,
    /// When the host's series most likely changed, when it moved the bad way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_at: Option<chrono::DateTime<chrono::Utc>>,
    /// That change was more than a rate window before the host's release (so the host was
    /// already changing: none of its findings is the release's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed_before: bool,
    /// Working data of the verdict, not stored: at each split more than a rate window
    /// before the release after which the series is worse, `(unix seconds, gain)`, how
    /// much better it explains the series than a change at the release (χ²-like; the
    /// gains of one host's signals add up).
    #[serde(skip)]
    pub early_gains: Vec<(f64, f64)>,
}

/// The release verdict on a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseVerdict {
    /// Was it this release.
    pub verdict: Attribution,
    /// What to do.
    pub recommendation: Recommendation,
    /// 0 to 1.
    pub confidence: f64,
    /// Why, with numbers, strongest first.
    pub reasons: Vec<String>,
    /// The comparisons it rests on, the worst first.
    pub comparisons: Vec<Comparison>,
    /// What the model said of it, when an AI wrote the report (the service's verdict is
    /// kept either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelOpinion>,
}

/// The model's answer to the service's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelOpinion {
    /// Whether it agreed.
    pub agrees: bool,
    /// Its line, as written.
    pub says: String,
}

/// The windows a release is measured over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseWindows {
    /// Start of the baseline: `Evidence.BaselineMinutes` before the first release.
    pub baseline_from: chrono::DateTime<chrono::Utc>,
    /// The first release: the end of the baseline.
    pub release: chrono::DateTime<chrono::Utc>,
    /// Start of the after window: the release, or `Release.WatchMinutes` before now for an
    /// older one.
    pub after_from: chrono::DateTime<chrono::Utc>,
    /// When it was measured.
    pub to: chrono::DateTime<chrono::Utc>,
}

/// A release measured on demand (`GET /deployments/{id}/analysis`), for a deploy tool that
/// gates its rollout on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The deployment.
    pub deployment_id: String,
    /// `false` only when the recommendation is *rollback*: what Argo Rollouts'
    /// `successCondition` and a CI job read.
    pub ok: bool,
    /// The verdict, its recommendation, confidence, reasons and comparisons, as a report's.
    #[serde(flatten)]
    pub release: ReleaseVerdict,
    /// What was measured.
    pub windows: ReleaseWindows,
    /// When.
    pub measured_at: chrono::DateTime<chrono::Utc>,
    /// Whether this answer is a recent measurement's (`Release.AnalysisCacheSeconds`).
    pub cached: bool,
}
