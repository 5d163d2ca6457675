//! Session secrets and the cookie that carries them (PROTOCOL.md §6.5): 16 CSPRNG bytes in Crockford
//! base32, stored only as their SHA-256; a cookie named after the user's key, `Secure; SameSite=None` only
//! when the request's host is a domain or a key, and (unlike the reference) `SameSite=None; Secure;
//! Partitioned` on `localhost`.

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

/// Which cross-site attributes a session cookie gets, decided by the host the request was made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSite {
    /// IP addresses, bare names and hosts with a port, as in the reference: neither `SameSite` nor
    /// `Secure` (browsers treat the cookie as `SameSite=Lax`).
    Plain,
    /// Keys and domain names: `SameSite=None; Secure`, so that apps on other sites can use the session
    /// where the browser allows third-party cookies.
    Secure,
    /// `localhost`, any port: `SameSite=None; Secure; Partitioned`. Browsers treat `http://localhost` as a
    /// secure context and keep `Secure` cookies there, and a partitioned (CHIPS) cookie is kept per
    /// top-level site even where third-party cookies are blocked, so a web app under development on
    /// another local site (`http://127.0.0.1:5173`) keeps its session.
    Localhost,
}

impl CookieSite {
    /// The attributes between `HttpOnly; ` and `Path=/`.
    fn attributes(self) -> &'static str {
        match self {
            Self::Plain => "",
            Self::Secure => "SameSite=None; Secure; ",
            Self::Localhost => "SameSite=None; Secure; Partitioned; ",
        }
    }
}

/// The [`CookieSite`] of a request: from the host of [`request_host`]; [`CookieSite::Plain`] without one.
pub fn cookie_site(headers: &HeaderMap, uri: &http::Uri) -> CookieSite {
    match request_host(headers, uri) {
        Some(host) if is_localhost(&host) => CookieSite::Localhost,
        Some(host) if is_secure_host(&host) => CookieSite::Secure,
        _ => CookieSite::Plain,
    }
}

/// The `Set-Cookie` value that hands `secret` to the client, in the reference's attribute order.
pub fn set_cookie(user_z32: &str, secret: &str, site: CookieSite, now: SystemTime) -> String {
    format!(
        "{user_z32}={secret}; HttpOnly; {}Path=/; Max-Age={}; Expires={}",
        site.attributes(),
        COOKIE_LIFETIME.as_secs(),
        httpdate::fmt_http_date(now + COOKIE_LIFETIME)
    )
}

/// The `Set-Cookie` value that makes the client forget the cookie (sign-out); with the attributes of
/// the cookie it replaces, which a browser needs to match a partitioned cookie.
pub fn removal_cookie(user_z32: &str, site: CookieSite, now: SystemTime) -> String {
    format!(
        "{user_z32}=; HttpOnly; {}Path=/; Max-Age=0; Expires={}",
        site.attributes(),
        httpdate::fmt_http_date(now - COOKIE_LIFETIME)
    )
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

/// Whether cookies for `host` get `Secure; SameSite=None` by the reference's rule: a public key (`<z32>`,
/// `_pubky.<z32>`), or a domain name with at least one dot. Ports, IP addresses and bare names such as
/// `localhost` are not.
fn is_secure_host(host: &str) -> bool {
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

/// `localhost` or `<name>.localhost`, with or without a port: the names browsers resolve to loopback and
/// treat as secure contexts.
fn is_localhost(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.strip_suffix(".localhost").is_some_and(|label| {
            !label.is_empty()
                && label.split('.').all(|part| {
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
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
            set_cookie(KEY, "6HHZ06GHB964CZMDAA0WCNV2C8", CookieSite::Secure, now),
            format!(
                "{KEY}=6HHZ06GHB964CZMDAA0WCNV2C8; HttpOnly; SameSite=None; Secure; Path=/; \
                 Max-Age=31536000; Expires=Wed, 13 Nov 2024 22:13:20 GMT"
            )
        );
        assert_eq!(
            removal_cookie(KEY, CookieSite::Plain, now),
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
    fn localhost_cookies_are_partitioned_and_others_keep_the_reference_rule() {
        let site = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("host", host.parse().unwrap());
            cookie_site(&headers, &"/".parse().unwrap())
        };
        for local in [
            "localhost",
            "localhost:6286",
            "LocalHost:80",
            "localhost.",
            "app.localhost",
            "my-app.dev.localhost:5173",
        ] {
            assert_eq!(site(local), CookieSite::Localhost, "{local}");
        }
        for plain in [
            "localhost:",
            "localhost:x",
            "notlocalhost",
            "localhost.evil:80",
            "a..localhost",
            "127.0.0.1:6286",
            "[::1]:6286",
        ] {
            assert_eq!(site(plain), CookieSite::Plain, "{plain}");
        }
        assert_eq!(site("homeserver.example.com"), CookieSite::Secure);
        assert_eq!(site(KEY), CookieSite::Secure);
        assert_eq!(
            cookie_site(&HeaderMap::new(), &"/".parse().unwrap()),
            CookieSite::Plain
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            set_cookie(
                KEY,
                "6HHZ06GHB964CZMDAA0WCNV2C8",
                CookieSite::Localhost,
                now
            ),
            format!(
                "{KEY}=6HHZ06GHB964CZMDAA0WCNV2C8; HttpOnly; SameSite=None; Secure; Partitioned; \
                 Path=/; Max-Age=31536000; Expires=Wed, 13 Nov 2024 22:13:20 GMT"
            )
        );
        assert!(
            removal_cookie(KEY, CookieSite::Localhost, now).starts_with(&format!(
                "{KEY}=; HttpOnly; SameSite=None; Secure; Partitioned; Path=/; Max-Age=0;"
            ))
        );
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
