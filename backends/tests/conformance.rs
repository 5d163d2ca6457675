//! One conformance suite for the Store, run against every metadata x blobs pair: sqlite+fs,
//! sqlite+memory, postgres+fs, postgres+memory and postgres+s3. PostgreSQL and the S3-compatible server
//! are real (`TEST_PG_ADMIN_URL`, `TEST_S3_ENDPOINT`, set by scripts/test); each test gets a fresh
//! database, bucket or directory.

mod test_database;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{TryStreamExt, stream};
use homestead_backends::metadata::{
    self, EventFilter, EventOp, NewSession, NewSignupToken, Quota, SignupOutcome, TokenPage,
    TokenState, User, UserLimits, UserOrder, UserPage, UserState, WriteMode, now_micros,
};
use homestead_backends::store::{
    ByteRange, ListRequest, Read, ReadOptions, Refusal, WriteLimits, Written,
};
use homestead_backends::{BlobStore, DirPath, EntryPath, NormalizedPath, Store, StoreError};
use homestead_config::{Storage, StorageType};
use object_store::ObjectStore;
use test_database::{Db, TestDatabase, env, unique};

const ALICE: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";
const BOB: &str = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qy";

#[derive(Clone, Copy, Debug)]
enum Blobs {
    Fs,
    Memory,
    S3,
}

/// A Store on fresh resources, removed again when dropped.
struct Fixture {
    store: Store,
    blobs: Arc<dyn ObjectStore>,
    /// Held for its removal when dropped.
    _database: TestDatabase,
}

/// A signup token minted now.
fn signup_token<'a>(
    token: &'a str,
    quota: Option<Quota>,
    limits: &'a UserLimits,
) -> NewSignupToken<'a> {
    NewSignupToken {
        token,
        created_at: now_micros(),
        quota,
        limits,
    }
}

/// A session with every capability, created now.
fn new_session<'a>(secret_hash: &'a [u8; 32], public_key: &'a str) -> NewSession<'a> {
    NewSession {
        secret_hash,
        public_key,
        capabilities: "/:rw",
        created_at: now_micros(),
    }
}

impl Fixture {
    async fn new(db: Db, blobs: Blobs, default_quota: Quota) -> Self {
        let database = TestDatabase::new(db, "homestead_conf_");
        let storage = match blobs {
            Blobs::Fs => Storage::default(),
            Blobs::Memory => Storage {
                kind: StorageType::InMemory,
                ..Storage::default()
            },
            Blobs::S3 => {
                let endpoint = env("TEST_S3_ENDPOINT");
                let bucket = unique("conf-");
                let created = reqwest::Client::new()
                    .put(format!("{endpoint}/{bucket}"))
                    .send()
                    .await
                    .unwrap();
                assert!(
                    created.status().is_success(),
                    "create bucket: {}",
                    created.status()
                );
                Storage {
                    kind: StorageType::S3,
                    bucket_name: Some(bucket),
                    s3_endpoint: Some(endpoint),
                    s3_path_style: true,
                    s3_access_key_id: Some("test".into()),
                    s3_secret_access_key: Some("test".into()),
                    ..Storage::default()
                }
            }
        };
        let blob_store = BlobStore::open(&storage, &database.dir.path().join("blobs")).unwrap();
        let metadata: Arc<dyn metadata::Metadata> =
            Arc::from(metadata::open(&database.url).await.unwrap());
        let store = Store::new(
            metadata,
            &blob_store,
            default_quota,
            homestead_backends::entry_cache::TTL,
        );
        for user in [ALICE, BOB] {
            assert_eq!(
                store
                    .accounts()
                    .create_user(user, None, now_micros())
                    .await
                    .unwrap(),
                SignupOutcome::Created
            );
        }
        Fixture {
            store,
            blobs: blob_store.objects().clone(),
            _database: database,
        }
    }

    async fn put(&self, owner: &str, path: &str, data: &[u8]) -> Result<u64, StoreError> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = stream::iter(chunks);
        let written = self
            .write(
                owner,
                path,
                body,
                WriteMode::Overwrite,
                WriteLimits::default(),
            )
            .await?;
        Ok(written.event_id)
    }

    /// Prepares and commits a write of `body` as the user's record says (a key that never signed up
    /// writes as a fresh user would).
    async fn write<S>(
        &self,
        owner: &str,
        path: &str,
        body: S,
        mode: WriteMode,
        limits: WriteLimits,
    ) -> Result<Written, StoreError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let user = self.writer(owner).await;
        let plan = self.store.prepare(&user, &p(path), mode).await?;
        let plan = plan.expect("the write is not refused");
        self.store.commit(plan, body, limits).await
    }

    /// The user as stored, or as a stranger with that key.
    async fn writer(&self, owner: &str) -> User {
        let stored = self.store.accounts().user(owner).await.unwrap();
        stored.unwrap_or_else(|| User {
            public_key: owner.to_string(),
            disabled: false,
            used_bytes: 0,
            quota: None,
            created_at: 0,
            limits: UserLimits::default(),
        })
    }

    async fn read(&self, owner: &str, path: &str) -> Option<Vec<u8>> {
        match self
            .store
            .get(owner, &p(path), &ReadOptions::default())
            .await
            .unwrap()
        {
            Read::Full(_, body) => Some(collect(body).await),
            Read::NotFound => None,
            _ => panic!("unexpected read outcome"),
        }
    }

    async fn used(&self, owner: &str) -> i64 {
        self.store
            .accounts()
            .user(owner)
            .await
            .unwrap()
            .unwrap()
            .used_bytes
    }

    async fn blob_count(&self) -> usize {
        self.blobs
            .list(None)
            .try_filter(|m| {
                std::future::ready(!m.location.as_ref().starts_with("homestead-probe-"))
            })
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    }

    async fn list(
        &self,
        dir: &str,
        cursor: Option<&str>,
        limit: u32,
        reverse: bool,
        shallow: bool,
    ) -> Vec<String> {
        let request = ListRequest {
            dir: DirPath::parse(dir).unwrap(),
            cursor: cursor.map(|c| NormalizedPath::parse(c).unwrap()),
            limit,
            reverse,
            shallow,
        };
        self.store
            .list(ALICE, &request)
            .await
            .unwrap()
            .expect("directory exists")
    }
}

