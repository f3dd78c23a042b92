//! The report the service writes from the evidence alone, when no AI analysis could be had
//! (evidence-only mode, or the AI failed after its retries): the design's four sections
//! (【问题概述】【根因分析】【影响范围】【解决方案】) in the design's language, with the measured
//! numbers, saying at the top that there is no AI analysis and why. Its `promQL` are the
//! queries of the anomalous signals (else of the top ones), so a dashboard can plot them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::model::alert::Alert;
use crate::model::changes::Changes;
use crate::model::evidence::{
    distinct_queries, format_value, EvidenceItem, Resource, Unmeasured, ANOMALY_SCORE,
};
use crate::model::report::ReportBody;
use crate::model::verdict::{Class, Recommendation, ReleaseVerdict};

/// Evidence lines in the root-cause section.
const LINES: usize = 5;

/// The resource, as a person reads it.
fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::Cpu => "CPU",
        Resource::Memory => "内存",
        Resource::Swap => "交换分区",
        Resource::DiskSpace => "磁盘空间",
        Resource::DiskIo => "磁盘 I/O",
        Resource::Network => "网络",
        Resource::Availability => "可用性（抓取目标）",
        Resource::Process => "文件描述符",
        Resource::System => "系统（重启/时钟）",
        Resource::Rule => "告警规则",
    }
}

/// What to do about a resource.
fn remedy(r: Resource) -> Option<&'static str> {
    Some(match r {
        Resource::Cpu => "定位占用 CPU 的进程（top -H、pidstat、perf），对照发布时间确认是否为新版本引入的计算热点或死循环；必要时回滚发布或扩容。",
        Resource::Memory => "定位内存增长的进程（ps --sort=-rss），检查内存泄漏或缓存配置变化，查看 OOM 记录（dmesg）；必要时回滚发布、调整内存上限或扩容。",
        Resource::Swap => "内存不足引起换页：先按内存问题排查，并检查 swappiness 与进程内存上限。",
        Resource::DiskSpace => "清理接近写满的挂载点上的大文件和日志（du -xh --max-depth=1），检查日志轮转和新版本的写入量；必要时扩容。",
        Resource::DiskIo => "定位 I/O 密集的进程（iotop、pidstat -d），检查新版本的读写模式、同步写和日志级别；必要时限流或换更快的磁盘。",
        Resource::Network => "检查网卡错误和丢包（ip -s link、ethtool -S）及 TCP 重传，确认链路和对端服务健康。",
        Resource::Availability => "目标不可用：检查主机和 node_exporter 是否存活、网络与防火墙，以及 Prometheus 的抓取配置。",
        Resource::Process => "文件描述符接近上限：用 lsof 定位持有大量句柄的进程，检查连接或文件未关闭；必要时调高 ulimit。",
        Resource::System => "检查主机是否意外重启（journalctl -b -1）或时钟漂移（chronyc tracking）。",
        Resource::Rule => return None,
    })
}

fn line(item: &EvidenceItem) -> String {
    let s = &item.scored;
    let baseline = s
        .baseline
        .map_or_else(|| "无数据".to_owned(), |b| format_value(b, &item.unit));
    format!(
        "[{}] {}（{}）：基线中位数 {baseline}，告警后均值 {}，峰值 {}，最新 {}，分数 {:.2}",
        s.verdict.zh(),
        item.signal,
        if item.instance.is_empty() {
            resource_name(item.resource)
        } else {
            item.instance.as_str()
        },
        format_value(s.incident, &item.unit),
        format_value(s.peak, &item.unit),
        format_value(s.last, &item.unit),
        s.score,
    )
}

/// Suspect changes listed in the root-cause section.
const SUSPECTS: usize = 3;

