//! Pulling the report out of the model's answer. The answer is supposed to be one JSON
//! object, but models wrap it in prose and code fences.
//!
//! The design pulled it out with a regex that cannot see objects nested more than one
//! level deep nor braces inside strings. This uses a real JSON parser from each `{` and
//! keeps the first object that has the report's shape; reasoning (`<think>…</think>`) is
//! left out first. When no object parses as written, the answer is read again leniently
//! ([`lenient`]): what real models get wrong (raw line breaks in strings, PromQL's quotes
//! unescaped, a trailing comma, the answer cut before its end) is repaired, and each
//! repair is named. The native runner and the Python runner both end here.

use serde_json::Value;

use super::lenient::{self, Repair};
use crate::model::report::ReportBody;

/// The sections of the design's report, in order.
pub const SECTIONS: [&str; 4] = [
    "【问题概述】",
    "【根因分析】",
    "【影响范围】",
    "【解决方案】",
];

/// How much of the answer is searched; a model's report is far smaller than this.
const MAX_ANSWER_BYTES: usize = 512 * 1024;
/// Parse attempts before giving up on pathological input.
const MAX_ATTEMPTS: usize = 2_000;

/// What the model's answer holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A report, with the repairs it took (none when it was valid JSON).
    Report(ReportBody, Vec<Repair>),
    /// No usable report; the reason says what was missing.
    Unusable(String),
}

