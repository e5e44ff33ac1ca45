//! `sotto bench idle`: many open connections doing nothing, and what each
//! costs the server in memory. Authenticated connections (the default) hold
//! a session and receive user-list broadcasts; `--anonymous` ones only
//! completed the WebSocket upgrade.

use super::client::{self, Buffers, Ws};
use super::probe::{self, Pid};
use super::report;
use super::setup::{Kind, Pool, PoolArgs, SetupReport};
use super::target::{Target, TargetArgs};
use anyhow::bail;
use clap::Args;
use futures_util::StreamExt;
use std::fmt;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Connections to open (the bench holds them all: keep well under `ulimit -n`).
    #[arg(long, default_value_t = 19_000)]
    pub connections: usize,
    /// Only upgrade to WebSocket; do not authenticate.
    #[arg(long)]
    pub anonymous: bool,
    /// Seconds to let the server settle (user-list broadcasts) before reading its RSS.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Client processes holding the connections between them (this binary
    /// run again): one process holds at most ~19,800 sockets here (its file
    /// limit), so 100,000 connections need six.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=60))]
    pub clients: u16,
    /// Source addresses each client process opens its connections from, in
    /// turn: 127.0.0.2 onwards, a block of its own per process. One address
    /// has ~28,000 ephemeral ports. 0: the kernel's choice (127.0.0.1).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=60))]
    pub source_addrs: u8,
    /// Internal: this process is one client of a --clients run; it opens
    /// users --first-user.. (--connections of them), says so on stdout,
    /// and holds them until told to stop.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal: the first user index of a --worker.
    #[arg(long, hide = true, default_value_t = 0)]
    pub first_user: usize,
    /// Internal: the last byte of a --worker's first source address.
    #[arg(long, hide = true, default_value_t = 2)]
    pub source_first: u8,
    /// Internal: the token cache of a --worker (its cluster's database's).
    #[arg(long, hide = true)]
    pub token_cache: Option<std::path::PathBuf>,
}

impl IdleArgs {
    /// The source addresses this process opens connections from.
    pub(crate) fn sources(&self) -> Vec<std::net::IpAddr> {
        (0..self.source_addrs)
            .map(|i| std::net::Ipv4Addr::new(127, 0, 0, self.source_first.saturating_add(i)).into())
            .collect()
    }
}

/// The bench's own descriptors besides connections: stdio, the runtime's
/// epoll and eventfds, files it reads. Connections must leave this free.
const FD_RESERVE: usize = 200;

pub struct IdleReport {
    header: String,
    pub connections: usize,
    pub anonymous: bool,
    pub setup: Option<SetupReport>,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub server_threads: Option<u64>,
    pub client_rss_before_kib: u64,
    pub client_rss_after_kib: u64,
    /// Connections the server had closed by the time RSS was read.
    pub dropped: usize,
    /// Frames each connection received while settling, and the largest.
    pub frames: u64,
    pub largest_frame: usize,
}

impl IdleReport {
    /// Server RSS growth per connection, KiB.
    pub(crate) fn kib_per_connection(&self) -> Option<f64> {
        let (b, a) = (self.rss_before_kib?, self.rss_after_kib?);
        Some(a.saturating_sub(b) as f64 / self.connections.max(1) as f64)
    }
}

pub async fn run(args: IdleArgs) -> anyhow::Result<IdleReport> {
    check_fd_room(args.connections)?;
    let target = Target::open(&args.target).await?;
    let result = measure(&args, &target).await;
    target.stop().await;
    result
}

/// Refuses a run that would exhaust the bench's own descriptors, which
/// would make the server look at fault.
pub(crate) fn check_fd_room(connections: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(limit) if connections + FD_RESERVE > limit => bail!(
            "{connections} connections need more than this process's {limit} file descriptors \
             (keep {FD_RESERVE} spare); spread them over processes with --clients"
        ),
        _ => Ok(()),
    }
}