async fn collect(body: homestead_backends::store::Body) -> Vec<u8> {
    body.try_fold(Vec::new(), |mut all, chunk| async move {
        all.extend_from_slice(&chunk);
        Ok(all)
    })
    .await
    .unwrap()
}

fn p(path: &str) -> EntryPath {
    EntryPath::parse(path).unwrap()
}

/// Pseudo-random but reproducible bytes.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

async fn write_overwrite_read_delete(f: Fixture) {
    assert_eq!(f.read(ALICE, "/pub/a.txt").await, None);
    f.put(ALICE, "/pub/a.txt", b"hello").await.unwrap();
    assert_eq!(f.read(ALICE, "/pub/a.txt").await.unwrap(), b"hello");
    let entry = f
        .store
        .head(ALICE, &p("/pub/a.txt"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.content_type, "text/plain");
    assert_eq!(
        entry.etag(),
        "\"6o8WPbOGgpJeRJHF5Y1Ls1Bu+MFOt4qG6QjFYkpnIA8=\""
    );
    // Zero bytes, and a body of several parts (multipart upload), byte-exact.
    f.put(ALICE, "/pub/empty", b"").await.unwrap();
    assert_eq!(f.read(ALICE, "/pub/empty").await.unwrap(), b"");
    let big = data(12 * 1024 * 1024 + 7, 3);
    f.put(ALICE, "/pub/big.bin", &big).await.unwrap();
    assert!(
        f.read(ALICE, "/pub/big.bin").await.unwrap() == big,
        "multi-MiB round trip"
    );
    assert_eq!(f.used(ALICE).await, 5 + 256 + 256 + big.len() as i64 + 256);
    // Overwrite replaces content, keeps one blob per file, and counts only the difference.
    f.put(ALICE, "/pub/a.txt", b"hello, world").await.unwrap();
    assert_eq!(f.read(ALICE, "/pub/a.txt").await.unwrap(), b"hello, world");
    assert_eq!(f.blob_count().await, 3);
    assert_eq!(f.used(ALICE).await, 12 + 256 + 256 + big.len() as i64 + 256);
    // A file and a directory of the same name coexist; users are separate.
    f.put(ALICE, "/pub/a.txt/inner", b"x").await.unwrap();
    f.put(BOB, "/pub/a.txt", b"bob").await.unwrap();
    assert_eq!(f.read(ALICE, "/pub/a.txt").await.unwrap(), b"hello, world");
    assert_eq!(f.read(BOB, "/pub/a.txt").await.unwrap(), b"bob");
    // Delete.
    assert!(
        f.store
            .delete(ALICE, &p("/pub/big.bin"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        f.store
            .delete(ALICE, &p("/pub/big.bin"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(f.read(ALICE, "/pub/big.bin").await, None);
    assert_eq!(f.used(ALICE).await, 12 + 256 + 256 + 1 + 256);
    assert_eq!(f.blob_count().await, 4);
    // Unknown user: nothing written.
    let err = f
        .put(
            "ybndrfg8ejkmcpqxot1uwisza345h769ybndrfg8ejkmcpqxot1u",
            "/pub/x",
            b"x",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser { .. }), "{err}");
    assert_eq!(f.blob_count().await, 4);
}

async fn ranges_and_conditions(f: Fixture) {
    f.put(ALICE, "/pub/r", b"0123456789").await.unwrap();
    let read = |range| {
        let options = ReadOptions {
            range: Some(range),
            ..ReadOptions::default()
        };
        let store = f.store.clone();
        async move { store.get(ALICE, &p("/pub/r"), &options).await.unwrap() }
    };
    match read(ByteRange::Bounded(2, 4)).await {
        Read::Partial {
            first, last, body, ..
        } => {
            assert_eq!((first, last), (2, 4));
            assert_eq!(collect(body).await, b"234");
        }
        _ => panic!("expected a partial read"),
    }
    match read(ByteRange::Suffix(3)).await {
        Read::Partial { body, .. } => assert_eq!(collect(body).await, b"789"),
        _ => panic!("expected a partial read"),
    }
    assert!(matches!(
        read(ByteRange::From(10)).await,
        Read::Unsatisfiable(_)
    ));
    let etag = f
        .store
        .head(ALICE, &p("/pub/r"))
        .await
        .unwrap()
        .unwrap()
        .etag();
    let options = ReadOptions {
        if_none_match: Some(etag),
        ..ReadOptions::default()
    };
    assert!(matches!(
        f.store.get(ALICE, &p("/pub/r"), &options).await.unwrap(),
        Read::NotModified(_)
    ));
    // Small bodies are served from memory after the first read, large ones streamed: both honour ranges.
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    f.put(ALICE, "/pub/large", &large).await.unwrap();
    for path in ["/pub/r", "/pub/r", "/pub/large"] {
        let options = ReadOptions {
            range: Some(ByteRange::Bounded(3, 5)),
            ..ReadOptions::default()
        };
        let expected = if path == "/pub/r" {
            b"345".to_vec()
        } else {
            large[3..=5].to_vec()
        };
        match f.store.get(ALICE, &p(path), &options).await.unwrap() {
            Read::Partial { body, .. } => assert_eq!(collect(body).await, expected, "{path}"),
            _ => panic!("expected a partial read of {path}"),
        }
    }
}

async fn listing_order_and_cursors(f: Fixture) {
    let files = [
        "/pub/a.wrong/a.txt",
        "/pub/example.com/a.txt",
        "/pub/example.com/b.txt",
        "/pub/example.com/c.txt",
        "/pub/example.com/d.txt",
        "/pub/example.com/cc-nested/z.txt",
        "/pub/example.wrong/a.txt",
        "/pub/z.wrong/a.txt",
        "/pub/example.con",
        "/pub/example.con/d.txt",
        "/pub/file",
        "/pub/file2",
        "/pub/a.com/a.txt",
        "/pub/z.com/a.txt",
        "/pub/sp ace/ünï/%25/x",
        "/pub/a/b/c/d/e/f/g/deep",
        "/pub/a.b",
        "/pub/a_b",
        "/pub/a%b",
    ];
    for file in files {
        f.put(ALICE, file, b"x").await.unwrap();
    }
    f.put(BOB, "/pub/example.com/bob.txt", b"x").await.unwrap();
    let all = f.list("/pub/example.com/", None, 100, false, false).await;
    let expected: Vec<String> = ["a.txt", "b.txt", "c.txt", "cc-nested/z.txt", "d.txt"]
        .iter()
        .map(|n| format!("/pub/example.com/{n}"))
        .collect();
    assert_eq!(all, expected);
    let page = f
        .list(
            "/pub/example.com/",
            Some("/pub/example.com/a.txt"),
            2,
            false,
            false,
        )
        .await;
    assert_eq!(page, ["/pub/example.com/b.txt", "/pub/example.com/c.txt"]);
    let reversed = f
        .list(
            "/pub/example.com/",
            Some("/pub/example.com/c.txt"),
            10,
            true,
            false,
        )
        .await;
    assert_eq!(
        reversed,
        ["/pub/example.com/b.txt", "/pub/example.com/a.txt"]
    );
    // Byte order over the whole tree, deep.
    let deep = f.list("/pub/", None, 1000, false, false).await;
    let mut sorted: Vec<String> = files.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(deep, sorted);
    assert_eq!(
        f.list("/pub/", None, 1000, true, false).await,
        sorted.iter().rev().cloned().collect::<Vec<_>>()
    );
    // `_` and `%` are literal, not wildcards; a prefix that is not a directory matches nothing.
    assert!(
        f.store
            .list(
                ALICE,
                &ListRequest {
                    dir: DirPath::parse("/pub/a_/").unwrap(),
                    cursor: None,
                    limit: 10,
                    reverse: false,
                    shallow: false,
                }
            )
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        f.list("/pub/sp ace/", None, 10, false, false).await,
        ["/pub/sp ace/ünï/%25/x"]
    );
    // Shallow (PROTOCOL.md §9.4).
    let shallow = f.list("/pub/", None, 100, false, true).await;
    assert_eq!(
        shallow,
        [
            "/pub/a%b",
            "/pub/a.b",
            "/pub/a.com/",
            "/pub/a.wrong/",
            "/pub/a/",
            "/pub/a_b",
            "/pub/example.com/",
            "/pub/example.con",
            "/pub/example.con/",
            "/pub/example.wrong/",
            "/pub/file",
            "/pub/file2",
            "/pub/sp ace/",
            "/pub/z.com/",
            "/pub/z.wrong/",
        ]
    );
    for cursor in ["/pub/example.com/", "/pub/example.com/a.txt"] {
        let page = f.list("/pub/", Some(cursor), 2, false, true).await;
        assert_eq!(
            page,
            ["/pub/example.con", "/pub/example.con/"],
            "cursor {cursor}"
        );
    }
    let back = f.list("/pub/", Some("/pub/file2"), 3, true, true).await;
    assert_eq!(
        back,
        ["/pub/file", "/pub/example.wrong/", "/pub/example.con/"]
    );
    let inside = f
        .list("/pub/", Some("/pub/example.com/b.txt"), 2, true, true)
        .await;
    assert_eq!(inside, ["/pub/example.com/", "/pub/a_b"]);
    assert!(f.list("/pub/", None, 0, false, true).await.is_empty());
}

async fn events_and_cursors(f: Fixture) {
    let first = f.put(ALICE, "/pub/app/one", b"1").await.unwrap();
    f.put(BOB, "/pub/app/two", b"2").await.unwrap();
    f.put(ALICE, "/pub/other/three", b"3").await.unwrap();
    f.store.delete(ALICE, &p("/pub/app/one")).await.unwrap();
    let all = f
        .store
        .events(0, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    assert_eq!(all[0].id, first);
    assert_eq!(
        (all[0].op, all[0].user.as_str(), all[0].path.as_str()),
        (EventOp::Put, ALICE, "/pub/app/one")
    );
    assert_eq!(all[0].content_hash, Some(*blake3::hash(b"1").as_bytes()));
    assert_eq!((all[3].op, all[3].content_hash), (EventOp::Del, None));
    let page = f
        .store
        .events(all[1].id, 2, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [all[2].id, all[3].id]
    );
    let alice_app = EventFilter {
        users: Some(vec![(ALICE.to_string(), 0)]),
        paths: vec!["/pub/app/".into()],
        reverse: false,
    };
    let mine = f.store.events(0, 100, &alice_app).await.unwrap();
    assert_eq!(
        mine.iter().map(|e| e.id).collect::<Vec<_>>(),
        [all[0].id, all[3].id]
    );
    // Without a trailing `/` a path names one file: not a prefix of `/pub/app/one`, nor of its
    // sibling `/pub/other/three`.
    let files = EventFilter {
        paths: vec!["/pub/app".into(), "/pub/other/three".into()],
        ..EventFilter::default()
    };
    let exact = f.store.events(0, 100, &files).await.unwrap();
    assert_eq!(exact.iter().map(|e| e.id).collect::<Vec<_>>(), [all[2].id]);
    let newest_first = EventFilter {
        reverse: true,
        ..EventFilter::default()
    };
    let rev = f.store.events(0, 2, &newest_first).await.unwrap();
    assert_eq!(
        rev.iter().map(|e| e.id).collect::<Vec<_>>(),
        [all[3].id, all[2].id]
    );
    assert_eq!(
        f.store.event_id_at(all[1].created_at).await.unwrap(),
        Some(all[1].id)
    );
    assert_eq!(f.store.event_id_at(1).await.unwrap(), None);
}

async fn event_bus_broadcasts_commits_in_order(f: Fixture) {
    f.put(ALICE, "/pub/before", b"0").await.unwrap();
    let task = f.store.start_event_tail().await.unwrap();
    let bus = f.store.event_bus();
    let mut live = bus.subscribe();
    let mut expected = Vec::new();
    for i in 0..5u8 {
        expected.push(f.put(ALICE, &format!("/pub/live/{i}"), &[i]).await.unwrap());
    }
    f.store.delete(ALICE, &p("/pub/live/0")).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), live.recv())
            .await
            .expect("delivered within 5 s")
            .unwrap();
        got.push((event.id, event.op));
    }
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(&ids[..5], &expected[..]);
    assert_eq!(got[5].1, EventOp::Del);
    assert_eq!(bus.subscribers(), 1);
    task.abort();
}

async fn quota_accounting(f: Fixture) {
    // PROTOCOL.md §8.8 with a 1 MB quota.
    f.store
        .accounts()
        .set_quota(ALICE, Some(Quota::Bytes(1_048_576)))
        .await
        .unwrap();
    f.put(ALICE, "/pub/fits", &vec![0; 1_048_320])
        .await
        .unwrap();
    f.store.delete(ALICE, &p("/pub/fits")).await.unwrap();
    let err = f
        .put(ALICE, "/pub/too-big", &vec![0; 1_049_344])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err}");
    f.put(ALICE, "/pub/first", &vec![1; 600_000]).await.unwrap();
    let err = f
        .put(ALICE, "/pub/second", &vec![2; 600_000])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err}");
    f.put(ALICE, "/pub/first", &vec![3; 600_000]).await.unwrap();
    let err = f
        .put(ALICE, "/pub/first", &vec![4; 1_100_000])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err}");
    assert_eq!(
        f.read(ALICE, "/pub/first").await.unwrap(),
        vec![3; 600_000],
        "refused write left the old version"
    );
    assert_eq!(f.used(ALICE).await, 600_256);
    assert_eq!(f.blob_count().await, 1, "refused uploads leave no blob");
    // The server default applies to users without their own quota; the override wins.
    assert_eq!(f.used(BOB).await, 0);
    f.store
        .accounts()
        .set_quota(ALICE, Some(Quota::Unlimited))
        .await
        .unwrap();
    f.put(ALICE, "/pub/second", &vec![2; 600_000])
        .await
        .unwrap();
}

