//! A local Mainline DHT (the `mainline` crate's testnet, in the version the SDK uses) and SDK clients that
//! know only that network: never the public bootstrap nodes or relays.

use std::time::Duration;

use pubky::pkarr::mainline::Testnet;
use pubky::{Pubky, PubkyHttpClient, PublicKey};

use crate::eventually;
use crate::server::{TestServer, TestServerBuilder};

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

    /// An SDK HTTP client that resolves PKARR through this network only.
    pub fn sdk_client(&self) -> PubkyHttpClient {
        let bootstrap = self.bootstrap().to_vec();
        PubkyHttpClient::builder()
            .pkarr(|p| {
                p.bootstrap(&bootstrap)
                    .no_relays()
                    .request_timeout(Duration::from_millis(500))
            })
            .build()
            .expect("build the SDK client")
    }

    /// Waits until `server`'s PKARR record resolves on this network, so that the SDK can find it. A
    /// freshly started server publishes within moments, but not before it reports ready.
    pub async fn wait_until_resolvable(&self, server: &TestServer) -> pubky::pkarr::SignedPacket {
        self.wait_until_key_resolvable(&server.public_key()).await
    }

    /// Waits until the PKARR record of `key` (a server's, not necessarily one of ours) resolves here.
    pub async fn wait_until_key_resolvable(&self, key: &PublicKey) -> pubky::pkarr::SignedPacket {
        let client = self.sdk_client();
        eventually(
            "server record resolvable on the DHT",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                let key = key.clone();
                async move { client.pkarr().resolve(&key).await.ok_or("not found") }
            },
        )
        .await
    }

    /// The SDK's high-level facade on [`Self::sdk_client`].
    pub fn pubky(&self) -> Pubky {
        Pubky::with_client(self.sdk_client())
    }
}
