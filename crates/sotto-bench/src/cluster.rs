//! The servers under test when a run may have several: one server as
//! [`Target::open`] gives it, or with `--spawn --nodes N` (or `--database`)
//! a cluster the bench starts and stops itself: a fresh PostgreSQL
//! database (or a kept one, `--reuse-database`: see [`database`]), a
//! `nats-server` of its own on a free loopback port, and N `sotto serve`
//! nodes sharing both. User `i` of a run belongs on node `i % N`
//! ([`Targets::node_index`]).
//!
//! Everything started is stopped again, on error too: the nodes, then
//! NATS, then the database is dropped (unless kept or reused).

mod database;

use crate::setup::{Pool, PoolArgs};
use crate::target::{self, NodePlan, Target, TargetArgs};
use anyhow::{Context, bail};
use database::Database;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The admin URL fresh databases are created through when --nodes asks
/// for a cluster without --database: the local trust-auth test server
/// (the user is named: without one the client would not pick `postgres`).
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where `nats-server` is looked for after PATH (Debian's package).
const NATS_FALLBACK: &str = "/usr/sbin/nats-server";

/// How long a node may take to report ready (database and NATS reached).
const READY_WAIT: Duration = Duration::from_secs(60);

/// The servers of a run, in node order.
pub struct Targets {
    pub(crate) nodes: Vec<Target>,
    services: Option<Services>,
}

/// What a spawned cluster shares besides its nodes.
struct Services {
    nats: Child,
    nats_addr: SocketAddr,
    db: Option<Database>,
}

impl Targets {
    /// One server (spawned or given) unless the arguments ask for a
    /// cluster, which is then started and every node waited for.
    pub async fn open(args: &TargetArgs) -> anyhow::Result<Targets> {
        if args.nodes > 1 && !args.spawn {
            bail!("--nodes needs --spawn: the bench starts the cluster itself");
        }
        if !args.is_cluster() {
            let one = Target::open(args).await?;
            return Ok(Targets {
                nodes: vec![one],
                services: None,
            });
        }
        let services = Services::start(args).await?;
        let mut targets = Targets {
            nodes: Vec::new(),
            services: Some(services),
        };
        match targets.spawn_nodes(args).await {
            Ok(()) => Ok(targets),
            Err(e) => {
                targets.stop().await;
                Err(e)
            }
        }
    }

    /// Index of the node user `user` of a run connects to: users are
    /// spread round-robin, so with N nodes user i and user i + 1 are on
    /// different nodes.
    pub fn node_index(&self, user: usize) -> usize {
        user % self.nodes.len()
    }

    /// The compat users' setup for this run: its token cache is the
    /// run's database's (a token is valid on one database only), or
    /// --state-dir's for a single server.
    pub(crate) fn pool(&self, args: &TargetArgs, pool: &PoolArgs) -> Pool {
        let pool = Pool::new(args, pool);
        match self.token_cache() {
            Some(path) => pool.with_token_cache(path.to_owned()),
            None => pool,
        }
    }

    /// The token cache of the run's database, if it has one of its own.
    pub(crate) fn token_cache(&self) -> Option<&std::path::Path> {
        let db = self.services.as_ref()?.db.as_ref()?;
        Some(db.token_cache())
    }

    /// The HTTP address of every node, in node order; an error when one
    /// is unknown (a server given by URL without --http-port).
    pub fn http_addrs(&self) -> anyhow::Result<Vec<SocketAddr>> {
        self.nodes
            .iter()
            .map(|t| {
                t.http
                    .context("the native protocol needs the server's HTTP port: give --http-port")
            })
            .collect()
    }

    /// What the report's `server:` line says: the single server as before,
    /// or the cluster and then one line per node.
    pub fn description(&self) -> String {
        let Some(s) = &self.services else {
            return self.nodes[0].description.clone();
        };
        let db = s.db.as_ref().map_or("?".to_owned(), |d| d.url_for_report());
        let mut text = format!(
            "{} spawned nodes on PostgreSQL {db}, nats-server at {} (pid {})",
            self.nodes.len(),
            s.nats_addr,
            s.nats.id().unwrap_or(0)
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let http = n.http.map_or(0, |h| h.port());
            text.push_str(&format!(
                "\nnode {i}: chat port {}, HTTP port {http}, {}",
                n.addr.port(),
                n.description
            ));
        }
        text
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(i).context("no such node")?;
        node.kill().await
    }

    /// Stops every node (gracefully, all at once), then NATS, then drops
    /// the run's database unless it is to be kept.
    pub async fn stop(self) {
        let stops = self.nodes.into_iter().map(Target::stop);
        futures_util::future::join_all(stops).await;
        if let Some(s) = self.services {
            s.stop().await;
        }
    }

    /// Starts the nodes one after another (the first applies the
    /// database's migrations alone), each ready before the next.
    async fn spawn_nodes(&mut self, args: &TargetArgs) -> anyhow::Result<()> {
        let services = self.services.as_ref().context("no cluster services")?;
        let database = services.db.as_ref().map(|d| d.url().to_owned());
        let broker = (
            format!("nats://{}", services.nats_addr),
            format!("bench{}", std::process::id()),
        );
        for i in 0..usize::from(args.nodes) {
            let plan = NodePlan {
                dir: args.state_dir.join(format!("node{i}")),
                chat_port: nth_port(args.chat_port, i)?,
                http_port: nth_port(args.http_port, i)?,
                database: database.clone(),
                broker: Some(broker.clone()),
            };
            let node = target::spawn(args, &plan)
                .await
                .with_context(|| format!("node {i}"))?;
            let http = node.http;
            self.nodes.push(node);
            if let Some(http) = http {
                wait_ready(http)
                    .await
                    .with_context(|| format!("node {i} (log in {})", plan.dir.display()))?;
            }
        }
        Ok(())
    }
}

/// Node `i`'s port: any free one when the option is 0, else the option's
/// port plus `i`.
fn nth_port(base: u16, i: usize) -> anyhow::Result<u16> {
    if base == 0 {
        return target::free_port_if_zero(0);
    }
    u16::try_from(usize::from(base) + i)
        .ok()
        .context("port number out of range for this many nodes")
}

impl Services {
    async fn start(args: &TargetArgs) -> anyhow::Result<Services> {
        let admin = args
            .database
            .clone()
            .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned());
        database::sweep(&admin, &args.state_dir).await;
        let reuse = args.reuse_database.as_deref();
        let db = Database::open(&admin, reuse, args.keep_state, &args.state_dir).await?;
        match start_nats(&args.state_dir).await {
            Ok((nats, nats_addr)) => Ok(Services {
                nats,
                nats_addr,
                db: Some(db),
            }),
            Err(e) => {
                db.finish().await;
                Err(e)
            }
        }
    }

    async fn stop(mut self) {
        let _ = self.nats.kill().await;
        if let Some(db) = self.db.take() {
            db.finish().await;
        }
    }
}