async fn default_quota_applies(f: Fixture) {
    // This fixture's server default is 1000 bytes.
    f.put(BOB, "/pub/small", &[0; 744]).await.unwrap();
    let err = f.put(BOB, "/pub/more", &[0; 1]).await.unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err}");
    let limited = WriteLimits {
        max_bytes: Some(10),
    };
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"01234567890"))]);
    let err = f
        .write(ALICE, "/pub/x", body, WriteMode::Overwrite, limited)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { limit: 10, .. }),
        "{err}"
    );
}

async fn concurrent_writers_one_path(f: Fixture) {
    let f = Arc::new(f);
    let writers = (0..64u8).map(|i| {
        let f = f.clone();
        tokio::spawn(async move {
            f.put(ALICE, "/pub/contended", &data(1000 + i as usize, i))
                .await
                .unwrap()
        })
    });
    let ids: Vec<u64> = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let last = *ids.iter().max().unwrap();
    let winner = ids.iter().position(|id| *id == last).unwrap() as u8;
    let content = f.read(ALICE, "/pub/contended").await.unwrap();
    assert_eq!(
        content,
        data(1000 + winner as usize, winner),
        "the last commit wins"
    );
    assert_eq!(f.used(ALICE).await, content.len() as i64 + 256);
    assert_eq!(f.blob_count().await, 1, "no replaced blob leaks");
}

