//! Notifications of finished reports, as the durable outbox keeps them on the report:
//! one per sink and version, with a stable id the receiver can deduplicate on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A report was written.
    Completed,
    /// No report could be had.
    Failed,
}

impl Event {
    /// The envelope's `type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Event::Completed => "report.completed",
            Event::Failed => "report.failed",
        }
    }
}

/// The outbox's name for a rollback request, sent to a deployment's `rollbackPolicy.url`
/// rather than to a configured sink.
pub const ROLLBACK_SINK: &str = "rollback";

/// Where a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Given up: `Notify.MaxAttempts` spent, or the sink's configuration is wrong.
    Failed,
    /// The sink said it is gone (`410`); not tried again until a restart.
    Disabled,
    /// Recorded and not sent (a rollback request under `Release.AutoRollback: dry-run`).
    DryRun,
}

/// One notification of one version to one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Stable across attempts: `<report id>.<version>.<sink>`.
    pub id: String,
    /// The sink's `Name`.
    pub sink: String,
    /// What it tells.
    pub event: Event,
    /// The report version it tells of.
    pub version: u32,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When it is tried next (pending).
    pub next_at: DateTime<Utc>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the receiver accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Notification {
    /// A new notification of version `version` of report `report_id` to `sink`, due `now`.
    pub fn new(
        report_id: &str,
        version: u32,
        sink: &str,
        event: Event,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: format!("{report_id}.{version}.{sink}"),
            sink: sink.to_owned(),
            event,
            version,
            state: DeliveryState::Pending,
            attempts: 0,
            next_at: now,
            last_error: None,
            delivered_at: None,
        }
    }

    /// The rollback request of report `report_id` for the release `tag`, asked by version
    /// `version`: one per deployment and tag, its id the idempotency key the platform
    /// receives (`<report id>.rollback.<tag>`).
    pub fn rollback(
        report_id: &str,
        version: u32,
        tag: &str,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Self {
        let mut n = Self::new(report_id, version, ROLLBACK_SINK, Event::Completed, now);
        n.id = format!("{report_id}.{ROLLBACK_SINK}.{tag}");
        if dry_run {
            n.state = DeliveryState::DryRun;
        }
        n
    }

    /// Whether it is a rollback request (not a report's notification to a sink).
    pub fn is_rollback(&self) -> bool {
        self.sink == ROLLBACK_SINK
    }

    /// Whether it waits for an attempt.
    pub fn pending(&self) -> bool {
        self.state == DeliveryState::Pending
    }
}

/// When the earliest pending notification is due (`None`: nothing to deliver).
pub fn due(notifications: &[Notification]) -> Option<DateTime<Utc>> {
    notifications
        .iter()
        .filter(|n| n.pending())
        .map(|n| n.next_at)
        .min()
}

/// Notifications kept per sink: the newest versions' (a report diagnosed again and again
/// would otherwise carry one more per sink each time, rewritten whole at every delivery).
pub const KEPT_PER_SINK: usize = 3;

/// The notifications of a report that is diagnosed again as `version`: those still
/// pending of earlier versions are given up (the new version's ending is sent instead),
/// and only the newest [`KEPT_PER_SINK`] of each sink are kept.
pub fn superseded_by(notifications: &[Notification], version: u32) -> Vec<Notification> {
    let given_up = notifications.iter().cloned().map(|mut n| {
        // A rollback request stands whatever later versions say: the release it asks to
        // take back was judged bad once, and the platform deduplicates by its id.
        if n.pending() && n.version < version && !n.is_rollback() {
            n.state = DeliveryState::Failed;
            n.last_error = Some(format!(
                "superseded: version {} was re-diagnosed before this was delivered",
                n.version
            ));
        }
        n
    });
    compact(&given_up.collect::<Vec<_>>())
}

/// The newest [`KEPT_PER_SINK`] notifications of each sink (by version), in their order.
pub fn compact(notifications: &[Notification]) -> Vec<Notification> {
    notifications
        .iter()
        .filter(|n| {
            notifications
                .iter()
                .filter(|o| o.sink == n.sink && o.version > n.version)
                .count()
                < KEPT_PER_SINK
        })
        .cloned()
        .collect()
}

/// `stored` with `updates` applied: an update replaces the notification of its id, and
/// notifications added meanwhile (a newer version finished) are kept.
pub fn merge(stored: &[Notification], updates: &[Notification]) -> Vec<Notification> {
    let mut out: Vec<Notification> = stored
        .iter()
        .map(|s| {
            updates
                .iter()
                .find(|u| u.id == s.id)
                .cloned()
                .unwrap_or_else(|| s.clone())
        })
        .collect();
    for u in updates {
        if !out.iter().any(|o| o.id == u.id) {
            out.push(u.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_replace_by_id_and_keep_what_was_added_meanwhile() {
        let now = Utc::now();
        let a = Notification::new("r1", 1, "ops", Event::Completed, now);
        let b = Notification::new("r1", 2, "ops", Event::Failed, now);
        let mut delivered = a.clone();
        delivered.state = DeliveryState::Delivered;
        let merged = merge(&[a.clone(), b.clone()], &[delivered.clone()]);
        assert_eq!(merged, vec![delivered.clone(), b.clone()]);
        assert_eq!(due(&merged), Some(now));
        assert_eq!(due(&[delivered]), None);
        assert_eq!(a.id, "r1.1.ops");
    }

    #[test]
    fn a_report_diagnosed_again_keeps_the_newest_notifications_of_each_sink() {
        let now = Utc::now();
        let mut all = Vec::new();
        for version in 1..=10 {
            for sink in ["ops", "chat"] {
                let mut n = Notification::new("r1", version, sink, Event::Failed, now);
                if version < 10 {
                    n.state = DeliveryState::Delivered;
                }
                all.push(n);
            }
        }
        let kept = superseded_by(&all, 11);
        assert_eq!(kept.len(), 2 * KEPT_PER_SINK);
        assert!(kept.iter().all(|n| n.version >= 8), "{kept:#?}");
        let last = kept.iter().find(|n| n.version == 10).unwrap();
        assert_eq!(
            last.state,
            DeliveryState::Failed,
            "the pending one is given up"
        );
        assert!(last
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("superseded"));
        assert_eq!(due(&kept), None, "nothing left for the outbox to claim");
    }
}
