//! The edge: one module per wire. Transports turn bytes into protocol
//! values and back, enforce sizes, deadlines and connection limits, and
//! know nothing of routing, which is the hub's.
//!
//! - `ws`: the compat chat port (QMessageServer's protocol).
//! - `http`: the HTTP port's files (`ui`: the embedded browser client);
//!   `api`: its account API; `upgrade`: its
//!   authenticated `/ws` handshake; `error` and `credential`: the refusal
//!   shape and the token lookup both of the latter use (so `upgrade` does
//!   not depend on `api`, which mounts it).
//! - `connection`: the reader/writer pair every WebSocket runs, whichever
//!   port and protocol.
//! - `limits`, `listener`: connection counting at accept time.
//! - `http_server`: the HTTP listener loop; `deadline`: the request-body
//!   and response deadlines it adds to hyper's header deadline.
//! - `metrics`: `/metrics`, on the HTTP port or its own listener.
//! - `anonymous`: the chat port's not-yet-logged-in sockets, shared fairly
//!   between addresses.

pub mod anonymous;
pub mod api;
pub mod connection;
pub(crate) mod credential;
pub(crate) mod deadline;
pub(crate) mod encode;
pub(crate) mod error;
pub mod http;
pub mod http_server;
pub mod limits;
pub mod listener;
pub(crate) mod metrics;
pub mod tls;
pub(crate) mod ui;
pub mod upgrade;
pub mod ws;

use crate::config::EdgeConfig;
use anonymous::Anonymous;
use limits::IpCounts;
use sotto_core::auth::throttle::Throttle;
use sotto_core::metrics::Metrics;
use std::sync::Arc;

/// What every transport shares: connection counts, attempt limits,
/// metrics and the edge settings.
#[derive(Clone)]
pub struct Edge {
    /// Open TCP connections, all ports, per address and in total; a
    /// socket holds its slot until it closes, also after an upgrade.
    pub connections: Arc<IpCounts>,
    /// Chat-port sockets not yet logged in, shared fairly between
    /// addresses (a full pool evicts from the largest holder).
    pub unauthenticated: Arc<Anonymous>,
    pub throttle: Arc<Throttle>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<EdgeConfig>,
}

impl Edge {
    pub fn new(config: EdgeConfig, max_connections: usize, metrics: Arc<Metrics>) -> Edge {
        Edge {
            connections: IpCounts::new(config.max_connections_per_ip, max_connections),
            unauthenticated: Anonymous::new(
                config.unauthenticated_per_ip,
                config.unauthenticated_total,
            ),
            throttle: Arc::new(Throttle::new(config.throttle)),
            metrics,
            config: Arc::new(config),
        }
    }

    /// Counts a connection refused by a limit.
    pub fn refused(&self, hit: limits::LimitHit) {
        match hit {
            limits::LimitHit::PerIp => {
                sotto_core::metrics::bump(&self.metrics.connections_refused_per_ip)
            }
            limits::LimitHit::Total => {
                sotto_core::metrics::bump(&self.metrics.connections_refused_total)
            }
        }
    }
}
