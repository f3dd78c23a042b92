//! Who may call what: a write token for changes, a read token for reports and the
//! registry (`Auth.*`). Both `Authorization` forms Alertmanager's `http_config` can send are
//! accepted: `Bearer <token>` and `Basic` with any user name and the token as password; the
//! scheme is case-insensitive (RFC 9110 §11.1).

use base64::Engine as _;

use crate::config::{Config, Secret};

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing (`/healthz`, `/readyz`, `/metrics` unless protected).
    Open,
    /// The read token (or the write token).
    Read,
    /// The write token.
    Write,
}

/// The configured tokens; an empty one lets everybody in at its level.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// `Auth.WriteToken` (or its alias `Webhook.BearerToken`).
    pub write: Secret,
    /// `Auth.ReadToken` (empty: the write token).
    pub read: Secret,
}

/// The credential of an `Authorization` header: a bearer token, or a Basic password.
fn credential(header: &str) -> Option<String> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text
            .split_once(':')
            .map(|(_, password)| password.to_owned());
    }
    None
}

/// Whether `origin` (a request's `Origin` header) is this service's own: the host the
/// request was sent to (its `Host` header), or `UI.ExternalURL`'s origin. `null` (a
/// sandboxed frame, a redirect across sites, a `file:` page) is nobody's own.
pub fn own_origin(origin: &str, host: Option<&str>, external: Option<&str>) -> bool {
    if external == Some(origin) {
        return true;
    }
    host.is_some_and(|host| {
        url::Url::parse(origin).is_ok_and(|o| {
            let port = o.port().map(|p| format!(":{p}")).unwrap_or_default();
            o.host_str()
                .is_some_and(|h| format!("{h}{port}").eq_ignore_ascii_case(host))
        })
    })
}

/// Constant-time comparison: the time taken does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// The tokens the configuration sets: `Auth.WriteToken` (or `Webhook.BearerToken`, its
    /// older name) and `Auth.ReadToken`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            write: config.write_token().clone(),
            read: config.auth.read_token.clone(),
        }
    }

    /// The token that reads: `read`, else `write`.
    fn reader(&self) -> &Secret {
        if self.read.is_empty() {
            &self.write
        } else {
            &self.read
        }
    }

    /// Whether `access` takes a token at all.
    pub fn required(&self, access: Access) -> bool {
        match access {
            Access::Open => false,
            Access::Write => !self.write.is_empty(),
            Access::Read => !self.reader().is_empty(),
        }
    }

    /// Whether a request with this `Authorization` header may have `access`.
    pub fn allows(&self, access: Access, authorization: Option<&str>) -> bool {
        let given = authorization.and_then(credential);
        let matches = |token: &Secret| given.as_deref().is_some_and(|g| same(g, token.expose()));
        match access {
            Access::Open => true,
            Access::Write => self.write.is_empty() || matches(&self.write),
            Access::Read => {
                let reader = self.reader();
                reader.is_empty()
                    || matches(reader)
                    || (!self.write.is_empty() && matches(&self.write))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn bearer_and_basic_both_carry_the_token_in_any_case() {
        let t = Tokens {
            write: Secret::new("w-token-123"),
            read: Secret::new("r-token-456"),
        };
        for header in [
            "Bearer w-token-123".to_owned(),
            "bearer w-token-123".to_owned(),
            "BEARER  w-token-123 ".to_owned(),
            basic("alertmanager", "w-token-123"),
            basic("", "w-token-123").replace("Basic", "basic"),
        ] {
            assert!(t.allows(Access::Write, Some(&header)), "{header}");
        }
        assert!(!t.allows(Access::Write, Some("Bearer r-token-456")));
        assert!(!t.allows(Access::Write, Some(&basic("w-token-123", "x"))));
        assert!(!t.allows(Access::Write, Some("Token w-token-123")));
        assert!(!t.allows(Access::Write, None));
        assert!(t.allows(Access::Read, Some("Bearer r-token-456")));
        assert!(
            t.allows(Access::Read, Some("Bearer w-token-123")),
            "write reads too"
        );
        assert!(!t.allows(Access::Read, Some("Bearer nope")));
        assert!(t.allows(Access::Open, None));
    }

    #[test]
    fn only_the_services_own_origin_is_its_own() {
        let host = Some("127.0.0.1:8888");
        assert!(own_origin("http://127.0.0.1:8888", host, None));
        assert!(!own_origin("https://evil.example", host, None));
        assert!(!own_origin("null", host, None));
        assert!(!own_origin("http://127.0.0.1:8889", host, None));
        assert!(!own_origin("http://127.0.0.1:8888", None, None));
        let external = Some("https://dd.example");
        assert!(own_origin("https://dd.example", host, external));
        assert!(!own_origin("https://dd.example.evil", host, external));
    }

    #[test]
    fn an_empty_read_token_means_the_write_token_and_no_tokens_mean_open() {
        let t = Tokens {
            write: Secret::new("w-token-123"),
            read: Secret::default(),
        };
        assert!(!t.allows(Access::Read, None));
        assert!(t.allows(Access::Read, Some("Bearer w-token-123")));
        let open = Tokens::default();
        assert!(open.allows(Access::Write, None) && open.allows(Access::Read, None));
    }
}