async fn concurrent_writers_many_paths(f: Fixture) {
    let f = Arc::new(f);
    let writers = (0..64u8).map(|i| {
        let f = f.clone();
        tokio::spawn(async move {
            f.put(ALICE, &format!("/pub/many/{i}"), &data(i as usize * 10, i))
                .await
                .unwrap()
        })
    });
    futures_util::future::join_all(writers)
        .await
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let expected: i64 = (0..64).map(|i| i * 10 + 256).sum();
    assert_eq!(f.used(ALICE).await, expected);
    assert_eq!(
        f.list("/pub/many/", None, 1000, false, false).await.len(),
        64
    );
    let events = f
        .store
        .events(0, 1000, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(events.len(), 64);
}

async fn quota_holds_under_concurrent_writes(f: Fixture) {
    // Room for exactly 10 files of 744 bytes (1000 bytes each with overhead).
    f.store
        .accounts()
        .set_quota(ALICE, Some(Quota::Bytes(10_000)))
        .await
        .unwrap();
    let f = Arc::new(f);
    let writers = (0..64u8).map(|i| {
        let f = f.clone();
        tokio::spawn(async move { f.put(ALICE, &format!("/pub/q/{i}"), &[i; 744]).await })
    });
    let results = futures_util::future::join_all(writers).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 10);
    assert_eq!(f.used(ALICE).await, 10_000);
    assert_eq!(f.blob_count().await, 10);
}

async fn failed_upload_leaves_nothing(f: Fixture) {
    f.put(ALICE, "/pub/doc", b"version 1").await.unwrap();
    // The client disconnects after 7 MiB: past the first multipart part.
    let chunks = (0..7)
        .map(|_| Ok(Bytes::from(vec![7; 1024 * 1024])))
        .chain([Err(std::io::Error::other("client went away"))]);
    let body = stream::iter(chunks);
    let err = f
        .write(
            ALICE,
            "/pub/doc",
            body,
            WriteMode::Overwrite,
            WriteLimits::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Body { .. }), "{err}");
    assert_eq!(f.read(ALICE, "/pub/doc").await.unwrap(), b"version 1");
    assert_eq!(f.used(ALICE).await, 9 + 256);
    // A blob written but never committed (as after a crash) is swept once older than the grace period.
    let orphan = object_store::path::Path::from(format!("{ALICE}/orphan"));
    use object_store::ObjectStoreExt;
    f.blobs
        .put(&orphan, Bytes::from_static(b"orphan").into())
        .await
        .unwrap();
    let report = f.store.sweep(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(report.deleted, 0, "young blobs are kept");
    let report = f.store.sweep(Duration::ZERO).await.unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(f.blob_count().await, 1);
    assert_eq!(f.read(ALICE, "/pub/doc").await.unwrap(), b"version 1");
}

async fn sweep_deletes_nothing_while_held(f: Fixture) {
    use object_store::ObjectStoreExt;
    // A blob staged but not yet committed, as `import-user` leaves them while it streams bodies.
    let staged = object_store::path::Path::from(format!("{ALICE}/staged"));
    f.blobs
        .put(&staged, Bytes::from_static(b"staged").into())
        .await
        .unwrap();
    let hold = homestead_backends::blob_holds::Hold::place(f.blobs.clone())
        .await
        .unwrap();
    let report = f.store.sweep(Duration::ZERO).await.unwrap();
    assert_eq!(report.deleted, 0, "a live hold stops the sweep");
    f.blobs
        .head(&staged)
        .await
        .expect("the staged blob is kept");
    hold.release().await;
    // Past the holds check's cache: the next sweep sees no hold.
    tokio::time::sleep(homestead_backends::blob_holds::CHECK_TTL + Duration::from_millis(200))
        .await;
    let report = f.store.sweep(Duration::ZERO).await.unwrap();
    assert_eq!(report.deleted, 1);
    assert!(f.blobs.head(&staged).await.is_err());
}

