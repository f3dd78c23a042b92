//! Listings: `limit`, `cursor` and `before`, and the cursor of the next page.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::ApiError;
use crate::store::{Cursor, Page};

/// Largest page of a listing.
pub const MAX_LIST_LIMIT: u32 = 500;

/// Query of `GET /reports` (each parameter empty is as if not given).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    #[param(schema_with = super::openapi::status_filter)]
    pub(super) status: Option<String>,
    #[param(schema_with = super::openapi::verdict_filter)]
    pub(super) verdict: Option<String>,
    #[param(schema_with = super::openapi::page_limit)]
    pub(super) limit: Option<String>,
    #[param(schema_with = super::openapi::page_before)]
    pub(super) before: Option<String>,
    /// The previous page's `nextCursor`.
    pub(super) cursor: Option<String>,
}

/// Query of `GET /deployments`: paging only.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    #[param(schema_with = super::openapi::page_limit)]
    pub(super) limit: Option<String>,
    #[param(schema_with = super::openapi::page_before)]
    pub(super) before: Option<String>,
    /// The previous page's `nextCursor`.
    pub(super) cursor: Option<String>,
}

impl ListQuery {
    /// Its paging.
    pub(super) fn paging(&self) -> PageQuery {
        PageQuery {
            limit: self.limit.clone(),
            before: self.before.clone(),
            cursor: self.cursor.clone(),
        }
    }
}

/// The cursor of the page after a full one.
pub(super) fn next_cursor<T>(
    items: &[T],
    limit: u32,
    key: impl Fn(&T) -> (DateTime<Utc>, String),
) -> Option<String> {
    let last = items.last().filter(|_| items.len() as u32 == limit)?;
    let (created_time, key) = key(last);
    Some(Cursor { created_time, key }.encode())
}

pub(super) fn bad_query(message: String, param: &str) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_query",
        message,
        path: Some(param.to_owned()),
    }
}

/// `limit` (1 to 500, default 50), `cursor` (a previous answer's `nextCursor`) and `before`
/// (RFC 3339) of a listing.
pub(super) fn page(q: &PageQuery) -> Result<Page, ApiError> {
    let bad = bad_query;
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => 50,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(
                    format!("limit must be a number from 1 to {MAX_LIST_LIMIT}, not {s:?}"),
                    "limit",
                )
            })?,
    };
    let before = match q.before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    bad(
                        format!("before must be an RFC 3339 time ({e}), not {s:?}"),
                        "before",
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    let after = match q.cursor.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Cursor::decode(s).ok_or_else(|| {
            bad(
                format!("cursor {s:?} is not a nextCursor this service gave"),
                "cursor",
            )
        })?),
    };
    Ok(Page {
        before,
        after,
        limit,
    })
}
