//! A local Mainline DHT (the `mainline` crate's testnet, in the version the 0.17.1 SDK's pkarr uses), SDK
//! clients that know only that network, and the HTTP relay through which keyless applications receive
//! their grants.

use std::time::Duration;

use http_relay::HttpRelay;
use mainline::Testnet;
use pubky::pkarr::{ResolvePolicy, SignedPacket};
use pubky::{Keypair, Pubky, PubkyHttpClient, PubkySigner, PublicKey};

use crate::eventually;
use crate::server::{Blobs, Metadata, TestServer, TestServerBuilder};

/// A DHT of a few nodes on 127.0.0.1, alive as long as this value.
pub struct TestNet {
    dht: Testnet,
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl TestNet {
    /// Starts three seeded DHT nodes on loopback.
    pub fn new() -> Self {
        let dht = Testnet::builder(3).build().expect("start the DHT testnet");
        Self { dht }
    }

    /// `host:port` of the bootstrap nodes.
    pub fn bootstrap(&self) -> &[String] {
        &self.dht.bootstrap
    }

    /// A builder for a Homestead server on this network.
    pub fn server(&self) -> TestServerBuilder {
        TestServerBuilder::new(self.bootstrap().to_vec())
    }

    /// An SDK HTTP client that resolves PKARR through this network only (no relays).
    pub fn sdk_client(&self) -> PubkyHttpClient {
        let bootstrap = self.bootstrap().to_vec();
        PubkyHttpClient::builder()
            .pkarr(|p| {
                p.bootstrap(&bootstrap)
                    .no_relays()
                    .dht_request_timeout(Duration::from_millis(500))
            })
            .build()
            .expect("build the SDK client")
    }

    /// The SDK's facade on [`Self::sdk_client`].
    pub fn pubky(&self) -> Pubky {
        Pubky::with_client(self.sdk_client())
    }

    /// Starts the server `builder` describes and waits until the SDK can find it.
    pub async fn serve(&self, builder: TestServerBuilder) -> TestServer {
        let server = builder.start().await;
        self.wait_until_resolvable(&server).await;
        server
    }

    /// A network with one server on `metadata` and `blobs`, an HTTP relay, and a signed-up user's signer
    /// (the user's "Ring"), for the keyless-app flows.
    pub async fn with_ring(
        metadata: Metadata,
        blobs: Blobs,
    ) -> (Self, TestServer, Relay, PubkySigner) {
        let net = Self::new();
        let server = net
            .serve(net.server().metadata(metadata).blobs(blobs))
            .await;
        let relay = Relay::start().await;
        let ring = net.signed_up(&server).await;
        (net, server, relay, ring)
    }

    /// A signer of a fresh user, signed up on `server` through a signup grant.
    pub async fn signed_up(&self, server: &TestServer) -> PubkySigner {
        let signer = self.pubky().signer(Keypair::random());
        signer
            .signup(&server.public_key(), None)
            .await
            .expect("signup");
        signer
    }

    /// Waits until `server`'s PKARR record resolves on this network, so that the SDK can find it. A
    /// freshly started server publishes within moments, but not before it reports ready.
    pub async fn wait_until_resolvable(&self, server: &TestServer) -> SignedPacket {
        self.wait_until_key_resolvable(&server.public_key()).await
    }

    /// Waits until the PKARR record of `key` (a server's, not necessarily one of ours) resolves here.
    pub async fn wait_until_key_resolvable(&self, key: &PublicKey) -> SignedPacket {
        let client = self.sdk_client();
        eventually(
            "server record resolvable on the DHT",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                let key = key.clone();
                async move {
                    client
                        .pkarr()
                        .resolve(&key, ResolvePolicy::NetworkOnly)
                        .await
                }
            },
        )
        .await
    }
}

/// The HTTP relay the SDK's own testnet runs (crate `http-relay`), in process on 127.0.0.1: a keyless
/// application polls its inbox, the signer posts the encrypted grant there. Stopped when dropped.
pub struct Relay {
    relay: HttpRelay,
}

impl Relay {
    /// Starts the relay on a port chosen by the OS.
    pub async fn start() -> Self {
        let relay = HttpRelay::builder()
            .http_port(0)
            .run()
            .await
            .expect("start the HTTP relay");
        Self { relay }
    }

    /// The base URL of the relay's inbox routes, for `PubkyGrantAuthFlow`'s builder.
    pub fn inbox_url(&self) -> reqwest::Url {
        let url = format!("http://{}/inbox", self.relay.http_address());
        url.parse().expect("relay URL")
    }
}