async fn missing_blob_is_a_clear_error(f: Fixture) {
    f.put(ALICE, "/pub/gone", b"data").await.unwrap();
    let key = f
        .store
        .head(ALICE, &p("/pub/gone"))
        .await
        .unwrap()
        .unwrap()
        .blob_key;
    use object_store::ObjectStoreExt;
    f.blobs
        .delete(&object_store::path::Path::from(key.as_str()))
        .await
        .unwrap();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        f.store.get(ALICE, &p("/pub/gone"), &ReadOptions::default()),
    )
    .await
    .expect("no hang");
    match read {
        Err(StoreError::BlobMissing { path, key: missing }) => {
            assert_eq!((path.as_str(), missing), ("/pub/gone", key));
        }
        Err(err) => panic!("unexpected error {err}"),
        Ok(_) => panic!("a read of a missing blob succeeded"),
    }
}

/// A path of 3,900 random bytes (it does not compress): PostgreSQL cannot index it (at most about 2,700 bytes),
/// SQLite can. On PostgreSQL the write is refused as too long and leaves nothing behind, and the writes
/// that shared its group commit are committed all the same.
async fn a_path_the_index_cannot_hold_fails_alone(f: Fixture) {
    let segment = || {
        (0..4)
            .map(|_| format!("{:032x}", rand::random::<u128>()))
            .collect::<String>()
    };
    let long = format!(
        "/pub/{}",
        (0..30).map(|_| segment()).collect::<Vec<_>>().join("/")
    );
    assert!(long.len() > 3800 && long.len() <= 4096, "{}", long.len());
    let paths: Vec<String> = (0..16).map(|i| format!("/pub/batch/{i}")).collect();
    let (refused, written) = tokio::join!(
        f.put(ALICE, &long, b"long"),
        futures_util::future::join_all(paths.iter().map(|path| f.put(ALICE, path, b"ok")))
    );
    for (path, result) in paths.iter().zip(written) {
        result.unwrap_or_else(|err| panic!("{path}: {err}"));
        assert_eq!(f.read(ALICE, path).await.unwrap(), b"ok");
    }
    let files = match f.store.operations().kind() {
        homestead_config::DatabaseKind::Postgres => {
            match refused {
                Err(StoreError::PathTooLong { path }) => assert_eq!(path, long),
                other => panic!("expected PathTooLong, got {other:?}"),
            }
            assert!(f.read(ALICE, &long).await.is_none());
            paths.len()
        }
        homestead_config::DatabaseKind::Sqlite => {
            refused.unwrap();
            assert_eq!(f.read(ALICE, &long).await.unwrap(), b"long");
            paths.len() + 1
        }
    };
    assert_eq!(f.blob_count().await, files);
    assert_eq!(
        f.used(ALICE).await,
        files as i64 * (256 + 2) + if files > paths.len() { 2 } else { 0 }
    );
}

async fn pkarr_packets_and_counts(f: Fixture) {
    let before = f.store.operations().counts().await.unwrap();
    f.put(ALICE, "/pub/a", b"12345").await.unwrap();
    f.store
        .accounts()
        .create_signup_token(&signup_token("AAAA-BBBB-CCCC", None, &Default::default()))
        .await
        .unwrap();
    f.store.accounts().set_disabled(BOB, true).await.unwrap();
    let counts = f.store.operations().counts().await.unwrap();
    assert_eq!(counts.users, before.users);
    assert_eq!(counts.disabled_users, 1);
    assert_eq!(counts.used_bytes, before.used_bytes + 5 + 256);
    assert_eq!((counts.signup_tokens, counts.unused_signup_tokens), (1, 1));
    f.store
        .accounts()
        .store_pkarr_packet(ALICE, b"packet")
        .await
        .unwrap();
    let active = f
        .store
        .accounts()
        .active_users_with_packets()
        .await
        .unwrap();
    assert!(active.contains(&(ALICE.to_string(), Some(b"packet".to_vec()))));
    assert!(
        !active.iter().any(|(key, _)| key == BOB),
        "disabled users are not republished"
    );
}

async fn limits_travel_with_signup_tokens(f: Fixture) {
    let limits = homestead_backends::metadata::UserLimits {
        rate_read: Some("10mb/s".into()),
        allowed_write_paths: Some(vec!["/pub/app/".into(), "/pub/one.txt".into()]),
        ..Default::default()
    };
    f.store
        .accounts()
        .create_signup_token(&signup_token(
            "LLLL-LLLL-LLLL",
            Some(Quota::Bytes(5 << 20)),
            &limits,
        ))
        .await
        .unwrap();
    let carol = "pxnu33x7jtpx9ar1ytsi4yxbp6a5o36gwhffs8zoxmbuptici1jy";
    assert_eq!(
        f.store
            .accounts()
            .create_user(carol, Some("LLLL-LLLL-LLLL"), now_micros())
            .await
            .unwrap(),
        SignupOutcome::Created
    );
    let user = f.store.accounts().user(carol).await.unwrap().unwrap();
    assert_eq!(user.quota, Some(Quota::Bytes(5 << 20)));
    assert_eq!(user.limits, limits);
    assert!(user.limits.may_write("/pub/app/x/y"));
    assert!(user.limits.may_write("/pub/one.txt"));
    assert!(!user.limits.may_write("/pub/one.txt2"));
    assert!(!user.limits.may_write("/pub/other"));
    let read_only = homestead_backends::metadata::UserLimits {
        allowed_write_paths: Some(Vec::new()),
        ..Default::default()
    };
    assert!(
        f.store
            .accounts()
            .set_limits(carol, None, &read_only)
            .await
            .unwrap()
    );
    let user = f.store.accounts().user(carol).await.unwrap().unwrap();
    assert_eq!(
        (user.quota, user.limits.may_write("/pub/app/x")),
        (None, false)
    );
    assert!(
        f.store
            .accounts()
            .set_limits(carol, None, &Default::default())
            .await
            .unwrap()
    );
    assert!(
        f.store
            .accounts()
            .user(carol)
            .await
            .unwrap()
            .unwrap()
            .limits
            .may_write("/pub/x")
    );
    assert!(
        !f.store
            .accounts()
            .set_limits("nobody", None, &read_only)
            .await
            .unwrap()
    );
}

