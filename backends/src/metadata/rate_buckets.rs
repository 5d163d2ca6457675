//! Request-rate buckets shared by the instances on one PostgreSQL database (migration 0007): each
//! limited request runs one statement that reads the database's clock, decides by GCRA whether the
//! bucket has room, and moves the bucket's theoretical arrival time if so, atomically under the row's
//! lock. Rows whose time has passed (full buckets) are deleted at most once a minute per instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use super::{Result, now_micros, query};

/// How often an instance deletes the rows of full buckets.
const PURGE_EVERY_US: i64 = 60_000_000;

/// Spends one request of bucket `$1` (interval `$2`, tolerance `$3`, microseconds). The `SET`
/// expressions see the row as it was; `RETURNING` sees it as written, and the clock of the statement.
const SPEND: &str = "WITH clock AS (SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) AS now_us) \
     INSERT INTO rate_limit_buckets AS b (bucket, tat_us, passed) \
     SELECT $1, now_us + $2, TRUE FROM clock \
     ON CONFLICT (bucket) DO UPDATE SET \
       passed = GREATEST(b.tat_us, EXCLUDED.tat_us - $2) - (EXCLUDED.tat_us - $2) <= $3, \
       tat_us = CASE WHEN GREATEST(b.tat_us, EXCLUDED.tat_us - $2) - (EXCLUDED.tat_us - $2) <= $3 \
                THEN GREATEST(b.tat_us, EXCLUDED.tat_us - $2) + $2 ELSE b.tat_us END \
     RETURNING passed, tat_us - (SELECT now_us FROM clock)";

/// Deletes the rows of full buckets.
const PURGE: &str = "DELETE FROM rate_limit_buckets \
     WHERE tat_us < CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)";

/// The buckets, on the serving pool of the database.
#[derive(Debug, Clone)]
pub struct RateBuckets {
    pool: PgPool,
    /// When this instance last purged, microseconds since the epoch on its own clock.
    purged_at: Arc<AtomicI64>,
}

impl RateBuckets {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            purged_at: Arc::new(AtomicI64::new(now_micros())),
        }
    }

    /// Spends one request of `bucket`, refilled one request per `interval` and admitting requests up to
    /// `tolerance` ahead of their time: None when it passes (and was counted), else how long to wait.
    pub async fn spend(
        &self,
        bucket: &str,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Option<Duration>> {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let tolerance_us = micros(tolerance);
        let (passed, ahead_us): (bool, i64) = sqlx::query_as(SPEND)
            .bind(bucket)
            .bind(micros(interval))
            .bind(tolerance_us)
            .fetch_one(&self.pool)
            .await
            .map_err(query("spend a rate-limit bucket"))?;
        self.purge_now_and_then();
        Ok((!passed)
            .then(|| Duration::from_micros(u64::try_from(ahead_us - tolerance_us).unwrap_or(0))))
    }

    /// Deletes the full buckets' rows in the background, once a minute at most.
    fn purge_now_and_then(&self) {
        let now = now_micros();
        let last = self.purged_at.load(Ordering::Relaxed);
        if now - last < PURGE_EVERY_US
            || self
                .purged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let buckets = self.clone();
        tokio::spawn(async move {
            if let Err(err) = buckets.purge().await {
                tracing::warn!(%err, "cannot delete full rate-limit buckets");
            }
        });
    }

    /// Deletes the rows of full buckets (their time has passed); returns how many.
    pub async fn purge(&self) -> Result<u64> {
        let done = sqlx::query(PURGE)
            .execute(&self.pool)
            .await
            .map_err(query("delete full rate-limit buckets"))?;
        Ok(done.rows_affected())
    }
}
