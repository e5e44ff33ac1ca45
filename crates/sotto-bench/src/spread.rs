//! `sotto bench idle --clients K`: idle connections held by K client
//! processes, for more connections than one process may open.
//!
//! One process holds at most ~19,800 sockets here (open-file limit
//! 20,000), and one source address has ~28,000 ephemeral ports. So the
//! bench runs itself again K times (`idle --worker`, hidden), each with a
//! contiguous share of the users, its own block of 127.0.0.x source
//! addresses and one server node; each says on stdout when its users are
//! online (`ready …`), holds them while the parent reads every node's RSS,
//! and reports what its connections saw when told to stop (`done …`).
//! A worker whose parent dies sees its stdin close and exits; so does one
//! never told to stop, after [`WORKER_LIFETIME`].

use super::client::Buffers;
use super::cluster::Targets;
use super::idle::{self, Drained, IdleArgs};
use super::probe::{self, Pid, Sample};
use super::report;
use super::setup::{Kind, Pool, SetupReport};
use super::target::Target;
use anyhow::{Context, bail};
use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the workers may take to bring their users online: 100,000
/// registrations under cheap Argon2 take a few minutes here.
const SETUP_WAIT: Duration = Duration::from_secs(1800);

/// The longest a worker holds its connections, should nobody stop it.
const WORKER_LIFETIME: Duration = Duration::from_secs(3600);

/// How long a stopped worker may take to report and exit.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// One worker's part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Share {
    /// Index into the nodes.
    node: usize,
    first_user: usize,
    count: usize,
    /// Last byte of its first source address.
    source_first: u8,
}

/// Splits `connections` over `clients` processes, process k on node
/// k % nodes, each with `sources` addresses from 127.0.0.2 on.
fn plan(
    connections: usize,
    clients: usize,
    nodes: usize,
    sources: usize,
) -> anyhow::Result<Vec<Share>> {
    let clients = clients.max(1);
    if 2 + clients * sources > 255 {
        bail!(
            "{clients} client processes × {sources} source addresses do not fit in 127.0.0.2–254"
        );
    }
    let (each, extra) = (connections / clients, connections % clients);
    let mut first_user = 0;
    let shares = (0..clients)
        .map(|k| {
            let count = each + usize::from(k < extra);
            let share = Share {
                node: k % nodes.max(1),
                first_user,
                count,
                source_first: (2 + k * sources) as u8,
            };
            first_user += count;
            share
        })
        .collect();
    Ok(shares)
}

/// What a `--clients` run measured.
pub struct SpreadReport {
    header: String,
    pub connections: usize,
    pub clients: usize,
    pub sources_each: u8,
    pub setup: SetupReport,
    pub nodes: Vec<NodeFigures>,
    pub dropped: usize,
    pub frames: u64,
    pub largest_frame: usize,
    /// The client processes' RSS, summed, after settling.
    pub clients_rss_kib: u64,
}

/// One node's share and memory.
pub struct NodeFigures {
    pub description: String,
    pub connections: usize,
    pub before: Option<Sample>,
    pub after: Option<Sample>,
}

impl NodeFigures {
    /// RSS growth per connection on this node, KiB.
    pub fn kib_per_connection(&self) -> Option<f64> {
        let (b, a) = (self.before?.rss_kib, self.after?.rss_kib);
        Some(a.saturating_sub(b) as f64 / self.connections.max(1) as f64)
    }
}

/// Runs the scenario against the target of `args` (one server, or with
/// `--spawn --nodes N` a cluster) with `--clients` processes holding the
/// connections.
pub async fn run(args: IdleArgs) -> anyhow::Result<SpreadReport> {
    let targets = Targets::open(&args.target).await?;
    let scenario = format!("idle --clients {}", args.clients);
    let header = report::header_for(&scenario, &targets.description(), &args.target);
    let result = measure(&args, &targets, header).await;
    targets.stop().await;
    result
}

