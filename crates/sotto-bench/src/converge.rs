//! `sotto bench converge`: how long the surviving nodes of a cluster take
//! to tell their users that the users of a crashed node went offline.
//!
//! Users are spread over the nodes of a spawned cluster (`--spawn
//! --nodes N`, at least 2). Every user on another node than the one to be
//! killed is an observer: in the native protocol it `watch`es up to 256
//! users of that node (16.1 of PROTOCOL.md); in the compat one it gets the
//! whole user list anyway (capped by --user-list-max). Once every observer
//! sees the users it follows online, the node is killed with SIGKILL and
//! each (observer, user of the dead node) pair is timed from the kill to
//! the frame that says the user is offline (a `presence` frame, or a user
//! list without them). The figure is dominated by --node-timeout-secs of
//! the nodes (give it with --server-arg=--node-timeout-secs=3).

use crate::client::{Buffers, Ws};
use crate::cluster::Targets;
use crate::native::setup as native;
use crate::setup::{Kind, PoolArgs};
use crate::stats::Latency;
use crate::traffic::Protocol;
use anyhow::{Context, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct ConvergeArgs {
    #[command(flatten)]
    pub target: crate::target::TargetArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    /// Users online, spread over the nodes.
    #[arg(long, default_value_t = 300)]
    pub users: usize,
    /// The node to kill [default: the last].
    #[arg(long)]
    pub kill_node: Option<usize>,
    /// Which protocol the users speak: native (observers watch users of the
    /// node to be killed) or compat (everyone gets the whole user list).
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Seconds to wait, before the kill, for every observer to see the
    /// users it follows online.
    #[arg(long, default_value_t = 30.0)]
    pub settle: f64,
    /// Seconds to wait, after the kill, for every observer to see every
    /// user of the dead node go offline.
    #[arg(long, default_value_t = 60.0)]
    pub wait: f64,
}

/// Most ids in one `watch` frame (PROTOCOL.md 16.1).
const WATCH_MAX: usize = 256;

/// How often the waits look at the counts.
const POLL: Duration = Duration::from_millis(5);

/// What every observer shares with the run.
#[derive(Default)]
struct Shared {
    /// Pairs whose user the observer currently sees online.
    online: AtomicU64,
    /// Pairs whose user went offline after the kill.
    offline: AtomicU64,
    /// Nanoseconds after `epoch` of the kill; 0 before.
    killed_ns: AtomicU64,
    epoch: Option<Instant>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        let since = self.epoch.map_or(Duration::ZERO, |e| e.elapsed());
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1)
    }
}

/// One (observer, followed user) pair.
#[derive(Clone, Copy, Default)]
struct Pair {
    online: bool,
    /// Whether the user was online in the observer's view at the kill.
    online_at_kill: bool,
    /// Nanoseconds from the kill to the offline frame.
    offline_after_ns: Option<u64>,
}

/// An observer's view of the users it follows, by id.
struct Observer {
    pairs: HashMap<String, Pair>,
    shared: Arc<Shared>,
    frames: u64,
}

impl Observer {
    fn new(followed: &[String], shared: Arc<Shared>) -> Observer {
        let pairs = followed
            .iter()
            .map(|id| (id.clone(), Pair::default()))
            .collect();
        Observer {
            pairs,
            shared,
            frames: 0,
        }
    }

    /// Applies one frame: a whole view (`users` frame, compat user list)
    /// or one change (`presence`). Other frames are ignored.
    fn take(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        self.frames += 1;
        let is_list = v["type"] == "users" || v["event"] == 4 || v["event"] == 1;
        if let (true, Some(users)) = (is_list, v["users"].as_array()) {
            let online: std::collections::HashSet<&str> = users
                .iter()
                .filter(|u| u["online"].as_bool() != Some(false))
                .filter_map(|u| u["id"].as_str())
                .collect();
            let ids: Vec<String> = self.pairs.keys().cloned().collect();
            for id in ids {
                let on = online.contains(id.as_str());
                self.set(&id, on);
            }
        } else if v["type"] == "presence"
            && let (Some(id), Some(on)) = (v["user"].as_str(), v["online"].as_bool())
        {
            self.set(id, on);
        }
    }

