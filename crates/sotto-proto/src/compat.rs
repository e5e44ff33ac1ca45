//! QMessageServer's JSON protocol, byte-compatible with its clients.
//!
//! Requests are JSON objects with an integer `action` (0–4); responses always
//! carry `valid` and, mostly, an integer `event`. Parsing is total: every text
//! frame becomes either a [`Request`] or a [`ProtocolError`] whose message is
//! sent back to the peer as `{"valid":false,"error":"…"}`. Nothing here panics
//! on input, so this is the place fuzzing aims at.

use serde::Serialize;
use serde_json::{Map, Value};

/// Request kinds, numbered as QMessageServer's `HttpServer::Requests`.
///
/// The numbers are the wire format; `/enums.js` and `/enums.mjs` are generated
/// from [`Action::ALL`] so they are defined only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Login = 0,
    Register = 1,
    Logout = 2,
    Message = 3,
    Authorize = 4,
}

impl Action {
    /// Every action with the name QMessageServer's enums file gives it.
    pub(crate) const ALL: [(Action, &'static str); 5] = [
        (Action::Login, "LoginRequest"),
        (Action::Register, "RegisterRequest"),
        (Action::Logout, "LogoutRequest"),
        (Action::Message, "MessageRequest"),
        (Action::Authorize, "AuthorizeRequest"),
    ];

    fn from_number(n: i64) -> Option<Action> {
        Action::ALL.iter().map(|(a, _)| *a).find(|a| *a as i64 == n)
    }
}

/// Response kinds, numbered as QMessageServer's `HttpServer::Responses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Authorization = 0,
    Login = 1,
    Message = 2,
    InvalidUser = 3,
    UserlistChange = 4,
}

impl Event {
    /// Every event with the name QMessageServer's enums file gives it.
    pub(crate) const ALL: [(Event, &'static str); 5] = [
        (Event::Authorization, "AuthorizationEvent"),
        (Event::Login, "LoginEvent"),
        (Event::Message, "MessageEvent"),
        (Event::InvalidUser, "InvalidUserEvent"),
        (Event::UserlistChange, "UserlistChangeEvent"),
    ];
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

/// Login and Register carry the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub password: String,
    /// The client's end-to-end public key (PEM in the example client);
    /// opaque to the server, which only relays it in user lists.
    pub pub_key: String,
}

/// A parsed compat request. Field values are still unvalidated strings:
/// names, tokens and ids are checked by the hub, which owns those rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Login(Credentials),
    Register(Credentials),
    Logout {
        token: String,
    },
    Message {
        token: String,
        target: String,
        message: String,
    },
    Authorize {
        token: String,
    },
}

/// Why a text frame is not a valid request. The `Display` text is what the
/// peer sees, so it names the field and never echoes the input back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Request is not valid JSON.")]
    NotJson,
    #[error("Request must be a JSON object.")]
    NotObject,
    #[error("Field `{0}` is missing.")]
    Missing(&'static str),
    #[error("Field `{0}` must be {1}.")]
    WrongType(&'static str, &'static str),
    #[error("Unknown action.")]
    UnknownAction,
}

/// Parses one text frame. Unknown extra fields are ignored, as QMessageServer
/// does, so newer clients keep working.
pub fn parse_request(text: &str) -> Result<Request, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ProtocolError::NotJson)?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError::NotObject);
    };
    let action = match obj.get("action") {
        None => return Err(ProtocolError::Missing("action")),
        Some(v) => v
            .as_i64()
            .ok_or(ProtocolError::WrongType("action", "an integer"))?,
    };
    let action = Action::from_number(action).ok_or(ProtocolError::UnknownAction)?;
    Ok(match action {
        Action::Login => Request::Login(credentials(&obj)?),
        Action::Register => Request::Register(credentials(&obj)?),
        Action::Logout => Request::Logout {
            token: string_field(&obj, "token")?,
        },
        Action::Message => Request::Message {
            token: string_field(&obj, "token")?,
            target: string_field(&obj, "target")?,
            message: string_field(&obj, "message")?,
        },
        Action::Authorize => Request::Authorize {
            token: string_field(&obj, "token")?,
        },
    })
}

fn credentials(obj: &Map<String, Value>) -> Result<Credentials, ProtocolError> {
    Ok(Credentials {
        name: string_field(obj, "name")?,
        password: string_field(obj, "password")?,
        // QMessageServer treats a missing key as an empty one.
        pub_key: optional_string_field(obj, "pubKey")?.unwrap_or_default(),
    })
}

fn string_field(obj: &Map<String, Value>, key: &'static str) -> Result<String, ProtocolError> {
    optional_string_field(obj, key)?.ok_or(ProtocolError::Missing(key))
}

fn optional_string_field(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, ProtocolError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProtocolError::WrongType(key, "a string")),
    }
}

