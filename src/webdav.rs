//! The WebDAV pieces of locking (PROTOCOL-0.17.md §17, a minimal RFC 4918): reading lock tokens out of
//! `If` and `Lock-Token`, the lifetime out of `Timeout`, the check of a `lockinfo` body, and the XML answer
//! of a granted `LOCK`. Pure functions of header values and bytes; the handlers are in
//! [`crate::routes`].

use http::HeaderValue;

use http::HeaderName;

/// The `If` header (RFC 4918 §10.4), which names the lock tokens a request presents.
pub const IF: HeaderName = HeaderName::from_static("if");
/// The `Timeout` header of `LOCK` and of its answer.
pub const TIMEOUT: HeaderName = HeaderName::from_static("timeout");
/// The `Lock-Token` header of a granted `LOCK` and of `UNLOCK`.
pub const LOCK_TOKEN: HeaderName = HeaderName::from_static("lock-token");

/// The URI scheme of lock tokens: a token travels as `opaquelocktoken:<uuid>`.
pub const TOKEN_SCHEME: &str = "opaquelocktoken:";
/// The lifetime of a lock whose `LOCK` names none, seconds.
pub const DEFAULT_TIMEOUT_SECS: u32 = 30;
/// The longest lifetime a lock gets, seconds (also what `Infinite` means).
pub const MAX_TIMEOUT_SECS: u32 = 60;
/// The largest `lockinfo` body read, bytes.
pub const MAX_LOCKINFO_BYTES: usize = 16 * 1024;

/// The lock tokens (the text after `opaquelocktoken:`) named anywhere in the `If` header lines (§17.5):
/// every `<…>` group, trimmed, that starts with the scheme. Resource tags, entity tags, `Not` and
/// parentheses are ignored; an unterminated `<` ends the reading of its line.
pub fn if_tokens<'a>(lines: impl IntoIterator<Item = &'a HeaderValue>) -> Vec<String> {
    let mut tokens = Vec::new();
    for line in lines {
        let text = String::from_utf8_lossy(line.as_bytes());
        let mut rest = text.as_ref();
        while let Some(open) = rest.find('<') {
            let Some(length) = rest[open + 1..].find('>') else {
                break;
            };
            let group = rest[open + 1..open + 1 + length].trim();
            if let Some(token) = group.strip_prefix(TOKEN_SCHEME) {
                tokens.push(token.to_string());
            }
            rest = &rest[open + 1 + length + 1..];
        }
    }
    tokens
}

/// The token a `Lock-Token` header names (§17.5): its first `<…>` group, else the whole trimmed value,
/// which must start with `opaquelocktoken:`; the text after the scheme. None when it is missing or
/// malformed.
pub fn lock_token(value: Option<&HeaderValue>) -> Option<String> {
    let text = value?.to_str().ok()?.trim();
    let named = match text.find('<') {
        Some(open) => {
            let length = text[open + 1..].find('>')?;
            text[open + 1..open + 1 + length].trim()
        }
        None => text,
    };
    named.strip_prefix(TOKEN_SCHEME).map(str::to_string)
}

/// The lifetime, seconds, a `Timeout` header asks for (§17.6): the first comma-separated element that is
/// `Infinite` (any case; the maximum) or `Second-<n>` (`n` a signed 64-bit number, clamped to 1 and the
/// maximum); without one, the default.
pub fn timeout_secs(value: Option<&HeaderValue>) -> u32 {
    let Some(text) = value.and_then(|v| v.to_str().ok()) else {
        return DEFAULT_TIMEOUT_SECS;
    };
    text.split(',')
        .map(str::trim)
        .find_map(|element| {
            if element.eq_ignore_ascii_case("Infinite") {
                return Some(MAX_TIMEOUT_SECS);
            }
            let seconds: i64 = element.strip_prefix("Second-")?.parse().ok()?;
            Some(seconds.clamp(1, i64::from(MAX_TIMEOUT_SECS)) as u32)
        })
        .unwrap_or(DEFAULT_TIMEOUT_SECS)
}

