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
