//! The PostgreSQL database of a cluster run, and the compat users' token
//! cache that belongs to it.
//!
//! A run gets a fresh database `sotto_bench_<pid>_<unix time>` (dropped at
//! the end, or kept with `--keep-state`), or reuses a kept one
//! (`--reuse-database NAME`) so that its users, registered by the earlier
//! run, come online with cached tokens and no Argon2 login: a second
//! `idle` run then measures connections, not the registration's heap.
//!
//! A token is valid on the database that issued it only, so each
//! database has its own cache file in `--state-dir`
//! (`tokens-<name>.tsv`), removed with the database when it is dropped.
//!
//! A run that is interrupted (killed, Ctrl-C) cannot drop its database.
//! Fresh databases that are to be dropped are marked so with a comment,
//! and each cluster run first sweeps marked ones whose bench process is
//! gone ([`sweep`]); kept and reused databases are never marked, so never
//! swept.

use anyhow::{Context, bail};
use sotto_store_postgres::{redact, with_database};
use sqlx::{Connection, PgConnection};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long PostgreSQL may take to answer the admin connection.
const PG_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Every database the bench creates starts with this.
const PREFIX: &str = "sotto_bench_";

/// The comment on a fresh database that its run drops at the end: only
/// these are ever swept.
const TEMPORARY: &str = "sotto bench: temporary, dropped at the end of its run";

/// A swept database must be at least this old, besides its bench process
/// being gone: a guard for a bench in another PID namespace sharing the
/// PostgreSQL server, whose pid this machine cannot see. Bench runs are
/// bounded well below it.
const SWEEP_AGE: Duration = Duration::from_secs(2 * 3600);

/// What becomes of the database at the end of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Fresh, dropped at the end.
    Drop,
    /// Fresh, kept (`--keep-state`).
    Keep,
    /// Kept by an earlier run and reused: left as it is.
    Reused,
}

/// The run's database.
pub(super) struct Database {
    admin_url: String,
    name: String,
    /// What the nodes connect to.
    url: String,
    /// The compat users' tokens for this database.
    token_cache: PathBuf,
    fate: Fate,
}

