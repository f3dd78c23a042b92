//! The release in the diagnosis: a registered deployment's repository and tags drive change
//! evidence read from (a local fake of) the GitHub REST API before the runner, ranked into
//! suspects, stored on the report and shown to the model as fenced data; the allowlist
//! decides what may be read; rate limits are waited out within the deadline.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::fake_github::{self, FakeGitHub, Limit, CACHE_PATCH};
use crate::fake_llm::Script;
use crate::helpers::{deployment_id, spawn_app, Options, StoreChoice, TestApp};

fn github_section(github: &FakeGitHub, repos: &[&str]) -> String {
    let repos: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "GitHub:\n  APIURL: {}\n  Repos: [{}]\n  MaxPatchChars: 6000\n  MaxFilePatchChars: 2000\n  TimeoutSeconds: 20\n",
        github.url,
        repos.join(", ")
    )
}

async fn app_with(github: &FakeGitHub, repos: &[&str], store: StoreChoice) -> TestApp {
    spawn_app(Options {
        script: Script::ReportWithQueries(vec!["up".into()]),
        github: Some((fake_github::TOKEN, "/nonexistent/github-mcp-server stdio")),
        sections: github_section(github, repos),
        store,
        ..Options::default()
    })
    .await
}

fn registration() -> Value {
    json!({
        "service": "shop",
        "repoAddress": "https://github.com/acme/shop",
        "tag": "v1.1.0",
        "previousTag": "v1.0.0",
        "commit": "c3",
        "hosts": ["web-1", "web-2:9100"],
        "environment": "production",
        "deployedAt": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
        "url": "https://ci.example.com/runs/77"
    })
}

/// A standard node_exporter alert: no `deploymentId`, just the host.
fn host_alert(hostname: &str, minutes_ago: i64) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "dd",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "NodeMemoryHigh", "hostname": hostname, "severity": "critical"},
            "annotations": {"description": "memory above 95%"},
            "startsAt": (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=mem",
            "fingerprint": "f00d"
        }]
    })
}

async fn release_reaches_the_report_and_the_prompt(store: StoreChoice) {
    let github = FakeGitHub::start(Limit::None).await;
    let app = app_with(&github, &[], store).await;
    let id = deployment_id("rel");
    let (status, _) = app
        .put_json(&format!("/deployments/{id}"), &registration())
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // A standard alert on one of its hosts, no relabelling: attributed by hostname.
    let (status, intake) = app.post_alerts(&host_alert("web-9, WEB-1", 2)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{intake}");
    let entry = &intake["alerts"][0];
    assert_eq!(entry["outcome"], "started", "{intake}");
    assert_eq!(entry["deploymentId"], id.as_str());
    assert_eq!(entry["attributed"]["by"], "hostname");
    assert_eq!(entry["attributed"]["host"], "WEB-1");

    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["deployment"]["tag"], "v1.1.0", "the snapshot");
    let changes = &report["changes"];
    assert_eq!(changes["repo"], "acme/shop", "{changes}");
    assert_eq!(changes["range"], "v1.0.0...v1.1.0");
    assert_eq!(changes["read"], true);
    assert_eq!(changes["commits"], 3);
    let prs = changes["prs"].as_array().unwrap();
    assert_eq!(
        prs.iter()
            .map(|p| p["number"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![42, 43],
        "the cache PR is the top suspect: {changes}"
    );
    let top = &prs[0]["files"][0];
    assert_eq!(top["path"], "src/catalog/cache.go");
    assert!(top["suspect"].as_f64().unwrap() > prs[1]["suspect"].as_f64().unwrap());
    assert!(
        top["why"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("memory: ")),
        "{top}"
    );
    assert_eq!(prs[0]["author"], "dev");
    assert_eq!(prs[0]["url"], "https://github.com/acme/shop/pull/42");
    // The direct commit's file, with its changed limit.
    let other = &changes["otherFiles"][0];
    assert_eq!(other["path"], "deploy/values.yaml", "{changes}");
    assert!(other["why"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w == "config limit: workerPoolSize"));

    // The model saw the diff excerpt, fenced as data, and no GitHub tool task.
    let prompt = app.llm.requests()[0].prompt();
    let open = prompt
        .find("<<<CHANGES-")
        .expect("fenced changes in the prompt");
    let excerpt = prompt
        .find("products := make([]Product, 0, 50_000_000)")
        .expect("the diff excerpt");
    assert!(open < excerpt, "the excerpt is inside the block");
    assert!(prompt.contains("分析本次发布的代码变更"));
    assert!(!prompt.contains("get_release_by_tag"));
    assert!(
        prompt.contains("发布信息（已登记的部署）"),
        "the deployment is in the data"
    );

    // Only GETs, each with the token in its header, never in a path; the token is nowhere
    // in the report.
    let seen = github.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(r.method, Method::GET, "{r:?}");
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {}", fake_github::TOKEN).as_str())
        );
        assert!(!r.path.contains(fake_github::TOKEN));
    }
    assert!(!report.to_string().contains(fake_github::TOKEN));
    assert!(seen
        .iter()
        .any(|r| r.path.starts_with("/repos/acme/shop/pulls/42/files")));
    assert!(
        CACHE_PATCH.len() < 2000,
        "the excerpt fits the per-file budget"
    );
}

