//! Suspects: each changed file is matched against words tied to the resources the metric
//! evidence found anomalous (memory → allocation, cache, pool, buffer; CPU → loops,
//! regexes, retries, serialisation; disk → logging and file writes; network and errors →
//! clients, pools, timeouts) and against changed limits in configuration files, and keeps
//! the words that matched. Deterministic; the model is told the score is only an order.

use crate::model::changes::{ChangedFile, Changes, PullRequest};
use crate::model::evidence::{EvidenceItem, Resource, ANOMALY_SCORE};

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
pub struct PatchBudget {
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
    budget: PatchBudget,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::evidence::{Reading, Scored};

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
                verdict: Reading::Anomalous,
            },
            pre_existing: false,
            no_baseline: false,
            series_start: None,
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
            PatchBudget {
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
            PatchBudget {
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
