//! What a chat message says of a finished report, and each platform's form of it within
//! the platform's documented size limits.
//!
//! One [`Summary`] is made of the report: the verdict and recommendation first, then the
//! deployment, service, tag and hosts, the top three evidence items with their numbers,
//! the top suspect pull requests, the 【问题概述】 section and the link. Every part but the
//! overview is bounded when it is made; the overview is what gives way when a platform's
//! limit is near, cut at a character boundary with "…".
//!
//! Every value that comes from outside (labels, annotations, host names, PR titles, the
//! model's text, the verdict's reasons) is made inert for its platform by [`inert`]
//! before it is put in a message: one line, no markup, no link, no mention. The lines
//! that carry meaning (the verdict, the headings, the links to the report and to the
//! suspect pull requests) are written by the service alone, from what it stored.

use serde_json::{json, Value};

use crate::model::evidence::format_value;
use crate::model::notify::DeliveryState;
use crate::model::report::{Report, ReportStatus};
use crate::model::verdict::Recommendation;

/// DingTalk robot: "message too long, exceed 20000 bytes" (errcode 460101) above this.
pub const DINGTALK_MAX_BYTES: usize = 20_000;
/// WeCom robot: `markdown.content` at most 4096 bytes of UTF-8 (errcode 40058 above).
pub const WECOM_MAX_BYTES: usize = 4_096;
/// Feishu custom bot: "请求体的数据大小不能超过 20 KB".
pub const FEISHU_MAX_BYTES: usize = 20 * 1024;
/// Slack Block Kit: a section's text at most 3000 characters.
pub const SLACK_SECTION_CHARS: usize = 3_000;
/// Slack Block Kit: a header's text at most 150 characters.
pub const SLACK_HEADER_CHARS: usize = 150;
/// Slack: at most 50 blocks in a message.
pub const SLACK_MAX_BLOCKS: usize = 50;

/// Hosts named in a message (the rest are counted).
const HOSTS_SHOWN: usize = 10;
/// Characters of one outside value (a label, a PR title) kept in a message.
const FIELD_CHARS: usize = 200;

/// The parts of a message, each bounded but the overview.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// One line: status, then the recommendation.
    pub title: String,
    /// The verdict as a sentence, when there is one.
    pub verdict: Option<String>,
    /// Whether the recommendation is to roll back (the message is coloured red).
    pub urgent: bool,
    /// Label and value: deployment, service, tag, hosts, alert.
    pub facts: Vec<(&'static str, String)>,
    /// The top three evidence items, a line each.
    pub evidence: Vec<String>,
    /// The top suspect pull requests: number, title and address.
    pub suspects: Vec<(u64, String, String)>,
    /// The 【问题概述】 section (or the failure's reason).
    pub overview: String,
    /// The report page.
    pub link: String,
}

/// `text` cut to at most `max` bytes at a character boundary, ending in "…" when cut.
pub fn cut_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let room = max.saturating_sub('…'.len_utf8());
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `text` cut to at most `max` characters, ending in "…" when cut.
pub fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The 【问题概述】 section of a report's content, else its beginning.
fn overview_of(content: &str) -> String {
    let start = "【问题概述】";
    match content.find(start) {
        Some(at) => {
            let rest = &content[at + start.len()..];
            let end = rest.find('【').unwrap_or(rest.len());
            rest[..end].trim().to_owned()
        }
        None => content.trim().to_owned(),
    }
}

