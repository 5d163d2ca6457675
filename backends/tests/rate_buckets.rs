//! The request-rate buckets instances share on PostgreSQL (migration 0007): a burst passes and the next
//! request learns how long to wait, racing requests of one bucket pass exactly as many times as it
//! holds, full buckets' rows are purged and a bucket in use is kept; SQLite keeps none (its buckets stay
//! in memory). PostgreSQL is real (`TEST_PG_ADMIN_URL`, set by scripts/test).

mod test_database;

use std::time::Duration;

use homestead_backends::metadata::{self, RateBuckets};
use test_database::{Db, TestDatabase};

async fn buckets() -> (RateBuckets, TestDatabase) {
    let db = TestDatabase::new(Db::Postgres, "rate_buckets_");
    let metadata = metadata::open(&db.url).await.unwrap();
    let buckets = metadata
        .rate_buckets()
        .expect("PostgreSQL shares its buckets");
    (buckets, db)
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_burst_passes_then_the_wait_is_told() {
    let (buckets, _db) = buckets().await;
    // 2 per minute, burst 2: interval 30 s, tolerance 30 s.
    let half = MINUTE / 2;
    assert_eq!(buckets.spend("a", half, half).await.unwrap(), None);
    assert_eq!(buckets.spend("a", half, half).await.unwrap(), None);
    let wait = buckets
        .spend("a", half, half)
        .await
        .unwrap()
        .expect("refused");
    assert!(wait > Duration::from_secs(29) && wait <= half, "{wait:?}");
    // A refusal does not move the bucket: the next one waits as long.
    let again = buckets
        .spend("a", half, half)
        .await
        .unwrap()
        .expect("refused");
    assert!(again <= wait, "{again:?} > {wait:?}");
    // Another bucket is untouched.
    assert_eq!(buckets.spend("b", half, half).await.unwrap(), None);
}

#[tokio::test]
async fn racing_requests_pass_as_often_as_the_bucket_holds() {
    let (buckets, _db) = buckets().await;
    // Burst 5 per hour.
    let interval = Duration::from_secs(720);
    let tolerance = interval * 4;
    let racers: Vec<_> = (0..40)
        .map(|_| {
            let buckets = buckets.clone();
            tokio::spawn(async move { buckets.spend("race", interval, tolerance).await.unwrap() })
        })
        .collect();
    let mut passed = 0;
    for racer in racers {
        if racer.await.unwrap().is_none() {
            passed += 1;
        }
    }
    assert_eq!(passed, 5);
}

#[tokio::test]
async fn full_buckets_are_purged_and_others_kept() {
    let (buckets, _db) = buckets().await;
    let quick = Duration::from_millis(1);
    assert_eq!(buckets.spend("quick", quick, quick).await.unwrap(), None);
    assert_eq!(
        buckets.spend("slow", MINUTE, Duration::ZERO).await.unwrap(),
        None
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Only "quick" can fill up again: at most one row goes.
        let purged = buckets.purge().await.unwrap();
        assert!(purged <= 1);
        if purged == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the full bucket stays"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        buckets
            .spend("slow", MINUTE, Duration::ZERO)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn sqlite_keeps_no_shared_buckets() {
    let db = TestDatabase::new(Db::Sqlite, "unused");
    let metadata = metadata::open(&db.url).await.unwrap();
    assert!(db.dir.path().join("meta.db").exists());
    assert!(metadata.rate_buckets().is_none());
}
