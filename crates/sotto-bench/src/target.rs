//! The server under test: one already running (given by URL, and by PID if
//! its CPU and memory are to be read), or one the bench starts itself from
//! its own binary, so that a run is reproducible from one command line.

use super::probe::{self, Pid};
use anyhow::{Context, bail};
use clap::Args;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::http::Uri;

/// Where the server is, or how to start it.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Chat URL of a running server; loopback addresses only. Ignored with --spawn.
    #[arg(long, default_value = "ws://127.0.0.1:12345/")]
    pub url: String,
    /// Start `sotto serve` from this binary for the run and stop it afterwards
    /// (its database and log live in --state-dir).
    #[arg(long)]
    pub spawn: bool,
    /// PID of a server started by hand, to read its CPU time and RSS from /proc.
    #[arg(long, conflicts_with = "spawn")]
    pub server_pid: Option<u32>,
    /// Chat port of the spawned server (0: any free port).
    #[arg(long, default_value_t = 23450)]
    pub chat_port: u16,
    /// HTTP port of the spawned server (0: any free port).
    #[arg(long, default_value_t = 28080)]
    pub http_port: u16,
    /// Folder for the spawned server's database and log and for cached tokens,
    /// so users are registered once and reused by later runs.
    #[arg(long, default_value = "bench-state")]
    pub state_dir: PathBuf,
    /// Argon2id memory (KiB) of the spawned server; also names the user pool.
    #[arg(long, default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// Argon2id passes of the spawned server.
    #[arg(long, default_value_t = 2)]
    pub argon2_iterations: u32,
    /// Argon2id lanes of the spawned server.
    #[arg(long, default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// --user-list-max of the spawned server.
    #[arg(long, default_value_t = 1000)]
    pub user_list_max: usize,
    /// Before setting up users, wait up to this many seconds for the machine to be
    /// quiet (under 10% busy for 2 s): other work on it skews every figure.
    #[arg(long, default_value_t = 0.0)]
    pub wait_quiet: f64,
    /// Further option for the spawned server, e.g. --server-arg=--hash-workers=2 (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// With --spawn: how many `sotto serve` nodes to start. More than one
    /// starts a cluster: a fresh PostgreSQL database (see --database), a
    /// nats-server of the bench's own, and user i on node i % N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// With --spawn: run the nodes on PostgreSQL, in a fresh database created
    /// through this URL (an existing database to connect to, e.g.
    /// postgres://postgres@127.0.0.1:5432/test) and dropped at the end. Implied, with
    /// that default, by --nodes above 1.
    #[arg(long, requires = "spawn")]
    pub database: Option<String>,
    /// Keep the fresh PostgreSQL database of a --database or --nodes run
    /// instead of dropping it at the end; the report names it, for
    /// --reuse-database.
    #[arg(long)]
    pub keep_state: bool,
    /// With --spawn: run the nodes on a database an earlier --keep-state
    /// run kept (sotto_bench_<pid>_<time>, on the server of --database or
    /// the default) instead of a fresh one, and leave it in place. Its
    /// compat users come online with the tokens that run cached in
    /// --state-dir (give the same one): no registration or Argon2 login
    /// (native users still log in).
    #[arg(long, requires = "spawn", value_name = "NAME")]
    pub reuse_database: Option<String>,
}

impl TargetArgs {
    /// Whether the run spawns a cluster (PostgreSQL and NATS) rather than
    /// one server on SQLite or one given by URL.
    pub(crate) fn is_cluster(&self) -> bool {
        self.spawn && (self.nodes > 1 || self.database.is_some() || self.reuse_database.is_some())
    }

    /// Waits for a quiet machine if --wait-quiet asks for it.
    pub(crate) async fn wait_quiet(&self) {
        if self.wait_quiet > 0.0 {
            let limit = Duration::from_secs_f64(self.wait_quiet.min(3600.0));
            let busy = probe::wait_for_quiet(limit).await;
            eprintln!(
                "sotto bench: machine {:.0}% busy before measuring",
                busy * 100.0
            );
        }
    }

