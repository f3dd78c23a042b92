//! The pages as HTML. Every outside text (alert labels and annotations, PR titles, the
//! model's answer) goes through maud's escaping; the only unescaped markup is the charts'
//! SVG, whose numbers the service formats and whose labels maud escaped.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::chart::{self, Chart, Span};
use super::text::Text;
use crate::model::evidence::format_value;
use crate::model::report::{HistoryEntry, Report, ReportStatus};
use crate::model::verdict::Recommendation;

/// The frame of every page.
pub fn page(t: &Text, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(t.lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · deploy-diagnosis" }
                link rel="stylesheet" href="/ui/assets/style.css";
            }
            body {
                header.top { a href="/ui/" { "deploy-diagnosis" } }
                main { (body) }
            }
        }
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn status_badge(t: &Text, s: ReportStatus) -> Markup {
    html! { span class=(format!("badge status-{}", s.as_str())) { (t.status_name(s)) } }
}

fn recommendation_class(r: Recommendation) -> &'static str {
    match r {
        Recommendation::Rollback => "rollback",
        Recommendation::Hold => "hold",
        Recommendation::Proceed => "proceed",
    }
}

/// The filters of the list, as selected.
pub struct Filters<'a> {
    pub status: &'a str,
    pub verdict: &'a str,
    pub engine: &'a str,
}

fn select(name: &str, label: &str, any: &str, chosen: &str, options: &[(&str, &str)]) -> Markup {
    html! {
        label {
            (label) " "
            select name=(name) {
                option value="" selected[chosen.is_empty()] { (any) }
                @for (value, text) in options {
                    option value=(value) selected[chosen == *value] { (text) }
                }
            }
        }
    }
}

/// The list of reports.
pub fn list(t: &Text, reports: &[Report], filters: &Filters, next: Option<String>) -> Markup {
    use crate::model::report::Engine;
    use crate::model::verdict::Attribution;
    let statuses: Vec<(&str, &str)> = [
        ReportStatus::Generating,
        ReportStatus::Completed,
        ReportStatus::Failed,
    ]
    .into_iter()
    .map(|s| (s.as_str(), t.status_name(s)))
    .collect();
    let verdicts: Vec<(&str, &str)> = Attribution::ALL
        .into_iter()
        .map(|a| (a.as_str(), t.attribution(a)))
        .collect();
    let engines: Vec<(&str, &str)> = [Engine::Ai, Engine::Evidence]
        .into_iter()
        .map(|e| (e.as_str(), e.as_str()))
        .collect();
    let next_link = next.map(|cursor| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", filters.status),
            ("verdict", filters.verdict),
            ("engine", filters.engine),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.append_pair("cursor", &cursor);
        format!("/ui/?{}", q.finish())
    });
    page(
        t,
        t.reports,
        html! {
            h1 { (t.reports) }
            form.filters method="get" action="/ui/" {
                (select("status", t.status, t.any, filters.status, &statuses))
                (select("verdict", t.verdict, t.any, filters.verdict, &verdicts))
                (select("engine", t.engine, t.any, filters.engine, &engines))
                button type="submit" { (t.filter) }
            }
            @if reports.is_empty() {
                p.empty { (t.no_reports) }
            } @else {
                table.reports {
                    thead { tr {
                        th { (t.deployment) } th { (t.status) } th { (t.verdict) }
                        th { (t.engine) } th { (t.alert) } th { (t.created) } th { (t.duration) }
                    } }
                    tbody {
                        @for r in reports {
                            tr {
                                td { a href=(format!("/ui/reports/{}", r.deployment_id)) { (r.deployment_id.as_str()) } }
                                td { (status_badge(t, r.status())) }
                                td {
                                    @if let Some(v) = &r.release {
                                        span class=(format!("badge rec-{}", recommendation_class(v.recommendation))) {
                                            (t.attribution(v.verdict)) " · " (t.recommendation_name(v.recommendation))
                                        }
                                    }
                                }
                                td { @if let Some(e) = r.engine() { (e.as_str()) } }
                                td { (r.alert.alertname) }
                                td { (when(r.created_time)) }
                                td { @if let Some(ms) = r.duration_ms { (format!("{:.1} s", ms as f64 / 1000.0)) } }
                            }
                        }
                    }
                }
            }
            @if let Some(href) = next_link {
                p.paging { a href=(href) { (t.next_page) " →" } }
            }
        },
    )
}

/// The four sections of a report's content, each with its heading (text before the first
/// heading is kept as its own section).
fn sections(content: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix('【') {
            let heading = body.find('】').map(|end| (&body[..end], end));
            if let Some((heading, end)) =
                heading.filter(|(h, _)| !h.contains(['【', '\n']) && h.chars().count() <= 20)
            {
                let after = &body[end + '】'.len_utf8()..];
                let next = after.find('【').unwrap_or(after.len());
                out.push((heading.to_owned(), after[..next].trim().to_owned()));
                rest = &after[next..];
                continue;
            }
        }
        let next = rest
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '【')
            .map_or(rest.len(), |(i, _)| i);
        out.push((String::new(), rest[..next].trim().to_owned()));
        rest = &rest[next..];
    }
    out
}

