//! `sotto bench storm`: many users log in at the same instant (real
//! password logins, one Argon2 verification each) while others exchange
//! messages at a steady rate. The question is whether routing stays fast
//! while the server hashes passwords and broadcasts user lists, so message
//! latency is reported before, during and after the storm.
//!
//! With `--spawn --nodes N` the users are spread over a cluster as every
//! cluster run places them (user i on node i % N, chatters and storm users
//! alike), and the server's CPU and RSS are read on every node.

use super::client::{self, Buffers, LoginAnswer, Ws};
use super::cluster::Targets;
use super::load::{self, Clock, LoadResult, LoadSpec};
use super::probe::CpuUse;
use super::report::{self, Meter};
use super::setup::{Kind, Online, Pool, PoolArgs, SetupReport};
use super::stats::{Latency, ms};
use super::target::{Target, TargetArgs};
use anyhow::bail;
use clap::Args;
use futures_util::StreamExt;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Users that log in at once.
    #[arg(long, default_value_t = 1000)]
    pub logins: usize,
    /// Users exchanging messages meanwhile (at least 2).
    #[arg(long, default_value_t = 100)]
    pub chatters: usize,
    /// Messages per second over all chatters.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds of messages before the storm (the baseline).
    #[arg(long, default_value_t = 3.0)]
    pub before: f64,
    /// Seconds of messages after the last login was answered.
    #[arg(long, default_value_t = 3.0)]
    pub after: f64,
    /// Storm users speak sotto's own protocol: each logs in over the HTTP
    /// API and opens `/ws` with its token (counted: the `users` snapshot
    /// and every presence frame after it).
    #[arg(long)]
    pub native: bool,
    /// Seconds the logins may take in all before the run gives up on them.
    #[arg(long, default_value_t = 300.0)]
    pub login_timeout: f64,
}

/// One storm login's outcome.
#[derive(Debug, Clone)]
struct LoginResult {
    took_ns: u64,
    answer: Result<LoginAnswer, String>,
}

/// How the storm's logins went.
#[derive(Debug, Clone, Default)]
pub struct Logins {
    pub ok: usize,
    pub refused: usize,
    /// Failed connections and logins not answered in time.
    pub failed: usize,
    pub first_failure: Option<String>,
    pub latency: Latency,
    /// From the start signal to the last answer (or the timeout).
    pub duration: Duration,
}

impl Logins {
    fn of(results: &[LoginResult], expected: usize, duration: Duration) -> Logins {
        let count = |f: fn(&LoginResult) -> bool| results.iter().filter(|r| f(r)).count();
        let ok = count(|r| matches!(r.answer, Ok(LoginAnswer::LoggedIn { .. })));
        let refused = count(|r| matches!(r.answer, Ok(LoginAnswer::Refused(_))));
        Logins {
            ok,
            refused,
            failed: expected.saturating_sub(ok + refused),
            first_failure: results.iter().find_map(|r| match &r.answer {
                Ok(LoginAnswer::Refused(e)) | Err(e) => Some(e.clone()),
                Ok(LoginAnswer::LoggedIn { .. }) => None,
            }),
            latency: Latency::of_values(results.iter().map(|r| r.took_ns)),
            duration,
        }
    }
}

pub struct StormReport {
    header: String,
    pub storm_users: usize,
    pub chatters: usize,
    pub rate: f64,
    pub registration: SetupReport,
    pub chat_setup: SetupReport,
    pub logins: Logins,
    pub before: Latency,
    pub during: Latency,
    pub after: Latency,
    pub load: LoadResult,
    /// Summed over the nodes.
    pub server_storm_cpu: Option<CpuUse>,
    /// Before the chatters start and after they stop, summed over the nodes.
    pub server_rss_kib: Option<(u64, u64)>,
    /// Each node's CPU and RSS over the storm, when there are several.
    pub per_node: Option<String>,
    /// Frames (user lists) the storm users received after their login
    /// answer, to the end of the run, and their bytes.
    pub lists_received: (u64, u64),
    machine: String,
}

