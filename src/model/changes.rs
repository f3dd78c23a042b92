//! What a release changed (its pull requests and their files, ranked as suspects for the
//! measured failure), as stored on a report; and the release a diagnosis reads.

use serde::{Deserialize, Serialize};

use super::deployment::RepoName;

/// The release whose changes are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The repository.
    pub repo: RepoName,
    /// The release tag.
    pub tag: String,
    /// The tag before it (may be empty).
    pub previous_tag: String,
    /// The released commit (may be empty).
    pub commit: String,
    /// Who named the repository.
    pub source: RepoSource,
}

impl Release {
    /// `previousTag...tag`, the tag, or the commit.
    pub fn range(&self) -> String {
        match (self.previous_tag.is_empty(), self.tag.is_empty()) {
            (false, false) => format!("{}...{}", self.previous_tag, self.tag),
            (_, false) => self.tag.clone(),
            _ => self.commit.clone(),
        }
    }

    /// A record of a release that was not read, saying why.
    pub fn not_read(&self, why: String) -> Changes {
        Changes {
            repo: self.repo.to_string(),
            range: self.range(),
            read: false,
            notes: vec![why],
            ..Default::default()
        }
    }
}

/// Where a repository name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoSource {
    /// A registered deployment.
    Registry,
    /// An alert's labels.
    AlertLabels,
}

/// What a release changed, as stored on the report (`changes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// `owner/name` (empty when no release could be named: `notes` says why).
    pub repo: String,
    /// `previousTag...tag`, the tag alone, or the commit.
    pub range: String,
    /// Whether GitHub was read (false: not allowed, or nothing to read; `notes` says why).
    pub read: bool,
    /// The release page, when the tag has a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_url: Option<String>,
    /// Commits in the range.
    #[serde(default)]
    pub commits: u32,
    /// Pull requests, most suspect first.
    #[serde(default)]
    pub prs: Vec<PullRequest>,
    /// Files changed by commits of no pull request, most suspect first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_files: Vec<ChangedFile>,
    /// What is missing and why (not allowed, rate limited, not found, budgets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One pull request of the release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    /// Its number.
    pub number: u64,
    /// Its title (outside text: shown to the model as data).
    pub title: String,
    /// Its author's login.
    pub author: String,
    /// Its page.
    pub url: String,
    /// Its highest file suspicion.
    #[serde(default)]
    pub suspect: f64,
    /// Changed files, most suspect first.
    #[serde(default)]
    pub files: Vec<ChangedFile>,
}

/// One changed file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangedFile {
    /// Its path.
    pub path: String,
    /// Lines added.
    pub additions: u64,
    /// Lines deleted.
    pub deletions: u64,
    /// How suspect it is for the measured failure: 0 when nothing matched.
    #[serde(default)]
    pub suspect: f64,
    /// What matched: `memory: cache, pool`, `config limit: max_connections`.
    #[serde(default)]
    pub why: Vec<String>,
    /// An excerpt of its patch, within `GitHub.MaxPatchChars` (absent: over the budget,
    /// or GitHub gave none, as it does for binary and very large files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

impl Changes {
    /// The most suspect files (with their PR number, if any), best first.
    pub fn suspects(&self, n: usize) -> Vec<(Option<&PullRequest>, &ChangedFile)> {
        let mut all: Vec<(Option<&PullRequest>, &ChangedFile)> = self
            .prs
            .iter()
            .flat_map(|pr| pr.files.iter().map(move |f| (Some(pr), f)))
            .chain(self.other_files.iter().map(|f| (None, f)))
            .filter(|(_, f)| f.suspect > 0.0)
            .collect();
        all.sort_by(|a, b| b.1.suspect.total_cmp(&a.1.suspect));
        all.truncate(n);
        all
    }
}