async fn users_sessions_and_tokens(f: Fixture) {
    assert_eq!(
        f.store
            .accounts()
            .create_user(ALICE, None, now_micros())
            .await
            .unwrap(),
        SignupOutcome::UserExists
    );
    f.store
        .accounts()
        .create_signup_token(&signup_token("AAAA-BBBB-CCCC", None, &Default::default()))
        .await
        .unwrap();
    let carol = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewy";
    let dave = "tkrq8zmwb8a3m9k15csu3q17qmfgqnp9dskbrg9uq1rydpyxp7qo";
    assert_eq!(
        f.store
            .accounts()
            .create_user(carol, Some("NOPE-NOPE-NOPE"), now_micros())
            .await
            .unwrap(),
        SignupOutcome::TokenUnknown
    );
    // Two sign-ups race for one token: exactly one wins.
    let (a, b) = tokio::join!(
        f.store
            .accounts()
            .create_user(carol, Some("AAAA-BBBB-CCCC"), now_micros()),
        f.store
            .accounts()
            .create_user(dave, Some("AAAA-BBBB-CCCC"), now_micros()),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == SignupOutcome::Created)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&SignupOutcome::TokenUsed));
    let token = f
        .store
        .accounts()
        .signup_token("AAAA-BBBB-CCCC")
        .await
        .unwrap()
        .unwrap();
    assert!(token.used_by.is_some());
    // Sessions are found by the hash of their secret only.
    let hash = [9u8; 32];
    assert!(
        f.store
            .accounts()
            .create_session(&new_session(&hash, ALICE))
            .await
            .unwrap()
    );
    let session = f.store.accounts().session(&hash).await.unwrap().unwrap();
    assert_eq!(
        (
            session.user.public_key.as_str(),
            session.capabilities.as_str()
        ),
        (ALICE, "/:rw")
    );
    assert!(f.store.accounts().delete_session(&hash).await.unwrap());
    assert!(f.store.accounts().session(&hash).await.unwrap().is_none());
    // Replayed AuthToken ids are refused.
    let far = i64::MAX;
    assert!(
        f.store
            .accounts()
            .use_auth_token(b"token-1", far, now_micros())
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .accounts()
            .use_auth_token(b"token-1", far, now_micros())
            .await
            .unwrap()
    );
    assert!(f.store.accounts().set_disabled(ALICE, true).await.unwrap());
    assert!(
        f.store
            .accounts()
            .user(ALICE)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    let stranger = "ybndrfg8ejkmcpqxot1uwisza345h769ybndrfg8ejkmcpqxot1u";
    assert!(
        !f.store
            .accounts()
            .set_disabled(stranger, true)
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .accounts()
            .create_session(&new_session(&[1; 32], stranger))
            .await
            .unwrap()
    );
}

async fn conditional_writes(f: Fixture) {
    let once =
        |data: &'static [u8]| stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(data))]);
    let write = |mode: WriteMode, data: &'static [u8]| {
        f.write(ALICE, "/pub/doc", once(data), mode, WriteLimits::default())
    };
    // Create: only where nothing is.
    write(WriteMode::Create, b"first").await.unwrap();
    let err = write(WriteMode::Create, b"second").await.unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { .. }),
        "{err}"
    );
    assert_eq!(f.read(ALICE, "/pub/doc").await.unwrap(), b"first");
    // Update: only the version named, as a read found it.
    let current = f.store.head(ALICE, &p("/pub/doc")).await.unwrap();
    let current = current.expect("the file exists");
    assert_eq!(current.content_length, 5);
    let mode = WriteMode::Update(vec![current.version()]);
    write(mode.clone(), b"third").await.unwrap();
    let err = write(mode.clone(), b"fourth").await.unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { .. }),
        "{err}"
    );
    assert_eq!(f.read(ALICE, "/pub/doc").await.unwrap(), b"third");
    // Two writes prepared against the same version: the commit's check under the row lock lets one
    // through.
    let current = f
        .store
        .head(ALICE, &p("/pub/doc"))
        .await
        .unwrap()
        .unwrap()
        .version();
    let (a, b) = tokio::join!(
        write(WriteMode::Update(vec![current]), b"fifth"),
        write(WriteMode::Update(vec![current]), b"sixth"),
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    // A deleted file has no version to update.
    f.store.delete(ALICE, &p("/pub/doc")).await.unwrap();
    let err = write(mode, b"seventh").await.unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { .. }),
        "{err}"
    );
    // Refused writes change nothing: no entry, no usage, no blob, no event beyond the committed ones.
    assert_eq!(f.read(ALICE, "/pub/doc").await, None);
    assert_eq!(f.used(ALICE).await, 0);
    assert_eq!(f.blob_count().await, 0);
    let events = f
        .store
        .events(0, 100, &EventFilter::default())
        .await
        .unwrap();
    let ops: Vec<EventOp> = events.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        [EventOp::Put, EventOp::Put, EventOp::Put, EventOp::Del]
    );
}

