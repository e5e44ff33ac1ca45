//! Native bench users: an account through the HTTP API, then a `/ws`
//! socket with the bearer token.
//!
//! Unlike the compat pool, tokens are not cached: every run registers (a
//! taken name costs no hashing) and logs in each user. The bench is meant
//! for a server with cheap Argon2 (`--argon2-memory-kib 64`), where a
//! thousand logins take a second or two.

use crate::client::{self, Buffers, Ws};
use crate::setup::{Kind, Pool};
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use sotto_core::auth::{Token, UserId};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A native user logged in over the API.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub id: String,
    pub token: String,
}

/// Answers "busy" or "rate limited" are retried this many times, a second
/// apart (the server's Argon2 queue or its login limits).
const RETRIES: usize = 60;

/// How long one HTTP exchange may take.
const HTTP_WAIT: Duration = Duration::from_secs(60);

/// Registers (when new) and logs in users `0..count`, `concurrency` at a
/// time, in order of index; user `i` through node `i % http.len()` (any
/// node would do: they share the database).
pub(crate) async fn accounts(
    http: &[SocketAddr],
    pool: &Pool,
    password: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Account>> {
    let results: Vec<(usize, anyhow::Result<Account>)> = futures_util::stream::iter(0..count)
        .map(|i| {
            let name = pool.name(Kind::Native, i);
            let http = http.get(i % http.len().max(1)).copied();
            async move {
                let Some(http) = http else {
                    return (i, Err(anyhow::anyhow!("no server to log in on")));
                };
                (i, account(http, &name, password).await)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

async fn account(http: SocketAddr, name: &str, password: &str) -> anyhow::Result<Account> {
    let body = serde_json::json!({"name": name, "password": password}).to_string();
    let (status, reply) = post_retrying(http, "/api/register", &body).await?;
    if status != 201 && status != 409 {
        bail!("cannot register {name}: HTTP {status} {}", excerpt(&reply));
    }
    let (status, reply) = post_retrying(http, "/api/login", &body).await?;
    if status != 200 {
        bail!("cannot log in {name}: HTTP {status} {}", excerpt(&reply));
    }
    parse_login(&reply).with_context(|| format!("login answer for {name}"))
}

#[derive(Deserialize)]
struct LoginReply {
    token: String,
    user: LoginUser,
}

#[derive(Deserialize)]
struct LoginUser {
    id: String,
}

/// The token and id of a login answer, checked for shape: both end up in
/// later requests (a header, a JSON string built by hand).
pub(crate) fn parse_login(reply: &str) -> anyhow::Result<Account> {
    let r: LoginReply = serde_json::from_str(reply).context("not a login answer")?;
    if Token::parse(&r.token).is_none() || UserId::parse(&r.user.id).is_none() {
        bail!("malformed token or user id");
    }
    Ok(Account {
        id: r.user.id,
        token: r.token,
    })
}

/// POST, retried while the server answers 503 (hashing queue full) or 429.
pub(crate) async fn post_retrying(
    http: SocketAddr,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    for _ in 0..RETRIES {
        let (status, reply) = tokio::time::timeout(HTTP_WAIT, post(http, path, body))
            .await
            .with_context(|| format!("no answer to POST {path} in time"))??;
        if status != 503 && status != 429 {
            return Ok((status, reply));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("the server stayed busy answering POST {path}")
}

/// One JSON POST on a fresh connection: status and body. HTTP/1.1 by
/// hand, with `Connection: close` so the body ends with the connection.
pub(crate) async fn post(
    http: SocketAddr,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(http)
        .await
        .with_context(|| format!("cannot connect to {http}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in the answer to POST {path}"))?;
    Ok((status, body.to_owned()))
}

/// Opens `/ws` with the account's bearer token.
pub(crate) async fn connect(http: SocketAddr, account: &Account) -> anyhow::Result<Ws> {
    let mut request = format!("ws://{http}/ws").into_client_request()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", account.token))?;
    request.headers_mut().insert("authorization", bearer);
    client::connect_with(http, request, Buffers::Large).await
}

/// The start of an error answer, for a message (server text is escaped).
fn excerpt(text: &str) -> String {
    text.chars()
        .take(200)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_answers_are_checked() {
        let token = "a".repeat(64);
        let ok =
            format!(r#"{{"token":"{token}","user":{{"id":"Xk2P9a","name":"n"}},"expires_at":1}}"#);
        assert_eq!(parse_login(&ok).unwrap().id, "Xk2P9a");
        let bad = r#"{"token":"\" x","user":{"id":"Xk2P9a","name":"n"}}"#;
        assert!(parse_login(bad).is_err());
        assert!(parse_login("{}").is_err());
    }
}
