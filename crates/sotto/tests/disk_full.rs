//! A full disk (issue 13): the database lives on a tmpfs this test mounts
//! with a size limit. Sends are refused with an error frame once it is
//! full, nothing acknowledged is lost, and sending works again when the
//! filesystem grows. Needs root (to mount); skipped with a reason without
//! it, and failing instead under SOTTO_REQUIRE_SERVICES=1.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{Native, TestServer, api_user};

/// A size-limited tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let required = std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "cannot mount a tmpfs (root is needed) under SOTTO_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED: cannot mount a size-limited tmpfs here (not root?)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Sends until the store refuses; returns the bodies acknowledged and the
/// refusal.
async fn fill(dir: &Path, alice: &mut Native, to: &str, prefix: &str) -> (Vec<String>, Value) {
    let pad = "x".repeat(8 * 1024);
    let mut acked = Vec::new();
    for n in 0..2_000 {
        let body = format!("{prefix}-{n}-{pad}");
        alice
            .send(json!({"type": "send", "to": to, "body": body, "client_id": format!("{prefix}-{n}")}))
            .await;
        let reply = loop {
            let f = alice.recv().await;
            if f["type"] == "ack" || f["type"] == "error" {
                break f;
            }
        };
        if reply["type"] == "error" {
            return (acked, reply);
        }
        acked.push(body);
    }
    // Before the fix, all 2,000 were acknowledged while only the first ~80
    // were stored: the commit's "disk full" was lost. Show both sides.
    let df = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "df -h {0}; sqlite3 {0}/sotto.db \"select count(*) from messages\" 2>&1",
            dir.display()
        ))
        .output()
        .unwrap();
    panic!(
        "2,000 sends of 8 KiB acknowledged on a 3 MiB filesystem: {}",
        String::from_utf8_lossy(&df.stdout)
    );
}

#[tokio::test]
async fn a_full_disk_refuses_sends_loses_nothing_acked_and_recovers() {
    let Some(fs) = Tmpfs::mount("3m") else { return };
    let db: PathBuf = fs.path().join("sotto.db");
    let server = TestServer::start_with(|c| {
        c.database = db.to_str().unwrap().to_owned();
        c.hub.offline_queue_max = 100_000;
    })
    .await;
    let alice = api_user(&server, "alice").await;
    let bob = api_user(&server, "bob").await;
    let mut a = Native::connect(&server, &alice.token).await;

    let (mut acked, refusal) = fill(fs.path(), &mut a, &bob.id, "first").await;
    assert!(!acked.is_empty(), "some sends fit before the disk filled");
    assert_eq!(
        refusal["ref"],
        format!("first-{}", acked.len()),
        "{refusal}"
    );
    assert!(
        refusal["code"].is_string() && refusal["message"].is_string(),
        "{refusal}"
    );

    // Space returns: sending works again without a restart.
    fs.resize("64m");
    let body = "after the disk grew".to_owned();
    let ack = a.send_message(&bob.id, &body, "after").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    acked.push(body);

    // Bob gets every acknowledged message, once each, in order.
    let mut b = Native::connect(&server, &bob.token).await;
    let mut got = Vec::new();
    while let Some(f) = b.try_recv(Duration::from_secs(2)).await {
        if f["type"] == "message" {
            got.push(f["body"].as_str().unwrap().to_owned());
        }
        if got.len() == acked.len() {
            break;
        }
    }
    assert_eq!(got.len(), acked.len(), "every acked message arrives once");
    assert!(got == acked, "in order and unchanged");
}
