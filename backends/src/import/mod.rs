//! Importing a reference homeserver (pubky-homeserver 0.9.3 or 0.17.1) in place: its PostgreSQL
//! database, read only, and its filesystem storage tree into Homestead's metadata database and blob
//! store. Users, signup tokens, cookie sessions, grants with their bearer sessions and PoP nonces,
//! entries with their bodies, and the event log under the same ids.
//!
//! Every step inserts or brings up to date, so a second run changes nothing and an interrupted run is
//! finished by the next. A body is written to its blob before its entry names it, under a key derived
//! from the user, the path and the hash, so a rerun finds the same key. A body whose file is missing or
//! does not match the entry's length and hash is reported and not imported: its entry is left out.

mod bodies;
mod reference;
mod target;

use std::path::Path;

pub use bodies::{Bodies, Brought};
pub use reference::{ReferenceDb, Schema};
pub use target::TargetDb;

use crate::metadata::{Quota, UserLimits};
use crate::path::EntryPath;
use crate::snapshot::encode_hex;

/// Rows read per page.
const PAGE: i64 = 500;

/// Why an import stopped. Each message names what and where, on one line.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The reference's database could not be read, or is not one this import knows.
    #[error("reference database: {what}{}", with_cause(.cause))]
    Reference {
        /// What, naming the database.
        what: String,
        /// Why.
        cause: Option<sqlx::Error>,
    },
    /// Homestead's database could not be written.
    #[error("target database: {what}{}", with_cause(.cause))]
    Target {
        /// What, naming the database.
        what: String,
        /// Why.
        cause: Option<sqlx::Error>,
    },
    /// The target holds data that did not come from this reference.
    #[error("target database: {0}")]
    NotOurs(String),
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The blob store refused a write.
    #[error("blob store: writing {key}: {}", one_line(.cause))]
    Blob {
        /// The blob key.
        key: String,
        /// Why.
        cause: Box<object_store::Error>,
    },
}

fn with_cause(cause: &Option<sqlx::Error>) -> String {
    cause
        .as_ref()
        .map(|e| format!(": {}", one_line(e)))
        .unwrap_or_default()
}

/// An error with its causes, on one line (the import's errors end the command with one line).
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text.replace('\n', " ")
}

impl ImportError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            cause: source,
        }
    }

    /// Names the file a blob error was about (the blob key alone does not say which path).
    fn of_file(self, public_key: &str, path: &str) -> Self {
        match self {
            Self::Blob { key, cause } => Self::Blob {
                key: format!("{public_key}{path} (blob {key})"),
                cause,
            },
            other => other,
        }
    }

    fn blob(key: &str, source: object_store::Error) -> Self {
        Self::Blob {
            key: key.to_string(),
            cause: Box::new(source),
        }
    }
}

/// The six quota columns of a reference user or signup token (OPERATIONS.md §12.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefLimits {
    /// NULL: default; -1: unlimited; n: n MiB.
    pub storage_mb: Option<i32>,
    /// NULL: default; `unlimited` or a bandwidth.
    pub rate_read: Option<String>,
    /// Same, for writes.
    pub rate_write: Option<String>,
    /// NULL: none.
    pub rate_read_burst: Option<i32>,
    /// NULL: none.
    pub rate_write_burst: Option<i32>,
    /// NULL: unrestricted; else a JSON array (unreadable JSON means `[]`, read-only, as the reference reads it).
    pub allowed_write_paths: Option<String>,
}

impl RefLimits {
    /// Homestead's two columns: the quota in bytes (-1 unlimited) and the limits JSON.
    pub fn converted(&self) -> (Option<i64>, Option<String>) {
        let quota = self.storage_mb.map(|mb| match u64::try_from(mb) {
            Ok(mb) => Quota::Bytes(mb << 20),
            Err(_) => Quota::Unlimited,
        });
        let burst = |b: Option<i32>| b.and_then(|b| u32::try_from(b).ok());
        let limits = UserLimits {
            rate_read: self.rate_read.clone(),
            rate_write: self.rate_write.clone(),
            rate_read_burst: burst(self.rate_read_burst),
            rate_write_burst: burst(self.rate_write_burst),
            allowed_write_paths: self
                .allowed_write_paths
                .as_ref()
                .map(|json| serde_json::from_str(json).unwrap_or_default()),
        };
        (quota.map(Quota::to_column), limits.to_column())
    }
}

