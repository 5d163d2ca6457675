//! Mutation fuzzing of the parsers that take client or operator input, as property tests on stable Rust
//! (`cargo fuzz` needs a nightly toolchain this project does not use). Each target starts from the seed
//! corpus in `fuzz/corpus/<target>/`, mutates inputs (bit flips, byte changes, insertions, deletions,
//! splices, interesting bytes) and checks properties beyond "does not panic". A normal test run spends a
//! second per target; `FUZZ_SECONDS=300 cargo test --release -p homestead fuzz -- --test-threads 1` runs each
//! for five minutes. A failing input is printed in hex.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long each target runs.
fn budget() -> Duration {
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Duration::from_secs(seconds)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    seeds
}

const INTERESTING: &[&[u8]] = &[
    b"/",
    b"..",
    b".",
    b"%",
    b"%2e",
    b"%2F",
    b"%00",
    b"%FF",
    b"%C2%80",
    b":",
    b",",
    b"&",
    b"=",
    b"#",
    b"?",
    b"pubky://",
    b"pubky",
    b"\0",
    b"\xff",
    b"\xc3\x28",
    b"[",
    b"{",
    b"\"",
    b"\n",
    b"*",
    b"**",
];

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=8) {
        let at = rng.random_range(0..=input.len());
        match rng.random_range(0..7) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] = rng.random();
            }
            2 => input.insert(at, rng.random()),
            3 if at < input.len() => {
                let end = rng.random_range(at..=input.len());
                input.drain(at..end);
            }
            4 => {
                let token = INTERESTING[rng.random_range(0..INTERESTING.len())];
                input.splice(at..at, token.iter().copied());
            }
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let from = rng.random_range(0..=other.len());
                input.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let extra = rng.random_range(0..64);
                input.extend((0..extra).map(|_| rng.random::<u8>()));
            }
        }
        input.truncate(10_000);
    }
    input
}

/// Runs `check` on mutated inputs until the budget is spent; returns how many ran.
fn fuzz(target: &str, mut check: impl FnMut(&[u8])) -> u64 {
    let seeds = corpus(target);
    for seed in &seeds {
        check(seed);
    }
    let mut rng = StdRng::seed_from_u64(rand::random());
    let deadline = Instant::now() + budget();
    let mut runs = 0;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let input = mutate(&mut rng, &seeds);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
            if let Err(panic) = outcome {
                eprintln!("{target}: failing input (hex): {}", hex::encode(&input));
                std::panic::resume_unwind(panic);
            }
            runs += 1;
        }
    }
    eprintln!("{target}: {runs} inputs in {:?}", budget());
    runs
}

#[test]
fn fuzz_paths() {
    use homestead_backends::EntryPath;

    use crate::routes::storage::decode_path;
    fuzz("paths", |input| {
        let Ok(raw) = std::str::from_utf8(input) else {
            return;
        };
        let Ok(path) = decode_path(raw) else {
            return;
        };
        let text = path.as_str();
        // A normalized path is absolute, has no empty, `.` or `..` segment, no control character, and
        // normalizing it again changes nothing.
        assert!(text.starts_with('/'), "{text:?}");
        assert!(!text.contains("//"), "{text:?}");
        assert!(!text.split('/').any(|s| s == "." || s == ".."), "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.len() <= 4096);
        let again = homestead_backends::NormalizedPath::parse(text).unwrap();
        assert_eq!(again.as_str(), text);
        if let Ok(entry) = EntryPath::try_from(path.clone()) {
            assert!(!entry.as_str().ends_with('/'));
            let public = entry.scope() == homestead_backends::Scope::Public;
            assert_eq!(public, entry.as_str().starts_with("/pub/"), "{text:?}");
        }
    });
}

#[test]
fn fuzz_auth_tokens() {
    use crate::auth_token::verify;
    let original = corpus("auth_tokens").remove(0);
    fuzz("auth_tokens", |input| {
        // Signature, then an unsigned byte (the namespace's first), then the signed rest: a token that still
        // verifies can differ from the original only in that one byte. (The seed is from 2023: verification
        // stops at the time window, so decode errors and the window are what gets exercised, plus this.)
        if let Ok(token) = verify(input) {
            assert_eq!(input[..64], original[..64]);
            assert_eq!(input[65..], original[65..]);
            let _ = token.capabilities().to_string();
        }
    });
}

#[test]
fn fuzz_fresh_auth_tokens() {
    use pubky_common::auth::AuthToken;
    use pubky_common::crypto::Keypair;

    use crate::auth_token::verify;
    let keypair = Keypair::from_secret(&[7; 32]);
    let caps: pubky_common::capabilities::Capabilities = "/pub/app/:rw".parse().unwrap();
    let original = AuthToken::sign(&keypair, caps).serialize();
    let seeds = vec![original.clone()];
    let mut rng = StdRng::seed_from_u64(rand::random());
    let deadline = Instant::now() + budget();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        runs += 1;
        let input = mutate(&mut rng, &seeds);
        if let Ok(token) = verify(&input) {
            // Within the window, only the unsigned byte may differ.
            assert_eq!(input[..64], original[..64], "{}", hex::encode(&input));
            assert_eq!(input[65..], original[65..], "{}", hex::encode(&input));
            assert_eq!(token.public_key(), &keypair.public_key());
        }
    }
    eprintln!("fresh_auth_tokens: {runs} inputs in {:?}", budget());
}

