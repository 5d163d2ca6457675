//! Connection facts for every request: which listener it came through, the TLS server name the client
//! asked for, the connection's client, and the client address (computed here once; every layer and handler
//! reads it from the [`Peer`] extension). The listener builds one [`PeerLayer`] per accepted connection.
//!
//! The connection's client is the TCP peer, or in `proxy_protocol` mode the source the load balancer's PROXY
//! preface named (the listener reads it). `X-Forwarded-For` and `X-Real-IP` are believed only when that
//! address is a trusted proxy (the reference believes them from anyone, which lets anyone dodge limits);
//! the forwarded chain is read from the right, skipping trusted proxies, so a client cannot prepend a fake.
//!
//! ```
//! use homestead_middleware::{Peer, PeerLayer, Transport, TrustedProxies};
//! use tower::ServiceBuilder;
//!
//! let remote = "127.0.0.1:50000".parse().unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(PeerLayer::new(Transport::Icann, remote, TrustedProxies::default()))
//!     .service_fn(|req: http::Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(req.extensions().get::<Peer>().map(|p| p.client_ip))
//!     });
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use homestead_config::IpRange;
use http::{HeaderMap, Request};
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
    /// The connection's client: the TCP peer, or the source a PROXY protocol preface named.
    pub remote: SocketAddr,
    /// The client's address: the connection's client, or what a trusted HTTP proxy says the client was. Rate limits,
    /// bandwidth buckets and stream slots count by it.
    pub client_ip: IpAddr,
}

/// The proxies whose forwarded addresses are believed (`drive.trusted_proxies`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpRange]>);

impl TrustedProxies {
    /// Believes forwarded addresses from `ranges` only.
    pub fn new(ranges: Vec<IpRange>) -> Self {
        Self(ranges.into())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(ip))
    }

    /// The client address of a request from the TCP peer `peer`.
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse().ok())
            .collect();
        if let Some(client) = forwarded.iter().rev().find(|ip| !self.trusts(**ip)) {
            return *client;
        }
        if let Some(first) = forwarded.first() {
            return *first;
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer)
    }
}

/// Tags each request with the [`Peer`] of its connection.
#[derive(Debug, Clone)]
pub struct PeerLayer {
    transport: Transport,
    remote: SocketAddr,
    trusted: TrustedProxies,
}

impl PeerLayer {
    /// A layer for one connection from `remote`, believing forwarded addresses from `trusted` only.
    pub fn new(transport: Transport, remote: SocketAddr, trusted: TrustedProxies) -> Self {
        Self {
            transport,
            remote,
            trusted,
        }
    }
}

impl<S> Layer<S> for PeerLayer {
    type Service = PeerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`PeerLayer`].