/// What the release's changes add to the root-cause section.
fn change_lines(content: &mut String, changes: &Changes) {
    if !changes.read {
        let _ = writeln!(
            content,
            "未读取发布变更（{} {}）：{}",
            changes.repo,
            changes.range,
            changes.notes.join("；")
        );
        return;
    }
    let suspects = changes.suspects(SUSPECTS);
    if suspects.is_empty() {
        let _ = writeln!(
            content,
            "本次发布（{} {}，{} 个 PR）的改动中没有与上述异常相关的关键词。",
            changes.repo,
            changes.range,
            changes.prs.len()
        );
        return;
    }
    let _ = writeln!(
        content,
        "本次发布（{} {}）中与上述异常最相关的改动（按关键词可疑度排序，需人工确认）：",
        changes.repo, changes.range
    );
    for (i, (pr, file)) in suspects.iter().enumerate() {
        let pr = pr.map_or_else(
            || "直接提交".to_owned(),
            |pr| format!("PR #{}「{}」（{}）", pr.number, pr.title, pr.author),
        );
        let _ = writeln!(
            content,
            "{}. {pr} 文件 {}（+{} −{}，可疑度 {:.2}：{}）",
            i + 1,
            file.path,
            file.additions,
            file.deletions,
            file.suspect,
            file.why.join("；")
        );
    }
}

/// The report for an alert from its evidence (ranked, best first) and the release's
/// changes, saying why no AI wrote it.
pub fn write(
    alert: &Alert,
    evidence: &[EvidenceItem],
    unmeasured: Option<&Unmeasured>,
    changes: Option<&Changes>,
    verdict: Option<&ReleaseVerdict>,
    why_no_ai: &str,
) -> ReportBody {
    let anomalous: Vec<&EvidenceItem> = evidence
        .iter()
        .filter(|e| e.resource != Resource::Rule && e.scored.score >= ANOMALY_SCORE)
        .collect();
    let instances: BTreeSet<&str> = evidence
        .iter()
        .map(|e| e.instance.as_str())
        .filter(|i| !i.is_empty())
        .collect();
    let instances = instances.into_iter().collect::<Vec<_>>().join("、");
    let mut content = String::new();

    let _ = writeln!(content, "【问题概述】");
    let _ = writeln!(
        content,
        "未能进行 AI 分析（{why_no_ai}），以下报告由服务根据实测指标自动生成。"
    );
    let _ = write!(
        content,
        "告警「{}」（严重程度 {}）于 {} 开始",
        alert.alertname,
        if alert.severity.is_empty() {
            "未标注"
        } else {
            &alert.severity
        },
        alert.starts_at
    );
    match anomalous.first() {
        Some(top) => {
            let _ = writeln!(
                content,
                "；实例 {instances} 上有 {} 个信号超过异常阈值，最突出的是 {}：{}。",
                anomalous.len(),
                top.signal,
                line(top)
            );
        }
        None => {
            let _ = writeln!(
                content,
                "；实例 {instances} 上所测的 {} 个主机信号都没有超过异常阈值。",
                evidence.len()
            );
        }
    }
    // What the release verdict found on a released host (the application's errors, its
    // latency) is not among the host signals above: said here too, or the first lines read
    // as if nothing were wrong while the verdict asks for a rollback.
    if let Some(finding) = verdict.and_then(verdict_finding) {
        let _ = writeln!(content, "{finding}");
    }

    let _ = writeln!(content, "【根因分析】");
    let _ = writeln!(
        content,
        "按异常分数排序的实测证据（基线为告警开始前，告警后为告警开始至今）："
    );
    for (i, item) in evidence.iter().take(LINES).enumerate() {
        let _ = writeln!(content, "{}. {}", i + 1, line(item));
    }
    match anomalous.first() {
        Some(top) => {
            let _ = writeln!(
                content,
                "据此判断，最可能的问题方向是{}：{}的变化与告警同时发生。",
                resource_name(top.resource),
                top.signal
            );
        }
        None => {
            let _ = writeln!(
                content,
                "实测的主机指标没有发现明显异常，问题可能在应用层或未采集的指标中，建议检查应用日志、错误率和本次发布的变更。"
            );
        }
    }

    if let Some(v) = verdict {
        verdict_lines(&mut content, v);
    }
    if let Some(changes) = changes {
        change_lines(&mut content, changes);
    }

    let resources: Vec<&str> = anomalous
        .iter()
        .map(|e| resource_name(e.resource))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let _ = writeln!(content, "【影响范围】");
    let _ = writeln!(
        content,
        "实例：{}；涉及资源：{}。",
        if instances.is_empty() {
            "未识别"
        } else {
            &instances
        },
        if resources.is_empty() {
            "无明显异常".to_owned()
        } else {
            resources.join("、")
        }
    );
    if let Some(u) = unmeasured {
        let _ = writeln!(content, "{}。", u.zh());
    }

    let _ = writeln!(content, "【解决方案】");
    let mut step = 0;
    if let Some(v) = verdict {
        step += 1;
        let _ = writeln!(
            content,
            "{step}. 发布建议：{}（{}）。{}",
            v.recommendation.zh(),
            v.recommendation.as_str(),
            match v.recommendation {
                Recommendation::Rollback => "本次发布导致了超出健康阈值的异常，先回滚再排查。",
                Recommendation::Hold => "暂停继续发布，按下面的步骤确认原因后再决定回滚或继续。",
                Recommendation::Proceed =>
                    "异常与本次发布无关，可以继续发布，同时按下面的步骤处理异常。",
            }
        );
    }
    let mut seen = BTreeSet::new();
    for item in &anomalous {
        if let Some(text) = remedy(item.resource).filter(|_| seen.insert(item.resource)) {
            step += 1;
            let _ = writeln!(content, "{step}. {text}");
        }
        if step == 2 {
            break;
        }
    }
    if let Some((pr, file)) = changes.and_then(|c| c.suspects(1).into_iter().next()) {
        step += 1;
        let _ = writeln!(
            content,
            "{step}. 检查{}对 {} 的改动；若确认是它引起的，回滚本次发布或修复后重新发布。",
            pr.map_or_else(String::new, |pr| format!(" PR #{} ", pr.number)),
            file.path
        );
    }
    let _ = write!(
        content,
        "{}. 用 promQL 字段中的查询复查上述信号，并对照发布时间确认与本次发布的关系。",
        step + 1
    );

    let mut prom_ql = queries(evidence);
    if let Some(v) = verdict {
        for c in v
            .comparisons
            .iter()
            .filter(|c| c.worse && !c.pre_existing)
            .take(3)
        {
            if !prom_ql.contains(&c.query) {
                prom_ql.push(c.query.clone());
            }
        }
    }
    ReportBody { prom_ql, content }
}

