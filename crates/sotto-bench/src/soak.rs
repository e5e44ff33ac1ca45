//! `sotto bench soak`: mixed traffic, logins, reconnects and abuse for a
//! long time, sampling the server's memory and file descriptors as it
//! goes. A server that leaks a socket per abusive client, or a buffer per
//! reconnect, passes every short test and fails in production: this is the
//! run that shows RSS and descriptors staying flat.
//!
//! Three things run at once for `--duration` seconds:
//! - **traffic**: `--users` users exchange messages at `--rate`;
//! - **churn**: every second, `--churn` other users come online (Authorize
//!   with cached tokens), stay a moment and drop their sockets;
//! - **abuse**: every second, one of each: malformed frames, an oversized
//!   frame, a bad token, a wrong password for an unknown name, a socket
//!   that never logs in, and a path-traversal request on the HTTP port.

use super::client::{self, Buffers, Ws};
use super::load::{self, Clock, LoadSpec};
use super::probe::Pid;
use super::report;
use super::setup::{Kind, Pool, PoolArgs};
use super::target::{Target, TargetArgs};
use anyhow::bail;
use clap::Args;
use futures_util::SinkExt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Seconds to run (at most 86,400).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Users exchanging messages the whole time.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Messages per second over all of them.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Users that come online and drop again every second.
    #[arg(long, default_value_t = 10)]
    pub churn: usize,
    /// Seconds between samples of the server's RSS and descriptors.
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
}

/// One reading of the server.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_secs: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    delivered: u64,
}

/// Counts of what the churn and abuse tasks did.
#[derive(Debug, Default)]
struct Activity {
    churn_cycles: AtomicU64,
    churn_failures: AtomicU64,
    abuse_rounds: AtomicU64,
    /// Abuse that the server answered in a way it should not have (a bad
    /// token accepted, a traversal served).
    abuse_accepted: AtomicU64,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<String> {
    if !(1.0..=86_400.0).contains(&args.duration) || args.users < 2 {
        bail!("soak needs --duration between 1 and 86400 s and --users ≥ 2");
    }
    let rate_ok = args.rate > 0.0 && args.rate.is_finite();
    if !(rate_ok && (1.0..=3600.0).contains(&args.interval)) {
        bail!("soak needs a positive --rate and --interval between 1 and 3600 s");
    }
    let target = Target::open(&args.target).await?;
    let result = soak(&args, &target).await;
    target.stop().await;
    result
}

async fn soak(args: &SoakArgs, target: &Target) -> anyhow::Result<String> {
    let header = report::header("soak", target, &args.target);
    let pool = Arc::new(Pool::new(&args.target, &args.pool));
    pool.ensure_registered(
        std::slice::from_ref(target),
        Kind::Storm,
        0..args.churn.max(1),
    )
    .await?;
    let (online, setup) = pool
        .bring_online(target, Kind::Chat, 0..args.users, Buffers::Large)
        .await?;
    eprintln!("sotto bench: soak users: {setup}");
    let duration = Duration::from_secs_f64(args.duration);
    let spec = LoadSpec {
        senders: args.users,
        rate: args.rate,
        duration,
        payload: 64,
        window: 0,
        max_messages: (args.rate * args.duration * 1.2) as u64 + 1000,
    };
    let clock = Clock::new();
    let mut running = load::start(online, &spec, clock)?;
    let stop = CancellationToken::new();
    let activity = Arc::new(Activity::default());
    // The traversal probe goes to --http-port (the spawned server's, or
    // the given server's when it is stated); 0 skips it.
    let http = (args.target.http_port != 0).then_some(args.target.http_port);
    let churn = tokio::spawn(churn(
        target.clone_for_tasks(),
        pool.clone(),
        args.churn,
        stop.clone(),
        activity.clone(),
    ));
    let abuse = tokio::spawn(abuse(
        target.clone_for_tasks(),
        http,
        stop.clone(),
        activity.clone(),
    ));
    let readings = sample(target, &running, duration, args.interval, clock).await;
    stop.cancel();
    let _ = churn.await;
    let _ = abuse.await;
    running.drain(Duration::from_secs(5)).await;
    let load = running.close().await;
    Ok(render(header, args, &readings, &load, &activity))
}

/// Samples the server every `interval` until `duration` has passed.
async fn sample(
    target: &Target,
    running: &load::Running,
    duration: Duration,
    interval: f64,
    clock: Clock,
) -> Vec<Reading> {
    let mut readings = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(interval));
    let end = tokio::time::Instant::now() + duration;
    loop {
        tick.tick().await;
        if let Some(s) = target.sample() {
            readings.push(Reading {
                at_secs: clock.now_ns() as f64 / 1e9,
                rss_kib: s.rss_kib,
                fds: target.pid.map_or(0, open_fds),
                threads: s.threads,
                delivered: running.delivered(),
            });
        }
        if tokio::time::Instant::now() >= end {
            return readings;
        }
    }
}

fn open_fds(pid: Pid) -> u64 {
    let dir = match pid {
        Pid::Own => "/proc/self/fd".to_owned(),
        Pid::Other(p) => format!("/proc/{p}/fd"),
    };
    std::fs::read_dir(dir).map_or(0, |d| d.count() as u64)
}

/// Every second, `count` churn users come online, wait a little and drop.
async fn churn(
    target: Arc<TargetAddr>,
    pool: Arc<Pool>,
    count: usize,
    stop: CancellationToken,
    activity: Arc<Activity>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !stop.is_cancelled() {
        tick.tick().await;
        let t = target.as_target();
        match pool
            .bring_online(&t, Kind::Storm, 0..count, Buffers::Small)
            .await
        {
            Ok((online, _)) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(online);
                activity.churn_cycles.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                activity.churn_failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("sotto bench: churn failed: {e:#}");
            }
        }
    }
}

