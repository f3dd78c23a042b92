//! Secrets: the AI key, the GitHub token and the API tokens. Never printed by `Debug`, never
//! serialized, refused when too short to redact safely, and listed for the log scrubber.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::Config;

/// Shortest secret accepted: a shorter one would make redaction mangle every report
/// (a key `k` would turn each "k" into `[REDACTED]`) and is guessable anyway.
pub const MIN_SECRET_LEN: usize = 8;

/// A secret: empty (not given) or at least [`MIN_SECRET_LEN`] characters.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[REDACTED]"
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Option::<String>::deserialize(d)?.unwrap_or_default();
        if !value.is_empty() && value.chars().count() < MIN_SECRET_LEN {
            // The message never holds the value.
            return Err(D::Error::custom(format!(
                "is shorter than {MIN_SECRET_LEN} characters"
            )));
        }
        Ok(Self(value))
    }
}

impl Config {
    /// Every secret in the configuration, for scrubbing text that leaves the service.
    pub fn secrets(&self) -> Vec<String> {
        [
            &self.ai.api_key,
            &self.ai.github_token,
            &self.auth.write_token,
            &self.auth.read_token,
            &self.webhook.bearer_token,
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.expose().to_owned())
        .collect()
    }

    /// The token writes need: `Auth.WriteToken`, or `Webhook.BearerToken`, its older name.
    pub fn write_token(&self) -> &Secret {
        if self.auth.write_token.is_empty() {
            &self.webhook.bearer_token
        } else {
            &self.auth.write_token
        }
    }
}
