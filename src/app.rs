//! Wiring: opens storage, binds the listeners, publishes the PKARR record, and shuts it all down.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

use homestead_backends::metadata::{self, Quota};
use homestead_backends::{BlobStore, Store};
use homestead_config::{Config, DataDir, DatabaseUrl, redact_url};
use homestead_middleware::{RateLimitLayer, TrustedProxies};
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::metrics::PeriodicReader;
use pkarr::Keypair;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::listeners::{self, ClientAddress, ConnectionLimits, Protocol};
use crate::metrics::{self, Metrics};
use crate::pkarr_record::{self, Advertised, SharedPublishStatus};
use crate::proxy_protocol::ProxyProtocol;
use crate::routes::admin::AdminFacts;
use crate::routes::{self, AppParts, AppState};
use crate::stack;
use crate::user_republisher::{self, LastRun};

/// The addresses the listeners are bound to.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Plain HTTP client listener.
    pub icann: SocketAddr,
    /// PubkyTLS client listener.
    pub pubky_tls: SocketAddr,
    /// Admin listener, when enabled.
    pub admin: Option<SocketAddr>,
    /// Metrics listener, when enabled.
    pub metrics: Option<SocketAddr>,
}

/// A running server.
pub struct App {
    public_key: pkarr::PublicKey,
    addresses: Addresses,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    store: Store,
    /// The event streams, ended at shutdown.
    stream_slots: Arc<crate::stream_slots::StreamSlots>,
}

impl App {
    /// Opens storage, binds every listener and starts serving and publishing.
    pub async fn start(
        data_dir: &DataDir,
        config: Config,
        keypair: Keypair,
        otlp_metrics: Option<PeriodicReader<MetricExporter>>,
    ) -> anyhow::Result<Self> {
        let database_url = config
            .general
            .database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::sqlite_file(&data_dir.sqlite_file()));
        let metadata = metadata::open(&database_url).await?;
        tracing::info!(database = %redact_url(database_url.as_str()), "metadata database ready");
        let blobs = BlobStore::open(&config.storage, &data_dir.blobs_dir())?;
        blobs.probe().await?;
        tracing::info!(blobs = blobs.describe(), "blob store ready");
        let default_quota = config
            .storage
            .default_quota_mb
            .map_or(Quota::Unlimited, |mb| {
                Quota::Bytes(mb.saturating_mul(1 << 20))
            });
        let entry_ttl = Duration::from_millis(config.storage.entry_cache_ms);
        let store = Store::new(Arc::from(metadata), &blobs, default_quota, entry_ttl);
        let sweeper = spawn_sweeper(
            store.clone(),
            Duration::from_secs(config.storage.sweep_interval_secs.get()),
            Duration::from_secs(config.storage.orphan_grace_secs),
        );
        let health = store.watch_health();
        let event_tail = store.start_event_tail().await?;
        let metrics = Arc::new(Metrics::new(otlp_metrics)?);
        metrics.observe_storage(store.clone());
        let publish_status = SharedPublishStatus::default();
        let last_republish = LastRun::default();
        let admin_facts = AdminFacts {
            public_key: keypair.public_key().to_string(),
            pubky_address: advertised_address(
                &config.pkdns.public_ip.to_string(),
                config
                    .pkdns
                    .public_pubky_tls_port
                    .unwrap_or(config.drive.pubky_listen_socket.port()),
            ),
            icann_domain: config.pkdns.icann_domain.as_ref().and_then(|domain| {
                let port = config
                    .pkdns
                    .public_icann_http_port
                    .unwrap_or(config.drive.icann_listen_socket.port());
                advertised_address(&domain.to_string(), port)
            }),
            publish: publish_status.clone(),
            republisher: last_republish.clone(),
        };
        let state = AppState::from(AppParts {
            server_key: keypair.public_key(),
            store: store.clone(),
            bus: store.event_bus(),
            admin: admin_facts,
            metrics: metrics.clone(),
            default_quotas: config.default_quotas.clone(),
            body_read_timeout: Duration::from_secs(config.drive.body_read_timeout_secs.get()),
            rate_limits: rate_limits(&config, &store),
            signup_mode: config.general.signup_mode,
            max_body_bytes: Some(config.drive.max_body_bytes).filter(|max| *max > 0),
            admin_password: config.admin.admin_password.clone(),
            stream_slots: crate::stream_slots::StreamSlots::new(
                config.drive.max_event_streams.get(),
                config.drive.max_event_streams_per_ip.get(),
            ),
            websites: config.drive.websites,
        });

        let pkarr_client = pkarr_record::client(&config.pkdns)?;
        let stream_slots = state.stream_slots.clone();

