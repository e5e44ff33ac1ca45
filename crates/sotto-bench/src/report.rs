//! What every report states before its figures: the exact command, the
//! machine and its load, the build, the server and the Argon2 parameters.
//! A figure without these cannot be reproduced or compared.

use super::probe::{self, CpuUse};
use super::target::{Target, TargetArgs};
use std::fmt::Write as _;

/// The context lines, one `key: value` per line.
pub fn header(scenario: &str, target: &Target, args: &TargetArgs) -> String {
    header_for(scenario, &target.description, args)
}

/// [`header`] for a run on several nodes: `server` describes them all.
pub fn header_for(scenario: &str, server: &str, args: &TargetArgs) -> String {
    let command: Vec<String> = std::env::args().collect();
    let build = if cfg!(debug_assertions) {
        "debug (figures are not representative; use --release)"
    } else {
        "release"
    };
    let mut s = String::new();
    let _ = writeln!(s, "scenario: {scenario}");
    let _ = writeln!(s, "command: {}", command.join(" "));
    let _ = writeln!(s, "machine: {}", probe::machine_line());
    let _ = writeln!(s, "bench build: {build}");
    let _ = writeln!(s, "server: {server}");
    let _ = writeln!(s, "argon2: {}", args.argon2_line());
    s
}

/// CPU time as "1.23 s (user 0.40 s, system 0.83 s = 67%)".
pub(crate) fn cpu(c: &CpuUse) -> String {
    format!(
        "{:.2} s (user {:.2} s, system {:.2} s = {:.0}% kernel)",
        c.total().as_secs_f64(),
        c.user.as_secs_f64(),
        c.system.as_secs_f64(),
        c.system_share() * 100.0
    )
}

/// KiB as MiB with one decimal.
/// The notes a `messages` report ends its counts with, either protocol.
pub(crate) fn run_notes(
    f: &mut std::fmt::Formatter<'_>,
    stale: u64,
    capped_senders: usize,
) -> std::fmt::Result {
    if stale > 0 {
        writeln!(f, "note: {stale} messages of earlier runs were replayed")?;
    }
    if capped_senders > 0 {
        writeln!(
            f,
            "note: {capped_senders} senders reached their share of --max-messages"
        )?;
    }
    Ok(())
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// CPU readings taken at the start of a measured stretch: the server's
/// (when its PID is known), the bench's own, and the whole machine's.
pub(crate) struct Meter {
    /// One reading per node, in node order.
    servers: Vec<Option<probe::Sample>>,
    bench: probe::Sample,
    machine: probe::MachineSample,
}

/// What a [`Meter`] saw over its stretch.
pub(crate) struct Metered {
    /// Server counters at the start and the end, summed over the nodes
    /// (None unless every node could be read both times).
    pub server: Option<(probe::Sample, probe::Sample)>,
    /// The same per node, in node order.
    pub nodes: Vec<Option<(probe::Sample, probe::Sample)>>,
    pub bench_cpu: CpuUse,
    /// How the machine's busy time split; see [`machine_share`].
    pub machine: String,
}

impl Meter {
    pub fn start(target: &Target) -> anyhow::Result<Meter> {
        Self::start_all(std::slice::from_ref(target))
    }

    /// A meter over every node of a run: CPU and RSS are read per node.
    pub fn start_all(nodes: &[Target]) -> anyhow::Result<Meter> {
        Ok(Meter {
            machine: probe::MachineSample::now()?,
            servers: nodes.iter().map(Target::sample).collect(),
            bench: probe::sample(probe::Pid::Own)?,
        })
    }

    pub fn stop(self, target: &Target) -> anyhow::Result<Metered> {
        self.stop_all(std::slice::from_ref(target))
    }

    /// Ends a [`Meter::start_all`] over the same nodes.
    pub fn stop_all(self, nodes: &[Target]) -> anyhow::Result<Metered> {
        let per_node: Vec<Option<(probe::Sample, probe::Sample)>> = self
            .servers
            .iter()
            .zip(nodes)
            .map(|(before, t)| before.zip(t.sample()))
            .collect();
        let server = summed(&per_node);
        let bench_cpu = probe::sample(probe::Pid::Own)?.cpu_since(&self.bench);
        let server_cpu = server.map(|(b, a)| a.cpu_since(&b));
        let machine = machine_share(
            &probe::MachineSample::now()?,
            &self.machine,
            server_cpu.as_ref(),
            &bench_cpu,
        );
        Ok(Metered {
            server,
            nodes: per_node,
            bench_cpu,
            machine,
        })
    }
}

/// The nodes' readings added up, when every node was read.
fn summed(
    nodes: &[Option<(probe::Sample, probe::Sample)>],
) -> Option<(probe::Sample, probe::Sample)> {
    let add = |a: probe::Sample, b: probe::Sample| probe::Sample {
        user_ticks: a.user_ticks + b.user_ticks,
        system_ticks: a.system_ticks + b.system_ticks,
        rss_kib: a.rss_kib + b.rss_kib,
        threads: a.threads + b.threads,
    };
    let mut all = nodes.iter().copied();
    let first = all.next()??;
    all.try_fold(first, |(b0, a0), n| {
        n.map(|(b, a)| (add(b0, b), add(a0, a)))
    })
}

impl Metered {
    /// Each node's CPU and RSS, one line per node, when there are several.
    pub(crate) fn per_node(&self) -> Option<String> {
        if self.nodes.len() < 2 {
            return None;
        }
        let lines: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match n {
                Some((b, a)) => format!(
                    "node {i}: CPU {}, RSS {} -> {}",
                    cpu(&a.cpu_since(b)),
                    mib(b.rss_kib),
                    mib(a.rss_kib)
                ),
                None => format!("node {i}: not read (stopped or killed)"),
            })
            .collect();
        Some(lines.join("\n"))
    }

    pub(crate) fn server_cpu(&self) -> Option<CpuUse> {
        self.server.map(|(b, a)| a.cpu_since(&b))
    }
}

/// How the machine's CPU time was shared during a measurement: the server,
/// the bench, and everyone else (a neighbour's build shows up there).
fn machine_share(
    machine: &probe::MachineSample,
    since: &probe::MachineSample,
    server: Option<&CpuUse>,
    bench: &CpuUse,
) -> String {
    let (busy, total) = machine.since(since);
    let server = server.map_or(0.0, |c| c.total().as_secs_f64());
    let bench = bench.total().as_secs_f64();
    let others = (busy.as_secs_f64() - server - bench).max(0.0);
    format!(
        "{:.1} of {:.1} core-seconds busy: server {server:.1}, bench {bench:.1}, other processes {others:.1}",
        busy.as_secs_f64(),
        total.as_secs_f64()
    )
}
