//! `homestead import-reference` against the real reference homeserver: pubky-homeserver 0.9.3 (the
//! binary at `TEST_REFERENCE_BIN`, which scripts/test installs) runs as a process on PostgreSQL and its
//! file-system storage, is filled through the official SDK and its admin API, records what it serves,
//! and is stopped; then Homestead imports it (into sqlite+fs on the reference's own `config.toml` as the
//! README's walk-through says, and into postgres+s3, that run cut off midway and resumed), starts with
//! the same key, and must serve the same files, ETags, listings and event pages, keep the reference's
//! sessions signed in, and publish the same server key. Running the import again changes nothing;
//! `--hard-link` links each body (two links) and serves it the same; a blob store on a full disk stops
//! the run with one line and a run with room finishes it; a tampered body is reported and left out, bad
//! inputs end with one line and leave nothing behind, and the reference's own data stays untouched
//! throughout.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use homestead_integration_tests::{
    ADMIN_PASSWORD, Blobs, Metadata, Reference, ReferenceOptions, Relays, SmallDisk, TestBucket,
    TestDatabase, TestNet, TestServer, binary, eventually, reference_binary,
};
use pubky::{Keypair, PubkySession, PublicKey};

/// pubky-homeserver 0.9.3 (the harness's [`Reference`]) under a key of the test's choosing, with token
/// sign-up, its admin API and a PKARR relay on loopback, once its record resolves.
struct Started {
    process: Reference,
    key: PublicKey,
    /// The relay its `config.toml` names, which Homestead started on that config uses too.
    _relays: Relays,
}

impl Started {
    async fn start(binary: &str, net: &TestNet) -> Self {
        let keypair = Keypair::random();
        let relays = Relays::start(net).await;
        let options = ReferenceOptions {
            secret: Some(keypair.secret_key()),
            token_required: true,
            admin: true,
            open_files: None,
            pkarr_relay: Some(relays.pkarr_url()),
        };
        let process = Reference::start(binary, net.bootstrap(), options).await;
        let key = keypair.public_key();
        net.wait_until_key_resolvable(&key).await;
        Self {
            process,
            key,
            _relays: relays,
        }
    }

    async fn admin(&self, method: reqwest::Method, path: &str, json: Option<&str>) -> String {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.process.admin_url()))
            .header("x-admin-password", ADMIN_PASSWORD);
        if let Some(json) = json {
            request = request
                .header("content-type", "application/json")
                .body(json.to_string());
        }
        let response = request.send().await.expect("admin request");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        text
    }
}

/// What a server answers, by request, for comparing the reference with Homestead.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    etag: String,
    last_modified: String,
    content_type: String,
    body: Vec<u8>,
}

