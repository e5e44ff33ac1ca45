//! Accepting connections on the TCP ports, and the client address as
//! handlers see it (`ConnectInfo<Peer>`, inserted for every HTTP request).

use super::Edge;
use super::limits::IpSlot;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The next connection the limits allow, holding its connection slot.
/// Connections over a limit are closed at once and counted; accept errors
/// (usually EMFILE) back off instead of spinning. Cancel-safe: nothing is
/// awaited between taking a connection and returning it.
pub async fn accept(
    listener: &TcpListener,
    edge: &Edge,
    port: &'static str,
) -> (TcpStream, SocketAddr, IpSlot) {
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
                return (stream, peer, slot);
            }
            Err(hit) => {
                edge.refused(hit);
                tracing::warn!(%peer, port, limit = hit.as_str(), "connection refused: limit");
            }
        }
    }
}
