//! Helpers for the device API: requests with a token, well-formed keys.

use super::{ApiUser, Reply, TestServer, reply};
use serde_json::{Value, json};

pub async fn post_with_token(server: &TestServer, path: &str, token: &str, body: Value) -> Reply {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.http_base()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    reply(r).await
}

pub async fn delete_with_token(server: &TestServer, path: &str, token: &str) -> Reply {
    let r = reqwest::Client::new()
        .delete(format!("{}{path}", server.http_base()))
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE");
    reply(r).await
}

/// A well-formed device key: base64url (no padding) of a 65-byte
/// uncompressed point, distinct per `seed`. The server checks the shape
/// only, so it need not be on the curve.
pub fn device_key(seed: u8) -> String {
    let mut point = [seed; 65];
    point[0] = 0x04;
    base64url(&point)
}

pub fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(ABC[((acc >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Registers the session's device; returns the reply.
pub async fn add_device(server: &TestServer, user: &ApiUser, seed: u8, name: &str) -> Reply {
    let body = json!({"public_key": device_key(seed), "name": name});
    post_with_token(server, "/api/devices", &user.token, body).await
}