async fn ask(base: &str, path: &str, host: Option<&str>, cookie: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(host) = host {
        request = request.header("pubky-host", host);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map_or(String::new(), |v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: response.status().as_u16(),
        etag: header("etag"),
        last_modified: header("last-modified"),
        content_type: header("content-type"),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

/// The users, files and sessions the fill made.
struct Filled {
    /// (user z32, path) of every file written, including deleted ones.
    paths: Vec<(String, String)>,
    /// (user z32, directory) listed deep and shallow.
    dirs: Vec<(String, String)>,
    alice: String,
    carol: String,
    /// Alice's and Carol's SDK sessions, exported as `<z32>:<secret>`.
    alice_session: String,
    carol_session: String,
    unused_token: String,
    used_tokens: Vec<String>,
}

fn body_of(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Fills the reference through the SDK and its admin API.
async fn fill(reference: &Started, net: &TestNet) -> Filled {
    use reqwest::Method;
    let get = Method::GET;
    let token_alice = reference
        .admin(get.clone(), "/generate_signup_token", None)
        .await;
    let token_bob = reference
        .admin(
            Method::POST,
            "/generate_signup_token",
            Some(r#"{"storage_quota_mb": 7, "rate_read": "10mb/s"}"#),
        )
        .await;
    let token_carol = reference
        .admin(get.clone(), "/generate_signup_token", None)
        .await;
    let unused_token = reference
        .admin(get.clone(), "/generate_signup_token", None)
        .await;

    let pubky = net.pubky();
    let signup = |token: String| {
        let pubky = pubky.clone();
        let key = reference.key.clone();
        async move {
            let signer = pubky.signer(Keypair::random());
            signer
                .signup(&key, Some(token.as_str()))
                .await
                .expect("signup on the reference")
        }
    };
    let alice = signup(token_alice.clone()).await;
    let bob = signup(token_bob.clone()).await;
    let carol = signup(token_carol.clone()).await;
    let z32 = |s: &PubkySession| s.info().public_key().z32();

    let a = alice.storage();
    a.put("/pub/app/a.txt", "hello").await.unwrap();
    a.put("/pub/app/dir/nested/deep.json", r#"{"deep":true}"#)
        .await
        .unwrap();
    a.put("/pub/app/b.bin", body_of(200_000, 1)).await.unwrap();
    a.put("/pub/app/a.txt", "hello again").await.unwrap();
    a.delete("/pub/app/b.bin").await.unwrap();
    a.put("/pub/other/x.txt", "other").await.unwrap();
    a.put("/pub/app/dir/second.txt", "2").await.unwrap();
    let b = bob.storage();
    b.put("/pub/app/a.txt", "bob").await.unwrap();
    b.put("/pub/app/big.bin", body_of(1_300_000, 7))
        .await
        .unwrap();
    carol.storage().put("/pub/c.txt", "carol").await.unwrap();

    reference
        .admin(
            Method::POST,
            &format!("/users/{}/disable", z32(&carol)),
            None,
        )
        .await;
    reference
        .admin(
            Method::PATCH,
            &format!("/users/{}/quota", z32(&alice)),
            Some(r#"{"storage_quota_mb": 50}"#),
        )
        .await;

    let paths = [
        (z32(&alice), "/pub/app/a.txt"),
        (z32(&alice), "/pub/app/dir/nested/deep.json"),
        (z32(&alice), "/pub/app/b.bin"),
        (z32(&alice), "/pub/other/x.txt"),
        (z32(&alice), "/pub/app/dir/second.txt"),
        (z32(&bob), "/pub/app/a.txt"),
        (z32(&bob), "/pub/app/big.bin"),
        (z32(&carol), "/pub/c.txt"),
    ]
    .into_iter()
    .map(|(u, p)| (u, p.to_string()))
    .collect();
    let dirs = [
        (z32(&alice), "/pub/"),
        (z32(&alice), "/pub/app/"),
        (z32(&alice), "/pub/app/dir/"),
        (z32(&bob), "/pub/app/"),
        (z32(&carol), "/pub/"),
    ]
    .into_iter()
    .map(|(u, p)| (u, p.to_string()))
    .collect();
    Filled {
        paths,
        dirs,
        alice: z32(&alice),
        carol: z32(&carol),
        alice_session: alice.export_secret(),
        carol_session: carol.export_secret(),
        unused_token,
        used_tokens: vec![token_alice, token_bob, token_carol],
    }
}

/// Everything the checks compare, as one server answers it.
async fn observe(base: &str, filled: &Filled, mid_cursor: &str) -> Vec<(String, Answer)> {
    let mut seen = Vec::new();
    for (user, path) in &filled.paths {
        seen.push((
            format!("GET {user}{path}"),
            ask(base, path, Some(user), None).await,
        ));
    }
    for (user, dir) in &filled.dirs {
        for query in ["", "?shallow=true", "?limit=2", "?reverse=true"] {
            let answer = ask(base, &format!("{dir}{query}"), Some(user), None).await;
            seen.push((format!("LIST {user}{dir}{query}"), answer));
        }
    }
    for page in [
        "/events/".to_string(),
        "/events/?limit=3".to_string(),
        format!("/events/?cursor={mid_cursor}"),
        format!("/events/?cursor={mid_cursor}&limit=2"),
    ] {
        let mut answer = ask(base, &page, None, None).await;
        // Only the lines count; the two servers may differ in headers of the feed.
        answer.etag.clear();
        answer.last_modified.clear();
        answer.content_type.clear();
        seen.push((format!("EVENTS {page}"), answer));
    }
    // The history of `/events-stream` (not live: it ends with the history), by user cursors.
    let (alice, bob) = (&filled.alice, &filled.paths[5].0);
    for query in [
        format!("user={alice}"),
        format!("user={alice}:{mid_cursor}"),
        format!("user={bob}&user={alice}:{mid_cursor}&limit=3"),
        format!("user={alice}&reverse=true"),
    ] {
        let answer = ask(base, &format!("/events-stream?{query}"), None, None).await;
        let frames: String = text(&answer.body)
            .lines()
            .filter(|l| l.starts_with("event:") || l.starts_with("data:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let answer = Answer {
            status: answer.status,
            etag: String::new(),
            last_modified: String::new(),
            content_type: answer.content_type,
            body: frames.into_bytes(),
        };
        seen.push((format!("STREAM {query}"), answer));
    }
    seen
}

/// The cursor after the first three events, as the reference hands it out.
async fn mid_cursor(base: &str) -> String {
    let page = ask(base, "/events/?limit=3", None, None).await;
    let text = String::from_utf8(page.body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("cursor: "))
        .expect("a cursor line")
        .to_string()
}

/// A digest of the reference's tables and files, to show the import changed neither.
fn fingerprint(dir: &Path, database: &TestDatabase) -> String {
    let mut text = String::new();
    for table in [
        "users",
        "signup_codes",
        "sessions",
        "entries",
        "events",
        "migrations",
    ] {
        let out = Command::new("psql")
            .args([
                database.url().as_str(),
                "-Atc",
                &format!("SELECT md5(COALESCE(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"),
            ])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{out:?}");
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    for file in files {
        if file.ends_with("server.log") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        text.push_str(&format!("{} {}\n", file.display(), blake3::hash(&bytes)));
    }
    text
}

fn count_files(dir: &Path) -> usize {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.len()
}

fn collect_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, into);
        } else {
            into.push(path);
        }
    }
}

/// Runs `homestead --data-dir <target> import-reference --from <reference> ...`.
/// `homestead --data-dir <target> import-reference --from <reference>` with `args`, as the README has it.
fn import_with(target: &Path, reference: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--data-dir")
        .arg(target)
        .arg("import-reference")
        .arg("--from")
        .arg(reference)
        .args(args)
        .output()
        .expect("run homestead import-reference")
}

/// [`import_with`] naming the reference's `database` outright, and `extra`.
fn import(target: &Path, reference: &Path, database: &TestDatabase, extra: &[&str]) -> Output {
    let url = database.url();
    import_with(
        target,
        reference,
        &[&["--from-database-url", url.as_str()], extra].concat(),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The summary line's counts, e.g. `users 3`.
fn assert_summary(out: &Output, expected: &[&str]) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout {stdout}\nstderr {}",
        text(&out.stderr)
    );
    for part in expected {
        assert!(stdout.contains(part), "{part:?} missing from {stdout}");
    }
}

/// The reference, filled and recorded, then stopped.
struct Recorded {
    reference: Started,
    filled: Filled,
    mid_cursor: String,
    answers: Vec<(String, Answer)>,
    /// `GET /session` with Alice's cookie, and the events count line.
    session: Answer,
    events: usize,
    fingerprint: String,
}

async fn recorded(binary: &str, net: &TestNet) -> Recorded {
    let reference = Started::start(binary, net).await;
    let filled = fill(&reference, net).await;
    let mid_cursor = mid_cursor(reference.process.url()).await;
    let answers = observe(reference.process.url(), &filled, &mid_cursor).await;
    let session = ask(
        reference.process.url(),
        "/session",
        Some(&filled.alice),
        Some(&cookie(&filled.alice_session)),
    )
    .await;
    assert_eq!(session.status, 200, "{:?}", text(&session.body));
    let all = ask(reference.process.url(), "/events/?limit=1000", None, None).await;
    let events = text(&all.body)
        .lines()
        .filter(|l| !l.starts_with("cursor:"))
        .count();
    // What the checks compare is real: files with ETags, a deleted file, listings and event pages.
    let answer = |what: &str| &answers.iter().find(|(w, _)| w == what).expect(what).1;
    let a = answer(&format!("GET {}/pub/app/a.txt", filled.alice));
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello again"[..]));
    assert!(
        !a.etag.is_empty()
            && !a.last_modified.is_empty()
            && a.content_type.starts_with("text/plain"),
        "{a:?}"
    );
    assert_eq!(
        answer(&format!("GET {}/pub/app/b.bin", filled.alice)).status,
        404
    );
    let listing = answer(&format!("LIST {}/pub/app/?shallow=true", filled.alice));
    assert_eq!(listing.status, 200);
    assert_eq!(text(&listing.body).lines().count(), 2, "a.txt and dir/");
    assert_eq!(events, 10, "7 writes of Alice, 2 of Bob, 1 of Carol");
    let mid = answer(&format!("EVENTS /events/?cursor={mid_cursor}"));
    assert_eq!(
        text(&mid.body).lines().count(),
        8,
        "7 events and the cursor"
    );
    let stream = answer(&format!("STREAM user={}:{mid_cursor}", filled.alice));
    assert_eq!(stream.status, 200);
    assert!(
        text(&stream.body).matches("event: ").count() >= 3,
        "{}",
        text(&stream.body)
    );
    let mut reference = reference;
    reference.process.stop();
    let fingerprint = fingerprint(reference.process.dir(), reference.process.database());
    Recorded {
        reference,
        filled,
        mid_cursor,
        answers,
        session,
        events,
        fingerprint,
    }
}

/// The `name=secret` cookie of an exported session.
fn cookie(exported: &str) -> String {
    let (user, secret) = exported.split_once(':').unwrap();
    format!("{user}={secret}")
}

/// Homestead, started on the imported data, serves what the reference served.
async fn serves_what_the_reference_served(net: &TestNet, server: &TestServer, recorded: &Recorded) {
    assert_eq!(
        server.public_key(),
        recorded.reference.key,
        "the reference's server key"
    );
    let ours = observe(&server.icann_url(), &recorded.filled, &recorded.mid_cursor).await;
    for ((what, theirs), (_, mine)) in recorded.answers.iter().zip(&ours) {
        assert_eq!(
            (theirs.status, &theirs.etag, &theirs.content_type),
            (mine.status, &mine.etag, &mine.content_type),
            "{what}"
        );
        assert_eq!(theirs.last_modified, mine.last_modified, "{what}");
        assert_eq!(text(&theirs.body), text(&mine.body), "{what}");
    }
    // The reference's cookie still signs Alice in, and its session reads the same.
    let filled = &recorded.filled;
    let alice_cookie = cookie(&filled.alice_session);
    let session = ask(
        &server.icann_url(),
        "/session",
        Some(&filled.alice),
        Some(&alice_cookie),
    )
    .await;
    assert_eq!(session.status, 200);
    assert_eq!(
        session.body, recorded.session.body,
        "the session's capabilities"
    );
    // Carol stays disabled: her writes are refused.
    let carol_put = reqwest::Client::new()
        .put(format!("{}/pub/c2.txt", server.icann_url()))
        .header("pubky-host", &filled.carol)
        .header("cookie", cookie(&filled.carol_session))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(carol_put.status(), 403);
    // Tokens: the used ones stay used, the unused one works.
    for token in &filled.used_tokens {
        let status = ask(
            &server.icann_url(),
            &format!("/signup_tokens/{token}"),
            None,
            None,
        )
        .await;
        assert!(
            text(&status.body).contains("\"used\""),
            "{}",
            text(&status.body)
        );
    }
    let unused = ask(
        &server.icann_url(),
        &format!("/signup_tokens/{}", filled.unused_token),
        None,
        None,
    )
    .await;
    assert!(
        text(&unused.body).contains("\"valid\""),
        "{}",
        text(&unused.body)
    );
    // Alice's quota override came along.
    let (status, quota) = server
        .admin(
            reqwest::Method::GET,
            &format!("/users/{}/quota", filled.alice),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        quota.contains("\"overrides\":{\"storage_quota_mb\":50}"),
        "{quota}"
    );
    // The server record resolves to the same key, and the SDK finds Alice's session through it.
    net.wait_until_resolvable(server).await;
    let exported = filled.alice_session.clone();
    let session = eventually(
        "the reference's SDK session on Homestead",
        Duration::from_secs(30),
        || {
            let exported = exported.clone();
            let client = net.sdk_client();
            async move {
                let session = PubkySession::import_secret(&exported, Some(client))
                    .await
                    .map_err(|e| e.to_string())?;
                session
                    .storage()
                    .put("/pub/app/after.txt", "after the switch")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(session)
            }
        },
    )
    .await;
    let read = session
        .storage()
        .get("/pub/app/after.txt")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(read, "after the switch");
    // New events continue after the imported ids.
    let page = ask(&server.icann_url(), "/events/?limit=1000", None, None).await;
    let lines = text(&page.body);
    assert_eq!(
        lines.lines().filter(|l| !l.starts_with("cursor:")).count(),
        recorded.events + 1,
        "{lines}"
    );
    assert!(lines.contains("/pub/app/after.txt"), "{lines}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_is_imported_in_place_on_both_backend_pairs() {
    let Some(binary) = reference_binary("TEST_REFERENCE_BIN") else {
        return;
    };
    let run = async {
        let net = TestNet::new();
        let recorded = recorded(&binary, &net).await;
        let reference_dir = recorded.reference.process.dir().to_path_buf();
        let database = recorded.reference.process.database();
        let files = recorded.filled.paths.len() - 1; // b.bin was deleted
        let counts = [
            "users 3".to_string(),
            "signup tokens 4".to_string(),
            "sessions 3".to_string(),
            format!("files {files}"),
            format!("events {}", recorded.events),
            "mismatches 0".to_string(),
        ];
        let counts: Vec<&str> = counts.iter().map(String::as_str).collect();

        // sqlite+fs as the README's walk-through has it: the reference's own config.toml without its
        // database_url (so embedded SQLite; everything else as the reference had it, its relay and
        // listeners included), `import-reference --from` alone, then Homestead on that directory. Import
        // again (nothing changes, nothing doubles), serve.
        let mut server = net
            .server()
            .start_after(|dir| {
                let config = std::fs::read_to_string(reference_dir.join("config.toml")).unwrap();
                let config: Vec<&str> = config
                    .lines()
                    .filter(|line| !line.starts_with("database_url"))
                    .collect();
                std::fs::write(dir.join("config.toml"), config.join("\n")).unwrap();
                let out = import_with(dir, &reference_dir, &[]);
                assert_summary(&out, &counts);
                assert_summary(&out, &[&format!("{files} copied")]);
                assert!(
                    text(&out.stderr).contains(&format!("import-reference: {files} files, ")),
                    "the progress reporter's closing line"
                );
                let blobs = count_files(&dir.join("blobs"));
                assert_eq!(blobs, files, "one blob per file");
                let again = import(dir, &reference_dir, database, &[]);
                assert_summary(&again, &counts);
                assert_summary(&again, &["0 copied", &format!("{files} already imported")]);
                assert_eq!(count_files(&dir.join("blobs")), blobs, "nothing duplicated");
            })
            .await;
        assert_eq!(
            server.icann_url(),
            recorded.reference.process.url(),
            "Homestead listens where the reference's config.toml says"
        );
        serves_what_the_reference_served(&net, &server, &recorded).await;
        // Once Homestead has written events of its own, the import refuses to run again.
        server.kill().await;
        let late = import(server.data_dir(), &reference_dir, database, &[]);
        assert!(!late.status.success());
        assert!(
            text(&late.stderr).contains("is not the reference's event"),
            "{}",
            text(&late.stderr)
        );
        let server = server.restart().await;
        let page = ask(&server.icann_url(), "/events/?limit=1000", None, None).await;
        assert_eq!(
            text(&page.body).lines().count(),
            recorded.events + 2,
            "the imported events once, the write since, and the cursor line"
        );
        drop(server);

        // postgres+s3: a run killed after two files, then resumed.
        let server = net
            .server()
            .metadata(Metadata::Postgres)
            .blobs(Blobs::S3)
            .token_required()
            .start_after(|dir| {
                let cut = import(dir, &reference_dir, database, &["--abort-after-files", "2"]);
                assert!(!cut.status.success(), "the hook ends the run abruptly");
                let resumed = import(dir, &reference_dir, database, &[]);
                assert_summary(&resumed, &counts);
                assert_summary(&resumed, &["2 already imported"]);
            })
            .await;
        serves_what_the_reference_served(&net, &server, &recorded).await;
        drop(server);

        // sqlite+fs with --hard-link: each blob is the reference's file (two links), served as before.
        let server = net
            .server()
            .token_required()
            .start_after(|dir| {
                let out = import(dir, &reference_dir, database, &["--hard-link"]);
                assert_summary(&out, &counts);
                assert_summary(&out, &["0 copied", &format!("{files} hard-linked")]);
                let mut blobs = Vec::new();
                collect_files(&dir.join("blobs"), &mut blobs);
                assert_eq!(blobs.len(), files, "one blob per file");
                for blob in blobs {
                    let links = std::fs::metadata(&blob).unwrap().nlink();
                    assert_eq!(links, 2, "{}", blob.display());
                }
            })
            .await;
        for (what, theirs) in &recorded.answers {
            let Some((user, path)) = what
                .strip_prefix("GET ")
                .and_then(|user_path| user_path.split_at_checked(52))
            else {
                continue;
            };
            let mine = ask(&server.icann_url(), path, Some(user), None).await;
            assert_eq!(
                (mine.status, &mine.etag, text(&mine.body)),
                (theirs.status, &theirs.etag, text(&theirs.body)),
                "{what}"
            );
        }
        drop(server);

        // sqlite+fs with the blob store on a 1 MiB disk: the run stops at Bob's 1.3 MB body with one
        // line naming the store, leaves no partial blob, and a run with room finishes the import.
        let target = net.server().prepare().await;
        let blobs = target.data_dir().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        if let Some(disk) = SmallDisk::mount(&blobs, "1m") {
            let full = import(target.data_dir(), &reference_dir, database, &[]);
            assert!(!full.status.success());
            let stderr = text(&full.stderr);
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains("No space left on device")
                    && stderr.contains(&format!("filesystem ({})", blobs.display()))
                    && stderr.contains("/pub/app/big.bin"),
                "{stderr}"
            );
            eprintln!("refused as expected: {stderr}");
            let partial: Vec<_> = disk
                .files()
                .into_iter()
                .filter(|f| f.contains('#'))
                .collect();
            assert!(partial.is_empty(), "partial uploads left: {partial:?}");
            let before = disk.files().len();
            disk.resize("16m");
            let resumed = import(target.data_dir(), &reference_dir, database, &[]);
            assert_summary(&resumed, &counts);
            assert_summary(&resumed, &[&format!("{before} already imported")]);
            assert_eq!(disk.files().len(), files);
        }
        drop(target);

        // A body changed on disk behind the reference's back is reported and left out.
        let tampered = tempfile::tempdir().unwrap();
        copy_tree(&reference_dir, tampered.path());
        let (user, path) = &recorded.filled.paths[0];
        let file = tampered.path().join(format!("data/files/{user}{path}"));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let server = net
            .server()
            .start_after(|dir| {
                let out = import(dir, tampered.path(), database, &[]);
                assert!(!out.status.success());
                let stderr = text(&out.stderr);
                assert!(
                    stderr.contains(&format!("mismatch: {user}{path}")),
                    "{stderr}"
                );
                assert!(
                    stderr.contains("1 file bodies did not match their entries"),
                    "{stderr}"
                );
                assert_summary_text(&out, "mismatches 1");
            })
            .await;
        assert_eq!(
            ask(&server.icann_url(), path, Some(user), None)
                .await
                .status,
            404
        );
        let (other_user, other_path) = &recorded.filled.paths[1];
        assert_eq!(
            ask(&server.icann_url(), other_path, Some(other_user), None)
                .await
                .status,
            200
        );
        drop(server);

        assert_eq!(
            fingerprint(&reference_dir, database),
            recorded.fingerprint,
            "the reference's database and files are untouched"
        );
    };
    tokio::time::timeout(Duration::from_secs(480), run)
        .await
        .expect("within 480 s");
}

fn assert_summary_text(out: &Output, part: &str) {
    let stdout = text(&out.stdout);
    assert!(stdout.contains(part), "{part:?} missing from {stdout}");
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// One line on stderr saying what and where, a failure status, and no target data directory.
fn refused(out: &Output, target: &Path, says: &str) {
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("homestead: ") && stderr.contains(says),
        "{stderr}"
    );
    assert!(!target.exists(), "nothing written for {says}");
}

#[test]
fn bad_inputs_end_with_one_line_and_leave_nothing_behind() {
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("homestead");
    let reference = scratch.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    std::fs::write(
        reference.join("config.toml"),
        "[storage]\ntype = \"file_system\"\n",
    )
    .unwrap();
    let run = |url: &str| {
        Command::new(binary())
            .arg("--data-dir")
            .arg(&target)
            .arg("import-reference")
            .arg("--from")
            .arg(&reference)
            .args(["--from-database-url", url])
            .output()
            .unwrap()
    };

    // No server key in the reference's directory.
    refused(
        &run("postgres://postgres@127.0.0.1:5432/postgres"),
        &target,
        "has no server key `secret`",
    );

    // A database nobody serves.
    std::fs::write(reference.join("secret"), "00".repeat(32)).unwrap();
    refused(
        &run("postgres://postgres@127.0.0.1:1/pubky"),
        &target,
        "cannot connect to postgres://postgres@127.0.0.1:1/pubky",
    );

    // A database of a reference version this import does not know.
    let database = TestDatabase::create();
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([database.url().as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    refused(&run(&database.url()), &target, "no `migrations` table");
    psql("CREATE TABLE migrations (id serial PRIMARY KEY, name varchar NOT NULL UNIQUE)");
    psql("INSERT INTO migrations (name) VALUES ('m20250806_create_user'), ('m20990101_future')");
    refused(
        &run(&database.url()),
        &target,
        "unknown pubky-homeserver schema version",
    );

    // A known schema, but a target whose bodies would live in one process's memory: refused before the
    // target database is touched, and no config or key is written.
    psql("DELETE FROM migrations");
    psql(
        "INSERT INTO migrations (name) VALUES ('m20250806_create_user'), \
         ('m20250812_create_signup_code'), ('m20250813_create_session'), ('m20250814_create_event'), \
         ('m20250815_create_entry'), ('m20251014_enhance_events_table'), \
         ('m20260327_add_quota_columns'), ('m20260507_add_allowed_write_paths')",
    );
    let config = scratch.path().join("in-memory.toml");
    std::fs::write(
        &config,
        "[admin]\nenabled = false\n[storage]\ntype = \"in_memory\"\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(&target)
        .arg("--config")
        .arg(&config)
        .arg("import-reference")
        .arg("--from")
        .arg(&reference)
        .args(["--from-database-url", &database.url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("storage.type = \"in_memory\"") && stderr.contains("would vanish"),
        "{stderr}"
    );
    assert!(!target.join("config.toml").exists());
    assert!(!target.join("secret").exists());
    assert!(!target.join("homestead.db").exists());
}

/// The 1 GiB figures of BENCHMARKS.md: `IMPORT_BENCH_MIB` MiB (default 1024) of files, in 16 MiB and 1 MiB
/// bodies, put through the reference, then imported under `/usr/bin/time -v` into sqlite+fs (copied, then
/// hard-linked) and, with `TEST_S3_ENDPOINT`, sqlite+s3; prints each throughput and the import's peak
/// RSS, which must stay far below the data's size.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run it with --run-ignored only"]
async fn a_gib_is_imported_with_bounded_memory() {
    let Some(reference_bin) = reference_binary("TEST_REFERENCE_BIN") else {
        return;
    };
    let mib: usize = std::env::var("IMPORT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let net = TestNet::new();
    let mut reference = Started::start(&reference_bin, &net).await;
    let token = reference
        .admin(reqwest::Method::GET, "/generate_signup_token", None)
        .await;
    let session = net
        .pubky()
        .signer(Keypair::random())
        .signup(&reference.key, Some(token.as_str()))
        .await
        .unwrap();
    let (big, small) = (mib / 17, mib - 16 * (mib / 17));
    for i in 0..big {
        let path = format!("/pub/bench/big/{i}.bin");
        session
            .storage()
            .put(path.as_str(), body_of(16 << 20, i as u8))
            .await
            .unwrap();
    }
    for i in 0..small {
        let path = format!("/pub/bench/small/{i}.bin");
        session
            .storage()
            .put(path.as_str(), body_of(1 << 20, i as u8))
            .await
            .unwrap();
    }
    reference.process.stop();
    let files = big + small;
    let mut targets = vec![
        (
            "sqlite+fs, copied",
            "[storage]\ntype = \"file_system\"\n".to_string(),
            false,
        ),
        (
            "sqlite+fs, hard-linked",
            "[storage]\ntype = \"file_system\"\n".to_string(),
            true,
        ),
    ];
    let bucket = match std::env::var("TEST_S3_ENDPOINT") {
        Ok(_) => Some(TestBucket::create().await),
        Err(_) => None,
    };
    if let Some(bucket) = &bucket {
        let storage = format!(
            "[storage]\ntype = \"s3\"\nbucket_name = {:?}\ns3_endpoint = {:?}\ns3_path_style = true\n\
             s3_access_key_id = \"test\"\ns3_secret_access_key = \"test\"\n",
            bucket.name, bucket.endpoint
        );
        targets.push(("sqlite+s3, copied", storage, false));
    }
    for (name, config, hard_link) in targets {
        let target = tempfile::tempdir().unwrap();
        let config = format!("[admin]\nenabled = false\n\n{config}");
        std::fs::write(target.path().join("config.toml"), config).unwrap();
        let started = Instant::now();
        let out = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(binary())
            .arg("--data-dir")
            .arg(target.path())
            .arg("import-reference")
            .arg("--from")
            .arg(reference.process.dir())
            .args([
                "--from-database-url",
                reference.process.database().url().as_str(),
            ])
            .args(hard_link.then_some("--hard-link"))
            .output()
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));
        let rss_kib: f64 = stderr
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .and_then(|v| v.parse().ok())
            .expect("peak RSS from /usr/bin/time");
        println!(
            "import-reference into {name}: {files} files, {mib} MiB in {seconds:.1} s = {:.0} MiB/s, \
             peak RSS {:.1} MiB\n{}",
            mib as f64 / seconds,
            rss_kib / 1024.0,
            text(&out.stdout)
        );
        assert!(rss_kib < 256.0 * 1024.0, "peak RSS {rss_kib} KiB");
    }
}
