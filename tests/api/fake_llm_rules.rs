//! The fake LLM's own rules, checked against requests the real APIs are known to refuse
//! (and their accepted counterparts), so a lenient fake cannot slip back in.

use serde_json::json;

use crate::fake_llm::{check_anthropic, check_openai, Provider};

#[test]
fn anthropic_rejects_tool_blocks_without_tools_and_unanswered_tool_use() {
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "q", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1"}]},
    ]);
    let no_tools = json!({"model": "m", "max_tokens": 10, "messages": history});
    let (_, error) = check_anthropic(&no_tools).unwrap_err();
    assert!(error.to_string().contains("must define tools"), "{error}");
    let with_tools = json!({"model": "m", "max_tokens": 10, "messages": history,
        "tools": [{"name": "q"}], "tool_choice": {"type": "none"}});
    assert!(check_anthropic(&with_tools).is_ok());
    let unanswered = json!({"model": "m", "max_tokens": 10, "tools": [{"name": "q"}], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "q", "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "go on"},
            {"type": "tool_result", "tool_use_id": "t1", "content": "1"}]},
    ]});
    let (_, error) = check_anthropic(&unanswered).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("without `tool_result` blocks immediately after: t1"),
        "{error}"
    );
    let empty = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": []}, {"role": "user", "content": "x"}]});
    let (_, error) = check_anthropic(&empty).unwrap_err();
    assert!(error.to_string().contains("non-empty content"), "{error}");
    let (_, error) =
        check_anthropic(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .unwrap_err();
    assert!(error.to_string().contains("max_tokens"), "{error}");
}

#[test]
fn openai_compatible_servers_reject_orphan_and_unanswered_tool_messages() {
    let orphan = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c1", "content": "1"}]});
    let (_, error) = check_openai(Provider::OpenAi, &orphan).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("preceeding message with 'tool_calls'"),
        "{error}"
    );
    let unanswered = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}, {"id": "c2"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
        {"role": "user", "content": "answer"}]});
    let (_, error) = check_openai(Provider::Local, &unanswered).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("did not have response messages: c2"),
        "{error}"
    );
}

#[test]
fn provider_specific_parameters_are_enforced() {
    let messages = json!([{"role": "user", "content": "hi"}]);
    let gpt5 = json!({"model": "gpt-5-mini", "max_tokens": 10, "messages": messages});
    assert!(check_openai(Provider::OpenAi, &gpt5).is_err());
    assert!(check_openai(Provider::Local, &gpt5).is_ok());
    let gpt5 = json!({"model": "gpt-5-mini", "max_completion_tokens": 10, "messages": messages});
    assert!(check_openai(Provider::OpenAi, &gpt5).is_ok());
    let qwen = json!({"model": "Qwen/Qwen3-235B-A22B", "max_tokens": 10, "messages": messages});
    assert!(check_openai(Provider::ModelScope, &qwen).is_err());
    assert!(check_openai(Provider::Local, &qwen).is_ok());
    let qwen = json!({"model": "qwen3-32b", "enable_thinking": false, "messages": messages});
    assert!(check_openai(Provider::DashScope, &qwen).is_ok());
    let choice = json!({"model": "gpt-4o", "tool_choice": "none", "messages": messages});
    assert!(check_openai(Provider::OpenAi, &choice).is_err());
}

#[test]
fn anthropic_and_openai_refuse_a_parameter_meant_for_another_provider() {
    let messages = json!([{"role": "user", "content": "hi"}]);
    let qwen_flag = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": messages,
        "enable_thinking": false});
    let (_, error) = check_anthropic(&qwen_flag).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("enable_thinking: Extra inputs are not permitted"),
        "{error}"
    );
    let qwen_flag = json!({"model": "gpt-4o", "messages": messages, "enable_thinking": false});
    let (_, error) = check_openai(Provider::OpenAi, &qwen_flag).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("Unrecognized request argument supplied: enable_thinking"),
        "{error}"
    );
    assert!(
        check_openai(Provider::Local, &qwen_flag).is_ok(),
        "compatible servers take extras"
    );
}

