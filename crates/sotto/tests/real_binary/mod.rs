//! The real `sotto serve` as a child process, for tests that must see
//! what a user or an attacker sees: the ports it prints, its HTTP answers,
//! its resident memory, its log. Ports are chosen by the kernel (`0`) and
//! read back from the startup log, so tests never race for a free port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the server may take to print its listening lines.
const START: Duration = Duration::from_secs(20);
/// The most log a test keeps (the rest is counted, not stored).
const LOG_KEEP: usize = 4 << 20;

/// What the child printed to stderr, and how many bytes in all.
#[derive(Default)]
struct Log {
    text: String,
    bytes: usize,
}

pub struct Sotto {
    child: Child,
    pub chat: SocketAddr,
    pub http: SocketAddr,
    pub dtls: Option<SocketAddr>,
    /// The folder holding the database (`sotto.db`), kept by the caller's
    /// `TempDir` so a restart can use the same one.
    pub dir: PathBuf,
    log: Arc<Mutex<Log>>,
}

/// Every port on 0, cheap hashing, the database in `dir`, then `extra`:
/// a default is left out when `extra` sets the same option (clap refuses
/// an option given twice).
fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let db = dir.join("sotto.db").display().to_string();
    let defaults = [
        ("--chat-port", "0"),
        ("--http-port", "0"),
        ("--dtls-port", "0"),
        ("--argon2-memory-kib", "64"),
        ("--database", db.as_str()),
    ];
    let mut a = vec!["serve".to_owned()];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            a.push(flag.to_owned());
            a.push(value.to_owned());
        }
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The `key=ADDR` field of a log line.
fn addr_field(line: &str, key: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Sotto {
    /// Starts `sotto serve` on a database in `dir` and returns once its
    /// chat and HTTP ports (and DTLS, unless disabled) are listening.
    pub async fn start(dir: &Path, extra: &[&str]) -> Sotto {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(args(dir, extra))
            .env_remove("SOTTO_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sotto");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Log::default()));
        let (mut chat, mut http, mut dtls) = (None, None, None);
        let dtls_off = extra.contains(&"--disable-dtls");
        tokio::time::timeout(START, async {
            while chat.is_none() || http.is_none() || (dtls.is_none() && !dtls_off) {
                let line = match lines.next_line().await {
                    Ok(Some(l)) => l,
                    _ => panic!(
                        "sotto exited before listening:\n{}",
                        log.lock().unwrap().text
                    ),
                };
                chat = chat.or_else(|| addr_field(&line, "chat_addr"));
                http = http.or_else(|| addr_field(&line, "http_addr"));
                if line.contains("DTLS 1.2 (PSK) listening") {
                    dtls = addr_field(&line, "addr");
                }
                keep(&log, &line);
            }
        })
        .await
        .expect("sotto listens in time");
        let drain = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&drain, &line);
            }
        });
        Sotto {
            child,
            chat: chat.expect("chat port"),
            http: http.expect("http port"),
            dtls,
            dir: dir.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("sotto.db")
    }

    pub fn chat_url(&self) -> String {
        format!("ws://{}/", self.chat)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    pub fn http_base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The child's resident memory, from /proc.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// One sample of a `/metrics` line (exact name with labels).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http_base()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Everything logged so far, and the byte count of all of it.
    pub fn log(&self) -> (String, usize) {
        let l = self.log.lock().unwrap();
        (l.text.clone(), l.bytes)
    }

    /// SIGTERM, then waits for the exit (killed after 10 s).
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        // Let the drain task read the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn keep(log: &Mutex<Log>, line: &str) {
    let mut l = log.lock().unwrap();
    l.bytes += line.len() + 1;
    if l.text.len() < LOG_KEEP {
        l.text.push_str(line);
        l.text.push('\n');
    }
}
