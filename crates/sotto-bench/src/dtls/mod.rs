//! `sotto dtls-bench`: load for a DTLS server (sotto's or `openssl
//! s_server`), measuring what issue 5 sets targets for — PSK handshakes/s
//! with many associations at once, acknowledged datagrams/s, server CPU
//! per cookieless ClientHello, and server RSS per established session.
//! Server CPU and RSS come from `/proc/PID` when `--server-pid` is given,
//! so run the server as a separate process.
//!
//! [`run_dtls_bench`] returns the figures so `sotto bench` can embed them.

mod probe;

use clap::Args;
use probe::{flood, usage};
use sotto_core::psk::PskKey;
use sotto_dtls::client::{self, Association};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct DtlsBenchArgs {
    /// The DTLS server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:12345")]
    pub server: SocketAddr,
    /// PID of the server process, for its CPU time and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Key in hex, shared by every identity (serve with --dtls-demo-psk,
    /// or provision bench-1… with this key).
    #[arg(long, default_value = "1a2b3c4d5e6f")]
    pub psk: String,
    /// Identities are PREFIX-1, PREFIX-2, ….
    #[arg(long, default_value = "bench")]
    pub identity_prefix: String,
    /// Associations established at once.
    #[arg(long, default_value_t = 1000)]
    pub associations: usize,
    /// Handshakes the client runs at once (default: all of them).
    #[arg(long)]
    pub connect_window: Option<usize>,
    /// Seconds allowed for one handshake (retransmissions included).
    #[arg(long, default_value_t = 20.0)]
    pub handshake_timeout: f64,
    /// Skip the first ping (for servers that do not reply, like s_server).
    #[arg(long)]
    pub no_ack: bool,
    /// Close each association right after its handshake (for servers that
    /// serve one association at a time, like s_server); implies no
    /// throughput phase.
    #[arg(long)]
    pub churn: bool,
    /// Seconds of closed-loop pinging over all associations (0 skips it).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Pings in flight per association during that phase.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Cookieless ClientHellos to send after the other phases (0 skips).
    #[arg(long, default_value_t = 0)]
    pub flood: usize,
    /// OpenSSL cipher list the client offers.
    #[arg(long, default_value = sotto_dtls::ossl::DEFAULT_CIPHERS)]
    pub ciphers: String,
}

#[derive(Debug, Clone, Default)]
pub struct DtlsBenchReport {
    pub associations: usize,
    pub established: usize,
    /// Associations that failed, by reason.
    pub failures: std::collections::BTreeMap<&'static str, usize>,
    pub acked_first: usize,
    /// First pings sent again because no ack came within a second.
    pub first_ping_resent: u64,
    pub all_established_in: Duration,
    pub all_acked_in: Duration,
    pub handshakes_per_sec: f64,
    pub handshake_p50: Duration,
    pub handshake_p99: Duration,
    pub server_cpu_per_handshake: Option<Duration>,
    pub rss_per_session_kib: Option<f64>,
    pub pings_sent: u64,
    pub acks: u64,
    pub acks_per_sec: f64,
    pub server_cpu_share: Option<f64>,
    pub flood_sent: usize,
    pub flood_answered: usize,
    pub server_cpu_per_hello: Option<Duration>,
    pub rss_change_after_flood_kib: Option<i64>,
}

pub async fn run(args: DtlsBenchArgs) -> anyhow::Result<()> {
    let report = run_dtls_bench(args).await?;
    print_report(&report);
    Ok(())
}

