//! A deadline on the start of every connection: a peer that opens a socket and never sends the
//! HTTP/2 preface (24 bytes; in TLS, a ClientHello is longer) within `handshake_timeout` is
//! disconnected. Hyper would otherwise wait for the preface forever, and HTTP/2 keep-alive pings
//! cannot start before it, so silent sockets pile up until the process runs out of them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes a client must send before the deadline: the HTTP/2 connection preface.
const PREFACE_BYTES: usize = 24;

/// An accepted connection that fails its reads once `timeout` passes before the client has
/// sent [`PREFACE_BYTES`]; after that, it is the connection itself.
pub struct HandshakeDeadline<IO> {
    inner: IO,
    received: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> HandshakeDeadline<IO> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: IO, timeout: Duration) -> Self {
        Self {
            inner,
            received: 0,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<IO> std::fmt::Debug for HandshakeDeadline<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeDeadline")
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Every connection `incoming` accepts, wrapped in a [`HandshakeDeadline`] of `timeout`.
pub fn with_handshake_deadline<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>>,
    timeout: Duration,
) -> impl Stream<Item = Result<HandshakeDeadline<IO>, E>> {
    incoming.map(move |accepted| accepted.map(|io| HandshakeDeadline::new(io, timeout)))
}

impl<IO: AsyncRead + Unpin> AsyncRead for HandshakeDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.received += buf.filled().len() - before;
                if this.received >= PREFACE_BYTES {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent no HTTP/2 preface within the handshake timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HandshakeDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<IO: Connected> Connected for HandshakeDeadline<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