#[test]
fn fuzz_capabilities() {
    use std::str::FromStr;

    use homestead_backends::EntryPath;
    use homestead_middleware::{Credential, Principal, Session};
    use pubky_common::capabilities::Capabilities;

    use crate::authorization::covers;
    use pubky_common::capabilities::Action;
    let key =
        pkarr::PublicKey::try_from("8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo").unwrap();
    let paths = [
        "/pub/app",
        "/pub/app/x",
        "/pub/app.evil/x",
        "/pub/other/y",
        "/pub/a b/ü",
    ];
    fuzz("capabilities", |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        let Ok(caps) = Capabilities::from_str(text) else {
            return;
        };
        // What parses prints back to something that parses to the same list.
        let printed = caps.to_string();
        assert_eq!(
            Capabilities::from_str(&printed).unwrap(),
            caps,
            "{printed:?}"
        );
        let session = Session {
            user: key.clone(),
            capabilities: caps.clone(),
            created_at: 0,
            grant: None,
        };
        let via = Credential::Cookie {
            secret: "S".repeat(26),
        };
        let principal = Principal::new(session, via);
        for path in paths {
            let path = EntryPath::parse(path).unwrap();
            if covers(&principal, Action::Write, path.as_str()) {
                // Some write capability is the path itself or a directory above it.
                let covered = caps.iter().any(|cap| {
                    let scope = cap.scope().as_str();
                    let p = path.as_str();
                    p == scope || (scope.ends_with('/') && p.starts_with(scope))
                });
                assert!(covered, "{caps} grants {}", path.as_str());
            }
        }
    });
}

#[test]
fn fuzz_grants() {
    use crate::grant_proof::{GrantProof, verify_grant, verify_grant_signature, verify_pop};

    let server =
        pkarr::PublicKey::try_from("orhzqdiexwmi6iidktucgud63ufa5nwtsuzdxe176a8izd6jsqky").unwrap();
    let g1 =
        pubky_common::auth::grant::GrantClaims::decode(include_str!("../fuzz/corpus/grants/g1"))
            .unwrap();
    fuzz("grants", |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        // A grant that verifies also verifies without the expiry check, to the same claims.
        if let Ok(claims) = verify_grant(text, 1_700_000_000) {
            assert_eq!(verify_grant_signature(text), Ok(claims));
        }
        // A proof that verifies names this server and G1, within the window.
        if let Ok(claims) = verify_pop(text, &g1, &server, 1_700_000_000) {
            assert_eq!(claims.gid, g1.jti);
            assert!(claims.iat.abs_diff(1_700_000_000) <= 180);
        }
        // Bodies never panic either.
        let _ = serde_json::from_str::<GrantProof>(text);
    });
}

#[test]
fn fuzz_queries() {
    use crate::routes::listing::parse_query;
    use crate::routes::storage::parse_range;
    fuzz("queries", |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(query) = parse_query(Some(&text)) {
            assert!(query.limit <= 1000);
            assert!(query.cursor.as_deref() != Some(""));
        }
        let _ = parse_range(&text);
        let _ = crate::metrics::route_of(&text);
    });
}

