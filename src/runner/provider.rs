//! Provider profiles: what each AI provider the design names needs in a request body,
//! picked from `AI.BaseURL` and `AI.Model`, every choice overridable in configuration.
//!
//! | provider | recognised by | wire format | token limit sent as | also sent |
//! |---|---|---|---|---|
//! | Anthropic | host `*.anthropic.com` | Messages | `max_tokens` (required) | |
//! | OpenAI | host `api.openai.com` | chat completions | `max_completion_tokens` | |
//! | DashScope (Qwen) | host `dashscope*.aliyuncs.com` | chat completions | `max_tokens` | `enable_thinking: false` for Qwen3 models |
//! | ModelScope | host `*modelscope.cn` | chat completions | `max_tokens` | `enable_thinking: false` for Qwen3 models |
//! | any other (Ollama, vLLM, gateways) | | chat completions | `max_tokens`, or `max_completion_tokens` for o-series / gpt-5 models | |
//!
//! `AI.Provider` names the provider when the URL does not (a gateway in front of one),
//! `AI.Protocol` the wire format, `AI.MaxTokensField` the token limit's name, and
//! `AI.ExtraBody` is merged last into every request body: it adds any other provider's
//! parameter, and a `null` value removes one the profile would send.
//!
//! The Python runner gets the resolved profile as flags, so both runners send the same
//! requests.

use serde_json::{Map, Value};

use crate::config::{AiConfig, MaxTokensField, Protocol, ProviderSetting};

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
    /// Any other OpenAI-compatible server (Ollama, vLLM, a gateway).
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
            Provider::Generic => "generic",
        }
    }
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

/// The provider for a base URL: the configured one, or recognised from the host.
pub fn provider_for(base_url: &str, configured: ProviderSetting) -> Provider {
    match configured {
        ProviderSetting::Anthropic => Provider::Anthropic,
        ProviderSetting::Openai => Provider::OpenAi,
        ProviderSetting::Dashscope => Provider::DashScope,
        ProviderSetting::Modelscope => Provider::ModelScope,
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
        Self {
            provider,
            protocol,
            url: endpoint(ai.base_url(), protocol),
            model: ai.model.clone(),
            max_tokens: ai.max_tokens,
            max_tokens_field,
            extra,
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
            "provider {} ({} wire format), model {}, {} {}{}",
            self.provider.as_str(),
            self.protocol.as_str(),
            self.model,
            self.max_tokens_field,
            self.max_tokens,
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
                Provider::Generic,
                "http://localhost:11434/v1/chat/completions",
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
