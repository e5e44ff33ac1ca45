//! The client side of one DTLS association, for `sotto dtls-client`, the
//! benchmark and the tests.
//!
//! Unlike Qt's example, the socket is not connected: a connected UDP socket
//! that gets an ICMP port-unreachable (the server is not up yet) reports an
//! error and the example stops reading, so the handshake never completes.
//! An unconnected socket never sees those errors; we filter datagrams by
//! source address instead, and keep retransmitting until the server is up
//! or the handshake deadline passes.

use super::ossl::{self, Conn, Progress, Received, TimeoutOutcome};
use openssl::ssl::SslContext;
use sotto_core::psk::PskKey;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("shutdown alert received")]
    Closed,
    #[error("{0}")]
    Tls(String),
}

/// A datagram from the server, as sent and as decrypted.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub ciphertext: Vec<u8>,
    pub plaintext: Vec<u8>,
}

/// A client context for any number of associations.
pub fn context(ciphers: &str) -> Result<SslContext, ClientError> {
    ossl::client(ciphers).map_err(|e| ClientError::Tls(e.to_string()))
}

/// An established association.
pub struct Association {
    socket: UdpSocket,
    server: SocketAddr,
    conn: Conn,
    out: Vec<Vec<u8>>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Incoming>,
    cipher: &'static str,
}

impl Association {
    /// Handshakes with `server` as `identity`, retransmitting on OpenSSL's
    /// timer, until established or `timeout` passes.
    pub async fn connect(
        ctx: &SslContext,
        server: SocketAddr,
        identity: &[u8],
        key: PskKey,
        mtu: u32,
        timeout: Duration,
    ) -> Result<Association, ClientError> {
        let local: IpAddr = if server.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        Self::connect_from(ctx, local, server, identity, key, mtu, timeout).await
    }

    /// As [`connect`](Self::connect), from a chosen local address.
    pub async fn connect_from(
        ctx: &SslContext,
        local: IpAddr,
        server: SocketAddr,
        identity: &[u8],
        key: PskKey,
        mtu: u32,
        timeout: Duration,
    ) -> Result<Association, ClientError> {
        let socket = UdpSocket::bind(SocketAddr::new(local, 0))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let conn = Conn::client(ctx, mtu, identity, key).map_err(|e| ClientError::Tls(e.0))?;
        let mut a = Association {
            socket,
            server,
            conn,
            out: Vec::new(),
            buf: vec![0; 65_536],
            pending: Default::default(),
            cipher: "",
        };
        tokio::time::timeout(timeout, a.handshake())
            .await
            .map_err(|_| ClientError::HandshakeTimeout)??;
        a.cipher = a.conn.cipher();
        Ok(a)
    }

    async fn handshake(&mut self) -> Result<(), ClientError> {
        let mut progress = self.conn.handshake();
        loop {
            self.flush().await?;
            match progress {
                Progress::Done => return Ok(()),
                Progress::Failed(f) => return Err(ClientError::Handshake(format!("{f:?}"))),
                Progress::Pending => {}
            }
            let wait = self.conn.retransmit_in().unwrap_or(Duration::from_secs(1));
            match tokio::time::timeout(wait, self.recv_raw()).await {
                Ok(datagram) => {
                    let datagram = datagram?;
                    self.conn.push(&datagram);
                    progress = self.conn.handshake();
                }
                Err(_) => {
                    tracing::debug!(server = %self.server, "handshake timeout, trying to re-transmit");
                    if self.conn.on_timeout() == TimeoutOutcome::Failed {
                        return Err(ClientError::Handshake("retransmissions exhausted".into()));
                    }
                }
            }
        }
    }

    /// The next datagram from the server (others are ignored). Errors such
    /// as ICMP reports are ignored too: they say nothing about the server
    /// we will reach once it is up.
    async fn recv_raw(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.socket.recv_from(&mut self.buf).await {
                Ok((n, from)) if same_peer(from, self.server) => return Ok(self.buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e) => tracing::debug!(error = %e, "ignoring a UDP error"),
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        self.conn.drain_output(&mut self.out);
        for d in self.out.drain(..) {
            self.socket
                .send_to(&d, self.server)
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// The negotiated cipher suite.
    pub fn cipher(&self) -> &'static str {
        self.cipher
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Encrypts and sends one datagram.
    pub async fn send(&mut self, plaintext: &[u8]) -> Result<(), ClientError> {
        self.conn.write(plaintext).map_err(ClientError::Tls)?;
        self.flush().await
    }

    /// The next decrypted datagram. Datagrams that do not decrypt are
    /// skipped; a close_notify is [`ClientError::Closed`]. Cancel-safe
    /// between datagrams, so it can sit in a `select!`.
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some(i) = self.pending.pop_front() {
                return Ok(i);
            }
            let ciphertext = self.recv_raw().await?;
            self.conn.push(&ciphertext);
            let mut plain = vec![0u8; 65_536];
            loop {
                match self.conn.read(&mut plain) {
                    Received::Data(n) => self.pending.push_back(Incoming {
                        ciphertext: ciphertext.clone(),
                        plaintext: plain[..n].to_vec(),
                    }),
                    Received::Nothing => break,
                    Received::Closed => return Err(ClientError::Closed),
                    Received::Failed(e) => return Err(ClientError::Tls(e)),
                }
            }
            // A retransmitted server flight may need our Finished again.
            self.flush().await?;
        }
    }

    /// Sends close_notify.
    pub async fn close(mut self) {
        self.conn.close();
        let _ = self.flush().await;
    }
}

/// IPv4 peers show up as IPv4-mapped IPv6 addresses on dual-stack sockets.
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(s.ip(), IpAddr::V4),
        ip => ip,
    };
    a.port() == b.port() && canon(a) == canon(b)
}

/// How long until `deadline`, zero if past.
pub fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