#[test]
fn fuzz_event_queries() {
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(crate::routes::tests::TestApp::builder().build());
    let router = app.client_service();
    fuzz("event_queries", |input| {
        // Any query string: the feed and the stream answer 200, 400, 401 or 403 (a path outside
        // `/pub/`), or 404 (a user that does not exist), never a server error.
        let query: String = String::from_utf8_lossy(input)
            .chars()
            .filter(|c| !c.is_control() && *c != ' ' && *c != '#')
            .collect();
        for route in ["/events/", "/events-stream"] {
            let Ok(request) = Request::get(format!("{route}?{query}")).body(Body::empty()) else {
                continue;
            };
            runtime.block_on(async {
                let response = router.clone().oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                assert!(
                    matches!(status, 200 | 400 | 401 | 403 | 404),
                    "{route}?{query}: {status}"
                );
                if status == 200 && route == "/events/" {
                    response.into_body().collect().await.unwrap();
                }
            });
        }
    });
}

#[test]
fn fuzz_configs() {
    fuzz("configs", |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        // Loading either succeeds or names what is wrong; an accepted config is valid by construction.
        match homestead_config::Config::from_sources(Some(text), "config.toml", []) {
            Ok(loaded) => {
                assert!(loaded.config.drive.max_header_bytes >= 8192);
                assert!(loaded.config.drive.max_connections >= 1);
            }
            Err(err) => assert!(!err.to_string().is_empty()),
        }
    });
}

#[test]
fn fuzz_webdav() {
    use http::HeaderValue;

    use crate::webdav::{
        TOKEN_SCHEME, if_tokens, lock_answer, lock_token, lockinfo_acceptable, timeout_secs,
    };
    fuzz("webdav", |input| {
        let text = String::from_utf8_lossy(input);
        // Every token read out of `If` or `Lock-Token` follows the scheme in the header, whole.
        if let Ok(value) = HeaderValue::from_bytes(input) {
            let header = String::from_utf8_lossy(value.as_bytes()).into_owned();
            for token in if_tokens([&value]) {
                assert!(!token.contains('>'), "{token:?}");
                assert!(
                    header.contains(&format!("{TOKEN_SCHEME}{token}")),
                    "{token:?}"
                );
            }
            if let Some(token) = lock_token(Some(&value)) {
                assert!(
                    header.contains(&format!("{TOKEN_SCHEME}{token}")),
                    "{token:?}"
                );
            }
            assert!((1..=60).contains(&timeout_secs(Some(&value))));
        }
        // An acceptable lockinfo is empty or names both an exclusive scope and a write type.
        if lockinfo_acceptable(input) && !input.is_empty() {
            assert!(
                text.contains("exclusive") && text.contains("write"),
                "{text:?}"
            );
        }
        // The lock root is the path, escaped: nothing in it can close or open markup.
        let answer = lock_answer("t", 30, &text);
        let root = answer
            .split("<D:lockroot><D:href>")
            .nth(1)
            .and_then(|rest| rest.split("</D:href></D:lockroot>").next())
            .unwrap();
        assert!(!root.contains(['<', '>', '"']), "{root:?}");
        let unescaped = root
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&");
        assert_eq!(unescaped, text);
    });
}

#[test]
fn fuzz_proxy_prefaces() {
    use std::net::IpAddr;

    use crate::proxy_protocol::{Parsed, Source, V1_MAX, V2_MAX, V2_SIGNATURE, parse};
    fuzz("proxy_prefaces", |input| {
        // Read as a listener reads: exactly as many bytes as asked for.
        let mut read = 0;
        loop {
            match parse(&input[..read]) {
                Err(_) => {
                    // What fails early fails whole too.
                    assert!(parse(input).is_err());
                    return;
                }
                Ok(Parsed::Incomplete(more)) => {
                    assert!(more >= 1);
                    read += more;
                    if read > input.len() {
                        return;
                    }
                }
                Ok(Parsed::Complete { source, len }) => {
                    assert_eq!(len, read, "never reads past the preface");
                    assert_eq!(parse(input), Ok(Parsed::Complete { source, len }));
                    break;
                }
            }
        }
        let Ok(Parsed::Complete { source, len }) = parse(input) else {
            unreachable!()
        };
        let preface = &input[..len];
        if preface.starts_with(&V2_SIGNATURE) {
            // The length field covers the rest; a client is named by the first address and its port.
            assert_eq!(
                len,
                16 + usize::from(u16::from_be_bytes([preface[14], preface[15]]))
            );
            assert!(len <= V2_MAX);
            if let Source::Client(client) = source {
                let (ip, port): (IpAddr, _) = match preface[13] {
                    0x11 => (<[u8; 4]>::try_from(&preface[16..20]).unwrap().into(), 24),
                    _ => (<[u8; 16]>::try_from(&preface[16..32]).unwrap().into(), 48),
                };
                assert_eq!(client.ip(), ip);
                assert_eq!(
                    client.port(),
                    u16::from_be_bytes([preface[port], preface[port + 1]])
                );
            }
        } else {
            // One printable line; a client is named by its third and fifth fields.
            assert!(len <= V1_MAX && preface.ends_with(b"\r\n"));
            let line = std::str::from_utf8(&preface[..len - 2]).unwrap();
            assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)), "{line:?}");
            let fields: Vec<&str> = line.split(' ').collect();
            match source {
                Source::Client(client) => {
                    assert_eq!(fields.len(), 6, "{line:?}");
                    assert_eq!(fields[2].parse::<IpAddr>().unwrap(), client.ip());
                    assert_eq!(fields[4], client.port().to_string());
                }
                Source::Peer => assert_eq!(fields[1], "UNKNOWN"),
            }
        }
    });
}

