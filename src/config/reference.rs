//! The configuration reference: every documented key, its default and its meaning, in
//! the order `docs/configuration.md` shows them. The document's table is written from
//! [`ROWS`] (tests fail when it differs, and `DD_BLESS=1 cargo test --lib reference`
//! writes it again). The loader knows these keys and [`super::sections::OTHER_KEYS`]
//! (sections, and keys inside a value) and no other; each default written as a value must be
//! what the service takes when the key is left out.

/// One row of the reference: keys that share a default and a meaning.
pub struct Row {
    /// The keys, spelt as errors name them.
    pub keys: &'static [&'static str],
    /// The default, as Markdown: a value in backticks per key (`` `8888` ``), or words.
    pub default: &'static str,
    /// What the keys do, as Markdown (links are relative to `docs/`).
    pub meaning: &'static str,
}

/// The table's first lines.
const HEADER: &str = "| key | default | meaning |\n|---|---|---|\n";

/// Where the table starts and ends in `docs/configuration.md`.
pub const BEGIN: &str = "<!-- the table is written from src/config/reference.rs -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- end of the table -->";

/// The reference as a Markdown table.
pub fn table() -> String {
    let mut out = String::from(HEADER);
    for row in ROWS {
        let keys: Vec<String> = row.keys.iter().map(|k| format!("`{k}`")).collect();
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            keys.join(", "),
            row.default,
            row.meaning
        ));
    }
    out
}

