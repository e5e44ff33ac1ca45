//! Deadlines for the parts of an HTTP exchange that hyper does not bound.
//!
//! hyper's header timeout covers the request head (and, since the timer
//! starts whenever hyper waits for a head, the idle time between
//! keep-alive requests). Nothing covered what comes after: a client that
//! sent the headers of `POST /api/login` with `Content-Length: 16000` and
//! then one byte held its connection slot for ever, and so did a client
//! that asked for a large file and never read it (issue 13, finding 2:
//! 19,000 such sockets held every slot). Two small wrappers close that:
//!
//! - [`TimedBody`]: the whole request body must arrive within a deadline
//!   counted from the headers; after it, reading the body fails with
//!   [`BodyTimeout`], which the API answers with 408 (and the connection
//!   closes). A total deadline rather than an idle one: a byte every few
//!   seconds would reset an idle timer for ever.
//! - [`StallGuard`]: an `AsyncWrite` adapter that fails a write (or
//!   flush) that has waited on the peer longer than a deadline without any
//!   progress, which ends the connection and frees its slot. It never
//!   fires for a client that reads, however slowly the response goes.

use hyper::body::{Body, Bytes, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The request body did not arrive in full within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimeout;

/// Whether `e` (or anything it wraps, as axum's and http-body-util's
/// errors do) is a [`BodyTimeout`]: the API answers 408 for it, not 413.
pub(crate) fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<BodyTimeout>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A request body that must be complete by a fixed instant.
pub(crate) struct TimedBody<B> {
    inner: B,
    deadline: Instant,
    /// Made on the first read that has to wait, so bodies that are already
    /// in (every GET) cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> TimedBody<B> {
    /// `limit` counts from now: call it when the headers have arrived.
    pub(crate) fn new(inner: B, limit: Duration) -> TimedBody<B> {
        TimedBody {
            inner,
            deadline: Instant::now() + limit,
            sleep: None,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Turns a [`StallGuard`]'s deadline off: after an HTTP upgrade the socket
/// belongs to the WebSocket, whose writer has its own rules for clients
/// that stop reading.
#[derive(Clone, Default)]
pub(crate) struct Disarm(Arc<AtomicBool>);

impl Disarm {
    pub(crate) fn disarm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_disarmed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Fails a write or flush that makes no progress for `limit`: the peer
/// stopped reading, and waiting longer would only hold its slot and the
/// response's memory. Reads pass through untouched.
pub(crate) struct StallGuard<S> {
    io: S,
    limit: Duration,
    /// Running while a write waits; made once, re-armed after progress.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    disarm: Disarm,
}

impl<S> StallGuard<S> {
    pub(crate) fn new(io: S, limit: Duration) -> StallGuard<S> {
        StallGuard {
            io,
            limit,
            sleep: None,
            armed: false,
            disarm: Disarm::default(),
        }
    }

    /// A handle that turns the deadline off, for the upgrade path.
    pub(crate) fn disarm_handle(&self) -> Disarm {
        self.disarm.clone()
    }

    /// Passes a finished write through (progress: the clock stops), or
    /// for one that waits, starts the clock if it is not running and fails
    /// once it has run out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() || self.disarm.is_disarmed() {
            self.armed = false;
            return polled;
        }
        if !self.armed {
            let at = Instant::now() + self.limit;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        if let Some(sleep) = &mut self.sleep {
            ready!(sleep.as_mut().poll(cx));
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no response data within the write deadline",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        let (client, server) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(server, LIMIT);
        let started = Instant::now();
        let err = guarded.write_all(&[0; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMIT);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        let (mut client, server) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(LIMIT / 2).await;
                total += client.read(&mut buf).await.unwrap();
            }
        });
        let mut guarded = StallGuard::new(server, LIMIT);
        guarded.write_all(&[0; 8192]).await.unwrap();
        reader.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_disarmed_guard_waits() {
        let (client, server) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(server, LIMIT);
        guarded.disarm_handle().disarm();
        let write = guarded.write_all(&[0; 4096]);
        assert!(tokio::time::timeout(LIMIT * 3, write).await.is_err());
        drop(client);
    }

    /// A body whose first byte arrives and then nothing more.
    fn stalling() -> axum::body::Body {
        let first = futures_util::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"{"))]);
        axum::body::Body::from_stream(first.chain(futures_util::stream::pending()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_times_out() {
        let body = TimedBody::new(stalling(), LIMIT);
        let started = Instant::now();
        let err = axum::body::to_bytes(axum::body::Body::new(body), 16_000)
            .await
            .unwrap_err();
        assert!(is_body_timeout(&err), "{err:?}");
        assert_eq!(started.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_in_time_is_read() {
        let body = TimedBody::new(axum::body::Body::from("{}"), LIMIT);
        let bytes = axum::body::to_bytes(axum::body::Body::new(body), 16_000);
        assert_eq!(bytes.await.unwrap(), "{}");
    }

    #[test]
    fn other_errors_are_not_timeouts() {
        let e = io::Error::other("reset");
        assert!(!is_body_timeout(&e));
    }
}
