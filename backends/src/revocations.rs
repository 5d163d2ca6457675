//! Revoked credentials, announced to the live private event streams (PROTOCOL-0.17.md §15.4, §15.5).
//!
//! A revocation (a grant revoked, a cookie session signed out) is announced once it is committed. On
//! PostgreSQL the announcement is a `pg_notify('auth_revocations', …)` inside the revoking transaction,
//! so it is delivered with the commit and never for a rollback, to every instance listening; each
//! instance's listener turns it into a [`Revoked`] on its [`Revocations`] feed. On SQLite (one process)
//! the engine announces on the feed itself after the commit. When the listener is lost the feed says
//! [`Revoked::Unknown`] (every private stream ends) and refuses new subscribers until it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Signals a feed buffers for a subscriber; one that falls further behind re-checks its credential.
pub const FEED_CAPACITY: usize = 1024;

/// What was revoked. The payloads carry no secret: a grant by its id, a cookie session by the hex
/// SHA-256 of its secret (the key the database stores it under).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Revoked {
    /// A grant and every bearer of it.
    Grant(String),
    /// A cookie session, by the hex SHA-256 of its secret.
    CookieSession(String),
    /// Signals may have been lost: every private stream ends.
    #[serde(skip)]
    Unknown,
}

impl Revoked {
    /// A cookie session named by the SHA-256 of its secret.
    pub fn cookie_session(secret_hash: &[u8; 32]) -> Self {
        Self::CookieSession(secret_hash.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The notification payload, `{"kind":"grant","id":"…"}` or `{"kind":"cookie_session","id":"…"}`.
    pub(crate) fn payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A notification payload read back; anything unreadable is [`Revoked::Unknown`], which fails
    /// closed.
    pub(crate) fn parse(payload: &str) -> Self {
        serde_json::from_str(payload).unwrap_or(Self::Unknown)
    }
}

/// The feed of revocations the private streams of this process follow.
#[derive(Debug, Clone)]
pub struct Revocations {
    inner: Arc<Feed>,
}

#[derive(Debug)]
struct Feed {
    sender: broadcast::Sender<Revoked>,
    /// Whether every committed revocation reaches the feed (false while the listener is lost).
    listening: AtomicBool,
}

impl Revocations {
    /// A feed; `listening` says whether it already receives every revocation.
    pub(crate) fn new(listening: bool) -> Self {
        Self {
            inner: Arc::new(Feed {
                sender: broadcast::channel(FEED_CAPACITY).0,
                listening: AtomicBool::new(listening),
            }),
        }
    }

    /// A receiver of every revocation announced from now on; None while the feed is not listening
    /// (a private stream cannot be opened then).
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Revoked>> {
        let receiver = self.inner.sender.subscribe();
        // Checked after subscribing: a loss from here on reaches the receiver as `Unknown`.
        self.is_listening().then_some(receiver)
    }

    /// Whether every committed revocation reaches the feed.
    pub fn is_listening(&self) -> bool {
        self.inner.listening.load(Ordering::SeqCst)
    }

    /// Tells the subscribers about a committed revocation.
    pub(crate) fn announce(&self, revoked: Revoked) {
        // No subscriber is not an error.
        let _ = self.inner.sender.send(revoked);
    }

    /// Marks the feed as listening again, or as lost (which ends every private stream).
    pub(crate) fn set_listening(&self, listening: bool) {
        let was = self.inner.listening.swap(listening, Ordering::SeqCst);
        if was && !listening {
            self.announce(Revoked::Unknown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_follow_the_reference() {
        let grant = Revoked::Grant("AAECAwQFBgcICQoLDA0ODw".into());
        assert_eq!(
            grant.payload(),
            r#"{"kind":"grant","id":"AAECAwQFBgcICQoLDA0ODw"}"#
        );
        assert_eq!(Revoked::parse(&grant.payload()), grant);
        let cookie = Revoked::cookie_session(&[0xab; 32]);
        assert_eq!(
            cookie.payload(),
            format!(r#"{{"kind":"cookie_session","id":"{}"}}"#, "ab".repeat(32))
        );
        assert_eq!(Revoked::parse(&cookie.payload()), cookie);
        for junk in [
            "",
            "{}",
            r#"{"kind":"other","id":"x"}"#,
            r#"{"kind":"grant"}"#,
        ] {
            assert_eq!(Revoked::parse(junk), Revoked::Unknown, "{junk}");
        }
    }

    #[tokio::test]
    async fn a_lost_feed_ends_streams_and_refuses_new_ones() {
        let feed = Revocations::new(true);
        let mut receiver = feed.subscribe().expect("listening");
        feed.set_listening(false);
        assert_eq!(receiver.recv().await.unwrap(), Revoked::Unknown);
        assert!(feed.subscribe().is_none());
        feed.set_listening(true);
        assert!(feed.subscribe().is_some());
    }
}