#[tokio::test]
async fn a_registered_release_reaches_the_report_and_the_prompt_on_the_embedded_store() {
    release_reaches_the_report_and_the_prompt(StoreChoice::Embedded).await;
}

#[tokio::test]
async fn a_registered_release_reaches_the_report_and_the_prompt_on_the_mongo_store() {
    release_reaches_the_report_and_the_prompt(StoreChoice::Mongo).await;
}

#[tokio::test]
async fn a_repository_outside_the_allowlist_is_never_read_and_the_report_says_so() {
    let github = FakeGitHub::start(Limit::None).await;
    let app = app_with(&github, &["other-org/*"], StoreChoice::Embedded).await;
    let id = deployment_id("deny");
    app.put_json(&format!("/deployments/{id}"), &registration())
        .await;
    let mut alert = crate::helpers::alertmanager_body(&id, "firing");
    alert["alerts"][0]["labels"]["hostname"] = json!("web-1");
    app.post_alerts(&alert).await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["changes"]["read"], false, "{report}");
    let note = report["changes"]["notes"][0].as_str().unwrap();
    assert!(note.contains("not in the GitHub.Repos allowlist"), "{note}");
    assert!(github.requests().is_empty(), "nothing was read");
    assert!(app
        .metrics()
        .await
        .contains("deploy_diagnosis_change_evidence_total{outcome=\"not_read\"} 1"));
    assert!(!app.llm.requests()[0].prompt().contains("<<<CHANGES-"));
}

#[tokio::test]
async fn alert_labels_alone_cannot_pick_a_repository_when_the_allowlist_is_empty() {
    let github = FakeGitHub::start(Limit::None).await;
    let app = app_with(&github, &[], StoreChoice::Embedded).await;
    let id = deployment_id("labels");
    let mut alert = crate::helpers::alertmanager_body(&id, "firing");
    alert["alerts"][0]["labels"]["repoAddress"] = json!("acme/shop");
    alert["alerts"][0]["labels"]["tag"] = json!("v1.1.0");
    app.post_alerts(&alert).await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["changes"]["read"], false, "{report}");
    assert!(report["changes"]["notes"][0]
        .as_str()
        .unwrap()
        .contains("named only by alert labels"));
    assert!(github.requests().is_empty());

    // Admitted by a glob, the same labels are read.
    let github = FakeGitHub::start(Limit::None).await;
    let app = app_with(&github, &["acme/*"], StoreChoice::Embedded).await;
    app.post_alerts(&alert).await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["changes"]["read"], true, "{report}");
    assert_eq!(
        report["changes"]["range"], "v1.1.0",
        "no previous tag: the release's PRs"
    );
    assert_eq!(report["changes"]["prs"][0]["number"], 42, "{report}");
}

