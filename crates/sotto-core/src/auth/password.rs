//! Password hashing with Argon2id, off the async runtime.
//!
//! A login costs tens of milliseconds of CPU by design. Running that on a
//! runtime worker would stall every socket that worker serves, so hashing
//! runs on tokio's blocking pool behind two bounds: at most `workers` hashes
//! run at once (so routing keeps a core), and at most `queue` wait (so a
//! login storm gets a quick "busy" instead of unbounded memory and latency).
//! While it hashes, a pool thread is named `sotto-argon2` (see
//! `thread_name`), so `top -H` shows what the CPU goes to.
//!
//! QMessageServer stored unsalted SHA-256; its example client sends a
//! SHA-256 hex string, which here is simply the secret that gets hashed.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Argon2id cost parameters; every benchmark states the ones it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory per hash in KiB (default 19456 = 19 MiB, OWASP's minimum).
    pub memory_kib: u32,
    /// Passes over memory (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("too many logins in progress")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// Cheap to clone; all clones share the bounds.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon: Argon2<'static>,
    running: Semaphore,
    waiting: Arc<Semaphore>,
    /// A hash of a random secret, verified against when the account does not
    /// exist so that unknown names take as long as known ones.
    dummy: String,
    /// Today's costs: a stored hash made with others is re-hashed.
    params: PasswordParams,
}

/// What checking a password found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The account exists and the password is right.
    pub ok: bool,
    /// The stored hash had other costs than today's: this is the password
    /// hashed at today's costs, to be stored in its place.
    pub rehashed: Option<String>,
}

