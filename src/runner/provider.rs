//! Provider profiles: what each AI provider needs in a request body, picked from
//! `AI.BaseURL` and `AI.Model` (or named in `AI.Provider`), every choice overridable in
//! configuration.
//!
//! | provider | recognised by | wire format | token limit sent as | final answer asked for as | tools forbidden by | context (`AI.ContextTokens`) | also sent |
//! |---|---|---|---|---|---|---|---|
//! | Anthropic | host `*.anthropic.com` | Messages | `max_tokens` (required) | a forced `submit_report` tool | `tool_choice` | 200,000 | |
//! | OpenAI | host `api.openai.com` | chat completions | `max_completion_tokens` | `response_format` JSON schema (strict) | `tool_choice` | 128,000 | |
//! | DashScope (Qwen) | host `dashscope*.aliyuncs.com` | chat completions | `max_tokens` | `response_format` `json_object` | `tool_choice` | 32,768 | `enable_thinking: false` for Qwen3 models |
//! | ModelScope | host `*modelscope.cn` | chat completions | `max_tokens` | the instruction | `tool_choice` | 32,768 | `enable_thinking: false` for Qwen3 models |
//! | vLLM | `AI.Provider: vllm` | chat completions | `max_tokens` | `response_format` JSON schema | `tool_choice` | 32,768 | |
//! | SGLang | `AI.Provider: sglang` | chat completions | `max_tokens` | `response_format` JSON schema | `tool_choice` | 32,768 | |
//! | llama.cpp | `AI.Provider: llamacpp` | chat completions | `max_tokens` | `response_format` JSON schema | `tool_choice` | 32,768 | |
//! | Ollama | port 11434, or `AI.Provider: ollama` | chat completions | `max_tokens` | `response_format` JSON schema | leaving `tools` out (it ignores `tool_choice`) | 4,096 | |
//! | any other (gateways) | | chat completions | `max_tokens`, or `max_completion_tokens` for o-series / gpt-5 models | the instruction | `tool_choice` | 32,768 | |
//!
//! The final answer (the last step, and the follow-ups to a cut or unreadable answer) is
//! asked for in the structured form the provider guarantees; the design's "only a JSON
//! object" instruction stays in the prompt for every provider, and `AI.StructuredOutput:
//! off` leaves the instruction alone. Ollama silently drops the start of a prompt longer
//! than its context (4,096 tokens unless the server sets `OLLAMA_CONTEXT_LENGTH`), so its
//! profile's context is that; the other servers refuse an overlong request, which is a
//! failure naming `AI.ContextTokens`. An `AI.MaxTokens` raised past the table's context
//! raises the guess to twice it (the model was chosen for long answers).
//!
//! `AI.Provider` names the provider when the URL does not (a self-hosted server, a gateway
//! in front of one), `AI.Protocol` the wire format, `AI.MaxTokensField` the token limit's
//! name, and `AI.ExtraBody` is merged last into every request body: it adds any other
//! provider's parameter (`chat_template_kwargs`, `top_k`), and a `null` value removes one
//! the profile would send.
//!
//! The Python runner gets the resolved profile as flags, so both runners send the same
//! requests.

use serde_json::{Map, Value};

use crate::config::{AiConfig, MaxTokensField, Protocol, ProviderSetting, StructuredOutput};
use crate::runner::extract::SECTIONS;

/// An AI provider with request rules of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's own API.
    OpenAi,
    /// Alibaba Cloud DashScope (Qwen, 通义千问), compatible mode.
    DashScope,
    /// ModelScope API-Inference.
    ModelScope,
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// Ollama's OpenAI-compatible API.
    Ollama,
    /// llama.cpp's server.
    LlamaCpp,
    /// SGLang's OpenAI-compatible server.
    SgLang,
    /// Any other OpenAI-compatible server (a gateway).
    Generic,
}

