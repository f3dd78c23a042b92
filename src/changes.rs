//! Change evidence: what a release changed (its pull requests and their files), and which
//! of those changes are suspects for the measured failure.
//!
//! The service reads it itself from the GitHub REST API ([`crate::github`]) before the
//! runner starts, so every runner and model sees the same diff excerpts with no GitHub tool
//! at all. Only repositories the allowlist (`GitHub.Repos`) admits are read; with an empty
//! allowlist, only repositories a registered deployment names, never one an alert label
//! names alone (anyone who can post an alert could otherwise pick what the service reads).
//!
//! Suspects are ranked deterministically ([`rank`]): each changed file is matched against
//! words tied to the resources the metric evidence found anomalous (memory → allocation,
//! cache, pool, buffer; CPU → loops, regexes, retries, serialisation; disk → logging and
//! file writes; network and errors → clients, pools, timeouts) and against changed limits in
//! configuration files, and keeps the words that matched.

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::deployment::Deployment;
use crate::evidence::{EvidenceItem, Resource, ANOMALY_SCORE};

/// The release whose changes are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// `owner/name`.
    pub repo: String,
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

    /// The release of a diagnosis: the registered deployment's, else the alert labels'.
    /// `None` when neither names a repository and a tag or commit; `Err` with a note when
    /// the repository cannot be used.
    pub fn of(deployment: Option<&Deployment>, alert: &Alert) -> Option<Result<Self, String>> {
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
            repo_name(address)
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

    /// A record of a release that was not read, saying why.
    pub fn not_read(&self, why: String) -> Changes {
        Changes {
            repo: self.repo.clone(),
            range: self.range(),
            read: false,
            notes: vec![why],
            ..Default::default()
        }
    }
}

/// What a release changed, as stored on the report (`changes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// `owner/name`.
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// `owner/name` of a repository address: `owner/name`, `https://HOST/owner/name(.git)`,
/// `git@HOST:owner/name.git`. `None` when it is none of those.
pub fn repo_name(address: &str) -> Option<String> {
    let address = address.trim();
    let path = if let Some(rest) = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
    {
        rest.split_once('/')?.1
    } else if let Some(rest) = address.strip_prefix("git@") {
        rest.split_once(':')?.1
    } else {
        address
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.split('/');
    let (owner, name) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    (ok(owner) && ok(name)).then(|| format!("{owner}/{name}"))
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

/// Where a repository name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoSource {
    /// A registered deployment.
    Registry,
    /// An alert's labels.
    AlertLabels,
}

/// Why a repository may not be read, or `None` when it may.
pub fn refused(allowlist: &[String], repo: &str, source: RepoSource) -> Option<String> {
    if allowlist.is_empty() {
        return (source == RepoSource::AlertLabels).then(|| {
            format!(
                "repository {repo} was not read: it is named only by alert labels, and with an \
                 empty GitHub.Repos only repositories of registered deployments are read"
            )
        });
    }
    (!allowlist.iter().any(|p| glob_matches(p, repo)))
        .then(|| format!("repository {repo} was not read: it is not in the GitHub.Repos allowlist"))
}

/// Words of each resource a change can cause, matched against changed code.
fn words(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Cpu => &[
            "loop",
            "iterate",
            "regex",
            "regexp",
            "retry",
            "retries",
            "backoff",
            "serialize",
            "serialise",
            "marshal",
            "unmarshal",
            "encode",
            "decode",
            "json",
            "hash",
            "sort",
            "spin",
            "busy",
            "thread",
            "worker",
            "goroutine",
            "parallel",
            "compress",
            "crypto",
            "recursive",
            "poll",
        ],
        Resource::Memory | Resource::Swap => &[
            "alloc", "cache", "pool", "buffer", "buf", "capacity", "reserve", "append", "clone",
            "copy", "leak", "heap", "memory", "preload", "slice", "vec", "map", "queue", "batch",
        ],
        Resource::DiskSpace => &[
            "log",
            "logger",
            "logging",
            "write",
            "file",
            "dump",
            "tmp",
            "temp",
            "rotate",
            "retention",
            "storage",
            "persist",
            "snapshot",
            "backup",
            "disk",
        ],
        Resource::DiskIo => &[
            "log",
            "logger",
            "logging",
            "write",
            "fsync",
            "flush",
            "sync",
            "file",
            "read",
            "scan",
            "compaction",
            "batch",
            "disk",
        ],
        Resource::Network => &[
            "client",
            "http",
            "grpc",
            "connection",
            "conn",
            "pool",
            "timeout",
            "retry",
            "retries",
            "dns",
            "socket",
            "keepalive",
            "tcp",
            "request",
            "proxy",
            "upstream",
        ],
        Resource::Process => &[
            "file",
            "open",
            "socket",
            "conn",
            "connection",
            "fd",
            "close",
            "thread",
            "spawn",
            "process",
            "ulimit",
            "pool",
        ],
        Resource::Availability => &[
            "panic",
            "crash",
            "exit",
            "health",
            "readiness",
            "liveness",
            "port",
            "listen",
            "bind",
            "startup",
            "signal",
            "oom",
            "timeout",
        ],
        Resource::System => &["reboot", "clock", "time", "ntp", "kernel", "sysctl"],
        Resource::Rule => &[],
    }
}

