//! The grant store (PROTOCOL-0.17 §7–§9) on both engines: grants stored once per id, one live bearer
//! per grant, ownership of a grant id, revocation and its announcement to private streams (§15.5), bearer
//! resolution, and the PoP nonce set under a race and under a flood. PostgreSQL is real (`TEST_PG_ADMIN_URL`, set by scripts/test); each test gets a
//! fresh database or SQLite file. Times are Unix seconds around a fixed instant, never the clock.

mod store_fixture;
mod test_database;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use homestead_backends::metadata::{
    self, BearerRecord, GrantRecord, MintBearer, MintOutcome, NewGrant, NewSession,
};
use homestead_backends::revocations::{Revocations, Revoked};
use homestead_config::DatabaseKind;
use store_fixture::{ALICE, BOB, Fixture, STRANGER};
use test_database::Db;
use tokio::sync::broadcast;

/// Client keys.
const CNF: &str = "pxnu33x7jtpx9ar1ytsi4yxbp6a5o36gwhffs8zoxmbuptici1jy";
const OTHER_CNF: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewy";
/// "Now" in every test, Unix seconds.
const T: i64 = 1_800_000_000;
/// The nonce window of §7.
const WINDOW: i64 = 360;

impl Fixture {
    /// Runs one statement on a connection of its own, past the Store (which deletes no users).
    async fn execute(&self, statement: &str) {
        let url = &self.database.url;
        match url.kind() {
            DatabaseKind::Postgres => {
                let pool = sqlx::PgPool::connect(url.as_str()).await.unwrap();
                sqlx::query(statement).execute(&pool).await.unwrap();
                pool.close().await;
            }
            DatabaseKind::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url.as_str())
                    .unwrap()
                    .foreign_keys(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                sqlx::query(statement).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    async fn mint(&self, grant: &NewGrant<'_>, hash: u8, expires_at: i64, now: i64) -> MintOutcome {
        let mint = MintBearer {
            grant: *grant,
            token_hash: &[hash; 32],
            expires_at,
            now,
        };
        self.store.grants().mint_bearer(&mint).await.unwrap()
    }

    /// [`Self::mint`] at `T` of a bearer valid for an hour.
    async fn mint_now(&self, grant: &NewGrant<'_>, hash: u8) -> MintOutcome {
        self.mint(grant, hash, T + 3600, T).await
    }

    async fn bearer(&self, hash: u8, now: i64) -> Option<BearerRecord> {
        self.store.grants().bearer(&[hash; 32], now).await.unwrap()
    }

    async fn stored(&self, id: &str) -> Option<GrantRecord> {
        self.store.grants().grant(id).await.unwrap()
    }

    async fn live_ids(&self, public_key: &str, now: i64) -> Vec<String> {
        let live = self.store.grants().live_grants(public_key, now).await;
        live.unwrap().into_iter().map(|g| g.id).collect()
    }

    async fn nonce(&self, nonce: &str, now: i64) -> bool {
        self.store
            .grants()
            .use_pop_nonce(nonce, now, WINDOW)
            .await
            .unwrap()
    }

    async fn nonce_count(&self) -> u64 {
        self.store.operations().counts().await.unwrap().pop_nonces
    }
}

/// ALICE's grant `id` for client key [`CNF`], issued a minute ago, valid for a day.
fn grant(id: &str) -> NewGrant<'_> {
    NewGrant {
        id,
        public_key: ALICE,
        client_id: "app.example",
        cnf: CNF,
        capabilities: "/pub/app/:rw,/priv/app/:r",
        issued_at: T - 60,
        expires_at: T + 86_400,
    }
}

/// The record of `new` first stored at `created_at`.
fn record(new: &NewGrant, created_at: i64) -> GrantRecord {
    GrantRecord {
        id: new.id.to_string(),
        public_key: new.public_key.to_string(),
        client_id: new.client_id.to_string(),
        cnf: new.cnf.to_string(),
        capabilities: new.capabilities.to_string(),
        issued_at: new.issued_at,
        expires_at: new.expires_at,
        revoked_at: None,
        created_at,
    }
}

async fn a_grant_is_stored_once_and_its_bearer_resolves(f: Fixture) {
    let g1 = grant("g1");
    assert_eq!(f.stored("g1").await, None);
    let stored = record(&g1, T);
    assert_eq!(
        f.mint_now(&g1, 1).await,
        MintOutcome::Minted(stored.clone())
    );
    assert_eq!(f.stored("g1").await, Some(stored.clone()));
    let alice = f.store.accounts().user(ALICE).await.unwrap().unwrap();
    assert_eq!(
        f.bearer(1, T).await,
        Some(BearerRecord {
            grant: stored.clone(),
            expires_at: T + 3600,
            user: alice,
        })
    );
    // A refresh presenting other capabilities and expiry keeps the first row: its capabilities, its
    // expiry and the time of the first exchange.
    let changed = NewGrant {
        capabilities: "/:rw",
        expires_at: T + 2 * 86_400,
        client_id: "other.example",
        ..g1
    };
    assert_eq!(
        f.mint(&changed, 2, T + 3700, T + 100).await,
        MintOutcome::Minted(stored.clone())
    );
    assert_eq!(f.stored("g1").await, Some(stored.clone()));
    let refreshed = f.bearer(2, T + 100).await.unwrap();
    assert_eq!((refreshed.grant, refreshed.expires_at), (stored, T + 3700));
    // No user with the key: nothing is stored.
    let strangers = NewGrant {
        public_key: STRANGER,
        ..grant("g2")
    };
    assert_eq!(f.mint_now(&strangers, 3).await, MintOutcome::NoUser);
    assert_eq!(f.stored("g2").await, None);
    assert_eq!(f.bearer(3, T).await, None);
    assert_eq!(f.rows("grants").await, 1);
}

async fn one_live_bearer_per_grant(f: Fixture) {
    let g1 = grant("g1");
    let g2 = grant("g2");
    for hash in 1..=3 {
        assert!(matches!(
            f.mint_now(&g1, hash).await,
            MintOutcome::Minted(_)
        ));
    }
    assert!(matches!(f.mint_now(&g2, 9).await, MintOutcome::Minted(_)));
    // Each mint killed the grant's earlier bearers, and only that grant's.
    assert_eq!(f.bearer(1, T).await, None);
    assert_eq!(f.bearer(2, T).await, None);
    assert_eq!(f.bearer(3, T).await.unwrap().grant.id, "g1");
    assert_eq!(f.bearer(9, T).await.unwrap().grant.id, "g2");
    assert_eq!(f.rows("grant_sessions").await, 2);
}

async fn concurrent_mints_of_one_grant_leave_one_bearer(f: Fixture) {
    let g1 = grant("g1");
    let mints = (1..=8u8).map(|hash| f.mint(&g1, hash, T + 3600, T));
    let outcomes = futures_util::future::join_all(mints).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, MintOutcome::Minted(g) if g.created_at == T)),
        "{outcomes:?}"
    );
    let mut live = 0;
    for hash in 1..=8 {
        live += usize::from(f.bearer(hash, T).await.is_some());
    }
    assert_eq!(live, 1);
    assert_eq!(f.rows("grant_sessions").await, 1);
    assert_eq!(f.rows("grants").await, 1);
}

