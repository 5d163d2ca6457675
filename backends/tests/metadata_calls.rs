//! Which metadata calls a write makes: a counting wrapper around the SQLite engine shows that a
//! prepared write reads the current entry at most once (through the entry cache, so not at all when it
//! is cached, nor when an unconditional write has no quota to measure) and never the user, and that
//! its commit is one group-commit call.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use homestead_backends::metadata::{
    self, Accounts, BearerRecord, Counts, DeleteOutcome, Entry, Event, EventFilter, Files,
    GrantRecord, Grants, LockRefresh, Locks, Metadata, Micros, MintBearer, MintOutcome, NewEntry,
    NewLock, NewSession, NewSignupToken, Operations, PathScan, PutOutcome, Quota, Result,
    SessionRecord, SignupOutcome, SignupTokenRecord, TakeOutcome, TokenPage, User, UserLimits,
    UserPage, WriteMode, now_micros,
};
use homestead_backends::revocations::Revocations;
use homestead_backends::store::{ReadOptions, WriteLimits};
use homestead_backends::{BlobStore, EntryPath, Store};
use homestead_config::{DatabaseKind, DatabaseUrl, Storage, StorageType};
use tokio::sync::Notify;

const ALICE: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

/// The engine, with a log of the calls made to it.
#[derive(Debug)]
struct Counting {
    inner: Box<dyn Metadata>,
    calls: Mutex<Vec<&'static str>>,
}

impl Counting {
    fn log(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }

    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// Implements `$trait` for [`Counting`]: each async method logs its name and hands the call on.
macro_rules! counted {
    ($trait:ident { $($name:ident($($arg:ident: $type:ty),*) -> $output:ty;)* } $($plain:item)*) => {
        #[async_trait]
        impl $trait for Counting {
            $(async fn $name(&self, $($arg: $type),*) -> Result<$output> {
                self.log(stringify!($name));
                self.inner.$name($($arg),*).await
            })*
            $($plain)*
        }
    };
}

counted!(Files {
    entry(public_key: &str, path: &EntryPath) -> Option<Entry>;
    commit_put(public_key: &str, entry: &NewEntry, default_quota: Quota) -> PutOutcome;
    commit_delete(public_key: &str, path: &EntryPath, mode: &WriteMode, now: Micros) -> DeleteOutcome;
    scan_paths(public_key: &str, scan: &PathScan) -> Vec<String>;
    unreferenced_blobs(keys: &[String]) -> Vec<String>;
    events(cursor: u64, limit: u32, filter: &EventFilter) -> Vec<Event>;
    event_id_at(created_at: Micros) -> Option<u64>;
} fn event_hints(&self) -> Option<Arc<Notify>> { self.inner.event_hints() });

counted!(Accounts {
    create_user(public_key: &str, token: Option<&str>, now: Micros) -> SignupOutcome;
    user(public_key: &str) -> Option<User>;
    set_disabled(public_key: &str, disabled: bool) -> bool;
    set_quota(public_key: &str, quota: Option<Quota>) -> bool;
    set_limits(public_key: &str, quota: Option<Quota>, limits: &UserLimits) -> bool;
    list_users(page: &UserPage<'_>) -> Option<Vec<User>>;
    create_signup_token(token: &NewSignupToken<'_>) -> ();
    signup_token(token: &str) -> Option<SignupTokenRecord>;
    list_signup_tokens(page: &TokenPage<'_>) -> Vec<SignupTokenRecord>;
    create_session(session: &NewSession<'_>) -> bool;
    session(secret_hash: &[u8; 32]) -> Option<SessionRecord>;
    delete_session(secret_hash: &[u8; 32]) -> bool;
    use_auth_token(token_id: &[u8], expires_at: Micros, now: Micros) -> bool;
    active_users_with_packets() -> Vec<(String, Option<Vec<u8>>)>;
    store_pkarr_packet(public_key: &str, packet: &[u8]) -> ();
});

counted!(Grants {
    use_pop_nonce(nonce: &str, now: i64, window: i64) -> bool;
    mint_bearer(mint: &MintBearer<'_>) -> MintOutcome;
    bearer(token_hash: &[u8; 32], now: i64) -> Option<BearerRecord>;
    grant(id: &str) -> Option<GrantRecord>;
    revoke_grant(id: &str, now: i64) -> bool;
    live_grants(public_key: &str, now: i64) -> Vec<GrantRecord>;
} fn revocations(&self) -> Revocations { self.inner.revocations() });

counted!(Locks {
    take_lock(lock: &NewLock<'_>) -> TakeOutcome;
    refresh_lock(refresh: &LockRefresh<'_>) -> Option<String>;
    release_lock(owner: &str, path: &EntryPath, token: &str) -> bool;
    live_lock(owner: &str, path: &EntryPath) -> Option<String>;
    keep_lock_alive(token: &str, seconds: u32) -> bool;
});

counted!(Operations {
    counts() -> Counts;
    ping() -> ();
}
fn kind(&self) -> DatabaseKind { self.inner.kind() }
fn pool_stats(&self) -> Vec<(&'static str, u32, u32)> { self.inner.pool_stats() }
fn rate_buckets(&self) -> Option<metadata::RateBuckets> { self.inner.rate_buckets() }
async fn close(&self) { self.inner.close().await });

async fn write(store: &Store, user: &User, path: &EntryPath, body: &'static [u8]) {
    let plan = store.prepare(user, path, WriteMode::Overwrite).await;
    let plan = plan.unwrap().unwrap();
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(body))]);
    store
        .commit(plan, body, WriteLimits::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_write_reads_the_current_entry_once_and_never_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("meta.db"));
    let counting = Arc::new(Counting {
        inner: metadata::open(&url).await.unwrap(),
        calls: Mutex::default(),
    });
    let storage = Storage {
        kind: StorageType::InMemory,
        ..Storage::default()
    };
    let blobs = BlobStore::open(&storage, &dir.path().join("blobs")).unwrap();
    let store = Store::new(
        counting.clone(),
        &blobs,
        Quota::Bytes(1 << 20),
        homestead_backends::entry_cache::TTL,
    );
    let accounts = store.accounts();
    accounts
        .create_user(ALICE, None, now_micros())
        .await
        .unwrap();
    // The session lookup reads the user; the write gets it from there.
    let user = accounts.user(ALICE).await.unwrap().unwrap();
    let path = EntryPath::parse("/pub/file").unwrap();
    counting.take();

    write(&store, &user, &path, b"first").await;
    assert_eq!(counting.take(), ["entry", "commit_put"], "a new file");
    write(&store, &user, &path, b"second").await;
    assert_eq!(counting.take(), ["entry", "commit_put"], "an overwrite");
    // A file read lately is in the entry cache: the write reads nothing before its commit.
    store
        .get(ALICE, &path, &ReadOptions::default())
        .await
        .unwrap();
    counting.take();
    write(&store, &user, &path, b"third").await;
    assert_eq!(counting.take(), ["commit_put"], "a cached file");
    // Under no quota, an unconditional write needs nothing of the current entry: no read at all.
    let unlimited = User {
        quota: Some(Quota::Unlimited),
        ..user
    };
    let fresh = EntryPath::parse("/pub/fresh").unwrap();
    write(&store, &unlimited, &fresh, b"fourth").await;
    assert_eq!(counting.take(), ["commit_put"], "no quota");
}