    fn set(&mut self, id: &str, on: bool) {
        let Some(p) = self.pairs.get_mut(id) else {
            return;
        };
        if p.online == on {
            return;
        }
        p.online = on;
        let killed = self.shared.killed_ns.load(Ordering::Acquire);
        if on {
            self.shared.online.fetch_add(1, Ordering::AcqRel);
            return;
        }
        self.shared.online.fetch_sub(1, Ordering::AcqRel);
        if killed > 0 && p.online_at_kill && p.offline_after_ns.is_none() {
            p.offline_after_ns = Some(self.shared.now_ns().saturating_sub(killed));
            self.shared.offline.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks which pairs were online when the kill happened; called once,
    /// by the reader on its first frame after the kill (or at its end).
    fn note_kill(&mut self) {
        for p in self.pairs.values_mut() {
            p.online_at_kill = p.online;
        }
    }
}

/// Reads `ws` into an observer until `stop`; returns what it saw.
async fn observe(mut ws: Ws, mut o: Observer, stop: CancellationToken) -> Observer {
    let mut kill_noted = false;
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break,
            f = ws.next() => f,
        };
        if !kill_noted && o.shared.killed_ns.load(Ordering::Acquire) > 0 {
            o.note_kill();
            kill_noted = true;
        }
        match frame {
            Some(Ok(Message::Text(t))) => o.take(&t),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    if !kill_noted {
        o.note_kill();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    o
}

/// A user online on a node.
struct Member {
    node: usize,
    id: String,
    ws: Ws,
}

pub async fn run(args: ConvergeArgs) -> anyhow::Result<String> {
    if !args.target.spawn || args.target.nodes < 2 {
        bail!("converge needs a cluster the bench starts: --spawn --nodes N (N at least 2)");
    }
    if args.users < usize::from(args.target.nodes) {
        bail!("--users must be at least --nodes");
    }
    let mut targets = Targets::open(&args.target).await?;
    let result = measure(&args, &mut targets).await;
    targets.stop().await;
    result
}

async fn measure(args: &ConvergeArgs, targets: &mut Targets) -> anyhow::Result<String> {
    let nodes = targets.nodes.len();
    let dead = args.kill_node.unwrap_or(nodes - 1);
    if dead >= nodes {
        bail!("--kill-node must be below --nodes");
    }
    let mut report = crate::report::header_for(
        &format!("converge --protocol {:?}", args.protocol).to_lowercase(),
        &targets.description(),
        &args.target,
    );
    args.target.wait_quiet().await;
    let started = Instant::now();
    let members = match args.protocol {
        Protocol::Native => native_members(args, targets).await?,
        Protocol::Compat => compat_members(args, targets).await?,
    };
    let setup = started.elapsed();
    let dead_ids: Vec<String> = members
        .iter()
        .filter(|m| m.node == dead)
        .map(|m| m.id.clone())
        .collect();
    let shared = Arc::new(Shared {
        epoch: Some(Instant::now()),
        ..Shared::default()
    });
    let stop = CancellationToken::new();
    let (observers, total_pairs) =
        start_observers(args, members, dead, &dead_ids, &shared, &stop).await?;
    let online_before = wait_for(&shared.online, total_pairs, args.settle).await;

    let killed_at = Instant::now();
    shared.killed_ns.store(shared.now_ns(), Ordering::Release);
    targets.kill(dead).await?;
    let at_kill = shared.online.load(Ordering::Acquire);
    let converged = wait_for(&shared.offline, at_kill, args.wait).await;
    let waited = killed_at.elapsed();
    stop.cancel();
    let mut seen = Vec::with_capacity(observers.len());
    for o in observers {
        seen.push(o.await.context("an observer failed")?);
    }
    let _ = write!(
        report,
        "{}",
        Findings {
            args,
            nodes,
            dead,
            dead_users: dead_ids.len(),
            observers: seen.len(),
            total_pairs,
            online_before,
            converged,
            waited,
            setup,
            seen: &seen,
        }
    );
    Ok(report)
}

/// Native users: accounts over the API (user i through node i % N), each
/// with `/ws` open on its node.
async fn native_members(args: &ConvergeArgs, targets: &Targets) -> anyhow::Result<Vec<Member>> {
    let http = targets.http_addrs()?;
    let pool = targets.pool(&args.target, &args.pool);
    let accounts = native::accounts(
        &http,
        &pool,
        &args.pool.password,
        args.users,
        args.pool.setup_concurrency,
    )
    .await?;
    let mut members = Vec::with_capacity(accounts.len());
    for (i, a) in accounts.iter().enumerate() {
        let node = targets.node_index(i);
        let ws = native::connect(http[node], a)
            .await
            .with_context(|| format!("native user {i} cannot open /ws"))?;
        members.push(Member {
            node,
            id: a.id.clone(),
            ws,
        });
    }
    Ok(members)
}

/// Compat users on the chat ports: a block of users per node.
async fn compat_members(args: &ConvergeArgs, targets: &Targets) -> anyhow::Result<Vec<Member>> {
    let pool = targets.pool(&args.target, &args.pool);
    let nodes = targets.nodes.len();
    let per = args.users / nodes;
    let mut members = Vec::with_capacity(args.users);
    for (n, t) in targets.nodes.iter().enumerate() {
        let end = if n + 1 == nodes {
            args.users
        } else {
            (n + 1) * per
        };
        let (online, _) = pool
            .bring_online(t, Kind::Chat, n * per..end, Buffers::Small)
            .await?;
        members.extend(online.into_iter().map(|o| Member {
            node: n,
            id: o.user.id,
            ws: o.ws,
        }));
    }
    Ok(members)
}

/// Starts one reader per user not on the dead node; a native observer
/// first watches up to [`WATCH_MAX`] users of the dead node (each its own
/// slice of them, so all are followed). Returns the readers and the
/// number of (observer, user) pairs.
async fn start_observers(
    args: &ConvergeArgs,
    members: Vec<Member>,
    dead: usize,
    dead_ids: &[String],
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> anyhow::Result<(Vec<JoinHandle<Observer>>, u64)> {
    let d = dead_ids.len();
    let mut observers = Vec::new();
    let mut pairs = 0u64;
    let (doomed, survivors): (Vec<Member>, Vec<Member>) =
        members.into_iter().partition(|m| m.node == dead);
    for m in doomed {
        // Kept open and read until the kill: a closed socket would take its
        // user offline gracefully, before the crash being measured.
        tokio::spawn(drain(m.ws, stop.clone()));
    }
    for (j, m) in survivors.into_iter().enumerate() {
        let mut ws = m.ws;
        let followed: Vec<String> = match args.protocol {
            Protocol::Native => {
                let take = d.min(WATCH_MAX);
                let ids: Vec<String> = (0..take)
                    .map(|k| dead_ids[(j * take + k) % d].clone())
                    .collect();
                let frame = serde_json::json!({"type": "watch", "users": ids}).to_string();
                ws.send(Message::text(frame))
                    .await
                    .context("cannot send watch")?;
                ids
            }
            Protocol::Compat => dead_ids.to_vec(),
        };
        pairs += followed.len() as u64;
        let o = Observer::new(&followed, shared.clone());
        observers.push(tokio::spawn(observe(ws, o, stop.clone())));
    }
    Ok((observers, pairs))
}

/// Reads and drops frames until `stop` or the connection ends.
async fn drain(mut ws: Ws, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            f = ws.next() => if !matches!(f, Some(Ok(_))) { return },
        }
    }
}

/// Waits until `count` reaches `want` or `secs` pass; the count then.
async fn wait_for(count: &AtomicU64, want: u64, secs: f64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs.clamp(0.0, 3600.0));
    loop {
        let n = count.load(Ordering::Acquire);
        if n >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Findings<'a> {
    args: &'a ConvergeArgs,
    nodes: usize,
    dead: usize,
    dead_users: usize,
    observers: usize,
    total_pairs: u64,
    online_before: u64,
    converged: u64,
    waited: Duration,
    setup: Duration,
    seen: &'a [Observer],
}

impl std::fmt::Display for Findings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let follows = match self.args.protocol {
            Protocol::Native => "watch up to 256 of them each",
            Protocol::Compat => "get the whole user list (capped by --user-list-max)",
        };
        writeln!(
            f,
            "setup: {} users online over {} nodes in {:.1} s",
            self.args.users,
            self.nodes,
            self.setup.as_secs_f64()
        )?;
        writeln!(
            f,
            "load: node {} (SIGKILL) has {} users; {} observers on the other nodes {follows}",
            self.dead, self.dead_users, self.observers
        )?;
        writeln!(
            f,
            "before the kill: {} of {} (observer, user) pairs online",
            self.online_before, self.total_pairs
        )?;
        let samples = self
            .seen
            .iter()
            .flat_map(|o| o.pairs.values())
            .filter_map(|p| p.offline_after_ns);
        let at_kill: usize = self
            .seen
            .iter()
            .flat_map(|o| o.pairs.values())
            .filter(|p| p.online_at_kill)
            .count();
        writeln!(
            f,
            "after the kill: {} of {at_kill} pairs online at the kill saw the user go offline within {:.1} s",
            self.converged,
            self.waited.as_secs_f64()
        )?;
        writeln!(
            f,
            "offline seen after the kill: {}",
            Latency::of_values(samples)
        )?;
        let frames: u64 = self.seen.iter().map(|o| o.frames).sum();
        writeln!(f, "frames read by the observers: {frames}")
    }
}
