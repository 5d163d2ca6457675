//! Validated scalar values of the configuration. Each type parses from the TOML string the operator
//! wrote and, when it cannot, says what was written and what is allowed.

use std::fmt;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

/// Reads an address from its string, or says which value was refused and what is expected.
fn parsed<'de, D, T>(de: D, expected: &str) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
{
    let value = String::deserialize(de)?;
    value
        .parse()
        .map_err(|_| serde::de::Error::custom(format!("`{value}` is not {expected}")))
}

/// A listener's socket address (`deserialize_with`): the error names the value refused.
pub(crate) fn socket_address<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<std::net::SocketAddr, D::Error> {
    parsed(
        de,
        "a socket address: expected ip:port, e.g. \"127.0.0.1:6286\" or \"[::]:6286\"",
    )
}

/// An IP address (`deserialize_with`): the error names the value refused.
pub(crate) fn ip_address<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<std::net::IpAddr, D::Error> {
    parsed(
        de,
        "an IP address: expected e.g. \"203.0.113.7\" or \"2001:db8::1\"",
    )
}

/// Where metadata lives: PostgreSQL (`postgres://`, `postgresql://`) or SQLite (`sqlite:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatabaseUrl(String);

/// The database engine a [`DatabaseUrl`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// PostgreSQL, for production and scale-out.
    Postgres,
    /// SQLite, the embedded default.
    Sqlite,
}

impl DatabaseUrl {
    /// The engine this URL connects to.
    pub fn kind(&self) -> DatabaseKind {
        if self.0.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else {
            DatabaseKind::Postgres
        }
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A SQLite URL for a database file (created when missing).
    pub fn sqlite_file(path: &std::path::Path) -> Self {
        Self(format!("sqlite://{}?mode=rwc", path.display()))
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let scheme = value.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "postgres" | "postgresql" | "sqlite" => Ok(Self(value)),
            _ => Err(format!(
                "`{}` is not a database URL: the scheme must be postgres://, postgresql:// or sqlite:",
                redact_url(&value)
            )),
        }
    }
}

impl From<DatabaseUrl> for String {
    fn from(value: DatabaseUrl) -> Self {
        value.0
    }
}

/// Hides the password of a URL so that it can appear in an error message or a log line.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Who may sign up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignupMode {
    /// Anyone with a valid AuthToken.
    Open,
    /// Only holders of an unused signup token.
    TokenRequired,
}

/// Which blob store keeps file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageType {
    /// Files under `<data-dir>/blobs/`.
    FileSystem,
    /// Process memory, lost on exit (tests).
    InMemory,
    /// Any S3-compatible bucket.
    S3,
    /// The reference's Google Cloud Storage backend, which Homestead does not support.
    GoogleBucket,
}

/// A time unit of a rate: per second, minute, hour or day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

impl Per {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "s" => Some(Self::Second),
            "m" => Some(Self::Minute),
            "h" => Some(Self::Hour),
            "d" => Some(Self::Day),
            _ => None,
        }
    }

    /// The length of the period in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "m",
            Self::Hour => "h",
            Self::Day => "d",
        }
    }
}

/// A byte rate such as `10mb/s` (binary units: 1 kb = 1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Bandwidth {
    /// Number of units per period.
    pub amount: u64,
    /// Bytes in one unit (1024, 1024², 1024³).
    pub unit_bytes: u64,
    /// The period.
    pub per: Per,
}

impl TryFrom<String> for Bandwidth {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let err = || {
            format!(
                "`{value}` is not a bandwidth: expected <n><kb|mb|gb>/<s|m|h|d>, e.g. \"10mb/s\""
            )
        };
        let (amount_unit, per) = value.split_once('/').ok_or_else(err)?;
        let per = Per::parse(per).ok_or_else(err)?;
        let digits = amount_unit.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit_bytes = match amount_unit[digits.len()..].to_ascii_lowercase().as_str() {
            "kb" => 1 << 10,
            "mb" => 1 << 20,
            "gb" => 1 << 30,
            _ => return Err(err()),
        };
        let amount = digits
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(err)?;
        Ok(Self {
            amount,
            unit_bytes,
            per,
        })
    }
}

impl From<Bandwidth> for String {
    fn from(value: Bandwidth) -> Self {
        let unit = match value.unit_bytes {
            1024 => "kb",
            1_048_576 => "mb",
            _ => "gb",
        };
        format!("{}{unit}/{}", value.amount, value.per.suffix())
    }
}

/// A request rate such as `10r/m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestQuota {
    /// Requests allowed per period.
    pub requests: NonZeroU32,
    /// The period.
    pub per: Per,
}