/// The verdict's first finding on a released host, in a sentence: the signal, its value
/// against the controls' (or before the release), the requests it counts, the limit it
/// breaks.
fn verdict_finding(v: &ReleaseVerdict) -> Option<String> {
    let c = v
        .comparisons
        .iter()
        .find(|c| c.released_host && c.worse && c.class != Class::Pass && !c.pre_existing)?;
    let counts = super::prompt::request_counts(c);
    let breaks = c
        .breaks
        .as_deref()
        .map(|b| format!("，超出 {b}"))
        .unwrap_or_default();
    Some(format!(
        "发布判定发现：已发布主机 {} 的{}为 {}，{}为 {}{counts}{breaks}。",
        c.host,
        super::prompt::signal_zh(&c.signal).trim(),
        format_value(c.released, &c.unit),
        super::prompt::compared_with(c),
        format_value(c.control, &c.unit),
    ))
}

/// The release verdict in the root-cause section: what it says, how sure, and why.
fn verdict_lines(content: &mut String, v: &ReleaseVerdict) {
    let _ = writeln!(
        content,
        "发布判定：{}（{}，置信度 {:.2}），建议{}。依据：",
        v.verdict.zh(),
        v.verdict.as_str(),
        v.confidence,
        v.recommendation.zh()
    );
    for (i, reason) in v.reasons.iter().take(LINES).enumerate() {
        let _ = writeln!(content, "  {}) {reason}", i + 1);
    }
}

