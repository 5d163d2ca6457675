//! The sections of `config.toml`. Names, meanings and defaults follow the reference homeserver's file, so
//! an operator can switch with the same file; keys Homestead adds are marked as such.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

use serde::{Deserialize, Serialize};

use crate::client_identity::ClientIdentity;
use crate::values::{
    Bandwidth, DatabaseUrl, HostPort, Hostname, IpRange, LimitKey, LogLevel, Method, ModuleLevel,
    PathGlob, RelayUrl, RequestQuota, SignupMode, StorageType, ip_address, socket_address,
};

/// `[general]`: database and sign-up policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct General {
    /// PostgreSQL or SQLite URL; absent means the embedded SQLite file `<data-dir>/homestead.db`.
    pub database_url: Option<DatabaseUrl>,
    /// Who may sign up.
    pub signup_mode: SignupMode,
    /// Deprecated storage quota in MB (0 = unlimited), used only when `storage.default_quota_mb` is absent.
    pub user_storage_quota_mb: u64,
}

impl Default for General {
    fn default() -> Self {
        Self {
            database_url: None,
            signup_mode: SignupMode::TokenRequired,
            user_storage_quota_mb: 0,
        }
    }
}

/// `[drive]`: the two client listeners and request-count limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Drive {
    /// PubkyTLS listener.
    #[serde(deserialize_with = "socket_address")]
    pub pubky_listen_socket: SocketAddr,
    /// Plain HTTP listener, meant to sit behind a TLS-terminating reverse proxy.
    #[serde(deserialize_with = "socket_address")]
    pub icann_listen_socket: SocketAddr,
    /// Request-count limits; a list in the file replaces the default list.
    pub rate_limits: Vec<RateLimit>,
    /// Homestead: largest accepted upload in bytes (0 = no limit beyond the user's quota).
    pub max_body_bytes: u64,
    /// Homestead: reverse proxies whose `X-Forwarded-For`/`X-Real-IP` name the client; the headers of
    /// anyone else are ignored.
    pub trusted_proxies: Vec<IpRange>,
    /// How the ICANN listener learns the client's address: the TCP peer, or a PROXY protocol preface.
    pub icann_client_identity: ClientIdentity,
    /// How the PubkyTLS listener learns the client's address (the preface precedes the TLS handshake).
    pub pubky_client_identity: ClientIdentity,
    /// Homestead: seconds a client may take to send a request's headers (or finish a TLS handshake).
    pub header_read_timeout_secs: NonZeroU64,
    /// Homestead: seconds a connection may stay without any traffic before it is closed.
    pub idle_timeout_secs: NonZeroU64,
    /// Homestead: seconds an upload may pause between two pieces of its body before it is abandoned.
    pub body_read_timeout_secs: NonZeroU64,
    /// Homestead: largest request head (request line and headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Homestead: connections served at once per listener; more are closed on arrival.
    pub max_connections: usize,
    /// Homestead: event streams (`/events-stream`) open at once on this server; more get 503.
    pub max_event_streams: NonZeroUsize,
    /// Homestead: event streams open at once from one client address; more get 429.
    pub max_event_streams_per_ip: NonZeroUsize,
    /// Serve static websites by `Host` (PROTOCOL-0.17 §18) and list `websites` in `/info` (0.17.1).
    pub websites: bool,
}

impl Default for Drive {
    fn default() -> Self {
        Self {
            pubky_listen_socket: loopback(6287),
            icann_listen_socket: loopback(6286),
            rate_limits: vec![RateLimit {
                path: PathGlob::try_from("/signup_tokens/*".to_string()).expect("valid glob"),
                method: Method::try_from("GET".to_string()).expect("valid method"),
                quota: RequestQuota::try_from("10r/m".to_string()).expect("valid quota"),
                key: LimitKey::Ip,
                burst: None,
                whitelist: Vec::new(),
            }],
            max_body_bytes: 100 << 20,
            trusted_proxies: Vec::new(),
            icann_client_identity: ClientIdentity::Direct,
            pubky_client_identity: ClientIdentity::Direct,
            header_read_timeout_secs: NonZeroU64::new(30).expect("non-zero"),
            idle_timeout_secs: NonZeroU64::new(120).expect("non-zero"),
            body_read_timeout_secs: NonZeroU64::new(60).expect("non-zero"),
            max_header_bytes: 64 << 10,
            max_connections: 10_000,
            max_event_streams: NonZeroUsize::new(10_000).expect("non-zero"),
            max_event_streams_per_ip: NonZeroUsize::new(100).expect("non-zero"),
            websites: true,
        }
    }
}