/// Words of a configured limit.
const LIMIT_WORDS: &[&str] = &[
    "limit",
    "max",
    "min",
    "timeout",
    "size",
    "pool",
    "threads",
    "workers",
    "replicas",
    "memory",
    "cpu",
    "heap",
    "xmx",
    "buffer",
    "cache",
    "ttl",
    "interval",
    "concurrency",
    "connections",
    "retries",
];

/// The resource's name in `why`.
fn label(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => "cpu",
        Resource::Memory => "memory",
        Resource::Swap => "swap",
        Resource::DiskSpace => "disk space",
        Resource::DiskIo => "disk io",
        Resource::Network => "network",
        Resource::Availability => "availability",
        Resource::Process => "file descriptors",
        Resource::System => "system",
        Resource::Rule => "rule",
    }
}

/// Lower-case words of code or text: split at non-alphanumerics, `_`, and camelCase humps.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev_lower && !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            word.push(c.to_ascii_lowercase());
        } else {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = false;
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Whether a token is a keyword: short keywords exactly (`log` is not `login`), longer ones
/// as a stem (`alloc` in `allocation`, `cache` in `cached`).
fn hits(token: &str, keyword: &str) -> bool {
    if keyword.len() <= 4 {
        token == keyword || token.strip_prefix(keyword).is_some_and(|r| r == "s")
    } else {
        token.starts_with(keyword)
    }
}

fn is_config(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    [
        ".yaml",
        ".yml",
        ".toml",
        ".json",
        ".ini",
        ".conf",
        ".cfg",
        ".env",
        ".properties",
    ]
    .iter()
    .any(|ext| p.ends_with(ext))
        || p.contains("config")
        || p.contains("values")
}

fn is_test_or_doc(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.ends_with(".md")
        || p.ends_with(".txt")
        || p.starts_with("docs/")
        || p.contains("/docs/")
        || p.starts_with("test")
        || p.contains("/test")
        || p.contains("_test.")
        || p.contains(".test.")
        || p.contains("spec.")
}

/// The resources the evidence points at, with weights by rank: the top anomalous one
/// counts most. With no anomaly measured, every resource counts a little, so files still
/// have an order.
pub fn focus(evidence: &[EvidenceItem]) -> Vec<(Resource, f64)> {
    let mut out: Vec<(Resource, f64)> = Vec::new();
    for item in evidence {
        if item.resource == Resource::Rule || item.scored.score < ANOMALY_SCORE {
            continue;
        }
        if out.iter().any(|(r, _)| *r == item.resource) {
            continue;
        }
        let weight = [1.0, 0.6, 0.4][out.len()];
        out.push((item.resource, weight));
        if out.len() == 3 {
            break;
        }
    }
    if out.is_empty() {
        out = [
            Resource::Cpu,
            Resource::Memory,
            Resource::DiskSpace,
            Resource::DiskIo,
            Resource::Network,
            Resource::Process,
            Resource::Availability,
        ]
        .into_iter()
        .map(|r| (r, 0.2))
        .collect();
    }
    out
}

/// Scores one file from its path, its patch's added lines and the PR title.
fn score_file(file: &mut ChangedFile, full_patch: &str, title: &str, focus: &[(Resource, f64)]) {
    let added: String = full_patch
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .map(|l| &l[1..])
        .collect::<Vec<_>>()
        .join("\n");
    let mut tokens = tokens(&file.path);
    tokens.extend(self::tokens(&added));
    tokens.extend(self::tokens(title));
    tokens.sort();
    tokens.dedup();
    let mut score = 0.0;
    let mut why = Vec::new();
    for (resource, weight) in focus {
        let matched: Vec<&str> = words(*resource)
            .iter()
            .copied()
            .filter(|k| tokens.iter().any(|t| hits(t, k)))
            .collect();
        if !matched.is_empty() {
            score += weight * matched.len().min(5) as f64;
            why.push(format!("{}: {}", label(*resource), matched.join(", ")));
        }
    }
    if is_config(&file.path) {
        let mut limits: Vec<String> = added
            .lines()
            .filter_map(|line| {
                let key = line
                    .split([':', '='])
                    .next()?
                    .trim()
                    .trim_matches('"')
                    .to_owned();
                let key_tokens = self::tokens(&key);
                (!key.is_empty()
                    && key.len() <= 80
                    && key_tokens
                        .iter()
                        .any(|t| LIMIT_WORDS.iter().any(|w| hits(t, w))))
                .then_some(key)
            })
            .collect();
        limits.sort();
        limits.dedup();
        if !limits.is_empty() {
            let top = focus.first().map_or(0.2, |(_, w)| *w);
            score += 1.5 * top * limits.len().min(3) as f64;
            limits.truncate(5);
            why.push(format!("config limit: {}", limits.join(", ")));
        }
    }
    if is_test_or_doc(&file.path) && score > 0.0 {
        score *= 0.2;
        why.push("test or docs file".into());
    }
    if score > 0.0 {
        // Bigger changes first among equals.
        score += ((file.additions + file.deletions) as f64).ln_1p() / 20.0;
    }
    file.suspect = (score * 100.0).round() / 100.0;
    file.why = why;
}

/// A file as read from GitHub, with its whole patch (kept only in memory).
#[derive(Debug, Clone)]
pub struct RawFile {
    /// The file, without its patch.
    pub file: ChangedFile,
    /// Its whole patch.
    pub patch: Option<String>,
}

/// A pull request as read, before ranking.
#[derive(Debug, Clone)]
pub struct RawPr {
    /// The pull request, without files.
    pub pr: PullRequest,
    /// Its files.
    pub files: Vec<RawFile>,
}

/// Patch budgets.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Characters of all patch excerpts together.
    pub total: usize,
    /// Characters of one file's excerpt.
    pub per_file: usize,
}

