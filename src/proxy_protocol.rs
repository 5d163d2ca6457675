//! The receiving side of the PROXY protocol (HAProxy's, versions 1 and 2): the preface a TCP load balancer
//! writes before the client's own bytes, naming the client's address. A listener in `proxy_protocol` mode
//! ([`ProxyProtocol`]) takes connections from its trusted load balancers only and reads the preface before
//! anything else (before the TLS handshake on PubkyTLS); its source address becomes the client address that
//! rate limits and logs use.
//!
//! The preface is read exactly: [`parse`] says how many more bytes it needs at least, so not one byte of
//! the client's own is consumed and the stream is handed on untouched.
//!
//! ```
//! use homestead::proxy_protocol::{Parsed, Source, parse};
//!
//! let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n";
//! let client = "203.0.113.7:51000".parse().unwrap();
//! let whole = Parsed::Complete { source: Source::Client(client), len: line.len() };
//! assert_eq!(parse(line), Ok(whole));
//! assert_eq!(parse(b"PROXY TCP4"), Ok(Parsed::Incomplete(5)));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use homestead_config::{ClientIdentity, IpRange};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every v2 preface starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, `\r\n` included (the protocol's own limit).
pub const V1_MAX: usize = 107;
/// Longest v2 preface accepted: the addresses plus room for the TLVs load balancers append.
pub const V2_MAX: usize = 2048;
/// Shortest v1 line: `PROXY UNKNOWN\r\n`.
const V1_MIN: usize = 15;
const V1_START: &[u8] = b"PROXY ";
const V2_HEADER: usize = 16;

/// Whom a complete preface names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address and port, as the load balancer saw them.
    Client(SocketAddr),
    /// No client: a v2 `LOCAL` connection (the balancer's own, e.g. a health check), or a family the
    /// balancer does not know (v1 `UNKNOWN`, v2 `UNSPEC`). The TCP peer stands for the client.
    Peer,
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole preface, the first `len` bytes of the input.
    Complete {
        /// Whom it names.
        source: Source,
        /// Its length in bytes.
        len: usize,
    },
    /// At least this many more bytes are needed; reading exactly that many never reads past the preface.
    Incomplete(usize),
}

/// Why bytes are not a preface Homestead accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefaceError {
    /// The bytes start neither a v1 nor a v2 preface.
    Missing,
    /// A v1 line that is not `PROXY TCP4|TCP6 <source> <destination> <port> <port>` or `PROXY UNKNOWN ...`.
    MalformedV1,
    /// A v1 line without its end within [`V1_MAX`] bytes.
    LongV1,
    /// A v2 preface of another version, or with a command other than `LOCAL` and `PROXY`.
    UnsupportedV2(u8),
    /// A v2 `PROXY` preface for another family or transport than TCP over IPv4 or IPv6.
    UnsupportedFamily(u8),
    /// A v2 preface whose length cannot hold the addresses of its family.
    ShortV2(u16),
    /// A v2 preface longer than [`V2_MAX`] bytes.
    LongV2(usize),
}

impl fmt::Display for PrefaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no PROXY protocol preface"),
            Self::MalformedV1 => f.write_str("malformed PROXY v1 line"),
            Self::LongV1 => write!(f, "PROXY v1 line without its end within {V1_MAX} bytes"),
            Self::UnsupportedV2(byte) => {
                write!(f, "PROXY v2 version and command {byte:#04x} not supported")
            }
            Self::UnsupportedFamily(byte) => write!(
                f,
                "PROXY v2 family {byte:#04x} not supported (only TCP over IPv4 or IPv6)"
            ),
            Self::ShortV2(length) => {
                write!(f, "PROXY v2 length {length} too short for its addresses")
            }
            Self::LongV2(len) => write!(f, "PROXY v2 preface of {len} bytes (at most {V2_MAX})"),
        }
    }
}

/// Parses the preface at the start of `input`.
pub fn parse(input: &[u8]) -> Result<Parsed, PrefaceError> {
    match input.first() {
        // One byte tells a preface from anything else, so that other protocols are refused at once.
        None => Ok(Parsed::Incomplete(1)),
        Some(b'P') => parse_v1(input),
        Some(b'\r') => parse_v2(input),
        Some(_) => Err(PrefaceError::Missing),
    }
}

/// Whether `input` agrees with `start` as far as both go.
fn starts_like(input: &[u8], start: &[u8]) -> bool {
    let n = input.len().min(start.len());
    input[..n] == start[..n]
}

