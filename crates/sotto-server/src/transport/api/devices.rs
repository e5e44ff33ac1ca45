//! `/api/devices` and `/api/logout-all`: the calling user's end-to-end
//! devices (docs/PROTOCOL.md §14.5). Each handler authenticates first,
//! then reads its body, so an anonymous client cannot make the server
//! read one.

use super::{ApiState, authenticate, json_body, read_json, session_cookie};
use crate::transport::encode::native::device_view;
use crate::transport::error::ApiError;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sotto_core::auth::UserId;
use sotto_core::ports::{Bound, DeviceId};
use sotto_proto::api::DeviceBody;
use std::sync::Arc;

/// `POST /api/devices`: registers (or re-binds) the session's device.
pub(super) async fn register(
    State(st): State<Arc<ApiState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let session = authenticate(&st, req.headers()).await?;
    admit(&st, &session.user.id)?;
    let body: DeviceBody = read_json(req, st.max_body).await?;
    body.check().map_err(invalid)?;
    let bound = st
        .upgrader
        .hub
        .register_device(
            &session.user.id,
            &session.token.hash(),
            &body.public_key,
            &body.name,
        )
        .await?;
    let (status, device) = match &bound {
        Bound::Created(d) => (StatusCode::CREATED, d),
        Bound::Rebound(d) => (StatusCode::OK, d),
        Bound::SessionHasDevice(_) => {
            return Err(conflict(
                "device_exists",
                "this session already has a device with another key",
            ));
        }
        Bound::TooMany => {
            return Err(conflict(
                "too_many_devices",
                "this user has the maximum number of devices; remove one first",
            ));
        }
        Bound::NoSession => return Err(ApiError::unauthorized("the session was revoked")),
    };
    let body = json!({ "device": device_view(device) });
    Ok((status, json_body(body)).into_response())
}

/// `GET /api/devices`: the user's devices, the session's own marked.
pub(super) async fn list(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = authenticate(&st, &headers).await?;
    let hub = &st.upgrader.hub;
    let current = hub.session_device(&session.token.hash()).await?;
    let devices = hub.devices(&session.user.id).await?;
    let list: Vec<_> = devices
        .iter()
        .map(|d| {
            let mut v = json!(device_view(d));
            v["current"] = json!(current.as_ref().is_some_and(|c| c.id == d.id));
            v
        })
        .collect();
    Ok(json_body(json!({ "devices": list })))
}

/// `DELETE /api/devices/<id>`: removes one of the user's devices and
/// revokes its sessions (the caller's own, if it is theirs).
pub(super) async fn delete(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = authenticate(&st, &headers).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such device");
    let id = DeviceId::parse(&id).ok_or_else(not_found)?;
    admit(&st, &session.user.id)?;
    if !st.upgrader.hub.delete_device(&session.user.id, &id).await? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/logout-all`: every session of the user (API and compat)
/// revoked, every device removed, every socket closed.
pub(super) async fn logout_all(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = authenticate(&st, &headers).await?;
    let closed = st.upgrader.hub.logout_everywhere(&session.user.id).await?;
    tracing::info!(user = %session.user.id, closed, "API logout everywhere");
    let cookie = session_cookie("", 0, st.upgrader.tls);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// 429 when the user is over their send limits (device writes count).
fn admit(st: &ApiState, user: &UserId) -> Result<(), ApiError> {
    st.upgrader
        .hub
        .admit_device_write(user)
        .map_err(|secs| ApiError::rate_limited(std::time::Duration::from_secs(secs)))
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
}

fn conflict(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}