/// Links of the page: Prometheus graphs.
pub struct Links<'a> {
    pub prometheus: &'a str,
}

impl Links<'_> {
    fn graph(&self, query: &str) -> String {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("g0.expr", query)
            .append_pair("g0.tab", "0")
            .finish();
        format!("{}/graph?{q}", self.prometheus.trim_end_matches('/'))
    }
}

/// A report.
#[allow(clippy::too_many_arguments)]
pub fn report(
    t: &Text,
    r: &Report,
    history: &[HistoryEntry],
    charts: &[Chart],
    span: &Span,
    links: &Links,
    forms: (&str, &str),
    prometheus_url: &str,
) -> Markup {
    let (rediagnose_token, feedback_token) = forms;
    let id = r.deployment_id.as_str();
    let labels = [
        t.baseline_window,
        t.incident_window,
        t.release_time,
        t.change_time,
    ];
    page(
        t,
        id,
        html! {
            p.back { a href="/ui/" { "← " (t.back) } }
            h1 { (t.report) " " (id) " " (status_badge(t, r.status())) }
            p.meta {
                (t.version) " " (r.version) " · " (t.created) " " (when(r.created_time))
                @if let Some(ms) = r.duration_ms { " · " (t.duration) " " (format!("{:.1} s", ms as f64 / 1000.0)) }
                @if !r.alert.alertname.is_empty() { " · " (t.alert) " " (r.alert.alertname) }
            }
            @if let Some(v) = &r.release {
                section class=(format!("banner rec-{}", recommendation_class(v.recommendation))) {
                    p.verdict {
                        strong { (t.verdict) "：" (t.attribution(v.verdict)) }
                        " (" (t.confidence) " " (format!("{:.0}%", v.confidence * 100.0)) ") · "
                        strong { (t.recommendation) "：" (t.recommendation_name(v.recommendation)) }
                    }
                    @if !v.reasons.is_empty() {
                        ul { @for reason in &v.reasons { li { (reason) } } }
                    }
                    @if let Some(m) = &v.model {
                        p.model { (t.model_says) "：" (m.says) }
                    }
                    @if let Some(n) = r.notifications.iter().find(|n| n.is_rollback()) {
                        p.rollback { strong { (t.rollback_request(n)) } }
                    }
                }
            }
            @if let Some(error) = r.error() {
                section.failure { h2 { (t.failure) } p { (error) } }
            }
            @if let Some(body) = r.body() {
                section.content {
                    @for (heading, text) in sections(&body.content) {
                        @if !heading.is_empty() { h2 { "【" (heading) "】" } }
                        p.text { (text) }
                    }
                }
            }
            @if let Some(items) = r.evidence.as_ref().filter(|e| !e.is_empty()) {
                section {
                    h2 { (t.evidence) }
                    table.evidence {
                        thead { tr {
                            th { (t.signal) } th { (t.host) } th { (t.baseline) } th { (t.incident) }
                            th { (t.peak) } th { (t.score) } th { (t.status) } th { "PromQL" }
                        } }
                        tbody {
                            @for item in items {
                                @let s = &item.scored;
                                tr {
                                    td { (item.signal) }
                                    td { (item.instance) }
                                    td { (s.baseline.map_or_else(|| t.no_data.to_owned(), |b| format_value(b, &item.unit))) }
                                    td { (format_value(s.incident, &item.unit)) }
                                    td { (format_value(s.peak, &item.unit)) }
                                    td { (format!("{:.1}", s.score)) }
                                    td {
                                        (if t.lang == "en" { format!("{:?}", s.verdict).to_lowercase() } else { s.verdict.zh().to_owned() })
                                        @if item.pre_existing { " · " (t.pre_existing) }
                                        @if item.no_baseline { " · " (t.no_baseline) }
                                    }
                                    td { @if !item.query.is_empty() { a href=(links.graph(&item.query)) { (t.open_in_prometheus) } } }
                                }
                            }
                        }
                    }
                    @if let Some(u) = &r.unmeasured {
                        p.unmeasured { (if t.lang == "en" { u.sentence() } else { u.zh() }) }
                    }
                }
            }
            @if !charts.is_empty() {
                section.charts {
                    h2 { (t.charts) }
                    p.legend {
                        span.key-released { (t.released_hosts) } " "
                        span.key-control { (t.control_hosts) } " "
                        span.key-release { (t.release_time) } " "
                        span.key-change { (t.change_time) } " "
                        span.key-baseline { (t.baseline_window) } " "
                        span.key-incident { (t.incident_window) }
                    }
                    div.chart-grid {
                        @for c in charts {
                            figure {
                                figcaption { (c.title) " " a href=(links.graph(&c.query)) { "↗" } }
                                (chart::svg(c, span, labels))
                                @if let Some(e) = &c.error { p.chart-error { (e) } }
                                @else if c.lines.is_empty() { p.chart-error { (t.no_data) } }
                            }
                        }
                    }
                }
            }
            @if let Some(body) = r.body().filter(|b| !b.prom_ql.is_empty()) {
                section {
                    h2 { (t.queries) }
                    ul.queries {
                        @for q in &body.prom_ql {
                            li { code { (q) } " " a href=(links.graph(q)) { (t.open_in_prometheus) } }
                        }
                    }
                }
            }
            @if let Some(c) = &r.changes {
                section {
                    h2 { (t.changes) }
                    p { code { (c.repo) } " " (c.range)
                        @if let Some(u) = &c.release_url { " · " a href=(u) { (u) } } }
                    @if !c.prs.is_empty() {
                        ul.prs {
                            @for pr in &c.prs {
                                li {
                                    a href=(pr.url) { "#" (pr.number) " " (pr.title) }
                                    " · " (pr.author) " · " (t.suspect) " " (format!("{:.2}", pr.suspect))
                                }
                            }
                        }
                    }
                    @for note in &c.notes { p.note { (note) } }
                }
            }
            @if !r.related_alerts.is_empty() {
                section {
                    h2 { (t.related) }
                    ul {
                        @for a in &r.related_alerts {
                            li {
                                (when(a.received_at)) " · " (a.alert.alertname) " · " (a.alert.status.as_str())
                                @for (k, v) in &a.alert.labels { " " code { (k) "=" (v) } }
                            }
                        }
                    }
                }
            }
            section {
                h2 { (t.measured) }
                dl.measured {
                    dt { (t.measured_by) }
                    dd {
                        @if let Some(e) = r.engine() { (e.as_str()) }
                        @if let Some(k) = r.runner { " · " (k.as_str()) }
                        @if let Some(u) = &r.usage { " · " (u.input_tokens) " + " (u.output_tokens) " tokens, " (u.tool_calls) " tool calls" }
                    }
                    @if let Some(at) = r.evidence_until {
                        dt { (t.evidence_at) }
                        dd { (when(at)) " · Prometheus " code { (prometheus_url) } }
                    }
                    dt { (t.baseline_window) }
                    dd { (when(span.from)) " – " (when(span.incident)) }
                    dt { (t.incident_window) }
                    dd { (when(span.incident)) " – " (when(span.to)) }
                    @for (k, v) in &r.alert.labels { dt { (k) } dd { (v) } }
                    @for (k, v) in &r.alert.annotations { dt { (k) } dd { (v) } }
                }
            }
            @if !r.notifications.is_empty() {
                section {
                    h2 { (t.notifications) }
                    ul { @for n in &r.notifications {
                        li { (n.sink) " · v" (n.version) " · " (format!("{:?}", n.state).to_lowercase()) " · " (n.attempts)
                            @if let Some(e) = &n.last_error { " · " (e) } }
                    } }
                }
            }
            @if history.len() > 1 {
                section {
                    h2 { (t.history) }
                    table.history {
                        thead { tr { th { (t.version) } th { (t.status) } th { (t.created) } th { (t.duration) } } }
                        tbody { @for h in history { tr {
                            td { (h.version) } td { (status_badge(t, h.status)) } td { (when(h.created_time)) }
                            td { @if let Some(ms) = h.duration_ms { (format!("{:.1} s", ms as f64 / 1000.0)) } }
                        } } }
                    }
                }
            }
            section.forms {
                @if r.status() != ReportStatus::Generating {
                    form method="post" action=(format!("/ui/reports/{id}/feedback")) {
                        h2 { (t.feedback) }
                        input type="hidden" name="csrf" value=(feedback_token);
                        label { (t.score) " "
                            select name="score" { @for s in 1..=5 { option value=(s) selected[s == 3] { (s) } } } }
                        label { input type="checkbox" name="rootCauseCorrect" value="true"; " " (t.root_cause_correct) }
                        label.wide { (t.comment) textarea name="comment" maxlength="2000" rows="3" {} }
                        button type="submit" { (t.send) }
                    }
                }
                form method="post" action=(format!("/ui/reports/{id}/rediagnose")) {
                    input type="hidden" name="csrf" value=(rediagnose_token);
                    button type="submit" { (t.rediagnose) } " " small { (t.rediagnose_hint) }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_splits_into_its_sections() {
        let s = sections("【问题概述】\nCPU\n【根因分析】\n压测【x\n【解决方案】\n扩容");
        assert_eq!(
            s,
            vec![
                ("问题概述".into(), "CPU".into()),
                ("根因分析".into(), "压测".into()),
                (String::new(), "【x".into()),
                ("解决方案".into(), "扩容".into()),
            ]
        );
        assert_eq!(sections("plain"), vec![(String::new(), "plain".into())]);
    }
}
