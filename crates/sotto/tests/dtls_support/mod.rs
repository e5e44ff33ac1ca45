//! Helpers for the DTLS tests: an endpoint on an ephemeral loopback port
//! with an in-memory key ring, the Debian `openssl` tool located (or the
//! test skipped, unless SOTTO_REQUIRE_SERVICES=1), and a deadline helper.
#![allow(dead_code)]

pub mod relay;

use sotto_dtls::{
    DeviceBridge, DtlsConfig, DtlsEndpoint, KeyRing, PskEntry, PskIdentity, PskKey, StatsSnapshot,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Dtls {
    pub endpoint: DtlsEndpoint,
    pub keys: Arc<KeyRing>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Dtls {
    pub async fn start(tweak: impl FnOnce(&mut DtlsConfig)) -> Dtls {
        Self::start_with(tweak, None).await
    }

    pub async fn start_with(
        tweak: impl FnOnce(&mut DtlsConfig),
        bridge: Option<Arc<dyn DeviceBridge>>,
    ) -> Dtls {
        let mut config = DtlsConfig {
            port: 0,
            ..DtlsConfig::default()
        };
        tweak(&mut config);
        let keys = Arc::new(KeyRing::with_demo_key(config.demo_psk));
        let socket = sotto_dtls::bind(&config).expect("bind");
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let endpoint = DtlsEndpoint::start(
            config,
            socket,
            keys.clone(),
            None,
            bridge,
            shutdown.clone(),
            &tasks,
        )
        .await
        .expect("endpoint starts");
        Dtls {
            endpoint,
            keys,
            shutdown,
            tasks,
        }
    }

    pub fn port(&self) -> u16 {
        self.endpoint.local_addr().port()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.endpoint.stats()
    }

    /// Adds an identity with a fresh key; returns the key.
    pub fn add_key(&self, identity: &str, user: Option<&str>) -> PskKey {
        let key = PskKey::generate();
        self.keys.insert(PskEntry {
            identity: PskIdentity::parse(identity).unwrap(),
            key: key.clone(),
            user_id: user.map(str::to_owned),
        });
        key
    }

    /// Waits until `check` holds for the counters, or panics after WAIT.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&StatsSnapshot) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.stats();
            if check(&s) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(WAIT, self.tasks.wait())
            .await
            .expect("endpoint stops");
    }
}

/// The `openssl` command-line tool, or `None` (after printing why) when it
/// is absent and absence is allowed.
pub fn openssl() -> Option<PathBuf> {
    let found = ["/usr/bin/openssl", "/usr/local/bin/openssl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("SOTTO_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "the openssl tool is required (SOTTO_REQUIRE_SERVICES=1) but absent; apt-get install openssl"
        );
        eprintln!("SKIPPED: the openssl command-line tool is not installed");
    }
    found
}

/// A free UDP port on loopback (bound and released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An association with the endpoint on 127.0.0.1.
pub async fn connect(
    port: u16,
    identity: &str,
    key: &PskKey,
) -> Result<sotto_dtls::client::Association, sotto_dtls::client::ClientError> {
    connect_to(
        format!("127.0.0.1:{port}").parse().unwrap(),
        identity,
        key,
        Duration::from_secs(5),
    )
    .await
}

pub async fn connect_to(
    server: std::net::SocketAddr,
    identity: &str,
    key: &PskKey,
    timeout: Duration,
) -> Result<sotto_dtls::client::Association, sotto_dtls::client::ClientError> {
    let ctx = sotto_dtls::client::context(sotto_dtls::ossl::DEFAULT_CIPHERS).unwrap();
    sotto_dtls::client::Association::connect(
        &ctx,
        server,
        identity.as_bytes(),
        key.clone(),
        1248,
        timeout,
    )
    .await
}

/// The next plaintext from the server as text, within WAIT.
pub async fn recv_text(a: &mut sotto_dtls::client::Association) -> String {
    let i = tokio::time::timeout(WAIT, a.recv())
        .await
        .expect("a datagram in time")
        .expect("a datagram");
    String::from_utf8(i.plaintext).expect("UTF-8 reply")
}

pub fn demo_key() -> PskKey {
    PskKey::from_hex("1a2b3c4d5e6f").unwrap()
}
