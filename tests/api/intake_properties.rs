//! Properties of intake, over arbitrary bodies and headers: it never answers a 5xx and
//! never panics, and a 4xx stores nothing.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Options, StoreChoice, TestApp};

const TOKEN: &str = "prop-write-token";

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$._]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies shaped like the webhook's, with arbitrary parts: what a broken or hostile
/// sender would send.
fn webhook_like() -> impl Strategy<Value = Value> {
    let labels = prop::collection::btree_map(
        prop_oneof![
            Just("deploymentId".to_owned()),
            Just("hostname".to_owned()),
            "[a-z.$]{0,8}".prop_map(String::from)
        ],
        prop_oneof![".{0,20}".prop_map(Value::String), any_json()],
        0..5,
    );
    let alert = (
        prop_oneof![Just(json!("firing")), Just(json!("resolved")), any_json()],
        labels,
        prop_oneof![Just(json!("2026-11-25T10:00:00Z")), any_json()],
    )
        .prop_map(|(status, labels, starts)| {
            json!({"status": status, "labels": Value::Object(labels.into_iter().collect()), "startsAt": starts})
        });
    prop_oneof![
        prop::collection::vec(alert, 0..4)
            .prop_map(|alerts| json!({"version": "4", "alerts": alerts})),
        any_json(),
    ]
}

fn headers() -> impl Strategy<Value = (Option<&'static str>, Option<String>)> {
    (
        prop::option::of(prop_oneof![
            Just("application/json"),
            Just("application/alert+json"),
            Just("text/plain"),
            Just("application/json; charset=utf-8"),
        ]),
        prop::option::of(prop_oneof![
            Just(format!("Bearer {TOKEN}")),
            Just("Bearer wrong".to_owned()),
            "[ -~]{0,30}".prop_map(String::from),
        ]),
    )
}

async fn stored(app: &TestApp) -> usize {
    let (_, page) = app.get("/reports?limit=500").await;
    page["reports"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bodies_and_headers_never_get_a_5xx_and_a_4xx_stores_nothing() {
    for store in [StoreChoice::Embedded, StoreChoice::Mongo] {
        properties_hold(store).await;
    }
}

async fn properties_hold(store: StoreChoice) {
    let app = spawn_app(Options {
        bearer: Some(TOKEN),
        store,
        ..Options::default()
    })
    .await;
    let handle = tokio::runtime::Handle::current();
    let app = std::sync::Arc::new(app);
    let shared = app.clone();
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 150,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(
                &(webhook_like(), headers(), any::<bool>()),
                |(body, (content_type, auth), raw)| {
                    let app = &shared;
                    handle.block_on(async {
                        let before = stored(app).await;
                        let bytes = if raw {
                            // Not even JSON, sometimes.
                            body.to_string()
                                .chars()
                                .rev()
                                .collect::<String>()
                                .into_bytes()
                        } else {
                            body.to_string().into_bytes()
                        };
                        let mut request = app
                            .client
                            .post(format!("{}/v1/alerts", app.address))
                            .body(bytes);
                        if let Some(ct) = content_type {
                            request = request.header("content-type", ct);
                        }
                        if let Some(auth) = &auth {
                            request = request.header("authorization", auth.as_str());
                        }
                        let response = request.send().await.expect("the service answers");
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        prop_assert!(!status.is_server_error(), "{status}: {text}");
                        if status.is_client_error() {
                            prop_assert!(
                                serde_json::from_str::<Value>(&text)
                                    .is_ok_and(|v| v["error"]["code"].is_string()),
                                "a JSON error body: {text}"
                            );
                            prop_assert_eq!(
                                stored(app).await,
                                before,
                                "a {} stored something",
                                status
                            );
                        } else {
                            prop_assert_eq!(status, StatusCode::ACCEPTED);
                        }
                        Ok(())
                    })
                },
            )
            .unwrap();
    })
    .await
    .unwrap();
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "still serving");
}