async fn a_grant_id_of_another_owner_is_refused_before_any_bearer(f: Fixture) {
    let g1 = grant("g1");
    assert!(matches!(f.mint_now(&g1, 1).await, MintOutcome::Minted(_)));
    // The same jti from another user, and from the same user with another client key.
    let bobs = NewGrant {
        public_key: BOB,
        ..g1
    };
    assert_eq!(f.mint_now(&bobs, 2).await, MintOutcome::NotOwner);
    let rebound = NewGrant {
        cnf: OTHER_CNF,
        ..g1
    };
    assert_eq!(f.mint_now(&rebound, 3).await, MintOutcome::NotOwner);
    // The first grant's bearer and row are untouched; no bearer was stored for the others.
    let first = f.bearer(1, T).await.unwrap();
    assert_eq!(
        (first.grant, first.user.public_key),
        (record(&g1, T), ALICE.to_string())
    );
    assert_eq!(f.bearer(2, T).await, None);
    assert_eq!(f.bearer(3, T).await, None);
    // A missing user wins over the ownership check (§9.2 step 5 before step 6).
    let strangers = NewGrant {
        public_key: STRANGER,
        ..g1
    };
    assert_eq!(f.mint_now(&strangers, 4).await, MintOutcome::NoUser);
    // Ownership before revocation.
    assert!(f.store.grants().revoke_grant("g1", T).await.unwrap());
    assert_eq!(f.mint_now(&bobs, 5).await, MintOutcome::NotOwner);
}