impl Database {
    /// A fresh database created through `admin_url`, or with `reuse` the
    /// existing one of that name on the same server.
    pub async fn open(
        admin_url: &str,
        reuse: Option<&str>,
        keep: bool,
        state_dir: &Path,
    ) -> anyhow::Result<Database> {
        let (name, fate) = match reuse {
            Some(name) => {
                check_reusable(admin_url, name).await?;
                (name.to_owned(), Fate::Reused)
            }
            None => {
                let fate = if keep { Fate::Keep } else { Fate::Drop };
                (create(admin_url, fate).await?, fate)
            }
        };
        Ok(Database {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            token_cache: token_cache(state_dir, &name),
            name,
            fate,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn token_cache(&self) -> &Path {
        &self.token_cache
    }

    /// The nodes' URL with any password hidden, and the database's fate.
    pub fn url_for_report(&self) -> String {
        let fate = match self.fate {
            Fate::Drop => "fresh".to_owned(),
            Fate::Keep => format!("fresh, kept: reuse it with --reuse-database {}", self.name),
            Fate::Reused => "reused, kept".to_owned(),
        };
        format!("{} ({fate})", redact(&self.url))
    }

    /// Drops a fresh database (ending any connection still open to it) and
    /// its token cache, unless it is to be kept; a failure is reported,
    /// not fatal: the figures are already printed.
    pub async fn finish(self) {
        match self.fate {
            Fate::Keep => {
                eprintln!(
                    "sotto bench: kept database {}; a later run can use it again with \
                     --reuse-database {} and the same --state-dir",
                    self.name, self.name
                );
                return;
            }
            Fate::Reused => return,
            Fate::Drop => {}
        }
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = execute(&self.admin_url, sql).await {
            eprintln!("sotto bench: cannot drop database {}: {e:#}", self.name);
            return;
        }
        remove_token_cache(&self.token_cache);
    }
}

/// Removes a dropped database's token cache and its lock file: their
/// tokens are valid nowhere now.
fn remove_token_cache(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("lock"));
}

/// Where the tokens of `database`'s users are cached.
fn token_cache(state_dir: &Path, database: &str) -> PathBuf {
    state_dir.join(format!("tokens-{database}.tsv"))
}

/// Creates `sotto_bench_<pid>_<unix time>`, marked [`TEMPORARY`] when it
/// is to be dropped, and returns its name.
async fn create(admin_url: &str, fate: Fate) -> anyhow::Result<String> {
    let name = format!("{PREFIX}{}_{}", std::process::id(), unix_now());
    let mut admin = pg_connect(admin_url).await?;
    let create = format!("CREATE DATABASE {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    if fate == Fate::Drop {
        let mark = format!("COMMENT ON DATABASE {name} IS '{TEMPORARY}'");
        sqlx::raw_sql(sqlx::AssertSqlSafe(mark))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot mark database {name} as temporary"))?;
    }
    let _ = admin.close().await;
    Ok(name)
}

/// Refuses a name the bench did not create (it only ever writes bench
/// users into its own databases) and one that does not exist.
async fn check_reusable(admin_url: &str, name: &str) -> anyhow::Result<()> {
    if parse_name(name).is_none() {
        bail!(
            "--reuse-database takes a database an earlier run kept, named \
             {PREFIX}<pid>_<time> (its report names it), not {name:?}"
        );
    }
    let mut admin = pg_connect(admin_url).await?;
    let found: Option<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut admin)
            .await
            .context("cannot list databases")?;
    let _ = admin.close().await;
    if found.is_none() {
        bail!(
            "no database {name} on {} to reuse (was the earlier run given --keep-state?)",
            redact(admin_url)
        );
    }
    Ok(())
}

/// The pid and creation time (unix seconds) in a bench database's name.
fn parse_name(name: &str) -> Option<(u32, u64)> {
    let (pid, secs) = name.strip_prefix(PREFIX)?.split_once('_')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(secs) {
        return None;
    }
    Some((pid.parse().ok()?, secs.parse().ok()?))
}

/// Whether a database left by another run may be swept: marked
/// temporary, its bench process gone, and old enough.
fn is_leftover(name: &str, comment: &str, now: u64, alive: impl Fn(u32) -> bool) -> bool {
    let Some((pid, created)) = parse_name(name) else {
        return false;
    };
    comment == TEMPORARY && !alive(pid) && now.saturating_sub(created) >= SWEEP_AGE.as_secs()
}

/// Drops the databases earlier runs could not (see the module comment),
/// with their token caches in `state_dir`, and says so on stderr. Never
/// forced: a database someone is still connected to stays. Nothing is
/// swept where this machine's processes cannot be listed.
pub(super) async fn sweep(admin_url: &str, state_dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let listed = async {
        let mut admin = pg_connect(admin_url).await?;
        // One in use is left out at once: a DROP would wait for it 5 s.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.datname::text, COALESCE(shobj_description(d.oid, 'pg_database'), '') \
             FROM pg_database d WHERE d.datname LIKE 'sotto\\_bench\\_%' AND NOT EXISTS \
             (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)",
        )
        .fetch_all(&mut admin)
        .await?;
        let _ = admin.close().await;
        anyhow::Ok(rows)
    };
    let rows = match listed.await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("sotto bench: cannot look for leftover databases: {e:#}");
            return;
        }
    };
    let now = unix_now();
    for (name, comment) in rows {
        if !is_leftover(&name, &comment, now, alive) {
            continue;
        }
        match execute(admin_url, format!("DROP DATABASE IF EXISTS {name}")).await {
            Ok(()) => {
                eprintln!(
                    "sotto bench: dropped leftover database {name} (its bench process is gone)"
                );
                remove_token_cache(&token_cache(state_dir, &name));
            }
            Err(e) => eprintln!("sotto bench: leftover database {name} stays: {e:#}"),
        }
    }
}

/// Runs one statement on a connection of its own.
async fn execute(admin_url: &str, sql: String) -> anyhow::Result<()> {
    let mut admin = pg_connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await?;
    let _ = admin.close().await;
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn pg_connect(url: &str) -> anyhow::Result<PgConnection> {
    let shown = redact(url);
    tokio::time::timeout(PG_CONNECT_WAIT, PgConnection::connect(url))
        .await
        .with_context(|| format!("PostgreSQL at {shown} does not answer"))?
        .with_context(|| format!("cannot connect to PostgreSQL at {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bench_s_own_names_parse() {
        assert_eq!(
            parse_name("sotto_bench_42_1700000000"),
            Some((42, 1_700_000_000))
        );
        assert_eq!(parse_name("sotto_bench_42_"), None);
        assert_eq!(parse_name("sotto_bench_42_17x"), None);
        assert_eq!(parse_name("sotto_bench_4-2_1"), None);
        assert_eq!(parse_name("sotto_bench_1_2; DROP DATABASE test"), None);
        assert_eq!(parse_name("test"), None);
    }

    #[test]
    fn only_old_temporary_databases_of_gone_processes_are_swept() {
        let now = 1_700_000_000 + SWEEP_AGE.as_secs();
        let name = "sotto_bench_42_1700000000";
        let gone = |_| false;
        assert!(is_leftover(name, TEMPORARY, now, gone));
        // Kept (no mark), still running, too young, not the bench's.
        assert!(!is_leftover(name, "", now, gone));
        assert!(!is_leftover(name, TEMPORARY, now, |pid| pid == 42));
        assert!(!is_leftover(name, TEMPORARY, now - 1, gone));
        assert!(!is_leftover("sotto_test_42_1", TEMPORARY, now, gone));
    }
}