/// A reference user.
#[derive(Debug, Clone)]
pub struct RefUser {
    /// The reference's row id (the page cursor).
    pub id: i64,
    /// z32.
    pub public_key: String,
    /// Disabled users may not write.
    pub disabled: bool,
    /// Sign-up time, microseconds.
    pub created_at: i64,
    /// Quota and limits.
    pub limits: RefLimits,
}

/// A reference signup token.
#[derive(Debug, Clone)]
pub struct RefToken {
    /// The token text.
    pub token: String,
    /// Creation time, microseconds.
    pub created_at: i64,
    /// Who redeemed it.
    pub used_by: Option<String>,
    /// When, microseconds.
    pub used_at: Option<i64>,
    /// What its user gets.
    pub limits: RefLimits,
}

/// A reference cookie session.
#[derive(Debug, Clone)]
pub struct RefSession {
    /// The reference's row id (the page cursor).
    pub id: i64,
    /// The cookie value (Homestead keeps only its SHA-256).
    pub secret: String,
    /// Whose.
    pub public_key: String,
    /// Capabilities string.
    pub capabilities: String,
    /// Creation time, microseconds.
    pub created_at: i64,
}

/// A reference entry.
#[derive(Debug, Clone)]
pub struct RefEntry {
    /// The reference's row id (the page cursor).
    pub id: i64,
    /// Whose.
    pub public_key: String,
    /// Path without the user key, `/pub/...`.
    pub path: String,
    /// BLAKE3 of the body.
    pub content_hash: Vec<u8>,
    /// Length of the body.
    pub content_length: i64,
    /// Content type.
    pub content_type: String,
    /// First write, microseconds.
    pub created_at: i64,
    /// Last write, microseconds.
    pub modified_at: i64,
}

/// A reference event.
#[derive(Debug, Clone)]
pub struct RefEvent {
    /// Its id, the public cursor, kept as is.
    pub id: i64,
    /// `PUT` or `DEL`.
    pub op: String,
    /// Whose.
    pub public_key: String,
    /// Path without the user key.
    pub path: String,
    /// BLAKE3 of the new body (PUT).
    pub content_hash: Option<Vec<u8>>,
    /// When, microseconds.
    pub created_at: i64,
}

/// A reference bearer session (0.17.1); times in seconds.
#[derive(Debug, Clone)]
pub struct RefGrantSession {
    /// SHA-256 of the bearer.
    pub token_hash: Vec<u8>,
    /// Its grant.
    pub grant_id: String,
    /// Expiry.
    pub expires_at: i64,
    /// Creation.
    pub created_at: i64,
}

/// What an import did, and what it is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Files the reference lists, and their bytes.
    pub files_total: u64,
    /// Bytes of those files.
    pub bytes_total: u64,
    /// Files dealt with so far (brought, found already brought, or mismatched).
    pub files_done: u64,
    /// Bytes of those files.
    pub bytes_done: u64,
    /// Bodies copied by this run.
    pub copied: u64,
    /// Bodies hard-linked by this run.
    pub linked: u64,
    /// Files an earlier run brought already.
    pub already: u64,
    /// Users.
    pub users: u64,
    /// Signup tokens.
    pub tokens: u64,
    /// Cookie sessions.
    pub sessions: u64,
    /// Grants.
    pub grants: u64,
    /// Bearer sessions.
    pub grant_sessions: u64,
    /// Events.
    pub events: u64,
    /// Bodies not imported, each `<z32><path>: reason`.
    pub mismatches: Vec<String>,
}

/// The blob key of an imported body: derived from the user, the path and the hash, so that a rerun
/// finds it again, and a new body at the same path never replaces an old blob in place.
pub fn blob_key(public_key: &str, path: &str, hash: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(path.as_bytes());
    hasher.update(&[0]);
    hasher.update(hash);
    let digest = hasher.finalize();
    format!("{public_key}/{}", encode_hex(&digest.as_bytes()[..16]))
}

/// Whether `key` is a public key as users are named: 52 characters of z-base-32 (so it can name a
/// directory: no `/`, no `.`).
fn is_public_key(key: &str) -> bool {
    const Z32: &[u8] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    key.len() == 52 && key.bytes().all(|b| Z32.contains(&b))
}