async fn revocation_kills_bearers_and_later_mints(f: Fixture) {
    let g1 = grant("g1");
    assert!(matches!(f.mint_now(&g1, 1).await, MintOutcome::Minted(_)));
    assert!(f.store.grants().revoke_grant("g1", T + 10).await.unwrap());
    assert_eq!(f.bearer(1, T + 10).await, None);
    assert_eq!(f.rows("grant_sessions").await, 0);
    assert_eq!(f.stored("g1").await.unwrap().revoked_at, Some(T + 10));
    assert_eq!(f.mint(&g1, 2, T + 3600, T + 20).await, MintOutcome::Revoked);
    assert_eq!(f.bearer(2, T + 20).await, None);
    // Revoking again moves the time.
    assert!(f.store.grants().revoke_grant("g1", T + 30).await.unwrap());
    assert_eq!(f.stored("g1").await.unwrap().revoked_at, Some(T + 30));
    assert!(
        !f.store
            .grants()
            .revoke_grant("missing", T + 30)
            .await
            .unwrap()
    );
}

/// A receiver of the feed once it listens (PostgreSQL's listener connects in the background).
async fn listening(feed: &Revocations) -> broadcast::Receiver<Revoked> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(receiver) = feed.subscribe() {
            return receiver;
        }
        assert!(Instant::now() < deadline, "the feed listens within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next signal within 5 s.
async fn signal(receiver: &mut broadcast::Receiver<Revoked>) -> Revoked {
    tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .expect("a signal within 5 s")
        .unwrap()
}

async fn committed_revocations_reach_the_feed(f: Fixture) {
    let mut signals = listening(&f.store.grants().revocations()).await;
    let g1 = grant("g1");
    assert!(matches!(f.mint_now(&g1, 1).await, MintOutcome::Minted(_)));
    assert!(f.store.grants().revoke_grant("g1", T).await.unwrap());
    // Nothing revoked, nothing announced.
    assert!(!f.store.grants().revoke_grant("missing", T).await.unwrap());
    let accounts = f.store.accounts();
    let session = NewSession {
        secret_hash: &[7; 32],
        public_key: ALICE,
        capabilities: "/:rw",
        created_at: 1,
    };
    assert!(accounts.create_session(&session).await.unwrap());
    assert!(accounts.delete_session(&[7; 32]).await.unwrap());
    assert!(!accounts.delete_session(&[7; 32]).await.unwrap());
    assert_eq!(signal(&mut signals).await, Revoked::Grant("g1".into()));
    assert_eq!(
        signal(&mut signals).await,
        Revoked::cookie_session(&[7; 32])
    );
    let more = tokio::time::timeout(Duration::from_millis(300), signals.recv()).await;
    assert!(more.is_err(), "one signal per revocation: {more:?}");
}

async fn expired_bearers_and_grants_do_not_resolve(f: Fixture) {
    let short = NewGrant {
        expires_at: T + 100,
        ..grant("short")
    };
    // A bearer valid until T+50, then one valid past its grant's expiry.
    assert!(matches!(
        f.mint(&short, 1, T + 50, T).await,
        MintOutcome::Minted(_)
    ));
    assert!(f.bearer(1, T + 49).await.is_some());
    assert_eq!(f.bearer(1, T + 50).await, None);
    assert!(matches!(
        f.mint(&short, 2, T + 3600, T + 60).await,
        MintOutcome::Minted(_)
    ));
    assert!(f.bearer(2, T + 99).await.is_some());
    assert_eq!(f.bearer(2, T + 100).await, None);
    // The stored expiry counts, not the presented one; the bearer in place stays.
    let longer = NewGrant {
        expires_at: T + 86_400,
        ..short
    };
    assert_eq!(
        f.mint(&longer, 3, T + 3600, T + 100).await,
        MintOutcome::Expired
    );
    assert_eq!(f.rows("grant_sessions").await, 1);
    assert_eq!(f.bearer(3, T + 99).await, None);
}

async fn live_grants_in_the_order_they_were_stored(f: Fixture) {
    // "Zz" < "aa" in byte order, not in a natural-language collation.
    for (hash, id, now) in [
        (1, "aa", T),
        (2, "Zz", T),
        (3, "first", T - 5),
        (4, "later", T + 1),
    ] {
        assert!(matches!(
            f.mint(&grant(id), hash, T + 3600, now).await,
            MintOutcome::Minted(_)
        ));
    }
    let soon = NewGrant {
        expires_at: T + 20,
        ..grant("soon")
    };
    assert!(matches!(
        f.mint(&soon, 5, T + 20, T + 2).await,
        MintOutcome::Minted(_)
    ));
    let bobs = NewGrant {
        public_key: BOB,
        ..grant("bobs")
    };
    assert!(matches!(f.mint_now(&bobs, 6).await, MintOutcome::Minted(_)));
    assert_eq!(
        f.live_ids(ALICE, T + 10).await,
        ["first", "Zz", "aa", "later", "soon"]
    );
    assert_eq!(
        f.live_ids(ALICE, T + 20).await,
        ["first", "Zz", "aa", "later"]
    );
    assert!(f.store.grants().revoke_grant("aa", T + 21).await.unwrap());
    assert_eq!(f.live_ids(ALICE, T + 21).await, ["first", "Zz", "later"]);
    assert_eq!(f.live_ids(BOB, T + 21).await, ["bobs"]);
    let all = f.store.grants().live_grants(ALICE, T + 21).await.unwrap();
    assert_eq!(all[0], record(&grant("first"), T - 5));
    assert!(f.live_ids(STRANGER, T).await.is_empty());
}

async fn deleting_a_user_deletes_their_grants_and_bearers(f: Fixture) {
    let alices = grant("alices");
    let bobs = NewGrant {
        public_key: BOB,
        ..grant("bobs")
    };
    assert!(matches!(
        f.mint_now(&alices, 1).await,
        MintOutcome::Minted(_)
    ));
    assert!(matches!(f.mint_now(&bobs, 2).await, MintOutcome::Minted(_)));
    f.execute(&format!("DELETE FROM users WHERE public_key = '{ALICE}'"))
        .await;
    assert_eq!(f.stored("alices").await, None);
    assert_eq!(f.bearer(1, T).await, None);
    assert!(f.live_ids(ALICE, T).await.is_empty());
    assert_eq!(f.rows("grants").await, 1);
    assert_eq!(f.rows("grant_sessions").await, 1);
    assert_eq!(f.bearer(2, T).await.unwrap().user.public_key, BOB);
    // The grant id is free again; the deleted user cannot mint.
    assert_eq!(f.mint_now(&alices, 3).await, MintOutcome::NoUser);
}

async fn a_nonce_is_accepted_once_per_window(f: Fixture) {
    assert!(f.nonce("n1", T).await);
    assert!(!f.nonce("n1", T).await);
    assert!(!f.nonce("n1", T + 100).await);
    assert!(f.nonce("n2", T + 100).await);
    // Still held at exactly the window's end, purged one second later.
    assert!(!f.nonce("n1", T + WINDOW).await);
    assert_eq!(f.nonce_count().await, 2);
    assert!(f.nonce("n1", T + WINDOW + 1).await);
    assert_eq!(f.nonce_count().await, 2, "n2 is still within its window");
    assert!(!f.nonce("n2", T + WINDOW + 1).await);
}

async fn concurrent_uses_of_one_nonce_admit_exactly_one(f: Fixture) {
    // Half of the checks go through a second handle on the database, as from another instance.
    let other: Arc<dyn metadata::Metadata> =
        Arc::from(metadata::open(&f.database.url).await.unwrap());
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let (store, other) = (f.store.clone(), other.clone());
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                match n % 2 {
                    0 => other.use_pop_nonce("race", T, WINDOW).await,
                    _ => store.grants().use_pop_nonce("race", T, WINDOW).await,
                }
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap().unwrap());
    }
    assert_eq!(admitted, 1);
    assert_eq!(f.nonce_count().await, 1);
}

