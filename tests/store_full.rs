//! A store that cannot write (issue 9): the SQLite file on a small real filesystem (tmpfs)
//! that fills up. Ingest must answer 503 with `Retry-After` and a JSON detail, `/readyz`
//! must fail, nothing answered 503 may be stored and nothing answered 202 lost, and once
//! space is freed the gateway must take events again by itself. SQLite only: the full disk
//! is the SQLite file's; a PostgreSQL server's disk is its own.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A tmpfs of `size` mounted at a fresh folder, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("running mount");
        assert!(
            mounted.success(),
            "this test mounts a small tmpfs and needs root (CAP_SYS_ADMIN)"
        );
        SmallDisk {
            path,
            _parent: parent,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Write zeros into `path` until the filesystem refuses more.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test]
async fn a_full_disk_gives_503_loses_nothing_and_recovers_by_itself() {
    let disk = SmallDisk::mount("24m");
    let receiver = Receiver::start().await;
    let mut config = test_config(&disk.path);
    config.store = None; // the SQLite file in the data folder, on the small disk
    let app = start(config).await;
    let big = "x".repeat(48 << 10);
    let event = |n: usize| {
        json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "event_type": "parse.success",
            "data": {"n": n, "blob": big},
            "webhook_configurations": [{"webhook_url": receiver.url("/in")}],
        })
    };
    let mut accepted: Vec<String> = Vec::new();
    for n in 0..20 {
        let sent = event(n);
        app.ingest(sent.clone()).await;
        accepted.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    let filler = disk.path.join("filler");
    fill(&filler);
    let mut refused: Vec<String> = Vec::new();
    for n in 20..400 {
        let sent = event(n);
        let response = app
            .http
            .post(app.url("/api/v1/events"))
            .bearer_auth(API_KEY)
            .json(&sent)
            .send()
            .await
            .unwrap();
        let id = sent["event_id"].as_str().unwrap().to_owned();
        match response.status().as_u16() {
            202 => accepted.push(id),
            503 => {
                assert_eq!(response.headers()["retry-after"], "2");
                let body: Value = response.json().await.unwrap();
                assert!(body["detail"].is_string(), "{body}");
                refused.push(id);
                if refused.len() == 3 {
                    break;
                }
            }
            other => panic!(
                "ingest answered {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    assert_eq!(refused.len(), 3, "the disk never filled up");
    eprintln!(
        "{} events accepted, then 3 refused once the disk was full",
        accepted.len()
    );
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    for id in &refused {
        let (status, body) = app.get(&format!("/api/v1/events/{id}")).await;
        assert_eq!(status, 404, "a refused event was stored: {body}");
    }

    // Space comes back: readiness and ingest recover without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _) = app.get("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = event(1_000);
    app.ingest(after.clone()).await;
    accepted.push(after["event_id"].as_str().unwrap().to_owned());

    // Every accepted event arrives (the engine's own writes failed too while the disk was
    // full, so some may arrive twice: at least once is the promise).
    let deadline = Instant::now() + WAIT;
    loop {
        let arrived: std::collections::HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|request| request.header("x-webhook-event-id"))
            .collect();
        let missing = accepted.iter().filter(|id| !arrived.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted events never arrived",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &refused {
        let (status, _) = app.get(&format!("/api/v1/events/{id}")).await;
        assert_eq!(status, 404, "a refused event was stored later");
    }
}