impl Provider {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::DashScope => "dashscope",
            Provider::ModelScope => "modelscope",
            Provider::Vllm => "vllm",
            Provider::Ollama => "ollama",
            Provider::LlamaCpp => "llamacpp",
            Provider::SgLang => "sglang",
            Provider::Generic => "generic",
        }
    }

    /// Tokens of context, when `AI.ContextTokens` does not say: the provider's documented
    /// window where it has one, else 32,768.
    fn context_tokens(self) -> u32 {
        match self {
            Provider::Anthropic => 200_000,
            Provider::OpenAi => 128_000,
            // Ollama's default context; it drops the start of a longer prompt silently.
            Provider::Ollama => 4096,
            _ => 32_768,
        }
    }

    /// How the final answer is asked for, where the provider guarantees a form.
    fn structured(self) -> Structured {
        match self {
            Provider::Anthropic => Structured::SubmitTool,
            Provider::OpenAi
            | Provider::Vllm
            | Provider::Ollama
            | Provider::LlamaCpp
            | Provider::SgLang => Structured::JsonSchema,
            // DashScope's compatible mode documents JSON mode (`json_object`) for its Qwen
            // models; ModelScope and unknown servers get the instruction alone.
            Provider::DashScope => Structured::JsonObject,
            Provider::ModelScope | Provider::Generic => Structured::Instruction,
        }
    }
}

/// How the final answer is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structured {
    /// The design's instruction alone.
    Instruction,
    /// `response_format: {"type": "json_schema", ...}` with the report's schema.
    JsonSchema,
    /// `response_format: {"type": "json_object"}` (the prompt says JSON, as required).
    JsonObject,
    /// A `submit_report` tool whose input is the report, forced with `tool_choice`.
    SubmitTool,
}

impl Structured {
    /// The runner's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Structured::Instruction => "instruction",
            Structured::JsonSchema => "json_schema",
            Structured::JsonObject => "json_object",
            Structured::SubmitTool => "submit_tool",
        }
    }
}

/// The name of the tool the final answer is submitted through on Anthropic.
pub const SUBMIT_TOOL: &str = "submit_report";

/// The report's JSON schema, as OpenAI's strict structured outputs take it (every
/// property required, no other property). `content` is asked for as an object of the four
/// sections, each under its heading: a server that holds the model to the schema
/// (llama.cpp's grammar, vLLM's guided decoding, OpenAI's strict mode) then cannot leave a
/// section out, which the design's one string let a small model do. The service writes the
/// object back as the design's string (`src/runner/extract.rs`), and a model that writes
/// the string anyway (the prompt shows it) is read as before.
pub fn report_schema() -> Value {
    let sections: serde_json::Map<String, Value> = SECTIONS
        .iter()
        .map(|s| ((*s).to_owned(), serde_json::json!({"type": "string"})))
        .collect();
    serde_json::json!({
        "type": "object",
        "properties": {
            "promQL": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": 10,
                "description": "PromQL queries of the anomalous metrics"
            },
            "content": {
                "type": "object",
                "properties": sections,
                "required": SECTIONS,
                "additionalProperties": false,
                "description": "the report's four sections, each under its heading"
            }
        },
        "required": ["promQL", "content"],
        "additionalProperties": false
    })
}

