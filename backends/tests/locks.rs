//! The lock store (PROTOCOL-0.17 §17) on both engines: one live lock per user and path, refreshes and
//! releases by token, lifetimes that end on time (the database's clock), a keep-alive that never
//! shortens, the sweep of expired locks, and one winner among racing lockers. PostgreSQL is real
//! (`TEST_PG_ADMIN_URL`, set by scripts/test); each test gets a fresh database or SQLite file.

mod store_fixture;
mod test_database;

use std::time::Duration;

use homestead_backends::EntryPath;
use homestead_backends::metadata::{LockRefresh, Locks, NewLock, TakeOutcome};
use store_fixture::{ALICE, BOB, Fixture, STRANGER};
use test_database::Db;

impl Fixture {
    fn locks(&self) -> &dyn Locks {
        self.store.locks()
    }

    async fn take(&self, owner: &str, path: &str, token: &str, seconds: u32) -> TakeOutcome {
        let path = p(path);
        self.locks()
            .take_lock(&NewLock {
                owner,
                path: &path,
                token,
                seconds,
            })
            .await
            .unwrap()
    }

    async fn live(&self, owner: &str, path: &str) -> Option<String> {
        self.locks().live_lock(owner, &p(path)).await.unwrap()
    }

    async fn holds(&self, owner: &str, path: &str, token: &str) -> bool {
        let path = p(path);
        self.locks()
            .live_lock(owner, &path)
            .await
            .unwrap()
            .as_deref()
            == Some(token)
    }

    async fn refresh(&self, path: &str, tokens: &[&str], seconds: u32) -> Option<String> {
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        let path = p(path);
        self.locks()
            .refresh_lock(&LockRefresh {
                owner: ALICE,
                path: &path,
                tokens: &tokens,
                seconds,
            })
            .await
            .unwrap()
    }

    async fn release(&self, owner: &str, path: &str, token: &str) -> bool {
        let path = p(path);
        self.locks()
            .release_lock(owner, &path, token)
            .await
            .unwrap()
    }

    async fn keep_alive(&self, token: &str, seconds: u32) -> bool {
        self.locks().keep_lock_alive(token, seconds).await.unwrap()
    }
}

fn p(path: &str) -> EntryPath {
    EntryPath::parse(path).unwrap()
}

async fn one_live_lock_per_user_and_path(f: Fixture) {
    assert_eq!(f.take(ALICE, "/pub/a", "t1", 30).await, TakeOutcome::Taken);
    // The holder too is refused while the lock lives; nothing changes.
    assert_eq!(f.take(ALICE, "/pub/a", "t2", 30).await, TakeOutcome::Locked);
    assert_eq!(f.live(ALICE, "/pub/a").await.as_deref(), Some("t1"));
    // Other paths and other users' paths are free; a key without account gets nothing.
    assert_eq!(f.take(ALICE, "/pub/b", "t3", 30).await, TakeOutcome::Taken);
    assert_eq!(f.take(BOB, "/pub/a", "t4", 30).await, TakeOutcome::Taken);
    let stranger = f.take(STRANGER, "/pub/a", "t5", 30).await;
    assert_eq!(stranger, TakeOutcome::NoSuchUser);
    assert_eq!(f.live(ALICE, "/pub/c").await, None);
    // A token is held on its own path only.
    assert!(f.holds(ALICE, "/pub/a", "t1").await);
    assert!(!f.holds(ALICE, "/pub/b", "t1").await);
    assert!(!f.holds(BOB, "/pub/a", "t1").await);
    assert!(!f.holds(ALICE, "/pub/a", "t2").await);
    assert_eq!(f.rows("entry_locks").await, 3);
}

async fn refresh_and_release_by_token(f: Fixture) {
    assert_eq!(f.take(ALICE, "/pub/a", "t1", 30).await, TakeOutcome::Taken);
    assert_eq!(
        f.refresh("/pub/a", &["x", "t1"], 1).await.as_deref(),
        Some("t1")
    );
    assert_eq!(f.refresh("/pub/a", &["x"], 30).await, None);
    assert_eq!(f.refresh("/pub/b", &["t1"], 30).await, None);
    // The refresh shortened it to a second: it ends on time.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(f.live(ALICE, "/pub/a").await, None);
    assert_eq!(f.refresh("/pub/a", &["t1"], 30).await, None);
    // Released by token and path, expired or not; once.
    assert!(!f.release(ALICE, "/pub/b", "t1").await);
    assert!(!f.release(BOB, "/pub/a", "t1").await);
    assert!(f.release(ALICE, "/pub/a", "t1").await);
    assert!(!f.release(ALICE, "/pub/a", "t1").await);
    assert_eq!(f.take(ALICE, "/pub/a", "t2", 30).await, TakeOutcome::Taken);
    assert!(f.release(ALICE, "/pub/a", "t2").await);
    assert_eq!(f.rows("entry_locks").await, 0);
}

