//! The user keys republisher (OPERATIONS.md §6.8): keeps the PKARR records of this server's users alive on
//! the DHT while their clients are offline. Each run resolves every enabled user's packet, stores the
//! newest valid one in the metadata database, and puts it back on the DHT unchanged (the server cannot sign
//! for users). Unlike the reference, a record the DHT has forgotten is republished from the stored packet,
//! and users whose `_pubky` record names another homeserver (they moved away) are left alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use homestead_backends::Store;
use pkarr::dns::rdata::RData;
use pkarr::{PublicKey, ResolvePolicy, SignedPacket};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Users handled at once.
const CONCURRENCY: usize = 8;
/// Publish attempts per user; the waits between them double from [`FIRST_RETRY`].
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// What happened to one user's record in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Found on the DHT and put back.
    Republished,
    /// Missing from the DHT; put back from the stored packet.
    Restored,
    /// The record names another homeserver: not ours to keep.
    Elsewhere,
    /// Neither on the DHT nor stored.
    Missing,
    /// Every publish attempt failed.
    Failed,
}

/// Totals of the last run, for the log and the admin info.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records found and put back.
    pub republished: usize,
    /// Records restored from the database.
    pub restored: usize,
    /// Users who moved to another homeserver.
    pub elsewhere: usize,
    /// Users with no record anywhere.
    pub missing: usize,
    /// Users whose record could not be published.
    pub failed: usize,
}

impl Outcome {
    /// The metric label.
    fn label(self) -> &'static str {
        match self {
            Self::Republished => "republished",
            Self::Restored => "restored",
            Self::Elsewhere => "elsewhere",
            Self::Missing => "missing",
            Self::Failed => "failed",
        }
    }
}

impl RunSummary {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Republished => self.republished += 1,
            Outcome::Restored => self.restored += 1,
            Outcome::Elsewhere => self.elsewhere += 1,
            Outcome::Missing => self.missing += 1,
            Outcome::Failed => self.failed += 1,
        }
    }
}

/// A finished run: its totals and when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedRun {
    /// The run's totals.
    pub summary: RunSummary,
    /// When it ended, in Unix microseconds.
    pub finished_micros: i64,
}

/// The last finished run, shared with the admin info and the console.
pub type LastRun = Arc<Mutex<Option<FinishedRun>>>;

/// The homeserver a user's packet names in its `_pubky` HTTPS or SVCB record, as z32.
pub fn homeserver_of(packet: &SignedPacket) -> Option<String> {
    packet.resource_records("_pubky").find_map(|record| {
        let target = match &record.rdata {
            RData::HTTPS(https) => https.0.target.to_string(),
            RData::SVCB(svcb) => svcb.target.to_string(),
            _ => return None,
        };
        Some(target.trim_end_matches('.').to_string())
    })
}

/// Runs the republisher every `interval`, the first time after `delay`.
pub fn spawn(
    store: Store,
    client: pkarr::Client,
    server: PublicKey,
    delay: Duration,
    interval: Duration,
    last_run: LastRun,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        loop {
            match run(&store, &client, &server, &metrics).await {
                Ok(summary) => {
                    if summary.missing + summary.failed > 0 {
                        tracing::warn!(?summary, "republished user records, with failures");
                    } else {
                        tracing::info!(?summary, "republished user records");
                    }
                    *last_run.lock().unwrap_or_else(|p| p.into_inner()) = Some(FinishedRun {
                        summary,
                        finished_micros: homestead_backends::metadata::now_micros(),
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "user keys republisher: cannot list users; run skipped")
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// One run over every enabled user.
pub async fn run(
    store: &Store,
    client: &pkarr::Client,
    server: &PublicKey,
    metrics: &Metrics,
) -> Result<RunSummary, homestead_backends::StoreError> {
    let users = store.accounts().active_users_with_packets().await?;
    let server = server.to_string();
    let outcomes: Vec<Outcome> = futures_util::stream::iter(users)
        .map(|(user, stored)| {
            let server = server.clone();
            async move { republish(store, client, &server, &user, stored).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut summary = RunSummary::default();
    for outcome in outcomes {
        metrics.user_republishes.add(
            1,
            &[opentelemetry::KeyValue::new("outcome", outcome.label())],
        );
        summary.add(outcome);
    }
    Ok(summary)
}

async fn republish(
    store: &Store,
    client: &pkarr::Client,
    server: &str,
    user: &str,
    stored: Option<Vec<u8>>,
) -> Outcome {
    let Ok(key) = PublicKey::try_from(user) else {
        return Outcome::Missing;
    };
    let on_dht = client.resolve(&key, ResolvePolicy::NetworkOnly).await.ok();
    let stored = stored
        .and_then(|bytes| SignedPacket::deserialize(&bytes).ok())
        .filter(|packet| packet.public_key() == key);
    let (packet, restoring) = match (on_dht, stored) {
        (Some(found), Some(kept)) if kept.more_recent_than(&found) => (kept, true),
        (Some(found), kept) => {
            let newer = kept.is_none_or(|kept| found.more_recent_than(&kept));
            if newer
                && let Err(err) = store
                    .accounts()
                    .store_pkarr_packet(user, &found.serialize())
                    .await
            {
                tracing::warn!(user, %err, "cannot store a user's PKARR packet");
            }
            (found, false)
        }
        (None, Some(kept)) => (kept, true),
        (None, None) => return Outcome::Missing,
    };
    if homeserver_of(&packet).as_deref() != Some(server) {
        return Outcome::Elsewhere;
    }
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match client.publish(&packet).await {
            Ok(_) if restoring => return Outcome::Restored,
            Ok(_) => return Outcome::Republished,
            Err(err) if attempt == ATTEMPTS => {
                tracing::debug!(user, %err, "republishing a user's record failed");
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    Outcome::Failed
}

#[cfg(test)]
mod tests {
    use pkarr::Keypair;
    use pkarr::dns::Name;
    use pkarr::dns::rdata::SVCB;

    use super::*;

    #[test]
    fn finds_the_homeserver_a_user_points_to() {
        let server = Keypair::from_secret_key(&[0; 32]).public_key().to_string();
        let user = Keypair::from_secret_key(&[1; 32]);
        let pointing = SignedPacket::builder()
            .https(
                Name::new_unchecked("_pubky"),
                SVCB::new(0, Name::new_unchecked(&server)),
                3600,
            )
            .sign(&user)
            .unwrap();
        assert_eq!(homeserver_of(&pointing).as_deref(), Some(server.as_str()));
        let elsewhere = SignedPacket::builder()
            .a(Name::new_unchecked("www"), [127, 0, 0, 1].into(), 3600)
            .sign(&user)
            .unwrap();
        assert_eq!(homeserver_of(&elsewhere), None);
    }
}
