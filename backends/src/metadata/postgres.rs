//! PostgreSQL: production and scale-out. Several instances may share one database; a write locks its
//! user's row, and event inserts take a transaction-scoped advisory lock so that ids become visible in
//! increasing order (OPERATIONS.md §12.3).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use homestead_config::DatabaseKind;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, Postgres};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::sql::{impl_metadata, lock_statements, read_for_put, read_grant, upsert_entry};
use super::{MetadataError, Result};
use crate::revocations::{Revocations, Revoked};

/// Metadata in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresMetadata {
    read: PgPool,
    write: PgPool,
    /// The health probe's own connection, so that a busy pool never reads as a database that is down.
    probe: PgPool,
    hints: Arc<Notify>,
    /// Revocations from every instance, fed by their own `LISTEN` connection.
    revocations: Revocations,
    /// The two `LISTEN` tasks: events and revocations.
    listeners: [AbortHandle; 2],
    puts: super::batch_queue::Queue<super::group_commit::PendingPut>,
    nonces: super::batch_queue::Queue<super::pop_nonces::PendingNonce>,
}

/// The longest any statement of the serving connections may run before PostgreSQL cancels it.
const STATEMENT_TIMEOUT: &str = "10s";

/// The channel instances announce committed events on (the reference's).
const EVENTS_CHANNEL: &str = "events";
/// The channel revocations are announced on (the reference's; `NOTIFY_REVOCATION` names it too).
const REVOCATIONS_CHANNEL: &str = "auth_revocations";

impl PostgresMetadata {
    const LOCK_GRANT: &'static str = concat!(read_grant!(), " FOR UPDATE OF g");
    const READ_FOR_PUT: &'static str = concat!(read_for_put!(), " FOR UPDATE OF u");
    /// The entry, the usage and the event in one statement (its parts cannot see each other's writes,
    /// and need not: they touch different tables).
    const WRITE_PUT: &'static str = concat!(
        "WITH entry AS (",
        upsert_entry!(),
        "), usage AS (UPDATE users SET used_bytes = $8 WHERE id = $1) \
         INSERT INTO events (op, user_id, path, content_hash, created_at) VALUES ('PUT', $1, $2, $3, $7) RETURNING id"
    );
    const WRITE_PUT_WHOLE: bool = true;
    /// The event-order lock (the reference's key: "events" in ASCII), and a `NOTIFY` that PostgreSQL
    /// delivers when the transaction commits (and drops when it rolls back).
    const BEGIN_WRITE: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(7311142570157080576), pg_notify('events', '')");
    /// Delivered to every instance's revocation listener when the revoking transaction commits.
    const NOTIFY_REVOCATION: Option<&'static str> =
        Some("SELECT pg_notify('auth_revocations', $1)");
    /// Reads and writes share one pool.
    const SEPARATE_WRITE_POOL: bool = false;
    // The database's clock in milliseconds: `now()` is the start of the statement (each lock statement
    // runs alone), the same for every row it compares.
    lock_statements!("CAST(FLOOR(EXTRACT(EPOCH FROM now()) * 1000) AS BIGINT)");

    fn hints(&self) -> Option<Arc<Notify>> {
        Some(self.hints.clone())
    }

    /// Buckets in the shared database: every instance on it counts the same requests.
    fn shared_rate_buckets(&self) -> Option<super::RateBuckets> {
        Some(super::RateBuckets::new(self.write.clone()))
    }

    fn stop_listening(&self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }

    /// Connects and migrates; `shown` is the URL with its password hidden, for errors.
    pub async fn open(url: &str, shown: &str) -> Result<Self> {
        let connect = |source| MetadataError::Connect {
            url: shown.to_string(),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(connect)?;
        // Migrations may take long on a large database: they run on a connection without the
        // statement timeout of the serving pool.
        let migrating = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(connect)?;
        sqlx::migrate!("../migrations/postgres")
            .run(&migrating)
            .await
            .map_err(|source| MetadataError::Migrate {
                url: shown.to_string(),
                source,
            })?;
        migrating.close().await;
        let serving = options
            .clone()
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Short: while the database is down, sqlx retries refused connections until this runs
            // out, and the health watcher needs a moment to notice before requests are refused at once.
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(serving.clone())
            .await
            .map_err(connect)?;
        let probe = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy_with(serving);
        let hints = Arc::new(Notify::new());
        // The two LISTEN connections come from a pool of their own: a busy serving pool never keeps
        // them from reconnecting.
        let listening = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let revocations = Revocations::new(false);
        let listeners = [
            tokio::spawn(listen(listening.clone(), hints.clone())).abort_handle(),
            tokio::spawn(listen_revocations(listening, revocations.clone())).abort_handle(),
        ];
        Ok(Self {
            read: pool.clone(),
            puts: super::group_commit::start(pool.clone()),
            nonces: super::pop_nonces::start(pool.clone()),
            write: pool,
            probe,
            hints,
            revocations,
            listeners,
        })
    }
}

/// Keeps a `LISTEN events` connection open and turns each notification into a wake-up. After a lost
/// connection it wakes once (events may have been missed), waits a second and listens again.
async fn listen(pool: PgPool, hints: Arc<Notify>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(EVENTS_CHANNEL).await {
                Ok(()) => {
                    hints.notify_one();
                    // `Ok(None)`: the connection was lost and is re-established by the next call;
                    // notifications may have been missed meanwhile, so wake anyway.
                    while let Ok(notification) = listener.try_recv().await {
                        if notification.is_none() {
                            tracing::warn!(
                                "the LISTEN connection for events was lost; reconnecting"
                            );
                        }
                        hints.notify_one();
                    }
                }
                Err(err) => tracing::warn!(%err, "LISTEN events failed"),
            },
            Err(err) => tracing::warn!(%err, "cannot open the LISTEN connection for events"),
        }
        hints.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps a `LISTEN auth_revocations` connection open, separate from the events one, and turns each
/// notification into a [`Revoked`] on the feed. Fails closed: a lost connection or an unreadable
/// payload ends every private stream (the feed announces [`Revoked::Unknown`]), and new private streams
/// are refused until the connection listens again, tried once a second.
async fn listen_revocations(pool: PgPool, feed: Revocations) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(REVOCATIONS_CHANNEL).await {
                Ok(()) => {
                    feed.set_listening(true);
                    while let Ok(Some(notification)) = listener.try_recv().await {
                        let revoked = Revoked::parse(notification.payload());
                        if revoked == Revoked::Unknown {
                            tracing::warn!(
                                payload = notification.payload(),
                                "an unreadable revocation; ending every private stream"
                            );
                        }
                        feed.announce(revoked);
                    }
                    tracing::warn!(
                        "the LISTEN connection for revocations was lost; private streams end"
                    );
                }
                Err(err) => tracing::warn!(%err, "LISTEN auth_revocations failed"),
            },
            Err(err) => {
                tracing::warn!(%err, "cannot open the LISTEN connection for revocations");
            }
        }
        feed.set_listening(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl_metadata!(PostgresMetadata, Postgres, DatabaseKind::Postgres);