/// One entry of a `users` list, as QMessageServer sends it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserEntry<'a> {
    pub id: &'a str,
    pub name: &'a str,
    #[serde(rename = "publicKey")]
    pub public_key: &'a str,
}

/// Every response the compat protocol sends. Absent fields are omitted, as
/// QMessageServer omits them.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Response<'a> {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
    /// Pre-serialized JSON array, so one user list is encoded once and
    /// spliced into many responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

impl Response<'_> {
    /// Encodes the response. Serializing these plain structs cannot fail; the
    /// fallback keeps that promise without a panic path.
    pub fn encode(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"valid":false,"error":"Internal error."}"#.to_owned())
    }
}

/// `{"valid":false,"error":…}` with an optional event, the compat error shape.
pub fn error_response(event: Option<Event>, error: &str) -> String {
    Response {
        valid: false,
        event,
        error: Some(error),
        ..Default::default()
    }
    .encode()
}

/// The enums as an ES module, served at `/enums.mjs` as QMessageServer does.
pub fn enums_module() -> String {
    format!(
        "export const Requests = {};\nexport const Responses = {};\n",
        enum_object(Action::ALL.iter().map(|(a, n)| (*n, *a as u8))),
        enum_object(Event::ALL.iter().map(|(e, n)| (*n, *e as u8))),
    )
}

/// The enums as a classic script defining the same two globals, for pages
/// that load `/enums.js` with a plain `<script>` tag.
pub fn enums_script() -> String {
    format!(
        "var Requests = Object.freeze({});\nvar Responses = Object.freeze({});\n",
        enum_object(Action::ALL.iter().map(|(a, n)| (*n, *a as u8))),
        enum_object(Event::ALL.iter().map(|(e, n)| (*n, *e as u8))),
    )
}

fn enum_object<'a>(pairs: impl Iterator<Item = (&'a str, u8)>) -> String {
    let body: Vec<String> = pairs.map(|(name, n)| format!("{name}: {n}")).collect();
    format!("{{{}}}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_action() {
        let login = parse_request(r#"{"action":0,"name":"a","password":"p","pubKey":"k"}"#);
        assert_eq!(
            login,
            Ok(Request::Login(Credentials {
                name: "a".into(),
                password: "p".into(),
                pub_key: "k".into()
            }))
        );
        assert!(matches!(
            parse_request(r#"{"action":1,"name":"a","password":"p"}"#),
            Ok(Request::Register(c)) if c.pub_key.is_empty()
        ));
        assert!(matches!(
            parse_request(r#"{"action":2,"token":"t"}"#),
            Ok(Request::Logout { .. })
        ));
        assert!(matches!(
            parse_request(r#"{"action":3,"token":"t","target":"x","message":"m"}"#),
            Ok(Request::Message { .. })
        ));
        assert!(matches!(
            parse_request(r#"{"action":4,"token":"t"}"#),
            Ok(Request::Authorize { .. })
        ));
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert_eq!(parse_request("{"), Err(ProtocolError::NotJson));
        assert_eq!(parse_request("[1]"), Err(ProtocolError::NotObject));
        assert_eq!(parse_request("{}"), Err(ProtocolError::Missing("action")));
        assert_eq!(
            parse_request(r#"{"action":"0"}"#),
            Err(ProtocolError::WrongType("action", "an integer"))
        );
        assert_eq!(
            parse_request(r#"{"action":9}"#),
            Err(ProtocolError::UnknownAction)
        );
        assert_eq!(
            parse_request(r#"{"action":1.5}"#),
            Err(ProtocolError::WrongType("action", "an integer"))
        );
        assert_eq!(
            parse_request(r#"{"action":3,"token":"t","target":5,"message":"m"}"#),
            Err(ProtocolError::WrongType("target", "a string"))
        );
        assert_eq!(
            parse_request(r#"{"action":4}"#),
            Err(ProtocolError::Missing("token"))
        );
    }

    #[test]
    fn responses_omit_absent_fields() {
        let r = Response {
            valid: true,
            event: Some(Event::Message),
            sender: Some("abc123"),
            message: Some("hi"),
            ..Default::default()
        };
        assert_eq!(
            r.encode(),
            r#"{"valid":true,"event":2,"sender":"abc123","message":"hi"}"#
        );
        assert_eq!(error_response(None, "x"), r#"{"valid":false,"error":"x"}"#);
    }

    #[test]
    fn enums_files_carry_the_wire_numbers() {
        let m = enums_module();
        assert!(m.contains("export const Requests = {LoginRequest: 0, RegisterRequest: 1, LogoutRequest: 2, MessageRequest: 3, AuthorizeRequest: 4};"));
        assert!(m.contains("export const Responses = {AuthorizationEvent: 0, LoginEvent: 1, MessageEvent: 2, InvalidUserEvent: 3, UserlistChangeEvent: 4};"));
        assert!(enums_script().contains("var Requests = Object.freeze({LoginRequest: 0"));
    }
}
