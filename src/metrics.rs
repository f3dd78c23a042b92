//! `/metrics`: Prometheus text format. Counters are kept in memory; report counts and the
//! queue depth are read from the store at scrape time, so they survive restarts.

use std::collections::HashMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::report::{FailureKind, ReportStatus, Usage};
use crate::model::verdict::ReleaseVerdict;

type Labels = Vec<(&'static str, String)>;

/// The docker exec that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStep {
    /// The runner's own exec.
    Exec,
    /// The exec that stops a run at its deadline.
    Kill,
}

impl ExecStep {
    fn as_str(self) -> &'static str {
        match self {
            ExecStep::Exec => "exec",
            ExecStep::Kill => "kill",
        }
    }
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    alerts: Family<Labels, Counter>,
    diagnoses: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    runner_failures: Family<Labels, Counter>,
    reports: Family<Labels, Gauge>,
    queue_depth: Gauge,
    container_starts: Family<Labels, Counter>,
    exec_failures: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    steps: Counter,
    tool_calls: Family<Labels, Counter>,
    feedback: Family<Labels, Counter>,
    changes: Family<Labels, Counter>,
    limits: Family<Labels, Counter>,
    verdicts: Family<Labels, Counter>,
    notifications: Family<Labels, Counter>,
    task_panics: Family<Labels, Counter>,
    history_dropped: Counter,
    answer_repairs: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("deploy_diagnosis");
        let alerts = Family::<Labels, Counter>::default();
        registry.register(
            "alerts_received",
            "Alerts received, by what was done with them",
            alerts.clone(),
        );
        let diagnoses = Family::<Labels, Counter>::default();
        registry.register(
            "diagnoses",
            "Diagnoses finished, by final status",
            diagnoses.clone(),
        );
        let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0,
            ])
        });
        registry.register(
            "diagnosis_duration_seconds",
            "Time a diagnosis took",
            duration.clone(),
        );
        let runner_failures = Family::<Labels, Counter>::default();
        registry.register(
            "runner_failures",
            "Failed diagnoses, by reason",
            runner_failures.clone(),
        );
        let reports = Family::<Labels, Gauge>::default();
        registry.register("reports", "Stored reports, by status", reports.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Generating reports no worker holds",
            queue_depth.clone(),
        );
        let container_starts = Family::<Labels, Counter>::default();
        registry.register(
            "container_starts",
            "Runner container (re)starts by the docker runner: created or started",
            container_starts.clone(),
        );
        let exec_failures = Family::<Labels, Counter>::default();
        registry.register(
            "exec_failures",
            "Docker exec calls that failed, by step",
            exec_failures.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        registry.register(
            "llm_tokens",
            "LLM tokens of finished diagnoses, by direction",
            tokens.clone(),
        );
        let steps = Counter::default();
        registry.register(
            "agent_steps",
            "Model turns of finished diagnoses",
            steps.clone(),
        );
        let tool_calls = Family::<Labels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls of finished diagnoses; cached=true were answered from an identical earlier call",
            tool_calls.clone(),
        );
        let notifications = Family::<Labels, Counter>::default();
        registry.register(
            "notifications",
            "Notification attempts, by sink and outcome (delivered, retry, failed, disabled)",
            notifications.clone(),
        );
        let answer_repairs = Family::<Labels, Counter>::default();
        registry.register(
            "answer_repairs",
            "Repairs the model's answer needed to be read as a report, by kind",
            answer_repairs.clone(),
        );
        let history_dropped = Counter::default();
        registry.register(
            "history_dropped",
            "Report versions dropped from history past Report.MaxHistory",
            history_dropped.clone(),
        );
        let task_panics = Family::<Labels, Counter>::default();
        registry.register(
            "task_panics",
            "Panics caught in a pool's task (the task goes on or is started again), by pool",
            task_panics.clone(),
        );
        let verdicts = Family::<Labels, Counter>::default();
        registry.register(
            "release_verdicts",
            "Release verdicts of finished diagnoses, by verdict and recommendation",
            verdicts.clone(),
        );
        let feedback = Family::<Labels, Counter>::default();
        registry.register(
            "feedback",
            "Feedback on reports, by score (1-5), whether the root cause was right, and the engine that wrote the report",
            feedback.clone(),
        );
        let changes = Family::<Labels, Counter>::default();
        registry.register(
            "change_evidence",
            "Release change evidence per diagnosis: read (complete), partial (rate limited, not found, budgets; see the report's changes.notes) or not_read (not admitted, no token)",
            changes.clone(),
        );
        let limits = Family::<Labels, Counter>::default();
        registry.register(
            "limit_hits",
            "Times a cost or input limit was hit: diagnoses_per_hour, tokens_per_day (the diagnosis ran without AI), max_queue (intake answered 503), tool_calls_per_turn (calls not run), tool_result_budget (results withheld)",
            limits.clone(),
        );
        Self {
            limits,
            changes,
            feedback,
            tokens,
            steps,
            tool_calls,
            registry,
            alerts,
            diagnoses,
            duration,
            runner_failures,
            reports,
            queue_depth,
            container_starts,
            exec_failures,
            verdicts,
            notifications,
            task_panics,
            history_dropped,
            answer_repairs,
        }
    }

    /// Counts one kind of repair of a model's answer.
    pub fn answer_repair(&self, kind: &'static str) {
        self.answer_repairs
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// Counts versions dropped from a report's history.
    pub fn history_dropped(&self, versions: u64) {
        self.history_dropped.inc_by(versions);
    }

    /// Counts a panic caught in a task of `pool`.
    pub fn task_panic(&self, pool: &'static str) {
        self.task_panics
            .get_or_create(&vec![("pool", pool.to_owned())])
            .inc();
    }

    /// Counts one notification attempt.
    pub fn notification(&self, sink: &str, outcome: &str) {
        self.notifications
            .get_or_create(&vec![
                ("sink", sink.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Counts the release verdict of a finished diagnosis.
    pub fn release_verdict(&self, release: &ReleaseVerdict) {
        self.verdicts
            .get_or_create(&vec![
                ("verdict", release.verdict.as_str().to_owned()),
                ("recommendation", release.recommendation.as_str().to_owned()),
            ])
            .inc();
    }

    /// Counts one alert by outcome (`started`, `exists`, `not_firing`, ...).
    pub fn alert(&self, outcome: &str) {
        self.alerts
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Counts `n` hits of a limit.
    pub fn limit_hit(&self, limit: &str, n: u64) {
        if n > 0 {
            self.limits
                .get_or_create(&vec![("limit", limit.to_owned())])
                .inc_by(n);
        }
    }

    /// Records one diagnosis's change evidence.
    pub fn change_evidence(&self, changes: &crate::model::changes::Changes) {
        let outcome = match (changes.read, changes.notes.is_empty()) {
            (false, _) => "not_read",
            (true, true) => "read",
            (true, false) => "partial",
        };
        self.changes
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Records a finished diagnosis.
    pub fn diagnosis(&self, status: ReportStatus, seconds: f64, failure: Option<FailureKind>) {
        let label = vec![("status", status.as_str().to_owned())];
        self.diagnoses.get_or_create(&label).inc();
        self.duration.get_or_create(&label).observe(seconds);
        if let Some(kind) = failure {
            self.runner_failures
                .get_or_create(&vec![("reason", kind.as_str().to_owned())])
                .inc();
        }
    }

    /// Adds a finished diagnosis's tokens, steps and tool calls.
    pub fn usage(&self, usage: &Usage) {
        self.tokens
            .get_or_create(&vec![("direction", "input".to_owned())])
            .inc_by(usage.input_tokens);
        self.tokens
            .get_or_create(&vec![("direction", "output".to_owned())])
            .inc_by(usage.output_tokens);
        self.steps.inc_by(usage.steps);
        self.tool_calls
            .get_or_create(&vec![("cached", "false".to_owned())])
            .inc_by(usage.tool_calls);
        self.tool_calls
            .get_or_create(&vec![("cached", "true".to_owned())])
            .inc_by(usage.cached_tool_calls);
        self.limit_hit("tool_calls_per_turn", usage.refused_tool_calls);
        self.limit_hit("tool_result_budget", usage.withheld_tool_results);
    }

    /// Counts one piece of feedback on a report written by `engine` (`ai`, `evidence`).
    pub fn feedback(&self, feedback: &crate::model::report::Feedback, engine: &str) {
        self.feedback
            .get_or_create(&vec![
                ("score", feedback.score.to_string()),
                (
                    "root_cause_correct",
                    feedback.root_cause_correct.to_string(),
                ),
                ("engine", engine.to_owned()),
            ])
            .inc();
    }

    /// Counts a container creation or start (`created`, `started`).
    pub fn container_start(&self, action: &str) {
        self.container_starts
            .get_or_create(&vec![("action", action.to_owned())])
            .inc();
    }

    /// Counts a failed docker exec.
    pub fn exec_failure(&self, step: ExecStep) {
        self.exec_failures
            .get_or_create(&vec![("step", step.as_str().to_owned())])
            .inc();
    }

    /// Renders everything, with store-derived gauges set from these counts.
    pub fn render(&self, counts: &HashMap<ReportStatus, u64>, queue_depth: u64) -> String {
        for status in ReportStatus::ALL {
            let n = counts.get(&status).copied().unwrap_or(0);
            self.reports
                .get_or_create(&vec![("status", status.as_str().to_owned())])
                .set(n as i64);
        }
        self.queue_depth.set(queue_depth as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