impl Summary {
    /// The summary of `report` (its current version), linking to `link`.
    pub fn of(report: &Report, link: String) -> Self {
        let field = |s: &str| cut_chars(s.trim(), FIELD_CHARS);
        let failed = report.status() == ReportStatus::Failed;
        let release = report.release.as_ref();
        let status = if failed {
            "诊断失败"
        } else {
            "诊断完成"
        };
        let title = match release {
            Some(r) => format!("{status} · 建议{}", r.recommendation.zh()),
            None => status.to_owned(),
        };
        let verdict = release.map(|r| {
            let mut line = format!(
                "发布判定：{}（置信度 {:.0}%），建议{}",
                r.verdict.zh(),
                r.confidence * 100.0,
                r.recommendation.zh()
            );
            if let Some(reason) = r.reasons.first() {
                line.push('。');
                line.push_str(&field(reason));
            }
            if let Some(n) = report.notifications.iter().find(|n| n.is_rollback()) {
                line.push_str(match n.state {
                    DeliveryState::DryRun => "。自动回滚（dry-run）：本会请求回滚，未发送",
                    DeliveryState::Pending | DeliveryState::Delivered => {
                        "。已按部署的回滚策略自动请求回滚"
                    }
                    DeliveryState::Failed | DeliveryState::Disabled => {
                        "。自动回滚请求未被平台接受：请手动回滚"
                    }
                });
            }
            line
        });
        let alert = &report.alert;
        let deployment = report.deployment.as_ref();
        let mut facts = vec![("部署", field(report.deployment_id.as_str()))];
        let service = deployment
            .map(|d| d.service.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| alert.labels.get("service").map(String::as_str))
            .unwrap_or_default();
        if !service.is_empty() {
            facts.push(("服务", field(service)));
        }
        let tag = deployment
            .map(|d| d.tag.as_str())
            .filter(|t| !t.is_empty())
            .unwrap_or(alert.tag.as_str());
        if !tag.is_empty() {
            facts.push(("版本", field(tag)));
        }
        let mut hosts: Vec<String> = deployment.map(|d| d.host_names()).unwrap_or_default();
        if hosts.is_empty() {
            if let Some(h) = alert
                .labels
                .get("hostname")
                .or_else(|| alert.labels.get("instance"))
            {
                hosts.push(h.clone());
            }
        }
        if !hosts.is_empty() {
            let mut shown: Vec<String> = hosts.iter().take(HOSTS_SHOWN).map(|h| field(h)).collect();
            if hosts.len() > HOSTS_SHOWN {
                shown.push(format!("等 {} 台", hosts.len()));
            }
            facts.push(("主机", shown.join("、")));
        }
        if !alert.alertname.is_empty() {
            let severity = if alert.severity.is_empty() {
                String::new()
            } else {
                format!("（{}）", field(&alert.severity))
            };
            facts.push(("告警", format!("{}{severity}", field(&alert.alertname))));
        }
        let evidence = report
            .evidence
            .iter()
            .flatten()
            .take(3)
            .map(|item| {
                let s = &item.scored;
                let baseline = s
                    .baseline
                    .map_or_else(|| "无基线".to_owned(), |b| format_value(b, &item.unit));
                format!(
                    "{} · {}：{} → {}（峰值 {}，{}）",
                    field(&item.signal),
                    field(&item.instance),
                    baseline,
                    format_value(s.incident, &item.unit),
                    format_value(s.peak, &item.unit),
                    s.verdict.zh()
                )
            })
            .collect();
        let mut prs: Vec<_> = report
            .changes
            .iter()
            .flat_map(|c| c.prs.iter())
            .filter(|p| p.suspect > 0.0)
            .collect();
        prs.sort_by(|a, b| b.suspect.total_cmp(&a.suspect));
        let suspects = prs
            .into_iter()
            .take(3)
            .map(|p| (p.number, field(&p.title), p.url.clone()))
            .collect();
        let overview = match (report.body(), report.error()) {
            (Some(body), _) if !failed => overview_of(&body.content),
            (_, Some(error)) => format!("诊断失败：{error}"),
            _ => String::new(),
        };
        Self {
            title,
            verdict,
            urgent: release.is_some_and(|r| r.recommendation == Recommendation::Rollback),
            facts,
            evidence,
            suspects,
            overview,
            link,
        }
    }

