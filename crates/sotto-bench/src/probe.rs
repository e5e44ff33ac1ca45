//! Reading a process's CPU time and memory from /proc.
//!
//! The targets are about the server's own costs (CPU µs per delivered
//! message, RSS per connection), which only the kernel's accounting of the
//! server process gives; the bench's own CPU is read the same way so a
//! reader can see whether the load generator was the bottleneck.

use anyhow::Context;
use std::time::Duration;

/// Clock ticks per second in /proc/<pid>/stat. USER_HZ is fixed at 100 by
/// the kernel's ABI on every architecture Linux exports it for.
const TICKS_PER_SEC: u64 = 100;

/// Which process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pid {
    Own,
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Own => "/proc/self".to_owned(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU time in user mode, in clock ticks (10 ms).
    pub user_ticks: u64,
    /// CPU time in the kernel on the process's behalf (syscalls, and on
    /// loopback the whole TCP path of what it sends), in clock ticks.
    pub system_ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    pub threads: u64,
}

/// CPU time between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuUse {
    pub user: Duration,
    pub system: Duration,
}

impl CpuUse {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// Share of the CPU time spent in the kernel, 0–1.
    pub(crate) fn system_share(&self) -> f64 {
        let total = self.total().as_secs_f64();
        if total > 0.0 {
            self.system.as_secs_f64() / total
        } else {
            0.0
        }
    }
}

impl Sample {
    /// CPU used from `earlier` to `self`.
    pub(crate) fn cpu_since(&self, earlier: &Sample) -> CpuUse {
        CpuUse {
            user: ticks(self.user_ticks.saturating_sub(earlier.user_ticks)),
            system: ticks(self.system_ticks.saturating_sub(earlier.system_ticks)),
        }
    }
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 1000 / TICKS_PER_SEC)
}

/// Reads `pid`'s counters now.
pub(crate) fn sample(pid: Pid) -> anyhow::Result<Sample> {
    let dir = pid.dir();
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("cannot read {dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("cannot read {dir}/status"))?;
    let (user_ticks, system_ticks, threads) =
        parse_stat(&stat).with_context(|| format!("unexpected format of {dir}/stat"))?;
    let rss_kib =
        parse_status_kib(&status, "VmRSS:").with_context(|| format!("no VmRSS in {dir}/status"))?;
    Ok(Sample {
        user_ticks,
        system_ticks,
        rss_kib,
        threads,
    })
}

/// utime, stime and num_threads from a /proc/<pid>/stat line. The command
/// name in parentheses may contain spaces, so fields are counted from the
/// last `)`: utime is field 14 overall, the 12th after it.
fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n)?.parse::<u64>().ok();
    Some((field(11)?, field(12)?, field(17)?))
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Machine-wide CPU time from /proc/stat, in clock ticks summed over all
/// cores. The machine is shared: comparing this with the server's and the
/// bench's own time shows how much a neighbour took during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MachineSample {
    pub busy_ticks: u64,
    pub total_ticks: u64,
}

impl MachineSample {
    pub fn now() -> anyhow::Result<MachineSample> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        parse_machine(&stat).context("unexpected format of /proc/stat")
    }

    /// (busy, available) core time from `earlier` to `self`.
    pub fn since(&self, earlier: &MachineSample) -> (Duration, Duration) {
        (
            ticks(self.busy_ticks.saturating_sub(earlier.busy_ticks)),
            ticks(self.total_ticks.saturating_sub(earlier.total_ticks)),
        )
    }
}

/// The first line of /proc/stat: user nice system idle iowait irq softirq
/// steal …; idle and iowait are the only time not spent on something.
fn parse_machine(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some(MachineSample {
        busy_ticks: total - idle,
        total_ticks: total,
    })
}

/// Waits up to `limit` for two quiet seconds (under 10% of the machine
/// busy), so a run does not start while a neighbour compiles. Returns the
/// busy share of the last window checked.
pub(crate) async fn wait_for_quiet(limit: Duration) -> f64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let Ok(before) = MachineSample::now() else {
            return 0.0;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Ok(after) = MachineSample::now() else {
            return 0.0;
        };
        let (busy, total) = after.since(&before);
        let share = busy.as_secs_f64() / total.as_secs_f64().max(1e-9);
        if share < 0.10 || tokio::time::Instant::now() >= deadline {
            return share;
        }
        eprintln!(
            "sotto bench: machine {:.0}% busy, waiting for it to quieten",
            share * 100.0
        );
    }
}

/// Reads the kernel release and load average, which every report states:
/// the machine is shared, and a busy neighbour shows up here.
pub(crate) fn machine_line() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores, Linux {}, load average {} (1/5/15 min) at start",
        release.trim(),
        load.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (sotto (x) y) S 1 1234 1234 0 -1 4194304 500 0 0 0 \
                    250 75 0 0 20 0 7 0 100 1000000 300";
        assert_eq!(parse_stat(stat), Some((250, 75, 7)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn machine_time_excludes_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let m = parse_machine(stat).unwrap();
        assert_eq!((m.busy_ticks, m.total_ticks), (161, 1181));
    }

    #[test]
    fn own_process_can_be_read() {
        let s = sample(Pid::Own).unwrap();
        assert!(s.rss_kib > 0 && s.threads >= 1);
        assert_eq!(
            parse_status_kib("Name:\tx\nVmRSS:\t  4242 kB\n", "VmRSS:"),
            Some(4242)
        );
    }
}
