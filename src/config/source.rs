//! Where the configuration comes from: the YAML file, `${VAR}` expansion (the process
//! environment over a `.env` file), `DD_<SECTION>__<KEY>` overrides, and the translation of
//! the parser's errors into the keys as documented.

use std::collections::HashMap;
use std::path::Path;

use super::sections::keys;
use super::{Config, ConfigError};

/// Where `${VAR}` and `DD_*` values come from: the process environment over a `.env` file.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl Environment {
    /// The process environment, over the `.env` file in `dir` if there is one.
    pub fn from_process(dir: &Path) -> Result<Self, ConfigError> {
        let mut vars = HashMap::new();
        let dotenv = dir.join(".env");
        if dotenv.exists() {
            let entries = dotenvy::from_path_iter(&dotenv)
                .map_err(|e| ConfigError::Parse(format!("file {}: {e}", dotenv.display())))?;
            for entry in entries {
                let (k, v) = entry
                    .map_err(|e| ConfigError::Parse(format!("file {}: {e}", dotenv.display())))?;
                vars.insert(k, v);
            }
        }
        vars.extend(std::env::vars());
        Ok(Self { vars })
    }

    /// Exactly these variables (for tests and tools).
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self { vars }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Reads `text` (YAML): keys lowercased, `${VAR}` expanded, `DD_*` overrides from `env`
/// applied, then every value parsed into its type.
pub(super) fn parse(text: &str, env: &Environment) -> Result<Config, ConfigError> {
    let file: serde_json::Value = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_keys(&file, "", &mut unknown);
    unknown.sort();
    let expanded = expand(lowercase_keys(file), env);

    let overrides: config::Map<String, String> = env
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with("DD_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config::Config::builder()
        .add_source(config::File::from_str(
            &expanded.to_string(),
            config::FileFormat::Json,
        ))
        .add_source(
            config::Environment::with_prefix("DD")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .and_then(config::Config::try_deserialize::<Config>)
        .map_err(at_key)
        .map(|config| Config {
            unknown_keys: unknown,
            ..config
        })
}

/// Keys of the file this service does not read, as written (`Worker.Concurency`, or a
/// whole section such as the design's `Qiniu`). Only the file's: `DD_*` variables share
/// their prefix with other tools' (Datadog's `DD_ENV`, `DD_API_KEY`).
fn unknown_keys(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (key, value) in map {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if !keys().any(|k| k.eq_ignore_ascii_case(&full)) {
            out.push(full);
        } else if full.eq_ignore_ascii_case("MCP.Servers") {
            for server in value.as_array().into_iter().flatten() {
                unknown_keys(server, &full, out);
            }
        } else if !full.eq_ignore_ascii_case("AI.ExtraBody") {
            unknown_keys(value, &full, out);
        }
    }
}

/// The parser's error, with the key it names spelt as documented (`worker.concurrency` is
/// `Worker.Concurrency`), and the override that would set it when the value is missing.
fn at_key(error: config::ConfigError) -> ConfigError {
    let (key, message) = match error {
        config::ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => (
            key,
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => (key, error.to_string()),
        config::ConfigError::NotFound(key) => (key, "is missing".to_owned()),
        other => return ConfigError::Parse(other.to_string()),
    };
    let key = documented(&key);
    let message = if message == "is empty" && !key.contains('[') {
        format!("is empty: set it, or {}", override_name(&key))
    } else {
        message
    };
    ConfigError::Invalid { key, message }
}

/// `mcp.servers[0]name` (the parser's spelling) as documented: `MCP.Servers[0].Name`.
/// Parts that are not keys (`AI.ExtraBody`'s own) stay as given.
fn documented(key: &str) -> String {
    let mut lower = String::new();
    let mut out = String::new();
    for part in key.split_inclusive(['.', ']']) {
        let part = part.trim_end_matches('.');
        let (name, index) = part.find('[').map_or((part, ""), |i| part.split_at(i));
        if !name.is_empty() {
            if !lower.is_empty() {
                lower.push('.');
                out.push('.');
            }
            lower.push_str(name);
            let spelt = keys()
                .find(|k| k.eq_ignore_ascii_case(&lower))
                .and_then(|k| k.rsplit('.').next())
                .unwrap_or(name);
            out.push_str(spelt);
        }
        out.push_str(index);
    }
    out
}

/// The environment variable that overrides `key`: `AI.PrometheusURL` is
/// `DD_AI__PROMETHEUSURL`.
fn override_name(key: &str) -> String {
    format!("DD_{}", key.to_uppercase().replace('.', "__"))
}

/// Sections whose keys are data, not configuration keys: kept as written.
const VERBATIM: &[&[&str]] = &[&["ai", "extrabody"]];

fn lowercase_keys(value: serde_json::Value) -> serde_json::Value {
    lowercase_below(value, &mut Vec::new())
}

fn lowercase_below(value: serde_json::Value, path: &mut Vec<String>) -> serde_json::Value {
    if VERBATIM.iter().any(|v| v.iter().eq(path.iter())) {
        return value;
    }
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let k = k.to_lowercase();
                    path.push(k.clone());
                    let v = lowercase_below(v, path);
                    path.pop();
                    (k, v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(|v| lowercase_below(v, path))
                .collect(),
        ),
        other => other,
    }
}

/// `${VAR}` in string values, after parsing, so a value cannot change the YAML's structure.
/// An unset variable expands to nothing, as go-zero's loader does; validation then names
/// the key that ended up empty.
fn expand(value: serde_json::Value, env: &Environment) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => serde_json::Value::String(expand_str(&s, env)),
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().map(|(k, v)| (k, expand(v, env))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(|v| expand(v, env)).collect())
        }
        other => other,
    }
}

fn expand_str(s: &str, env: &Environment) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push_str(env.get(&after[..end]).unwrap_or(""));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
