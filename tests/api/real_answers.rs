//! What real models answered, replayed through both runners: transcripts recorded from
//! Qwen2.5-Coder through llama.cpp's server (`scripts/local-llm`, recorded with
//! `tests/fixtures/record_llm.py`; each fixture names its model, server and date). The
//! real Prometheus and its MCP server answer the tool calls.

use serde_json::Value;

use crate::fake_llm::{transcript, Script};
use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options, TestApp};

async fn diagnose(app: &TestApp, prefix: &str) -> Value {
    let id = deployment_id(prefix);
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.wait_final(&id).await
}

/// The report's `promQL`.
fn prom_ql(report: &Value) -> Vec<&str> {
    report["promQL"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect()
}

fn runners() -> [(&'static str, bool); 2] {
    [("native", true), ("python", false)]
}

#[tokio::test]
async fn a_tool_call_written_as_text_is_run_and_an_answer_without_the_sections_is_no_report() {
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            evidence: true,
            script: Script::Replay(transcript("qwen2.5-coder-0.5b-text-call-then-report.json")),
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "text-call").await;

        // The call ran: the second request answers it with Prometheus's own result.
        let requests = app.llm.requests();
        let messages = requests[1].body["messages"].as_array().unwrap().clone();
        let call = messages
            .iter()
            .find_map(|m| m["tool_calls"].as_array().cloned())
            .unwrap_or_else(|| panic!("{runner}: the call is carried as a call: {messages:#?}"));
        assert_eq!(call[0]["function"]["name"], "execute_query");
        let arguments: Value =
            serde_json::from_str(call[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            arguments["query"],
            "rate(node_cpu_seconds{job=\"node\",instance=\"web-1\"}[5m]) > 0.1"
        );
        let result = messages.iter().find(|m| m["role"] == "tool").unwrap();
        assert_eq!(result["tool_call_id"], call[0]["id"], "{runner}");
        assert!(
            !result["content"].as_str().unwrap().contains("not run"),
            "{runner}: {result}"
        );
        assert!(
            !messages.iter().any(|m| m["role"] == "assistant"
                && m["content"].as_str().is_some_and(|c| c.contains("```json"))),
            "{runner}: the text form is not sent back"
        );
        // Its answer is JSON once repaired, but one paragraph, not the four sections: it
        // is asked once for the report, answers the same, and the evidence writes it.
        assert_eq!(
            requests.len(),
            3,
            "{runner}: the call, the answer, the follow-up"
        );
        assert!(requests[2]
            .body
            .to_string()
            .contains("content lacks the sections"));
        assert_eq!(report["status"], "completed", "{runner}: {report:#}");
        assert_eq!(report["engine"], "evidence", "{runner}: {report:#}");
        assert!(
            report["aiError"].as_str().unwrap().contains(
                "content lacks the sections 【问题概述】【根因分析】【影响范围】【解决方案】"
            ),
            "{runner}: {report:#}"
        );
    }
}

#[tokio::test]
async fn an_answer_that_echoes_the_prompt_is_no_report() {
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            evidence: true,
            script: Script::Replay(transcript("qwen2.5-coder-0.5b-echo-unclosed.json")),
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "unclosed").await;
        assert_eq!(report["status"], "completed", "{runner}: {report:#}");
        assert_eq!(report["engine"], "evidence", "{runner}: {report:#}");
        assert!(
            report["aiError"]
                .as_str()
                .unwrap()
                .contains("content lacks the sections"),
            "{runner}: {report:#}"
        );
        assert!(report["content"]
            .as_str()
            .unwrap()
            .starts_with("【问题概述】"));
    }
}

