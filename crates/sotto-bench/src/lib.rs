//! The load tools behind `sotto bench` and `sotto dtls-bench`, and the
//! DTLS client behind `sotto dtls-client`.
//!
//! Three scenarios, each against a server on loopback that the bench either
//! starts itself (`--spawn`, reproducible from one command line) or is
//! pointed at (`--url`, plus `--server-pid` for its CPU and memory):
//!
//! - `messages`: N users online, S of them sending direct messages at a
//!   rate or flat out: delivered messages/s, loss, latency percentiles,
//!   server CPU per delivered message, server RSS per connection. With
//!   `--protocol native` the users speak sotto's own protocol instead
//!   (account API, `/ws`, acks, receipts, confirms): see [`native`].
//! - `idle`: up to 19,000 open connections, authenticated or not: server
//!   RSS per connection.
//! - `storm`: 1,000 password logins at once while others exchange
//!   messages: message latency before, during and after, and login times.
//!
//! Some also run on a cluster the bench starts (`--spawn --nodes N`): see
//! [`cluster`].
//!
//! Users are registered once and their tokens cached (see [`setup`]), so
//! repeated runs do not pay for an Argon2 login per user. Every run is
//! bounded in time and in messages, and refuses non-loopback targets.

mod client;
pub mod cluster;
pub mod converge;
pub mod dtls;
pub mod dtls_client;
pub mod idle;
mod load;
mod messages;
pub mod native;
mod probe;
mod recv;
mod report;
mod send;
pub mod setup;
pub mod soak;
pub mod spread;
mod stats;
pub mod storm;
mod target;
pub mod traffic;
pub mod upgrade;

use clap::{Args, Subcommand};

pub use stats::Latency;

/// What `sotto bench --help` ends with: cluster runs, whose options every
/// scenario lists but only some accept.
const CLUSTER_HELP: &str = "\
Several nodes: `messages --protocol native`, `converge`, `storm` and `idle --clients` \
accept --spawn --nodes N: a fresh PostgreSQL database (dropped at the end; --database \
URL names the server, default postgres://postgres@127.0.0.1:5432/test), a nats-server of \
the bench's own and N `sotto serve` nodes, user i on node i % N. --keep-state keeps the \
database and the report names it; a later run given --reuse-database NAME (and the same \
--state-dir) runs on it, its compat users coming online with their cached tokens \
instead of registering. Each cluster run first drops the fresh databases that \
interrupted runs left behind.";

#[derive(Debug, Args)]
#[command(after_help = CLUSTER_HELP)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Direct messages between N users, S sending at --rate or flat out (compat or native protocol).
    Messages(Box<traffic::MessagesArgs>),
    /// Many idle connections: the server's RSS per connection.
    Idle(Box<idle::IdleArgs>),
    /// Many password logins at once while others exchange messages.
    Storm(Box<storm::StormArgs>),
    /// /ws upgrades, refused (bad token) or accepted: rate and server CPU each.
    Upgrades(Box<upgrade::UpgradeArgs>),
    /// Mixed traffic, churn and abuse for a long time: RSS and descriptors over time.
    Soak(Box<soak::SoakArgs>),
    /// A cluster node killed: how soon its users are seen offline on the others.
    Converge(Box<converge::ConvergeArgs>),
}

/// Runs the scenario and prints its report on stdout (progress goes to stderr).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Messages(a) if a.protocol == traffic::Protocol::Native => {
            println!("{}", native::run(*a).await?)
        }
        Scenario::Messages(a) => println!("{}", traffic::run(*a).await?),
        Scenario::Idle(a) if a.worker => spread::worker(*a).await?,
        Scenario::Idle(a) if a.clients > 1 => println!("{}", spread::run(*a).await?),
        Scenario::Idle(a) => println!("{}", idle::run(*a).await?),
        Scenario::Storm(a) => println!("{}", storm::run(*a).await?),
        Scenario::Upgrades(a) => println!("{}", upgrade::run(*a).await?),
        Scenario::Soak(a) => println!("{}", soak::run(*a).await?),
        Scenario::Converge(a) => println!("{}", converge::run(*a).await?),
    }
    Ok(())
}
