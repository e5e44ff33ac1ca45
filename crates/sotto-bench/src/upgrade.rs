//! `sotto bench upgrades`: what a `/ws` upgrade costs the server, refused
//! (a bad bearer token: the 401 path the zombie-connection argument rests
//! on) or accepted (a valid token: the 101, the connection's tasks, the
//! `users` snapshot, then the client hangs up).
//!
//! Each worker opens a fresh TCP connection per attempt and speaks raw
//! HTTP/1.1, so the client side is cheap and every attempt pays the full
//! price a flood would: accept, parse, check, answer, close.

use super::native::post;
use super::probe::{self, Pid};
use super::report;
use super::stats::Latency;
use super::target::{Target, TargetArgs};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Outcome {
    /// Bad bearer token: every attempt must get a 401.
    Refused,
    /// Valid token: every attempt must get a 101 and the first frame.
    Accepted,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Which path to measure.
    #[arg(long, value_enum, default_value_t = Outcome::Refused)]
    pub outcome: Outcome,
    /// Attempts in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// Most attempts one run makes, whatever the duration.
const MAX_ATTEMPTS: u64 = 2_000_000;

pub async fn run(args: UpgradeArgs) -> anyhow::Result<String> {
    let target = Target::open(&args.target).await?;
    let result = measure(&args, &target).await;
    target.stop().await;
    result
}

async fn measure(args: &UpgradeArgs, target: &Target) -> anyhow::Result<String> {
    let http = SocketAddr::new(target.addr.ip(), args.target.http_port);
    let token = match args.outcome {
        Outcome::Refused => "0".repeat(64),
        Outcome::Accepted => login(http).await?,
    };
    let request = Arc::new(upgrade_request(http, &token));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.sample();
    let bench_before = probe::sample(Pid::Own)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds.max(1));
    let count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (request, count, failed) = (request.clone(), count.clone(), failed.clone());
        let expect = args.outcome;
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline && count.fetch_add(1, Ordering::Relaxed) < MAX_ATTEMPTS
            {
                let t = Instant::now();
                match attempt(http, &request, expect).await {
                    Ok(()) => lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)),
                    Err(e) => {
                        eprintln!("sotto bench: attempt failed: {e:#}");
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.context("worker panicked")?);
    }
    let elapsed = started.elapsed();
    let after = target.sample();
    let bench_cpu = probe::sample(Pid::Own)?.cpu_since(&bench_before);
    if failed.load(Ordering::Relaxed) {
        bail!("some attempts did not get the expected answer; see above");
    }
    let n = latencies.len() as f64;
    let mut out = report::header(
        &format!("upgrades --outcome {:?}", args.outcome).to_lowercase(),
        target,
        &args.target,
    );
    let _ = writeln!(
        out,
        "attempts: {} in {:.1} s = {:.0}/s (concurrency {})",
        latencies.len(),
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64(),
        args.concurrency
    );
    let _ = writeln!(out, "latency: {}", Latency::of_values(latencies));
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = a.cpu_since(&b);
        let _ = writeln!(
            out,
            "server CPU: {} = {:.1} µs per attempt",
            report::cpu(&cpu),
            cpu.total().as_secs_f64() * 1e6 / n.max(1.0)
        );
        let _ = writeln!(
            out,
            "server RSS: {} before, {} after",
            report::mib(b.rss_kib),
            report::mib(a.rss_kib)
        );
    }
    let _ = writeln!(out, "bench CPU: {}", report::cpu(&bench_cpu));
    Ok(out)
}

fn upgrade_request(http: SocketAddr, token: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {http}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

/// One attempt on a fresh connection; checks the answer.
async fn attempt(http: SocketAddr, request: &str, expect: Outcome) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(http).await.context("connect")?;
    s.set_nodelay(true)?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let head_end = loop {
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            bail!("connection closed before a full response");
        }
        got += n;
        if let Some(p) = buf[..got].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if got == buf.len() {
            bail!("response head too long");
        }
    };
    let status = std::str::from_utf8(&buf[..head_end.min(12)]).unwrap_or("");
    match expect {
        Outcome::Refused if status.starts_with("HTTP/1.1 401") => {
            // The server closes: read to the end so the close is measured.
            while s.read(&mut buf).await? > 0 {}
            Ok(())
        }
        Outcome::Accepted if status.starts_with("HTTP/1.1 101") => {
            if got == head_end && s.read(&mut buf).await? == 0 {
                bail!("closed before the first frame");
            }
            Ok(())
        }
        _ => bail!("unexpected answer: {status:?}"),
    }
}

/// Registers (once) and logs in a bench user over the HTTP API.
async fn login(http: SocketAddr) -> anyhow::Result<String> {
    let body = r#"{"name":"upgrade-bench","password":"upgrade-bench-password"}"#;
    let _ = post(http, "/api/register", body).await?;
    let (_, reply) = post(http, "/api/login", body).await?;
    let json: serde_json::Value =
        serde_json::from_str(&reply).context("login reply is not JSON")?;
    json["token"]
        .as_str()
        .map(str::to_owned)
        .context("login failed")
}
