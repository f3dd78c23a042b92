//! Tool calls a model wrote as text. A server whose chat template does not turn the
//! model's calls into `tool_calls` (llama.cpp with a model's stock template, a model that
//! ignores its template) answers with the call in its text, `finish_reason: stop`: a
//! ```json block `{"name": …, "arguments": {…}}` (recorded from Qwen2.5-Coder through
//! llama.cpp), or Hermes tags `<tool_call>{…}</tool_call>` (Qwen, NousResearch). A
//! message that has no calls of its own and names a tool the model was given this way is
//! run as those calls; anything else is text.
//!
//! Arguments are read leniently ([`super::lenient`]): the recorded calls hold PromQL with
//! its quotes unescaped.

use serde_json::Value;

use super::extract::without_reasoning;
use super::lenient;

/// A call found in text: the tool's name and its arguments (an object).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// A tool the model was given.
    pub name: String,
    /// Its arguments.
    pub arguments: Value,
}

/// Calls looked for in one message at most.
const MAX_CALLS: usize = 8;

/// The tool calls `text` writes, of tools named in `tools` (empty: none, or a call of a
/// tool the model was not given, which is text).
pub fn written(text: &str, tools: &[&str]) -> Vec<Written> {
    let text = without_reasoning(text);
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = text[from..].find('{') {
        let start = from + rel;
        let Some((value, _)) = lenient::object(&text[start..]) else {
            from = start + 1;
            continue;
        };
        match call_of(&value, tools) {
            Some(call) => {
                found.push(call);
                if found.len() == MAX_CALLS {
                    break;
                }
                // Past this object: the text after it may hold the next call.
                from = start + object_end(&text[start..]).unwrap_or(1);
            }
            None => from = start + 1,
        }
    }
    found
}

/// A call object: `{"name", "arguments"|"parameters"}`, or OpenAI's own shape
/// `{"function": {"name", "arguments"}}`; arguments as an object or a JSON string of one.
fn call_of(value: &Value, tools: &[&str]) -> Option<Written> {
    let value = value.get("function").unwrap_or(value);
    let name = value.get("name")?.as_str()?.trim();
    if !tools.contains(&name) {
        return None;
    }
    let arguments = match value.get("arguments").or_else(|| value.get("parameters")) {
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(Value::String(s)) => lenient::object(s.trim()).map(|(v, _)| v)?,
        None => Value::Object(serde_json::Map::new()),
        Some(_) => return None,
    };
    Some(Written {
        name: name.to_owned(),
        arguments,
    })
}

/// Where the object starting `text` ends (a strict reading; a repaired object's end is
/// taken as its text's end).
fn object_end(text: &str) -> Option<usize> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match stream.next() {
        Some(Ok(_)) => Some(stream.byte_offset()),
        _ => text.find("</tool_call>").or_else(|| text.find("```")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOOLS: &[&str] = &["execute_query", "execute_range_query"];

    #[test]
    fn a_fenced_call_as_qwen_wrote_it_through_llama_cpp() {
        // Recorded: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, llama.cpp (xllamacpp 2026.10.11549),
        // 2026-12-06: finish_reason "stop", no tool_calls.
        let text = "```json\n{\n  \"name\": \"execute_query\",\n  \"arguments\": {\n    \"query\": \"rate(node_cpu_seconds{job=\"node\",instance=\"web-1\"}[5m]) > 0.1\"\n  }\n}\n```";
        assert_eq!(
            written(text, TOOLS),
            vec![Written {
                name: "execute_query".into(),
                arguments: json!({"query": "rate(node_cpu_seconds{job=\"node\",instance=\"web-1\"}[5m]) > 0.1"}),
            }]
        );
    }

    #[test]
    fn hermes_tags_openai_shapes_and_string_arguments() {
        let text = "<tool_call>\n{\"name\": \"execute_query\", \"arguments\": {\"query\": \"up\"}}\n</tool_call>\n<tool_call>\n{\"function\": {\"name\": \"execute_range_query\", \"arguments\": \"{\\\"query\\\": \\\"node_load1\\\"}\"}}\n</tool_call>";
        let calls = written(text, TOOLS);
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].arguments, json!({"query": "up"}));
        assert_eq!(calls[1].name, "execute_range_query");
        assert_eq!(calls[1].arguments, json!({"query": "node_load1"}));
    }

    #[test]
    fn a_report_or_an_unknown_tool_is_not_a_call() {
        assert!(written("{\"promQL\": [\"up\"], \"content\": \"x\"}", TOOLS).is_empty());
        assert!(written("{\"name\": \"rm_rf\", \"arguments\": {}}", TOOLS).is_empty());
        assert!(written(
            "<think>{\"name\": \"execute_query\", \"arguments\": {}}</think>the answer",
            TOOLS
        )
        .is_empty());
        assert!(written("no braces at all", TOOLS).is_empty());
    }
}