/// The queries to plot for this evidence: those of the anomalous signals, else of the top
/// three (never the alert's own rule: it is context, not a measurement).
pub fn queries(evidence: &[EvidenceItem]) -> Vec<String> {
    let measured = || evidence.iter().filter(|e| e.resource != Resource::Rule);
    let anomalous = distinct_queries(
        measured().filter(|e| e.scored.score >= ANOMALY_SCORE),
        LINES,
    );
    let chosen = if anomalous.is_empty() {
        distinct_queries(measured(), 3)
    } else {
        anomalous
    };
    chosen.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::evidence::{Reading, Scored};

    fn item(resource: Resource, signal: &str, score: f64, verdict: Reading) -> EvidenceItem {
        EvidenceItem {
            resource,
            signal: signal.into(),
            instance: "web-1:9100".into(),
            query: format!("query_of({signal})"),
            unit: "%".into(),
            scored: Scored {
                baseline: Some(1.1),
                baseline_p95: Some(2.0),
                incident: 56.2,
                change: None,
                peak: 100.0,
                last: 99.8,
                score,
                verdict,
            },
            pre_existing: false,
            no_baseline: false,
            series_start: None,
        }
    }

    fn alert() -> Alert {
        Alert {
            alertname: "NodeHighCPU".into(),
            severity: "critical".into(),
            starts_at: "2026-11-25T10:00:00Z".into(),
            ..Alert::default()
        }
    }

    #[test]
    fn a_saturated_cpu_is_reported_in_the_four_sections_with_its_numbers() {
        let evidence = vec![
            item(Resource::Cpu, "CPU busy %", 6.11, Reading::Saturated),
            item(
                Resource::Rule,
                "alert rule NodeHighCPU",
                1.5,
                Reading::Event,
            ),
            item(
                Resource::Memory,
                "memory available %",
                0.07,
                Reading::Normal,
            ),
        ];
        let unmeasured = Unmeasured::of(vec!["web-9:9100".into()], 20);
        let body = write(
            &alert(),
            &evidence,
            unmeasured.as_ref(),
            None,
            None,
            "AI call failed with status 500",
        );
        let c = &body.content;
        let sections = [
            "【问题概述】",
            "【根因分析】",
            "【影响范围】",
            "【解决方案】",
        ];
        let at: Vec<usize> = sections.iter().map(|s| c.find(s).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in order: {c}");
        assert!(
            c.starts_with("【问题概述】\n未能进行 AI 分析（AI call failed with status 500）"),
            "{c}"
        );
        assert!(c.contains("最突出的是 CPU busy %"), "{c}");
        assert!(
            c.contains("基线中位数 1.1%，告警后均值 56.2%，峰值 100%"),
            "{c}"
        );
        assert!(c.contains("最可能的问题方向是CPU"), "{c}");
        let scope = c.find("【影响范围】").unwrap();
        let left_out = c
            .find("另有 1 台主机超出 Evidence.MaxHosts（20）未测量：web-9:9100")
            .unwrap_or_else(|| panic!("the hosts left out are named: {c}"));
        assert!(scope < left_out, "{c}");
        assert!(c.contains("定位占用 CPU 的进程"), "{c}");
        assert!(
            !c.contains("定位内存增长"),
            "a normal resource gets no remedy: {c}"
        );
        assert_eq!(
            body.prom_ql,
            vec!["query_of(CPU busy %)"],
            "the rule is context, not a cause"
        );
    }

    #[test]
    fn quiet_evidence_says_so_and_still_gives_queries_to_check() {
        let evidence = vec![
            item(Resource::Cpu, "CPU busy %", 0.2, Reading::Normal),
            item(Resource::Memory, "memory available %", 0.1, Reading::Normal),
        ];
        let body = write(&alert(), &evidence, None, None, None, "evidence-only mode");
        assert!(
            body.content.contains("都没有超过异常阈值"),
            "{}",
            body.content
        );
        assert!(body.content.contains("应用层"));
        assert_eq!(body.prom_ql.len(), 2);
    }

    #[test]
    fn the_verdicts_finding_opens_a_report_whose_host_signals_are_quiet() {
        // The demo's bad canary: the shop's errors are the application's, not a host's.
        let verdict: ReleaseVerdict = serde_json::from_value(serde_json::json!({
            "verdict": "release", "recommendation": "rollback", "confidence": 0.99,
            "reasons": ["canary web-1 errors %"],
            "comparisons": [
                {"signal": "errors %", "host": "web-1", "releasedHost": true, "method": "canary",
                 "query": "q", "unit": "%", "released": 30.0, "control": 0.0,
                 "points": [12, 24], "pValue": 1e-9, "effect": 30.0, "class": "high",
                 "worse": true, "red": true, "breaks": "errorRateMaxPercent 5",
                 "requests": [180, 360], "failed": [54, 0]}
            ]
        }))
        .unwrap();
        let evidence = vec![item(Resource::Cpu, "CPU busy %", 0.1, Reading::Normal)];
        let body = write(
            &alert(),
            &evidence,
            None,
            None,
            Some(&verdict),
            "evidence-only mode",
        );
        let overview = body.content.split("【根因分析】").next().unwrap();
        assert!(
            overview.ends_with(
                "都没有超过异常阈值。\n发布判定发现：已发布主机 web-1 的错误率（失败请求占比，errors %）为 30.0%，\
                 未发布主机为 0%（180 个请求中 54 个失败，对照 360 个中 0 个），超出 errorRateMaxPercent 5。\n"
            ),
            "{overview}"
        );
        // Without a finding the overview says nothing of the verdict.
        let quiet = write(&alert(), &evidence, None, None, None, "evidence-only mode");
        assert!(!quiet.content.contains("发布判定发现"), "{}", quiet.content);
    }

    #[test]
    fn signals_that_share_a_query_give_it_once() {
        let mut evidence = vec![
            item(Resource::Cpu, "CPU % (user)", 0.2, Reading::Normal),
            item(Resource::Cpu, "CPU % (system)", 0.1, Reading::Normal),
            item(Resource::Memory, "memory available %", 0.1, Reading::Normal),
            item(Resource::DiskIo, "disk busy %", 0.1, Reading::Normal),
        ];
        evidence[1].query = evidence[0].query.clone();
        assert_eq!(
            queries(&evidence),
            [
                "query_of(CPU % (user))",
                "query_of(memory available %)",
                "query_of(disk busy %)"
            ]
        );
    }

    #[test]
    fn suspect_changes_are_listed_under_the_root_cause_and_in_the_remedy() {
        use crate::model::changes::{ChangedFile, PullRequest};
        let evidence = vec![item(
            Resource::Memory,
            "memory used %",
            7.0,
            Reading::Saturated,
        )];
        let changes = Changes {
            repo: "acme/shop".into(),
            range: "v1...v2".into(),
            read: true,
            prs: vec![PullRequest {
                number: 42,
                title: "Warm the cache".into(),
                author: "dev".into(),
                suspect: 3.2,
                files: vec![ChangedFile {
                    path: "src/cache.go".into(),
                    additions: 30,
                    deletions: 1,
                    suspect: 3.2,
                    why: vec!["memory: cache".into()],
                    patch: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = write(
            &alert(),
            &evidence,
            None,
            Some(&changes),
            None,
            "evidence-only mode",
        )
        .content;
        let cause = c.find("【根因分析】").unwrap();
        let scope = c.find("【影响范围】").unwrap();
        let line = c
            .find("1. PR #42「Warm the cache」（dev） 文件 src/cache.go（+30 −1，可疑度 3.20：memory: cache）")
            .unwrap_or_else(|| panic!("{c}"));
        assert!(cause < line && line < scope, "{c}");
        assert!(c.contains("检查 PR #42 对 src/cache.go 的改动"), "{c}");
        let refused = Changes {
            read: false,
            notes: vec![
                "repository acme/shop was not read: it is not in the GitHub.Repos allowlist".into(),
            ],
            ..changes
        };
        let c = write(&alert(), &evidence, None, Some(&refused), None, "x").content;
        assert!(
            c.contains("未读取发布变更") && c.contains("GitHub.Repos"),
            "{c}"
        );
    }
}
