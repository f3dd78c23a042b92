//! The release analysed on demand: what a deploy tool polls during a rollout
//! (`GET /deployments/{id}/analysis`), with no alert and no report. The measurement is the
//! report's ([`Judge::judge`]); a recent one is answered again for
//! `Release.AnalysisCacheSeconds`, and callers that ask at once share one measurement, so a
//! tool that polls every few seconds costs one round of queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::measure::Judge;
use crate::model::deployment::Deployment;
use crate::model::verdict::{Analysis, Recommendation};

/// Deployments whose last measurement is kept (the oldest idle ones go first).
const MAX_ENTRIES: usize = 1024;

/// One deployment's last measurement, and the registration it measured.
struct Entry {
    at: Instant,
    registration: String,
    analysis: Analysis,
}

/// Analyses releases, a recent measurement answered again.
pub struct Analyst {
    judge: Judge,
    fresh: Duration,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Entry>>>>>,
}

impl Analyst {
    /// An analyst measuring with `judge`, a measurement answered again for `fresh`.
    pub fn new(judge: Judge, fresh: Duration) -> Self {
        Self {
            judge,
            fresh,
            entries: Mutex::default(),
        }
    }

    /// The release of `deployment` at `now`, or the measurement of less than
    /// `Release.AnalysisCacheSeconds` ago of the same registration.
    pub async fn analyse(&self, deployment: &Deployment, now: DateTime<Utc>) -> Analysis {
        let id = deployment.deployment_id.to_string();
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= MAX_ENTRIES {
                // Only slots nobody holds or waits on.
                entries.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
            Arc::clone(entries.entry(id.clone()).or_default())
        };
        // Callers of one deployment wait here for the measurement under way.
        let mut entry = slot.lock().await;
        let registration = serde_json::to_string(deployment).unwrap_or_default();
        if let Some(e) = entry.as_ref() {
            if e.at.elapsed() < self.fresh && e.registration == registration {
                return Analysis {
                    cached: true,
                    ..e.analysis.clone()
                };
            }
        }
        let release = self.judge.judge(Some(deployment), now).await;
        let analysis = Analysis {
            deployment_id: id,
            ok: release.recommendation != Recommendation::Rollback,
            windows: self.judge.windows(deployment, now),
            release,
            measured_at: now,
            cached: false,
        };
        *entry = Some(Entry {
            at: Instant::now(),
            registration,
            analysis: analysis.clone(),
        });
        analysis
    }
}