impl TryFrom<String> for RequestQuota {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let err =
            || format!("`{value}` is not a request quota: expected <n>r/<s|m|h|d>, e.g. \"10r/m\"");
        let (count, per) = value.split_once("r/").ok_or_else(err)?;
        let per = Per::parse(per).ok_or_else(err)?;
        let requests = count.parse::<NonZeroU32>().map_err(|_| err())?;
        Ok(Self { requests, per })
    }
}

impl From<RequestQuota> for String {
    fn from(value: RequestQuota) -> Self {
        format!("{}r/{}", value.requests, value.per.suffix())
    }
}

/// What a request-count limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The client IP.
    Ip,
    /// The tenant's public key.
    User,
}

/// An HTTP method name, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Method(String);

impl Method {
    /// The method in upper case, e.g. `GET`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Method {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
        ];
        let upper = value.to_ascii_uppercase();
        if KNOWN.contains(&upper.as_str()) {
            Ok(Self(upper))
        } else {
            Err(format!(
                "`{value}` is not an HTTP method: expected one of {}",
                KNOWN.join(", ")
            ))
        }
    }
}

impl From<Method> for String {
    fn from(value: Method) -> Self {
        value.0
    }
}

/// A path glob of a rate limit, e.g. `/signup_tokens/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathGlob(String);

impl PathGlob {
    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` matches: `*` within one segment, `**` across segments, `?` one character,
    /// `[abc]`/`[a-z]` a class, `{a,b}` alternatives; everything else literally.
    pub fn matches(&self, path: &str) -> bool {
        let path: Vec<char> = path.chars().collect();
        expand_braces(&self.0)
            .iter()
            .any(|glob| glob_match(&glob.chars().collect::<Vec<_>>(), &path))
    }
}

/// Every brace-free pattern a `{a,b}` glob stands for.
fn expand_braces(glob: &str) -> Vec<String> {
    let Some(open) = glob.find('{') else {
        return vec![glob.to_string()];
    };
    let Some(close) = glob[open..].find('}').map(|i| open + i) else {
        return vec![glob.to_string()];
    };
    let (head, tail) = (&glob[..open], &glob[close + 1..]);
    glob[open + 1..close]
        .split(',')
        .flat_map(|choice| expand_braces(&format!("{head}{choice}{tail}")))
        .collect()
}

fn glob_match(glob: &[char], path: &[char]) -> bool {
    match glob.split_first() {
        None => path.is_empty(),
        Some(('*', rest)) if rest.first() == Some(&'*') => {
            let rest = &rest[1..];
            (0..=path.len()).any(|skip| glob_match(rest, &path[skip..]))
        }
        Some(('*', rest)) => {
            let segment = path.iter().position(|c| *c == '/').unwrap_or(path.len());
            (0..=segment).any(|skip| glob_match(rest, &path[skip..]))
        }
        Some(('?', rest)) => {
            path.first().is_some_and(|c| *c != '/') && glob_match(rest, &path[1..])
        }
        Some(('[', rest)) => {
            let Some(end) = rest.iter().position(|c| *c == ']') else {
                return path.first() == Some(&'[') && glob_match(rest, &path[1..]);
            };
            let (class, rest) = (&rest[..end], &rest[end + 1..]);
            let Some(c) = path.first() else {
                return false;
            };
            let mut i = 0;
            let mut hit = false;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= (class[i]..=class[i + 2]).contains(c);
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit && glob_match(rest, &path[1..])
        }
        Some((literal, rest)) => path.first() == Some(literal) && glob_match(rest, &path[1..]),
    }
}

/// A trusted reverse proxy: one address or a CIDR range, e.g. `127.0.0.1`, `10.0.0.0/8`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl TryFrom<String> for IpRange {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let err = || format!("`{value}` is not an IP address or CIDR range, e.g. \"10.0.0.0/8\"");
        let (address, prefix) = match value.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (value.as_str(), None),
        };
        let network: std::net::IpAddr = address.parse().map_err(|_| err())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(err)?,
        };
        Ok(Self { network, prefix })
    }
}

impl From<IpRange> for String {
    fn from(value: IpRange) -> Self {
        format!("{}/{}", value.network, value.prefix)
    }
}

impl TryFrom<String> for PathGlob {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        if value.starts_with('/') {
            Ok(Self(value))
        } else {
            Err(format!(
                "`{value}` is not a path glob: it must start with `/`, e.g. \"/session\""
            ))
        }
    }
}

impl From<PathGlob> for String {
    fn from(value: PathGlob) -> Self {
        value.0
    }
}

/// A DNS host name (RFC 1123), e.g. `homeserver.example.com` or `localhost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

impl Hostname {
    /// The host name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_rfc1123(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl TryFrom<String> for Hostname {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        if is_rfc1123(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "`{value}` is not a host name: expected dot-separated labels of letters, digits and `-`"
            ))
        }
    }
}

