//! The server's own PKARR record (OPERATIONS.md §4): built once at start-up from the bound ports, published
//! to the DHT and relays, retried with backoff while it fails, then republished every hour. A failed
//! publish never stops the server: a homeserver on an offline machine still starts and serves locally.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use homestead_config::Pkdns;
use pkarr::dns::Name;
use pkarr::dns::rdata::{SVCB, SVCParam};
use pkarr::{Keypair, SignedPacket};

use crate::metrics::Metrics;
use tokio::task::JoinHandle;

/// TTL of every record, in seconds.
const TTL: u32 = 3600;
/// The private SvcParam that carries the plain-HTTP port for `localhost` development setups.
const HTTP_PORT_PARAM: u16 = 65280;
/// Time between republishing an unchanged packet (DHT nodes forget items after about two hours).
const REPUBLISH_EVERY: Duration = Duration::from_secs(3600);
/// First and largest wait between retries of a failed publish.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What the record advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// Address of the PubkyTLS endpoint (A/AAAA record and address hint).
    pub ip: IpAddr,
    /// PubkyTLS port.
    pub tls_port: u16,
    /// ICANN fallback domain and its plain-HTTP port (published only for `localhost`).
    pub icann: Option<(String, u16)>,
}

impl Advertised {
    /// Takes the advertised values from `[pkdns]`, falling back to the bound ports.
    pub fn from_config(pkdns: &Pkdns, bound_tls_port: u16, bound_icann_port: u16) -> Self {
        Self {
            ip: pkdns.public_ip,
            tls_port: pkdns.public_pubky_tls_port.unwrap_or(bound_tls_port),
            icann: pkdns.icann_domain.as_ref().map(|domain| {
                let port = pkdns.public_icann_http_port.unwrap_or(bound_icann_port);
                (domain.to_string(), port)
            }),
        }
    }
}

/// Signs the packet: HTTPS priority 1 to this key's own address, HTTPS priority 10 to the ICANN domain,
/// then the A or AAAA record, all at the apex.
pub fn build_packet(keypair: &Keypair, advertised: &Advertised) -> anyhow::Result<SignedPacket> {
    let apex = Name::new_unchecked(".");
    let mut direct = SVCB::new(1, Name::new_unchecked("."));
    direct.set_port(advertised.tls_port);
    match advertised.ip {
        IpAddr::V4(ip) => direct.set_ipv4hint(&[ip.into()]),
        IpAddr::V6(ip) => direct.set_ipv6hint(&[ip.into()]),
    }
    let mut builder = SignedPacket::builder().https(apex.clone(), direct, TTL);
    if let Some((domain, http_port)) = &advertised.icann {
        let target = Name::new(domain).with_context(|| format!("icann_domain {domain}"))?;
        let mut fallback = SVCB::new(10, target);
        if domain == "localhost" {
            let port = Cow::Owned(http_port.to_be_bytes().to_vec());
            fallback.set_param(SVCParam::Unknown(HTTP_PORT_PARAM, port));
        }
        builder = builder.https(apex.clone(), fallback, TTL);
    }
    builder
        .address(apex, advertised.ip, TTL)
        .sign(keypair)
        .context("cannot sign the server's PKARR packet")
}

/// Builds the PKARR client from `[pkdns]`: bootstrap nodes and relays as configured (`[]`: no relays).
pub fn client(pkdns: &Pkdns) -> anyhow::Result<pkarr::Client> {
    build_client(pkdns, true)
}

/// A PKARR client on the DHT only (the user keys republisher's: relays would only echo the DHT).
pub fn dht_client(pkdns: &Pkdns) -> anyhow::Result<pkarr::Client> {
    build_client(pkdns, false)
}

