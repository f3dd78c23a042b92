//! One scrubber for every text that leaves the service (stored reports, API answers, log
//! lines): the configured secrets, and the credentials of any URL (`scheme://user:pass@`).

/// Replaces every configured secret, and every URL's user information, in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

const MASK: &str = "[REDACTED]";

impl Redactor {
    /// Redacts these secrets (empty ones are ignored; the configuration refuses secrets
    /// shorter than 8 characters, so no common word is one).
    pub fn new(secrets: Vec<String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    /// The text with every secret and URL credential replaced by `[REDACTED]`.
    pub fn apply(&self, text: &str) -> String {
        let text = self
            .secrets
            .iter()
            .fold(text.to_owned(), |t, s| t.replace(s.as_str(), MASK));
        redact_url_credentials(&text)
    }
}

/// `scheme://user:pass@host` becomes `scheme://[REDACTED]@host`, wherever it appears.
pub fn redact_url_credentials(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo_end)
                if !tail[..userinfo_end].is_empty() && &tail[..userinfo_end] != MASK =>
            {
                out.push_str(MASK);
                rest = &tail[userinfo_end..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// `url` without its `user:pass@`, for a link a browser follows (a `[REDACTED]@` in it
/// would be taken as a user name).
pub fn strip_url_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            let text = parsed.to_string();
            match url.ends_with('/') {
                true => text,
                false => text.trim_end_matches('/').to_owned(),
            }
        }
        _ => redact_url_credentials(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_credentials_are_replaced() {
        let r = Redactor::new(vec!["sk-secret-123".into(), String::new()]);
        assert_eq!(
            r.apply("key sk-secret-123 and mongodb://app:pa55w0rd@db:27017/x and http://u@h/p"),
            "key [REDACTED] and mongodb://[REDACTED]@db:27017/x and http://[REDACTED]@h/p"
        );
        assert_eq!(
            r.apply("http://prometheus:9090/api?x=a@b"),
            "http://prometheus:9090/api?x=a@b",
            "an @ after the host is not a credential"
        );
        assert_eq!(r.apply("no urls, a@b.c"), "no urls, a@b.c");
        assert_eq!(
            redact_url_credentials("\"https://x:y@gh.example/api\""),
            "\"https://[REDACTED]@gh.example/api\""
        );
        assert_eq!(
            strip_url_credentials("http://prom:s3cret@prom.example:9090"),
            "http://prom.example:9090"
        );
        assert_eq!(
            strip_url_credentials("http://prom.example:9090/"),
            "http://prom.example:9090/"
        );
    }
}
