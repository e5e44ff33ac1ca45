//! Where a request's session token comes from, for the account API and
//! the WebSocket handshakes alike: `Authorization: Bearer`, a
//! `Sec-WebSocket-Protocol` entry (browsers cannot set headers on a
//! WebSocket), or the session cookie the API's login sets.

use axum::http::{HeaderMap, header};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "sotto_session";
/// Prefix of the subprotocol entry that carries the token.
pub(crate) const TOKEN_PROTOCOL_PREFIX: &str = "sotto.token.";

/// The raw token from the header, the subprotocol list or the cookie, in
/// that order. `Err` when a credential is present but malformed.
pub(crate) fn credential(
    headers: &HeaderMap,
    offered: &[String],
) -> Result<Option<String>, &'static str> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let auth = auth
            .to_str()
            .map_err(|_| "malformed Authorization header")?;
        let (scheme, token) = auth
            .split_once(' ')
            .ok_or("malformed Authorization header")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("Authorization must use the Bearer scheme");
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(token) = offered
        .iter()
        .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
    {
        return Ok(Some(token.to_owned()));
    }
    Ok(cookie(headers, SESSION_COOKIE))
}

/// The value of cookie `name`, if sent.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use sotto_proto::native::SUBPROTOCOL;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_in_order() {
        let t = "a".repeat(64);
        let h = headers(&[
            ("authorization", &format!("Bearer {t}")),
            ("cookie", "sotto_session=zzz"),
        ]);
        assert_eq!(credential(&h, &[]), Ok(Some(t.clone())));
        let offered = vec![
            SUBPROTOCOL.to_owned(),
            format!("{TOKEN_PROTOCOL_PREFIX}{t}"),
        ];
        assert_eq!(credential(&headers(&[]), &offered), Ok(Some(t.clone())));
        let h = headers(&[("cookie", &format!("a=b; sotto_session={t}; c=d"))]);
        assert_eq!(credential(&h, &[]), Ok(Some(t)));
        assert_eq!(credential(&headers(&[]), &[]), Ok(None));
        assert!(credential(&headers(&[("authorization", "Basic eDp5")]), &[]).is_err());
        assert!(credential(&headers(&[("authorization", "Bearer")]), &[]).is_err());
    }
}