/// The host of a URL, lowercased (empty when there is none).
fn host(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', ':', '?'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The explicit port of a URL.
fn port(url: &str) -> Option<u16> {
    let authority = url.split("://").nth(1)?.split(['/', '?']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

/// The provider for a base URL: the configured one, or recognised from the host.
pub fn provider_for(base_url: &str, configured: ProviderSetting) -> Provider {
    match configured {
        ProviderSetting::Anthropic => Provider::Anthropic,
        ProviderSetting::Openai => Provider::OpenAi,
        ProviderSetting::Dashscope => Provider::DashScope,
        ProviderSetting::Modelscope => Provider::ModelScope,
        ProviderSetting::Vllm => Provider::Vllm,
        ProviderSetting::Ollama => Provider::Ollama,
        ProviderSetting::Llamacpp => Provider::LlamaCpp,
        ProviderSetting::Sglang => Provider::SgLang,
        ProviderSetting::Generic => Provider::Generic,
        ProviderSetting::Auto => {
            let host = host(base_url);
            let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
            if under("anthropic.com") {
                Provider::Anthropic
            } else if host == "api.openai.com" {
                Provider::OpenAi
            } else if host.starts_with("dashscope") && under("aliyuncs.com") {
                Provider::DashScope
            } else if under("modelscope.cn") {
                Provider::ModelScope
            } else if port(base_url) == Some(11434) {
                // Ollama's port; the other servers' defaults (8000, 8080, 30000) are too
                // common to tell them apart by.
                Provider::Ollama
            } else {
                Provider::Generic
            }
        }
    }
}

/// The wire format: the configured one, or Anthropic's for Anthropic and OpenAI's for the rest.
pub fn protocol_for(provider: Provider, configured: Protocol) -> Protocol {
    match configured {
        Protocol::Auto if provider == Provider::Anthropic => Protocol::Anthropic,
        Protocol::Auto => Protocol::Openai,
        explicit => explicit,
    }
}

/// The request URL for a base URL as the design writes them (`…/v1`, or a bare host).
pub fn endpoint(base_url: &str, protocol: Protocol) -> String {
    let base = base_url.trim_end_matches('/');
    let path = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    match protocol {
        Protocol::Anthropic if path.ends_with("/v1") => format!("{base}/messages"),
        Protocol::Anthropic => format!("{base}/v1/messages"),
        // OpenAI and DashScope give a base with a path (`/v1`, `/compatible-mode/v1`);
        // ModelScope's design URL is a bare host serving `/v1`.
        _ if path.is_empty() => format!("{base}/v1/chat/completions"),
        _ => format!("{base}/chat/completions"),
    }
}

/// The model's own name, without a gateway's `vendor/` prefix, lowercased.
fn model_name(model: &str) -> String {
    model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase()
}

/// OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, ...) reject `max_tokens` wherever
/// they are served: "Unsupported parameter: 'max_tokens' is not supported with this model.
/// Use 'max_completion_tokens' instead."
fn is_openai_reasoning_model(model: &str) -> bool {
    let name = model_name(model);
    let mut chars = name.chars();
    name.starts_with("gpt-5")
        || (chars.next() == Some('o') && chars.next().is_some_and(|c| c.is_ascii_digit()))
}

/// Qwen3 models think by default, and DashScope and ModelScope reject that for
/// non-streaming calls: "parameter.enable_thinking must be set to false for non-streaming
/// calls".
fn is_qwen3(model: &str) -> bool {
    model_name(model).starts_with("qwen3")
}

/// What this service sends to the configured provider, resolved once.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The provider.
    pub provider: Provider,
    /// The wire format (never `Auto`).
    pub protocol: Protocol,
    /// The request URL.
    pub url: String,
    /// The model.
    pub model: String,
    /// `AI.MaxTokens`.
    pub max_tokens: u32,
    /// The name the token limit is sent under.
    pub max_tokens_field: &'static str,
    /// Merged last into every request body; a `null` removes the key.
    pub extra: Map<String, Value>,
    /// How the final answer is asked for.
    pub structured: Structured,
    /// Tools are forbidden by leaving them out (the server ignores `tool_choice`).
    pub omit_forbidden_tools: bool,
    /// Tokens of context the server has.
    pub context_tokens: u32,
}

impl Profile {
    /// The profile for `AI.*`.
    pub fn new(ai: &AiConfig) -> Self {
        let provider = provider_for(ai.base_url(), ai.provider);
        let protocol = protocol_for(provider, ai.protocol);
        let max_tokens_field = match ai.max_tokens_field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
            // Anthropic's Messages API knows only `max_tokens`.
            MaxTokensField::Auto if protocol == Protocol::Anthropic => "max_tokens",
            // OpenAI deprecated `max_tokens` in favour of `max_completion_tokens` for every
            // model, and its reasoning models reject the old name.
            MaxTokensField::Auto
                if provider == Provider::OpenAi || is_openai_reasoning_model(&ai.model) =>
            {
                "max_completion_tokens"
            }
            MaxTokensField::Auto => "max_tokens",
        };
        let mut extra = Map::new();
        if matches!(provider, Provider::DashScope | Provider::ModelScope) && is_qwen3(&ai.model) {
            extra.insert("enable_thinking".into(), Value::Bool(false));
        }
        extra.extend(ai.extra_body.clone());
        let structured = match (ai.structured_output, provider.structured()) {
            (StructuredOutput::Off, _) => Structured::Instruction,
            // A gateway speaking Anthropic's format for another provider has its tools.
            // "Thinking may not be enabled when tool_choice forces tool use."
            (StructuredOutput::Auto, _)
                if protocol == Protocol::Anthropic
                    && extra
                        .get("thinking")
                        .is_some_and(|t| t["type"] == "enabled") =>
            {
                Structured::Instruction
            }
            (StructuredOutput::Auto, _) if protocol == Protocol::Anthropic => {
                Structured::SubmitTool
            }
            (StructuredOutput::Auto, Structured::SubmitTool) => Structured::Instruction,
            (StructuredOutput::Auto, form) => form,
        };
        Self {
            provider,
            protocol,
            url: endpoint(ai.base_url(), protocol),
            model: ai.model.clone(),
            max_tokens: ai.max_tokens,
            max_tokens_field,
            extra,
            structured,
            omit_forbidden_tools: provider == Provider::Ollama,
            context_tokens: match ai.context_tokens {
                // Ollama's is what its server has unless it was started otherwise, and it
                // drops what does not fit without a word.
                0 if provider == Provider::Ollama => provider.context_tokens(),
                // A guess: an AI.MaxTokens raised past it says the model has more.
                0 => provider
                    .context_tokens()
                    .max(ai.max_tokens.saturating_mul(2)),
                n => n,
            },
        }
    }

    /// Sets the token limit and merges the extra fields into a request body.
    pub fn finish(&self, body: &mut Map<String, Value>) {
        body.insert(self.max_tokens_field.into(), self.max_tokens.into());
        for (key, value) in &self.extra {
            if value.is_null() {
                body.remove(key);
            } else {
                body.insert(key.clone(), value.clone());
            }
        }
    }

    /// One line for the logs.
    pub fn describe(&self) -> String {
        let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "provider {} ({} wire format), model {}, {} {}, context {} tokens, final answer as {}{}",
            self.provider.as_str(),
            self.protocol.as_str(),
            self.model,
            self.max_tokens_field,
            self.max_tokens,
            self.context_tokens,
            self.structured.as_str(),
            if extra.is_empty() {
                String::new()
            } else {
                format!(", extra {}", extra.join(" "))
            }
        )
    }
}

