//! `homestead backup` of a server under a concurrent write load, `homestead restore` into a fresh data
//! directory, database and bucket, and a server started there that serves every file the snapshot
//! lists with a body that was written to that path; and the bad inputs (a wrong database URL, a
//! backup newer than this build, a damaged one, a full disk), each refused with one line and nothing
//! left behind. On sqlite+fs and postgres+s3.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homestead_integration_tests::{
    Account, Blobs, Metadata, SmallDisk, TestNet, TestServer, binary, on_main_backend_pairs,
    pseudo_random_bytes,
};
use tokio::process::Command;

/// Every body ever sent to a (user, path), by BLAKE3: a restored file must be one of them.
type Written = Arc<Mutex<HashMap<(String, String), HashSet<[u8; 32]>>>>;

/// Runs `homestead --data-dir DIR ARGS...`.
async fn homestead(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command.arg("--data-dir").arg(data_dir).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.expect("run homestead")
}

/// Asserts that a command failed with exactly one line on stderr containing `expected`.
fn refused(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
}

async fn put(server: &TestServer, user: &Account, written: &Written, path: &str, data: Vec<u8>) {
    written
        .lock()
        .unwrap()
        .entry((user.z32.clone(), path.to_string()))
        .or_default()
        .insert(*blake3::hash(&data).as_bytes());
    let status = user.put(server, path, data).await;
    assert!(status == 201 || status == 204, "PUT {path}: {status}");
}

/// Overwrites, creates and deletes files of `user` until `stop`, counting each completed write in
/// `completed`; returns the number of writes.
async fn write_load(
    server: Arc<TestServer>,
    user: Account,
    written: Written,
    (stop, completed): (Arc<AtomicBool>, Arc<AtomicU64>),
    worker: u64,
) -> u64 {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let slot = (n * 7 + worker) % 24;
        let path = format!("/pub/load/{worker}/{slot}.bin");
        if n.is_multiple_of(5) {
            let status = user.delete(&server, &path).await;
            assert!(status == 204 || status == 404, "DELETE {path}: {status}");
        } else {
            let length = ((n * 977) % 40_000) as usize;
            put(
                &server,
                &user,
                &written,
                &path,
                pseudo_random_bytes(n * 31 + worker, length),
            )
            .await;
        }
        completed.fetch_add(1, Ordering::Relaxed);
    }
    n
}

/// The files under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> HashSet<String> {
    let mut files = HashSet::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap();
                files.insert(relative.to_str().unwrap().to_string());
            }
        }
    }
    files
}

/// `cp -a FROM TO`.
fn copy_dir(from: &Path, to: &Path) {
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(copied.success());
}

/// The base64 ETag of a body, as the server computes it.
fn etag(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let hash = blake3::hash(data);
    let bytes = hash.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("\"{out}\"")
}