/// Sixteen writers prepared against one version: the commit's check under the row lock lets exactly
/// one through, and the file holds its body; then deletes, checked the same way.
async fn conditional_races_and_deletes(f: Fixture) {
    f.put(ALICE, "/pub/doc", b"start").await.unwrap();
    let start = f.store.head(ALICE, &p("/pub/doc")).await.unwrap().unwrap();
    let bodies: Vec<Bytes> = (0..16)
        .map(|i| Bytes::from(format!("writer {i}")))
        .collect();
    let writes = bodies.iter().map(|body| {
        let once = stream::iter([Ok::<_, std::io::Error>(body.clone())]);
        let mode = WriteMode::Update(vec![start.version()]);
        f.write(ALICE, "/pub/doc", once, mode, WriteLimits::default())
    });
    let results = futures_util::future::join_all(writes).await;
    let winners: Vec<usize> = (0..16).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(err, StoreError::PreconditionFailed { .. }),
                "{err}"
            );
        }
    }
    let won = &bodies[winners[0]];
    assert_eq!(f.read(ALICE, "/pub/doc").await.unwrap(), won.to_vec());
    let written = results[winners[0]].as_ref().unwrap();
    let current = f.store.head(ALICE, &p("/pub/doc")).await.unwrap().unwrap();
    assert_eq!(current.version(), written.version);
    // A delete of another version, or where a file must not exist, changes nothing.
    let doc = p("/pub/doc");
    for mode in [WriteMode::Update(vec![start.version()]), WriteMode::Create] {
        let err = f.store.delete_if(ALICE, &doc, &mode).await.unwrap_err();
        assert!(
            matches!(err, StoreError::PreconditionFailed { .. }),
            "{err}"
        );
    }
    assert_eq!(f.read(ALICE, "/pub/doc").await.unwrap(), won.to_vec());
    let mode = WriteMode::Update(vec![current.version()]);
    assert!(
        f.store
            .delete_if(ALICE, &doc, &mode)
            .await
            .unwrap()
            .is_some()
    );
    // No file: a mode that needs one refuses, one that does not finds nothing.
    let err = f.store.delete_if(ALICE, &doc, &mode).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { .. }),
        "{err}"
    );
    let absent = f.store.delete_if(ALICE, &doc, &WriteMode::Create).await;
    assert_eq!(absent.unwrap(), None);
    assert_eq!(f.used(ALICE).await, 0);
    assert_eq!(f.blob_count().await, 0);
}

async fn prepare_refuses_and_measures_room(f: Fixture) {
    let refused = |user: User, path: &'static str| {
        let store = f.store.clone();
        async move {
            let path = p(path);
            let plan = store.prepare(&user, &path, WriteMode::Overwrite);
            plan.await.unwrap().err()
        }
    };
    let mut user = f.writer(ALICE).await;
    user.limits.allowed_write_paths = Some(vec!["/pub/app/".into()]);
    assert_eq!(
        refused(user.clone(), "/pub/other").await,
        Some(Refusal::NotAllowed)
    );
    assert_eq!(refused(user.clone(), "/pub/app/x").await, None);
    user.disabled = true;
    assert_eq!(
        refused(user.clone(), "/pub/other").await,
        Some(Refusal::Disabled)
    );
    assert_eq!(refused(user, "/pub/app/x").await, Some(Refusal::Disabled));
    // The room counts the overhead of a new file, and what an overwrite frees.
    f.store
        .accounts()
        .set_quota(ALICE, Some(Quota::Bytes(1000)))
        .await
        .unwrap();
    let room = |path: &'static str| {
        let f = &f;
        async move {
            let user = f.writer(ALICE).await;
            let plan = f.store.prepare(&user, &p(path), WriteMode::Overwrite).await;
            plan.unwrap().unwrap().room()
        }
    };
    assert_eq!(room("/pub/a").await, Some(744));
    f.put(ALICE, "/pub/a", &[0; 100]).await.unwrap();
    assert_eq!(room("/pub/a").await, Some(744));
    assert_eq!(room("/pub/b").await, Some(388));
}

/// A user page of `limit` after `after` in `order`, as keys.
async fn user_page(
    f: &Fixture,
    after: Option<&str>,
    limit: u32,
    state: UserState,
    order: UserOrder,
    reverse: bool,
) -> Option<Vec<String>> {
    let page = UserPage {
        after,
        limit,
        state,
        order,
        reverse,
    };
    let users = f.store.accounts().list_users(&page).await.unwrap()?;
    Some(users.into_iter().map(|u| u.public_key).collect())
}

/// Every page of a user listing, walked with the last key of each page as the next cursor.
async fn walk_users(f: &Fixture, order: UserOrder, reverse: bool, state: UserState) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let after = all.last().cloned();
        let page = user_page(f, after.as_deref(), 2, state, order, reverse).await;
        let page = page.expect("a listed user is a known cursor");
        let done = page.len() < 2;
        all.extend(page);
        if done {
            return all;
        }
    }
}