impl PasswordHasher {
    pub async fn new(
        params: PasswordParams,
        workers: usize,
        queue: usize,
    ) -> Result<PasswordHasher, PasswordError> {
        let p = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let dummy_secret = crate::auth::Token::generate();
        let dummy = {
            let argon = argon.clone();
            run_blocking(move || hash_with(&argon, dummy_secret.as_str().as_bytes())).await??
        };
        Ok(PasswordHasher {
            inner: Arc::new(Inner {
                argon,
                running: Semaphore::new(workers.max(1)),
                waiting: Arc::new(Semaphore::new(queue.max(1))),
                dummy,
                params,
            }),
        })
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$…`), which
    /// embeds salt and parameters, so parameters can change later without
    /// invalidating stored hashes.
    pub async fn hash(&self, secret: String) -> Result<String, PasswordError> {
        self.on_pool(move |argon| hash_with(argon, secret.as_bytes()))
            .await?
    }

    /// Verifies `secret` against `stored`, or against the dummy hash when
    /// there is no account (never `ok` then).
    ///
    /// Timing must not tell unknown names from known ones. An unknown name
    /// costs one hash at today's costs (the dummy). A stored hash made with
    /// older costs would be faster or slower than that, so it costs a second
    /// hash at today's costs as well: the re-hash to store when the password
    /// is right, the dummy when it is wrong. Each user is upgraded at their
    /// next login, and from then on costs exactly what an unknown name does.
    pub async fn verify(
        &self,
        secret: String,
        stored: Option<String>,
    ) -> Result<Verified, PasswordError> {
        let inner = self.inner.clone();
        self.on_pool(move |argon| {
            let Some(phc) = stored else {
                let _ = argon.verify_password(secret.as_bytes(), inner.dummy.as_str());
                return Verified {
                    ok: false,
                    rehashed: None,
                };
            };
            let ok = argon
                .verify_password(secret.as_bytes(), phc.as_str())
                .is_ok();
            if has_costs(&phc, inner.params) {
                return Verified { ok, rehashed: None };
            }
            if !ok {
                let _ = argon.verify_password(secret.as_bytes(), inner.dummy.as_str());
                return Verified { ok, rehashed: None };
            }
            let rehashed = hash_with(argon, secret.as_bytes()).ok();
            Verified { ok, rehashed }
        })
        .await
    }

    async fn on_pool<T, F>(&self, f: F) -> Result<T, PasswordError>
    where
        T: Send + 'static,
        F: FnOnce(&Argon2<'static>) -> T + Send + 'static,
    {
        let _queued = self
            .inner
            .waiting
            .clone()
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        let _running = self
            .inner
            .running
            .acquire()
            .await
            .map_err(|e| PasswordError::Internal(e.to_string()))?;
        let argon = self.inner.argon.clone();
        run_blocking(move || f(&argon)).await
    }
}

/// Whether the PHC string `phc` was made with exactly these costs.
fn has_costs(phc: &str, params: PasswordParams) -> bool {
    PasswordHash::new(phc)
        .ok()
        .and_then(|h| Params::try_from(&h).ok())
        .is_some_and(|p| {
            (p.m_cost(), p.t_cost(), p.p_cost())
                == (params.memory_kib, params.iterations, params.parallelism)
        })
}

fn hash_with(argon: &Argon2<'_>, secret: &[u8]) -> Result<String, PasswordError> {
    argon
        .hash_password(secret)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Internal(e.to_string()))
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    let named = move || {
        let _named = super::thread_name::Renamed::hashing();
        f()
    };
    tokio::task::spawn_blocking(named)
        .await
        .map_err(|e| PasswordError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordParams {
        PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = PasswordHasher::new(cheap(), 2, 8).await.unwrap();
        let phc = h.hash("secret".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(
            h.verify("secret".into(), Some(phc.clone()))
                .await
                .unwrap()
                .ok
        );
        assert!(!h.verify("wrong".into(), Some(phc)).await.unwrap().ok);
        assert!(!h.verify("secret".into(), None).await.unwrap().ok);
    }

    /// Finding 10 of issue 13: after a cost change, a known user's old
    /// hash must not make their login faster than an unknown name's. The
    /// check counts hashes rather than timing them: an old-cost hash costs
    /// one more hash at today's costs, right password or wrong.
    #[tokio::test]
    async fn old_costs_are_rehashed_on_login() {
        let old = PasswordHasher::new(cheap(), 1, 8).await.unwrap();
        let phc = old.hash("secret".into()).await.unwrap();
        let today = PasswordParams {
            memory_kib: 128,
            ..cheap()
        };
        let h = PasswordHasher::new(today, 1, 8).await.unwrap();
        let v = h.verify("secret".into(), Some(phc.clone())).await.unwrap();
        assert!(v.ok);
        let rehashed = v.rehashed.expect("re-hashed at today's costs");
        assert!(
            rehashed.starts_with("$argon2id$v=19$m=128,t=1,p=1$"),
            "{rehashed}"
        );
        let again = h.verify("secret".into(), Some(rehashed)).await.unwrap();
        assert_eq!(
            again,
            Verified {
                ok: true,
                rehashed: None
            }
        );
        let wrong = h.verify("wrong".into(), Some(phc)).await.unwrap();
        assert_eq!(
            wrong,
            Verified {
                ok: false,
                rehashed: None
            }
        );
    }

    /// Hashing shows up under its own name in `top -H` and `perf`, not as
    /// one more "tokio-rt-worker".
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_are_named() {
        let shown = || std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let h = PasswordHasher::new(cheap(), 1, 8).await.unwrap();
        let during = h.on_pool(move |_| shown()).await.unwrap();
        assert_eq!(during.trim_end(), "sotto-argon2");
        // The pool thread has its own name back for other blocking work.
        let after = tokio::task::spawn_blocking(shown).await.unwrap();
        assert_ne!(after.trim_end(), "sotto-argon2");
    }

    #[tokio::test]
    async fn salts_differ() {
        let h = PasswordHasher::new(cheap(), 1, 8).await.unwrap();
        let a = h.hash("same".into()).await.unwrap();
        let b = h.hash("same".into()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn bad_params_are_refused() {
        let bad = PasswordParams {
            memory_kib: 1,
            ..cheap()
        };
        assert!(matches!(
            PasswordHasher::new(bad, 1, 1).await,
            Err(PasswordError::Params(_))
        ));
    }
}