#[tokio::test]
async fn a_report_whose_string_runs_past_its_fence_keeps_all_four_sections() {
    // Qwen2.5-Coder-1.5B: raw line breaks in `content`, which then runs past the closing
    // fence to the model's verdict line: no `"}` at all.
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            script: Script::Replay(transcript("qwen2.5-coder-1.5b-report-at-once.json")),
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "at-once").await;
        assert_eq!(report["status"], "completed", "{runner}: {report:#}");
        assert_eq!(report["engine"], "ai", "{runner}: {report:#}");
        let content = report["content"].as_str().unwrap();
        for section in [
            "【问题概述】",
            "【根因分析】",
            "【影响范围】",
            "【解决方案】",
        ] {
            assert!(
                content.contains(section),
                "{runner}: {section} in {content}"
            );
        }
        assert_eq!(
            report["promQL"].as_array().unwrap().len(),
            25,
            "{runner}: every query Prometheus parses is kept"
        );
        let metrics = app.metrics().await;
        for kind in ["control_character", "unclosed"] {
            assert!(
                metrics.contains(&format!(
                    "deploy_diagnosis_answer_repairs_total{{kind=\"{kind}\"}} 1"
                )),
                "{runner}: {metrics}"
            );
        }
    }
}

#[tokio::test]
async fn a_report_cut_again_after_the_follow_up_is_kept_when_its_four_sections_are_there() {
    // Qwen2.5-Coder-1.5B on the bad canary, MaxTokens 1200: promQL repeated until the
    // limit, then, asked for less, the four sections cut just before their closing `"}`.
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            script: Script::Replay(transcript("qwen2.5-coder-1.5b-canary-cut-twice.json")),
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "cut-twice").await;
        let requests = app.llm.requests();
        assert_eq!(requests.len(), 2, "{runner}: the answer and one follow-up");
        assert!(
            requests[1].body["messages"]
                .to_string()
                .contains("你的回答超出了长度上限"),
            "{runner}: the follow-up asks for a shorter report"
        );
        assert_eq!(report["status"], "completed", "{runner}: {report:#}");
        assert_eq!(report["engine"], "ai", "{runner}: {report:#}");
        let content = report["content"].as_str().unwrap();
        assert!(
            content.contains("本次发布导致，建议暂停。")
                && content.ends_with("最后一节的结尾可能不完整。）"),
            "{runner}: the model's text, then the service's note that it was cut: {content}"
        );
        let queries = prom_ql(&report);
        assert_eq!(
            queries.len(),
            9,
            "{runner}: ten queries, one written twice, kept once: {queries:#?}"
        );
        let metrics = app.metrics().await;
        assert!(
            metrics.contains("deploy_diagnosis_answer_repairs_total{kind=\"unclosed\"} 1"),
            "{runner}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_repeated_call_an_unknown_tool_and_arguments_that_are_no_object_are_answered_not_run() {
    // What small models do: call the same query again, name a tool they were not given,
    // send arguments that are no object. Each is answered with an error that says so.
    let calls = vec![
        (
            "execute_query".to_owned(),
            serde_json::json!({"query": "up"}),
        ),
        (
            "execute_query".to_owned(),
            serde_json::json!({"query": "up"}),
        ),
        ("get_cpu".to_owned(), serde_json::json!({"host": "web-1"})),
        ("execute_query".to_owned(), serde_json::json!("up")),
    ];
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            script: Script::Calls(calls.clone()),
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "bad-calls").await;
        assert_eq!(report["status"], "completed", "{runner}: {report:#}");
        let last = app.llm.requests().last().unwrap().body.clone();
        let results: Vec<String> = last["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            results.len(),
            4,
            "{runner}: every call answered: {results:#?}"
        );
        assert!(
            results[0].contains("\"up\""),
            "{runner}: the first one ran: {}",
            results[0]
        );
        assert!(
            results[1].starts_with("already answered above"),
            "{runner}: {}",
            results[1]
        );
        assert!(
            results[2].starts_with("no tool named \"get_cpu\"")
                && results[2].contains("execute_query"),
            "{runner}: {}",
            results[2]
        );
        assert!(
            results[3].starts_with("the arguments are not a JSON object"),
            "{runner}: {}",
            results[3]
        );
        assert_eq!(
            report["usage"]["toolCalls"], 1,
            "{runner}: one call ran: {report:#}"
        );
    }
}