/// One `[[drive.rate_limits]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Glob matched against the request path.
    pub path: PathGlob,
    /// HTTP method the limit applies to.
    pub method: Method,
    /// Allowed requests per period.
    pub quota: RequestQuota,
    /// Count by client IP or by tenant.
    pub key: LimitKey,
    /// Bucket capacity in requests; absent means the quota's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU32>,
    /// IPs or user keys exempt from the limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub whitelist: Vec<String>,
}

/// `[default_quotas]`: default per-user bandwidth limits (all absent: no throttling).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultQuotas {
    /// Download speed of authenticated users.
    pub rate_read: Option<Bandwidth>,
    /// Upload speed of authenticated users.
    pub rate_write: Option<Bandwidth>,
    /// Read burst in the rate's unit.
    pub rate_read_burst: Option<NonZeroU32>,
    /// Write burst in the rate's unit.
    pub rate_write_burst: Option<NonZeroU32>,
    /// Download speed per client IP for requests without a session.
    pub unauthenticated_ip_rate_read: Option<Bandwidth>,
}

impl DefaultQuotas {
    /// Whether any bandwidth limit is configured.
    pub fn is_set(&self) -> bool {
        self != &Self::default()
    }
}

/// `[storage]`: where file contents live and the default storage quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Blob backend.
    #[serde(rename = "type")]
    pub kind: StorageType,
    /// Default per-user quota in MB; absent = unlimited, 0 = nothing may be stored.
    pub default_quota_mb: Option<u64>,
    /// Bucket for `s3` (and the reference's `google_bucket`).
    pub bucket_name: Option<String>,
    /// The reference's Google Cloud credential (not supported).
    pub credential: Option<String>,
    /// Homestead: S3 endpoint URL, e.g. `http://127.0.0.1:9000`; absent = AWS.
    pub s3_endpoint: Option<String>,
    /// Homestead: S3 region.
    pub s3_region: String,
    /// Homestead: address buckets as `endpoint/bucket` instead of `bucket.endpoint`.
    pub s3_path_style: bool,
    /// Homestead: S3 access key id; absent = `AWS_ACCESS_KEY_ID`.
    pub s3_access_key_id: Option<String>,
    /// Homestead: S3 secret access key; absent = `AWS_SECRET_ACCESS_KEY`.
    pub s3_secret_access_key: Option<String>,
    /// Homestead: seconds between sweeps for blobs no file references (leftovers of crashes).
    pub sweep_interval_secs: NonZeroU64,
    /// Homestead: blobs younger than this many seconds are never swept (an upload may not have committed yet).
    pub orphan_grace_secs: u64,
    /// Homestead: milliseconds a file's metadata may be served from memory; writes through other
    /// instances sharing the database show within this bound (usually within milliseconds, through the
    /// event bus). 0 = every read asks the database.
    pub entry_cache_ms: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            kind: StorageType::FileSystem,
            default_quota_mb: None,
            bucket_name: None,
            credential: None,
            s3_endpoint: None,
            s3_region: "us-east-1".to_string(),
            s3_path_style: false,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            sweep_interval_secs: NonZeroU64::new(3600).expect("non-zero"),
            orphan_grace_secs: 900,
            entry_cache_ms: 1000,
        }
    }
}

/// `[admin]`: the operator's API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Start the admin listener.
    pub enabled: bool,
    /// Admin listener address.
    #[serde(deserialize_with = "socket_address")]
    pub listen_socket: SocketAddr,
    /// Shared secret sent in `X-Admin-Password`: no default, at least
    /// [`MIN_ADMIN_PASSWORD`](crate::MIN_ADMIN_PASSWORD) characters while the listener is enabled.
    pub admin_password: String,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            listen_socket: loopback(6288),
            admin_password: String::new(),
        }
    }
}

