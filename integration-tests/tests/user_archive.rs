//! `homestead export-user` on a SQLite+fs server and `homestead import-user` into a running
//! PostgreSQL+S3 server that requires signup tokens: the same listings, bodies, ETags, content types
//! and modification times through both servers, a PUT event per imported file; truncated, tampered
//! (a body or a manifest line) or refused archives that import nothing; a user present with no files
//! accepted; an export and an import on a full disk that leave nothing behind; a running orphan sweep
//! that deletes no body an import has staged; and the progress line redrawn on a terminal.

use std::path::Path;
use std::process::{Output, Stdio};

use homestead_integration_tests::{
    Account, Blobs, Metadata, SmallDisk, TestNet, TestServer, binary, pseudo_random_bytes,
};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `homestead --data-dir DIR ARGS...` with `input` on stdin.
async fn homestead(data_dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run homestead");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feed = tokio::spawn(async move {
        // The command may stop reading early (a refusal): a broken pipe is expected then.
        let _ = stdin.write_all(&input).await;
    });
    let output = child.wait_with_output().await.expect("wait for homestead");
    feed.await.unwrap();
    output
}

/// Asserts that a command failed with exactly one line on stderr containing `expected`.
fn refused(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

/// Every file of a user on a server: path, status, ETag, content type, Last-Modified, body.
async fn files_of(
    user: &Account,
    server: &TestServer,
) -> Vec<(String, String, String, String, Vec<u8>)> {
    let mut paths = user.list(server, "/pub/").await;
    paths.extend(user.list(server, "/priv/").await);
    let mut files = Vec::new();
    for path in paths {
        let response = user.get(server, &path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map_or(String::new(), |v| v.to_str().unwrap().to_string())
        };
        let (etag, content_type, modified) = (
            header("etag"),
            header("content-type"),
            header("last-modified"),
        );
        files.push((
            path,
            etag,
            content_type,
            modified,
            response.bytes().await.unwrap().to_vec(),
        ));
    }
    files
}

/// A sqlite+fs server on `net` with one signed-up user, where a move starts.
async fn source_with_user(net: &TestNet) -> (TestServer, Account) {
    let source = net
        .server()
        .metadata(Metadata::Sqlite)
        .blobs(Blobs::Fs)
        .start()
        .await;
    let user = Account::signup(&source).await;
    (source, user)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_moves_from_sqlite_to_postgres_and_s3() {
    let net = TestNet::new();
    let (source, user) = source_with_user(&net).await;
    let other = Account::signup(&source).await;
    for (path, body) in [
        ("/pub/app/profile.json", b"{\"name\":\"a\"}".to_vec()),
        ("/pub/app/posts/1", b"first".to_vec()),
        ("/pub/app/posts/2", b"second".to_vec()),
        ("/pub/app/empty", Vec::new()),
        ("/pub/app/image.png", b"\x89PNG\r\n\x1a\n0000".to_vec()),
        ("/priv/app/notes.txt", b"only mine".to_vec()),
        ("/pub/app/big.bin", vec![42u8; 6 << 20]),
    ] {
        assert_eq!(user.put(&source, path, body).await, 201, "{path}");
    }
    // An overwrite, so that creation and modification times differ; a deleted file is not exported.
    assert_eq!(
        user.put(&source, "/pub/app/posts/1", b"first, edited".to_vec())
            .await,
        201
    );
    assert_eq!(user.put(&source, "/pub/app/gone", b"x".to_vec()).await, 201);
    assert_eq!(user.delete(&source, "/pub/app/gone").await, 204);
    assert_eq!(
        other
            .put(&source, "/pub/other", b"not exported".to_vec())
            .await,
        201
    );

    let export = homestead(source.data_dir(), &["export-user", &user.z32], b"").await;
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let archive = export.stdout;
    assert!(archive.starts_with(b"homestead-user-archive 1\n"));
    refused(
        &homestead(source.data_dir(), &["export-user", "not-a-key"], b"").await,
        "is not a public key",
    );
    let stranger = pubky::Keypair::random().public_key().z32();
    refused(
        &homestead(source.data_dir(), &["export-user", &stranger], b"").await,
        "no user",
    );

    let target = net
        .server()
        .metadata(Metadata::Postgres)
        .blobs(Blobs::S3)
        .token_required()
        .start()
        .await;
    let dir = target.data_dir();
    let blobs_before = target.blob_count().await;

    // A body changed in transit: its hash does not match; nothing is imported.
    let mut tampered = archive.clone();
    let at = tampered.len() - 100;
    tampered[at] ^= 0x20;
    let token = target.signup_token().await;
    refused(
        &homestead(dir, &["import-user", "--signup-token", &token], &tampered).await,
        "does not match its hash in the manifest (tampered or corrupted)",
    );
    // A manifest line changed (the first content type's first letter upper-cased, the first creation
    // time's first digit changed): the archive's checksum no longer matches.
    for field in ["\"content_type\":\"", "\"created_at\":"] {
        let at = archive
            .windows(field.len())
            .position(|w| w == field.as_bytes())
            .unwrap()
            + field.len();
        let mut changed = archive.clone();
        changed[at] = match changed[at] {
            b'1' => b'2',
            b'0'..=b'9' => b'1',
            letter => letter.to_ascii_uppercase(),
        };
        assert_ne!(changed, archive, "{field} changed");
        refused(
            &homestead(dir, &["import-user", "--signup-token", &token], &changed).await,
            "the archive's checksum does not match its contents (tampered or corrupted)",
        );
    }
    // Cut short inside the big body, and cut short before the trailer.
    for cut in [archive.len() / 2, archive.len() - 30] {
        refused(
            &homestead(
                dir,
                &["import-user", "--signup-token", &token],
                &archive[..cut],
            )
            .await,
            "truncated",
        );
    }
    // Sign-up here needs a token.
    refused(
        &homestead(dir, &["import-user"], &archive).await,
        "pass --signup-token",
    );
    refused(
        &homestead(
            dir,
            &["import-user", "--signup-token", "NOPE-NOPE-NOPE"],
            &archive,
        )
        .await,
        "no such signup token",
    );
    assert_eq!(
        target.blob_count().await,
        blobs_before,
        "staged blobs were removed"
    );
    assert_eq!(
        user.get(&target, "/pub/").await.status(),
        404,
        "nothing was imported"
    );
    let events = |target: &TestServer| {
        let url = format!("{}/events/?limit=1000", target.icann_url());
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let page = events(&target).await;
    assert!(!page.contains(&user.z32), "no event was appended: {page}");

    let import = homestead(dir, &["import-user", "--signup-token", &token], &archive).await;
    let log = String::from_utf8_lossy(&import.stderr);
    assert!(import.status.success(), "{log}");
    assert!(
        log.contains("7 files") && log.contains("(signed up)"),
        "{log}"
    );

    // The user signs in on the new server and sees the same files as on the old one.
    let moved = user.signed_in_on(&target).await;
    let before = files_of(&user, &source).await;
    let after = files_of(&moved, &target).await;
    assert_eq!(before.len(), 7);
    assert_eq!(before, after);
    assert_eq!(moved.get(&target, "/pub/other").await.status(), 404);

    // Indexers following the new server see the files: a PUT event for each public one.
    let page = events(&target).await;
    let puts = page
        .lines()
        .filter(|line| line.starts_with(&format!("PUT pubky://{}/pub/", user.z32)))
        .count();
    assert_eq!(puts, 6, "{page}");

    // The token was consumed, and the user now has files: a second import is refused.
    refused(
        &homestead(dir, &["import-user", "--signup-token", &token], &archive).await,
        "already has files",
    );

    // A user who exists here with no files is accepted (no token needed: nobody signs up).
    for (path, ..) in &after {
        assert_eq!(moved.delete(&target, path).await, 204, "{path}");
    }
    let again = homestead(dir, &["import-user"], &archive).await;
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log}");
    assert!(
        log.contains("7 files") && !log.contains("(signed up)"),
        "{log}"
    );
    assert_eq!(files_of(&moved, &target).await, before);
}

/// A server sweeping orphans every second with no grace period runs while `import-user` has staged the
/// bodies but not yet committed them: the import's blob hold keeps every staged body.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_during_an_import_deletes_no_staged_body() {
    let net = TestNet::new();
    let (source, user) = source_with_user(&net).await;
    for i in 0..3u8 {
        let path = format!("/pub/app/{i}");
        assert_eq!(user.put(&source, &path, vec![i; 1000]).await, 201);
    }
    let export = homestead(source.data_dir(), &["export-user", &user.z32], b"").await;
    assert!(export.status.success());
    let archive = export.stdout;

    let target = net
        .server()
        .metadata(Metadata::Sqlite)
        .blobs(Blobs::Fs)
        .storage_config("sweep_interval_secs = 1\norphan_grace_secs = 0")
        .start()
        .await;
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(target.data_dir())
        .arg("import-user")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run homestead");
    let mut stdin = child.stdin.take().unwrap();
    // Every body, not the trailer: the import has staged them all and waits for the rest.
    let (bodies, trailer) = archive.split_at(archive.len() - 10);
    stdin.write_all(bodies).await.unwrap();
    stdin.flush().await.unwrap();
    // The hold settles (3 s), then several sweeps run over the staged, unreferenced blobs.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    stdin.write_all(trailer).await.unwrap();
    drop(stdin);
    let import = child.wait_with_output().await.unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let moved = user.signed_in_on(&target).await;
    let before = files_of(&user, &source).await;
    assert_eq!(before.len(), 3);
    assert_eq!(before, files_of(&moved, &target).await);
}

/// An export onto a full disk and an import into a blob store on a full disk each stop with one line
/// naming what and where, and leave nothing behind: no partial archive, no staged body, no user; with
/// room, both then complete. Needs small tmpfs mounts, so root (as in CI): see [`SmallDisk`].
#[tokio::test(flavor = "multi_thread")]
async fn export_and_import_on_a_full_disk_fail_and_leave_nothing() {
    let net = TestNet::new();
    let (source, user) = source_with_user(&net).await;
    assert_eq!(
        user.put(&source, "/pub/app/big.bin", pseudo_random_bytes(1, 3 << 20))
            .await,
        201
    );
    assert_eq!(
        user.put(&source, "/pub/app/small.txt", b"small".to_vec())
            .await,
        201
    );

    let disk = tempfile::tempdir().unwrap();
    let Some(small) = SmallDisk::mount(disk.path(), "2m") else {
        return;
    };
    let file = disk.path().join("user.archive");
    let file_arg = file.to_str().unwrap();
    let output = homestead(
        source.data_dir(),
        &["export-user", &user.z32, "-o", file_arg],
        b"",
    )
    .await;
    refused(&output, "No space left on device");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(file_arg), "names where: {stderr}");
    eprintln!("refused as expected: {stderr}");
    assert_eq!(small.files(), Vec::<String>::new(), "no partial archive");
    small.resize("16m");
    let output = homestead(
        source.data_dir(),
        &["export-user", &user.z32, "-o", file_arg],
        b"",
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(small.files(), ["user.archive"]);
    refused(
        &homestead(
            source.data_dir(),
            &["export-user", &user.z32, "-o", file_arg],
            b"",
        )
        .await,
        "already exists",
    );
    let archive = std::fs::read(&file).unwrap();
    drop(small);
    assert!(archive.starts_with(b"homestead-user-archive 1\n"));

    // The target's blob store is a 1 MiB disk: the big body does not fit.
    let mut blobs_disk = None;
    let target = net
        .server()
        .metadata(Metadata::Sqlite)
        .blobs(Blobs::Fs)
        .start_after(|dir| {
            let blobs = dir.join("blobs");
            std::fs::create_dir(&blobs).unwrap();
            blobs_disk = SmallDisk::mount(&blobs, "1m");
        })
        .await;
    let Some(blobs_disk) = blobs_disk else {
        return;
    };
    let output = homestead(target.data_dir(), &["import-user"], &archive).await;
    refused(&output, "No space left on device");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let blobs_dir = target.data_dir().join("blobs").display().to_string();
    assert!(stderr.contains(&blobs_dir), "names where: {stderr}");
    eprintln!("refused as expected: {stderr}");
    assert_eq!(blobs_disk.files(), Vec::<String>::new(), "no staged body");
    assert_eq!(
        user.get(&target, "/pub/app/small.txt").await.status(),
        404,
        "nothing was imported"
    );
    blobs_disk.resize("16m");
    let import = homestead(target.data_dir(), &["import-user"], &archive).await;
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let moved = user.signed_in_on(&target).await;
    assert_eq!(
        files_of(&user, &source).await,
        files_of(&moved, &target).await
    );
    // Unmounted first, so that the data directory can be removed with the server.
    drop(blobs_disk);
    drop(target);
}

/// On a terminal, the progress line is redrawn in place (a carriage return, then the line) with files,
/// bytes and an ETA: `import-user` under a pseudo-terminal (script(1)) reads an archive that stalls for
/// a second in the middle of a body.
#[tokio::test(flavor = "multi_thread")]
async fn progress_on_a_terminal_is_redrawn_with_files_bytes_and_an_eta() {
    let net = TestNet::new();
    let source = net.server().start().await;
    let user = Account::signup(&source).await;
    assert_eq!(
        user.put(&source, "/pub/a.bin", pseudo_random_bytes(1, 1 << 20))
            .await,
        201
    );
    assert_eq!(
        user.put(&source, "/pub/b.bin", pseudo_random_bytes(2, 4 << 20))
            .await,
        201
    );
    let export = homestead(source.data_dir(), &["export-user", &user.z32], b"").await;
    assert!(export.status.success());
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("user.archive");
    std::fs::write(&archive, &export.stdout).unwrap();

    let target = net.server().start().await;
    let half = export.stdout.len() / 2;
    let archive = archive.display();
    let command = format!(
        "{{ head -c {half} '{archive}'; sleep 1; tail -c +{} '{archive}'; }} | '{}' --data-dir '{}' import-user",
        half + 1,
        binary().display(),
        target.data_dir().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    // Each redraw clears the line: `\r\x1b[2K`, then the line itself.
    let redrawn: Vec<&str> = shown
        .split("\r\x1b[2K")
        .skip(1)
        .map(|line| line.split(['\r', '\n']).next().unwrap())
        .filter(|line| line.starts_with("import-user: ["))
        .collect();
    assert!(
        redrawn.iter().any(|line| {
            let eta = line.split("ETA ").nth(1).unwrap_or_default();
            line.contains("] files 1/2, ")
                && line.contains(" MiB/5.0 MiB, ")
                && eta.ends_with(" s")
                && eta.starts_with(|c: char| c.is_ascii_digit())
        }),
        "no redrawn line with files, bytes and an ETA: {redrawn:?} in {shown:?}"
    );
    assert!(
        shown.contains("import-user: 2 files, 5.0 MiB in "),
        "{shown:?}"
    );
    let moved = user.signed_in_on(&target).await;
    assert_eq!(
        files_of(&user, &source).await,
        files_of(&moved, &target).await
    );
}
