//! The parts of `sotto dtls-bench` that look at the server from outside:
//! its CPU time and RSS from `/proc`, and the flood of cookieless
//! ClientHellos whose answers are counted.

use super::{DtlsBenchArgs, DtlsBenchReport};
use sotto_core::psk::PskKey;
use sotto_dtls::ossl::{self, Conn};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Server resource use at one moment (zero without a PID).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub cpu: Duration,
    pub rss_kib: u64,
}

/// Phase 3: cookieless ClientHellos from a few sockets, each keeping a
/// bounded number unanswered so the server, not the kernel's buffer, sees
/// them. Every one the server processes earns a HelloVerifyRequest, which
/// is what is counted.
pub async fn flood(args: &DtlsBenchArgs, report: &mut DtlsBenchReport) -> anyhow::Result<()> {
    const SOCKETS: usize = 8;
    const IN_FLIGHT: usize = 256;
    let ctx = ossl::client(&args.ciphers)?;
    let mut conn = Conn::client(
        &ctx,
        1248,
        b"flood",
        PskKey::from_hex("00").map_err(anyhow::Error::msg)?,
    )?;
    let _ = conn.handshake();
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    let hello = Arc::new(out.pop().ok_or_else(|| anyhow::anyhow!("no ClientHello"))?);
    let before = usage(args.server_pid);
    let per_socket = args.flood.div_ceil(SOCKETS);
    let mut tasks = JoinSet::new();
    for _ in 0..SOCKETS {
        let (hello, server) = (hello.clone(), args.server);
        tasks.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            // `settled` counts answers plus hellos given up as lost, so a
            // lost one does not hold a window slot forever; only real
            // answers are reported.
            let (mut sent, mut answered, mut settled) = (0usize, 0usize, 0usize);
            let mut buf = [0u8; 2048];
            while settled < per_socket {
                while sent < per_socket && sent - settled < IN_FLIGHT {
                    socket.send_to(&hello, server).await?;
                    sent += 1;
                }
                let wait = Duration::from_millis(500);
                match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
                    Ok(Ok(_)) => {
                        answered += 1;
                        settled += 1;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => settled = sent,
                }
            }
            Ok::<_, std::io::Error>((sent, answered))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (sent, answered) = done??;
        report.flood_sent += sent;
        report.flood_answered += answered;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = usage(args.server_pid);
    if args.server_pid.is_some() && report.flood_answered > 0 {
        let cpu = after.cpu.saturating_sub(before.cpu);
        report.server_cpu_per_hello = Some(cpu.div_f64(report.flood_answered as f64));
        report.rss_change_after_flood_kib = Some(after.rss_kib as i64 - before.rss_kib as i64);
    }
    Ok(())
}

/// CPU time (user + system) and RSS of a process, from /proc.
pub(crate) fn usage(pid: Option<u32>) -> Usage {
    let Some(pid) = pid else {
        return Usage::default();
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let cpu_ticks = ticks(11) + ticks(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Usage {
        cpu: Duration::from_micros(cpu_ticks * 1_000_000 / hz),
        rss_kib,
    }
}