    /// The markdown DingTalk and WeCom robots show, the overview cut to `overview_bytes`.
    pub fn markdown(&self, overview_bytes: usize) -> String {
        let md = |text: &str| inert(text, Markup::Markdown);
        let mut out = format!("### {}\n\n", self.title);
        if let Some(v) = &self.verdict {
            out.push_str(&format!("**{}**\n\n", md(v)));
        }
        for (label, value) in &self.facts {
            out.push_str(&format!("- {label}：{}\n", md(value)));
        }
        if !self.evidence.is_empty() {
            out.push_str("\n**证据**\n\n");
            for line in &self.evidence {
                out.push_str(&format!("- {}\n", md(line)));
            }
        }
        if !self.suspects.is_empty() {
            out.push_str("\n**可疑变更**\n\n");
            for (number, title, url) in &self.suspects {
                match link_target(url, Markup::Markdown) {
                    Some(url) => out.push_str(&format!("- [#{number} {}]({url})\n", md(title))),
                    None => out.push_str(&format!("- #{number} {}\n", md(title))),
                }
            }
        }
        if !self.overview.is_empty() {
            out.push_str(&format!(
                "\n**问题概述**\n\n{}\n",
                cut_bytes(&md(&self.overview), overview_bytes)
            ));
        }
        out.push_str(&format!("\n[查看报告]({})\n", self.link));
        out
    }

    /// The largest markdown within `max` bytes (measured by `size`, which may count more
    /// than the markdown, e.g. its JSON body): the overview is cut first, then the whole.
    pub fn markdown_within(&self, max: usize, size: impl Fn(&str) -> usize) -> String {
        let mut room = self.overview.len();
        for _ in 0..8 {
            let md = self.markdown(room);
            let n = size(&md);
            if n <= max {
                return md;
            }
            room = room.saturating_sub(n - max + 16);
        }
        let md = self.markdown(0);
        let over = size(&md).saturating_sub(max);
        cut_bytes(&md, md.len().saturating_sub(over + 16))
    }

    /// The Feishu interactive card (`msg_type: interactive`), within its 20 KB body.
    pub fn feishu_card(&self, signature: Option<(String, String)>) -> Value {
        let lark = |text: &str| inert(text, Markup::LarkMd);
        let build = |room: usize| {
            let mut content = String::new();
            if let Some(v) = &self.verdict {
                content.push_str(&format!("**{}**\n", lark(v)));
            }
            for (label, value) in &self.facts {
                content.push_str(&format!("**{label}**：{}\n", lark(value)));
            }
            if !self.evidence.is_empty() {
                content.push_str("\n**证据**\n");
                for line in &self.evidence {
                    content.push_str(&format!("- {}\n", lark(line)));
                }
            }
            if !self.suspects.is_empty() {
                content.push_str("\n**可疑变更**\n");
                for (number, title, url) in &self.suspects {
                    match link_target(url, Markup::LarkMd) {
                        Some(url) => {
                            content.push_str(&format!("- [#{number} {}]({url})\n", lark(title)))
                        }
                        None => content.push_str(&format!("- #{number} {}\n", lark(title))),
                    }
                }
            }
            if !self.overview.is_empty() {
                content.push_str(&format!(
                    "\n**问题概述**\n{}",
                    cut_bytes(&lark(&self.overview), room)
                ));
            }
            let mut body = json!({
                "msg_type": "interactive",
                "card": {
                    "config": {"wide_screen_mode": true},
                    "header": {
                        "title": {"tag": "plain_text", "content": self.title},
                        "template": if self.urgent { "red" } else { "blue" },
                    },
                    "elements": [
                        {"tag": "div", "text": {"tag": "lark_md", "content": content}},
                        {"tag": "action", "actions": [{
                            "tag": "button",
                            "text": {"tag": "plain_text", "content": "查看报告"},
                            "type": "primary",
                            "url": self.link,
                        }]},
                    ],
                },
            });
            if let Some((timestamp, sign)) = &signature {
                body["timestamp"] = json!(timestamp);
                body["sign"] = json!(sign);
            }
            body
        };
        let mut room = self.overview.len();
        loop {
            let body = build(room);
            let n = body.to_string().len();
            if n <= FEISHU_MAX_BYTES || room == 0 {
                return body;
            }
            room = room.saturating_sub(n - FEISHU_MAX_BYTES + 16);
        }
    }