    /// The Argon2 parameters as the report states them.
    pub(crate) fn argon2_line(&self) -> String {
        let how = if self.spawn {
            "given to the spawned server"
        } else {
            "as stated with --argon2-*; not checked, the server was started elsewhere"
        };
        format!(
            "Argon2id m={} KiB, t={}, p={} ({how})",
            self.argon2_memory_kib, self.argon2_iterations, self.argon2_parallelism
        )
    }

    /// A user-name prefix that names the Argon2 parameters, because a
    /// stored hash keeps the parameters it was made with: users registered
    /// under cheap settings would make a later "expensive" login cheap.
    pub(crate) fn pool_prefix(&self) -> String {
        format!(
            "b{}-{}-{}-",
            self.argon2_memory_kib, self.argon2_iterations, self.argon2_parallelism
        )
    }
}

/// Tokens outlive a run by a week on a spawned server, so later runs can
/// Authorize instead of paying for an Argon2 login per user.
const SPAWNED_SESSION_IDLE_SECS: &str = "604800";

/// How long a spawned server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(60);

pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// The HTTP port (account API and `/ws`): the spawned server's, or
    /// --http-port on the URL's host; None when not known.
    pub http: Option<SocketAddr>,
    pub pid: Option<Pid>,
    /// What the report says about the server.
    pub description: String,
    child: Option<Child>,
}

impl Target {
    /// The one server of a single-node run; see [`crate::cluster::Targets`]
    /// for scenarios that can run on several.
    pub async fn open(args: &TargetArgs) -> anyhow::Result<Target> {
        if args.is_cluster() || args.nodes > 1 {
            bail!(
                "--nodes, --database and --reuse-database are supported by `messages --protocol \
                 native`, `converge`, `storm` and `idle --clients` only"
            );
        }
        if args.spawn {
            let plan = NodePlan::single(args)?;
            return spawn(args, &plan).await;
        }
        let addr = loopback_addr(&args.url).await?;
        let description = match args.server_pid {
            Some(pid) => format!("running at {} (pid {pid})", args.url),
            None => format!(
                "running at {} (no --server-pid: no CPU or RSS figures)",
                args.url
            ),
        };
        Ok(Target {
            url: args.url.clone(),
            addr,
            http: (args.http_port != 0).then(|| SocketAddr::new(addr.ip(), args.http_port)),
            pid: args.server_pid.map(Pid::Other),
            description,
            child: None,
        })
    }

    /// A server known only by its address: for tasks that open
    /// connections beside a run and never read the process.
    pub fn at(url: String, addr: SocketAddr) -> Target {
        Target {
            description: format!("running at {url}"),
            url,
            addr,
            http: None,
            pid: None,
            child: None,
        }
    }

    /// The server's counters now, if the bench knows its PID.
    pub(crate) fn sample(&self) -> Option<probe::Sample> {
        let pid = self.pid?;
        match probe::sample(pid) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("sotto bench: {e:#}");
                None
            }
        }
    }

    /// Kills a spawned server at once (SIGKILL), as a crash would, and
    /// reaps it; its CPU and memory are no longer read.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        let child = self
            .child
            .as_mut()
            .context("only a spawned server can be killed")?;
        child.start_kill().context("cannot kill the server")?;
        child.wait().await.context("cannot reap the server")?;
        self.pid = None;
        Ok(())
    }

    /// Stops a spawned server: SIGTERM for a graceful shutdown, then a kill
    /// if it has not exited in time. A server given by URL is left alone.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Resolves a ws:// URL and refuses anything but loopback: a load test
/// sends traffic only to this machine.
async fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("only ws:// URLs are supported, not {url}");
    }
    let host = uri.host().context("URL without host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?;
    let addr = addrs.next().context("host resolves to nothing")?;
    if !addr.ip().is_loopback() {
        bail!("refusing to load {addr}: the bench targets loopback addresses only");
    }
    Ok(addr)
}

/// How one spawned server is started: where its files go, its ports, and
/// for a cluster node its database and broker.
pub(crate) struct NodePlan {
    /// Folder of its log (and its SQLite database when not on PostgreSQL).
    pub dir: PathBuf,
    pub chat_port: u16,
    pub http_port: u16,
    /// A postgres:// URL; None: SQLite in `dir`.
    pub database: Option<String>,
    /// The nats:// URL and subject prefix of its cluster.
    pub broker: Option<(String, String)>,
}

