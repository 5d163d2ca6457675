//! 1 GiB of files through `homestead backup`, `restore`, `export-user` and `import-user`, each run under
//! `/usr/bin/time -v`: wall time, throughput and peak RSS of the command.
//!
//! ```sh
//! cargo build --release --bin homestead   # in the root workspace
//! TEST_HOMESTEAD_BIN=$CARGO_TARGET_DIR/release/homestead cargo bench --bench data_mobility
//! ```
//! `FILES` (default 64) files of `FILE_MIB` (default 16) MiB, written by one user through the ICANN
//! listener; `PAIR=postgres-s3` runs source and targets on PostgreSQL and S3 instead of SQLite and files.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use homestead_integration_tests::{Account, Blobs, Metadata, TestNet, binary, pseudo_random_bytes};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `homestead --data-dir DIR ARGS` under `/usr/bin/time -v`; prints a row of the table.
fn measure(name: &str, data_dir: &Path, args: &[&str], bytes: u64, stdin: Stdio, stdout: Stdio) {
    let started = Instant::now();
    let output = std::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run /usr/bin/time");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed: {stderr}");
    let peak_kib: f64 = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|kib| kib.parse().ok())
        .expect("peak RSS in the output of time -v");
    let mib = bytes as f64 / (1 << 20) as f64;
    println!(
        "| {name} | {seconds:.1} s | {:.0} MiB/s | {:.1} MiB |",
        mib / seconds,
        peak_kib / 1024.0
    );
}

#[tokio::main]
async fn main() {
    let files = env_or("FILES", 64);
    let file_mib = env_or("FILE_MIB", 16);
    let (metadata, blobs) = match std::env::var("PAIR").as_deref() {
        Ok("postgres-s3") => (Metadata::Postgres, Blobs::S3),
        _ => (Metadata::Sqlite, Blobs::Fs),
    };
    let net = TestNet::new();
    let source = net
        .server()
        .metadata(metadata)
        .blobs(blobs)
        .drive_config("max_body_bytes = 0")
        .start()
        .await;
    let user = Account::signup(&source).await;
    for i in 0..files {
        let status = user
            .put(
                &source,
                &format!("/pub/bench/{i:04}.bin"),
                pseudo_random_bytes(i as u64, file_mib << 20),
            )
            .await;
        assert_eq!(status, 201);
    }
    let bytes = (files * (file_mib << 20)) as u64;
    println!(
        "{files} files of {file_mib} MiB ({:.2} GiB) on {metadata:?}+{blobs:?}; the server keeps serving",
        bytes as f64 / (1u64 << 30) as f64
    );
    println!("| command | wall time | throughput | peak RSS |\n|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let backup_arg = backup.to_str().unwrap();
    measure(
        "backup",
        source.data_dir(),
        &["backup", backup_arg],
        bytes,
        Stdio::null(),
        Stdio::null(),
    );
    let target = net.server().metadata(metadata).blobs(blobs).prepare().await;
    measure(
        "restore",
        target.data_dir(),
        &["restore", backup_arg],
        bytes,
        Stdio::null(),
        Stdio::null(),
    );
    std::fs::remove_dir_all(&backup).unwrap();
    let archive = dir.path().join("user.archive");
    let out = std::fs::File::create(&archive).unwrap();
    measure(
        "export-user",
        source.data_dir(),
        &["export-user", &user.z32],
        bytes,
        Stdio::null(),
        out.into(),
    );
    let empty = net.server().metadata(metadata).blobs(blobs).start().await;
    let input = std::fs::File::open(&archive).unwrap();
    measure(
        "import-user",
        empty.data_dir(),
        &["import-user"],
        bytes,
        input.into(),
        Stdio::null(),
    );
}
