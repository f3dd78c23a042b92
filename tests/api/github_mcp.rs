//! The design's GitHub MCP server stays possible, read-only: it is started in its read-only
//! mode, only the read tools of `GitHub.MCPTools` are offered to the model, and those only
//! read the admitted release's repository. A stub server that also has write tools shows
//! that no write tool is ever offered or called, in the native and the Python runner alike.

use serde_json::{json, Value};

use crate::fake_github;
use crate::fake_llm::Script;
use crate::helpers::{deployment_id, spawn_app, Options};
use crate::servers;

fn calls() -> Vec<(String, Value)> {
    vec![
        (
            "create_pull_request".into(),
            json!({"owner": "acme", "repo": "shop", "title": "x", "head": "h", "base": "main"}),
        ),
        (
            "get_release_by_tag".into(),
            json!({"owner": "evil", "repo": "secrets", "tag": "v1"}),
        ),
        (
            "get_release_by_tag".into(),
            json!({"owner": "acme", "repo": "shop", "tag": "v1.1.0"}),
        ),
    ]
}

async fn only_read_tools_reach_the_model_and_only_for_the_release(native: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stub.jsonl");
    let command = format!(
        "{} {} {}",
        servers::runner_python().display(),
        servers::repo()
            .join("tests/fixtures/stub_github_mcp.py")
            .display(),
        log.display()
    );
    let command: &'static str = Box::leak(command.into_boxed_str());
    let app = spawn_app(Options {
        script: Script::Calls(calls()),
        native,
        github: Some((fake_github::TOKEN, command)),
        // GitHub's REST API is unreachable: the service has no changes to show, so the
        // model is given the design's GitHub task and tools.
        sections: "GitHub:\n  APIURL: http://127.0.0.1:1\n  TimeoutSeconds: 2\n".into(),
        ..Options::default()
    })
    .await;
    let id = deployment_id(if native { "ghn" } else { "ghp" });
    app.put_json(
        &format!("/deployments/{id}"),
        &json!({"repoAddress": "acme/shop", "tag": "v1.1.0", "hosts": ["web-1"]}),
    )
    .await;
    app.post_alerts(&crate::helpers::alertmanager_body(&id, "firing"))
        .await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report}");

    let requests = app.llm.requests();
    assert!(
        requests[0].prompt().contains("get_release_by_tag"),
        "the GitHub task"
    );
    for r in &requests {
        let offered: Vec<&str> = r.body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str().or(t["name"].as_str()))
            .collect();
        assert!(offered.contains(&"get_release_by_tag"), "{offered:?}");
        assert!(offered.contains(&"pull_request_read"), "{offered:?}");
        assert!(
            !offered.contains(&"create_pull_request") && !offered.contains(&"merge_pull_request"),
            "a write tool was offered: {offered:?}"
        );
    }
    let answers = requests
        .iter()
        .map(|r| r.body["messages"].to_string())
        .collect::<String>();
    assert!(
        answers.contains("no tool named"),
        "the write tool is not there to call"
    );
    assert!(
        answers.contains("may only read acme/shop"),
        "another repository is refused"
    );

    let entries: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        entries[0]["read_only"], "1",
        "started in read-only mode: {entries:?}"
    );
    let called: Vec<&Value> = entries.iter().filter(|e| e.get("tool").is_some()).collect();
    assert_eq!(called.len(), 1, "{entries:?}");
    assert_eq!(called[0]["tool"], "get_release_by_tag");
    assert_eq!(
        (called[0]["owner"].as_str(), called[0]["repo"].as_str()),
        (Some("acme"), Some("shop"))
    );
}

#[tokio::test]
async fn the_native_runner_offers_only_read_tools_for_the_admitted_repository() {
    only_read_tools_reach_the_model_and_only_for_the_release(true).await;
}

#[tokio::test]
async fn the_python_runner_offers_only_read_tools_for_the_admitted_repository() {
    only_read_tools_reach_the_model_and_only_for_the_release(false).await;
}