pub async fn run(args: StormArgs) -> anyhow::Result<StormReport> {
    if args.chatters < 2 || args.logins == 0 || args.rate <= 0.0 || !args.rate.is_finite() {
        bail!("storm needs --chatters ≥ 2, --logins ≥ 1 and a positive --rate");
    }
    if !(0.0..=600.0).contains(&args.before) || !(0.0..=600.0).contains(&args.after) {
        bail!("--before and --after must be between 0 and 600 seconds");
    }
    let targets = Targets::open(&args.target).await?;
    let result = measure(&args, &targets).await;
    targets.stop().await;
    result
}

/// Everything set up before the baseline starts.
struct Prepared {
    registration: SetupReport,
    chatters: Vec<Online>,
    chat_setup: SetupReport,
    /// Upgraded connections, one per storm user, not logged in yet.
    storm_conns: Vec<Ws>,
}

async fn prepare(args: &StormArgs, nodes: &[Target], pool: &Pool) -> anyhow::Result<Prepared> {
    let registration = pool
        .ensure_registered(nodes, Kind::Storm, 0..args.logins)
        .await?;
    eprintln!("sotto bench: storm users: {registration}");
    let (chatters, chat_setup) = pool
        .bring_online_on(nodes, Kind::Chat, 0..args.chatters, Buffers::Large)
        .await?;
    eprintln!("sotto bench: chatters: {chat_setup}");
    let storm_conns = match args.native {
        true => Vec::new(),
        false => connect_all(nodes, args.logins, args.pool.setup_concurrency).await?,
    };
    Ok(Prepared {
        registration,
        chatters,
        chat_setup,
        storm_conns,
    })
}

async fn measure(args: &StormArgs, targets: &Targets) -> anyhow::Result<StormReport> {
    let header = report::header_for("storm", &targets.description(), &args.target);
    let nodes = &targets.nodes[..];
    let http = match args.native {
        true => targets.http_addrs()?,
        false => Vec::new(),
    };
    let pool = Arc::new(targets.pool(&args.target, &args.pool));
    args.target.wait_quiet().await;
    let prepared = prepare(args, nodes, &pool).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let login_timeout = Duration::from_secs_f64(args.login_timeout.clamp(1.0, 3600.0));
    let clock = Clock::new();
    let rss_before = summed_rss(nodes);
    let mut running = load::start(prepared.chatters, &spec(args, login_timeout), clock)?;
    tokio::time::sleep(Duration::from_secs_f64(args.before)).await;

    let storm_start_ns = clock.now_ns();
    let meter = Meter::start_all(nodes)?;
    let mut storm = match args.native {
        true => Storm::start_native(args.logins, http, &pool)?,
        false => Storm::start(prepared.storm_conns, &pool),
    };
    let logins = storm.wait(args.logins, login_timeout).await;
    let storm_end_ns = clock.now_ns();
    let metered = meter.stop_all(nodes)?;

    tokio::time::sleep(Duration::from_secs_f64(args.after)).await;
    running.drain(Duration::from_secs(3)).await;
    let rss_after = summed_rss(nodes);
    let load = running.close().await;
    let lists_received = storm.end().await;
    let window =
        |from: u64, to: u64| Latency::of(&load.samples, |s| s.sent_ns >= from && s.sent_ns < to);
    Ok(StormReport {
        header,
        storm_users: args.logins,
        chatters: args.chatters,
        rate: args.rate,
        registration: prepared.registration,
        chat_setup: prepared.chat_setup,
        logins,
        before: window(0, storm_start_ns),
        during: window(storm_start_ns, storm_end_ns),
        after: window(storm_end_ns, u64::MAX),
        load,
        server_storm_cpu: metered.server_cpu(),
        per_node: metered.per_node(),
        machine: metered.machine,
        server_rss_kib: rss_before.zip(rss_after),
        lists_received,
    })
}

/// The nodes' RSS added up, when every node could be read.
fn summed_rss(nodes: &[Target]) -> Option<u64> {
    nodes.iter().map(|t| t.sample().map(|s| s.rss_kib)).sum()
}

/// The chatters' traffic: rated, and long enough to outlast the storm
/// (it is stopped once the storm and the time after it are over).
fn spec(args: &StormArgs, login_timeout: Duration) -> LoadSpec {
    LoadSpec {
        senders: args.chatters,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.before + args.after) + login_timeout,
        payload: args.payload,
        window: 0,
        max_messages: 10_000_000,
    }
}