async fn measure(
    args: &IdleArgs,
    targets: &Targets,
    header: String,
) -> anyhow::Result<SpreadReport> {
    let nodes = &targets.nodes[..];
    if nodes.is_empty() {
        bail!("no server to measure");
    }
    let shares = plan(
        args.connections,
        usize::from(args.clients),
        nodes.len(),
        usize::from(args.source_addrs),
    )?;
    // A fresh server's memory moves for a moment after start-up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<Option<Sample>> = nodes.iter().map(Target::sample).collect();
    let prefix = args
        .pool
        .prefix
        .clone()
        .unwrap_or_else(|| args.target.pool_prefix());
    let mut workers = Vec::with_capacity(shares.len());
    for share in &shares {
        let node = &nodes[share.node];
        workers.push(Worker::start(
            args,
            &prefix,
            node,
            share,
            targets.token_cache(),
        )?);
    }
    let mut setup = SetupReport::default();
    for w in &mut workers {
        let ready = tokio::time::timeout(SETUP_WAIT, w.ready())
            .await
            .context("a client process did not bring its users online in time")??;
        add_setup(&mut setup, &ready);
    }
    eprintln!("sotto bench: setup: {setup}");
    tokio::time::sleep(Duration::from_secs_f64(args.settle.clamp(0.0, 600.0))).await;
    let after: Vec<Option<Sample>> = nodes.iter().map(Target::sample).collect();
    let clients_rss_kib = workers
        .iter()
        .filter_map(|w| probe::sample(Pid::Other(w.pid)).ok())
        .map(|s| s.rss_kib)
        .sum();
    let mut done = Done::default();
    for w in workers {
        let d = tokio::time::timeout(STOP_WAIT, w.stop())
            .await
            .context("a client process did not stop in time")??;
        done.dropped += d.dropped;
        done.frames += d.frames;
        done.largest = done.largest.max(d.largest);
    }
    let figures = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeFigures {
            description: n.description.clone(),
            connections: shares.iter().filter(|s| s.node == i).map(|s| s.count).sum(),
            before: before[i],
            after: after[i],
        })
        .collect();
    Ok(SpreadReport {
        header,
        connections: args.connections,
        clients: shares.len(),
        sources_each: args.source_addrs,
        setup,
        nodes: figures,
        dropped: done.dropped,
        frames: done.frames,
        largest_frame: done.largest,
        clients_rss_kib,
    })
}

/// Sums the workers' setups; they ran side by side, so the time is the
/// slowest one's.
fn add_setup(total: &mut SetupReport, one: &SetupReport) {
    total.authorized += one.authorized;
    total.logged_in += one.logged_in;
    total.registered += one.registered;
    total.already_registered += one.already_registered;
    total.elapsed = total.elapsed.max(one.elapsed);
}

/// A client process of the run, as the parent sees it.
struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    /// Starts this binary as `idle --worker` for `share`, on `node`, with
    /// the run's database's token cache if it has one.
    fn start(
        args: &IdleArgs,
        prefix: &str,
        node: &Target,
        share: &Share,
        token_cache: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the sotto binary")?;
        let mut command = Command::new(&exe);
        command.args(["bench", "idle", "--worker"]);
        if let Some(path) = token_cache {
            command.arg(format!("--token-cache={}", path.display()));
        }
        let mut child = command
            .arg(format!("--url={}", node.url))
            .arg(format!("--state-dir={}", args.target.state_dir.display()))
            .arg(format!("--prefix={prefix}"))
            .arg(format!("--password={}", args.pool.password))
            .arg(format!(
                "--setup-concurrency={}",
                args.pool.setup_concurrency
            ))
            .arg(format!("--connections={}", share.count))
            .arg(format!("--first-user={}", share.first_user))
            .arg(format!("--source-addrs={}", args.source_addrs))
            .arg(format!("--source-first={}", share.source_first))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let pid = child.id().context("client process has no pid")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(Worker {
            child,
            pid,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Waits for the worker's users to be online.
    async fn ready(&mut self) -> anyhow::Result<SetupReport> {
        let line = self.line().await?;
        parse_ready(&line).with_context(|| format!("unexpected line from a client process: {line}"))
    }

    /// Tells the worker to stop, and reads what its connections saw.
    async fn stop(mut self) -> anyhow::Result<Done> {
        self.stdin.write_all(b"stop\n").await?;
        self.stdin.flush().await?;
        let line = self.line().await?;
        let done = parse_done(&line)
            .with_context(|| format!("unexpected line from a client process: {line}"))?;
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("client process {} ended with {status}", self.pid);
        }
        Ok(done)
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        match self.lines.next_line().await? {
            Some(line) => Ok(line),
            None => {
                let status = self.child.wait().await?;
                bail!(
                    "client process {} ended ({status}) before reporting",
                    self.pid
                )
            }
        }
    }
}

/// What a worker's connections saw while held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Done {
    dropped: usize,
    frames: u64,
    largest: usize,
}

fn ready_line(s: &SetupReport) -> String {
    format!(
        "ready {} {} {} {} {}",
        s.authorized,
        s.logged_in,
        s.registered,
        s.already_registered,
        s.elapsed.as_millis()
    )
}

fn parse_ready(line: &str) -> Option<SetupReport> {
    let f: Vec<u64> = numbers(line, "ready")?;
    let [authorized, logged_in, registered, already, millis] = f[..] else {
        return None;
    };
    Some(SetupReport {
        authorized: authorized as usize,
        logged_in: logged_in as usize,
        registered: registered as usize,
        already_registered: already as usize,
        elapsed: Duration::from_millis(millis),
    })
}

fn done_line(d: &Done) -> String {
    format!("done {} {} {}", d.dropped, d.frames, d.largest)
}

fn parse_done(line: &str) -> Option<Done> {
    let f: Vec<u64> = numbers(line, "done")?;
    let [dropped, frames, largest] = f[..] else {
        return None;
    };
    Some(Done {
        dropped: dropped as usize,
        frames,
        largest: largest as usize,
    })
}

