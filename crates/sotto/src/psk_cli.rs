//! `sotto psk add|list|revoke`: provisioning device keys in the database a
//! server uses. A running server picks changes up within its refresh period
//! (2 s), and ends a revoked identity's sessions.

use clap::{Args, Subcommand};
use sotto_core::auth::UserName;
use sotto_core::clock::Clock;
use sotto_core::ports::Store;
use sotto_core::psk::{PskIdentity, PskKey, PskStore};

#[derive(Debug, Args)]
pub struct PskArgs {
    /// Database: a SQLite path or sqlite: URL, or a postgres:// URL.
    #[arg(
        long,
        env = "SOTTO_DATABASE",
        default_value = "sotto.db",
        global = true
    )]
    pub database: String,
    #[command(subcommand)]
    pub action: PskAction,
}

#[derive(Debug, Subcommand)]
pub enum PskAction {
    /// Generate a 256-bit key for IDENTITY, store it, and print it once in hex.
    Add {
        identity: String,
        /// Bind the identity to this user (by name): its JSON datagrams are messages from that user.
        #[arg(long)]
        user: Option<String>,
    },
    /// List identities, their users and dates (never keys).
    List,
    /// Erase IDENTITY's key; a running server ends its sessions.
    Revoke { identity: String },
}

pub async fn run(args: PskArgs) -> anyhow::Result<()> {
    // Opening the chat store applies every migration, and resolves --user.
    let cache_mib = sotto_store_sqlite::Tuning::default().cache_mib;
    // A command-line tool needs one PostgreSQL connection, not a node's pool.
    let (store, psks) = sotto_server::open_store(&args.database, cache_mib, 1).await?;
    let result = match args.action {
        PskAction::Add { identity, user } => {
            add(&args.database, &*store, &*psks, &identity, user.as_deref()).await
        }
        PskAction::List => list(&*psks).await,
        PskAction::Revoke { identity } => revoke(&*psks, &identity).await,
    };
    store.close().await;
    result
}

async fn add(
    database: &str,
    store: &dyn Store,
    psks: &dyn PskStore,
    identity: &str,
    user: Option<&str>,
) -> anyhow::Result<()> {
    let identity = PskIdentity::parse(identity).map_err(anyhow::Error::msg)?;
    let user_id = match user {
        None => None,
        Some(name) => {
            let name = UserName::parse(name).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
            let record = store
                .user_by_name(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user named {name}; register it first"))?;
            Some(record.profile.id.as_str().to_owned())
        }
    };
    let key = PskKey::generate();
    psks.add_psk(&identity, &key, user_id.as_deref(), now_ms())
        .await?;
    warn_if_readable(database);
    println!("{}", key.to_hex());
    eprintln!(
        "stored a 256-bit key for {identity}{}; put it on the device now: it is not shown again",
        user_id.map(|u| format!(" (user {u})")).unwrap_or_default()
    );
    Ok(())
}

async fn list(psks: &dyn PskStore) -> anyhow::Result<()> {
    let rows = psks.list_psks().await?;
    println!(
        "{:<32} {:<8} {:<20} status",
        "identity", "user", "created (UTC)"
    );
    for r in rows {
        let status = match r.revoked_at {
            Some(t) => format!("revoked {}", utc(t)),
            None => "active".to_owned(),
        };
        println!(
            "{:<32} {:<8} {:<20} {status}",
            r.identity,
            r.user_id.as_deref().unwrap_or("-"),
            utc(r.created_at)
        );
    }
    Ok(())
}

async fn revoke(psks: &dyn PskStore, identity: &str) -> anyhow::Result<()> {
    let identity = PskIdentity::parse(identity).map_err(anyhow::Error::msg)?;
    if !psks.revoke_psk(&identity, now_ms()).await? {
        anyhow::bail!("{identity} has no active key");
    }
    eprintln!("revoked {identity}; a running server ends its sessions within seconds");
    Ok(())
}

/// Keys are stored as they are (a PSK handshake needs the raw key), so a
/// database others can read gives away every device.
fn warn_if_readable(database: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"));
    let path = path
        .unwrap_or(database)
        .split('?')
        .next()
        .unwrap_or_default();
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {path} holds device keys and is readable by other users; run: chmod 600 {path}"
        );
    }
}

fn now_ms() -> i64 {
    Clock::system().now_ms()
}

/// `YYYY-MM-DD HH:MM:SS` for unix milliseconds (civil-from-days, proleptic
/// Gregorian), to avoid a date crate for one column.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_format_as_utc() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_709_210_096_000), "2024-02-29 12:34:56");
    }
}