    /// The Slack Block Kit message: a header, the verdict, the facts, the evidence, the
    /// suspects, the overview (each section within 3000 characters) and the link; `text`
    /// is the notification's fallback.
    pub fn slack(&self) -> Value {
        let section = |text: String| json!({"type": "section", "text": {"type": "mrkdwn", "text": cut_chars(&text, SLACK_SECTION_CHARS)}});
        let mut blocks = vec![json!({
            "type": "header",
            "text": {"type": "plain_text", "text": cut_chars(&self.title, SLACK_HEADER_CHARS)},
        })];
        let mrkdwn = |text: &str| inert(text, Markup::Mrkdwn);
        if let Some(v) = &self.verdict {
            blocks.push(section(format!("*{}*", mrkdwn(v))));
        }
        let facts: Vec<String> = self
            .facts
            .iter()
            .map(|(label, value)| format!("*{label}*: {}", mrkdwn(value)))
            .collect();
        blocks.push(section(facts.join("\n")));
        if !self.evidence.is_empty() {
            let lines: Vec<String> = self
                .evidence
                .iter()
                .map(|l| format!("• {}", mrkdwn(l)))
                .collect();
            blocks.push(section(format!("*证据*\n{}", lines.join("\n"))));
        }
        if !self.suspects.is_empty() {
            let lines: Vec<String> = self
                .suspects
                .iter()
                .map(
                    |(number, title, url)| match link_target(url, Markup::Mrkdwn) {
                        Some(url) => format!("• <{url}|#{number} {}>", mrkdwn(title)),
                        None => format!("• #{number} {}", mrkdwn(title)),
                    },
                )
                .collect();
            blocks.push(section(format!("*可疑变更*\n{}", lines.join("\n"))));
        }
        if !self.overview.is_empty() {
            blocks.push(section(format!("*问题概述*\n{}", mrkdwn(&self.overview))));
        }
        blocks.push(section(format!(
            "<{}|查看报告>",
            self.link.replace('&', "&amp;")
        )));
        blocks.truncate(SLACK_MAX_BLOCKS);
        json!({"text": cut_chars(&self.title, SLACK_SECTION_CHARS), "blocks": blocks})
    }
}

/// The markup a platform reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// DingTalk's and WeCom's markdown: neither documents an escape.
    Markdown,
    /// Feishu's `lark_md`: markdown, tags (`<at id=all>`, `<font>`) and entities.
    LarkMd,
    /// Slack's mrkdwn: `<…>` for links and mentions, `&amp;` `&lt;` `&gt;` its only
    /// documented escapes.
    Mrkdwn,
}

/// Outside text made inert for `markup`:
/// - one line: every control character and line or paragraph separator becomes a space,
///   and runs of spaces one, so that no value starts a line of its own (a forged verdict
///   line, a heading, a quote);
/// - no markup: the characters markdown, lark_md and mrkdwn give a meaning to become their
///   full-width forms, which read the same to a person (`*` `_` `~` `` ` `` `[` `]` `#`
///   `|`, and `<` `>` on the markdown platforms); Slack's and Feishu's `<` `>` `&` become
///   the entities they document, so `<!channel>`, `<@U1>`, `<at id=all>` and `<url|text>`
///   are shown, not read;
/// - no link and no mention: `://` becomes `：//`, so no client links a URL in it, and `@`
///   becomes `＠`, so `@all`, `@所有人` and `@channel` notify nobody.
pub fn inert(text: &str, markup: Markup) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_control() || c.is_whitespace() {
            if !space {
                out.push(' ');
            }
            space = true;
            continue;
        }
        space = false;
        match (c, markup) {
            ('&', Markup::LarkMd | Markup::Mrkdwn) => out.push_str("&amp;"),
            ('<', Markup::LarkMd | Markup::Mrkdwn) => out.push_str("&lt;"),
            ('>', Markup::LarkMd | Markup::Mrkdwn) => out.push_str("&gt;"),
            ('<', Markup::Markdown) => out.push('＜'),
            ('>', Markup::Markdown) => out.push('＞'),
            ('*', _) => out.push('＊'),
            ('_', _) => out.push('＿'),
            ('~', _) => out.push('～'),
            ('`', _) => out.push('｀'),
            ('[', _) => out.push('［'),
            (']', _) => out.push('］'),
            ('#', _) => out.push('＃'),
            ('|', _) => out.push('｜'),
            ('@', _) => out.push('＠'),
            _ => out.push(c),
        }
    }
    out.replace("://", "：//")
}