/// Profiles for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Profile;
    use crate::config::{Config, Environment};

    /// The profile for this base URL and model, with more `AI:` keys as YAML lines
    /// indented by two spaces.
    pub(crate) fn profile(base_url: &str, model: &str, extra_yaml: &str) -> Profile {
        let yaml = format!(
            "AI:\n  BaseURL: {base_url}\n  APIKey: sk-test-key\n  Model: {model}\n  PrometheusURL: http://p:9090\n{extra_yaml}"
        );
        Profile::new(
            &Config::from_yaml(&yaml, &Environment::default())
                .unwrap()
                .ai,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::profile;
    use super::*;

    #[test]
    fn the_designs_providers_are_recognised_with_their_endpoints() {
        let cases = [
            (
                "https://api.anthropic.com/v1",
                Provider::Anthropic,
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://api.anthropic.com",
                Provider::Anthropic,
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://api.openai.com/v1",
                Provider::OpenAi,
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://dashscope.aliyuncs.com/compatible-mode/v1",
                Provider::DashScope,
                "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
            ),
            (
                "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
                Provider::DashScope,
                "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions",
            ),
            (
                "https://api-inference.modelscope.cn",
                Provider::ModelScope,
                "https://api-inference.modelscope.cn/v1/chat/completions",
            ),
            (
                "http://localhost:11434/v1/",
                Provider::Ollama,
                "http://localhost:11434/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:8000/v1",
                Provider::Generic,
                "http://127.0.0.1:8000/v1/chat/completions",
            ),
            (
                "https://notanthropic.com.evil.example/v1",
                Provider::Generic,
                "https://notanthropic.com.evil.example/v1/chat/completions",
            ),
        ];
        for (base, provider, url) in cases {
            let p = profile(base, "m", "");
            assert_eq!((p.provider, p.url.as_str()), (provider, url), "{base}");
        }
    }

    #[test]
    fn the_context_is_the_providers_unless_configured() {
        let cases = [
            ("https://api.anthropic.com/v1", "", 200_000),
            ("https://api.openai.com/v1", "", 128_000),
            ("http://127.0.0.1:11434/v1", "", 4096),
            ("http://127.0.0.1:8081/v1", "  Provider: llamacpp\n", 32_768),
            ("http://127.0.0.1:8081/v1", "", 32_768),
            // A limit on the answer past the guess raises it.
            ("http://127.0.0.1:8081/v1", "  MaxTokens: 64000\n", 128_000),
            ("http://127.0.0.1:11434/v1", "  MaxTokens: 64000\n", 4096),
            (
                "http://127.0.0.1:8081/v1",
                "  Provider: llamacpp\n  ContextTokens: 16384\n  MaxTokens: 800\n",
                16_384,
            ),
        ];
        for (base, yaml, tokens) in cases {
            assert_eq!(
                profile(base, "m", yaml).context_tokens,
                tokens,
                "{base} {yaml}"
            );
        }
    }

    #[test]
    fn the_token_limit_goes_under_the_name_each_provider_and_model_accepts() {
        let cases = [
            (
                "https://api.anthropic.com/v1",
                "claude-sonnet-4-5",
                "max_tokens",
            ),
            (
                "https://api.openai.com/v1",
                "gpt-4o",
                "max_completion_tokens",
            ),
            (
                "https://api.openai.com/v1",
                "gpt-5-mini",
                "max_completion_tokens",
            ),
            (
                "https://gateway.example/v1",
                "gpt-5-mini",
                "max_completion_tokens",
            ),
            (
                "https://gateway.example/v1",
                "openai/o3-mini",
                "max_completion_tokens",
            ),
            ("https://gateway.example/v1", "o1", "max_completion_tokens"),
            ("https://gateway.example/v1", "gpt-4o", "max_tokens"),
            ("https://gateway.example/v1", "ollama-model", "max_tokens"),
            (
                "https://dashscope.aliyuncs.com/compatible-mode/v1",
                "qwen3-32b",
                "max_tokens",
            ),
        ];
        for (base, model, field) in cases {
            let p = profile(base, model, "");
            assert_eq!(p.max_tokens_field, field, "{base} {model}");
            assert_eq!(p.max_tokens, 4096);
        }
        let p = profile(
            "https://gateway.example/v1",
            "gpt-4o",
            "  MaxTokensField: max_completion_tokens\n  MaxTokens: 900\n",
        );
        assert_eq!(
            (p.max_tokens_field, p.max_tokens),
            ("max_completion_tokens", 900)
        );
    }

    #[test]
    fn qwen3_on_dashscope_and_modelscope_is_sent_enable_thinking_false() {
        let off = Some(&Value::Bool(false));
        let dashscope = "https://dashscope.aliyuncs.com/compatible-mode/v1";
        assert_eq!(
            profile(dashscope, "qwen3-32b", "")
                .extra
                .get("enable_thinking"),
            off
        );
        assert_eq!(
            profile(
                "https://api-inference.modelscope.cn",
                "Qwen/Qwen3-235B-A22B",
                ""
            )
            .extra
            .get("enable_thinking"),
            off
        );
        assert!(profile(dashscope, "qwen-max", "").extra.is_empty());
        assert!(profile("http://localhost:8000/v1", "Qwen/Qwen3-8B", "")
            .extra
            .is_empty());
        // A gateway in front of DashScope, named in configuration.
        let gateway = profile(
            "https://llm.internal/v1",
            "qwen3-32b",
            "  Provider: dashscope\n",
        );
        assert_eq!(gateway.provider, Provider::DashScope);
        assert_eq!(gateway.extra.get("enable_thinking"), off);
    }

    #[test]
    fn extra_body_is_merged_last_and_a_null_removes_what_the_profile_would_send() {
        let p = profile(
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
            "qwen3-32b",
            "  ExtraBody:\n    enable_thinking: null\n    top_K: 20\n    chat_template_kwargs: {enable_thinking: false}\n",
        );
        let mut body = Map::new();
        body.insert("model".into(), "qwen3-32b".into());
        p.finish(&mut body);
        assert_eq!(
            Value::Object(body),
            serde_json::json!({"model": "qwen3-32b", "max_tokens": 4096, "top_K": 20,
                "chat_template_kwargs": {"enable_thinking": false}})
        );
    }

    #[test]
    fn the_wire_format_can_be_named_for_an_anthropic_compatible_gateway() {
        let p = profile(
            "https://gateway.example/anthropic",
            "claude-sonnet-4-5",
            "  Protocol: anthropic\n",
        );
        assert_eq!(p.protocol, Protocol::Anthropic);
        assert_eq!(p.url, "https://gateway.example/anthropic/v1/messages");
        assert_eq!(p.max_tokens_field, "max_tokens");
    }
}
