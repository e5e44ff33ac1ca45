//! What a native run prints: rates of acks, deliveries and receipts, the
//! latency of each, what went missing, and the server's CPU.

use super::load::NativeResult;
use crate::probe::CpuUse;
use crate::report::{self, Metered};
use crate::stats::{Latency, Sample};
use crate::traffic::MessagesArgs;
use std::fmt;
use std::time::Duration;

pub struct NativeReport {
    header: String,
    machine: String,
    pub setup_time: Duration,
    pub users: usize,
    pub senders: usize,
    pub rate: f64,
    pub window: u64,
    pub confirm: String,
    pub load: NativeResult,
    pub warmup: Duration,
    /// Latencies of messages sent after the warm-up.
    pub ack: Latency,
    pub delivery: Latency,
    pub receipt: Latency,
    /// Latencies of every message.
    pub ack_all: Latency,
    pub delivery_all: Latency,
    pub server_cpu: Option<CpuUse>,
    /// CPU and RSS of each node, when there are several.
    pub per_node: Option<String>,
    /// Nodes the users were spread over.
    pub nodes: usize,
    pub bench_cpu: CpuUse,
}

impl NativeReport {
    pub(crate) fn new(
        args: &MessagesArgs,
        header: String,
        setup_time: Duration,
        senders: usize,
        load: NativeResult,
        metered: Metered,
    ) -> NativeReport {
        let warmup = Duration::from_secs_f64(args.warmup.clamp(0.0, args.duration));
        let warm = load.started_ns + u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX);
        let after = |s: &[Sample]| Latency::of(s, |x| x.sent_ns >= warm);
        NativeReport {
            header,
            machine: metered.machine.clone(),
            setup_time,
            users: args.users,
            senders,
            rate: args.rate,
            window: args.window,
            confirm: format!(
                "every {} ms or {} frames",
                args.confirm_ms, args.confirm_frames
            ),
            warmup,
            ack: after(&load.acks),
            delivery: after(&load.deliveries),
            receipt: after(&load.receipt_samples),
            ack_all: Latency::of(&load.acks, |_| true),
            delivery_all: Latency::of(&load.deliveries, |_| true),
            server_cpu: metered.server_cpu(),
            nodes: metered.nodes.len(),
            per_node: metered.per_node(),
            bench_cpu: metered.bench_cpu,
            load,
        }
    }

    /// Server CPU per acked message (each is also delivered, unless lost).
    pub fn cpu_per_message(&self) -> Option<Duration> {
        let cpu = self.server_cpu?;
        let n = u32::try_from(self.load.acked).ok().filter(|&n| n > 0)?;
        Some(cpu.total() / n)
    }
}

impl fmt::Display for NativeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.load;
        let pace = match (self.rate > 0.0, self.window) {
            (true, _) => format!("{} msg/s in all", self.rate),
            (false, 0) => "flat out, no window (open loop: measures overload)".to_owned(),
            (false, w) => format!("flat out, at most {w} awaiting their ack per sender"),
        };
        write!(f, "{}", self.header)?;
        writeln!(
            f,
            "setup: {} users logged in over the API with /ws open in {:.1} s",
            self.users,
            self.setup_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "load: {} users online, {} sending, {pace}; confirms {}",
            self.users, self.senders, self.confirm
        )?;
        if self.nodes > 1 {
            writeln!(
                f,
                "nodes: users spread over {} nodes (user i on node i % {}), every recipient on another node than its sender",
                self.nodes, self.nodes
            )?;
        }
        let end = l.sending_ended_ns;
        writeln!(
            f,
            "sent: {} ({:.0} msg/s), resent after a refusal: {}",
            l.sent,
            l.per_sec(l.sent, end),
            l.resent
        )?;
        writeln!(
            f,
            "acked: {} ({:.0} acks/s)",
            l.acked,
            l.per_sec(l.acked, l.last_ack_ns)
        )?;
        writeln!(
            f,
            "delivered: {} ({:.0} msg/s received by recipients)",
            l.delivered,
            l.per_sec(l.delivered, l.last_delivery_ns)
        )?;
        let both = l.acked.saturating_sub(l.lost);
        let last = l.last_ack_ns.max(l.last_delivery_ns);
        writeln!(
            f,
            "acked and delivered: {both} ({:.0} msg/s)",
            l.per_sec(both, last)
        )?;
        writeln!(
            f,
            "delivered receipts: {} of {} expected from stored acks ({:.0}/s), unmatched: {}",
            l.receipts,
            l.receipts_expected,
            l.per_sec(l.receipts, l.last_receipt_ns),
            l.unmatched_receipts
        )?;
        writeln!(
            f,
            "lost: {} · duplicates: {} · delivered but never acked: {} · duplicate acks: {} · given up: {}",
            l.lost, l.duplicates, l.delivered_unacked, l.duplicate_acks, l.given_up
        )?;
        writeln!(
            f,
            "confirms sent: {} · position gaps: {} · corrupt: {} · malformed: {} · own echoes: {} · dropped connections: {}",
            l.confirms, l.pos_gaps, l.corrupt, l.malformed, l.echoes, l.dropped_connections
        )?;
        let errors: Vec<String> = l.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let errors = if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join(", ")
        };
        writeln!(f, "errors: {errors}")?;
        if let Some(e) = &l.first_drop {
            writeln!(f, "first problem: {e}")?;
        }
        crate::report::run_notes(f, l.stale, l.capped_senders)?;
        self.fmt_latency(f)?;
        if let Some(cpu) = self.server_cpu {
            writeln!(f, "server CPU: {}", report::cpu(&cpu))?;
        } else {
            writeln!(f, "server CPU: unknown (no PID)")?;
        }
        if let Some(nodes) = &self.per_node {
            writeln!(f, "server CPU and RSS per node:\n{nodes}")?;
        }
        if let Some(per) = self.cpu_per_message() {
            writeln!(
                f,
                "server CPU per acked message: {:.2} µs",
                per.as_secs_f64() * 1e6
            )?;
        }
        writeln!(f, "bench process CPU: {}", report::cpu(&self.bench_cpu))?;
        writeln!(f, "machine CPU while measuring: {}", self.machine)
    }
}

impl NativeReport {
    fn fmt_latency(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.warmup.as_secs_f64();
        writeln!(f, "ack latency after {w:.0} s warm-up: {}", self.ack)?;
        writeln!(
            f,
            "delivery latency after {w:.0} s warm-up: {}",
            self.delivery
        )?;
        writeln!(
            f,
            "receipt latency after {w:.0} s warm-up: {}",
            self.receipt
        )?;
        writeln!(f, "ack latency of all messages: {}", self.ack_all)?;
        writeln!(f, "delivery latency of all messages: {}", self.delivery_all)?;
        if self.rate > 0.0 {
            writeln!(f, "send lag behind schedule: {}", self.load.send_lag)?;
        }
        Ok(())
    }
}
