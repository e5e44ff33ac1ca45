//! The TCP side of the impairment relay: a loopback forwarder between a
//! WebSocket client and the server that the test drives. Per direction it
//! delays bytes (fixed plus seeded jitter, order kept: TCP cannot
//! reorder), throttles them to a rate, and can stall (stop forwarding and
//! stop reading, sockets kept open, so the sender's writes back up as
//! they would behind a dead link). [`TcpRelay::cut`] resets every relayed
//! connection on both sides at once; [`TcpRelay::arm_cut`] does so when a
//! random number of bytes has gone one way, which lands cuts anywhere,
//! mid-frame included. While [`TcpRelay::set_down`] holds, new connections
//! are reset as soon as they are accepted.
//!
//! Bounded: at most [`CONNS_MAX`] relayed connections, each holding at
//! most [`CHUNKS_MAX`] chunks of [`CHUNK`] bytes per direction; the relay
//! and every connection it relays stop when it is dropped.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Relayed connections at once; more are reset on accept.
pub const CONNS_MAX: usize = 64;
/// Chunks held per direction of one connection (delayed or throttled).
pub const CHUNKS_MAX: usize = 16;
/// The most one read takes in.
pub const CHUNK: usize = 16 * 1024;

/// How one direction's bytes are shaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// Every chunk is held this long plus up to `jitter`.
    pub delay: Duration,
    pub jitter: Duration,
    /// Bytes per second; 0 for no limit.
    pub rate: u64,
}

/// A direction: `Up` is client → server, `Down` server → client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Up,
    Down,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }
}

/// Counters, to show a test really ran through a bad link.
#[derive(Debug, Default)]
pub struct TcpCounts {
    pub accepted: AtomicU64,
    /// Connections reset on accept (down, or too many).
    pub refused: AtomicU64,
    /// Cuts, and connections reset by them.
    pub cuts: AtomicU64,
    pub connections_cut: AtomicU64,
    /// Bytes forwarded, per direction (index: up 0, down 1).
    pub bytes: [AtomicU64; 2],
    /// Chunks held for a delay, and reads or writes held by a stall.
    pub delayed: AtomicU64,
    pub stalled: AtomicU64,
}

/// What the test controls, shared with every connection.
struct Link {
    shapes: [Shape; 2],
    stalls: [watch::Sender<bool>; 2],
    /// Bumped by every cut: each connection alive then ends.
    cuts: watch::Sender<u64>,
    down: AtomicBool,
    /// Per direction, the byte count at which an armed cut fires.
    cut_at: [AtomicU64; 2],
    /// One generator per direction for jitter, one for armed cuts, so a
    /// direction's fate does not depend on how traffic interleaves.
    rngs: [Mutex<StdRng>; 3],
    counts: Arc<TcpCounts>,
    recv_buffer: Option<u32>,
}

pub struct TcpRelay {
    pub addr: SocketAddr,
    pub counts: Arc<TcpCounts>,
    link: Arc<Link>,
    task: JoinHandle<()>,
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it
        // aborts them all.
        self.task.abort();
    }
}

impl TcpRelay {
    /// A relay on 127.0.0.1 to `server`. `recv_buffer` sets the receive
    /// buffer of the relay's server-side sockets (before connecting, so
    /// the window stays small): with it, a stalled `Down` blocks the
    /// server's writes after a few KiB instead of megabytes.
    pub async fn start(
        server: SocketAddr,
        up: Shape,
        down: Shape,
        recv_buffer: Option<u32>,
        seed: u64,
    ) -> TcpRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(TcpCounts::default());
        let link = Arc::new(Link {
            shapes: [up, down],
            stalls: [watch::channel(false).0, watch::channel(false).0],
            cuts: watch::channel(0).0,
            down: AtomicBool::new(false),
            cut_at: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
            rngs: [0, 1, 2].map(|i| Mutex::new(StdRng::seed_from_u64(seed ^ (i * 0x5eed)))),
            counts: counts.clone(),
            recv_buffer,
        });
        let task = tokio::spawn(accept(listener, server, link.clone()));
        TcpRelay {
            addr,
            counts,
            link,
            task,
        }
    }

    /// Stops forwarding (and reading) in `dir`, sockets kept open.
    pub fn stall(&self, dir: Dir) {
        self.link.stalls[dir.index()].send_replace(true);
    }

    pub fn resume(&self, dir: Dir) {
        self.link.stalls[dir.index()].send_replace(false);
    }

    /// Resets every relayed connection, client and server side.
    pub fn cut(&self) {
        self.link.cut();
    }

    /// Cuts once, when a number of bytes drawn from `after` has gone in
    /// `dir` from now on (the last chunk is cut short at that byte).
    pub fn arm_cut(&self, dir: Dir, after: Range<u64>) {
        let n = self.link.rngs[2].lock().unwrap().random_range(after);
        let at = self.bytes(dir) + n.max(1);
        self.link.cut_at[dir.index()].store(at, Ordering::SeqCst);
    }

    /// While down, new connections are reset as soon as they are accepted.
    pub fn set_down(&self, down: bool) {
        self.link.down.store(down, Ordering::SeqCst);
    }

    pub fn bytes(&self, dir: Dir) -> u64 {
        self.counts.bytes[dir.index()].load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    pub fn cuts(&self) -> u64 {
        self.counts.cuts.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::SeqCst)
    }

    pub fn stalled(&self) -> u64 {
        self.counts.stalled.load(Ordering::SeqCst)
    }

    pub fn delayed(&self) -> u64 {
        self.counts.delayed.load(Ordering::SeqCst)
    }
}

