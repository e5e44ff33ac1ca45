//! One bench user's WebSocket: connect, and the request/answer exchanges
//! of setup (Register, Login, Authorize).

use super::messages::{self, Reply};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// How long one setup exchange may take. Generous: a Register or Login
/// waits its turn for an Argon2 slot behind every other one in flight.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// Client-side socket buffers. The bench holds up to 19,000 connections
/// itself, so idle ones get small buffers; loaded ones get room to read
/// many frames per system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buffers {
    Small,
    Large,
}

fn config(buffers: Buffers) -> WebSocketConfig {
    let read = match buffers {
        Buffers::Small => 4 * 1024,
        Buffers::Large => 64 * 1024,
    };
    WebSocketConfig::default()
        .read_buffer_size(read)
        // Write each frame as it is fed; senders that batch call flush.
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Opens a WebSocket to `addr`, presenting `url` in the upgrade request.
pub async fn connect(addr: SocketAddr, url: &str, buffers: Buffers) -> anyhow::Result<Ws> {
    connect_from(addr, url, buffers, None).await
}

/// Opens a WebSocket to `addr` from the source address `from` (any, if
/// None). One source address has ~28,000 ephemeral ports; a bench holding
/// 100,000 sockets spreads them over several 127.0.0.x addresses.
pub(crate) async fn connect_from(
    addr: SocketAddr,
    url: &str,
    buffers: Buffers,
    from: Option<IpAddr>,
) -> anyhow::Result<Ws> {
    let request = url
        .into_client_request()
        .with_context(|| format!("bad URL {url}"))?;
    let tcp = dial(addr, from).await?;
    upgrade(tcp, request, buffers).await
}

/// A TCP connection to `addr`, bound first to `from` if given. The socket
/// may reuse a local port in TIME_WAIT (`SO_REUSEADDR`): the sockets of
/// the previous run linger there for a minute.
async fn dial(addr: SocketAddr, from: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"));
    };
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("cannot bind to {from}"))?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr} from {from}"))
}

/// Opens a WebSocket to `addr` with a prepared upgrade request (one that
/// carries a header, say).
pub(crate) async fn connect_with(
    addr: SocketAddr,
    request: Request,
    buffers: Buffers,
) -> anyhow::Result<Ws> {
    let tcp = dial(addr, None).await?;
    upgrade(tcp, request, buffers).await
}

/// The WebSocket handshake over a connected socket.
async fn upgrade(tcp: TcpStream, request: Request, buffers: Buffers) -> anyhow::Result<Ws> {
    tcp.set_nodelay(true)?;
    let uri = request.uri().clone();
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config(buffers)))
        .await
        .with_context(|| format!("WebSocket upgrade with {uri} failed"))?;
    Ok(ws)
}

/// What a Register or Login request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoginAnswer {
    LoggedIn { token: String, id: String },
    Refused(String),
}

/// Sends Login (action 0) or Register (action 1) and waits for the answer,
/// skipping user-list broadcasts.
pub async fn login(
    ws: &mut Ws,
    action: u8,
    name: &str,
    password: &str,
) -> anyhow::Result<LoginAnswer> {
    send_text(ws, messages::credentials_request(action, name, password)).await?;
    loop {
        let t = next_text(ws).await?;
        match messages::classify(&t, name) {
            Reply::Presence => continue,
            Reply::LoggedIn {
                token,
                id: Some(id),
            } => {
                return Ok(LoginAnswer::LoggedIn { token, id });
            }
            Reply::LoggedIn { id: None, .. } => {
                bail!("login of {name} answered without the user's own id")
            }
            Reply::Refused(e) => return Ok(LoginAnswer::Refused(e)),
            other => bail!("unexpected answer to the login of {name}: {other:?}"),
        }
    }
}

/// Sends Authorize (action 4); true if the token was accepted.
pub async fn authorize(ws: &mut Ws, name: &str, token: &str) -> anyhow::Result<bool> {
    send_text(ws, messages::authorize_request(token)).await?;
    loop {
        let t = next_text(ws).await?;
        match messages::classify(&t, name) {
            Reply::Presence => continue,
            Reply::Authorized => return Ok(true),
            Reply::Refused(_) => return Ok(false),
            other => bail!("unexpected answer to the Authorize of {name}: {other:?}"),
        }
    }
}

async fn send_text(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    ws.send(Message::text(text))
        .await
        .context("cannot send request")
}

/// The next text frame, within [`ANSWER_WAIT`].
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no answer from the server in time")?;
        match next {
            None => bail!("the server closed the connection"),
            Some(Err(e)) => bail!("connection failed: {e}"),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(f))) => bail!("the server closed the connection: {f:?}"),
            Some(Ok(_)) => continue,
        }
    }
}
