//! The accept loops of the HTTP listeners: plain HTTP (ICANN and admin) and PubkyTLS. Every connection is
//! served by hyper-util's HTTP/1 + HTTP/2 builder with the router behind a per-connection `PeerLayer`, and
//! watched so that shutdown can let in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use homestead_middleware::{Peer, PeerLayer, Transport};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::Layer;

/// How long shutdown waits for in-flight requests before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send its request headers or finish a TLS handshake.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What a listener speaks.
#[derive(Clone)]
pub enum Protocol {
    /// Plain HTTP.
    Http,
    /// TLS with the server key as a raw public key, then HTTP.
    PubkyTls(TlsAcceptor),
}

/// Serves `router` on `listener` until `shutdown` changes (or its sender is dropped), then drains connections for at most
/// [`SHUTDOWN_GRACE`].
pub fn spawn(
    name: &'static str,
    listener: TcpListener,
    protocol: Protocol,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
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
            let connection = Connection {
                builder: builder.clone(),
                router: router.clone(),
                remote,
                watcher: graceful.watcher(),
            };
            match &protocol {
                Protocol::Http => {
                    tokio::spawn(connection.serve(stream, Transport::Icann));
                }
                Protocol::PubkyTls(acceptor) => {
                    tokio::spawn(connection.serve_tls(acceptor.clone(), stream));
                }
            }
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

struct Connection {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    remote: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    async fn serve_tls(self, acceptor: TlsAcceptor, stream: TcpStream) {
        let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await;
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
        let peer = Peer {
            transport,
            remote: self.remote,
        };
        let service = TowerToHyperService::new(PeerLayer::new(peer).layer(self.router));
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        if let Err(err) = self.watcher.watch(connection).await {
            tracing::debug!(remote = %self.remote, %err, "connection ended with an error");
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
