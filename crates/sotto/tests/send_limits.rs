//! Per-user send limits (issue 13, finding 5): a user flooding messages is
//! refused with `rate_limited` long before the disk fills, stays
//! connected, and nobody else notices.

mod support;

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sotto_core::hub::SendLimits;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The measurement of the finding: 2,000 sends of 60 KiB to oneself.
const FLOOD: usize = 2000;
const BODY: usize = 60 * 1024;

/// Counts the flood's answers: (acks, rate_limited errors).
async fn count_answers<S>(rx: &mut SplitStream<S>) -> (usize, usize)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>,
{
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < FLOOD {
        let t = match tokio::time::timeout(WAIT, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            other => panic!("flooder's connection ended: {other:?}"),
        };
        let f: Value = serde_json::from_str(&t).unwrap();
        match f["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                assert!(f["retry_after"].as_u64().unwrap() >= 1, "{f}");
                assert!(f["ref"].as_str().unwrap().starts_with('f'), "{f}");
                limited += 1;
            }
            // Its own messages, the users snapshot, presence.
            _ => {}
        }
    }
    (acks, limited)
}

/// A send that must be acknowledged, not refused.
async fn send_ok(from: &mut Native, to: &str, body: &str, client_id: &str) {
    from.send(json!({"type": "send", "to": to, "body": body, "client_id": client_id}))
        .await;
    loop {
        let f = from.recv().await;
        match f["type"].as_str() {
            Some("ack") if f["client_id"] == client_id => return,
            Some("error") => panic!("a normal send was refused: {f}"),
            _ => continue,
        }
    }
}

/// The database's size as SQLite sees it: every page of the newest
/// commit, counted once wherever it lies. The file and its WAL summed
/// would count a page twice once it is checkpointed into the file (and a
/// WAL that the store cuts back now and then would make the figure
/// jump): this is what a truncating checkpoint would leave on disk,
/// without waiting for one.
fn database_bytes(s: &TestServer) -> u64 {
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    let pragma = |name: &str| -> u64 {
        conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .unwrap()
            .try_into()
            .unwrap()
    };
    pragma("page_count") * pragma("page_size")
}

/// How many 60 KiB messages the default limits let one user store in
/// `elapsed`: the byte allowance (16 MiB at once, then 16 MiB a minute)
/// decides for this size; one more for rounding. A slow run (a loaded
/// machine) gets more, as a real flooder over that time would.
fn allowed_in(elapsed: Duration) -> usize {
    let per_minute = SendLimits::default()
        .bytes_per_minute
        .map_or(u64::MAX, |b| u64::from(b.get()));
    let refilled = per_minute as f64 * elapsed.as_secs_f64() / 60.0;
    ((per_minute as f64 + refilled) / BODY as f64) as usize + 1
}

/// What storing one acked flood message may cost on disk: its body, and
/// a quarter more for pages, the inbox entry and indexes.
const PER_MESSAGE: u64 = BODY as u64 * 5 / 4;
/// What the rest of the test (users, the conversation) may add.
const OVERHEAD: u64 = 2 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_before_it_fills_the_disk_and_others_are_unaffected() {
    let s = TestServer::start_with(|c| {
        c.hub.send_limits = SendLimits::default();
        // The flooder also receives its own messages (every session of the
        // sender sees them). Under a loaded test run its reader can fall
        // behind the 1 MiB outbound bound and be closed as a slow consumer,
        // which is right but not what this test is about.
        c.outbound_queue_bytes = 256 << 20;
    })
    .await;
    let mallory = api_user(&s, "mallory").await;
    let alice = api_user(&s, "alice").await;
    let bob = api_user(&s, "bob").await;
    let flooder = Native::connect(&s, &mallory.token).await;
    let mut a = Native::connect(&s, &alice.token).await;
    let mut b = Native::connect(&s, &bob.token).await;
    let before = database_bytes(&s);

    let started = Instant::now();
    let (mut tx, mut rx) = flooder.ws.split();
    let to = mallory.id.clone();
    let flood = tokio::spawn(async move {
        let body = "x".repeat(BODY);
        for i in 0..FLOOD {
            let f = json!({"type": "send", "to": to, "body": body, "client_id": format!("f{i}")});
            tx.send(Message::text(f.to_string())).await.unwrap();
        }
        tx
    });
    let answers = tokio::spawn(async move {
        let counts = count_answers(&mut rx).await;
        (counts, rx)
    });

    // A conversation while the flood runs.
    for i in 0..5 {
        send_ok(&mut a, &bob.id, &format!("hi {i}"), &format!("a{i}")).await;
        assert_eq!(b.recv_type("message").await["body"], format!("hi {i}"));
        send_ok(&mut b, &alice.id, &format!("hello {i}"), &format!("b{i}")).await;
        assert_eq!(a.recv_type("message").await["body"], format!("hello {i}"));
    }

    let _tx = flood.await.unwrap();
    let ((acks, limited), _rx) = answers.await.unwrap();
    let elapsed = started.elapsed();
    // Most of the flood is refused (this holds for runs of up to ~2½
    // minutes, after which the refill alone would admit half of it)...
    assert!(
        limited >= FLOOD / 2,
        "only {limited} refused in {elapsed:?}"
    );
    // ...and no more is stored than the limits allow for the time it took.
    let allowed = allowed_in(elapsed);
    assert!(
        acks <= allowed,
        "{acks} of {FLOOD} flood messages stored in {elapsed:?}; the limits allow {allowed}"
    );
    // The disk grows by what was acked, not by what was refused.
    let grown = database_bytes(&s).saturating_sub(before);
    let bound = acks as u64 * PER_MESSAGE + OVERHEAD;
    assert!(
        grown <= bound,
        "the database grew by {grown} bytes for {acks} stored messages (bound {bound})"
    );
    eprintln!(
        "{acks} stored, {limited} refused in {elapsed:?}; the database grew by {grown} bytes"
    );
    // The flooder and both receivers are still connected.
    assert_eq!(s.metric("sotto_authenticated_connections").await, 3.0);
    assert_eq!(
        s.metric("sotto_sends_rate_limited_total").await,
        limited as f64
    );
}

#[tokio::test]
async fn compat_senders_are_limited_too_without_a_forced_logout() {
    let s = TestServer::start_with(|c| {
        c.hub.send_limits = SendLimits {
            per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(3).unwrap(),
            bytes_per_minute: None,
        }
    })
    .await;
    let mut alice = registered(&s, "alice").await;
    let me = alice.id.clone().unwrap();
    for i in 0..5 {
        alice.message(&me, &format!("m{i}")).await;
    }
    let (mut delivered, mut refused) = (0, 0);
    while delivered + refused < 5 {
        let v = alice.recv_non_presence().await;
        if v["event"] == 2 {
            delivered += 1;
            continue;
        }
        assert_eq!(v["valid"], false, "{v}");
        assert!(
            v.get("event").is_none(),
            "no event: the client must not log out: {v}"
        );
        let text = v["error"].as_str().unwrap();
        assert!(
            text.starts_with("Sending too fast; try again in "),
            "{text}"
        );
        refused += 1;
    }
    assert_eq!((delivered, refused), (3, 2));
}
