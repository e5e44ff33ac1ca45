//! `sotto bench messages --protocol native`: the `messages` load in
//! sotto's own protocol. Users log in over the HTTP API and open `/ws`
//! with their bearer token; the first S send direct messages at --rate or
//! flat out with at most --window sends awaiting their ack each, and
//! everyone confirms the positioned frames it gets.
//!
//! It reports acks/s, deliveries/s, delivered receipts/s, the latency of
//! each (from the send), loss (acked, never received after the drain),
//! duplicates, errors by code and the server's CPU per message. See
//! [`frames`] for what it expects of the server, old and new.

mod frames;
mod load;
mod reader;
mod report;
pub(crate) mod setup;
mod writer;

use crate::cluster::Targets;
use crate::load::{LoadSpec, per_sender_capacity};
use crate::report::Meter;
use crate::setup::Pool;
use crate::traffic::{self, MessagesArgs};
use anyhow::{Context, bail};
use load::{ConfirmPolicy, Shared};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use load::NativeResult;
pub use report::NativeReport;
pub(crate) use setup::post;

pub async fn run(args: MessagesArgs) -> anyhow::Result<NativeReport> {
    traffic::validate(&args)?;
    if !(args.confirm_ms >= 0.0 && args.confirm_ms <= 10_000.0) {
        bail!("--confirm-ms must be between 0 and 10000");
    }
    let targets = Targets::open(&args.target).await?;
    let result = measure(&args, &targets).await;
    targets.stop().await;
    result
}

async fn measure(args: &MessagesArgs, targets: &Targets) -> anyhow::Result<NativeReport> {
    let header = crate::report::header_for(
        "messages --protocol native",
        &targets.description(),
        &args.target,
    );
    let http = targets.http_addrs()?;
    args.target.wait_quiet().await;
    let spec = traffic::spec(args);
    let senders = spec.senders.clamp(1, args.users);
    let spec = LoadSpec { senders, ..spec };
    let confirm = ConfirmPolicy {
        every: Duration::from_secs_f64(args.confirm_ms / 1e3),
        frames: args.confirm_frames.max(1),
    };
    let capacity = per_sender_capacity(&spec, senders);
    let shared = Arc::new(Shared::new(senders, capacity, confirm, args.retries));
    let stop = CancellationToken::new();

    let started = Instant::now();
    let pool = Pool::new(&args.target, &args.pool);
    let accounts = setup::accounts(
        &http,
        &pool,
        &args.pool.password,
        args.users,
        args.pool.setup_concurrency,
    )
    .await?;
    eprintln!("sotto bench: {} native users logged in", accounts.len());
    let mut conns = Vec::with_capacity(accounts.len());
    for (i, a) in accounts.iter().enumerate() {
        let ws = setup::connect(http[targets.node_index(i)], a)
            .await
            .with_context(|| format!("native user {i} cannot open /ws"))?;
        conns.push(load::open(ws, a.id.clone(), i, &shared, &stop));
    }
    let setup_time = started.elapsed();
    eprintln!(
        "sotto bench: {} sockets open in {:.1} s",
        conns.len(),
        setup_time.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle.clamp(0.0, 60.0))).await;

    let meter = Meter::start_all(&targets.nodes)?;
    let ids = accounts.into_iter().map(|a| a.id).collect();
    let running = load::start(conns, ids, targets.nodes.len(), &spec, shared, stop);
    running
        .drain(spec.duration, Duration::from_secs_f64(args.drain))
        .await;
    // Read before closing: the wave of disconnects is not message work.
    let metered = meter.stop_all(&targets.nodes)?;
    let result = running.close().await;
    Ok(NativeReport::new(
        args, header, setup_time, senders, result, metered,
    ))
}
