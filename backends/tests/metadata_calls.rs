//! Which metadata calls a write makes: a counting wrapper around the SQLite engine shows that a
//! prepared write reads the current entry at most once (through the entry cache, so not at all when it
//! is cached, nor when an unconditional write has no quota to measure) and never the user, and that
//! its commit is one group-commit call.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use homestead_backends::metadata::{
    self, Accounts, Counts, Deleted, Entry, Event, EventFilter, Files, Metadata, Micros, NewEntry,
    Operations, PathScan, PutOutcome, Quota, Result, SessionRecord, SignupOutcome,
    SignupTokenRecord, User, UserLimits, WriteMode, now_micros,
};
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

#[async_trait]
impl Files for Counting {
    async fn entry(&self, public_key: &str, path: &EntryPath) -> Result<Option<Entry>> {
        self.log("entry");
        self.inner.entry(public_key, path).await
    }
    async fn commit_put(
        &self,
        public_key: &str,
        entry: &NewEntry,
        mode: &WriteMode,
        default_quota: Quota,
    ) -> Result<PutOutcome> {
        self.log("commit_put");
        self.inner
            .commit_put(public_key, entry, mode, default_quota)
            .await
    }
    async fn commit_delete(
        &self,
        public_key: &str,
        path: &EntryPath,
        now: Micros,
    ) -> Result<Option<Deleted>> {
        self.log("commit_delete");
        self.inner.commit_delete(public_key, path, now).await
    }
    async fn scan_paths(&self, public_key: &str, scan: &PathScan) -> Result<Vec<String>> {
        self.log("scan_paths");
        self.inner.scan_paths(public_key, scan).await
    }
    async fn unreferenced_blobs(&self, keys: &[String]) -> Result<Vec<String>> {
        self.log("unreferenced_blobs");
        self.inner.unreferenced_blobs(keys).await
    }
    async fn events(&self, cursor: u64, limit: u32, filter: &EventFilter) -> Result<Vec<Event>> {
        self.log("events");
        self.inner.events(cursor, limit, filter).await
    }
    async fn event_id_at(&self, created_at: Micros) -> Result<Option<u64>> {
        self.log("event_id_at");
        self.inner.event_id_at(created_at).await
    }
    fn event_hints(&self) -> Option<Arc<Notify>> {
        self.inner.event_hints()
    }
}

#[async_trait]
impl Accounts for Counting {
    async fn create_user(
        &self,
        public_key: &str,
        token: Option<&str>,
        now: Micros,
    ) -> Result<SignupOutcome> {
        self.log("create_user");
        self.inner.create_user(public_key, token, now).await
    }
    async fn user(&self, public_key: &str) -> Result<Option<User>> {
        self.log("user");
        self.inner.user(public_key).await
    }
    async fn set_disabled(&self, public_key: &str, disabled: bool) -> Result<bool> {
        self.log("set_disabled");
        self.inner.set_disabled(public_key, disabled).await
    }
    async fn set_quota(&self, public_key: &str, quota: Option<Quota>) -> Result<bool> {
        self.log("set_quota");
        self.inner.set_quota(public_key, quota).await
    }
    async fn set_limits(
        &self,
        public_key: &str,
        quota: Option<Quota>,
        limits: &UserLimits,
    ) -> Result<bool> {
        self.log("set_limits");
        self.inner.set_limits(public_key, quota, limits).await
    }
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>> {
        self.log("list_users");
        self.inner.list_users(after, limit).await
    }
    async fn create_signup_token(
        &self,
        token: &str,
        now: Micros,
        quota: Option<Quota>,
        limits: &UserLimits,
    ) -> Result<()> {
        self.log("create_signup_token");
        self.inner
            .create_signup_token(token, now, quota, limits)
            .await
    }
    async fn signup_token(&self, token: &str) -> Result<Option<SignupTokenRecord>> {
        self.log("signup_token");
        self.inner.signup_token(token).await
    }
    async fn list_signup_tokens(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SignupTokenRecord>> {
        self.log("list_signup_tokens");
        self.inner.list_signup_tokens(after, limit).await
    }
    async fn create_session(
        &self,
        secret_hash: &[u8; 32],
        public_key: &str,
        capabilities: &str,
        now: Micros,
    ) -> Result<bool> {
        self.log("create_session");
        self.inner
            .create_session(secret_hash, public_key, capabilities, now)
            .await
    }
    async fn session(&self, secret_hash: &[u8; 32]) -> Result<Option<SessionRecord>> {
        self.log("session");
        self.inner.session(secret_hash).await
    }
    async fn delete_session(&self, secret_hash: &[u8; 32]) -> Result<bool> {
        self.log("delete_session");
        self.inner.delete_session(secret_hash).await
    }
    async fn use_auth_token(
        &self,
        token_id: &[u8],
        expires_at: Micros,
        now: Micros,
    ) -> Result<bool> {
        self.log("use_auth_token");
        self.inner.use_auth_token(token_id, expires_at, now).await
    }
    async fn active_users_with_packets(&self) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        self.log("active_users_with_packets");
        self.inner.active_users_with_packets().await
    }
    async fn store_pkarr_packet(&self, public_key: &str, packet: &[u8]) -> Result<()> {
        self.log("store_pkarr_packet");
        self.inner.store_pkarr_packet(public_key, packet).await
    }
}

#[async_trait]
impl Operations for Counting {
    fn kind(&self) -> DatabaseKind {
        self.inner.kind()
    }
    async fn counts(&self) -> Result<Counts> {
        self.log("counts");
        self.inner.counts().await
    }
    fn pool_stats(&self) -> Vec<(&'static str, u32, u32)> {
        self.inner.pool_stats()
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

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