impl NodePlan {
    /// The single server of `--spawn`: SQLite and its log in --state-dir.
    fn single(args: &TargetArgs) -> anyhow::Result<NodePlan> {
        Ok(NodePlan {
            dir: args.state_dir.clone(),
            chat_port: free_port_if_zero(args.chat_port)?,
            http_port: free_port_if_zero(args.http_port)?,
            database: None,
            broker: None,
        })
    }
}

/// Starts `sotto serve` from this binary as `plan` says and waits until it
/// accepts connections on its chat port.
pub(crate) async fn spawn(args: &TargetArgs, plan: &NodePlan) -> anyhow::Result<Target> {
    std::fs::create_dir_all(&plan.dir)
        .with_context(|| format!("cannot create {}", plan.dir.display()))?;
    let (chat_port, http_port) = (plan.chat_port, plan.http_port);
    let addr = SocketAddr::from(([127, 0, 0, 1], chat_port));
    if tokio::net::TcpStream::connect(addr).await.is_ok() {
        bail!("port {chat_port} is already in use; pick another with --chat-port");
    }
    let server_args = serve_args(args, plan);
    let exe = std::env::current_exe().context("cannot find the sotto binary")?;
    let log_path = plan.dir.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut child = Command::new(&exe)
        .args(&server_args)
        .env(
            "SOTTO_LOG",
            std::env::var("SOTTO_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    wait_until_listening(&mut child, addr, &log_path).await?;
    let pid = child.id().context("spawned server has no pid")?;
    Ok(Target {
        url: format!("ws://{addr}/"),
        addr,
        http: Some(SocketAddr::from(([127, 0, 0, 1], http_port))),
        pid: Some(Pid::Other(pid)),
        description: format!("spawned: sotto {} (pid {pid})", server_args.join(" ")),
        child: Some(child),
    })
}

fn serve_args(args: &TargetArgs, plan: &NodePlan) -> Vec<String> {
    let database = match &plan.database {
        Some(url) => url.clone(),
        None => plan.dir.join("sotto.db").display().to_string(),
    };
    let mut v: Vec<String> = vec![
        "serve".into(),
        "--listen=127.0.0.1".into(),
        format!("--chat-port={}", plan.chat_port),
        format!("--http-port={}", plan.http_port),
        format!("--database={database}"),
        format!("--argon2-memory-kib={}", args.argon2_memory_kib),
        format!("--argon2-iterations={}", args.argon2_iterations),
        format!("--argon2-parallelism={}", args.argon2_parallelism),
        format!("--user-list-max={}", args.user_list_max),
        format!("--session-idle-secs={SPAWNED_SESSION_IDLE_SECS}"),
        // All load comes from one address: the per-address limits that
        // protect a real server would measure themselves, not the server.
        "--max-connections-per-ip=0".into(),
        "--max-unauthenticated-per-ip=0".into(),
        "--max-unauthenticated=20000".into(),
        "--login-rate-per-ip=0".into(),
        "--login-rate-per-name=0".into(),
        // Load users send far faster than a person: the per-user send
        // limits would measure themselves.
        "--send-rate-per-user=0".into(),
        "--send-bytes-per-minute=0".into(),
    ];
    if let Some((url, prefix)) = &plan.broker {
        v.push(format!("--broker={url}"));
        v.push(format!("--broker-prefix={prefix}"));
    }
    v.extend(args.server_args.iter().cloned());
    v
}

pub(crate) fn free_port_if_zero(port: u16) -> anyhow::Result<u16> {
    if port != 0 {
        return Ok(port);
    }
    let l = StdListener::bind(("127.0.0.1", 0)).context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

async fn wait_until_listening(
    child: &mut Child,
    addr: SocketAddr,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the spawned server exited ({status}) before listening; see {}",
                log.display()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the spawned server did not listen on {addr} in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_urls_are_accepted() {
        assert!(loopback_addr("ws://127.0.0.1:1/").await.is_ok());
        assert!(loopback_addr("ws://[::1]:1/").await.is_ok());
        assert!(loopback_addr("ws://10.0.0.1:1/").await.is_err());
        assert!(loopback_addr("wss://127.0.0.1:1/").await.is_err());
    }
}
