//! Bench users: created once, reused by every later run.
//!
//! A login costs tens of milliseconds of Argon2 by design, so 19,000 fresh
//! logins per run would take minutes and pollute the server's memory with
//! hashing buffers. Users are named `<prefix><kind><index>`; the token each
//! got at its last login is kept in `<state-dir>/tokens.tsv` (a cluster
//! run: in its database's own file, see [`crate::cluster`]), and a later
//! run first tries Authorize with it, which costs no hashing. Only when that
//! fails does a user register (or, if it exists, log in) with its password.
//!
//! On several nodes, user `i` of a range is set up on node `i % N`, as
//! [`crate::cluster::Targets::node_index`] places it.

use super::client::{self, Buffers, LoginAnswer, Ws};
use super::target::{Target, TargetArgs};
use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How bench users are named and set up.
#[derive(Debug, Clone, Args)]
pub struct PoolArgs {
    /// Password of every bench user.
    #[arg(long, default_value = "bench-password")]
    pub password: String,
    /// User-name prefix [default: b<memory>-<iterations>-<lanes>- from the Argon2 options].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Connections set up (connect, then Authorize or log in) at once.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,
}

/// Which group of users: message traffic and idle connections use the
/// same group, the login storm its own (its logins revoke their tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Storm,
    /// Users of the native protocol's message traffic: kept apart from
    /// the compat ones, so neither is replayed the other's stored messages.
    Native,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Chat => 'u',
            Kind::Storm => 's',
            Kind::Native => 'n',
        }
    }
}

/// A bench user with a live session.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub id: String,
    pub token: String,
}

/// A user whose connection is authenticated.
pub struct Online {
    pub user: User,
    pub ws: Ws,
}

/// How setup went: how many users needed an Argon2 run on the server.
#[derive(Debug, Clone, Default)]
pub struct SetupReport {
    pub authorized: usize,
    pub logged_in: usize,
    pub registered: usize,
    pub already_registered: usize,
    pub elapsed: Duration,
}

impl SetupReport {
    /// Logins and registrations: each cost the server one Argon2 hash.
    pub fn hashed(&self) -> usize {
        self.logged_in + self.registered
    }
}

impl std::fmt::Display for SetupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} authorized with cached tokens, {} logged in, {} registered, {} already registered, in {:.1} s",
            self.authorized,
            self.logged_in,
            self.registered,
            self.already_registered,
            self.elapsed.as_secs_f64()
        )
    }
}

/// How one user came online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Authorized,
    LoggedIn,
    Registered,
}

/// Token cache entries: name → (id, token).
type Cache = HashMap<String, (String, String)>;

pub(crate) struct Pool {
    prefix: String,
    password: String,
    cache_path: PathBuf,
    concurrency: usize,
    /// Source addresses connections are opened from, in turn (none: the
    /// kernel's choice).
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
}

/// Answers "busy" are retried this many times, a second apart.
const BUSY_RETRIES: usize = 120;

impl Pool {
    pub fn new(target: &TargetArgs, pool: &PoolArgs) -> Pool {
        Pool {
            prefix: pool.prefix.clone().unwrap_or_else(|| target.pool_prefix()),
            password: pool.password.clone(),
            cache_path: target.state_dir.join("tokens.tsv"),
            concurrency: pool.setup_concurrency.max(1),
            sources: Vec::new(),
            next_source: AtomicUsize::new(0),
        }
    }

    /// Caches tokens in `path` instead of --state-dir's `tokens.tsv`.
    pub(crate) fn with_token_cache(mut self, path: PathBuf) -> Pool {
        self.cache_path = path;
        self
    }

    /// Opens this pool's connections from `sources` in turn.
    pub(crate) fn with_sources(mut self, sources: Vec<IpAddr>) -> Pool {
        self.sources = sources;
        self
    }

    /// The source address for the next connection, if the pool has any.
    fn source(&self) -> Option<IpAddr> {
        let n = self.next_source.fetch_add(1, Ordering::Relaxed);
        self.sources.get(n % self.sources.len().max(1)).copied()
    }

    /// The users' password.
    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    pub fn name(&self, kind: Kind, index: usize) -> String {
        format!("{}{}{index:06}", self.prefix, kind.letter())
    }

    /// Connects users `range` of `kind` and authenticates each, in order of
    /// index. Fails if any user cannot be brought online.
    pub(crate) async fn bring_online(
        &self,
        target: &Target,
        kind: Kind,
        range: Range<usize>,
        buffers: Buffers,
    ) -> anyhow::Result<(Vec<Online>, SetupReport)> {
        self.bring_online_on(std::slice::from_ref(target), kind, range, buffers)
            .await
    }