/// A link the service writes (to the report, to a pull request) as `markup` takes it:
/// only `http(s)` addresses, with nothing in them that ends the link early.
fn link_target(url: &str, markup: Markup) -> Option<String> {
    let url = url::Url::parse(url.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    // The parsed form has spaces, quotes and angle brackets percent-encoded; brackets
    // and `|` end a link in one markup or another.
    let text = url
        .as_str()
        .replace('(', "%28")
        .replace(')', "%29")
        .replace('|', "%7C");
    Some(match markup {
        Markup::Mrkdwn => text.replace('&', "&amp;"),
        Markup::Markdown | Markup::LarkMd => text,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::alert::{Alert, DeploymentId};
    use crate::model::changes::{Changes, PullRequest};
    use crate::model::evidence::{EvidenceItem, Reading, Resource, Scored};
    use crate::model::report::{Ending, Engine, ReportBody, ReportState};
    use crate::model::verdict::{Attribution, ReleaseVerdict};

    /// A report as a rollback-worthy release leaves it.
    pub(crate) fn example() -> Report {
        let alert = Alert {
            alertname: "HighErrorRate".into(),
            severity: "critical".into(),
            tag: "v2.4.1".into(),
            labels: [("service".to_owned(), "checkout".to_owned())].into(),
            ..Alert::default()
        };
        let mut r = Report::new(
            DeploymentId::parse("deploy-7f3a").unwrap(),
            alert,
            chrono::Utc::now(),
        );
        r.state = ReportState::Ended(Ending::Completed {
            body: ReportBody {
                prom_ql: vec![],
                content: "【问题概述】\nv2.4.1 发布后 web-2 的 5xx 错误率从 0.2% 升至 18.5%，未发布的 web-1 正常。\n【根因分析】\n…".into(),
            },
            engine: Engine::Ai,
            ai_error: None,
        });
        r.release = Some(ReleaseVerdict {
            verdict: Attribution::Release,
            recommendation: Recommendation::Rollback,
            confidence: 0.92,
            reasons: vec!["web-2 errors % 18.5 vs 0.2 on the controls (p < 0.001)".into()],
            comparisons: vec![],
            model: None,
        });
        let item = |signal: &str, baseline, incident, peak, verdict| EvidenceItem {
            resource: Resource::Rule,
            signal: String::from(signal),
            instance: "web-2:8080".into(),
            query: format!("{signal}{{instance=\"web-2:8080\"}}"),
            unit: "%".into(),
            scored: Scored {
                baseline: Some(baseline),
                baseline_p95: None,
                incident,
                change: None,
                peak,
                last: incident,
                score: 9.0,
                verdict,
            },
            pre_existing: false,
            no_baseline: false,
            series_start: None,
        };
        r.evidence = Some(vec![
            item("errors %", 0.2, 18.5, 23.0, Reading::Anomalous),
            item("CPU busy %", 31.0, 35.2, 41.0, Reading::Normal),
        ]);
        r.changes = Some(Changes {
            prs: vec![PullRequest {
                number: 812,
                title: "Retry payment calls <fast>".into(),
                author: "dev".into(),
                url: "https://github.com/shop/checkout/pull/812".into(),
                suspect: 0.8,
                files: vec![],
            }],
            ..Changes::default()
        });
        r
    }

    #[test]
    fn a_message_leads_with_the_verdict_and_links_the_report() {
        let s = Summary::of(
            &example(),
            "https://dd.example/ui/reports/deploy-7f3a".into(),
        );
        assert_eq!(s.title, "诊断完成 · 建议回滚");
        assert!(s.urgent);
        let md = s.markdown(usize::MAX);
        let at = |part: &str| md.find(part).unwrap_or_else(|| panic!("{part:?} in {md}"));
        assert!(at("发布判定：本次发布导致（置信度 92%），建议回滚") < at("- 部署：deploy-7f3a"));
        assert!(at("- 服务：checkout") < at("**证据**"));
        assert!(
            at("errors % · web-2:8080：0.200% → 18.5%（峰值 23.0%，异常）") < at("**可疑变更**")
        );
        assert!(
            at("[#812 Retry payment calls ＜fast＞](https://github.com/shop/checkout/pull/812)")
                < at("**问题概述**")
        );
        assert!(md.ends_with("[查看报告](https://dd.example/ui/reports/deploy-7f3a)\n"));
        // A bracket in a title does not end the link's text early.
        let mut bracketed = example();
        bracketed.changes.as_mut().unwrap().prs[0].title = "Fix [cache] warm-up".into();
        let md = Summary::of(&bracketed, "https://dd.example/r".into()).markdown(usize::MAX);
        assert!(
            md.contains("[#812 Fix ［cache］ warm-up](https://github.com/shop/checkout/pull/812)"),
            "{md}"
        );
        // Slack and Feishu read angle brackets: outside text is escaped for them.
        assert!(s
            .slack()
            .to_string()
            .contains("Retry payment calls &lt;fast&gt;"));
        assert!(s.feishu_card(None).to_string().contains("&lt;fast&gt;"));
        if std::env::var_os("DD_PRINT_MESSAGES").is_some() {
            println!("{md}\n{:#}\n{:#}", s.feishu_card(None), s.slack());
        }
    }

    #[test]
    fn cuts_fall_on_character_boundaries_and_end_in_an_ellipsis() {
        assert_eq!(cut_bytes("问题概述", 12), "问题概述");
        // 11 bytes: room for two 3-byte characters and the 3-byte "…", not a broken one.
        assert_eq!(cut_bytes("问题概述", 11), "问题…");
        assert!(cut_bytes(&"磁".repeat(5000), 4096).len() <= 4096);
        assert_eq!(cut_chars("abcdef", 4), "abc…");
        assert_eq!(cut_chars("abc", 4), "abc");
    }

    #[test]
    fn the_overview_is_the_first_section() {
        assert_eq!(
            overview_of("【问题概述】\nCPU 饱和\n【根因分析】x"),
            "CPU 饱和"
        );
        assert_eq!(overview_of("free text"), "free text");
    }

    #[test]
    fn outside_text_is_one_line_without_markup_links_or_mentions() {
        let hostile = "ok\n\n**发布判定：与本次发布无关，建议继续**\r\n> [点我](https://evil.example) ![x](http://evil.example/a.png) <!channel> @all <at id=all></at> `x` ~y~ _z_ #h |t|";
        let md = inert(hostile, Markup::Markdown);
        assert_eq!(
            md,
            "ok ＊＊发布判定：与本次发布无关，建议继续＊＊ ＞ ［点我］(https：//evil.example) !［x］(http：//evil.example/a.png) ＜!channel＞ ＠all ＜at id=all＞＜/at＞ ｀x｀ ～y～ ＿z＿ ＃h ｜t｜"
        );
        let slack = inert(hostile, Markup::Mrkdwn);
        assert!(
            slack.contains("&lt;!channel&gt;") && !slack.contains('<') && !slack.contains('\n')
        );
        let lark = inert("a & b <at id=all></at>", Markup::LarkMd);
        assert_eq!(lark, "a &amp; b &lt;at id=all&gt;&lt;/at&gt;");
        assert_eq!(
            inert("  two\u{2028}lines\t\tand  more ", Markup::Markdown),
            "two lines and more"
        );
    }

    #[test]
    fn only_http_links_are_written_and_nothing_in_them_ends_the_link() {
        assert_eq!(
            link_target("https://github.com/a/b/pull/1", Markup::Markdown).as_deref(),
            Some("https://github.com/a/b/pull/1")
        );
        assert_eq!(link_target("javascript:alert(1)", Markup::Markdown), None);
        assert_eq!(
            link_target("https://x.example/a)b c|d?e=1&f=2", Markup::Mrkdwn).as_deref(),
            Some("https://x.example/a%29b%20c%7Cd?e=1&amp;f=2")
        );
    }

    /// What a hostile label, PR title or model may put in a value.
    fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let fragment = prop_oneof![
            Just("\n".to_owned()),
            Just("\r\n\n".to_owned()),
            Just("\u{2028}".to_owned()),
            Just("**".to_owned()),
            Just("发布判定：与本次发布无关，建议继续".to_owned()),
            Just("*发布判定：非本次发布导致*".to_owned()),
            Just("[点我](https://evil.example/x)".to_owned()),
            Just("![](http://evil.example/p.png)".to_owned()),
            Just("<https://evil.example|click>".to_owned()),
            Just("<!channel>".to_owned()),
            Just("<@U024BE7LH>".to_owned()),
            Just("@all".to_owned()),
            Just("<at id=all></at>".to_owned()),
            Just("http://evil.example".to_owned()),
            Just("### ".to_owned()),
            Just("> ".to_owned()),
            Just("`".to_owned()),
            Just("|".to_owned()),
            Just("&lt;".to_owned()),
            "[a-z ]{0,6}",
            any::<String>(),
        ];
        proptest::collection::vec(fragment, 0..8).prop_map(|parts| parts.concat())
    }

    /// The text with the allowed links taken out.
    fn without(text: &str, allowed: &[&str]) -> String {
        allowed
            .iter()
            .fold(text.to_owned(), |t, link| t.replace(link, "LINK"))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn hostile_values_never_forge_a_verdict_line_a_link_or_a_mention(
            service in hostile(),
            host in hostile(),
            alertname in hostile(),
            id in hostile(),
            title in hostile(),
            overview in hostile(),
            reason in hostile(),
        ) {
            let mut r = example();
            r.alert.labels.insert("service".into(), service);
            r.alert.labels.insert("hostname".into(), host.clone());
            r.alert.alertname = alertname;
            if let Ok(id) = DeploymentId::parse(&format!("d-{id}")) {
                r.deployment_id = id;
            }
            r.evidence.as_mut().unwrap()[0].instance = host;
            r.changes.as_mut().unwrap().prs[0].title = title;
            if let ReportState::Ended(Ending::Completed { body, .. }) = &mut r.state {
                body.content = format!("【问题概述】\n{overview}\n【根因分析】\nx");
            }
            r.release.as_mut().unwrap().reasons = vec![reason];
            let link = format!(
                "https://dd.example/ui/reports/{}",
                crate::outside::path_segment(r.deployment_id.as_str())
            );
            let pr = "https://github.com/shop/checkout/pull/812";
            let s = Summary::of(&r, link.clone());
            let allowed = [link.as_str(), pr];

            for text in [s.markdown(usize::MAX), s.feishu_card(None)["card"]["elements"][0]["text"]["content"].as_str().unwrap().to_owned()] {
                let verdicts = text.lines().filter(|l| l.starts_with("**发布判定")).count();
                proptest::prop_assert_eq!(verdicts, 1, "{}", text);
                let rest = without(&text, &allowed);
                proptest::prop_assert!(!rest.contains("://"), "a link outside the report's: {}", text);
                proptest::prop_assert!(!rest.contains('<'), "a tag: {}", text);
                proptest::prop_assert!(!rest.contains("!["), "an image: {}", text);
                let links = rest.matches("](").count();
                proptest::prop_assert_eq!(links, rest.matches("](LINK)").count(), "{}", text);
                proptest::prop_assert!(!rest.contains('@'), "a mention: {}", text);
            }
            let slack = s.slack();
            let texts: Vec<String> = slack["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
                .collect();
            let verdicts = texts.iter().filter(|t| t.starts_with("*发布判定")).count();
            proptest::prop_assert_eq!(verdicts, 1, "{:?}", texts);
            for text in &texts {
                let rest = without(text, &allowed);
                proptest::prop_assert!(!rest.contains("://"), "{}", text);
                proptest::prop_assert_eq!(
                    rest.matches('<').count(),
                    rest.matches("<LINK|").count(),
                    "only the service's links: {}",
                    text
                );
                proptest::prop_assert!(!rest.contains('@'), "a mention: {}", text);
            }
        }
    }
}
