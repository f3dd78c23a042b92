//! Numbers that come from outside (a receiver's `Retry-After`, GitHub's
//! `x-ratelimit-reset`) made safe before any arithmetic: every wait is clamped to a bound
//! the caller names, and the clock arithmetic on it saturates instead of panicking. A
//! header can say anything: `Retry-After: 10000000000000` once overflowed chrono and
//! killed a delivery task. And text from outside (a tag, a deployment id) made one URL
//! path segment before it goes into a URL.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest any outside value may make the service wait, whatever a caller asks: a
/// day. Callers clamp to their own, shorter bound as well.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// A `Retry-After` value (RFC 9110 §10.2.3: delay-seconds, or an HTTP-date) as a wait from
/// `now`, at most `max`; `None` when it is neither. A date in the past is no wait.
pub fn retry_after(value: &str, now: DateTime<Utc>, max: Duration) -> Option<Duration> {
    let value = value.trim();
    let max = max.min(MAX_WAIT);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: too many of them for a u64 is still "a very long time".
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds.min(max.as_secs())).min(max));
    }
    // IMF-fixdate (`Wed, 21 Oct 2015 07:28:00 GMT`) is an RFC 2822 date.
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(until(now, at.with_timezone(&Utc), max))
}

/// The wait until the epoch second `value` (GitHub's `x-ratelimit-reset`), at most `max`.
pub fn until_epoch(value: &str, now: DateTime<Utc>, max: Duration) -> Option<Duration> {
    let seconds = value.trim().parse::<i64>().ok()?;
    let at = DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
    Some(until(now, at, max.min(MAX_WAIT)))
}

fn until(now: DateTime<Utc>, at: DateTime<Utc>, max: Duration) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO).min(max)
}

/// `now + wait`, saturating at chrono's last representable instant instead of panicking.
pub fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(wait)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `text` as one URL path segment (RFC 3986 §2.3): every byte but the unreserved ones
/// percent-encoded, so a `/` or `?` in a tag cannot change the path.
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_or_odd_retry_after_is_clamped_never_an_overflow() {
        let now = Utc::now();
        let max = Duration::from_secs(300);
        assert_eq!(retry_after("30", now, max), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(" 10000000000000 ", now, max), Some(max));
        assert_eq!(
            retry_after("99999999999999999999999999999", now, max),
            Some(max),
            "more digits than a u64 holds"
        );
        assert_eq!(retry_after("-5", now, max), None);
        assert_eq!(retry_after("1.5", now, max), None);
        assert_eq!(retry_after("", now, max), None);
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now, max),
            Some(Duration::ZERO),
            "a date gone by"
        );
        let soon = (now + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = retry_after(&soon, now, max).unwrap();
        assert!(wait > Duration::from_secs(88) && wait <= Duration::from_secs(90));
        assert_eq!(
            retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now, max),
            Some(max)
        );
        assert_eq!(
            retry_after("1", now, Duration::from_secs(u64::MAX)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_after("10000000000000", now, Duration::MAX),
            Some(MAX_WAIT),
            "no caller's bound goes past a day"
        );
    }

    #[test]
    fn an_epoch_reset_is_a_wait_from_now_within_the_bound() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let max = Duration::from_secs(600);
        assert_eq!(
            until_epoch("1700000060", now, max),
            Some(Duration::from_secs(60))
        );
        assert_eq!(until_epoch("1", now, max), Some(Duration::ZERO));
        assert_eq!(until_epoch(&i64::MAX.to_string(), now, max), Some(max));
        assert_eq!(until_epoch("soon", now, max), None);
    }

    #[test]
    fn later_saturates_instead_of_panicking() {
        let now = Utc::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + chrono::Duration::seconds(5)
        );
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            later(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn a_tag_or_an_id_is_one_path_segment() {
        assert_eq!(path_segment("release/v1.2+3"), "release%2Fv1.2%2B3");
        assert_eq!(path_segment("shop v2/1?x"), "shop%20v2%2F1%3Fx");
        assert_eq!(path_segment("deploy-1.2_x~"), "deploy-1.2_x~");
    }
}
