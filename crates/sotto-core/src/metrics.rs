//! Counters the server keeps about itself, read by `/metrics` and by the
//! tests that check nothing is left behind. Gauges (open connections,
//! tasks) are read from their owners when rendered; only events are
//! counted here.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency histograms' buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A Prometheus histogram with fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, s: &mut String, name: &str, help: &str) {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub messages_routed: AtomicU64,
    pub messages_stored: AtomicU64,
    pub messages_delivered: AtomicU64,
    /// From a message's arrival at the hub to its last live push.
    pub route_latency: Histogram,
    /// From an upgrade request's arrival to its 101.
    pub upgrade_latency: Histogram,
    pub upgrades_accepted: AtomicU64,
    pub upgrades_unauthorized: AtomicU64,
    pub upgrades_forbidden_origin: AtomicU64,
    pub upgrades_bad_request: AtomicU64,
    pub connections_refused_per_ip: AtomicU64,
    pub connections_refused_total: AtomicU64,
    pub login_attempts: AtomicU64,
    pub login_failures: AtomicU64,
    pub rate_limited: AtomicU64,
    pub login_deadline_closed: AtomicU64,
    /// Anonymous chat sockets closed to give their slot a fairer owner.
    pub unauthenticated_evicted: AtomicU64,
    /// Messages refused by a per-user send limit.
    pub sends_rate_limited: AtomicU64,
}

/// Values read at render time from the parts that own them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub tcp_connections: usize,
    pub unauthenticated_chat: usize,
    pub hub_connections: usize,
    pub online_users: usize,
    pub tasks: usize,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self, g: Gauges) -> String {
        let mut s = String::with_capacity(2048);
        gauge(
            &mut s,
            "sotto_tcp_connections",
            "Open TCP connections on the chat and HTTP ports.",
            g.tcp_connections,
        );
        gauge(
            &mut s,
            "sotto_unauthenticated_chat_connections",
            "Chat-port sockets that have not logged in yet.",
            g.unauthenticated_chat,
        );
        gauge(
            &mut s,
            "sotto_authenticated_connections",
            "Live authenticated connections, both protocols.",
            g.hub_connections,
        );
        gauge(
            &mut s,
            "sotto_online_users",
            "Users with at least one live connection.",
            g.online_users,
        );
        gauge(
            &mut s,
            "sotto_tasks",
            "Server tasks alive (listeners, connections, background).",
            g.tasks,
        );
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP sotto_upgrades_total WebSocket upgrade requests on /ws by outcome."
        );
        let _ = writeln!(s, "# TYPE sotto_upgrades_total counter");
        for (outcome, c) in [
            ("accepted", &self.upgrades_accepted),
            ("unauthorized", &self.upgrades_unauthorized),
            ("forbidden_origin", &self.upgrades_forbidden_origin),
            ("bad_request", &self.upgrades_bad_request),
        ] {
            let _ = writeln!(
                s,
                "sotto_upgrades_total{{outcome=\"{outcome}\"}} {}",
                load(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP sotto_connections_refused_total TCP connections refused by a connection limit."
        );
        let _ = writeln!(s, "# TYPE sotto_connections_refused_total counter");
        for (limit, c) in [
            ("per_ip", &self.connections_refused_per_ip),
            ("total", &self.connections_refused_total),
        ] {
            let _ = writeln!(
                s,
                "sotto_connections_refused_total{{limit=\"{limit}\"}} {}",
                load(c)
            );
        }
        counter(
            &mut s,
            "sotto_messages_routed_total",
            "Direct messages accepted for routing, both protocols.",
            load(&self.messages_routed),
        );
        counter(
            &mut s,
            "sotto_messages_stored_total",
            "Direct messages written to the store.",
            load(&self.messages_stored),
        );
        counter(
            &mut s,
            "sotto_messages_delivered_total",
            "Direct messages handed to a live connection of the recipient (live or replayed).",
            load(&self.messages_delivered),
        );
        self.route_latency.render(
            &mut s,
            "sotto_message_route_seconds",
            "Time from a message's arrival at the hub to its delivery or storage.",
        );
        self.upgrade_latency.render(
            &mut s,
            "sotto_upgrade_seconds",
            "Time to answer an accepted /ws upgrade.",
        );
        counter(
            &mut s,
            "sotto_login_attempts_total",
            "Login and register attempts, both protocols.",
            load(&self.login_attempts),
        );
        counter(
            &mut s,
            "sotto_login_failures_total",
            "Login and register attempts refused.",
            load(&self.login_failures),
        );
        counter(
            &mut s,
            "sotto_rate_limited_total",
            "Attempts refused by a rate limit.",
            load(&self.rate_limited),
        );
        counter(
            &mut s,
            "sotto_login_deadline_closed_total",
            "Chat sockets closed for not logging in in time.",
            load(&self.login_deadline_closed),
        );
        counter(
            &mut s,
            "sotto_unauthenticated_evicted_total",
            "Anonymous chat sockets closed so an address holding fewer could connect.",
            load(&self.unauthenticated_evicted),
        );
        counter(
            &mut s,
            "sotto_sends_rate_limited_total",
            "Messages refused by a per-user send limit, all protocols.",
            load(&self.sends_rate_limited),
        );
        s
    }
}

fn gauge(s: &mut String, name: &str, help: &str, v: usize) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(s: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}