/// What the abuse tasks need of the target: addresses only.
struct TargetAddr {
    url: String,
    addr: std::net::SocketAddr,
}

impl Target {
    fn clone_for_tasks(&self) -> Arc<TargetAddr> {
        Arc::new(TargetAddr {
            url: self.url.clone(),
            addr: self.addr,
        })
    }
}

impl TargetAddr {
    /// A target without a process, for the pool's connection helpers.
    fn as_target(&self) -> Target {
        Target::at(self.url.clone(), self.addr)
    }
}

/// Every second, one round of hostile clients. Each is bounded: the
/// server closes them, or they are dropped after a few seconds.
async fn abuse(
    target: Arc<TargetAddr>,
    http_port: Option<u16>,
    stop: CancellationToken,
    activity: Arc<Activity>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut round = 0u64;
    while !stop.is_cancelled() {
        tick.tick().await;
        round += 1;
        let (t, a) = (target.clone(), activity.clone());
        tokio::spawn(async move {
            let accepted = abuse_round(&t, http_port, round).await;
            a.abuse_rounds.fetch_add(1, Ordering::Relaxed);
            a.abuse_accepted.fetch_add(accepted, Ordering::Relaxed);
        });
    }
}

/// One round; returns how many hostile requests were wrongly accepted.
async fn abuse_round(t: &TargetAddr, http_port: Option<u16>, round: u64) -> u64 {
    let mut accepted = 0;
    let limit = Duration::from_secs(15);
    if let Ok(Ok(mut ws)) = tokio::time::timeout(limit, connect(t)).await {
        let junk = [
            Message::text("not json"),
            Message::binary(vec![0u8; 64]),
            Message::text(r#"{"action": 99}"#),
            Message::text("x".repeat(70_000)),
        ];
        for m in junk {
            let _ = ws.send(m).await;
        }
    }
    if let Ok(Ok(mut ws)) = tokio::time::timeout(limit, connect(t)).await {
        let bogus = format!("{:064x}", round);
        if let Ok(Ok(true)) =
            tokio::time::timeout(limit, client::authorize(&mut ws, "abuser", &bogus)).await
        {
            accepted += 1;
        }
    }
    if let Ok(Ok(mut ws)) = tokio::time::timeout(limit, connect(t)).await {
        let name = format!("nobody-{round}");
        let answer = tokio::time::timeout(limit, client::login(&mut ws, 0, &name, "wrong")).await;
        if let Ok(Ok(client::LoginAnswer::LoggedIn { .. })) = answer {
            accepted += 1;
        }
    }
    // A socket that never logs in: the server's login deadline ends it.
    if let Ok(Ok(ws)) = tokio::time::timeout(limit, connect(t)).await {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(ws);
        });
    }
    if let Some(port) = http_port {
        accepted += traversal(t.addr.ip(), port).await;
    }
    accepted
}

async fn connect(t: &TargetAddr) -> anyhow::Result<Ws> {
    client::connect(t.addr, &t.url, Buffers::Small).await
}

/// 1 if the HTTP port served a file outside its folder.
async fn traversal(ip: std::net::IpAddr, port: u16) -> u64 {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    else {
        return 0;
    };
    let req = "GET /..%2fsotto.db HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 200") => 1,
        _ => 0,
    }
}

fn render(
    header: String,
    args: &SoakArgs,
    readings: &[Reading],
    load: &load::LoadResult,
    activity: &Activity,
) -> String {
    let mut s = header;
    let _ = writeln!(
        s,
        "soak: {} users at {} msg/s, {} churning per second, {:.0} s",
        args.users, args.rate, args.churn, args.duration
    );
    let _ = writeln!(
        s,
        "\n| t (s) | server RSS | open fds | threads | delivered |"
    );
    let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: |");
    for r in readings {
        let _ = writeln!(
            s,
            "| {:.0} | {} | {} | {} | {} |",
            r.at_secs,
            report::mib(r.rss_kib),
            r.fds,
            r.threads,
            r.delivered
        );
    }
    if let (Some(first), Some(last)) = (settled(readings), readings.last()) {
        let max = readings.iter().map(|r| r.rss_kib).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "\nRSS after warm-up {} → end {} (max {}); fds {} → {}",
            report::mib(first.rss_kib),
            report::mib(last.rss_kib),
            report::mib(max),
            first.fds,
            last.fds
        );
    }
    let _ = writeln!(
        s,
        "messages: {} sent, {} delivered, {} lost, {} duplicates, {} refused ({:?}), {} connections dropped ({:?})",
        load.sent,
        load.delivered,
        load.lost(),
        load.duplicates,
        load.refused,
        load.first_refusal,
        load.dropped_connections,
        load.first_drop
    );
    let _ = writeln!(
        s,
        "churn: {} cycles, {} failed; abuse: {} rounds, {} hostile requests accepted",
        activity.churn_cycles.load(Ordering::Relaxed),
        activity.churn_failures.load(Ordering::Relaxed),
        activity.abuse_rounds.load(Ordering::Relaxed),
        activity.abuse_accepted.load(Ordering::Relaxed)
    );
    s
}

/// The first reading after a tenth of the run: start-up allocations and
/// the first presence storms are not a leak.
fn settled(readings: &[Reading]) -> Option<&Reading> {
    let end = readings.last()?.at_secs;
    readings.iter().find(|r| r.at_secs >= end / 10.0)
}
