//! Every provider the design names, through the native runner and the Python runner,
//! against the scripted LLM that enforces each provider's documented request rules: a
//! request the real API would refuse fails these tests. The provider table (docs/providers.md) is
//! backed by `every_provider_answers_at_the_step_limit_*`.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::fake_llm::{Provider, Script, Seen};
use crate::helpers::{alertmanager_body, deployment_id, report_error, spawn_app, Options, TestApp};

/// The two agent loops: the service's own, and the Python runner (run as a child process;
/// the docker runner execs the same script).
#[derive(Clone, Copy, Debug)]
enum Runner {
    Native,
    Python,
}

const RUNNERS: [Runner; 2] = [Runner::Native, Runner::Python];

fn options(runner: Runner, provider: Provider, model: &'static str, script: Script) -> Options {
    Options {
        native: matches!(runner, Runner::Native),
        provider: Some(provider),
        model,
        script,
        ..Options::default()
    }
}

async fn diagnose(app: &TestApp) -> Value {
    let id = deployment_id("provider");
    app.post_alerts(&alertmanager_body(&id, "firing")).await;
    app.wait_final(&id).await
}

/// What a provider is sent differently: the token limit's name, extra fields, and the
/// form the final answer is asked for in (`response_format`'s type, or the forced tool).
#[derive(Clone)]
struct Row {
    provider: Provider,
    model: &'static str,
    token_field: &'static str,
    extra: Option<(&'static str, Value)>,
    final_form: Option<&'static str>,
    ai_extra: &'static str,
}

fn matrix() -> Vec<Row> {
    let thinking_off = Some(("enable_thinking", json!(false)));
    let server = |provider, model| Row {
        provider,
        model,
        token_field: "max_tokens",
        extra: None,
        final_form: Some("json_schema"),
        ai_extra: "",
    };
    vec![
        server(Provider::Vllm, "Qwen/Qwen2.5-Coder-7B-Instruct"),
        server(Provider::LlamaCpp, "qwen2.5-coder"),
        server(Provider::SgLang, "Qwen/Qwen2.5-7B-Instruct"),
        // Ollama's own context is 4,096 tokens unless its server says otherwise: the
        // service is told what it was started with.
        Row {
            ai_extra: "  ContextTokens: 8192\n",
            ..server(Provider::Ollama, "qwen2.5-coder:7b")
        },
        Row {
            provider: Provider::Anthropic,
            model: "claude-sonnet-4-5",
            token_field: "max_tokens",
            extra: None,
            final_form: Some("submit_report"),
            ai_extra: "",
        },
        Row {
            provider: Provider::OpenAi,
            model: "gpt-4o",
            token_field: "max_completion_tokens",
            extra: None,
            final_form: Some("json_schema"),
            ai_extra: "",
        },
        Row {
            provider: Provider::OpenAi,
            model: "gpt-5-mini",
            token_field: "max_completion_tokens",
            extra: None,
            final_form: Some("json_schema"),
            ai_extra: "",
        },
        Row {
            provider: Provider::DashScope,
            model: "qwen3-32b",
            token_field: "max_tokens",
            extra: thinking_off.clone(),
            final_form: Some("json_object"),
            ai_extra: "",
        },
        Row {
            provider: Provider::ModelScope,
            model: "Qwen/Qwen3-235B-A22B",
            token_field: "max_tokens",
            extra: thinking_off,
            final_form: None,
            ai_extra: "",
        },
        Row {
            provider: Provider::Local,
            model: "qwen3:8b",
            token_field: "max_tokens",
            extra: None,
            final_form: None,
            ai_extra: "",
        },
    ]
}

/// The tools stay declared and their use is forbidden, or (Anthropic) the report's own
/// tool is forced, or (Ollama, which ignores `tool_choice`) the tools are left out.
fn forbids_tools(body: &Value) -> bool {
    let declared = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let forced = body["tool_choice"] == json!({"type": "tool", "name": "submit_report"});
    (declared
        && (body["tool_choice"] == "none"
            || body["tool_choice"] == json!({"type": "none"})
            || forced))
        || (body.get("tools").is_none() && body.get("tool_choice").is_none())
}

/// The form a request asks the answer in.
fn final_form(body: &Value) -> Option<&str> {
    body["response_format"]["type"]
        .as_str()
        .or(body["tool_choice"]["name"].as_str())
}

fn rejections(requests: &[Seen]) -> Vec<String> {
    requests.iter().filter_map(|r| r.rejected.clone()).collect()
}

/// Drives every row to the step limit with a model that keeps calling tools; returns what
/// went wrong, row by row.
async fn step_limit_matrix(runner: Runner) -> Vec<String> {
    let rows = matrix();
    let run = |row: &Row| {
        let row = row.clone();
        async move {
            let app = spawn_app(Options {
                max_turns: 3,
                ai_extra: row.ai_extra,
                ..options(runner, row.provider, row.model, Script::ToolLoop)
            })
            .await;
            let report = diagnose(&app).await;
            let requests = app.llm.requests();
            let mut problems = Vec::new();
            if report["status"] != "completed" {
                problems.push(format!("not completed: {report}"));
            } else if !report["content"]
                .as_str()
                .unwrap_or_default()
                .contains("the step limit forced this answer")
            {
                problems.push(format!("not the forced answer: {report}"));
            }
            problems.extend(rejections(&requests));
            if requests.len() != 3 {
                problems.push(format!("{} requests, not 3", requests.len()));
            }
            let other = if row.token_field == "max_tokens" {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            for (i, r) in requests.iter().enumerate() {
                if r.provider != row.provider {
                    problems.push(format!("request {i} reached {:?}", r.provider));
                }
                if r.body[row.token_field] != 4096 || r.body.get(other).is_some() {
                    problems.push(format!(
                        "request {i}: token limit not sent as {} alone",
                        row.token_field
                    ));
                }
                match &row.extra {
                    Some((key, value)) if r.body[*key] != *value => {
                        problems.push(format!("request {i}: {key} is not {value}"))
                    }
                    None if r.body.get("enable_thinking").is_some() => {
                        problems.push(format!("request {i}: enable_thinking sent"))
                    }
                    _ => {}
                }
            }
            if let Some(last) = requests.last() {
                if !forbids_tools(&last.body) {
                    problems.push("the last step does not keep the tools and forbid them".into());
                }
                if !last.body.to_string().contains("工具调用次数已用完") {
                    problems.push("the model is not told why it must answer".into());
                }
                if final_form(&last.body) != row.final_form {
                    problems.push(format!(
                        "the last step asks for {:?}, not {:?}",
                        final_form(&last.body),
                        row.final_form
                    ));
                }
                if requests[..requests.len() - 1]
                    .iter()
                    .any(|r| final_form(&r.body).is_some())
                {
                    problems.push("a step that may call tools is held to a form".into());
                }
            }
            if report["usage"]["steps"] != 3 {
                problems.push(format!(
                    "usage counts {} steps, not 3",
                    report["usage"]["steps"]
                ));
            }
            problems
                .into_iter()
                .map(|p| format!("{:?} {}: {p}", row.provider, row.model))
                .collect::<Vec<_>>()
        }
    };
    // Five services at a time: ten at once on two cores outran the tests' 3-second lease,
    // and a diagnosis whose lease lapsed is rightly run again (twice the requests).
    let mut problems = Vec::new();
    for chunk in rows.chunks(5) {
        problems.extend(join_all(chunk.iter().map(run)).await.into_iter().flatten());
    }
    problems
}

#[tokio::test]
async fn every_provider_answers_at_the_step_limit_through_the_native_runner() {
    let problems = step_limit_matrix(Runner::Native).await;
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn every_provider_answers_at_the_step_limit_through_the_python_runner() {
    let problems = step_limit_matrix(Runner::Python).await;
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Both runners, both wire formats, the same script and limit.
async fn each_runner_and_format(
    script: Script,
    ai_extra: &'static str,
) -> Vec<(String, Value, Vec<Seen>)> {
    let cases = RUNNERS.into_iter().flat_map(|r| {
        [
            (r, Provider::Anthropic, "claude-sonnet-4-5"),
            (r, Provider::Local, "llama3.1"),
        ]
    });
    let runs = cases.map(|(runner, provider, model)| {
        let script = script.clone();
        async move {
            let app = spawn_app(Options {
                ai_extra,
                ..options(runner, provider, model, script)
            })
            .await;
            let report = diagnose(&app).await;
            (
                format!("{runner:?} {provider:?}"),
                report,
                app.llm.requests(),
            )
        }
    });
    join_all(runs).await
}

#[tokio::test]
async fn an_answer_cut_at_the_token_limit_gets_one_follow_up_and_completes() {
    for (case, report, requests) in
        each_runner_and_format(Script::Long { times: 1 }, "  MaxTokens: 500\n").await
    {
        assert_eq!(report["status"], "completed", "{case}: {report:#}");
        assert!(
            rejections(&requests).is_empty(),
            "{case}: {:?}",
            rejections(&requests)
        );
        assert_eq!(
            requests.len(),
            2,
            "{case}: the cut answer, then the follow-up"
        );
        let follow_up = &requests[1].body;
        assert!(
            follow_up.to_string().contains("超出了长度上限"),
            "{case}: the model is told why: {follow_up}"
        );
        assert!(forbids_tools(follow_up), "{case}: {follow_up}");
        assert_eq!(follow_up["max_tokens"], 500, "{case}");
    }
}

#[tokio::test]
async fn an_answer_cut_again_after_the_follow_up_fails_naming_the_limit() {
    for (case, report, requests) in
        each_runner_and_format(Script::Long { times: 99 }, "  MaxTokens: 500\n").await
    {
        assert_eq!(report["status"], "failed", "{case}: {report:#}");
        assert!(
            report_error(&report).contains("answer cut off at AI.MaxTokens (500)")
                && report_error(&report).contains("raise it"),
            "{case}: {report:#}"
        );
        assert_eq!(requests.len(), 2, "{case}: one follow-up, no more");
    }
}

#[tokio::test]
async fn a_model_that_ignores_tool_choice_none_is_answered_from_its_text_or_fails_saying_so() {
    for runner in RUNNERS {
        for report_in_text in [true, false] {
            let app = spawn_app(Options {
                max_turns: 2,
                ..options(
                    runner,
                    Provider::Local,
                    "llama3.1",
                    Script::IgnoresToolChoice {
                        report: report_in_text,
                    },
                )
            })
            .await;
            let report = diagnose(&app).await;
            let case = format!("{runner:?}, report in text: {report_in_text}");
            assert!(rejections(&app.llm.requests()).is_empty(), "{case}");
            if report_in_text {
                assert_eq!(report["status"], "completed", "{case}: {report:#}");
                assert!(report["content"]
                    .as_str()
                    .unwrap()
                    .contains("answered while still asking for tools"));
            } else {
                assert_eq!(report["status"], "failed", "{case}: {report:#}");
                assert!(
                    report_error(&report).contains("asked for more tools on its last step")
                        && report_error(&report).contains("AI.MaxTurns = 2"),
                    "{case}: {report:#}"
                );
            }
        }
    }
}

#[tokio::test]
async fn extra_body_reaches_every_request_and_a_null_removes_what_the_profile_sends() {
    for runner in RUNNERS {
        let app = spawn_app(Options {
            ai_extra:
                "  ExtraBody:\n    top_k: 20\n    chat_template_kwargs: {enable_thinking: false}\n",
            ..options(
                runner,
                Provider::Local,
                "Qwen/Qwen3-8B",
                Script::ToolThenReport { query: "up".into() },
            )
        })
        .await;
        let report = diagnose(&app).await;
        assert_eq!(report["status"], "completed", "{runner:?}: {report:#}");
        for r in app.llm.requests() {
            assert_eq!(r.body["top_k"], 20, "{runner:?}");
            assert_eq!(
                r.body["chat_template_kwargs"],
                json!({"enable_thinking": false})
            );
        }

        // DashScope refuses Qwen3 without `enable_thinking: false`; its error reaches the report.
        let app = spawn_app(Options {
            ai_extra: "  ExtraBody:\n    enable_thinking: null\n",
            ..options(
                runner,
                Provider::DashScope,
                "qwen3-32b",
                Script::ToolThenReport { query: "up".into() },
            )
        })
        .await;
        let report = diagnose(&app).await;
        assert_eq!(report["status"], "failed", "{runner:?}: {report:#}");
        assert!(
            report_error(&report).contains("status 400")
                && report_error(&report).contains(
                    "parameter.enable_thinking must be set to false for non-streaming calls"
                ),
            "{runner:?}: {report:#}"
        );
        assert!(app.llm.requests()[0].body.get("enable_thinking").is_none());
    }
}

#[tokio::test]
async fn both_runners_retry_429_and_529_honouring_retry_after_in_seconds_and_as_a_date() {
    let cases = RUNNERS.into_iter().flat_map(|runner| {
        [
            (
                runner,
                Provider::Local,
                Script::RateLimitedOnce { query: "up".into() },
            ),
            (
                runner,
                Provider::Anthropic,
                Script::OverloadedOnce { query: "up".into() },
            ),
        ]
    });
    let runs = cases.map(|(runner, provider, script)| async move {
        let app = spawn_app(options(runner, provider, "m", script)).await;
        let report = diagnose(&app).await;
        (
            format!("{runner:?} {provider:?}"),
            report,
            app.llm.requests(),
        )
    });
    for (case, report, requests) in join_all(runs).await {
        assert_eq!(report["status"], "completed", "{case}: {report:#}");
        assert_eq!(
            requests.len(),
            3,
            "{case}: the refused request, the tool call, the answer"
        );
        let waited = requests[1].at - requests[0].at;
        assert!(
            waited >= Duration::from_millis(900),
            "{case}: retried after {waited:?}, before Retry-After"
        );
    }
}

#[tokio::test]
async fn a_failed_diagnosis_still_reports_what_it_cost() {
    for runner in RUNNERS {
        let app = spawn_app(options(
            runner,
            Provider::Local,
            "m",
            Script::ToolThenStatus {
                query: "up".into(),
                status: 400,
            },
        ))
        .await;
        let report = diagnose(&app).await;
        assert_eq!(report["status"], "failed", "{runner:?}: {report:#}");
        let usage = &report["usage"];
        assert_eq!(
            (
                usage["inputTokens"].as_u64(),
                usage["steps"].as_u64(),
                usage["toolCalls"].as_u64()
            ),
            (Some(100), Some(1), Some(1)),
            "{runner:?}: {report:#}"
        );
    }
}

/// Three queries whose results, each cut at 24,000 characters, do not fit the fake
/// servers' context together.
fn big_calls() -> Script {
    Script::Calls(
        [
            r#"{__name__=~".+"}"#,
            r#"{__name__=~".+", instance!=""}"#,
            r#"{__name__=~".+", job!=""}"#,
        ]
        .iter()
        .map(|q| ("execute_query".to_owned(), json!({"query": q})))
        .collect(),
    )
}

#[tokio::test]
async fn a_conversation_longer_than_the_context_drops_its_oldest_tool_output_and_completes() {
    let runs = RUNNERS.into_iter().map(|runner| async move {
        let app = spawn_app(Options {
            ai_extra: "  ContextTokens: 16384\n  MaxTokens: 4000\n  ToolResultMaxChars: 24000\n",
            ..options(runner, Provider::LlamaCpp, "qwen2.5-coder", big_calls())
        })
        .await;
        (runner, diagnose(&app).await, app.llm.requests())
    });
    for (runner, report, requests) in join_all(runs).await {
        assert_eq!(report["status"], "completed", "{runner:?}: {report:#}");
        assert!(
            rejections(&requests).is_empty(),
            "{runner:?}: {:?}",
            rejections(&requests)
        );
        // The last request holds the newest result whole and the older ones as the note.
        let last = requests.last().unwrap().body.to_string();
        assert!(
            last.contains("removed by deploy-diagnosis to fit the model's context"),
            "{runner:?}"
        );
        assert!(
            requests
                .iter()
                .all(|r| crate::fake_llm::tokens(&r.body) <= crate::fake_llm::SERVER_CONTEXT),
            "{runner:?}"
        );
    }
}

#[tokio::test]
async fn a_context_too_small_fails_naming_ai_context_tokens_whoever_finds_it() {
    let cases = RUNNERS.into_iter().flat_map(|runner| {
        [
            // The service is told more than llama.cpp's server has: the server refuses.
            (
                runner,
                Provider::LlamaCpp,
                "  ContextTokens: 100000\n  ToolResultMaxChars: 24000\n",
                "exceeds the available context size",
            ),
            // Ollama's default context cannot hold the prompt: refused before it is sent
            // (Ollama itself would drop the prompt's start without a word).
            (runner, Provider::Ollama, "", "OLLAMA_CONTEXT_LENGTH"),
        ]
    });
    let runs = cases.map(|(runner, provider, ai_extra, says)| async move {
        let app = spawn_app(Options {
            ai_extra,
            ..options(runner, provider, "qwen2.5-coder", big_calls())
        })
        .await;
        let report = diagnose(&app).await;
        (runner, provider, says, report, app.llm.requests())
    });
    for (runner, provider, says, report, requests) in join_all(runs).await {
        let case = format!("{runner:?} {provider:?}");
        assert_eq!(report["status"], "failed", "{case}: {report:#}");
        let error = report_error(&report);
        assert!(
            error.contains("AI.ContextTokens") && error.contains(says),
            "{case}: {error}"
        );
        assert!(
            report["rawOutput"]
                .as_str()
                .unwrap()
                .contains("context_exceeded"),
            "{case}: the failure's kind is logged"
        );
        if provider == Provider::Ollama {
            assert!(requests.is_empty(), "{case}: nothing is sent");
        }
    }
}