#[test]
fn structured_output_rules_strict_schemas_and_the_word_json() {
    let schema = deploy_diagnosis::runner::provider::report_schema();
    let with = |schema: serde_json::Value, text: &str| {
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}],
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "diagnosis_report", "strict": true, "schema": schema}}})
    };
    assert!(check_openai(Provider::OpenAi, &with(schema.clone(), "诊断")).is_ok());
    let mut open = schema.clone();
    open.as_object_mut().unwrap().remove("additionalProperties");
    let (_, error) = check_openai(Provider::OpenAi, &with(open, "x")).unwrap_err();
    assert_eq!(
        error["error"]["message"],
        "Invalid schema for response_format 'diagnosis_report': In context=(), 'additionalProperties' is required to be supplied and to be false."
    );
    let mut partial = schema.clone();
    partial["required"] = json!(["promQL"]);
    let (_, error) = check_openai(Provider::OpenAi, &with(partial, "x")).unwrap_err();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("Missing 'content'."),
        "{error}"
    );
    // JSON mode needs the word in the messages, on OpenAI and on DashScope (for either
    // JSON form there).
    let mode = |text: &str| {
        json!({"model": "qwen-plus", "messages": [{"role": "user", "content": text}],
            "response_format": {"type": "json_object"}})
    };
    assert!(check_openai(Provider::OpenAi, &mode("请只输出 json")).is_ok());
    let (_, error) = check_openai(Provider::OpenAi, &mode("请只输出报告")).unwrap_err();
    assert_eq!(error["error"]["param"], "messages");
    let (_, error) = check_openai(Provider::DashScope, &mode("请只输出报告")).unwrap_err();
    assert!(error["error"]["message"].as_str().unwrap().starts_with(
        "<400> InternalError.Algo.InvalidParameter: 'messages' must contain the word 'json'"
    ));
    let (_, error) = check_openai(Provider::DashScope, &with(schema, "报告")).unwrap_err();
    assert_eq!(error["error"]["code"], "invalid_parameter_error");
}

#[test]
fn self_hosted_servers_refuse_a_request_longer_than_their_context_in_their_words() {
    let long = json!({"model": "m", "max_tokens": 100,
        "messages": [{"role": "user", "content": "x".repeat(4 * crate::fake_llm::SERVER_CONTEXT)}]});
    let (_, llamacpp) = check_openai(Provider::LlamaCpp, &long).unwrap_err();
    assert_eq!(llamacpp["error"]["type"], "exceed_context_size_error");
    let (_, vllm) = check_openai(Provider::Vllm, &long).unwrap_err();
    assert!(vllm["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("This model's maximum context length is"));
    let (_, sglang) = check_openai(Provider::SgLang, &long).unwrap_err();
    assert_eq!(sglang["object"], "error");
    // Ollama says nothing (it drops the prompt's start); an unnamed server is not checked.
    assert!(check_openai(Provider::Ollama, &long).is_ok());
    // vLLM also counts the answer's tokens against the context.
    let near = json!({"model": "m", "max_tokens": 4000,
        "messages": [{"role": "user", "content": "x".repeat(4 * (crate::fake_llm::SERVER_CONTEXT - 2000))}]});
    let (_, error) = check_openai(Provider::Vllm, &near).unwrap_err();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("'max_tokens' or 'max_completion_tokens' is too large: 4000."));
    assert!(check_openai(Provider::LlamaCpp, &near).is_ok());
    // Every context error the servers give is one the service recognises.
    for body in [llamacpp, vllm, sglang, error] {
        assert!(
            deploy_diagnosis::runner::context::is_context_error(&body.to_string()),
            "{body}"
        );
    }
}

#[test]
fn anthropic_forces_only_a_declared_tool_and_never_with_thinking() {
    let forced = |tools: serde_json::Value, thinking: bool| {
        let mut body = json!({"model": "m", "max_tokens": 2000, "tools": tools,
            "tool_choice": {"type": "tool", "name": "submit_report"},
            "messages": [{"role": "user", "content": "hi"}]});
        if thinking {
            body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        }
        body
    };
    assert!(check_anthropic(&forced(json!([{"name": "submit_report"}]), false)).is_ok());
    assert!(check_anthropic(&forced(json!([{"name": "q"}]), false)).is_err());
    let (_, error) =
        check_anthropic(&forced(json!([{"name": "submit_report"}]), true)).unwrap_err();
    assert!(
        error.to_string().contains("Thinking may not be enabled"),
        "{error}"
    );
}
