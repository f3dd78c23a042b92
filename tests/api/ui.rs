//! The report pages at `/ui/`, read by a real browser (Debian's headless `chromium`): the
//! list and a report render with no console message (no script error, no
//! Content-Security-Policy violation); an alert label `<img src=x onerror=…>`, a PR title
//! with `<script>` and a model answer with `<script>` show as text and run nothing; the
//! screenshots are left under the target directory for review. The forms: the `Origin`
//! and the per-form token are checked before anything changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fake_github::{self, FakeGitHub, Limit};
use crate::fake_llm::Script;
use crate::helpers::{cpu_heavy, deployment_id, spawn_app, Options, TestApp};

/// What the hostile texts would do if they ran.
const PWNED: &str = "document.title='pwned'";

fn hostile_alert(id: &str) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "dd",
        "alerts": [{
            "status": "firing",
            "labels": {
                "alertname": "NodeHighCPU", "deploymentId": id, "hostname": "web-1",
                "severity": "critical", "note": format!("<img src=x onerror=\"{PWNED}\">"),
            },
            "annotations": {"description": "CPU above 90% <b>after</b> the release"},
            "startsAt": (chrono::Utc::now() - chrono::Duration::minutes(3)).to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=cpu",
            "fingerprint": "beef"
        }]
    })
}

