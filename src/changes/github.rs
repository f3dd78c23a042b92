//! Reads a release's changes from the GitHub REST API (`GitHub.APIURL`: github.com, or
//! GitHub Enterprise at `https://HOST/api/v3`), read-only: only `GET` requests are built
//! here, the token goes in the `Authorization` header and nowhere else (not in a URL, a log
//! line or an error), and every wait for a rate limit ends before the deadline.
//!
//! What is read, for `previousTag...tag` of `owner/name`:
//! 1. the release of the tag (its page; PR numbers from its notes: `#123`, `/pull/123`);
//! 2. the comparison of the two tags (its commits, and its files for commits of no PR);
//! 3. the pull requests of each commit (`/commits/{sha}/pulls`);
//! 4. each pull request's files, with patches.
//!
//! Without a previous tag, the deployment's `commit` stands for the range; with neither, the
//! release notes alone name the pull requests.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use super::rank::{self, PatchBudget, RawFile, RawPr};
use crate::config::{GitHubConfig, Secret};
use crate::model::changes::{ChangedFile, Changes, PullRequest, Release};
use crate::model::evidence::EvidenceItem;
use crate::outside::{self, path_segment};

/// Why a request gave nothing.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("not found")]
    NotFound,
    #[error("rate limited until {0}")]
    RateLimited(String),
    #[error("{0}")]
    Failed(String),
    #[error("out of time (GitHub.TimeoutSeconds or the diagnosis deadline)")]
    Deadline,
}

/// The GitHub REST client.
#[derive(Clone)]
pub struct GitHub {
    api: String,
    token: Secret,
    http: reqwest::Client,
    config: GitHubConfig,
}

