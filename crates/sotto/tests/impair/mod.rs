//! An impairment relay: this kernel has no `netem`, so tests that need a
//! bad network put this UDP forwarder between a client and the server.
//! Each direction drops, duplicates, reorders and delays datagrams by its
//! own [`Impair`] settings, from a seeded random generator so a failure
//! reproduces; [`Relay::cut`] stops all traffic until [`Relay::restore`].
//! The relay serves one client address (the latest that wrote to it), is
//! bounded in memory (at most [`HELD_MAX`] datagrams delayed at once) and
//! stops when dropped. Its TCP counterpart, for WebSocket clients, is
//! [`tcp::TcpRelay`].
#![allow(dead_code)]

pub mod tcp;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// Datagrams held for delay or reordering at once, per relay.
pub const HELD_MAX: usize = 1024;

/// What happens to datagrams in one direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impair {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a datagram is sent twice (the copy after `delay`).
    pub duplicate: f64,
    /// Probability that a datagram is held back and sent after the next one.
    pub reorder: f64,
    /// Every datagram is delayed by this plus up to `jitter`.
    pub delay: Duration,
    pub jitter: Duration,
}

/// Counters, to show a test really ran through a bad network.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
}

pub struct Relay {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// A relay on 127.0.0.1 to `server`: `up` impairs client → server,
    /// `down` server → client.
    pub async fn udp(server: SocketAddr, up: Impair, down: Impair, seed: u64) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let cut = Arc::new(AtomicBool::new(false));
        let state = Shared {
            up_rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            down_rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed))),
            counts: counts.clone(),
            cut: cut.clone(),
            held: Arc::new(AtomicU64::new(0)),
        };
        let task = tokio::spawn(run(front, back, up, down, state));
        Relay {
            addr,
            counts,
            cut,
            task,
        }
    }

    /// Drops everything, both ways, until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    pub fn duplicated(&self) -> u64 {
        self.counts.duplicated.load(Ordering::Relaxed)
    }

    pub fn reordered(&self) -> u64 {
        self.counts.reordered.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Shared {
    /// One generator per direction, so each direction's fate depends only
    /// on its own datagrams, not on how the two interleave in time.
    up_rng: Arc<Mutex<StdRng>>,
    down_rng: Arc<Mutex<StdRng>>,
    counts: Arc<Counts>,
    cut: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
}

/// Where a datagram goes: out of `front` to the client, or out of `back`.
#[derive(Clone)]
enum Out {
    Client(Arc<UdpSocket>, SocketAddr),
    Server(Arc<UdpSocket>),
}

impl Out {
    async fn send(&self, d: &[u8]) {
        let _ = match self {
            Out::Client(s, to) => s.send_to(d, *to).await,
            Out::Server(s) => s.send(d).await,
        };
    }
}

async fn run(front: Arc<UdpSocket>, back: Arc<UdpSocket>, up: Impair, down: Impair, s: Shared) {
    let mut client: Option<SocketAddr> = None;
    let (mut up_held, mut down_held) = (None, None);
    let (mut a, mut b) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    loop {
        tokio::select! {
            r = front.recv_from(&mut a) => {
                let Ok((n, from)) = r else { continue };
                // The latest client is the one served: tests connect
                // one association after another, each from a new port.
                client = Some(from);
                let out = Out::Server(back.clone());
                forward(&a[..n], out, up, &s, &s.up_rng, &mut up_held).await;
            }
            r = back.recv(&mut b) => {
                let (Ok(n), Some(c)) = (r, client) else { continue };
                let out = Out::Client(front.clone(), c);
                forward(&b[..n], out, down, &s, &s.down_rng, &mut down_held).await;
            }
        }
    }
}

/// One datagram through one direction's impairments. `held` is the
/// datagram kept back for reordering, released after this one.
async fn forward(
    d: &[u8],
    out: Out,
    how: Impair,
    s: &Shared,
    rng: &Mutex<StdRng>,
    held: &mut Option<Vec<u8>>,
) {
    if s.cut.load(Ordering::SeqCst) {
        s.counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let (drop, dup, reorder, jitter) = {
        let mut rng = rng.lock().await;
        let jitter_ns = how.jitter.as_nanos() as u64;
        (
            rng.random_bool(how.drop),
            rng.random_bool(how.duplicate),
            rng.random_bool(how.reorder),
            Duration::from_nanos(if jitter_ns == 0 {
                0
            } else {
                rng.random_range(0..jitter_ns)
            }),
        )
    };
    if drop {
        s.counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if reorder && held.is_none() {
        s.counts.reordered.fetch_add(1, Ordering::Relaxed);
        *held = Some(d.to_vec());
        return;
    }
    let wait = how.delay + jitter;
    send_later(d.to_vec(), out.clone(), wait, s);
    if dup {
        s.counts.duplicated.fetch_add(1, Ordering::Relaxed);
        send_later(
            d.to_vec(),
            out.clone(),
            wait + how.delay.max(Duration::from_millis(5)),
            s,
        );
    }
    if let Some(h) = held.take() {
        send_later(h, out, wait, s);
    }
}

fn send_later(d: Vec<u8>, out: Out, wait: Duration, s: &Shared) {
    if s.held.load(Ordering::Relaxed) >= HELD_MAX as u64 {
        s.counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    s.counts.forwarded.fetch_add(1, Ordering::Relaxed);
    if wait.is_zero() {
        tokio::spawn(async move { out.send(&d).await });
        return;
    }
    let held = s.held.clone();
    held.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        out.send(&d).await;
        held.fetch_sub(1, Ordering::Relaxed);
    });
}
