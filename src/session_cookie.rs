//! Session secrets and the cookie that carries them (PROTOCOL.md §6.5): 16 CSPRNG bytes in Crockford
//! base32, stored only as their SHA-256; a cookie named after the user's key, `Secure; SameSite=None` only
//! when the request's host is a domain or a key.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long browsers keep a session cookie.
const COOKIE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A fresh session secret: 26 uppercase Crockford base32 characters.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base32::encode(base32::Alphabet::Crockford, &bytes)
}

/// What the database keeps of a secret: SHA-256 of its text (a cookie's secret, or a bearer token as
/// PROTOCOL-0.17.md §8.1 says).
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The `Set-Cookie` value that hands `secret` to the client, in the reference's attribute order.
pub fn set_cookie(user_z32: &str, secret: &str, secure: bool, now: SystemTime) -> String {
    format!(
        "{user_z32}={secret}; HttpOnly; {}Path=/; Max-Age={}; Expires={}",
        secure_attributes(secure),
        COOKIE_LIFETIME.as_secs(),
        httpdate::fmt_http_date(now + COOKIE_LIFETIME)
    )
}

/// The `Set-Cookie` value that makes the client forget the cookie (sign-out).
pub fn removal_cookie(user_z32: &str, secure: bool, now: SystemTime) -> String {
    format!(
        "{user_z32}=; HttpOnly; {}Path=/; Max-Age=0; Expires={}",
        secure_attributes(secure),
        httpdate::fmt_http_date(now - COOKIE_LIFETIME)
    )
}

fn secure_attributes(secure: bool) -> &'static str {
    if secure {
        "SameSite=None; Secure; "
    } else {
        ""
    }
}

/// The host a request was made to, as the cookie decision sees it: the `host=` of the first `Forwarded`
/// element, else `X-Forwarded-Host`, else `Host`, else the URI's authority.
pub fn request_host(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let forwarded = header("forwarded").and_then(|value| {
        let first = value.split(',').next()?;
        first.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.eq_ignore_ascii_case("host")
                .then(|| value.trim_matches('"').to_string())
        })
    });
    forwarded
        .or_else(|| header("x-forwarded-host").map(str::to_string))
        .or_else(|| header("host").map(str::to_string))
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// Whether cookies for `host` get `Secure; SameSite=None`: a public key (`<z32>`, `_pubky.<z32>`), or a
/// domain name with at least one dot. Ports, IP addresses and bare names such as `localhost` are not.
pub fn is_secure_host(host: &str) -> bool {
    if pkarr::PublicKey::try_from(host).is_ok() {
        return true;
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if bracketed || host.parse::<IpAddr>().is_ok() || !host.contains('.') {
        return false;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    #[test]
    fn secrets_are_26_crockford_characters_and_differ() {
        let a = new_secret();
        assert_eq!(a.len(), 26);
        assert!(
            a.bytes()
                .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
        );
        assert_ne!(a, new_secret());
        assert_ne!(secret_hash(&a), secret_hash(&new_secret()));
    }

    #[test]
    fn cookie_matches_the_spec_vector() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            set_cookie(KEY, "6HHZ06GHB964CZMDAA0WCNV2C8", true, now),
            format!(
                "{KEY}=6HHZ06GHB964CZMDAA0WCNV2C8; HttpOnly; SameSite=None; Secure; Path=/; \
                 Max-Age=31536000; Expires=Wed, 13 Nov 2024 22:13:20 GMT"
            )
        );
        assert_eq!(
            removal_cookie(KEY, false, now),
            format!("{KEY}=; HttpOnly; Path=/; Max-Age=0; Expires=Mon, 14 Nov 2022 22:13:20 GMT")
        );
    }

    #[test]
    fn secure_hosts_are_keys_and_dotted_domains() {
        let pubky = format!("_pubky.{KEY}");
        for secure in [KEY, pubky.as_str(), "homeserver.example.com", "a.b"] {
            assert!(is_secure_host(secure), "{secure}");
        }
        let with_port = format!("{KEY}:443");
        for plain in [
            "localhost",
            "localhost:6286",
            "example.com:8443",
            "127.0.0.1",
            "[::1]",
            "::1",
            "bad..example.com",
            "-a.example.com",
            with_port.as_str(),
        ] {
            assert!(!is_secure_host(plain), "{plain}");
        }
    }

    #[test]
    fn host_precedence_is_forwarded_then_x_forwarded_host_then_host() {
        let uri: http::Uri = "http://authority.example/x".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            request_host(&headers, &uri).as_deref(),
            Some("authority.example")
        );
        headers.insert("host", "localhost:6286".parse().unwrap());
        assert_eq!(
            request_host(&headers, &uri).as_deref(),
            Some("localhost:6286")
        );
        headers.insert("x-forwarded-host", "xfh.example".parse().unwrap());
        assert_eq!(request_host(&headers, &uri).as_deref(), Some("xfh.example"));
        headers.insert(
            "forwarded",
            "for=1.2.3.4;host=\"fwd.example\", host=other.example"
                .parse()
                .unwrap(),
        );
        assert_eq!(request_host(&headers, &uri).as_deref(), Some("fwd.example"));
    }
}