/// Whether `path` is a file path as Homestead stores it: normalized, not a directory.
fn is_file_path(path: &str) -> bool {
    EntryPath::parse(path).is_ok_and(|parsed| parsed.as_str() == path)
}

/// Checks that the target is empty or holds an earlier import of this reference (so ids cannot clash):
/// every user of the target is a reference user, and the target's newest event is the reference's
/// event of that id.
pub async fn check_target(source: &mut ReferenceDb, target: &TargetDb) -> Result<(), ImportError> {
    let mut keys = Vec::new();
    target.user_keys(|key| keys.push(key)).await?;
    for key in keys {
        if !source.has_user(&key).await? {
            return Err(ImportError::NotOurs(format!(
                "it holds user {key}, who is not on the reference; import into an empty database"
            )));
        }
    }
    let newest = target.max_event_id().await?;
    if newest > 0 {
        let theirs = source.events(newest - 1, 1).await?;
        let ours = target.event(newest).await?;
        let same = match (theirs.first(), &ours) {
            (Some(t), Some((op, key, path))) => {
                t.id == newest && &t.op == op && &t.public_key == key && &t.path == path
            }
            _ => false,
        };
        if !same {
            return Err(ImportError::NotOurs(format!(
                "its event {newest} is not the reference's event {newest}; import into an empty database"
            )));
        }
    }
    Ok(())
}

/// Copies everything, calling `progress` after each file. Returns the tally; mismatched bodies are
/// listed in it, not errors.
pub async fn run(
    source: &mut ReferenceDb,
    target: &TargetDb,
    bodies: &Bodies,
    mut progress: impl FnMut(&Tally),
) -> Result<Tally, ImportError> {
    let mut tally = Tally::default();
    (tally.files_total, tally.bytes_total) = source.entry_totals().await?;
    check_target(source, target).await?;
    progress(&tally);

    let mut after = 0;
    loop {
        let users = source.users(after, PAGE).await?;
        let Some(last) = users.last() else { break };
        after = last.id;
        for user in &users {
            target.put_user(user).await?;
            tally.users += 1;
        }
    }
    let mut after = String::new();
    loop {
        let tokens = source.tokens(&after, PAGE).await?;
        let Some(last) = tokens.last() else { break };
        after = last.token.clone();
        for token in &tokens {
            target.put_token(token).await?;
            tally.tokens += 1;
        }
    }
    let mut after = 0;
    loop {
        let sessions = source.sessions(after, PAGE).await?;
        let Some(last) = sessions.last() else { break };
        after = last.id;
        for session in &sessions {
            let hash = sha256(session.secret.as_bytes());
            target
                .put_session(
                    &hash,
                    &session.public_key,
                    &session.capabilities,
                    session.created_at,
                )
                .await?;
            tally.sessions += 1;
        }
    }
    import_grants(source, target, &mut tally).await?;

    let mut after = 0;
    loop {
        let entries = source.entries(after, PAGE).await?;
        let Some(last) = entries.last() else { break };
        after = last.id;
        for entry in &entries {
            import_entry(entry, target, bodies, &mut tally).await?;
            progress(&tally);
        }
    }

    let mut after = 0;
    loop {
        let events = source.events(after, PAGE).await?;
        let Some(last) = events.last() else { break };
        after = last.id;
        target.put_events(&events).await?;
        tally.events += events.len() as u64;
    }
    target.finish().await?;
    progress(&tally);
    Ok(tally)
}

async fn import_grants(
    source: &mut ReferenceDb,
    target: &TargetDb,
    tally: &mut Tally,
) -> Result<(), ImportError> {
    let mut after = String::new();
    loop {
        let grants = source.grants(&after, PAGE).await?;
        let Some(last) = grants.last() else { break };
        after = last.id.clone();
        for grant in &grants {
            target.put_grant(grant).await?;
            tally.grants += 1;
        }
    }
    let mut after = String::new();
    loop {
        let sessions = source.grant_sessions(&after, PAGE).await?;
        let Some(last) = sessions.last() else { break };
        after = last.grant_id.clone();
        for session in &sessions {
            target.put_grant_session(session).await?;
            tally.grant_sessions += 1;
        }
    }
    let mut after = String::new();
    loop {
        let nonces = source.pop_nonces(&after, PAGE).await?;
        let Some((last, _)) = nonces.last() else {
            break;
        };
        after = last.clone();
        for (nonce, created_at) in &nonces {
            target.put_pop_nonce(nonce, *created_at).await?;
        }
    }
    Ok(())
}