/// Cuts `text` to at most `max` characters at a line end where possible.
fn excerpt(text: &str, max: usize) -> (String, bool) {
    if text.chars().count() <= max {
        return (text.to_owned(), false);
    }
    let cut: String = text.chars().take(max).collect();
    let cut = match cut.rfind('\n') {
        Some(i) if i > max / 2 => cut[..i].to_owned(),
        _ => cut,
    };
    (cut, true)
}

/// Ranks the files and PRs against the evidence, most suspect first, and keeps patch
/// excerpts within the budget, the most suspect files' first.
pub fn rank(
    changes: &mut Changes,
    prs: Vec<RawPr>,
    other: Vec<RawFile>,
    evidence: &[EvidenceItem],
    budget: Budget,
) {
    let focus = focus(evidence);
    let mut patches: Vec<(f64, String, Option<String>)> = Vec::new();
    let mut ranked_prs = Vec::new();
    for raw in prs {
        let mut pr = raw.pr;
        for mut f in raw.files {
            score_file(
                &mut f.file,
                f.patch.as_deref().unwrap_or(""),
                &pr.title,
                &focus,
            );
            patches.push((f.file.suspect, f.file.path.clone(), f.patch));
            pr.files.push(f.file);
        }
        pr.files
            .sort_by(|a, b| b.suspect.total_cmp(&a.suspect).then(a.path.cmp(&b.path)));
        pr.suspect = pr.files.first().map_or(0.0, |f| f.suspect);
        ranked_prs.push(pr);
    }
    ranked_prs.sort_by(|a, b| {
        b.suspect
            .total_cmp(&a.suspect)
            .then(a.number.cmp(&b.number))
    });
    let mut other_files = Vec::new();
    for mut f in other {
        score_file(&mut f.file, f.patch.as_deref().unwrap_or(""), "", &focus);
        patches.push((f.file.suspect, f.file.path.clone(), f.patch));
        other_files.push(f.file);
    }
    other_files.sort_by(|a, b| b.suspect.total_cmp(&a.suspect).then(a.path.cmp(&b.path)));

    // Excerpts, most suspect first, until the total budget is spent.
    patches.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = budget.total;
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut omitted = 0;
    for (_, path, patch) in patches {
        let Some(patch) = patch.filter(|p| !p.is_empty()) else {
            continue;
        };
        if left < 200 || kept.iter().any(|(p, _)| *p == path) {
            omitted += 1;
            continue;
        }
        let (mut text, cut) = excerpt(&patch, budget.per_file.min(left));
        if cut {
            text.push_str("\n… (patch cut at the budget)");
        }
        left = left.saturating_sub(text.chars().count());
        kept.push((path, text));
    }
    if omitted > 0 {
        changes.notes.push(format!(
            "{omitted} patches left out: GitHub.MaxPatchChars ({}) was spent on more suspect files",
            budget.total
        ));
    }
    let mut take = |f: &mut ChangedFile| {
        if let Some(i) = kept.iter().position(|(p, _)| *p == f.path) {
            f.patch = Some(kept.swap_remove(i).1);
        }
    };
    for pr in &mut ranked_prs {
        pr.files.iter_mut().for_each(&mut take);
    }
    other_files.iter_mut().for_each(&mut take);
    changes.prs = ranked_prs;
    changes.other_files = other_files;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Scored, Verdict};

    #[test]
    fn repository_addresses_become_owner_and_name() {
        for (address, want) in [
            ("acme/shop", Some("acme/shop")),
            ("https://github.com/acme/shop.git", Some("acme/shop")),
            ("https://ghe.example.com/acme/shop/", Some("acme/shop")),
            ("git@github.com:acme/shop.git", Some("acme/shop")),
            ("acme/shop/extra", None),
            ("acme", None),
            ("../etc", None),
            ("acme/sh op", None),
        ] {
            assert_eq!(repo_name(address).as_deref(), want, "{address}");
        }
    }

    #[test]
    fn allowlist_globs_and_the_empty_allowlist() {
        assert!(glob_matches("acme/*", "ACME/shop"));
        assert!(glob_matches("*/shop", "acme/shop"));
        assert!(!glob_matches("acme/*", "evil/shop"));
        assert!(!glob_matches("acme/shop", "acme/shop2"));
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(refused(&[], "acme/shop", RepoSource::Registry).is_none());
        assert!(refused(&[], "acme/shop", RepoSource::AlertLabels).is_some());
        let list = vec!["acme/*".to_owned()];
        assert!(refused(&list, "acme/shop", RepoSource::AlertLabels).is_none());
        assert!(refused(&list, "evil/x", RepoSource::Registry)
            .unwrap()
            .contains("GitHub.Repos"));
    }

    fn item(resource: Resource, score: f64) -> EvidenceItem {
        EvidenceItem {
            resource,
            signal: "s".into(),
            instance: "i".into(),
            query: "q".into(),
            unit: "%".into(),
            scored: Scored {
                baseline: Some(1.0),
                baseline_p95: Some(1.0),
                incident: 2.0,
                change: Some(1.0),
                peak: 2.0,
                last: 2.0,
                score,
                verdict: Verdict::Anomalous,
            },
        }
    }

    fn raw(path: &str, patch: &str) -> RawFile {
        RawFile {
            file: ChangedFile {
                path: path.into(),
                additions: 10,
                deletions: 2,
                ..Default::default()
            },
            patch: Some(patch.into()),
        }
    }

    #[test]
    fn memory_evidence_makes_a_cache_change_the_top_suspect() {
        let prs = vec![
            RawPr {
                pr: PullRequest {
                    number: 7,
                    title: "Tidy the README".into(),
                    ..Default::default()
                },
                files: vec![raw("README.md", "@@\n+Some words\n")],
            },
            RawPr {
                pr: PullRequest {
                    number: 8,
                    title: "Warm the product cache at startup".into(),
                    ..Default::default()
                },
                files: vec![
                    raw(
                        "src/catalog/cache.go",
                        "@@\n+func preloadAll() {\n+  items := make([]Item, 0, capacity)\n+  productCache = append(productCache, items...)\n",
                    ),
                    raw(
                        "deploy/values.yaml",
                        "@@\n-  cacheMaxEntries: 1000\n+  cacheMaxEntries: 10000000\n",
                    ),
                ],
            },
        ];
        let mut changes = Changes::default();
        rank(
            &mut changes,
            prs,
            Vec::new(),
            &[item(Resource::Memory, 9.0), item(Resource::Cpu, 2.0)],
            Budget {
                total: 10_000,
                per_file: 2_000,
            },
        );
        assert_eq!(changes.prs[0].number, 8, "{changes:#?}");
        let top = &changes.prs[0].files;
        assert!(
            top[0].why.iter().any(|w| w.starts_with("memory: ")),
            "{top:?}"
        );
        let config = top.iter().find(|f| f.path == "deploy/values.yaml").unwrap();
        assert!(
            config
                .why
                .iter()
                .any(|w| w == "config limit: cacheMaxEntries"),
            "{config:?}"
        );
        assert_eq!(changes.prs[1].suspect, 0.0, "a README edit matches nothing");
        let suspects = changes.suspects(3);
        assert_eq!(suspects[0].0.unwrap().number, 8);
    }

    #[test]
    fn patch_excerpts_stay_within_the_budgets_most_suspect_first() {
        let big = format!("@@\n{}", "+cache line\n".repeat(500));
        let prs = vec![RawPr {
            pr: PullRequest {
                number: 1,
                ..Default::default()
            },
            files: vec![raw("a/cache.rs", &big), raw("b/other.txt", &big)],
        }];
        let mut changes = Changes::default();
        rank(
            &mut changes,
            prs,
            Vec::new(),
            &[item(Resource::Memory, 9.0)],
            Budget {
                total: 1_500,
                per_file: 1_000,
            },
        );
        let files = &changes.prs[0].files;
        let total: usize = files
            .iter()
            .filter_map(|f| f.patch.as_ref())
            .map(|p| p.chars().count())
            .sum();
        assert!(total <= 1_500 + 64, "{total}");
        assert!(files[0].patch.as_ref().unwrap().ends_with("budget)"));
        assert_eq!(files[0].path, "a/cache.rs");
    }
}
