//! The application's RED queries: templates in which `{{hostname}}` stands for one host,
//! as the design's deploy platform writes them (`hostname=~{{hostname}}`).

use crate::evidence::prometheus::{exact_regex, literal};

/// What a template names its host by.
pub const PLACEHOLDER: &str = "{{hostname}}";

/// The query for one host: `{{hostname}}` replaced by a quoted regex that matches exactly
/// that host (so `hostname=~{{hostname}}` selects it and nothing else).
pub fn for_host(template: &str, host: &str) -> String {
    template.replace(PLACEHOLDER, &literal(&exact_regex(host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_becomes_a_regex_literal_of_exactly_one_host() {
        assert_eq!(
            for_host(
                "sum(rate(http_requests_total{hostname=~{{hostname}}}[1m]))",
                "web-1.example"
            ),
            r#"sum(rate(http_requests_total{hostname=~"web-1\\.example"}[1m]))"#
        );
    }
}