fn build_client(pkdns: &Pkdns, relays: bool) -> anyhow::Result<pkarr::Client> {
    let mut builder = pkarr::Client::builder();
    if let Some(nodes) = &pkdns.dht_bootstrap_nodes {
        let nodes: Vec<&str> = nodes.iter().map(|n| n.as_str()).collect();
        builder.bootstrap(&nodes);
    }
    match pkdns.dht_relay_nodes.as_deref().filter(|_| relays) {
        None | Some([]) => {
            builder.no_relays();
        }
        Some(relays) => {
            let urls: Vec<url::Url> = relays.iter().map(|r| r.url().clone()).collect();
            builder.relays(&urls).context("pkdns.dht_relay_nodes")?;
        }
    }
    if let Some(ms) = pkdns.dht_request_timeout_ms {
        let timeout = Duration::from_millis(ms.get());
        builder
            .dht_request_timeout(timeout)
            .relay_request_timeout(timeout);
    }
    if let Some(ms) = pkdns.relay_request_timeout_ms {
        builder.relay_request_timeout(Duration::from_millis(ms.get()));
    }
    builder.build().context("cannot build the PKARR client")
}

/// Mainline's bootstrap nodes, used when `pkdns.dht_bootstrap_nodes` is absent (OPERATIONS.md §3.3).
const MAINLINE_BOOTSTRAP: [&str; 4] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
    "relay.pkarr.org:6881",
];