async fn app_with_a_hostile_report() -> (TestApp, FakeGitHub, String) {
    let github = FakeGitHub::start(Limit::None).await;
    let content = format!(
        "【问题概述】\nweb-1 的 CPU 在发布后饱和 <script>{PWNED}</script>\n【根因分析】\n缓存预热占满 CPU。\n【影响范围】\nweb-1。\n【解决方案】\n回滚 v1.1.0。"
    );
    let app = spawn_app(Options {
        script: Script::ReportWithContent(content),
        github: Some((fake_github::TOKEN, "/nonexistent/github-mcp-server stdio")),
        sections: format!(
            "GitHub:\n  APIURL: {}\n  Repos: [\"acme/shop\"]\n  TimeoutSeconds: 20\n",
            github.url
        ),
        evidence: true,
        ..Options::default()
    })
    .await;
    let id = deployment_id("ui");
    let registration = json!({
        "service": "shop",
        "repoAddress": "https://github.com/acme/shop",
        "tag": "v1.1.0",
        "previousTag": "v1.0.0",
        "hosts": [{"name": "web-1", "status": "released"}, {"name": "web-2", "status": "pending"}],
        "strategy": "canary",
        "startedAt": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    });
    let (status, body) = app
        .put_json(&format!("/deployments/{id}"), &registration)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app.post_alerts(&hostile_alert(&id)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let report = app.wait_final(&id).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    (app, github, id)
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `args`: its stdout and its log.
fn chromium(url: &str, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (Debian's chromium package)");
    assert!(output.status.success(), "{output:?}");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The console messages Chromium logged (script errors, CSP violations, anything logged).
fn console_messages(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_render_in_chromium_with_outside_text_shown_as_text_and_no_script_run() {
    let _heavy = cpu_heavy().await;
    let (app, _github, id) = app_with_a_hostile_report().await;
    let list_url = format!("{}/ui/", app.address);
    let report_url = format!("{}/ui/reports/{id}", app.address);

    let (dom, log) = chromium(&report_url, &["--dump-dom"]);
    assert!(
        console_messages(&log).is_empty(),
        "{:?}",
        console_messages(&log)
    );
    assert!(
        dom.contains(&format!("<title>{id} · deploy-diagnosis</title>")),
        "no script changed the title: {dom}"
    );
    assert!(!dom.contains("<script") && !dom.contains("<img"), "{dom}");
    for text in [
        // The alert's label, the model's answer and the PR title, as text.
        "&lt;img src=x onerror=\"document.title='pwned'\"&gt;",
        "饱和 &lt;script&gt;document.title='pwned'&lt;/script&gt;",
        "Fix a typo in the README &lt;script&gt;document.title='pwned'&lt;/script&gt;",
        "CPU above 90% &lt;b&gt;after&lt;/b&gt; the release",
    ] {
        assert!(dom.contains(text), "{text:?} not shown as text in {dom}");
    }
    // The sections, the verdict banner, the evidence charts with the release marked.
    for part in [
        "【问题概述】",
        "【解决方案】",
        "class=\"banner rec-",
        "<svg class=\"chart\"",
        "class=\"release\"",
        "#42 Warm the product cache at startup",
    ] {
        assert!(dom.contains(part), "{part:?} missing from {dom}");
    }

    let (dom, log) = chromium(&list_url, &["--dump-dom"]);
    assert!(
        console_messages(&log).is_empty(),
        "{:?}",
        console_messages(&log)
    );
    assert!(dom.contains(&format!("href=\"/ui/reports/{id}\"")), "{dom}");

    let dir = screenshots();
    for (name, url) in [("report", &report_url), ("list", &list_url)] {
        let file = dir.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&file);
        chromium(
            url,
            &[
                "--window-size=1280,2200",
                &format!("--screenshot={}", file.display()),
            ],
        );
        let png = std::fs::read(&file).expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 20_000,
            "{name}: {} bytes",
            png.len()
        );
        println!("screenshot: {}", file.display());
    }
}

/// The pages' own answer to each request, and the forms' guards.
#[tokio::test]
async fn pages_send_a_strict_policy_and_forms_need_the_origin_and_their_token() {
    let app = spawn_app(Options {
        bearer: Some("ui-write-token-1234"),
        read_token: Some("ui-read-token-5678"),
        ..Options::default()
    })
    .await;
    let id = deployment_id("ui-form");
    let (status, _) = app
        .post_alerts(&crate::helpers::alertmanager_body(&id, "firing"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.wait_final(&id).await;
    let http = deploy_diagnosis::tls::client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = format!("{}/ui/reports/{id}", app.address);

    // Without a token a browser is asked for one (Basic); with the read token as the
    // Basic password the page is served, under the policy.
    let r = http.get(&page).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert!(
        challenges
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("Basic")),
        "{challenges:?}"
    );
    let r = http
        .get(&page)
        .basic_auth("me", Some("ui-read-token-5678"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    let token = |action: &str| {
        let form = html
            .split(&format!("/ui/reports/{id}/{action}"))
            .nth(1)
            .unwrap();
        let at = form.find("name=\"csrf\" value=\"").unwrap() + 19;
        form[at..at + form[at..].find('"').unwrap()].to_owned()
    };
    let rediagnose_token = token("rediagnose");
    let feedback_token = token("feedback");

    let post = |path: String, origin: Option<String>, body: String, password: &'static str| {
        let mut r = http
            .post(format!("{}{path}", app.address))
            .basic_auth("me", Some(password))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let rediagnose = format!("/ui/reports/{id}/rediagnose");
    let own = Some(app.address.clone());
    let refused = [
        (
            None,
            format!("csrf={rediagnose_token}"),
            "ui-write-token-1234",
            403,
            "Origin",
        ),
        (
            Some("https://evil.example".to_owned()),
            format!("csrf={rediagnose_token}"),
            "ui-write-token-1234",
            403,
            "evil.example",
        ),
        (
            own.clone(),
            "csrf=forged".to_owned(),
            "ui-write-token-1234",
            403,
            "token",
        ),
        (
            own.clone(),
            format!("csrf={feedback_token}"),
            "ui-write-token-1234",
            403,
            "token",
        ),
        (
            own.clone(),
            format!("csrf={rediagnose_token}"),
            "ui-read-token-5678",
            401,
            "write",
        ),
    ];
    for (origin, body, password, status, says) in refused {
        let r = post(rediagnose.clone(), origin.clone(), body, password)
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{origin:?}");
        let answer: Value = r.json().await.unwrap();
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(report["version"], 1, "nothing refused changed the report");

    let r = post(
        format!("/ui/reports/{id}/feedback"),
        own.clone(),
        format!("csrf={feedback_token}&score=4&rootCauseCorrect=true&comment=%E5%87%86"),
        "ui-write-token-1234",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, report) = app.get(&format!("/reports/{id}")).await;
    assert_eq!(report["feedback"]["score"], 4, "{report:#}");
    assert_eq!(report["feedback"]["comment"], "准");

    let r = post(
        rediagnose,
        own,
        format!("csrf={rediagnose_token}"),
        "ui-write-token-1234",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        format!("/ui/reports/{id}").as_str()
    );
    let report = app.wait_final(&id).await;
    assert_eq!(report["version"], 2, "{report:#}");

    // The list filters; a bad filter is a clear 400 that names it.
    let r = http
        .get(format!("{}/ui/?status=done", app.address))
        .basic_auth("me", Some("ui-read-token-5678"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("status"));
}

#[tokio::test]
async fn the_pages_speak_english_when_asked() {
    let app = spawn_app(Options {
        sections: "UI:\n  Language: en\n".into(),
        ..Options::default()
    })
    .await;
    let id = deployment_id("ui-en");
    app.post_alerts(&crate::helpers::alertmanager_body(&id, "firing"))
        .await;
    app.wait_final(&id).await;
    let html = app.page(&format!("/ui/reports/{id}")).await;
    assert!(
        html.contains("<html lang=\"en\">") && html.contains("Re-diagnose"),
        "{html}"
    );
    let list = app
        .client
        .get(format!("{}/ui/", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("Diagnosis reports") && list.contains(&id),
        "{list}"
    );
}