#[test]
fn fuzz_preconditions() {
    use homestead_backends::metadata::WriteMode;
    use http::header::{IF_MATCH, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
    use http::{HeaderMap, HeaderName, HeaderValue};

    use crate::preconditions::{PreconditionError, write_mode};
    fuzz("preconditions", |input| {
        let Ok(value) = HeaderValue::from_bytes(input) else {
            return;
        };
        let alone = |name: HeaderName| {
            let mut headers = HeaderMap::new();
            headers.insert(name, value.clone());
            write_mode(&headers)
        };
        // Both tag headers share one grammar; If-None-Match compares weakly, so it names every version
        // If-Match names, and more.
        match (alone(IF_MATCH), alone(IF_NONE_MATCH)) {
            (Ok(WriteMode::Replace), inm) => assert_eq!(inm, Ok(WriteMode::Create)),
            (Ok(WriteMode::Update(strong)), Ok(WriteMode::Except(all))) => {
                assert!(strong.iter().all(|v| all.contains(v)), "{value:?}");
            }
            (Err(PreconditionError::IfMatch), Err(PreconditionError::IfNoneMatch)) => {}
            other => panic!("{value:?}: {other:?}"),
        }
        match alone(IF_UNMODIFIED_SINCE) {
            Ok(WriteMode::UnmodifiedSince(secs)) => assert!(secs >= 0),
            Err(PreconditionError::IfUnmodifiedSince) => {}
            other => panic!("{value:?}: {other:?}"),
        }
        // Beside If-Match, If-Unmodified-Since is not even parsed.
        let mut both = HeaderMap::new();
        both.insert(IF_MATCH, HeaderValue::from_static("*"));
        both.insert(IF_UNMODIFIED_SINCE, value.clone());
        assert_eq!(write_mode(&both), Ok(WriteMode::Replace));
    });
}

#[test]
fn fuzz_website_requests() {
    use crate::routes::website::{Target, redirect, site_of};

    let server =
        pkarr::PublicKey::try_from("orhzqdiexwmi6iidktucgud63ufa5nwtsuzdxe176a8izd6jsqky").unwrap();
    fuzz("website_requests", |input| {
        // A `Host` value, a newline, a raw request path.
        let text = String::from_utf8_lossy(input);
        let (host, path) = text.split_once('\n').unwrap_or((&text, "/"));
        let Ok(request) = http::Request::get(path).header("host", host).body(()) else {
            return;
        };
        let Some(site) = site_of(&request, &server) else {
            return;
        };
        assert_ne!(site.owner, server, "the server's own key keeps the API");
        let label = site.label.as_str();
        let one_label = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        assert!(label == "_" || one_label, "{label:?}");
        let Ok(target) = Target::of(&site, request.uri().path()) else {
            return;
        };
        // Never outside the site, whatever the path.
        let root = format!("/pub/website/{label}/");
        assert!(
            target.file.as_str().starts_with(&root),
            "{}",
            target.file.as_str()
        );
        if !target.path.is_dir() {
            let response = redirect(target.path.as_str(), request.uri().query());
            // Its path part: starts with one `/` and holds no backslash a browser could read as one.
            let location = response.headers()[http::header::LOCATION].as_bytes();
            let path = location.split(|b| *b == b'?').next().unwrap_or_default();
            assert!(
                path.starts_with(b"/") && !path.starts_with(b"//") && !path.contains(&b'\\'),
                "the redirect stays on the host: {location:?}"
            );
        }
    });
}
