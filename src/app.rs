//! Wiring: opens storage, binds the listeners, publishes the PKARR record, and shuts it all down.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use homestead_backends::{BlobStore, MetadataDb};
use homestead_config::{Config, DataDir, DatabaseUrl, redact_url};
use pkarr::Keypair;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::listeners::{self, Protocol};
use crate::pkarr_record::{self, Advertised};
use crate::routes;

/// The addresses the listeners are bound to.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Plain HTTP client listener.
    pub icann: SocketAddr,
    /// PubkyTLS client listener.
    pub pubky_tls: SocketAddr,
    /// Admin listener, when enabled.
    pub admin: Option<SocketAddr>,
}

/// A running server.
pub struct App {
    public_key: pkarr::PublicKey,
    addresses: Addresses,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    metadata: MetadataDb,
}

impl App {
    /// Opens storage, binds every listener and starts serving and publishing.
    pub async fn start(
        data_dir: &DataDir,
        config: Config,
        keypair: Keypair,
    ) -> anyhow::Result<Self> {
        let database_url = config
            .general
            .database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::sqlite_file(&data_dir.sqlite_file()));
        let metadata = MetadataDb::open(&database_url).await?;
        tracing::info!(database = %redact_url(database_url.as_str()), "metadata database ready");
        let blobs = BlobStore::open(&config.storage, &data_dir.blobs_dir())?;
        blobs.probe().await?;
        tracing::info!(blobs = blobs.describe(), "blob store ready");

        let pkarr_client = pkarr_record::client(&config.pkdns)?;

        let (shutdown, watch_shutdown) = watch::channel(false);
        let mut listeners = Vec::new();
        let admin = if config.admin.enabled {
            let listener = listeners::bind("admin", config.admin.listen_socket).await?;
            let addr = listener.local_addr()?;
            listeners.push(listeners::spawn(
                "admin",
                listener,
                Protocol::Http,
                routes::admin_router(),
                watch_shutdown.clone(),
            ));
            Some(addr)
        } else {
            None
        };
        let icann_listener =
            listeners::bind("ICANN HTTP", config.drive.icann_listen_socket).await?;
        let tls_listener = listeners::bind("PubkyTLS", config.drive.pubky_listen_socket).await?;
        let addresses = Addresses {
            icann: icann_listener.local_addr()?,
            pubky_tls: tls_listener.local_addr()?,
            admin,
        };
        let client_router = routes::client_router();
        listeners.push(listeners::spawn(
            "icann",
            icann_listener,
            Protocol::Http,
            client_router.clone(),
            watch_shutdown.clone(),
        ));
        let acceptor = listeners::tls_acceptor(keypair.to_rpk_rustls_server_config());
        listeners.push(listeners::spawn(
            "pubky-tls",
            tls_listener,
            Protocol::PubkyTls(acceptor),
            client_router,
            watch_shutdown,
        ));

        let advertised = Advertised::from_config(
            &config.pkdns,
            addresses.pubky_tls.port(),
            addresses.icann.port(),
        );
        let packet = pkarr_record::build_packet(&keypair, &advertised)
            .context("cannot build the server's PKARR record")?;
        let publisher = pkarr_record::spawn_publisher(pkarr_client, packet);

        Ok(Self {
            public_key: keypair.public_key(),
            addresses,
            shutdown,
            listeners,
            publisher,
            metadata,
        })
    }

    /// The bound addresses.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// Prints the public key and every listener on stdout, in a fixed `  name  value` format that
    /// scripts (and the integration tests) read; the last line is `ready`.
    pub fn print_banner(&self) {
        let a = &self.addresses;
        let mut lines = vec![
            format!("homestead {} running", env!("CARGO_PKG_VERSION")),
            format!("  public-key  {}", self.public_key),
            format!("  icann       http://{}", a.icann),
            format!(
                "  pubky-tls   https://{} (PubkyTLS for https://{})",
                a.pubky_tls, self.public_key
            ),
        ];
        if let Some(admin) = a.admin {
            lines.push(format!("  admin       http://{admin}"));
        }
        lines.push("ready".to_string());
        let mut out = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// Stops accepting, lets in-flight requests finish (bounded), stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for listener in self.listeners {
            let _ = listener.await;
        }
        self.publisher.abort();
        self.metadata.close().await;
        tracing::info!("stopped");
    }
}
