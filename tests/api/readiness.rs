//! `/readyz` against a real full disk: the embedded store on a small tmpfs of its own,
//! filled until nothing more fits. Readiness proves a write, so it says what intake meets.

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{alertmanager_body, deployment_id, spawn_app, Options, TestApp};

/// A tmpfs of `megabytes` mounted on a temporary folder (root, as CI runs), unmounted when
/// dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI and scripts/test run as root)"
        );
        Self { dir }
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the service may still hold its files while it shuts down.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Polls `/readyz` until its status is `want`.
async fn ready_becomes(app: &TestApp, want: StatusCode) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (status, body) = app.get("/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "/readyz stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_store_that_cannot_write_is_not_ready_and_ready_again_once_it_can() {
    let disk = SmallDisk::mount(8);
    let app = spawn_app(Options {
        store_path: Some(disk.dir.path().join("reports.sqlite3")),
        ..Options::default()
    })
    .await;
    ready_becomes(&app, StatusCode::OK).await;

    let filler = disk.fill();
    // Intake meets the full disk: its 202 would mean "on disk", so it answers 503.
    let mut refused = None;
    for _ in 0..200 {
        let (status, body) = app
            .post_alerts(&alertmanager_body(&deployment_id("full"), "firing"))
            .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(body);
            break;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let refused = refused.expect("a full disk refuses an alert");
    assert_eq!(refused["error"]["code"], "store_unavailable", "{refused}");
    let body = ready_becomes(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["store"]["ok"], false, "{body}");
    assert_eq!(body["ready"], false);

    std::fs::remove_file(filler).unwrap();
    ready_becomes(&app, StatusCode::OK).await;
    let (status, body) = app
        .post_alerts(&alertmanager_body(&deployment_id("room"), "firing"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}