async fn measure(args: &IdleArgs, target: &Target) -> anyhow::Result<IdleReport> {
    let header = report::header(
        if args.anonymous {
            "idle --anonymous"
        } else {
            "idle"
        },
        target,
        &args.target,
    );
    // A fresh server's memory moves for a moment after start-up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.sample();
    let client_before = probe::sample(Pid::Own)?;
    let (conns, setup) = open(args, target).await?;
    if let Some(s) = &setup {
        eprintln!("sotto bench: setup: {s}");
        if s.hashed() > 0 {
            eprintln!(
                "sotto bench: warning: {} users needed an Argon2 login during this run; its \
                 buffers may count in the RSS figure. Run again for a clean one.",
                s.hashed()
            );
        }
    }
    let stop = CancellationToken::new();
    let readers: Vec<JoinHandle<Drained>> = conns
        .into_iter()
        .map(|ws| tokio::spawn(drain_frames(ws, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.settle.clamp(0.0, 600.0))).await;
    let after = target.sample();
    let client_after = probe::sample(Pid::Own)?;
    let dropped = readers.iter().filter(|r| r.is_finished()).count();
    stop.cancel();
    let (mut frames, mut largest_frame) = (0, 0);
    for r in readers {
        if let Ok(d) = r.await {
            frames += d.frames;
            largest_frame = largest_frame.max(d.largest);
        }
    }
    Ok(IdleReport {
        header,
        connections: args.connections,
        anonymous: args.anonymous,
        setup,
        rss_before_kib: before.map(|s| s.rss_kib),
        rss_after_kib: after.map(|s| s.rss_kib),
        server_threads: after.map(|s| s.threads),
        client_rss_before_kib: client_before.rss_kib,
        client_rss_after_kib: client_after.rss_kib,
        dropped,
        frames,
        largest_frame,
    })
}

async fn open(args: &IdleArgs, target: &Target) -> anyhow::Result<(Vec<Ws>, Option<SetupReport>)> {
    if !args.anonymous {
        let pool = Pool::new(&args.target, &args.pool).with_sources(args.sources());
        let (online, setup) = pool
            .bring_online(target, Kind::Chat, 0..args.connections, Buffers::Small)
            .await?;
        return Ok((online.into_iter().map(|o| o.ws).collect(), Some(setup)));
    }
    let concurrency = args.pool.setup_concurrency.max(1);
    let conns: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..args.connections)
        .map(|_| client::connect(target.addr, &target.url, Buffers::Small))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let conns = conns.into_iter().collect::<anyhow::Result<Vec<Ws>>>()?;
    Ok((conns, None))
}

pub(crate) struct Drained {
    pub frames: u64,
    pub largest: usize,
}

/// Reads and discards what the server sends (user lists, pings, whose
/// answers tungstenite queues while reading), so connections stay healthy.
pub(crate) async fn drain_frames(mut ws: Ws, stop: CancellationToken) -> Drained {
    let mut d = Drained {
        frames: 0,
        largest: 0,
    };
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = ws.next() => n,
        };
        match next {
            Some(Ok(Message::Text(t))) => {
                d.frames += 1;
                d.largest = d.largest.max(t.len());
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    d
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.header)?;
        if let Some(s) = &self.setup {
            writeln!(f, "setup: {s}")?;
        }
        let kind = if self.anonymous {
            "anonymous (upgraded, no login)"
        } else {
            "authenticated"
        };
        writeln!(
            f,
            "connections: {} {kind}; {} closed by the server",
            self.connections, self.dropped
        )?;
        writeln!(
            f,
            "frames received while settling: {} (largest {} bytes)",
            self.frames, self.largest_frame
        )?;
        match (
            self.rss_before_kib,
            self.rss_after_kib,
            self.kib_per_connection(),
        ) {
            (Some(b), Some(a), Some(per)) => writeln!(
                f,
                "server RSS: {} before, {} after: {per:.1} KiB per connection; {} threads",
                report::mib(b),
                report::mib(a),
                self.server_threads.unwrap_or(0)
            )?,
            _ => writeln!(f, "server RSS: unknown (no PID)")?,
        }
        writeln!(
            f,
            "bench RSS: {} before, {} after",
            report::mib(self.client_rss_before_kib),
            report::mib(self.client_rss_after_kib)
        )
    }
}
