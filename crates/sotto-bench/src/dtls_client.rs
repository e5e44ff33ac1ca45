//! `sotto dtls-client`: Qt's DTLS client example as a command. One or more
//! associations per server, each pinging `I am NAME, please, accept our
//! ping N` every interval once encrypted, printing what comes back (hex and
//! plain text), sending close_notify on exit or Ctrl-C, and ending with a
//! one-line summary and a non-zero exit if any association failed.

use clap::Args;
use sotto_core::psk::PskKey;
use sotto_dtls::client::{self, Association, ClientError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::lookup_host;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct DtlsClientArgs {
    /// Server as HOST:PORT; repeat for several servers.
    #[arg(long = "server", default_value = "127.0.0.1:12345")]
    pub servers: Vec<String>,
    /// Associations per server.
    #[arg(long, default_value_t = 1)]
    pub associations: usize,
    /// Association names are NAME-1, NAME-2, ….
    #[arg(long, default_value = "dtls-client")]
    pub name: String,
    /// PSK identity for every association [default: the association's name].
    #[arg(long)]
    pub identity: Option<String>,
    /// The pre-shared key in hex (e.g. 1a2b3c4d5e6f, Qt's demo key).
    #[arg(long, env = "SOTTO_DTLS_PSK", conflicts_with = "psk_file")]
    pub psk: Option<String>,
    /// A file holding the key in hex.
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Seconds between pings.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Pings per association, then close [default: until Ctrl-C].
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds allowed for a handshake (the server may start late).
    #[arg(long, default_value_t = 30.0)]
    pub handshake_timeout: f64,
    /// Seconds to wait for the last ping's reply before closing.
    #[arg(long, default_value_t = 2.0)]
    pub linger: f64,
    /// Largest datagram payload.
    #[arg(long, default_value_t = 1200)]
    pub max_payload: usize,
    /// OpenSSL cipher list.
    #[arg(long, default_value = sotto_dtls::ossl::DEFAULT_CIPHERS)]
    pub ciphers: String,
}

/// What one association did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub name: String,
    pub established: bool,
    pub pings: u64,
    pub replies: u64,
    pub error: Option<String>,
}

pub async fn run(args: DtlsClientArgs) -> anyhow::Result<()> {
    for (name, secs) in [
        ("--interval", args.interval),
        ("--handshake-timeout", args.handshake_timeout),
        ("--linger", args.linger),
    ] {
        check_secs(name, secs)?;
    }
    let key = read_key(&args)?;
    let ctx = client::context(&args.ciphers)?;
    let stop = CancellationToken::new();
    let ctrl_c = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        ctrl_c.cancel();
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    for server in &args.servers {
        let addr = resolve(server).await?;
        for _ in 0..args.associations {
            n += 1;
            let name = format!("{}-{n}", args.name);
            let (args, ctx, key, stop) = (args.clone(), ctx.clone(), key.clone(), stop.clone());
            tasks.spawn(async move { associate(&ctx, addr, name, key, &args, stop).await });
        }
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done?);
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    println!("{}", summary(&outcomes));
    if failed > 0 {
        anyhow::bail!("{failed} of {} associations failed", outcomes.len());
    }
    Ok(())
}

/// Seconds from the command line: finite, not negative, at most a day
/// (durations are turned into instants, which must not overflow).
pub(crate) fn check_secs(name: &str, secs: f64) -> anyhow::Result<()> {
    if !(0.0..=86_400.0).contains(&secs) {
        anyhow::bail!("{name} must be between 0 and 86400 seconds");
    }
    Ok(())
}

fn read_key(args: &DtlsClientArgs) -> anyhow::Result<PskKey> {
    let text = match (&args.psk, &args.psk_file) {
        (Some(hex), _) => hex.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        (None, None) => anyhow::bail!("give the key with --psk HEX or --psk-file PATH"),
    };
    PskKey::from_hex(&text).map_err(anyhow::Error::msg)
}

async fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    lookup_host(server)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {server}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{server} has no address"))
}

/// One association from handshake to close.
pub async fn associate(
    ctx: &openssl::ssl::SslContext,
    server: SocketAddr,
    name: String,
    key: PskKey,
    args: &DtlsClientArgs,
    stop: CancellationToken,
) -> Outcome {
    let mut outcome = Outcome {
        name: name.clone(),
        ..Outcome::default()
    };
    let identity = args.identity.clone().unwrap_or_else(|| name.clone());
    tracing::info!("{name}: starting a handshake with {server}");
    let mtu = u32::try_from(args.max_payload + 48).unwrap_or(u32::MAX);
    let timeout = Duration::from_secs_f64(args.handshake_timeout.max(0.1));
    let connect = Association::connect(ctx, server, identity.as_bytes(), key, mtu, timeout);
    let mut assoc = tokio::select! {
        r = connect => match r {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("{name}: {e}");
                outcome.error = Some(e.to_string());
                return outcome;
            }
        },
        _ = stop.cancelled() => {
            outcome.error = Some("interrupted during the handshake".into());
            return outcome;
        }
    };
    outcome.established = true;
    tracing::info!(
        "{name}: encrypted connection established! ({})",
        assoc.cipher()
    );
    let result = ping_loop(&mut assoc, &name, args, &stop, &mut outcome).await;
    match result {
        Err(ClientError::Closed) => tracing::error!("{name}: shutdown alert received"),
        Err(e) => tracing::error!("{name}: {e}"),
        Ok(()) => assoc.close().await,
    }
    outcome
}

async fn ping_loop(
    assoc: &mut Association,
    name: &str,
    args: &DtlsClientArgs,
    stop: &CancellationToken,
    outcome: &mut Outcome,
) -> Result<(), ClientError> {
    let interval = Duration::from_secs_f64(args.interval.max(0.001));
    let mut tick = tokio::time::interval(interval);
    let mut linger_until = None;
    loop {
        let linger = async {
            match linger_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = linger => return Ok(()),
            _ = tick.tick(), if linger_until.is_none() => {
                let ping = format!("I am {name}, please, accept our ping {}", outcome.pings);
                if let Err(e) = assoc.send(ping.as_bytes()).await {
                    outcome.error = Some(format!("failed to send a ping - {e}"));
                    return Err(e);
                }
                outcome.pings += 1;
                if args.count.is_some_and(|c| outcome.pings >= c) {
                    linger_until = Some(tokio::time::Instant::now() + Duration::from_secs_f64(args.linger.max(0.0)));
                }
            }
            r = assoc.recv() => {
                let incoming = r.inspect_err(|e| outcome.error = Some(e.to_string()))?;
                outcome.replies += 1;
                println!(
                    "{name} received a DTLS datagram: {}\nAs plain text: {}",
                    hex_spaced(&incoming.ciphertext),
                    String::from_utf8_lossy(&incoming.plaintext)
                );
                if linger_until.is_some() && args.count.is_some_and(|c| outcome.replies >= c) {
                    return Ok(());
                }
            }
        }
    }
}

fn hex_spaced(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The last line: associations, established, pings, replies, failures.
pub fn summary(outcomes: &[Outcome]) -> String {
    let established = outcomes.iter().filter(|o| o.established).count();
    let pings: u64 = outcomes.iter().map(|o| o.pings).sum();
    let replies: u64 = outcomes.iter().map(|o| o.replies).sum();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    format!(
        "summary: {} associations, {established} established, {pings} pings sent, {replies} replies, {failed} failed",
        outcomes.len()
    )
}
