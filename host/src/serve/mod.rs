//! Silo's doors: the HTTP sidecar ([`sidecar`]) and the S3 endpoint
//! ([`s3`]). Each turns its protocol's requests into calls on the core
//! (`Silo`'s methods, which take the acting principal) and the answers
//! back into its protocol; neither decides access, a header or a
//! precondition. Both serve their connections through one loop.

use std::sync::Arc;
use std::time::Duration;

pub mod auth;
pub mod s3;
pub mod sidecar;

pub use crate::serving::REQUEST_ID;
pub use auth::TOKEN_PRINCIPAL;
pub use sidecar::{OPENAPI, Tokens, router};

/// How a server's shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every request in flight finished.
    Finished,
    /// The drain timeout cut off requests still in flight.
    TimedOut,
}

/// Serve `router` on `listener` until `shutdown` completes: then take no
/// new connections and give the requests in flight up to `drain` to
/// finish. Responses go out without Nagle's delay (a small file's headers
/// and body are separate writes).
///
/// At most `max_connections` are open at once: past it a new connection
/// is answered 503 and closed, so a flood of idle connections costs the
/// node a bounded number of descriptors and buffers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) -> std::io::Result<Drained> {
    let listener = Capped::new(listener, max_connections, SIDECAR_BUSY);
    let service = hyper_util::service::TowerToHyperService::new(router);
    serve_connections(listener, service, None, shutdown, drain).await
}

/// Largest read buffer of one connection. hyper grows a connection's
/// buffer up to about 400 KiB under a large body and keeps it while the
/// connection idles; capped here, 256 busy or idle keep-alive connections
/// hold at most 16 MiB of it.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// Serve `service` on each connection `listener` accepts (HTTP/1.1, with
/// responses sent without Nagle's delay) until `shutdown` completes; then
/// take no new connections and give those under way up to `drain`.
/// `header_timeout`: a client slower than this with its headers is cut off.
pub(crate) async fn serve_connections<S, B>(
    mut listener: Capped,
    service: S,
    header_timeout: Option<Duration>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<Drained>
where
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use axum::serve::Listener;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .max_buf_size(MAX_CONNECTION_BUFFER);
        if let Some(timeout) = header_timeout {
            builder.header_read_timeout(timeout);
        }
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    // New connections are refused from here on, not left in the backlog.
    drop(listener);
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => Ok(Drained::Finished),
        Err(_) => Ok(Drained::TimedOut),
    }
}

/// What a sidecar connection past the cap is answered.
const SIDECAR_BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
content-length: 80\r\nconnection: close\r\n\r\n\
{\"error\": {\"code\": \"busy\", \"message\": \"too many open connections; retry later\"}}";

/// A listener that keeps at most a given number of connections open.
/// Each accepted connection holds a place until it closes; one accepted
/// past the cap gets `busy` (a whole, short HTTP answer) and is closed.
pub(crate) struct Capped {
    listener: tokio::net::TcpListener,
    places: Arc<tokio::sync::Semaphore>,
    busy: &'static [u8],
}

/// A connection holding its place.
pub(crate) struct Placed {
    stream: tokio::net::TcpStream,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl Capped {
    pub(crate) fn new(listener: tokio::net::TcpListener, max: usize, busy: &'static [u8]) -> Self {
        Capped {
            listener,
            places: Arc::new(tokio::sync::Semaphore::new(
                max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            busy,
        }
    }
}

impl axum::serve::Listener for Capped {
    type Io = Placed;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Placed, std::net::SocketAddr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: wait, then go on.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.places.clone().try_acquire_owned() {
                Ok(place) => return (Placed { stream, _place: place }, addr),
                Err(_) => {
                    let busy = self.busy;
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let mut stream = stream;
                        // A client that reads nothing does not hold the task.
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            stream.write_all(busy).await?;
                            stream.shutdown().await
                        })
                        .await;
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

impl tokio::io::AsyncRead for Placed {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Placed {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