        let (shutdown, watch_shutdown) = watch::channel(false);
        let mut limits = ConnectionLimits::from_config(&config.drive);
        if let Some(nofile) = crate::fd_limit::raise() {
            let fit = crate::fd_limit::client_connections(limits.max_connections, nofile);
            if fit < limits.max_connections {
                let message = format!(
                    "drive.max_connections lowered from {} to {fit} per client listener: the open-file \
                     limit is {nofile} (raise it, e.g. LimitNOFILE= in the systemd unit)",
                    limits.max_connections
                );
                // A few thousand connections per listener is plenty for most servers.
                if fit < 1024 {
                    tracing::warn!("{message}");
                } else {
                    tracing::info!("{message}");
                }
                limits.max_connections = fit;
            }
        }
        let small_limits = ConnectionLimits {
            max_connections: crate::fd_limit::SMALL_LISTENER_CONNECTIONS,
            ..limits
        };
        let trusted = TrustedProxies::new(config.drive.trusted_proxies.clone());
        // Behind a PROXY-protocol balancer the preface names the client: an `X-Forwarded-For` header on
        // such a connection is the client's own words (a TCP balancer passes it on untouched), never
        // believed, whatever `drive.trusted_proxies` holds.
        let clients = |identity| {
            let proxy_protocol = ProxyProtocol::from_config(identity);
            let forwarded = match proxy_protocol {
                Some(_) => TrustedProxies::default(),
                None => trusted.clone(),
            };
            ClientAddress {
                proxy_protocol,
                forwarded,
            }
        };
        let direct = ClientAddress {
            proxy_protocol: None,
            forwarded: trusted.clone(),
        };
        let mut listeners = Vec::new();
        let admin = if config.admin.enabled {
            let listener = listeners::bind("admin", config.admin.listen_socket).await?;
            let addr = listener.local_addr()?;
            listeners.push(listeners::spawn(
                "admin",
                listener,
                Protocol::Http,
                routes::admin_router(state.clone()),
                direct.clone(),
                small_limits,
                watch_shutdown.clone(),
            ));
            Some(addr)
        } else {
            None
        };
        let metrics_addr = if config.metrics.enabled {
            let listener = listeners::bind("metrics", config.metrics.listen_socket).await?;
            let addr = listener.local_addr()?;
            listeners.push(listeners::spawn(
                "metrics",
                listener,
                Protocol::Http,
                metrics::router(metrics.clone()),
                direct,
                small_limits,
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
            metrics: metrics_addr,
        };
        let client_service = stack::client_service(&state);
        listeners.push(listeners::spawn(
            "icann",
            icann_listener,
            Protocol::Http,
            client_service.clone(),
            clients(&config.drive.icann_client_identity),
            limits,
            watch_shutdown.clone(),
        ));
        let acceptor = listeners::tls_acceptor(keypair.to_rpk_rustls_server_config());
        listeners.push(listeners::spawn(
            "pubky-tls",
            tls_listener,
            Protocol::PubkyTls(acceptor),
            client_service,
            clients(&config.drive.pubky_client_identity),
            limits,
            watch_shutdown,
        ));

        let advertised = Advertised::from_config(
            &config.pkdns,
            addresses.pubky_tls.port(),
            addresses.icann.port(),
        );
        let packet = pkarr_record::build_packet(&keypair, &advertised)
            .context("cannot build the server's PKARR record")?;
        let publisher = pkarr_record::spawn_publisher(
            pkarr_client,
            pkarr_record::network(&config.pkdns),
            packet,
            publish_status,
            metrics.clone(),
        );
        let mut background = vec![publisher, sweeper, event_tail, health];
        let interval = config.pkdns.user_keys_republisher_interval;
        if interval > 0 {
            background.push(user_republisher::spawn(
                store.clone(),
                pkarr_record::dht_client(&config.pkdns)?,
                keypair.public_key(),
                Duration::from_secs(config.pkdns.user_keys_republisher_delay_secs),
                Duration::from_secs(interval),
                last_republish,
                metrics.clone(),
            ));
        }

        Ok(Self {
            public_key: keypair.public_key(),
            addresses,
            shutdown,
            listeners,
            background,
            store,
            stream_slots,
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
        if let Some(metrics) = a.metrics {
            lines.push(format!("  metrics     http://{metrics}"));
        }
        lines.push("ready".to_string());
        let mut out = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    /// Stops accepting, ends live event streams (their clients resume from their cursors elsewhere),
    /// lets in-flight requests finish (bounded), stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.stream_slots.close_all();
        for listener in self.listeners {
            let _ = listener.await;
        }
        for task in self.background {
            task.abort();
        }
        self.store.operations().close().await;
        tracing::info!("stopped");
    }
}

/// The request-rate limits: their buckets in the database when instances share it (PostgreSQL), in
/// memory otherwise.
fn rate_limits(config: &Config, store: &Store) -> RateLimitLayer {
    let limits = config.drive.rate_limits.clone();
    match store.operations().rate_buckets() {
        Some(buckets) => {
            let shared = crate::lookups::DatabaseBuckets {
                buckets,
                store: store.clone(),
            };
            RateLimitLayer::shared(limits, Arc::new(shared))
        }
        None => RateLimitLayer::new(limits),
    }
}

/// `host:port` as the admin info shows an advertised endpoint; None for port 0.
fn advertised_address(host: &str, port: u16) -> Option<String> {
    (port != 0).then(|| format!("{host}:{port}"))
}

/// Removes orphaned blobs and staging files older than `grace` at start-up (leftovers of a crash) and
/// then every `every`.
fn spawn_sweeper(store: Store, every: Duration, grace: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match store.sweep(grace).await {
                Ok(report) => {
                    if report.staging > 0 {
                        tracing::info!(
                            removed = report.staging,
                            "removed staging files of interrupted uploads"
                        );
                    }
                    if report.deleted > 0 {
                        tracing::info!(
                            examined = report.examined,
                            deleted = report.deleted,
                            "swept orphaned blobs"
                        );
                    } else {
                        tracing::debug!(examined = report.examined, "no orphaned blobs");
                    }
                }
                Err(err) => tracing::warn!(%err, "sweeping orphaned blobs failed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
