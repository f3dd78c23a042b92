//! The context the AI server has (`AI.ContextTokens`): what a request is estimated to
//! take, and a server's refusal of an overlong request recognised, the same way in both
//! runners (the Python runner's `context_*` functions).
//!
//! Tokens are estimated from characters, on the high side, without the model's tokenizer:
//! a non-ASCII character (Chinese text) as one token, a digit as one (Qwen's tokenizer
//! splits numbers into digits, and Prometheus answers are mostly numbers), other ASCII as
//! one token per three characters, each message as four more, and a tenth on top for the
//! chat template. Measured against Qwen2.5-Coder's tokenizer (llama.cpp's `/tokenize`) on
//! the prompt, the tools and Prometheus answers, it was 0.95 to 1.6 times the real count
//! before the tenth (the design's prompt: 2,526 for 2,442; a range query: 492 for 517).
//! The answer's `AI.MaxTokens` is kept free.

/// Tokens a text is estimated to take.
pub fn estimate(text: &str) -> usize {
    let (ascii, single) = text.chars().fold((0usize, 0usize), |(a, s), c| {
        if c.is_ascii() && !c.is_ascii_digit() {
            (a + 1, s)
        } else {
            (a, s + 1)
        }
    });
    single + ascii.div_ceil(3)
}

/// The tokens a conversation estimated at `estimate` may take in a context that leaves
/// `budget` beside the answer: a tenth is kept for the chat template.
pub fn fits(estimate: usize, budget: usize) -> bool {
    estimate + estimate / 10 <= budget
}

/// Tokens each message costs besides its text (role and template markers).
pub const PER_MESSAGE: usize = 4;

/// What stands in for a tool's output removed to fit the context; the call may be made
/// again. (The Python runner says the same, `TRIMMED_NOTE`.)
pub const TRIMMED_NOTE: &str = "[removed by deploy-diagnosis to fit the model's context \
(AI.ContextTokens): an earlier tool output; call the tool again if you still need it]";

/// Phrases of the servers' errors for a request longer than their context:
/// OpenAI `context_length_exceeded`, vLLM "This model's maximum context length is …",
/// llama.cpp `exceed_context_size_error` ("… exceeds the available context size"),
/// SGLang "… exceeds the maximum allowed length", Anthropic "prompt is too long",
/// DashScope "Range of input length should be …".
const CONTEXT_ERRORS: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "exceed_context_size",
    "exceeds the available context size",
    "exceeds the maximum allowed length",
    "prompt is too long",
    "range of input length",
];

/// Whether an error body is a server's refusal of a request longer than its context.
pub fn is_context_error(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    CONTEXT_ERRORS.iter().any(|p| body.contains(p))
}

/// What to do about a request that does not fit, for the failure's message.
pub fn advice(context_tokens: u32, max_tokens: u32) -> String {
    format!(
        "AI.ContextTokens is {context_tokens} with AI.MaxTokens {max_tokens} kept for the answer; \
         set AI.ContextTokens to the context the server has (llama.cpp --ctx-size per slot, \
         vLLM/SGLang --max-model-len / --context-length, Ollama OLLAMA_CONTEXT_LENGTH), raise the \
         server's, or lower AI.MaxTokens"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_err_on_the_high_side_for_chinese_and_for_json() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("【根因分析】"), 6);
        assert_eq!(estimate("rate(node_cpu_seconds_total[5m])"), 12);
        assert_eq!(estimate("1733462400.123"), 14);
        assert_eq!(estimate("ab"), 1);
    }

    #[test]
    fn the_python_runner_says_and_recognises_the_same() {
        let python = include_str!("../../docker/runner/diagnosis_runner.py");
        assert!(python.contains(&format!("TRIMMED_NOTE = {TRIMMED_NOTE:?}")));
        for phrase in CONTEXT_ERRORS {
            assert!(python.contains(&format!("    {phrase:?},\n")), "{phrase}");
        }
    }

    #[test]
    fn the_servers_context_errors_are_recognised_and_others_are_not() {
        for body in [
            r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens. Please reduce the length of the input messages.","type":"BadRequestError","param":null,"code":400}}"#,
            r#"{"error":{"code":400,"message":"request (4476 tokens) exceeds the available context size (4096 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":4476,"n_ctx":4096}}"#,
            r#"{"object":"error","message":"Input length (5000 tokens) exceeds the maximum allowed length (4096 tokens). Use a shorter input or enable --allow-auto-truncate.","type":"BadRequestError","param":null,"code":400}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}"#,
            r#"{"error":{"message":"...","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        ] {
            assert!(is_context_error(body), "{body}");
        }
        assert!(!is_context_error(
            r#"{"error":{"message":"Invalid value for 'tool_choice'","type":"invalid_request_error"}}"#
        ));
    }
}