/// `[otlp]` (Homestead): OpenTelemetry export of traces and metrics over OTLP/HTTP; off unless an endpoint
/// is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Otlp {
    /// Collector base URL, e.g. `http://127.0.0.1:4318`; `/v1/traces` and `/v1/metrics` are appended.
    pub endpoint: Option<String>,
    /// Seconds between metric exports.
    pub metrics_interval_secs: NonZeroU64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl Default for Otlp {
    fn default() -> Self {
        Self {
            endpoint: None,
            metrics_interval_secs: NonZeroU64::new(60).expect("non-zero"),
            service_name: "homestead".to_string(),
        }
    }
}

/// `[metrics]`: the Prometheus listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Start the metrics listener.
    pub enabled: bool,
    /// Metrics listener address.
    #[serde(deserialize_with = "socket_address")]
    pub listen_socket: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            enabled: false,
            listen_socket: loopback(6289),
        }
    }
}

/// `[pkdns]`: what the server's PKARR record advertises and how the PKARR client reaches the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pkdns {
    /// Address advertised in the record (A/AAAA and address hint).
    #[serde(deserialize_with = "ip_address")]
    pub public_ip: IpAddr,
    /// PubkyTLS port advertised; absent = the bound port.
    pub public_pubky_tls_port: Option<u16>,
    /// ICANN HTTP port advertised for `localhost`; absent = the bound port.
    pub public_icann_http_port: Option<u16>,
    /// ICANN domain advertised as the fallback endpoint.
    pub icann_domain: Option<Hostname>,
    /// Seconds between runs of the user keys republisher (at least 1800); 0 disables it.
    pub user_keys_republisher_interval: u64,
    /// Homestead: seconds from start-up to the republisher's first run.
    pub user_keys_republisher_delay_secs: u64,
    /// DHT bootstrap nodes; absent = mainline's defaults. Setting it disables relays unless
    /// `dht_relay_nodes` is set too.
    pub dht_bootstrap_nodes: Option<Vec<HostPort>>,
    /// PKARR relays; `[]` means none (Homestead; the reference refuses an empty list).
    pub dht_relay_nodes: Option<Vec<RelayUrl>>,
    /// DHT and relay request timeout.
    pub dht_request_timeout_ms: Option<NonZeroU64>,
    /// Relay request timeout (0.17.1), over `dht_request_timeout_ms` for relays; DHT requests keep
    /// theirs. Absent: the PKARR library's default (or `dht_request_timeout_ms` when set).
    pub relay_request_timeout_ms: Option<NonZeroU64>,
}

impl Default for Pkdns {
    fn default() -> Self {
        Self {
            public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_pubky_tls_port: None,
            public_icann_http_port: None,
            icann_domain: Some(Hostname::try_from("localhost".to_string()).expect("valid host")),
            user_keys_republisher_interval: 14_400,
            user_keys_republisher_delay_secs: 60,
            dht_bootstrap_nodes: None,
            dht_relay_nodes: Some(
                ["https://pkarr.pubky.app", "https://pkarr.pubky.org"]
                    .into_iter()
                    .map(|url| RelayUrl::try_from(url.to_string()).expect("valid relay"))
                    .collect(),
            ),
            dht_request_timeout_ms: None,
            relay_request_timeout_ms: None,
        }
    }
}

/// `[logging]`: the log filter (`RUST_LOG`, when set, replaces it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    /// Global level.
    pub level: LogLevel,
    /// Per-target overrides, `target=level`.
    pub module_levels: Vec<ModuleLevel>,
    /// Homestead: `text` lines for people, or `json` objects (one per line) for log collectors.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            // No per-request lines by default: under load they cost more than the requests.
            // `tower_http=debug` turns request tracing on.
            module_levels: Vec::new(),
            format: LogFormat::Text,
        }
    }
}

impl Logging {
    /// The tracing filter directives: the level, then every module level.
    pub fn filter(&self) -> String {
        std::iter::once(self.level.as_str())
            .chain(self.module_levels.iter().map(ModuleLevel::as_str))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}