/// Pull request numbers in release notes: `#123` and `.../pull/123`.
pub fn pr_numbers(notes: &str) -> Vec<u64> {
    let mut found = BTreeSet::new();
    for marker in ["#", "/pull/"] {
        for (i, _) in notes.match_indices(marker) {
            let digits: String = notes[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<u64>() {
                if n > 0 {
                    found.insert(n);
                }
            }
        }
    }
    found.into_iter().collect()
}

impl GitHub {
    /// A client for this configuration and token. Fails only when no HTTP client can be
    /// built: one without the timeouts and the no-redirect policy must never be used.
    pub fn new(config: &GitHubConfig, token: &Secret) -> Result<Self, reqwest::Error> {
        Ok(Self {
            api: config.api_url.to_string(),
            token: token.clone(),
            http: crate::tls::client()
                .timeout(config.timeout.min(Duration::from_secs(30)))
                // A redirect could carry the Authorization header elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            config: config.clone(),
        })
    }

    /// One `GET`, waiting out rate limits while the deadline allows.
    async fn get(&self, path: &str, deadline: Instant) -> Result<Value, CallError> {
        loop {
            if Instant::now() >= deadline {
                return Err(CallError::Deadline);
            }
            let mut request = self
                .http
                .get(format!("{}{path}", self.api))
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .header(
                    "User-Agent",
                    concat!("deploy-diagnosis/", env!("CARGO_PKG_VERSION")),
                );
            if !self.token.is_empty() {
                request = request.bearer_auth(self.token.expose());
            }
            let response = tokio::time::timeout_at(deadline, request.send())
                .await
                .map_err(|_| CallError::Deadline)?
                .map_err(|e| {
                    // reqwest's message names the URL (no secret in it) and the cause.
                    CallError::Failed(format!("GitHub unreachable: {}", e.without_url()))
                })?;
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            // Rate limits (docs.github.com, "Troubleshooting the REST API"): 403 or 429 with
            // `retry-after` seconds, or with `x-ratelimit-remaining: 0` until the epoch
            // second `x-ratelimit-reset`.
            if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
                // Outside numbers: clamped before any arithmetic (`outside`).
                let now = chrono::Utc::now();
                let wait = if let Some(s) = header("retry-after") {
                    outside::retry_after(&s, now, outside::MAX_WAIT)
                } else if header("x-ratelimit-remaining").as_deref() == Some("0") {
                    header("x-ratelimit-reset")
                        .and_then(|r| outside::until_epoch(&r, now, outside::MAX_WAIT))
                        .map(|wait| wait + Duration::from_secs(1))
                } else if status == StatusCode::TOO_MANY_REQUESTS {
                    Some(Duration::from_secs(60))
                } else {
                    None
                };
                if let Some(wait) = wait {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if wait >= remaining {
                        let at = outside::later(now, wait);
                        return Err(CallError::RateLimited(at.to_rfc3339()));
                    }
                    tracing::info!(wait_s = wait.as_secs(), "GitHub rate limit; waiting");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            if status == StatusCode::NOT_FOUND {
                return Err(CallError::NotFound);
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let message = body["message"].as_str().unwrap_or("no message");
                return Err(CallError::Failed(format!(
                    "GitHub answered {status}: {message}"
                )));
            }
            return Ok(body);
        }
    }

    /// Reads the release's changes and ranks them against the evidence. Never fails: what
    /// could not be read is in `notes`.
    pub async fn changes(
        &self,
        release: &Release,
        evidence: &[EvidenceItem],
        deadline: Instant,
    ) -> Changes {
        let deadline = deadline.min(Instant::now() + self.config.timeout);
        let mut changes = Changes {
            repo: release.repo.to_string(),
            range: release.range(),
            read: true,
            ..Default::default()
        };
        let repo = format!(
            "/repos/{}/{}",
            path_segment(release.repo.owner()),
            path_segment(release.repo.name())
        );
        let mut stopped = false;
        let note = |changes: &mut Changes, what: &str, e: CallError| {
            let stop = !matches!(e, CallError::NotFound);
            changes.notes.push(match e {
                CallError::NotFound => format!("{what}: not found"),
                e => format!("{what}: {e}"),
            });
            stop
        };

        // 1. The release and the PRs its notes name.
        let mut numbers: Vec<u64> = Vec::new();
        if !release.tag.is_empty() {
            match self
                .get(
                    &format!("{repo}/releases/tags/{}", path_segment(&release.tag)),
                    deadline,
                )
                .await
            {
                Ok(r) => {
                    changes.release_url = r["html_url"].as_str().map(str::to_owned);
                    numbers = pr_numbers(r["body"].as_str().unwrap_or(""));
                }
                Err(e) => stopped |= note(&mut changes, &format!("release {}", release.tag), e),
            }
        }

        // 2. The commits of the range.
        let mut shas: Vec<String> = Vec::new();
        let mut compare_files: Vec<RawFile> = Vec::new();
        if !stopped && !release.previous_tag.is_empty() && !release.tag.is_empty() {
            let path = format!(
                "{repo}/compare/{}...{}?per_page=100",
                path_segment(&release.previous_tag),
                path_segment(&release.tag)
            );
            match self.get(&path, deadline).await {
                Ok(c) => {
                    changes.commits = c["total_commits"]
                        .as_u64()
                        .or_else(|| c["commits"].as_array().map(|a| a.len() as u64))
                        .unwrap_or(0) as u32;
                    shas = c["commits"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["sha"].as_str().map(str::to_owned))
                        .collect();
                    compare_files = files_of(&c["files"]);
                }
                Err(e) => {
                    let what = format!("compare {}", changes.range);
                    stopped |= note(&mut changes, &what, e)
                }
            }
        } else if !release.commit.is_empty() {
            shas.push(release.commit.clone());
            changes.commits = 1;
        }
        if shas.len() > self.config.max_commits.get() {
            changes.notes.push(format!(
                "{} commits in the range; the pull requests of the last {} were looked up (GitHub.MaxCommits)",
                shas.len(),
                self.config.max_commits.get()
            ));
            shas = shas.split_off(shas.len() - self.config.max_commits.get());
        }

        // 3. The PRs of those commits.
        let mut prs: Vec<PullRequest> = Vec::new();
        let mut direct: BTreeSet<String> = BTreeSet::new();
        for sha in &shas {
            if stopped {
                break;
            }
            match self
                .get(
                    &format!("{repo}/commits/{}/pulls", path_segment(sha)),
                    deadline,
                )
                .await
            {
                Ok(list) => {
                    let found = list.as_array().cloned().unwrap_or_default();
                    if found.is_empty() {
                        direct.insert(sha.clone());
                    }
                    for pr in found.iter().map(pull_request) {
                        if !prs.iter().any(|p| p.number == pr.number) {
                            prs.push(pr);
                        }
                    }
                }
                Err(e) => {
                    stopped |= note(&mut changes, &format!("pull requests of commit {sha}"), e)
                }
            }
        }
        for n in numbers {
            if stopped || prs.iter().any(|p| p.number == n) {
                continue;
            }
            match self.get(&format!("{repo}/pulls/{n}"), deadline).await {
                Ok(pr) => prs.push(pull_request(&pr)),
                Err(e) => stopped |= note(&mut changes, &format!("pull request #{n}"), e),
            }
        }
        if prs.len() > self.config.max_prs.get() {
            changes.notes.push(format!(
                "{} pull requests; the files of {} were read (GitHub.MaxPRs)",
                prs.len(),
                self.config.max_prs.get()
            ));
            prs.truncate(self.config.max_prs.get());
        }

        // 4. Each PR's files.
        let mut raw = Vec::new();
        for pr in prs {
            let files = if stopped {
                Vec::new()
            } else {
                match self
                    .get(
                        &format!("{repo}/pulls/{}/files?per_page=100", pr.number),
                        deadline,
                    )
                    .await
                {
                    Ok(list) => files_of(&list),
                    Err(e) => {
                        stopped |= note(&mut changes, &format!("files of #{}", pr.number), e);
                        Vec::new()
                    }
                }
            };
            raw.push(RawPr { pr, files });
        }
        // Files of the range that no PR changed: direct pushes.
        let other: Vec<RawFile> = if direct.is_empty() {
            Vec::new()
        } else {
            compare_files
                .into_iter()
                .filter(|f| {
                    !raw.iter()
                        .any(|pr| pr.files.iter().any(|g| g.file.path == f.file.path))
                })
                .collect()
        };
        if raw.is_empty() && other.is_empty() && changes.notes.is_empty() {
            changes
                .notes
                .push("no pull request or changed file found for the release".into());
        }
        rank::rank(
            &mut changes,
            raw,
            other,
            evidence,
            PatchBudget {
                total: self.config.max_patch_chars,
                per_file: self.config.max_file_patch_chars,
            },
        );
        changes
    }
}

fn pull_request(pr: &Value) -> PullRequest {
    PullRequest {
        number: pr["number"].as_u64().unwrap_or(0),
        title: pr["title"].as_str().unwrap_or("").to_owned(),
        author: pr["user"]["login"].as_str().unwrap_or("").to_owned(),
        url: pr["html_url"].as_str().unwrap_or("").to_owned(),
        ..Default::default()
    }
}

fn files_of(list: &Value) -> Vec<RawFile> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some(RawFile {
                file: ChangedFile {
                    path: f["filename"].as_str()?.to_owned(),
                    additions: f["additions"].as_u64().unwrap_or(0),
                    deletions: f["deletions"].as_u64().unwrap_or(0),
                    ..Default::default()
                },
                patch: f["patch"].as_str().map(str::to_owned),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_notes_name_their_pull_requests() {
        let notes = "## What's Changed\n* Cache products by @a in https://github.com/acme/shop/pull/42\n* Fix #7 and #7 again\n* Issue #0 is none";
        assert_eq!(pr_numbers(notes), vec![7, 42]);
    }
}