async fn user_and_token_pages(f: Fixture) {
    // Six users besides ALICE and BOB; two share a sign-up time and two a usage, so the id breaks ties
    // (their keys are in no particular order, so that key order cannot pass for id order).
    let keys: Vec<String> = ["u3", "u5", "u0", "u4", "u1", "u2"]
        .map(str::to_string)
        .to_vec();
    let accounts = f.store.accounts();
    for (i, key) in keys.iter().enumerate() {
        let signed_up = 1_000 + [5, 3, 3, 9, 1, 7][i];
        accounts.create_user(key, None, signed_up).await.unwrap();
    }
    for (i, size) in [(0, 40), (2, 10), (3, 40), (5, 70)] {
        f.put(&keys[i], "/pub/f", &vec![0; size]).await.unwrap();
    }
    accounts.set_disabled(&keys[3], true).await.unwrap();
    accounts.set_disabled(&keys[4], true).await.unwrap();

    // By sign-up time: ALICE and BOB signed up now, long after the others; ties go by id (creation order).
    let by_time = [4, 1, 2, 0, 5, 3].map(|i| keys[i].clone());
    let expected: Vec<String> = by_time
        .iter()
        .cloned()
        .chain([ALICE.to_string(), BOB.to_string()])
        .collect();
    let walked = walk_users(&f, UserOrder::CreatedAt, false, UserState::All).await;
    assert_eq!(walked, expected);
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(
        walk_users(&f, UserOrder::CreatedAt, true, UserState::All).await,
        reversed
    );
    // By usage: ALICE, BOB, keys 1 and 4 use nothing (id order), then 2 (10), 0 and 3 (40, id order), 5.
    let by_usage: Vec<String> = [
        ALICE, BOB, &keys[1], &keys[4], &keys[2], &keys[0], &keys[3], &keys[5],
    ]
    .map(str::to_string)
    .to_vec();
    assert_eq!(
        walk_users(&f, UserOrder::UsedBytes, false, UserState::All).await,
        by_usage
    );
    let mut by_usage_reversed = by_usage.clone();
    by_usage_reversed.reverse();
    assert_eq!(
        walk_users(&f, UserOrder::UsedBytes, true, UserState::All).await,
        by_usage_reversed
    );
    // State filters; a cursor that is itself filtered out still marks a position.
    assert_eq!(
        walk_users(&f, UserOrder::CreatedAt, false, UserState::Disabled).await,
        [keys[4].clone(), keys[3].clone()]
    );
    assert_eq!(
        walk_users(&f, UserOrder::CreatedAt, false, UserState::Enabled).await,
        [1, 2, 0, 5]
            .map(|i| keys[i].clone())
            .into_iter()
            .chain([ALICE.to_string(), BOB.to_string()])
            .collect::<Vec<_>>()
    );
    let after_disabled = user_page(
        &f,
        Some(&keys[4]),
        10,
        UserState::Enabled,
        UserOrder::CreatedAt,
        false,
    )
    .await;
    assert_eq!(after_disabled.unwrap().first(), Some(&keys[1]));
    // A cursor naming no user; a user page of the whole table at once.
    let stranger = "stranger".to_string();
    let unknown = user_page(
        &f,
        Some(&stranger),
        10,
        UserState::All,
        UserOrder::CreatedAt,
        false,
    );
    assert_eq!(unknown.await, None);
    let all = user_page(&f, None, 100, UserState::All, UserOrder::CreatedAt, false).await;
    assert_eq!(all.unwrap(), expected);

    // Tokens by text; used and unused; the stored quota and limits come back with them.
    let limits = UserLimits {
        rate_read: Some("10mb/s".into()),
        ..UserLimits::default()
    };
    let texts = ["BBBB-0000-0000", "AAAA-0000-0000", "CCCC-0000-0000"];
    for (i, text) in texts.iter().enumerate() {
        let quota = (i == 0).then_some(Quota::Bytes(1 << 20));
        let token_limits = if i == 0 {
            limits.clone()
        } else {
            UserLimits::default()
        };
        accounts
            .create_signup_token(&signup_token(text, quota, &token_limits))
            .await
            .unwrap();
    }
    let redeemer = "redeemer".to_string();
    let redeemed_at = now_micros();
    let outcome = accounts
        .create_user(&redeemer, Some("CCCC-0000-0000"), redeemed_at)
        .await
        .unwrap();
    assert_eq!(outcome, SignupOutcome::Created);
    let tokens = |after: Option<&'static str>, limit: u32, state: TokenState| {
        let accounts = f.store.accounts();
        async move {
            let page = TokenPage {
                after,
                limit,
                state,
            };
            accounts.list_signup_tokens(&page).await.unwrap()
        }
    };
    let texts_of = |records: Vec<metadata::SignupTokenRecord>| {
        records.into_iter().map(|t| t.token).collect::<Vec<_>>()
    };
    let all = tokens(None, 10, TokenState::All).await;
    assert_eq!(
        texts_of(all.clone()),
        ["AAAA-0000-0000", "BBBB-0000-0000", "CCCC-0000-0000"]
    );
    assert_eq!(
        (all[1].quota, &all[1].limits),
        (Some(Quota::Bytes(1 << 20)), &limits)
    );
    assert_eq!((all[0].used_by.as_deref(), all[0].used_at), (None, None));
    assert_eq!(
        (all[2].used_by.as_deref(), all[2].used_at),
        (Some(redeemer.as_str()), Some(redeemed_at))
    );
    assert_eq!(
        texts_of(tokens(Some("AAAA-0000-0000"), 1, TokenState::All).await),
        ["BBBB-0000-0000"]
    );
    assert_eq!(
        texts_of(tokens(Some("BBBB-0000-0000"), 10, TokenState::All).await),
        ["CCCC-0000-0000"]
    );
    assert_eq!(
        texts_of(tokens(None, 10, TokenState::Used).await),
        ["CCCC-0000-0000"]
    );
    assert_eq!(
        texts_of(tokens(None, 10, TokenState::Unused).await),
        ["AAAA-0000-0000", "BBBB-0000-0000"]
    );
    // A cursor between tokens, which need not exist.
    assert_eq!(
        texts_of(tokens(Some("AZZZ-ZZZZ-ZZZZ"), 10, TokenState::Unused).await),
        ["BBBB-0000-0000"]
    );
}

macro_rules! conformance {
    ($($pair:ident: $db:ident + $blobs:ident;)*) => {$(
        mod $pair {
            use super::*;

            async fn fixture() -> Fixture {
                Fixture::new(Db::$db, Blobs::$blobs, Quota::Unlimited).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn write_overwrite_read_delete() { super::write_overwrite_read_delete(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn ranges_and_conditions() { super::ranges_and_conditions(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn listing_order_and_cursors() { super::listing_order_and_cursors(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn events_and_cursors() { super::events_and_cursors(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn event_bus_broadcasts_commits_in_order() { super::event_bus_broadcasts_commits_in_order(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn quota_accounting() { super::quota_accounting(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn default_quota_applies() {
                super::default_quota_applies(Fixture::new(Db::$db, Blobs::$blobs, Quota::Bytes(1000)).await).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn concurrent_writers_one_path() { super::concurrent_writers_one_path(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn concurrent_writers_many_paths() { super::concurrent_writers_many_paths(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn quota_holds_under_concurrent_writes() { super::quota_holds_under_concurrent_writes(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn failed_upload_leaves_nothing() { super::failed_upload_leaves_nothing(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn missing_blob_is_a_clear_error() { super::missing_blob_is_a_clear_error(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn sweep_deletes_nothing_while_held() { super::sweep_deletes_nothing_while_held(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_path_the_index_cannot_hold_fails_alone() { super::a_path_the_index_cannot_hold_fails_alone(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn users_sessions_and_tokens() { super::users_sessions_and_tokens(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn limits_travel_with_signup_tokens() { super::limits_travel_with_signup_tokens(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn conditional_writes() { super::conditional_writes(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn conditional_races_and_deletes() { super::conditional_races_and_deletes(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn prepare_refuses_and_measures_room() { super::prepare_refuses_and_measures_room(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn user_and_token_pages() { super::user_and_token_pages(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn pkarr_packets_and_counts() { super::pkarr_packets_and_counts(fixture().await).await }
        }
    )*};
}

conformance! {
    sqlite_fs: Sqlite + Fs;
    sqlite_memory: Sqlite + Memory;
    postgres_fs: Postgres + Fs;
    postgres_memory: Postgres + Memory;
    postgres_s3: Postgres + S3;
}