/// The answer without the model's reasoning: `<think>…</think>` blocks (Qwen3,
/// DeepSeek-R1 as vLLM, Ollama and llama.cpp serve them), and everything before a lone
/// `</think>` (a template that opened the block in the prompt). An unclosed `<think>`
/// leaves nothing: the model never came to its answer.
pub fn without_reasoning(text: &str) -> String {
    const OPEN: &str = "<think>";
    const CLOSE: &str = "</think>";
    let mut rest = text;
    if let (Some(close), open) = (rest.find(CLOSE), rest.find(OPEN)) {
        if open.is_none_or(|o| o > close) {
            rest = &rest[close + CLOSE.len()..];
        }
    }
    let mut out = String::with_capacity(rest.len());
    while let Some(open) = rest.find(OPEN) {
        out.push_str(&rest[..open]);
        match rest[open..].find(CLOSE) {
            Some(close) => rest = &rest[open + close + CLOSE.len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Finds the report in the model's answer (free text).
pub fn find_report(text: &str) -> Answer {
    let text = &without_reasoning(truncate(text, MAX_ANSWER_BYTES));
    if text.trim().is_empty() {
        return Answer::Unusable("the model's answer is empty".into());
    }
    let mut saw_object = false;
    let mut shape_problem = None;
    let mut attempts = 0;
    let mut from = 0;
    while let Some(rel) = text[from..].find('{') {
        let start = from + rel;
        attempts += 1;
        if attempts > MAX_ATTEMPTS {
            break;
        }
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(Value::Object(map))) => {
                saw_object = true;
                let consumed = stream.byte_offset();
                match validate(Value::Object(map)) {
                    Ok(body) => return first_run(body, Vec::new()),
                    Err(problem) => {
                        shape_problem.get_or_insert(problem);
                        // Objects nested in this one are not reports either (a report is a
                        // top-level answer); skip past it.
                        from = start + consumed.max(1);
                        continue;
                    }
                }
            }
            _ => from = start + 1,
        }
    }
    match repaired(text) {
        Ok((body, repairs)) => return first_run(body, repairs),
        Err(Some(problem)) => {
            saw_object = true;
            shape_problem.get_or_insert(problem);
        }
        Err(None) => {}
    }
    Answer::Unusable(match (saw_object, shape_problem) {
        (_, Some(problem)) => format!("the model's answer has JSON but not a report: {problem}"),
        _ => "the model's answer has no JSON object".into(),
    })
}

/// The first report the lenient reader finds, from the first few `{`, the answer's last
/// code fence taken off (a cut answer leaves its closing fence inside the string); else
/// what is wrong with the first object it read (`None`: it read none).
fn repaired(text: &str) -> Result<(ReportBody, Vec<Repair>), Option<String>> {
    const CANDIDATES: usize = 8;
    let text = text.trim_end();
    let text = text.strip_suffix("```").unwrap_or(text).trim_end();
    let mut problem = None;
    for (start, _) in text.match_indices('{').take(CANDIDATES) {
        let Some((value, repairs)) = lenient::object(&text[start..]) else {
            continue;
        };
        match validate(value) {
            Ok(body) => return Ok((body, repairs)),
            Err(why) => {
                problem.get_or_insert(why);
            }
        }
    }
    Err(problem)
}

/// Checks the design's report shape: `{"promQL": [string], "content": non-empty string}`.
fn validate(value: Value) -> Result<ReportBody, String> {
    let Value::Object(map) = value else {
        return Err("not an object".into());
    };
    let prom_ql = match map.get("promQL") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|q| {
                q.as_str()
                    .map(str::to_owned)
                    .ok_or("promQL has a non-string item")
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("promQL is not an array".into()),
        None => return Err("no \"promQL\" field".into()),
    };
    let content = match map.get("content") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("content is empty".into()),
        Some(Value::Object(sections)) => written_out(sections)?,
        Some(_) => return Err("content is not a string".into()),
        None => return Err("no \"content\" field".into()),
    };
    // The design's report is the four sections: a small model that echoes its prompt or
    // writes one paragraph has written no report, however valid its JSON.
    let missing: Vec<&str> = SECTIONS
        .iter()
        .copied()
        .filter(|s| !content.contains(s))
        .collect();
    if !missing.is_empty() {
        return Err(format!("content lacks the sections {}", missing.join("")));
    }
    let empty = empty_sections(&content);
    if !empty.is_empty() {
        return Err(format!(
            "the sections {} say nothing (the format's placeholder)",
            empty.join("")
        ));
    }
    Ok(ReportBody { prom_ql, content })
}

/// The design's content string from the sections as the report's schema asks for them
/// (`{"【问题概述】": "…", …}`), in the design's order whatever order they came in; a
/// heading the model wrote again at the start of its own text is not doubled.
fn written_out(sections: &serde_json::Map<String, Value>) -> Result<String, String> {
    let mut content = String::new();
    for heading in SECTIONS {
        let Some(text) = sections.get(heading) else {
            continue;
        };
        let Some(text) = text.as_str() else {
            return Err(format!("content's {heading} is not a string"));
        };
        let text = text.trim();
        let text = text.strip_prefix(heading).unwrap_or(text).trim_start();
        if !content.is_empty() {
            content.push('\n');
        }
        content.push_str(heading);
        content.push('\n');
        content.push_str(text);
    }
    if content.is_empty() {
        return Err("content has none of the sections as keys".into());
    }
    Ok(content)
}

/// The report with its content cut before the first heading that repeats one already
/// written once all four are there: a small model that loops writes the four sections
/// again and again, each time with figures further from what it measured, until its token
/// limit. What comes after the first run is dropped, and the repair is named.
fn first_run(mut body: ReportBody, mut repairs: Vec<Repair>) -> Answer {
    let mut headings: Vec<(usize, &str)> = SECTIONS
        .iter()
        .flat_map(|s| body.content.match_indices(s))
        .collect();
    headings.sort_unstable();
    let mut seen: Vec<&str> = Vec::with_capacity(SECTIONS.len());
    let mut cut = None;
    for (at, heading) in headings {
        if !seen.contains(&heading) {
            seen.push(heading);
        } else if seen.len() == SECTIONS.len() {
            cut = Some(at);
            break;
        }
    }
    if let Some(at) = cut {
        body.content.truncate(at);
        body.content.truncate(body.content.trim_end().len());
        repairs.push(Repair::RepeatedSections);
    }
    Answer::Report(body, repairs)
}

/// The sections whose text holds no letter, digit or ideograph: a small model copies the
/// format's `【根因分析】…` and has written no report.
pub fn empty_sections(content: &str) -> Vec<&'static str> {
    SECTIONS
        .iter()
        .copied()
        .filter(|section| {
            let Some(at) = content.find(section) else {
                return false;
            };
            let body = &content[at + section.len()..];
            let end = SECTIONS
                .iter()
                .filter_map(|s| body.find(s))
                .min()
                .unwrap_or(body.len());
            !body[..end].chars().any(char::is_alphanumeric)
        })
        .collect()
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The last `max` bytes of `s`, cut on a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A content of the four sections.
    const FOUR: &str = "【问题概述】a【根因分析】b【影响范围】c【解决方案】d";

    #[test]
    fn the_formats_placeholder_is_no_report() {
        // What Qwen2.5-Coder 0.5B answered under a JSON schema (llama.cpp, 2026-12-06).
        let copied = r#"{"promQL": [], "content": "【问题概述】...【根因分析】...【影响范围】...【解决方案】..."}"#;
        match find_report(copied) {
            Answer::Unusable(why) => assert!(
                why.contains(
                    "the sections 【问题概述】【根因分析】【影响范围】【解决方案】 say nothing"
                ),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            empty_sections("【问题概述】CPU 饱和【根因分析】…… 【影响范围】web-1【解决方案】。"),
            ["【根因分析】", "【解决方案】"]
        );
        assert!(empty_sections(FOUR).is_empty());
    }

    #[test]
    fn a_report_written_again_and_again_keeps_its_first_run() {
        let looped =
            format!(r#"{{"promQL": [], "content": "{FOUR}\n{FOUR}\n【问题概述】e【根因分析】"}}"#);
        match find_report(&looped) {
            Answer::Report(body, repairs) => {
                assert_eq!(body.content, FOUR);
                assert_eq!(repairs, [Repair::RepeatedSections]);
            }
            other => panic!("{other:?}"),
        }
        // A heading named again inside the first run (before all four are there) is the
        // model's own reference, not a loop: nothing is cut.
        let cited = r#"{"promQL": [], "content": "【问题概述】a【根因分析】见【问题概述】【影响范围】c【解决方案】d"}"#;
        match find_report(cited) {
            Answer::Report(body, repairs) => {
                assert!(body.content.ends_with("【解决方案】d"), "{}", body.content);
                assert!(repairs.is_empty(), "{repairs:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_content_of_the_four_sections_as_keys_is_written_out_in_order() {
        // What a server holding the model to the report's schema returns.
        let body = report(
            r#"{"promQL": ["up"], "content": {"【问题概述】": "CPU 饱和", "【根因分析】": "【根因分析】stress-ng 占满 2 核", "【影响范围】": "web-1", "【解决方案】": "停掉 stress-ng"}}"#,
        );
        assert_eq!(
            body.content,
            "【问题概述】\nCPU 饱和\n【根因分析】\nstress-ng 占满 2 核\n【影响范围】\nweb-1\n【解决方案】\n停掉 stress-ng"
        );
        let shuffled = report(
            r#"{"promQL": [], "content": {"【解决方案】": "d", "【问题概述】": "a", "【影响范围】": "c", "【根因分析】": "b"}}"#,
        );
        assert_eq!(
            shuffled.content,
            "【问题概述】\na\n【根因分析】\nb\n【影响范围】\nc\n【解决方案】\nd"
        );
        for (answer, why) in [
            (
                r#"{"promQL": [], "content": {"【问题概述】": "a", "【根因分析】": "b"}}"#,
                "content lacks the sections 【影响范围】【解决方案】",
            ),
            (
                r#"{"promQL": [], "content": {"overview": "a"}}"#,
                "content has none of the sections as keys",
            ),
            (
                r#"{"promQL": [], "content": {"【问题概述】": 1}}"#,
                "content's 【问题概述】 is not a string",
            ),
        ] {
            match find_report(answer) {
                Answer::Unusable(problem) => assert!(problem.ends_with(why), "{problem}"),
                other => panic!("{answer}: {other:?}"),
            }
        }
    }

    fn report(text: &str) -> ReportBody {
        match find_report(text) {
            Answer::Report(r, repairs) => {
                assert!(repairs.is_empty(), "{repairs:?}");
                r
            }
            other => panic!("expected a report, got {other:?}"),
        }
    }

    #[test]
    fn reasoning_is_left_out() {
        assert_eq!(
            without_reasoning("<think>{\"promQL\": []}</think>answer"),
            "answer"
        );
        assert_eq!(without_reasoning("plan...</think>\nanswer"), "\nanswer");
        assert_eq!(without_reasoning("a<think>b</think>c<think>d"), "ac");
        assert_eq!(without_reasoning("no reasoning"), "no reasoning");
        let Answer::Unusable(why) =
            find_report("<think>{\"promQL\": [\"up\"], \"content\": \"x\"}")
        else {
            panic!("a report inside unfinished reasoning is not the answer")
        };
        assert!(why.contains("empty"), "{why}");
    }

    #[test]
    fn an_almost_report_is_repaired_and_the_repairs_named() {
        // Qwen2.5-Coder-1.5B through llama.cpp, as the issue found it: fenced, raw line
        // breaks in the string, and cut before its closing quote and brace.
        let answer = "```json\n{\n  \"promQL\": [\"100 - avg(rate(node_cpu_seconds_total{mode=\\\"idle\\\"}[5m])) * 100\"],\n  \"content\": \"【问题概述】\nCPU 饱和\n【根因分析】\n压测...\n【影响范围】\nweb-1\n【解决方案】\n扩容...\n```";
        let Answer::Report(body, repairs) = find_report(answer) else {
            panic!("repaired")
        };
        assert_eq!(
            body.prom_ql,
            vec!["100 - avg(rate(node_cpu_seconds_total{mode=\"idle\"}[5m])) * 100"]
        );
        assert_eq!(
            body.content,
            "【问题概述】\nCPU 饱和\n【根因分析】\n压测...\n【影响范围】\nweb-1\n【解决方案】\n扩容..."
        );
        assert_eq!(repairs, vec![Repair::ControlCharacter, Repair::Unclosed]);
    }

    #[test]
    fn plain_json() {
        let r = report(&format!("{{\"promQL\":[\"up\"],\"content\":\"{FOUR}\"}}\n"));
        assert_eq!(r.prom_ql, vec!["up"]);
        assert_eq!(r.content, FOUR);
    }

    #[test]
    fn fenced_json_with_prose_nesting_and_braces_in_strings() {
        let out = format!("好的，以下是报告：\n```json\n{{\"promQL\": [\"rate(x{{job=\\\"a\\\"}}[5m])\"], \"content\": \"}} {{ tricky{FOUR}\", \"meta\": {{\"a\": {{\"b\": {{\"c\": 1}}}}}}}}\n```\n希望有帮助");
        let r = report(&out);
        assert_eq!(r.prom_ql, vec!["rate(x{job=\"a\"}[5m])"]);
        assert_eq!(r.content, format!("}} {{ tricky{FOUR}"));
    }

    #[test]
    fn the_first_object_of_the_report_shape_wins() {
        let r = report(&format!(
            "{{\"promQL\":[],\"content\":\"a{FOUR}\"}}\n#####\n{{\"promQL\":[],\"content\":\"b{FOUR}\"}}"
        ));
        assert_eq!(r.content, format!("a{FOUR}"));
    }

    #[test]
    fn objects_of_the_wrong_shape_are_explained() {
        let Answer::Unusable(why) = find_report("{\"promQL\":\"up\",\"content\":\"x\"}") else {
            panic!()
        };
        assert!(why.contains("promQL is not an array"), "{why}");
        let Answer::Unusable(why) =
            find_report("{\"promQL\":[],\"content\":\"告警系统转来的原始数据【问题概述】\"}")
        else {
            panic!("an echo of the prompt is no report")
        };
        assert!(
            why.contains("content lacks the sections 【根因分析】【影响范围】【解决方案】"),
            "{why}"
        );
        let Answer::Unusable(why) = find_report("I could not decide.") else {
            panic!()
        };
        assert!(why.contains("no JSON object"), "{why}");
        let Answer::Unusable(why) = find_report("  \n") else {
            panic!()
        };
        assert!(why.contains("empty"), "{why}");
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in "\\PC*") {
            let _ = find_report(&s);
        }

        #[test]
        fn never_panics_on_json_like_noise(s in "[{}\\[\\]\":,a-z0-9\\\\ \n#]{0,400}") {
            let _ = find_report(&s);
        }

        #[test]
        fn finds_a_report_wrapped_in_any_prose(pre in "[^{#]{0,80}", post in "\\PC{0,80}", q in "[a-z_{}\\[\\]\"]{0,20}") {
            let body = serde_json::json!({"promQL": [q.clone()], "content": FOUR}).to_string();
            let got = report(&format!("{pre}{body}{post}"));
            prop_assert_eq!(got.prom_ql, vec![q]);
        }

        #[test]
        fn cuts_stay_on_char_boundaries(s in "\\PC{0,60}", n in 0usize..80) {
            let _ = truncate(&s, n);
            let _ = tail(&s, n);
        }
    }
}