/// The numbers after `word` on a line of the worker protocol.
fn numbers(line: &str, word: &str) -> Option<Vec<u64>> {
    let mut fields = line.split_whitespace();
    if fields.next()? != word {
        return None;
    }
    fields.map(|f| f.parse().ok()).collect()
}

/// The worker's side: brings its users online, says `ready`, holds the
/// connections until told to stop (or stdin closes, or the lifetime
/// passes), then says `done`.
pub async fn worker(args: IdleArgs) -> anyhow::Result<()> {
    idle::check_fd_room(args.connections)?;
    let target = Target::open(&args.target).await?;
    let mut pool = Pool::new(&args.target, &args.pool).with_sources(args.sources());
    if let Some(path) = &args.token_cache {
        pool = pool.with_token_cache(path.clone());
    }
    let users = args.first_user..args.first_user + args.connections;
    let (online, setup) = pool
        .bring_online(&target, Kind::Chat, users, Buffers::Small)
        .await?;
    say(&ready_line(&setup)).await?;
    let stop = CancellationToken::new();
    let readers: Vec<JoinHandle<Drained>> = online
        .into_iter()
        .map(|o| tokio::spawn(idle::drain_frames(o.ws, stop.clone())))
        .collect();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    // Any line, the end of stdin (the parent is gone) or the lifetime.
    let _ = tokio::time::timeout(WORKER_LIFETIME, stdin.next_line()).await;
    let mut done = Done {
        dropped: readers.iter().filter(|r| r.is_finished()).count(),
        ..Done::default()
    };
    stop.cancel();
    for r in readers {
        if let Ok(d) = r.await {
            done.frames += d.frames;
            done.largest = done.largest.max(d.largest);
        }
    }
    say(&done_line(&done)).await
}

/// One line of the worker protocol on stdout, flushed at once.
async fn say(line: &str) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    out.write_all(format!("{line}\n").as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

impl fmt::Display for SpreadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.header)?;
        writeln!(f, "setup: {} (client processes side by side)", self.setup)?;
        writeln!(
            f,
            "connections: {} authenticated, from {} client processes ({} source addresses each); \
             {} closed by the server",
            self.connections, self.clients, self.sources_each, self.dropped
        )?;
        writeln!(
            f,
            "frames received while settling: {} (largest {} bytes)",
            self.frames, self.largest_frame
        )?;
        let (mut grown, mut counted) = (0u64, 0usize);
        for (i, n) in self.nodes.iter().enumerate() {
            match (n.before, n.after, n.kib_per_connection()) {
                (Some(b), Some(a), Some(per)) => {
                    grown += a.rss_kib.saturating_sub(b.rss_kib);
                    counted += n.connections;
                    writeln!(
                        f,
                        "node {i}: {} connections; RSS {} before, {} after: {per:.1} KiB per \
                         connection; {} threads",
                        n.connections,
                        report::mib(b.rss_kib),
                        report::mib(a.rss_kib),
                        a.threads
                    )?
                }
                _ => writeln!(
                    f,
                    "node {i}: {} connections; RSS unknown (no PID)",
                    n.connections
                )?,
            }
        }
        if counted > 0 {
            writeln!(
                f,
                "all nodes: {} grown for {counted} connections: {:.1} KiB per connection",
                report::mib(grown),
                grown as f64 / counted as f64
            )?;
        }
        writeln!(
            f,
            "client processes' RSS: {} together",
            report::mib(self.clients_rss_kib)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_covers_every_user_once_with_disjoint_addresses() {
        let shares = plan(100_000, 6, 6, 4).unwrap();
        assert_eq!(shares.iter().map(|s| s.count).sum::<usize>(), 100_000);
        for w in shares.windows(2) {
            assert_eq!(w[0].first_user + w[0].count, w[1].first_user);
            assert_eq!(w[0].source_first + 4, w[1].source_first);
        }
        let nodes: Vec<usize> = shares.iter().map(|s| s.node).collect();
        assert_eq!(nodes, [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            plan(10, 3, 1, 0)
                .unwrap()
                .iter()
                .map(|s| s.count)
                .collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert!(plan(10, 60, 1, 5).is_err());
    }

    #[test]
    fn protocol_lines_round_trip() {
        let s = SetupReport {
            authorized: 1,
            logged_in: 2,
            registered: 3,
            already_registered: 4,
            elapsed: Duration::from_millis(5678),
        };
        let back = parse_ready(&ready_line(&s)).unwrap();
        assert_eq!(
            (
                back.authorized,
                back.logged_in,
                back.registered,
                back.already_registered,
                back.elapsed
            ),
            (1, 2, 3, 4, s.elapsed)
        );
        let d = Done {
            dropped: 1,
            frames: 20,
            largest: 300,
        };
        assert_eq!(parse_done(&done_line(&d)), Some(d));
        assert_eq!(parse_done("ready 1 2 3"), None);
        assert!(parse_ready("ready 1 x 3 4 5").is_none());
    }
}
