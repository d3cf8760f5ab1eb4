//! Services of one process talking to each other without a socket: `bandvote up`'s gateways reach
//! its producer over in-memory pipes, so that `up` has one listener and nothing but its gateways
//! can hand the producer a vote. The hops stay what they are between processes (HTTP/2, gRPC,
//! the same routes and limits): only the transport differs.
//!
//! [`pair`] gives a [`Listener`] to serve (see [`crate::http::Accept`]) and the [`InProcess`]
//! handle that opens connections to it; [`Connector`] opens either such a connection or a TCP one,
//! for the clients that may be given either.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use ::http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::{io::DuplexStream, net::TcpStream, sync::mpsc};

/// Bytes a pipe buffers each way.
const PIPE_BUFFER: usize = 256 << 10;

/// Opens connections to the [`Listener`] of the same [`pair`].
#[derive(Debug, Clone)]
pub struct InProcess {
    connections: mpsc::Sender<DuplexStream>,
}

/// The serving end: every connection an [`InProcess`] opens.
#[derive(Debug)]
pub struct Listener {
    connections: mpsc::Receiver<DuplexStream>,
}

/// A listener and the handle that connects to it.
pub fn pair() -> (InProcess, Listener) {
    let (connections, accepted) = mpsc::channel(64);
    (InProcess { connections }, Listener { connections: accepted })
}

impl InProcess {
    /// A new connection (refused once the listener is gone).
    pub async fn connect(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(PIPE_BUFFER);
        self.connections
            .send(server)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "the in-process service has stopped"))?;
        Ok(client)
    }

    /// A connector for tonic's `Endpoint::connect_with_connector_lazy` and hyper's clients.
    pub fn connector(&self) -> Connector {
        Connector::InProcess(self.clone())
    }
}

impl Listener {
    /// The next connection; pending forever once every [`InProcess`] is dropped (the server stops
    /// on its shutdown signal, not for want of clients).
    pub async fn accept(&mut self) -> (DuplexStream, SocketAddr) {
        match self.connections.recv().await {
            Some(stream) => (stream, SocketAddr::from(([127, 0, 0, 1], 0))),
            None => std::future::pending().await,
        }
    }
}

/// Opens a TCP connection (to the URI's authority) or an in-process one.
#[derive(Debug, Clone)]
pub enum Connector {
    /// Over TCP.
    Tcp(HttpConnector),
    /// To the [`Listener`] of this process.
    InProcess(InProcess),
}

/// A connection a [`Connector`] opened.
#[derive(Debug)]
pub enum Io {
    /// Over TCP.
    Tcp(TokioIo<TcpStream>),
    /// In process.
    InProcess(TokioIo<DuplexStream>),
}

impl tower::Service<Uri> for Connector {
    type Response = Io;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Io, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Self::Tcp(tcp) => tcp.poll_ready(cx).map_err(Into::into),
            Self::InProcess(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Self::Tcp(tcp) => {
                let connecting = tcp.call(uri);
                Box::pin(async move { Ok(Io::Tcp(connecting.await?)) })
            }
            Self::InProcess(inner) => {
                let inner = inner.clone();
                Box::pin(async move { Ok(Io::InProcess(TokioIo::new(inner.connect().await?))) })
            }
        }
    }
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        match self {
            Self::Tcp(tcp) => tcp.connected(),
            Self::InProcess(_) => Connected::new(),
        }
    }
}

impl Read for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Self::InProcess(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write(cx, buf),
            Self::InProcess(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_flush(cx),
            Self::InProcess(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_shutdown(cx),
            Self::InProcess(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
