//! Which release a diagnosis reads, and whether it may: the registered deployment's
//! repository, else the alert labels'; only repositories the allowlist (`GitHub.Repos`)
//! admits, and with an empty allowlist only those a registered deployment names (anyone
//! who can post an alert could otherwise pick what the service reads).

use crate::model::alert::Alert;
use crate::model::changes::{Release, RepoSource};
use crate::model::deployment::{Deployment, RepoName};

/// The release of a diagnosis: the registered deployment's, else the alert labels'.
/// `None` when neither names a repository and a tag or commit; `Err` with a note when
/// the repository cannot be used.
pub fn release_of(
    deployment: Option<&Deployment>,
    alert: &Alert,
) -> Option<Result<Release, String>> {
    let (address, tag, previous_tag, commit, source) = match deployment {
        Some(d) if !d.repo_address.is_empty() => (
            d.repo_address.as_str(),
            d.tag.as_str(),
            d.previous_tag.as_str(),
            d.commit.as_str(),
            RepoSource::Registry,
        ),
        _ if !alert.repo_address.is_empty() => (
            alert.repo_address.as_str(),
            alert.tag.as_str(),
            "",
            "",
            RepoSource::AlertLabels,
        ),
        _ => return None,
    };
    if tag.is_empty() && commit.is_empty() {
        return None;
    }
    Some(
        RepoName::parse(address)
            .map(|repo| Release {
                repo,
                tag: tag.to_owned(),
                previous_tag: previous_tag.to_owned(),
                commit: commit.to_owned(),
                source,
            })
            .ok_or_else(|| {
                format!("repoAddress {address:?} is not owner/name or a repository URL")
            }),
    )
}

/// Whether `repo` (`owner/name`) matches an allowlist entry; `*` matches any run of
/// characters, case is ignored (GitHub's names are case-insensitive).
pub fn glob_matches(pattern: &str, repo: &str) -> bool {
    let (p, r) = (pattern.to_ascii_lowercase(), repo.to_ascii_lowercase());
    let (p, r) = (p.as_bytes(), r.as_bytes());
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut pi, mut ri, mut star, mut mark) = (0, 0, None, 0);
    while ri < r.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ri;
            pi += 1;
        } else if pi < p.len() && p[pi] == r[ri] {
            pi += 1;
            ri += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ri = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Why a repository may not be read, or `None` when it may.
pub fn refused(allowlist: &[String], repo: &RepoName, source: RepoSource) -> Option<String> {
    if allowlist.is_empty() {
        return (source == RepoSource::AlertLabels).then(|| {
            format!(
                "repository {repo} was not read: it is named only by alert labels, and with an \
                 empty GitHub.Repos only repositories of registered deployments are read"
            )
        });
    }
    (!allowlist.iter().any(|p| glob_matches(p, &repo.to_string())))
        .then(|| format!("repository {repo} was not read: it is not in the GitHub.Repos allowlist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_globs_and_the_empty_allowlist() {
        let repo = |s: &str| RepoName::parse(s).unwrap();
        assert!(glob_matches("acme/*", "ACME/shop"));
        assert!(glob_matches("*/shop", "acme/shop"));
        assert!(!glob_matches("acme/*", "evil/shop"));
        assert!(!glob_matches("acme/shop", "acme/shop2"));
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(refused(&[], &repo("acme/shop"), RepoSource::Registry).is_none());
        assert!(refused(&[], &repo("acme/shop"), RepoSource::AlertLabels).is_some());
        let list = vec!["acme/*".to_owned()];
        assert!(refused(&list, &repo("acme/shop"), RepoSource::AlertLabels).is_none());
        assert!(refused(&list, &repo("evil/x"), RepoSource::Registry)
            .unwrap()
            .contains("GitHub.Repos"));
    }
}