async fn backup_under_load_restores_elsewhere(metadata: Metadata, blobs: Blobs) {
    let net = TestNet::new();
    let source = net.server().metadata(metadata).blobs(blobs).start().await;
    let users = [
        Account::signup(&source).await,
        Account::signup(&source).await,
    ];
    let written: Written = Arc::default();
    for (u, user) in users.iter().enumerate() {
        for i in 0..12u64 {
            let path = format!("/pub/seed/{i}/file-{u}.txt");
            put(
                &source,
                user,
                &written,
                &path,
                pseudo_random_bytes(i + 100 * u as u64, 100 * i as usize),
            )
            .await;
        }
        put(
            &source,
            user,
            &written,
            "/priv/secret.txt",
            b"private".to_vec(),
        )
        .await;
        put(&source, user, &written, "/pub/empty", Vec::new()).await;
    }
    // Above the 5 MiB part size: a multipart upload on S3, a streamed copy everywhere.
    put(
        &source,
        &users[0],
        &written,
        "/pub/big.bin",
        pseudo_random_bytes(7, 6 << 20),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let source = Arc::new(source);
    let load: Vec<_> = (0..4u64)
        .map(|worker| {
            let user = users[worker as usize % 2].clone();
            tokio::spawn(write_load(
                Arc::clone(&source),
                user,
                written.clone(),
                (stop.clone(), completed.clone()),
                worker,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backup");
    let dest_arg = dest.to_str().unwrap();
    let before = completed.load(Ordering::Relaxed);
    let backup = homestead(source.data_dir(), &["backup", dest_arg], &[]).await;
    let during = completed.load(Ordering::Relaxed) - before;
    let log = String::from_utf8_lossy(&backup.stderr).into_owned();
    assert!(backup.status.success(), "backup failed: {log}");
    assert!(during > 0, "no write completed while the backup ran");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for task in load {
        writes += task.await.unwrap();
    }
    assert!(writes > 20, "only {writes} writes ran beside the backup");
    assert!(log.contains("backup: "), "{log}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("BACKUP.json")).unwrap()).unwrap();
    assert_eq!(manifest["server_public_key"], source.public_key().z32());
    // The blobs directory holds exactly the bodies the list names, one per listed file.
    let listed: Vec<String> = std::fs::read_to_string(dest.join("blobs.tsv"))
        .unwrap()
        .lines()
        .map(|line| line.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(manifest["files"], listed.len());
    let listed: HashSet<String> = listed.into_iter().collect();
    assert_eq!(files_under(&dest.join("blobs")), listed);

    // Refusals: one line each, nothing left beside DEST.
    refused(
        &homestead(source.data_dir(), &["backup", dest_arg], &[]).await,
        "already exists and is not an empty directory",
    );
    let elsewhere = dir.path().join("elsewhere");
    refused(
        &homestead(
            source.data_dir(),
            &["backup", elsewhere.to_str().unwrap()],
            &[(
                "HOMESTEAD_GENERAL__DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/nowhere",
            )],
        )
        .await,
        "cannot connect to postgres://postgres@127.0.0.1:1/nowhere",
    );
    let not_a_server = tempfile::tempdir().unwrap();
    refused(
        &homestead(
            not_a_server.path(),
            &["backup", elsewhere.to_str().unwrap()],
            &[],
        )
        .await,
        "has no server key",
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["backup"], "left behind: {left:?}");

    // Restore into a fresh data directory, database and bucket, then serve from there.
    let target = net.server().metadata(metadata).blobs(blobs).prepare().await;
    refused(
        &homestead(
            target.data_dir(),
            &["restore", dir.path().join("missing").to_str().unwrap()],
            &[],
        )
        .await,
        "is not a backup",
    );
    // A database nobody serves, and a backup newer than this build: refused before anything is written.
    let (wrong_url, says) = match metadata {
        Metadata::Postgres => (
            "postgres://postgres@127.0.0.1:1/nowhere".to_string(),
            "cannot connect to postgres://postgres@127.0.0.1:1/nowhere".to_string(),
        ),
        _ => {
            let missing = dir.path().join("missing-dir");
            (
                format!("sqlite://{}/homestead.db", missing.display()),
                format!("{} does not exist", missing.display()),
            )
        }
    };
    refused(
        &homestead(
            target.data_dir(),
            &["restore", dest_arg],
            &[("HOMESTEAD_GENERAL__DATABASE_URL", wrong_url.as_str())],
        )
        .await,
        &says,
    );
    let future = dir.path().join("future");
    copy_dir(&dest, &future);
    let mut newer = manifest.clone();
    newer["schema_version"] = 99_999_999.into();
    std::fs::write(
        future.join("BACKUP.json"),
        serde_json::to_vec_pretty(&newer).unwrap(),
    )
    .unwrap();
    refused(
        &homestead(
            target.data_dir(),
            &["restore", future.to_str().unwrap()],
            &[],
        )
        .await,
        "the backup has schema version 99999999",
    );
    assert_eq!(
        files_under(target.data_dir()),
        HashSet::from(["config.toml".to_string()]),
        "the target's data directory is as it was"
    );
    // A damaged backup (a body changed after the backup) is refused, and leaves the target as it was:
    // the whole backup restores into it afterwards.
    let damaged = dir.path().join("damaged");
    copy_dir(&dest, &damaged);
    let list = std::fs::read_to_string(damaged.join("blobs.tsv")).unwrap();
    let biggest = list
        .lines()
        .max_by_key(|line| line.rsplit('\t').next().unwrap().parse::<u64>().unwrap())
        .unwrap();
    let blob = damaged
        .join("blobs")
        .join(biggest.split('\t').next().unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    refused(
        &homestead(
            target.data_dir(),
            &["restore", damaged.to_str().unwrap()],
            &[],
        )
        .await,
        "the backup is damaged",
    );
    assert!(
        !target.data_dir().join("secret").exists(),
        "no key was left behind"
    );
    let restore = homestead(target.data_dir(), &["restore", dest_arg], &[]).await;
    let log = String::from_utf8_lossy(&restore.stderr).into_owned();
    assert!(restore.status.success(), "restore failed: {log}");
    let target_dir = target.data_dir().to_path_buf();
    let restored = target.start().await;
    assert_eq!(restored.public_key().z32(), source.public_key().z32());
    refused(
        &homestead(&target_dir, &["restore", dest_arg], &[]).await,
        "restore needs",
    );

    let mut files = 0;
    for user in &users {
        let mut paths = user.list(&restored, "/pub/").await;
        paths.extend(user.list(&restored, "/priv/").await);
        assert!(paths.contains(&"/priv/secret.txt".to_string()), "{paths:?}");
        for path in paths {
            let response = user.get(&restored, &path).await;
            assert_eq!(response.status(), 200, "GET {path}");
            let tag = response.headers()["etag"].to_str().unwrap().to_string();
            let data = response.bytes().await.unwrap();
            assert_eq!(tag, etag(&data), "{path}");
            let versions = written.lock().unwrap()[&(user.z32.clone(), path.clone())].clone();
            assert!(
                versions.contains(blake3::hash(&data).as_bytes()),
                "{path}: a body never written there"
            );
            files += 1;
        }
    }
    assert_eq!(
        manifest["files"], files,
        "the snapshot lists what the restored server serves"
    );
    let big = users[0]
        .get(&restored, "/pub/big.bin")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(big.as_ref(), pseudo_random_bytes(7, 6 << 20).as_slice());
    // The sessions came along: the source's cookie reads private data on the restored server.
    let private = users[1].get(&restored, "/priv/secret.txt").await;
    assert_eq!(private.status(), 200);
}

on_main_backend_pairs!(backup_under_load_restores_elsewhere: backup_restore_sqlite_fs, backup_restore_postgres_s3);

/// A backup onto a disk that fills up, and a restore into a data directory on one, each stop with one
/// line naming what and where and leave nothing behind; with room, the same restore then completes.
/// Needs small tmpfs mounts, so root (as in CI): see [`SmallDisk`].
#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_on_a_full_disk_fail_and_leave_nothing() {
    let net = TestNet::new();
    let source = net.server().start().await;
    let user = Account::signup(&source).await;
    for i in 0..4u64 {
        let path = format!("/pub/big-{i}.bin");
        assert_eq!(
            user.put(&source, &path, pseudo_random_bytes(i, 2 << 20))
                .await,
            201
        );
    }
    let disk = tempfile::tempdir().unwrap();
    let Some(small) = SmallDisk::mount(disk.path(), "4m") else {
        return;
    };
    let dest = disk.path().join("backup");
    let output = homestead(source.data_dir(), &["backup", dest.to_str().unwrap()], &[]).await;
    refused(&output, "No space left on device");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&disk.path().display().to_string()),
        "names where: {stderr}"
    );
    eprintln!("refused as expected: {stderr}");
    assert_eq!(small.files(), Vec::<String>::new(), "left behind");
    drop(small);

    // A whole backup elsewhere, restored into a data directory on a 4 MiB disk: the bodies do not fit.
    let whole = disk.path().join("whole");
    let whole = whole.to_str().unwrap();
    let backup = homestead(source.data_dir(), &["backup", whole], &[]).await;
    assert!(backup.status.success());
    let target = net.server().prepare().await;
    let config = std::fs::read(target.data_dir().join("config.toml")).unwrap();
    let Some(small) = SmallDisk::mount(target.data_dir(), "4m") else {
        return;
    };
    std::fs::write(target.data_dir().join("config.toml"), config).unwrap();
    let output = homestead(target.data_dir(), &["restore", whole], &[]).await;
    refused(&output, "No space left on device");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let blobs_dir = target.data_dir().join("blobs").display().to_string();
    assert!(stderr.contains(&blobs_dir), "names where: {stderr}");
    eprintln!("refused as expected: {stderr}");
    assert_eq!(
        small.files(),
        ["config.toml"],
        "no body, key or database is left"
    );
    small.resize("64m");
    let restore = homestead(target.data_dir(), &["restore", whole], &[]).await;
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let restored = target.start().await;
    for i in 0..4u64 {
        let response = user.get(&restored, &format!("/pub/big-{i}.bin")).await;
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        assert_eq!(body.as_ref(), pseudo_random_bytes(i, 2 << 20).as_slice());
    }
    // Unmounted first, so that the data directory can be removed with the server.
    drop(small);
    drop(restored);
}
