//! `sotto bench messages`: N users online, S of them sending direct
//! messages at a rate or flat out. Reports delivered messages/s, loss,
//! latency percentiles, the server's CPU per delivered message and its
//! RSS per connection.

use super::client::Buffers;
use super::load::{self, Clock, LoadResult, LoadSpec};
use super::probe::CpuUse;
use super::report::{self, Meter, Metered};
use super::setup::{Kind, Pool, PoolArgs, SetupReport};
use super::stats::Latency;
use super::target::{Target, TargetArgs};
use anyhow::bail;
use clap::{Args, ValueEnum};
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct MessagesArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Users online (at least 2).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Users that send [default: all of them].
    #[arg(long)]
    pub senders: Option<usize>,
    /// Messages per second over all senders; 0 sends flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds of sending (at most 3600).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Message body size in bytes (bodies are padded up to it).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Flat out: messages each sender may have in flight (sent, not yet
    /// received; native: not yet acked); 0 for none, which measures
    /// overload, not throughput.
    #[arg(long, default_value_t = 8)]
    pub window: u64,
    /// Messages sent at most in the whole run.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_messages: u64,
    /// Seconds to wait for messages in flight once sending stops.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Seconds between setup and sending, for user-list broadcasts to settle.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Seconds at the start whose messages count for loss but not for the
    /// latency percentiles: the first second carries one-off costs (1,000
    /// tasks starting, buffers growing on both sides).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Also print latency per second of sending, to show when a tail happened (compat only).
    #[arg(long)]
    pub timeline: bool,
    /// Which protocol the users speak: compat (the chat port) or native
    /// (account API and /ws on the HTTP port; --window then counts sends
    /// awaiting their ack).
    #[arg(long, value_enum, default_value_t = Protocol::Compat)]
    pub protocol: Protocol,
    /// Native: confirm a received position at most this many milliseconds after it came...
    #[arg(long, default_value_t = 5.0)]
    pub confirm_ms: f64,
    /// Native: ...or after this many positioned frames, whichever comes first.
    #[arg(long, default_value_t = 64)]
    pub confirm_frames: u64,
    /// Native: times a send refused with rate_limited or queue_full is retried.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
}

/// The protocol of a `messages` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// QMessageServer's, on the chat port.
    Compat,
    /// sotto's own: HTTP account API, then /ws on the HTTP port.
    Native,
}

/// Server CPU and memory over the sending window.
#[derive(Debug, Clone, Copy)]
pub struct ServerUse {
    pub cpu: CpuUse,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub threads: u64,
}

pub struct MessagesReport {
    header: String,
    /// Latency of the messages sent in each second, when asked for.
    timeline: Vec<Latency>,
    machine: String,
    pub window: u64,
    pub users: usize,
    pub senders: usize,
    pub rate: f64,
    pub setup: SetupReport,
    pub load: LoadResult,
    /// Latency of messages sent after the warm-up.
    pub latency: Latency,
    /// Latency of every message.
    pub latency_all: Latency,
    pub warmup: Duration,
    pub server: Option<ServerUse>,
    pub client_cpu: CpuUse,
}

impl MessagesReport {
    /// Server CPU per delivered message, the 5 µs target's figure.
    pub(crate) fn cpu_per_message(&self) -> Option<Duration> {
        let s = self.server?;
        (self.load.delivered > 0).then(|| s.cpu.total() / self.load.delivered as u32)
    }
}

/// Runs a compat load; a native one is [`crate::native::run`].
pub async fn run(args: MessagesArgs) -> anyhow::Result<MessagesReport> {
    if args.protocol != Protocol::Compat {
        bail!("traffic::run runs the compat protocol only; use native::run");
    }
    validate(&args)?;
    let target = Target::open(&args.target).await?;
    let result = measure(&args, &target).await;
    target.stop().await;
    result
}

pub(crate) fn validate(args: &MessagesArgs) -> anyhow::Result<()> {
    if args.users < 2 {
        bail!("--users must be at least 2");
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds");
    }
    let rate_ok = args.rate >= 0.0 && args.rate.is_finite();
    if !rate_ok || !(0.0..=600.0).contains(&args.drain) {
        bail!("--rate must be 0 or more and --drain at most 600 seconds");
    }
    Ok(())
}

async fn measure(args: &MessagesArgs, target: &Target) -> anyhow::Result<MessagesReport> {
    let header = report::header("messages", target, &args.target);
    // Before setup: connections set up and then left unread for long
    // would miss the server's heartbeat and be dropped.
    args.target.wait_quiet().await;
    let pool = Pool::new(&args.target, &args.pool);
    let (online, setup) = pool
        .bring_online(target, Kind::Chat, 0..args.users, Buffers::Large)
        .await?;
    eprintln!("sotto bench: setup: {setup}");
    tokio::time::sleep(Duration::from_secs_f64(args.settle.clamp(0.0, 60.0))).await;
    let spec = spec(args);
    let meter = Meter::start(target)?;
    let mut running = load::start(online, &spec, Clock::new())?;
    tokio::time::sleep(spec.duration).await;
    running.drain(Duration::from_secs_f64(args.drain)).await;
    // Read before closing: the wave of disconnects is not message work.
    let metered = meter.stop(target)?;
    let load = running.close().await;
    Ok(summarize(args, header, setup, load, metered))
}