/// `nats-server` on PATH, else [`NATS_FALLBACK`].
fn find_nats_server() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    let fallback = PathBuf::from(NATS_FALLBACK);
    match on_path {
        Some(p) => Ok(p),
        None if fallback.is_file() => Ok(fallback),
        None => bail!(
            "a cluster run needs nats-server, found neither on PATH nor at {NATS_FALLBACK} \
             (apt-get install nats-server)"
        ),
    }
}

/// Starts a `nats-server` of the run's own on a free loopback port, its
/// log in `dir`, and waits until it accepts connections.
async fn start_nats(dir: &std::path::Path) -> anyhow::Result<(Child, SocketAddr)> {
    let exe = find_nats_server()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let port = target::free_port_if_zero(0)?;
    let log = dir.join("nats-server.log");
    let mut child = Command::new(&exe)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("nats-server exited ({status}); see {}", log.display());
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill().await;
            bail!("nats-server did not listen on {addr} in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, addr))
}

/// Waits until GET /readyz answers 200: the node reached its database and
/// its broker, so what it is sent will cross to the other nodes.
async fn wait_ready(http: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    loop {
        if readyz(http).await == Some(200) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not ready (GET /readyz on {http}) in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of GET /readyz, or None when there is no answer in time.
async fn readyz(http: SocketAddr) -> Option<u16> {
    let exchange = async {
        let mut s = TcpStream::connect(http).await.ok()?;
        let req = format!("GET /readyz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = vec![0u8; 64];
        let n = s.read(&mut head).await.ok()?;
        let text = std::str::from_utf8(&head[..n]).ok()?;
        text.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_store_postgres::{redact, with_database};

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://127.0.0.1:5432/test", "x"),
            "postgres://127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert_eq!(redact("postgres://u:secret@h/x"), "postgres://u:***@h/x");
    }

    #[test]
    fn node_ports_follow_the_option() {
        assert_eq!(nth_port(28080, 2).unwrap(), 28082);
        assert!(nth_port(65535, 1).is_err());
        assert_ne!(nth_port(0, 0).unwrap(), 0);
    }
}