#[tokio::test]
async fn rate_limits_are_waited_out_within_the_deadline_or_reported() {
    for limit in [Limit::PrimaryOnce, Limit::SecondaryOnce] {
        let github = FakeGitHub::start(limit).await;
        let app = app_with(&github, &[], StoreChoice::Embedded).await;
        let id = deployment_id("rate");
        app.put_json(&format!("/deployments/{id}"), &registration())
            .await;
        app.post_alerts(&crate::helpers::alertmanager_body(&id, "firing"))
            .await;
        let report = app.wait_final(&id).await;
        let changes = &report["changes"];
        assert_eq!(changes["prs"][0]["number"], 42, "{limit:?}: {changes}");
        assert!(changes.get("notes").is_none(), "{limit:?}: {changes}");
        let seen = github.requests();
        assert_eq!(
            seen[0].path, seen[1].path,
            "{limit:?}: the limited request was sent again"
        );
    }

    // Limited for an hour: the diagnosis does not wait; the report says why.
    let github = FakeGitHub::start(Limit::Exhausted).await;
    let app = app_with(&github, &[], StoreChoice::Embedded).await;
    let id = deployment_id("ratex");
    app.put_json(&format!("/deployments/{id}"), &registration())
        .await;
    app.post_alerts(&crate::helpers::alertmanager_body(&id, "firing"))
        .await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report}");
    let notes = report["changes"]["notes"].to_string();
    assert!(notes.contains("rate limited until"), "{notes}");
    assert_eq!(github.requests().len(), 1, "no request after the limit");
}

#[tokio::test]
async fn an_evidence_only_report_names_the_top_suspects_under_the_root_cause() {
    let github = FakeGitHub::start(Limit::None).await;
    let app = spawn_app(Options {
        evidence_only: true,
        github: Some((fake_github::TOKEN, "/nonexistent/github-mcp-server stdio")),
        sections: github_section(&github, &[]),
        ..Options::default()
    })
    .await;
    let id = deployment_id("evsus");
    let mut registration = registration();
    registration["hosts"] = json!([app.prom.node_instance]);
    app.put_json(&format!("/deployments/{id}"), &registration)
        .await;
    let mut alert = crate::helpers::alertmanager_body(&id, "firing");
    alert["alerts"][0]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("hostname");
    alert["alerts"][0]["startsAt"] =
        json!((chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339());
    app.post_alerts(&alert).await;
    let report = app.wait_final(&id).await;
    assert_eq!(report["engine"], "evidence", "{report}");
    let content = report["content"].as_str().unwrap();
    let cause = content.find("【根因分析】").unwrap();
    let scope = content.find("【影响范围】").unwrap();
    // The top suspect of the stored ranking (it depends on what the node measured while
    // the tests ran) is the first one listed.
    let changes = &report["changes"];
    let mut files: Vec<(f64, String)> = changes["prs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|pr| pr["files"].as_array().unwrap().iter())
        .chain(changes["otherFiles"].as_array().into_iter().flatten())
        .map(|f| {
            (
                f["suspect"].as_f64().unwrap(),
                f["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    files.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (score, path) = &files[0];
    assert!(
        *score > 0.0,
        "the config limit and the cache both match something: {changes}"
    );
    let head = content
        .find("中与上述异常最相关的改动")
        .unwrap_or_else(|| panic!("{content}"));
    assert!(cause < head && head < scope, "{content}");
    let first = content[head..].lines().nth(1).unwrap();
    assert!(
        first.starts_with("1. ") && first.contains(&format!(" 文件 {path}（")),
        "{path}: {content}"
    );
    // The deployment's hosts widened the metric target: the node was measured although
    // the alert names no host.
    let evidence = report["evidence"].as_array().unwrap();
    assert!(
        evidence
            .iter()
            .any(|e| e["instance"] == app.prom.node_instance.as_str()),
        "{report}"
    );
}