fn printable(byte: &u8) -> bool {
    (b' '..=b'~').contains(byte)
}

fn parse_v1(input: &[u8]) -> Result<Parsed, PrefaceError> {
    if !starts_like(input, V1_START) {
        return Err(PrefaceError::Missing);
    }
    let window = &input[..input.len().min(V1_MAX)];
    if let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") {
        let line = &window[..end];
        let source = line
            .iter()
            .all(printable)
            .then(|| v1_line(line))
            .flatten()
            .ok_or(PrefaceError::MalformedV1)?;
        return Ok(Parsed::Complete {
            source,
            len: end + 2,
        });
    }
    if window.len() == V1_MAX {
        return Err(PrefaceError::LongV1);
    }
    // Only printable ASCII before the line's end, so that garbage is refused at once.
    let (last, body) = window.split_last().expect("starts with `P`");
    if !body.iter().all(printable) || !(printable(last) || *last == b'\r') {
        return Err(PrefaceError::MalformedV1);
    }
    let more = if *last == b'\r' {
        1
    } else {
        V1_MIN.saturating_sub(window.len()).max(2)
    };
    Ok(Parsed::Incomplete(more))
}

/// The source a v1 line (without `\r\n`) names.
fn v1_line(line: &[u8]) -> Option<Source> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split(' ');
    if fields.next()? != "PROXY" {
        return None;
    }
    let family = fields.next()?;
    if family == "UNKNOWN" {
        // The rest of the line says nothing the receiver may use.
        return Some(Source::Peer);
    }
    let address = |text: &str| match family {
        "TCP4" => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        "TCP6" => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        _ => None,
    };
    let source = address(fields.next()?)?;
    address(fields.next()?)?;
    let port = v1_port(fields.next()?)?;
    v1_port(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some(Source::Client(SocketAddr::new(source, port)))
}

/// A decimal port without sign or leading zero.
fn v1_port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    (digits && canonical && text.len() <= 5)
        .then(|| text.parse().ok())
        .flatten()
}

fn parse_v2(input: &[u8]) -> Result<Parsed, PrefaceError> {
    if !starts_like(input, &V2_SIGNATURE) {
        return Err(PrefaceError::Missing);
    }
    if input.len() < V2_HEADER {
        return Ok(Parsed::Incomplete(V2_HEADER - input.len()));
    }
    let family = input[13];
    let length = u16::from_be_bytes([input[14], input[15]]);
    let len = V2_HEADER + usize::from(length);
    if len > V2_MAX {
        return Err(PrefaceError::LongV2(len));
    }
    // Version 2; command LOCAL (0) or PROXY (1).
    let local = match input[12] {
        0x20 => true,
        0x21 => false,
        other => return Err(PrefaceError::UnsupportedV2(other)),
    };
    // Family in the high nibble (UNSPEC 0, INET 1, INET6 2), transport in the low one (STREAM 1).
    let addresses = match family {
        _ if local => 0,
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        other => return Err(PrefaceError::UnsupportedFamily(other)),
    };
    if usize::from(length) < addresses {
        return Err(PrefaceError::ShortV2(length));
    }
    if input.len() < len {
        return Ok(Parsed::Incomplete(len - input.len()));
    }
    // Source address, destination address, source port, destination port; TLVs after them are ignored.
    let payload = &input[V2_HEADER..len];
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    let source = match addresses {
        12 => {
            let ip: [u8; 4] = payload[..4].try_into().expect("4 bytes");
            Source::Client(SocketAddr::new(Ipv4Addr::from(ip).into(), port(8)))
        }
        36 => {
            let ip: [u8; 16] = payload[..16].try_into().expect("16 bytes");
            Source::Client(SocketAddr::new(Ipv6Addr::from(ip).into(), port(32)))
        }
        _ => Source::Peer,
    };
    Ok(Parsed::Complete { source, len })
}

/// Why a connection was refused in `proxy_protocol` mode.
#[derive(Debug)]
pub enum Refused {
    /// The TCP peer is not one of the trusted load balancers.
    Untrusted,
    /// The preface did not arrive within the header read timeout.
    TimedOut,
    /// The connection failed or closed before a whole preface.
    Read(std::io::Error),
    /// The bytes are not an acceptable preface.
    Preface(PrefaceError),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Untrusted => f.write_str("peer is not in trusted_proxies"),
            Self::TimedOut => f.write_str("no whole PROXY preface within the header read timeout"),
            Self::Read(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                f.write_str("closed before a whole PROXY preface")
            }
            Self::Read(err) => write!(f, "reading the PROXY preface failed: {err}"),
            Self::Preface(err) => err.fmt(f),
        }
    }
}