    /// [`Pool::bring_online`] over several nodes: user `i` on node
    /// `i % nodes.len()`.
    pub(crate) async fn bring_online_on(
        &self,
        nodes: &[Target],
        kind: Kind,
        range: Range<usize>,
        buffers: Buffers,
    ) -> anyhow::Result<(Vec<Online>, SetupReport)> {
        if nodes.is_empty() {
            bail!("no server to bring users online on");
        }
        let started = Instant::now();
        let cache = load_cache(&self.cache_path);
        let total = range.len();
        let mut results: Vec<(usize, anyhow::Result<(Parked, How)>)> =
            futures_util::stream::iter(range)
                .map(|i| {
                    let name = self.name(kind, i);
                    let cached = cache.get(&name).cloned();
                    let target = &nodes[i % nodes.len()];
                    async move {
                        let online = self.online_one(target, name, cached, buffers).await;
                        (i, online.map(|(o, how)| (park(o), how)))
                    }
                })
                .buffer_unordered(self.concurrency)
                .inspect(progress(total, "online"))
                .collect()
                .await;
        results.sort_by_key(|(i, _)| *i);
        let (online, mut report, failures, fresh) = collect(results).await;
        if !fresh.is_empty() {
            save_cache(&self.cache_path, &fresh)?;
        }
        if let Some(first) = failures.into_iter().next() {
            bail!(
                "{} of {total} users could not come online; first: {first:#}",
                total - online.len()
            );
        }
        report.elapsed = started.elapsed();
        Ok((online, report))
    }

    /// Makes sure users `range` of `kind` exist, without keeping them
    /// online; user `i` registers through node `i % nodes.len()` (any node
    /// would do, spreading them spreads the hashing). An existing name
    /// costs the server no hashing.
    pub(crate) async fn ensure_registered(
        &self,
        nodes: &[Target],
        kind: Kind,
        range: Range<usize>,
    ) -> anyhow::Result<SetupReport> {
        if nodes.is_empty() {
            bail!("no server to register users on");
        }
        let started = Instant::now();
        let total = range.len();
        let results: Vec<anyhow::Result<bool>> = futures_util::stream::iter(range)
            .map(|i| self.register_one(&nodes[i % nodes.len()], self.name(kind, i)))
            .buffer_unordered(self.concurrency)
            .inspect(progress(total, "registered"))
            .collect()
            .await;
        let mut report = SetupReport::default();
        for r in results {
            if r? {
                report.registered += 1;
            } else {
                report.already_registered += 1;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn online_one(
        &self,
        target: &Target,
        name: String,
        cached: Option<(String, String)>,
        buffers: Buffers,
    ) -> anyhow::Result<(Online, How)> {
        let mut ws = client::connect_from(target.addr, &target.url, buffers, self.source()).await?;
        if let Some((id, token)) = cached
            && client::authorize(&mut ws, &name, &token).await?
        {
            let user = User { name, id, token };
            return Ok((Online { user, ws }, How::Authorized));
        }
        // Register first: a taken name is refused before any hashing, so a
        // user costs one Argon2 run whether or not it exists yet.
        let (answer, how) = match self.credentials(&mut ws, 1, &name).await? {
            LoginAnswer::Refused(e) if e.contains("already exists") => {
                (self.credentials(&mut ws, 0, &name).await?, How::LoggedIn)
            }
            answer => (answer, How::Registered),
        };
        match answer {
            LoginAnswer::LoggedIn { token, id } => {
                let user = User { name, id, token };
                Ok((Online { user, ws }, how))
            }
            LoginAnswer::Refused(e) => bail!("{name} cannot log in: {e}"),
        }
    }

    /// Registers `name`; false if it already existed.
    async fn register_one(&self, target: &Target, name: String) -> anyhow::Result<bool> {
        let mut ws = client::connect(target.addr, &target.url, Buffers::Small).await?;
        let created = match self.credentials(&mut ws, 1, &name).await? {
            LoginAnswer::LoggedIn { .. } => true,
            LoginAnswer::Refused(e) if e.contains("already exists") => false,
            LoginAnswer::Refused(e) => bail!("cannot register {name}: {e}"),
        };
        let _ = ws.close(None).await;
        Ok(created)
    }

    /// One Login with the pool's password, as a storm user sends it: an
    /// answer that the server is busy is a result here, not retried.
    pub(crate) async fn login_once(&self, ws: &mut Ws, name: &str) -> anyhow::Result<LoginAnswer> {
        client::login(ws, 0, name, &self.password).await
    }

    /// Login (0) or Register (1), retried while the server says it is busy
    /// (its Argon2 queue is full).
    async fn credentials(
        &self,
        ws: &mut Ws,
        action: u8,
        name: &str,
    ) -> anyhow::Result<LoginAnswer> {
        for _ in 0..BUSY_RETRIES {
            match client::login(ws, action, name, &self.password).await? {
                LoginAnswer::Refused(e) if e.contains("busy") => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                answer => return Ok(answer),
            }
        }
        bail!("the server stayed busy while {name} tried to log in")
    }
}

/// Unparks the users that came online, in order, counting how each did;
/// returns them with the failures and the new tokens (of those that
/// logged in or registered).
async fn collect(
    results: Vec<(usize, anyhow::Result<(Parked, How)>)>,
) -> (Vec<Online>, SetupReport, Vec<anyhow::Error>, Cache) {
    let mut report = SetupReport::default();
    let mut fresh = Cache::new();
    let mut online = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (_, r) in results {
        let unparked = match r {
            Ok((parked, how)) => parked.unpark().await.map(|o| (o, how)),
            Err(e) => Err(e),
        };
        let (o, how) = match unparked {
            Ok(ok) => ok,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        match how {
            How::Authorized => report.authorized += 1,
            How::LoggedIn => report.logged_in += 1,
            How::Registered => report.registered += 1,
        }
        if how != How::Authorized {
            let entry = (o.user.id.clone(), o.user.token.clone());
            fresh.insert(o.user.name.clone(), entry);
        }
        online.push(o);
    }
    (online, report, failures, fresh)
}

/// A user that is online but not in use yet. Its connection is read (and
/// what arrives discarded) until the whole setup is done: a setup of
/// thousands of users takes minutes, and a connection nobody reads would
/// miss the server's pings and fill its queue with user lists, and the
/// server would rightly drop it.
struct Parked {
    user: User,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<Ws>>,
}

fn park(online: Online) -> Parked {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let mut ws = online.ws;
    let task = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = &mut stopped => return Ok(ws),
                n = ws.next() => n,
            };
            match next {
                Some(Ok(Message::Close(f))) => bail!("closed by the server during setup: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("connection failed during setup: {e}"),
                None => bail!("connection ended during setup"),
            }
        }
    });
    Parked {
        user: online.user,
        stop,
        task,
    }
}

impl Parked {
    async fn unpark(self) -> anyhow::Result<Online> {
        let _ = self.stop.send(());
        let ws = self.task.await??;
        Ok(Online {
            user: self.user,
            ws,
        })
    }
}

/// Prints a line to stderr every 1,000 finished users, so a long setup
/// shows that it is moving.
fn progress<T>(total: usize, what: &'static str) -> impl FnMut(&T) {
    let mut done = 0usize;
    move |_| {
        done += 1;
        if done.is_multiple_of(1000) || done == total {
            eprintln!("sotto bench: {done}/{total} users {what}");
        }
    }
}

/// Reads the token cache; a missing or damaged file is an empty cache
/// (every user then logs in again).
fn load_cache(path: &std::path::Path) -> Cache {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, id, token) = (f.next()?, f.next()?, f.next()?);
            Some((name.to_owned(), (id.to_owned(), token.to_owned())))
        })
        .collect()
}