pub(crate) fn spec(args: &MessagesArgs) -> LoadSpec {
    LoadSpec {
        senders: args.senders.unwrap_or(args.users),
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        payload: args.payload,
        window: args.window,
        max_messages: args.max_messages,
    }
}

fn summarize(
    args: &MessagesArgs,
    header: String,
    setup: SetupReport,
    load: LoadResult,
    metered: Metered,
) -> MessagesReport {
    let server = metered.server.map(|(b, a)| ServerUse {
        cpu: a.cpu_since(&b),
        rss_before_kib: b.rss_kib,
        rss_after_kib: a.rss_kib,
        threads: a.threads,
    });
    let warmup = Duration::from_secs_f64(args.warmup.clamp(0.0, args.duration));
    let warm = load.started_ns + u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX);
    let timeline = if args.timeline {
        per_second(&load)
    } else {
        Vec::new()
    };
    MessagesReport {
        header,
        timeline,
        machine: metered.machine,
        window: args.window,
        users: args.users,
        senders: args.senders.unwrap_or(args.users).clamp(1, args.users),
        rate: args.rate,
        latency: Latency::of(&load.samples, |s| s.sent_ns >= warm),
        latency_all: Latency::of(&load.samples, |_| true),
        warmup,
        setup,
        load,
        server,
        client_cpu: metered.bench_cpu,
    }
}

/// Latency of the messages sent in each second of the run.
fn per_second(load: &LoadResult) -> Vec<Latency> {
    let span = load.sending_ended_ns.saturating_sub(load.started_ns);
    let seconds = span.div_ceil(1_000_000_000);
    (0..seconds)
        .map(|i| {
            let from = load.started_ns + i * 1_000_000_000;
            let to = from + 1_000_000_000;
            Latency::of(&load.samples, |s| s.sent_ns >= from && s.sent_ns < to)
        })
        .collect()
}

impl fmt::Display for MessagesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.load;
        let rate = match (self.rate > 0.0, self.window) {
            (true, _) => format!("{} msg/s in all", self.rate),
            (false, 0) => "flat out, no window (open loop: measures overload)".to_owned(),
            (false, w) => format!("flat out, at most {w} in flight per sender"),
        };
        write!(f, "{}", self.header)?;
        writeln!(f, "setup: {}", self.setup)?;
        writeln!(
            f,
            "load: {} users online, {} sending, {rate}",
            self.users, self.senders
        )?;
        writeln!(f, "sent: {} ({:.0} msg/s)", l.sent, l.sent_per_sec())?;
        writeln!(
            f,
            "delivered: {} ({:.0} msg/s)",
            l.delivered,
            l.delivered_per_sec()
        )?;
        writeln!(
            f,
            "lost: {} · duplicates: {} · corrupt: {} · refused: {} · dropped connections: {}",
            l.lost(),
            l.duplicates,
            l.corrupt,
            l.refused,
            l.dropped_connections
        )?;
        if let Some(e) = l.first_refusal.as_ref().or(l.first_drop.as_ref()) {
            writeln!(f, "first problem: {e}")?;
        }
        crate::report::run_notes(f, l.stale, l.capped_senders)?;
        writeln!(
            f,
            "latency after {:.0} s warm-up: {}",
            self.warmup.as_secs_f64(),
            self.latency
        )?;
        writeln!(f, "latency of all messages: {}", self.latency_all)?;
        for (second, l) in self.timeline.iter().enumerate() {
            writeln!(f, "  second {second}: {l}")?;
        }
        if self.rate > 0.0 {
            writeln!(f, "send lag behind schedule: {}", l.send_lag)?;
        }
        self.fmt_server(f)?;
        writeln!(f, "bench process CPU: {}", report::cpu(&self.client_cpu))?;
        writeln!(f, "machine CPU while measuring: {}", self.machine)
    }
}

impl MessagesReport {
    fn fmt_server(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(s) = self.server else {
            return writeln!(f, "server CPU/RSS: unknown (no PID)");
        };
        writeln!(f, "server CPU: {}", report::cpu(&s.cpu))?;
        if let Some(per) = self.cpu_per_message() {
            writeln!(
                f,
                "server CPU per delivered message: {:.2} µs",
                per.as_secs_f64() * 1e6
            )?;
        }
        writeln!(
            f,
            "server RSS: {} before, {} after, {:.1} KiB per connection (total RSS / users), {} threads",
            report::mib(s.rss_before_kib),
            report::mib(s.rss_after_kib),
            s.rss_after_kib as f64 / self.users as f64,
            s.threads
        )?;
        Ok(())
    }
}