pub async fn run_dtls_bench(args: DtlsBenchArgs) -> anyhow::Result<DtlsBenchReport> {
    crate::dtls_client::check_secs("--duration", args.duration)?;
    crate::dtls_client::check_secs("--handshake-timeout", args.handshake_timeout)?;
    let key = PskKey::from_hex(&args.psk).map_err(anyhow::Error::msg)?;
    let mut report = DtlsBenchReport {
        associations: args.associations,
        ..Default::default()
    };
    let before = usage(args.server_pid);
    let assocs = establish(&args, key, &mut report).await?;
    let after = usage(args.server_pid);
    if args.server_pid.is_some() && !assocs.is_empty() {
        let n = assocs.len() as f64;
        report.rss_per_session_kib = Some((after.rss_kib as f64 - before.rss_kib as f64) / n);
    }
    if args.server_pid.is_some() && report.established > 0 {
        let n = report.established as f64;
        report.server_cpu_per_handshake = Some(after.cpu.saturating_sub(before.cpu).div_f64(n));
    }
    let assocs = if args.duration > 0.0 && !args.no_ack {
        throughput(&args, assocs, &mut report).await
    } else {
        assocs
    };
    for a in assocs {
        a.close().await;
    }
    if args.flood > 0 {
        flood(&args, &mut report).await?;
    }
    Ok(report)
}

/// Phase 1: every association handshakes at once, then pings once.
async fn establish(
    args: &DtlsBenchArgs,
    key: PskKey,
    report: &mut DtlsBenchReport,
) -> anyhow::Result<Vec<Association>> {
    let ctx = client::context(&args.ciphers)?;
    let window = Arc::new(Semaphore::new(
        args.connect_window.unwrap_or(args.associations).max(1),
    ));
    let timeout = Duration::from_secs_f64(args.handshake_timeout.max(0.1));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 1..=args.associations {
        let (ctx, key, window) = (ctx.clone(), key.clone(), window.clone());
        let identity = format!("{}-{i}", args.identity_prefix);
        let (server, no_ack, churn) = (args.server, args.no_ack, args.churn);
        tasks.spawn(async move {
            let permit = window.acquire_owned().await.map_err(|_| "window closed")?;
            let t0 = Instant::now();
            let mut a = Association::connect(&ctx, server, identity.as_bytes(), key, 1248, timeout)
                .await
                .map_err(|e| match e {
                    client::ClientError::HandshakeTimeout => "handshake timed out",
                    _ => "handshake failed",
                })?;
            let handshake = t0.elapsed();
            let established_at = started.elapsed();
            let acked = match no_ack {
                true => None,
                false => first_ack(&mut a, timeout)
                    .await
                    .map(|retries| (started.elapsed(), retries)),
            };
            if churn {
                a.close().await;
                drop(permit);
                return Ok((None, handshake, established_at, acked));
            }
            drop(permit);
            Ok((Some(a), handshake, established_at, acked))
        });
    }
    let mut assocs = Vec::new();
    let mut handshakes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (a, hs, est, acked) = match done? {
            Ok(r) => r,
            Err(why) => {
                *report.failures.entry(why).or_default() += 1;
                continue;
            }
        };
        report.established += 1;
        report.all_established_in = report.all_established_in.max(est);
        match acked {
            Some((t, retries)) => {
                report.acked_first += 1;
                report.first_ping_resent += retries;
                report.all_acked_in = report.all_acked_in.max(t);
            }
            None if !args.no_ack => {
                *report.failures.entry("first ping never acked").or_default() += 1
            }
            None => {}
        }
        handshakes.push(hs);
        assocs.extend(a);
    }
    handshakes.sort();
    report.handshake_p50 = percentile(&handshakes, 0.50);
    report.handshake_p99 = percentile(&handshakes, 0.99);
    let secs = report.all_established_in.as_secs_f64();
    if secs > 0.0 {
        report.handshakes_per_sec = report.established as f64 / secs;
    }
    Ok(assocs)
}

