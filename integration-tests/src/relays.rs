//! The relays through which the JS SDK (WebAssembly: HTTP only, no UDP) reaches a [`TestNet`]: a PKARR relay
//! that answers and publishes records on the local DHT, and the HTTP relay that carries a third-party
//! app's auth flow (`/link/` routes). Both run in this process on loopback, as `pubky-testnet` runs them.

use std::net::Ipv4Addr;
use std::time::Duration;

use http_relay::HttpRelay;
use tempfile::TempDir;

use crate::TestNet;

/// A PKARR relay and an HTTP relay on loopback, stopped when dropped.
pub struct Relays {
    pkarr: pkarr_relay::Relay,
    http: HttpRelay,
    // The relay's record cache; removed after the relay.
    _cache: TempDir,
}

impl Relays {
    /// Starts both relays, the PKARR relay bootstrapped from `net`'s DHT.
    pub async fn start(net: &TestNet) -> Self {
        let cache = tempfile::tempdir().expect("a cache directory for the PKARR relay");
        let bootstrap = net.bootstrap().to_vec();
        let mut builder = pkarr_relay::Relay::builder();
        builder
            .http_port(0)
            .storage(cache.path().to_path_buf())
            .cache_size(1_000)
            .disable_rate_limiter()
            .pkarr(|pkarr| {
                pkarr
                    .no_relays()
                    .bootstrap(&bootstrap)
                    .request_timeout(Duration::from_millis(500))
                    .dht(|dht| dht.server_mode().bind_address(Ipv4Addr::LOCALHOST))
            });
        // SAFETY: the LMDB cache lives in a directory of its own that nothing else opens.
        let pkarr = unsafe { builder.run() }
            .await
            .expect("start the PKARR relay");
        let http = HttpRelay::builder()
            .http_port(0)
            .cors_allow_all(true)
            .run()
            .await
            .expect("start the HTTP relay");
        Self {
            pkarr,
            http,
            _cache: cache,
        }
    }

    /// The PKARR relay's URL on loopback, for the SDK's `pkarr.relays`.
    pub fn pkarr_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.pkarr.relay_address().port())
    }

    /// The base of the HTTP relay's `/link/` routes, for an auth flow's `relay`.
    pub fn link_url(&self) -> String {
        format!("http://127.0.0.1:{}/link/", self.http.http_address().port())
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.pkarr.shutdown();
    }
}