impl Link {
    fn cut(&self) {
        self.counts.cuts.fetch_add(1, Ordering::SeqCst);
        self.cuts.send_modify(|g| *g += 1);
    }

    /// Waits while `dir` is stalled.
    async fn unstalled(&self, dir: Dir) {
        let mut rx = self.stalls[dir.index()].subscribe();
        if *rx.borrow_and_update() {
            self.counts.stalled.fetch_add(1, Ordering::Relaxed);
            // The sender lives as long as the link: this cannot fail.
            let _ = rx.wait_for(|stalled| !stalled).await;
        }
    }

    fn hold(&self, dir: Dir) -> Duration {
        let shape = self.shapes[dir.index()];
        let jitter_ns = shape.jitter.as_nanos() as u64;
        let jitter = if jitter_ns == 0 {
            0
        } else {
            self.rngs[dir.index()]
                .lock()
                .unwrap()
                .random_range(0..jitter_ns)
        };
        shape.delay + Duration::from_nanos(jitter)
    }

    /// Counts `n` bytes going `dir`; returns how many may go before an
    /// armed cut fires (all `n` if none is due), and whether it fires.
    fn take(&self, dir: Dir, n: usize) -> (usize, bool) {
        let i = dir.index();
        let before = self.counts.bytes[i].fetch_add(n as u64, Ordering::SeqCst);
        let at = self.cut_at[i].load(Ordering::SeqCst);
        if before + n as u64 >= at
            && self.cut_at[i]
                .compare_exchange(at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return ((at.saturating_sub(before)) as usize, true);
        }
        (n, false)
    }
}

async fn accept(listener: TcpListener, server: SocketAddr, link: Arc<Link>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        if link.down.load(Ordering::SeqCst) || conns.len() >= CONNS_MAX {
            link.counts.refused.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            continue;
        }
        link.counts.accepted.fetch_add(1, Ordering::SeqCst);
        // Subscribed here, not in the task: a cut right after the accept
        // must reach this connection too.
        let cuts = link.cuts.subscribe();
        conns.spawn(relay(client, server, link.clone(), cuts));
    }
}

/// Makes the close of `s` a reset (RST) rather than an orderly FIN.
fn reset(s: &TcpStream) {
    // Deprecated because a non-zero linger blocks the thread on close;
    // a zero linger never does, it discards and resets.
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
}

async fn connect_back(server: SocketAddr, link: &Link) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = link.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect(server).await
}

/// One relayed connection: two pumps until both ends close, one fails,
/// or a cut comes; a failure or a cut resets both sides.
async fn relay(
    client: TcpStream,
    server: SocketAddr,
    link: Arc<Link>,
    mut cuts: watch::Receiver<u64>,
) {
    let Ok(back) = connect_back(server, &link).await else {
        reset(&client);
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = back.into_split();
    let ended = tokio::select! {
        r = async {
            tokio::try_join!(
                pump(&mut cr, &mut bw, Dir::Up, &link),
                pump(&mut br, &mut cw, Dir::Down, &link),
            )
        } => r.is_ok(),
        _ = cuts.changed() => {
            link.counts.connections_cut.fetch_add(1, Ordering::SeqCst);
            false
        }
    };
    if !ended {
        reset(cr.as_ref());
        reset(br.as_ref());
    }
}

/// Forwards one direction: a reader that takes chunks in (not while
/// stalled) and stamps when each is due, and a writer that sends them at
/// that time, at the direction's rate. The channel between them bounds
/// what is held. Ends at end of stream (passed on as a FIN), or with an
/// error on a failed socket or an armed cut.
async fn pump(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    dir: Dir,
    link: &Link,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_MAX);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut last_due = Instant::now();
        loop {
            link.unstalled(dir).await;
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            let hold = link.hold(dir);
            if !hold.is_zero() {
                link.counts.delayed.fetch_add(1, Ordering::Relaxed);
            }
            // Never before the previous chunk: jitter must not reorder.
            let due = (Instant::now() + hold).max(last_due);
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async {
        let rate = link.shapes[dir.index()].rate;
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            link.unstalled(dir).await;
            let (n, cut) = link.take(dir, chunk.len());
            w.write_all(&chunk[..n]).await?;
            if cut {
                link.cut();
                return Err(io::Error::other("armed cut"));
            }
            if rate > 0 {
                let secs = n as f64 / rate as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
        }
        w.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}
