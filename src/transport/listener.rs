//! The client address as handlers see it (`ConnectInfo<Peer>`), inserted
//! by the HTTP listener loop for every request.

use std::net::SocketAddr;

#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);