/// A listener's `proxy_protocol` mode: the load balancers it takes connections from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    trusted: Arc<[IpRange]>,
}

impl ProxyProtocol {
    /// The mode `identity` configures; `None` for `direct`.
    pub fn from_config(identity: &ClientIdentity) -> Option<Self> {
        match identity {
            ClientIdentity::Direct => None,
            ClientIdentity::ProxyProtocol { trusted_proxies } => Some(Self {
                trusted: trusted_proxies.as_slice().into(),
            }),
        }
    }

    /// Reads the preface of a connection from `peer` off `io` within `timeout`, and nothing after it:
    /// the client's address, or why the connection must be closed.
    pub async fn accept<IO: AsyncRead + Unpin>(
        &self,
        io: &mut IO,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<SocketAddr, Refused> {
        if !self.trusted.iter().any(|range| range.contains(peer.ip())) {
            return Err(Refused::Untrusted);
        }
        let source = tokio::time::timeout(timeout, read_preface(io))
            .await
            .map_err(|_| Refused::TimedOut)??;
        Ok(match source {
            // `::ffff:a.b.c.d` (a dual-stack balancer's IPv4 client) is that IPv4 client: one rate-limit
            // bucket and one allow-list entry per client, however the balancer spells it.
            Source::Client(client) => SocketAddr::new(client.ip().to_canonical(), client.port()),
            Source::Peer => peer,
        })
    }
}

/// Reads exactly one preface off `io`.
async fn read_preface<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<Source, Refused> {
    let mut read = Vec::with_capacity(V1_MAX);
    loop {
        match parse(&read).map_err(Refused::Preface)? {
            Parsed::Complete { source, len } => {
                debug_assert_eq!(len, read.len(), "read past the preface");
                return Ok(source);
            }
            Parsed::Incomplete(more) => {
                let start = read.len();
                read.resize(start + more, 0);
                io.read_exact(&mut read[start..])
                    .await
                    .map_err(Refused::Read)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 preface: `command` (0 `LOCAL`, 1 `PROXY`), the family byte, and the payload after the header.
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut preface = V2_SIGNATURE.to_vec();
        preface.push(0x20 | command);
        preface.push(family);
        let length = u16::try_from(payload.len()).expect("short payload");
        preface.extend_from_slice(&length.to_be_bytes());
        preface.extend_from_slice(payload);
        preface
    }

    fn client(addr: &str) -> Source {
        Source::Client(addr.parse().unwrap())
    }

    fn complete(input: &[u8]) -> Source {
        match parse(input) {
            Ok(Parsed::Complete { source, len }) => {
                assert_eq!(len, input.len(), "{input:?}");
                source
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut payload = [src, dst].concat();
        payload.extend_from_slice(&sport.to_be_bytes());
        payload.extend_from_slice(&dport.to_be_bytes());
        payload
    }

    #[test]
    fn v1_lines_name_the_client() {
        let cases = [
            (
                "PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n",
                client("203.0.113.7:51000"),
            ),
            (
                "PROXY TCP6 2001:db8::7 2001:db8::1 0 6287\r\n",
                client("[2001:db8::7]:0"),
            ),
            (
                "PROXY TCP6 ::ffff:10.0.0.1 ::1 65535 1\r\n",
                client("[::ffff:10.0.0.1]:65535"),
            ),
            ("PROXY UNKNOWN\r\n", Source::Peer),
            (
                "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
                Source::Peer,
            ),
        ];
        for (line, source) in cases {
            assert_eq!(complete(line.as_bytes()), source, "{line:?}");
        }
        // The longest line the protocol allows.
        let longest = format!(
            "PROXY TCP6 {0} {0} 65535 65535\r\n",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(longest.len(), 104);
        let padded = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(padded.len(), V1_MAX);
        assert_eq!(complete(padded.as_bytes()), Source::Peer);
    }

    #[test]
    fn malformed_v1_lines_are_refused() {
        for line in [
            "PROXY TCP4 203.0.113.7 192.0.2.1 51000\r\n",
            "PROXY TCP4 203.0.113.7 192.0.2.1 51000 443 extra\r\n",
            "PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",
            "PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
            "PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n",
            "PROXY TCP4 203.0.113.7 192.0.2.1 051 443\r\n",
            "PROXY TCP4 203.0.113.7 192.0.2.1 +51 443\r\n",
            "PROXY TCP4 203.0.113.7 not-an-ip 51 443\r\n",
            "PROXY TCP4  203.0.113.7 192.0.2.1 51 443\r\n",
            "PROXY UDP4 203.0.113.7 192.0.2.1 51 443\r\n",
            "PROXY tcp4 203.0.113.7 192.0.2.1 51 443\r\n",
            "PROXY \r\n",
            "PROXY UNKNOWN \x01\r\n",
        ] {
            assert_eq!(
                parse(line.as_bytes()),
                Err(PrefaceError::MalformedV1),
                "{line:?}"
            );
        }
        // Garbage is refused as soon as it shows, not at the end of the line.
        for prefix in ["PROXY TCP4 1.2.3.4\n", "PROXY TCP4 \r1", "PROXY \u{e9}"] {
            assert_eq!(
                parse(prefix.as_bytes()),
                Err(PrefaceError::MalformedV1),
                "{prefix:?}"
            );
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX));
        assert_eq!(parse(long.as_bytes()), Err(PrefaceError::LongV1));
        assert_eq!(parse(&long.as_bytes()[..V1_MAX]), Err(PrefaceError::LongV1));
    }

    #[test]
    fn v2_prefaces_name_the_client() {
        let four = v2(1, 0x11, &tcp4([203, 0, 113, 7], [192, 0, 2, 1], 51000, 443));
        assert_eq!(complete(&four), client("203.0.113.7:51000"));
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        six.extend_from_slice(&[0xc7, 0x38, 0x18, 0x8f]);
        assert_eq!(complete(&v2(1, 0x21, &six)), client("[2001:db8::7]:51000"));
        // TLVs after the addresses are skipped.
        let mut tlvs = tcp4([10, 0, 0, 9], [10, 0, 0, 1], 4000, 80);
        tlvs.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c']);
        assert_eq!(complete(&v2(1, 0x11, &tlvs)), client("10.0.0.9:4000"));
        // UNSPEC under PROXY names no one.
        assert_eq!(complete(&v2(1, 0x00, &[])), Source::Peer);
    }

    #[test]
    fn v2_local_speaks_for_the_balancer_itself() {
        assert_eq!(complete(&v2(0, 0x00, &[])), Source::Peer);
        // Whatever addresses follow LOCAL are ignored, even of a family PROXY would refuse.
        let addresses = tcp4([203, 0, 113, 7], [192, 0, 2, 1], 1, 2);
        assert_eq!(complete(&v2(0, 0x11, &addresses)), Source::Peer);
        assert_eq!(complete(&v2(0, 0x31, &[0; 216])), Source::Peer);
    }

    #[test]
    fn unsupported_or_inconsistent_v2_prefaces_are_refused() {
        let addresses = tcp4([203, 0, 113, 7], [192, 0, 2, 1], 1, 2);
        let mut version1 = v2(1, 0x11, &addresses);
        version1[12] = 0x11;
        assert_eq!(parse(&version1), Err(PrefaceError::UnsupportedV2(0x11)));
        let mut command2 = v2(1, 0x11, &addresses);
        command2[12] = 0x22;
        assert_eq!(parse(&command2), Err(PrefaceError::UnsupportedV2(0x22)));
        for family in [0x12, 0x22, 0x31, 0x32, 0x10, 0x41] {
            assert_eq!(
                parse(&v2(1, family, &[0; 216])),
                Err(PrefaceError::UnsupportedFamily(family)),
                "{family:#x}"
            );
        }
        assert_eq!(
            parse(&v2(1, 0x11, &addresses[..11])),
            Err(PrefaceError::ShortV2(11))
        );
        assert_eq!(
            parse(&v2(1, 0x21, &addresses)),
            Err(PrefaceError::ShortV2(12))
        );
        let mut wrong_signature = v2(1, 0x11, &addresses);
        wrong_signature[8] = b'q';
        assert_eq!(parse(&wrong_signature), Err(PrefaceError::Missing));
    }

    #[test]
    fn oversize_v2_prefaces_are_refused_from_their_header() {
        let largest = v2(1, 0x11, &[0; V2_MAX - 16]);
        assert!(matches!(
            parse(&largest),
            Ok(Parsed::Complete { len: V2_MAX, .. })
        ));
        let over = v2(1, 0x11, &[0; V2_MAX - 15]);
        assert_eq!(
            parse(&over[..16]),
            Err(PrefaceError::LongV2(V2_MAX + 1)),
            "refused before reading the payload"
        );
    }

    #[test]
    fn other_protocols_are_no_preface() {
        for start in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01",
            b"PRI * HTTP/2.0",
            b"POST",
            b"\r\n\r\n\r\n",
            b"\n",
        ] {
            assert_eq!(parse(start), Err(PrefaceError::Missing), "{start:?}");
        }
    }

    /// Every proper prefix of a preface asks for more, never more than the rest: the reader never reads
    /// past the preface into the client's bytes.
    #[test]
    fn truncated_prefaces_ask_for_no_more_than_the_rest() {
        let prefaces = [
            b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 0 6287\r\n".to_vec(),
            v2(1, 0x11, &tcp4([203, 0, 113, 7], [192, 0, 2, 1], 1, 2)),
            v2(0, 0x00, &[]),
            v2(1, 0x21, &[7; 40]),
        ];
        for preface in prefaces {
            for cut in 0..preface.len() {
                match parse(&preface[..cut]) {
                    Ok(Parsed::Incomplete(more)) => {
                        assert!(
                            more >= 1 && cut + more <= preface.len(),
                            "{preface:?} at {cut}"
                        );
                    }
                    other => panic!("{preface:?} at {cut}: {other:?}"),
                }
            }
            // The client's bytes after it are not part of it.
            let mut followed = preface.clone();
            followed.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert!(matches!(
                parse(&followed),
                Ok(Parsed::Complete { len, .. }) if len == preface.len()
            ));
        }
    }

    #[tokio::test]
    async fn accept_reads_the_preface_and_nothing_more() {
        let trusted = ClientIdentity::ProxyProtocol {
            trusted_proxies: vec![IpRange::try_from("10.0.0.0/8".to_string()).unwrap()],
        };
        let mode = ProxyProtocol::from_config(&trusted).unwrap();
        let balancer: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let second = Duration::from_secs(1);
        let bytes = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n\r\n";
        let mut io = &bytes[..];
        let client = mode.accept(&mut io, balancer, second).await.unwrap();
        assert_eq!(client, "203.0.113.7:51000".parse().unwrap());
        assert_eq!(io, b"GET / HTTP/1.1\r\n\r\n");

        let mapped = b"PROXY TCP6 ::ffff:203.0.113.8 ::1 51000 443\r\n";
        let mut io = &mapped[..];
        let client = mode.accept(&mut io, balancer, second).await.unwrap();
        assert_eq!(
            client,
            "203.0.113.8:51000".parse().unwrap(),
            "one spelling per client"
        );

        let local = [v2(0, 0x00, &[]), b"\x16\x03\x01".to_vec()].concat();
        let mut io = &local[..];
        assert_eq!(
            mode.accept(&mut io, balancer, second).await.unwrap(),
            balancer
        );
        assert_eq!(io, b"\x16\x03\x01");

        let outsider: SocketAddr = "192.0.2.9:1".parse().unwrap();
        let mut io = &bytes[..];
        let refused = mode.accept(&mut io, outsider, second).await.unwrap_err();
        assert!(matches!(refused, Refused::Untrusted), "{refused}");
        assert_eq!(io.len(), bytes.len(), "nothing read from an outsider");

        let mut io = &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..];
        let refused = mode.accept(&mut io, balancer, second).await.unwrap_err();
        assert_eq!(refused.to_string(), "no PROXY protocol preface");

        let mut io = &b"PROXY TCP4 203.0.113.7"[..];
        let refused = mode.accept(&mut io, balancer, second).await.unwrap_err();
        assert_eq!(refused.to_string(), "closed before a whole PROXY preface");

        // A balancer that stalls is dropped after the timeout.
        let (mut stalled, _writer) = tokio::io::simplex(64);
        let short = Duration::from_millis(50);
        let refused = mode
            .accept(&mut stalled, balancer, short)
            .await
            .unwrap_err();
        assert!(matches!(refused, Refused::TimedOut), "{refused}");

        assert!(ProxyProtocol::from_config(&ClientIdentity::Direct).is_none());
    }
}
