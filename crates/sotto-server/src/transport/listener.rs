//! Accepting connections on the TCP ports, and the client address as
//! handlers see it (`ConnectInfo<Peer>`, inserted for every HTTP request).

use super::Edge;
use super::limits::IpSlot;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// An accepted socket together with its connection slot.
///
/// The slot travels inside the stream rather than beside it: whatever
/// wraps the socket (TLS, hyper) and whichever task ends up owning it
/// (after an HTTP upgrade, the WebSocket's own task, not the task that
/// accepted it) gives the slot back exactly when the socket is dropped.
/// Holding the slot in the accepting task instead let every upgraded
/// socket escape `--max-connections` and `--max-connections-per-ip`.
#[derive(Debug)]
pub(crate) struct Counted {
    stream: TcpStream,
    _slot: IpSlot,
}

/// The next connection the limits allow, holding its connection slot.
/// Connections over a limit are closed at once and counted; accept errors
/// (usually EMFILE) back off instead of spinning. Cancel-safe: nothing is
/// awaited between taking a connection and returning it.
pub(crate) async fn accept(
    listener: &TcpListener,
    edge: &Edge,
    port: &'static str,
) -> (Counted, SocketAddr) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, port, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        match edge.connections.try_acquire(peer.ip()) {
            Ok(slot) => {
                let _ = stream.set_nodelay(true);
                return (Counted::new(stream, slot), peer);
            }
            Err(hit) => {
                edge.refused(hit);
                // A flood of refused connections must not become a flood of
                // log lines; the refusals are counted in /metrics.
                static BUDGET: sotto_core::untrusted::LogBudget =
                    sotto_core::untrusted::LogBudget::new(10);
                if let Some(suppressed) = BUDGET.allow() {
                    tracing::warn!(%peer, port, limit = hit.as_str(), suppressed, "connection refused: limit");
                }
            }
        }
    }
}

impl Counted {
    fn new(stream: TcpStream, slot: IpSlot) -> Counted {
        Counted {
            stream,
            _slot: slot,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