/// Which bootstrap nodes and relays [`client`] reaches the network through, for failure messages.
pub fn network(pkdns: &Pkdns) -> String {
    let nodes = match &pkdns.dht_bootstrap_nodes {
        Some(nodes) => nodes
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        None => format!("mainline's defaults {}", MAINLINE_BOOTSTRAP.join(", ")),
    };
    let relays = match pkdns.dht_relay_nodes.as_deref() {
        None | Some([]) => "none".to_string(),
        Some(relays) => relays
            .iter()
            .map(|r| r.url().as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!("DHT bootstrap nodes: {nodes}; relays: {relays}")
}

/// How publishing the server's record has gone, for the admin info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStatus {
    /// Successful publishes.
    pub published: u64,
    /// Failed attempts.
    pub failed: u64,
    /// The reason of the last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the last attempt ended, in Unix microseconds (for the console).
    pub last_attempt_micros: Option<i64>,
}

/// [`PublishStatus`] shared between the publisher and the admin API.
pub type SharedPublishStatus = Arc<Mutex<PublishStatus>>;

/// Publishes `packet` now, retrying with backoff until it succeeds, then every hour. A failure names
/// `network` (see [`network`]): the nodes and relays that were tried.
pub fn spawn_publisher(
    client: pkarr::Client,
    network: String,
    packet: SignedPacket,
    status: SharedPublishStatus,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    let update = move |result: Result<(), String>| {
        let label = if result.is_ok() { "ok" } else { "failed" };
        metrics
            .pkarr_publishes
            .add(1, &[opentelemetry::KeyValue::new("result", label)]);
        let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
        status.last_attempt_micros = Some(homestead_backends::metadata::now_micros());
        match result {
            Ok(()) => {
                status.published += 1;
                status.last_error = None;
            }
            Err(err) => {
                status.failed += 1;
                status.last_error = Some(err);
            }
        }
    };
    tokio::spawn(async move {
        let mut published_once = false;
        let mut retry = RETRY_FIRST;
        loop {
            let result = client.publish(&packet).await;
            let result = result.map_err(|err| format!("{err} ({network})"));
            update(result.as_ref().map(|_| ()).map_err(Clone::clone));
            match result {
                Ok(stored) => {
                    if published_once {
                        tracing::debug!(?stored, "republished the server's PKARR record");
                    } else {
                        tracing::info!(?stored, record = %describe(&packet), "published the server's PKARR record");
                        published_once = true;
                    }
                    retry = RETRY_FIRST;
                    tokio::time::sleep(REPUBLISH_EVERY).await;
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?retry, "publishing the server's PKARR record failed");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    })
}

/// The records of a packet on one line, for the log.
fn describe(packet: &SignedPacket) -> String {
    packet
        .all_resource_records()
        .map(|rr| format!("{} {:?}", rr.name, rr.rdata))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero_key() -> Keypair {
        Keypair::from_secret_key(&[0; 32])
    }

    /// OPERATIONS.md §4.2: the default test configuration of the reference, byte for byte.
    #[test]
    fn packet_matches_the_reference_test_vector() {
        let advertised = Advertised {
            ip: "127.0.0.1".parse().unwrap(),
            tls_port: 6287,
            icann: Some(("localhost".into(), 6286)),
        };
        let packet = build_packet(&zero_key(), &advertised).unwrap();
        let expected = concat!(
            "000080000000000300000000343870696e787867717334316e346169646964656e77356170717031",
            "7572666d7a647a7472386a74346162726b646e34333565776f000041000100000e10001100010000",
            "030002188f000400047f000001c00c0041000100000e100013000a096c6f63616c686f737400ff00",
            "0002188ec00c0001000100000e1000047f000001",
        );
        assert_eq!(hex::encode(packet.encoded_packet()), expected);
    }

    #[test]
    fn config_overrides_ports_and_non_localhost_domain_has_no_port_param() {
        let pkdns = Pkdns {
            public_ip: "2001:db8::1".parse().unwrap(),
            public_pubky_tls_port: Some(443),
            icann_domain: Some("example.com".to_string().try_into().unwrap()),
            ..Pkdns::default()
        };
        let advertised = Advertised::from_config(&pkdns, 6287, 6286);
        assert_eq!(advertised.tls_port, 443);
        assert_eq!(advertised.icann, Some(("example.com".into(), 6286)));
        let packet = build_packet(&zero_key(), &advertised).unwrap();
        let text = describe(&packet);
        assert!(text.contains("AAAA"), "{text}");
        assert!(!text.contains("65280"), "{text}");
        let records = packet.all_resource_records().count();
        assert_eq!(records, 3);
    }

    #[test]
    fn failures_name_the_nodes_and_relays_tried() {
        let defaults = network(&Pkdns::default());
        assert_eq!(
            defaults,
            "DHT bootstrap nodes: mainline's defaults router.bittorrent.com:6881, \
             dht.transmissionbt.com:6881, dht.libtorrent.org:25401, relay.pkarr.org:6881; \
             relays: https://pkarr.pubky.app/, https://pkarr.pubky.org/"
        );
        let pkdns = Pkdns {
            dht_bootstrap_nodes: Some(vec!["localhost:6881".to_string().try_into().unwrap()]),
            dht_relay_nodes: Some(Vec::new()),
            ..Pkdns::default()
        };
        assert_eq!(
            network(&pkdns),
            "DHT bootstrap nodes: localhost:6881; relays: none"
        );
    }

    /// Publishes to a relay that accepts connections and never answers, with no DHT node: how long the
    /// publish takes to fail is the relay timeout.
    async fn publish_to_a_silent_relay(pkdns: Pkdns) -> Duration {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = format!("http://{}", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = silent.accept().await {
                connections.push(connection);
            }
        });
        let pkdns = Pkdns {
            dht_bootstrap_nodes: Some(Vec::new()),
            dht_relay_nodes: Some(vec![relay.try_into().unwrap()]),
            ..pkdns
        };
        let advertised = Advertised::from_config(&pkdns, 1, 2);
        let packet = build_packet(&zero_key(), &advertised).unwrap();
        let started = std::time::Instant::now();
        let published = client(&pkdns).unwrap().publish(&packet).await;
        held.abort();
        assert!(published.is_err());
        started.elapsed()
    }

    #[tokio::test]
    async fn the_relay_timeout_bounds_relay_requests_only() {
        let slow = std::num::NonZeroU64::new(4000);
        let quick = publish_to_a_silent_relay(Pkdns {
            dht_request_timeout_ms: slow,
            relay_request_timeout_ms: std::num::NonZeroU64::new(200),
            ..Pkdns::default()
        });
        assert!(quick.await < Duration::from_millis(2000));
        let waited = publish_to_a_silent_relay(Pkdns {
            dht_request_timeout_ms: slow,
            ..Pkdns::default()
        });
        assert!(waited.await >= Duration::from_millis(4000));
    }

    #[test]
    fn no_domain_means_two_records() {
        let pkdns = Pkdns {
            icann_domain: None,
            ..Pkdns::default()
        };
        let packet = build_packet(&zero_key(), &Advertised::from_config(&pkdns, 1, 2)).unwrap();
        assert_eq!(packet.all_resource_records().count(), 2);
    }
}
