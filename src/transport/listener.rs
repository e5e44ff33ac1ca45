//! The HTTP port's listener: every accepted socket takes a slot from the
//! shared connection counts first, and gives it back when the socket is
//! dropped, including after a WebSocket upgrade. Over a limit, the socket
//! is closed at once, before hyper spends anything on it.

use super::Edge;
use super::limits::IpSlot;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

pub struct CountedListener {
    inner: TcpListener,
    edge: Edge,
}

impl CountedListener {
    pub fn new(inner: TcpListener, edge: Edge) -> CountedListener {
        CountedListener { inner, edge }
    }
}

/// A socket holding its connection slot.
pub struct CountedStream {
    inner: TcpStream,
    _slot: IpSlot,
}

/// The client's address, for handlers (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::serve::Listener for CountedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::error!(error = %e, "HTTP accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            match self.edge.connections.try_acquire(peer.ip()) {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        CountedStream {
                            inner: stream,
                            _slot: slot,
                        },
                        peer,
                    );
                }
                Err(hit) => {
                    self.edge.refused(hit);
                    tracing::warn!(%peer, limit = hit.as_str(), "HTTP connection refused: limit");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, CountedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, CountedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
