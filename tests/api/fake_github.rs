//! A local GitHub REST API for one repository, `acme/shop`, answering the documented
//! shapes of the endpoints the service reads (releases by tag, compare, a commit's pull
//! requests, a pull request, its files) and GitHub's own errors: no real GitHub is reachable
//! here. It records every request so tests can check that only `GET`s were sent and what
//! each carried.
//!
//! Rules enforced as GitHub does (docs.github.com, "Resources in the REST API" and
//! "Troubleshooting the REST API"):
//! - a request without `User-Agent` is refused with 403 ("User agent required");
//! - a wrong token gets 401 `{"message": "Bad credentials"}`;
//! - anything but `GET` on these endpoints is refused (404 for a missing route, as GitHub
//!   answers for endpoints a token cannot see), and recorded, so a test fails on it;
//! - rate limits: 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch
//!   seconds), or 429 with `retry-after`, with GitHub's rate-limit message.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The token the fake accepts.
pub const TOKEN: &str = "ghp_fakeTokenForTests0123456789abcdef";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

/// How the fake limits rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Never.
    None,
    /// The first request gets 403 with `x-ratelimit-remaining: 0`, reset in 1 s.
    PrimaryOnce,
    /// The first request gets 429 with `retry-after: 1`.
    SecondaryOnce,
    /// Every request gets 403 with the reset an hour away.
    Exhausted,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    limit: Limit,
}

/// A running fake GitHub.
pub struct FakeGitHub {
    /// `GitHub.APIURL`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeGitHub {
    /// Starts the fake.
    pub async fn start(limit: Limit) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            seen: seen.clone(),
            limit,
        };
        let app = axum::Router::new().fallback(handle).with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            seen,
            _server: server,
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

fn rate_limited(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut response = (
        status,
        Json(json!({
            "message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        })),
    )
        .into_response();
    for (name, value) in headers {
        response.headers_mut().insert(*name, value.parse().unwrap());
    }
    response
}

async fn handle(State(fake): State<Fake>, request: Request) -> Response {
    let headers: HeaderMap = request.headers().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let n = {
        let mut seen = fake.seen.lock().unwrap();
        seen.push(Seen {
            method: request.method().clone(),
            path: path.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        seen.len()
    };
    // "All API requests MUST include a valid User-Agent header. Requests with no
    // User-Agent header will be rejected."
    if headers.get("user-agent").is_none() {
        return (
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).",
        )
            .into_response();
    }
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(auth) if auth == format!("Bearer {TOKEN}") || auth == format!("token {TOKEN}") => {}
        Some(_) => return error(StatusCode::UNAUTHORIZED, "Bad credentials"),
        None => {}
    }
    let now = chrono::Utc::now().timestamp();
    match fake.limit {
        Limit::PrimaryOnce if n == 1 => {
            return rate_limited(
                StatusCode::FORBIDDEN,
                &[
                    ("x-ratelimit-limit", "5000".into()),
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset", (now + 1).to_string()),
                ],
            )
        }
        Limit::SecondaryOnce if n == 1 => {
            return rate_limited(
                StatusCode::TOO_MANY_REQUESTS,
                &[("retry-after", "1".into())],
            )
        }
        Limit::Exhausted => {
            return rate_limited(
                StatusCode::FORBIDDEN,
                &[
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset", (now + 3600).to_string()),
                ],
            )
        }
        _ => {}
    }
    if request.method() != Method::GET {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let route = path.split('?').next().unwrap_or("");
    match answer(route) {
        Some(body) => (StatusCode::OK, Json(body)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

const REPO: &str = "/repos/acme/shop";

/// The patch that broke the release: a cache preloaded without a bound.
pub const CACHE_PATCH: &str = "@@ -10,6 +10,14 @@ func NewCatalog(db *sql.DB) *Catalog {\n+\t// Warm the cache: every product, at startup.\n+\tproducts := make([]Product, 0, 50_000_000)\n+\tfor rows.Next() {\n+\t\tproducts = append(products, scan(rows))\n+\t}\n+\tc.cache = products";

fn user(login: &str) -> Value {
    json!({"login": login, "id": 1, "type": "User"})
}

fn pull(number: u64, title: &str, login: &str) -> Value {
    json!({
        "url": format!("https://api.github.com{REPO}/pulls/{number}"),
        "html_url": format!("https://github.com/acme/shop/pull/{number}"),
        "number": number,
        "state": "closed",
        "title": title,
        "user": user(login),
        "body": "",
        "merged_at": "2026-11-24T09:00:00Z",
    })
}

fn file(name: &str, additions: u64, deletions: u64, patch: Option<&str>) -> Value {
    let mut f = json!({
        "sha": "0000000000000000000000000000000000000000",
        "filename": name,
        "status": "modified",
        "additions": additions,
        "deletions": deletions,
        "changes": additions + deletions,
    });
    if let Some(p) = patch {
        f["patch"] = json!(p);
    }
    f
}

fn commit(sha: &str, message: &str) -> Value {
    json!({
        "sha": sha,
        "commit": {"message": message, "author": {"name": "dev", "date": "2026-11-24T09:00:00Z"}},
        "author": user("dev"),
        "html_url": format!("https://github.com/acme/shop/commit/{sha}"),
    })
}

fn answer(route: &str) -> Option<Value> {
    let rest = route.strip_prefix(REPO)?;
    Some(match rest {
        "/releases/tags/v1.1.0" => json!({
            "id": 1,
            "tag_name": "v1.1.0",
            "name": "v1.1.0",
            "html_url": "https://github.com/acme/shop/releases/tag/v1.1.0",
            "body": "## What's Changed\n* Warm the product cache at startup by @dev in https://github.com/acme/shop/pull/42\n* Fix a typo in the README by @doc in https://github.com/acme/shop/pull/43\n",
            "draft": false,
            "prerelease": false,
        }),
        "/compare/v1.0.0...v1.1.0" => json!({
            "status": "ahead",
            "ahead_by": 3,
            "behind_by": 0,
            "total_commits": 3,
            "commits": [commit("c1", "Warm the product cache (#42)"), commit("c2", "README typo (#43)"), commit("c3", "Raise the worker pool")],
            "files": [
                file("src/catalog/cache.go", 8, 0, Some(CACHE_PATCH)),
                file("README.md", 1, 1, Some("@@ -1 +1 @@\n-Shop\n+The shop")),
                file("deploy/values.yaml", 1, 1, Some("@@ -3 +3 @@\n-  workerPoolSize: 8\n+  workerPoolSize: 64")),
            ],
        }),
        "/commits/c1/pulls" => json!([pull(42, "Warm the product cache at startup", "dev")]),
        "/commits/c2/pulls" => json!([pull(
            43,
            "Fix a typo in the README <script>document.title='pwned'</script>",
            "doc"
        )]),
        "/commits/c3/pulls" => json!([]),
        "/pulls/42" => pull(42, "Warm the product cache at startup", "dev"),
        "/pulls/43" => pull(
            43,
            "Fix a typo in the README <script>document.title='pwned'</script>",
            "doc",
        ),
        "/pulls/42/files" => json!([file("src/catalog/cache.go", 8, 0, Some(CACHE_PATCH))]),
        "/pulls/43/files" => json!([file(
            "README.md",
            1,
            1,
            Some("@@ -1 +1 @@\n-Shop\n+The shop")
        )]),
        _ => return None,
    })
}