#[derive(Debug, Clone)]
pub struct PeerService<S> {
    inner: S,
    layer: PeerLayer,
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
        let layer = &self.layer;
        let peer = Peer {
            transport: layer.transport.clone(),
            remote: layer.remote,
            client_ip: layer
                .trusted
                .client_ip(layer.remote.ip(), request.headers()),
        };
        request.extensions_mut().insert(peer);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            ranges
                .iter()
                .map(|range| IpRange::try_from(range.to_string()).unwrap())
                .collect(),
        )
    }

    async fn seen_peer(layer: PeerLayer, request: Request<()>) -> Option<Peer> {
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(req.extensions().get::<Peer>().cloned())
            })
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn tags_requests_with_the_connection_facts() {
        let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let sni = Transport::PubkyTls {
            sni: Some("_pubky.example".into()),
        };
        let tls = PeerLayer::new(sni.clone(), remote, TrustedProxies::default());
        let expected = Peer {
            transport: sni,
            remote,
            client_ip: remote.ip(),
        };
        assert_eq!(seen_peer(tls, Request::new(())).await, Some(expected));
        let icann = PeerLayer::new(Transport::Icann, remote, TrustedProxies::default());
        let expected = Peer {
            transport: Transport::Icann,
            remote,
            client_ip: remote.ip(),
        };
        assert_eq!(seen_peer(icann, Request::new(())).await, Some(expected));
    }

    #[tokio::test]
    async fn a_client_cannot_smuggle_its_own_peer() {
        let remote: SocketAddr = "192.0.2.9:1".parse().unwrap();
        let mut request = Request::new(());
        request.extensions_mut().insert(Peer {
            transport: Transport::PubkyTls { sni: None },
            remote: "10.0.0.1:1".parse().unwrap(),
            client_ip: "10.0.0.1".parse().unwrap(),
        });
        let layer = PeerLayer::new(Transport::Icann, remote, TrustedProxies::default());
        let seen = seen_peer(layer, request).await;
        let real = Peer {
            transport: Transport::Icann,
            remote,
            client_ip: remote.ip(),
        };
        assert_eq!(seen, Some(real));
    }

    /// The client address `peer` is taken for with `headers`, given the trusted `proxies`.
    fn client_ip(proxies: &[&str], peer: &str, headers: &[(&str, &str)]) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        trusted(proxies)
            .client_ip(peer.parse().unwrap(), &map)
            .to_string()
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy = ["127.0.0.1"];
        let via = |client| [("x-forwarded-for", client)];
        assert_eq!(client_ip(&proxy, "127.0.0.1", &via("9.9.9.1")), "9.9.9.1");
        // A client prepending a fake address is still itself.
        let spoof = via("1.1.1.1, 9.9.9.2");
        assert_eq!(client_ip(&proxy, "127.0.0.1", &spoof), "9.9.9.2");
        // Trusted hops on the right are skipped; a chain of trusted hops only names its first.
        let chain = ["127.0.0.1", "10.0.0.0/8"];
        let hops = via("9.9.9.3, 10.0.0.2");
        assert_eq!(client_ip(&chain, "127.0.0.1", &hops), "9.9.9.3");
        let all_trusted = via("10.0.0.3, 10.0.0.2");
        assert_eq!(client_ip(&chain, "127.0.0.1", &all_trusted), "10.0.0.3");
        // Several headers form one chain; unparsable entries are skipped.
        let split = [
            ("x-forwarded-for", "9.9.9.4"),
            ("x-forwarded-for", "junk, 10.0.0.2"),
        ];
        assert_eq!(client_ip(&chain, "127.0.0.1", &split), "9.9.9.4");
        // X-Real-IP only without a usable X-Forwarded-For; else the proxy itself.
        let real = [("x-real-ip", " 9.9.9.5 ")];
        assert_eq!(client_ip(&proxy, "127.0.0.1", &real), "9.9.9.5");
        let both = [("x-forwarded-for", "9.9.9.6"), ("x-real-ip", "9.9.9.5")];
        assert_eq!(client_ip(&proxy, "127.0.0.1", &both), "9.9.9.6");
        assert_eq!(client_ip(&proxy, "127.0.0.1", &via("junk")), "127.0.0.1");
        assert_eq!(client_ip(&proxy, "127.0.0.1", &[]), "127.0.0.1");
        // An untrusted peer's headers are ignored: its own address is the client.
        assert_eq!(client_ip(&proxy, "4.4.4.4", &via("7.7.7.7")), "4.4.4.4");
        assert_eq!(client_ip(&proxy, "4.4.4.4", &real), "4.4.4.4");
        assert_eq!(client_ip(&[], "127.0.0.1", &via("7.7.7.7")), "127.0.0.1");
    }

    #[tokio::test]
    async fn the_layer_computes_the_client_address_per_request() {
        let remote: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let layer = PeerLayer::new(Transport::Icann, remote, trusted(&["127.0.0.1"]));
        let forwarded = Request::builder()
            .header("x-forwarded-for", "9.9.9.1")
            .body(())
            .unwrap();
        let seen = seen_peer(layer.clone(), forwarded).await.unwrap();
        assert_eq!(seen.client_ip.to_string(), "9.9.9.1");
        assert_eq!(seen.remote, remote);
        let direct = seen_peer(layer, Request::new(())).await.unwrap();
        assert_eq!(direct.client_ip, remote.ip());
    }
}
