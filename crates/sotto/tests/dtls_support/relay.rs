//! A UDP relay between one client and the endpoint. The server sees the
//! relay's `back` socket as the client, so a test can send from "the
//! device's address and port" through it, as a spoofer on the path could;
//! it can also lose chosen datagrams and keeps a copy of every datagram
//! each way for replays.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

pub struct LossyRelay {
    pub addr: SocketAddr,
    /// The socket the server sees as the client.
    pub back: Arc<UdpSocket>,
    pub forwarded: Arc<AtomicUsize>,
    /// Every datagram the client sent, in order (lost ones included).
    pub up: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Every datagram the server sent, in order (lost ones included).
    pub down: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl LossyRelay {
    /// A relay to `server` that loses the datagrams numbered (from 0 in
    /// each direction) in `drop_up` and `drop_down`.
    pub async fn start(
        server: SocketAddr,
        drop_up: &'static [usize],
        drop_down: &'static [usize],
    ) -> LossyRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let relay = LossyRelay {
            addr: front.local_addr().unwrap(),
            back: back.clone(),
            forwarded: Default::default(),
            up: Default::default(),
            down: Default::default(),
        };
        let client: Arc<tokio::sync::Mutex<Option<SocketAddr>>> = Default::default();
        let (f, b, c, n, log) = (
            front.clone(),
            back.clone(),
            client.clone(),
            relay.forwarded.clone(),
            relay.up.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            for i in 0.. {
                let Ok((len, from)) = f.recv_from(&mut buf).await else {
                    return;
                };
                *c.lock().await = Some(from);
                log.lock().unwrap().push(buf[..len].to_vec());
                if !drop_up.contains(&i) {
                    n.fetch_add(1, Ordering::Relaxed);
                    let _ = b.send_to(&buf[..len], server).await;
                }
            }
        });
        let (f, b, n, log) = (front, back, relay.forwarded.clone(), relay.down.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            for i in 0.. {
                let Ok((len, _)) = b.recv_from(&mut buf).await else {
                    return;
                };
                log.lock().unwrap().push(buf[..len].to_vec());
                let Some(to) = *client.lock().await else {
                    continue;
                };
                if !drop_down.contains(&i) {
                    n.fetch_add(1, Ordering::Relaxed);
                    let _ = f.send_to(&buf[..len], to).await;
                }
            }
        });
        relay
    }

    /// Datagrams the server has sent so far.
    pub fn down_count(&self) -> usize {
        self.down.lock().unwrap().len()
    }
}