/// The storm users' tasks, waiting for one start signal.
struct Storm {
    tasks: Vec<JoinHandle<()>>,
    results: tokio::sync::mpsc::UnboundedReceiver<LoginResult>,
    go: CancellationToken,
    stop: CancellationToken,
    received: Arc<Received>,
}

/// What the storm users received after logging in: the presence cost.
#[derive(Default)]
struct Received {
    frames: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Storm {
    /// Spawns one task per connection; none sends anything before [`Storm::wait`].
    fn start(conns: Vec<Ws>, pool: &Arc<Pool>) -> Storm {
        let go = CancellationToken::new();
        let stop = CancellationToken::new();
        let (tx, results) = tokio::sync::mpsc::unbounded_channel();
        let received = Arc::new(Received::default());
        let tasks = conns
            .into_iter()
            .enumerate()
            .map(|(i, ws)| {
                let name = pool.name(Kind::Storm, i);
                let signals = (go.clone(), stop.clone());
                let job = login_and_stay(
                    ws,
                    name,
                    pool.clone(),
                    signals,
                    tx.clone(),
                    received.clone(),
                );
                tokio::spawn(job)
            })
            .collect();
        Storm {
            tasks,
            results,
            go,
            stop,
            received,
        }
    }

    /// [`Storm::start`] for native users: nothing is connected before the
    /// start signal, since a `/ws` socket needs the login's token. User
    /// `i` logs in and opens `/ws` on node `i % N` (`http` in node order).
    fn start_native(n: usize, http: Vec<SocketAddr>, pool: &Arc<Pool>) -> anyhow::Result<Storm> {
        if http.is_empty() {
            bail!("--native needs the server's HTTP port (--spawn or --http-port)");
        }
        let go = CancellationToken::new();
        let stop = CancellationToken::new();
        let (tx, results) = tokio::sync::mpsc::unbounded_channel();
        let received = Arc::new(Received::default());
        let tasks = (0..n)
            .map(|i| {
                let name = pool.name(Kind::Storm, i);
                let signals = (go.clone(), stop.clone());
                let job = native_login_and_stay(
                    http[i % http.len()],
                    name,
                    pool.clone(),
                    signals,
                    tx.clone(),
                    received.clone(),
                );
                tokio::spawn(job)
            })
            .collect();
        Ok(Storm {
            tasks,
            results,
            go,
            stop,
            received,
        })
    }

    /// Fires every login at once and waits for the answers, at most `timeout`.
    async fn wait(&mut self, expected: usize, timeout: Duration) -> Logins {
        let started = Instant::now();
        self.go.cancel();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut results = Vec::with_capacity(expected);
        while results.len() < expected {
            match tokio::time::timeout_at(deadline, self.results.recv()).await {
                Ok(Some(r)) => results.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        Logins::of(&results, expected, started.elapsed())
    }

    /// Logs the storm users off by closing their connections; returns the
    /// frames and bytes they received after logging in.
    async fn end(self) -> (u64, u64) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let r = &self.received;
        (
            r.frames.load(std::sync::atomic::Ordering::Relaxed),
            r.bytes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// Opens the storm users' connections, not logged in yet: the `i`th on
/// node `i % nodes.len()`, in order, since it becomes user `i`'s.
async fn connect_all(nodes: &[Target], n: usize, concurrency: usize) -> anyhow::Result<Vec<Ws>> {
    let conns: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let target = &nodes[i % nodes.len().max(1)];
            client::connect(target.addr, &target.url, Buffers::Small)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    conns.into_iter().collect()
}

/// Waits for the start signal, logs in, reports how long that took, then
/// stays online reading (and counting) user lists until `stop`.
async fn login_and_stay(
    mut ws: Ws,
    name: String,
    pool: Arc<Pool>,
    (go, stop): (CancellationToken, CancellationToken),
    done: tokio::sync::mpsc::UnboundedSender<LoginResult>,
    received: Arc<Received>,
) {
    go.cancelled().await;
    let started = Instant::now();
    let answer = pool
        .login_once(&mut ws, &name)
        .await
        .map_err(|e| format!("{e:#}"));
    let took_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let ok = answer.is_ok();
    let _ = done.send(LoginResult { took_ns, answer });
    if !ok {
        return;
    }
    count_until_stopped(&mut ws, &stop, &received).await;
}

/// [`login_and_stay`] for a native user: an API login, then `/ws`,
/// counting every frame received there.
async fn native_login_and_stay(
    http: SocketAddr,
    name: String,
    pool: Arc<Pool>,
    (go, stop): (CancellationToken, CancellationToken),
    done: tokio::sync::mpsc::UnboundedSender<LoginResult>,
    received: Arc<Received>,
) {
    go.cancelled().await;
    let started = Instant::now();
    let body = serde_json::json!({"name": name, "password": pool.password()}).to_string();
    let login = async {
        use super::native::setup as native;
        let (status, reply) = native::post_retrying(http, "/api/login", &body).await?;
        if status != 200 {
            bail!("cannot log in {name}: HTTP {status}");
        }
        let account = native::parse_login(&reply)?;
        let ws = native::connect(http, &account).await?;
        Ok::<_, anyhow::Error>((ws, account))
    };
    let (mut ws, answer) = match login.await {
        Ok((ws, account)) => {
            let answer = LoginAnswer::LoggedIn {
                token: account.token,
                id: account.id,
            };
            (Some(ws), Ok(answer))
        }
        Err(e) => (None, Err(format!("{e:#}"))),
    };
    let took_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let _ = done.send(LoginResult { took_ns, answer });
    let Some(ws) = ws.as_mut() else { return };
    count_until_stopped(ws, &stop, &received).await;
}

/// Reads and counts frames until `stop` or the connection ends.
async fn count_until_stopped(ws: &mut Ws, stop: &CancellationToken, received: &Received) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = ws.next() => match n {
                Some(Ok(frame)) => {
                    received.frames.fetch_add(1, Relaxed);
                    received.bytes.fetch_add(frame.len() as u64, Relaxed);
                }
                _ => return,
            },
        }
    }
}

impl fmt::Display for StormReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.header)?;
        writeln!(f, "storm users: {}", self.registration)?;
        writeln!(f, "chatters: {}", self.chat_setup)?;
        writeln!(
            f,
            "storm: {} logins at once while {} users exchange {} msg/s",
            self.storm_users, self.chatters, self.rate
        )?;
        writeln!(
            f,
            "logins: {} ok, {} refused, {} failed or unanswered, all answered within {:.2} s",
            self.logins.ok,
            self.logins.refused,
            self.logins.failed,
            self.logins.duration.as_secs_f64()
        )?;
        if let Some(e) = &self.logins.first_failure {
            writeln!(f, "first login problem: {e}")?;
        }
        writeln!(f, "login time: {}", self.logins.latency)?;
        writeln!(f, "message latency before the storm: {}", self.before)?;
        writeln!(f, "message latency during the storm: {}", self.during)?;
        writeln!(f, "message latency after the storm: {}", self.after)?;
        let l = &self.load;
        writeln!(
            f,
            "messages: {} sent, {} delivered, {} lost, {} duplicates, {} refused, {} dropped connections",
            l.sent,
            l.delivered,
            l.lost(),
            l.duplicates,
            l.refused,
            l.dropped_connections
        )?;
        writeln!(f, "send lag behind schedule: {}", l.send_lag)?;
        let all = if self.per_node.is_some() {
            ", all nodes"
        } else {
            ""
        };
        if let Some(c) = &self.server_storm_cpu {
            let per_login = c.total().as_secs_f64() / self.storm_users.max(1) as f64;
            writeln!(
                f,
                "server CPU during the storm{all}: {} ({} per login)",
                report::cpu(c),
                ms(Duration::from_secs_f64(per_login))
            )?;
        }
        writeln!(f, "machine CPU during the storm: {}", self.machine)?;
        let (frames, bytes) = self.lists_received;
        writeln!(
            f,
            "user lists received by the storm users after their logins: {frames} frames, {:.1} MB",
            bytes as f64 / 1e6
        )?;
        if let Some((b, a)) = self.server_rss_kib {
            writeln!(
                f,
                "server RSS{all}: {} before, {} after",
                report::mib(b),
                report::mib(a)
            )?;
        }
        if let Some(nodes) = &self.per_node {
            writeln!(f, "server CPU and RSS per node during the storm:\n{nodes}")?;
        }
        Ok(())
    }
}