async fn expired_locks_are_replaced_and_swept(f: Fixture) {
    assert_eq!(f.take(ALICE, "/pub/a", "t1", 1).await, TakeOutcome::Taken);
    assert_eq!(f.take(ALICE, "/pub/b", "t2", 1).await, TakeOutcome::Taken);
    assert_eq!(f.take(ALICE, "/pub/c", "t3", 60).await, TakeOutcome::Taken);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Expired: not live, not held, not kept alive; still a row until a lock is taken.
    assert_eq!(f.live(ALICE, "/pub/a").await, None);
    assert!(!f.holds(ALICE, "/pub/a", "t1").await);
    assert!(!f.keep_alive("t1", 30).await);
    assert_eq!(f.rows("entry_locks").await, 3);
    // A new lock replaces the expired one on its path and sweeps the others.
    assert_eq!(f.take(ALICE, "/pub/a", "t4", 30).await, TakeOutcome::Taken);
    assert_eq!(f.live(ALICE, "/pub/a").await.as_deref(), Some("t4"));
    assert_eq!(f.rows("entry_locks").await, 2);
    assert!(!f.release(ALICE, "/pub/b", "t2").await);
    assert!(f.holds(ALICE, "/pub/c", "t3").await);
}

async fn keep_alive_extends_and_never_shortens(f: Fixture) {
    assert_eq!(
        f.take(ALICE, "/pub/a", "short", 1).await,
        TakeOutcome::Taken
    );
    assert_eq!(
        f.take(ALICE, "/pub/b", "long", 60).await,
        TakeOutcome::Taken
    );
    assert!(f.keep_alive("short", 3).await);
    assert!(f.keep_alive("long", 1).await);
    assert!(!f.keep_alive("unknown", 30).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(f.holds(ALICE, "/pub/a", "short").await, "extended");
    assert!(f.holds(ALICE, "/pub/b", "long").await, "not shortened");
}

async fn racing_lockers_get_one_lock(f: Fixture) {
    // An expired lock on the path, so that the racers also race to replace it.
    assert_eq!(
        f.take(ALICE, "/pub/race", "old", 1).await,
        TakeOutcome::Taken
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let store = f.store.clone();
    let racers = (0..16).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let token = format!("racer{n}");
            let path = p("/pub/race");
            let outcome = store
                .locks()
                .take_lock(&NewLock {
                    owner: ALICE,
                    path: &path,
                    token: &token,
                    seconds: 30,
                })
                .await;
            (token, outcome.unwrap())
        })
    });
    let outcomes = futures_util::future::join_all(racers).await;
    let winners: Vec<String> = outcomes
        .into_iter()
        .map(Result::unwrap)
        .filter(|(_, outcome)| *outcome == TakeOutcome::Taken)
        .map(|(token, _)| token)
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(f.live(ALICE, "/pub/race").await, Some(winners[0].clone()));
}

macro_rules! lock_store {
    ($($engine:ident: $db:ident;)*) => {$(
        mod $engine {
            use super::*;

            async fn fixture() -> Fixture {
                Fixture::new(Db::$db, "homestead_locks_").await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn one_live_lock_per_user_and_path() { super::one_live_lock_per_user_and_path(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn refresh_and_release_by_token() { super::refresh_and_release_by_token(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn expired_locks_are_replaced_and_swept() { super::expired_locks_are_replaced_and_swept(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn keep_alive_extends_and_never_shortens() { super::keep_alive_extends_and_never_shortens(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn racing_lockers_get_one_lock() { super::racing_lockers_get_one_lock(fixture().await).await }
        }
    )*};
}

lock_store! {
    sqlite: Sqlite;
    postgres: Postgres;
}
