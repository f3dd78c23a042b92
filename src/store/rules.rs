//! The rules both stores follow, written once: how a further alert joins a report, what a
//! re-diagnosis resets, and how a version's answer and runner are stored as text. Each store applies them inside one atomic change of its
//! own (a SQLite transaction; a MongoDB compare-and-swap on the document's revision), and
//! the store contract test holds both to them.

use chrono::{DateTime, Utc};

use crate::model::deployment::Deployment;
use crate::model::notify;
use crate::model::report::{
    RelatedAlert, Report, ReportBody, ReportStatus, RunnerKind, MAX_RELATED_ALERTS,
};

/// What a further alert does to a report's list of related alerts.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// The same alert (by [`crate::model::alert::Alert::identity`]) is the report's own
    /// or one of the related alerts it keeps: nothing changes.
    Duplicate,
    /// The list with the alert added, the oldest dropped past [`MAX_RELATED_ALERTS`].
    Added(Vec<RelatedAlert>),
}

/// Adds `related` to the report's related alerts unless it is there already. The
/// report's own alert is always remembered, however many related alerts came since; a
/// related alert dropped from the list is forgotten, and counts as new if sent again.
pub fn merge_related(report: &Report, related: RelatedAlert) -> Merge {
    let identity = related.alert.identity();
    if report.alert.identity() == identity
        || report
            .related_alerts
            .iter()
            .any(|r| r.alert.identity() == identity)
    {
        return Merge::Duplicate;
    }
    let mut all = report.related_alerts.clone();
    all.push(related);
    let excess = all.len().saturating_sub(MAX_RELATED_ALERTS);
    all.drain(..excess);
    Merge::Added(all)
}

/// The report a re-diagnosis makes of a finished one: the next version, `generating`,
/// with everything of the last diagnosis cleared (its answer, failure, evidence, changes,
/// usage, feedback, resolution and leases). What stays: the report's identity, its alert
/// and related alerts, when it was created, and the deployment snapshot, unless the
/// registry's entry read for this restart (`registered`) replaces it.
pub fn restart(report: &Report, now: DateTime<Utc>, registered: Option<&Deployment>) -> Report {
    Report {
        id: report.id.clone(),
        deployment_id: report.deployment_id.clone(),
        alert: report.alert.clone(),
        related_alerts: report.related_alerts.clone(),
        deployment: registered.cloned().or_else(|| report.deployment.clone()),
        notifications: notify::superseded_by(&report.notifications, report.version + 1),
        created_time: report.created_time,
        version: report.version + 1,
        updated_time: now,
        ..Report::new(report.deployment_id.clone(), report.alert.clone(), now)
    }
}

/// Whether a report may be re-diagnosed: not while a diagnosis is queued or running.
pub fn may_restart(report: &Report) -> bool {
    report.status() != ReportStatus::Generating
}

/// When a failed report's last diagnosis ended, if that is after `failed_before` (an
/// automatic re-run waits until then); `None` when it may run again now.
pub fn too_soon(report: &Report, failed_before: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let before = failed_before?;
    (report.status() == ReportStatus::Failed && report.updated_time > before)
        .then_some(report.updated_time)
}

/// The oldest version a history of at most `max_history` versions keeps once `version`
/// joins it; the versions before it are dropped.
pub fn oldest_kept(version: u32, max_history: u32) -> u32 {
    version.saturating_sub(max_history.max(1)) + 1
}

/// The design's `content` text of a version: the answer's JSON, or empty when it has none.
pub fn content_text(body: Option<&ReportBody>) -> Result<String, String> {
    body.map_or(Ok(String::new()), |b| {
        serde_json::to_string(b).map_err(|e| e.to_string())
    })
}

/// The answer in a stored `content` text: required when the version is completed, absent
/// otherwise; `Err` says what is wrong with it.
pub fn body_of(status: ReportStatus, content: &str) -> Result<Option<ReportBody>, String> {
    if content.is_empty() {
        if status == ReportStatus::Completed {
            return Err("completed, but content is empty".into());
        }
        return Ok(None);
    }
    serde_json::from_str(content)
        .map(Some)
        .map_err(|e| format!("content: {e}"))
}

/// A stored runner name, read back; `Err` for one this service does not know.
pub fn runner_of(stored: Option<&str>) -> Result<Option<RunnerKind>, String> {
    stored
        .map(|r| RunnerKind::parse(r).ok_or_else(|| format!("unknown runner {r:?}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::alert::{Alert, AlertTime, DeploymentId};
    use crate::model::report::{Ending, ReportState};

    fn alert(n: usize) -> Alert {
        Alert {
            key: format!("fp-{n}"),
            alertname: "X".into(),
            starts_at: AlertTime::parse("2026-11-25T10:00:00Z"),
            ..Alert::default()
        }
    }

    #[test]
    fn the_reports_own_alert_stays_a_duplicate_past_the_related_limit() {
        let now = Utc::now();
        let mut report = Report::new(DeploymentId::parse("d").unwrap(), alert(0), now);
        for n in 1..=MAX_RELATED_ALERTS + 5 {
            let related = RelatedAlert {
                alert: alert(n),
                received_at: now,
            };
            match merge_related(&report, related) {
                Merge::Added(all) => report.related_alerts = all,
                Merge::Duplicate => panic!("alert {n} is new"),
            }
        }
        assert_eq!(report.related_alerts.len(), MAX_RELATED_ALERTS);
        let again = |n| RelatedAlert {
            alert: alert(n),
            received_at: now,
        };
        assert_eq!(merge_related(&report, again(0)), Merge::Duplicate);
        assert_eq!(
            merge_related(&report, again(MAX_RELATED_ALERTS + 5)),
            Merge::Duplicate
        );
        assert!(
            matches!(merge_related(&report, again(1)), Merge::Added(_)),
            "a dropped related alert is forgotten"
        );
    }

    #[test]
    fn a_restart_clears_the_last_diagnosis_and_keeps_the_alerts() {
        let now = Utc::now();
        let mut report = Report::new(DeploymentId::parse("d").unwrap(), alert(0), now);
        report.state = ReportState::Ended(Ending::Failed {
            error: "boom".into(),
        });
        report.evidence_error = Some("down".into());
        report.attempts = 3;
        report.related_alerts.push(RelatedAlert {
            alert: alert(1),
            received_at: now,
        });
        let later = now + chrono::Duration::seconds(5);
        let next = restart(&report, later, None);
        assert_eq!(next.state, ReportState::Generating);
        assert_eq!((next.version, next.attempts), (2, 0));
        assert_eq!(next.evidence_error, None);
        assert_eq!(next.related_alerts, report.related_alerts);
        assert_eq!((next.created_time, next.updated_time), (now, later));
        assert_eq!(next.id, report.id);
    }
}
