//! The pages' words, in Chinese (the design's language, the default) and English
//! (`UI.Language: en`).

use crate::config::Language;
use crate::model::notify::{DeliveryState, Notification};
use crate::model::report::ReportStatus;
use crate::model::verdict::{Attribution, Recommendation};

/// Every label of the pages.
pub struct Text {
    pub lang: &'static str,
    pub reports: &'static str,
    pub report: &'static str,
    pub status: &'static str,
    pub verdict: &'static str,
    pub engine: &'static str,
    pub any: &'static str,
    pub filter: &'static str,
    pub created: &'static str,
    pub duration: &'static str,
    pub next_page: &'static str,
    pub no_reports: &'static str,
    pub deployment: &'static str,
    pub version: &'static str,
    pub confidence: &'static str,
    pub recommendation: &'static str,
    pub model_says: &'static str,
    pub failure: &'static str,
    pub evidence: &'static str,
    pub signal: &'static str,
    pub host: &'static str,
    pub baseline: &'static str,
    pub incident: &'static str,
    pub peak: &'static str,
    pub score: &'static str,
    pub charts: &'static str,
    pub released_hosts: &'static str,
    pub control_hosts: &'static str,
    pub release_time: &'static str,
    /// The chart marker of a change the verdict placed.
    pub change_time: &'static str,
    pub baseline_window: &'static str,
    pub incident_window: &'static str,
    pub no_data: &'static str,
    pub queries: &'static str,
    pub open_in_prometheus: &'static str,
    pub changes: &'static str,
    pub suspect: &'static str,
    pub related: &'static str,
    pub history: &'static str,
    pub measured: &'static str,
    pub measured_by: &'static str,
    pub evidence_at: &'static str,
    pub notifications: &'static str,
    pub feedback: &'static str,
    pub root_cause_correct: &'static str,
    pub comment: &'static str,
    pub send: &'static str,
    pub rediagnose: &'static str,
    pub rediagnose_hint: &'static str,
    pub pre_existing: &'static str,
    pub no_baseline: &'static str,
    pub alert: &'static str,
    pub back: &'static str,
}

/// Chinese.
pub const ZH: Text = Text {
    lang: "zh-CN",
    reports: "诊断报告",
    report: "报告",
    status: "状态",
    verdict: "发布判定",
    engine: "引擎",
    any: "全部",
    filter: "筛选",
    created: "创建时间",
    duration: "耗时",
    next_page: "下一页",
    no_reports: "没有报告。",
    deployment: "部署",
    version: "版本",
    confidence: "置信度",
    recommendation: "建议",
    model_says: "模型意见",
    failure: "失败原因",
    evidence: "证据",
    signal: "指标",
    host: "主机",
    baseline: "基线",
    incident: "故障期",
    peak: "峰值",
    score: "得分",
    charts: "指标走势",
    released_hosts: "已发布主机",
    control_hosts: "对照主机",
    release_time: "发布时间",
    change_time: "判定估计的变化时刻",
    baseline_window: "基线窗口",
    incident_window: "故障窗口",
    no_data: "无数据",
    queries: "PromQL 查询",
    open_in_prometheus: "在 Prometheus 中查看",
    changes: "变更",
    suspect: "可疑度",
    related: "相关告警",
    history: "历史版本",
    measured: "测量说明",
    measured_by: "诊断方式",
    evidence_at: "证据采集截至",
    notifications: "通知",
    feedback: "反馈",
    root_cause_correct: "根因正确",
    comment: "备注",
    send: "提交",
    rediagnose: "重新诊断",
    rediagnose_hint: "需要写入令牌",
    pre_existing: "发布前已存在",
    no_baseline: "无基线",
    alert: "告警",
    back: "返回列表",
};