#[tokio::test]
async fn an_answer_with_no_report_gets_one_follow_up_asking_for_the_object_alone() {
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            script: Script::ProseThenReport,
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "format").await;
        assert_eq!(report["status"], "completed", "{runner}: {report:#}");
        assert_eq!(report["engine"], "ai", "{runner}: {report:#}");
        let requests = app.llm.requests();
        assert_eq!(requests.len(), 2, "{runner}");
        let follow_up = &requests[1].body;
        let text = follow_up.to_string();
        assert!(
            text.contains("无法读取为要求的 JSON 报告") && text.contains("no JSON object"),
            "{runner}: the model is told why: {follow_up}"
        );
        assert!(
            text.contains("建议重启"),
            "{runner}: its own answer is in the conversation"
        );
        assert_eq!(follow_up["tool_choice"], "none", "{runner}: it must answer");
    }
}

#[tokio::test]
async fn the_formats_placeholder_is_no_report_even_under_the_reports_schema() {
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            evidence: true,
            provider: Some(crate::fake_llm::Provider::LlamaCpp),
            script: Script::Replay(transcript("qwen2.5-coder-0.5b-placeholder-sections.json")),
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "placeholder").await;
        let requests = app.llm.requests();
        assert_eq!(requests.len(), 2, "{runner}: the answer, the follow-up");
        // The follow-up says what was wrong and holds the model to the report's schema.
        let follow_up = &requests[1].body;
        assert!(follow_up.to_string().contains("say nothing"), "{runner}");
        assert_eq!(
            follow_up["response_format"]["type"], "json_schema",
            "{runner}"
        );
        assert_eq!(report["status"], "completed", "{runner}: {report:#}");
        assert_eq!(report["engine"], "evidence", "{runner}: {report:#}");
        assert!(
            report["aiError"]
                .as_str()
                .unwrap()
                .contains("the sections 【问题概述】【根因分析】【影响范围】 say nothing"),
            "{runner}: {report:#}"
        );
    }
}

#[tokio::test]
async fn the_sections_as_the_schemas_keys_become_the_designs_report() {
    for (runner, native) in runners() {
        let app = spawn_app(Options {
            native,
            evidence: true,
            provider: Some(crate::fake_llm::Provider::LlamaCpp),
            max_turns: 1,
            script: Script::Replay(transcript("qwen2.5-coder-0.5b-sections-as-keys.json")),
            ..Options::default()
        })
        .await;
        let report = diagnose(&app, "keyed").await;
        let requests = app.llm.requests();
        assert_eq!(requests.len(), 1, "{runner}: one answer, no follow-up");
        // What the grammar held it to: the four headings as the content's keys.
        let schema = &requests[0].body["response_format"]["json_schema"]["schema"];
        assert_eq!(
            schema["properties"]["content"]["required"],
            serde_json::json!(deploy_diagnosis::runner::extract::SECTIONS),
            "{runner}"
        );
        assert_eq!(report["engine"], "ai", "{runner}: {report:#}");
        let content = report["content"].as_str().unwrap();
        assert!(
            content.starts_with(
                "【问题概述】\n在本次发布中，发现 CPU 使用率超过 90% 的问题，导致系统不稳定。\n【根因分析】\n1. **CPU 使用率异常**"
            ),
            "{runner}: {content}"
        );
        assert!(
            content.contains("\n【影响范围】\n系统资源紧张"),
            "{runner}: {content}"
        );
        // Its promQL were the tools' names: the first three named as unparsable, the other
        // six counted, and the evidence's queries given instead, each once.
        assert!(
            content.contains("- list_metrics()：invalid parameter \"query\""),
            "{runner}: {content}"
        );
        assert!(
            content.contains("另有 6 条同样无法解析") && !content.contains("execute_range_query()"),
            "{runner}: {content}"
        );
        let queries = prom_ql(&report);
        assert!(!queries.is_empty(), "{runner}: {report:#}");
        let mut distinct = queries.clone();
        distinct.dedup();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), queries.len(), "{runner}: {queries:?}");
    }
}