async fn a_flood_of_nonces_is_purged_after_the_window(f: Fixture) {
    const FLOOD: usize = 100_000;
    let started = Instant::now();
    let admitted: usize = stream::iter(0..FLOOD)
        .map(|n| {
            let store = f.store.clone();
            // Spread over the window, as a flood arriving over time would be.
            let now = T + (n % 300) as i64;
            async move {
                let nonce = format!("flood-{n}");
                store.grants().use_pop_nonce(&nonce, now, WINDOW).await
            }
        })
        // Many checks in flight, as from many connections: they share statements.
        .buffer_unordered(256)
        .map(|used| usize::from(used.unwrap()))
        .fold(0, |sum, one| async move { sum + one })
        .await;
    let recorded = started.elapsed();
    assert_eq!(admitted, FLOOD);
    assert_eq!(f.nonce_count().await, FLOOD as u64);
    assert!(!f.nonce("flood-99999", T + 300).await);
    let started = Instant::now();
    assert!(f.nonce("after", T + 300 + WINDOW).await);
    let purged = started.elapsed();
    assert_eq!(f.nonce_count().await, 1);
    eprintln!("{FLOOD} nonces recorded in {recorded:?}; the purge call took {purged:?}");
}

macro_rules! grant_store {
    ($($engine:ident: $db:ident;)*) => {$(
        mod $engine {
            use super::*;

            async fn fixture() -> Fixture {
                Fixture::new(Db::$db, "homestead_grants_").await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn a_grant_is_stored_once_and_its_bearer_resolves() { super::a_grant_is_stored_once_and_its_bearer_resolves(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn one_live_bearer_per_grant() { super::one_live_bearer_per_grant(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn concurrent_mints_of_one_grant_leave_one_bearer() { super::concurrent_mints_of_one_grant_leave_one_bearer(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_grant_id_of_another_owner_is_refused_before_any_bearer() { super::a_grant_id_of_another_owner_is_refused_before_any_bearer(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn revocation_kills_bearers_and_later_mints() { super::revocation_kills_bearers_and_later_mints(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn committed_revocations_reach_the_feed() { super::committed_revocations_reach_the_feed(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn expired_bearers_and_grants_do_not_resolve() { super::expired_bearers_and_grants_do_not_resolve(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn live_grants_in_the_order_they_were_stored() { super::live_grants_in_the_order_they_were_stored(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn deleting_a_user_deletes_their_grants_and_bearers() { super::deleting_a_user_deletes_their_grants_and_bearers(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_nonce_is_accepted_once_per_window() { super::a_nonce_is_accepted_once_per_window(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn concurrent_uses_of_one_nonce_admit_exactly_one() { super::concurrent_uses_of_one_nonce_admit_exactly_one(fixture().await).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn a_flood_of_nonces_is_purged_after_the_window() { super::a_flood_of_nonces_is_purged_after_the_window(fixture().await).await }
        }
    )*};
}

grant_store! {
    sqlite: Sqlite;
    postgres: Postgres;
}

/// PostgreSQL: a lost revocation listener ends every private stream (`Unknown`) and refuses new ones
/// until it listens again, which it does by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_listener_fails_closed_then_recovers() {
    let f = Fixture::new(Db::Postgres, "homestead_grants_").await;
    let feed = f.store.grants().revocations();
    let mut signals = listening(&feed).await;
    f.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND query ILIKE '%LISTEN%auth_revocations%'",
    )
    .await;
    assert_eq!(signal(&mut signals).await, Revoked::Unknown);
    assert!(
        feed.subscribe().is_none(),
        "no new private stream while lost"
    );
    let mut again = listening(&feed).await;
    assert!(f.store.grants().revoke_grant("none", T).await.is_ok());
    let g2 = grant("g2");
    assert!(matches!(f.mint_now(&g2, 2).await, MintOutcome::Minted(_)));
    assert!(f.store.grants().revoke_grant("g2", T).await.unwrap());
    assert_eq!(signal(&mut again).await, Revoked::Grant("g2".into()));
}