/// English.
pub const EN: Text = Text {
    lang: "en",
    reports: "Diagnosis reports",
    report: "Report",
    status: "Status",
    verdict: "Release verdict",
    engine: "Engine",
    any: "any",
    filter: "Filter",
    created: "Created",
    duration: "Took",
    next_page: "Next page",
    no_reports: "No reports.",
    deployment: "Deployment",
    version: "Version",
    confidence: "confidence",
    recommendation: "Recommendation",
    model_says: "The model says",
    failure: "Why it failed",
    evidence: "Evidence",
    signal: "Signal",
    host: "Host",
    baseline: "Baseline",
    incident: "Incident",
    peak: "Peak",
    score: "Score",
    charts: "Signals over time",
    released_hosts: "released hosts",
    control_hosts: "control hosts",
    release_time: "release",
    change_time: "change found by the verdict",
    baseline_window: "baseline window",
    incident_window: "incident window",
    no_data: "no data",
    queries: "PromQL queries",
    open_in_prometheus: "open in Prometheus",
    changes: "Changes",
    suspect: "suspect",
    related: "Related alerts",
    history: "History",
    measured: "How this was measured",
    measured_by: "Written by",
    evidence_at: "Evidence measured up to",
    notifications: "Notifications",
    feedback: "Feedback",
    root_cause_correct: "Root cause correct",
    comment: "Comment",
    send: "Send",
    rediagnose: "Re-diagnose",
    rediagnose_hint: "needs the write token",
    pre_existing: "there before the release",
    no_baseline: "no baseline",
    alert: "Alert",
    back: "All reports",
};

impl Text {
    /// The words of `language`.
    pub fn of(language: Language) -> &'static Text {
        match language {
            Language::Zh => &ZH,
            Language::En => &EN,
        }
    }

    /// A status in this language.
    pub fn status_name(&self, s: ReportStatus) -> &'static str {
        match (self.lang, s) {
            ("en", s) => s.as_str(),
            (_, ReportStatus::Generating) => "生成中",
            (_, ReportStatus::Completed) => "已完成",
            (_, ReportStatus::Failed) => "失败",
        }
    }

    /// A verdict in this language.
    pub fn attribution(&self, a: Attribution) -> &'static str {
        match (self.lang, a) {
            ("en", Attribution::Release) => "caused by this release",
            ("en", Attribution::NotRelease) => "not caused by this release",
            ("en", Attribution::Inconclusive) => "inconclusive",
            (_, a) => a.zh(),
        }
    }

    /// Where a rollback request stands, in a line of the verdict's banner.
    pub fn rollback_request(&self, n: &Notification) -> String {
        let en = self.lang == "en";
        let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let why = n.last_error.clone().unwrap_or_default();
        match (n.state, en) {
            (DeliveryState::DryRun, false) => "自动回滚（dry-run）：本会向平台请求回滚，未发送（Release.AutoRollback: dry-run）".into(),
            (DeliveryState::DryRun, true) => "Automatic rollback (dry-run): a rollback would have been requested; nothing was sent (Release.AutoRollback: dry-run)".into(),
            (DeliveryState::Delivered, false) => format!(
                "自动回滚：已按部署的回滚策略请求，平台于 {} 接受（2xx）",
                n.delivered_at.map(when).unwrap_or_default()
            ),
            (DeliveryState::Delivered, true) => format!(
                "Automatic rollback: requested under the deployment's rollback policy, accepted by the platform at {} (2xx)",
                n.delivered_at.map(when).unwrap_or_default()
            ),
            (DeliveryState::Pending, false) if n.attempts == 0 => "自动回滚：已请求，正在发送".into(),
            (DeliveryState::Pending, true) if n.attempts == 0 => "Automatic rollback: requested, being sent".into(),
            (DeliveryState::Pending, false) => format!("自动回滚：已请求，平台尚未接受（已尝试 {} 次：{why}），将重试", n.attempts),
            (DeliveryState::Pending, true) => format!("Automatic rollback: requested, not yet accepted ({} attempts: {why}); retrying", n.attempts),
            (_, false) => format!("自动回滚：请求未被接受，已放弃（{why}）：请手动回滚"),
            (_, true) => format!("Automatic rollback: the request was not accepted and is given up ({why}): roll back by hand"),
        }
    }

    /// A recommendation in this language.
    pub fn recommendation_name(&self, r: Recommendation) -> &'static str {
        match (self.lang, r) {
            ("en", Recommendation::Rollback) => "roll back",
            ("en", Recommendation::Hold) => "hold the rollout",
            ("en", Recommendation::Proceed) => "proceed",
            (_, r) => r.zh(),
        }
    }
}