/// Every documented key.
pub const ROWS: &[Row] = &[
    Row {
        keys: &["Name", "Host", "Port"],
        default: "`deploy-diagnosis`, `127.0.0.1`, `8888`",
        meaning: "service name and listen address",
    },
    Row {
        keys: &["Timeout", "MaxConns"],
        default: "`10000`, `10000`",
        meaning: "go-zero's `RestConf` keys: milliseconds a request may take, and requests handled at once; past either the answer is `503` with `Retry-After` (health probes are not counted). A timed-out write may still have been stored: Alertmanager's retry is then recognised as the same alert",
    },
    Row {
        keys: &["Mongo.URL", "Mongo.Database"],
        default: "`mongodb://localhost:27017`, `hackathon`",
        meaning: "MongoDB (with `Store.Kind: mongo`)",
    },
    Row {
        keys: &["AI.BaseURL"],
        default: "empty: evidence-only mode",
        meaning: "OpenAI `https://api.openai.com/v1`, Claude `https://api.anthropic.com/v1`, Qwen `https://dashscope.aliyuncs.com/compatible-mode/v1`, ModelScope `https://api-inference.modelscope.cn`, or any OpenAI-compatible server",
    },
    Row {
        keys: &["AI.APIKey"],
        default: "(required with `AI.BaseURL`)",
        meaning: "API key; never logged, never in argv or reports",
    },
    Row {
        keys: &["AI.Model"],
        default: "`gpt-4`",
        meaning: "model name",
    },
    Row {
        keys: &["AI.Timeout"],
        default: "`60`",
        meaning: "seconds per AI request; a diagnosis's deadline is 2 x this",
    },
    Row {
        keys: &["AI.PrometheusURL"],
        default: "`http://localhost:9090`",
        meaning: "the Prometheus the evidence stage and the agent query (`etc/deploy-diagnosis.yaml` sets it from `PROMETHEUS_URL`)",
    },
    Row {
        keys: &["AI.GitHubToken"],
        default: "empty",
        meaning: "when set, the service reads the release's changes from GitHub (see [The release in the diagnosis](release.md#the-release-in-the-diagnosis)) and the GitHub MCP server is started, read-only",
    },
    Row {
        keys: &["AI.GitHubToolsets"],
        default: "`repos,issues,pull_requests,releases`",
        meaning: "GitHub MCP toolsets",
    },
    Row {
        keys: &["AI.Protocol"],
        default: "`auto`",
        meaning: "`anthropic`, `openai`, or `auto` (Anthropic for `*.anthropic.com`)",
    },
    Row {
        keys: &["AI.MaxTurns"],
        default: "`10`",
        meaning: "model turns; the last one forbids tool use (`tool_choice: none`), so the model must answer",
    },
    Row {
        keys: &["AI.Provider"],
        default: "`auto`",
        meaning: "whose request rules apply: `anthropic`, `openai`, `dashscope`, `modelscope`, the self-hosted `vllm`, `ollama`, `llamacpp`, `sglang`, or `generic`; `auto` recognises the design's base URLs and Ollama's port 11434 (name it for a self-hosted server or a gateway)",
    },
    Row {
        keys: &["AI.MaxTokens"],
        default: "`4096`",
        meaning: "most tokens per answer; a cut-off answer gets one follow-up asking for the report within it",
    },
    Row {
        keys: &["AI.MaxTokensField"],
        default: "`auto`",
        meaning: "`max_tokens` or `max_completion_tokens`; `auto` picks per provider and model (see [AI providers](providers.md#ai-providers))",
    },
    Row {
        keys: &["AI.ExtraBody"],
        default: "`{}`",
        meaning: "merged last into every request body (keys kept as written); a `null` removes a field the provider profile sends",
    },
    Row {
        keys: &["AI.StructuredOutput"],
        default: "`auto`",
        meaning: "the final answer asked for in the provider's structured form (JSON schema, JSON mode, or a forced `submit_report` tool; see [AI providers](providers.md#ai-providers)); `off`: the design's instruction alone",
    },
    Row {
        keys: &["AI.ContextTokens"],
        default: "`0` (the provider's; for all but Ollama at least twice `AI.MaxTokens`)",
        meaning: "tokens of context the AI server has; the conversation is trimmed to fit it with `AI.MaxTokens` kept free, oldest tool output first; a request that still does not fit fails `context_exceeded` naming this key",
    },
    Row {
        keys: &["AI.ToolResultMaxChars"],
        default: "`8000`",
        meaning: "longer tool results are cut, with a note saying so",
    },
    Row {
        keys: &["AI.MaxToolCallsPerTurn"],
        default: "`8`",
        meaning: "tool calls run per model turn; more are answered \"not run\" (both agent loops)",
    },
    Row {
        keys: &["AI.ToolResultBudgetChars"],
        default: "`120000`",
        meaning: "tool output shown to the model per diagnosis; past it results are withheld and the model told to answer",
    },
    Row {
        keys: &["Budget.DiagnosesPerHour", "Budget.TokensPerDay"],
        default: "`0`, `0` (unlimited)",
        meaning: "AI diagnoses in any hour, AI tokens in any 24 hours, counted by the minute in the store: every instance on one store shares them and a restart keeps them; past either, a diagnosis runs from the evidence alone (`aiError` says which budget), or fails `budget_exhausted` without evidence. A ledger the store cannot read refuses the AI too (`limit=\"budget_unreadable\"`)",
    },
    Row {
        keys: &["Store.Kind", "Store.Path"],
        default: "`embedded`, `data/deploy-diagnosis.sqlite3`",
        meaning: "`embedded` (SQLite, WAL, fsync per commit) or `mongo`",
    },
    Row {
        keys: &["Runner.Kind"],
        default: "`native`",
        meaning: "`native` (the agent loop in the service), `process` (the Python runner as a child process) or `docker` (exec'd in the managed container, see [runners](runners.md))",
    },
    Row {
        keys: &["MCP.PassEnv"],
        default: "empty",
        meaning: "names of service environment variables stdio MCP servers also get; otherwise they start with a cleared environment (plus `PATH`, `HOME`, locale, TLS and proxy settings) and their own `Env`",
    },
    Row {
        keys: &["MCP.Servers"],
        default: "empty",
        meaning: "the native runner's MCP servers: `{Name, Command, Args, Env: [\"K=v\"], Optional}` (stdio, spawned once) or `{Name, URL}` (streamable HTTP); empty: the Prometheus MCP server from `Runner.Python`'s virtualenv, plus GitHub's when `AI.GitHubToken` is set",
    },
    Row {
        keys: &["MCP.ConnectTimeoutSeconds"],
        default: "`60`",
        meaning: "opening an MCP session (spawn, handshake, tool list) may take this long (a bound for a hung server: the Python Prometheus MCP server can take tens of seconds to start on a busy machine); a server that fails is not tried again for 10 s (its calls fail at once meanwhile). A diagnosis waits for required servers; for an optional one (`Optional`, GitHub's) at most 10 s from its attempt's start, then goes on without it while the attempt continues. No lock is held while a session opens, so a hung server delays only what needs it",
    },
    Row {
        keys: &["Runner.Python", "Runner.Script"],
        default: "`.venv/bin/python`, `docker/runner/diagnosis_runner.py`",
        meaning: "the Python runner (`process`); the native runner finds the Prometheus MCP server beside `Runner.Python`",
    },
    Row {
        keys: &["Runner.PrometheusMCPCommand"],
        default: "empty",
        meaning: "command for the Prometheus MCP server (empty: the one in the runner's virtualenv)",
    },
    Row {
        keys: &["Runner.PrometheusMCPURL"],
        default: "empty",
        meaning: "a running Prometheus MCP server's streamable-HTTP URL (`http://host:port/mcp`, querying `AI.PrometheusURL` itself) that the Python runner (`process`) uses for every diagnosis instead of starting `Runner.PrometheusMCPCommand` for each, about 2 CPU-seconds of Python imports a diagnosis; the `docker` runner always uses the one in its container",
    },
    Row {
        keys: &["Runner.GitHubMCPCommand"],
        default: "`github-mcp-server stdio`",
        meaning: "command for the GitHub MCP server; if it is missing, only GitHub analysis is skipped",
    },
    Row {
        keys: &["Runner.OutputMaxBytes"],
        default: "`1048576`",
        meaning: "runner stdout/stderr kept per diagnosis",
    },
    Row {
        keys: &["Docker.Host"],
        default: "`unix:///var/run/docker.sock`",
        meaning: "the Docker engine (`Runner.Kind: docker`)",
    },
    Row {
        keys: &["Docker.Container", "Docker.Image"],
        default: "`diagnosis-service`, `diagnosis-service:latest`",
        meaning: "the managed container and its image",
    },
    Row {
        keys: &["Docker.Network"],
        default: "`bridge`",
        meaning: "`bridge` (the container's own network: it reaches the host as `host.docker.internal`, and a loopback `AI.PrometheusURL` is rewritten to it, so Prometheus must listen where the bridge reaches it, e.g. the `docker0` address), a named network, or `host` (the container shares the host's network: it reaches every loopback-only service of the host, this one included, and its MCP server listens, unauthenticated, on the host's loopback)",
    },
    Row {
        keys: &["Docker.User"],
        default: "`10001:10001`",
        meaning: "the user the container runs as: the image's non-root user (root is refused)",
    },
    Row {
        keys: &["Docker.MemoryBytes", "Docker.CPUs", "Docker.PidsLimit", "Docker.TmpfsBytes"],
        default: "1 GiB, `1.0`, `256`, 64 MiB",
        meaning: "the container's limits; `/tmp` is its only writable path",
    },
    Row {
        keys: &["Docker.MCPPort"],
        default: "`8765`",
        meaning: "port of the Prometheus MCP server on the container's loopback (the host's with `Network: host`)",
    },
    Row {
        keys: &["Evidence.Enabled"],
        default: "`true`",
        meaning: "gather ranked metric evidence from Prometheus before the runner (see [Evidence](evidence.md#evidence))",
    },
    Row {
        keys: &["Evidence.TimeoutSeconds", "Evidence.BaselineMinutes", "Evidence.RateWindowSeconds"],
        default: "`10`, `30`, `60`",
        meaning: "the whole gathering's time limit; the baseline before the alert's `startsAt`; the `rate()` window (about four scrape intervals)",
    },
    Row {
        keys: &["Worker.RerunAfterSeconds"],
        default: "`300`",
        meaning: "a failed report is diagnosed again by a new firing alert at most once in this long, however many come (a flapping failure would re-run, and spend the AI, on each); `POST /reports/{id}/rediagnose` runs it at once",
    },
    Row {
        keys: &["Report.MaxHistory"],
        default: "`20`",
        meaning: "versions a report keeps in its history; a re-diagnosis past it drops the oldest (`deploy_diagnosis_history_dropped_total`)",
    },
    Row {
        keys: &["Evidence.MaxItems", "Evidence.Concurrency"],
        default: "`12`, `8`",
        meaning: "ranked items kept on a report; gatherings at once, apart from the AI workers",
    },
    Row {
        keys: &["Evidence.MaxHosts"],
        default: "`20`",
        meaning: "hosts one alert's evidence measures at most (an alert on a whole job names all its instances): the alert's own `instance`, those its rule's series name, the released hosts, then by name; the rest are listed on the report as `unmeasuredHosts`",
    },
    Row {
        keys: &["Evidence.MaxQueriesInFlight"],
        default: "`16`",
        meaning: "requests to Prometheus under way at once, shared by every gathering, release verdict, report check and page chart",
    },
    Row {
        keys: &["Worker.Concurrency"],
        default: "`4`",
        meaning: "diagnoses at once",
    },
    Row {
        keys: &["Worker.LeaseSeconds"],
        default: "`30`",
        meaning: "a dead worker's report is taken up again after this",
    },
    Row {
        keys: &["Worker.PollSeconds"],
        default: "`5`",
        meaning: "how often idle workers look for unannounced work",
    },
    Row {
        keys: &["Worker.MaxAttempts"],
        default: "`3`",
        meaning: "a report whose worker died this often is failed (\"gave up\")",
    },
    Row {
        keys: &["Worker.MaxQueue"],
        default: "`10000`",
        meaning: "reports waiting for a worker beyond which intake answers `503` with `Retry-After: 60` and stores nothing (Alertmanager retries); `0`: unlimited. Counted every 0.5 s, so a burst may pass it by what arrives in that time",
    },
    Row {
        keys: &["Worker.ShutdownGraceSeconds"],
        default: "`30`",
        meaning: "after SIGTERM, in-flight diagnoses may finish this long; the rest run again at next start",
    },
    Row {
        keys: &["Auth.WriteToken", "Webhook.BearerToken"],
        default: "empty",
        meaning: "needed by writes (`POST`, `PUT`, `DELETE`); `Webhook.BearerToken` is its older name, still accepted (set one, or both the same). `Authorization: Bearer <token>` or `Basic` with any user and the token as password",
    },
    Row {
        keys: &["Auth.ReadToken"],
        default: "empty: the write token",
        meaning: "needed by every read except `/healthz`, `/readyz` and `/openapi.json` (the write token reads too)",
    },
    Row {
        keys: &["Auth.ProtectMetrics"],
        default: "`false`",
        meaning: "`/metrics` needs the read token too",
    },
    Row {
        keys: &["Auth.AllowAnonymous"],
        default: "`false`",
        meaning: "writes without `Auth.WriteToken`: a `Host` other than loopback, or `Auth.ReadToken` alone, refuses to start (naming `Auth.WriteToken`) unless this is set",
    },
    Row {
        keys: &["Deployments.WatchMinutes"],
        default: "`60`",
        meaning: "an alert without `deploymentId` is attributed to a deployment on its host at most this long after it",
    },
    Row {
        keys: &["Release.RED"],
        default: "empty: the conventions",
        meaning: "service-wide RED query templates of `{{hostname}}` for deployments registered without `red`: `Release.RED.Rate` (requests/s), `Release.RED.Errors` (the percentage of requests that failed), `Release.RED.Duration` (seconds). Empty: the Prometheus client's `http_requests_total` (`code` or `status`) and `http_request_duration_seconds`, else OpenTelemetry's `http_server_request_duration_seconds` (`http_response_status_code`)",
    },
    Row {
        keys: &["Release.Thresholds"],
        default: "none",
        meaning: "service-wide health limits for deployments registered without `thresholds`: `Release.Thresholds.RateMin` (req/s), `Release.Thresholds.ErrorRateMaxPercent`, `Release.Thresholds.DurationP95MaxMs`, `Release.Thresholds.DurationP99MaxMs`. A *rollback* needs a broken limit",
    },
    Row {
        keys: &["Release.MinPoints"],
        default: "`10`",
        meaning: "points a side (a rate window apart) a signal's comparison needs; fewer: it is not compared (at least 3)",
    },
    Row {
        keys: &["Release.MinRequests"],
        default: "`50`",
        meaning: "requests a side the error rate's comparison needs",
    },
    Row {
        keys: &["Release.AnalysisCacheSeconds"],
        default: "`10`",
        meaning: "`GET /deployments/{id}/analysis` answers the last measurement of the same registration for this long; callers at once share one (0: always measure)",
    },
    Row {
        keys: &["Release.AutoRollback"],
        default: "`false`",
        meaning: "`true`: a *rollback* verdict (a report's, or an analysis's through the report it opens) asks the platform to roll back, once per deployment and tag, where the deployment's `rollbackPolicy.autoRollback` is true (signed, through the outbox); `dry-run`: the report records what would have been sent, and nothing is sent",
    },
    Row {
        keys: &["Release.WatchMinutes"],
        default: "`30`",
        meaning: "the *after* window of the verdict and the incident window of the evidence are at most this long, ending now: an old release, or an alert Alertmanager re-sends days after it began, is measured on its recent behaviour against the baseline before it",
    },
    Row {
        keys: &["Notify.Sinks"],
        default: "none",
        meaning: "where finished reports are sent, each `{Name, Kind, URL, Secret, On, MinSeverity, Verdicts, RateLimitPerMinute}`: `Kind` `webhook`, `dingtalk`, `feishu`, `wecom` or `slack`; `Secret` `whsec_<Base64>` for `webhook` (Standard Webhooks), the robot's signing secret for `dingtalk` and `feishu`, empty for `wecom` and `slack` (their key is in the URL) and for unsigned; `${VAR}` works; `On` `[completed, failed]` (default both), `MinSeverity` `info`/`warning`/`critical`, `Verdicts` release verdicts (empty: all); `RateLimitPerMinute` in place of the platform's limit (DingTalk and WeCom 20, Feishu 100 and 5 a second, Slack 1 a second)",
    },
    Row {
        keys: &["Notify.MaxAttempts", "Notify.TimeoutSeconds"],
        default: "`8`, `10`",
        meaning: "attempts of one message before it is given up; how long one attempt may take",
    },
    Row {
        keys: &["UI.ExternalURL"],
        default: "empty",
        meaning: "the service's address as people reach it: links in messages are absolute with it",
    },
    Row {
        keys: &["UI.Language"],
        default: "`zh`",
        meaning: "the report pages' language: `zh` or `en`",
    },
    Row {
        keys: &["UI.PrometheusExternalURL"],
        default: "`AI.PrometheusURL`",
        meaning: "Prometheus as people reach it, for the pages' links to its graphs",
    },
    Row {
        keys: &["GitHub.APIURL", "GitHub.Repos"],
        default: "`https://api.github.com`, empty",
        meaning: "where change evidence is read; the allowlist (`owner/name`, `*` globs; empty: registered deployments' repositories only)",
    },
    Row {
        keys: &["GitHub.MaxPatchChars", "GitHub.MaxFilePatchChars", "GitHub.MaxPRs", "GitHub.MaxCommits", "GitHub.TimeoutSeconds"],
        default: "`24000`, `4000`, `20`, `100`, `60`",
        meaning: "budgets of one diagnosis's change evidence",
    },
    Row {
        keys: &["GitHub.MCPTools"],
        default: "the read tools",
        meaning: "GitHub MCP tools offered to the model; only read tools are accepted",
    },
    Row {
        keys: &["Webhook.MaxBodyBytes"],
        default: "`1048576`",
        meaning: "larger bodies get `413`",
    },
    Row {
        keys: &["Webhook.MaxAlerts", "Webhook.MaxLabels", "Webhook.MaxValueBytes"],
        default: "`1000`, `64`, `4096`",
        meaning: "alerts per request, labels (and annotations) per alert, bytes per value; beyond them, and for label names MongoDB cannot store (`.`, NUL, a leading `$`), a `400` naming the JSON path. In the prompt each value is cut at 1,000 characters and all labels and annotations at 12,000",
    },
    Row {
        keys: &["Log.Format", "Log.Level"],
        default: "`plain`, `info,rmcp=warn`",
        meaning: "`json` for one JSON object per line; `RUST_LOG` overrides the level. Every line, whoever wrote it (MCP servers' stderr included), is scrubbed of configured secrets and URL credentials; colour only on a terminal",
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::sections::OTHER_KEYS;
    use crate::config::{Config, Environment};

    const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

    /// `docs/configuration.md`'s table is the one [`ROWS`] writes.
    #[test]
    fn the_document_shows_the_reference() {
        let doc = std::fs::read_to_string(DOC).unwrap();
        let (before, rest) = doc.split_once(BEGIN).expect("the table's start marker");
        let (shown, after) = rest.split_once(END).expect("the table's end marker");
        let written = format!("\n{}", table());
        if shown != written {
            if std::env::var_os("DD_BLESS").is_some() {
                std::fs::write(DOC, format!("{before}{BEGIN}{written}{END}{after}")).unwrap();
            } else {
                panic!(
                    "docs/configuration.md's table differs from src/config/reference.rs: \
                     DD_BLESS=1 cargo test --lib reference writes it again"
                );
            }
        }
    }

    /// What the reference has no row for is a section, or a key inside a documented
    /// key's value; and no key is listed twice.
    #[test]
    fn every_other_key_is_a_section_or_inside_a_documented_key() {
        let documented: Vec<&str> = ROWS.iter().flat_map(|r| r.keys.iter().copied()).collect();
        let distinct: BTreeSet<&str> = documented.iter().copied().collect();
        assert_eq!(distinct.len(), documented.len(), "a key in two rows");
        for key in OTHER_KEYS {
            let parts: Vec<&str> = key.split('.').collect();
            let placed = match parts.as_slice() {
                [section] => documented
                    .iter()
                    .any(|k| k.starts_with(&format!("{section}."))),
                [section, name, _, ..] => distinct.contains(format!("{section}.{name}").as_str()),
                _ => false,
            };
            assert!(
                placed,
                "{key} is neither a section nor inside a documented key"
            );
            assert!(!distinct.contains(key), "{key} is in a row too");
        }
    }

    /// A default written as values (one in backticks per key) is what the service takes
    /// when the key is left out: setting the key to it changes nothing.
    #[test]
    fn each_default_written_as_a_value_is_the_services() {
        let env = Environment::default();
        let left_out = format!("{:?}", Config::from_yaml("{}", &env).unwrap());
        let mut checked = 0;
        for row in ROWS {
            let values: Vec<&str> = row.default.split(", ").collect();
            let literal = values.len() == row.keys.len()
                && values.iter().all(|v| {
                    v.len() > 2
                        && v.starts_with('`')
                        && v.ends_with('`')
                        && v.matches('`').count() == 2
                });
            if !literal {
                continue;
            }
            for (key, value) in row.keys.iter().zip(&values) {
                let value = &value[1..value.len() - 1];
                if ROWS.iter().any(|r| r.keys.contains(&value)) {
                    // Another key's value (`UI.PrometheusExternalURL` is `AI.PrometheusURL`'s).
                    continue;
                }
                let yaml = match key.split_once('.') {
                    Some((section, name)) => format!("{section}:\n  {name}: {value}\n"),
                    None => format!("{key}: {value}\n"),
                };
                let set = Config::from_yaml(&yaml, &env)
                    .unwrap_or_else(|e| panic!("{key}: {value}: {e}"));
                assert_eq!(
                    format!("{set:?}"),
                    left_out,
                    "{key}'s documented default {value}"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 40,
            "only {checked} defaults are written as values"
        );
    }
}
