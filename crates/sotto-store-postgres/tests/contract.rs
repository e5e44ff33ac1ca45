//! The store contract (sotto-core's `ports::contract`) on the real
//! PostgreSQL, one fresh database per check; skipped with a printed reason
//! when PostgreSQL cannot be reached, failed under SOTTO_REQUIRE_SERVICES=1.

use sotto_core::ports::contract::Fixture;
use sotto_core::ports::{Lifecycle, UserStore};
use sotto_store_postgres::PostgresStore;
use sotto_store_postgres::testing::TestDatabase;
use std::sync::Arc;

/// A store on a fresh database, or None when the check is skipped.
async fn fixture() -> Option<Fixture> {
    let db = TestDatabase::create("the PostgreSQL store contract").await?;
    let store = match PostgresStore::open(&db.url).await {
        Ok(s) => s,
        Err(e) => panic!("cannot open the test database: {e}"),
    };
    let psks = Arc::new(store.psks());
    Some(Fixture {
        store: Arc::new(store),
        psks,
        keep: Box::new(db),
    })
}

mod contract {
    sotto_core::store_contract!(super::fixture);
}

/// Text users choose (bodies, client ids, keys) may hold any character
/// JSON can carry, NUL included, which PostgreSQL's TEXT refuses: it is
/// stored as it came, and a hostile message cannot fail the batch that
/// commits other users' messages with it.
#[tokio::test]
async fn any_text_a_user_sends_is_stored_as_it_came() {
    use sotto_core::ports::contract::{id_of, user};
    use sotto_core::ports::{NewMessage, Sent, Write, Written};
    let Some(f) = fixture().await else { return };
    let s = &f.store;
    for (id, name) in [("aaaaaa", "alice"), ("bbbbbb", "bob")] {
        s.create_user(&user(id, name), 0).await.unwrap();
    }
    let (a, b) = (id_of("aaaaaa"), id_of("bbbbbb"));
    let odd = "nul\u{0}, quote ' \" \\ , emoji \u{1F600}, newline\n".to_owned();
    s.set_public_key(&a, &odd).await.unwrap();
    assert_eq!(s.user_by_id(&a).await.unwrap().unwrap().public_key, odd);
    let message = |body: &str, cid: &str| Write::Send {
        message: NewMessage {
            sender: a.clone(),
            recipient: b.clone(),
            body: body.to_owned(),
            client_id: Some(cid.to_owned()),
            sent_at: 1,
        },
        max_pending: 10,
    };
    // Queued together, so they are likely committed in one batch.
    let hostile = s.submit(message(&odd, &odd)).await.unwrap();
    let plain = s.submit(message("plain", "c-2")).await.unwrap();
    for pending in [hostile, plain] {
        let done = pending.await.unwrap().unwrap();
        assert!(
            matches!(done, Written::Sent(Sent::Stored { .. })),
            "{done:?}"
        );
    }
    let page = s.history(&a, &b, None, 10).await.unwrap();
    assert_eq!(page[1].body, odd);
    assert_eq!(page[1].client_id.as_deref(), Some(odd.as_str()));
    let again = sotto_core::ports::write_now(s.as_ref(), message(&odd, &odd)).await;
    assert!(
        matches!(again, Ok(Written::Sent(Sent::Duplicate(ref m))) if m.seq == 1),
        "the resend is recognised by its odd client id: {again:?}"
    );
}

/// A server that cannot be reached is an outage (retryable), and the
/// error names the database without its password.
#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let err = PostgresStore::open("postgres://sotto:hunter2@127.0.0.1:1/none")
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("postgres://sotto:***@127.0.0.1:1/none"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// A URL that cannot be parsed will not work later either.
#[tokio::test]
async fn a_bad_url_is_internal() {
    let err = PostgresStore::open("postgres://h:notaport/x")
        .await
        .err()
        .expect("a bad port");
    assert!(!err.is_retryable(), "{err:?}");
}

/// Connections the server ends (a restart, a fail-over) are replaced by
/// themselves: the next reads and message writes succeed without a restart
/// of the store.
#[tokio::test]
async fn the_store_reconnects_after_the_server_ends_its_connections() {
    use sotto_core::ports::contract::{id_of, user};
    use sotto_core::ports::{NewMessage, Sent, Write, Written, write_now};
    let Some(db) = TestDatabase::create("reconnecting to PostgreSQL").await else {
        return;
    };
    let store = PostgresStore::open(&db.url).await.expect("opens");
    store
        .create_user(&user("aaaaaa", "alice"), 0)
        .await
        .unwrap();
    let send = |i: i64| Write::Send {
        message: NewMessage {
            sender: id_of("aaaaaa"),
            recipient: id_of("aaaaaa"),
            body: format!("note {i}"),
            client_id: None,
            sent_at: i,
        },
        max_pending: 10,
    };
    write_now(&store, send(1)).await.unwrap();
    assert!(
        db.terminate_connections().await >= 2,
        "the pool and the writer"
    );
    let done = write_now(&store, send(2)).await;
    assert!(
        matches!(done, Ok(Written::Sent(Sent::Stored { ref message, .. })) if message.seq == 2),
        "{done:?}"
    );
    assert!(store.user_exists(&id_of("aaaaaa")).await.unwrap());
    store.ping().await.unwrap();
}
