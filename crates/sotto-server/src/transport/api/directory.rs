//! The contact-list reads: `/api/me`, `/api/users` (with devices and a
//! name-prefix search), `/api/users/<id>` and `/api/conversations`
//! (docs/PROTOCOL.md §14.4 and §14.7). Every list is one bounded page.

use super::{ApiState, authenticate, json_body};
use crate::transport::encode::native::{device_view, device_views, message_view};
use crate::transport::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sotto_core::auth::UserId;
use sotto_core::hub::Member;
use sotto_proto::native::UserView;
use std::sync::Arc;

/// Most users in one directory page.
const USERS_MAX: u32 = 1000;
/// Longest search prefix: a whole user name.
const PREFIX_MAX: usize = 32;
/// Most conversations in one page, and the default.
const CONVERSATIONS_MAX: u32 = 200;
const CONVERSATIONS_DEFAULT: u32 = 100;

pub(super) async fn me(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = authenticate(&st, &headers).await?;
    let device = st.upgrader.hub.session_device(&s.token.hash()).await?;
    let u = &s.user;
    Ok(json_body(json!({
        "id": u.id.as_str(),
        "name": u.name.as_str(),
        "public_key": u.public_key,
        "device": device.as_ref().map(device_view),
    })))
}

#[derive(Deserialize)]
pub(super) struct UsersQuery {
    limit: Option<u32>,
    q: Option<String>,
}

pub(super) async fn users(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authenticate(&st, &headers).await?;
    let Ok(Query(q)) = query else {
        return Err(ApiError::bad_request("limit must be a number"));
    };
    let prefix = q.q.as_deref().filter(|p| !p.is_empty());
    if let Some(p) = prefix
        && !is_name_prefix(p)
    {
        return Err(ApiError::bad_request(format!(
            "q must be at most {PREFIX_MAX} of the characters a user name may hold"
        )));
    }
    let limit = q.limit.unwrap_or(USERS_MAX).clamp(1, USERS_MAX);
    let list = st.upgrader.hub.directory(limit, prefix).await?;
    let users: Vec<_> = list.iter().map(user_view).collect();
    Ok(json_body(json!({ "users": users })))
}

pub(super) async fn user(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authenticate(&st, &headers).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such user");
    let id = UserId::parse(&id).ok_or_else(not_found)?;
    let member = st.upgrader.hub.member(&id).await?.ok_or_else(not_found)?;
    Ok(json_body(json!(user_view(&member))))
}

#[derive(Deserialize)]
pub(super) struct ConversationsQuery {
    limit: Option<u32>,
}

pub(super) async fn conversations(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<ConversationsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let s = authenticate(&st, &headers).await?;
    let Ok(Query(q)) = query else {
        return Err(ApiError::bad_request("limit must be a number"));
    };
    let limit = q
        .limit
        .unwrap_or(CONVERSATIONS_DEFAULT)
        .clamp(1, CONVERSATIONS_MAX);
    let list = st.upgrader.hub.conversations(&s.user.id, limit).await?;
    let conversations: Vec<_> = list
        .iter()
        .map(|c| {
            json!({
                "with": c.with.as_str(),
                "name": c.name.as_str(),
                "last": message_view(&c.last, None),
                "unread": c.unread,
            })
        })
        .collect();
    Ok(json_body(json!({ "conversations": conversations })))
}

fn user_view(m: &Member) -> UserView<'_> {
    UserView {
        id: m.profile.id.as_str(),
        name: m.profile.name.as_str(),
        online: m.online,
        public_key: &m.profile.public_key,
        devices: device_views(&m.devices),
    }
}

/// Whether `p` could begin a user name: the characters names hold, at
/// most a name's length. Anything else cannot match, so it is refused
/// before reaching the store.
fn is_name_prefix(p: &str) -> bool {
    p.len() <= PREFIX_MAX
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
