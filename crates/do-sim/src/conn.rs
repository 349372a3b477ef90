//! A TCP listener whose connections a handler can kill, so that the simulator
//! can apply a POST and then close the connection without sending a response
//! (`axum::serve` gives no per-connection handle; the connection's handle is
//! passed to handlers as `ConnectInfo<ConnHandle>` instead).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Per-connection handle, available to handlers as `ConnectInfo<ConnHandle>`.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    killed: Arc<AtomicBool>,
}

impl ConnHandle {
    /// The connection fails its next read or write: the response being
    /// produced is never sent and the socket is closed.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(crate) struct SimListener {
    pub inner: TcpListener,
    pub closed: Arc<AtomicBool>,
}

impl Listener for SimListener {
    type Io = KillableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let handle = ConnHandle {
                        killed: Arc::new(AtomicBool::new(false)),
                    };
                    let io = KillableStream {
                        inner: stream,
                        killed: handle.killed.clone(),
                        closed: self.closed.clone(),
                    };
                    return (io, handle);
                }
                Err(e) => {
                    tracing::debug!("sim accept error: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnHandle {
            killed: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A TCP stream that errors once its connection was killed (or the simulator shut down).
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl KillableStream {
    fn dead(&self) -> bool {
        self.killed.load(Ordering::SeqCst) || self.closed.load(Ordering::SeqCst)
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by simulator",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dead() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dead() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if self.dead() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
