//! Values parsed into their types as the configuration is read: durations, counts with a
//! floor, URLs, lists of known names. A wrong value is refused while deserializing, and the
//! loader names the key that held it (`source::documented`), so nothing checks it later.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// An integer type a count is read into.
pub trait Count: Sized {
    /// `v` in this type, if it fits.
    fn from_u64(v: u64) -> Option<Self>;
}

macro_rules! counts {
    ($($t:ty),*) => {$(
        impl Count for $t {
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        }
    )*};
}
counts!(u16, u32, u64, usize, i64);

macro_rules! non_zero_counts {
    ($($t:ty => $inner:ty),*) => {$(
        impl Count for $t {
            fn from_u64(v: u64) -> Option<Self> {
                <$inner>::try_from(v).ok().and_then(<$t>::new)
            }
        }
    )*};
}
non_zero_counts!(NonZeroU16 => u16, NonZeroU32 => u32, NonZeroUsize => usize);

fn count<'de, D: Deserializer<'de>>(d: D, min: u64) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v < min {
        return Err(D::Error::custom(format!("is {v}, must be at least {min}")));
    }
    Ok(v)
}

/// A count of at least `MIN`, in whatever integer type the field has.
pub fn at_least<'de, const MIN: u64, T: Count, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let v = count(d, MIN)?;
    T::from_u64(v).ok_or_else(|| D::Error::custom(format!("{v} is too large")))
}

/// Whole seconds, at least `MIN`.
pub fn seconds<'de, const MIN: u64, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    count(d, MIN).map(Duration::from_secs)
}

/// Milliseconds, at least `MIN` (go-zero's `RestConf.Timeout` unit).
pub fn millis<'de, const MIN: u64, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    count(d, MIN).map(Duration::from_millis)
}

/// Whole minutes, at least `MIN`.
pub fn minutes<'de, const MIN: u64, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = count(d, MIN)?;
    v.checked_mul(60)
        .map(Duration::from_secs)
        .ok_or_else(|| D::Error::custom(format!("{v} is too large")))
}

/// A string with something in it besides spaces.
pub fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(D::Error::custom("is empty"));
    }
    Ok(s)
}

/// One of an enum's values, in any case (`Kind: Mongo`); a wrong one is answered with the
/// values there are (`unknown variant `postgres`, expected `embedded` or `mongo``).
pub fn variant<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    use serde::de::IntoDeserializer;
    let name = String::deserialize(d)?.trim().to_lowercase();
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name))
        .map_err(D::Error::custom)
}

/// Docker's CPU limit: cores, above 0.
pub fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v > 0.0 && v <= 1024.0) {
        return Err(D::Error::custom(format!(
            "is {v}, must be above 0 (and at most 1024)"
        )));
    }
    Ok(v)
}

/// An `http://` or `https://` URL with a host, kept as written (less a trailing `/`), so
/// paths are joined to it the way the operator wrote it.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// Checks `value`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("is empty".into());
        }
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .ok_or_else(|| format!("{value:?} is not an http:// or https:// URL"))?;
        // The URL parser would read `http:///x` as host `x`; the operator meant no host.
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{value:?} has no host"));
        }
        url::Url::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
        Ok(Self(value.trim_end_matches('/').to_owned()))
    }

    /// The URL, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HttpUrl::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// An optional URL: empty, blank or left out is none (`AI.BaseURL:` is evidence-only mode).
pub fn optional_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HttpUrl>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(s) if !s.trim().is_empty() => HttpUrl::parse(&s).map(Some).map_err(D::Error::custom),
        _ => Ok(None),
    }
}

/// The GitHub MCP server's tools that only read one repository (github/github-mcp-server);
/// `search_code` is left out, since it searches every repository the token can see.
pub const GITHUB_READ_TOOLS: &[&str] = &[
    "get_release_by_tag",
    "get_latest_release",
    "list_releases",
    "list_tags",
    "get_tag",
    "pull_request_read",
    "get_pull_request",
    "get_pull_request_files",
    "get_pull_request_diff",
    "list_pull_requests",
    "get_commit",
    "list_commits",
    "get_file_contents",
];

/// `GitHub.MCPTools`: read tools only.
pub fn read_tools<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let tools = Vec::<String>::deserialize(d)?;
    if let Some(bad) = tools
        .iter()
        .find(|t| !GITHUB_READ_TOOLS.contains(&t.as_str()))
    {
        return Err(D::Error::custom(format!(
            "{bad:?} is not one of the GitHub MCP server's read tools ({})",
            GITHUB_READ_TOOLS.join(", ")
        )));
    }
    Ok(tools)
}

/// `GitHub.Repos`: `owner/name` patterns.
pub fn repo_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let repos = Vec::<String>::deserialize(d)?;
    if let Some(bad) = repos
        .iter()
        .find(|r| r.split('/').count() != 2 || r.chars().any(char::is_whitespace))
    {
        return Err(D::Error::custom(format!(
            "{bad:?} is not owner/name (a * matches any characters)"
        )));
    }
    Ok(repos)
}

/// Request-body keys `AI.ExtraBody` may not set: the agent loop depends on them.
const RESERVED_BODY_KEYS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "stream",
    "max_tokens",
    "max_completion_tokens",
];

/// `AI.ExtraBody`: anything but what the agent loop sets itself.
pub fn extra_body<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<serde_json::Map<String, serde_json::Value>, D::Error> {
    let body = serde_json::Map::deserialize(d)?;
    if let Some(key) = body
        .keys()
        .find(|k| RESERVED_BODY_KEYS.contains(&k.as_str()))
    {
        return Err(D::Error::custom(format!(
            "{key:?} is set by the service (model and tokens: AI.Model, AI.MaxTokens, \
             AI.MaxTokensField; the conversation, tools and non-streaming calls are the agent's)"
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme_and_a_host_and_keep_their_path() {
        assert_eq!(
            HttpUrl::parse(" http://127.0.0.1:9090/ ").unwrap().as_str(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            HttpUrl::parse("https://dashscope.aliyuncs.com/compatible-mode/v1")
                .unwrap()
                .as_str(),
            "https://dashscope.aliyuncs.com/compatible-mode/v1"
        );
        for bad in ["", "localhost:9090", "ftp://host", "http://", "http:///x"] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
