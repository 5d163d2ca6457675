//! Connection facts for every request: which listener it came through, the TLS server name the client
//! asked for, and the TCP peer. The listener builds one [`PeerLayer`] per accepted connection.
//!
//! ```
//! use homestead_middleware::{Peer, PeerLayer, Transport};
//! use tower::ServiceBuilder;
//!
//! let peer = Peer { transport: Transport::Icann, remote: "127.0.0.1:50000".parse().unwrap() };
//! let service = ServiceBuilder::new()
//!     .layer(PeerLayer::new(peer))
//!     .service_fn(|req: http::Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(req.extensions().get::<Peer>().cloned())
//!     });
//! ```

use std::net::SocketAddr;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

/// The endpoint a request arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The plain HTTP listener (normally behind a reverse proxy).
    Icann,
    /// The PubkyTLS listener, with the server name the client sent, if any.
    PubkyTls {
        /// SNI from the TLS ClientHello, e.g. `_pubky.<user z32>`.
        sni: Option<String>,
    },
}

/// Facts about the connection a request came through, stored as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Which listener.
    pub transport: Transport,
    /// The TCP peer's address.
    pub remote: SocketAddr,
}

/// Tags each request with the [`Peer`] of its connection.
#[derive(Debug, Clone)]
pub struct PeerLayer {
    peer: Peer,
}

impl PeerLayer {
    /// A layer for one connection.
    pub fn new(peer: Peer) -> Self {
        Self { peer }
    }
}

impl<S> Layer<S> for PeerLayer {
    type Service = PeerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerService {
            inner,
            peer: self.peer.clone(),
        }
    }
}

/// The service of [`PeerLayer`].
#[derive(Debug, Clone)]
pub struct PeerService<S> {
    inner: S,
    peer: Peer,
}

impl<S, B> Service<Request<B>> for PeerService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    async fn seen_peer(peer: Peer) -> Option<Peer> {
        ServiceBuilder::new()
            .layer(PeerLayer::new(peer))
            .service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(req.extensions().get::<Peer>().cloned())
            })
            .oneshot(Request::new(()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn tags_requests_with_the_connection_facts() {
        let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let tls = Peer {
            transport: Transport::PubkyTls {
                sni: Some("_pubky.example".into()),
            },
            remote,
        };
        assert_eq!(seen_peer(tls.clone()).await, Some(tls));
        let icann = Peer {
            transport: Transport::Icann,
            remote,
        };
        assert_eq!(seen_peer(icann.clone()).await, Some(icann));
    }

    #[tokio::test]
    async fn a_client_cannot_smuggle_its_own_peer() {
        let real = Peer {
            transport: Transport::Icann,
            remote: "192.0.2.9:1".parse().unwrap(),
        };
        let mut request = Request::new(());
        request.extensions_mut().insert(Peer {
            transport: Transport::PubkyTls { sni: None },
            remote: "10.0.0.1:1".parse().unwrap(),
        });
        let seen = PeerLayer::new(real.clone())
            .layer(tower::service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(req.extensions().get::<Peer>().cloned())
            }))
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(seen, Some(real));
    }
}
