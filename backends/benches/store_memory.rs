//! Resident memory of a large upload and download through the Store: bodies must stream, so memory may
//! not grow with file size. Runs on sqlite+fs, and on sqlite+s3 when `TEST_S3_ENDPOINT` names an
//! S3-compatible server (scripts/test's moto, or any other).
//!
//! `cargo bench -p homestead-backends --bench store_memory` (BENCH_MIB=1024 by default)

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use homestead_backends::metadata::{self, Quota, WriteMode, now_micros};
use homestead_backends::store::{Read, ReadOptions, WriteLimits};
use homestead_backends::{BlobStore, EntryPath, Store};
use homestead_config::{DatabaseUrl, Storage, StorageType};

const USER: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
const CHUNK: usize = 64 * 1024;

/// A field of /proc/self/status in KiB (VmRSS: now, VmHWM: peak since the last reset).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .expect("field present")
}

/// Makes VmHWM start again from the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

async fn measure(name: &str, storage: Storage, mib: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("meta.db"));
    let metadata = Arc::from(metadata::open(&url).await.unwrap());
    let blobs = BlobStore::open(&storage, &dir.path().join("blobs")).unwrap();
    let store = Store::new(
        metadata,
        &blobs,
        Quota::Unlimited,
        homestead_backends::entry_cache::TTL,
    );
    let accounts = store.accounts();
    accounts
        .create_user(USER, None, now_micros())
        .await
        .unwrap();
    let user = accounts.user(USER).await.unwrap().unwrap();
    let path = EntryPath::parse("/pub/large.bin").unwrap();
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let chunks = mib * 1024 * 1024 / CHUNK;
    let bytes = (chunks * CHUNK) as f64;

    reset_peak();
    let base = status_kib("VmRSS:");
    let start = Instant::now();
    // A fresh allocation per chunk, as an HTTP body delivers them (a shared buffer would hide copies).
    let body =
        stream::iter((0..chunks).map(|_| Ok::<_, std::io::Error>(Bytes::copy_from_slice(&chunk))));
    let plan = store.prepare(&user, &path, WriteMode::Overwrite).await;
    let plan = plan.unwrap().unwrap();
    store
        .commit(plan, body, WriteLimits::default())
        .await
        .unwrap();
    let up_secs = start.elapsed().as_secs_f64();
    let up_peak = status_kib("VmHWM:").saturating_sub(base);

    reset_peak();
    let base = status_kib("VmRSS:");
    let start = Instant::now();
    let Read::Full(_, mut body) = store
        .get(USER, &path, &ReadOptions::default())
        .await
        .unwrap()
    else {
        panic!("expected the whole file");
    };
    let mut read = 0usize;
    while let Some(part) = body.next().await {
        read += part.unwrap().len();
    }
    assert_eq!(read, chunks * CHUNK);
    let down_secs = start.elapsed().as_secs_f64();
    let down_peak = status_kib("VmHWM:").saturating_sub(base);

    let mb = |secs: f64| bytes / secs / 1e6;
    println!(
        "| {name} | {mib} MiB | {:.0} MB/s | {:.1} MiB | {:.0} MB/s | {:.1} MiB |",
        mb(up_secs),
        up_peak as f64 / 1024.0,
        mb(down_secs),
        down_peak as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    println!(
        "| backends | size | upload | upload RSS growth (peak) | download | download RSS growth (peak) |"
    );
    println!("|---|---|---|---|---|---|");
    measure("sqlite+fs", Storage::default(), mib).await;
    if let Ok(endpoint) = std::env::var("TEST_S3_ENDPOINT") {
        let bucket = format!("bench-{}", std::process::id());
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());
        let storage = Storage {
            kind: StorageType::S3,
            bucket_name: Some(bucket),
            s3_endpoint: Some(endpoint),
            s3_path_style: true,
            s3_access_key_id: Some("test".into()),
            s3_secret_access_key: Some("test".into()),
            ..Storage::default()
        };
        measure("sqlite+s3", storage, mib).await;
    }
}