/// Adds `fresh` tokens to the cache file. Several bench processes may
/// share one state directory (`idle --clients`), each with its own users:
/// under a lock, the file is read again and only this run's tokens
/// replace what it holds, so no process drops another's.
fn save_cache(path: &std::path::Path, fresh: &Cache) -> anyhow::Result<()> {
    let lock_path = path.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let mut cache = load_cache(path);
    cache.extend(fresh.iter().map(|(k, v)| (k.clone(), v.clone())));
    write_cache(path, &cache)
}

/// Writes the cache through a temporary file, so an interrupted run never
/// leaves half a file. Tokens are secrets of throwaway bench accounts.
fn write_cache(path: &std::path::Path, cache: &Cache) -> anyhow::Result<()> {
    let mut lines: Vec<String> = cache
        .iter()
        .map(|(name, (id, token))| format!("{name}\t{id}\t{token}\n"))
        .collect();
    lines.sort();
    let tmp = path.with_extension("tsv.tmp");
    std::fs::write(&tmp, lines.concat())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trips_and_skips_damaged_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.tsv");
        let mut c = Cache::new();
        c.insert("u1".into(), ("abc123".into(), "t1".into()));
        save_cache(&path, &c).unwrap();
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap() + "broken\n").unwrap();
        assert_eq!(load_cache(&path), c);
        assert!(load_cache(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn saving_keeps_what_other_processes_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.tsv");
        let entry = |t: &str| ("id".to_owned(), t.to_owned());
        let one = Cache::from([("u1".to_owned(), entry("a")), ("u2".to_owned(), entry("b"))]);
        save_cache(&path, &one).unwrap();
        let other = Cache::from([("u2".to_owned(), entry("c")), ("u3".to_owned(), entry("d"))]);
        save_cache(&path, &other).unwrap();
        let all = load_cache(&path);
        assert_eq!(all.len(), 3);
        assert_eq!(all["u1"], entry("a"));
        assert_eq!(all["u2"], entry("c"));
    }
}