/// Sends the first ping until it is acknowledged, as a device on a lossy
/// link would: once a second, within `timeout`. Returns how many times it
/// had to be sent again, or `None` if no ack came.
async fn first_ack(a: &mut Association, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    let mut resent = 0;
    loop {
        a.send(b"ping 0").await.ok()?;
        let wait = client::until(deadline).min(Duration::from_secs(1));
        match tokio::time::timeout(wait, a.recv()).await {
            Ok(Ok(_)) => return Some(resent),
            Ok(Err(_)) => return None,
            Err(_) if Instant::now() >= deadline => return None,
            Err(_) => resent += 1,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Phase 2: each association keeps `window` pings in flight for
/// `duration`; a reply lets the next ping go.
async fn throughput(
    args: &DtlsBenchArgs,
    assocs: Vec<Association>,
    report: &mut DtlsBenchReport,
) -> Vec<Association> {
    let duration = Duration::from_secs_f64(args.duration);
    let before = usage(args.server_pid);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for mut a in assocs {
        let window = args.window.max(1);
        tasks.spawn(async move {
            let (mut sent, mut acked) = (0u64, 0u64);
            for _ in 0..window {
                if a.send(b"bench ping").await.is_ok() {
                    sent += 1;
                }
            }
            loop {
                let wait = client::until(deadline);
                match tokio::time::timeout(wait.min(Duration::from_secs(1)), a.recv()).await {
                    Ok(Ok(_)) => acked += 1,
                    Ok(Err(_)) => break,
                    Err(_) if Instant::now() >= deadline => break,
                    // A lost datagram: refill the window rather than stall.
                    Err(_) => {}
                }
                if Instant::now() >= deadline {
                    break;
                }
                if a.send(b"bench ping").await.is_ok() {
                    sent += 1;
                }
            }
            (a, sent, acked)
        });
    }
    let mut back = Vec::new();
    while let Some(Ok((a, sent, acked))) = tasks.join_next().await {
        report.pings_sent += sent;
        report.acks += acked;
        back.push(a);
    }
    let elapsed = started.elapsed().as_secs_f64();
    report.acks_per_sec = report.acks as f64 / elapsed;
    if args.server_pid.is_some() {
        let after = usage(args.server_pid);
        report.server_cpu_share =
            Some(after.cpu.saturating_sub(before.cpu).as_secs_f64() / elapsed);
    }
    back
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} µs", d.as_secs_f64() * 1e6))
}

/// A markdown table of the phases that ran.
fn print_report(r: &DtlsBenchReport) {
    println!("| measure | value |");
    println!("| --- | --- |");
    if r.associations > 0 {
        print_handshakes(r);
    }
    if r.pings_sent > 0 {
        print_throughput(r);
    }
    if r.flood_sent > 0 {
        print_flood(r);
    }
}

fn print_handshakes(r: &DtlsBenchReport) {
    println!(
        "| associations established | {} of {} |",
        r.established, r.associations
    );
    println!("| all established in | {} |", ms(r.all_established_in));
    for (why, n) in &r.failures {
        println!("| failed: {why} | {n} |");
    }
    if r.acked_first > 0 {
        println!(
            "| first pings resent after 1 s without an ack | {} |",
            r.first_ping_resent
        );
        println!(
            "| first pings acked | {} (all in {}) |",
            r.acked_first,
            ms(r.all_acked_in)
        );
    }
    println!("| PSK handshakes/s | {:.0} |", r.handshakes_per_sec);
    println!(
        "| handshake latency p50 / p99 | {} / {} |",
        ms(r.handshake_p50),
        ms(r.handshake_p99)
    );
    println!(
        "| server CPU per handshake | {} |",
        us(r.server_cpu_per_handshake)
    );
    if let Some(k) = r.rss_per_session_kib {
        println!("| server RSS per established session | {k:.1} KiB |");
    }
}

fn print_throughput(r: &DtlsBenchReport) {
    println!("| pings sent / acked | {} / {} |", r.pings_sent, r.acks);
    println!("| acknowledged datagrams/s | {:.0} |", r.acks_per_sec);
    if let Some(s) = r.server_cpu_share {
        println!("| server CPU during that | {:.0} % of a core |", s * 100.0);
    }
}

fn print_flood(r: &DtlsBenchReport) {
    println!(
        "| cookieless ClientHellos sent / answered | {} / {} |",
        r.flood_sent, r.flood_answered
    );
    println!(
        "| server CPU per cookieless ClientHello | {} |",
        us(r.server_cpu_per_hello)
    );
    if let Some(k) = r.rss_change_after_flood_kib {
        println!("| server RSS change after the flood | {k} KiB |");
    }
}
