//! The accept loops of the HTTP listeners: plain HTTP (ICANN and admin) and PubkyTLS. Every connection is
//! served by hyper-util's HTTP/1 + HTTP/2 builder with the service behind a per-connection `PeerLayer`
//! (which computes each request's client address, believing the trusted proxies), and watched so that
//! shutdown can let in-flight requests finish. In `proxy_protocol` mode a connection is first read for its
//! PROXY preface (before the TLS handshake on PubkyTLS), which names the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::response::Response;
use homestead_middleware::{PeerLayer, Transport, TrustedProxies};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::{Layer, Service};

use crate::proxy_protocol::ProxyProtocol;

/// How long shutdown waits for in-flight requests before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Requests one HTTP/2 connection may have in flight at once (h2's default is 200), so that multiplexing
/// cannot multiply what `max_connections` allows.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

/// What one connection may cost: time to send headers, silence, head size; and how many are served at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send the request headers or finish a TLS handshake.
    pub header_read_timeout: Duration,
    /// Time without any traffic before a connection is closed.
    pub idle_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Connections served at once by one listener.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// The limits of `[drive]`.
    pub fn from_config(drive: &homestead_config::Drive) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(drive.header_read_timeout_secs.get()),
            idle_timeout: Duration::from_secs(drive.idle_timeout_secs.get()),
            max_header_bytes: drive.max_header_bytes,
            max_connections: drive.max_connections,
        }
    }
}

/// When a connection last moved a byte, as milliseconds since it opened.
#[derive(Debug, Clone)]
struct Activity {
    opened: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

/// An IO stream that records its activity.
struct Watched<IO> {
    io: IO,
    activity: Activity,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What a listener speaks.
#[derive(Clone)]
pub enum Protocol {
    /// Plain HTTP.
    Http,
    /// TLS with the server key as a raw public key, then HTTP.
    PubkyTls(TlsAcceptor),
}

/// How a listener learns each request's client address.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    /// `proxy_protocol` mode: connections from the trusted load balancers only, each starting with a PROXY
    /// preface that names the client. `None`: the TCP peer is the client.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// HTTP reverse proxies whose `X-Forwarded-For` names the client of a request (none in
    /// `proxy_protocol` mode).
    pub forwarded: TrustedProxies,
}

/// What a listener can serve: a router, or the client API's host dispatch.
pub trait Served:
    Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Served for S where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `service` on `listener` until `shutdown` changes (or its sender is dropped), then drains
/// connections for at most [`SHUTDOWN_GRACE`]. Each request's client address is found as `clients` says.
pub fn spawn<S: Served>(
    name: &'static str,
    listener: TcpListener,
    protocol: Protocol,
    service: S,
    clients: ClientAddress,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = name, %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            // Small answers go out at once instead of waiting for the client's delayed ACK (Nagle).
            let _ = stream.set_nodelay(true);
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Full: close at once rather than queue, so the server keeps serving its current clients.
                tracing::debug!(listener = name, %remote, "too many connections: closed");
                drop(stream);
                continue;
            };
            let connection = Connection {
                builder: builder.clone(),
                service: service.clone(),
                trusted: clients.forwarded.clone(),
                remote,
                watcher: graceful.watcher(),
                limits,
                _slot: slot,
            };
            tokio::spawn(connection.start(
                stream,
                protocol.clone(),
                clients.proxy_protocol.clone(),
            ));
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => tracing::debug!(listener = name, "all connections closed"),
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::warn!(listener = name, "connections still open after {SHUTDOWN_GRACE:?}: closing them");
            }
        }
    })
}

struct Connection<S> {
    builder: auto::Builder<TokioExecutor>,
    service: S,
    trusted: TrustedProxies,
    /// The TCP peer, then the client a PROXY preface names.
    remote: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
    limits: ConnectionLimits,
    /// Held while the connection lives.
    _slot: OwnedSemaphorePermit,
}

impl<S: Served> Connection<S> {
    async fn start(
        mut self,
        mut stream: TcpStream,
        protocol: Protocol,
        proxy_protocol: Option<ProxyProtocol>,
    ) {
        if let Some(proxy_protocol) = proxy_protocol {
            let timeout = self.limits.header_read_timeout;
            match proxy_protocol
                .accept(&mut stream, self.remote, timeout)
                .await
            {
                Ok(client) => self.remote = client,
                Err(refused) => {
                    tracing::debug!(peer = %self.remote, %refused, "PROXY protocol: connection refused");
                    return;
                }
            }
        }
        match protocol {
            Protocol::Http => self.serve(stream, Transport::Icann).await,
            Protocol::PubkyTls(acceptor) => self.serve_tls(acceptor, stream).await,
        }
    }

    async fn serve_tls(self, acceptor: TlsAcceptor, stream: TcpStream) {
        let handshake =
            tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            // Scanners, plain-HTTP clients and X.509-only clients end here: not the server's problem.
            Ok(Err(err)) => {
                tracing::debug!(remote = %self.remote, %err, "PubkyTLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(remote = %self.remote, "PubkyTLS handshake timed out");
                return;
            }
        };
        let sni = tls.get_ref().1.server_name().map(str::to_string);
        self.serve(tls, Transport::PubkyTls { sni }).await;
    }

    async fn serve<IO>(self, io: IO, transport: Transport)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = PeerLayer::new(transport, self.remote, self.trusted);
        let service = TowerToHyperService::new(peer.layer(self.service));
        let activity = Activity::new();
        let io = Watched {
            io,
            activity: activity.clone(),
        };
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let connection = self.watcher.watch(connection);
        tokio::pin!(connection);
        let check_every = (self.limits.idle_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                result = &mut connection => {
                    if let Err(err) = result {
                        tracing::debug!(remote = %self.remote, %err, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep(check_every) => {
                    if activity.idle() >= self.limits.idle_timeout {
                        tracing::debug!(remote = %self.remote, "idle connection closed");
                        return;
                    }
                }
            }
        }
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(name: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot bind the {name} listener to {addr}: {err}"))
}

/// The rustls acceptor for PubkyTLS.
pub fn tls_acceptor(config: rustls::ServerConfig) -> TlsAcceptor {
    TlsAcceptor::from(Arc::new(config))
}