impl From<Hostname> for String {
    fn from(value: Hostname) -> Self {
        value.0
    }
}

/// A DHT node address written `host:port` (IPv4 literal or host name; IPv6 literals are not accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort(String);

impl HostPort {
    /// The address as written, ready for name resolution.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let valid = match value.split(':').collect::<Vec<_>>().as_slice() {
            [host, port] => is_rfc1123(host) && port.parse::<u16>().is_ok(),
            _ => false,
        };
        if valid {
            Ok(Self(value))
        } else {
            Err(format!(
                "`{value}` is not a DHT node address: expected host:port, e.g. \"router.bittorrent.com:6881\""
            ))
        }
    }
}

impl From<HostPort> for String {
    fn from(value: HostPort) -> Self {
        value.0
    }
}

/// A relay URL (http or https).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelayUrl(url::Url);

impl RelayUrl {
    /// The parsed URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl TryFrom<String> for RelayUrl {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match url::Url::parse(&value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Ok(Self(url))
            }
            _ => Err(format!(
                "`{value}` is not a relay URL: expected http(s)://host[:port][/path]"
            )),
        }
    }
}

impl From<RelayUrl> for String {
    fn from(value: RelayUrl) -> Self {
        value.0.to_string()
    }
}

/// A log level: `trace`, `debug`, `info`, `warn`, `error` or `off` (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Problems that do not stop a request.
    Warn,
    /// Failures.
    Error,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// The level as a tracing filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Off => "off",
        }
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            "off" => Ok(Self::Off),
            _ => Err(format!(
                "`{value}` is not a log level: expected trace, debug, info, warn, error or off"
            )),
        }
    }
}

impl From<LogLevel> for String {
    fn from(value: LogLevel) -> Self {
        value.as_str().to_string()
    }
}

/// A per-target log level, `target=level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModuleLevel(String);

impl ModuleLevel {
    /// The directive as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModuleLevel {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.split_once('=') {
            Some((target, level)) if !target.is_empty() => {
                LogLevel::try_from(level.to_string())?;
                Ok(Self(value))
            }
            _ => Err(format!(
                "`{value}` is not a module level: expected target=level, e.g. \"homestead=debug\""
            )),
        }
    }
}

impl From<ModuleLevel> for String {
    fn from(value: ModuleLevel) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_parses_and_renders_canonically() {
        let bw = Bandwidth::try_from("10MB/s".to_string()).unwrap();
        assert_eq!(bw.amount, 10);
        assert_eq!(bw.unit_bytes, 1 << 20);
        assert_eq!(String::from(bw), "10mb/s");
        for bad in [
            "10r/s", "10mb/S", "0kb/s", "mb/s", "10mb", "10tb/s", "-1kb/s",
        ] {
            assert!(Bandwidth::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_quota_parses() {
        let q = RequestQuota::try_from("20r/m".to_string()).unwrap();
        assert_eq!((q.requests.get(), q.per), (20, Per::Minute));
        for bad in ["0r/m", "10mb/s", "r/m", "10r/x", "4294967296r/s"] {
            assert!(RequestQuota::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_port_follows_reference_rules() {
        assert!(HostPort::try_from("router.bittorrent.com:6881".to_string()).is_ok());
        assert!(HostPort::try_from("127.0.0.1:6881".to_string()).is_ok());
        for bad in [
            "[::1]:6881",
            "host",
            "host:port",
            "a:b:1",
            "-bad-:1",
            "host:70000",
        ] {
            assert!(HostPort::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_url_names_scheme_and_hides_password() {
        let err = DatabaseUrl::try_from("mysql://u:secret@h/db".to_string()).unwrap_err();
        assert!(err.contains("mysql://u:***@h/db"), "{err}");
        assert!(!err.contains("secret"));
        let pg = DatabaseUrl::try_from("postgresql://localhost/x".to_string()).unwrap();
        assert_eq!(pg.kind(), DatabaseKind::Postgres);
        let lite = DatabaseUrl::try_from("sqlite:///tmp/x.db".to_string()).unwrap();
        assert_eq!(lite.kind(), DatabaseKind::Sqlite);
    }

    #[test]
    fn log_levels_are_case_insensitive() {
        assert_eq!(LogLevel::try_from("WARN".to_string()), Ok(LogLevel::Warn));
        assert!(LogLevel::try_from("loud".to_string()).is_err());
        assert!(ModuleLevel::try_from("homestead=debug".to_string()).is_ok());
        assert!(ModuleLevel::try_from("homestead".to_string()).is_err());
        assert!(ModuleLevel::try_from("homestead=loud".to_string()).is_err());
    }
}