async fn import_entry(
    entry: &RefEntry,
    target: &TargetDb,
    bodies: &Bodies,
    tally: &mut Tally,
) -> Result<(), ImportError> {
    let key = blob_key(&entry.public_key, &entry.path, &entry.content_hash);
    tally.files_done += 1;
    tally.bytes_done += entry.content_length.max(0) as u64;
    if !is_file_path(&entry.path) {
        tally.mismatches.push(format!(
            "{}{}: not a normalized file path",
            entry.public_key, entry.path
        ));
        return Ok(());
    }
    let stored = target.entry(&entry.public_key, &entry.path).await?;
    if let Some((hash, blob)) = &stored
        && hash == &entry.content_hash
        && blob == &key
    {
        // Brought by an earlier run (the blob is written before the entry names it); its times and
        // type are set again, in case the reference's changed.
        target.put_entry(entry, &key).await?;
        tally.already += 1;
        return Ok(());
    }
    let brought = bodies
        .bring(
            &entry.public_key,
            &entry.path,
            entry.content_length,
            &entry.content_hash,
            &key,
        )
        .await
        .map_err(|err| err.of_file(&entry.public_key, &entry.path))?;
    match brought {
        Brought::Mismatch(reason) => {
            tally
                .mismatches
                .push(format!("{}{}: {reason}", entry.public_key, entry.path));
            return Ok(());
        }
        Brought::Copied => tally.copied += 1,
        Brought::Linked => tally.linked += 1,
    }
    target.put_entry(entry, &key).await?;
    if let Some((_, old)) = stored
        && old != key
    {
        let _ = bodies.forget(&old).await;
    }
    Ok(())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_limits_become_homestead_columns() {
        assert_eq!(RefLimits::default().converted(), (None, None));
        let limits = RefLimits {
            storage_mb: Some(3),
            rate_read: Some("10mb/s".into()),
            rate_write: Some("unlimited".into()),
            rate_read_burst: Some(5),
            rate_write_burst: None,
            allowed_write_paths: Some("[\"/pub/app/\"]".into()),
        };
        let (quota, json) = limits.converted();
        assert_eq!(quota, Some(3 << 20));
        let json: serde_json::Value = serde_json::from_str(&json.unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rate_read": "10mb/s", "rate_write": "unlimited",
                "rate_read_burst": 5, "allowed_write_paths": ["/pub/app/"]})
        );
        let unlimited = RefLimits {
            storage_mb: Some(-1),
            allowed_write_paths: Some("not json".into()),
            ..RefLimits::default()
        };
        let (quota, json) = unlimited.converted();
        assert_eq!(quota, Some(-1));
        assert_eq!(json.as_deref(), Some("{\"allowed_write_paths\":[]}"));
    }

    #[test]
    fn only_z32_keys_and_normalized_file_paths_pass() {
        assert!(is_public_key(
            "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"
        ));
        for bad in [
            "",
            "..",
            "../../etc",
            "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ew/",
        ] {
            assert!(!is_public_key(bad), "{bad:?}");
        }
        assert!(is_file_path("/pub/a/b.txt"));
        for bad in [
            "/pub/../../etc/passwd",
            "/pub/a/../b",
            "/pub/dir/",
            "pub/a",
            "/pub//a",
            "/pub/a\n",
        ] {
            assert!(!is_file_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn blob_keys_are_stable_and_differ_by_path_and_hash() {
        let a = blob_key("user", "/pub/a", &[1; 32]);
        assert_eq!(a, blob_key("user", "/pub/a", &[1; 32]));
        assert_ne!(a, blob_key("user", "/pub/b", &[1; 32]));
        assert_ne!(a, blob_key("user", "/pub/a", &[2; 32]));
        let (owner, hex) = a.split_once('/').unwrap();
        assert_eq!(owner, "user");
        assert_eq!(hex.len(), 32);
    }
}