/// Whether a `lockinfo` body asks for what this server grants (§17.2 step 4): empty, or UTF-8 XML whose
/// elements' local names (any namespace prefix) include `exclusive` and `write` but not `shared`.
/// Malformed XML asks for nothing this server grants.
pub fn lockinfo_acceptable(body: &[u8]) -> bool {
    if body.is_empty() {
        return true;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let mut reader = quick_xml::Reader::from_str(text);
    let (mut exclusive, mut write) = (false, false);
    loop {
        match reader.read_event() {
            Ok(
                quick_xml::events::Event::Start(element) | quick_xml::events::Event::Empty(element),
            ) => match element.local_name().as_ref() {
                b"shared" => return false,
                b"exclusive" => exclusive = true,
                b"write" => write = true,
                _ => {}
            },
            Ok(quick_xml::events::Event::Eof) => return exclusive && write,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A fresh lock token: a random (version 4) UUID, lower-case and hyphenated.
pub fn new_token() -> String {
    let bits = rand::random::<u128>();
    // Version 4 in the 13th hex digit, variant 10 in the two top bits of the 17th.
    let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The body of a granted or refreshed `LOCK` (§17.2 step 7, one line): lock `token` (the UUID) for
/// `seconds` on the request path `raw_path` as sent (percent-encoding kept), XML-escaped.
pub fn lock_answer(token: &str, seconds: u32, raw_path: &str) -> String {
    let mut root = String::with_capacity(raw_path.len());
    for c in raw_path.chars() {
        match c {
            '&' => root.push_str("&amp;"),
            '<' => root.push_str("&lt;"),
            '>' => root.push_str("&gt;"),
            '"' => root.push_str("&quot;"),
            c => root.push(c),
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:prop xmlns:D=\"DAV:\"><D:lockdiscovery>\
         <D:activelock><D:locktype><D:write/></D:locktype><D:lockscope><D:exclusive/></D:lockscope>\
         <D:depth>0</D:depth><D:timeout>Second-{seconds}</D:timeout><D:locktoken><D:href>\
         {TOKEN_SCHEME}{token}</D:href></D:locktoken><D:lockroot><D:href>{root}</D:href></D:lockroot>\
         </D:activelock></D:lockdiscovery></D:prop>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &'static str) -> HeaderValue {
        HeaderValue::from_static(text)
    }

    #[test]
    fn if_headers_yield_every_lock_token_wherever_it_stands() {
        // §24.9.
        let spec = value(
            "<http://x/a> (Not <opaquelocktoken:one> [\"etag\"]) (<opaquelocktoken:two>) (<urn:other>)",
        );
        assert_eq!(if_tokens([&spec]), ["one", "two"]);
        let sdk = value("(<opaquelocktoken:6f1c1c7e-3d1e-4e0b-9a57-2f6a0d1c9b10>)");
        let second = value("( < opaquelocktoken:three > )");
        assert_eq!(
            if_tokens([&sdk, &second]),
            ["6f1c1c7e-3d1e-4e0b-9a57-2f6a0d1c9b10", "three"]
        );
        // An unterminated group ends the line; what came before it counts.
        let cut = value("(<opaquelocktoken:a>) (<opaquelocktoken:b");
        assert_eq!(if_tokens([&cut]), ["a"]);
        assert!(if_tokens([&value("[\"etag\"] (Not <urn:x>)")]).is_empty());
        assert!(if_tokens(&[]).is_empty());
    }

    #[test]
    fn lock_token_headers_name_one_token() {
        let token = |text: &'static str| lock_token(Some(&value(text)));
        assert_eq!(token("<opaquelocktoken:abc>").as_deref(), Some("abc"));
        assert_eq!(token(" opaquelocktoken:abc ").as_deref(), Some("abc"));
        assert_eq!(
            token("<opaquelocktoken:a> <opaquelocktoken:b>").as_deref(),
            Some("a")
        );
        for malformed in ["<urn:uuid:abc>", "abc", "", "<opaquelocktoken:abc"] {
            assert_eq!(token(malformed), None, "{malformed}");
        }
        assert_eq!(lock_token(None), None);
    }

    #[test]
    fn timeouts_follow_the_spec_vectors() {
        let secs = |text: &'static str| timeout_secs(Some(&value(text)));
        assert_eq!(timeout_secs(None), 30);
        assert_eq!(secs("Second-10"), 10);
        assert_eq!(secs("Second-99999"), 60);
        assert_eq!(secs("Infinite, Second-10"), 60);
        assert_eq!(secs("infinite"), 60);
        assert_eq!(secs("Second-0"), 1);
        assert_eq!(secs("Second--5"), 1);
        assert_eq!(secs("nonsense"), 30);
        assert_eq!(secs("second-10"), 30);
        assert_eq!(secs("nonsense, Second-7"), 7);
        assert_eq!(secs("Second-99999999999999999999"), 30);
    }

    #[test]
    fn only_exclusive_write_lockinfo_is_acceptable() {
        let exclusive = br#"<?xml version="1.0" encoding="utf-8"?>
            <D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>
            <D:locktype><D:write/></D:locktype><D:owner><D:href>me</D:href></D:owner></D:lockinfo>"#;
        assert!(lockinfo_acceptable(exclusive));
        assert!(lockinfo_acceptable(b""));
        assert!(lockinfo_acceptable(
            b"<lockinfo><lockscope><exclusive></exclusive></lockscope><locktype><write/></locktype></lockinfo>"
        ));
        let shared = br#"<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope>
            <D:locktype><D:write/></D:locktype></D:lockinfo>"#;
        assert!(!lockinfo_acceptable(shared));
        assert!(!lockinfo_acceptable(
            b"<lockinfo><exclusive/><write/><shared/></lockinfo>"
        ));
        assert!(!lockinfo_acceptable(b"<lockinfo><exclusive/></lockinfo>"));
        assert!(!lockinfo_acceptable(b"not xml"));
        assert!(!lockinfo_acceptable(b"<a><exclusive/><write/>\xff</a>"));
        // Names inside comments are not elements.
        assert!(!lockinfo_acceptable(
            b"<lockinfo><!-- <exclusive/><write/> --></lockinfo>"
        ));
    }

    #[test]
    fn tokens_are_version_4_uuids() {
        let token = new_token();
        assert_eq!(token.len(), 36);
        let groups: Vec<&str> = token.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{token}");
        assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{token}");
        assert!(
            token
                .chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(new_token(), token);
    }

    #[test]
    fn the_answer_is_the_spec_text() {
        // §24.9.
        let path = "/storage/8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo/pub/state.bin";
        assert_eq!(
            lock_answer("6f1c1c7e-3d1e-4e0b-9a57-2f6a0d1c9b10", 10, path),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:prop xmlns:D=\"DAV:\"><D:lockdiscovery><D:activelock><D:locktype><D:write/></D:locktype><D:lockscope><D:exclusive/></D:lockscope><D:depth>0</D:depth><D:timeout>Second-10</D:timeout><D:locktoken><D:href>opaquelocktoken:6f1c1c7e-3d1e-4e0b-9a57-2f6a0d1c9b10</D:href></D:locktoken><D:lockroot><D:href>/storage/8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo/pub/state.bin</D:href></D:lockroot></D:activelock></D:lockdiscovery></D:prop>"
        );
        assert!(
            lock_answer("t", 1, "/a&b<\">%20")
                .contains("<D:href>/a&amp;b&lt;&quot;&gt;%20</D:href>")
        );
    }
}
