//! Configuration: one typed tree, loaded once from `etc/deploy-diagnosis.yaml`, with
//! `${VAR}` expansion (from the environment, then a `.env` file) and `DD_<SECTION>__<KEY>`
//! overrides.
//!
//! The YAML keeps the design's keys verbatim (`Mongo.URL`, `AI.BaseURL`, ...). Keys are
//! matched case-insensitively, because environment overrides cannot carry case
//! (`DD_AI__BASEURL` overrides `AI.BaseURL`). Each value is parsed into its type as it is
//! read (durations, counts with a floor, URLs, secrets: [`value`]); what is left for
//! [`Config::validate`] are the rules between keys.
//!
//! - [`sections`]: the sections, their types and every default;
//! - [`source`]: the file, the environment and the overrides;
//! - [`secret`]: secrets, and the write token of the two keys that set it.

pub mod reference;
mod secret;
mod sections;
mod source;
mod value;

use std::path::{Path, PathBuf};

use crate::model::report::RunnerKind;

pub use secret::{Secret, MIN_SECRET_LEN};
pub use sections::*;
pub use source::Environment;
pub use value::{HttpUrl, GITHUB_READ_TOOLS};

/// Why the configuration could not be loaded. Every message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file or an override is not valid YAML.
    #[error("configuration {0}")]
    Parse(String),
    /// A value is present but wrong, or a required one is missing.
    #[error("configuration key {key}: {message}")]
    Invalid {
        /// The key, spelt as documented (`Worker.Concurrency`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The key of a Standard Webhooks secret (`whsec_` and Base64); `None` when it is not one.
pub fn webhook_secret(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    (!key.is_empty()).then_some(key)
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Config {
    /// Loads, expands, overrides and validates the configuration file.
    pub fn load(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, env)
    }

    /// Parses configuration text (YAML), then applies `${VAR}` and `DD_*` from `env`.
    pub fn from_yaml(text: &str, env: &Environment) -> Result<Self, ConfigError> {
        let config = source::parse(text, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules between keys (each value was checked as it was parsed); the first
    /// problem found is reported with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (write, alias) = (&self.auth.write_token, &self.webhook.bearer_token);
        if !write.is_empty() && !alias.is_empty() && write.expose() != alias.expose() {
            return Err(invalid(
                "Auth.WriteToken",
                "differs from Webhook.BearerToken, its older name: set one of them",
            ));
        }
        if self.ai.evidence_only() {
            if !self.evidence.enabled {
                return Err(invalid(
                    "AI.BaseURL",
                    "is empty (evidence-only mode) while Evidence.Enabled is false: \
                     nothing could write a report; set AI_BASE_URL or enable the evidence stage",
                ));
            }
        } else {
            if self.ai.api_key.is_empty() {
                return Err(invalid(
                    "AI.APIKey",
                    "is empty: set AI_API_KEY (or DD_AI__APIKEY)",
                ));
            }
            if self.ai.model.trim().is_empty() {
                return Err(invalid("AI.Model", "is empty"));
            }
        }
        if let Some(url) = &self.runner.prometheus_mcp_url {
            if url::Url::parse(url.as_str())
                .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
            {
                return Err(invalid(
                    "Runner.PrometheusMCPURL",
                    "carries credentials, which would be on the runner's command line: \
                     give the MCP server no credentials of its own",
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, sink) in self.notify.sinks.iter().enumerate() {
            let key = |k: &str| format!("Notify.Sinks[{i}].{k}");
            if !names.insert(sink.name.as_str()) {
                return Err(invalid(
                    &key("Name"),
                    format!("{:?} names two sinks", sink.name),
                ));
            }
            if sink.name == crate::model::notify::ROLLBACK_SINK {
                return Err(invalid(
                    &key("Name"),
                    "\"rollback\" is the outbox's name for the rollback requests of deployments' \
                     rollback policies; name the sink otherwise",
                ));
            }
            let secret = sink.secret.expose();
            match sink.kind {
                SinkKind::Webhook
                    if !secret.is_empty() && crate::config::webhook_secret(secret).is_none() =>
                {
                    return Err(invalid(
                        &key("Secret"),
                        "must be whsec_ and Base64 (the Standard Webhooks form), or empty",
                    ));
                }
                SinkKind::WeCom | SinkKind::Slack if !secret.is_empty() => {
                    return Err(invalid(
                        &key("Secret"),
                        "must be empty: a WeCom or Slack webhook's key is in its URL",
                    ));
                }
                _ => {}
            }
            if !["", "info", "warning", "critical"]
                .contains(&sink.min_severity.to_lowercase().as_str())
            {
                return Err(invalid(
                    &key("MinSeverity"),
                    "must be info, warning or critical (or empty)",
                ));
            }
        }
        let red = &self.release.red;
        for (key, template) in [
            ("Release.RED.Rate", &red.rate),
            ("Release.RED.Errors", &red.errors),
            ("Release.RED.Duration", &red.duration),
        ] {
            if !template.trim().is_empty() && !template.contains("{{hostname}}") {
                return Err(invalid(
                    key,
                    "has no {{hostname}}: the template must select one host (hostname=~{{hostname}})",
                ));
            }
        }
        let t = &self.release.thresholds;
        for (key, value) in [
            ("Release.Thresholds.RateMin", t.rate_min),
            (
                "Release.Thresholds.ErrorRateMaxPercent",
                t.error_rate_max_percent,
            ),
            ("Release.Thresholds.DurationP95MaxMs", t.duration_p95_max_ms),
            ("Release.Thresholds.DurationP99MaxMs", t.duration_p99_max_ms),
        ] {
            if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(invalid(key, "must be a number of at least 0"));
            }
        }
        if t.error_rate_max_percent.is_some_and(|v| v > 100.0) {
            return Err(invalid(
                "Release.Thresholds.ErrorRateMaxPercent",
                "is a percentage: at most 100",
            ));
        }
        if self.ai.tool_result_budget_chars < self.ai.tool_result_max_chars {
            return Err(invalid(
                "AI.ToolResultBudgetChars",
                "must be at least AI.ToolResultMaxChars",
            ));
        }
        if self.ai.context_tokens != 0 && self.ai.context_tokens <= self.ai.max_tokens {
            return Err(invalid(
                "AI.ContextTokens",
                "must be above AI.MaxTokens (the answer is written into the same context), or 0 for the provider's",
            ));
        }
        if self.store.kind == StoreKind::Mongo {
            if !(self.mongo.url.starts_with("mongodb://")
                || self.mongo.url.starts_with("mongodb+srv://"))
            {
                return Err(invalid(
                    "Mongo.URL",
                    "must start with mongodb:// or mongodb+srv://",
                ));
            }
            if self.mongo.database.trim().is_empty() {
                return Err(invalid("Mongo.Database", "is empty"));
            }
        } else if self.store.path.as_os_str().is_empty() {
            return Err(invalid("Store.Path", "is empty"));
        }
        if self.runner.kind == RunnerKind::Docker {
            let d = &self.docker;
            if !(d.host.starts_with("unix://") || d.host.starts_with('/')) {
                return Err(invalid(
                    "Docker.Host",
                    "must be a unix socket (unix:///var/run/docker.sock)",
                ));
            }
            for (key, value) in [
                ("Docker.Container", &d.container),
                ("Docker.Image", &d.image),
                ("Docker.Network", &d.network),
                ("Docker.User", &d.user),
            ] {
                if value.trim().is_empty() {
                    return Err(invalid(key, "is empty"));
                }
            }
            let user = d.user.split(':').next().unwrap_or_default().trim();
            if user == "root" || user == "0" {
                return Err(invalid(
                    "Docker.User",
                    "is root: the runner container runs as the image's non-root user \
                     (10001:10001 in docker/Dockerfile)",
                ));
            }
        }
        for (i, server) in self.mcp.servers.iter().enumerate() {
            if server.command.is_empty() == server.url.is_empty() {
                return Err(invalid(
                    &format!("MCP.Servers[{i}].Command"),
                    format!(
                        "server {:?} needs exactly one of Command and URL",
                        server.name
                    ),
                ));
            }
            if let Some(bad) = server.env.iter().find(|e| !e.contains('=')) {
                return Err(invalid(
                    &format!("MCP.Servers[{i}].Env"),
                    format!("{bad:?} is not KEY=value"),
                ));
            }
        }
        if self.github.max_patch_chars < self.github.max_file_patch_chars {
            return Err(invalid(
                "GitHub.MaxPatchChars",
                "must be at least GitHub.MaxFilePatchChars",
            ));
        }
        // Writes (alerts, deletions, re-diagnoses that spend the AI budget) are open without
        // the write token, whatever the read token says: a read token alone guards the
        // reports while anybody may delete them.
        if self.write_token().is_empty() && !self.auth.allow_anonymous {
            if !is_loopback(&self.host) {
                return Err(invalid(
                    "Auth.WriteToken",
                    format!(
                        "is empty while Host {:?} accepts connections from other machines, so \
                         anybody could post alerts, delete reports and spend the AI budget: \
                         set Auth.WriteToken (and Auth.ReadToken), bind Host to 127.0.0.1, or \
                         set Auth.AllowAnonymous: true",
                        self.host
                    ),
                ));
            }
            if !self.auth.read_token.is_empty() {
                return Err(invalid(
                    "Auth.WriteToken",
                    "is empty while Auth.ReadToken is set: reads would need a token and writes \
                     none. Set Auth.WriteToken too, or Auth.AllowAnonymous: true to mean it",
                ));
            }
        }
        Ok(())
    }
}

/// Whether a listen address only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const YAML: &str = "
Name: deploy-diagnosis
Host: 0.0.0.0
Port: 8888
Auth:
  WriteToken: write-token-123
Mongo:
  URL: mongodb://localhost:27017
  Database: hackathon
AI:
  BaseURL: ${AI_BASE_URL}
  APIKey: ${AI_API_KEY}
  Model: claude-3-5-sonnet-20241022
  Timeout: 60
  PrometheusURL: http://localhost:9090
  GitHubToken: ${GITHUB_TOKEN}
  GitHubToolsets: repos,issues,pull_requests,releases
";

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// OpenAI's base URL and a key, and `extra`.
    fn openai(extra: &[(&str, &str)]) -> Environment {
        let mut pairs = vec![
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "sk-test-key"),
        ];
        pairs.extend_from_slice(extra);
        env(&pairs)
    }

    #[test]
    fn design_keys_load_and_variables_expand() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.anthropic.com/v1"),
            ("AI_API_KEY", "sk-ant-x: #1"),
        ]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert_eq!(c.ai.base_url(), "https://api.anthropic.com/v1");
        assert_eq!(c.ai.api_key.expose(), "sk-ant-x: #1");
        assert!(c.ai.github_token.is_empty());
        assert_eq!(c.ai.diagnosis_deadline(), Duration::from_secs(120));
        assert_eq!(c.mongo.database, "hackathon");
        assert_eq!(c.store.kind, StoreKind::Embedded);
    }

    #[test]
    fn dd_variables_override_any_key_case_insensitively() {
        let e = openai(&[
            ("DD_PORT", "9000"),
            ("DD_AI__BASEURL", "http://127.0.0.1:1/v1"),
            ("DD_STORE__KIND", "mongo"),
            ("DD_WORKER__CONCURRENCY", "7"),
        ]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.ai.base_url(), "http://127.0.0.1:1/v1");
        assert_eq!(c.store.kind, StoreKind::Mongo);
        assert_eq!(c.worker.concurrency.get(), 7);
        let c = Config::from_yaml(YAML, &openai(&[("DD_RUNNER__KIND", " Docker ")])).unwrap();
        assert_eq!(
            c.runner.kind,
            RunnerKind::Docker,
            "values of a choice in any case"
        );
    }

    #[test]
    fn missing_api_key_names_the_key_and_the_variable() {
        let e = env(&[("AI_BASE_URL", "https://api.openai.com/v1")]);
        let err = Config::from_yaml(YAML, &e).unwrap_err().to_string();
        assert!(
            err.contains("AI.APIKey") && err.contains("AI_API_KEY"),
            "{err}"
        );
    }

    #[test]
    fn wrong_values_name_their_key() {
        let cases = [
            ("DD_AI__PROMETHEUSURL", "localhost:9090", "AI.PrometheusURL"),
            ("DD_WORKER__CONCURRENCY", "0", "Worker.Concurrency"),
            ("DD_AI__TIMEOUT", "0", "AI.Timeout"),
            (
                "DD_STORE__KIND",
                "postgres",
                "Store.Kind: unknown variant `postgres`, expected `embedded` or `mongo`",
            ),
            ("DD_RUNNER__KIND", "k8s", "Runner.Kind"),
            ("DD_PORT", "http", "key Port:"),
            ("DD_AI__MAXTOKENS", "0", "AI.MaxTokens"),
            ("DD_AI__MAXTOKENSFIELD", "tokens", "AI.MaxTokensField"),
            ("DD_AI__PROVIDER", "azure", "AI.Provider"),
            ("DD_AI__STRUCTUREDOUTPUT", "always", "AI.StructuredOutput"),
            ("DD_AI__CONTEXTTOKENS", "100", "AI.ContextTokens"),
            ("DD_WORKER__LEASESECONDS", "1", "Worker.LeaseSeconds"),
            (
                "DD_EVIDENCE__BASELINEMINUTES",
                "-5",
                "Evidence.BaselineMinutes",
            ),
            ("DD_DOCKER__CPUS", "0", "Docker.CPUs"),
            ("DD_DOCKER__MCPPORT", "70000", "Docker.MCPPort"),
            ("DD_GITHUB__APIURL", "api.github.com", "GitHub.APIURL"),
            ("DD_GITHUB__MAXPRS", "0", "GitHub.MaxPRs"),
            ("DD_WEBHOOK__MAXALERTS", "0", "Webhook.MaxAlerts"),
            ("DD_AUTH__READTOKEN", "s3cr3t", "Auth.ReadToken"),
        ];
        for (var, value, key) in cases {
            let err = Config::from_yaml(YAML, &openai(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
            assert!(!err.contains("s3cr3t"), "a secret is never echoed: {err}");
        }
    }

    #[test]
    fn exposed_hosts_need_a_token_and_secrets_need_eight_characters() {
        let e = openai(&[]);
        let open = YAML.replace("Auth:\n  WriteToken: write-token-123\n", "");
        let err = Config::from_yaml(&open, &e).unwrap_err().to_string();
        assert!(
            err.contains("Auth.WriteToken")
                && err.contains("0.0.0.0")
                && err.contains("AllowAnonymous"),
            "{err}"
        );
        let local = open.replace("Host: 0.0.0.0", "Host: 127.0.0.1");
        Config::from_yaml(&local, &e).expect("loopback needs no token");
        let read_only = open.replace("Mongo:\n", "Auth:\n  ReadToken: read-token-123\nMongo:\n");
        let err = Config::from_yaml(&read_only, &e).unwrap_err().to_string();
        assert!(
            err.contains("Auth.WriteToken") && err.contains("0.0.0.0"),
            "the read token alone does not guard writes: {err}"
        );
        let local_read_only = read_only.replace("Host: 0.0.0.0", "Host: 127.0.0.1");
        let err = Config::from_yaml(&local_read_only, &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Auth.WriteToken") && err.contains("Auth.ReadToken"),
            "{err}"
        );
        let meant = read_only.replace("Auth:\n", "Auth:\n  AllowAnonymous: true\n");
        Config::from_yaml(&meant, &e).expect("anonymous writes, guarded reads: said so");
        let anonymous = open.replace("Mongo:\n", "Auth:\n  AllowAnonymous: true\nMongo:\n");
        Config::from_yaml(&anonymous, &e).expect("explicitly anonymous");
        let alias = open.replace(
            "Mongo:\n",
            "Webhook:\n  BearerToken: hook-token-1\nMongo:\n",
        );
        let c = Config::from_yaml(&alias, &e).expect("the old name still works");
        assert_eq!(c.write_token().expose(), "hook-token-1");

        let short = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "k"),
        ]);
        let err = Config::from_yaml(YAML, &short).unwrap_err().to_string();
        assert!(
            err.contains("AI.APIKey") && err.contains("8 characters"),
            "{err}"
        );
        let err = Config::from_yaml(&YAML.replace("write-token-123", "short"), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Auth.WriteToken"), "{err}");
    }

    #[test]
    fn extra_body_keeps_its_keys_as_written_and_may_not_replace_the_agents_own() {
        let e = openai(&[]);
        let yaml = format!("{YAML}  ExtraBody:\n    top_K: 20\n    Reasoning_Effort: low\n");
        let c = Config::from_yaml(&yaml, &e).unwrap();
        assert_eq!(
            serde_json::Value::Object(c.ai.extra_body),
            serde_json::json!({"top_K": 20, "Reasoning_Effort": "low"})
        );
        let yaml = format!("{YAML}  ExtraBody:\n    stream: true\n");
        let err = Config::from_yaml(&yaml, &e).unwrap_err().to_string();
        assert!(
            err.contains("AI.ExtraBody") && err.contains("stream"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_configuration_file_loads_with_its_documented_variables() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.anthropic.com/v1"),
            ("AI_API_KEY", "sk-test-key"),
            ("AI_MODEL", "claude-sonnet-4-5"),
            ("PROMETHEUS_URL", "http://localhost:9090"),
        ]);
        let c = Config::from_yaml(include_str!("../../etc/deploy-diagnosis.yaml"), &e).unwrap();
        assert_eq!(
            (c.ai.max_tokens, c.ai.provider, c.ai.extra_body.len()),
            (4096, ProviderSetting::Auto, 0)
        );
    }

    #[test]
    fn notification_sinks_are_read_and_checked() {
        let blank = "AI:\n  BaseURL:\n  PrometheusURL: http://localhost:9090\n";
        let sink = |extra: &str| {
            format!("{blank}Notify:\n  Sinks:\n    - Name: ops\n      Kind: Webhook\n      URL: https://hooks.example/x\n{extra}")
        };
        let e = env(&[("HOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]);
        let c = Config::from_yaml(
            &sink("      Secret: ${HOOK_SECRET}\n      Verdicts: [release]\n"),
            &e,
        )
        .unwrap();
        let s = &c.notify.sinks[0];
        assert_eq!(
            (s.name.as_str(), s.kind, s.url.as_str()),
            ("ops", SinkKind::Webhook, "https://hooks.example/x")
        );
        assert_eq!(s.on.len(), 2, "completed and failed by default");
        assert_eq!(
            s.verdicts,
            vec![crate::model::verdict::Attribution::Release]
        );
        assert_eq!(c.notify.max_attempts.get(), 8);
        let refused = |text: &str| {
            Config::from_yaml(text, &Environment::default())
                .unwrap_err()
                .to_string()
        };
        let err = refused(&sink("      Secret: hunter2\n"));
        assert!(
            err.contains("Notify.Sinks[0].Secret") && !err.contains("hunter2"),
            "{err}"
        );
        let err = refused(&format!("{blank}Notify:\n  Sinks:\n    - {{Name: a, Kind: slack, URL: 'https://hooks.slack.com/x', Secret: slackkey123}}\n"));
        assert!(
            err.contains("Notify.Sinks[0].Secret") && err.contains("in its URL"),
            "{err}"
        );
        let err = refused(&format!(
            "{blank}Notify:\n  Sinks:\n    - {{Name: a, Kind: teams, URL: 'https://x.example'}}\n"
        ));
        assert!(err.contains("Kind"), "{err}");
        let c = Config::from_yaml(
            &format!("{blank}Notify:\n  Sinks:\n    - {{Name: d, Kind: DingTalk, URL: 'https://oapi.dingtalk.com/robot/send?access_token=t', Secret: SECabcdef123, RateLimitPerMinute: 5}}\n"),
            &Environment::default(),
        )
        .unwrap();
        let s = &c.notify.sinks[0];
        assert_eq!(
            (s.kind, s.rate_per_minute.map(|n| n.get())),
            (SinkKind::DingTalk, Some(5))
        );
        let err = refused(&format!(
            "{blank}Notify:\n  Sinks:\n    - {{Name: a, Kind: webhook, URL: 'https://a.example'}}\n    - {{Name: a, Kind: webhook, URL: 'https://b.example'}}\n"
        ));
        assert!(err.contains("Notify.Sinks[1].Name"), "{err}");
        let err = refused(&sink("      MinSeverity: loud\n"));
        assert!(err.contains("MinSeverity"), "{err}");
    }

    #[test]
    fn a_runner_mcp_url_is_an_http_url_without_credentials() {
        let e = openai(&[]);
        let with = |url: &str| format!("{YAML}Runner:\n  PrometheusMCPURL: {url}\n");
        let c = Config::from_yaml(&with("http://127.0.0.1:8900/mcp"), &e).unwrap();
        assert_eq!(
            c.runner.prometheus_mcp_url.as_ref().map(|u| u.as_str()),
            Some("http://127.0.0.1:8900/mcp")
        );
        let err = Config::from_yaml(&with("ftp://x/mcp"), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Runner.PrometheusMCPURL"), "{err}");
        let err = Config::from_yaml(&with("http://u:p@127.0.0.1:8900/mcp"), &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Runner.PrometheusMCPURL") && err.contains("credentials"),
            "{err}"
        );
        assert!(!err.contains("u:p"), "{err}");
    }

    #[test]
    fn release_defaults_are_read_and_checked() {
        let blank = "AI:\n  BaseURL:\n  PrometheusURL: http://localhost:9090\n";
        let with =
            |extra: &str| Config::from_yaml(&format!("{blank}{extra}"), &Environment::default());
        let c = with(
            "Release:\n  RED:\n    Errors: 'sum(rate(errors{hostname=~{{hostname}}}[1m]))'\n  Thresholds:\n    ErrorRateMaxPercent: 5\n    DurationP99MaxMs: 800\n",
        )
        .unwrap();
        assert_eq!(
            c.release.red.errors,
            "sum(rate(errors{hostname=~{{hostname}}}[1m]))"
        );
        assert_eq!(c.release.thresholds.error_rate_max_percent, Some(5.0));
        assert_eq!(c.release.thresholds.duration_p99_max_ms, Some(800.0));
        assert_eq!(c.release.thresholds.rate_min, None);
        let err = with("Release:\n  RED:\n    Rate: 'sum(rate(x[1m]))'\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Release.RED.Rate") && err.contains("{{hostname}}"),
            "{err}"
        );
        let err = with("Release:\n  Thresholds:\n    ErrorRateMaxPercent: 120\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Release.Thresholds.ErrorRateMaxPercent"),
            "{err}"
        );
        // Automatic rollback: off unless turned on, YAML's booleans or dry-run.
        assert_eq!(with("").unwrap().release.auto_rollback, AutoRollback::Off);
        for (yaml, expected) in [
            ("true", AutoRollback::On),
            ("false", AutoRollback::Off),
            ("dry-run", AutoRollback::DryRun),
            ("Dry-Run", AutoRollback::DryRun),
        ] {
            let c = with(&format!("Release:\n  AutoRollback: {yaml}\n")).unwrap();
            assert_eq!(c.release.auto_rollback, expected, "{yaml}");
        }
        let err = with("Release:\n  AutoRollback: sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Release.AutoRollback") && err.contains("dry-run"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_base_url_is_evidence_only_mode_unless_the_evidence_is_off() {
        let e = env(&[("AI_BASE_URL", ""), ("AI_API_KEY", "")]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert!(c.ai.evidence_only());
        let blank = "AI:\n  BaseURL:\n  PrometheusURL: http://localhost:9090\n";
        assert!(Config::from_yaml(blank, &Environment::default())
            .unwrap()
            .ai
            .evidence_only());
        let e = env(&[("DD_EVIDENCE__ENABLED", "false")]);
        let err = Config::from_yaml(YAML, &e).unwrap_err().to_string();
        assert!(
            err.contains("AI.BaseURL") && err.contains("Evidence.Enabled"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1"),
            ("AI_API_KEY", "sk-very-secret"),
        ]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }

    #[test]
    fn values_arrive_in_their_types() {
        let e = env(&[
            ("AI_BASE_URL", "https://api.openai.com/v1/"),
            ("AI_API_KEY", "sk-test-key"),
            ("DD_WORKER__LEASESECONDS", "45"),
            ("DD_EVIDENCE__BASELINEMINUTES", "15"),
            ("DD_DEPLOYMENTS__WATCHMINUTES", "90"),
        ]);
        let c = Config::from_yaml(YAML, &e).unwrap();
        assert_eq!(c.ai.base_url(), "https://api.openai.com/v1");
        assert_eq!(c.worker.lease, Duration::from_secs(45));
        assert_eq!(c.evidence.baseline, Duration::from_secs(15 * 60));
        assert_eq!(c.deployments.watch, Duration::from_secs(90 * 60));
        assert_eq!(c.ai.timeout, Duration::from_secs(60));
        assert_eq!(c.ai.prometheus_url.as_str(), "http://localhost:9090");
        // A key left out takes its default from its section's one `Default`.
        assert_eq!(c.worker.poll, WorkerConfig::default().poll);
        assert_eq!(c.github.mcp_tools.len(), GITHUB_READ_TOOLS.len());
    }

    #[test]
    fn an_empty_value_names_the_override_that_sets_it() {
        let e = env(&[("DD_AI__PROMETHEUSURL", "")]);
        let err = Config::from_yaml(YAML, &e).unwrap_err().to_string();
        assert!(
            err.contains("AI.PrometheusURL") && err.contains("DD_AI__PROMETHEUSURL"),
            "{err}"
        );
        let servers = "MCP:\n  Servers:\n    - Name: a\n      Command: x\n    - Name: ''\n";
        let err = Config::from_yaml(servers, &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("MCP.Servers[1].Name"), "{err}");
    }

    #[test]
    fn keys_the_service_does_not_read_are_listed_as_written() {
        let yaml = format!(
            "{YAML}Worker:\n  Concurency: 3\nQiniu:\n  Bucket: b\nMCP:\n  Servers:\n    - Name: p\n      URL: http://127.0.0.1:1/mcp\n      Timeout: 5\n"
        );
        let e = openai(&[("DD_ENV", "production")]);
        let c = Config::from_yaml(&yaml, &e).unwrap();
        assert_eq!(
            c.unknown_keys,
            ["MCP.Servers.Timeout", "Qiniu", "Worker.Concurency"]
        );
        assert!(
            Config::from_yaml(YAML, &e).unwrap().unknown_keys.is_empty(),
            "the design's keys, extra bodies and DD_* variables are not reported"
        );
    }
}
