//! Change evidence: what a release changed (its pull requests and their files), and which
//! of those changes are suspects for the measured failure. The service reads it itself from
//! the GitHub REST API before the runner starts, so every runner and model sees the same
//! diff excerpts with no GitHub tool at all. It returns what it read; the worker stores it.
//!
//! - [`admit`]: which release, and whether the allowlist lets it be read.
//! - [`github`]: the GitHub REST client, read-only.
//! - [`rank`]: suspects, ranked against the evidence.

pub mod admit;
pub mod github;
pub mod rank;

use tokio::time::Instant;

use crate::config::Config;
use crate::model::alert::Alert;
use crate::model::changes::{Changes, Release};
use crate::model::deployment::Deployment;
use crate::model::evidence::EvidenceItem;
use github::GitHub;

/// Change evidence for diagnoses: which release a diagnosis is about, whether it may be
/// read, and reading it.
#[derive(Clone)]
pub struct ChangeSource {
    github: GitHub,
    allowlist: Vec<String>,
    has_token: bool,
}

impl ChangeSource {
    /// The change source of this configuration; fails when its HTTP client cannot be built.
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            github: GitHub::new(&config.github, &config.ai.github_token)?,
            allowlist: config.github.repos.clone(),
            has_token: !config.ai.github_token.is_empty(),
        })
    }

    /// The release of a diagnosis when it may be read; otherwise the record saying why it
    /// was not (stored on the report). `None` when nothing names a release.
    pub fn admit(
        &self,
        deployment: Option<&Deployment>,
        alert: &Alert,
    ) -> Option<Result<Release, Changes>> {
        let release = match admit::release_of(deployment, alert)? {
            Ok(release) => release,
            Err(why) => {
                return Some(Err(Changes {
                    read: false,
                    notes: vec![why],
                    ..Default::default()
                }))
            }
        };
        if let Some(why) = admit::refused(&self.allowlist, &release.repo, release.source) {
            return Some(Err(release.not_read(why)));
        }
        if !self.has_token {
            return Some(Err(release.not_read(
                "AI.GitHubToken is empty: the release's changes were not read".into(),
            )));
        }
        Some(Ok(release))
    }

    /// Reads an admitted release's changes, ranked against the evidence, by `deadline`.
    pub async fn read(
        &self,
        release: &Release,
        evidence: &[EvidenceItem],
        deadline: Instant,
    ) -> Changes {
        self.github.changes(release, evidence, deadline).await
    }
}
